//! Running the operator CLI against a test [`Daemon`], endpoint and token
//! from the environment the SDKs use.

use super::daemon::Daemon;
use serde_json::Value;
use std::process::{Command, Output, Stdio};

/// `airlock ARGS` against `d`.
pub fn cli(d: &Daemon, args: &[&str]) -> Output {
    Command::new(super::AIRLOCK)
        .args(args)
        .env("DENO_SANDBOX_ENDPOINT", d.endpoint())
        .env("DENO_DEPLOY_TOKEN", &d.token)
        .env_remove("DENO_DEPLOY_ENDPOINT")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs `airlock ARGS`, which must succeed; its stdout.
#[track_caller]
pub fn ok(d: &Daemon, args: &[&str]) -> String {
    let out = cli(d, args);
    assert!(out.status.success(), "{args:?}\n{}", super::describe(&out));
    super::stdout(&out)
}

/// Runs `airlock ARGS`, which must fail with exit 1 and say `what` on
/// stderr.
#[track_caller]
pub fn fails(d: &Daemon, args: &[&str], what: &str) {
    let out = cli(d, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}\n{}",
        super::describe(&out)
    );
    assert!(
        super::stderr(&out).contains(what),
        "{args:?}: expected {what:?} on stderr\n{}",
        super::describe(&out)
    );
}

/// Runs `airlock ARGS`, which must succeed and print JSON.
#[track_caller]
pub fn json_of(d: &Daemon, args: &[&str]) -> Value {
    serde_json::from_str(&ok(d, args)).unwrap()
}
