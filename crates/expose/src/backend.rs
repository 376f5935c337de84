//! How the ingress reaches a port inside a sandbox.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream the ingress can splice a client connection onto.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + ?Sized> Io for T {}

/// A connection to a port inside a sandbox.
pub type BoxedIo = Box<dyn Io>;

/// A boxed `Send` future (spelled out here so the trait needs no extra crate).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Opens connections to ports of one sandbox.
///
/// The daemon implements this as a tunnel through the sandbox's agent. The
/// error kind matters: [`io::ErrorKind::ConnectionRefused`] means nothing
/// listens on the port, and the client is told exactly that.
pub trait Backend: Send + Sync {
    fn open(&self, port: u16) -> BoxFuture<'static, io::Result<BoxedIo>>;
}

/// A [`Backend`] that dials `ip:port` over plain TCP: for a sandbox whose
/// network is reachable from the host, and for tests.
#[derive(Debug, Clone, Copy)]
pub struct TcpBackend {
    ip: IpAddr,
}

impl TcpBackend {
    pub fn new(ip: IpAddr) -> TcpBackend {
        TcpBackend { ip }
    }
}

impl Backend for TcpBackend {
    fn open(&self, port: u16) -> BoxFuture<'static, io::Result<BoxedIo>> {
        let addr = SocketAddr::new(self.ip, port);
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            // The ingress forwards whatever it gets at once; Nagle would only
            // add latency to small writes such as WebSocket frames.
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxedIo)
        })
    }
}
