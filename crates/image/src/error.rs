//! Errors of the image store. Every variant carries enough context to act
//! on without a debugger: the path, the command and its exit status, the
//! tail of its output, or the apt package that provides a missing tool.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image name {name:?}: {reason} (allowed: [a-z0-9][a-z0-9._-]{{0,63}})")]
    InvalidName { name: String, reason: &'static str },

    #[error("unknown image {name:?}; known images: {known}")]
    UnknownImage { name: String, known: String },

    #[error("image {name:?} not found in {dir}")]
    NotFound { name: String, dir: PathBuf },

    #[error("`{tool}` is not installed; install it with `apt-get install -y {apt_package}`")]
    MissingTool {
        tool: &'static str,
        apt_package: &'static str,
    },

    #[error("`{command}` failed ({status}); last lines of its output:\n{tail}")]
    CommandFailed {
        command: String,
        status: String,
        tail: String,
    },

    #[error("unexpected output from `{command}`: {detail}")]
    UnexpectedOutput { command: String, detail: String },

    #[error(
        "building an image needs real root (the rootfs must be owned by uid 0); running as uid {uid}"
    )]
    NotRoot { uid: u32 },

    // The io::Error is part of the message rather than a `#[source]` so that
    // printing the error once says everything, whatever the caller's style.
    #[error("{action} {}: {error}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },

    #[error("image metadata {} is unreadable: {error}", path.display())]
    BadMetadata {
        path: PathBuf,
        error: serde_json::Error,
    },
}

impl ImageError {
    /// Wraps an io::Error with what was being done to which path.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |error| ImageError::Io {
            action,
            path,
            error,
        }
    }
}
