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

use super::session::notification;
use crate::AppState;
use agent_proto::ErrorObject;
use axum::extract::ws::Message;
use base64::Engine;
use manager::Live;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Methods the agent serves with the same params and results.
const AGENT_METHODS: &[&str] = &[
    "processKill",
    // airlock extension (not in the Deno protocol): resize a spawned PTY;
    // `airlock exec -t` and `airlock shell` forward window changes with it.
    "ptyResize",
    // airlock extension (not in the Deno protocol): run a snippet in a
    // stateful python3 interpreter per (sandbox, session); see the README.
    "pythonRun",
    // Deno runtime: `denoHttpWait` holds its reply until the process listens
    // or exits; the REPL calls address a `spawnDenoRepl` pid.
    "denoHttpWait",
    "denoReplEval",
    "denoReplCall",
    "denoReplClose",
    "envGet",
    "envSet",
    "envDelete",
    "envToObject",
    "readFile",
    "readTextFile",
    "writeFile",
    "writeTextFile",
    "readDir",
    "remove",
    "mkdir",
    "rename",
    "stat",
    "lstat",
    "chmod",
    "chown",
    "copyFile",
    "link",
    "symlink",
    "readLink",
    "realPath",
    "makeTempDir",
    "makeTempFile",
    "truncate",
    "umask",
    "utime",
    "open",
    "create",
    "fileRead",
    "fileWrite",
    "fileSeek",
    "fileStat",
    "fileTruncate",
    "fileUtime",
    "fileLock",
    "fileUnlock",
    "fileSync",
    "fileSyncData",
    "fileClose",
];

/// Protocol methods airlock does not serve yet: answered with a clear
/// application error rather than "method not found".
const NOT_YET: &[&str] = &["fetch", "exposeHttp", "vscode"];

/// Whether `method` is one of the protocol's (for metric labels).
pub(crate) fn is_known_method(method: &str) -> bool {
    AGENT_METHODS.contains(&method)
        || NOT_YET.contains(&method)
        || matches!(
            method,
            "spawn" | "processWait" | "walk" | "expandGlob" | "abort"
        )
}

/// How long a process's output waits for the client's `processWait` before
/// it is sent anyway.
const OUTPUT_HOLD_LIMIT: Duration = Duration::from_secs(5);

struct Inner {
    /// Client stream id → agent stream id (client → sandbox streams).
    client_streams: HashMap<u64, ClientStream>,
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
    out: mpsc::UnboundedSender<Message>,
    inner: Arc<Mutex<Inner>>,
}

impl Rpc {
    pub fn new(state: Arc<AppState>, live: Arc<Live>, out: mpsc::UnboundedSender<Message>) -> Self {
        let inner = Inner {
            client_streams: HashMap::new(),
            wait_gates: HashMap::new(),
            cancelled: HashSet::new(),
            server_streams: HashMap::new(),
        };
        Self {
            state,
            live,
            out,
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    /// Releases held output so forwarding tasks can finish.
    pub fn shutdown(&self) {
        let inner = self.inner.lock().expect("rpc lock");
        for gate in inner.wait_gates.values() {
            gate.send_replace(true);
        }
    }

    /// Handles one text message. `Err(close_code)` when the message is not
    /// JSON (4000) or not a JSON-RPC message (4001).
    pub async fn on_message(&self, text: &str) -> Result<(), u16> {
        let value: Value = serde_json::from_str(text).map_err(|_| 4000u16)?;
        let Value::Object(msg) = value else {
            return Err(4001);
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
            (Some(method), Some(id)) => {
                // Bound here, in message order, before the request runs on
                // its own task: the stream's data and end are handled in
                // this loop and may follow at once.
                self.bind_client_stream(&method, &mut params);
                let rpc = self.clone();
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let response = rpc.request(&method, params).await;
                    rpc.count(&method, &response, started);
                    rpc.respond(id, response);
                });
                Ok(())
            }
            (Some(method), None) => {
                self.notification(&method, &params).await;
                Ok(())
            }
            (None, Some(id)) => {
                self.respond(id, Err(RpcError::new(-32600, "Invalid Request")));
                Ok(())
            }
            (None, None) => Err(4001),
        }
    }

    fn count(
        &self,
        method: &str,
        response: &Result<Result<Value, ErrorObject>, RpcError>,
        started: std::time::Instant,
    ) {
        let m = &self.state.metrics;
        let label = crate::metrics::Metrics::method_label(method);
        m.rpc_calls.get_or_create(&label).inc();
        if !matches!(response, Ok(Ok(_))) {
            m.rpc_errors.get_or_create(&label).inc();
        }
        if method == "spawn" {
            m.spawn_seconds.observe(started.elapsed().as_secs_f64());
        }
    }

    fn send(&self, msg: Message) {
        let _ = self.out.send(msg);
    }

    fn respond(&self, id: Value, result: Result<Result<Value, ErrorObject>, RpcError>) {
        let body = match result {
            Ok(Ok(v)) => json!({"jsonrpc": "2.0", "id": id, "result": {"ok": v}}),
            Ok(Err(e)) => json!({"jsonrpc": "2.0", "id": id, "result": {"error": e}}),
            Err(e) => {
                let mut err = json!({"code": e.code, "message": e.message});
                if let Some(data) = e.data {
                    err["data"] = data;
                }
                json!({"jsonrpc": "2.0", "id": id, "error": err})
            }
        };
        self.send(Message::Text(body.to_string().into()));
    }

    async fn request(
        &self,
        method: &str,
        params: Value,
    ) -> Result<Result<Value, ErrorObject>, RpcError> {
        let Value::Object(params) = params else {
            return Err(RpcError::invalid_params(method, "params must be an object"));
        };
        // The Python SDK nests options; the agent reads them flat too, but
        // stream ids must be found where the SDK put them.
        match method {
            // Spawn-like: results carry output stream ids to translate
            // (`spawnDeno`'s `watcherId` passes through).
            "spawn" | "spawnDeno" | "spawnDenoRepl" => self.spawn(method, params).await,
            "processWait" => self.process_wait(params).await,
            "writeFile" | "writeTextFile" => Ok(self.forward(method, params).await),
            "walk" | "expandGlob" => {
                let result = self.forward(method, params).await;
                Ok(
                    result.map(|v| match v.get("streamId").and_then(Value::as_u64) {
                        Some(agent_id) => {
                            json!({"streamId": self.forward_stream(agent_id as u32, None)})
                        }
                        None => v,
                    }),
                )
            }
            "abort" => Ok(Ok(Value::Null)),
            m if AGENT_METHODS.contains(&m) => {
                let result = self.forward(method, params).await;
                // A process of an ended sandbox is gone: killing it (or
                // closing its REPL) is done.
                if matches!(m, "processKill" | "denoReplClose")
                    && result.is_err()
                    && self.sandbox_gone()
                {
                    return Ok(Ok(Value::Null));
                }
                Ok(result)
            }
            m if NOT_YET.contains(&m) => Ok(Err(ErrorObject::new(
                "NotSupported",
                format!("{m} is not supported by this airlock version yet"),
                None,
            ))),
            _ => Err(RpcError::new(-32601, "Method not found")),
        }
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
        method: &str,
        params: Map<String, Value>,
    ) -> Result<Result<Value, ErrorObject>, RpcError> {
        let mut result = match self.forward(method, params).await {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let pid = result.get("pid").and_then(Value::as_i64).unwrap_or(0);
        let gate = self.gate(pid);
        for key in ["stdoutStreamId", "stderrStreamId"] {
            if let Some(agent_id) = result.get(key).and_then(Value::as_u64) {
                let sid = self.forward_stream(agent_id as u32, Some(gate.clone()));
                result[key] = json!(sid);
            }
        }
        Ok(Ok(result))
    }

    async fn process_wait(
        &self,
        params: Map<String, Value>,
    ) -> Result<Result<Value, ErrorObject>, RpcError> {
        if let Some(pid) = params.get("pid").and_then(Value::as_i64) {
            self.open_gate(pid);
        }
        let result = self.forward("processWait", params).await;
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

    /// The agent stream carrying client stream `client_id` (made on first
    /// sight, whether that is its start, its data or the request).
    fn agent_stream_for(&self, client_id: u64) -> u32 {
        let mut inner = self.inner.lock().expect("rpc lock");
        inner
            .client_streams
            .entry(client_id)
            .or_insert_with(|| ClientStream {
                agent_id: self.live.client.open_stream(),
                ended: false,
                bound: false,
            })
            .agent_id
    }

    /// Rewrites a request's client stream id to its agent stream id.
    fn bind_client_stream(&self, method: &str, params: &mut Value) {
        let Some(key) = client_stream_param(method) else {
            return;
        };
        let Some(cid) = params.get(key).and_then(Value::as_u64) else {
            return;
        };
        let agent_id = self.agent_stream_for(cid);
        let mut inner = self.inner.lock().expect("rpc lock");
        if let Some(stream) = inner.client_streams.get_mut(&cid) {
            stream.bound = true;
            if stream.ended {
                inner.client_streams.remove(&cid);
            }
        }
        params[key] = json!(agent_id);
    }

    /// Relays agent stream `agent_id` to the client as a new server stream,
    /// after `hold` opens (if given). Returns the server stream id.
    fn forward_stream(&self, agent_id: u32, hold: Option<watch::Receiver<bool>>) -> u64 {
        let sid = self.state.next_stream_id.fetch_add(1, Ordering::Relaxed);
        self.inner
            .lock()
            .expect("rpc lock")
            .server_streams
            .insert(sid, agent_id);
        let rx = self.live.client.take_stream(agent_id);
        let rpc = self.clone();
        tokio::spawn(async move {
            if let Some(mut hold) = hold {
                let _ = tokio::time::timeout(OUTPUT_HOLD_LIMIT, hold.wait_for(|open| *open)).await;
            }
            rpc.send(notification(
                "$sandbox.stream.start",
                json!({"streamId": sid}),
            ));
            if let Some(mut rx) = rx {
                while let Some(chunk) = rx.recv().await {
                    if chunk.is_empty() || rpc.is_cancelled(sid) {
                        continue;
                    }
                    let data = base64::engine::general_purpose::STANDARD.encode(&chunk);
                    rpc.send(notification(
                        "$sandbox.stream.enqueue",
                        json!({"streamId": sid, "data": data}),
                    ));
                }
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
                self.agent_stream_for(sid);
            }
            "$sandbox.stream.enqueue" => {
                let agent_id = self.agent_stream_for(sid);
                let data = params.get("data").and_then(Value::as_str).unwrap_or("");
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) {
                    if !bytes.is_empty() {
                        let _ = self.live.client.send_data(agent_id, &bytes).await;
                    }
                }
            }
            "$sandbox.stream.end" | "$sandbox.stream.error" => {
                let agent_id = self.agent_stream_for(sid);
                {
                    let mut inner = self.inner.lock().expect("rpc lock");
                    if let Some(stream) = inner.client_streams.get_mut(&sid) {
                        stream.ended = true;
                        if stream.bound {
                            inner.client_streams.remove(&sid);
                        }
                    }
                }
                let _ = self.live.client.send_end(agent_id).await;
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

/// A client → sandbox stream. Kept until both its end and the request that
/// uses it have been seen: they may come in either order.
struct ClientStream {
    agent_id: u32,
    ended: bool,
    bound: bool,
}

/// Params that name a client → sandbox stream, per method.
fn client_stream_param(method: &str) -> Option<&'static str> {
    match method {
        "spawn" | "spawnDeno" | "spawnDenoRepl" => Some("stdinStreamId"),
        "writeFile" | "writeTextFile" => Some("contentStreamId"),
        "fetch" => Some("bodyStreamId"),
        _ => None,
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

    /// `-32602` with a ZodError-shaped `data`, which the Python SDK parses.
    fn invalid_params(method: &str, why: &str) -> Self {
        let issues = json!([{"code": "invalid_type", "expected": "object", "path": ["params"], "message": format!("{method}: {why}")}]);
        Self {
            code: -32602,
            message: "Invalid params".into(),
            data: Some(json!({"constructorName": "ZodError", "message": issues.to_string()})),
        }
    }
}
