//! Isolation of `airlock run`, tested by attack from inside the sandbox.
//!
//! Every test checks that the attempt fails inside the sandbox *and* that
//! the host is unharmed, and prints a marker first so it cannot pass
//! because the command never ran. Needs root and the default image.

mod common;

use common::*;
use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- 1. files

struct Canary(Vec<String>);

impl Drop for Canary {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

#[test]
fn host_files_are_invisible() {
    let tag = random_hex();
    let secret = format!("canary-secret-{tag}");
    let paths = vec![
        format!("/root/airlock-canary-{tag}"),
        format!("/tmp/airlock-canary-{tag}"),
        format!("/run/airlock-canary-{tag}"),
    ];
    let _canary = Canary(paths.clone());
    for p in &paths {
        fs::write(p, &secret).unwrap();
    }
    let script = format!(
        r#"
echo MARK-start
for p in {paths}; do
  cat "$p" 2>/dev/null && echo "LEAK cat $p"
  cat "/proc/1/root$p" 2>/dev/null && echo "LEAK proc1root $p"
  cat "/proc/self/root$p" 2>/dev/null && echo "LEAK procselfroot $p"
done
find / -path /proc -prune -o -name 'airlock-canary*' -print 2>/dev/null | sed 's/^/LEAK find /'
find /proc/1/root/ -maxdepth 3 -name 'airlock-canary*' 2>/dev/null | sed 's/^/LEAK find1 /'
grep -rl {secret} /root /tmp /run /home 2>/dev/null | sed 's/^/LEAK grep /'
echo MARK-end
"#,
        paths = paths.join(" "),
    );
    let o = sh(&[], &script);
    let out = stdout(&o);
    assert!(
        out.contains("MARK-start") && out.contains("MARK-end"),
        "{}",
        describe(&o)
    );
    assert!(
        !out.contains("LEAK"),
        "host canary visible:\n{}",
        describe(&o)
    );
    assert!(!out.contains(&secret), "{}", describe(&o));
    for p in &paths {
        assert_eq!(
            fs::read_to_string(p).unwrap(),
            secret,
            "host canary changed"
        );
    }
}

/// Every fd, cwd and root link of every process the sandbox can see, and
/// every path reachable through them, stays inside the sandbox: nothing
/// the agent holds opens a way to the host's filesystem.
#[test]
fn proc_links_do_not_reach_the_host() {
    let tag = random_hex();
    let canary = format!("/root/airlock-canary-{tag}");
    let _c = Canary(vec![canary.clone()]);
    fs::write(&canary, "x").unwrap();
    let script = format!(
        r#"
import os
print("MARK", flush=True)
leaks = []
pids = [p for p in os.listdir("/proc") if p.isdigit()]
for pid in pids:
    base = "/proc/%s" % pid
    links = ["root", "cwd"]
    try:
        links += ["fd/" + f for f in os.listdir(base + "/fd")]
    except OSError:
        pass
    for l in links:
        path = base + "/" + l
        for probe in ("{canary}", "/../../../../{canary}", "/..{canary}"):
            try:
                if os.path.exists(path + probe) or os.path.exists(path + "/" + probe):
                    leaks.append(path + probe)
            except OSError:
                pass
        try:
            target = os.readlink(path)
        except OSError:
            continue
        print("link", path, target)
print("LEAKS", leaks)
"#
    );
    let o = py(&[], &script);
    let out = stdout(&o);
    assert_ran(&o, "MARK");
    assert!(out.contains("LEAKS []"), "{}", describe(&o));
    // Links named by absolute path must not name the host's build tree or
    // anything under the host's state dirs.
    for l in out.lines().filter(|l| l.starts_with("link ")) {
        assert!(
            !l.contains("/work/") && !l.contains("/run/airlock") && !l.contains("/var/lib/airlock"),
            "a process in the sandbox holds a host path: {l}\n{}",
            describe(&o)
        );
    }
}

// ------------------------------------------------------------- 2. pids

#[test]
fn host_pids_are_invisible() {
    let me = std::process::id();
    let o = sh(
        &[],
        &format!(
            "echo MARK; ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '; echo; \
             test -e /proc/{me} && echo SEE-HOST-PID; \
             kill -0 {me} 2>/dev/null && echo CAN-SIGNAL-HOST-PID; \
             tr '\\0' ' ' < /proc/1/cmdline; echo"
        ),
    );
    assert_ran(&o, "MARK");
    let out = stdout(&o);
    let mut lines = out.lines().skip_while(|l| *l != "MARK").skip(1);
    let pids: Vec<u32> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(pids.contains(&1), "{}", describe(&o));
    assert!(pids.len() <= 6, "too many pids visible: {pids:?}");
    assert!(pids.iter().all(|&p| p < 100), "host-like pids: {pids:?}");
    // The host sees many more processes than the sandbox.
    let host_pids = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .count();
    assert!(host_pids > pids.len());
    assert!(!out.contains("SEE-HOST-PID"), "{}", describe(&o));
    assert!(!out.contains("CAN-SIGNAL-HOST-PID"), "{}", describe(&o));
    let cmdline = lines.next().unwrap_or("");
    assert!(
        cmdline.contains("airlock-agent") || cmdline.contains("/.airlock/agent"),
        "PID 1 is not the agent: {cmdline:?}"
    );
}

#[test]
fn cannot_signal_pid_1() {
    native_only!("gVisor lets sandbox root SIGKILL the container's init: the sandbox can end itself (only itself)");
    // PID 1 of a pid namespace ignores signals it has no handler for;
    // SIGKILL from inside must not kill the agent (the command would never
    // be reported then).
    let o = sh(
        &[],
        "kill -KILL 1; kill -TERM 1; sleep 0.2; echo MARK-alive",
    );
    assert_ran(&o, "MARK-alive");
}

// ------------------------------------------------------------- 3. uids

#[test]
fn root_is_mapped_to_an_unprivileged_host_range() {
    native_only!("native's host uid ranges: under gvisor, sandbox uids are the Sentry's, and the Sentry runs unprivileged in a user namespace of its own");
    let o = sh(
        &[],
        "echo MARK; cat /proc/self/uid_map; cat /proc/self/gid_map; id -u; \
         touch /tmp/f && stat -c 'owner %u' /tmp/f",
    );
    assert_ran(&o, "MARK");
    let out = stdout(&o);
    let after = out.split_once("MARK\n").unwrap().1;
    let (inside, host, count) = parse_uid_map(after).expect("uid_map line");
    assert_eq!(inside, 0, "{out}");
    assert_ne!(host, 0, "sandbox root is host root!\n{out}");
    assert!(host >= SANDBOX_UID_BASE, "{out}");
    assert_eq!((host - SANDBOX_UID_BASE) % 65536, 0, "{out}");
    assert_eq!(count, 65536, "{out}");
    // Exactly one mapping line each; gid map the same range.
    let maps: Vec<_> = after.lines().take(2).collect();
    assert_eq!(parse_uid_map(maps[1]), Some((0, host, 65536)), "{out}");
    assert!(out.contains("\n0\n"), "uid inside is not 0: {out}");
    assert!(out.contains("owner 0"), "{out}");
}

#[test]
fn sandboxes_get_distinct_uid_ranges() {
    native_only!("native's host uid ranges: under gvisor, sandbox uids are the Sentry's, and the Sentry runs unprivileged in a user namespace of its own");
    // Two live at the same time must not share a host range.
    let script = "cat /proc/self/uid_map; echo ready; read x; true";
    let mut children = Vec::new();
    let mut maps = Vec::new();
    for _ in 0..2 {
        let mut c = Command::new(AIRLOCK)
            .args(["run", "--", "sh", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut r = BufReader::new(c.stdout.take().unwrap());
        let mut map = String::new();
        r.read_line(&mut map).unwrap();
        let mut ready = String::new();
        r.read_line(&mut ready).unwrap();
        assert_eq!(ready.trim(), "ready");
        maps.push(parse_uid_map(&map).expect("uid map"));
        children.push(c);
    }
    for mut c in children {
        drop(c.stdin.take());
        assert!(c.wait().unwrap().success());
    }
    assert_ne!(maps[0].1, maps[1].1, "two sandboxes share host uids");
}

// -------------------------------------------------------- 4. syscalls

const SYSCALL_PROBE: &str = r#"
import ctypes, os, errno, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
def call(name, nr, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(L(nr), *[L(a) for a in args])
    e = ctypes.get_errno()
    if rc == 0 and name.startswith("clone"):
        os._exit(0)   # a child: the attack worked; the parent reports it
    print("R", name, rc, errno.errorcode.get(e, e) if rc < 0 else "-", flush=True)
print("MARK", flush=True)
buf = ctypes.create_string_buffer(4096)
addr = ctypes.addressof(buf)
call("mount", 165, 0, addr, addr, 0, 0)
call("umount2", 166, addr, 0)
call("unshare_user", 272, 0x10000000)
call("unshare_ns", 272, 0x00020000)
call("unshare_net", 272, 0x40000000)
call("setns", 308, 0, 0)
call("ptrace_attach_1", 101, 16, 1, 0, 0)
call("ptrace_traceme", 101, 0, 0, 0, 0)
call("bpf", 321, 0, addr, 128)
call("io_uring_setup", 425, 1, addr)
call("keyctl", 250, 0, -3, 0)
call("add_key", 248, addr, addr, 0, 0, -3)
call("perf_event_open", 298, addr, 0, -1, -1, 0)
call("userfaultfd", 323, 0)
call("open_by_handle_at", 304, -100, addr, 0)
call("init_module", 175, addr, 0, addr)
call("finit_module", 313, 0, addr, 0)
call("kexec_load", 246, 0, 0, 0, 0)
call("reboot", 169, 0xfee1dead, 672274793, 0x1234567, 0)
call("syslog", 103, 3, addr, 100)
call("fsopen", 430, addr, 0)
call("open_tree", 428, -100, addr, 0)
call("pidfd_getfd", 438, 0, 0, 0)
call("process_vm_readv", 310, 1, addr, 1, addr, 1, 0)
call("nr_471", 471)
call("nr_1000", 1000)
call("x32_getpid", 0x40000000 | 39)
call("clone_newuser", 56, 0x10000000 | 17, 0, 0, 0, 0)
call("clone_newns", 56, 0x00020000 | 17, 0, 0, 0, 0)
call("clone3", 435, addr, 88)
call("getpid", 39)
# int arguments with high bits set: the kernel reads only the low 32 bits,
# so these are the refused calls in disguise (fd 0 is not a terminal: the
# kernel itself would answer ENOTTY, the filter EPERM).
call("vsock_high_bit", 41, 40 | 1 << 32, 1, 0)
call("vsock_high_half", 41, 40 | 0xffffffff << 32, 1, 0)
call("tiocsti_high_bit", 16, 0, 0x5412 | 1 << 32, addr)
call("tioclinux_high_bit", 16, 0, 0x541C | 1 << 32, addr)
try:
    socket.socket(40, socket.SOCK_STREAM)
    print("R vsock 0 -", flush=True)
except OSError as e:
    print("R vsock -1", errno.errorcode.get(e.errno, e.errno), flush=True)
try:
    import fcntl, termios
    fd = os.open("/dev/tty", os.O_RDWR)
    fcntl.ioctl(fd, termios.TIOCSTI, b"x")
    print("R tiocsti 0 -", flush=True)
except OSError as e:
    print("R tiocsti -1", errno.errorcode.get(e.errno, e.errno), flush=True)
print("END", flush=True)
"#;

fn syscall_results() -> &'static HashMap<String, (i64, String)> {
    use std::sync::OnceLock;
    static R: OnceLock<HashMap<String, (i64, String)>> = OnceLock::new();
    R.get_or_init(|| {
        let o = py(&[], SYSCALL_PROBE);
        let out = stdout(&o);
        assert!(
            out.contains("MARK") && out.contains("END"),
            "{}",
            describe(&o)
        );
        out.lines()
            .filter_map(|l| {
                let f: Vec<_> = l.split_whitespace().collect();
                (f.len() == 4 && f[0] == "R")
                    .then(|| (f[1].to_string(), (f[2].parse().unwrap(), f[3].to_string())))
            })
            .collect()
    })
}

#[track_caller]
fn assert_refused(name: &str, errno: &str) {
    let r = syscall_results();
    let (rc, e) = r
        .get(name)
        .unwrap_or_else(|| panic!("no result for {name}: {r:?}"));
    assert!(
        *rc == -1 && e == errno,
        "{name} was not refused with {errno}: rc={rc} errno={e}"
    );
}

#[test]
fn syscall_probe_works() {
    native_only!("native's seccomp filter: under gvisor, sandbox syscalls are served by gVisor's Sentry and never reach the host kernel (gvisor.rs)");
    // The probe itself can make syscalls (so refusals below are real).
    let (rc, e) = &syscall_results()["getpid"];
    assert!(*rc > 0 && e == "-", "getpid: {rc} {e}");
}

#[test]
fn syscall_mount_refused() {
    native_only!("native's seccomp filter: under gvisor, sandbox syscalls are served by gVisor's Sentry and never reach the host kernel (gvisor.rs)");
    assert_refused("mount", "EPERM");
    assert_refused("umount2", "EPERM");
    assert_refused("fsopen", "EPERM");
    assert_refused("open_tree", "EPERM");
}

#[test]
fn mount_binary_fails() {
    let o = sh(
        &[],
        "echo MARK; mount -t tmpfs x /mnt && echo MOUNTED; \
         mount -t proc proc /mnt && echo MOUNTED; \
         mount --bind / /mnt && echo MOUNTED; grep -c ' /mnt ' /proc/mounts",
    );
    let out = stdout(&o);
    assert!(out.contains("MARK"), "{}", describe(&o));
    assert!(!out.contains("MOUNTED"), "{}", describe(&o));
    assert!(out.trim_end().ends_with('0'), "{}", describe(&o));
}

#[test]
fn syscall_unshare_refused() {
    native_only!("native's seccomp filter: under gvisor, sandbox syscalls are served by gVisor's Sentry and never reach the host kernel (gvisor.rs)");
    assert_refused("unshare_user", "EPERM");
    assert_refused("unshare_ns", "EPERM");
    assert_refused("unshare_net", "EPERM");
    assert_refused("setns", "EPERM");
}

#[test]
fn unshare_binary_fails() {
    native_only!("native's seccomp filter: under gvisor, sandbox syscalls are served by gVisor's Sentry and never reach the host kernel (gvisor.rs)");
    let o = sh(
        &[],
        "echo MARK; unshare -U true && echo UNSHARED; unshare -Ur true && echo UNSHARED; \
         unshare -m true && echo UNSHARED; unshare -n true && echo UNSHARED",
    );
    assert!(stdout(&o).contains("MARK"), "{}", describe(&o));
    assert!(!stdout(&o).contains("UNSHARED"), "{}", describe(&o));
}

#[test]
fn clone_with_namespace_flags_refused() {
    native_only!("native's seccomp filter: under gvisor, sandbox syscalls are served by gVisor's Sentry and never reach the host kernel (gvisor.rs)");
    assert_refused("clone_newuser", "EPERM");
    assert_refused("clone_newns", "EPERM");
    assert_refused("clone3", "ENOSYS");
}

#[test]
fn syscall_ptrace_refused() {
    native_only!("native's seccomp filter: under gvisor, sandbox syscalls are served by gVisor's Sentry and never reach the host kernel (gvisor.rs)");
    assert_refused("ptrace_attach_1", "EPERM");
    assert_refused("ptrace_traceme", "EPERM");
    assert_refused("process_vm_readv", "EPERM");
    assert_refused("pidfd_getfd", "EPERM");
}

#[test]
fn syscall_bpf_refused() {
    native_only!("native's seccomp filter: under gvisor, sandbox syscalls are served by gVisor's Sentry and never reach the host kernel (gvisor.rs)");
    assert_refused("bpf", "EPERM");
}

#[test]
fn syscall_io_uring_refused() {
    native_only!("native's seccomp filter: under gvisor, sandbox syscalls are served by gVisor's Sentry and never reach the host kernel (gvisor.rs)");
    assert_refused("io_uring_setup", "EPERM");
}

#[test]
fn syscall_keyctl_refused() {
    native_only!("native's seccomp filter: under gvisor, sandbox syscalls are served by gVisor's Sentry and never reach the host kernel (gvisor.rs)");
    assert_refused("keyctl", "EPERM");
    assert_refused("add_key", "EPERM");
}

#[test]
fn syscall_perf_event_open_refused() {
    native_only!("native's seccomp filter: under gvisor, sandbox syscalls are served by gVisor's Sentry and never reach the host kernel (gvisor.rs)");
    assert_refused("perf_event_open", "EPERM");
}

#[test]
fn syscall_userfaultfd_refused() {
    native_only!("native's seccomp filter: under gvisor, sandbox syscalls are served by gVisor's Sentry and never reach the host kernel (gvisor.rs)");
    assert_refused("userfaultfd", "EPERM");
}

#[test]
fn syscall_handles_modules_kexec_reboot_syslog_refused() {
    native_only!("native's seccomp filter: under gvisor, sandbox syscalls are served by gVisor's Sentry and never reach the host kernel (gvisor.rs)");
    assert_refused("open_by_handle_at", "EPERM");
    assert_refused("init_module", "EPERM");
    assert_refused("finit_module", "EPERM");
    assert_refused("kexec_load", "EPERM");
    assert_refused("reboot", "EPERM");
    assert_refused("syslog", "EPERM");
}

#[test]
fn unknown_syscalls_are_enosys() {
    native_only!("native's seccomp filter: under gvisor, sandbox syscalls are served by gVisor's Sentry and never reach the host kernel (gvisor.rs)");
    assert_refused("nr_471", "ENOSYS");
    assert_refused("nr_1000", "ENOSYS");
    assert_refused("x32_getpid", "ENOSYS");
}

#[test]
fn vsock_socket_refused() {
    native_only!("native's seccomp filter: under gvisor, sandbox syscalls are served by gVisor's Sentry and never reach the host kernel (gvisor.rs)");
    assert_refused("vsock", "EPERM");
}

/// The kernel reads `socket`'s family and `ioctl`'s request as `int`s: a
/// filter comparing all 64 bits would let `40 | 1 << 32` through as an
/// AF_VSOCK socket.
#[test]
fn int_arguments_with_high_bits_are_still_refused() {
    native_only!("native's seccomp filter: under gvisor, sandbox syscalls are served by gVisor's Sentry and never reach the host kernel (gvisor.rs)");
    assert_refused("vsock_high_bit", "EPERM");
    assert_refused("vsock_high_half", "EPERM");
    assert_refused("tiocsti_high_bit", "EPERM");
    assert_refused("tioclinux_high_bit", "EPERM");
}

#[test]
fn tiocsti_refused() {
    native_only!("native's seccomp filter: under gvisor, sandbox syscalls are served by gVisor's Sentry and never reach the host kernel (gvisor.rs)");
    // Without a controlling terminal /dev/tty fails to open (ENXIO); with
    // one, TIOCSTI must be refused. Either way no injection.
    let (rc, e) = &syscall_results()["tiocsti"];
    assert!(
        *rc == -1 && (e == "EPERM" || e == "ENXIO"),
        "tiocsti: {rc} {e}"
    );
}

// ---------------------------------------------------------- 5. /proc/sys

#[test]
fn proc_sys_and_sysrq_not_writable() {
    let panic_before = fs::read_to_string("/proc/sys/kernel/panic").unwrap();
    let hostname_before = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let o = sh(
        &[],
        "echo MARK; \
         (echo 1 > /proc/sys/vm/drop_caches) 2>/dev/null && echo WROTE drop_caches; \
         (echo 77 > /proc/sys/kernel/panic) 2>/dev/null && echo WROTE panic; \
         (echo 0 > /proc/sys/kernel/randomize_va_space) 2>/dev/null && echo WROTE aslr; \
         (echo h > /proc/sysrq-trigger) 2>/dev/null && echo WROTE sysrq; \
         (echo /tmp/x > /proc/sys/kernel/core_pattern) 2>/dev/null && echo WROTE core_pattern; \
         (echo evil > /proc/sys/kernel/hostname) 2>/dev/null; \
         hostname evil 2>/dev/null; true",
    );
    assert_ran(&o, "MARK");
    assert!(!stdout(&o).contains("WROTE"), "{}", describe(&o));
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/panic").unwrap(),
        panic_before
    );
    assert_ne!(
        fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        "/tmp/x\n"
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        hostname_before,
        "host hostname changed"
    );
}

#[test]
fn kernel_memory_and_log_unreadable() {
    native_only!("under gvisor dmesg is gVisor's own log, not the host's (gvisor.rs)");
    let o = sh(
        &[],
        "echo MARK; \
         head -c 16 /proc/kcore >/dev/null 2>&1 && echo READ kcore; \
         head -c 16 /dev/mem >/dev/null 2>&1 && echo READ mem; \
         timeout 1 head -c 1 /proc/kmsg >/dev/null 2>&1 && echo READ kmsg; \
         dmesg >/dev/null 2>&1 && echo READ dmesg; \
         ls /dev/sd* /dev/nvme* /dev/vd* 2>/dev/null | sed 's/^/DEV /'; true",
    );
    assert_ran(&o, "MARK");
    assert!(!stdout(&o).contains("READ "), "{}", describe(&o));
    assert!(
        !stdout(&o).contains("DEV "),
        "host block devices visible\n{}",
        describe(&o)
    );
}

// ----------------------------------------------------- 6. capabilities

fn cap_line(status: &str, key: &str) -> u64 {
    let v = status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {status}"));
    u64::from_str_radix(v.trim(), 16).unwrap()
}

#[test]
fn capabilities_and_no_new_privs() {
    native_only!("gVisor's /proc/PID/status has no CapAmb line and reports seccomp as the Sentry sees it; capabilities there are the Sentry's");
    let o = sh(&[], "echo MARK; cat /proc/self/status");
    assert_ran(&o, "MARK");
    let st = stdout(&o);
    for key in ["CapBnd:", "CapEff:", "CapPrm:", "CapInh:", "CapAmb:"] {
        let caps = cap_line(&st, key);
        for (bit, name) in [
            (21, "CAP_SYS_ADMIN"),
            (12, "CAP_NET_ADMIN"),
            (19, "CAP_SYS_PTRACE"),
            (16, "CAP_SYS_MODULE"),
            (17, "CAP_SYS_RAWIO"),
            (22, "CAP_SYS_BOOT"),
            (25, "CAP_SYS_TIME"),
            (34, "CAP_SYSLOG"),
            (39, "CAP_BPF"),
            (38, "CAP_PERFMON"),
            (24, "CAP_SYS_RESOURCE"),
            (27, "CAP_MKNOD"),
            (13, "CAP_NET_RAW"),
        ] {
            assert_eq!(caps & (1 << bit), 0, "{key} has {name}: {caps:#x}");
        }
    }
    let field = |k: &str| {
        st.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
    };
    assert_eq!(field("NoNewPrivs:").as_deref(), Some("1"), "{st}");
    assert_eq!(field("Seccomp:").as_deref(), Some("2"), "{st}");
}

#[test]
fn setuid_binaries_gain_nothing() {
    // no_new_privs: a setuid-root binary run by an unprivileged user
    // inside must not become root.
    let o = sh(
        &[],
        "cp /bin/id /tmp/suid-id && chmod 4755 /tmp/suid-id; \
         echo MARK; su -s /bin/sh nobody -c '/tmp/suid-id -u' 2>&1 || \
         setpriv --reuid=65534 --regid=65534 --clear-groups /tmp/suid-id -u",
    );
    let out = stdout(&o);
    assert!(out.contains("MARK"), "{}", describe(&o));
    let uid = out.split_once("MARK\n").unwrap().1.trim();
    assert_eq!(
        uid.lines().last().unwrap_or(""),
        "65534",
        "{}",
        describe(&o)
    );
}

// ------------------------------------------------------------ 7. network

#[test]
fn only_loopback_interface() {
    let o = sh(
        &[],
        "echo MARK; cat /proc/net/dev; ip -o link 2>/dev/null; true",
    );
    assert_ran(&o, "MARK");
    let out = stdout(&o);
    let ifaces: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once(':').map(|(a, _)| a.trim()))
        .filter(|n| !n.is_empty() && !n.contains(' ') && !n.contains('|'))
        .filter(|n| {
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        })
        .filter(|n| n.parse::<u32>().is_err())
        .collect();
    assert!(ifaces.contains(&"lo"), "{}", describe(&o));
    assert!(
        ifaces.iter().all(|n| *n == "lo"),
        "interfaces besides lo: {ifaces:?}\n{}",
        describe(&o)
    );
}

#[test]
fn cannot_reach_host_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let tag = random_hex();
    // An abstract unix socket on the host: abstract names are per net ns.
    let abs_name = format!("airlock-test-{tag}");
    let abs = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(abs_name.as_bytes()).unwrap();
        let l = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        l.set_nonblocking(true).unwrap();
        l
    };
    let script = format!(
        r#"
import socket
print("MARK", flush=True)
for host in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.0.2.2", "172.17.0.1", "169.254.169.254"):
    for port in ({port}, 22, 80):
        try:
            s = socket.create_connection((host, port), timeout=1)
            print("CONNECTED", host, port, flush=True)
            s.close()
        except OSError as e:
            pass
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0{abs_name}")
    print("CONNECTED abstract", flush=True)
except OSError:
    pass
print("END", flush=True)
"#
    );
    let o = py(&["--timeout", "60s"], &script);
    let out = stdout(&o);
    assert!(
        out.contains("MARK") && out.contains("END"),
        "{}",
        describe(&o)
    );
    assert!(!out.contains("CONNECTED"), "{}", describe(&o));
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the host listener accepted a connection: {other:?}"),
    }
    match abs.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the host abstract socket accepted a connection: {other:?}"),
    }
}

#[test]
fn dns_fails() {
    let o = py(
        &["--timeout", "60s"],
        r#"
import socket
print("MARK", flush=True)
for name in ("example.com", "google.com", "metadata.google.internal", "host.docker.internal"):
    try:
        print("RESOLVED", name, socket.getaddrinfo(name, 80), flush=True)
    except OSError:
        pass
print("END", flush=True)
"#,
    );
    let out = stdout(&o);
    assert!(
        out.contains("MARK") && out.contains("END"),
        "{}",
        describe(&o)
    );
    assert!(!out.contains("RESOLVED"), "{}", describe(&o));
}

// ------------------------------------------------------------ 8. pids

#[test]
fn pids_limit_holds() {
    native_only!("under gvisor --pids bounds the host tasks of the Sentry and gofer (2 x pids + 512, a backstop): fork is not refused at the sandbox's count; fork_bomb_is_contained holds on both");
    let o = py(
        &["--pids", "64", "--timeout", "30s"],
        r#"
import os, time
print("MARK", flush=True)
n = 0
kids = []
try:
    while n < 500:
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        kids.append(pid)
        n += 1
except OSError as e:
    print("FORK-FAILED", e.errno, flush=True)
print("FORKED", n, flush=True)
for k in kids:
    os.kill(k, 9)
"#,
    );
    assert_ran(&o, "MARK");
    let out = stdout(&o);
    assert!(out.contains("FORK-FAILED"), "{}", describe(&o));
    let n: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("FORKED "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(n > 0 && n < 64, "forked {n} with --pids 64");
}

#[test]
fn fork_bomb_is_contained() {
    let started = Instant::now();
    let o = py(
        &["--pids", "64", "--timeout", "20s"],
        r#"
import os, sys
print("MARK", open("/proc/self/uid_map").read().strip(), flush=True)
while True:
    os.fork()
"#,
    );
    let elapsed = started.elapsed();
    let out = stdout(&o);
    assert!(out.contains("MARK"), "{}", describe(&o));
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(elapsed < Duration::from_secs(40), "took {elapsed:?}");
    // The host still works.
    let echo = Command::new("sh")
        .args(["-c", "echo host-alive"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&echo.stdout).trim(), "host-alive");
    if gvisor() {
        // Its processes were the Sentry's tasks; gvisor.rs checks that no
        // Sentry outlives its sandbox.
        return;
    }
    // No process of this sandbox's uid range is left on the host.
    let line = out.lines().find(|l| l.starts_with("MARK")).unwrap();
    let (_, base, count) = parse_uid_map(line.trim_start_matches("MARK")).unwrap();
    let left = pids_with_uid_in(base, base + count);
    assert!(left.is_empty(), "sandbox processes left: {left:?}");
}

// ------------------------------------------------------------- 9. memory

#[test]
fn memory_bomb_is_oom_killed() {
    let o = py(
        &["--memory", "128M", "--timeout", "60s"],
        r#"
print("MARK", flush=True)
chunks = []
for i in range(64):
    chunks.append(b"\x01" * (16 << 20))
print("ALLOCATED 1GiB", flush=True)
"#,
    );
    assert!(stdout(&o).contains("MARK"), "{}", describe(&o));
    assert!(!stdout(&o).contains("ALLOCATED"), "{}", describe(&o));
    if gvisor() {
        // gVisor accounts the sandbox's memory itself and often fails the
        // allocation (MemoryError) rather than the process being killed.
        assert!(!o.status.success(), "{}", describe(&o));
        return;
    }
    assert_eq!(o.status.code(), Some(137), "{}", describe(&o));
    assert!(stderr(&o).contains("out of memory"), "{}", describe(&o));
}

#[test]
fn memory_below_limit_is_fine() {
    // The limit does not fire early: 64 MiB under a 256M limit works.
    let o = py(
        &["--memory", "256M"],
        "b = b'\\x01' * (64 << 20)\nprint('MARK', len(b))",
    );
    assert_ran(&o, "MARK 67108864");
}

// --------------------------------------------------------------- 10. disk

#[test]
fn disk_fill_is_bounded() {
    let o = sh(
        &["--disk", "64M"],
        "echo MARK; dd if=/dev/zero of=/home/app/fill bs=1M count=200 2>&1; \
         echo SIZE $(stat -c %s /home/app/fill)",
    );
    let out = stdout(&o);
    assert!(out.contains("MARK"), "{}", describe(&o));
    assert!(out.contains("No space left"), "{}", describe(&o));
    let size: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("SIZE "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}", describe(&o)));
    assert!(size > 0 && size <= 64 << 20, "wrote {size} bytes");
}

#[test]
fn disk_limit_covers_tmp_and_root() {
    // Every writable place shares (or is bounded by) the limit.
    let o = sh(
        &["--disk", "64M"],
        "echo MARK; for d in /tmp /root /var/tmp /; do \
           dd if=/dev/zero of=$d/fill bs=1M count=200 2>/dev/null; \
           echo SIZE $d $(stat -c %s $d/fill 2>/dev/null || echo 0); rm -f $d/fill; done",
    );
    assert_ran(&o, "MARK");
    let out = stdout(&o);
    let sizes: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("SIZE "))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(sizes.len(), 4, "{out}");
    for s in sizes {
        assert!(s <= 64 << 20, "wrote {s} bytes under --disk 64M\n{out}");
    }
}

// ------------------------------------------------------------ 11. timeout

#[test]
fn timeout_kills_and_exits_124() {
    let started = Instant::now();
    let o = sh(&["--timeout", "2s"], "echo MARK; sleep 60");
    let elapsed = started.elapsed();
    assert!(stdout(&o).contains("MARK"), "{}", describe(&o));
    assert_eq!(o.status.code(), Some(124), "{}", describe(&o));
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert!(elapsed >= Duration::from_secs(2), "took {elapsed:?}");
    assert!(stderr(&o).contains("timed out"), "{}", describe(&o));
}

// ---------------------------------------------------- 12. exit and streams

#[test]
fn exit_code_is_passed_through() {
    let o = sh(&[], "echo MARK; exit 3");
    assert!(stdout(&o).contains("MARK"));
    assert_eq!(o.status.code(), Some(3), "{}", describe(&o));
    let o = sh(&[], "exit 0");
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
}

#[test]
fn killed_by_signal_is_128_plus_signal() {
    let o = sh(&[], "echo MARK; kill -TERM $$; sleep 5");
    assert!(stdout(&o).contains("MARK"));
    assert_eq!(o.status.code(), Some(143), "{}", describe(&o));
    let o = sh(&[], "kill -KILL $$");
    assert_eq!(o.status.code(), Some(137), "{}", describe(&o));
    // Not an OOM: no such message.
    assert!(!stderr(&o).contains("out of memory"), "{}", describe(&o));
}

#[test]
fn stdout_and_stderr_are_separate() {
    let o = sh(&[], "echo to-out; echo to-err >&2; echo more-out");
    assert!(o.status.success());
    assert_eq!(stdout(&o), "to-out\nmore-out\n");
    assert!(stderr(&o).contains("to-err"), "{}", describe(&o));
    assert!(!stderr(&o).contains("to-out"), "{}", describe(&o));
}

#[test]
fn stdin_is_piped_through() {
    let o = run(&["run", "--", "cat"], Some(b"hi\n"));
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(stdout(&o), "hi\n");
    // Larger than one pipe buffer, binary, ends at EOF.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let o = run(&["run", "--", "sh", "-c", "cat | sha256sum"], Some(&data));
    assert!(o.status.success(), "{}", describe(&o));
    let mut host = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        host.stdin.take().unwrap().write_all(&data).unwrap();
    }
    let mut want = String::new();
    host.stdout
        .take()
        .unwrap()
        .read_to_string(&mut want)
        .unwrap();
    host.wait().unwrap();
    assert_eq!(
        stdout(&o).split_whitespace().next(),
        want.split_whitespace().next()
    );
}

#[test]
fn stdin_null_gives_eof() {
    let o = run(
        &[
            "run",
            "--timeout",
            "20s",
            "--",
            "sh",
            "-c",
            "cat; echo MARK-eof",
        ],
        None,
    );
    assert_ran(&o, "MARK-eof");
}

#[test]
fn env_and_workdir() {
    let o = run(
        &[
            "run",
            "--env",
            "A=B",
            "--env",
            "WITH_EQ=x=y",
            "--workdir",
            "/tmp",
            "--",
            "sh",
            "-c",
            "echo A=$A; echo WITH_EQ=$WITH_EQ; pwd",
        ],
        None,
    );
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(stdout(&o), "A=B\nWITH_EQ=x=y\n/tmp\n");
}

#[test]
fn host_environment_does_not_leak() {
    let secret = format!("host-secret-{}", random_hex());
    let o = Command::new(AIRLOCK)
        .args([
            "run",
            "--",
            "sh",
            "-c",
            "echo MARK; env; cat /proc/1/environ | tr '\\0' '\\n'",
        ])
        .env("AIRLOCK_TEST_HOST_SECRET", &secret)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ran(&o, "MARK");
    assert!(!stdout(&o).contains(&secret), "{}", describe(&o));
}

#[test]
fn missing_command_fails_clearly() {
    let o = run(&["run", "--", "/no/such/command-xyz"], None);
    assert!(!o.status.success(), "{}", describe(&o));
    let err = stderr(&o);
    assert!(err.contains("command-xyz"), "{}", describe(&o));
    assert!(
        err.to_lowercase().contains("no such file") || err.to_lowercase().contains("not found"),
        "{}",
        describe(&o)
    );
    let o = run(&["run", "--", "no-such-command-in-path-xyz"], None);
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(
        stderr(&o).contains("no-such-command-in-path-xyz"),
        "{}",
        describe(&o)
    );
}

#[test]
fn bad_options_are_rejected() {
    for args in [
        &["run", "--memory", "lots", "--", "true"][..],
        &["run", "--cpus", "0", "--", "true"],
        &["run", "--env", "NOEQUALS", "--", "true"],
        &["run", "--timeout", "soon", "--", "true"],
        &["run"],
    ] {
        let o = run(args, None);
        assert!(!o.status.success(), "{args:?} accepted\n{}", describe(&o));
        assert!(!stderr(&o).trim().is_empty(), "{args:?}: no message");
    }
}

// ------------------------------------------------------------ 13. cleanup

#[test]
fn sandbox_is_removed_after_exit() {
    native_only!("native's process tree: under gvisor, sandbox processes are tasks of the Sentry, not host processes (gvisor.rs checks the Sentry ends)");
    // Find this run's sandbox from the host while it is alive, then check
    // that all of it is gone once airlock exits.
    let Running {
        mut child,
        stdout: mut r,
        agent,
        id,
        uid,
    } = run_until_ready("echo ready; read x; echo MARK-done", Stdio::piped());
    assert!(state_ids().contains(&id), "no state dir for {id}");
    assert!(cgroup_exists(&id), "no cgroup for {id}");

    drop(child.stdin.take());
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(rest.trim(), "MARK-done");
    assert!(!state_ids().contains(&id), "state dir of {id} left behind");
    assert!(!cgroup_exists(&id), "cgroup of {id} left behind");
    let left = pids_with_uid_in(uid, uid + 65536);
    assert!(left.is_empty(), "processes of {id} left: {left:?}");
    assert!(!std::path::Path::new(&format!("/proc/{agent}")).exists());
}

#[test]
fn background_processes_die_with_the_sandbox() {
    native_only!("native's process tree: under gvisor, sandbox processes are tasks of the Sentry, not host processes (gvisor.rs checks the Sentry ends)");
    // A daemonized process (double fork, setsid, ignoring SIGHUP/SIGTERM)
    // must not survive the sandbox.
    let o = sh(
        &[],
        "cat /proc/self/uid_map; \
         setsid sh -c 'trap \"\" HUP TERM; sleep 1000' </dev/null >/dev/null 2>&1 & \
         (nohup sleep 1000 </dev/null >/dev/null 2>&1 &); sleep 0.2; echo MARK",
    );
    assert_ran(&o, "MARK");
    let (_, base, count) = parse_uid_map(&stdout(&o)).unwrap();
    let left = pids_with_uid_in(base, base + count);
    assert!(left.is_empty(), "background processes survived: {left:?}");
}

// ------------------------------------------- agent channel and inherited fds

/// The command must inherit no fd besides stdin/stdout/stderr: above all
/// not the agent's control socket to the host.
#[test]
fn command_inherits_no_extra_fds() {
    let o = py(
        &[],
        r#"
import os, stat
print("MARK", flush=True)
for fd in range(3, 4096):
    try:
        st = os.fstat(fd)
    except OSError:
        continue
    kind = "socket" if stat.S_ISSOCK(st.st_mode) else oct(st.st_mode)
    print("INHERITED", fd, kind, flush=True)
"#,
    );
    assert_ran(&o, "MARK");
    assert!(
        !stdout(&o).contains("INHERITED"),
        "the command inherited fds (fd 3 is the agent's socket to the host):\n{}",
        describe(&o)
    );
}

/// Attack on the host side of the agent protocol: forge `Reply` frames
/// (`len:u32be kind:u8=3 id:u32be {"ok":{"code":42}}`) on every inherited
/// socket. The host must still report the command's real exit code (7),
/// after its real output.
#[test]
fn cannot_forge_agent_protocol_frames() {
    let o = py(
        &["--timeout", "30s"],
        r#"
import os, stat, struct, json, time, sys
def frame(kind, id, payload):
    return struct.pack(">IBI", len(payload) + 5, kind, id) + payload
print("MARK", flush=True)
for fd in range(3, 256):
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            continue
        for i in range(0, 8):
            os.write(fd, frame(3, i, json.dumps({"ok": {"code": 42}}).encode()))
        os.write(fd, frame(4, 1, b"FORGED-OUTPUT\n"))
        print("WROTE", fd, flush=True)
    except OSError:
        pass
time.sleep(1)
print("MARK-end", flush=True)
sys.exit(7)
"#,
    );
    assert!(stdout(&o).contains("MARK"), "{}", describe(&o));
    assert!(
        !stdout(&o).contains("WROTE"),
        "the command could write to a socket it inherited:\n{}",
        describe(&o)
    );
    assert!(!stdout(&o).contains("FORGED-OUTPUT"), "{}", describe(&o));
    assert_eq!(o.status.code(), Some(7), "{}", describe(&o));
    assert!(stdout(&o).contains("MARK-end"), "{}", describe(&o));
}

#[test]
fn tiocsti_refused_on_pty() {
    native_only!(
        "gVisor's own TTY refuses TIOCSTI with another errno (the injection fails on both)"
    );
    let o = run(
        &[
            "run",
            "-t",
            "--",
            "python3",
            "-c",
            "import fcntl, termios, sys\nprint('MARK', flush=True)\n\
             try:\n    fcntl.ioctl(0, termios.TIOCSTI, b'x'); print('INJECTED')\n\
             except OSError as e:\n    print('REFUSED', e.errno)",
        ],
        None,
    );
    let out = stdout(&o);
    assert!(out.contains("MARK"), "{}", describe(&o));
    assert!(!out.contains("INJECTED"), "{}", describe(&o));
    assert!(out.contains("REFUSED 1"), "{}", describe(&o));
}

// ---------------------------------------------------------- concurrency

/// Sandboxes started side by side must not break one another. Every
/// `airlock run` first reaps leftovers of dead owners; that must never
/// touch a live sandbox being created or torn down next to it.
#[test]
fn concurrent_runs_all_succeed() {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for i in 0..15 {
                    let marker = format!("MARK-{t}-{i}");
                    let o = run(&["run", "--", "echo", &marker], None);
                    if !(o.status.success() && stdout(&o).contains(&marker)) {
                        failures.push(describe(&o));
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of 60 concurrent runs failed; first:\n{}",
        failures.len(),
        failures[0]
    );
}

/// `airlock run -t` gives the command a terminal: run under `script` so the
/// CLI itself has one, as a person at a terminal would.
#[test]
fn tty_mode_gives_a_terminal_and_passes_the_exit_code() {
    let cmd = format!(
        "{} run -i -t -- sh -c 'tty; stty size; echo marker-tty; exit 5'",
        common::AIRLOCK
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running script(1)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("marker-tty"), "{text}");
    assert!(text.contains("/dev/pts/"), "no terminal inside: {text}");
    assert_eq!(out.status.code(), Some(5), "{text}");
}
