//! Host uid/gid ranges for sandboxes.
//!
//! Every live sandbox holds a slot; slot N maps sandbox ids 0..65536 to host
//! ids `BASE + N * RANGE ..`. A slot is held by an `flock` on its lock file,
//! so slots are shared correctly between concurrent `airlock` processes and
//! are freed by the kernel when a holder dies.

use crate::JailError;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// First host id given to sandboxes: far above the ids distributions hand
/// out to users (1000..) and to subordinate ranges in /etc/subuid (100000..).
pub const BASE: u32 = 1_000_000_000;
/// Ids per sandbox: a full 16-bit range, so images with system users such
/// as `nobody` (65534) work.
pub const RANGE: u32 = 65536;
/// How many sandboxes can exist at once on one host.
pub const SLOTS: u32 = 4096;

/// A held uid range. Dropping it releases the slot.
#[derive(Debug)]
pub struct UidSlot {
    pub slot: u32,
    _lock: File,
}

impl UidSlot {
    /// Host uid (and gid) that sandbox root maps to.
    pub fn host_base(&self) -> u32 {
        BASE + self.slot * RANGE
    }

    /// Takes the first free slot. `hint` spreads concurrent callers so they
    /// do not all contend for slot 0.
    pub fn acquire(dir: &Path, hint: u32) -> Result<Self, JailError> {
        fs::create_dir_all(dir).map_err(|e| JailError::path("creating", dir, e))?;
        for i in 0..SLOTS {
            let slot = (hint + i) % SLOTS;
            let path = dir.join(format!("{slot}.lock"));
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| JailError::path("opening", &path, e))?;
            // SAFETY: flock on an fd we own.
            let ret = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if ret == 0 {
                return Ok(Self { slot, _lock: file });
            }
        }
        Err(JailError::NoFreeSlot(SLOTS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = UidSlot::acquire(dir.path(), 7).unwrap();
        let b = UidSlot::acquire(dir.path(), 7).unwrap();
        assert_eq!(a.slot, 7);
        assert_eq!(b.slot, 8);
        assert_eq!(b.host_base(), BASE + 8 * RANGE);
        drop(a);
        let c = UidSlot::acquire(dir.path(), 7).unwrap();
        assert_eq!(c.slot, 7);
    }
}
