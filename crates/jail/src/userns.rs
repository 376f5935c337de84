//! Creates a sandbox's user namespace before any sandbox process exists.
//!
//! The idmapped mount of the image needs the namespace's fd while the
//! sandbox's first process is still host root (only host root may idmap an
//! ext4 mount), so the namespace is made by a short-lived holder process:
//! it unshares a user namespace and waits; we write its uid/gid maps, keep
//! an fd to the namespace, and let it exit. The namespace lives on through
//! the fd.
//!
//! For a sandbox with a network ([`crate::NetworkSpec`]) the holder also
//! makes the sandbox's network namespace, owned by the new user namespace:
//! the sandbox's first process enters it while still host root to create
//! the TUN device (see [`crate::net`]).

use crate::sys;
use crate::uidpool::RANGE;
use crate::JailError;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The namespaces made by [`create`].
pub struct Namespaces {
    pub user: OwnedFd,
    /// A network namespace owned by `user`, when asked for.
    pub net: Option<OwnedFd>,
}

/// What the holder reports on its `ready` pipe.
const READY_OK: u8 = 1;
const READY_NO_USERNS: u8 = 0;
const READY_NO_NETNS: u8 = 2;

/// Returns an fd of a new user namespace mapping 0..RANGE to
/// `host_base..host_base+RANGE` for both uids and gids, and with `netns` an
/// fd of a new network namespace that it owns.
pub fn create(host_base: u32, netns: bool) -> Result<Namespaces, JailError> {
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    // SAFETY: the child only makes raw syscalls (unshare, write, read, _exit)
    // and touches no locks or allocator state of the parent.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(JailError::io(
            "fork (user namespace holder)",
            io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        // SAFETY: raw syscalls only; see above.
        unsafe {
            // Keep only our ends: other fds (ours or those of sandboxes being
            // set up on other threads) must not stay open in this process.
            sys::close_fds_except(&mut [ready_w, go_r]);
            let ok = if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                READY_NO_USERNS
            } else if netns && libc::unshare(libc::CLONE_NEWNET) != 0 {
                READY_NO_NETNS
            } else {
                READY_OK
            };
            libc::write(ready_w, (&ok as *const u8).cast(), 1);
            let mut b = 0u8;
            libc::read(go_r, (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    sys::close(ready_w);
    sys::close(go_r);
    let result = map_and_open(pid, host_base, netns, ready_r);
    sys::close(ready_r);
    // An explicit byte, not EOF: a concurrent fork may hold a copy of go_w.
    let _ = sys::write_all(go_w, &[1]);
    sys::close(go_w);
    reap(pid);
    result
}

fn map_and_open(
    pid: libc::pid_t,
    host_base: u32,
    netns: bool,
    ready_r: RawFd,
) -> Result<Namespaces, JailError> {
    let mut ok = [0u8; 1];
    let n = sys::read_full(ready_r, &mut ok)
        .map_err(|e| JailError::io("waiting for user namespace holder", e))?;
    if n == 1 && ok[0] == READY_NO_NETNS {
        return Err(JailError::Setup {
            step: "unshare(CLONE_NEWNET)",
            source: io::Error::other("the kernel refused to create a network namespace"),
        });
    }
    if n != 1 || ok[0] != READY_OK {
        return Err(JailError::Setup {
            step: "unshare(CLONE_NEWUSER)",
            source: io::Error::other(
                "the kernel refused to create a user namespace (is user.max_user_namespaces 0?)",
            ),
        });
    }
    let map = format!("0 {host_base} {RANGE}\n");
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, &map).map_err(|e| JailError::path("writing", &path, e))?;
    }
    let open = |ns: &str| {
        let path = format!("/proc/{pid}/ns/{ns}");
        std::fs::File::open(&path)
            .map(OwnedFd::from)
            .map_err(|e| JailError::path("opening", &path, e))
    };
    Ok(Namespaces {
        user: open("user")?,
        net: if netns { Some(open("net")?) } else { None },
    })
}

fn pipe() -> Result<(RawFd, RawFd), JailError> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(JailError::io("pipe2", io::Error::last_os_error()));
    }
    Ok((fds[0], fds[1]))
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
}

/// Wraps a raw fd returned by a syscall.
pub(crate) fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller passes a freshly created fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
