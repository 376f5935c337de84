//! Code that runs in the sandbox's processes between `fork` and `exec`.
//!
//! The parent is multi-threaded (tokio), so everything here is raw syscalls
//! over data prepared beforehand in [`ChildPlan`]: no allocation, no locks.
//! Failures are reported over `report_fd` (a unix stream socket) as a
//! [`Report`] and the process exits.
//!
//! Sequence (the first process is host root in a fresh mount namespace):
//! 1. join the sandbox cgroup; build the root filesystem ([`crate::rootfs`]);
//! 2. with a network ([`crate::net`]): enter the sandbox's network namespace
//!    (made with its user namespace), create and configure the TUN device,
//!    send its fd (and a rtnetlink socket) to the caller, and close them;
//! 3. enter the sandbox's user namespace (prepared by [`crate::userns`]),
//!    become its root, and unshare mount, pid, net (unless entered in 2),
//!    ipc, uts and cgroup namespaces owned by it;
//! 4. `clone(CLONE_PARENT)` the sandbox's PID 1, so the caller (not this
//!    short-lived process) is its parent, and report its pid;
//! 5. PID 1 mounts /proc, pivots into the root, writes /etc/resolv.conf
//!    (with a network), brings up `lo`, sets rlimits, drops capabilities,
//!    applies no_new_privs, Landlock and seccomp, and execs the agent from
//!    an fd opened on the host.

use crate::net::{self, NetPlan};
use crate::rootfs::{RootfsPlan, Step};
use crate::seccomp::{self, Policy};
use crate::{caps, sys};
use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

/// fd numbers the agent is started with.
pub const AGENT_SOCKET_FD: RawFd = 3;
const AGENT_EXE_FD: RawFd = 4;
const REPORT_FD: RawFd = 5;

pub struct ChildPlan {
    pub rootfs: RootfsPlan,
    pub cgroup_procs: Vec<CString>,
    pub userns_fd: RawFd,
    pub agent_exe_fd: RawFd,
    pub agent_socket_fd: RawFd,
    pub report_fd: RawFd,
    pub landlock_fd: Option<RawFd>,
    /// The sandbox's network namespace, made by the user namespace holder;
    /// `None`: unshare a new one (only `lo`).
    pub netns_fd: Option<RawFd>,
    /// With `netns_fd`: the TUN interface to create in it.
    pub network: Option<NetPlan>,
    pub hostname: CString,
    pub nofile: u64,
    pub seccomp: Policy,
    /// NULL-terminated pointer arrays into `_argv`/`_envp`.
    pub argv_ptrs: Vec<*const libc::c_char>,
    pub envp_ptrs: Vec<*const libc::c_char>,
    pub _argv: Vec<CString>,
    pub _envp: Vec<CString>,
}

impl ChildPlan {
    pub fn set_args(&mut self, argv: Vec<CString>, envp: Vec<CString>) {
        self.argv_ptrs = argv
            .iter()
            .map(|s| s.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        self.envp_ptrs = envp
            .iter()
            .map(|s| s.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        self._argv = argv;
        self._envp = envp;
    }
}

/// Messages on the report socket: fixed 8 bytes, no allocation to encode.
#[derive(Debug, PartialEq, Eq)]
pub enum Report {
    /// The sandbox's PID 1, as a host pid.
    Pid(libc::pid_t),
    /// Set-up failed at step number `step` (index into [`STEPS`]) with errno.
    Failed { step: u16, errno: i32 },
    /// Comes with two fds (SCM_RIGHTS): the TUN device, then a rtnetlink
    /// socket of the sandbox's network namespace. `ifindex` is the
    /// device's interface index there.
    Tun { ifindex: i32 },
    /// Comes with one fd: a detached clone of the root filesystem's mount
    /// alone ([`crate::Sandbox::root_view`]).
    Root,
}

const TAG_PID: u16 = 1;
const TAG_FAILED: u16 = 2;
const TAG_TUN: u16 = 3;
const TAG_ROOT: u16 = 4;

impl Report {
    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        match *self {
            Report::Pid(pid) => {
                b[0..2].copy_from_slice(&TAG_PID.to_le_bytes());
                b[4..8].copy_from_slice(&pid.to_le_bytes());
            }
            Report::Failed { step, errno } => {
                b[0..2].copy_from_slice(&TAG_FAILED.to_le_bytes());
                b[2..4].copy_from_slice(&step.to_le_bytes());
                b[4..8].copy_from_slice(&errno.to_le_bytes());
            }
            Report::Tun { ifindex } => {
                b[0..2].copy_from_slice(&TAG_TUN.to_le_bytes());
                b[4..8].copy_from_slice(&ifindex.to_le_bytes());
            }
            Report::Root => b[0..2].copy_from_slice(&TAG_ROOT.to_le_bytes()),
        }
        b
    }

    pub fn decode(b: [u8; 8]) -> Option<Self> {
        let tag = u16::from_le_bytes([b[0], b[1]]);
        let value = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        match tag {
            TAG_PID => Some(Report::Pid(value)),
            TAG_FAILED => Some(Report::Failed {
                step: u16::from_le_bytes([b[2], b[3]]),
                errno: value,
            }),
            TAG_TUN => Some(Report::Tun { ifindex: value }),
            TAG_ROOT => Some(Report::Root),
            _ => None,
        }
    }
}

/// Every step name that can be reported, so the report carries an index.
pub static STEPS: &[Step] = &[
    "join cgroup",
    "unshare(CLONE_NEWNS) on the host side",
    "make mounts private",
    "mount writable layer (tmpfs)",
    "mkdir upper",
    "mkdir work",
    "chown upper",
    "open_tree(image)",
    "idmapped mount of the image",
    "mount overlay",
    "mount the root volume",
    "open root",
    "bind volume",
    "mkdir /dev",
    "mkdir /proc",
    "mkdir /tmp",
    "mount /dev",
    "create device mount point",
    "bind device",
    "mkdir /dev/pts",
    "mount /dev/pts",
    "mkdir /dev/shm",
    "mount /dev/shm",
    "symlink in /dev",
    "clone the root mount",
    "send the root mount",
    "setns(network namespace)",
    "open /dev/net/tun",
    "TUNSETIFF",
    "open network control socket",
    "get interface index",
    "set MTU",
    "set IPv4 address",
    "set netmask",
    "bring up network interface",
    "add default route",
    "open rtnetlink socket",
    "send TUN fd",
    "setns(user namespace)",
    "become sandbox root",
    "unshare sandbox namespaces",
    "clone sandbox PID 1",
    "mount /proc",
    "bind root onto itself",
    "chdir root",
    "pivot_root",
    "detach old root",
    "chdir /",
    "write /etc/resolv.conf",
    "set hostname",
    "bring up lo",
    "set rlimits",
    "arrange fds",
    "no_new_privs",
    "landlock",
    "drop capabilities",
    "seccomp",
    "exec agent",
];

pub fn step_name(index: u16) -> &'static str {
    STEPS.get(index as usize).copied().unwrap_or("unknown step")
}

fn step_index(step: Step) -> u16 {
    // Linear scan over ~50 static strs: no allocation.
    STEPS
        .iter()
        .position(|s| *s == step)
        .unwrap_or(u16::MAX as usize) as u16
}

fn fail(report_fd: RawFd, step: Step, err: io::Error) -> ! {
    let msg = Report::Failed {
        step: step_index(step),
        errno: err.raw_os_error().unwrap_or(libc::EIO),
    };
    let _ = sys::send_all(report_fd, &msg.encode());
    // SAFETY: leaving the forked child without running destructors.
    unsafe { libc::_exit(127) }
}

fn step<T>(plan: &ChildPlan, name: Step, r: io::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => fail(plan.report_fd, name, e),
    }
}

fn errno_result(ret: libc::c_long) -> io::Result<()> {
    sys::check(ret).map(drop)
}

/// Entry point of the forked first process. Never returns.
pub fn run(plan: &ChildPlan) -> ! {
    let mut keep = [
        plan.userns_fd,
        plan.agent_exe_fd,
        plan.agent_socket_fd,
        plan.report_fd,
        plan.landlock_fd.unwrap_or(-1),
        plan.netns_fd.unwrap_or(-1),
    ];
    sys::close_fds_except(&mut keep);
    for procs in &plan.cgroup_procs {
        step(plan, "join cgroup", sys::write_file(procs, b"0"));
    }
    // SAFETY: raw syscalls on prepared data throughout this function.
    step(
        plan,
        "unshare(CLONE_NEWNS) on the host side",
        errno_result(unsafe { libc::unshare(libc::CLONE_NEWNS) }.into()),
    );
    step(
        plan,
        "make mounts private",
        sys::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None),
    );
    if let Err((name, e)) = plan.rootfs.mount_host_side(plan.userns_fd) {
        fail(plan.report_fd, name, e);
    }
    send_root_clone(plan);
    if let Some(netns) = plan.netns_fd {
        enter_network(plan, netns);
    }
    // SAFETY: setns on an fd we hold; the process is single-threaded.
    step(
        plan,
        "setns(user namespace)",
        errno_result(unsafe { libc::setns(plan.userns_fd, libc::CLONE_NEWUSER) }.into()),
    );
    step(plan, "become sandbox root", become_root());
    let mut flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP;
    if plan.netns_fd.is_none() {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: see above.
    step(
        plan,
        "unshare sandbox namespaces",
        errno_result(unsafe { libc::unshare(flags) }.into()),
    );

    // SAFETY: a fork-like clone (no new stack): the child continues below
    // on a copy of this stack. CLONE_PARENT makes our parent its parent.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0,
            0,
            0,
            0,
        )
    };
    let pid = step(plan, "clone sandbox PID 1", sys::check(pid));
    if pid > 0 {
        let _ = sys::send_all(plan.report_fd, &Report::Pid(pid as libc::pid_t).encode());
        // SAFETY: leaving the intermediate process.
        unsafe { libc::_exit(0) }
    }
    pid1(plan)
}

/// Sends the owner a detached clone of the root filesystem's mount alone,
/// for snapshots of the running sandbox. It must be taken here: this
/// namespace is host root's, so nothing in it is locked, whereas in the
/// sandbox's own (less privileged) namespace the mounts copied from this
/// one are locked, and the kernel refuses a non-recursive clone of a
/// mount with locked mounts under it (EINVAL). The clone is one mount of
/// the same filesystem: it sees every later write, and none of the mounts
/// above it (/dev, /proc, volumes), whatever the sandbox mounts later.
fn send_root_clone(plan: &ChildPlan) {
    let tree = step(
        plan,
        "clone the root mount",
        sys::open_tree_single(plan.rootfs.root()),
    );
    step(
        plan,
        "send the root mount",
        sys::send_with_fds(plan.report_fd, &Report::Root.encode(), &[tree]),
    );
    sys::close(tree);
}

/// Still host root: moves into the sandbox's network namespace and, with a
/// network, creates its TUN device there and sends the device's fd to the
/// caller. Nothing network-related stays open in this process, so PID 1
/// (cloned later) and the agent never hold the TUN fd.
fn enter_network(plan: &ChildPlan, netns: RawFd) {
    // SAFETY: setns on an fd we hold; the process is single-threaded.
    step(
        plan,
        "setns(network namespace)",
        errno_result(unsafe { libc::setns(netns, libc::CLONE_NEWNET) }.into()),
    );
    sys::close(netns);
    let Some(net) = &plan.network else { return };
    net::disable_ipv6();
    let (tun, ifindex) = match net::create_tun(net) {
        Ok(v) => v,
        Err((name, e)) => fail(plan.report_fd, name, e),
    };
    let rtnl = step(plan, "open rtnetlink socket", net::open_rtnetlink());
    step(
        plan,
        "send TUN fd",
        sys::send_with_fds(
            plan.report_fd,
            &Report::Tun { ifindex }.encode(),
            &[tun, rtnl],
        ),
    );
    sys::close(tun);
    sys::close(rtnl);
}

fn become_root() -> io::Result<()> {
    // SAFETY: plain credential syscalls with integer arguments.
    unsafe {
        sys::check_int(libc::setgroups(0, std::ptr::null()))?;
        sys::check_int(libc::setresgid(0, 0, 0))?;
        sys::check_int(libc::setresuid(0, 0, 0))?;
    }
    Ok(())
}

/// PID 1 of the sandbox, before exec of the agent.
fn pid1(plan: &ChildPlan) -> ! {
    if let Err((name, e)) = plan.rootfs.mount_proc_and_pivot() {
        fail(plan.report_fd, name, e);
    }
    if let Some(net) = &plan.network {
        step(
            plan,
            "write /etc/resolv.conf",
            net::write_resolv_conf(net.resolv_conf()),
        );
    }
    let host = plan.hostname.as_bytes();
    // SAFETY: pointer and length of a valid buffer.
    step(
        plan,
        "set hostname",
        errno_result(unsafe { libc::sethostname(host.as_ptr().cast(), host.len()) }.into()),
    );
    step(plan, "bring up lo", loopback_up());
    step(plan, "set rlimits", set_rlimits(plan.nofile));
    // SAFETY: prctl with integer arguments.
    step(
        plan,
        "no_new_privs",
        errno_result(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }.into()),
    );
    if let Some(fd) = plan.landlock_fd {
        // SAFETY: landlock_restrict_self(ruleset_fd, flags=0).
        step(
            plan,
            "landlock",
            errno_result(unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd, 0) }),
        );
    }
    // From here on the report socket is at REPORT_FD.
    let report = step(plan, "arrange fds", arrange_fds(plan));
    let step = |name: Step, r: io::Result<()>| {
        if let Err(e) = r {
            fail(report, name, e);
        }
    };
    step("drop capabilities", caps::drop_to_kept());
    step("seccomp", seccomp::install(&plan.seccomp));
    // SAFETY: execveat with NULL-terminated argv/envp arrays kept alive by plan.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            AGENT_EXE_FD,
            c"".as_ptr(),
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    fail(report, "exec agent", io::Error::last_os_error())
}

/// Puts the agent socket at fd 3, the agent executable at 4 and the report
/// socket at 5 (both close-on-exec), /dev/null on 0-2, and closes everything
/// else. Returns the new report fd.
fn arrange_fds(plan: &ChildPlan) -> io::Result<RawFd> {
    // SAFETY: fcntl/dup3/open/close_range on fds this process owns.
    unsafe {
        let high = |fd: RawFd| sys::check_int(libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100));
        let sock = high(plan.agent_socket_fd)?;
        let exe = high(plan.agent_exe_fd)?;
        let report = high(plan.report_fd)?;
        sys::check_int(libc::dup3(sock, AGENT_SOCKET_FD, 0))?;
        sys::check_int(libc::dup3(exe, AGENT_EXE_FD, libc::O_CLOEXEC))?;
        sys::check_int(libc::dup3(report, REPORT_FD, libc::O_CLOEXEC))?;
        let null = sys::open(c"/dev/null", libc::O_RDWR, 0)?;
        for fd in 0..3 {
            sys::check_int(libc::dup3(null, fd, 0))?;
        }
        sys::check(libc::syscall(
            libc::SYS_close_range,
            REPORT_FD + 1,
            u32::MAX,
            0,
        ))?;
    }
    Ok(REPORT_FD)
}

fn set_rlimits(nofile: u64) -> io::Result<()> {
    let set = |res, soft: u64, hard: u64| {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: valid rlimit struct.
        sys::check_int(unsafe { libc::setrlimit(res, &lim) }).map(drop)
    };
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out pointer.
    sys::check_int(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) })?;
    // Raising the hard limit needs host privilege; stay within it.
    let nofile = nofile.min(cur.rlim_max);
    set(libc::RLIMIT_NOFILE, nofile, nofile)?;
    // No core dumps: they would fill the disk layer with memory images.
    set(libc::RLIMIT_CORE, 0, 0)?;
    Ok(())
}

/// `ip link set lo up`, by ioctl: the new network namespace starts with
/// `lo` down.
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket/ioctl/close with a zeroed, correctly sized ifreq.
    unsafe {
        let fd = sys::check_int(libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let res = (|| {
            sys::check_int(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req))?;
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            sys::check_int(libc::ioctl(fd, libc::SIOCSIFFLAGS, &req))
        })();
        sys::close(fd);
        res.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_roundtrip() {
        for r in [
            Report::Pid(4242),
            Report::Failed {
                step: 3,
                errno: libc::EPERM,
            },
            Report::Tun { ifindex: 2 },
            Report::Root,
        ] {
            assert_eq!(Report::decode(r.encode()), Some(r));
        }
        assert_eq!(Report::decode([9; 8]), None);
    }

    #[test]
    fn every_step_name_used_by_rootfs_is_known() {
        for s in [
            "mount overlay",
            "open root",
            "bind volume",
            "pivot_root",
            "bind device",
            "symlink in /dev",
            "mount /proc",
            // crate::net
            "open /dev/net/tun",
            "TUNSETIFF",
            "open network control socket",
            "get interface index",
            "set MTU",
            "set IPv4 address",
            "set netmask",
            "bring up network interface",
            "add default route",
        ] {
            assert_ne!(step_index(s), u16::MAX, "{s}");
        }
    }
}
