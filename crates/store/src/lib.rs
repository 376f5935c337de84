//! airlock's embedded SQLite store: API tokens (hashed), sandbox records,
//! usage counters, network audit events, volume and snapshot records, and
//! the storage bill (byte-hours per owner).
//!
//! The API is synchronous; the daemon calls it from `spawn_blocking` or
//! accepts the short block. One [`rusqlite::Connection`] sits behind a
//! `std::sync::Mutex`, so `&Store` is `Sync` and can be shared in an `Arc`.
//! Statements are small and indexed, so serialising them costs little, and a
//! single connection means no `SQLITE_BUSY` between our own threads;
//! `busy_timeout` covers another process (e.g. the CLI) holding the file.

mod error;
mod net_events;
mod random;
mod sandbox_events;
mod sandboxes;
mod schema;
mod storage;
mod storage_usage;
mod tokens;
mod usage;

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

pub use error::StoreError;
pub use net_events::{NetEvent, NetEventQuery, NET_EVENTS_DEFAULT_LIMIT, NET_KINDS, NET_VERDICTS};
pub use sandbox_events::{
    SandboxEvent, SandboxEventQuery, SANDBOX_EVENTS_DEFAULT_LIMIT, SANDBOX_EVENT_KINDS,
};
pub use sandboxes::{SandboxFilter, SandboxRecord, STATUS_RUNNING, STATUS_STOPPED};
pub use schema::SCHEMA_VERSION;
pub use storage::{
    new_snapshot_id, new_volume_id, SnapshotRecord, StorageTotals, VolumeRecord,
    SNAPSHOT_ID_PREFIX, VOLUME_ID_PREFIX,
};
pub use storage_usage::{StorageSummary, StorageUsage};
pub use tokens::{NewToken, TokenInfo, SECRET_PREFIX, TOKEN_ID_PREFIX};
pub use usage::{Usage, UsageGroup, UsageRow};

use error::Context;

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Milliseconds since the Unix epoch, the unit of every timestamp here.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, its parent
    /// directories, and brings the schema up to date.
    ///
    /// The file holds token hashes and sandbox metadata, so it is created
    /// 0600 (and tightened if it already existed looser). SQLite gives its
    /// `-wal` and `-shm` files the main file's mode.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|error| StoreError::CreateDir {
                path: dir.to_owned(),
                error,
            })?;
        }
        let create_err = |error| StoreError::CreateFile {
            path: path.to_owned(),
            error,
        };
        // Create the file ourselves so it never exists with the umask's mode.
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(create_err)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(create_err)?;
        drop(file);

        let conn = Connection::open(path).map_err(|error| StoreError::Open {
            path: path.to_owned(),
            error,
        })?;
        Self::init(conn, true)
    }

    /// A private, empty database that vanishes on drop (tests, `--ephemeral`).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().ctx("opening in-memory database")?;
        Self::init(conn, false)
    }

    fn init(mut conn: Connection, on_disk: bool) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)
            .ctx("setting busy_timeout")?;
        if on_disk {
            // WAL: readers (the CLI) never block the daemon's writes, and a
            // commit is one append instead of a journal rewrite.
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .ctx("enabling WAL journal mode")?;
            debug_assert_eq!(mode.to_ascii_lowercase(), "wal");
            // NORMAL is durable against process crashes in WAL mode; only an
            // OS crash can lose the last commits, which is fine for this data.
            conn.pragma_update(None, "synchronous", "NORMAL")
                .ctx("setting synchronous mode")?;
        }
        // Per-connection setting; on so any future REFERENCES is enforced.
        conn.pragma_update(None, "foreign_keys", true)
            .ctx("enabling foreign keys")?;
        schema::migrate(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    /// The schema version recorded in the database (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        schema::user_version(&self.lock())
    }

    /// A panic while the lock was held cannot leave the connection half-way
    /// through a transaction (rusqlite rolls back on drop), so a poisoned
    /// lock is safe to take over rather than wedging the daemon.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests;
