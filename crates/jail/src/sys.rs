//! Thin wrappers over the raw syscalls the jail needs, including the new
//! mount API that libc does not wrap (`open_tree`, `mount_setattr`,
//! `move_mount`). None of them allocate: they are called between `fork` and
//! `exec` in a child of a multi-threaded parent, where only
//! async-signal-safe work is allowed.

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;

pub const OPEN_TREE_CLONE: libc::c_uint = 1;
pub const AT_RECURSIVE: libc::c_uint = 0x8000;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
pub const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
/// `RESOLVE_*` flags of `openat2` (`<linux/openat2.h>`).
const RESOLVE_NO_XDEV: u64 = 0x01;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// `struct open_how` from `<linux/openat2.h>`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `struct mount_attr` from `<linux/mount.h>`.
#[repr(C)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

/// Turns a `-1` return into the current errno.
pub fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub fn check_int(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let p = |s: Option<&CStr>| s.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: all pointers are NUL-terminated strings or null, valid for the call.
    let ret = unsafe { libc::mount(p(source), target.as_ptr(), p(fstype), flags, p(data).cast()) };
    check_int(ret).map(drop)
}

/// Clones the mount tree at `path` into a detached mount, returning its fd.
pub fn open_tree_clone(path: &CStr) -> io::Result<RawFd> {
    // SAFETY: path is a valid C string; flags are plain integers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
        )
    };
    check(ret).map(|fd| fd as RawFd)
}

/// A detached clone of the mount at `path` alone, without the mounts
/// under it (no `AT_RECURSIVE`): an O_PATH fd of its root, close-on-exec.
pub fn open_tree_single(path: &CStr) -> io::Result<RawFd> {
    // SAFETY: path is a valid C string; flags are plain integers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    check(ret).map(|fd| fd as RawFd)
}

/// Makes the detached mount `mount_fd` show files through the id mapping of
/// the user namespace `userns_fd`.
pub fn idmap_mount(mount_fd: RawFd, userns_fd: RawFd) -> io::Result<()> {
    idmap_mount_with(mount_fd, userns_fd, 0)
}

/// [`idmap_mount`], also setting the `MOUNT_ATTR_*` flags in `extra`.
pub fn idmap_mount_with(mount_fd: RawFd, userns_fd: RawFd, extra: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | extra,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns_fd as u64,
    };
    let empty = c"";
    // SAFETY: attr lives for the call and its size is passed; empty path with AT_EMPTY_PATH.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount_fd,
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(ret).map(drop)
}

/// Attaches the detached mount `mount_fd` at `target`.
pub fn move_mount_to(mount_fd: RawFd, target: &CStr) -> io::Result<()> {
    let empty = c"";
    // SAFETY: valid fd and C strings for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount_fd,
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    check(ret).map(drop)
}

/// Attaches the detached mount `mount_fd` onto the directory open at
/// `target_fd` (no path is resolved).
pub fn move_mount_onto(mount_fd: RawFd, target_fd: RawFd) -> io::Result<()> {
    let empty = c"";
    // SAFETY: valid fds and C strings for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount_fd,
            empty.as_ptr(),
            target_fd,
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    check(ret).map(drop)
}

/// Opens the directory `path` (relative) as an `O_PATH` fd, resolving it as
/// if `root_fd` were `/`: `..` and absolute symlinks cannot leave it, magic
/// links (`/proc/self/...`) are refused, and so is crossing into another
/// mount.
pub fn open_dir_in_root(root_fd: RawFd, path: &CStr) -> io::Result<RawFd> {
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
    };
    // SAFETY: `how` lives for the call and its size is passed; valid C string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root_fd,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    check(ret).map(|fd| fd as RawFd)
}

/// Creates directory `name` in the directory open at `dir_fd`, owned by
/// `owner` (uid and gid). An existing entry is left as it is (`EEXIST` is
/// not an error: the caller opens what is there, refusing a non-directory).
pub fn mkdir_owned_at(
    dir_fd: RawFd,
    name: &CStr,
    mode: libc::mode_t,
    owner: u32,
) -> io::Result<()> {
    // SAFETY: valid fd and C string.
    match check_int(unsafe { libc::mkdirat(dir_fd, name.as_ptr(), mode) }) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Ok(()),
        Err(e) => return Err(e),
    }
    // SAFETY: valid fd and C string; the new entry is a directory we just
    // made, and AT_SYMLINK_NOFOLLOW keeps a racing symlink unfollowed.
    check_int(unsafe {
        libc::fchownat(
            dir_fd,
            name.as_ptr(),
            owner,
            owner,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// Opens `path` as an `O_PATH` directory fd.
pub fn open_dir(path: &CStr) -> io::Result<RawFd> {
    // SAFETY: valid C string.
    check_int(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
}

pub fn close(fd: RawFd) {
    // SAFETY: closing an fd we own; errors are irrelevant here.
    unsafe {
        libc::close(fd);
    }
}

/// Writes all of `buf` to `fd`, retrying on EINTR. No allocation.
pub fn write_all(fd: RawFd, buf: &[u8]) -> io::Result<()> {
    // SAFETY: the slice is valid for its length.
    all_of(buf, |b| unsafe {
        libc::write(fd, b.as_ptr().cast(), b.len())
    })
}

/// Feeds `buf` to `op` (a write-like syscall returning bytes taken, or -1)
/// until all of it is taken, retrying on EINTR. No allocation.
fn all_of(mut buf: &[u8], mut op: impl FnMut(&[u8]) -> isize) -> io::Result<()> {
    while !buf.is_empty() {
        let n = op(buf);
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Reads until `buf` is full or EOF; returns the number of bytes read.
pub fn read_full(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the pointer and length describe the unfilled part of buf.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    Ok(got)
}

/// Opens `path` relative to the current directory (no allocation).
pub fn open(path: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<RawFd> {
    // SAFETY: valid C string.
    check_int(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, mode) })
}

/// Writes a short string to a file (e.g. `/proc/PID/uid_map`).
pub fn write_file(path: &CStr, content: &[u8]) -> io::Result<()> {
    let fd = open(path, libc::O_WRONLY, 0)?;
    let res = write_all(fd, content);
    close(fd);
    res
}

pub fn pidfd_open(pid: libc::pid_t) -> io::Result<RawFd> {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) }).map(|fd| fd as RawFd)
}

pub fn pidfd_send_signal(pidfd: RawFd, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: plain integer arguments and a null siginfo.
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })
    .map(drop)
}

/// Closes every fd from 3 up except those in `keep` (sorted in place).
///
/// Called first thing in forked children: a concurrent fork on another
/// thread may have handed this child fds of other sandboxes being set up
/// (pipes, sockets), and holding them would delay or block those sandboxes.
pub fn close_fds_except(keep: &mut [RawFd]) {
    // Insertion sort: tiny slice, no allocation.
    for i in 1..keep.len() {
        let mut j = i;
        while j > 0 && keep[j - 1] > keep[j] {
            keep.swap(j - 1, j);
            j -= 1;
        }
    }
    let mut next: u32 = 3;
    for &fd in keep.iter() {
        if fd < 3 || (fd as u32) < next {
            continue;
        }
        if (fd as u32) > next {
            // SAFETY: close_range on a range of fds this process owns.
            unsafe { libc::syscall(libc::SYS_close_range, next, fd as u32 - 1, 0) };
        }
        next = fd as u32 + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, next, u32::MAX, 0) };
}

/// Sends all of `buf` on the socket `fd` without raising SIGPIPE, retrying
/// on EINTR. No allocation.
pub fn send_all(fd: RawFd, buf: &[u8]) -> io::Result<()> {
    // SAFETY: the slice is valid for its length.
    all_of(buf, |b| unsafe {
        libc::send(fd, b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL)
    })
}

/// Most fds [`send_with_fds`] passes in one message.
pub const MAX_SENT_FDS: usize = 2;

/// Room for one SCM_RIGHTS message of [`MAX_SENT_FDS`] fds.
// SAFETY: CMSG_SPACE only does arithmetic on its argument.
const SENT_FDS_SPACE: usize =
    unsafe { libc::CMSG_SPACE((MAX_SENT_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;

/// A control-message buffer aligned for `cmsghdr`, on the stack.
#[repr(C)]
union CmsgBuf {
    _align: libc::cmsghdr,
    bytes: [u8; SENT_FDS_SPACE],
}

/// Sends `buf` on the unix socket `sock` with `fds` attached (SCM_RIGHTS;
/// the receiver gets its own copies). No allocation.
pub fn send_with_fds(sock: RawFd, buf: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if buf.is_empty() || fds.is_empty() || fds.len() > MAX_SENT_FDS {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let data_len = std::mem::size_of_val(fds);
    let mut control = CmsgBuf {
        bytes: [0; SENT_FDS_SPACE],
    };
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&mut control as *mut CmsgBuf).cast();
    // SAFETY: arithmetic only.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(data_len as u32) } as usize;
    // SAFETY: msg_control points at `control`, which is aligned for cmsghdr
    // and at least msg_controllen bytes long, so the first header and its
    // data (data_len bytes, within CMSG_SPACE) lie inside it.
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(data_len as u32) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), data_len);
        loop {
            let n = libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
            if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break n;
            }
        }
    };
    let sent = check(sent as libc::c_long)? as usize;
    // The fds went with the first byte; send any rest plainly.
    send_all(sock, &buf[sent..])
}
