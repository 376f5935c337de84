//! The pool and the operations on volumes and snapshots.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::Context;
use crate::tools::{MKFS_EXT4, MKFS_XFS, RESIZE2FS};
use crate::{loopdev, mounts, Object, VolumeError};

/// mkfs.xfs refuses filesystems smaller than this.
pub const MIN_POOL_BYTES: u64 = 300 << 20;
/// The smallest volume: room for ext4's 4 MiB journal and some data.
pub const MIN_VOLUME_BYTES: u64 = 16 << 20;

const FIFREEZE: libc::c_ulong = 0xC004_5877; // _IOWR('X', 119, int)
const FITHAW: libc::c_ulong = 0xC004_5878; // _IOWR('X', 120, int)

/// The storage engine rooted at one directory. See the crate docs.
pub struct Pool {
    dir: PathBuf,
    image: PathBuf,
    pool_mount: PathBuf,
    mnt: PathBuf,
    requested_bytes: u64,
    /// The pool's size once it is mounted; `None` before it is created or
    /// after [`Pool::unmount_pool`].
    size: Mutex<Option<u64>>,
    /// Held across "is any loop device backed by this image?" and the
    /// binding or unlinking that depends on the answer.
    attach_lock: Mutex<()>,
    /// Shared by operations that leave a `.tmp` behind while they run;
    /// exclusive for [`Pool::remove_orphans`] (which may then treat every
    /// `.tmp` as garbage) and [`Pool::unmount_pool`].
    ops: RwLock<()>,
    _lock: Flock<File>,
}

/// An attached volume: its ext4 filesystem mounted at [`Attached::path`].
/// Dropping it detaches it too (errors are then only logged).
#[derive(Debug)]
pub struct Attached {
    id: String,
    path: PathBuf,
    detached: bool,
}

impl Attached {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the volume's filesystem is mounted (`<dir>/mnt/<id>`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts the volume from our mount namespace and removes the mount
    /// point. Removing the directory also makes the kernel detach the copies
    /// of this mount that other mount namespaces got by being cloned from
    /// ours while it was attached (a mount point that is deleted loses its
    /// mounts everywhere); a sandbox's own bind mount of the volume, at
    /// another path, stays. The loop device goes away by autoclear once no
    /// namespace holds the filesystem any more (an ending sandbox's may, for
    /// a moment).
    pub fn detach(mut self) -> Result<(), VolumeError> {
        self.detached = true;
        detach_mount(&self.path)
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if !self.detached {
            if let Err(e) = detach_mount(&self.path) {
                tracing::warn!(volume = %self.id, error = %e, "detaching a dropped volume");
            }
        }
    }
}

fn detach_mount(path: &Path) -> Result<(), VolumeError> {
    mounts::unmount(path, true).ctx(|| format!("unmounting {}", path.display()))?;
    match fs::remove_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).ctx(|| format!("removing mount point {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Bytes a file really occupies (st_blocks × 512): for a sparse image, what
/// has been written, not its apparent size.
pub fn allocated_bytes(path: &Path) -> io::Result<u64> {
    Ok(fs::metadata(path)?.blocks() * 512)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data cannot be left inconsistent by a panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ids become file names, so they are kept to a safe alphabet.
fn validate_id(object: Object, id: &str) -> Result<(), VolumeError> {
    let reason = if id.is_empty() || id.len() > 64 {
        Some("must be 1 to 64 characters")
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Some("may only contain A-Z, a-z, 0-9, '_' and '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(VolumeError::InvalidId {
            object,
            id: id.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn mkdir_private(path: &Path) -> Result<(), VolumeError> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                .ctx(|| format!("setting mode 0700 on {}", path.display()))
        }
        Err(e) => Err(e).ctx(|| format!("creating {}", path.display())),
    }
}

fn fsync_dir(path: &Path) -> Result<(), VolumeError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing directory {}", path.display()))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// rename(2) that fails with EEXIST instead of replacing `to`.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (cstring(from)?, cstring(to)?);
    // SAFETY: both are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Writes `dst` atomically: `fill` writes `<dst>.tmp`, which is then synced
/// and renamed into place without replacing anything, and the directory is
/// synced. On failure the `.tmp` is removed.
fn write_atomically(
    dst: &Path,
    object: Object,
    id: &str,
    fill: impl FnOnce(&Path) -> Result<(), VolumeError>,
) -> Result<(), VolumeError> {
    let tmp = tmp_path(dst);
    let result = (|| {
        fill(&tmp)?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .ctx(|| format!("syncing {}", tmp.display()))?;
        match rename_noreplace(&tmp, dst) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                return Err(VolumeError::AlreadyExists {
                    object,
                    id: id.to_string(),
                })
            }
            r => r.ctx(|| format!("renaming {} into place", tmp.display()))?,
        }
        fsync_dir(dst.parent().expect("image paths have a parent"))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The tree `mkfs.ext4 -d` copies into a new image (it keeps owners,
/// modes, symlinks and xattrs).
pub enum TreeSource<'a> {
    /// A directory of the host (an image's root filesystem), read by an
    /// mkfs running as the daemon.
    Dir(&'a Path),
    /// A directory tree the daemon should not read with its own
    /// privileges (a tenant's), read by a confined mkfs.
    Confined(ConfinedTree<'a>),
}

impl<'a> From<&'a Path> for TreeSource<'a> {
    fn from(p: &'a Path) -> Self {
        TreeSource::Dir(p)
    }
}

impl<'a> From<&'a PathBuf> for TreeSource<'a> {
    fn from(p: &'a PathBuf) -> Self {
        TreeSource::Dir(p)
    }
}

/// A tree open at `dir`, copied by an mkfs that runs `confine` between
/// fork and exec to drop to host uid and gid `owner` (e.g. into a user
/// namespace, where it sees the tree's owners as that namespace maps
/// them). mkfs reaches the tree and the image through `/proc/self/fd`; the
/// image file is lent to `owner` while mkfs writes it, and is the
/// daemon's again (0:0, 0600) before it is renamed into place.
pub struct ConfinedTree<'a> {
    pub dir: BorrowedFd<'a>,
    pub owner: u32,
    /// Must only make async-signal-safe calls (`CommandExt::pre_exec`).
    pub confine: Box<dyn FnMut() -> io::Result<()> + Send + Sync>,
}

/// Makes the ext4 image `path` of `bytes` bytes, filled from the tree
/// `populate` when given (`mkfs.ext4 -d` keeps owners and modes), whole or
/// not at all ([`write_atomically`]).
fn format_image(
    path: &Path,
    object: Object,
    id: &str,
    bytes: u64,
    populate: Option<TreeSource<'_>>,
) -> Result<(), VolumeError> {
    if path.exists() {
        return Err(VolumeError::AlreadyExists {
            object,
            id: id.to_string(),
        });
    }
    write_atomically(path, object, id, |tmp| {
        let f = create_private_file(tmp)?;
        f.set_len(bytes)
            .ctx(|| format!("sizing {}", tmp.display()))?;
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("-q"),
            OsStr::new("-F"),
            // Same layout whatever the size (mke2fs.conf would pick 1 KiB
            // blocks for small ones).
            OsStr::new("-b"),
            OsStr::new("4096"),
            // No blocks reserved for (host) root: the sandbox gets all of
            // its capacity.
            OsStr::new("-m"),
            OsStr::new("0"),
            OsStr::new("-O"),
            OsStr::new("has_journal"),
            // Explicit, not "whoever ran mke2fs" (a tree keeps its own).
            OsStr::new("-E"),
            OsStr::new("root_owner=0:0"),
        ];
        match populate {
            None => {
                drop(f);
                args.push(tmp.as_os_str());
                MKFS_EXT4.run(&args)
            }
            Some(TreeSource::Dir(tree)) => {
                drop(f);
                args.extend([OsStr::new("-d"), tree.as_os_str(), tmp.as_os_str()]);
                MKFS_EXT4.run(&args)
            }
            Some(TreeSource::Confined(tree)) => format_confined(tmp, f, args, tree),
        }
    })
}

/// The [`TreeSource::Confined`] case of [`format_image`]: `image` is the
/// open, sized `tmp`.
fn format_confined(
    tmp: &Path,
    image: File,
    args: Vec<&OsStr>,
    tree: ConfinedTree<'_>,
) -> Result<(), VolumeError> {
    let ConfinedTree {
        dir,
        owner,
        mut confine,
    } = tree;
    let (dir_fd, image_fd) = (dir.as_raw_fd(), image.as_raw_fd());
    let chown = |uid: u32| {
        std::os::unix::fs::fchown(&image, Some(uid), Some(uid))
            .ctx(|| format!("chown {uid} {}", tmp.display()))
    };
    // The pool's directories are closed to `owner`; the file itself must
    // be open to it, as mkfs opens it anew through /proc/self/fd.
    chown(owner)?;
    let dir_arg = std::ffi::OsString::from(format!("/proc/self/fd/{dir_fd}"));
    let image_arg = std::ffi::OsString::from(format!("/proc/self/fd/{image_fd}"));
    let mut args = args;
    args.extend([OsStr::new("-d"), dir_arg.as_os_str(), image_arg.as_os_str()]);
    let ran = MKFS_EXT4.run_with(&args, |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure only makes raw syscalls (fcntl here, and
        // `confine`, which promises async-signal-safety) between fork and
        // exec. The fds stay open in the parent until the child has exited.
        unsafe {
            cmd.pre_exec(move || {
                for fd in [dir_fd, image_fd] {
                    // The child's own copy of the fd: mkfs inherits it.
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                confine()
            });
        }
    });
    // The daemon's again whatever happened (a failure removes it anyway).
    let back = chown(0).and_then(|()| {
        image
            .set_permissions(fs::Permissions::from_mode(0o600))
            .ctx(|| format!("chmod 0600 {}", tmp.display()))
    });
    ran.and(back)
}

fn create_private_file(path: &Path) -> Result<File, VolumeError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .ctx(|| format!("creating {}", path.display()))
}

/// FIFREEZE on a mounted filesystem, undone on drop: a snapshot of an
/// attached volume then captures a clean, consistent filesystem instead of
/// one caught mid-write. (If the daemon died while frozen, writers in the
/// sandbox would block; `reap_mounts` thaws before unmounting.)
struct Frozen(File);

fn freeze(mount_point: &Path) -> io::Result<Frozen> {
    let dir = File::open(mount_point)?;
    // SAFETY: FIFREEZE takes no meaningful argument; the fd is an open
    // directory on the filesystem to freeze.
    if unsafe { libc::ioctl(dir.as_raw_fd(), FIFREEZE, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Frozen(dir))
}

fn thaw(dir: &File) -> io::Result<()> {
    // SAFETY: FITHAW takes no meaningful argument; the fd is open.
    if unsafe { libc::ioctl(dir.as_raw_fd(), FITHAW, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Err(e) = thaw(&self.0) {
            tracing::error!(error = %e, "thawing a volume after a snapshot");
        }
    }
}

impl Pool {
    /// Opens the engine at `dir` (created if missing). `pool_bytes` is the
    /// size to give the pool when the first volume creates it. If the pool
    /// exists but is not mounted (after a reboot or a crash), it is mounted.
    /// Only one `Pool` may have a directory open at a time (an flock on
    /// `<dir>/lock`); a second gets [`VolumeError::InUse`].
    pub fn open(dir: impl AsRef<Path>, pool_bytes: u64) -> Result<Pool, VolumeError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        // Canonical, because loop devices report their backing files that
        // way and we compare paths.
        let dir = dir
            .canonicalize()
            .ctx(|| format!("resolving {}", dir.display()))?;
        let lock_path = dir.join("lock");
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&lock_path)
            .ctx(|| format!("opening {}", lock_path.display()))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            if e == nix::errno::Errno::EWOULDBLOCK {
                VolumeError::InUse {
                    object: Object::Pool,
                    id: dir.display().to_string(),
                }
            } else {
                VolumeError::Io {
                    context: format!("locking {}", lock_path.display()),
                    source: e.into(),
                }
            }
        })?;
        let pool = Pool {
            image: dir.join("pool.img"),
            pool_mount: dir.join("pool"),
            // 0700: the files in a volume are owned by the sandbox's uids as
            // host uids (0..65535 seen through the idmapped mount), so a host
            // user with a matching uid must not be able to reach them here.
            mnt: dir.join("mnt"),
            dir,
            requested_bytes: pool_bytes,
            size: Mutex::new(None),
            attach_lock: Mutex::new(()),
            ops: RwLock::new(()),
            _lock: lock,
        };
        mkdir_private(&pool.mnt)?;
        // Left by a crash while the pool was being made.
        let _ = fs::remove_file(tmp_path(&pool.image));
        pool.ready(false)?;
        Ok(pool)
    }

    /// The engine's directory (canonical). Once the pool is mounted it is
    /// a private mount point of its own, holding the pool and every
    /// attached volume: a mount namespace copied from the daemon's (a
    /// sandbox's runtime) drops all of them with one `MNT_DETACH` of this
    /// path, so that it never keeps a volume of another sandbox busy.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes [`Pool::dir`] a private bind mount of itself (see there).
    fn bind_dir_onto_itself(&self) -> Result<(), VolumeError> {
        if mounts::mount_at(&self.dir)
            .ctx(|| "reading /proc/self/mountinfo".into())?
            .is_some()
        {
            return Ok(());
        }
        mount(
            Some(&self.dir),
            &self.dir,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .ctx(|| format!("binding {} onto itself", self.dir.display()))?;
        mount(
            None::<&str>,
            &self.dir,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .ctx(|| format!("making {} private", self.dir.display()))
    }

    /// The pool's effective size in bytes, if it has been created and is
    /// mounted. It can be less than asked for: see [`Pool::ensure_created`].
    pub fn size_bytes(&self) -> Option<u64> {
        *lock(&self.size)
    }

    /// Creates the pool now if it does not exist (otherwise the first volume
    /// does) and mounts it; returns its effective size: the `pool_bytes`
    /// given to [`Pool::open`], capped at 90% of the free space of the
    /// filesystem holding the directory when the pool is first made, in
    /// whole MiB.
    pub fn ensure_created(&self) -> Result<u64, VolumeError> {
        Ok(self.ready(true)?.expect("created"))
    }

    /// Where the image of volume `id` lives (whether or not it exists).
    pub fn volume_path(&self, id: &str) -> PathBuf {
        self.pool_mount.join("volumes").join(format!("{id}.ext4"))
    }

    /// Where the image of snapshot `id` lives (whether or not it exists).
    pub fn snapshot_path(&self, id: &str) -> PathBuf {
        self.pool_mount.join("snapshots").join(format!("{id}.ext4"))
    }

    fn mount_point(&self, id: &str) -> PathBuf {
        self.mnt.join(id)
    }

    /// The pool's size once mounted; with `create`, makes it first if
    /// needed. `None`: there is no pool (so no volumes either).
    fn ready(&self, create: bool) -> Result<Option<u64>, VolumeError> {
        let mut size = lock(&self.size);
        if let Some(s) = *size {
            return Ok(Some(s));
        }
        if !self.image.exists() {
            if !create {
                return Ok(None);
            }
            self.create_image()?;
        }
        let s = self.mount_pool()?;
        *size = Some(s);
        Ok(Some(s))
    }

    fn create_image(&self) -> Result<(), VolumeError> {
        MKFS_XFS.find()?;
        let vfs = nix::sys::statvfs::statvfs(&self.dir)
            .ctx(|| format!("statvfs {}", self.dir.display()))?;
        let free = (vfs.blocks_available() as u64).saturating_mul(vfs.fragment_size() as u64);
        let bytes = self.requested_bytes.min(free / 10 * 9) & !((1 << 20) - 1);
        if bytes < MIN_POOL_BYTES {
            return Err(VolumeError::PoolTooSmall {
                bytes,
                minimum: MIN_POOL_BYTES,
            });
        }
        let started = Instant::now();
        write_atomically(&self.image, Object::Pool, "pool.img", |tmp| {
            let f = create_private_file(tmp)?;
            f.set_len(bytes)
                .ctx(|| format!("sizing {}", tmp.display()))?;
            drop(f);
            MKFS_XFS.run(&[
                OsStr::new("-q"),
                OsStr::new("-m"),
                OsStr::new("reflink=1"),
                tmp.as_os_str(),
            ])
        })?;
        tracing::info!(bytes, elapsed = ?started.elapsed(), path = %self.image.display(), "created the volume pool");
        Ok(())
    }

    /// Mounts pool.img at `<dir>/pool` unless it already is; returns its size.
    fn mount_pool(&self) -> Result<u64, VolumeError> {
        self.bind_dir_onto_itself()?;
        mkdir_private(&self.pool_mount)?;
        match mounts::mount_at(&self.pool_mount).ctx(|| "reading /proc/self/mountinfo".into())? {
            Some(m)
                if loopdev::backing_file_of(m.major, m.minor).as_deref() == Some(&*self.image) => {}
            Some(_) => {
                return Err(VolumeError::Io {
                    context: format!("mounting the pool at {}", self.pool_mount.display()),
                    source: io::Error::other(format!(
                        "something other than {} is mounted there",
                        self.image.display()
                    )),
                })
            }
            None => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&self.image)
                    .ctx(|| format!("opening {}", self.image.display()))?;
                let dev = loopdev::attach(&file, &self.image)
                    .ctx(|| format!("setting up a loop device for {}", self.image.display()))?;
                mount(
                    Some(&dev.path),
                    &self.pool_mount,
                    Some("xfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    Some("discard"),
                )
                .ctx(|| {
                    format!(
                        "mounting {} (xfs) at {}",
                        dev.path.display(),
                        self.pool_mount.display()
                    )
                })?;
                // `dev` drops only now: the mount holds the device from here.
            }
        }
        for sub in ["volumes", "snapshots"] {
            mkdir_private(&self.pool_mount.join(sub))?;
        }
        Ok(fs::metadata(&self.image)
            .ctx(|| format!("stat {}", self.image.display()))?
            .len())
    }

    /// Whether anything holds the image: our mount of it or any loop device.
    fn in_use(&self, image: &Path, mount_point: Option<&Path>) -> Result<bool, VolumeError> {
        if let Some(mp) = mount_point {
            if mounts::mount_at(mp)
                .ctx(|| "reading /proc/self/mountinfo".into())?
                .is_some()
            {
                return Ok(true);
            }
        }
        loopdev::in_use(image).ctx(|| "reading /sys/block/loop*/loop/backing_file".into())
    }

    /// Creates volume `id`: a sparse ext4 image of exactly `capacity` bytes
    /// (at least [`MIN_VOLUME_BYTES`], at most the pool's size). Creates the
    /// pool first if there is none.
    pub fn create_volume(&self, id: &str, capacity: u64) -> Result<(), VolumeError> {
        validate_id(Object::Volume, id)?;
        if capacity < MIN_VOLUME_BYTES {
            return Err(VolumeError::InvalidCapacity {
                bytes: capacity,
                reason: format!("the smallest volume is {MIN_VOLUME_BYTES} bytes (16 MiB)"),
            });
        }
        let _ops = self.ops.read().unwrap_or_else(|e| e.into_inner());
        let pool = self.ready(true)?.expect("created");
        if capacity > pool {
            return Err(VolumeError::InvalidCapacity {
                bytes: capacity,
                reason: format!("more than the whole pool ({pool} bytes)"),
            });
        }
        MKFS_EXT4.find()?;
        format_image(&self.volume_path(id), Object::Volume, id, capacity, None)
    }

    /// Snapshots volume `volume_id` as `snapshot_id`: a reflink clone of its
    /// image, instant whatever its size. If the volume is attached here its
    /// filesystem is frozen for the moment of the clone, so the snapshot is
    /// clean; if only a sandbox's namespace still holds it, the snapshot is
    /// as after a power cut (the journal makes it consistent on mount).
    pub fn create_snapshot(&self, volume_id: &str, snapshot_id: &str) -> Result<(), VolumeError> {
        validate_id(Object::Volume, volume_id)?;
        validate_id(Object::Snapshot, snapshot_id)?;
        let _ops = self.ops.read().unwrap_or_else(|e| e.into_inner());
        let not_found = || VolumeError::NotFound {
            object: Object::Volume,
            id: volume_id.to_string(),
        };
        self.ready(false)?.ok_or_else(not_found)?;
        let src = open_image(&self.volume_path(volume_id), not_found)?;
        // Also keeps a second snapshot of the same volume from freezing it
        // twice (EBUSY) and an attach from starting mid-freeze.
        let _attach = lock(&self.attach_lock);
        let mp = self.mount_point(volume_id);
        let _frozen = match mounts::mount_at(&mp).ctx(|| "reading /proc/self/mountinfo".into())? {
            Some(_) => Some(freeze(&mp).ctx(|| format!("freezing {}", mp.display()))?),
            None => None,
        };
        clone_into(
            &src,
            &self.snapshot_path(snapshot_id),
            Object::Snapshot,
            snapshot_id,
            None,
        )
    }

    /// Creates volume `volume_id` as a writable fork of snapshot
    /// `snapshot_id` (a reflink clone: the two share blocks until written).
    pub fn create_volume_from_snapshot(
        &self,
        snapshot_id: &str,
        volume_id: &str,
        capacity: u64,
    ) -> Result<(), VolumeError> {
        validate_id(Object::Snapshot, snapshot_id)?;
        validate_id(Object::Volume, volume_id)?;
        let _ops = self.ops.read().unwrap_or_else(|e| e.into_inner());
        let not_found = || VolumeError::NotFound {
            object: Object::Snapshot,
            id: snapshot_id.to_string(),
        };
        self.ready(false)?.ok_or_else(not_found)?;
        let src = open_image(&self.snapshot_path(snapshot_id), not_found)?;
        let size = src
            .metadata()
            .ctx(|| format!("reading the size of snapshot {snapshot_id}"))?
            .len();
        if capacity < size {
            return Err(VolumeError::InvalidCapacity {
                bytes: capacity,
                reason: format!(
                    "a volume made from a snapshot is at least as big as the snapshot's \
                     volume ({size} bytes)"
                ),
            });
        }
        clone_into(
            &src,
            &self.volume_path(volume_id),
            Object::Volume,
            volume_id,
            (capacity > size).then_some(capacity),
        )
    }

    /// Mounts snapshot `id` read-only at `<dir>/mnt/<id>` (a read-only
    /// loop device, ext4 without journal replay), to boot sandboxes from:
    /// one mount serves every sandbox booted from it (they each put their
    /// own writable layer over it); the caller counts them and detaches
    /// the last.
    pub fn attach_snapshot(&self, id: &str) -> Result<Attached, VolumeError> {
        validate_id(Object::Snapshot, id)?;
        let _ops = self.ops.read().unwrap_or_else(|e| e.into_inner());
        self.mount_image(Object::Snapshot, id, &self.snapshot_path(id), true)
    }

    /// Mounts the ext4 image `image` of `object` `id` at `<dir>/mnt/<id>`
    /// through a loop device: read-write (`discard`, remounted read-only on
    /// errors) or read-only (no journal replay). Refused while the image is
    /// mounted, or for a writable one still held by any loop device: two
    /// writers of one ext4 image would corrupt it.
    fn mount_image(
        &self,
        object: Object,
        id: &str,
        image: &Path,
        read_only: bool,
    ) -> Result<Attached, VolumeError> {
        let not_found = || VolumeError::NotFound {
            object,
            id: id.to_string(),
        };
        self.ready(false)?.ok_or_else(not_found)?;
        let _attach = lock(&self.attach_lock);
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_CLOEXEC)
            .open(image)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => not_found(),
                _ => VolumeError::Io {
                    context: format!("opening {}", image.display()),
                    source: e,
                },
            })?;
        let target = self.mount_point(id);
        let busy = if read_only {
            mounts::mount_at(&target)
                .ctx(|| "reading /proc/self/mountinfo".into())?
                .is_some()
        } else {
            self.in_use(image, Some(&target))?
        };
        if busy {
            return Err(VolumeError::InUse {
                object,
                id: id.to_string(),
            });
        }
        match fs::DirBuilder::new().mode(0o755).create(&target) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(e).ctx(|| format!("creating {}", target.display()))
            }
            _ => {}
        }
        let (flags, options) = if read_only {
            (MsFlags::MS_RDONLY, "noload")
        } else {
            (MsFlags::empty(), "discard,errors=remount-ro")
        };
        let mounted = loopdev::attach_with(&file, image, read_only)
            .ctx(|| format!("setting up a loop device for {}", image.display()))
            .and_then(|dev| {
                mount(
                    Some(&dev.path),
                    &target,
                    Some("ext4"),
                    flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(options),
                )
                .ctx(|| {
                    format!(
                        "mounting {} (ext4) at {}",
                        dev.path.display(),
                        target.display()
                    )
                })
                // `dev` drops here: from now the mount holds the device, and
                // on failure autoclear unbinds it.
            });
        if let Err(e) = mounted {
            let _ = fs::remove_dir(&target);
            return Err(e);
        }
        Ok(Attached {
            id: id.to_string(),
            path: target,
            detached: false,
        })
    }

    /// Makes snapshot `id` from the directory tree `rootfs` (an image's
    /// root filesystem): an ext4 image of `bytes` bytes populated by
    /// `mkfs.ext4 -d`, which keeps owners and modes. Bootable volumes are
    /// forks of it. Takes seconds (it copies the tree), once per image.
    pub fn create_snapshot_from_tree<'a>(
        &self,
        id: &str,
        rootfs: impl Into<TreeSource<'a>>,
        bytes: u64,
    ) -> Result<(), VolumeError> {
        validate_id(Object::Snapshot, id)?;
        let _ops = self.ops.read().unwrap_or_else(|e| e.into_inner());
        self.ready(true)?;
        format_image(
            &self.snapshot_path(id),
            Object::Snapshot,
            id,
            bytes,
            Some(rootfs.into()),
        )
    }

    /// Ids of the snapshot images in the pool (whatever the store says).
    pub fn snapshot_ids(&self) -> Result<Vec<String>, VolumeError> {
        if self.ready(false)?.is_none() {
            return Ok(Vec::new());
        }
        let dir = self.pool_mount.join("snapshots");
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))? {
            let name = entry
                .ctx(|| format!("listing {}", dir.display()))?
                .file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".ext4")) {
                ids.push(id.to_string());
            }
        }
        Ok(ids)
    }

    /// The capacity of snapshot `id`'s volume: its image's size.
    pub fn snapshot_capacity(&self, id: &str) -> Result<u64, VolumeError> {
        validate_id(Object::Snapshot, id)?;
        let path = self.snapshot_path(id);
        fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => VolumeError::NotFound {
                    object: Object::Snapshot,
                    id: id.to_string(),
                },
                _ => VolumeError::Io {
                    context: format!("reading {}", path.display()),
                    source: e,
                },
            })
    }

    /// Attaches volume `id`: binds a loop device to its image and mounts the
    /// ext4 filesystem at `<dir>/mnt/<id>` (nosuid, nodev). Refuses with
    /// [`VolumeError::InUse`] while it is mounted or any loop device is
    /// still backed by the image.
    ///
    /// Right after a detach that refusal can be momentary: the loop device
    /// goes by autoclear when its last opener closes it, and another process
    /// may have it open for a moment: blkid or udev probing it, or a child
    /// that another thread of the daemon was spawning while we held the
    /// device's descriptor (a child has copies of all descriptors, close-on-
    /// exec ones too, until it calls exec, which under load can take a
    /// while). So the daemon should use [`Pool::attach_waiting`], and retry
    /// [`Pool::delete_volume`] on `InUse` likewise.
    pub fn attach(&self, id: &str) -> Result<Attached, VolumeError> {
        validate_id(Object::Volume, id)?;
        let _ops = self.ops.read().unwrap_or_else(|e| e.into_inner());
        self.mount_image(Object::Volume, id, &self.volume_path(id), false)
    }

    /// [`Pool::attach`], retrying for up to `timeout` while the volume is in
    /// use: the mount namespace of a sandbox that just ended may hold the
    /// filesystem (and so its loop device) for a moment longer.
    pub fn attach_waiting(&self, id: &str, timeout: Duration) -> Result<Attached, VolumeError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.attach(id) {
                Err(VolumeError::InUse { .. }) if Instant::now() < deadline => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    std::thread::sleep(left.min(Duration::from_millis(25)));
                }
                r => return r,
            }
        }
    }

    /// Deletes volume `id`'s image; refuses with [`VolumeError::InUse`]
    /// while it is attached or held by a loop device. Snapshots taken from
    /// it are independent and stay.
    pub fn delete_volume(&self, id: &str) -> Result<(), VolumeError> {
        validate_id(Object::Volume, id)?;
        self.delete(
            Object::Volume,
            id,
            &self.volume_path(id),
            Some(&self.mount_point(id)),
        )
    }

    /// Deletes snapshot `id`'s image. Volumes forked from it stay.
    pub fn delete_snapshot(&self, id: &str) -> Result<(), VolumeError> {
        validate_id(Object::Snapshot, id)?;
        self.delete(Object::Snapshot, id, &self.snapshot_path(id), None)
    }

    fn delete(
        &self,
        object: Object,
        id: &str,
        image: &Path,
        mount_point: Option<&Path>,
    ) -> Result<(), VolumeError> {
        let _ops = self.ops.read().unwrap_or_else(|e| e.into_inner());
        let not_found = || VolumeError::NotFound {
            object,
            id: id.to_string(),
        };
        self.ready(false)?.ok_or_else(not_found)?;
        let _attach = lock(&self.attach_lock);
        if !image.exists() {
            return Err(not_found());
        }
        if self.in_use(image, mount_point)? {
            return Err(VolumeError::InUse {
                object,
                id: id.to_string(),
            });
        }
        match fs::remove_file(image) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
            r => r.ctx(|| format!("deleting {}", image.display()))?,
        }
        fsync_dir(image.parent().expect("image paths have a parent"))
    }

    /// Unmounts everything under `<dir>/mnt` and removes the mount points:
    /// what a killed daemon left. Call it at start, before attaching: it
    /// also detaches volumes attached by this process. Returns how many
    /// mount points were unmounted.
    pub fn reap_mounts(&self) -> Result<usize, VolumeError> {
        let mut points: Vec<PathBuf> = mounts::mounts()
            .ctx(|| "reading /proc/self/mountinfo".into())?
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with(&self.mnt) && *p != self.mnt)
            .collect();
        // Deepest first, so nothing is unmounted from under another mount.
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        points.dedup();
        for p in &points {
            // A daemon killed mid-snapshot leaves the volume frozen; an
            // unfrozen one answers EINVAL, which is fine.
            if let Ok(dir) = File::open(p) {
                let _ = thaw(&dir);
            }
            mounts::unmount(p, true).ctx(|| format!("unmounting {}", p.display()))?;
        }
        for entry in fs::read_dir(&self.mnt).ctx(|| format!("listing {}", self.mnt.display()))? {
            let path = entry
                .ctx(|| format!("listing {}", self.mnt.display()))?
                .path();
            // Only empty directories go; anything else is not ours to judge.
            let _ = fs::remove_dir(&path);
        }
        Ok(points.len())
    }

    /// Deletes images (and `.tmp` leftovers of interrupted creations) whose
    /// ids are not among the known ones: the daemon's store is the source of
    /// truth, and it deletes a row before the file, so a crash in between
    /// leaves an orphan image. Images still in use are kept (and logged).
    /// Returns the paths removed.
    pub fn remove_orphans<V, S>(
        &self,
        known_volume_ids: impl IntoIterator<Item = V>,
        known_snapshot_ids: impl IntoIterator<Item = S>,
    ) -> Result<Vec<PathBuf>, VolumeError>
    where
        V: AsRef<str>,
        S: AsRef<str>,
    {
        let known_volumes: HashSet<String> = known_volume_ids
            .into_iter()
            .map(|s| s.as_ref().to_string())
            .collect();
        let known_snapshots: HashSet<String> = known_snapshot_ids
            .into_iter()
            .map(|s| s.as_ref().to_string())
            .collect();
        // Exclusive: no creation is under way, so every .tmp is garbage.
        let _ops = self.ops.write().unwrap_or_else(|e| e.into_inner());
        if self.ready(false)?.is_none() {
            return Ok(Vec::new());
        }
        let _attach = lock(&self.attach_lock);
        let mut removed = Vec::new();
        for (sub, known) in [("volumes", &known_volumes), ("snapshots", &known_snapshots)] {
            let dir = self.pool_mount.join(sub);
            for entry in fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))? {
                let path = entry.ctx(|| format!("listing {}", dir.display()))?.path();
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let orphan = if name.ends_with(".ext4.tmp") {
                    true
                } else if let Some(id) = name.strip_suffix(".ext4") {
                    !known.contains(id)
                } else {
                    false // not a name we make: leave it alone
                };
                if !orphan {
                    continue;
                }
                if loopdev::in_use(&path).ctx(|| "reading loop backing files".into())? {
                    tracing::warn!(path = %path.display(), "orphan image is in use; kept");
                    continue;
                }
                fs::remove_file(&path).ctx(|| format!("deleting {}", path.display()))?;
                removed.push(path);
            }
            fsync_dir(&dir)?;
        }
        Ok(removed)
    }

    /// Detaches every volume mounted under `<dir>/mnt` (see
    /// [`Pool::reap_mounts`]), then unmounts the pool (its loop device goes
    /// by autoclear). For shutdown and tests. Fails with
    /// [`VolumeError::InUse`] if the pool stays busy, e.g. because a
    /// sandbox's namespace still holds a volume (and so a file in the pool)
    /// open: the pool is never unmounted lazily, since a later `open` would
    /// then mount a second instance of the same XFS filesystem.
    pub fn unmount_pool(&self) -> Result<(), VolumeError> {
        let _ops = self.ops.write().unwrap_or_else(|e| e.into_inner());
        self.reap_mounts()?;
        let mut size = lock(&self.size);
        match mounts::unmount(&self.pool_mount, false) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(VolumeError::InUse {
                    object: Object::Pool,
                    id: self.dir.display().to_string(),
                })
            }
            Err(e) => return Err(e).ctx(|| format!("unmounting {}", self.pool_mount.display())),
        }
        *size = None;
        // The pool's loop device goes by autoclear when its last opener
        // closes it, which may be a moment after the unmount if another
        // process has it open (see `attach`). Wait for that, so that
        // "unmounted" means the image is free.
        let deadline = Instant::now() + Duration::from_secs(5);
        while loopdev::in_use(&self.image).ctx(|| "reading loop backing files".into())? {
            if Instant::now() > deadline {
                tracing::warn!(path = %self.image.display(), "pool image still held by a loop device after unmount");
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Lazily: this process holds the lock file under it open, and the
        // bind carries nothing else now.
        if let Err(e) = umount2(&self.dir, MntFlags::MNT_DETACH) {
            if e != nix::errno::Errno::EINVAL {
                tracing::warn!(path = %self.dir.display(), "unmounting the storage directory: {e}");
            }
        }
        Ok(())
    }
}

fn open_image(path: &Path, not_found: impl FnOnce() -> VolumeError) -> Result<File, VolumeError> {
    File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => not_found(),
        _ => VolumeError::Io {
            context: format!("opening {}", path.display()),
            source: e,
        },
    })
}

/// Makes `dst` a reflink clone of `src`, atomically. No fallback to copying:
/// a full copy of a large image would take minutes and double its space,
/// which is exactly what the pool's design exists to avoid.
/// Clones `src` into a new image at `dst` (a reflink: instant, shares the
/// blocks until either side writes them), grown to `grow_to` bytes with
/// its ext4 filesystem when given, all before it appears at `dst`.
fn clone_into(
    src: &File,
    dst: &Path,
    object: Object,
    id: &str,
    grow_to: Option<u64>,
) -> Result<(), VolumeError> {
    if dst.exists() {
        return Err(VolumeError::AlreadyExists {
            object,
            id: id.to_string(),
        });
    }
    write_atomically(dst, object, id, |tmp| {
        let out = create_private_file(tmp)?;
        // SAFETY: FICLONE takes the source fd as an integer argument; both
        // fds are open for the duration of the call.
        let rc = unsafe { libc::ioctl(out.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
        if rc != 0 {
            return Err(io::Error::last_os_error())
                .ctx(|| format!("reflink clone (FICLONE) into {}", tmp.display()));
        }
        if let Some(bytes) = grow_to {
            out.set_len(bytes)
                .ctx(|| format!("sizing {}", tmp.display()))?;
            drop(out);
            // -f: the snapshot was taken of a cleanly unmounted (or frozen)
            // filesystem, so the check resize2fs asks for first is skipped.
            RESIZE2FS.run(&[OsStr::new("-f"), tmp.as_os_str()])?;
        }
        Ok(())
    })
}
