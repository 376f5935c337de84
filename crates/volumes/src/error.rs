//! The crate's error type.

use std::fmt;
use std::io;

/// What an error is about, for messages and for callers that map errors to
/// HTTP statuses per kind of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Pool,
    Volume,
    Snapshot,
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Object::Pool => "pool",
            Object::Volume => "volume",
            Object::Snapshot => "snapshot",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{object} {id:?} does not exist")]
    NotFound { object: Object, id: String },
    #[error("{object} {id:?} already exists")]
    AlreadyExists { object: Object, id: String },
    /// Mounted, or still held by a loop device (for instance by the mount
    /// namespace of a sandbox that is ending). Mounting an ext4 image twice
    /// would corrupt it, so this is refused rather than waited for, except by
    /// [`crate::Pool::attach_waiting`].
    #[error("{object} {id:?} is in use (mounted, or still held by a loop device)")]
    InUse { object: Object, id: String },
    #[error("invalid {object} id {id:?}: {reason}")]
    InvalidId {
        object: Object,
        id: String,
        reason: &'static str,
    },
    #[error("invalid volume capacity of {bytes} bytes: {reason}")]
    InvalidCapacity { bytes: u64, reason: String },
    #[error(
        "a pool of {bytes} bytes is too small: XFS needs at least {minimum} bytes \
         (the pool is capped at 90% of the free space where it lives)"
    )]
    PoolTooSmall { bytes: u64, minimum: u64 },
    #[error("{tool} is not installed; install the {package} package")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },
    #[error("{tool} failed ({status}): {stderr}")]
    ToolFailed {
        tool: &'static str,
        status: String,
        stderr: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// Attaches a description of what was being done to an `io::Error`.
pub(crate) trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, VolumeError>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, VolumeError> {
        self.map_err(|source| VolumeError::Io {
            context: what(),
            source,
        })
    }
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, VolumeError> {
        self.map_err(|e| VolumeError::Io {
            context: what(),
            source: io::Error::from(e),
        })
    }
}
