//! A gvisor sandbox seen from its owner: creation, usage and destruction.

use crate::bundle::{BundleSpec, Config};
use crate::logtail::LogTail;
use crate::runsc::{Launch, LaunchPaths, Runsc};
use crate::Error;
use jail::cgroup::{self, Cgroup};
use jail::{HostNetwork, SandboxSpec, Usage};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long runsc may take to start the Sentry, the gofer and the agent.
/// About 0.2 s on an idle host; generous for a loaded one.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Sandbox {
    id: String,
    runsc: Runsc,
    /// `runsc run`: lives as long as the container.
    child: Child,
    agent: Option<UnixStream>,
    net: HostNetwork,
    cgroup: Cgroup,
    state_dir: PathBuf,
    _owner_lock: File,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("gvisor::Sandbox")
            .field("id", &self.id)
            .field("runsc_pid", &self.child.id())
            .finish()
    }
}

impl Sandbox {
    /// Starts the sandbox and waits until its agent has spoken (its hello
    /// is left unread on the socket for the caller).
    pub fn create(spec: &SandboxSpec, runsc: &Runsc) -> Result<Self, Error> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(jail::JailError::NotRoot(euid).into());
        }
        spec.limits.validate()?;
        if !spec.image_rootfs.is_dir() {
            return Err(Error::Start(format!(
                "image root filesystem {} does not exist",
                spec.image_rootfs.display()
            )));
        }
        if !spec.agent_exe.is_file() {
            return Err(Error::Start(format!(
                "agent binary {} does not exist",
                spec.agent_exe.display()
            )));
        }
        let net = HostNetwork::create(spec.network.as_ref())?;
        let reap_guard = jail::ReapGuard::shared(&spec.paths)?;
        let (state_dir, owner_lock) = jail::claim(&spec.paths, &spec.id)?;
        let cgroup = match Cgroup::create(&spec.id, &host_limits(&spec.limits)) {
            Ok(cg) => cg,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&state_dir);
                return Err(e.into());
            }
        };
        drop(reap_guard);
        match Self::start(spec, runsc, &net, &state_dir) {
            Ok((child, agent)) => Ok(Self {
                id: spec.id.clone(),
                runsc: runsc.clone(),
                child,
                agent: Some(agent),
                net,
                cgroup,
                state_dir,
                _owner_lock: owner_lock,
            }),
            Err(e) => {
                let _ = runsc.delete(&spec.id);
                runsc.forget(&spec.id);
                cgroup.kill_all();
                let _ = cgroup.remove(Duration::from_secs(2));
                net.delete_link();
                let _ = std::fs::remove_dir_all(&state_dir);
                Err(e)
            }
        }
    }

    fn start(
        spec: &SandboxSpec,
        runsc: &Runsc,
        net: &HostNetwork,
        state_dir: &std::path::Path,
    ) -> Result<(Child, UnixStream), Error> {
        let rw = state_dir.join("rw");
        let lower = state_dir.join("lower");
        let agent = state_dir.join("agent");
        for dir in [&rw, &lower] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("creating mount points", e))?;
        }
        File::create(&agent).map_err(|e| Error::io("creating mount points", e))?;
        let resolv = state_dir.join("resolv.conf");
        if net.has_tun() {
            std::fs::write(&resolv, net.resolv_conf())
                .map_err(|e| Error::io("writing resolv.conf", e))?;
        }
        // Each volume's host mount, bound to a private path in runsc's
        // namespace before the storage directory is detached there.
        let mut volumes = Vec::with_capacity(spec.binds.len());
        let mut binds = Vec::with_capacity(spec.binds.len());
        for (i, b) in spec.binds.iter().enumerate() {
            let private = state_dir.join(format!("volume-{i}"));
            std::fs::create_dir_all(&private).map_err(|e| Error::io("creating mount points", e))?;
            volumes.push((b.source.clone(), private.clone()));
            binds.push(jail::Bind {
                source: private,
                target: b.target.clone(),
            });
        }
        Config::new(&BundleSpec {
            root: &lower,
            agent_exe: &agent,
            tmp: &rw.join("tmp"),
            binds: &binds,
            resolv_conf: net.has_tun().then_some(resolv.as_path()),
            env: &spec.env,
            hostname: &spec.hostname,
            limits: &spec.limits,
            cgroups_path: format!("/{}/{}", cgroup::PARENT, spec.id),
        })
        .write(state_dir)
        .map_err(|e| Error::io("writing the OCI bundle", e))?;

        let (ours, theirs) = UnixStream::pair().map_err(|e| Error::io("socketpair", e))?;
        let mut cmd = runsc.command();
        cmd.arg(if net.has_tun() {
            "--network=sandbox"
        } else {
            "--network=none"
        })
        // A volume as the root takes the writes itself: no overlay.
        .arg(if spec.persistent_root {
            "--overlay2=none".to_string()
        } else {
            runsc.overlay_flag(&rw)
        })
        // Host segmentation offload hands the TUN device segments that reach
        // the gateway's stack corrupted (TLS fails with "bad record mac",
        // seen with runsc 20240729); gVisor's own segmentation is used.
        .arg("--gso=false")
        .args(["run", "--bundle"])
        .arg(state_dir)
        .arg(&spec.id)
        // The socket is stdin only: gVisor imports each stdio descriptor
        // on its own, and releasing one import of a host socket shuts the
        // socket down, so a second import as stdout would end the control
        // channel when the agent closes its stdout.
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let paths = LaunchPaths {
            volumes: &volumes,
            hidden: &runsc.hidden_mounts,
            image: &spec.image_rootfs,
            lower: &lower,
            persistent_root: spec.persistent_root,
            rw: &rw,
            tmp: &rw.join("tmp"),
            agent: &spec.agent_exe,
            agent_ro: &agent,
        };
        Launch::new(net.netns(), &paths, spec.limits.disk_bytes)?.apply(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| Error::io("starting runsc", e))?;
        // The child holds the only other copies of its end now.
        drop(cmd);
        let log = LogTail::follow(child.stderr.take().expect("stderr is piped"));
        match wait_for_hello(&ours, &mut child) {
            Ok(()) => Ok((child, ours)),
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                // The reader has the rest once runsc is gone.
                std::thread::sleep(Duration::from_millis(20));
                let log = log.text();
                Err(Error::Start(if log.is_empty() {
                    why
                } else {
                    format!("{why}: {log}")
                }))
            }
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The socket connected to the agent (taken once).
    pub fn take_agent_socket(&mut self) -> Option<UnixStream> {
        self.agent.take()
    }

    /// The host side of the sandbox's TUN device (taken once).
    pub fn take_tun(&mut self) -> Option<OwnedFd> {
        self.net.take_tun()
    }

    pub fn set_memory_limit(&self, bytes: u64) -> Result<(), Error> {
        Ok(self.cgroup.set_memory_limit(bytes)?)
    }

    /// The cgroup's counters: the Sentry's and the gofer's use, which is
    /// everything the sandbox costs the host.
    pub fn usage(&self) -> Usage {
        self.cgroup.usage()
    }

    /// Stops everything and releases all the sandbox held. Blocking.
    pub fn destroy(mut self) -> Result<(), Error> {
        // `delete --force` stops the container and removes runsc's state
        // and the cgroups runsc made; killing the cgroup then catches
        // anything it missed.
        let _ = self.runsc.delete(&self.id);
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.runsc.forget(&self.id);
        self.cgroup.kill_all();
        self.cgroup.remove(Duration::from_secs(5))?;
        self.net.delete_link();
        match std::fs::remove_dir_all(&self.state_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing the sandbox's state dir", e)),
        }
    }
}

/// Waits until the agent's first bytes arrive (peeked, not read), or runsc
/// exits, or [`START_TIMEOUT`] passes.
fn wait_for_hello(sock: &UnixStream, child: &mut Child) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 50) };
        if n > 0 {
            let mut byte = 0u8;
            // SAFETY: a one-byte buffer we own; MSG_PEEK leaves it queued.
            let got = unsafe {
                libc::recv(
                    sock.as_raw_fd(),
                    (&mut byte as *mut u8).cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            if got > 0 {
                return Ok(());
            }
            if got == 0 {
                let status = child.wait().ok();
                return Err(format!(
                    "runsc exited before the agent started ({})",
                    status.map_or("unknown status".into(), |s| s.to_string())
                ));
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("runsc exited before the agent started ({status})"));
        }
        if start.elapsed() > START_TIMEOUT {
            return Err(format!(
                "the agent did not start within {}s",
                START_TIMEOUT.as_secs()
            ));
        }
    }
}

/// Threads of the Sentry and the gofer (Go runtimes) beyond those of the
/// sandbox's own tasks.
const RUNTIME_THREADS: u64 = 512;

/// The limits of the host cgroup. The pids limit there counts runsc's
/// threads, not sandbox processes (those are the Sentry's tasks, limited
/// inside gVisor by the bundle's pids limit): hitting it would kill the
/// Sentry, so the host's is the sandbox's plus room for the runtimes,
/// a backstop rather than the limit.
fn host_limits(limits: &jail::Limits) -> jail::Limits {
    jail::Limits {
        pids: limits
            .pids
            .saturating_mul(2)
            .saturating_add(RUNTIME_THREADS),
        ..limits.clone()
    }
}
