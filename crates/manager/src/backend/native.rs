//! The native backend: Linux namespaces, cgroups, seccomp and Landlock on
//! the host kernel (crate `jail`).

use super::ResourceUsage;
use super::{jail_spec, usage_of, Backend, BackendError, Isolated, Isolation, LaunchSpec};
use jail::JailPaths;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

pub struct Native {
    pub paths: JailPaths,
}

impl Backend for Native {
    fn isolation(&self) -> Isolation {
        Isolation::Native
    }

    fn create(&self, spec: &LaunchSpec) -> Result<Box<dyn Isolated>, BackendError> {
        let sandbox = jail::Sandbox::create(&jail_spec(spec, &self.paths))?;
        Ok(Box::new(NativeSandbox(sandbox)))
    }

    fn reap_leftovers(&self) -> Result<usize, BackendError> {
        Ok(jail::reap_leftovers(&self.paths)?.reaped.len())
    }
}

struct NativeSandbox(jail::Sandbox);

impl Isolated for NativeSandbox {
    fn id(&self) -> &str {
        self.0.id()
    }

    fn take_agent_socket(&mut self) -> Option<UnixStream> {
        self.0.take_agent_socket()
    }

    fn take_tun(&mut self) -> Option<OwnedFd> {
        self.0.take_tun()
    }

    fn set_memory_limit(&self, bytes: u64) -> Result<(), BackendError> {
        Ok(self.0.cgroup().set_memory_limit(bytes)?)
    }

    fn usage(&self) -> ResourceUsage {
        usage_of(self.0.usage())
    }

    fn destroy(self: Box<Self>) -> Result<(), BackendError> {
        Ok(self.0.destroy()?)
    }

    fn root_view(&self) -> Result<jail::RootView, BackendError> {
        Ok(self.0.root_view()?)
    }
}
