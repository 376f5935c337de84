//! Schema and forward-only migrations.
//!
//! The schema version lives in `PRAGMA user_version`. Each entry of
//! [`MIGRATIONS`] takes the database from version `i` to `i + 1`; a migration
//! and its version bump commit in one transaction (the header write behind
//! `user_version` is transactional), so a crash mid-upgrade leaves the old
//! version intact. Never edit a shipped migration: append a new one.

use rusqlite::Connection;

use crate::error::{Context, StoreError};

const V1: &str = r#"
CREATE TABLE tokens (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    -- hex SHA-256 of the secret; the secret itself is never stored
    secret_sha256   TEXT NOT NULL UNIQUE,
    created_at_ms   INTEGER NOT NULL,
    revoked_at_ms   INTEGER,
    last_used_at_ms INTEGER
);
-- Names are unique among active tokens so `revoke NAME` is unambiguous,
-- while a revoked token's name may be reused.
CREATE UNIQUE INDEX tokens_active_name ON tokens(name) WHERE revoked_at_ms IS NULL;

CREATE TABLE sandboxes (
    id            TEXT PRIMARY KEY,
    -- no foreign key: a sandbox record outlives its token, and tokens are
    -- revoked rather than deleted anyway
    token_id      TEXT,
    region        TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('running', 'stopped')),
    created_at_ms INTEGER NOT NULL,
    stopped_at_ms INTEGER,
    stop_at_ms    INTEGER,
    memory_mb     INTEGER NOT NULL,
    labels        TEXT NOT NULL DEFAULT '{}',  -- JSON object of string -> string
    exit_reason   TEXT,
    allow_net     TEXT NOT NULL DEFAULT '[]',  -- JSON array of strings
    secret_names  TEXT NOT NULL DEFAULT '[]'   -- JSON array of names, never values
);
-- list_sandboxes: "running, newest first" and "all, newest first".
CREATE INDEX sandboxes_status_created ON sandboxes(status, created_at_ms);
CREATE INDEX sandboxes_created ON sandboxes(created_at_ms);
CREATE INDEX sandboxes_token ON sandboxes(token_id);
"#;

/// Usage metering: cumulative counters per sandbox, rewritten at each
/// sample so a daemon crash loses at most one sampling interval.
const V2: &str = r#"
ALTER TABLE sandboxes ADD COLUMN cpu_usec INTEGER NOT NULL DEFAULT 0;
-- memory in use integrated over time: bytes x milliseconds
ALTER TABLE sandboxes ADD COLUMN memory_byte_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN peak_memory_bytes INTEGER NOT NULL DEFAULT 0;
-- when the counters above were last written
ALTER TABLE sandboxes ADD COLUMN usage_at_ms INTEGER;
"#;

/// Network audit: one row per DNS query, per denied or finished TCP
/// connection and per dropped UDP flow, as the egress gateway reports them.
/// Append-only; `id` is the paging cursor. `kind`, `verdict` and `secrets`
/// are validated by the store rather than by CHECK constraints: widening a
/// CHECK later would mean rebuilding this (large) table.
const V3: &str = r#"
CREATE TABLE net_events (
    id          INTEGER PRIMARY KEY,
    -- no foreign key, like sandboxes.token_id: the store checks the sandbox
    -- exists when recording, and events stay readable as long as it does
    sandbox_id  TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    kind        TEXT NOT NULL,              -- 'dns' | 'tcp' | 'udp'
    name        TEXT NOT NULL,              -- host name queried or dialled, or an IP
    port        INTEGER NOT NULL,
    verdict     TEXT NOT NULL,              -- 'allowed' | 'denied'
    reason      TEXT NOT NULL,
    upstream    TEXT,                       -- address actually connected to
    bytes_out   INTEGER NOT NULL,
    bytes_in    INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    secrets     TEXT NOT NULL DEFAULT ''    -- comma-separated secret NAMES, never values
);
CREATE INDEX net_events_sandbox ON net_events(sandbox_id, id);
"#;

/// Sandbox lifecycle events: created, connected, extended, oom, ended.
/// Append-only; `id` is the paging cursor. `kind` is validated by the store.
const V4: &str = r#"
CREATE TABLE sandbox_events (
    id          INTEGER PRIMARY KEY,
    sandbox_id  TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    kind        TEXT NOT NULL,              -- 'created' | 'connected' | 'extended' | 'oom' | 'ended'
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sandbox_events_sandbox ON sandbox_events(sandbox_id, id);
"#;

/// Isolation backends: a token may be pinned to one (NULL: the daemon's
/// default), and each sandbox records the one it ran on. Names are
/// validated by the daemon, not by CHECK constraints, so a new backend needs
/// no table rebuild.
const V5: &str = r#"
ALTER TABLE tokens ADD COLUMN isolation TEXT;
ALTER TABLE sandboxes ADD COLUMN isolation TEXT NOT NULL DEFAULT 'native';
"#;

/// Volumes and snapshots (storage): the records; their data lives in the
/// `volumes` crate's pool under the data dir. Each belongs to the token
/// that made it (NULL: a daemon without tokens), and slugs are unique per
/// owner across volumes and snapshots together (the store checks the other
/// table; the indexes hold each table). `byte_ms` and `usage_at_ms` meter
/// storage over time, like the sandboxes' memory.
const V6: &str = r#"
CREATE TABLE volumes (
    id               TEXT PRIMARY KEY,
    slug             TEXT NOT NULL,
    token_id         TEXT,
    region           TEXT NOT NULL,
    capacity         INTEGER NOT NULL,
    is_bootable      INTEGER NOT NULL DEFAULT 0,
    -- the snapshot it was forked from (id and slug kept: the snapshot may go)
    base_snapshot_id   TEXT,
    base_snapshot_slug TEXT,
    created_at_ms    INTEGER NOT NULL,
    byte_ms          INTEGER NOT NULL DEFAULT 0,
    usage_at_ms      INTEGER
);
CREATE UNIQUE INDEX volumes_owner_slug ON volumes(COALESCE(token_id, ''), slug);
CREATE TABLE snapshots (
    id               TEXT PRIMARY KEY,
    slug             TEXT NOT NULL,
    token_id         TEXT,
    region           TEXT NOT NULL,
    -- the volume (or sandbox) it was taken from, kept after that is gone
    source_id        TEXT NOT NULL,
    source_slug      TEXT NOT NULL,
    base_snapshot_id   TEXT,
    base_snapshot_slug TEXT,
    is_bootable      INTEGER NOT NULL DEFAULT 0,
    allocated_size   INTEGER NOT NULL,
    flattened_size   INTEGER NOT NULL,
    created_at_ms    INTEGER NOT NULL,
    byte_ms          INTEGER NOT NULL DEFAULT 0,
    usage_at_ms      INTEGER
);
CREATE UNIQUE INDEX snapshots_owner_slug ON snapshots(COALESCE(token_id, ''), slug);
"#;

/// Storage metering: what volumes and snapshots reserve (a volume's
/// `capacity`, as cloud disks bill provisioned size; a snapshot's
/// `allocated_size`), integrated over time per owner.
///
/// Each volume and snapshot row keeps in `usage_at_ms` the time up to which
/// it has been billed (NULL: not yet, so from `created_at_ms`). A metering
/// pass, and a delete just before its row goes, bill the span since then to
/// the owner and move `usage_at_ms` on, in one transaction: a crash loses
/// nothing, and after a restart the first pass bills the downtime (the data
/// existed) exactly once.
///
/// The bill is kept per owner, not on the object's row, because a deleted
/// object's row goes while its bill must stay. `token_id` is '' for a
/// daemon without tokens: NULL in a primary key would never conflict, so
/// every upsert would add a row. Units are byte-hours, rounded once per
/// owner, hour and pass: V6's `byte_ms` columns stay unused, as byte-ms
/// overflow 64 bits after 2.5 hours of a 1 TiB volume. `storage_usage`
/// holds each owner's running total (cheap to read for `/metrics`);
/// `storage_usage_hours` the same split by UTC hour, for reports over a
/// period. Both are written together, so the totals are the sums of the
/// hours.
const V7: &str = r#"
CREATE TABLE storage_usage (
    token_id            TEXT PRIMARY KEY,   -- '' for none
    volume_byte_hours   INTEGER NOT NULL DEFAULT 0,
    snapshot_byte_hours INTEGER NOT NULL DEFAULT 0,
    updated_at_ms       INTEGER NOT NULL
);
CREATE TABLE storage_usage_hours (
    token_id            TEXT NOT NULL,      -- '' for none
    hour_ms             INTEGER NOT NULL,   -- the hour's start (UTC)
    volume_byte_hours   INTEGER NOT NULL DEFAULT 0,
    snapshot_byte_hours INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (token_id, hour_ms)
) WITHOUT ROWID;
CREATE INDEX storage_usage_hours_hour ON storage_usage_hours(hour_ms);
"#;

/// Migration `i` upgrades the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

pub(crate) fn user_version(conn: &Connection) -> Result<u32, StoreError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .ctx("reading schema version")
}

/// Brings the database up to [`SCHEMA_VERSION`], refusing one written by a
/// newer airlock: silently running old code on a newer schema could lose data.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// Applies the migrations up to `target` (tests build old schemas with it).
pub(crate) fn migrate_to(conn: &mut Connection, target: u32) -> Result<(), StoreError> {
    let found = user_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let pending = MIGRATIONS
        .iter()
        .enumerate()
        .take(target as usize)
        .skip(found as usize);
    for (from, sql) in pending {
        let version = from as u32 + 1;
        let err = |error| StoreError::Migration { version, error };
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        // PRAGMA takes no bound parameters; `version` is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {version}"))
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}
