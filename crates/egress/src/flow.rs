//! The upstream half of one spliced TCP connection: a task that copies
//! between the real socket and two channels shared with the stack task,
//! and that checks the TLS ClientHello's SNI before any byte leaves.

use crate::sni::{self, ClientHello};
use crate::stack::{FlowKey, StackMsg};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

/// Chunks in flight each way per connection: with 256 KiB reads this is
/// the most a connection buffers in the daemon beyond the TCP windows
/// (1 MiB each way).
const CHANNEL_CHUNKS: usize = 4;
const READ_CHUNK: usize = 256 * 1024;

pub struct FlowIo {
    pub to_up: mpsc::Sender<Vec<u8>>,
    pub from_up: mpsc::Receiver<Vec<u8>>,
    pub task: JoinHandle<()>,
}

/// Starts copying. `tls_name`, when set, is the name the connection was
/// made to: if the sandbox's first bytes are a TLS ClientHello, its SNI
/// must be that name (no domain fronting through an allowed address).
pub fn spawn(
    stream: TcpStream,
    key: FlowKey,
    tls_name: Option<String>,
    wake: Arc<Notify>,
    msgs: mpsc::UnboundedSender<StackMsg>,
) -> FlowIo {
    let (to_up, mut up_rx) = mpsc::channel::<Vec<u8>>(CHANNEL_CHUNKS);
    let (down_tx, from_up) = mpsc::channel::<Vec<u8>>(CHANNEL_CHUNKS);
    let (mut reader, mut writer) = stream.into_split();
    // Set once the upstream has spoken before the sandbox: then the
    // protocol is server-first (SSH, SMTP...) and there is no ClientHello
    // to wait for.
    let upstream_spoke = Arc::new(AtomicBool::new(false));

    let uplink = {
        let wake = wake.clone();
        let upstream_spoke = upstream_spoke.clone();
        async move {
            let mut hello: Option<Vec<u8>> = tls_name.as_ref().map(|_| Vec::new());
            while let Some(chunk) = up_rx.recv().await {
                // The stack waits for channel room before reading more
                // from the sandbox.
                wake.notify_one();
                let Some(buf) = hello.as_mut() else {
                    if writer.write_all(&chunk).await.is_err() {
                        return;
                    }
                    continue;
                };
                if upstream_spoke.load(Ordering::Relaxed) && buf.is_empty() {
                    hello = None;
                    if writer.write_all(&chunk).await.is_err() {
                        return;
                    }
                    continue;
                }
                buf.extend_from_slice(&chunk);
                let name = tls_name.as_deref().unwrap_or_default();
                let verdict = match sni::inspect(buf) {
                    ClientHello::Incomplete if buf.len() < sni::MAX_CLIENT_HELLO => continue,
                    ClientHello::Incomplete => Err(format!(
                        "TLS ClientHello over {} bytes",
                        sni::MAX_CLIENT_HELLO
                    )),
                    // A hello this parser rejects may still be accepted by
                    // a laxer server: never let it past the SNI check.
                    ClientHello::NotTls if sni::starts_like_tls(buf) => {
                        Err("a malformed TLS ClientHello".to_string())
                    }
                    ClientHello::NotTls => Ok(()),
                    ClientHello::Tls { sni: Some(sni) } if sni.eq_ignore_ascii_case(name) => Ok(()),
                    ClientHello::Tls { sni: Some(sni) } => Err(format!(
                        "TLS server name {sni} differs from the name connected to, {name}"
                    )),
                    ClientHello::Tls { sni: None } => {
                        Err(format!("TLS without a server name to {name}"))
                    }
                };
                match verdict {
                    Ok(()) => {
                        let first = hello.take().unwrap_or_default();
                        if writer.write_all(&first).await.is_err() {
                            return;
                        }
                    }
                    Err(reason) => {
                        let _ = msgs.send(StackMsg::Abort { key, reason });
                        wake.notify_one();
                        return;
                    }
                }
            }
            // The sandbox closed its sending side: pass the FIN on.
            let _ = writer.shutdown().await;
        }
    };

    let downlink = async move {
        loop {
            // Not zeroed: read_buf only exposes what the socket filled.
            let mut buf = Vec::with_capacity(READ_CHUNK);
            match reader.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            upstream_spoke.store(true, Ordering::Relaxed);
            if down_tx.send(buf).await.is_err() {
                break;
            }
            wake.notify_one();
        }
        drop(down_tx);
        wake.notify_one();
    };

    let task = tokio::spawn(async move {
        tokio::join!(uplink, downlink);
    });
    FlowIo {
        to_up,
        from_up,
        task,
    }
}
