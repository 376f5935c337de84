use std::io;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum JailError {
    #[error(
        "airlock needs root to create sandboxes (it runs as uid {0}); run it with sudo or as root"
    )]
    NotRoot(u32),
    #[error("{what} {path}")]
    Path {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("sandbox setup failed at step {step:?}")]
    Setup {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("no free uid range: all {0} sandbox slots are in use")]
    NoFreeSlot(u32),
    #[error("cgroup: {0}")]
    Cgroup(String),
    #[error("seccomp filter: {0}")]
    Seccomp(String),
    #[error("invalid limit: {0}")]
    InvalidLimit(String),
    #[error("invalid network: {0}")]
    InvalidNetwork(String),
}

impl JailError {
    pub(crate) fn path(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Path {
            what,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn io(what: &'static str, source: io::Error) -> Self {
        Self::Io { what, source }
    }
}
