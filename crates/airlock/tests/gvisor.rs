//! What the gvisor backend adds, tested by attack from inside a sandbox:
//! the sandbox talks to gVisor's kernel, not the host's, so the host
//! kernel's identity and its kernel-only interfaces are out of reach; and
//! everything runsc runs for a sandbox is inside that sandbox's cgroup and
//! under seccomp on the host. Also: choosing the backend (flags, pinned
//! tokens) and its errors. The rest of the attack suite (isolation.rs,
//! daemon.rs, cleanup.rs) runs against gvisor too, with AIRLOCK_ISOLATION
//! set (scripts/test.sh). Needs root, the default image and runsc
//! (scripts/install-runsc.sh).

mod common;

use common::daemon::{call, Daemon};
use common::*;
use serde_json::json;
use std::fs;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GVISOR: &[&str] = &["--isolation", "gvisor"];

fn host(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_sandbox_sees_gvisors_kernel_not_the_hosts() {
    let host_release = host("uname", &["-r"]);
    let host_version = host("uname", &["-v"]);
    let host_boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let o = sh(
        GVISOR,
        "echo MARK; uname -r; uname -v; cat /proc/version; dmesg 2>&1 | head -3; \
         cat /proc/cmdline; cat /proc/sys/kernel/random/boot_id",
    );
    assert_ran(&o, "MARK");
    let out = stdout(&o);
    assert!(
        !out.contains(&host_release),
        "host kernel release visible:\n{out}"
    );
    assert!(
        !out.contains(&host_version),
        "host kernel version visible:\n{out}"
    );
    assert!(
        !out.contains(host_boot_id.trim()),
        "host boot id visible:\n{out}"
    );
    // gVisor's own identity: its log and its (fixed) kernel command line.
    assert!(out.contains("Starting gVisor"), "{out}");
    assert!(out.contains("gvisor"), "{out}");
}

#[test]
fn host_kernel_only_interfaces_are_gone() {
    // Native hides these by masking and by privilege; under gVisor they do
    // not exist, because there is no host kernel behind /proc and /dev.
    let o = sh(
        GVISOR,
        "echo MARK; for p in /proc/kallsyms /proc/kcore /dev/kmsg /proc/modules \
            /sys/kernel/debug /sys/fs/bpf /proc/sys/kernel/modprobe /dev/mem /dev/port; do \
           [ -e \"$p\" ] && echo \"PRESENT $p\"; done; \
         grep -E 'run/airlock|var/lib/airlock|/dev/vd|/dev/sd|/dev/nvme' /proc/self/mountinfo \
           | sed 's/^/HOSTPATH /'; \
         ls /sys/module 2>/dev/null | sed 's/^/MODULE /'; echo END",
    );
    assert_ran(&o, "MARK");
    let out = stdout(&o);
    assert!(out.contains("END"), "{}", describe(&o));
    for bad in ["PRESENT", "HOSTPATH", "MODULE"] {
        assert!(!out.contains(bad), "{bad}:\n{out}");
    }
}

#[test]
fn syscalls_the_host_kernel_would_refuse_never_reach_it() {
    // The sandbox may try whatever it likes; gVisor answers. The host's
    // kernel never sees these calls, and nothing of the host changes.
    let host_hostname = host("hostname", &[]);
    let o = py(
        GVISOR,
        r#"
import ctypes, os, errno
libc = ctypes.CDLL(None, use_errno=True)
print("MARK")
def call(name, *args):
    r = libc.syscall(*args)
    print(name, r, errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()) if r < 0 else "ok")
call("init_module", 175, 0, 0, 0)
call("kexec_load", 246, 0, 0, 0, 0)
call("bpf", 321, 0, 0, 0)
call("perf_event_open", 298, 0, 0, -1, -1, 0)
call("reboot", 169, 0xfee1dead, 672274793, 0x1234567, 0)
try:
    os.system("hostname owned-by-sandbox 2>/dev/null")
except Exception:
    pass
"#,
    );
    assert_ran(&o, "MARK");
    let out = stdout(&o);
    for line in out.lines().filter(|l| !l.starts_with("MARK")) {
        assert!(
            !line.ends_with(" ok"),
            "a host-only syscall succeeded: {line}\n{out}"
        );
    }
    assert_eq!(host("hostname", &[]), host_hostname);
}

/// The host pids in the cgroup of sandbox `id`.
fn cgroup_pids(id: &str) -> Vec<u32> {
    sandbox_pids(id)
}

#[test]
fn everything_runsc_runs_is_in_the_sandbox_cgroup_and_under_seccomp() {
    let mut child = Command::new(AIRLOCK)
        .args([
            "run",
            "--isolation",
            "gvisor",
            "--",
            "sh",
            "-c",
            "echo ready; sleep 30",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    // `airlock run` names its sandboxes run-<hex>; this test's is the one
    // whose runsc is our child's child.
    let runsc = children_of(child.id());
    assert_eq!(runsc.len(), 1, "one runsc per sandbox: {runsc:?}");
    let state = fs::read_dir(STATE_DIR).unwrap();
    let ids: Vec<String> = state
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|id| id.starts_with("run-"))
        .collect();
    let mut checked = false;
    for id in ids {
        let pids = cgroup_pids(&id);
        // The Sentry and the gofer at least; the sandbox's own processes
        // are threads of the Sentry's, never host processes.
        if pids.is_empty() {
            continue;
        }
        let ours = pids.iter().any(|p| {
            fs::read_to_string(format!("/proc/{p}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("PPid:"))
                        .map(|v| v.trim().to_string())
                })
                .is_some_and(|ppid| ppid == runsc[0].to_string())
        });
        if !ours {
            continue;
        }
        assert!(pids.len() >= 2, "{id}: {pids:?}");
        for p in &pids {
            let status = fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
            if status.is_empty() {
                continue; // exited meanwhile
            }
            let seccomp = status
                .lines()
                .find_map(|l| l.strip_prefix("Seccomp:"))
                .map(str::trim);
            assert_eq!(
                seccomp,
                Some("2"),
                "{id} pid {p} runs without seccomp:\n{status}"
            );
            let cmdline = fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&cmdline).contains("sleep"),
                "sandbox code runs as a host process: {p}"
            );
        }
        checked = true;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(checked, "found no cgroup of this test's sandbox");
}

#[test]
fn an_unknown_isolation_is_a_clear_error_and_makes_nothing() {
    let before = state_ids();
    let o = run(&["run", "--isolation", "firecracker", "--", "true"], None);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("unknown isolation \"firecracker\""), "{err}");
    assert!(err.contains("native or gvisor"), "{err}");
    assert_eq!(state_ids(), before);
}

#[test]
fn gvisor_without_runsc_names_what_to_install() {
    let mut cmd = Command::new(AIRLOCK);
    cmd.args(["run", "--isolation", "gvisor", "--", "true"])
        .env("AIRLOCK_RUNSC", "/nonexistent/runsc");
    let o = run_command(cmd, None);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("--isolation gvisor cannot be used on this host"),
        "{err}"
    );
    assert!(err.contains("install-runsc.sh"), "{err}");
}

#[test]
fn a_token_pinned_to_gvisor_gets_gvisor_on_a_native_daemon() {
    let d = Daemon::options("gvisor-pin")
        .args(&["--isolation", "native"])
        .start();
    let store = &d.store;
    let out = Command::new(AIRLOCK)
        .args(["token", "create", "--isolation", "gvisor", "--store"])
        .arg(store)
        .arg("tenant")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let pinned = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let kernel_of = |token: &str| {
        let (mut ws, id) = d.create_as(json!({}), token);
        let r = call(
            &mut ws,
            1,
            "spawn",
            json!({"command": "uname", "args": ["-r"], "stdout": "piped", "stderr": "null"}),
        );
        assert!(r["result"]["ok"]["pid"].is_number(), "{r}");
        let detail = d.http_as(token, "GET", &format!("/api/v3/sandbox/{id}"));
        let detail: serde_json::Value = serde_json::from_str(&detail.1).unwrap();
        detail["isolation"].as_str().unwrap_or("?").to_string()
    };
    assert_eq!(kernel_of(&d.token), "native");
    assert_eq!(kernel_of(&pinned), "gvisor");

    // Both are counted by backend.
    let (status, metrics) = d.http("GET", "/metrics");
    assert_eq!(status, 200);
    for isolation in ["native", "gvisor"] {
        let line = format!("airlock_sandboxes_created_total{{isolation=\"{isolation}\"}} ");
        let n: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in\n{metrics}"))
            .trim()
            .parse()
            .unwrap();
        assert!(n >= 1.0, "{line}{n}");
    }
}

#[test]
fn a_gvisor_sandbox_of_a_killed_daemon_leaves_nothing() {
    let mut d = Daemon::options("gvisor-kill9")
        .args(&["--isolation", "gvisor"])
        .start();
    let (mut ws, id) = d.create(json!({}));
    let r = call(
        &mut ws,
        1,
        "spawn",
        json!({"command": "sleep", "args": ["1000"], "stdout": "null", "stderr": "null"}),
    );
    assert!(r["result"]["ok"]["pid"].is_number(), "{r}");
    assert!(!sandbox_pids(&id).is_empty());
    assert!(
        !runsc_files_of(&id).is_empty(),
        "runsc keeps no state for {id}"
    );
    d.kill9();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sandbox_pids(&id).is_empty() {
        assert!(Instant::now() < deadline, "the Sentry outlived its daemon");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.spawn();
    assert_eq!(
        runsc_files_of(&id),
        Vec::<String>::new(),
        "runsc state left"
    );
    assert!(!cgroup_exists(&id), "cgroup left");
    assert!(
        !std::path::Path::new(STATE_DIR).join(&id).exists(),
        "state dir left"
    );
}
