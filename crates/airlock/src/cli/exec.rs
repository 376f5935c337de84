//! `airlock exec [-i] [-t] SANDBOX -- CMD ARGS...`: a command in a running
//! sandbox of the daemon, over the WebSocket protocol, streamed like a
//! local process; exits with the command's exit code.

use super::api::ApiArgs;
use super::client::{stream_param, Client, RpcError, StreamEvent};
use super::forward;
use super::term::{parse_env, terminal_size, RawMode};
use agent_proto::calls::{
    ExitStatus, PidParams, ProcessKillParams, PtySize, SpawnParams, SpawnResult, Stdio,
};
use agent_proto::Method;
use anyhow::{anyhow, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

#[derive(Args, Debug)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Forward our stdin to the command.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the command a terminal (PTY); our terminal goes raw meanwhile.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Extra environment variable for the command (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// The sandbox's id.
    pub sandbox: String,
    /// The command and its arguments.
    #[arg(required = true, value_name = "CMD", allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// What to run and how.
pub struct ExecSpec {
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub stdin: bool,
    pub tty: bool,
}

pub fn main(args: ExecArgs) -> Result<i32> {
    let target = args.api.resolve()?;
    let spec = ExecSpec {
        command: args.command[0].clone(),
        args: args.command[1..].to_vec(),
        env: args.env,
        cwd: args.workdir,
        stdin: args.interactive,
        tty: args.tty,
    };
    block_on(async move {
        let client = Client::connect(&target, &args.sandbox).await?;
        match run(&client, &spec).await? {
            Ran::Exited(code) => Ok(code),
            Ran::SpawnFailed(e) => Ok(spawn_failed(&spec.command, &e)),
        }
    })
}

/// Runs `fut` on a current-thread runtime; the blocking stdin reader of
/// `-i` may never end, so the runtime is not waited for.
pub fn block_on<F: std::future::Future<Output = Result<i32>>>(fut: F) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(fut);
    rt.shutdown_timeout(Duration::from_millis(100));
    out
}

/// docker's codes: 127 for a command that is not there, 126 for one that
/// cannot be run.
pub fn spawn_failed(command: &str, e: &RpcError) -> i32 {
    eprintln!("airlock: {command}: {e}");
    match e.class() {
        Some("NotFound") => 127,
        Some("PermissionDenied") | Some("IsADirectory") => 126,
        _ => 125,
    }
}

pub enum Ran {
    /// The command ran; its exit code (128+n for signal n).
    Exited(i32),
    /// `spawn` answered an application error (e.g. `NotFound`).
    SpawnFailed(RpcError),
}

/// Spawns `spec` and drives it to its end.
pub async fn run(client: &Client, spec: &ExecSpec) -> Result<Ran> {
    let mut env: BTreeMap<String, String> = spec.env.iter().cloned().collect();
    let pty = if spec.tty {
        let (rows, cols) = terminal_size().unwrap_or((24, 80));
        if !env.contains_key("TERM") {
            let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
            env.insert("TERM".into(), term);
        }
        Some(PtySize { rows, cols })
    } else {
        None
    };
    let stdin_id = if spec.stdin {
        Some(client.open_stream().await?)
    } else {
        None
    };
    let params = SpawnParams {
        command: spec.command.clone(),
        args: spec.args.clone(),
        env,
        clear_env: false,
        cwd: spec.cwd.clone(),
        stdin_stream_id: stdin_id.map(stream_param).transpose()?,
        stdout: Stdio::Piped,
        stderr: Stdio::Piped,
        pty,
    };
    let _raw = if spec.tty { RawMode::enable() } else { None };
    let spawned: SpawnResult = match client.call_typed(Method::Spawn, &params).await {
        Ok(v) => v,
        Err(e @ RpcError::App { .. }) => return Ok(Ran::SpawnFailed(e)),
        Err(e) => return Err(anyhow!("spawning {}: {e}", spec.command)),
    };
    let pid = spawned.pid;

    let (exited_tx, exited) = watch::channel(false);
    let mut copies = Vec::new();
    for (id, to_stderr) in [
        (spawned.stdout_stream_id, false),
        (spawned.stderr_stream_id, true),
    ] {
        if let Some(id) = id {
            let rx = client
                .take_stream(id.into())
                .ok_or_else(|| anyhow!("output stream {id} taken twice"))?;
            copies.push(tokio::spawn(copy_out(
                rx,
                to_stderr,
                exited.clone(),
                (client.clone(), pid),
            )));
        }
    }
    let mut side = Vec::new();
    if let Some(id) = stdin_id {
        side.push(tokio::spawn(forward::stdin(client.clone(), id)));
    }
    if spec.tty {
        side.push(tokio::spawn(forward::resizes(client.clone(), pid)));
    } else {
        side.push(tokio::spawn(forward::signals(client.clone(), pid)));
    }
    let status = client
        .call_typed::<_, ExitStatus>(Method::ProcessWait, &PidParams { pid })
        .await
        .map_err(|e| anyhow!("waiting for {}: {e}", spec.command));
    let _ = exited_tx.send(true);
    for c in copies {
        let _ = c.await;
    }
    for s in side {
        s.abort();
    }
    let status = status?;
    client.close().await;
    Ok(Ran::Exited(exit_code(&status)))
}

/// The exit code of a `processWait` status: `code`, or 128+n when a
/// signal killed it and `code` does not say so.
fn exit_code(status: &ExitStatus) -> i32 {
    match status.signal.as_deref() {
        Some(name) if status.code < 128 => name
            .parse::<nix::sys::signal::Signal>()
            .map(|s| 128 + s as i32)
            .unwrap_or(status.code),
        _ => status.code,
    }
}

/// Copies an output stream to our stdout/stderr until it ends; once the
/// process has exited, stops after a second without data (a background
/// child may hold the pipe open). When our side of the pipe is gone (e.g.
/// `| head -1`), the command gets SIGPIPE, as it would locally.
async fn copy_out(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<StreamEvent>,
    to_stderr: bool,
    mut exited: watch::Receiver<bool>,
    (client, pid): (Client, i32),
) {
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if to_stderr {
        Box::new(tokio::io::stderr())
    } else {
        Box::new(tokio::io::stdout())
    };
    loop {
        let event = if *exited.borrow() {
            match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                Ok(e) => e,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                e = rx.recv() => e,
                _ = exited.changed() => continue,
            }
        };
        match event {
            Some(StreamEvent::Data(d)) => {
                if out.write_all(&d).await.is_err() || out.flush().await.is_err() {
                    let kill = ProcessKillParams {
                        pid,
                        signal: Some("SIGPIPE".to_string()),
                    };
                    let _ = client.call_typed::<_, ()>(Method::ProcessKill, &kill).await;
                    return;
                }
            }
            Some(StreamEvent::End) | None => break,
            Some(StreamEvent::Error(e)) => {
                eprintln!("airlock: output stream: {e}");
                break;
            }
        }
    }
    let _ = out.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let status = |code: i32, signal: Option<&str>| ExitStatus {
            success: code == 0 && signal.is_none(),
            code,
            signal: signal.map(str::to_string),
            oom: None,
        };
        assert_eq!(exit_code(&status(7, None)), 7);
        assert_eq!(exit_code(&status(143, Some("SIGTERM"))), 143);
        assert_eq!(exit_code(&status(0, Some("SIGKILL"))), 137);
    }
}
