//! JSON-RPC for one client: requests forwarded to the sandbox's agent (the
//! agent speaks the same method shapes), with stream ids translated
//! between the client's, the daemon's and the agent's id spaces.
//!
//! Rules from PROTOCOL.md §5 this enforces:
//! * server stream ids are unique across the daemon (JS keys them globally);
//! * every server stream starts with `start`, never has an empty `enqueue`,
//!   and gets nothing after the client cancelled it;
//! * a process's output is held until the client has sent `processWait` for
//!   it (the Python SDK drops output that arrives before its readers exist).

use super::fetch;
use super::session::{notification, Outgoing};
use super::ClientKind;
use crate::AppState;
use agent_proto::{ErrorObject, Method, Route, FILE_WINDOW};
use axum::extract::ws::Message;
use base64::Engine;
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use manager::Live;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

/// Most JSON a walk list for the Python SDK may hold: its `websockets`
/// client refuses messages over 1 MiB and closes the connection.
const PY_MAX_LIST_BYTES: usize = 900 << 10;

/// How long a process's output waits for the client's `processWait` before
/// it is sent anyway.
const OUTPUT_HOLD_LIMIT: Duration = Duration::from_secs(5);

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
        let method = msg
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_string);
        let id = msg
            .get("id")
            .filter(|v| v.is_number() || v.is_string())
            .cloned();
        let mut params = msg.get("params").cloned().unwrap_or_else(|| json!({}));
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
        match envelope(text) {
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
            m.spawn_seconds.observe(started.elapsed().as_secs_f64());
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

    async fn request(
        &self,
        method: Option<Method>,
        params: Value,
        body: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
        held: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<Result<Value, ErrorObject>, RpcError> {
        let Value::Object(params) = params else {
            return Err(RpcError::invalid_params(ErrorObject::invalid_type(
                &[],
                "object",
                Some(&params),
            )));
        };
        let Some(m) = method else {
            return Err(RpcError::new(-32601, "Method not found"));
        };
        let method = m.as_str();
        // The Python SDK nests options; the agent reads them flat too, but
        // stream ids must be found where the SDK put them.
        match m {
            // Spawn-like: results carry output stream ids to translate
            // (`spawnDeno`'s `watcherId` passes through).
            Method::Spawn | Method::SpawnDeno | Method::SpawnDenoRepl => {
                self.spawn(m, params).await
            }
            Method::ProcessWait => self.process_wait(params).await,
            Method::WriteFile | Method::WriteTextFile => Ok(self.write_file(method, params).await),
            Method::ReadFile | Method::ReadTextFile => {
                Ok(self.read_file(method, params, held).await)
            }
            Method::Walk | Method::ExpandGlob => {
                let result = self.forward(method, params).await;
                let [key] = m.server_stream_results() else {
                    unreachable!("walk and expandGlob answer one stream")
                };
                let agent_id = match result {
                    Ok(v) => match v.get(*key).and_then(Value::as_u64) {
                        Some(id) => id as u32,
                        None => return Ok(Ok(v)),
                    },
                    Err(e) => return Ok(Err(e)),
                };
                Ok(match self.kind {
                    ClientKind::Python => self.collect_walk(m, agent_id).await,
                    ClientKind::Standard => {
                        Ok(json!({ *key: self.forward_stream(agent_id, None) }))
                    }
                })
            }
            Method::Fetch => Ok(self.fetch(params, body).await),
            Method::ExposeHttp => {
                Ok(crate::expose::bind_rpc(&self.state, &self.live, &params).await)
            }
            Method::Abort => {
                let id = params.get("abortId").and_then(Value::as_i64);
                let pending =
                    id.and_then(|id| self.inner.lock().expect("rpc lock").aborts.remove(&id));
                if let Some(abort) = pending {
                    let _ = abort.send(());
                }
                Ok(Ok(Value::Null))
            }
            _ => match m.route() {
                Route::Agent => {
                    let result = self.forward(method, params).await;
                    // A process of an ended sandbox is gone: killing it (or
                    // closing its REPL) is done.
                    if matches!(m, Method::ProcessKill | Method::DenoReplClose)
                        && result.is_err()
                        && self.sandbox_gone()
                    {
                        return Ok(Ok(Value::Null));
                    }
                    Ok(result)
                }
                Route::NotYet => Ok(Err(ErrorObject::new(
                    "NotSupported",
                    format!("{m} is not supported by this airlock version yet"),
                    None,
                ))),
                // Every daemon method is matched above; internal ones are
                // not `from_client`.
                Route::Daemon | Route::Internal => Err(RpcError::new(-32601, "Method not found")),
            },
        }
    }

    /// `fetch`: the daemon makes the request through a TCP connection the
    /// agent opens inside the sandbox (see `fetch.rs`).
    async fn fetch(
        &self,
        params: Map<String, Value>,
        body: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
    ) -> Result<Value, ErrorObject> {
        let req = fetch::parse(&params)?;
        let tls = self
            .state
            .manager
            .config()
            .network
            .as_ref()
            .map(|n| n.upstream_tls.clone());
        let abort_id = params.get("abortId").and_then(Value::as_i64);
        let (abort_tx, abort_rx) = oneshot::channel();
        if let Some(id) = abort_id {
            self.inner
                .lock()
                .expect("rpc lock")
                .aborts
                .insert(id, abort_tx);
        }
        let result = tokio::select! {
            r = fetch::run(&self.live, tls, req, body) => r,
            Ok(()) = abort_rx => Err(ErrorObject::new("AbortError", "fetch: the request was aborted", None)),
        };
        if let Some(id) = abort_id {
            self.inner.lock().expect("rpc lock").aborts.remove(&id);
        }
        let resp = result?;
        let body_id = resp.body.map(|rx| {
            let chunks =
                stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
            self.forward_stream_from(chunks.boxed(), None, None)
        });
        Ok(json!({
            "status": resp.status,
            "statusText": resp.status_text,
            "headers": resp.headers,
            "bodyStreamId": body_id,
        }))
    }

    /// `walk`/`expandGlob` for the Python SDK, which returns the RPC's
    /// result as the list itself (PROTOCOL.md §9.2 item 4): the entries,
    /// gathered from the agent's stream (one JSON document per frame) —
    /// for `expandGlob` their paths, as the SDK's `list[str]` says. The SDK
    /// takes messages up to 1 MiB, so a bigger list is an error that says
    /// how to narrow it rather than a closed connection.
    async fn collect_walk(&self, method: Method, agent_id: u32) -> Result<Value, ErrorObject> {
        let Some(mut rx) = self.live.client.take_stream(agent_id) else {
            return Ok(json!([]));
        };
        let mut entries = Vec::new();
        let mut size = 0usize;
        while let Some(chunk) = rx.recv().await {
            size += chunk.len();
            if size > PY_MAX_LIST_BYTES {
                let _ = self.live.client.send_cancel(agent_id).await;
                while rx.recv().await.is_some() {}
                return Err(ErrorObject::new(
                    "RangeError",
                    format!(
                        "{method}: the result exceeds the {} KiB the Python SDK can receive in one \
                         message; narrow it (max_depth, exts, include_dirs, exclude)",
                        PY_MAX_LIST_BYTES >> 10
                    ),
                    None,
                ));
            }
            let Ok(entry) = serde_json::from_slice::<Value>(&chunk) else {
                continue;
            };
            entries.push(match method {
                Method::ExpandGlob => entry.get("path").cloned().unwrap_or(Value::Null),
                _ => entry,
            });
        }
        Ok(Value::Array(entries))
    }

    /// Takes `bytes` of the daemon's [`crate::FILE_BUDGET`] for `method`,
    /// or says why not. Never waits: two calls each holding part of the
    /// budget and waiting for more would wait for ever.
    fn take_budget(
        &self,
        method: &str,
        bytes: usize,
        held: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<(), ErrorObject> {
        let permit = u32::try_from(bytes)
            .ok()
            .and_then(|n| {
                self.state
                    .file_budget
                    .clone()
                    .try_acquire_many_owned(n)
                    .ok()
            })
            .ok_or_else(|| {
                ErrorObject::new(
                    "Error",
                    format!(
                        "{method}: the daemon is already moving {} MiB of file contents for its \
                         clients (its limit); retry shortly, or move the file as a stream",
                        crate::FILE_BUDGET >> 20
                    ),
                    None,
                )
            })?;
        match held {
            Some(h) => h.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }

    /// writeFile/writeTextFile. Content the SDK sent inline is forwarded
    /// inline when it fits an agent frame; bigger content goes to the agent
    /// as a windowed stream (the agent writes it piece by piece), decoded
    /// from the request a piece at a time, so neither side holds the file
    /// twice. Content already on a stream is relayed by `feed`/`notification`.
    async fn write_file(
        &self,
        method: &str,
        mut params: Map<String, Value>,
    ) -> Result<Value, ErrorObject> {
        let inline_fits = match params.get("content") {
            Some(Value::String(content)) => content.len() <= INLINE_WRITE_MAX,
            _ => true,
        };
        if inline_fits {
            return self.forward(method, params).await;
        }
        let Some(Value::String(content)) = params.remove("content") else {
            unreachable!("checked above");
        };
        let mut held = None;
        self.take_budget(method, content.len(), &mut held)?;
        let base64 = method == "writeFile";
        if base64 {
            check_base64(&content).map_err(|e| {
                ErrorObject::type_error(format!(
                    "{method}: param \"content\" is not valid base64: {e}"
                ))
            })?;
        }
        let client = &self.live.client;
        let (id, window) = client.open_windowed_stream(FILE_WINDOW);
        params.insert("contentStreamId".into(), json!(id));
        let pump = async {
            let mut piece = vec![0u8; B64_PIECE / 4 * 3];
            let step = if base64 { B64_PIECE } else { TEXT_PIECE };
            for chunk in content.as_bytes().chunks(step) {
                let bytes = if base64 {
                    let n = LENIENT_B64
                        .decode_slice(chunk, &mut piece)
                        .expect("checked by check_base64");
                    &piece[..n]
                } else {
                    chunk
                };
                if bytes.is_empty() {
                    continue;
                }
                if client.send_windowed(id, &window, bytes).await.is_err() {
                    // The agent failed the call (its reply says why).
                    return;
                }
            }
            let _ = client.send_end(id).await;
        };
        let (result, ()) = tokio::join!(self.forward(method, params), pump);
        client.close_windowed_stream(id);
        drop(held);
        result
    }

    /// readFile/readTextFile: the agent sends the file as a windowed stream
    /// (`stream: true`), and the reply the SDKs expect (the whole file in
    /// one message) is assembled here, up to what the client's WebSocket
    /// takes in one message and within the daemon's file budget. A bigger
    /// file is an error that names the limit and the way to read it in
    /// pieces, not a message the SDK would drop with its connection.
    async fn read_file(
        &self,
        method: &str,
        mut params: Map<String, Value>,
        held: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<Value, ErrorObject> {
        let path = params
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        params.insert("stream".into(), Value::Bool(true));
        let reply = self.forward(method, params).await?;
        let Some(agent_id) = reply.get("streamId").and_then(Value::as_u64) else {
            // An agent that answered inline (it has no stream to offer).
            return Ok(reply);
        };
        let agent_id = agent_id as u32;
        let client = &self.live.client;
        let Some(mut rx) = client.take_stream(agent_id) else {
            return Err(ErrorObject::new(
                "Error",
                format!("{method}: stream {agent_id} was already taken"),
                None,
            ));
        };
        let text = method == "readTextFile";
        let limit = self.kind.max_message() - REPLY_ENVELOPE;
        // Bytes held per file byte: the raw text and its reply, or the
        // base64 (4 per 3) built into the reply in place.
        let cost = |bytes: usize| {
            if text {
                bytes.saturating_mul(2)
            } else {
                bytes.div_ceil(3).saturating_mul(4)
            }
        };
        let too_big = |bytes: usize| {
            if text {
                bytes > limit
            } else {
                bytes.div_ceil(3).saturating_mul(4) > limit
            }
        };
        // The size the agent saw decides at once what most files need (one
        // that grows meanwhile takes more as it comes): a file too big is
        // refused before it moves, and concurrent reads are admitted or
        // refused whole, rather than all failing halfway through the budget.
        let size = reply.get("size").and_then(Value::as_u64).unwrap_or(0);
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let early = if too_big(size) {
            Some(self.too_big(method, &path))
        } else {
            self.take_budget(method, cost(size), held).err()
        };
        let mut reserved = if early.is_none() { cost(size) } else { 0 };
        // Sized up front (with room for the reply's envelope, added in
        // place), so growing never holds two copies at once.
        let (mut b64, mut raw) = match (&early, text) {
            (None, false) => (String::with_capacity(reserved + 256), Vec::new()),
            (None, true) => (String::new(), Vec::with_capacity(size)),
            (Some(_), _) => (String::new(), Vec::new()),
        };
        let mut total = 0usize;
        // Base64 is encoded in multiples of 3 bytes; the rest waits here.
        let mut carry = Vec::with_capacity(3);
        if early.is_some() {
            let _ = client.send_cancel(agent_id).await;
        }
        let mut failure = early;
        while let Some(chunk) = rx.recv().await {
            let _ = client.send_credit(agent_id, chunk.len() as u32).await;
            if failure.is_some() {
                continue;
            }
            total += chunk.len();
            let need = cost(total);
            if too_big(total) {
                failure = Some(self.too_big(method, &path));
            } else if need > reserved {
                match self.take_budget(method, need - reserved, held) {
                    Ok(()) => reserved = need,
                    Err(e) => failure = Some(e),
                }
            }
            if failure.is_some() {
                // Stop the agent; what is in flight (a window) is drained.
                let _ = client.send_cancel(agent_id).await;
                b64 = String::new();
                raw = Vec::new();
                continue;
            }
            if text {
                raw.extend_from_slice(&chunk);
                continue;
            }
            carry.extend_from_slice(&chunk);
            let whole = carry.len() / 3 * 3;
            base64::engine::general_purpose::STANDARD.encode_string(&carry[..whole], &mut b64);
            carry.drain(..whole);
        }
        client.drop_stream(agent_id);
        if let Some(e) = failure {
            // An error reply holds nothing.
            *held = None;
            return Err(e);
        }
        if !text {
            base64::engine::general_purpose::STANDARD.encode_string(&carry, &mut b64);
            return Ok(Value::String(b64));
        }
        let text = String::from_utf8(raw).map_err(|e| {
            let msg = format!("{}: {method} '{path}'", e.utf8_error());
            ErrorObject::new("InvalidData", msg, None)
        })?;
        if escaped_len(&text) > limit {
            return Err(self.too_big(method, &path));
        }
        Ok(Value::String(text))
    }

    /// The error for a file bigger than the client takes in one message.
    fn too_big(&self, method: &str, path: &str) -> ErrorObject {
        let (sdk, how) = match self.kind {
            ClientKind::Python => (
                "the Python SDK",
                "open it with fs.open() and read it in pieces of at most 512 KiB",
            ),
            ClientKind::Standard => (
                "the SDK",
                "read it in pieces with sandbox.fs.open() (FsFile.read or .readable), \
                 or copy it out with sandbox.fs.download()",
            ),
        };
        ErrorObject::new(
            "RangeError",
            format!(
                "{method} '{path}': the file is larger than {sdk} takes in one message \
                 ({} KiB with its encoding); {how}",
                self.kind.max_message() >> 10
            ),
            Some("EFBIG"),
        )
    }

    /// The sandbox ended, or is being torn down (its agent is gone).
    fn sandbox_gone(&self) -> bool {
        self.live.is_ended() || self.live.client.is_closed()
    }

    /// Calls the agent; a lost agent becomes an application error.
    async fn forward(
        &self,
        method: &str,
        params: Map<String, Value>,
    ) -> Result<Value, ErrorObject> {
        match self.live.client.call(method, Value::Object(params)).await {
            Ok(result) => result,
            Err(e) => Err(ErrorObject::new(
                "Error",
                if self.sandbox_gone() {
                    "the sandbox has ended".to_string()
                } else {
                    format!("sandbox agent: {e:#}")
                },
                None,
            )),
        }
    }

    async fn spawn(
        &self,
        method: Method,
        params: Map<String, Value>,
    ) -> Result<Result<Value, ErrorObject>, RpcError> {
        let mut result = match self.forward(method.as_str(), params).await {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let pid = result.get("pid").and_then(Value::as_i64).unwrap_or(0);
        let gate = self.gate(pid);
        for &key in method.server_stream_results() {
            if let Some(agent_id) = result.get(key).and_then(Value::as_u64) {
                let sid = self.forward_stream(agent_id as u32, Some(gate.clone()));
                result[key] = json!(sid);
            }
        }
        if let Some(agent_id) = result
            .as_object_mut()
            .and_then(|r| r.remove("watcherStreamId"))
            .and_then(|v| v.as_u64())
        {
            result["watcherId"] = json!(self.relay_restarts(agent_id as u32));
        }
        Ok(Ok(result))
    }

    /// `deno.run({watch})`: the agent reports each restart as a byte on a
    /// stream; each becomes a `$sandbox.deno.watcher.restart` notification
    /// for the process's watcher id (the JS SDK fires `restart` on it).
    fn relay_restarts(&self, agent_id: u32) -> String {
        let watcher_id = format!(
            "w{}",
            self.state.next_stream_id.fetch_add(1, Ordering::Relaxed)
        );
        let mut rx = self.live.client.take_stream(agent_id);
        let (rpc, id) = (self.clone(), watcher_id.clone());
        tokio::spawn(async move {
            let Some(rx) = rx.as_mut() else { return };
            while let Some(chunk) = rx.recv().await {
                for _ in 0..chunk.len() {
                    rpc.send(notification(
                        "$sandbox.deno.watcher.restart",
                        json!({ "watcherId": id }),
                    ));
                }
            }
        });
        watcher_id
    }

    async fn process_wait(
        &self,
        params: Map<String, Value>,
    ) -> Result<Result<Value, ErrorObject>, RpcError> {
        if let Some(pid) = params.get("pid").and_then(Value::as_i64) {
            self.open_gate(pid);
        }
        let result = self.forward(Method::ProcessWait.as_str(), params).await;
        Ok(match result {
            Ok(mut status) => {
                if status.get("signal").and_then(Value::as_str) == Some("SIGKILL")
                    && self.live.take_oom()
                {
                    status["oom"] = json!("high-confidence");
                }
                Ok(status)
            }
            // The sandbox was killed under the process.
            Err(_) if self.sandbox_gone() => {
                Ok(json!({"success": false, "code": 137, "signal": "SIGKILL", "oom": null}))
            }
            Err(e) => Err(e),
        })
    }

    /// The wait gate of a pid (created by whichever of spawn and processWait
    /// comes first).
    fn gate(&self, pid: i64) -> watch::Receiver<bool> {
        let mut inner = self.inner.lock().expect("rpc lock");
        inner
            .wait_gates
            .entry(pid)
            .or_insert_with(|| watch::channel(false).0)
            .subscribe()
    }

    fn open_gate(&self, pid: i64) {
        let mut inner = self.inner.lock().expect("rpc lock");
        inner
            .wait_gates
            .entry(pid)
            .or_insert_with(|| watch::channel(false).0)
            .send_replace(true);
    }

    /// Says where client stream `cid` named by a request goes. For `fetch`
    /// the daemon itself reads it (returned); otherwise it becomes an agent
    /// stream, the param is rewritten to that stream's id, and what arrived
    /// before the request is returned to [`Self::feed`] once the request
    /// is on its way. A writeFile's stream is windowed: the agent credits
    /// what it wrote, and this connection's reads wait for that credit, so
    /// a client streaming a big file is held back by TCP instead of being
    /// buffered here or in the agent.
    fn bind_client_stream(&self, method: Method, params: &mut Value) -> Result<Bound, ErrorObject> {
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
    async fn feed(&self, feed: Feed) {
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
    fn forward_stream(&self, agent_id: u32, hold: Option<watch::Receiver<bool>>) -> u64 {
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
    fn forward_stream_from(
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
            rpc.send(notification(
                "$sandbox.stream.start",
                json!({"streamId": sid}),
            ));
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
                let data = base64::engine::general_purpose::STANDARD.encode(&chunk);
                rpc.send(notification(
                    "$sandbox.stream.enqueue",
                    json!({"streamId": sid, "data": data}),
                ));
            }
            if !rpc.is_cancelled(sid) {
                rpc.send(notification(
                    "$sandbox.stream.end",
                    json!({"streamId": sid}),
                ));
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

    /// Stream notifications from the client. Handled in order, inline.
    async fn notification(&self, method: &str, params: &Value) {
        let Some(sid) = params.get("streamId").and_then(Value::as_u64) else {
            return;
        };
        match method {
            "$sandbox.stream.start" => {
                self.inner.lock().expect("rpc lock").sink(sid);
            }
            "$sandbox.stream.enqueue" => {
                let data = params.get("data").and_then(Value::as_str).unwrap_or("");
                let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else {
                    return;
                };
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
            "$sandbox.stream.end" | "$sandbox.stream.error" => {
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
            "$sandbox.stream.cancel" => {
                let agent_id = {
                    let mut inner = self.inner.lock().expect("rpc lock");
                    inner.cancelled.insert(sid);
                    inner.server_streams.get(&sid).copied()
                };
                if let Some(agent_id) = agent_id {
                    let _ = self.live.client.send_cancel(agent_id).await;
                }
            }
            _ => {}
        }
    }
}

/// Client → sandbox streams a client may have open at once.
const MAX_CLIENT_STREAMS: usize = 1024;
/// Bytes held for a client stream no request has named yet.
const MAX_HELD: usize = 16 << 20;

/// Where a client → sandbox stream's bytes go. Its data and end may arrive
/// before the request that names it, so they are held until then.
enum Sink {
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
enum Bound {
    None,
    /// Read by the daemon (a `fetch` body).
    Local(mpsc::UnboundedReceiver<Vec<u8>>),
    /// Relayed to an agent stream; this arrived before the request.
    Agent(Feed),
}

struct Feed {
    agent_id: u32,
    window: Option<Arc<Semaphore>>,
    queued: Vec<Vec<u8>>,
    ended: bool,
}

/// Largest writeFile/writeTextFile content (as sent, base64 for bytes)
/// passed to the agent inline in the call: well within an agent frame
/// (`agent_proto::MAX_PAYLOAD`, 1 MiB). Bigger content is streamed.
const INLINE_WRITE_MAX: usize = 256 << 10;
/// Base64 characters decoded per piece of a streamed inline writeFile (a
/// multiple of 4, so every piece but the last is whole quanta).
const B64_PIECE: usize = 64 << 10;
/// Bytes per piece of a streamed inline writeTextFile.
const TEXT_PIECE: usize = 64 << 10;
/// Room left in a reply message for its JSON-RPC envelope.
const REPLY_ENVELOPE: usize = 4 << 10;
/// Replies with a string at least this long are built around it in place.
const IN_PLACE_REPLY: usize = 64 << 10;

/// Standard-alphabet base64 with padding optional, as the agent (and JS)
/// decode it.
const LENIENT_B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Checks that `s` decodes, a piece at a time (nothing is kept), so a
/// streamed write never starts with content that fails halfway.
fn check_base64(s: &str) -> Result<(), base64::DecodeSliceError> {
    let mut scratch = vec![0u8; B64_PIECE / 4 * 3];
    for chunk in s.as_bytes().chunks(B64_PIECE) {
        LENIENT_B64.decode_slice(chunk, &mut scratch)?;
    }
    Ok(())
}

/// Whether `s` has characters a JSON string must escape.
fn needs_escape(s: &str) -> bool {
    s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}

/// Length of `s` as a JSON string's contents (escapes counted).
fn escaped_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum()
}

/// A JSON-RPC level error (`error` member), for protocol failures.
/// The id (a number or string) and method of a message whose other values
/// serde_json refuses: unread fields are skipped without decoding them.
fn envelope(text: &str) -> (Option<Value>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Envelope {
        id: Option<Value>,
        method: Option<String>,
    }
    match serde_json::from_str::<Envelope>(text) {
        Ok(m) => (m.id.filter(|v| v.is_number() || v.is_string()), m.method),
        Err(_) => (None, None),
    }
}

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

#[cfg(test)]
mod tests {
    use super::envelope;
    use serde_json::json;

    #[test]
    fn envelope_of_a_request_with_a_lone_surrogate() {
        let text = r#"{"jsonrpc":"2.0","id":7,"method":"writeTextFile","params":{"path":"/tmp/x","content":"\udc80"}}"#;
        assert!(serde_json::from_str::<serde_json::Value>(text).is_err());
        assert_eq!(
            envelope(text),
            (Some(json!(7)), Some("writeTextFile".into()))
        );
        // A high surrogate without its low half, and an id after params.
        let text = r#"{"method":"stat","params":{"path":"\ud800x"},"id":"a"}"#;
        assert_eq!(envelope(text), (Some(json!("a")), Some("stat".into())));
    }

    #[test]
    fn envelope_of_what_is_not_json() {
        assert_eq!(envelope("{not json"), (None, None));
        assert_eq!(envelope(r#"{"id":1,"method":"x","params":{"#), (None, None));
        // An id that is not a number or string is no id.
        assert_eq!(
            envelope(r#"{"id":[1],"method":"x","params":"\udc80"}"#).0,
            None
        );
    }
}
