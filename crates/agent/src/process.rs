//! Processes started in the sandbox: spawn (pipes or a PTY), the PID 1
//! reaper, wait, kill and PTY resize.
//!
//! As PID 1 the agent inherits every orphan of the sandbox, so one reaper
//! (`waitpid(-1)` on SIGCHLD) collects all exits: statuses of processes the
//! agent spawned are published to their waiters, the rest are discarded.
//! Nothing else may call `wait` in this process (so no `tokio::process`).

use crate::conn::{Outbox, CHUNK};
use crate::env::Env;
use crate::signals;
use crate::streams::Streams;
use agent_proto::calls::{ExitStatus, SpawnParams, SpawnResult, Stdio as Output};
use agent_proto::ErrorObject;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

/// How a process ended, in the shape of `processWait`'s result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: i32,
    pub signal: Option<i32>,
}

impl ExitInfo {
    fn from_wait_status(status: i32) -> Self {
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            Self {
                code: 128 + sig,
                signal: Some(sig),
            }
        } else {
            Self {
                code: libc::WEXITSTATUS(status),
                signal: None,
            }
        }
    }

    pub fn status(self) -> ExitStatus {
        ExitStatus {
            success: self.code == 0 && self.signal.is_none(),
            code: self.code,
            signal: self.signal.map(|s| signals::name(s).to_string()),
            // The agent cannot see its cgroup's OOM counter; the host fills
            // this in when the process died of SIGKILL.
            oom: None,
        }
    }
}

struct Proc {
    exit: watch::Receiver<Option<ExitInfo>>,
    /// Output streams still open; the wait reply waits briefly for them.
    outputs_done: watch::Receiver<usize>,
    pty_master: Option<Arc<OwnedFd>>,
}

/// Every process the agent spawned and has not forgotten.
#[derive(Default)]
pub struct Table {
    procs: Mutex<HashMap<i32, Proc>>,
    /// Exit senders, keyed by pid, for the reaper.
    senders: Mutex<HashMap<i32, watch::Sender<Option<ExitInfo>>>>,
}

/// How long a finished process's wait reply waits for its output streams to
/// reach EOF (a background child may keep them open forever).
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

impl Table {
    /// Reaps every exited child; publishes the ones we spawned.
    pub fn reap(&self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid out pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if let Some(tx) = self.senders.lock().expect("table lock").remove(&pid) {
                let _ = tx.send(Some(ExitInfo::from_wait_status(status)));
            }
        }
    }

    pub async fn wait(&self, pid: i32) -> Result<ExitStatus, ErrorObject> {
        let (mut exit, mut outputs) = {
            let procs = self.procs.lock().expect("table lock");
            let p = procs
                .get(&pid)
                .ok_or_else(|| ErrorObject::no_such_process(pid as i64))?;
            (p.exit.clone(), p.outputs_done.clone())
        };
        let info = loop {
            if let Some(info) = *exit.borrow_and_update() {
                break info;
            }
            if exit.changed().await.is_err() {
                return Err(ErrorObject::no_such_process(pid as i64));
            }
        };
        let _ = tokio::time::timeout(OUTPUT_GRACE, outputs.wait_for(|open| *open == 0)).await;
        Ok(info.status())
    }

    /// The exit of a spawned process, to watch without waiting on it
    /// (`None` until the reaper publishes it); `None` for an unknown pid.
    pub fn exit_watch(&self, pid: i32) -> Option<watch::Receiver<Option<ExitInfo>>> {
        let procs = self.procs.lock().expect("table lock");
        procs.get(&pid).map(|p| p.exit.clone())
    }

    pub fn kill(&self, pid: i32, signal: i32) -> Result<(), ErrorObject> {
        let exited = {
            let procs = self.procs.lock().expect("table lock");
            let p = procs
                .get(&pid)
                .ok_or_else(|| ErrorObject::no_such_process(pid as i64))?;
            let exited = p.exit.borrow().is_some();
            exited
        };
        if exited {
            return Ok(());
        }
        // SAFETY: sending a signal to a child we spawned and have not reaped
        // (the reaper removes the sender before publishing the exit).
        if unsafe { libc::kill(pid, signal) } < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                return Err(ErrorObject::from_io_with_context(&err, Some("processKill")));
            }
        }
        Ok(())
    }

    pub fn resize(&self, pid: i32, rows: u16, cols: u16) -> Result<(), ErrorObject> {
        let procs = self.procs.lock().expect("table lock");
        let p = procs
            .get(&pid)
            .ok_or_else(|| ErrorObject::no_such_process(pid as i64))?;
        let master = p
            .pty_master
            .as_ref()
            .ok_or_else(|| ErrorObject::type_error(format!("process {pid} has no terminal")))?;
        set_winsize(master.as_raw_fd(), rows, cols).map_err(|e| ErrorObject::from_io(&e))
    }
}

/// Everything `spawn` needs.
pub struct Ctx {
    pub table: Arc<Table>,
    pub env: Arc<Env>,
    pub streams: Arc<Streams>,
    pub out: Outbox,
    pub cwd: PathBuf,
}

pub fn resolve(cwd: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

/// Sees every chunk a process writes to stderr (e.g. `spawnDeno` looking
/// for `--watch` restarts), whether or not the caller wants the stream.
pub type StderrTap = Box<dyn FnMut(&[u8]) + Send>;

/// `spawn`: starts a process.
pub fn spawn(ctx: &Ctx, params: &SpawnParams) -> Result<SpawnResult, ErrorObject> {
    spawn_tapped(ctx, params, None)
}

/// [`spawn`], with `tap` reading the process's stderr (piped for it even
/// when the caller asked for `"null"`; not used with a PTY).
pub fn spawn_tapped(
    ctx: &Ctx,
    params: &SpawnParams,
    mut tap: Option<StderrTap>,
) -> Result<SpawnResult, ErrorObject> {
    let SpawnParams {
        command,
        args,
        env: overrides,
        clear_env,
        cwd,
        stdin_stream_id: stdin_stream,
        stdout,
        stderr,
        pty,
    } = params;
    let (clear_env, stdin_stream, stdout, stderr) = (*clear_env, *stdin_stream, *stdout, *stderr);
    let pty = pty.map(|p| (p.rows, p.cols));
    let cwd = match cwd {
        Some(c) => resolve(&ctx.cwd, c),
        None => ctx.cwd.clone(),
    };

    let mut vars = if clear_env {
        Default::default()
    } else {
        ctx.env.snapshot()
    };
    vars.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut cmd = Command::new(command);
    cmd.args(args).env_clear().envs(&vars).current_dir(&cwd);
    // The process leads its own session: signals to it do not reach the
    // agent, and a PTY can become its controlling terminal.
    let with_tty = pty.is_some();
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            own_session_with_only_stdio()?;
            if with_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }

    let mut pty_master = None;
    if let Some((rows, cols)) = pty {
        let (master, slave) = open_pty(rows, cols)
            .map_err(|e| ErrorObject::from_io_with_context(&e, Some("openpty")))?;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| ErrorObject::from_io(&e));
        cmd.stdin(Stdio::from(dup(&slave)?))
            .stdout(Stdio::from(dup(&slave)?))
            .stderr(Stdio::from(slave));
        pty_master = Some(Arc::new(master));
    } else {
        cmd.stdin(if stdin_stream.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(if stdout == Output::Piped {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stderr(if stderr == Output::Piped || tap.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    }

    // Register before spawning so the reaper cannot miss a fast exit.
    let (exit_tx, exit_rx) = watch::channel(None);
    let mut child = {
        let mut senders = ctx.table.senders.lock().expect("table lock");
        let child = cmd.spawn().map_err(|e| spawn_error(command, &e))?;
        senders.insert(child.id() as i32, exit_tx);
        child
    };
    let pid = child.id() as i32;

    // (stream id, or None: read only for the tap).
    let mut outputs: Vec<(Option<u32>, OwnedFd, Option<StderrTap>)> = Vec::new();
    let mut stdout_id = None;
    let mut stderr_id = None;
    if let Some(master) = &pty_master {
        let id = ctx.streams.new_outbound();
        stdout_id = Some(id);
        let fd = master.try_clone().map_err(|e| ErrorObject::from_io(&e))?;
        outputs.push((Some(id), fd, None));
        if let Some(sid) = stdin_stream {
            let fd = master.try_clone().map_err(|e| ErrorObject::from_io(&e))?;
            pump_stdin(ctx, sid, fd);
        }
    } else {
        if let Some(out) = child.stdout.take() {
            let id = ctx.streams.new_outbound();
            stdout_id = Some(id);
            outputs.push((Some(id), OwnedFd::from(out), None));
        }
        if let Some(err) = child.stderr.take() {
            let id = (stderr == Output::Piped).then(|| ctx.streams.new_outbound());
            if let Some(id) = id {
                stderr_id = Some(id);
            }
            outputs.push((id, OwnedFd::from(err), tap.take()));
        }
        if let (Some(stdin), Some(sid)) = (child.stdin.take(), stdin_stream) {
            pump_stdin(ctx, sid, OwnedFd::from(stdin));
        }
    }
    let (open_tx, open_rx) = watch::channel(outputs.len());
    let open_tx = Arc::new(open_tx);
    for (id, fd, tap) in outputs {
        pump_output(ctx, id, fd, open_tx.clone(), tap);
    }
    ctx.table.procs.lock().expect("table lock").insert(
        pid,
        Proc {
            exit: exit_rx,
            outputs_done: open_rx,
            pty_master,
        },
    );
    // The std Child is only a handle; the reaper collects the exit.
    drop(child);
    Ok(SpawnResult {
        pid,
        stdout_stream_id: stdout_id,
        stderr_stream_id: stderr_id,
    })
}

fn spawn_error(command: &str, err: &io::Error) -> ErrorObject {
    let mut e = ErrorObject::from_io_with_context(err, Some(&format!("spawn '{command}'")));
    if err.kind() == io::ErrorKind::NotFound {
        e.message = format!("Failed to spawn '{command}': No such file or directory (os error 2)");
    }
    e
}

/// Copies an output fd (pipe or PTY master) to an outbound stream until EOF
/// (`id` None: nobody wants it, only `tap` reads it), showing `tap` each
/// chunk.
fn pump_output(
    ctx: &Ctx,
    id: Option<u32>,
    fd: OwnedFd,
    open: Arc<watch::Sender<usize>>,
    mut tap: Option<StderrTap>,
) {
    let out = ctx.out.clone();
    let streams = ctx.streams.clone();
    tokio::spawn(async move {
        if let Ok(reader) = AsyncReader::new(fd) {
            let mut reader = reader;
            let mut buf = vec![0u8; CHUNK];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break, // EIO is a PTY's EOF
                    Ok(n) => {
                        if let Some(tap) = &mut tap {
                            tap(&buf[..n]);
                        }
                        let Some(id) = id else { continue };
                        if streams.is_cancelled(id) {
                            continue; // keep draining so the writer never blocks
                        }
                        if !out.data(id, &buf[..n]).await {
                            break;
                        }
                    }
                }
            }
        }
        if let Some(id) = id {
            // Ended after a cancel too, so the host can forget the stream.
            out.end(id).await;
            streams.done_outbound(id);
        }
        open.send_modify(|n| *n = n.saturating_sub(1));
    });
}

/// Copies inbound stream `sid` into the process's stdin (or PTY master);
/// closes it at the stream's end.
fn pump_stdin(ctx: &Ctx, sid: u32, fd: OwnedFd) {
    let streams = ctx.streams.clone();
    let out = ctx.out.clone();
    tokio::spawn(async move {
        let Some(mut rx) = streams.claim(sid) else {
            return;
        };
        let mut writer = match AsyncWriter::new(fd) {
            Ok(w) => w,
            Err(_) => return,
        };
        while let Some(chunk) = rx.recv().await {
            if writer.write_all(&chunk).await.is_err() {
                // The process closed its stdin: tell the host to stop.
                out.cancel(sid).await;
                break;
            }
        }
        streams.forget(sid);
    });
}

/// Non-blocking async reads on a pipe or PTY fd.
struct AsyncReader(AsyncFd<OwnedFd>);
struct AsyncWriter(AsyncFd<OwnedFd>);

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd keeps its fd open and unchanged for as long as the
    // AsyncFd that owns it lives.
    unsafe { AsyncFd::register(fd) }.map_err(|e| io::Error::other(e.to_string()))
}

impl AsyncReader {
    fn new(fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(&fd)?;
        Ok(Self(register(fd)?))
    }

    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            let res = guard.try_io(|fd| {
                // SAFETY: reading into a valid buffer.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            if let Ok(r) = res {
                return r;
            }
        }
    }
}

impl AsyncWriter {
    fn new(fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(&fd)?;
        Ok(Self(register(fd)?))
    }

    async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.0.writable().await?;
            let res = guard.try_io(|fd| {
                // SAFETY: writing from a valid buffer.
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            if let Ok(r) = res {
                data = &data[r?..];
            }
        }
        Ok(())
    }
}

fn open_pty(rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut master = 0;
    let mut slave = 0;
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty with valid out pointers and a winsize.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openpty returned two new fds that we now own.
    let (m, s) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&m, &s] {
        // SAFETY: setting FD_CLOEXEC on fds we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok((m, s))
}

fn set_winsize(fd: i32, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a valid winsize.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// For `pre_exec` of every process the agent starts: a session of its own
/// (so its group can be signalled, and a PTY can become its terminal) and,
/// belt and braces, none of the agent's fds beyond stdio (close-on-exec set
/// on all of them). Only async-signal-safe calls.
pub(crate) fn own_session_with_only_stdio() -> io::Result<()> {
    // SAFETY: close_range and setsid take no pointers and are
    // async-signal-safe.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
