//! `airlock exec`, `cp` and `shell` against a real daemon: a sandbox made
//! with a timeout (so it outlives its creating socket), then the CLI
//! attaches to it over the WebSocket protocol. Needs root and the default
//! image, like tests/daemon.rs.

mod common;

use common::daemon::Daemon;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn daemon() -> Daemon {
    Daemon::options("cli-exec").start()
}

trait CliExec {
    fn sandbox(&self) -> String;
    fn airlock(&self, args: &[&str], stdin: Option<&[u8]>) -> Output;
}

impl CliExec for Daemon {
    /// A sandbox that lives 5 minutes, whatever its creating socket does.
    fn sandbox(&self) -> String {
        let (mut ws, id) = self.create(json!({"timeout": "5m"}));
        let _ = ws.close(None);
        let _ = ws.flush();
        id
    }

    /// `airlock ARGS...` pointed at this daemon through the SDKs' variables.
    fn airlock(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        airlock_env(args, stdin, &self.endpoint(), &self.token)
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut b).unwrap();
    u32::from_le_bytes(b)
}

fn airlock_env(args: &[&str], stdin: Option<&[u8]>, endpoint: &str, token: &str) -> Output {
    let mut cmd = Command::new(common::AIRLOCK);
    cmd.args(args)
        .env_remove("DENO_DEPLOY_ENDPOINT")
        .env("DENO_SANDBOX_ENDPOINT", endpoint)
        .env("DENO_DEPLOY_TOKEN", token);
    common::run_command(cmd, stdin)
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "airlock-cp-{tag}-{}-{}",
        std::process::id(),
        rand_u32()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn exec_streams_output_stdin_and_exit_codes() {
    let d = daemon();
    let sbx = d.sandbox();

    let o = d.airlock(&["exec", &sbx, "--", "echo", "hello", "world"], None);
    assert_eq!(code(&o), 0, "{}", common::describe(&o));
    assert_eq!(common::stdout(&o), "hello world\n");

    let o = d.airlock(
        &[
            "exec",
            &sbx,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ],
        None,
    );
    assert_eq!(code(&o), 7, "{}", common::describe(&o));
    assert_eq!(common::stdout(&o), "out\n");
    assert_eq!(common::stderr(&o), "err\n");

    // Killed by a signal: 128+n.
    let o = d.airlock(&["exec", &sbx, "--", "sh", "-c", "kill -TERM $$"], None);
    assert_eq!(code(&o), 143, "{}", common::describe(&o));

    // -i forwards stdin; without it the command sees none.
    let o = d.airlock(
        &["exec", "-i", &sbx, "--", "tr", "a-z", "A-Z"],
        Some(b"piped in\n"),
    );
    assert_eq!(code(&o), 0, "{}", common::describe(&o));
    assert_eq!(common::stdout(&o), "PIPED IN\n");
    let o = d.airlock(&["exec", &sbx, "--", "cat"], Some(b"ignored\n"));
    assert_eq!(code(&o), 0, "{}", common::describe(&o));
    assert_eq!(common::stdout(&o), "");

    // State persists between execs: the same sandbox.
    let o = d.airlock(
        &[
            "exec",
            "-w",
            "/tmp",
            &sbx,
            "--",
            "sh",
            "-c",
            "echo kept > f; pwd",
        ],
        None,
    );
    assert_eq!(common::stdout(&o), "/tmp\n", "{}", common::describe(&o));
    let o = d.airlock(
        &[
            "exec",
            "-e",
            "X=42",
            &sbx,
            "--",
            "sh",
            "-c",
            "cat /tmp/f; echo $X",
        ],
        None,
    );
    assert_eq!(common::stdout(&o), "kept\n42\n", "{}", common::describe(&o));

    // Large output arrives whole.
    let o = d.airlock(
        &["exec", &sbx, "--", "head", "-c", "3000000", "/dev/zero"],
        None,
    );
    assert_eq!(code(&o), 0, "{}", common::describe(&o));
    assert_eq!(o.stdout.len(), 3_000_000);

    // Our stdout closing (`| head -1`) gives the command SIGPIPE: 141.
    let mut child = Command::new(common::AIRLOCK)
        .args(["exec", &sbx, "--", "yes"])
        .env("DENO_SANDBOX_ENDPOINT", d.endpoint())
        .env("DENO_DEPLOY_TOKEN", &d.token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "y\n");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(141));

    // A missing command: docker's 127.
    let o = d.airlock(&["exec", &sbx, "--", "no-such-command-here"], None);
    assert_eq!(code(&o), 127, "{}", common::describe(&o));
    assert!(
        common::stderr(&o).contains("no-such-command-here"),
        "{}",
        common::describe(&o)
    );
}

#[test]
fn exec_errors_say_what_to_do() {
    let d = daemon();
    let o = d.airlock(&["exec", "sbx-nope", "--", "true"], None);
    assert_eq!(code(&o), 125, "{}", common::describe(&o));
    assert!(
        common::stderr(&o).contains("no such sandbox: sbx-nope (list them with `airlock ls`)"),
        "{}",
        common::describe(&o)
    );

    let sbx = d.sandbox();
    let o = airlock_env(
        &["exec", &sbx, "--", "true"],
        None,
        &d.endpoint(),
        "ddo_wrong",
    );
    assert_eq!(code(&o), 125, "{}", common::describe(&o));
    assert!(
        common::stderr(&o).contains("401"),
        "{}",
        common::describe(&o)
    );
    assert!(
        common::stderr(&o).contains("DENO_DEPLOY_TOKEN"),
        "{}",
        common::describe(&o)
    );

    // No daemon at all: a port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let o = airlock_env(&["exec", "x", "--", "true"], None, &endpoint, "t");
    assert_eq!(code(&o), 125, "{}", common::describe(&o));
    assert!(
        common::stderr(&o).contains(&format!("is `airlock serve` running at {endpoint}?")),
        "{}",
        common::describe(&o)
    );
    let o = airlock_env(&["cp", "x:/a", "/tmp/"], None, &endpoint, "t");
    assert_eq!(code(&o), 1, "{}", common::describe(&o));
    assert!(
        common::stderr(&o).contains("airlock serve"),
        "{}",
        common::describe(&o)
    );
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

#[test]
fn cp_files_and_trees_both_ways() {
    use std::os::unix::fs::PermissionsExt;
    let d = daemon();
    let sbx = d.sandbox();
    let work = tempdir("work");

    // A 3 MiB binary file in, checked inside, and out again.
    let big = pseudo_random(3 << 20);
    let big_path = work.join("big.bin");
    write(&big_path, &big);
    let dst = format!("{sbx}:/tmp/big.bin");
    let o = d.airlock(&["cp", big_path.to_str().unwrap(), &dst], None);
    assert_eq!(code(&o), 0, "{}", common::describe(&o));
    let o = d.airlock(
        &["exec", &sbx, "--", "stat", "-c", "%s", "/tmp/big.bin"],
        None,
    );
    assert_eq!(common::stdout(&o).trim(), (3 << 20).to_string());
    let back = work.join("back.bin");
    let o = d.airlock(&["cp", &dst, back.to_str().unwrap()], None);
    assert_eq!(code(&o), 0, "{}", common::describe(&o));
    assert!(
        std::fs::read(&back).unwrap() == big,
        "3 MiB file changed on the round trip"
    );
    // Progress only on a terminal: nothing on a piped stderr.
    assert_eq!(common::stderr(&o), "");

    // Into an existing directory: keeps the name.
    let small = work.join("small.txt");
    write(&small, b"small\n");
    let o = d.airlock(
        &["cp", small.to_str().unwrap(), &format!("{sbx}:/tmp")],
        None,
    );
    assert_eq!(code(&o), 0, "{}", common::describe(&o));
    let o = d.airlock(&["exec", &sbx, "--", "cat", "/tmp/small.txt"], None);
    assert_eq!(common::stdout(&o), "small\n");

    // A tree: nested dirs, an empty file, an executable, a symlink.
    let tree = work.join("tree");
    write(&tree.join("a.txt"), b"A");
    write(&tree.join("sub/b.txt"), b"B");
    write(&tree.join("sub/deeper/c.bin"), &pseudo_random(100_000));
    write(&tree.join("empty"), b"");
    std::fs::create_dir_all(tree.join("emptydir")).unwrap();
    write(&tree.join("run.sh"), b"#!/bin/sh\necho ran\n");
    std::fs::set_permissions(tree.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a.txt", tree.join("link")).unwrap();
    let o = d.airlock(
        &["cp", tree.to_str().unwrap(), &format!("{sbx}:/tmp/")],
        None,
    );
    assert_eq!(code(&o), 0, "{}", common::describe(&o));
    let o = d.airlock(
        &[
            "exec",
            &sbx,
            "--",
            "sh",
            "-c",
            "cd /tmp/tree && find . | sort && cat sub/b.txt link && ./run.sh",
        ],
        None,
    );
    assert_eq!(
        common::stdout(&o),
        ".\n./a.txt\n./empty\n./emptydir\n./link\n./run.sh\n./sub\n./sub/b.txt\n./sub/deeper\n./sub/deeper/c.bin\nBAran\n",
        "{}",
        common::describe(&o)
    );

    // And out again, to a new name.
    let out = work.join("tree-out");
    let o = d.airlock(
        &["cp", &format!("{sbx}:/tmp/tree"), out.to_str().unwrap()],
        None,
    );
    assert_eq!(code(&o), 0, "{}", common::describe(&o));
    for f in ["a.txt", "sub/b.txt", "sub/deeper/c.bin", "empty", "run.sh"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(tree.join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(out.join("emptydir").is_dir());
    assert_eq!(
        std::fs::read_link(out.join("link")).unwrap(),
        Path::new("a.txt")
    );
    let mode = std::fs::metadata(out.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);

    // Into an existing local directory: keeps the name.
    let o = d.airlock(
        &[
            "cp",
            &format!("{sbx}:/tmp/tree/sub/"),
            work.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code(&o), 0, "{}", common::describe(&o));
    assert_eq!(std::fs::read(work.join("sub/b.txt")).unwrap(), b"B");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn cp_errors() {
    let d = daemon();
    let sbx = d.sandbox();
    let work = tempdir("err");
    let f = work.join("f.txt");
    write(&f, b"x");
    let local = |p: &Path| p.to_str().unwrap().to_string();
    // (source, destination, exit code, what stderr must say)
    let cases: [(String, String, i32, &[&str]); 5] = [
        (
            format!("{sbx}:/missing/dir/"),
            local(&work.join("x")),
            1,
            &["/missing/dir/"],
        ),
        (
            local(&f),
            format!("{sbx}:/no/such/dir/f.txt"),
            1,
            &["no such directory: /no/such/dir"],
        ),
        (
            format!("{sbx}:/etc/hostname"),
            local(&work.join("nope/x")),
            1,
            &["no such directory:", "nope"],
        ),
        (format!("{sbx}:/a"), format!("{sbx}:/b"), 2, &["usage"]),
        ("/tmp/a".into(), "/tmp/b".into(), 2, &[]),
    ];
    for (src, dst, want_code, says) in cases {
        let o = d.airlock(&["cp", &src, &dst], None);
        assert_eq!(
            code(&o),
            want_code,
            "cp {src} {dst}: {}",
            common::describe(&o)
        );
        for text in says {
            assert!(
                common::stderr(&o).contains(text),
                "cp {src} {dst}: no {text:?} in {}",
                common::describe(&o)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn shell_runs_a_script_from_stdin() {
    let d = daemon();
    let sbx = d.sandbox();
    let o = d.airlock(
        &["shell", &sbx],
        Some(b"echo from-shell $((6*7))\ncd /tmp && pwd\nexit 3\n"),
    );
    assert_eq!(code(&o), 3, "{}", common::describe(&o));
    assert_eq!(
        common::stdout(&o),
        "from-shell 42\n/tmp\n",
        "{}",
        common::describe(&o)
    );
}

#[test]
fn exec_tty_gives_the_command_a_terminal() {
    // `script` (util-linux) gives us a terminal to run `-t` in.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` to provide a terminal");
        return;
    }
    let d = daemon();
    let sbx = d.sandbox();
    let cmd = format!(
        "{} exec -t {sbx} -- sh -c 'tty; echo TERM=$TERM; exit 5'",
        common::AIRLOCK
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("DENO_SANDBOX_ENDPOINT", d.endpoint())
        .env("DENO_DEPLOY_TOKEN", &d.token)
        .env("TERM", "xterm-test")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&o), 5, "{}", common::describe(&o));
    let out = common::stdout(&o);
    assert!(out.contains("/dev/pts/"), "{}", common::describe(&o));
    assert!(out.contains("TERM=xterm-test"), "{}", common::describe(&o));
}
