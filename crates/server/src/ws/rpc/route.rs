//! Routing: which requests the daemon serves, which it forwards to the
//! agent, and how their results are adapted for the client (by
//! [`agent_proto::Method`]).

use super::{Rpc, RpcError};
use crate::ws::fetch;
use crate::ws::session::notification;
use crate::ws::ClientKind;
use agent_proto::calls::{
    to_reply, AbortParams, ExitStatus, FetchParams, FetchResult, FromParams, PidParams,
    SpawnResult, WalkEntry,
};
use agent_proto::{ErrorObject, Method, Route};
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};

/// Most JSON a walk list for the Python SDK may hold: its `websockets`
/// client refuses messages over 1 MiB and closes the connection.
const PY_MAX_LIST_BYTES: usize = 900 << 10;

impl Rpc {
    pub(super) async fn request(
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
            Method::WriteFile | Method::WriteTextFile => Ok(self.write_file(m, params).await),
            Method::ReadFile | Method::ReadTextFile => Ok(self.read_file(m, params, held).await),
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
            Method::Fetch => Ok(match FetchParams::decode(m, &Value::Object(params)) {
                Ok(req) => self.fetch(req, body).await,
                Err(e) => Err(e),
            }),
            // Decoded there: a daemon that does not expose HTTP says so
            // whatever the params.
            Method::ExposeHttp => {
                Ok(crate::expose::bind_rpc(&self.state, &self.live, &Value::Object(params)).await)
            }
            Method::Abort => {
                let AbortParams { abort_id } = match AbortParams::decode(m, &Value::Object(params))
                {
                    Ok(p) => p,
                    Err(e) => return Ok(Err(e)),
                };
                let pending =
                    abort_id.and_then(|id| self.inner.lock().expect("rpc lock").aborts.remove(&id));
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
        req: FetchParams,
        body: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
    ) -> Result<Value, ErrorObject> {
        let tls = self
            .state
            .manager
            .config()
            .network
            .as_ref()
            .map(|n| n.upstream_tls.clone());
        let abort_id = req.abort_id;
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
        Ok(to_reply(&FetchResult {
            status: resp.status,
            status_text: resp.status_text,
            headers: resp.headers,
            body_stream_id: body_id,
        }))
    }

    /// `walk`/`expandGlob` for the Python SDK, which returns the RPC's
    /// result as the list itself (docs/protocol.md, "airlock extensions"):
    /// the entries, gathered from the agent's stream (one JSON document per frame) —
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
                Method::ExpandGlob => match WalkEntry::deserialize(&entry) {
                    Ok(entry) => Value::String(entry.path),
                    Err(_) => Value::Null,
                },
                _ => entry,
            });
        }
        Ok(Value::Array(entries))
    }

    /// The sandbox ended, or is being torn down (its agent is gone).
    fn sandbox_gone(&self) -> bool {
        self.live.is_ended() || self.live.client.is_closed()
    }

    /// Calls the agent; a lost agent becomes an application error.
    pub(super) async fn forward(
        &self,
        method: &str,
        params: impl Into<Value>,
    ) -> Result<Value, ErrorObject> {
        match self.live.client.call(method, params.into()).await {
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
        let pid = SpawnResult::deserialize(&result).map_or(0, |r| r.pid);
        let gate = self.gate(pid.into());
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
        // The agent answers params that are not a process; the gate only
        // matters for one that is.
        let params = Value::Object(params);
        if let Ok(PidParams { pid }) = PidParams::decode(Method::ProcessWait, &params) {
            self.open_gate(pid.into());
        }
        let result = self.forward(Method::ProcessWait.as_str(), params).await;
        Ok(match result {
            Ok(status) => match ExitStatus::deserialize(&status) {
                Ok(mut exit) => {
                    if exit.signal.as_deref() == Some("SIGKILL") && self.live.take_oom() {
                        exit.oom = Some("high-confidence".to_string());
                    }
                    Ok(to_reply(&exit))
                }
                // Not an exit status: passed on as the agent sent it.
                Err(_) => Ok(status),
            },
            // The sandbox was killed under the process.
            Err(_) if self.sandbox_gone() => Ok(to_reply(&ExitStatus {
                success: false,
                code: 137,
                signal: Some("SIGKILL".to_string()),
                oom: None,
            })),
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
}
