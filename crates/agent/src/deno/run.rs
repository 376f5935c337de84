//! `spawnDeno`: `deno run -A [--watch[=paths]] <module> <scriptArgs...>`
//! as an ordinary spawned process. The module is either the caller's
//! `entrypoint` or their `code`, written to a fresh private file with the
//! caller's `extension` (removed when the process exits).
//!
//! Under `watch`, the result also has `watcherStreamId`: a stream with a
//! byte per restart (see `watch.rs`), which the daemon turns into the
//! `watcherId` and `$sandbox.deno.watcher.restart` notifications of the
//! protocol. `watcherId` itself is null from the agent.

use super::{deno_binary, private_dir, remove_after_exit, spawn_params};
use crate::process::{self, Ctx};
use agent_proto::calls::{DenoModule, SpawnDenoParams, SpawnDenoResult};
use agent_proto::ErrorObject;
use std::os::unix::fs::OpenOptionsExt;

/// `spawnDeno` → `{pid, stdoutStreamId, stderrStreamId, watcherId}`.
pub fn spawn_deno(ctx: &Ctx, params: SpawnDenoParams) -> Result<SpawnDenoResult, ErrorObject> {
    let watch = params.watch_flag();
    let deno = deno_binary(&ctx.env)?;
    let mut scratch = None;
    let module = match params.module {
        DenoModule::Entrypoint { entrypoint } => entrypoint,
        DenoModule::Code { code, extension } => {
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
    let (tap, restarts) = match watch.is_some() {
        true => {
            let (tap, pending) = super::watch::restart_tap();
            (Some(tap), Some(pending))
        }
        false => (None, None),
    };
    args.extend(watch);
    args.push(module);
    args.extend(params.script_args);
    let spawn = spawn_params(params.process, &deno, args, &[]);
    let result = match process::spawn_tapped(ctx, &spawn, tap) {
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
    Ok(SpawnDenoResult {
        process: result,
        watcher_id: None,
        watcher_stream_id: restarts.map(|r| r.start(ctx)),
    })
}
