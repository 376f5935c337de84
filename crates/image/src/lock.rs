//! Per-name build locks: an exclusive `flock` on `images/.<name>.lock`.
//! flock locks belong to the open file description, so they serialise
//! threads of one process as well as separate processes, and the kernel
//! drops them when a builder dies.

use crate::ImageError;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Held while alive; dropping the file releases the lock.
#[derive(Debug)]
pub(crate) struct NameLock {
    _file: File,
}

impl NameLock {
    /// Waits until the lock is ours.
    pub fn acquire(path: &Path) -> Result<Self, ImageError> {
        let file = open(path)?;
        flock(&file, libc::LOCK_EX).map_err(ImageError::io("lock", path))?;
        Ok(Self { _file: file })
    }

    /// Takes the lock if nobody holds it, without waiting.
    pub fn try_acquire(path: &Path) -> Result<Option<Self>, ImageError> {
        let file = open(path)?;
        match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(ImageError::io("lock", path)(e)),
        }
    }
}

fn open(path: &Path) -> Result<File, ImageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(ImageError::io("open lock file", path))
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn try_acquire_fails_while_held_and_succeeds_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".x.lock");
        let held = NameLock::acquire(&path).unwrap();
        assert!(NameLock::try_acquire(&path).unwrap().is_none());
        drop(held);
        assert!(NameLock::try_acquire(&path).unwrap().is_some());
    }

    #[test]
    fn acquire_waits_for_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".x.lock");
        let held = NameLock::acquire(&path).unwrap();
        let (tx, rx) = mpsc::channel();
        let p = path.clone();
        let waiter = std::thread::spawn(move || {
            let _l = NameLock::acquire(&p).unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "got the lock while held"
        );
        drop(held);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("waiter never got the lock");
        waiter.join().unwrap();
    }
}
