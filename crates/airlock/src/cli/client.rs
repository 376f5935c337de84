//! A small async client of the daemon's WebSocket JSON-RPC protocol
//! (docs/protocol.md, "Sessions, envelopes and streams"): attaches to a running sandbox with
//! `GET /api/v3/sandbox/{id}/connect`, makes calls, receives the server's
//! output streams and sends client streams (stdin, `writeFile` content).

use super::api::ApiTarget;
use agent_proto::Method;
use anyhow::{anyhow, Result};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// Raw bytes per `$sandbox.stream.enqueue` we send (base64 stays well
/// under the daemon's 4 MiB frame limit).
pub const CHUNK: usize = 256 * 1024;

/// Messages queued for the socket before a sender waits (backpressure for
/// large copies).
const OUTBOX: usize = 32;

/// A failed call.
#[derive(Debug, Clone)]
pub enum RpcError {
    /// An application error (`result.error`): a Deno error class, e.g.
    /// `NotFound`, and its message.
    App { class: String, message: String },
    /// A JSON-RPC level error (`error` member).
    Protocol { code: i64, message: String },
    /// The socket closed before the answer came.
    Closed(String),
    /// A typed call's params or reply not of its method's types (a daemon
    /// out of step with this airlock).
    Shape(String),
}

impl RpcError {
    /// The Deno error class of an application error.
    pub fn class(&self) -> Option<&str> {
        match self {
            RpcError::App { class, .. } => Some(class),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.class() == Some("NotFound")
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcError::App { class, message } => write!(f, "{class}: {message}"),
            RpcError::Protocol { code, message } => write!(f, "{message} (JSON-RPC {code})"),
            RpcError::Closed(why) => write!(f, "the connection to the daemon closed: {why}"),
            RpcError::Shape(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for RpcError {}

/// What arrives on a server → client stream.
#[derive(Debug)]
pub enum StreamEvent {
    Data(Vec<u8>),
    End,
    Error(String),
}

type Pending = HashMap<u64, oneshot::Sender<Result<Value, RpcError>>>;

#[derive(Default)]
struct Shared {
    pending: Pending,
    /// Server stream id → (sender, receiver not yet taken).
    streams: HashMap<u64, StreamSlot>,
    /// Why the socket closed, once it has.
    closed: Option<String>,
}

struct StreamSlot {
    tx: mpsc::UnboundedSender<StreamEvent>,
    rx: Option<mpsc::UnboundedReceiver<StreamEvent>>,
}

impl Shared {
    fn slot(&mut self, id: u64) -> &mut StreamSlot {
        self.streams.entry(id).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            StreamSlot { tx, rx: Some(rx) }
        })
    }
}

/// A connection to one sandbox. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    out: mpsc::Sender<Message>,
    shared: Arc<Mutex<Shared>>,
    next_id: Arc<AtomicU64>,
    next_stream: Arc<AtomicU64>,
}

/// A client stream's id as a request names it (`stdinStreamId`,
/// `contentStreamId`): the param types of `agent_proto::calls` hold u32
/// ids, and a connection numbers its streams from 1, so only one that
/// opened 4 billion streams would see this fail.
pub fn stream_param(id: u64) -> anyhow::Result<u32> {
    u32::try_from(id).map_err(|_| anyhow!("stream id {id} is past the protocol's range"))
}

/// `http://host:port` → `ws://host:port` (`https` → `wss`).
fn ws_base(endpoint: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    if let Some(rest) = e.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = e.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if e.starts_with("ws://") || e.starts_with("wss://") {
        e.to_string()
    } else {
        format!("ws://{e}")
    }
}

impl Client {
    /// Attaches to sandbox `id`. Errors say what to do: an unknown sandbox,
    /// a refused token, a daemon that is not running.
    pub async fn connect(target: &ApiTarget, id: &str) -> Result<Client> {
        let url = format!(
            "{}/api/v3/sandbox/{}/connect",
            ws_base(&target.endpoint),
            id
        );
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| anyhow!("bad endpoint {:?}: {e}", target.endpoint))?;
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", target.token)
                .parse()
                .map_err(|_| anyhow!("the token is not a valid HTTP header value"))?,
        );
        let config = WebSocketConfig::default()
            .max_message_size(Some(64 << 20))
            .max_frame_size(Some(64 << 20));
        let ws = match tokio_tungstenite::connect_async_with_config(req, Some(config), false).await
        {
            Ok((ws, _)) => ws,
            Err(e) => return Err(connect_error(e, target, id)),
        };
        let (mut sink, mut stream) = ws.split();
        let (out, mut rx) = mpsc::channel::<Message>(OUTBOX);
        let shared = Arc::new(Mutex::new(Shared::default()));
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if sink.send(msg).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let reader_shared = shared.clone();
        tokio::spawn(async move {
            let why = loop {
                match stream.next().await {
                    None => break "connection lost".to_string(),
                    Some(Err(e)) => break e.to_string(),
                    Some(Ok(Message::Close(frame))) => {
                        break match frame {
                            Some(f) if !f.reason.is_empty() => {
                                format!("{} (code {})", f.reason, u16::from(f.code))
                            }
                            Some(f) => format!("code {}", u16::from(f.code)),
                            None => "closed by the daemon".to_string(),
                        }
                    }
                    Some(Ok(Message::Text(t))) => dispatch(&reader_shared, t.as_str()),
                    Some(Ok(Message::Binary(b))) => {
                        if let Ok(t) = std::str::from_utf8(&b) {
                            dispatch(&reader_shared, t)
                        }
                    }
                    Some(Ok(_)) => {}
                }
            };
            let mut s = reader_shared.lock().expect("client lock");
            s.closed = Some(why.clone());
            for (_, tx) in s.pending.drain() {
                let _ = tx.send(Err(RpcError::Closed(why.clone())));
            }
            for (_, slot) in s.streams.drain() {
                let _ = slot.tx.send(StreamEvent::Error(why.clone()));
            }
        });
        Ok(Client {
            out,
            shared,
            next_id: Arc::new(AtomicU64::new(1)),
            next_stream: Arc::new(AtomicU64::new(1)),
        })
    }

    async fn send(&self, msg: Value) -> Result<(), RpcError> {
        self.out
            .send(Message::text(msg.to_string()))
            .await
            .map_err(|_| RpcError::Closed(self.closed_reason()))
    }

    fn closed_reason(&self) -> String {
        self.shared
            .lock()
            .expect("client lock")
            .closed
            .clone()
            .unwrap_or_else(|| "connection lost".into())
    }

    /// Sends a request; the answer comes on the returned receiver (so data
    /// can be streamed while the request is pending).
    pub async fn request(
        &self,
        method: &str,
        params: Value,
    ) -> Result<oneshot::Receiver<Result<Value, RpcError>>, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut s = self.shared.lock().expect("client lock");
            if let Some(why) = &s.closed {
                return Err(RpcError::Closed(why.clone()));
            }
            s.pending.insert(id, tx);
        }
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        Ok(rx)
    }

    /// Waits for a request's answer.
    pub async fn answer(
        &self,
        rx: oneshot::Receiver<Result<Value, RpcError>>,
    ) -> Result<Value, RpcError> {
        rx.await
            .unwrap_or_else(|_| Err(RpcError::Closed(self.closed_reason())))
    }

    /// One call, with params of the method's type in `agent_proto::calls`;
    /// `Ok` is the value inside `{"ok": …}` read into `R`, the method's
    /// result type.
    pub async fn call_typed<P: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        params: &P,
    ) -> Result<R, RpcError> {
        let rx = self.request_typed(method, params).await?;
        let reply = self.answer(rx).await?;
        serde_json::from_value(reply).map_err(|e| {
            RpcError::Shape(format!(
                "{method}: the daemon's reply has another shape: {e}"
            ))
        })
    }

    /// [`Client::request`] with params of the method's type.
    pub async fn request_typed<P: Serialize>(
        &self,
        method: Method,
        params: &P,
    ) -> Result<oneshot::Receiver<Result<Value, RpcError>>, RpcError> {
        let params = serde_json::to_value(params)
            .map_err(|e| RpcError::Shape(format!("{method}: params: {e}")))?;
        self.request(method.as_str(), params).await
    }

    /// The receiving end of server stream `id` (events that arrived before
    /// this call are kept). `None` if it was taken already.
    pub fn take_stream(&self, id: u64) -> Option<mpsc::UnboundedReceiver<StreamEvent>> {
        let mut s = self.shared.lock().expect("client lock");
        if s.closed.is_some() && !s.streams.contains_key(&id) {
            let (tx, rx) = mpsc::unbounded_channel();
            let _ = tx.send(StreamEvent::Error(s.closed.clone().unwrap_or_default()));
            return Some(rx);
        }
        s.slot(id).rx.take()
    }

    /// Opens a client → server stream (`$sandbox.stream.start`); its id goes
    /// in a request's `stdinStreamId` / `contentStreamId`.
    pub async fn open_stream(&self) -> Result<u64, RpcError> {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        self.send(notification(
            "$sandbox.stream.start",
            json!({"streamId": id}),
        ))
        .await?;
        Ok(id)
    }

    /// Sends bytes on a client stream, in chunks of at most [`CHUNK`].
    pub async fn send_data(&self, id: u64, data: &[u8]) -> Result<(), RpcError> {
        for chunk in data.chunks(CHUNK) {
            let b64 = base64::engine::general_purpose::STANDARD.encode(chunk);
            self.send(notification(
                "$sandbox.stream.enqueue",
                json!({"streamId": id, "data": b64}),
            ))
            .await?;
        }
        Ok(())
    }

    /// Ends a client stream (EOF for the reader in the sandbox).
    pub async fn end_stream(&self, id: u64) -> Result<(), RpcError> {
        self.send(notification("$sandbox.stream.end", json!({"streamId": id})))
            .await
    }

    /// Closes the socket politely.
    pub async fn close(&self) {
        let _ = self.out.send(Message::Close(None)).await;
    }
}

fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

/// Routes one incoming message: a response, or a stream notification.
fn dispatch(shared: &Mutex<Shared>, text: &str) {
    let Ok(Value::Object(msg)) = serde_json::from_str::<Value>(text) else {
        return; // e.g. "pong"
    };
    let mut s = shared.lock().expect("client lock");
    if let Some(method) = msg.get("method").and_then(Value::as_str) {
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        let Some(sid) = params.get("streamId").and_then(Value::as_u64) else {
            return;
        };
        match method {
            "$sandbox.stream.start" => {
                s.slot(sid);
            }
            "$sandbox.stream.enqueue" => {
                let data = params.get("data").and_then(Value::as_str).unwrap_or("");
                let event = match base64::engine::general_purpose::STANDARD.decode(data) {
                    Ok(bytes) => StreamEvent::Data(bytes),
                    Err(e) => StreamEvent::Error(format!("bad stream data: {e}")),
                };
                let _ = s.slot(sid).tx.send(event);
            }
            "$sandbox.stream.end" => {
                let _ = s.slot(sid).tx.send(StreamEvent::End);
                drop_if_taken(&mut s, sid);
            }
            "$sandbox.stream.error" => {
                let why = match params.get("error") {
                    Some(Value::String(m)) => m.clone(),
                    Some(e) => e
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("stream failed")
                        .to_string(),
                    None => "stream failed".into(),
                };
                let _ = s.slot(sid).tx.send(StreamEvent::Error(why));
                drop_if_taken(&mut s, sid);
            }
            _ => {}
        }
        return;
    }
    let Some(id) = msg.get("id").and_then(Value::as_u64) else {
        return;
    };
    let Some(tx) = s.pending.remove(&id) else {
        return;
    };
    let result = if let Some(err) = msg.get("error") {
        Err(RpcError::Protocol {
            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_string(),
        })
    } else {
        let result = msg.get("result").cloned().unwrap_or(Value::Null);
        if let Some(e) = result.get("error") {
            Err(RpcError::App {
                class: e
                    .get("constructorName")
                    .and_then(Value::as_str)
                    .unwrap_or("Error")
                    .to_string(),
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            })
        } else {
            Ok(result.get("ok").cloned().unwrap_or(Value::Null))
        }
    };
    let _ = tx.send(result);
}

/// A stream that ended is forgotten once its receiver was taken (its
/// events stay queued in the receiver); one not yet taken stays until then.
fn drop_if_taken(s: &mut Shared, sid: u64) {
    if s.streams.get(&sid).is_some_and(|slot| slot.rx.is_none()) {
        s.streams.remove(&sid);
    }
}

/// A failed upgrade, said in the user's terms.
fn connect_error(e: tungstenite::Error, target: &ApiTarget, id: &str) -> anyhow::Error {
    match e {
        tungstenite::Error::Http(resp) => {
            let status = resp.status().as_u16();
            let body: Value = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            let message = body
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match status {
                404 => anyhow!("no such sandbox: {id} (list them with `airlock ls`)"),
                401 => anyhow!(
                    "the daemon refused the token (HTTP 401){}; check DENO_DEPLOY_TOKEN or --token \
                     (create one with `airlock token create`)",
                    if message.is_empty() { String::new() } else { format!(": {message}") }
                ),
                _ => anyhow!(
                    "the daemon refused to connect to {id}: HTTP {status}{}",
                    if message.is_empty() {
                        String::new()
                    } else {
                        format!(": {message}")
                    }
                ),
            }
        }
        tungstenite::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::NotFound
            | std::io::ErrorKind::AddrNotAvailable => anyhow!(
                "cannot reach the daemon ({io}): is `airlock serve` running at {}?",
                target.endpoint
            ),
            _ => anyhow!("connecting to {}: {io}", target.endpoint),
        },
        other => anyhow!("connecting to {}: {other}", target.endpoint),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_urls() {
        assert_eq!(ws_base("http://127.0.0.1:7070/"), "ws://127.0.0.1:7070");
        assert_eq!(ws_base("https://h.example"), "wss://h.example");
        assert_eq!(ws_base("127.0.0.1:7070"), "ws://127.0.0.1:7070");
    }

    #[test]
    fn responses_and_streams_are_routed() {
        let shared = Mutex::new(Shared::default());
        let (tx, mut rx) = oneshot::channel();
        shared.lock().unwrap().pending.insert(3, tx);
        dispatch(
            &shared,
            r#"{"jsonrpc":"2.0","id":3,"result":{"error":{"constructorName":"NotFound","message":"m","code":"ENOENT"}}}"#,
        );
        let e = rx.try_recv().unwrap().unwrap_err();
        assert!(e.is_not_found(), "{e}");
        dispatch(
            &shared,
            r#"{"jsonrpc":"2.0","method":"$sandbox.stream.start","params":{"streamId":9}}"#,
        );
        dispatch(
            &shared,
            r#"{"jsonrpc":"2.0","method":"$sandbox.stream.enqueue","params":{"streamId":9,"data":"aGk="}}"#,
        );
        dispatch(
            &shared,
            r#"{"jsonrpc":"2.0","method":"$sandbox.stream.end","params":{"streamId":9}}"#,
        );
        let mut s = shared.lock().unwrap();
        let mut rx = s.slot(9).rx.take().unwrap();
        assert!(matches!(rx.try_recv().unwrap(), StreamEvent::Data(d) if d == b"hi"));
        assert!(matches!(rx.try_recv().unwrap(), StreamEvent::End));
    }
}
