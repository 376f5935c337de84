//! The store's one error type.
//!
//! Like the rest of the workspace, each variant's message already carries the
//! underlying error's text (fields are named `error`, not `source`), so a
//! plain `{}` in a log line says what failed and why without walking a chain.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating store directory {}: {error}", path.display())]
    CreateDir { path: PathBuf, error: io::Error },

    #[error("creating store file {}: {error}", path.display())]
    CreateFile { path: PathBuf, error: io::Error },

    #[error("opening SQLite database {}: {error}", path.display())]
    Open {
        path: PathBuf,
        error: rusqlite::Error,
    },

    /// A query or statement failed; `context` names the operation.
    #[error("{context}: {error}")]
    Sqlite {
        context: &'static str,
        error: rusqlite::Error,
    },

    #[error("migrating store schema to v{version}: {error}")]
    Migration {
        version: u32,
        error: rusqlite::Error,
    },

    #[error(
        "store schema is v{found}, newer than this airlock understands (v{supported}); \
         upgrade airlock or point it at another state directory"
    )]
    SchemaTooNew { found: u32, supported: u32 },

    /// A JSON column holds something we did not write (manual edits, corruption).
    #[error("sandbox {id:?}: column {column} holds invalid JSON: {error}")]
    BadJson {
        id: String,
        column: &'static str,
        error: serde_json::Error,
    },

    #[error("reading random bytes from /dev/urandom: {0}")]
    Random(io::Error),

    #[error("invalid token name {name:?}: {reason}")]
    InvalidTokenName { name: String, reason: &'static str },

    #[error("an active token named {0:?} already exists; revoke it first or pick another name")]
    TokenNameTaken(String),

    #[error("invalid sandbox status {0:?} (expected \"running\" or \"stopped\")")]
    InvalidStatus(String),

    #[error("no sandbox with id {0:?}")]
    SandboxNotFound(String),

    /// A network event or query with a value outside its set; the message
    /// names the field, the value and what is allowed.
    #[error("invalid network event: {0}")]
    InvalidNetEvent(String),
    #[error("invalid sandbox event: {0}")]
    InvalidSandboxEvent(String),

    #[error("the slug {0:?} is already used by one of your volumes or snapshots; pick another or delete that one")]
    SlugTaken(String),
}

/// Attaches a short description of the operation to a rusqlite error.
pub(crate) trait Context<T> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn ctx(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|error| StoreError::Sqlite { context, error })
    }
}
