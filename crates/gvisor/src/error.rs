use std::io;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error(
        "gVisor's runsc was not found: install it with scripts/install-runsc.sh \
         (Debian's package `runsc`, 2023 or later) or set AIRLOCK_RUNSC to its path"
    )]
    RunscMissing,
    #[error("gVisor's runsc does not run: {0}")]
    RunscBroken(String),
    #[error(transparent)]
    Jail(#[from] jail::JailError),
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("runsc could not start the sandbox: {0}")]
    Start(String),
}

impl Error {
    pub(crate) fn io(what: &'static str, source: io::Error) -> Self {
        Self::Io { what, source }
    }
}
