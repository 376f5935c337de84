//! Copying a running sandbox's root filesystem (a snapshot of it).
//!
//! The root is an overlay (or a volume) mounted in the sandbox's own mount
//! namespace, which the host cannot see into after `pivot_root`. The set-up
//! process, while still in the host-root namespace it built the root in,
//! sends its owner a detached clone of the root's mount alone
//! ([`crate::Sandbox::root_view`]): no /proc, /dev, /tmp or volumes, only
//! what the sandbox wrote over its image, with deleted image files absent.
//!
//! Whoever copies the tree (`mkfs.ext4 -d`) should not do it as host root:
//! the tree is the tenant's. [`RootView::confine`] gives the code for the
//! copier's process (between fork and exec) that drops it into the
//! sandbox's user namespace as the sandbox's root: it then sees the files'
//! owners as the sandbox does (0-based, like an image), may read all of
//! them, and holds no privilege on the host. [`RootView::freeze`] stops the
//! sandbox's processes while the copy runs, so the copy is of one moment
//! and no file can be swapped for a symlink under the copier.

use crate::cgroup::Cgroup;
use crate::{sys, JailError};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

/// How long the sandbox's processes get to stop for a copy.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// What it takes to copy a running sandbox's root filesystem. Holds its
/// own fds: the copy may outlive the sandbox's teardown (the tree then
/// stays readable until this is dropped).
#[derive(Debug)]
pub struct RootView {
    tree: OwnedFd,
    pidfd: OwnedFd,
    host_root: u32,
    cgroup: Cgroup,
}

/// The sandbox stopped by [`RootView::freeze`]. [`Frozen::thaw`] lets it
/// run again and says if that failed; dropping it thaws too (on every
/// error path), ignoring failure.
#[derive(Debug)]
pub struct Frozen<'a> {
    cgroup: &'a Cgroup,
    thawed: bool,
}

impl Frozen<'_> {
    pub fn thaw(mut self) -> Result<(), JailError> {
        self.thawed = true;
        self.cgroup.thaw()
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if !self.thawed {
            let _ = self.cgroup.thaw();
        }
    }
}

impl RootView {
    pub(crate) fn new(tree: OwnedFd, pidfd: OwnedFd, host_root: u32, cgroup: Cgroup) -> Self {
        Self {
            tree,
            pidfd,
            host_root,
            cgroup,
        }
    }

    /// The root of the tree: an O_PATH fd of a detached mount (close-on-
    /// exec; a child that is to read it must clear that). Reachable as
    /// `/proc/self/fd/N` in any mount namespace.
    pub fn tree(&self) -> BorrowedFd<'_> {
        self.tree.as_fd()
    }

    /// The host uid (and gid) of the sandbox's root: what a process that
    /// ran [`RootView::confine`] is, seen from the host.
    pub fn host_root(&self) -> u32 {
        self.host_root
    }

    /// Whether [`RootView::freeze`] can work on this host (cgroup v2, or
    /// v1 with the freezer controller mounted).
    pub fn can_freeze(&self) -> bool {
        self.cgroup.can_freeze()
    }

    /// Stops every process of the sandbox until the guard is dropped.
    pub fn freeze(&self) -> Result<Frozen<'_>, JailError> {
        self.cgroup.freeze(FREEZE_TIMEOUT)?;
        Ok(Frozen {
            cgroup: &self.cgroup,
            thawed: false,
        })
    }

    /// Code for a forked, single-threaded child to run before exec
    /// (`CommandExt::pre_exec`): it drops supplementary groups, enters the
    /// sandbox's user namespace and becomes its root (uid and gid 0 there,
    /// [`RootView::host_root`] on the host), with `no_new_privs`. It stays
    /// in the host's mount, pid and network namespaces, where that user
    /// namespace holds no capability. Async-signal-safe: raw syscalls on
    /// integers captured here (the pidfd stays open while `self` lives,
    /// which must span the child's exec).
    pub fn confine(&self) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
        let pidfd: RawFd = self.pidfd.as_raw_fd();
        move || {
            // SAFETY: plain syscalls with integer arguments and a null
            // group list, in a child between fork and exec: no allocation,
            // no locks. setns to a user namespace needs a single-threaded
            // caller, which a forked child is.
            unsafe {
                sys::check_int(libc::setgroups(0, std::ptr::null()))?;
                sys::check_int(libc::setns(pidfd, libc::CLONE_NEWUSER))?;
                sys::check_int(libc::setresgid(0, 0, 0))?;
                sys::check_int(libc::setresuid(0, 0, 0))?;
                sys::check_int(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            }
            Ok(())
        }
    }
}
