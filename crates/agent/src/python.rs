//! `pythonRun` (an airlock extension): stateful Python for AI agents.
//!
//! One long-lived `python3` interpreter per session name runs snippets in
//! one globals dict, so `x = 10` then `print(x * 2)` prints 20. The agent
//! talks to the interpreter's runner (`RUNNER`) over its stdin/stdout with
//! length-prefixed JSON frames (4-byte big-endian length, then the JSON);
//! the runner captures the snippet's `sys.stdout`/`sys.stderr` in memory and
//! points fds 0 and 1 at /dev/null so nothing the snippet does can corrupt
//! the pipe.
//!
//! On timeout the agent sends SIGINT (a `KeyboardInterrupt` in the snippet;
//! the session keeps its state); if the interpreter is still busy
//! [`KILL_GRACE`] later it is killed with its process group, and the next
//! call starts a fresh interpreter. One snippet runs at a time per session:
//! a call while another is running is rejected with a `Busy` error.

use crate::env::Env;
use agent_proto::calls::{PythonError, PythonRunParams, PythonRunResult};
use agent_proto::ErrorObject;
use serde_json::json;
use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an interrupted snippet may take to stop before the interpreter
/// is killed.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// Largest frame accepted from the runner.
const MAX_FRAME: usize = 16 << 20;

/// The runner: reads `{"code": str}` frames, answers
/// `{"stdout", "stderr", "value", "error"}` frames.
pub const RUNNER: &str = r#"
import ast, builtins, contextlib, io, json, linecache, os, signal, struct, sys, traceback

def _main():
    pin = os.fdopen(os.dup(0), 'rb', buffering=0)
    pout = os.fdopen(os.dup(1), 'wb', buffering=0)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    busy = [False]

    def on_sigint(signum, frame):
        if busy[0]:
            raise KeyboardInterrupt
    signal.signal(signal.SIGINT, on_sigint)

    def read_exact(n):
        buf = b''
        while len(buf) < n:
            chunk = pin.read(n - len(buf))
            if not chunk:
                sys.exit(0)
            buf += chunk
        return buf

    def send(obj):
        data = json.dumps(obj).encode('ascii')
        pout.write(struct.pack('>I', len(data)) + data)

    user = {'__name__': '__main__', '__builtins__': builtins}
    count = 0
    limit = 40000  # characters per field: the reply must fit one agent frame

    def cap(s):
        if s is None:
            return s
        # Lone surrogates cannot travel as JSON text: show them escaped.
        s = s.encode('utf-8', 'backslashreplace').decode('utf-8')
        if len(s) <= limit:
            return s
        return s[:limit] + '\n[... %d more characters truncated]' % (len(s) - limit)

    def describe(e):
        tb = e.__traceback__
        while tb is not None and not tb.tb_frame.f_code.co_filename.startswith('<snippet'):
            tb = tb.tb_next
        return {
            'type': type(e).__name__,
            'message': cap(str(e)),
            'traceback': cap(''.join(traceback.format_exception(type(e), e, tb))),
        }

    def run(code):
        nonlocal count
        count += 1
        name = '<snippet %d>' % count
        linecache.cache[name] = (len(code), None, code.splitlines(True), name)
        out, err = io.StringIO(), io.StringIO()
        value = None
        error = None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                tree = ast.parse(code, name, 'exec')
                last = None
                if tree.body and isinstance(tree.body[-1], ast.Expr):
                    last = ast.Expression(tree.body.pop().value)
                exec(compile(tree, name, 'exec'), user)
                if last is not None:
                    v = eval(compile(last, name, 'eval'), user)
                    if v is not None:
                        user['_'] = v
                        value = repr(v)
            except BaseException as e:
                error = describe(e)
        return {'stdout': cap(out.getvalue()), 'stderr': cap(err.getvalue()),
                'value': cap(value), 'error': error}

    while True:
        (n,) = struct.unpack('>I', read_exact(4))
        req = json.loads(read_exact(n))
        busy[0] = True
        try:
            resp = run(req['code'])
        except BaseException as e:
            resp = {'stdout': '', 'stderr': '', 'value': None, 'error': describe(e)}
        busy[0] = False
        send(resp)

_main()
"#;

/// A running interpreter.
struct Interp {
    pid: i32,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Interp {
    fn start(env: &Env, cwd: &Path) -> Result<Interp, ErrorObject> {
        let mut cmd = Command::new("python3");
        cmd.args(["-u", "-c", RUNNER])
            .env_clear()
            .envs(env.snapshot())
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: the closure makes only async-signal-safe calls.
        unsafe {
            cmd.pre_exec(crate::process::own_session_with_only_stdio);
        }
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ErrorObject::not_found(
                    "pythonRun: python3 is not installed in this sandbox's image",
                )
            } else {
                ErrorObject::from_io_with_context(&e, Some("pythonRun: starting python3"))
            }
        })?;
        let interp = Interp {
            pid: child.id() as i32,
            stdin: child.stdin.take().expect("piped stdin"),
            stdout: BufReader::new(child.stdout.take().expect("piped stdout")),
        };
        // The std Child is only a handle; the agent's reaper (PID 1)
        // collects the exit.
        drop(child);
        Ok(interp)
    }

    /// Sends one snippet and reads its answer (blocking).
    fn exchange(&mut self, request: &[u8]) -> io::Result<PythonRunResult> {
        let mut frame = Vec::with_capacity(4 + request.len());
        frame.extend_from_slice(&(request.len() as u32).to_be_bytes());
        frame.extend_from_slice(request);
        self.stdin.write_all(&frame)?;
        self.stdin.flush()?;
        let mut len = [0u8; 4];
        self.stdout.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::other("oversized frame from the runner"));
        }
        let mut body = vec![0u8; len];
        self.stdout.read_exact(&mut body)?;
        serde_json::from_slice(&body).map_err(io::Error::other)
    }

    fn kill(&self) {
        // SAFETY: the interpreter leads its own process group (setsid).
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
            libc::kill(self.pid, libc::SIGKILL);
        }
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Interp>>>;

/// Every session's interpreter, by session name.
#[derive(Default)]
pub struct Sessions {
    slots: Mutex<HashMap<String, Slot>>,
}

fn fail(message: String) -> ErrorObject {
    ErrorObject::new("Error", message, None)
}

impl Sessions {
    /// `pythonRun {code, session?, timeoutMs?}`: the interpreter's reply
    /// (`{stdout, stderr, value, error}`) plus `durationMs`.
    pub async fn run(
        &self,
        env: &Env,
        cwd: &Path,
        params: &PythonRunParams,
    ) -> Result<PythonRunResult, ErrorObject> {
        let code = params.code.as_str();
        let session = params.session();
        let timeout_ms = params.timeout_ms();
        let slot = self
            .slots
            .lock()
            .expect("python sessions lock")
            .entry(session.to_string())
            .or_default()
            .clone();
        let mut guard = slot.try_lock_owned().map_err(|_| {
            ErrorObject::new(
                "Busy",
                format!(
                    "pythonRun: session {session:?} is already running a snippet; \
                     wait for it or use another session"
                ),
                None,
            )
        })?;
        let started = Instant::now();
        let mut interp = match guard.take() {
            Some(i) => i,
            None => Interp::start(env, cwd)?,
        };
        let pid = interp.pid;
        let request = serde_json::to_vec(&json!({ "code": code })).expect("request serializes");
        let mut task = tokio::task::spawn_blocking(move || {
            let r = interp.exchange(&request);
            (interp, r)
        });
        let mut timed_out = false;
        let mut killed = false;
        let joined = match tokio::time::timeout(Duration::from_millis(timeout_ms), &mut task).await
        {
            Ok(j) => j,
            Err(_) => {
                timed_out = true;
                // SAFETY: SIGINT to the interpreter; it has not been reaped
                // while its stdout is open to us.
                unsafe { libc::kill(pid, libc::SIGINT) };
                match tokio::time::timeout(KILL_GRACE, &mut task).await {
                    Ok(j) => j,
                    Err(_) => {
                        killed = true;
                        // SAFETY: as above, for the whole process group.
                        unsafe {
                            libc::kill(-pid, libc::SIGKILL);
                            libc::kill(pid, libc::SIGKILL);
                        }
                        match tokio::time::timeout(KILL_GRACE, &mut task).await {
                            Ok(j) => j,
                            Err(_) => {
                                task.abort();
                                return Err(fail(format!(
                                    "pythonRun: snippet timed out after {timeout_ms} ms; the \
                                     interpreter was killed and the session's state was lost"
                                )));
                            }
                        }
                    }
                }
            }
        };
        let (interp, result) =
            joined.map_err(|e| fail(format!("pythonRun: runner task failed: {e}")))?;
        let duration_ms = started.elapsed().as_millis() as u64;
        let mut reply = match result {
            Ok(v) if !killed => {
                *guard = Some(interp);
                v
            }
            Ok(_) | Err(_) => {
                interp.kill();
                let message = if timed_out {
                    format!(
                        "snippet timed out after {timeout_ms} ms and did not stop on SIGINT; \
                         the interpreter was killed and the session's state was lost \
                         (the next call starts a fresh interpreter)"
                    )
                } else {
                    "the Python interpreter exited; the session's state was lost \
                     (the next call starts a fresh interpreter)"
                        .to_string()
                };
                PythonRunResult {
                    stdout: String::new(),
                    stderr: String::new(),
                    value: None,
                    error: Some(PythonError {
                        kind: if timed_out {
                            "TimeoutError"
                        } else {
                            "InterpreterExited"
                        }
                        .to_string(),
                        message,
                        traceback: String::new(),
                    }),
                    duration_ms: 0,
                }
            }
        };
        if timed_out && !killed {
            if let Some(err) = reply.error.as_mut() {
                err.kind = "TimeoutError".to_string();
                err.message = format!(
                    "snippet timed out after {timeout_ms} ms and was interrupted \
                     (KeyboardInterrupt); the session's state is kept"
                );
            }
        }
        reply.duration_ms = duration_ms;
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_proto::calls::{to_reply, FromParams};
    use serde_json::Value;

    /// The reply as it goes on the wire.
    fn run(s: &Sessions, params: Value) -> Value {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let env = Env::from_process();
        let params = PythonRunParams::decode(agent_proto::Method::PythonRun, &params).unwrap();
        to_reply(&rt.block_on(s.run(&env, Path::new("/"), &params)).unwrap())
    }

    fn have_python() -> bool {
        Command::new("python3")
            .arg("-c")
            .arg("pass")
            .status()
            .is_ok_and(|s| s.success())
    }

    #[test]
    fn keeps_state_values_errors_and_sessions() {
        if !have_python() {
            eprintln!("skipped: no python3");
            return;
        }
        let s = Sessions::default();
        let r = run(&s, json!({"code": "x = 10"}));
        assert_eq!(r["value"], Value::Null);
        assert_eq!(r["error"], Value::Null);
        let r = run(&s, json!({"code": "print(x * 2)"}));
        assert_eq!(r["stdout"], "20\n");
        let r = run(
            &s,
            json!({"code": "import sys\nsys.stderr.write('e')\nx + 1"}),
        );
        assert_eq!(r["stderr"], "e");
        assert_eq!(r["value"], "11");
        let r = run(&s, json!({"code": "1/0"}));
        assert_eq!(r["error"]["type"], "ZeroDivisionError");
        assert!(r["error"]["traceback"].as_str().unwrap().contains("1/0"));
        let r = run(&s, json!({"code": "'a' + 'b'", "session": "other"}));
        assert_eq!(r["value"], "'ab'");
        let r = run(&s, json!({"code": "x", "session": "other"}));
        assert_eq!(r["error"]["type"], "NameError");
        let r = run(&s, json!({"code": "x"}));
        assert_eq!(r["value"], "10");
        let r = run(&s, json!({"code": "def f(:"}));
        assert_eq!(r["error"]["type"], "SyntaxError");
        let r = run(&s, json!({"code": "import os\nos.write(1, b'junk')\nx"}));
        assert_eq!(r["value"], "10");
        let r = run(&s, json!({"code": "print('a' * 100000)"}));
        assert!(r["stdout"].as_str().unwrap().len() < 41000);
        assert!(r["stdout"].as_str().unwrap().ends_with("truncated]"));
        let r = run(&s, json!({"code": "print('\\ud800')\nx"}));
        assert_eq!(r["stdout"], "\\ud800\n", "{r}");
        assert_eq!(r["value"], "10");
    }

    #[test]
    fn timeout_interrupts_then_kills() {
        if !have_python() {
            eprintln!("skipped: no python3");
            return;
        }
        let s = Sessions::default();
        run(&s, json!({"code": "y = 5"}));
        let r = run(&s, json!({"code": "while True: pass", "timeoutMs": 300}));
        assert_eq!(r["error"]["type"], "TimeoutError");
        assert_eq!(run(&s, json!({"code": "y"}))["value"], "5");
        let stubborn = "import time\nwhile True:\n    try:\n        time.sleep(10)\n    except KeyboardInterrupt:\n        pass";
        let r = run(&s, json!({"code": stubborn, "timeoutMs": 200}));
        assert_eq!(r["error"]["type"], "TimeoutError");
        assert!(
            r["error"]["message"].as_str().unwrap().contains("lost"),
            "{r}"
        );
        assert_eq!(run(&s, json!({"code": "y"}))["error"]["type"], "NameError");
        let r = run(&s, json!({"code": "import os; os._exit(3)"}));
        assert_eq!(r["error"]["type"], "InterpreterExited", "{r}");
        assert_eq!(run(&s, json!({"code": "1 + 1"}))["value"], "2");
    }
}
