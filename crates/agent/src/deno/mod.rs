//! The Deno runtime methods: `spawnDeno` and `denoHttpWait` (run.rs,
//! listen.rs), the REPL (`spawnDenoRepl`, `denoReplEval`, `denoReplCall`,
//! `denoReplClose`: repl.rs over link.rs), and the internal `httpPort`
//! the daemon uses to route `fetch {pid}` and `exposeHttp {pid}`.
//!
//! Every Deno process is an ordinary spawned process (process.rs), so
//! `processWait`, `processKill` and its output streams work as for `spawn`.

mod link;
mod listen;
mod repl;
mod run;
mod watch;

use crate::env::Env;
use crate::process::{Ctx, ExitInfo};
use crate::signals;
use agent_proto::calls::{to_reply, FromParams, PidParams, SpawnParams};
use agent_proto::{ErrorObject, Method};
use serde_json::{Map, Value};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use repl::Repls;

/// Environment variable that tells Deno not to look for a newer version
/// (a sandbox usually has no route to dl.deno.land anyway).
const NO_UPDATE_CHECK: &str = "DENO_NO_UPDATE_CHECK";

/// Serves one of the Deno methods (dispatch.rs routes only these here).
pub async fn call(
    ctx: &Ctx,
    repls: &Repls,
    method: &str,
    params: &Value,
) -> Result<Value, ErrorObject> {
    match method {
        "spawnDeno" => run::spawn_deno(ctx, params),
        "denoHttpWait" => listen::http_wait(&ctx.table, pid(method, params)?).await,
        "httpPort" => listen::http_port(&ctx.table, pid(method, params)?).map(|p| to_reply(&p)),
        "spawnDenoRepl" => repls.spawn(ctx, params),
        "denoReplEval" | "denoReplCall" => repls.evaluate(method, params).await,
        "denoReplClose" => repls.close(pid(method, params)?).await,
        _ => Err(ErrorObject::unknown_method(method)),
    }
}

/// A [`spawn_request`] decoded.
fn decode_spawn(request: &Value) -> Result<SpawnParams, ErrorObject> {
    SpawnParams::decode(Method::Spawn, request)
}

/// The `pid` of a call that names a process.
fn pid(method: &str, params: &Value) -> Result<i32, ErrorObject> {
    PidParams::decode_named(method, params).map(|p| p.pid)
}

/// The deno binary: first on the sandbox's PATH, else where images
/// usually put it. An absolute path, because a spawn with `clearEnv` has
/// no PATH to search.
fn deno_binary(env: &Env) -> Result<PathBuf, ErrorObject> {
    let vars = env.snapshot();
    let path = vars.get("PATH").map(String::as_str).unwrap_or("");
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join("deno"))
        .chain(
            [
                "/usr/local/bin/deno",
                "/usr/bin/deno",
                "/root/.deno/bin/deno",
            ]
            .map(PathBuf::from),
        )
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            ErrorObject::not_found(
                "deno is not installed in this sandbox's image (looked on PATH and in \
                 /usr/local/bin, /usr/bin, /root/.deno/bin)",
            )
        })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A fresh directory only its owner can enter, for a Deno process's
/// scratch files (a `code` module, the REPL's script and socket).
fn private_dir(prefix: &str) -> io::Result<PathBuf> {
    let base = std::env::temp_dir();
    let mut last = io::Error::from_raw_os_error(libc::EEXIST);
    for _ in 0..16 {
        let dir = base.join(format!("{prefix}{}", crate::fs::temp::random_hex()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Removes `dir` once process `pid` has exited.
fn remove_after_exit(ctx: &Ctx, pid: i32, dir: PathBuf) {
    let Some(mut exit) = ctx.table.exit_watch(pid) else {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    };
    tokio::spawn(async move {
        let _ = exit.wait_for(Option::is_some).await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// A `spawn` request running `deno` with `args`: the caller's environment,
/// cwd and stdio choices, plus `extra_env`. The caller decodes it into
/// [`SpawnParams`], which checks it as a `spawn`'s params are.
fn spawn_request(
    params: &Value,
    deno: &Path,
    args: Vec<String>,
    extra_env: &[(&str, &str)],
) -> Result<Value, ErrorObject> {
    let mut p = Map::new();
    for key in ["clearEnv", "cwd", "stdinStreamId", "stdout", "stderr"] {
        if let Some(v) = params.get(key).filter(|v| !v.is_null()) {
            p.insert(key.to_string(), v.clone());
        }
    }
    let mut env = match params.get("env") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(ErrorObject::type_error("env must be an object of strings")),
    };
    env.entry(NO_UPDATE_CHECK)
        .or_insert_with(|| Value::from("1"));
    for (k, v) in extra_env {
        env.insert(k.to_string(), Value::from(*v));
    }
    p.insert("env".into(), Value::Object(env));
    p.insert(
        "command".into(),
        Value::from(deno.to_string_lossy().into_owned()),
    );
    p.insert("args".into(), Value::from(args));
    Ok(Value::Object(p))
}

/// "exited with code 1" / "was killed by SIGKILL", for messages.
fn describe_exit(exit: Option<ExitInfo>) -> String {
    match exit {
        Some(ExitInfo {
            signal: Some(sig), ..
        }) => format!("was killed by {}", signals::name(sig)),
        Some(ExitInfo { code, .. }) => format!("exited with code {code}"),
        None => "exited".to_string(),
    }
}
