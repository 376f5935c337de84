//! Isolation behind one trait, so the lifecycle code never depends on how a
//! sandbox is isolated. `Native` (Linux namespaces, the `jail` crate) is
//! the one backend today; gVisor (runsc) or a microVM would implement the
//! same two traits.

use jail::{JailError, JailPaths, SandboxSpec, Usage};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;

    /// Starts a sandbox whose PID 1 is the agent, connected by one socket.
    /// Blocking: call it off the async runtime.
    fn create(&self, spec: &SandboxSpec) -> Result<Box<dyn Isolated>, JailError>;

    /// Releases whatever sandboxes of a previous, dead daemon left on the
    /// host; returns how many. Blocking.
    fn reap_leftovers(&self) -> Result<usize, JailError>;
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
    fn set_memory_limit(&self, bytes: u64) -> Result<(), JailError>;

    /// What the sandbox has used so far, from the kernel's counters.
    fn usage(&self) -> Usage;

    /// Kills everything in it and releases all it holds. Blocking.
    fn destroy(self: Box<Self>) -> Result<(), JailError>;
}

/// Linux namespaces, cgroups, seccomp and Landlock (`jail`).
pub struct Native {
    pub paths: JailPaths,
}

impl Backend for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn create(&self, spec: &SandboxSpec) -> Result<Box<dyn Isolated>, JailError> {
        Ok(Box::new(jail::Sandbox::create(spec)?))
    }

    fn reap_leftovers(&self) -> Result<usize, JailError> {
        Ok(jail::reap_leftovers(&self.paths)?.reaped.len())
    }
}

impl Isolated for jail::Sandbox {
    fn id(&self) -> &str {
        jail::Sandbox::id(self)
    }

    fn take_agent_socket(&mut self) -> Option<UnixStream> {
        jail::Sandbox::take_agent_socket(self)
    }

    fn take_tun(&mut self) -> Option<OwnedFd> {
        jail::Sandbox::take_tun(self)
    }

    fn set_memory_limit(&self, bytes: u64) -> Result<(), JailError> {
        self.cgroup().set_memory_limit(bytes)
    }

    fn usage(&self) -> Usage {
        jail::Sandbox::usage(self)
    }

    fn destroy(self: Box<Self>) -> Result<(), JailError> {
        jail::Sandbox::destroy(*self)
    }
}
