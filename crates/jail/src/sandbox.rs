//! A running sandbox, seen from its owner: creation, waiting, usage and
//! destruction.

use crate::binds::Bind;
use crate::cgroup::{Cgroup, Usage};
use crate::child::{self, ChildPlan, Report, AGENT_SOCKET_FD};
use crate::net::{self, NetPlan, NetworkSpec};
use crate::rootfs::RootfsPlan;
use crate::rootview::RootView;
use crate::seccomp::Policy;
use crate::state::{self, JailPaths};
use crate::uidpool::UidSlot;
use crate::{sys, userns, JailError, Limits};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// What to run. The agent is started as PID 1 with `env` as its (and so the
/// sandbox's default) environment.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub id: String,
    pub image_rootfs: PathBuf,
    pub agent_exe: PathBuf,
    pub paths: JailPaths,
    pub limits: Limits,
    pub env: Vec<(String, String)>,
    pub hostname: String,
    /// `None`: the sandbox's network namespace has only `lo`. `Some`: it
    /// also has a TUN interface whose fd [`Sandbox::take_tun`] gives.
    pub network: Option<NetworkSpec>,
    /// Host directories bound into the sandbox (volumes).
    pub binds: Vec<Bind>,
    /// `image_rootfs` is a writable volume to use as the root itself (no
    /// overlay, no disk tmpfs): what the sandbox writes persists there.
    pub persistent_root: bool,
}

/// How PID 1 (the agent) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

pub struct Sandbox {
    id: String,
    pid: libc::pid_t,
    pidfd: OwnedFd,
    agent: Option<UnixStream>,
    cgroup: Cgroup,
    state_dir: PathBuf,
    exit: Option<ExitStatus>,
    tun: Option<OwnedFd>,
    link: Option<NetLink>,
    /// A detached clone of the root filesystem's mount alone (O_PATH), for
    /// [`Sandbox::root_view`]. Closed at teardown: it holds the root's
    /// filesystem (a volume's, for a persistent root) mounted.
    root_tree: Option<OwnedFd>,
    _owner_lock: File,
    slot: UidSlot,
}

/// What the owner needs to delete the sandbox's TUN interface on destroy.
struct NetLink {
    rtnetlink: OwnedFd,
    ifindex: i32,
}

/// What a successful set-up reported.
struct Started {
    pid: libc::pid_t,
    /// With a network: the TUN fd and the means to delete its interface.
    tun: Option<(OwnedFd, NetLink)>,
    /// The root filesystem's mount alone ([`Report::Root`]).
    root: Option<OwnedFd>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .finish()
    }
}

/// The seccomp policy is the same for every sandbox: compile it once.
fn policy() -> Result<&'static Policy, JailError> {
    static POLICY: OnceLock<Result<Policy, String>> = OnceLock::new();
    POLICY
        .get_or_init(|| Policy::build().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| JailError::Seccomp(e.clone()))
}

/// A Landlock ruleset that scopes signals and abstract unix sockets to the
/// sandbox. `None` where the kernel lacks Landlock ABI 6.
fn landlock_ruleset() -> Option<OwnedFd> {
    use landlock::{Access, CompatLevel, Compatible, Ruleset, RulesetAttr, Scope, ABI};
    let ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .scope(Scope::from_all(ABI::V6))
        .ok()?
        .create()
        .ok()?;
    Option::<OwnedFd>::from(ruleset)
}

impl Sandbox {
    pub fn create(spec: &SandboxSpec) -> Result<Self, JailError> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(JailError::NotRoot(euid));
        }
        spec.limits.validate()?;
        let network = spec.network.as_ref().map(NetPlan::new).transpose()?;
        let policy = policy()?;
        let agent = File::open(&spec.agent_exe)
            .map_err(|e| JailError::path("opening agent", &spec.agent_exe, e))?;
        if !spec.image_rootfs.is_dir() {
            return Err(JailError::path(
                "image",
                &spec.image_rootfs,
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "root filesystem directory does not exist",
                ),
            ));
        }
        let reap_guard = state::ReapGuard::shared(&spec.paths)?;
        let (state_dir, owner_lock) = state::claim(&spec.paths, &spec.id)?;
        let hint = (std::process::id()
            ^ (spec
                .id
                .bytes()
                .fold(0u32, |h, b| h.wrapping_mul(31) ^ b as u32)))
            % 4096;
        let slot = UidSlot::acquire(&spec.paths.uid_slots(), hint)?;
        let cgroup = match Cgroup::create(&spec.id, &spec.limits) {
            Ok(cg) => cg,
            Err(e) => {
                let _ = state::remove_dir(&state_dir);
                return Err(e);
            }
        };
        drop(reap_guard);
        let started = Self::start(spec, network, policy, &agent, &state_dir, &slot, &cgroup);
        match started {
            Ok((mut started, pidfd, sock)) => {
                let (tun, link) = started.tun.take().unzip();
                Ok(Self {
                    id: spec.id.clone(),
                    pid: started.pid,
                    pidfd,
                    agent: Some(sock),
                    cgroup,
                    state_dir,
                    exit: None,
                    tun,
                    link,
                    root_tree: started.root,
                    _owner_lock: owner_lock,
                    slot,
                })
            }
            Err(e) => {
                cgroup.kill_all();
                let _ = cgroup.remove(Duration::from_secs(2));
                let _ = state::remove_dir(&state_dir);
                Err(e)
            }
        }
    }

    fn start(
        spec: &SandboxSpec,
        network: Option<NetPlan>,
        policy: &Policy,
        agent: &File,
        state_dir: &Path,
        slot: &UidSlot,
        cgroup: &Cgroup,
    ) -> Result<(Started, OwnedFd, UnixStream), JailError> {
        let host_base = slot.host_base();
        let namespaces = userns::create(host_base, network.is_some())?;
        let with_network = network.is_some();
        let rootfs = RootfsPlan::new(
            &spec.image_rootfs,
            state_dir,
            host_base,
            spec.limits.disk_bytes,
            &spec.binds,
            spec.persistent_root,
        )
        .map_err(|e| JailError::path("preparing", state_dir, e))?;
        let (ours, theirs) = UnixStream::pair().map_err(|e| JailError::io("socketpair", e))?;
        let (report_r, report_w) = socketpair()?;
        let landlock = landlock_ruleset();
        let mut plan = ChildPlan {
            rootfs,
            cgroup_procs: cgroup.procs_files(),
            userns_fd: namespaces.user.as_raw_fd(),
            agent_exe_fd: agent.as_raw_fd(),
            agent_socket_fd: theirs.as_raw_fd(),
            report_fd: report_w.as_raw_fd(),
            landlock_fd: landlock.as_ref().map(|fd| fd.as_raw_fd()),
            netns_fd: namespaces.net.as_ref().map(|fd| fd.as_raw_fd()),
            network,
            hostname: CString::new(spec.hostname.clone())
                .map_err(|_| JailError::InvalidLimit("hostname contains NUL".into()))?,
            nofile: spec.limits.nofile,
            seccomp: Policy {
                programs: policy.programs.clone(),
            },
            argv_ptrs: Vec::new(),
            envp_ptrs: Vec::new(),
            _argv: Vec::new(),
            _envp: Vec::new(),
        };
        let argv = vec![
            c_string("airlock-agent")?,
            c_string(&format!("--fd={AGENT_SOCKET_FD}"))?,
        ];
        let envp = spec
            .env
            .iter()
            .map(|(k, v)| c_string(&format!("{k}={v}")))
            .collect::<Result<Vec<_>, _>>()?;
        plan.set_args(argv, envp);

        // SAFETY: the child runs only `child::run`, which makes raw syscalls
        // over the prepared plan and never returns.
        let first = unsafe { libc::fork() };
        if first < 0 {
            return Err(JailError::io("fork", io::Error::last_os_error()));
        }
        if first == 0 {
            child::run(&plan);
        }
        drop(report_w);
        drop(theirs);
        let outcome = read_reports(report_r.as_raw_fd());
        reap(first);
        let started = outcome?;
        if started.root.is_none() {
            // SAFETY: kill of our own child, not yet reaped (so its pid
            // cannot have been reused).
            unsafe { libc::kill(started.pid, libc::SIGKILL) };
            wait(started.pid, 0);
            return Err(JailError::Setup {
                step: "send the root mount",
                source: io::Error::other("the set-up process sent no root mount"),
            });
        }
        if with_network && started.tun.is_none() {
            // SAFETY: kill of our own child, not yet reaped (so its pid
            // cannot have been reused).
            unsafe { libc::kill(started.pid, libc::SIGKILL) };
            wait(started.pid, 0);
            return Err(JailError::Setup {
                step: "send TUN fd",
                source: io::Error::other("the set-up process sent no TUN fd"),
            });
        }
        let pidfd = sys::pidfd_open(started.pid).map_err(|e| JailError::io("pidfd_open", e))?;
        // SAFETY: pidfd_open returned a new fd that we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        Ok((started, pidfd, ours))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Host pid of PID 1 (the agent).
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// A pidfd of PID 1: readable once it has exited.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// The socket connected to the agent (taken once).
    pub fn take_agent_socket(&mut self) -> Option<UnixStream> {
        self.agent.take()
    }

    /// The TUN device of a sandbox made with a [`NetworkSpec`] (taken once;
    /// `None` without a network). Blocking and close-on-exec; one read
    /// gives one IPv4 packet the sandbox sent (no packet-info header), one
    /// write delivers one packet to it.
    ///
    /// The interface exists as long as this fd (or a copy) is open: closing
    /// it removes the interface from the sandbox. Left untaken, the sandbox
    /// keeps it open until destroyed.
    ///
    /// [`Sandbox::destroy`] deletes the interface: a reader then gets an
    /// error (EBADFD; poll reports POLLERR). The network namespace itself is
    /// freed only when this fd is closed too: close it after destroy.
    pub fn take_tun(&mut self) -> Option<OwnedFd> {
        self.tun.take()
    }

    /// What it takes to copy the sandbox's root filesystem while it runs
    /// ([`RootView`]); fails once the sandbox is torn down.
    pub fn root_view(&self) -> Result<RootView, JailError> {
        let dup = |fd: BorrowedFd<'_>| {
            fd.try_clone_to_owned()
                .map_err(|e| JailError::io("duplicating an fd of the sandbox", e))
        };
        let tree = self.root_tree.as_ref().ok_or_else(|| {
            JailError::io(
                "the root mount",
                io::Error::other("the sandbox has been torn down"),
            )
        })?;
        Ok(RootView::new(
            dup(tree.as_fd())?,
            dup(self.pidfd.as_fd())?,
            self.slot.host_base(),
            self.cgroup.clone(),
        ))
    }

    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    pub fn usage(&self) -> Usage {
        self.cgroup.usage()
    }

    /// Reaps PID 1 if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = wait(self.pid, libc::WNOHANG);
        }
        self.exit
    }

    /// Kills everything in the sandbox and releases its cgroup and state.
    /// Its mounts go with its mount namespace when PID 1 is reaped.
    pub fn destroy(mut self) -> Result<(), JailError> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), JailError> {
        if self.exit.is_none() {
            // Killing PID 1 makes the kernel kill every process in its pid
            // namespace; waitpid returns once they are all gone.
            let _ = sys::pidfd_send_signal(self.pidfd.as_raw_fd(), libc::SIGKILL);
            self.exit = wait(self.pid, 0);
        }
        if let Some(link) = self.link.take() {
            // ENODEV where the owner has already closed the TUN fd.
            let _ = net::delete_link(link.rtnetlink.as_raw_fd(), link.ifindex);
        }
        self.tun = None;
        self.root_tree = None;
        self.cgroup.remove(Duration::from_secs(5))?;
        state::remove_dir(&self.state_dir)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

fn c_string(s: &str) -> Result<CString, JailError> {
    CString::new(s).map_err(|_| JailError::InvalidLimit(format!("{s:?} contains a NUL byte")))
}

/// The report channel: a connected pair of unix stream sockets (one end
/// for us, one for the set-up processes), so that fds can travel on it.
fn socketpair() -> Result<(OwnedFd, OwnedFd), JailError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: valid 2-element array.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } < 0
    {
        return Err(JailError::io("socketpair", io::Error::last_os_error()));
    }
    Ok((userns::owned(fds[0]), userns::owned(fds[1])))
}

/// Most fds accepted with one report; more are a malformed report.
const MAX_RECEIVED_FDS: usize = 4;

/// Reads one 8-byte report and the fds sent with it (close-on-exec).
/// Returns fewer than 8 bytes only at EOF.
fn recv_report(fd: RawFd) -> io::Result<(usize, [u8; 8], Vec<OwnedFd>)> {
    #[repr(C)]
    union Control {
        _align: libc::cmsghdr,
        bytes: [u8; 128],
    }
    // SAFETY: arithmetic only.
    let space = unsafe { libc::CMSG_SPACE((MAX_RECEIVED_FDS * size_of::<RawFd>()) as u32) };
    let mut buf = [0u8; 8];
    let mut got = 0;
    let mut fds = Vec::new();
    while got < buf.len() {
        let mut control = Control { bytes: [0; 128] };
        let mut iov = libc::iovec {
            iov_base: buf[got..].as_mut_ptr().cast(),
            iov_len: buf.len() - got,
        };
        // SAFETY: msghdr is plain data; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = (&mut control as *mut Control).cast();
        msg.msg_controllen = space as usize;
        // SAFETY: msg describes buffers that live across the call.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        // SAFETY: the kernel filled msg_control with msg_controllen bytes
        // of well-formed cmsgs; CMSG_FIRSTHDR/NXTHDR stay within them and
        // each SCM_RIGHTS payload holds (cmsg_len - CMSG_LEN(0)) / 4 new
        // fds that we now own.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    let count =
                        ((*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize) / size_of::<RawFd>();
                    for i in 0..count {
                        fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other("too many fds with a report"));
        }
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    Ok((got, buf, fds))
}

/// Reads the set-up reports until EOF (every writer exec'd or exited):
/// PID 1 (and the TUN) if all went well, else the step that failed.
fn read_reports(fd: RawFd) -> Result<Started, JailError> {
    let mut pid = None;
    let mut tun = None;
    let mut root = None;
    loop {
        let (n, buf, mut fds) =
            recv_report(fd).map_err(|e| JailError::io("reading set-up report", e))?;
        if n == 0 {
            break;
        }
        match (n, Report::decode(buf)) {
            (8, Some(Report::Pid(p))) if fds.is_empty() => pid = Some(p),
            (8, Some(Report::Tun { ifindex })) if fds.len() == 2 && tun.is_none() => {
                let rtnetlink = fds.pop().expect("two fds");
                let tun_fd = fds.pop().expect("two fds");
                tun = Some((tun_fd, NetLink { rtnetlink, ifindex }));
            }
            (8, Some(Report::Root)) if fds.len() == 1 && root.is_none() => root = fds.pop(),
            (8, Some(Report::Failed { step, errno })) => {
                if let Some(p) = pid {
                    // PID 1 was created: reap it before reporting.
                    wait(p, 0);
                }
                return Err(JailError::Setup {
                    step: child::step_name(step),
                    source: io::Error::from_raw_os_error(errno),
                });
            }
            _ => {
                return Err(JailError::io(
                    "reading set-up report",
                    io::Error::other("malformed report"),
                ))
            }
        }
    }
    match pid {
        Some(pid) => Ok(Started { pid, tun, root }),
        None => Err(JailError::Setup {
            step: "start",
            source: io::Error::other("the set-up process died without a report"),
        }),
    }
}

fn reap(pid: libc::pid_t) {
    wait(pid, 0);
}

fn wait(pid: libc::pid_t, flags: libc::c_int) -> Option<ExitStatus> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r == pid {
            return Some(if libc::WIFSIGNALED(status) {
                ExitStatus::Signaled(libc::WTERMSIG(status))
            } else {
                ExitStatus::Exited(libc::WEXITSTATUS(status))
            });
        }
        if r == 0 {
            return None;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            // ECHILD: already reaped elsewhere; treat as gone.
            return Some(ExitStatus::Signaled(libc::SIGKILL));
        }
    }
}
