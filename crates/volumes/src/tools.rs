//! The external mkfs programs (formatting is the one job we leave to the
//! filesystems' own tools: their on-disk layouts are theirs to get right).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::VolumeError;

pub(crate) struct Tool {
    pub(crate) name: &'static str,
    pub(crate) package: &'static str,
}

pub(crate) const MKFS_XFS: Tool = Tool {
    name: "mkfs.xfs",
    package: "xfsprogs",
};
pub(crate) const MKFS_EXT4: Tool = Tool {
    name: "mkfs.ext4",
    package: "e2fsprogs",
};
/// Grows a fork past its snapshot's size.
pub(crate) const RESIZE2FS: Tool = Tool {
    name: "resize2fs",
    package: "e2fsprogs",
};

impl Tool {
    /// The program's path: $PATH first, then the sbin directories, which a
    /// daemon started with a minimal PATH may lack.
    pub(crate) fn find(&self) -> Result<PathBuf, VolumeError> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
            .map(|dir| dir.join(self.name))
            .find(|p| is_executable(p))
            .ok_or(VolumeError::ToolMissing {
                tool: self.name,
                package: self.package,
            })
    }

    pub(crate) fn run(&self, args: &[&std::ffi::OsStr]) -> Result<(), VolumeError> {
        self.run_with(args, |_| {})
    }

    /// [`Tool::run`], with `prepare` setting up the command first (e.g. a
    /// `pre_exec` that confines the child).
    pub(crate) fn run_with(
        &self,
        args: &[&std::ffi::OsStr],
        prepare: impl FnOnce(&mut Command),
    ) -> Result<(), VolumeError> {
        let program = self.find()?;
        let mut cmd = Command::new(&program);
        cmd.args(args);
        prepare(&mut cmd);
        let out = cmd.output().map_err(|source| VolumeError::Io {
            context: format!("running {}", program.display()),
            source,
        })?;
        if out.status.success() {
            return Ok(());
        }
        Err(VolumeError::ToolFailed {
            tool: self.name,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Checks that the programs the engine runs are installed, so the daemon can
/// refuse to start (or disable volumes) with an actionable message instead
/// of failing on the first volume.
pub fn check_tools() -> Result<(), VolumeError> {
    MKFS_XFS.find()?;
    MKFS_EXT4.find()?;
    RESIZE2FS.find()?;
    Ok(())
}
