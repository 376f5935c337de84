//! A network namespace with the sandbox's TUN device, made from the host
//! side, for backends whose sandbox process is started by another program
//! (gVisor's `runsc`), which then runs inside this namespace.
//!
//! It holds what [`crate::net`] makes in the native child: `lo` up, one TUN
//! interface with the sandbox's address and a default route via the
//! gateway, IPv6 off. The namespace belongs to the host's user namespace
//! (the backend's own sandbox decides what its code may do there); it stays
//! alive while [`HostNetwork`] holds its fd, or any process runs in it.

use crate::net::{self, NetPlan, NetworkSpec};
use crate::{sys, JailError};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A network namespace made for one sandbox.
#[derive(Debug)]
pub struct HostNetwork {
    netns: OwnedFd,
    tun: Option<TunLink>,
    resolv_conf: Vec<u8>,
}

#[derive(Debug)]
struct TunLink {
    fd: Option<OwnedFd>,
    rtnetlink: OwnedFd,
    ifindex: libc::c_int,
}

impl HostNetwork {
    /// A fresh namespace with `lo` up and, with `spec`, the TUN interface.
    /// Runs on a short-lived thread of its own: `unshare(CLONE_NEWNET)`
    /// moves only the calling thread, never the caller's.
    pub fn create(spec: Option<&NetworkSpec>) -> Result<Self, JailError> {
        let plan = spec.map(NetPlan::new).transpose()?;
        std::thread::scope(|s| {
            s.spawn(|| Self::create_here(plan.as_ref()))
                .join()
                .unwrap_or_else(|_| {
                    Err(JailError::io(
                        "network thread",
                        io::Error::other("panicked"),
                    ))
                })
        })
    }

    fn create_here(plan: Option<&NetPlan>) -> Result<Self, JailError> {
        // SAFETY: unshare with a flag; affects only this thread, which ends
        // right after.
        sys::check_int(unsafe { libc::unshare(libc::CLONE_NEWNET) })
            .map_err(|e| JailError::io("unshare network namespace", e))?;
        let netns = sys::open(
            c"/proc/thread-self/ns/net",
            libc::O_RDONLY | libc::O_CLOEXEC,
            0,
        )
        .map_err(|e| JailError::io("open network namespace", e))?;
        // SAFETY: a fresh fd we own.
        let netns = unsafe { OwnedFd::from_raw_fd(netns) };
        net::loopback_up().map_err(|(step, e)| JailError::Setup { step, source: e })?;
        let tun = match plan {
            None => None,
            Some(plan) => {
                net::disable_ipv6();
                let (fd, ifindex) = net::create_tun(plan)
                    .map_err(|(step, e)| JailError::Setup { step, source: e })?;
                // SAFETY: create_tun returned a fresh fd we now own.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                let rtnl = net::open_rtnetlink().map_err(|e| JailError::io("open rtnetlink", e))?;
                // SAFETY: a fresh fd we own.
                let rtnetlink = unsafe { OwnedFd::from_raw_fd(rtnl) };
                Some(TunLink {
                    fd: Some(fd),
                    rtnetlink,
                    ifindex,
                })
            }
        };
        Ok(Self {
            netns,
            tun,
            resolv_conf: plan.map(|p| p.resolv_conf().to_vec()).unwrap_or_default(),
        })
    }

    /// The namespace, to `setns` into.
    pub fn netns(&self) -> BorrowedFd<'_> {
        self.netns.as_fd()
    }

    /// Whether it has a TUN interface.
    pub fn has_tun(&self) -> bool {
        self.tun.is_some()
    }

    /// The host side of the TUN device (taken once).
    pub fn take_tun(&mut self) -> Option<OwnedFd> {
        self.tun.as_mut().and_then(|t| t.fd.take())
    }

    /// What `/etc/resolv.conf` should say inside (empty without a TUN).
    pub fn resolv_conf(&self) -> &[u8] {
        &self.resolv_conf
    }

    /// Deletes the TUN interface, so a reader of its fd sees an error
    /// rather than silence; the namespace goes when its last user does.
    pub fn delete_link(&self) {
        if let Some(t) = &self.tun {
            let _ = net::delete_link(t.rtnetlink.as_raw_fd(), t.ifindex);
        }
    }
}
