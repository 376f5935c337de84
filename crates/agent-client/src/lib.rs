//! The host side of the agent protocol: calls with replies, and byte
//! streams in both directions, over the sandbox's socket.

use agent_proto::{
    encode_frame, Call, Decoder, ErrorObject, FrameKind, Hello, Method, Reply, MAX_PAYLOAD,
};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

mod tunnel;
pub use tunnel::Tunnel;

/// Largest piece of stream data sent in one frame: small enough that a big
/// transfer does not hold back other frames for long.
const PIECE: usize = 64 * 1024;

/// How long a fresh agent may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Reply>>>>;
/// Host → agent windowed streams: id → bytes the agent still accepts.
type Windows = Arc<Mutex<HashMap<u32, Arc<Semaphore>>>>;

/// One agent → host stream: the sending half (dropped at End) and the
/// receiving half (until someone takes it).
#[derive(Default)]
struct StreamSlot {
    tx: Option<mpsc::UnboundedSender<Vec<u8>>>,
    rx: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
}

/// Agent → host streams, buffered per id until someone takes them.
#[derive(Default)]
struct Inbound {
    map: HashMap<u32, StreamSlot>,
}

impl Inbound {
    fn entry(&mut self, id: u32) -> &mut StreamSlot {
        self.map.entry(id).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            StreamSlot {
                tx: Some(tx),
                rx: Some(rx),
            }
        })
    }
}

#[derive(Clone)]
pub struct AgentClient {
    out: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    inbound: Arc<Mutex<Inbound>>,
    windows: Windows,
    next_call: Arc<AtomicU32>,
    next_stream: Arc<AtomicU32>,
    /// Becomes true when the connection to the agent is gone.
    closed: watch::Receiver<bool>,
}

impl AgentClient {
    /// Takes over the agent socket and waits for the agent's hello.
    pub async fn connect(sock: std::os::unix::net::UnixStream) -> Result<(Self, Hello)> {
        sock.set_nonblocking(true).context("agent socket")?;
        let sock = tokio::net::UnixStream::from_std(sock).context("agent socket")?;
        let (mut reader, mut writer) = sock.into_split();
        let (out, mut rx) = mpsc::channel::<Vec<u8>>(256);
        tokio::spawn(async move {
            while let Some(buf) = rx.recv().await {
                if writer.write_all(&buf).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let inbound: Arc<Mutex<Inbound>> = Arc::default();
        let windows: Windows = Arc::default();
        let (hello_tx, hello_rx) = oneshot::channel();
        let (closed_tx, closed) = watch::channel(false);
        {
            let pending = pending.clone();
            let inbound = inbound.clone();
            let windows = windows.clone();
            tokio::spawn(async move {
                let mut hello_tx = Some(hello_tx);
                let mut decoder = Decoder::new();
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n) = reader.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    decoder.feed(&buf[..n]);
                    while let Ok(Some(frame)) = decoder.next_frame() {
                        match frame.kind {
                            FrameKind::Hello => {
                                if let (Some(tx), Ok(h)) = (
                                    hello_tx.take(),
                                    serde_json::from_slice::<Hello>(&frame.payload),
                                ) {
                                    let _ = tx.send(h);
                                }
                            }
                            FrameKind::Reply => {
                                let reply = serde_json::from_slice::<Reply>(&frame.payload)
                                    .unwrap_or_else(|e| {
                                        Reply::Error(ErrorObject::new(
                                            "Error",
                                            format!("malformed agent reply: {e}"),
                                            None,
                                        ))
                                    });
                                if let Some(tx) = pending.lock().expect("pending").remove(&frame.id)
                                {
                                    let _ = tx.send(reply);
                                }
                            }
                            FrameKind::Data => {
                                let mut inb = inbound.lock().expect("inbound");
                                if let Some(tx) = &inb.entry(frame.id).tx {
                                    let _ = tx.send(frame.payload);
                                }
                            }
                            FrameKind::End => {
                                inbound.lock().expect("inbound").entry(frame.id).tx = None;
                            }
                            FrameKind::Credit => {
                                let window =
                                    windows.lock().expect("windows").get(&frame.id).cloned();
                                if let (Some(sem), Ok(bytes)) =
                                    (window, <[u8; 4]>::try_from(frame.payload.as_slice()))
                                {
                                    sem.add_permits(u32::from_be_bytes(bytes) as usize);
                                }
                            }
                            // The agent wants no more of one of our streams:
                            // a windowed writer stops at once, others notice
                            // when their sends are ignored.
                            FrameKind::Cancel => {
                                if let Some(sem) = windows.lock().expect("windows").get(&frame.id) {
                                    sem.close();
                                }
                            }
                            FrameKind::Call => {}
                        }
                    }
                }
                // Connection gone. Mark it closed before failing the waiting
                // calls: a call registered after the clear sees the flag.
                let _ = closed_tx.send(true);
                pending.lock().expect("pending").clear();
                for slot in inbound.lock().expect("inbound").map.values_mut() {
                    slot.tx = None;
                }
                for sem in windows.lock().expect("windows").values() {
                    sem.close();
                }
            });
        }
        let hello = tokio::time::timeout(HELLO_TIMEOUT, hello_rx)
            .await
            .map_err(|_| anyhow!("the sandbox agent did not start within {HELLO_TIMEOUT:?}"))?
            .map_err(|_| anyhow!("the sandbox agent exited before saying hello"))?;
        if hello.version != agent_proto::PROTOCOL_VERSION {
            bail!(
                "sandbox agent speaks protocol {}, this airlock speaks {}: rebuild the agent",
                hello.version,
                agent_proto::PROTOCOL_VERSION
            );
        }
        let client = Self {
            out,
            pending,
            inbound,
            windows,
            next_call: Arc::new(AtomicU32::new(1)),
            next_stream: Arc::new(AtomicU32::new(1)),
            closed,
        };
        Ok((client, hello))
    }

    async fn send(&self, kind: FrameKind, id: u32, payload: &[u8]) -> Result<()> {
        let mut buf = Vec::with_capacity(payload.len() + agent_proto::HEADER_LEN);
        encode_frame(kind, id, payload, &mut buf);
        self.out
            .send(buf)
            .await
            .map_err(|_| anyhow!("the sandbox agent connection is closed"))
    }

    /// Calls `method`; the outer error is a transport failure, the inner
    /// one the call's own error.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
    ) -> Result<std::result::Result<Value, ErrorObject>> {
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let payload = serde_json::to_vec(&Call {
            method: method.to_string(),
            params,
        })?;
        if payload.len() > MAX_PAYLOAD {
            bail!(
                "{method}: request of {} bytes exceeds the {MAX_PAYLOAD} byte limit",
                payload.len()
            );
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending").insert(id, tx);
        if self.is_closed() {
            self.pending.lock().expect("pending").remove(&id);
            bail!("the sandbox agent connection is closed");
        }
        self.send(FrameKind::Call, id, &payload).await?;
        let reply = rx
            .await
            .map_err(|_| anyhow!("the sandbox agent closed the connection during {method}"))?;
        Ok(reply.into_result())
    }

    /// Calls `method` with params of its type in `agent_proto::calls` and
    /// decodes the result into `R`, the method's result type; a result of
    /// another shape is a transport failure (an agent out of step).
    pub async fn call_typed<P: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        params: &P,
    ) -> Result<std::result::Result<R, ErrorObject>> {
        let params = serde_json::to_value(params).with_context(|| format!("{method}: params"))?;
        Ok(match self.call(method.as_str(), params).await? {
            Ok(v) => Ok(serde_json::from_value(v)
                .with_context(|| format!("{method}: the agent's reply has another shape"))?),
            Err(e) => Err(e),
        })
    }

    /// A new host → agent stream id.
    pub fn open_stream(&self) -> u32 {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    pub async fn send_data(&self, id: u32, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(PIECE) {
            self.send(FrameKind::Data, id, chunk).await?;
        }
        Ok(())
    }

    pub async fn send_end(&self, id: u32) -> Result<()> {
        self.send(FrameKind::End, id, &[]).await
    }

    /// Tells the agent it may send `bytes` more on windowed stream `id`.
    pub async fn send_credit(&self, id: u32, bytes: u32) -> Result<()> {
        self.send(FrameKind::Credit, id, &bytes.to_be_bytes()).await
    }

    /// A new host → agent stream whose sends wait for the agent's credit
    /// (send with [`Self::send_windowed`], forget with
    /// [`Self::close_windowed_stream`] after its End).
    pub fn open_windowed_stream(&self, window: usize) -> (u32, Arc<Semaphore>) {
        let id = self.open_stream();
        let sem = Arc::new(Semaphore::new(window));
        self.windows
            .lock()
            .expect("windows")
            .insert(id, sem.clone());
        (id, sem)
    }

    pub fn close_windowed_stream(&self, id: u32) {
        self.windows.lock().expect("windows").remove(&id);
    }

    /// Sends `data` on windowed stream `id`, each piece once the agent has
    /// credit for it, so what is in flight (and buffered in the agent)
    /// never exceeds the window. Fails once the agent cancelled the stream
    /// or is gone: the rest is not wanted.
    pub async fn send_windowed(&self, id: u32, window: &Semaphore, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(PIECE) {
            window
                .acquire_many(chunk.len() as u32)
                .await
                .map_err(|_| anyhow!("the sandbox agent stopped reading stream {id}"))?
                .forget();
            self.send(FrameKind::Data, id, chunk).await?;
        }
        Ok(())
    }

    /// Forgets agent → host stream `id` (its data is no longer wanted).
    pub fn drop_stream(&self, id: u32) {
        self.inbound.lock().expect("inbound").map.remove(&id);
    }

    /// Tells the agent to stop sending agent → host stream `id`.
    pub async fn send_cancel(&self, id: u32) -> Result<()> {
        self.send(FrameKind::Cancel, id, &[]).await
    }

    /// Resolves once the agent connection is gone (the sandbox died or was
    /// destroyed).
    pub async fn closed(&self) {
        let mut rx = self.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// The receiving end of agent → host stream `id`; `None` from it means
    /// the stream ended.
    pub fn take_stream(&self, id: u32) -> Option<mpsc::UnboundedReceiver<Vec<u8>>> {
        self.inbound.lock().expect("inbound").entry(id).rx.take()
    }
}
