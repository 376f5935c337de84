//! One SSH session channel and what runs behind it: a process spawned by
//! the agent (a shell or an `exec`), or the agent's SFTP server.

use agent_client::{AgentClient, Tunnel};
use agent_proto::calls::{
    ExitStatus, PidParams, ProcessKillParams, PtyResizeParams, PtySize, SpawnParams, SpawnResult,
    Stdio,
};
use agent_proto::{ErrorObject, Method};
use nix::sys::signal::Signal;
use russh::server::Handle;
use russh::ChannelId;
use serde::de::IgnoredAny;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc::UnboundedReceiver;

/// The shell a login gets, and the one that runs `exec` commands: bash
/// where the image has it (Debian root's login shell), else sh.
const PICK_SHELL: &str =
    "if command -v bash >/dev/null 2>&1; then exec bash \"$@\"; else exec sh \"$@\"; fi";
/// Environment variables a client may set (`SendEnv`), at most.
const MAX_ENV: usize = 64;
/// After the process exits, output still arriving (a background child
/// holding the pipe) is relayed until this much quiet; then the channel
/// closes, as `airlock exec` does.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// A terminal the client asked for (`pty-req`).
pub struct PtyRequest {
    pub term: String,
    pub size: PtySize,
}

/// What the client asked for before starting something.
#[derive(Default)]
pub struct SessionChannel {
    pub pty: Option<PtyRequest>,
    env: BTreeMap<String, String>,
    pub started: Option<Started>,
}

pub enum Started {
    Process(Process),
    Sftp(WriteHalf<Tunnel>),
}

/// A process the channel runs; its output is relayed by a task of its own.
pub struct Process {
    pub pid: i32,
    stdin: Option<u32>,
}

/// What to start.
pub enum Command {
    /// A login shell.
    Shell,
    /// `exec`: a command line for the shell.
    Exec(String),
}

impl SessionChannel {
    /// Records `name=value` for the process to come; names the agent would
    /// refuse, and more than [`MAX_ENV`], are refused (the client is told).
    pub fn set_env(&mut self, name: &str, value: &str) -> bool {
        let ok = agent_proto::calls::validate_env_name(name).is_ok()
            && !value.contains('\0')
            && (self.env.len() < MAX_ENV || self.env.contains_key(name));
        if ok {
            self.env.insert(name.to_string(), value.to_string());
        }
        ok
    }

    /// Spawns `command` through the agent and starts relaying its output
    /// and exit status to `channel`. An error is the agent's refusal (or a
    /// lost agent), for the client to see.
    pub async fn start_process(
        &mut self,
        client: &AgentClient,
        handle: Handle,
        channel: ChannelId,
        command: Command,
    ) -> Result<(), String> {
        let mut env = self.env.clone();
        let pty = self.pty.as_ref().map(|p| {
            env.insert("TERM".into(), p.term.clone());
            p.size
        });
        let args = match command {
            Command::Shell => vec!["-c".into(), PICK_SHELL.into(), "sh".into(), "-l".into()],
            Command::Exec(line) => vec![
                "-c".into(),
                PICK_SHELL.into(),
                "sh".into(),
                "-c".into(),
                line,
            ],
        };
        let stdin = client.open_stream();
        let params = SpawnParams {
            command: "/bin/sh".into(),
            args,
            env,
            clear_env: false,
            cwd: None,
            stdin_stream_id: Some(stdin),
            stdout: Stdio::Piped,
            stderr: Stdio::Piped,
            pty,
        };
        let spawned: SpawnResult = match client.call_typed(Method::Spawn, &params).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("spawn failed: {}", e.message)),
            Err(e) => return Err(format!("the sandbox's agent is gone: {e:#}")),
        };
        let take = |id: Option<u32>| id.and_then(|id| client.take_stream(id));
        let stdout = take(spawned.stdout_stream_id);
        let stderr = take(spawned.stderr_stream_id);
        tokio::spawn(relay(
            client.clone(),
            handle,
            channel,
            spawned.pid,
            stdout,
            stderr,
        ));
        self.started = Some(Started::Process(Process {
            pid: spawned.pid,
            stdin: Some(stdin),
        }));
        Ok(())
    }

    /// Opens the agent's SFTP server and relays what it writes to the
    /// channel; what the client sends goes to [`Self::input`].
    pub async fn start_sftp(
        &mut self,
        client: &AgentClient,
        handle: Handle,
        channel: ChannelId,
    ) -> Result<(), String> {
        let tunnel = match client.sftp_open().await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Err(format!("sftp failed: {}", e.message)),
            Err(e) => return Err(format!("the sandbox's agent is gone: {e:#}")),
        };
        let (mut from_sandbox, to_sandbox) = tokio::io::split(tunnel);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = match from_sandbox.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if handle.data(channel, buf[..n].to_vec()).await.is_err() {
                    return;
                }
            }
            let _ = handle.exit_status_request(channel, 0).await;
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
        self.started = Some(Started::Sftp(to_sandbox));
        Ok(())
    }

    /// Client data: the process's stdin, or SFTP requests.
    pub async fn input(&mut self, client: &AgentClient, data: &[u8]) {
        match &mut self.started {
            Some(Started::Process(Process {
                stdin: Some(id), ..
            })) => {
                let _ = client.send_data(*id, data).await;
            }
            Some(Started::Sftp(to)) => {
                let _ = to.write_all(data).await;
            }
            _ => {}
        }
    }

    /// The client sent EOF: the process's stdin ends, or the SFTP stream.
    pub async fn end_input(&mut self, client: &AgentClient) {
        match &mut self.started {
            Some(Started::Process(p)) => {
                if let Some(id) = p.stdin.take() {
                    let _ = client.send_end(id).await;
                }
            }
            Some(Started::Sftp(to)) => {
                let _ = to.shutdown().await;
            }
            None => {}
        }
    }

    /// A window change, for the process's PTY.
    pub async fn resize(&mut self, client: &AgentClient, cols: u32, rows: u32) {
        let size = PtySize {
            rows: clamp(rows),
            cols: clamp(cols),
        };
        if let Some(pty) = &mut self.pty {
            pty.size = size;
        }
        if let (Some(Started::Process(p)), Some(_)) = (&self.started, &self.pty) {
            let params = PtyResizeParams {
                pid: p.pid,
                rows: size.rows,
                cols: size.cols,
            };
            let _ = client
                .call_typed::<_, IgnoredAny>(Method::PtyResize, &params)
                .await;
        }
    }

    /// Sends `signal` (`"SIGINT"`) to the process, if one runs.
    pub async fn signal(&self, client: &AgentClient, signal: &str) {
        if let Some(Started::Process(p)) = &self.started {
            kill(client, p.pid, signal).await;
        }
    }
}

/// A window dimension the PTY can take (the protocol allows 32 bits).
fn clamp(n: u32) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX).max(1)
}

pub async fn kill(client: &AgentClient, pid: i32, signal: &str) {
    let params = ProcessKillParams {
        pid,
        signal: Some(signal.to_string()),
    };
    let _ = client
        .call_typed::<_, IgnoredAny>(Method::ProcessKill, &params)
        .await;
}

/// Relays the process's output (stderr as SSH extended data) until it
/// exits, then its exit status, EOF and close.
async fn relay(
    client: AgentClient,
    handle: Handle,
    channel: ChannelId,
    pid: i32,
    stdout: Option<UnboundedReceiver<Vec<u8>>>,
    stderr: Option<UnboundedReceiver<Vec<u8>>>,
) {
    let (exited_tx, exited) = tokio::sync::watch::channel(false);
    let out = tokio::spawn(copy(handle.clone(), channel, None, stdout, exited.clone()));
    let err = tokio::spawn(copy(handle.clone(), channel, Some(1), stderr, exited));
    let status: Result<Result<ExitStatus, ErrorObject>, _> = client
        .call_typed(Method::ProcessWait, &PidParams { pid })
        .await;
    let _ = exited_tx.send(true);
    let _ = out.await;
    let _ = err.await;
    let code = match status {
        Ok(Ok(status)) => exit_code(&status),
        // The agent went away with the sandbox: no status to give.
        _ => 255,
    };
    let _ = handle.exit_status_request(channel, code).await;
    let _ = handle.eof(channel).await;
    let _ = handle.close(channel).await;
}

/// The exit status an SSH client shows: the code, or 128+n for signal n.
fn exit_code(status: &ExitStatus) -> u32 {
    let signal = status
        .signal
        .as_deref()
        .and_then(|s| s.parse::<Signal>().ok());
    match signal {
        Some(s) if status.code < 128 => 128 + s as u32,
        _ => u32::try_from(status.code).unwrap_or(255),
    }
}

/// Copies one output stream to the channel until it ends or, once the
/// process has exited, goes quiet for [`OUTPUT_GRACE`].
async fn copy(
    handle: Handle,
    channel: ChannelId,
    ext: Option<u32>,
    rx: Option<UnboundedReceiver<Vec<u8>>>,
    mut exited: tokio::sync::watch::Receiver<bool>,
) {
    let Some(mut rx) = rx else { return };
    loop {
        let next = if *exited.borrow() {
            match tokio::time::timeout(OUTPUT_GRACE, rx.recv()).await {
                Ok(next) => next,
                Err(_) => return,
            }
        } else {
            tokio::select! {
                next = rx.recv() => next,
                _ = exited.changed() => continue,
            }
        };
        let Some(bytes) = next else { return };
        let sent = match ext {
            None => handle.data(channel, bytes).await,
            Some(code) => handle.extended_data(channel, code, bytes).await,
        };
        if sent.is_err() {
            return;
        }
    }
}
