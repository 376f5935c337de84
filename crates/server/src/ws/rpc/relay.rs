//! The stream relay: client → sandbox streams (held until the request
//! naming them arrives, then fed to an agent stream or read by the daemon)
//! and sandbox → client server streams (`$sandbox.stream.*`).

use super::{Inner, Rpc};
use crate::ws::session::notification;
use agent_proto::calls::StreamMessage;
use agent_proto::{ErrorObject, Method, Route, FILE_WINDOW};
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};

/// How long a process's output waits for the client's `processWait` before
/// it is sent anyway.
const OUTPUT_HOLD_LIMIT: Duration = Duration::from_secs(5);

impl Rpc {
    /// Says where client stream `cid` named by a request goes. For `fetch`
    /// the daemon itself reads it (returned); otherwise it becomes an agent
    /// stream, the param is rewritten to that stream's id, and what arrived
    /// before the request is returned to [`Self::feed`] once the request
    /// is on its way. A writeFile's stream is windowed: the agent credits
    /// what it wrote, and this connection's reads wait for that credit, so
    /// a client streaming a big file is held back by TCP instead of being
    /// buffered here or in the agent.
    pub(super) fn bind_client_stream(
        &self,
        method: Method,
        params: &mut Value,
    ) -> Result<Bound, ErrorObject> {
        let Some(key) = method.client_stream_param() else {
            return Ok(Bound::None);
        };
        let Some(cid) = params.get(key).and_then(Value::as_u64) else {
            return Ok(Bound::None);
        };
        let mut inner = self.inner.lock().expect("rpc lock");
        let (queued, ended) = match inner.client_streams.remove(&cid) {
            Some(Sink::Pending {
                overflowed: true, ..
            }) => {
                return Err(ErrorObject::new(
                    "RangeError",
                    format!(
                        "{method}: more than {} MiB of stream {cid} arrived before the request \
                         naming it, and the rest was not kept; send the request first",
                        MAX_HELD >> 20
                    ),
                    None,
                ));
            }
            Some(Sink::Pending { queued, ended, .. }) => (queued, ended),
            // Already bound by an earlier request: nothing more to give.
            Some(bound) => {
                inner.client_streams.insert(cid, bound);
                return Ok(Bound::None);
            }
            None => (Vec::new(), false),
        };
        if method.route() == Route::Daemon {
            let (tx, rx) = mpsc::unbounded_channel();
            for chunk in queued {
                let _ = tx.send(chunk);
            }
            if !ended {
                inner.client_streams.insert(cid, Sink::Local(tx));
            }
            return Ok(Bound::Local(rx));
        }
        let (agent_id, window) = if method.windowed_client_stream() {
            let (id, window) = self.live.client.open_windowed_stream(FILE_WINDOW);
            (id, Some(window))
        } else {
            (self.live.client.open_stream(), None)
        };
        if !ended {
            inner.client_streams.insert(
                cid,
                Sink::Agent {
                    id: agent_id,
                    window: window.clone(),
                },
            );
        }
        params[key] = json!(agent_id);
        Ok(Bound::Agent(Feed {
            agent_id,
            window,
            queued,
            ended,
        }))
    }

    /// Sends what arrived for a client stream before its request.
    pub(super) async fn feed(&self, feed: Feed) {
        for chunk in &feed.queued {
            self.to_agent(feed.agent_id, feed.window.as_deref(), chunk)
                .await;
        }
        if feed.ended {
            self.end_agent_stream(feed.agent_id, feed.window.is_some())
                .await;
        }
    }

    /// Client stream bytes for agent stream `id`, waiting for credit when
    /// it is windowed. Once the agent stopped reading (it failed the call)
    /// the rest is dropped.
    async fn to_agent(&self, id: u32, window: Option<&Semaphore>, bytes: &[u8]) {
        let client = &self.live.client;
        let _ = match window {
            Some(window) => client.send_windowed(id, window, bytes).await,
            None => client.send_data(id, bytes).await,
        };
    }

    async fn end_agent_stream(&self, id: u32, windowed: bool) {
        let _ = self.live.client.send_end(id).await;
        if windowed {
            self.live.client.close_windowed_stream(id);
        }
    }

    /// Relays agent stream `agent_id` to the client as a new server stream,
    /// after `hold` opens (if given). Returns the server stream id.
    pub(super) fn forward_stream(&self, agent_id: u32, hold: Option<watch::Receiver<bool>>) -> u64 {
        let chunks = match self.live.client.take_stream(agent_id) {
            Some(rx) => stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|c| (Bytes::from(c), rx))
            })
            .boxed(),
            None => stream::empty().boxed(),
        };
        self.forward_stream_from(chunks, Some(agent_id), hold)
    }

    /// Relays `chunks` to the client as a new server stream; a client
    /// cancel is passed on to `agent_id` (if the agent is the source) and
    /// stops the relay.
    pub(super) fn forward_stream_from(
        &self,
        mut chunks: BoxStream<'static, Bytes>,
        agent_id: Option<u32>,
        hold: Option<watch::Receiver<bool>>,
    ) -> u64 {
        let sid = self.state.next_stream_id.fetch_add(1, Ordering::Relaxed);
        if let Some(agent_id) = agent_id {
            self.inner
                .lock()
                .expect("rpc lock")
                .server_streams
                .insert(sid, agent_id);
        }
        let rpc = self.clone();
        tokio::spawn(async move {
            if let Some(mut hold) = hold {
                let _ = tokio::time::timeout(OUTPUT_HOLD_LIMIT, hold.wait_for(|open| *open)).await;
            }
            rpc.send_stream(StreamMessage::Start { stream_id: sid });
            while let Some(chunk) = chunks.next().await {
                if rpc.is_cancelled(sid) {
                    // A local source stops when dropped; an agent one was
                    // told by the cancel and is drained.
                    if agent_id.is_none() {
                        break;
                    }
                    continue;
                }
                if chunk.is_empty() {
                    continue;
                }
                rpc.send_stream(StreamMessage::Enqueue {
                    stream_id: sid,
                    data: chunk.into(),
                });
            }
            if !rpc.is_cancelled(sid) {
                rpc.send_stream(StreamMessage::End { stream_id: sid });
            }
            let mut inner = rpc.inner.lock().expect("rpc lock");
            inner.server_streams.remove(&sid);
            inner.cancelled.remove(&sid);
        });
        sid
    }

    fn is_cancelled(&self, sid: u64) -> bool {
        self.inner
            .lock()
            .expect("rpc lock")
            .cancelled
            .contains(&sid)
    }

    fn send_stream(&self, msg: StreamMessage) {
        self.send(notification(msg.method(), msg.params()));
    }

    /// Stream notifications from the client. Handled in order, inline.
    /// One that cannot be read, or of another method, is dropped (a
    /// notification has no reply to say why).
    pub(super) async fn notification(&self, method: &str, params: &Value) {
        let Some(msg) = StreamMessage::decode(method, params) else {
            return;
        };
        match msg {
            StreamMessage::Start { stream_id: sid } => {
                self.inner.lock().expect("rpc lock").sink(sid);
            }
            StreamMessage::Enqueue {
                stream_id: sid,
                data: bytes,
            } => {
                if bytes.is_empty() {
                    return;
                }
                let (agent_id, window) = match self.inner.lock().expect("rpc lock").sink(sid) {
                    None => return,
                    Some(Sink::Agent { id, window }) => (*id, window.clone()),
                    Some(Sink::Local(tx)) => {
                        let _ = tx.send(bytes);
                        return;
                    }
                    Some(Sink::Pending {
                        queued,
                        bytes: held,
                        overflowed,
                        ..
                    }) => {
                        // A client streaming into a stream no request
                        // names is capped, not buffered without end; the
                        // request that names it then fails.
                        if *held + bytes.len() <= MAX_HELD {
                            *held += bytes.len();
                            queued.push(bytes);
                        } else {
                            *overflowed = true;
                            queued.clear();
                        }
                        return;
                    }
                };
                self.to_agent(agent_id, window.as_deref(), &bytes).await;
            }
            StreamMessage::End { stream_id: sid } | StreamMessage::Error { stream_id: sid } => {
                let agent_stream = {
                    let mut inner = self.inner.lock().expect("rpc lock");
                    match inner.client_streams.remove(&sid) {
                        Some(Sink::Agent { id, window }) => Some((id, window.is_some())),
                        // Dropping the sender ends a local reader.
                        Some(Sink::Local(_)) => None,
                        // The end may come before the request naming it.
                        held => {
                            let mut sink = held.unwrap_or_else(Sink::pending);
                            if let Sink::Pending { ended, .. } = &mut sink {
                                *ended = true;
                            }
                            inner.client_streams.insert(sid, sink);
                            None
                        }
                    }
                };
                if let Some((id, windowed)) = agent_stream {
                    self.end_agent_stream(id, windowed).await;
                }
            }
            StreamMessage::Cancel { stream_id: sid } => {
                let agent_id = {
                    let mut inner = self.inner.lock().expect("rpc lock");
                    inner.cancelled.insert(sid);
                    inner.server_streams.get(&sid).copied()
                };
                if let Some(agent_id) = agent_id {
                    let _ = self.live.client.send_cancel(agent_id).await;
                }
            }
        }
    }
}

/// Client → sandbox streams a client may have open at once.
const MAX_CLIENT_STREAMS: usize = 1024;
/// Bytes held for a client stream no request has named yet.
const MAX_HELD: usize = 16 << 20;

/// Where a client → sandbox stream's bytes go. Its data and end may arrive
/// before the request that names it, so they are held until then.
pub(super) enum Sink {
    Pending {
        queued: Vec<Vec<u8>>,
        bytes: usize,
        ended: bool,
        /// More than [`MAX_HELD`] arrived: the rest was dropped.
        overflowed: bool,
    },
    /// Forwarded to this agent stream; a windowed one (a file's contents)
    /// waits for the agent's credit.
    Agent {
        id: u32,
        window: Option<Arc<Semaphore>>,
    },
    /// Read by the daemon itself (a `fetch` body).
    Local(mpsc::UnboundedSender<Vec<u8>>),
}

impl Inner {
    /// Client stream `sid`'s sink, made (pending) on first sight unless the
    /// client already has [`MAX_CLIENT_STREAMS`] open.
    fn sink(&mut self, sid: u64) -> Option<&mut Sink> {
        let full = self.client_streams.len() >= MAX_CLIENT_STREAMS;
        match self.client_streams.entry(sid) {
            std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(_) if full => None,
            std::collections::hash_map::Entry::Vacant(e) => Some(e.insert(Sink::pending())),
        }
    }
}

impl Sink {
    fn pending() -> Self {
        Sink::Pending {
            queued: Vec::new(),
            bytes: 0,
            ended: false,
            overflowed: false,
        }
    }
}

/// What a request's client stream became (see `bind_client_stream`).
pub(super) enum Bound {
    None,
    /// Read by the daemon (a `fetch` body).
    Local(mpsc::UnboundedReceiver<Vec<u8>>),
    /// Relayed to an agent stream; this arrived before the request.
    Agent(Feed),
}

pub(super) struct Feed {
    agent_id: u32,
    window: Option<Arc<Semaphore>>,
    queued: Vec<Vec<u8>>,
    ended: bool,
}
