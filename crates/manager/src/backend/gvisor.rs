//! The gvisor backend: sandbox code runs on gVisor's user-space kernel
//! (crate `gvisor`, `runsc`), inside the same cgroups and network
//! namespace the native backend would give it.

use super::{error_chain, jail_spec, usage_of, Backend, BackendError, Isolated, Isolation};
use super::{LaunchSpec, ResourceUsage};
use jail::JailPaths;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

pub struct Gvisor {
    paths: JailPaths,
    runsc: gvisor::Runsc,
}

impl Gvisor {
    /// Finds runsc; an error names what to install.
    pub fn new(paths: JailPaths) -> Result<Self, BackendError> {
        let runsc = gvisor::Runsc::locate(paths.state.join("runsc"))?;
        Ok(Self { paths, runsc })
    }

    /// [`Backend::reap_leftovers`] with the ids: of both backends, as it
    /// also runs native's reaper.
    pub fn reap_report(&self) -> Result<jail::ReapReport, BackendError> {
        Ok(gvisor::reap_leftovers(&self.paths, &self.runsc)?)
    }

    /// Host mount points runsc's namespace detaches (the volume storage
    /// directory: see `gvisor::Runsc::hidden_mounts`).
    pub fn hiding(mut self, mounts: Vec<std::path::PathBuf>) -> Self {
        self.runsc.hidden_mounts = mounts;
        self
    }

    /// `runsc --version`'s first line, for logs.
    pub fn runsc_version(&self) -> String {
        self.runsc.version()
    }
}

impl Backend for Gvisor {
    fn isolation(&self) -> Isolation {
        Isolation::Gvisor
    }

    fn create(&self, spec: &LaunchSpec) -> Result<Box<dyn Isolated>, BackendError> {
        let sandbox = gvisor::Sandbox::create(&jail_spec(spec, &self.paths), &self.runsc)?;
        Ok(Box::new(GvisorSandbox(sandbox)))
    }

    fn reap_leftovers(&self) -> Result<usize, BackendError> {
        Ok(gvisor::reap_leftovers(&self.paths, &self.runsc)?
            .reaped
            .len())
    }
}

struct GvisorSandbox(gvisor::Sandbox);

impl Isolated for GvisorSandbox {
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
        Ok(self.0.set_memory_limit(bytes)?)
    }

    fn usage(&self) -> ResourceUsage {
        usage_of(self.0.usage())
    }

    fn destroy(self: Box<Self>) -> Result<(), BackendError> {
        Ok(self.0.destroy()?)
    }
}

impl From<gvisor::Error> for BackendError {
    fn from(e: gvisor::Error) -> Self {
        match e {
            gvisor::Error::Jail(j) => j.into(),
            e @ (gvisor::Error::RunscMissing | gvisor::Error::RunscBroken(_)) => {
                BackendError::Unavailable(error_chain(&e))
            }
            e => BackendError::Failed(error_chain(&e)),
        }
    }
}
