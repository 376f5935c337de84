//! `airlock run`: one command in a fresh sandbox, streamed like a local
//! process, then the sandbox is removed.

use super::forward;
use super::term::{parse_env, terminal_size, RawMode};
use crate::{agent_exe, sandbox_env};
use agent_client::AgentClient;
use agent_proto::calls::{ExitStatus, PidParams, PtySize, SpawnParams, SpawnResult, Stdio};
use agent_proto::Method;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use manager::{Isolation, LaunchSpec, ResourceLimits};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// Exit code when `--timeout` kills the sandbox (as GNU `timeout` does).
pub const EXIT_TIMEOUT: i32 = 124;

#[derive(Args, Debug)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    /// Memory limit (e.g. 512M, 2G). The sandbox is OOM-killed past it.
    #[arg(long, default_value = "1280M", value_parser = jail::parse_size)]
    memory: u64,
    /// CPU quota in cores (e.g. 0.5, 2).
    #[arg(long, default_value_t = 2.0)]
    cpus: f64,
    /// Size of the sandbox's writable disk layer.
    #[arg(long, default_value = "2G", value_parser = jail::parse_size)]
    disk: u64,
    /// Maximum number of processes and threads.
    #[arg(long, default_value_t = 1024)]
    pids: u64,
    /// Kill the sandbox after this long (e.g. 30s, 5m).
    #[arg(long, default_value = "5m", value_parser = jail::parse_duration)]
    timeout: Duration,
    /// Extra environment variable for the command (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Working directory inside the sandbox.
    #[arg(long, short = 'w', default_value = sandbox_env::WORKDIR)]
    workdir: String,
    /// Image to run in (built on first use).
    #[arg(long, default_value = "default")]
    image: String,
    /// Keep stdin open (stdin is always forwarded; accepted for docker habits).
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Give the command a terminal (PTY).
    #[arg(short = 't', long)]
    tty: bool,
    /// How the sandbox is isolated: `native` (namespaces, seccomp, Landlock
    /// on the host kernel) or `gvisor` (gVisor's user-space kernel; needs
    /// runsc).
    #[arg(long, env = "AIRLOCK_ISOLATION", default_value = "native", value_parser = super::isolation::parse)]
    isolation: Isolation,
    /// The command and its arguments.
    #[arg(required = true, value_name = "CMD")]
    command: Vec<String>,
}

pub fn main(data_dir: &Path, args: RunArgs) -> Result<i32> {
    if !(0.01..=1024.0).contains(&args.cpus) {
        bail!("--cpus must be between 0.01 and 1024, got {}", args.cpus);
    }
    let limits = jail::Limits {
        memory_bytes: args.memory,
        cpu_millis: (args.cpus * 1000.0).round() as u64,
        pids: args.pids,
        disk_bytes: args.disk,
        ..jail::Limits::default()
    };
    limits.validate()?;
    let backend = super::isolation::backend(args.isolation)?;
    let store = image::ImageStore::new(data_dir);
    let image = store.ensure(&args.image, &mut crate::cli::image::print_progress)?;
    backend
        .reap_leftovers()
        .context("releasing sandboxes left by dead airlock processes")?;
    let term = args
        .tty
        .then(|| std::env::var("TERM").unwrap_or_else(|_| "xterm".into()));
    let spec = LaunchSpec {
        id: new_id(),
        image_rootfs: image.rootfs,
        agent_exe: agent_exe::locate()?,
        limits: ResourceLimits {
            memory_bytes: limits.memory_bytes,
            cpu_millis: limits.cpu_millis,
            pids: limits.pids,
            disk_bytes: limits.disk_bytes,
            nofile: limits.nofile,
        },
        env: sandbox_env::agent_env(&args.workdir, term.as_deref()),
        hostname: "sandbox".into(),
        // `airlock run` has no gateway: only `lo`, nothing is reachable.
        network: None,
        binds: vec![],
        persistent_root: false,
    };
    let mut sandbox = backend.create(&spec).context("creating the sandbox")?;
    let sock = sandbox
        .take_agent_socket()
        .ok_or_else(|| anyhow!("agent socket already taken"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = rt.block_on(drive(&args, sock));
    let usage = sandbox.usage();
    // Not a plain drop: that waits for the blocking stdin reader, which a
    // terminal never ends.
    rt.shutdown_timeout(Duration::from_millis(100));
    sandbox.destroy().context("removing the sandbox")?;
    let outcome = outcome?;
    Ok(match outcome {
        Outcome::Exited { code, signal } => {
            if signal.as_deref() == Some("SIGKILL") && usage.oom_kills > 0 {
                eprintln!(
                    "airlock: the command was killed: out of memory (limit {}M)",
                    args.memory >> 20
                );
            }
            code
        }
        Outcome::TimedOut => {
            eprintln!(
                "airlock: timed out after {:?}; the sandbox was killed",
                args.timeout
            );
            EXIT_TIMEOUT
        }
    })
}

fn new_id() -> String {
    let mut bytes = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("run-{hex}")
}

enum Outcome {
    Exited { code: i32, signal: Option<String> },
    TimedOut,
}

async fn drive(args: &RunArgs, sock: std::os::unix::net::UnixStream) -> Result<Outcome> {
    let (client, _hello) = AgentClient::connect(sock).await?;
    let stdin_id = client.open_stream();
    let pty = args.tty.then(|| {
        let (rows, cols) = terminal_size().unwrap_or((24, 80));
        PtySize { rows, cols }
    });
    let params = SpawnParams {
        command: args.command[0].clone(),
        args: args.command[1..].to_vec(),
        env: args.env.iter().cloned().collect(),
        clear_env: false,
        cwd: Some(args.workdir.clone()),
        stdin_stream_id: Some(stdin_id),
        stdout: Stdio::Piped,
        stderr: Stdio::Piped,
        pty,
    };
    let _raw = if args.tty { RawMode::enable() } else { None };
    let spawned = client
        .call_typed::<_, SpawnResult>(Method::Spawn, &params)
        .await?
        .map_err(|e| anyhow!("{}: {}", args.command[0], e.message))?;
    let pid = spawned.pid;

    let mut copies = Vec::new();
    for (id, to_stderr) in [
        (spawned.stdout_stream_id, false),
        (spawned.stderr_stream_id, true),
    ] {
        if let Some(id) = id {
            let mut rx = client
                .take_stream(id)
                .ok_or_else(|| anyhow!("stream taken twice"))?;
            copies.push(tokio::spawn(async move {
                while let Some(chunk) = rx.recv().await {
                    let res = if to_stderr {
                        let mut e = std::io::stderr().lock();
                        e.write_all(&chunk).and_then(|()| e.flush())
                    } else {
                        let mut o = std::io::stdout().lock();
                        o.write_all(&chunk).and_then(|()| o.flush())
                    };
                    if res.is_err() {
                        break;
                    }
                }
            }));
        }
    }
    tokio::spawn(forward::stdin(client.clone(), stdin_id));
    if args.tty {
        tokio::spawn(forward::resizes(client.clone(), pid));
    }
    tokio::spawn(forward::signals(client.clone(), pid));

    let waited = tokio::time::timeout(
        args.timeout,
        client.call_typed::<_, ExitStatus>(Method::ProcessWait, &PidParams { pid }),
    )
    .await;
    let status = match waited {
        Err(_) => return Ok(Outcome::TimedOut),
        Ok(r) => r?.map_err(|e| anyhow!("waiting for the command: {}", e.message))?,
    };
    // Output still in flight: give it a moment to land.
    for c in copies {
        let _ = tokio::time::timeout(Duration::from_secs(1), c).await;
    }
    Ok(Outcome::Exited {
        code: status.code,
        signal: status.signal,
    })
}
