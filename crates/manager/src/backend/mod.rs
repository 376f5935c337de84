//! Isolation behind one trait, so the lifecycle code never depends on how a
//! sandbox is isolated. The types here are the backends' common language:
//! what to start ([`LaunchSpec`]), what it used ([`ResourceUsage`]), what
//! went wrong ([`BackendError`]). Each backend translates them to its own.
//!
//! * [`Native`]: Linux namespaces, cgroups, seccomp and Landlock on the
//!   host kernel (crate `jail`);
//! * [`Gvisor`]: the same cgroups and network namespace, with sandbox code
//!   running on gVisor's user-space kernel (crate `gvisor`, `runsc`).
//!
//! A microVM backend would implement the same two traits
//! (docs/architecture.md).

mod gvisor;
mod native;

pub use self::gvisor::Gvisor;
pub use native::Native;

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::str::FromStr;
use thiserror::Error;

/// Which backend isolates a sandbox, as operators name it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Isolation {
    #[default]
    Native,
    Gvisor,
}

impl Isolation {
    pub const ALL: [Isolation; 2] = [Isolation::Native, Isolation::Gvisor];

    /// Its position in [`Isolation::ALL`] (for per-backend counters).
    pub const fn index(self) -> usize {
        match self {
            Isolation::Native => 0,
            Isolation::Gvisor => 1,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Isolation::Native => "native",
            Isolation::Gvisor => "gvisor",
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Isolation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Isolation::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| format!("unknown isolation {s:?}: use native or gvisor"))
    }
}

/// What to start. The agent runs as PID 1 with `env` as its (and so the
/// sandbox's default) environment.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub id: String,
    pub image_rootfs: PathBuf,
    pub agent_exe: PathBuf,
    pub limits: ResourceLimits,
    pub env: Vec<(String, String)>,
    pub hostname: String,
    /// `None`: only loopback. `Some`: one interface whose packets the
    /// backend hands to the daemon's gateway ([`Isolated::take_tun`]).
    pub network: Option<LinkSpec>,
    /// Host directories (mounted volumes) to show inside at a path.
    pub binds: Vec<BindMount>,
    /// `image_rootfs` is a writable (bootable) volume used as the root
    /// itself: writes persist in it. Otherwise the image is shared and
    /// read-only under the sandbox's own writable layer.
    pub persistent_root: bool,
}

/// A host directory shown inside the sandbox at `target`, read-write,
/// with files owned by host ids 0..65535 appearing as those ids inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    /// Absolute and normalized (`jail::check_bind_target`).
    pub target: String,
}

/// Limits the host kernel enforces on everything a sandbox runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceLimits {
    pub memory_bytes: u64,
    /// Thousandths of a CPU (2000 = two cores).
    pub cpu_millis: u64,
    /// Processes and threads.
    pub pids: u64,
    /// The writable layer of the root filesystem.
    pub disk_bytes: u64,
    /// Open files per process.
    pub nofile: u64,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 1280 << 20,
            cpu_millis: 2000,
            pids: 1024,
            disk_bytes: 2 << 30,
            nofile: 65536,
        }
    }
}

/// The sandbox's side of its network link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    pub if_name: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub dns: Ipv4Addr,
    pub mtu: u32,
}

impl Default for LinkSpec {
    fn default() -> Self {
        Self {
            if_name: "eth0".into(),
            address: Ipv4Addr::new(100, 96, 0, 2),
            prefix_len: 30,
            gateway: Ipv4Addr::new(100, 96, 0, 1),
            dns: Ipv4Addr::new(100, 96, 0, 1),
            mtu: 65520,
        }
    }
}

/// What a sandbox has used so far, from the kernel's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceUsage {
    pub cpu_user_usec: u64,
    pub cpu_system_usec: u64,
    pub memory_current: u64,
    pub memory_peak: u64,
    pub pids_current: u64,
    pub oom_kills: u64,
}

impl ResourceUsage {
    pub fn cpu_usec(&self) -> u64 {
        self.cpu_user_usec + self.cpu_system_usec
    }
}

#[derive(Debug, Error)]
pub enum BackendError {
    /// The backend cannot run on this host at all (e.g. runsc missing):
    /// the operator's to fix, named in the message.
    #[error("{0}")]
    Unavailable(String),
    /// Bad limits or network settings.
    #[error("{0}")]
    Invalid(String),
    /// Starting, changing or releasing a sandbox failed.
    #[error("{0}")]
    Failed(String),
}

pub trait Backend: Send + Sync {
    fn isolation(&self) -> Isolation;

    /// Starts a sandbox whose PID 1 is the agent, connected by one socket.
    /// Blocking: call it off the async runtime.
    fn create(&self, spec: &LaunchSpec) -> Result<Box<dyn Isolated>, BackendError>;

    /// Releases whatever sandboxes of a previous, dead daemon left on the
    /// host; returns how many. Blocking.
    fn reap_leftovers(&self) -> Result<usize, BackendError>;
}

/// One isolated sandbox, as its owner holds it.
pub trait Isolated: Send {
    fn id(&self) -> &str;

    /// The socket connected to the agent (taken once).
    fn take_agent_socket(&mut self) -> Option<UnixStream>;

    /// The host side of the sandbox's network device (taken once), if it
    /// was made with a network.
    fn take_tun(&mut self) -> Option<OwnedFd>;

    /// Changes the memory limit (a warm sandbox handed out with the
    /// caller's settings).
    fn set_memory_limit(&self, bytes: u64) -> Result<(), BackendError>;

    /// What the sandbox has used so far, from the kernel's counters.
    fn usage(&self) -> ResourceUsage;

    /// Kills everything in it and releases all it holds. Blocking.
    fn destroy(self: Box<Self>) -> Result<(), BackendError>;

    /// What it takes to copy its root filesystem while it runs (a snapshot
    /// of a running sandbox). Only where the host can reach the root: not
    /// under gVisor, whose root lives in runsc's Sentry.
    fn root_view(&self) -> Result<jail::RootView, BackendError> {
        Err(BackendError::Unavailable(
            "this backend cannot copy a running sandbox's root filesystem".into(),
        ))
    }
}

/// The host-side spec both Linux backends start from.
pub(crate) fn jail_spec(spec: &LaunchSpec, paths: &jail::JailPaths) -> jail::SandboxSpec {
    let l = &spec.limits;
    jail::SandboxSpec {
        id: spec.id.clone(),
        image_rootfs: spec.image_rootfs.clone(),
        agent_exe: spec.agent_exe.clone(),
        paths: paths.clone(),
        limits: jail::Limits {
            memory_bytes: l.memory_bytes,
            cpu_millis: l.cpu_millis,
            pids: l.pids,
            disk_bytes: l.disk_bytes,
            nofile: l.nofile,
        },
        env: spec.env.clone(),
        hostname: spec.hostname.clone(),
        network: spec.network.as_ref().map(|n| jail::NetworkSpec {
            if_name: n.if_name.clone(),
            address: n.address,
            prefix_len: n.prefix_len,
            gateway: n.gateway,
            dns: n.dns,
            mtu: n.mtu,
        }),
        binds: spec
            .binds
            .iter()
            .map(|b| jail::Bind {
                source: b.source.clone(),
                target: b.target.clone(),
            })
            .collect(),
        persistent_root: spec.persistent_root,
    }
}

pub(crate) fn usage_of(u: jail::Usage) -> ResourceUsage {
    ResourceUsage {
        cpu_user_usec: u.cpu_user_usec,
        cpu_system_usec: u.cpu_system_usec,
        memory_current: u.memory_current,
        memory_peak: u.memory_peak,
        pids_current: u.pids_current,
        oom_kills: u.oom_kills,
    }
}

impl From<jail::JailError> for BackendError {
    fn from(e: jail::JailError) -> Self {
        use jail::JailError as J;
        let text = error_chain(&e);
        match e {
            J::NotRoot(_) => BackendError::Unavailable(text),
            J::InvalidLimit(_) | J::InvalidNetwork(_) => BackendError::Invalid(text),
            _ => BackendError::Failed(text),
        }
    }
}

/// An error and its sources, one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
