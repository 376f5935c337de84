//! The upstream half of one TCP connection through the gateway: a task
//! that moves bytes between the real socket and two channels shared with
//! the stack task. Before any byte leaves it looks at the sandbox's first
//! flight: a TLS ClientHello's SNI must be the name connected to, and a
//! connection to a secret's host is handed to the interceptor instead of
//! being spliced.

use crate::budget::{Charge, MemoryBudget};
use crate::intercept::{self, InterceptStats, Interception};
use crate::sni::{self, ClientHello};
use crate::stack::{FlowKey, StackMsg};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// Most bytes in one message from the sandbox (one read from the stack's
/// socket).
pub const CHUNK: usize = 16 * 1024;
/// Messages in flight towards the upstream. A side that does not drain
/// stops the other from reading (backpressure): the task waits for room
/// in the channel before it reads its socket again.
const CHANNEL_CHUNKS: usize = 2;
/// Towards the sandbox, reads are small while the upstream sends little,
/// and grow to `BIG_CHUNK` while it streams, each such buffer charged to
/// the sandbox's budget until the stack has taken its bytes: a stream
/// needs that many bytes queued to keep its pace (the stack task runs on
/// its own thread), a connection that is not read costs little. With the
/// budget spent, a connection still moves `PREPAID_CHUNKS` small buffers
/// at a time, paid with its admission.
const BIG_CHUNK: usize = 64 * 1024;
const DOWN_CHUNKS: usize = 16;
const PREPAID_CHUNKS: usize = 2;
/// What a connection's channels and task hold beyond what they charge as
/// they go: towards the upstream the channel and the message being
/// written, towards the sandbox the prepaid buffers.
pub const MAX_BUFFERED: usize = (CHANNEL_CHUNKS + 1 + PREPAID_CHUNKS) * CHUNK;

/// Bytes from the upstream for the stack, with what pays for them.
pub struct Chunk {
    pub bytes: Vec<u8>,
    _paid: Paid,
}

enum Paid {
    Budget(#[allow(dead_code)] Charge),
    Prepaid(#[allow(dead_code)] OwnedSemaphorePermit),
}

/// Buffer of the in-memory pipe between the stack's channels and the TLS
/// terminator of an intercepted connection (each way).
const INTERCEPT_PIPE: usize = 64 * 1024;
/// What an intercepted connection is charged on top of its admission: the
/// pipe both ways, and an estimate of its two TLS sessions' and HTTP
/// connections' read buffers and windows. Bodies rewritten whole are
/// charged as they are read (see `intercept::proxy`).
const INTERCEPT_CHARGE: usize = 2 * INTERCEPT_PIPE + 1024 * 1024;

pub struct FlowIo {
    pub to_up: mpsc::Sender<Vec<u8>>,
    pub from_up: mpsc::Receiver<Chunk>,
    pub task: JoinHandle<()>,
}

/// What the connection's first flight decided.
enum Decision {
    Splice,
    Intercept(String),
    Refuse(String),
    /// The sandbox closed before sending anything decisive.
    Closed,
}

/// The channels to and from the stack task.
struct SandboxSide {
    rx: mpsc::Receiver<Vec<u8>>,
    tx: mpsc::Sender<Chunk>,
    budget: Arc<MemoryBudget>,
    wake: Arc<Notify>,
}

/// Starts the connection's task. `tls_name`, when set, is the name the
/// connection was made to (from DNS); `intercept` holds the sandbox's
/// secrets, if it has any.
pub fn spawn(
    stream: TcpStream,
    key: FlowKey,
    tls_name: Option<String>,
    intercept: Option<Arc<Interception>>,
    budget: Arc<MemoryBudget>,
    wake: Arc<Notify>,
    msgs: mpsc::UnboundedSender<StackMsg>,
) -> FlowIo {
    let (to_up, up_rx) = mpsc::channel::<Vec<u8>>(CHANNEL_CHUNKS);
    let (down_tx, from_up) = mpsc::channel::<Chunk>(DOWN_CHUNKS);
    let side = SandboxSide {
        rx: up_rx,
        tx: down_tx,
        budget: budget.clone(),
        wake,
    };
    let task = tokio::spawn(run(stream, key, tls_name, intercept, budget, side, msgs));
    FlowIo {
        to_up,
        from_up,
        task,
    }
}

async fn run(
    stream: TcpStream,
    key: FlowKey,
    tls_name: Option<String>,
    intercept: Option<Arc<Interception>>,
    budget: Arc<MemoryBudget>,
    mut side: SandboxSide,
    msgs: mpsc::UnboundedSender<StackMsg>,
) {
    let mut first = Vec::new();
    let decision = match &tls_name {
        Some(name) => {
            decide(
                &stream,
                &mut side,
                &mut first,
                name,
                key.dst.port(),
                &intercept,
            )
            .await
        }
        None => Decision::Splice,
    };
    match decision {
        Decision::Closed => {}
        Decision::Refuse(reason) => {
            let _ = msgs.send(StackMsg::Abort { key, reason });
            side.wake.notify_one();
        }
        Decision::Splice => splice(stream, first, side).await,
        Decision::Intercept(host) => {
            let Some(icpt) = intercept else { return };
            let Some(_charge) = budget.charge(INTERCEPT_CHARGE) else {
                budget.refused();
                let reason = format!(
                    "the sandbox's gateway memory is spent: {} of {} KiB in use by its \
                     connections (--egress-memory-per-sandbox)",
                    budget.used() >> 10,
                    budget.limit() >> 10
                );
                let _ = msgs.send(StackMsg::Abort { key, reason });
                side.wake.notify_one();
                return;
            };
            let stats = intercepted(
                stream,
                first,
                side,
                &host,
                key.dst.port(),
                icpt,
                budget,
                &msgs,
                key,
            )
            .await;
            let _ = msgs.send(StackMsg::Intercepted { key, stats });
        }
    }
}

/// Reads the sandbox's first flight until it is known what it is; the
/// bytes read are left in `first`.
async fn decide(
    stream: &TcpStream,
    side: &mut SandboxSide,
    first: &mut Vec<u8>,
    name: &str,
    port: u16,
    intercept: &Option<Arc<Interception>>,
) -> Decision {
    loop {
        tokio::select! {
            chunk = side.rx.recv() => {
                let Some(chunk) = chunk else { return Decision::Closed };
                // The stack waits for channel room before reading more.
                side.wake.notify_one();
                first.extend_from_slice(&chunk);
                match sni::inspect(first) {
                    ClientHello::Incomplete if first.len() < sni::MAX_CLIENT_HELLO => continue,
                    ClientHello::Incomplete => {
                        return Decision::Refuse(format!(
                            "TLS ClientHello over {} bytes",
                            sni::MAX_CLIENT_HELLO
                        ))
                    }
                    // A hello this parser rejects may still be accepted by
                    // a laxer server: never let it past the SNI check.
                    ClientHello::NotTls if sni::starts_like_tls(first) => {
                        return Decision::Refuse("a malformed TLS ClientHello".into())
                    }
                    ClientHello::NotTls => return Decision::Splice,
                    ClientHello::Tls { sni: Some(sni) } if sni.eq_ignore_ascii_case(name) => {
                        return match intercept {
                            Some(i) if i.applies_to(name, port) => Decision::Intercept(name.to_string()),
                            _ => Decision::Splice,
                        };
                    }
                    ClientHello::Tls { sni: Some(sni) } => {
                        return Decision::Refuse(format!(
                            "TLS server name {sni} differs from the name connected to, {name}"
                        ))
                    }
                    ClientHello::Tls { sni: None } => {
                        return Decision::Refuse(format!("TLS without a server name to {name}"))
                    }
                }
            }
            // The upstream spoke first: a server-first protocol (SSH,
            // SMTP...), not TLS; nothing to inspect.
            ready = stream.readable(), if first.is_empty() => {
                return match ready {
                    Ok(()) => Decision::Splice,
                    Err(_) => Decision::Closed,
                };
            }
        }
    }
}

/// Copies both ways until both sides are done, passing FINs on.
async fn splice(stream: TcpStream, first: Vec<u8>, side: SandboxSide) {
    let SandboxSide {
        rx,
        tx,
        budget,
        wake,
    } = side;
    let (reader, writer) = stream.into_split();
    tokio::join!(
        from_stack(first, rx, writer, wake.clone()),
        to_stack(reader, tx, budget, wake)
    );
}

/// The sandbox's bytes (`first`, then what the stack sends) into `writer`;
/// the sandbox's FIN becomes a shutdown of `writer`.
async fn from_stack(
    first: Vec<u8>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    mut writer: impl AsyncWrite + Unpin,
    wake: Arc<Notify>,
) {
    if !first.is_empty() && writer.write_all(&first).await.is_err() {
        return;
    }
    while let Some(chunk) = rx.recv().await {
        // The stack waits for channel room before reading more.
        wake.notify_one();
        if writer.write_all(&chunk).await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// `reader`'s bytes to the stack, for the sandbox; its EOF closes the
/// channel (the stack then sends FIN).
async fn to_stack(
    mut reader: impl AsyncRead + Unpin,
    tx: mpsc::Sender<Chunk>,
    budget: Arc<MemoryBudget>,
    wake: Arc<Notify>,
) {
    let prepaid = Arc::new(Semaphore::new(PREPAID_CHUNKS));
    let mut streaming = false;
    loop {
        // Room in the channel and a paid buffer first: while the sandbox
        // does not drain, the socket is not read and the upstream is held
        // back by TCP.
        let Ok(permit) = tx.reserve().await else {
            break;
        };
        let big = if streaming {
            budget.charge_growth(BIG_CHUNK)
        } else {
            None
        };
        let (paid, size) = match big {
            Some(charge) => (Paid::Budget(charge), BIG_CHUNK),
            None => match prepaid.clone().acquire_owned().await {
                Ok(p) => (Paid::Prepaid(p), CHUNK),
                Err(_) => break,
            },
        };
        // Not zeroed: read_buf only exposes what the socket filled.
        let mut bytes = Vec::with_capacity(size);
        let n = match reader.read_buf(&mut bytes).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        streaming = n == size;
        permit.send(Chunk { bytes, _paid: paid });
        wake.notify_one();
    }
    drop(tx);
    wake.notify_one();
}

/// Runs the interceptor over an in-memory pipe fed by the stack's channels.
#[allow(clippy::too_many_arguments)]
async fn intercepted(
    stream: TcpStream,
    first: Vec<u8>,
    side: SandboxSide,
    host: &str,
    port: u16,
    icpt: Arc<Interception>,
    budget: Arc<MemoryBudget>,
    msgs: &mpsc::UnboundedSender<StackMsg>,
    key: FlowKey,
) -> InterceptStats {
    let SandboxSide {
        rx,
        tx,
        budget: side_budget,
        wake,
    } = side;
    let (ours, theirs) = tokio::io::duplex(INTERCEPT_PIPE);
    let (pipe_read, pipe_write) = tokio::io::split(ours);
    let done = Arc::new(Notify::new());
    // Stack -> pipe (the sandbox's bytes, starting with its ClientHello),
    // until the interceptor is done with the connection.
    let inbound = {
        let pump = from_stack(first, rx, pipe_write, wake.clone());
        let done = done.clone();
        async move {
            tokio::select! {
                _ = pump => {}
                _ = done.notified() => {}
            }
        }
    };
    // Pipe -> stack.
    let outbound = to_stack(pipe_read, tx, side_budget, wake.clone());
    let serve = async {
        let result = intercept::serve(theirs, stream, host, port, icpt, budget).await;
        done.notify_one();
        result
    };
    let (result, (), ()) = tokio::join!(serve, inbound, outbound);
    match result {
        Ok(stats) => stats,
        Err(reason) => {
            let _ = msgs.send(StackMsg::Abort { key, reason });
            wake.notify_one();
            InterceptStats::default()
        }
    }
}
