//! The agent's end of one REPL server's private socket (see
//! repl_server.js): length-prefixed JSON requests out, replies matched to
//! their callers by id. When the server goes away — it exited, was killed,
//! or the REPL was closed — every caller still waiting is failed with the
//! reason, so no `denoReplEval` is left hanging.

use crate::process::ExitInfo;
use agent_proto::ErrorObject;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};

/// Largest reply accepted from the server (the agent's own frames are
/// smaller still; a bigger result fails there with a clear RangeError).
const MAX_FRAME: usize = 64 << 20;
/// After the socket closes, how long to wait for the exit status so the
/// error can say how the process ended.
const EXIT_GRACE: Duration = Duration::from_millis(200);

/// A caller waiting for a reply, with the method it called (for errors).
type Waiter = (String, oneshot::Sender<Result<Value, ErrorObject>>);

struct Pending {
    waiters: HashMap<u64, Waiter>,
    /// Set once the link is down: why, for callers that come later.
    down: Option<String>,
}

pub struct Link {
    pid: i32,
    writer: tokio::sync::Mutex<Option<OwnedWriteHalf>>,
    pending: Mutex<Pending>,
    next_id: AtomicU64,
}

impl Link {
    /// Serves `stream`, connected by the REPL server of process `pid`.
    pub fn start(
        pid: i32,
        stream: UnixStream,
        exit: watch::Receiver<Option<ExitInfo>>,
    ) -> Arc<Link> {
        let (reader, writer) = stream.into_split();
        let link = Arc::new(Link {
            pid,
            writer: tokio::sync::Mutex::new(Some(writer)),
            pending: Mutex::new(Pending {
                waiters: HashMap::new(),
                down: None,
            }),
            next_id: AtomicU64::new(1),
        });
        tokio::spawn(link.clone().read_replies(reader, exit));
        link
    }

    /// Sends `request` (an object without `id`) and waits for its reply.
    pub async fn request(&self, method: &str, mut request: Value) -> Result<Value, ErrorObject> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        request["id"] = json!(id);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().expect("repl link lock");
            if let Some(why) = &pending.down {
                return Err(gone(method, why));
            }
            pending.waiters.insert(id, (method.to_string(), tx));
        }
        let body = serde_json::to_vec(&request).expect("request serializes");
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        let written = match self.writer.lock().await.as_mut() {
            Some(w) => w.write_all(&frame).await.is_ok(),
            None => false,
        };
        if !written {
            // The reader fails every waiter when the link goes down; this
            // one may have been registered just after that.
            self.pending
                .lock()
                .expect("repl link lock")
                .waiters
                .remove(&id);
            let why = self.down_reason().unwrap_or_else(|| {
                format!("the Deno REPL (pid {}) stopped taking requests", self.pid)
            });
            return Err(gone(method, &why));
        }
        match rx.await {
            Ok(result) => result,
            Err(_) => Err(gone(
                method,
                &self
                    .down_reason()
                    .unwrap_or_else(|| format!("the Deno REPL (pid {}) went away", self.pid)),
            )),
        }
    }

    fn down_reason(&self) -> Option<String> {
        self.pending.lock().expect("repl link lock").down.clone()
    }

    /// Closes the agent's side: the server sees EOF and exits. Callers
    /// still waiting fail with `why`.
    pub async fn close(&self, why: String) {
        self.go_down(why);
        if let Some(mut w) = self.writer.lock().await.take() {
            let _ = w.shutdown().await;
        }
    }

    /// Marks the link down (first reason wins) and fails every waiter.
    fn go_down(&self, why: String) {
        let waiters = {
            let mut pending = self.pending.lock().expect("repl link lock");
            let why = pending.down.get_or_insert(why).clone();
            std::mem::take(&mut pending.waiters)
                .into_values()
                .map(move |w| (w, why.clone()))
                .collect::<Vec<_>>()
        };
        for ((method, w), why) in waiters {
            let _ = w.send(Err(gone(&method, &why)));
        }
    }

    async fn read_replies(
        self: Arc<Self>,
        mut reader: OwnedReadHalf,
        mut exit: watch::Receiver<Option<ExitInfo>>,
    ) {
        // The socket's EOF is the signal: the kernel closes it when the
        // process dies (Deno opens it close-on-exec, so no child keeps it).
        // Replies already sent are still read first.
        let failure = self.read_loop(&mut reader).await;
        // Say how the process ended if it has (or is about to).
        let _ = tokio::time::timeout(EXIT_GRACE, exit.wait_for(Option::is_some)).await;
        let ended = *exit.borrow();
        let why = match ended {
            Some(info) => format!(
                "the Deno REPL process (pid {}) {}",
                self.pid,
                super::describe_exit(Some(info))
            ),
            None => format!(
                "the connection to the Deno REPL process (pid {}) failed: {failure}",
                self.pid
            ),
        };
        self.go_down(why);
    }

    /// Reads replies until the socket fails; returns why.
    async fn read_loop(&self, reader: &mut OwnedReadHalf) -> String {
        loop {
            let mut len = [0u8; 4];
            if let Err(e) = reader.read_exact(&mut len).await {
                return format!("reading a reply: {e}");
            }
            let len = u32::from_be_bytes(len) as usize;
            if len > MAX_FRAME {
                return format!("a reply of {len} bytes exceeds {MAX_FRAME}");
            }
            let mut body = vec![0u8; len];
            if let Err(e) = reader.read_exact(&mut body).await {
                return format!("reading a reply: {e}");
            }
            let reply: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return format!("a reply is not JSON: {e}"),
            };
            let Some(id) = reply.get("id").and_then(Value::as_u64) else {
                return "a reply has no id".to_string();
            };
            let waiter = self
                .pending
                .lock()
                .expect("repl link lock")
                .waiters
                .remove(&id);
            if let Some((_, w)) = waiter {
                let _ = w.send(decode(reply));
            }
        }
    }
}

/// `{ok: v}` → v; `{error: {name, message}}` → an ErrorObject of that
/// class (the server only names JS built-ins or `Error`).
fn decode(mut reply: Value) -> Result<Value, ErrorObject> {
    if let Some(err) = reply.get("error").filter(|e| !e.is_null()) {
        let name = err.get("name").and_then(Value::as_str).unwrap_or("Error");
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("evaluation failed");
        return Err(ErrorObject::new(name, message, None));
    }
    Ok(reply.get_mut("ok").map(Value::take).unwrap_or(Value::Null))
}

/// The error for a call the REPL can no longer answer.
fn gone(method: &str, why: &str) -> ErrorObject {
    ErrorObject::new("Error", format!("{method}: {why}"), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_values_and_errors() {
        assert_eq!(decode(json!({"id": 1, "ok": [1, 2]})), Ok(json!([1, 2])));
        assert_eq!(decode(json!({"id": 1})), Ok(Value::Null));
        let e =
            decode(json!({"id": 1, "error": {"name": "SyntaxError", "message": "SyntaxError: x"}}))
                .unwrap_err();
        assert_eq!(e.constructor_name, "SyntaxError");
        assert_eq!(e.message, "SyntaxError: x");
    }

    #[tokio::test]
    async fn replies_by_id_and_fails_waiters_when_the_server_goes() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (exit_tx, exit_rx) = watch::channel(None);
        let link = Link::start(7, ours, exit_rx);
        // A fake server: answers the first request, then dies mid-second.
        let server = tokio::spawn(async move {
            let mut s = theirs;
            let mut seen = Vec::new();
            for _ in 0..2 {
                let mut len = [0u8; 4];
                s.read_exact(&mut len).await.unwrap();
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                s.read_exact(&mut body).await.unwrap();
                seen.push(serde_json::from_slice::<Value>(&body).unwrap());
            }
            let reply = json!({"id": seen[0]["id"], "ok": 2}).to_string();
            s.write_all(&(reply.len() as u32).to_be_bytes())
                .await
                .unwrap();
            s.write_all(reply.as_bytes()).await.unwrap();
            exit_tx
                .send(Some(ExitInfo {
                    code: 137,
                    signal: Some(libc::SIGKILL),
                }))
                .unwrap();
            drop(s);
            seen
        });
        let first = link.request("denoReplEval", json!({"code": "1+1"}));
        let second = link.request(
            "denoReplEval",
            json!({"code": "await new Promise(() => {})"}),
        );
        let (a, b) = tokio::join!(first, second);
        assert_eq!(a, Ok(json!(2)));
        let b = b.unwrap_err();
        assert!(b.message.contains("killed by SIGKILL"), "{}", b.message);
        let seen = server.await.unwrap();
        assert_eq!(seen[0]["code"], "1+1");
        // Later calls fail at once with the same reason.
        let c = link
            .request("denoReplCall", json!({"fn": "f", "args": []}))
            .await;
        assert!(c.unwrap_err().message.contains("killed by SIGKILL"));
    }
}
