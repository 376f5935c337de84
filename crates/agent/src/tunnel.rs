//! Byte tunnels (airlock internal): a byte stream inside the sandbox,
//! carried over two windowed streams (`agent_proto::TUNNEL_WINDOW`):
//! `inStreamId`, the host → agent stream of the bytes to send, and the
//! `{streamId}` answered, the agent → host stream of the bytes received.
//!
//! - `tcpConnect {host?: string (default "127.0.0.1"), port: 1..65535,
//!   inStreamId}`: a TCP connection made from inside the sandbox. The
//!   daemon uses it for `fetch` and for exposed ports, so a server that
//!   listens on 127.0.0.1 only is reachable, and traffic to anywhere else
//!   still goes through the sandbox's own network (and so the egress policy).
//! - `sftpOpen {inStreamId}`: an SFTP session with the agent's own server
//!   ([`crate::sftp`]), for the SSH gateway's `sftp` subsystem. The server
//!   runs on one end of in-memory pipes; the other ends are pumped exactly
//!   as a TCP connection's halves are, so both tunnels share flow control
//!   and half-close behaviour.

use crate::conn::{Outbox, CHUNK};
use crate::streams::Streams;
use agent_proto::calls::{SftpOpenParams, StreamResult, TcpConnectParams};
use agent_proto::{ErrorObject, TUNNEL_WINDOW};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

/// A connect that neither succeeds nor fails (a dropped SYN) gives up here.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes buffered in each pipe between an SFTP server and its pumps: one
/// largest SFTP packet (256 KiB), so a whole reply is written without
/// waiting for the pump.
const SFTP_PIPE: usize = 256 * 1024;

pub async fn connect(
    streams: &Arc<Streams>,
    out: &Outbox,
    params: &TcpConnectParams,
) -> Result<StreamResult, ErrorObject> {
    let (host, port, in_id) = (params.host(), params.port, params.in_stream_id);
    let context = format!("connecting to {host}:{port} in the sandbox");
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            streams.forget(in_id);
            return Err(ErrorObject::from_io_with_context(&e, Some(&context)));
        }
        Err(_) => {
            streams.forget(in_id);
            return Err(ErrorObject::new(
                "TimedOut",
                format!("timed out after {CONNECT_TIMEOUT:?} {context}"),
                Some("ETIMEDOUT"),
            ));
        }
    };
    let _ = tcp.set_nodelay(true);
    let (read, write) = tcp.into_split();
    Ok(bridge(streams, out, in_id, read, write))
}

/// `sftpOpen`: starts an SFTP session served in this process on files
/// inside the sandbox, relative paths resolving against `cwd`. Cannot fail:
/// the session's errors are SFTP status replies on the stream.
pub fn sftp_open(
    streams: &Arc<Streams>,
    out: &Outbox,
    params: &SftpOpenParams,
    cwd: &Path,
) -> StreamResult {
    // Two one-way pipes, not one duplex split in halves: a pump that
    // stops (the host cancelled the replies) drops its pipe, and the
    // server's writes then fail instead of blocking, so it goes on reading
    // the requests until the host ends them, and the tunnel winds down.
    let (to_server, from_host) = tokio::io::duplex(SFTP_PIPE);
    let (to_host, from_server) = tokio::io::duplex(SFTP_PIPE);
    let server_end = tokio::io::join(from_host, to_host);
    tokio::spawn(crate::sftp::serve(server_end, cwd.to_path_buf()));
    bridge(streams, out, params.in_stream_id, from_server, to_server)
}

/// Pumps a byte stream's two halves to and from the host: `in_id`'s bytes
/// are written to `write`, what `read` yields goes out on a new windowed
/// stream, whose id is answered.
fn bridge<R, W>(streams: &Arc<Streams>, out: &Outbox, in_id: u32, read: R, write: W) -> StreamResult
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out_id, window) = streams.new_windowed(TUNNEL_WINDOW);
    tokio::spawn(upstream(
        streams.claim(in_id),
        write,
        in_id,
        streams.clone(),
        out.clone(),
    ));
    tokio::spawn(downstream(
        read,
        out_id,
        window,
        streams.clone(),
        out.clone(),
    ));
    StreamResult {
        stream_id: out_id,
        size: None,
    }
}

/// Host → stream: writes what the host sends and credits it back once
/// written, so the host never has more than a window in flight.
async fn upstream<W: AsyncWrite + Unpin>(
    rx: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
    mut write: W,
    in_id: u32,
    streams: Arc<Streams>,
    out: Outbox,
) {
    if let Some(mut rx) = rx {
        while let Some(chunk) = rx.recv().await {
            if write.write_all(&chunk).await.is_err() {
                // The peer closed: tell the host to stop sending.
                out.cancel(in_id).await;
                break;
            }
            out.credit(in_id, chunk.len() as u32).await;
        }
    }
    let _ = write.shutdown().await;
    streams.forget(in_id);
}

/// Stream → host, holding back while the host's window is used up.
async fn downstream<R: AsyncRead + Unpin>(
    mut read: R,
    out_id: u32,
    window: Arc<Semaphore>,
    streams: Arc<Streams>,
    out: Outbox,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match window.acquire_many(n as u32).await {
            Ok(permits) => permits.forget(),
            Err(_) => break,
        }
        if streams.is_cancelled(out_id) || !out.data(out_id, &buf[..n]).await {
            break;
        }
    }
    // Sent after a cancel too: the host drains a cancelled tunnel stream
    // until its end, so it can forget it.
    out.end(out_id).await;
    streams.done_outbound(out_id);
}
