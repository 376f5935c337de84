//! `spawnDeno`: `deno run -A [--watch[=paths]] <module> <scriptArgs...>`
//! as an ordinary spawned process. The module is either the caller's
//! `entrypoint` or their `code`, written to a fresh private file with the
//! caller's `extension` (removed when the process exits).
//!
//! Under `watch`, the result also has `watcherStreamId`: a stream with a
//! byte per restart (see `watch.rs`), which the daemon turns into the
//! `watcherId` and `$sandbox.deno.watcher.restart` notifications of the
//! protocol. `watcherId` itself is null from the agent.

use super::{decode_spawn, deno_binary, private_dir, remove_after_exit, spawn_request};
use crate::process::string_list;
use crate::process::{self, Ctx};
use agent_proto::calls::to_reply;
use agent_proto::ErrorObject;
use serde_json::Value;
use std::os::unix::fs::OpenOptionsExt;

/// The extensions the SDKs allow for `code` (JS default: `ts`).
pub const EXTENSIONS: &[&str] = &["js", "cjs", "mjs", "ts", "cts", "mts", "jsx", "tsx"];

/// What to run.
#[derive(Debug, PartialEq)]
pub enum Module {
    Entrypoint(String),
    Code { code: String, extension: String },
}

/// A validated `spawnDeno` request.
#[derive(Debug, PartialEq)]
pub struct Plan {
    pub module: Module,
    /// `--watch` flag, if any.
    pub watch: Option<String>,
    /// `Deno.args`.
    pub script_args: Vec<String>,
}

fn type_error(message: String) -> ErrorObject {
    ErrorObject::type_error(format!("spawnDeno: {message}"))
}

fn opt_str<'a>(params: &'a Value, key: &str) -> Result<Option<&'a str>, ErrorObject> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ErrorObject::invalid_type(&[key], "string", Some(other))),
    }
}

/// Validates `spawnDeno`'s params (both SDKs' shapes).
pub fn plan(params: &Value) -> Result<Plan, ErrorObject> {
    let entrypoint = opt_str(params, "entrypoint")?;
    let code = opt_str(params, "code")?;
    let module =
        match (entrypoint, code) {
            (Some(_), Some(_)) => return Err(type_error(
                "pass either \"entrypoint\" (a module path) or \"code\" (module source), not both"
                    .into(),
            )),
            (None, None) => {
                return Err(type_error(
                    "missing \"entrypoint\" (a module path) or \"code\" (module source)".into(),
                ))
            }
            (Some(""), None) => return Err(type_error("entrypoint must not be empty".into())),
            (Some(path), None) => Module::Entrypoint(path.to_string()),
            (None, Some(code)) => {
                let extension = opt_str(params, "extension")?.unwrap_or("ts");
                if !EXTENSIONS.contains(&extension) {
                    return Err(type_error(format!(
                        "extension must be one of {}, got {extension:?}",
                        EXTENSIONS.join(", ")
                    )));
                }
                Module::Code {
                    code: code.to_string(),
                    extension: extension.to_string(),
                }
            }
        };
    let watch = match params.get("watch") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => None,
        Some(_) if matches!(module, Module::Code { .. }) => {
            return Err(type_error(
                "watch needs an \"entrypoint\"; code passed inline has no files to watch".into(),
            ))
        }
        Some(Value::Bool(true)) => Some("--watch".to_string()),
        Some(Value::Array(_)) => {
            let paths = string_list(params, "watch")?;
            if paths.iter().any(|p| p.is_empty() || p.contains(',')) {
                return Err(type_error(
                    "watch paths must be non-empty and must not contain ','".into(),
                ));
            }
            Some(if paths.is_empty() {
                "--watch".to_string()
            } else {
                format!("--watch={}", paths.join(","))
            })
        }
        Some(other) => {
            return Err(type_error(format!(
                "watch must be a boolean or an array of paths, got {other}"
            )))
        }
    };
    // The Python SDK also has `args` ("arguments to pass to the process"),
    // which the JS schema lacks; they go to the script, before scriptArgs.
    let mut script_args = string_list(params, "args")?;
    script_args.extend(string_list(params, "scriptArgs")?);
    Ok(Plan {
        module,
        watch,
        script_args,
    })
}

/// `spawnDeno` → `{pid, stdoutStreamId, stderrStreamId, watcherId}`.
pub fn spawn_deno(ctx: &Ctx, params: &Value) -> Result<Value, ErrorObject> {
    let plan = plan(params)?;
    let deno = deno_binary(&ctx.env)?;
    let mut scratch = None;
    let module = match plan.module {
        Module::Entrypoint(path) => path,
        Module::Code { code, extension } => {
            let dir = private_dir("airlock-deno-").map_err(|e| {
                ErrorObject::from_io_with_context(&e, Some("spawnDeno: creating a temp dir"))
            })?;
            let file = dir.join(format!("main.{extension}"));
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .and_then(|mut f| std::io::Write::write_all(&mut f, code.as_bytes()));
            if let Err(e) = written {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(ErrorObject::from_io_with_context(
                    &e,
                    Some(&format!("spawnDeno: writing {}", file.display())),
                ));
            }
            scratch = Some(dir);
            file.to_string_lossy().into_owned()
        }
    };
    let mut args = vec!["run".to_string(), "-A".to_string()];
    let (tap, restarts) = match plan.watch.is_some() {
        true => {
            let (tap, pending) = super::watch::restart_tap();
            (Some(tap), Some(pending))
        }
        false => (None, None),
    };
    args.extend(plan.watch);
    args.push(module);
    args.extend(plan.script_args);
    let spawned = spawn_request(params, &deno, args, &[])
        .and_then(|request| decode_spawn(&request))
        .and_then(|p| process::spawn_tapped(ctx, &p, tap));
    let result = match spawned {
        Ok(r) => r,
        Err(e) => {
            if let Some(dir) = scratch {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(e);
        }
    };
    if let Some(dir) = scratch {
        remove_after_exit(ctx, result.pid, dir);
    }
    let mut result = to_reply(&result);
    result["watcherId"] = Value::Null;
    if let Some(restarts) = restarts {
        result["watcherStreamId"] = restarts.start(ctx).into();
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(params: Value) -> String {
        let e = plan(&params).unwrap_err();
        assert_eq!(e.constructor_name, "TypeError");
        e.message
    }

    #[test]
    fn code_defaults_to_ts_and_takes_args() {
        let p = plan(&json!({"code": "1", "args": ["a"], "scriptArgs": ["b"]})).unwrap();
        assert_eq!(
            p,
            Plan {
                module: Module::Code {
                    code: "1".into(),
                    extension: "ts".into()
                },
                watch: None,
                script_args: vec!["a".into(), "b".into()],
            }
        );
        let p = plan(&json!({"code": "1", "extension": "mjs", "entrypoint": null})).unwrap();
        assert!(matches!(p.module, Module::Code { extension, .. } if extension == "mjs"));
    }

    #[test]
    fn entrypoint_with_watch() {
        let p = plan(&json!({"entrypoint": "main.ts", "watch": true})).unwrap();
        assert_eq!(p.module, Module::Entrypoint("main.ts".into()));
        assert_eq!(p.watch.as_deref(), Some("--watch"));
        let p = plan(&json!({"entrypoint": "m.ts", "watch": ["a", "b/c"]})).unwrap();
        assert_eq!(p.watch.as_deref(), Some("--watch=a,b/c"));
        let p = plan(&json!({"entrypoint": "m.ts", "watch": false, "extension": "zz"})).unwrap();
        assert_eq!(p.watch, None);
    }

    #[test]
    fn rejects_bad_shapes_with_actionable_messages() {
        assert!(err(json!({})).contains("missing \"entrypoint\""));
        assert!(err(json!({"code": "1", "entrypoint": "a.ts"})).contains("not both"));
        assert!(err(json!({"code": "1", "extension": "py"})).contains("one of js, cjs"));
        assert!(err(json!({"code": "1", "watch": true})).contains("needs an \"entrypoint\""));
        assert!(err(json!({"entrypoint": ""})).contains("empty"));
        assert!(err(json!({"entrypoint": "a", "watch": "x"})).contains("boolean or an array"));
        // Mistyped params are validation errors naming the field.
        let path = |params: Value| {
            let e = plan(&params).unwrap_err();
            assert!(e.is_invalid_params(), "{e:?}");
            let issues: Value = serde_json::from_str(&e.message).unwrap();
            issues[0]["path"].clone()
        };
        assert_eq!(path(json!({"entrypoint": 3})), json!(["entrypoint"]));
        assert_eq!(
            path(json!({"code": "1", "scriptArgs": [1]})),
            json!(["scriptArgs", "0"])
        );
    }
}
