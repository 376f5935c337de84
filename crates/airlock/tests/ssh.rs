//! The SSH gateway with the real OpenSSH client: exec with exit status and
//! both output streams, a login shell on a PTY with window changes, scp
//! and sftp through the agent's SFTP server; and attacks: unknown and
//! expired usernames, another token's sandbox, port forwarding to the
//! host either way, a session outliving its sandbox.

mod common;

use common::daemon::{Daemon, Ws};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A sandbox with a username for it.
struct Target {
    _ws: Ws,
    id: String,
    user: String,
    port: String,
}

fn target(d: &Daemon) -> Target {
    let (ws, id) = d.create(json!({}));
    let (status, body) = d.post_as(
        &d.token,
        &format!("/api/v3/sandbox/{id}/expose/ssh"),
        &json!({}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hostname"], "127.0.0.1", "{body}");
    let port = body["port"].as_u64().unwrap().to_string();
    assert_eq!(
        Some(format!("127.0.0.1:{port}")),
        d.ssh_addr,
        "the reply names the gateway's port"
    );
    Target {
        _ws: ws,
        id,
        user: body["username"].as_str().unwrap().to_string(),
        port,
    }
}

/// OpenSSH options: no config, no host key prompts, never ask a person.
const SSH_OPTS: &[&str] = &[
    "-F",
    "/dev/null",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=10",
];

/// `ssh` to `user` on the gateway, under `timeout 60` so a hang fails the
/// test rather than the suite.
fn ssh_command(port: &str, user: &str) -> Command {
    let mut c = Command::new("timeout");
    c.args(["60", "ssh"]);
    ssh_args(&mut c, port, user);
    c
}

fn ssh_args(c: &mut Command, port: &str, user: &str) {
    c.args(SSH_OPTS)
        .args(["-p", port])
        .arg(format!("{user}@127.0.0.1"));
}

fn ssh(t: &Target, args: &[&str], stdin: &[u8]) -> Output {
    let mut c = ssh_command(&t.port, &t.user);
    c.args(args);
    common::run_command(c, Some(stdin))
}

#[test]
fn exec_gives_output_streams_and_exit_status() {
    let d = Daemon::start("ssh-exec");
    let t = target(&d);
    let o = ssh(
        &t,
        &["echo out-$((6*7)); echo err >&2; cat; exit 7"],
        b"from stdin\n",
    );
    assert_eq!(o.status.code(), Some(7), "{}", common::describe(&o));
    assert_eq!(common::stdout(&o), "out-42\nfrom stdin\n");
    assert_eq!(common::stderr(&o), "err\n");
    // It ran in the sandbox: its own hostname, and the agent as PID 1.
    let o = ssh(&t, &["hostname; cat /proc/1/cmdline"], b"");
    assert!(o.status.success(), "{}", common::describe(&o));
    let out = common::stdout(&o);
    assert_ne!(out.lines().next(), Some(hostname().as_str()), "{out}");
    assert!(out.contains("agent"), "{out}");
    // No PTY unless asked.
    let o = ssh(&t, &["tty"], b"");
    assert_eq!(common::stdout(&o).trim(), "not a tty");
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// A host PTY of `rows`×`cols` for the ssh client to run in.
fn open_pty(rows: u16, cols: u16) -> (OwnedFd, OwnedFd) {
    let size = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    (pty.master, pty.slave)
}

fn set_size(fd: &OwnedFd, rows: u16, cols: u16) {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ on a PTY we own, with a valid winsize.
    assert_eq!(
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) },
        0
    );
}

/// Reads the PTY master until `want` shows up (or panics after 20 s).
fn read_until(master: &mut std::fs::File, seen: &mut String, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !seen.contains(want) {
        assert!(Instant::now() < deadline, "no {want:?} in {seen:?}");
        let mut fds = [libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: poll on one valid pollfd for at most 200 ms.
        if unsafe { libc::poll(fds.as_mut_ptr(), 1, 200) } <= 0 {
            continue;
        }
        match master.read(&mut buf) {
            Ok(0) => panic!("PTY closed before {want:?}: {seen:?}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading the PTY: {e}; seen {seen:?}"),
        }
    }
}

#[test]
fn login_shell_on_a_pty_follows_window_changes() {
    let d = Daemon::start("ssh-pty");
    let t = target(&d);
    let (master, slave) = open_pty(30, 100);
    // ssh itself (no `timeout` between): SIGWINCH must reach it.
    let mut ssh = Command::new("ssh");
    ssh_args(&mut ssh, &t.port, &t.user);
    let mut child = ssh
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()))
        .spawn()
        .unwrap();
    let mut m = std::fs::File::from(master.try_clone().unwrap());
    let mut seen = String::new();
    m.write_all(b"echo TERM=$TERM; tty; stty size | sed 's/ /x/'\n")
        .unwrap();
    read_until(&mut m, &mut seen, "30x100");
    assert!(seen.contains("/dev/pts/"), "{seen}");
    assert!(seen.contains("TERM=xterm"), "{seen}");
    // A login shell: bash -l read the profile, so PATH has the usual dirs.
    m.write_all(b"shopt -q login_shell && echo LOGIN-$((1+1))\n")
        .unwrap();
    read_until(&mut m, &mut seen, "LOGIN-2");

    // The window grows: the client sends window-change, the sandbox's
    // PTY follows.
    set_size(&slave, 40, 120);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGWINCH) };
    std::thread::sleep(Duration::from_millis(300));
    m.write_all(b"stty size | sed 's/ /x/'\n").unwrap();
    read_until(&mut m, &mut seen, "40x120");

    m.write_all(b"exit 5\n").unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(5), "{seen}");
}

fn wait_timeout(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ssh did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn unknown_and_other_sandboxes_usernames_are_refused() {
    let d = Daemon::start("ssh-refused");
    let t = target(&d);
    // A made-up username (same shape), and the sandbox id itself.
    for user in ["abcdefghjkmnpqrstvwxyz0123", t.id.as_str(), "root"] {
        let mut c = ssh_command(&t.port, user);
        c.arg("echo IN");
        let o = common::run_command(c, Some(b""));
        assert_eq!(o.status.code(), Some(255), "{}", common::describe(&o));
        assert!(!common::stdout(&o).contains("IN"));
        assert!(
            common::stderr(&o).contains("Permission denied"),
            "{}",
            common::describe(&o)
        );
    }
    // Another token cannot get a username for this sandbox.
    let other = d.token_create("other");
    let (status, body) = d.post_as(
        &other,
        &format!("/api/v3/sandbox/{}/expose/ssh", t.id),
        &json!({}),
    );
    assert_eq!(status, 404, "{body}");
    // The real one still works.
    let o = ssh(&t, &["echo IN"], b"");
    assert_eq!(common::stdout(&o), "IN\n", "{}", common::describe(&o));
}

#[test]
fn usernames_end_with_their_sandbox_and_so_do_sessions() {
    let d = Daemon::start("ssh-expiry");
    let t = target(&d);
    // A session that would run for a minute.
    let mut long = ssh_command(&t.port, &t.user)
        .arg("echo STARTED; sleep 60; echo NEVER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = long.stdout.take().unwrap();
    let mut first = [0u8; 8];
    out.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"STARTED\n");

    let (status, body) = d.http("DELETE", &format!("/api/v3/sandbox/{}", t.id));
    assert!(status < 300, "{status} {body}");
    let ended = wait_timeout(&mut long, Duration::from_secs(20));
    assert!(!ended.success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(!rest.contains("NEVER"), "{rest}");

    let o = ssh(&t, &["echo IN"], b"");
    assert_eq!(o.status.code(), Some(255), "{}", common::describe(&o));
    assert!(
        common::stderr(&o).contains("Permission denied"),
        "{}",
        common::describe(&o)
    );
    // No username for an ended sandbox either.
    let (status, _) = d.post_as(
        &d.token,
        &format!("/api/v3/sandbox/{}/expose/ssh", t.id),
        &json!({}),
    );
    assert_eq!(status, 404);
}

#[test]
fn port_forwarding_to_the_host_is_refused() {
    let d = Daemon::start("ssh-forward");
    let t = target(&d);
    let api_port = d.addr.rsplit_once(':').unwrap().1.to_string();

    // -W: a direct-tcpip channel to the daemon's own API on the host.
    let mut c = ssh_command(&t.port, &t.user);
    c.args(["-W", &format!("127.0.0.1:{api_port}")]);
    let o = common::run_command(c, Some(b"GET /health HTTP/1.0\r\n\r\n"));
    assert!(!o.status.success(), "{}", common::describe(&o));
    assert!(
        !common::stdout(&o).contains("HTTP/1"),
        "{}",
        common::describe(&o)
    );
    assert!(
        common::stderr(&o).contains("stdio forwarding failed"),
        "{}",
        common::describe(&o)
    );

    // -L: the same through a local listener.
    let local = free_port();
    let mut c = ssh_command(&t.port, &t.user);
    c.args([
        "-o",
        "ExitOnForwardFailure=yes",
        "-L",
        &format!("127.0.0.1:{local}:127.0.0.1:{api_port}"),
        "sleep 5",
    ]);
    let mut fwd = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", local)) {
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = conn.write_all(b"GET /health HTTP/1.0\r\n\r\n");
        let mut got = Vec::new();
        let _ = conn.read_to_end(&mut got);
        assert!(
            !String::from_utf8_lossy(&got).contains("HTTP/1"),
            "the forward reached the host: {}",
            String::from_utf8_lossy(&got)
        );
    }
    let _ = wait_timeout(&mut fwd, Duration::from_secs(20));

    // -R: the host would listen for the sandbox.
    let mut c = ssh_command(&t.port, &t.user);
    c.args([
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        &format!("127.0.0.1:{}:127.0.0.1:{api_port}", free_port()),
        "echo IN",
    ]);
    let o = common::run_command(c, Some(b""));
    assert_eq!(o.status.code(), Some(255), "{}", common::describe(&o));
    assert!(
        common::stderr(&o).contains("remote port forwarding failed"),
        "{}",
        common::describe(&o)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_host_key_survives_a_restart() {
    let mut d = Daemon::start("ssh-hostkey");
    let known = d.dir.join("known_hosts");
    let pinned = |t: &Target, mode: &str| {
        let mut c = Command::new("timeout");
        c.args(["60", "ssh", "-F", "/dev/null", "-o", "BatchMode=yes"])
            .args(["-o", &format!("StrictHostKeyChecking={mode}")])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known.display()))
            .args(["-p", &t.port])
            .arg(format!("{}@127.0.0.1", t.user))
            .arg("echo IN");
        common::run_command(c, Some(b""))
    };
    let t = target(&d);
    let o = pinned(&t, "accept-new");
    assert_eq!(common::stdout(&o), "IN\n", "{}", common::describe(&o));
    drop(t);
    let old_port = d.ssh_addr.clone().unwrap();
    d.kill9();
    d.spawn();
    let t = target(&d);
    // known_hosts pins [host]:port; the restarted gateway has a new port.
    let pins = std::fs::read_to_string(&known).unwrap().replace(
        &format!("[127.0.0.1]:{}", old_port.rsplit_once(':').unwrap().1),
        &format!("[127.0.0.1]:{}", t.port),
    );
    std::fs::write(&known, pins).unwrap();
    let o = pinned(&t, "yes");
    assert_eq!(common::stdout(&o), "IN\n", "{}", common::describe(&o));
    let key = d.dir.join("ssh_host_ed25519_key");
    let mode = std::fs::metadata(&key).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(mode.unwrap(), 0o600);
}

#[test]
fn sftp_and_scp_go_through_the_agent() {
    let d = Daemon::start("ssh-sftp");
    let t = target(&d);
    let dir = tempdir(&d, "files");
    // 3 MiB of varied bytes.
    let data: Vec<u8> = (0u32..3 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let src = dir.join("blob.bin");
    std::fs::write(&src, &data).unwrap();

    // scp (SFTP protocol in OpenSSH 9) up, then back down.
    let dest = format!("{}@127.0.0.1:/tmp/blob.bin", t.user);
    let o = scp(&t, &[src.to_str().unwrap(), &dest]);
    assert!(o.status.success(), "{}", common::describe(&o));
    let o = ssh(&t, &["sha256sum /tmp/blob.bin"], b"");
    assert_eq!(
        common::stdout(&o).split(' ').next().unwrap(),
        sha256_hex(&src),
        "{}",
        common::describe(&o)
    );
    let back = dir.join("back.bin");
    let o = scp(&t, &[&dest, back.to_str().unwrap()]);
    assert!(o.status.success(), "{}", common::describe(&o));
    assert_eq!(std::fs::read(&back).unwrap(), data);

    // sftp: mkdir, put, rename, ls, get, rm.
    let batch = dir.join("batch");
    let got = dir.join("got.bin");
    std::fs::write(
        &batch,
        format!(
            "mkdir /tmp/d\nput {} /tmp/d/a\nrename /tmp/d/a /tmp/d/b\nls -l /tmp/d\nget /tmp/d/b {}\nrm /tmp/d/b\nrmdir /tmp/d\n",
            src.display(),
            got.display()
        ),
    )
    .unwrap();
    let mut c = Command::new("timeout");
    c.args(["60", "sftp"])
        .args(SSH_OPTS)
        .args(["-P", &t.port, "-b"])
        .arg(&batch)
        .arg(format!("{}@127.0.0.1", t.user));
    let o = common::run_command(c, None);
    assert!(o.status.success(), "{}", common::describe(&o));
    assert!(
        common::stdout(&o).contains(&data.len().to_string()),
        "{}",
        common::describe(&o)
    );
    assert_eq!(std::fs::read(&got).unwrap(), data);
    let o = ssh(&t, &["test -e /tmp/d && echo LEFT || echo GONE"], b"");
    assert_eq!(common::stdout(&o), "GONE\n");
    // Not the host's file system: a path only the host has is absent.
    let o = scp(
        &t,
        &[
            &format!("{}@127.0.0.1:{}", t.user, src.display()),
            dir.join("host.bin").to_str().unwrap(),
        ],
    );
    assert!(!o.status.success(), "{}", common::describe(&o));
}

fn scp(t: &Target, args: &[&str]) -> Output {
    let mut c = Command::new("timeout");
    c.args(["60", "scp"])
        .args(SSH_OPTS)
        .args(["-P", &t.port])
        .args(args);
    common::run_command(c, None)
}

fn tempdir(d: &Daemon, name: &str) -> std::path::PathBuf {
    let p = d.dir.join(name);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn sha256_hex(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn create_with_ssh_true_is_accepted_and_bad_values_are_not() {
    let d = Daemon::start("ssh-config");
    let (_ws, id) = d.create(json!({"ssh": true}));
    assert!(id.starts_with("sbx_"));
    let (status, body): (u16, Value) = d.create_err(json!({"ssh": "yes"}), &d.token);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("ssh must be true or false"),
        "{body}"
    );
}
