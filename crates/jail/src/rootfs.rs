//! The sandbox root filesystem: an overlay whose lower layer is the image
//! seen through an idmapped mount (so image files owned by host root appear
//! owned by sandbox root), whose upper layer is a tmpfs of `--disk` bytes,
//! with a fresh /proc, a minimal /dev and a private devpts.
//!
//! [`RootfsPlan::new`] (parent, may allocate) turns paths and limits into C
//! strings; [`RootfsPlan::mount_host_side`] and
//! [`RootfsPlan::mount_proc_and_pivot`] run in the sandbox's first process
//! between fork and exec and do not allocate.

use crate::binds::{Bind, BindPlan};
use crate::sys::{self, mount};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::RawFd;
use std::path::Path;

/// Host device nodes bind-mounted into the sandbox's /dev.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Symlinks created in /dev: (name, target).
const DEV_LINKS: [(&str, &str); 5] = [
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// One step of the set-up, named in errors.
pub type Step = &'static str;

pub struct RootfsPlan {
    image: CString,
    lower: CString,
    rw: CString,
    upper: CString,
    work: CString,
    root: CString,
    rw_opts: CString,
    overlay_opts: CString,
    dev: CString,
    dev_opts: CString,
    devices: Vec<(CString, CString)>,
    dev_links: Vec<(CString, CString)>,
    pts: CString,
    pts_opts: CString,
    shm: CString,
    shm_opts: CString,
    proc_dir: CString,
    tmp_dir: CString,
    host_base: u32,
    binds: Vec<BindPlan>,
    /// The image is a writable volume used as the root itself (no
    /// overlay): writes persist in it.
    persistent: bool,
}

fn c(path: impl AsRef<Path>) -> CString {
    CString::new(path.as_ref().as_os_str().as_encoded_bytes()).expect("paths contain no NUL")
}

fn cs(s: String) -> CString {
    CString::new(s).expect("options contain no NUL")
}

impl RootfsPlan {
    /// `state` is the sandbox's private directory on the host (it must exist).
    pub fn new(
        image: &Path,
        state: &Path,
        host_base: u32,
        disk_bytes: u64,
        binds: &[Bind],
        persistent: bool,
    ) -> io::Result<Self> {
        for d in ["lower", "rw", "root"] {
            std::fs::create_dir_all(state.join(d))?;
        }
        let rw = state.join("rw");
        let root = state.join("root");
        let dev = root.join("dev");
        let ids = format!("uid={host_base},gid={host_base}");
        Ok(Self {
            image: c(image),
            lower: c(state.join("lower")),
            rw: c(&rw),
            upper: c(rw.join("upper")),
            work: c(rw.join("work")),
            root: c(&root),
            rw_opts: cs(format!("size={disk_bytes},mode=0755")),
            overlay_opts: cs(format!(
                "lowerdir={},upperdir={},workdir={}",
                state.join("lower").display(),
                rw.join("upper").display(),
                rw.join("work").display()
            )),
            dev: c(&dev),
            dev_opts: cs(format!("size=64k,nr_inodes=64,mode=0755,{ids}")),
            devices: DEVICES
                .iter()
                .map(|d| (c(Path::new("/dev").join(d)), c(dev.join(d))))
                .collect(),
            dev_links: DEV_LINKS
                .iter()
                .map(|(n, t)| (c(dev.join(n)), c(t)))
                .collect(),
            pts: c(dev.join("pts")),
            // gid 5 is the `tty` group of Debian images.
            pts_opts: cs(format!(
                "newinstance,ptmxmode=0666,mode=0620,gid={}",
                host_base + 5
            )),
            shm: c(dev.join("shm")),
            shm_opts: cs(format!("size=64m,mode=1777,{ids}")),
            proc_dir: c(root.join("proc")),
            tmp_dir: c(root.join("tmp")),
            host_base,
            binds: binds.iter().map(BindPlan::new).collect::<io::Result<_>>()?,
            persistent,
        })
    }

    /// Where the root filesystem is mounted on the host side.
    pub fn root(&self) -> &CStr {
        &self.root
    }

    /// Builds the root filesystem at `state/root` in the current mount
    /// namespace, which must be a private one of the sandbox. Runs as host
    /// root, before entering the sandbox's user namespace: only host root
    /// may idmap the image's mount.
    pub fn mount_host_side(&self, userns_fd: RawFd) -> Result<(), (Step, io::Error)> {
        let none: Option<&CStr> = None;
        let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
        if self.persistent {
            self.mount_persistent_root(userns_fd)?;
        } else {
            self.mount_overlay_root(userns_fd)?;
        }
        if !self.binds.is_empty() {
            let root_fd = sys::open_dir(&self.root).map_err(|e| ("open root", e))?;
            let bound = self
                .binds
                .iter()
                .try_for_each(|b| b.mount(root_fd, userns_fd, self.host_base));
            sys::close(root_fd);
            bound.map_err(|e| ("bind volume", e))?;
        }

        ensure_dir(&self.dev, 0o755, self.host_base).map_err(|e| ("mkdir /dev", e))?;
        ensure_dir(&self.proc_dir, 0o555, self.host_base).map_err(|e| ("mkdir /proc", e))?;
        ensure_dir(&self.tmp_dir, 0o1777, self.host_base).map_err(|e| ("mkdir /tmp", e))?;
        mount(
            Some(c"tmpfs"),
            &self.dev,
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some(&self.dev_opts),
        )
        .map_err(|e| ("mount /dev", e))?;
        for (host, target) in &self.devices {
            touch(target).map_err(|e| ("create device mount point", e))?;
            mount(Some(host), target, none, libc::MS_BIND, None).map_err(|e| ("bind device", e))?;
        }
        mkdir(&self.pts, 0o755).map_err(|e| ("mkdir /dev/pts", e))?;
        mount(
            Some(c"devpts"),
            &self.pts,
            Some(c"devpts"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some(&self.pts_opts),
        )
        .map_err(|e| ("mount /dev/pts", e))?;
        mkdir(&self.shm, 0o1777).map_err(|e| ("mkdir /dev/shm", e))?;
        mount(
            Some(c"tmpfs"),
            &self.shm,
            Some(c"tmpfs"),
            nosuid_nodev,
            Some(&self.shm_opts),
        )
        .map_err(|e| ("mount /dev/shm", e))?;
        for (link, target) in &self.dev_links {
            // SAFETY: valid C strings.
            sys::check_int(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) })
                .map_err(|e| ("symlink in /dev", e))?;
            // SAFETY: valid C string; lchown so the link itself is sandbox-owned.
            unsafe { libc::lchown(link.as_ptr(), self.host_base, self.host_base) };
        }
        Ok(())
    }

    /// The root as an overlay: the image (idmapped) under a tmpfs of the
    /// disk limit.
    fn mount_overlay_root(&self, userns_fd: RawFd) -> Result<(), (Step, io::Error)> {
        let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
        mount(
            Some(c"tmpfs"),
            &self.rw,
            Some(c"tmpfs"),
            nosuid_nodev,
            Some(&self.rw_opts),
        )
        .map_err(|e| ("mount writable layer (tmpfs)", e))?;
        mkdir(&self.upper, 0o755).map_err(|e| ("mkdir upper", e))?;
        mkdir(&self.work, 0o700).map_err(|e| ("mkdir work", e))?;
        chown(&self.upper, self.host_base).map_err(|e| ("chown upper", e))?;

        let tree = sys::open_tree_clone(&self.image).map_err(|e| ("open_tree(image)", e))?;
        let idmapped =
            sys::idmap_mount(tree, userns_fd).and_then(|()| sys::move_mount_to(tree, &self.lower));
        sys::close(tree);
        idmapped.map_err(|e| ("idmapped mount of the image", e))?;
        mount(
            Some(c"overlay"),
            &self.root,
            Some(c"overlay"),
            libc::MS_NOSUID,
            Some(&self.overlay_opts),
        )
        .map_err(|e| ("mount overlay", e))?;
        Ok(())
    }

    /// The root as a writable volume itself, idmapped like the image,
    /// `nosuid` and `nodev`: what the sandbox writes persists in it, and
    /// the volume's size is the disk limit.
    fn mount_persistent_root(&self, userns_fd: RawFd) -> Result<(), (Step, io::Error)> {
        let tree = sys::open_tree_clone(&self.image).map_err(|e| ("open_tree(image)", e))?;
        let flags = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
        let mounted = sys::idmap_mount_with(tree, userns_fd, flags)
            .and_then(|()| sys::move_mount_to(tree, &self.root));
        sys::close(tree);
        mounted.map_err(|e| ("mount the root volume", e))
    }

    /// In the sandbox's PID 1, inside its user and mount namespaces: mounts
    /// a /proc of the new pid namespace and makes the root filesystem `/`.
    pub fn mount_proc_and_pivot(&self) -> Result<(), (Step, io::Error)> {
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        mount(Some(c"proc"), &self.proc_dir, Some(c"proc"), flags, None)
            .map_err(|e| ("mount /proc", e))?;
        // Mounts made on the host side are locked in this less privileged
        // namespace, and pivot_root refuses a locked new root. A recursive
        // bind of the root onto itself, made here, is not locked.
        mount(
            Some(&self.root),
            &self.root,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )
        .map_err(|e| ("bind root onto itself", e))?;
        // SAFETY: valid C string.
        sys::check_int(unsafe { libc::chdir(self.root.as_ptr()) })
            .map_err(|e| ("chdir root", e))?;
        // pivot_root(".", ".") stacks the old root on top of the new one;
        // detaching it leaves only the sandbox's tree. No directory for the
        // old root is needed inside the image.
        let dot = c".";
        // SAFETY: valid C strings.
        sys::check(unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) })
            .map_err(|e| ("pivot_root", e))?;
        // SAFETY: valid C string.
        sys::check_int(unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) })
            .map_err(|e| ("detach old root", e))?;
        // SAFETY: valid C string.
        sys::check_int(unsafe { libc::chdir(c"/".as_ptr()) }).map_err(|e| ("chdir /", e))?;
        Ok(())
    }
}

fn mkdir(path: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid C string.
    sys::check_int(unsafe { libc::mkdir(path.as_ptr(), mode) })?;
    // SAFETY: valid C string; mkdir's mode is filtered by the umask.
    sys::check_int(unsafe { libc::chmod(path.as_ptr(), mode) }).map(drop)
}

fn ensure_dir(path: &CStr, mode: libc::mode_t, owner: u32) -> io::Result<()> {
    match mkdir(path, mode) {
        Ok(()) => chown(path, owner),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

fn chown(path: &CStr, owner: u32) -> io::Result<()> {
    // SAFETY: valid C string.
    sys::check_int(unsafe { libc::chown(path.as_ptr(), owner, owner) }).map(drop)
}

fn touch(path: &CStr) -> io::Result<()> {
    let fd = sys::open(path, libc::O_CREAT | libc::O_WRONLY, 0o666)?;
    sys::close(fd);
    Ok(())
}
