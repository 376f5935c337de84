//! `airlock shell SANDBOX`: `exec -it SANDBOX -- bash -l`, or `sh` where the
//! image has no bash. Without a terminal on stdin, no PTY: a script piped
//! in runs as it would with `sh -s`.

use super::api::ApiArgs;
use super::client::Client;
use super::exec::{block_on, run, spawn_failed, ExecSpec, Ran};
use anyhow::Result;
use clap::Args;
use std::io::IsTerminal;

#[derive(Args, Debug)]
pub struct ShellArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Working directory inside the sandbox.
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// The sandbox's id.
    pub sandbox: String,
}

pub fn main(args: ShellArgs) -> Result<i32> {
    let target = args.api.resolve()?;
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    block_on(async move {
        let client = Client::connect(&target, &args.sandbox).await?;
        let mut spec = ExecSpec {
            command: "bash".into(),
            args: vec!["-l".into()],
            env: Vec::new(),
            cwd: args.workdir,
            stdin: true,
            tty,
        };
        match run(&client, &spec).await? {
            Ran::Exited(code) => Ok(code),
            Ran::SpawnFailed(e) if e.is_not_found() => {
                spec.command = "sh".into();
                spec.args = Vec::new();
                match run(&client, &spec).await? {
                    Ran::Exited(code) => Ok(code),
                    Ran::SpawnFailed(e) => Ok(spawn_failed("sh", &e)),
                }
            }
            Ran::SpawnFailed(e) => Ok(spawn_failed("bash", &e)),
        }
    })
}
