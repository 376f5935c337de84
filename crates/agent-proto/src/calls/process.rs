//! `spawn`, `processWait`, `processKill`, `ptyResize` and `pythonRun`.

use super::{validate_env_name, FromParams, Params};
use crate::ErrorObject;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `spawn {command, args?, env?, clearEnv?, cwd?, stdinStreamId?, stdout?,
/// stderr?, pty?}`. `spawnDeno` and `spawnDenoRepl` spawn through it too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpawnParams {
    /// Not empty.
    pub command: String,
    pub args: Vec<String>,
    /// Added to (or, with `clear_env`, instead of) the sandbox's
    /// environment; names checked by [`validate_env_name`].
    pub env: BTreeMap<String, String>,
    pub clear_env: bool,
    /// Relative to the agent's working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The client → sandbox stream for stdin (the daemon rewrites the
    /// client's id into an agent stream id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin_stream_id: Option<u32>,
    pub stdout: Stdio,
    pub stderr: Stdio,
    /// A terminal instead of pipes (airlock extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pty: Option<PtySize>,
}

/// Where a spawned process's stdout/stderr goes. `"inherit"` on the wire
/// means piped: the SDKs' "inherit" is the caller's own output, which
/// only a stream can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stdio {
    Piped,
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtySize {
    pub rows: u16,
    pub cols: u16,
}

impl PtySize {
    /// `"pty": true`.
    pub const DEFAULT: PtySize = PtySize { rows: 24, cols: 80 };
}

impl FromParams for SpawnParams {
    fn from_params(p: &Params) -> Result<Self, ErrorObject> {
        let command = match p.raw("command") {
            Some(Value::String(c)) if c.is_empty() => {
                return Err(ErrorObject::type_error("spawn: param \"command\" is empty"))
            }
            Some(Value::String(c)) => c.clone(),
            other => return Err(ErrorObject::invalid_type(&["command"], "string", other)),
        };
        let args = p.opt_str_array("args")?.unwrap_or_default();
        let env = env_overrides(p)?;
        // Leniently typed, as they always were: a non-boolean `clearEnv`
        // is false, a non-string `cwd` absent.
        let clear_env = p.raw("clearEnv").and_then(Value::as_bool).unwrap_or(false);
        let cwd = p.raw("cwd").and_then(Value::as_str).map(str::to_string);
        let stdin_stream_id = match p.get("stdinStreamId") {
            None => None,
            Some(v) => Some(stream_id(v).ok_or_else(|| {
                ErrorObject::type_error("spawn: stdinStreamId must be a stream id")
            })?),
        };
        Ok(Self {
            command,
            args,
            env,
            clear_env,
            cwd,
            stdin_stream_id,
            stdout: stdio(p, "stdout")?,
            stderr: stdio(p, "stderr")?,
            pty: pty_size(p)?,
        })
    }
}

/// A stream id: a JSON number that fits a `u32`.
pub(crate) fn stream_id(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn env_overrides(p: &Params) -> Result<BTreeMap<String, String>, ErrorObject> {
    match p.get("env") {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                validate_env_name(k).map_err(|e| ErrorObject::type_error(format!("spawn: {e}")))?;
                let v = v.as_str().ok_or_else(|| {
                    ErrorObject::type_error(format!("spawn: env value of {k} must be a string"))
                })?;
                Ok((k.clone(), v.to_string()))
            })
            .collect(),
        Some(_) => Err(ErrorObject::type_error(
            "spawn: env must be an object of strings",
        )),
    }
}

fn stdio(p: &Params, key: &str) -> Result<Stdio, ErrorObject> {
    match p.get(key) {
        None => Ok(Stdio::Piped),
        Some(Value::String(s)) if s == "piped" || s == "inherit" => Ok(Stdio::Piped),
        Some(Value::String(s)) if s == "null" => Ok(Stdio::Null),
        Some(other) => Err(ErrorObject::type_error(format!(
            "spawn: {key} must be \"piped\", \"inherit\" or \"null\", got {other}"
        ))),
    }
}

/// `"pty": {"rows": 24, "cols": 80}`, or `true` for that size.
fn pty_size(p: &Params) -> Result<Option<PtySize>, ErrorObject> {
    match p.get("pty") {
        None | Some(Value::Bool(false)) => Ok(None),
        Some(Value::Bool(true)) => Ok(Some(PtySize::DEFAULT)),
        Some(Value::Object(o)) => {
            let dim = |k: &str, d: u16| -> Result<u16, ErrorObject> {
                match o.get(k) {
                    None | Some(Value::Null) => Ok(d),
                    Some(v) => dimension(v).ok_or_else(|| {
                        ErrorObject::type_error(format!("spawn: pty.{k} must be 1..65535"))
                    }),
                }
            };
            Ok(Some(PtySize {
                rows: dim("rows", PtySize::DEFAULT.rows)?,
                cols: dim("cols", PtySize::DEFAULT.cols)?,
            }))
        }
        Some(_) => Err(ErrorObject::type_error(
            "spawn: pty must be an object {rows, cols}",
        )),
    }
}

/// A terminal's rows or columns: 1..65535.
fn dimension(v: &Value) -> Option<u16> {
    v.as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n > 0)
}

/// `spawn`'s result. A stream id is `null` when the process's output goes
/// nowhere (`"null"`; stderr of a PTY process, which shares stdout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpawnResult {
    pub pid: i32,
    pub stdout_stream_id: Option<u32>,
    pub stderr_stream_id: Option<u32>,
}

/// `{pid}`: `processWait`, and the Deno calls that name a process
/// (`denoHttpWait`, `denoReplClose`, `httpPort`). A missing or non-numeric
/// pid is a validation error; a number no process can have is a
/// `TypeError` naming the method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PidParams {
    pub pid: i32,
}

impl FromParams for PidParams {
    fn from_params(p: &Params) -> Result<Self, ErrorObject> {
        let pid = match p.raw("pid") {
            Some(v @ Value::Number(_)) => v,
            other => return Err(ErrorObject::invalid_type(&["pid"], "number", other)),
        };
        let pid = pid
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                ErrorObject::type_error(format!(
                    "{}: pid must be a positive integer, got {pid}",
                    p.method()
                ))
            })?;
        Ok(Self { pid })
    }
}

/// `processWait`'s result: how the process ended. `oom` is always `null`
/// from the agent (it cannot see its cgroup's OOM counter); the daemon
/// fills it in for a process killed by SIGKILL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub success: bool,
    pub code: i32,
    /// The signal's name (`"SIGKILL"`), if one ended it.
    pub signal: Option<String>,
    pub oom: Option<String>,
}

/// `processKill {pid, signal?}`; no signal means `SIGTERM`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessKillParams {
    pub pid: i32,
    /// A signal name (`"SIGKILL"`, `"KILL"`); the agent knows which exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

impl FromParams for ProcessKillParams {
    fn from_params(p: &Params) -> Result<Self, ErrorObject> {
        let PidParams { pid } = PidParams::from_params(p)?;
        let signal = match p.get("signal") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(ErrorObject::type_error(format!(
                    "processKill: signal must be a name, got {other}"
                )))
            }
        };
        Ok(Self { pid, signal })
    }
}

/// `ptyResize {pid, rows, cols}` (airlock extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PtyResizeParams {
    pub pid: i32,
    pub rows: u16,
    pub cols: u16,
}

impl FromParams for PtyResizeParams {
    fn from_params(p: &Params) -> Result<Self, ErrorObject> {
        let PidParams { pid } = PidParams::from_params(p)?;
        let dim = |k: &str| {
            p.raw(k)
                .and_then(dimension)
                .ok_or_else(|| ErrorObject::type_error(format!("ptyResize: {k} must be 1..65535")))
        };
        Ok(Self {
            pid,
            rows: dim("rows")?,
            cols: dim("cols")?,
        })
    }
}

/// `pythonRun {code, session?, timeoutMs?}` (airlock extension); answers
/// a [`PythonRunResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PythonRunParams {
    pub code: String,
    /// Not empty; `None` is the session called `"default"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// 1..=[`PythonRunParams::MAX_TIMEOUT_MS`]; `None` is
    /// [`PythonRunParams::DEFAULT_TIMEOUT_MS`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl PythonRunParams {
    pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
    pub const MAX_TIMEOUT_MS: u64 = 600_000;

    pub fn session(&self) -> &str {
        self.session.as_deref().unwrap_or("default")
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(Self::DEFAULT_TIMEOUT_MS)
    }
}

impl FromParams for PythonRunParams {
    fn from_params(p: &Params) -> Result<Self, ErrorObject> {
        let code = match p.raw("code") {
            Some(Value::String(c)) => c.clone(),
            other => return Err(ErrorObject::invalid_type(&["code"], "string", other)),
        };
        let session = match p.get("session") {
            None => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => {
                return Err(ErrorObject::type_error(
                    "pythonRun: session must be a non-empty string",
                ))
            }
        };
        let timeout_ms = match p.get("timeoutMs") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .filter(|n| (1..=Self::MAX_TIMEOUT_MS).contains(n))
                    .ok_or_else(|| {
                        ErrorObject::type_error(format!(
                            "pythonRun: timeoutMs must be 1..{}",
                            Self::MAX_TIMEOUT_MS
                        ))
                    })?,
            ),
        };
        Ok(Self {
            code,
            session,
            timeout_ms,
        })
    }
}

/// `pythonRun`'s result: what the snippet printed, the `repr` of its last
/// expression, and the exception it raised. A timeout or a lost
/// interpreter is an `error` too, not a failed call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PythonRunResult {
    pub stdout: String,
    pub stderr: String,
    /// `None` when the last statement is no expression or is `None`.
    pub value: Option<String>,
    pub error: Option<PythonError>,
    /// How long the call took in the agent. The interpreter's own reply
    /// (the same shape otherwise) has none: the agent sets it.
    #[serde(default)]
    pub duration_ms: u64,
}

/// An exception from a `pythonRun` snippet, or why it did not finish
/// (`TimeoutError`, `InterpreterExited`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonError {
    /// The exception's class name.
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    pub traceback: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::test_util::round_trips;
    use crate::Method;
    use serde_json::json;

    #[test]
    fn params_round_trip() {
        round_trips(
            Method::Spawn,
            SpawnParams {
                command: "sh".into(),
                args: vec!["-c".into(), "true".into()],
                env: BTreeMap::from([("A".into(), "1".into())]),
                clear_env: true,
                cwd: Some("/tmp".into()),
                stdin_stream_id: Some(7),
                stdout: Stdio::Null,
                stderr: Stdio::Piped,
                pty: Some(PtySize { rows: 3, cols: 4 }),
            },
        );
        round_trips(Method::ProcessWait, PidParams { pid: 9 });
        round_trips(
            Method::ProcessKill,
            ProcessKillParams {
                pid: 9,
                signal: Some("SIGKILL".into()),
            },
        );
        round_trips(
            Method::PtyResize,
            PtyResizeParams {
                pid: 9,
                rows: 1,
                cols: 2,
            },
        );
        round_trips(
            Method::PythonRun,
            PythonRunParams {
                code: "1".into(),
                session: Some("s".into()),
                timeout_ms: Some(5),
            },
        );
    }

    /// The interpreter's reply reads as a result (its `durationMs` set by
    /// the agent), which goes out as the same JSON plus `durationMs`.
    #[test]
    fn python_run_result_is_the_runners_reply_plus_duration() {
        let runner = json!({"stdout": "a\n", "stderr": "", "value": null,
                            "error": {"type": "NameError", "message": "x", "traceback": "tb"}});
        let mut r: PythonRunResult = serde_json::from_value(runner.clone()).unwrap();
        assert_eq!(r.error.as_ref().unwrap().kind, "NameError");
        r.duration_ms = 7;
        let mut expected = runner;
        expected["durationMs"] = json!(7);
        assert_eq!(serde_json::to_value(&r).unwrap(), expected);
    }

    #[test]
    fn spawn_as_the_sdks_send_it() {
        let p = SpawnParams::decode(
            Method::Spawn,
            &json!({"command": "ls", "args": null, "stdout": "inherit", "stderr": "null",
                    "pty": true, "clearEnv": "yes", "stdinStreamId": null}),
        )
        .unwrap();
        assert_eq!(p.args, Vec::<String>::new());
        assert_eq!((p.stdout, p.stderr), (Stdio::Piped, Stdio::Null));
        assert_eq!(p.pty, Some(PtySize::DEFAULT));
        assert!(!p.clear_env);
        assert_eq!(p.stdin_stream_id, None);
    }

    /// A missing or mistyped param is a zod issue naming its path; a value
    /// of the right type that makes no sense is a `TypeError`.
    #[test]
    fn bad_params_fail_as_they_always_did() {
        let e = SpawnParams::decode(Method::Spawn, &json!({})).unwrap_err();
        assert!(e.is_invalid_params(), "{e:?}");
        assert!(e.message.contains("received undefined"), "{}", e.message);
        let e =
            SpawnParams::decode(Method::Spawn, &json!({"command": "x", "args": [1]})).unwrap_err();
        assert!(
            e.message.contains("\"args\",\n      \"0\""),
            "{}",
            e.message
        );
        let e = SpawnParams::decode(Method::Spawn, &json!({"command": ""})).unwrap_err();
        assert_eq!(e.constructor_name, "TypeError");
        let e = PidParams::decode(Method::ProcessWait, &json!({"pid": "1"})).unwrap_err();
        assert!(e.is_invalid_params());
        let e = PidParams::decode(Method::ProcessWait, &json!({"pid": -1})).unwrap_err();
        assert_eq!(
            e.message,
            "processWait: pid must be a positive integer, got -1"
        );
        let e =
            PtyResizeParams::decode(Method::PtyResize, &json!({"pid": 1, "rows": 0})).unwrap_err();
        assert_eq!(e.message, "ptyResize: rows must be 1..65535");
        let e = PythonRunParams::decode(Method::PythonRun, &json!({"code": "1", "timeoutMs": 0}))
            .unwrap_err();
        assert_eq!(e.message, "pythonRun: timeoutMs must be 1..600000");
    }
}
