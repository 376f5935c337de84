//! Helpers shared by the integration tests that drive the `airlock` binary.
//! These tests need root and the default image (built on first use).

#![allow(dead_code)]

pub mod cli;
pub mod daemon;
pub mod netns;

use std::fs;
use std::io::Write;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};

pub const AIRLOCK: &str = env!("CARGO_BIN_EXE_airlock");

/// Whether this run tests the gvisor backend: `airlock` reads
/// `AIRLOCK_ISOLATION` itself, and scripts/test.sh runs the attack suite
/// once per backend.
pub fn gvisor() -> bool {
    std::env::var("AIRLOCK_ISOLATION").as_deref() == Ok("gvisor")
}

/// Ends a test that asserts *how the native backend* stops an attack
/// (its seccomp filter, its uid ranges, its process tree) when the suite
/// runs on gvisor, where gVisor's Sentry answers instead; the reason is
/// printed, and gvisor.rs asserts what stops the attack there.
#[macro_export]
macro_rules! native_only {
    ($why:expr) => {
        if $crate::common::gvisor() {
            eprintln!("skipped on gvisor: {}", $why);
            return;
        }
    };
}

/// First host uid of the sandbox uid ranges (see `jail::uidpool`).
pub const SANDBOX_UID_BASE: u64 = 1_000_000_000;

/// Runs `airlock ARGS...` to completion; `stdin` is piped in when given,
/// otherwise stdin is /dev/null.
pub fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(AIRLOCK);
    cmd.args(args);
    run_command(cmd, stdin)
}

/// Runs `cmd` (an `airlock` command the caller set up: args, environment)
/// to completion, as [`run`] does.
pub fn run_command(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("spawning airlock");
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let data = data.to_vec();
        // A writer thread, so a command that does not read cannot block us.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    child.wait_with_output().expect("waiting for airlock")
}

/// `airlock run [OPTS...] -- sh -c SCRIPT`.
pub fn sh(opts: &[&str], script: &str) -> Output {
    let mut args = vec!["run"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    run(&args, None)
}

/// `airlock run [OPTS...] -- python3 -c SCRIPT`.
pub fn py(opts: &[&str], script: &str) -> Output {
    let mut args = vec!["run"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["--", "python3", "-c", script]);
    run(&args, None)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Everything about an Output, for assertion messages.
pub fn describe(o: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        stdout(o),
        stderr(o)
    )
}

/// Asserts the command exited 0 and printed `marker` (so it really ran).
#[track_caller]
pub fn assert_ran(o: &Output, marker: &str) {
    assert!(
        o.status.success() && stdout(o).contains(marker),
        "expected success and marker {marker:?}\n{}",
        describe(o)
    );
}

pub fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    let mut f = fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, &mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Host pids of processes whose real uid is in `[lo, hi)`.
pub fn pids_with_uid_in(lo: u64, hi: u64) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return pids;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse::<u64>().ok());
        if let Some(uid) = uid {
            if uid >= lo && uid < hi {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Names of the sandbox cgroups on the host, for v1 and v2 hierarchies.
pub fn cgroup_names() -> Vec<String> {
    let parents = [
        "/sys/fs/cgroup/airlock",
        "/sys/fs/cgroup/memory/airlock",
        "/sys/fs/cgroup/cpu/airlock",
        "/sys/fs/cgroup/cpuacct/airlock",
        "/sys/fs/cgroup/pids/airlock",
    ];
    let mut names = Vec::new();
    for p in parents {
        if let Ok(rd) = fs::read_dir(p) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    names.push(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Whether any cgroup directory of sandbox `id` still exists.
pub fn cgroup_exists(id: &str) -> bool {
    [
        "/sys/fs/cgroup/airlock",
        "/sys/fs/cgroup/memory/airlock",
        "/sys/fs/cgroup/cpu/airlock",
        "/sys/fs/cgroup/cpuacct/airlock",
        "/sys/fs/cgroup/pids/airlock",
    ]
    .iter()
    .any(|p| Path::new(p).join(id).exists())
}

/// Host pids of every process in sandbox `id`'s cgroups (v1 or v2, with
/// any child cgroups); empty once the sandbox's processes are gone or its
/// cgroups removed.
pub fn sandbox_pids(id: &str) -> Vec<u32> {
    fn walk(dir: &Path, pids: &mut Vec<u32>) {
        if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), pids);
            }
        }
    }
    let mut pids = Vec::new();
    for root in ["/sys/fs/cgroup/airlock", "/sys/fs/cgroup/pids/airlock"] {
        walk(&Path::new(root).join(id), &mut pids);
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

pub const STATE_DIR: &str = "/run/airlock/sandboxes";
/// runsc's `--root` for the gvisor backend.
pub const RUNSC_ROOT: &str = "/run/airlock/runsc";

/// What runsc keeps for container `id` under [`RUNSC_ROOT`] (state, lock,
/// socket files).
pub fn runsc_files_of(id: &str) -> Vec<String> {
    fs::read_dir(RUNSC_ROOT)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.starts_with(&format!("{id}_sandbox:"))
                        || *n == format!("runsc-{id}.sock")
                        || *n == format!("{id}.state")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Ids with a state dir under /run/airlock/sandboxes.
pub fn state_ids() -> Vec<String> {
    let mut ids: Vec<String> = fs::read_dir(STATE_DIR)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Children of host process `ppid`.
pub fn children_of(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let parent = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|l| l.trim().parse::<u32>().ok());
        if parent == Some(ppid) {
            out.push(pid);
        }
    }
    out
}

/// The sandbox id of host process `pid`, from its cgroup path
/// (`.../airlock/<id>`).
pub fn sandbox_id_of(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| {
        let path = l.splitn(3, ':').nth(2)?;
        let rest = path.strip_prefix("/airlock/")?;
        Some(rest.split('/').next()?.to_string())
    })
}

/// The uid base of a sandbox from the `/proc/self/uid_map` line it printed
/// (`0 <host base> 65536`).
pub fn parse_uid_map(text: &str) -> Option<(u64, u64, u64)> {
    text.lines().find_map(|l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .map(|x| x.parse().ok())
            .collect::<Option<Vec<_>>>()?;
        (f.len() == 3).then(|| (f[0], f[1], f[2]))
    })
}

/// An `airlock run` that is up: its script printed `ready`.
pub struct Running {
    pub child: Child,
    /// The rest of the command's stdout.
    pub stdout: BufReader<ChildStdout>,
    /// Host pid of the sandbox's PID 1 (the agent); under gvisor, of the
    /// Sentry, which runs it.
    pub agent: u32,
    pub id: String,
    /// Host uid that sandbox root maps to (native only: under gvisor the
    /// Sentry's, which is no sandbox uid range).
    pub uid: u64,
}

/// Starts `airlock run -- sh -c SCRIPT` (SCRIPT must print `ready` first)
/// and finds its sandbox from the host once it is up.
pub fn run_until_ready(script: &str, stdin: Stdio) -> Running {
    let mut child = Command::new(AIRLOCK)
        .args(["run", "--", "sh", "-c", script])
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning airlock");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    // Native: the agent is airlock's child. Gvisor: runsc is, and the
    // Sentry (the first process in the sandbox's cgroup) is runsc's.
    let mut generation = children_of(child.id());
    let agent = loop {
        if let Some(pid) = generation.iter().find(|p| sandbox_id_of(**p).is_some()) {
            break *pid;
        }
        assert!(
            !generation.is_empty(),
            "no process of the sandbox under airlock"
        );
        generation = generation.iter().flat_map(|p| children_of(*p)).collect();
    };
    let id = sandbox_id_of(agent).expect("the agent's cgroup");
    let uid: u64 = fs::read_to_string(format!("/proc/{agent}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(gvisor() || uid >= SANDBOX_UID_BASE);
    Running {
        child,
        stdout,
        agent,
        id,
        uid,
    }
}
