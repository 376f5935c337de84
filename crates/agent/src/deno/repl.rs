//! `spawnDenoRepl` and the calls on a REPL: `denoReplEval`,
//! `denoReplCall`, `denoReplClose`.
//!
//! A REPL is an ordinary spawned `deno run -A repl_server.js` (so its pid,
//! output streams, `processWait` and `processKill` work as for `spawn`).
//! The agent talks to the script over a unix socket in a fresh 0700
//! directory, never over stdin/stdout, which belong to the user's code:
//! the socket's path goes to the script in an environment variable it
//! deletes at once; the directory is removed as soon as the script has
//! connected, so nothing else can. The script itself lives at one path per
//! agent (checked before each use), so Deno's code cache for it is reused:
//! that saves ~8 ms of every REPL's start. `spawnDenoRepl` answers without waiting
//! for that connection; the first evaluation waits for it.
//!
//! Code is JavaScript: V8 evaluates it as is, so TypeScript annotations
//! are a SyntaxError (Deno has no runtime API to strip types). Evaluations
//! on one REPL may overlap; each gets its own reply.

use super::link::Link;
use super::{deno_binary, describe_exit, private_dir, spawn_params};
use crate::process::{self, Ctx, ExitInfo};
use agent_proto::calls::{
    DenoReplCallParams, DenoReplEvalParams, SpawnDenoReplParams, SpawnResult,
};
use agent_proto::{ErrorObject, Method};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::watch;

/// The REPL server's source.
const SERVER: &str = include_str!("repl_server.js");
/// Where the server finds its socket (the script deletes it from its env).
const SOCKET_VAR: &str = "AIRLOCK_DENO_REPL_SOCKET";
/// How long Deno may take to start and connect (a cold cache is slow).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// After `denoReplClose`, how long the REPL may take to exit on its own
/// before it is killed with its process group.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for a killed REPL's exit to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(1);

#[derive(Clone)]
enum State {
    /// Started; its server has not connected yet.
    Connecting,
    Up(Arc<Link>),
    /// It will never answer; why.
    Down(String),
}

struct Repl {
    state: watch::Receiver<State>,
    exit: watch::Receiver<Option<ExitInfo>>,
    closed: AtomicBool,
}

/// Every REPL started, by pid. A closed REPL stays listed, so closing it
/// again is a no-op rather than an error.
#[derive(Default)]
pub struct Repls {
    map: Mutex<HashMap<i32, Arc<Repl>>>,
    /// The private directory holding the server script, once made.
    server_dir: Mutex<Option<PathBuf>>,
}

fn io_err(context: &str, e: &std::io::Error) -> ErrorObject {
    ErrorObject::from_io_with_context(e, Some(&format!("spawnDenoRepl: {context}")))
}

impl Repls {
    /// `spawnDenoRepl` → `{pid, stdoutStreamId, stderrStreamId}`.
    pub fn spawn(
        &self,
        ctx: &Ctx,
        params: SpawnDenoReplParams,
    ) -> Result<SpawnResult, ErrorObject> {
        let deno = deno_binary(&ctx.env)?;
        let script = self
            .server_script()
            .map_err(|e| io_err("writing the REPL server", &e))?;
        let dir =
            private_dir("airlock-deno-repl-").map_err(|e| io_err("creating a temp dir", &e))?;
        match self.start(ctx, params, &deno, &script, &dir) {
            Ok(result) => Ok(result),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    fn start(
        &self,
        ctx: &Ctx,
        params: SpawnDenoReplParams,
        deno: &Path,
        script: &Path,
        dir: &Path,
    ) -> Result<SpawnResult, ErrorObject> {
        let socket = dir.join("control.sock");
        let listener =
            UnixListener::bind(&socket).map_err(|e| io_err("binding the control socket", &e))?;
        let mut args = vec![
            "run".to_string(),
            "-A".to_string(),
            script.to_string_lossy().into_owned(),
        ];
        args.extend(params.script_args);
        let socket_str = socket.to_string_lossy();
        let spawn = spawn_params(params.process, deno, args, &[(SOCKET_VAR, &socket_str)]);
        let result = process::spawn(ctx, &spawn).map_err(|mut e| {
            e.message = format!("spawnDenoRepl: {}", e.message);
            e
        })?;
        let pid = result.pid;
        let exit = ctx
            .table
            .exit_watch(pid)
            .expect("a spawned process is in the table");
        let (state_tx, state) = watch::channel(State::Connecting);
        tokio::spawn(connect(
            pid,
            listener,
            dir.to_path_buf(),
            exit.clone(),
            state_tx,
        ));
        let repl = Arc::new(Repl {
            state,
            exit,
            closed: AtomicBool::new(false),
        });
        self.map.lock().expect("repls lock").insert(pid, repl);
        Ok(result)
    }

    /// The server script's path; (re)written when missing or changed (the
    /// sandbox's code may have cleaned /tmp).
    fn server_script(&self) -> std::io::Result<PathBuf> {
        let mut dir = self.server_dir.lock().expect("repls lock");
        if let Some(d) = dir.as_ref() {
            let script = d.join("repl_server.js");
            if std::fs::read(&script).is_ok_and(|s| s == SERVER.as_bytes()) {
                return Ok(script);
            }
        }
        let d = match dir.as_ref().filter(|d| d.is_dir()) {
            Some(d) => d.clone(),
            None => private_dir("airlock-deno-")?,
        };
        let script = d.join("repl_server.js");
        std::fs::write(&script, SERVER)?;
        *dir = Some(d);
        Ok(script)
    }

    fn get(&self, pid: i32) -> Result<Arc<Repl>, ErrorObject> {
        self.map
            .lock()
            .expect("repls lock")
            .get(&pid)
            .cloned()
            .ok_or_else(|| {
                let mut e = ErrorObject::no_such_process(pid as i64);
                e.message = format!("no Deno REPL with pid {pid}");
                e
            })
    }

    /// `denoReplEval {pid, code}` → the value of `code` as JSON
    /// (`undefined` → null).
    pub async fn eval(&self, params: DenoReplEvalParams) -> Result<Value, ErrorObject> {
        let request = json!({ "code": params.code });
        self.evaluate(Method::DenoReplEval, params.pid, request)
            .await
    }

    /// `denoReplCall {pid, fn, args}` → the function's value, as
    /// [`Repls::eval`].
    pub async fn call(&self, params: DenoReplCallParams) -> Result<Value, ErrorObject> {
        let request = json!({ "fn": params.function, "args": params.args });
        self.evaluate(Method::DenoReplCall, params.pid, request)
            .await
    }

    /// Sends `request` to REPL `pid`'s server once it is up.
    async fn evaluate(
        &self,
        method: Method,
        pid: i32,
        request: Value,
    ) -> Result<Value, ErrorObject> {
        let repl = self.get(pid)?;
        if repl.closed.load(Ordering::Relaxed) {
            return Err(ErrorObject::new(
                "Error",
                format!("{method}: the Deno REPL (pid {pid}) is closed"),
                None,
            ));
        }
        let mut state = repl.state.clone();
        let ready = state
            .wait_for(|s| !matches!(s, State::Connecting))
            .await
            .map(|s| s.clone())
            .unwrap_or_else(|_| State::Down("the Deno REPL went away".into()));
        match ready {
            State::Up(link) => link.request(method.as_str(), request).await,
            State::Down(why) => Err(ErrorObject::new("Error", format!("{method}: {why}"), None)),
            State::Connecting => unreachable!("waited for another state"),
        }
    }

    /// `denoReplClose {pid}`: closes the control socket (the server exits
    /// on EOF), kills the REPL if it is still there after a grace period,
    /// and answers once it is gone.
    pub async fn close(&self, pid: i32) -> Result<Value, ErrorObject> {
        let repl = self.get(pid)?;
        if repl.closed.swap(true, Ordering::Relaxed) {
            return Ok(Value::Null);
        }
        let current = repl.state.borrow().clone();
        let grace = match current {
            State::Up(link) => {
                link.close(format!("the Deno REPL (pid {pid}) was closed"))
                    .await;
                CLOSE_GRACE
            }
            // Not connected: nothing tells it to stop but a signal.
            State::Connecting | State::Down(_) => Duration::ZERO,
        };
        let mut exit = repl.exit.clone();
        if tokio::time::timeout(grace, exit.wait_for(Option::is_some))
            .await
            .is_err()
        {
            kill_group(pid, &repl.exit);
            let _ = tokio::time::timeout(KILL_WAIT, exit.wait_for(Option::is_some)).await;
        }
        Ok(Value::Null)
    }
}

/// SIGKILL to the REPL and its process group (it leads its own session),
/// unless its exit was already published (then its pid may be reused).
fn kill_group(pid: i32, exit: &watch::Receiver<Option<ExitInfo>>) {
    if exit.borrow().is_none() {
        // SAFETY: kill takes no pointers; the pid is our unreaped child
        // (the reaper publishes the exit right after reaping it).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Waits for the REPL server's connection, then removes its directory.
async fn connect(
    pid: i32,
    listener: UnixListener,
    dir: PathBuf,
    exit: watch::Receiver<Option<ExitInfo>>,
    state: watch::Sender<State>,
) {
    let mut exited = exit.clone();
    let outcome = tokio::select! {
        accepted = listener.accept() => accepted
            .map(|(stream, _)| stream)
            .map_err(|e| format!("the Deno REPL (pid {pid}) could not connect: {e}")),
        _ = exited.wait_for(Option::is_some) => Err(format!(
            "the Deno REPL process (pid {pid}) {} before it was ready; its stderr says why",
            describe_exit(*exit.borrow())
        )),
        _ = tokio::time::sleep(CONNECT_TIMEOUT) => {
            kill_group(pid, &exit);
            Err(format!(
                "the Deno REPL (pid {pid}) did not start within {} s and was killed",
                CONNECT_TIMEOUT.as_secs()
            ))
        }
    };
    drop(listener);
    let _ = std::fs::remove_dir_all(&dir);
    state.send_replace(match outcome {
        Ok(stream) => State::Up(Link::start(pid, stream, exit)),
        Err(why) => State::Down(why),
    });
}
