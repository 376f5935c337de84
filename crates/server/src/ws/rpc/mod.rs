//! JSON-RPC for one client: requests forwarded to the sandbox's agent (the
//! agent speaks the same method shapes), with stream ids translated
//! between the client's, the daemon's and the agent's id spaces.
//!
//! Rules of the protocol's streams (docs/protocol.md, "Sessions, envelopes
//! and streams") this enforces:
//! * server stream ids are unique across the daemon (JS keys them globally);
//! * every server stream starts with `start`, never has an empty `enqueue`,
//!   and gets nothing after the client cancelled it;
//! * a process's output is held until the client has sent `processWait` for
//!   it (the Python SDK drops output that arrives before its readers exist).
//!
//! This module reads messages and writes replies; [`route`] decides who
//! serves each request (by [`agent_proto::Method`]), [`relay`] moves the
//! client's and the sandbox's streams, and [`files`] moves file contents.

mod files;
mod relay;
mod route;

use relay::{Bound, Sink};

use super::session::Outgoing;
use super::ClientKind;
use crate::AppState;
use agent_proto::calls::Envelope;
use agent_proto::{ErrorObject, Method};
use axum::extract::ws::Message;
use manager::Live;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};

struct Inner {
    /// Client → sandbox streams by client stream id.
    client_streams: HashMap<u64, Sink>,
    /// In-flight `fetch`es that named an `abortId`.
    aborts: HashMap<i64, oneshot::Sender<()>>,
    /// Per pid: set once the client sent `processWait`.
    wait_gates: HashMap<i64, watch::Sender<bool>>,
    /// Server stream ids the client cancelled.
    cancelled: HashSet<u64>,
    /// Server stream id → agent stream id, for cancels.
    server_streams: HashMap<u64, u32>,
}

#[derive(Clone)]
pub struct Rpc {
    state: Arc<AppState>,
    live: Arc<Live>,
    out: mpsc::UnboundedSender<Outgoing>,
    inner: Arc<Mutex<Inner>>,
    /// Requests not answered yet: 0 wakes `drain`.
    in_flight: watch::Sender<usize>,
    kind: ClientKind,
}

impl Rpc {
    pub fn new(
        state: Arc<AppState>,
        live: Arc<Live>,
        out: mpsc::UnboundedSender<Outgoing>,
        kind: ClientKind,
    ) -> Self {
        let inner = Inner {
            client_streams: HashMap::new(),
            aborts: HashMap::new(),
            wait_gates: HashMap::new(),
            cancelled: HashSet::new(),
            server_streams: HashMap::new(),
        };
        Self {
            state,
            live,
            out,
            inner: Arc::new(Mutex::new(inner)),
            in_flight: watch::channel(0).0,
            kind,
        }
    }

    /// Waits (at most `limit`) until every request has its answer queued.
    /// When a sandbox ends its pending calls fail or settle at once (a
    /// `processWait` becomes a SIGKILL exit), and a client should get those
    /// answers before the close: the JS SDK leaves some promises of a
    /// process unhandled, so a call cut off by the close can crash it.
    pub async fn drain(&self, limit: Duration) {
        let mut rx = self.in_flight.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await;
    }

    /// Releases held output so forwarding tasks can finish.
    pub fn shutdown(&self) {
        let inner = self.inner.lock().expect("rpc lock");
        for gate in inner.wait_gates.values() {
            gate.send_replace(true);
        }
    }

    /// Handles one text message. One that cannot be served gets a JSON-RPC
    /// error reply and the connection stays open: closing it would end a
    /// session sandbox over one bad message. The reply goes to the
    /// request's id when one can be read, else to id `null` (JSON-RPC 2.0
    /// §5: -32700 for what is not JSON, -32600 for JSON that is not a
    /// request); a notification that cannot be read is dropped, logged.
    pub async fn on_message(&self, text: &str) {
        let msg = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(msg)) => msg,
            Ok(Value::Array(_)) => {
                return self.respond(
                    Value::Null,
                    Err(RpcError::new(
                        -32600,
                        "Invalid Request: batches are not supported; send one request per message",
                    )),
                );
            }
            Ok(_) => {
                return self.respond(
                    Value::Null,
                    Err(RpcError::new(
                        -32600,
                        "Invalid Request: a JSON-RPC message is a JSON object",
                    )),
                );
            }
            Err(e) => return self.unreadable(text, &e),
        };
        let Envelope {
            method,
            id,
            mut params,
        } = Envelope::from_object(msg);
        match (method, id) {
            (Some(name), Some(id)) => {
                // Internal methods and unknown ones are `None`: -32601.
                let method = Method::from_client(&name);
                // Bound here, in message order, before the request runs on
                // its own task: the stream's data and end are handled in
                // this loop and may follow at once.
                let bound = match method {
                    Some(method) => self.bind_client_stream(method, &mut params),
                    None => Ok(Bound::None),
                };
                let (body, feed) = match bound {
                    Ok(Bound::None) => (None, None),
                    Ok(Bound::Local(rx)) => (Some(rx), None),
                    Ok(Bound::Agent(feed)) => (None, Some(feed)),
                    Err(e) => return self.respond(id, Ok(Err(e))),
                };
                let rpc = self.clone();
                self.in_flight.send_modify(|n| *n += 1);
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let mut held = None;
                    let response = rpc.request(method, params, body, &mut held).await;
                    rpc.count(method, &response, started);
                    rpc.respond_held(id, response, held);
                    rpc.in_flight.send_modify(|n| *n -= 1);
                });
                // What arrived before the request goes on after the call is
                // on its way: a windowed stream's sends wait for the
                // agent's credit, which the call's handler grants.
                if let Some(feed) = feed {
                    self.feed(feed).await;
                }
            }
            (Some(method), None) => self.notification(&method, &params).await,
            (None, Some(id)) => self.respond(id, Err(RpcError::new(-32600, "Invalid Request"))),
            (None, None) => self.respond(
                Value::Null,
                Err(RpcError::new(
                    -32600,
                    "Invalid Request: neither a method nor an id",
                )),
            ),
        }
    }

    /// A message serde_json refused. JSON whose only fault is in a value
    /// (typically a string with a lone UTF-16 surrogate escape such as
    /// `"\udc80"`, which JavaScript's `JSON.stringify` writes for a lone
    /// surrogate but which is not Unicode text) still has a readable id
    /// and method: serde skips unread values without decoding them.
    fn unreadable(&self, text: &str, e: &serde_json::Error) {
        match Envelope::peek(text) {
            (Some(id), Some(method)) => {
                let mut why = format!("the request is not valid JSON text: {e}");
                if e.to_string().contains("surrogate") {
                    why.push_str(
                        "; strings must be Unicode text, and a lone UTF-16 surrogate \
                         escape (such as \\udc80, without its pair) is not",
                    );
                }
                let issue = agent_proto::ZodIssue {
                    expected: "object".into(),
                    code: "invalid_type".into(),
                    path: vec!["params".into()],
                    message: format!("{method}: {why}"),
                };
                let mut err = RpcError::invalid_params(ErrorObject::invalid_params(&[issue]));
                err.message = format!("Invalid params: {why}");
                self.respond(id, Err(err));
            }
            (None, Some(method)) => {
                tracing::warn!(
                    sandbox = self.live.id,
                    method,
                    "dropped a notification that is not valid JSON: {e}"
                );
            }
            (Some(id), None) => {
                self.respond(id, Err(RpcError::new(-32700, &format!("Parse error: {e}"))))
            }
            _ => self.parse_error(&format!("not JSON: {e}")),
        }
    }

    /// Answers a message that is not JSON: -32700 to id `null`.
    pub fn parse_error(&self, why: &str) {
        self.respond(
            Value::Null,
            Err(RpcError::new(-32700, &format!("Parse error: {why}"))),
        );
    }

    fn count(
        &self,
        method: Option<Method>,
        response: &Result<Result<Value, ErrorObject>, RpcError>,
        started: std::time::Instant,
    ) {
        let m = &self.state.metrics;
        let label = crate::metrics::Metrics::method_label(method);
        m.rpc_calls.get_or_create(&label).inc();
        if !matches!(response, Ok(Ok(_))) {
            m.rpc_errors.get_or_create(&label).inc();
        }
        if method == Some(Method::Spawn) {
            m.spawn_seconds
                .get_or_create(&crate::metrics::IsolationLabels::of(self.live.isolation))
                .observe(started.elapsed().as_secs_f64());
        }
    }

    fn send(&self, msg: Message) {
        let _ = self.out.send(msg.into());
    }

    /// Sends a call's answer.
    fn respond(&self, id: Value, result: Result<Result<Value, ErrorObject>, RpcError>) {
        self.respond_held(id, result, None);
    }

    /// Answers request `id`; `held` (the budget a big reply holds) is
    /// released once the answer is written to the socket. Every parameter
    /// validation error, whether the daemon or the agent found it, leaves
    /// here as a top-level `-32602`: that is how the hosted service answers
    /// params its zod schemas reject, and the only shape the Python SDK
    /// raises `RpcValidationError` for.
    fn respond_held(
        &self,
        id: Value,
        result: Result<Result<Value, ErrorObject>, RpcError>,
        held: Option<OwnedSemaphorePermit>,
    ) {
        let result = match result {
            Ok(Err(e)) if e.is_invalid_params() => Err(RpcError::invalid_params(e)),
            other => other,
        };
        let body = match result {
            // A file's contents (base64, or text without characters to
            // escape) go into the message in place: the reply is built
            // around the string instead of copying it.
            Ok(Ok(Value::String(mut s))) if s.len() >= IN_PLACE_REPLY && !needs_escape(&s) => {
                let head = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"ok":""#);
                let tail = r#""}}"#;
                s.reserve_exact(head.len() + tail.len());
                s.insert_str(0, &head);
                s.push_str(tail);
                s
            }
            Ok(Ok(v)) => json!({"jsonrpc": "2.0", "id": id, "result": {"ok": v}}).to_string(),
            Ok(Err(e)) => json!({"jsonrpc": "2.0", "id": id, "result": {"error": e}}).to_string(),
            Err(e) => {
                let mut err = json!({"code": e.code, "message": e.message});
                if let Some(data) = e.data {
                    err["data"] = data;
                }
                json!({"jsonrpc": "2.0", "id": id, "error": err}).to_string()
            }
        };
        let _ = self.out.send(Outgoing {
            msg: Message::Text(body.into()),
            held,
        });
    }
}

/// A JSON-RPC level error (`error` member), for protocol failures.
pub struct RpcError {
    code: i64,
    message: String,
    data: Option<Value>,
}

impl RpcError {
    fn new(code: i64, message: &str) -> Self {
        Self {
            code,
            message: message.to_string(),
            data: None,
        }
    }

    /// `-32602` whose `data` is the ZodError (`constructorName` and a
    /// `message` holding the issues' JSON), which the Python SDK parses.
    fn invalid_params(e: ErrorObject) -> Self {
        Self {
            code: -32602,
            message: "Invalid params".into(),
            data: Some(json!({"constructorName": e.constructor_name, "message": e.message})),
        }
    }
}

/// Replies with a string at least this long are built around it in place.
const IN_PLACE_REPLY: usize = 64 << 10;

/// Whether `s` has characters a JSON string must escape.
fn needs_escape(s: &str) -> bool {
    s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}
