//! On-host state of sandboxes, and recovery after a crash.
//!
//! Each sandbox has `STATE/sandboxes/<id>/` holding empty mount points and
//! an `owner.lock` that its owner keeps `flock`ed for the sandbox's life.
//! A lock that can be taken means the owner died: [`reap_leftovers`] then
//! kills what is left in the sandbox's cgroup and removes both.

use crate::cgroup::{self, Cgroup};
use crate::JailError;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the jail keeps per-sandbox state on the host.
#[derive(Debug, Clone)]
pub struct JailPaths {
    pub state: PathBuf,
}

impl Default for JailPaths {
    fn default() -> Self {
        // /run is a tmpfs: a reboot clears it, together with the cgroups.
        Self {
            state: PathBuf::from("/run/airlock"),
        }
    }
}

impl JailPaths {
    pub fn sandboxes(&self) -> PathBuf {
        self.state.join("sandboxes")
    }

    pub fn sandbox(&self, id: &str) -> PathBuf {
        self.sandboxes().join(id)
    }

    pub fn uid_slots(&self) -> PathBuf {
        self.state.join("uid-slots")
    }
}

/// A shared or exclusive hold on `STATE/reap.lock`. Creators hold it shared
/// from before their state dir exists until their cgroup exists; the reaper
/// holds it exclusive for its whole scan, so it never sees a half-created
/// sandbox (a state dir without its lock, a cgroup without its state dir).
pub struct ReapGuard {
    _lock: File,
}

impl ReapGuard {
    pub fn shared(paths: &JailPaths) -> Result<Self, JailError> {
        Self::take(paths, libc::LOCK_SH)
    }

    fn exclusive(paths: &JailPaths) -> Result<Self, JailError> {
        Self::take(paths, libc::LOCK_EX)
    }

    fn take(paths: &JailPaths, how: libc::c_int) -> Result<Self, JailError> {
        fs::create_dir_all(&paths.state)
            .map_err(|e| JailError::path("creating", &paths.state, e))?;
        let path = paths.state.join("reap.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| JailError::path("opening", &path, e))?;
        loop {
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(file.as_raw_fd(), how) } == 0 {
                return Ok(Self { _lock: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(JailError::path("locking", &path, err));
            }
        }
    }
}

/// Creates the sandbox's state dir and takes its owner lock (held as long
/// as the returned file is open). Call it under [`ReapGuard::shared`].
pub fn claim(paths: &JailPaths, id: &str) -> Result<(PathBuf, File), JailError> {
    let dir = paths.sandbox(id);
    fs::create_dir_all(&dir).map_err(|e| JailError::path("creating", &dir, e))?;
    let lock = lock_file(&dir)?;
    if !try_lock(&lock) {
        return Err(JailError::path(
            "claiming",
            &dir,
            std::io::Error::other("another live process owns a sandbox with this id"),
        ));
    }
    Ok((dir, lock))
}

fn lock_file(dir: &Path) -> Result<File, JailError> {
    let path = dir.join("owner.lock");
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| JailError::path("opening", &path, e))
}

fn try_lock(file: &File) -> bool {
    // SAFETY: flock on an fd we own.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Removes a sandbox's state dir. Its mount points are empty on the host
/// (the mounts live only in the sandbox's mount namespace).
pub(crate) fn remove_dir(dir: &Path) -> Result<(), JailError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(JailError::path("removing", dir, e)),
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Ids of sandboxes whose owner had died and which were cleaned up.
    pub reaped: Vec<String>,
    /// Ids still owned by a live process (left alone).
    pub live: Vec<String>,
}

/// Releases everything left by sandboxes whose owning process died: their
/// processes, cgroups and state dirs. Sandboxes of live owners (another
/// `airlock` process) are left alone.
pub fn reap_leftovers(paths: &JailPaths) -> Result<ReapReport, JailError> {
    let _guard = ReapGuard::exclusive(paths)?;
    let mut report = ReapReport::default();
    let dir = paths.sandboxes();
    let mut with_state = Vec::new();
    if let Ok(entries) = fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            with_state.push(id.clone());
            // Never create the lock here: the owner may be removing the dir.
            let lock = match File::open(path.join("owner.lock")) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Creators make the dir and its lock under the shared
                    // reap lock, so none is half-made now: this is an owner
                    // removing its dir, or one that died before the lock
                    // existed. Only the second outlives a short while.
                    if stale(&path) {
                        release(&id)?;
                        remove_dir(&path)?;
                        report.reaped.push(id);
                    }
                    continue;
                }
                Err(e) => return Err(JailError::path("opening", path.join("owner.lock"), e)),
            };
            if !try_lock(&lock) {
                report.live.push(id);
                continue;
            }
            release(&id)?;
            remove_dir(&path)?;
            report.reaped.push(id);
        }
    }
    // A cgroup without a state dir: its owner died between removing the
    // state dir and the cgroup, or never got to write the state dir.
    for id in cgroup::list_names() {
        if !with_state.contains(&id) {
            release(&id)?;
            report.reaped.push(id);
        }
    }
    report.reaped.sort();
    Ok(report)
}

/// A state dir without its lock is left alone this long: its owner may be
/// removing it right now.
const LOCKLESS_GRACE: Duration = Duration::from_secs(60);

/// Whether a lockless state dir is older than [`LOCKLESS_GRACE`].
fn stale(dir: &Path) -> bool {
    fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > LOCKLESS_GRACE)
}

fn release(id: &str) -> Result<(), JailError> {
    let cg = Cgroup::named(id);
    if cg.exists() {
        cg.kill_all();
        cg.remove(Duration::from_secs(5))?;
    }
    Ok(())
}
