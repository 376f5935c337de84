//! The Deno runtime calls: `spawnDeno`, `spawnDenoRepl`, `denoReplEval`,
//! `denoReplCall`. (`denoHttpWait`, `denoReplClose` and `httpPort` take
//! a [`super::PidParams`].)
//!
//! A Deno process is spawned as a `spawn` is: the process options a caller
//! may give ([`DenoProcessOptions`]) are checked as a `spawn`'s are, so a
//! bad one fails with the message `spawn` gives.

use super::{FromParams, Params, PidParams, SpawnParams, SpawnResult, Stdio};
use crate::{ErrorObject, Method};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `spawnDeno {entrypoint | code, extension?, watch?, args?, scriptArgs?}`
/// plus the process options of [`DenoProcessOptions`]: `deno run -A
/// [--watch[=paths]] <module> <scriptArgs...>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpawnDenoParams {
    #[serde(flatten)]
    pub module: DenoModule,
    /// `--watch`: `Some(paths)` watches the module graph plus `paths`
    /// (none for `"watch": true`). Only with an entrypoint: inline code
    /// has no files to watch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<Vec<String>>,
    /// `Deno.args`: the Python SDK's `args`, then `scriptArgs` (a sender
    /// may put them all in `scriptArgs`).
    pub script_args: Vec<String>,
    #[serde(flatten)]
    pub process: DenoProcessOptions,
}

/// What `spawnDeno` runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum DenoModule {
    /// A module path (not empty).
    Entrypoint { entrypoint: String },
    /// Module source, run from a private file named `main.<extension>`.
    Code { code: String, extension: String },
}

impl SpawnDenoParams {
    /// The extensions the SDKs allow for `code` (JS default: `ts`).
    pub const EXTENSIONS: &'static [&'static str] =
        &["js", "cjs", "mjs", "ts", "cts", "mts", "jsx", "tsx"];

    /// The `--watch` flag, if any.
    pub fn watch_flag(&self) -> Option<String> {
        self.watch.as_ref().map(|paths| match paths.is_empty() {
            true => "--watch".to_string(),
            false => format!("--watch={}", paths.join(",")),
        })
    }
}

fn spawn_deno_error(message: impl std::fmt::Display) -> ErrorObject {
    ErrorObject::type_error(format!("spawnDeno: {message}"))
}

impl FromParams for SpawnDenoParams {
    fn from_params(p: &Params) -> Result<Self, ErrorObject> {
        let entrypoint = p.opt_str("entrypoint")?;
        let code = p.opt_str("code")?;
        let module = match (entrypoint, code) {
            (Some(_), Some(_)) => {
                return Err(spawn_deno_error(
                    "pass either \"entrypoint\" (a module path) or \"code\" (module source), \
                     not both",
                ))
            }
            (None, None) => {
                return Err(spawn_deno_error(
                    "missing \"entrypoint\" (a module path) or \"code\" (module source)",
                ))
            }
            (Some(""), None) => return Err(spawn_deno_error("entrypoint must not be empty")),
            (Some(path), None) => DenoModule::Entrypoint {
                entrypoint: path.to_string(),
            },
            (None, Some(code)) => {
                let extension = p.opt_str("extension")?.unwrap_or("ts");
                if !Self::EXTENSIONS.contains(&extension) {
                    return Err(spawn_deno_error(format!(
                        "extension must be one of {}, got {extension:?}",
                        Self::EXTENSIONS.join(", ")
                    )));
                }
                DenoModule::Code {
                    code: code.to_string(),
                    extension: extension.to_string(),
                }
            }
        };
        let watch = match p.get("watch") {
            None | Some(Value::Bool(false)) => None,
            // Said before the value's type: whatever it is, it cannot work.
            Some(_) if matches!(module, DenoModule::Code { .. }) => {
                return Err(spawn_deno_error(
                    "watch needs an \"entrypoint\"; code passed inline has no files to watch",
                ))
            }
            Some(Value::Bool(true)) => Some(Vec::new()),
            Some(Value::Array(_)) => {
                let paths = p.opt_str_array("watch")?.unwrap_or_default();
                // Deno splits `--watch=a,b` at commas.
                if paths.iter().any(|p| p.is_empty() || p.contains(',')) {
                    return Err(spawn_deno_error(
                        "watch paths must be non-empty and must not contain ','",
                    ));
                }
                Some(paths)
            }
            Some(other) => {
                return Err(spawn_deno_error(format!(
                    "watch must be a boolean or an array of paths, got {other}"
                )))
            }
        };
        let script_args = script_args(p)?;
        let process = DenoProcessOptions::read(p, |e| e)?;
        Ok(Self {
            module,
            watch,
            script_args,
            process,
        })
    }
}

/// `args` then `scriptArgs`: the Python SDK has `args` ("arguments to pass
/// to the process"), which the JS schema lacks; both go to the script.
fn script_args(p: &Params) -> Result<Vec<String>, ErrorObject> {
    let mut args = p.opt_str_array("args")?.unwrap_or_default();
    args.extend(p.opt_str_array("scriptArgs")?.unwrap_or_default());
    Ok(args)
}

/// `spawnDenoRepl {args?, scriptArgs?}` plus the process options of
/// [`DenoProcessOptions`]: a REPL the `denoRepl*` calls address by its
/// pid. Answers a [`SpawnResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpawnDenoReplParams {
    /// `Deno.args` of the REPL, as for [`SpawnDenoParams::script_args`].
    pub script_args: Vec<String>,
    #[serde(flatten)]
    pub process: DenoProcessOptions,
}

impl FromParams for SpawnDenoReplParams {
    fn from_params(p: &Params) -> Result<Self, ErrorObject> {
        let script_args = script_args(p)?;
        // The REPL has always named itself in front of the spawn's message.
        let process = DenoProcessOptions::read(p, |mut e| {
            e.message = format!("spawnDenoRepl: {}", e.message);
            e
        })?;
        Ok(Self {
            script_args,
            process,
        })
    }
}

/// The process options a Deno call takes as `spawn` does: `env`,
/// `clearEnv`, `cwd`, `stdinStreamId`, `stdout`, `stderr` (no `pty`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DenoProcessOptions {
    pub env: BTreeMap<String, String>,
    pub clear_env: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin_stream_id: Option<u32>,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

impl DenoProcessOptions {
    /// Reads the options by decoding them as a `spawn`'s params (with
    /// a stand-in command), so they are checked, and fail, exactly as
    /// a `spawn`'s; `spawn_error` may reword what that decoding reports.
    fn read(
        p: &Params,
        spawn_error: impl FnOnce(ErrorObject) -> ErrorObject,
    ) -> Result<Self, ErrorObject> {
        let mut request = Map::new();
        for key in ["clearEnv", "cwd", "stdinStreamId", "stdout", "stderr"] {
            if let Some(v) = p.get(key) {
                request.insert(key.to_string(), v.clone());
            }
        }
        let env = match p.get("env") {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(ErrorObject::type_error("env must be an object of strings")),
        };
        request.insert("env".into(), Value::Object(env));
        request.insert("command".into(), Value::from("deno"));
        let spawn =
            SpawnParams::decode(Method::Spawn, &Value::Object(request)).map_err(spawn_error)?;
        Ok(Self {
            env: spawn.env,
            clear_env: spawn.clear_env,
            cwd: spawn.cwd,
            stdin_stream_id: spawn.stdin_stream_id,
            stdout: spawn.stdout,
            stderr: spawn.stderr,
        })
    }

    /// The `spawn` that runs `command args` with these options.
    pub fn into_spawn(self, command: String, args: Vec<String>) -> SpawnParams {
        SpawnParams {
            command,
            args,
            env: self.env,
            clear_env: self.clear_env,
            cwd: self.cwd,
            stdin_stream_id: self.stdin_stream_id,
            stdout: self.stdout,
            stderr: self.stderr,
            pty: None,
        }
    }
}

/// `spawnDeno`'s result: the spawned process, and under `watch` the
/// agent's stream of restarts (a byte each), which the daemon replaces
/// by a `watcherId` its restart notifications name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpawnDenoResult {
    #[serde(flatten)]
    pub process: SpawnResult,
    /// Always `None` (`null`) from the agent.
    pub watcher_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watcher_stream_id: Option<u32>,
}

/// `denoReplEval {pid, code}`: the value of JavaScript `code` in the REPL
/// (as JSON; `undefined` is `null`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DenoReplEvalParams {
    pub pid: i32,
    pub code: String,
}

impl FromParams for DenoReplEvalParams {
    fn from_params(p: &Params) -> Result<Self, ErrorObject> {
        let PidParams { pid } = PidParams::from_params(p)?;
        let code = match p.raw("code") {
            Some(Value::String(c)) => c.clone(),
            other => return Err(ErrorObject::invalid_type(&["code"], "string", other)),
        };
        Ok(Self { pid, code })
    }
}

/// `denoReplCall {pid, fn, args?}`: calls a function of the REPL's (its
/// name, or a function expression) with `args`; answers its value as
/// [`DenoReplEvalParams`]' call does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DenoReplCallParams {
    pub pid: i32,
    /// Not blank.
    #[serde(rename = "fn")]
    pub function: String,
    pub args: Vec<Value>,
}

impl FromParams for DenoReplCallParams {
    fn from_params(p: &Params) -> Result<Self, ErrorObject> {
        let PidParams { pid } = PidParams::from_params(p)?;
        let m = p.method();
        let function = p
            .raw("fn")
            .and_then(Value::as_str)
            .filter(|f| !f.trim().is_empty())
            .ok_or_else(|| {
                ErrorObject::type_error(format!(
                    "{m}: \"fn\" must be a function's name or a function expression"
                ))
            })?
            .to_string();
        let args = match p.get("args") {
            None => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(_) => {
                return Err(ErrorObject::type_error(format!(
                    "{m}: \"args\" must be an array"
                )))
            }
        };
        Ok(Self {
            pid,
            function,
            args,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::test_util::round_trips;
    use serde_json::json;

    fn spawn_deno(params: Value) -> Result<SpawnDenoParams, ErrorObject> {
        SpawnDenoParams::decode(Method::SpawnDeno, &params)
    }

    fn type_error(params: Value) -> String {
        let e = spawn_deno(params).unwrap_err();
        assert_eq!(e.constructor_name, "TypeError", "{e:?}");
        e.message
    }

    fn options() -> DenoProcessOptions {
        DenoProcessOptions {
            env: BTreeMap::from([("A".into(), "1".into())]),
            clear_env: true,
            cwd: Some("/w".into()),
            stdin_stream_id: Some(3),
            stdout: Stdio::Null,
            stderr: Stdio::Piped,
        }
    }

    #[test]
    fn params_round_trip() {
        round_trips(
            Method::SpawnDeno,
            SpawnDenoParams {
                module: DenoModule::Entrypoint {
                    entrypoint: "main.ts".into(),
                },
                watch: Some(vec!["a".into()]),
                script_args: vec!["x".into()],
                process: options(),
            },
        );
        round_trips(
            Method::SpawnDeno,
            SpawnDenoParams {
                module: DenoModule::Code {
                    code: "1".into(),
                    extension: "mjs".into(),
                },
                watch: None,
                script_args: vec![],
                process: options(),
            },
        );
        round_trips(
            Method::SpawnDenoRepl,
            SpawnDenoReplParams {
                script_args: vec!["a".into()],
                process: options(),
            },
        );
        round_trips(
            Method::DenoReplEval,
            DenoReplEvalParams {
                pid: 4,
                code: "1+1".into(),
            },
        );
        round_trips(
            Method::DenoReplCall,
            DenoReplCallParams {
                pid: 4,
                function: "f".into(),
                args: vec![json!(1), json!({"a": null})],
            },
        );
        let r = SpawnDenoResult {
            process: SpawnResult {
                pid: 5,
                stdout_stream_id: Some(1),
                stderr_stream_id: None,
            },
            watcher_id: None,
            watcher_stream_id: None,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"pid": 5, "stdoutStreamId": 1, "stderrStreamId": null, "watcherId": null})
        );
    }

    #[test]
    fn code_defaults_to_ts_and_takes_args() {
        let p = spawn_deno(json!({"code": "1", "args": ["a"], "scriptArgs": ["b"]})).unwrap();
        assert_eq!(
            p.module,
            DenoModule::Code {
                code: "1".into(),
                extension: "ts".into()
            }
        );
        assert_eq!(
            (p.watch_flag(), p.script_args),
            (None, vec!["a".into(), "b".into()])
        );
        let p = spawn_deno(json!({"code": "1", "extension": "mjs", "entrypoint": null})).unwrap();
        assert!(matches!(p.module, DenoModule::Code { extension, .. } if extension == "mjs"));
    }

    #[test]
    fn entrypoint_with_watch() {
        let p = spawn_deno(json!({"entrypoint": "main.ts", "watch": true})).unwrap();
        assert_eq!(
            p.module,
            DenoModule::Entrypoint {
                entrypoint: "main.ts".into()
            }
        );
        assert_eq!(p.watch_flag().as_deref(), Some("--watch"));
        let p = spawn_deno(json!({"entrypoint": "m.ts", "watch": ["a", "b/c"]})).unwrap();
        assert_eq!(p.watch_flag().as_deref(), Some("--watch=a,b/c"));
        let p = spawn_deno(json!({"entrypoint": "m.ts", "watch": []})).unwrap();
        assert_eq!(p.watch_flag().as_deref(), Some("--watch"));
        let p =
            spawn_deno(json!({"entrypoint": "m.ts", "watch": false, "extension": "zz"})).unwrap();
        assert_eq!(p.watch, None);
    }

    #[test]
    fn rejects_bad_shapes_with_actionable_messages() {
        assert!(type_error(json!({})).contains("missing \"entrypoint\""));
        assert!(type_error(json!({"code": "1", "entrypoint": "a.ts"})).contains("not both"));
        assert!(type_error(json!({"code": "1", "extension": "py"})).contains("one of js, cjs"));
        assert!(type_error(json!({"code": "1", "watch": true})).contains("needs an \"entrypoint\""));
        assert!(type_error(json!({"entrypoint": ""})).contains("empty"));
        assert!(
            type_error(json!({"entrypoint": "a", "watch": "x"})).contains("boolean or an array")
        );
        assert_eq!(
            type_error(json!({"entrypoint": "a", "watch": ["a,b"]})),
            "spawnDeno: watch paths must be non-empty and must not contain ','"
        );
        // Mistyped params are validation errors naming the field.
        let path = |params: Value| {
            let e = spawn_deno(params).unwrap_err();
            assert!(e.is_invalid_params(), "{e:?}");
            let issues: Value = serde_json::from_str(&e.message).unwrap();
            issues[0]["path"].clone()
        };
        assert_eq!(path(json!({"entrypoint": 3})), json!(["entrypoint"]));
        assert_eq!(
            path(json!({"code": "1", "scriptArgs": [1]})),
            json!(["scriptArgs", "0"])
        );
        assert_eq!(
            path(json!({"entrypoint": "a", "watch": [1]})),
            json!(["watch", "0"])
        );
    }

    /// The process options fail as a `spawn`'s do; the REPL names itself
    /// first, as it always did, except for an `env` that is no object.
    #[test]
    fn process_options_are_checked_as_a_spawns() {
        assert_eq!(
            type_error(json!({"entrypoint": "a", "env": {"A": 1}})),
            "spawn: env value of A must be a string"
        );
        assert_eq!(
            type_error(json!({"entrypoint": "a", "env": []})),
            "env must be an object of strings"
        );
        let repl = |params: Value| {
            SpawnDenoReplParams::decode(Method::SpawnDenoRepl, &params)
                .unwrap_err()
                .message
        };
        assert_eq!(
            repl(json!({"stdout": "x"})),
            "spawnDenoRepl: spawn: stdout must be \"piped\", \"inherit\" or \"null\", got \"x\""
        );
        assert_eq!(repl(json!({"env": 1})), "env must be an object of strings");
        // Null is absent; a pty is not a Deno call's option.
        let p = SpawnDenoReplParams::decode(
            Method::SpawnDenoRepl,
            &json!({"env": null, "cwd": null, "stdout": "inherit", "pty": true}),
        )
        .unwrap();
        assert_eq!(p.process.stdout, Stdio::Piped);
        let spawn = p.process.into_spawn("/bin/deno".into(), vec![]);
        assert_eq!(spawn.pty, None);
    }

    #[test]
    fn repl_calls() {
        let e = DenoReplEvalParams::decode(Method::DenoReplEval, &json!({"pid": 1})).unwrap_err();
        assert!(e.is_invalid_params(), "{e:?}");
        let e =
            DenoReplEvalParams::decode(Method::DenoReplEval, &json!({"code": "1"})).unwrap_err();
        assert!(e.message.contains("\"pid\""), "{}", e.message);
        let call = |params: Value| DenoReplCallParams::decode(Method::DenoReplCall, &params);
        assert_eq!(
            call(json!({"pid": 1, "fn": " "})).unwrap_err().message,
            "denoReplCall: \"fn\" must be a function's name or a function expression"
        );
        assert_eq!(
            call(json!({"pid": 1, "fn": "f", "args": {}}))
                .unwrap_err()
                .message,
            "denoReplCall: \"args\" must be an array"
        );
        assert_eq!(
            call(json!({"pid": 1, "fn": "f", "args": null}))
                .unwrap()
                .args,
            Vec::<Value>::new()
        );
    }
}
