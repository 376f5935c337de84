//! `airlock-agent --fd=3`: PID 1 of a sandbox. Statically linked, so it runs
//! in any root filesystem.

use agent_proto::{Decoder, Hello, PROTOCOL_VERSION};
use airlock_agent::conn::Outbox;
use airlock_agent::dispatch::Agent;
use airlock_agent::env::AGENT_CWD_VAR;
use std::os::fd::{FromRawFd, RawFd};
use std::path::PathBuf;
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};

fn main() {
    // Not dumpable: sandbox processes cannot ptrace or read the memory of
    // PID 1, even with the same uid.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let fd: RawFd = std::env::args()
        .find_map(|a| a.strip_prefix("--fd=").and_then(|n| n.parse().ok()))
        .unwrap_or(3);
    let cwd = std::env::var_os(AGENT_CWD_VAR)
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| PathBuf::from("/"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(run(fd, cwd));
    std::process::exit(code);
}

async fn run(fd: RawFd, cwd: PathBuf) -> i32 {
    let Some(fd) = off_stdio(fd) else {
        return 2;
    };
    // Close-on-exec: processes the agent spawns must never hold the control
    // socket, or they could read the host's frames and forge replies.
    // SAFETY: fcntl on the fd the jail passed us.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return 2;
    }
    // SAFETY: fd 3 is the socket the jail passed us; nothing else owns it.
    let std_sock = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    if std_sock.set_nonblocking(true).is_err() {
        return 2;
    }
    let Ok(sock) = tokio::net::UnixStream::from_std(std_sock) else {
        return 2;
    };
    let (mut reader, writer) = sock.into_split();
    let out = Outbox::start(writer);
    let agent = Agent::new(out.clone(), cwd);

    let Ok(mut sigchld) = signal(SignalKind::child()) else {
        return 2;
    };
    let table = agent.table.clone();
    tokio::spawn(async move {
        loop {
            table.reap();
            if sigchld.recv().await.is_none() {
                break;
            }
        }
    });

    out.hello(&Hello {
        version: PROTOCOL_VERSION,
        agent: format!("airlock-agent {}", env!("CARGO_PKG_VERSION")),
    })
    .await;
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return 0, // host closed: the sandbox ends with us
            Ok(n) => n,
        };
        decoder.feed(&buf[..n]);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => agent.on_frame(frame),
                Ok(None) => break,
                Err(e) => report_bad_frame(&out, e).await,
            }
        }
    }
}

/// A frame the agent cannot read gets an error reply when it names a call,
/// so the caller is not left waiting.
async fn report_bad_frame(out: &Outbox, err: agent_proto::DecodeError) {
    use agent_proto::{DecodeError, ErrorObject, FrameKind, Reply};
    if let DecodeError::Oversized { kind, id, .. } = err {
        if kind == FrameKind::Call as u8 {
            out.reply(
                id,
                Reply::Error(ErrorObject::new(
                    "RangeError",
                    err.to_string(),
                    Some("E2BIG"),
                )),
            )
            .await;
        }
    }
}

/// Where the socket came as stdin (`--fd=0`, the gvisor backend: runsc
/// passes only stdio into a sandbox), moves it to a descriptor above
/// stdio and points stdin, stdout and stderr at /dev/null, so that no
/// process the agent starts can inherit the control socket as its stdio,
/// and nothing the agent prints reaches the host's runsc log.
fn off_stdio(fd: RawFd) -> Option<RawFd> {
    if fd > 2 {
        return Some(fd);
    }
    // SAFETY: fcntl and open/dup2/close on descriptors this process owns.
    unsafe {
        let moved = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3);
        if moved < 0 {
            return None;
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null < 0 {
            return None;
        }
        for std_fd in 0..=2 {
            if libc::dup2(null, std_fd) < 0 {
                return None;
            }
        }
        if null > 2 {
            libc::close(null);
        }
        Some(moved)
    }
}
