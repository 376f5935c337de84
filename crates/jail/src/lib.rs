//! Linux isolation for one airlock sandbox (the `native` backend).
//!
//! [`Sandbox::create`] turns an image directory into a running sandbox whose
//! PID 1 is the agent, connected to the caller by one unix socket. Each
//! sandbox gets:
//!
//! * a user namespace mapping its uids 0..65536 to a host range of its own
//!   ([`uidpool`]), so sandbox root is an unprivileged host user;
//! * mount, pid, net, ipc, uts and cgroup namespaces; the network namespace
//!   has only `lo`, or with a [`NetworkSpec`] also a TUN interface whose fd
//!   the caller gets to run a userspace network stack on ([`net`]);
//! * a root filesystem that is an overlay of the image, seen through an
//!   idmapped mount, and a size-limited tmpfs for writes ([`rootfs`]);
//! * a cgroup (v1 or v2, detected) with memory, CPU and pids limits
//!   ([`cgroup`]);
//! * a seccomp filter, a capability bounding set, `no_new_privs`, a Landlock
//!   scope and rlimits ([`seccomp`], [`caps`]).
//!
//! All mounts live only in the sandbox's own mount namespace: when its last
//! process dies the kernel releases them, so nothing can be left mounted on
//! the host. What can outlive a crashed owner (cgroups, the state dir) is
//! found and released by [`reap_leftovers`].
//!
//! This crate is synchronous and knows nothing of tokio or the wire protocol.

mod binds;
pub mod caps;
pub mod cgroup;
mod child;
mod error;
pub mod hostnet;
mod limits;
mod net;
mod rootfs;
mod rootview;
mod sandbox;
pub mod seccomp;
mod state;
mod sys;
pub mod uidpool;
mod userns;

pub use binds::{check_bind_target, Bind};
pub use cgroup::{CgroupVersion, Usage};
pub use error::JailError;
pub use hostnet::HostNetwork;
pub use limits::{parse_duration, parse_size, Limits};
pub use net::NetworkSpec;
pub use rootview::{Frozen, RootView};
pub use sandbox::{ExitStatus, Sandbox, SandboxSpec};
pub use state::{claim, reap_leftovers, JailPaths, ReapGuard, ReapReport};
