//! `tcpConnect` (airlock internal): a TCP connection made from inside the
//! sandbox, carried over two windowed streams. The daemon uses it for
//! `fetch` and for exposed ports, so a server that listens on 127.0.0.1 only
//! is reachable, and traffic to anywhere else still goes through the
//! sandbox's own network (and so the egress policy).
//!
//! Params: `{host?: string (default "127.0.0.1"), port: 1..65535,
//! inStreamId: number}`; `inStreamId` is the host → agent stream carrying the
//! bytes to send. Result: `{streamId}`, the agent → host stream of the bytes
//! received. Both streams are windowed (`agent_proto::TUNNEL_WINDOW`).

use crate::conn::{Outbox, CHUNK};
use crate::streams::Streams;
use agent_proto::calls::{StreamResult, TcpConnectParams};
use agent_proto::{ErrorObject, TUNNEL_WINDOW};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

/// A connect that neither succeeds nor fails (a dropped SYN) gives up here.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    Ok(StreamResult {
        stream_id: out_id,
        size: None,
    })
}

/// Host → socket: writes what the host sends and credits it back once
/// written, so the host never has more than a window in flight.
async fn upstream(
    rx: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
    mut write: OwnedWriteHalf,
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

/// Socket → host, holding back while the host's window is used up.
async fn downstream(
    mut read: OwnedReadHalf,
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
