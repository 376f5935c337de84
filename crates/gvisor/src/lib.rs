//! The `gvisor` isolation backend: each sandbox runs under gVisor's
//! user-space kernel (the Sentry, started by `runsc`), so sandbox code
//! never makes a system call to the host kernel; the Sentry makes a small,
//! seccomp-filtered set of them on its behalf.
//!
//! airlock keeps what it owns on the native backend, so limits, metering,
//! the network and crash recovery work the same way:
//!
//! * the cgroup (made by [`jail::cgroup`] with the sandbox's limits; runsc
//!   is told to use it, and puts the Sentry and gofer in it);
//! * the network namespace with the TUN device ([`jail::HostNetwork`]):
//!   runsc starts inside it with `--network=sandbox`, so gVisor's own
//!   network stack sends the sandbox's IPv4 packets into the TUN device,
//!   whose host side the daemon's egress gateway reads, exactly as on
//!   native. There is no other network path: no host network, no veth;
//! * the state dir and owner lock ([`jail::claim`]), so the one reaper
//!   finds a gvisor sandbox of a dead daemon like a native one.
//!
//! The agent is PID 1 of the container, bind-mounted read-only from the
//! host; its control socket is the container's stdin, the one kind of host
//! descriptor runsc passes into a sandbox.
//!
//! This crate is synchronous and knows nothing of tokio or the wire protocol.

mod bundle;
mod error;
mod logtail;
mod reap;
mod runsc;
mod sandbox;

pub use bundle::AGENT_PATH;
pub use error::Error;
pub use reap::reap_leftovers;
pub use runsc::Runsc;
pub use sandbox::Sandbox;
