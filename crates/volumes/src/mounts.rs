//! Reading /proc/self/mountinfo and unmounting.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

pub(crate) struct MountEntry {
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) mount_point: PathBuf,
}

/// The mounts of our mount namespace, in mount order (later entries are on
/// top of earlier ones at the same point).
pub(crate) fn mounts() -> io::Result<Vec<MountEntry>> {
    let text = std::fs::read("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        // id parent major:minor root mount_point options ...
        let mut fields = line.split(|&b| b == b' ');
        let (Some(_), Some(_), Some(dev), Some(_), Some(mp)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let dev = String::from_utf8_lossy(dev);
        let Some((major, minor)) = dev.split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        out.push(MountEntry {
            major,
            minor,
            mount_point: PathBuf::from(OsString::from_vec(unescape(mp))),
        });
    }
    Ok(out)
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo`.
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// The topmost mount at exactly `path`, if any.
pub(crate) fn mount_at(path: &Path) -> io::Result<Option<MountEntry>> {
    Ok(mounts()?.into_iter().rev().find(|m| m.mount_point == path))
}

/// Unmounts `path` (every mount stacked there).
///
/// A plain unmount first, retried briefly on EBUSY: when it succeeds the
/// filesystem is gone from our namespace and, unless a sandbox's namespace
/// still holds it, written back and its loop device released before we
/// return, so a snapshot or delete that follows sees a quiescent image.
/// MNT_DETACH only as the fallback (`lazy_fallback`) when something keeps
/// it busy: a lazy unmount "succeeds" while the filesystem stays alive for
/// as long as its users do, so the caller cannot tell when the image is
/// free. Without the fallback a busy mount ends in EBUSY. Returns whether
/// the lazy fallback was used.
pub(crate) fn unmount(path: &Path, lazy_fallback: bool) -> io::Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(if lazy_fallback { 1 } else { 3 });
    let mut lazy = false;
    loop {
        match umount2(path, MntFlags::empty()) {
            Ok(()) => continue, // another mount may be stacked at the same point
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(lazy), // nothing (more) mounted
            Err(Errno::EBUSY) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(Errno::EBUSY) if lazy_fallback => {
                tracing::warn!(path = %path.display(), "busy; unmounting lazily (MNT_DETACH)");
                umount2(path, MntFlags::MNT_DETACH)?;
                lazy = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(super::unescape(br"/a\040b\134c\011"), b"/a b\\c\t".to_vec());
        assert_eq!(super::unescape(br"/plain"), b"/plain".to_vec());
        assert_eq!(super::unescape(br"/x\04"), br"/x\04".to_vec());
    }
}
