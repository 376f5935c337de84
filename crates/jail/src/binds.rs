//! Host directories bound into a sandbox at a path of its choosing
//! (volumes).
//!
//! The target path comes from the tenant, and the root filesystem it lands
//! in may hold symlinks (the image's own, or a tenant's in a persistent
//! root), so the mount point is never resolved as a host path: each
//! component is looked up with `openat2(RESOLVE_IN_ROOT)` relative to the
//! sandbox's root, so `..` and absolute symlinks stay inside it, created
//! with `mkdirat` in the directory found so far when missing, and the
//! mount is attached with `move_mount` onto the final directory's fd. The
//! source is seen through an idmapped mount, like the image: files owned
//! by host ids 0..65535 appear as those ids inside, whichever uid slot the
//! sandbox has, so a volume moves between sandboxes unchanged.

use crate::sys;
use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

/// A host directory to bind at `target` inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    /// Absolute, normalized; checked with [`check_bind_target`].
    pub target: String,
}

/// Paths the jail mounts itself: no bind may be at or under them.
const RESERVED: [&str; 3] = ["/proc", "/sys", "/dev"];
const MAX_TARGET_LEN: usize = 1024;

/// The components of a bind target, or why it cannot be one. A target is
/// an absolute path of plain components (no `.`, `..`, empty components
/// or NUL), not `/` itself and not at or under `/proc`, `/sys` or `/dev`.
pub fn check_bind_target(path: &str) -> Result<Vec<&str>, String> {
    if path.len() > MAX_TARGET_LEN {
        return Err(format!("mount path is longer than {MAX_TARGET_LEN} bytes"));
    }
    if path.contains('\0') {
        return Err("mount path contains a NUL byte".into());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!(
            "mount path {path:?} must be absolute (start with /)"
        ));
    };
    if rest.is_empty() {
        return Err(
            "mount path \"/\" would replace the root filesystem: choose a directory such as /data"
                .into(),
        );
    }
    let parts: Vec<&str> = rest.strip_suffix('/').unwrap_or(rest).split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(format!(
            "mount path {path:?} must be normalized: no empty, \".\" or \"..\" components"
        ));
    }
    let first = format!("/{}", parts[0]);
    if RESERVED.contains(&first.as_str()) {
        return Err(format!(
            "mount path {path:?} is inside {first}, which the sandbox's kernel interfaces use: choose another directory"
        ));
    }
    Ok(parts)
}

/// One bind, prepared before fork: the C strings the child needs.
pub(crate) struct BindPlan {
    source: CString,
    /// For each component: the path so far relative to the root, and the
    /// component's own name.
    steps: Vec<(CString, CString)>,
}

fn c(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

impl BindPlan {
    pub(crate) fn new(bind: &Bind) -> io::Result<Self> {
        let parts = check_bind_target(&bind.target)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut steps = Vec::with_capacity(parts.len());
        for i in 0..parts.len() {
            steps.push((c(&parts[..=i].join("/"))?, c(parts[i])?));
        }
        Ok(Self {
            source: CString::new(Path::new(&bind.source).as_os_str().as_encoded_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?,
            steps,
        })
    }

    /// Attaches the bind inside the root filesystem open at `root_fd`, in
    /// the sandbox's first process (host root, its private mount
    /// namespace). Missing directories are created owned by `owner` (the
    /// sandbox's root). Runs between fork and exec: no allocation.
    pub(crate) fn mount(&self, root_fd: RawFd, userns_fd: RawFd, owner: u32) -> io::Result<()> {
        let tree = sys::open_tree_clone(&self.source)?;
        // nosuid and nodev whatever the host mount says: a volume is the
        // tenant's data, never a way to a setuid binary or a device node.
        let flags = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
        let attached = sys::idmap_mount_with(tree, userns_fd, flags)
            .and_then(|()| self.mount_point(root_fd, owner))
            .and_then(|dir| {
                let moved = sys::move_mount_onto(tree, dir);
                sys::close(dir);
                moved
            });
        sys::close(tree);
        attached
    }

    /// Opens (creating as needed) the directory the bind goes on.
    fn mount_point(&self, root_fd: RawFd, owner: u32) -> io::Result<RawFd> {
        let mut parent = root_fd;
        for (so_far, name) in &self.steps {
            let found = match sys::open_dir_in_root(root_fd, so_far) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    sys::mkdir_owned_at(parent, name, 0o755, owner)
                        .and_then(|()| sys::open_dir_in_root(root_fd, so_far))
                }
                other => other,
            };
            if parent != root_fd {
                sys::close(parent);
            }
            parent = found?;
        }
        Ok(parent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_absolute_normalized_and_outside_kernel_interfaces() {
        assert_eq!(check_bind_target("/data").unwrap(), ["data"]);
        assert_eq!(
            check_bind_target("/home/app/work/").unwrap(),
            ["home", "app", "work"]
        );
        assert_eq!(check_bind_target("/procfs").unwrap(), ["procfs"]);
        for bad in [
            "", "data", "/", "//", "/a//b", "/a/./b", "/a/../b", "/..", "/proc", "/proc/x",
            "/sys/fs", "/dev", "/dev/shm", "/a\0b",
        ] {
            assert!(check_bind_target(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_bind_target(&format!("/{}", "a".repeat(2000))).is_err());
        assert!(check_bind_target("/")
            .unwrap_err()
            .contains("root filesystem"));
    }

    #[test]
    fn plan_lists_each_prefix() {
        let plan = BindPlan::new(&Bind {
            source: "/host/vol".into(),
            target: "/home/app".into(),
        })
        .unwrap();
        let steps: Vec<(&str, &str)> = plan
            .steps
            .iter()
            .map(|(a, b)| (a.to_str().unwrap(), b.to_str().unwrap()))
            .collect();
        assert_eq!(steps, [("home", "home"), ("home/app", "app")]);
    }
}
