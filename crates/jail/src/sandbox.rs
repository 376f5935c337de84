//! A running sandbox, seen from its owner: creation, waiting, usage and
//! destruction.

use crate::cgroup::{Cgroup, Usage};
use crate::child::{self, ChildPlan, Report, AGENT_SOCKET_FD};
use crate::rootfs::RootfsPlan;
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
    _owner_lock: File,
    _slot: UidSlot,
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
        let started = Self::start(spec, policy, &agent, &state_dir, &slot, &cgroup);
        match started {
            Ok((pid, pidfd, sock)) => Ok(Self {
                id: spec.id.clone(),
                pid,
                pidfd,
                agent: Some(sock),
                cgroup,
                state_dir,
                exit: None,
                _owner_lock: owner_lock,
                _slot: slot,
            }),
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
        policy: &Policy,
        agent: &File,
        state_dir: &Path,
        slot: &UidSlot,
        cgroup: &Cgroup,
    ) -> Result<(libc::pid_t, OwnedFd, UnixStream), JailError> {
        let host_base = slot.host_base();
        let userns = userns::create(host_base)?;
        let rootfs = RootfsPlan::new(
            &spec.image_rootfs,
            state_dir,
            host_base,
            spec.limits.disk_bytes,
        )
        .map_err(|e| JailError::path("preparing", state_dir, e))?;
        let (ours, theirs) = UnixStream::pair().map_err(|e| JailError::io("socketpair", e))?;
        let (report_r, report_w) = pipe()?;
        let landlock = landlock_ruleset();
        let mut plan = ChildPlan {
            rootfs,
            cgroup_procs: cgroup.procs_files(),
            userns_fd: userns.as_raw_fd(),
            agent_exe_fd: agent.as_raw_fd(),
            agent_socket_fd: theirs.as_raw_fd(),
            report_fd: report_w.as_raw_fd(),
            landlock_fd: landlock.as_ref().map(|fd| fd.as_raw_fd()),
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
        let pid = outcome?;
        let pidfd = sys::pidfd_open(pid).map_err(|e| JailError::io("pidfd_open", e))?;
        // SAFETY: pidfd_open returned a new fd that we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        Ok((pid, pidfd, ours))
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

fn pipe() -> Result<(OwnedFd, OwnedFd), JailError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: valid 2-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(JailError::io("pipe2", io::Error::last_os_error()));
    }
    Ok((userns::owned(fds[0]), userns::owned(fds[1])))
}

/// Reads the set-up reports until EOF (every writer exec'd or exited):
/// the pid of PID 1 if all went well, else the step that failed.
fn read_reports(fd: RawFd) -> Result<libc::pid_t, JailError> {
    let mut pid = None;
    loop {
        let mut buf = [0u8; 8];
        let n =
            sys::read_full(fd, &mut buf).map_err(|e| JailError::io("reading set-up report", e))?;
        if n == 0 {
            break;
        }
        match (n, Report::decode(buf)) {
            (8, Some(Report::Pid(p))) => pid = Some(p),
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
    pid.ok_or_else(|| JailError::Setup {
        step: "start",
        source: io::Error::other("the set-up process died without a report"),
    })
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
