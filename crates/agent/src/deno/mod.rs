//! The Deno runtime methods: `spawnDeno` and `denoHttpWait` (run.rs,
//! listen.rs), the REPL (`spawnDenoRepl`, `denoReplEval`, `denoReplCall`,
//! `denoReplClose`: repl.rs over link.rs), and the internal `httpPort`
//! the daemon uses to route `fetch {pid}` and `exposeHttp {pid}`.
//!
//! Every Deno process is an ordinary spawned process (process.rs), so
//! `processWait`, `processKill` and its output streams work as for `spawn`.
//! The calls come here with their params decoded (dispatch.rs), as the
//! types of `agent_proto::calls`.

mod link;
mod listen;
mod repl;
mod run;
mod watch;

use crate::env::Env;
use crate::process::{Ctx, ExitInfo};
use crate::signals;
use agent_proto::calls::{DenoProcessOptions, SpawnParams};
use agent_proto::ErrorObject;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use listen::{http_port, http_wait};
pub use repl::Repls;
pub use run::spawn_deno;

/// Environment variable that tells Deno not to look for a newer version
/// (a sandbox usually has no route to dl.deno.land anyway).
const NO_UPDATE_CHECK: &str = "DENO_NO_UPDATE_CHECK";

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

/// The `spawn` running `deno` with `args` and the caller's process
/// options; its environment also has `extra_env`, and
/// [`NO_UPDATE_CHECK`] unless the caller set it.
fn spawn_params(
    options: DenoProcessOptions,
    deno: &Path,
    args: Vec<String>,
    extra_env: &[(&str, &str)],
) -> SpawnParams {
    let mut spawn = options.into_spawn(deno.to_string_lossy().into_owned(), args);
    spawn
        .env
        .entry(NO_UPDATE_CHECK.to_string())
        .or_insert_with(|| "1".to_string());
    for (k, v) in extra_env {
        spawn.env.insert(k.to_string(), v.to_string());
    }
    spawn
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
