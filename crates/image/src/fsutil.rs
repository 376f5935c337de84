//! Small filesystem helpers for writing into a freshly built rootfs and
//! measuring it.

use crate::ImageError;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Replaces whatever is at `path` (file or symlink, never followed) with a
/// new regular file holding `contents`, with exactly `mode`.
///
/// mmdebstrap leaves the host's own /etc/hostname and /etc/resolv.conf in
/// the rootfs; unlinking first makes sure we never write through a link.
pub(crate) fn replace_file(
    path: &Path,
    contents: &mut dyn io::Read,
    mode: u32,
) -> Result<(), ImageError> {
    unlink_if_file(path)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(path)
        .map_err(ImageError::io("create", path))?;
    io::copy(contents, &mut file).map_err(ImageError::io("write", path))?;
    // The umask may have cleared bits of `mode`; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(ImageError::io("chmod", path))?;
    file.flush().map_err(ImageError::io("write", path))
}

/// Copies the file at `src` to a new regular file at `dst` with `mode`.
pub(crate) fn install_file(src: &Path, dst: &Path, mode: u32) -> Result<(), ImageError> {
    let mut from = File::open(src).map_err(ImageError::io("open", src))?;
    replace_file(dst, &mut from, mode)
}

fn unlink_if_file(path: &Path) -> Result<(), ImageError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(ImageError::io("replace", path)(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "is a directory",
        ))),
        Ok(_) => fs::remove_file(path).map_err(ImageError::io("remove", path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io("stat", path)(e)),
    }
}

/// Creates `path` (one level) as a directory with exactly `mode`, if missing.
pub(crate) fn ensure_dir(path: &Path, mode: u32) -> Result<(), ImageError> {
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => return Ok(()),
        Err(e) => return Err(ImageError::io("create directory", path)(e)),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(ImageError::io("chmod", path))
}

/// Removes every entry inside `dir` but keeps `dir` itself; missing is fine.
pub(crate) fn empty_dir(dir: &Path, keep: &[&str]) -> Result<(), ImageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ImageError::io("read directory", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(ImageError::io("read directory", dir))?;
        if keep.iter().any(|k| entry.file_name() == *k) {
            continue;
        }
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .map_err(ImageError::io("stat", &path))?
            .is_dir();
        let result = if is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        result.map_err(ImageError::io("remove", &path))?;
    }
    Ok(())
}

/// Removes a directory tree; missing is fine. Symlinks are removed, never
/// followed (std's remove_dir_all guarantees this).
pub(crate) fn remove_tree(path: &Path) -> Result<(), ImageError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io("remove", path)(e)),
    }
}

/// Bytes on disk under `root`, like `du -s`: allocated blocks, hard links
/// counted once, not crossing into other filesystems.
pub(crate) fn disk_usage(root: &Path) -> Result<u64, ImageError> {
    let top = fs::symlink_metadata(root).map_err(ImageError::io("stat", root))?;
    let root_dev = top.dev();
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![(root.to_path_buf(), top)];
    while let Some((path, meta)) = stack.pop() {
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if !meta.is_dir() || meta.dev() != root_dev {
            continue;
        }
        for entry in fs::read_dir(&path).map_err(ImageError::io("read directory", &path))? {
            let entry = entry.map_err(ImageError::io("read directory", &path))?;
            let child = entry.path();
            let m = fs::symlink_metadata(&child).map_err(ImageError::io("stat", &child))?;
            stack.push((child, m));
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn replace_file_does_not_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, "keep").unwrap();
        let link = dir.path().join("resolv.conf");
        symlink(&outside, &link).unwrap();
        replace_file(&link, &mut &b""[..], 0o644).unwrap();
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep");
        let m = fs::symlink_metadata(&link).unwrap();
        assert!(m.is_file() && m.len() == 0);
        assert_eq!(m.permissions().mode() & 0o7777, 0o644);
    }

    #[test]
    fn disk_usage_counts_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), vec![1u8; 64 * 1024]).unwrap();
        let one = disk_usage(dir.path()).unwrap();
        fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        assert_eq!(disk_usage(dir.path()).unwrap(), one);
        assert!(one >= 64 * 1024);
    }

    #[test]
    fn empty_dir_keeps_listed_entries() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("partial")).unwrap();
        fs::write(dir.path().join("lock"), "").unwrap();
        fs::write(dir.path().join("Packages"), "x").unwrap();
        empty_dir(dir.path(), &["partial", "lock"]).unwrap();
        let mut left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["lock", "partial"]);
        empty_dir(&dir.path().join("missing"), &[]).unwrap();
    }
}
