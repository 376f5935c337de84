//! Volume and snapshot records (the data itself lives in the `volumes`
//! crate's pool).
//!
//! Every record belongs to an owner, the token that made it (`None` for a
//! daemon run without tokens); every lookup takes the owner, so one token
//! never sees another's records (the API answers 404, as for an absent
//! one). Slugs are unique per owner across volumes and snapshots together,
//! as the protocol's one slug namespace says: each insert checks the other
//! table under the connection's lock, and a unique index per table holds
//! against any other writer.

use rusqlite::{params, OptionalExtension, Row};

use crate::error::{Context, StoreError};
use crate::storage_usage::StorageKind;
use crate::{random, Store};

pub const VOLUME_ID_PREFIX: &str = "vol_";
pub const SNAPSHOT_ID_PREFIX: &str = "snp_";
const ID_RANDOM_LEN: usize = 20;

/// A volume's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    pub id: String,
    pub slug: String,
    pub token_id: Option<String>,
    pub region: String,
    /// Bytes; the filesystem inside is exactly this big.
    pub capacity: u64,
    pub is_bootable: bool,
    /// `(id, slug)` of the snapshot it was forked from.
    pub base_snapshot: Option<(String, String)>,
    pub created_at_ms: i64,
}

/// A snapshot's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub id: String,
    pub slug: String,
    pub token_id: Option<String>,
    pub region: String,
    /// `(id, slug)` of the volume it was taken from.
    pub source: (String, String),
    pub base_snapshot: Option<(String, String)>,
    pub is_bootable: bool,
    pub allocated_size: u64,
    pub flattened_size: u64,
    pub created_at_ms: i64,
}

/// How many storage objects an owner holds and the bytes they reserve
/// (volume capacities plus snapshot sizes), for quotas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageTotals {
    pub volumes: u64,
    pub snapshots: u64,
    pub bytes: u64,
}

/// A new random volume id in `region` (`vol_ord_…`).
pub fn new_volume_id(region: &str) -> Result<String, StoreError> {
    Ok(format!(
        "{VOLUME_ID_PREFIX}{region}_{}",
        random::base32_lower(ID_RANDOM_LEN)?
    ))
}

/// A new random snapshot id in `region` (`snp_ord_…`).
pub fn new_snapshot_id(region: &str) -> Result<String, StoreError> {
    Ok(format!(
        "{SNAPSHOT_ID_PREFIX}{region}_{}",
        random::base32_lower(ID_RANDOM_LEN)?
    ))
}

const VOLUME_COLUMNS: &str = "id, slug, token_id, region, capacity, is_bootable, \
     base_snapshot_id, base_snapshot_slug, created_at_ms";
const SNAPSHOT_COLUMNS: &str = "id, slug, token_id, region, source_id, source_slug, \
     base_snapshot_id, base_snapshot_slug, is_bootable, allocated_size, flattened_size, \
     created_at_ms";

fn pair(id: Option<String>, slug: Option<String>) -> Option<(String, String)> {
    Some((id?, slug.unwrap_or_default()))
}

fn volume_from_row(r: &Row<'_>) -> rusqlite::Result<VolumeRecord> {
    Ok(VolumeRecord {
        id: r.get(0)?,
        slug: r.get(1)?,
        token_id: r.get(2)?,
        region: r.get(3)?,
        capacity: r.get::<_, i64>(4)? as u64,
        is_bootable: r.get(5)?,
        base_snapshot: pair(r.get(6)?, r.get(7)?),
        created_at_ms: r.get(8)?,
    })
}

fn snapshot_from_row(r: &Row<'_>) -> rusqlite::Result<SnapshotRecord> {
    Ok(SnapshotRecord {
        id: r.get(0)?,
        slug: r.get(1)?,
        token_id: r.get(2)?,
        region: r.get(3)?,
        source: (r.get(4)?, r.get(5)?),
        base_snapshot: pair(r.get(6)?, r.get(7)?),
        is_bootable: r.get(8)?,
        allocated_size: r.get::<_, i64>(9)? as u64,
        flattened_size: r.get::<_, i64>(10)? as u64,
        created_at_ms: r.get(11)?,
    })
}

/// Whether `owner` already uses `slug` for a volume or a snapshot.
fn slug_taken(
    conn: &rusqlite::Connection,
    owner: Option<&str>,
    slug: &str,
) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM volumes WHERE token_id IS ?1 AND slug = ?2) \
         OR EXISTS (SELECT 1 FROM snapshots WHERE token_id IS ?1 AND slug = ?2)",
        params![owner, slug],
        |r| r.get(0),
    )
    .ctx("checking slug")
}

impl Store {
    /// Records a volume whose image already exists. Fails with
    /// [`StoreError::SlugTaken`] if its owner uses the slug already.
    pub fn insert_volume(&self, v: &VolumeRecord) -> Result<(), StoreError> {
        let conn = self.lock();
        if slug_taken(&conn, v.token_id.as_deref(), &v.slug)? {
            return Err(StoreError::SlugTaken(v.slug.clone()));
        }
        let (base_id, base_slug) = v.base_snapshot.clone().unzip();
        conn.execute(
            &format!(
                "INSERT INTO volumes ({VOLUME_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                v.id,
                v.slug,
                v.token_id,
                v.region,
                v.capacity as i64,
                v.is_bootable,
                base_id,
                base_slug,
                v.created_at_ms,
            ],
        )
        .ctx("inserting volume")?;
        Ok(())
    }

    /// `owner`'s volume whose id or slug is `key`.
    pub fn get_volume(
        &self,
        owner: Option<&str>,
        key: &str,
    ) -> Result<Option<VolumeRecord>, StoreError> {
        self.lock()
            .query_row(
                &format!(
                    "SELECT {VOLUME_COLUMNS} FROM volumes \
                     WHERE token_id IS ?1 AND (id = ?2 OR slug = ?2)"
                ),
                params![owner, key],
                volume_from_row,
            )
            .optional()
            .ctx("reading volume")
    }

    /// `owner`'s volumes, oldest first; `search` keeps those whose slug or
    /// id contains it.
    pub fn list_volumes(
        &self,
        owner: Option<&str>,
        search: Option<&str>,
    ) -> Result<Vec<VolumeRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {VOLUME_COLUMNS} FROM volumes WHERE token_id IS ?1 \
                 AND (?2 IS NULL OR instr(slug, ?2) > 0 OR instr(id, ?2) > 0) \
                 ORDER BY created_at_ms, id"
            ))
            .ctx("listing volumes")?;
        let rows = stmt
            .query_map(params![owner, search], volume_from_row)
            .ctx("listing volumes")?;
        rows.collect::<Result<_, _>>().ctx("listing volumes")
    }

    /// Every volume of every owner (the daemon's restart checks).
    pub fn all_volumes(&self) -> Result<Vec<VolumeRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&format!("SELECT {VOLUME_COLUMNS} FROM volumes ORDER BY id"))
            .ctx("listing volumes")?;
        let rows = stmt.query_map([], volume_from_row).ctx("listing volumes")?;
        rows.collect::<Result<_, _>>().ctx("listing volumes")
    }

    /// Deletes a volume's record, billing its owner for it up to `at_ms`
    /// in the same transaction (the bill outlives the record); whether
    /// there was one.
    pub fn delete_volume(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        self.delete_billed(StorageKind::Volume, id, at_ms)
    }

    /// Records a snapshot whose image already exists.
    pub fn insert_snapshot(&self, s: &SnapshotRecord) -> Result<(), StoreError> {
        let conn = self.lock();
        if slug_taken(&conn, s.token_id.as_deref(), &s.slug)? {
            return Err(StoreError::SlugTaken(s.slug.clone()));
        }
        let (base_id, base_slug) = s.base_snapshot.clone().unzip();
        conn.execute(
            &format!(
                "INSERT INTO snapshots ({SNAPSHOT_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ),
            params![
                s.id,
                s.slug,
                s.token_id,
                s.region,
                s.source.0,
                s.source.1,
                base_id,
                base_slug,
                s.is_bootable,
                s.allocated_size as i64,
                s.flattened_size as i64,
                s.created_at_ms,
            ],
        )
        .ctx("inserting snapshot")?;
        Ok(())
    }

    /// `owner`'s snapshot whose id or slug is `key`.
    pub fn get_snapshot(
        &self,
        owner: Option<&str>,
        key: &str,
    ) -> Result<Option<SnapshotRecord>, StoreError> {
        self.lock()
            .query_row(
                &format!(
                    "SELECT {SNAPSHOT_COLUMNS} FROM snapshots \
                     WHERE token_id IS ?1 AND (id = ?2 OR slug = ?2)"
                ),
                params![owner, key],
                snapshot_from_row,
            )
            .optional()
            .ctx("reading snapshot")
    }

    /// `owner`'s snapshots, oldest first, filtered like [`Store::list_volumes`].
    pub fn list_snapshots(
        &self,
        owner: Option<&str>,
        search: Option<&str>,
    ) -> Result<Vec<SnapshotRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE token_id IS ?1 \
                 AND (?2 IS NULL OR instr(slug, ?2) > 0 OR instr(id, ?2) > 0) \
                 ORDER BY created_at_ms, id"
            ))
            .ctx("listing snapshots")?;
        let rows = stmt
            .query_map(params![owner, search], snapshot_from_row)
            .ctx("listing snapshots")?;
        rows.collect::<Result<_, _>>().ctx("listing snapshots")
    }

    /// Every snapshot id of every owner (the daemon's restart checks).
    pub fn all_snapshot_ids(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT id FROM snapshots ORDER BY id")
            .ctx("listing snapshots")?;
        let rows = stmt.query_map([], |r| r.get(0)).ctx("listing snapshots")?;
        rows.collect::<Result<_, _>>().ctx("listing snapshots")
    }

    /// Deletes a snapshot's record, billed up to `at_ms` like
    /// [`Store::delete_volume`]; whether there was one.
    pub fn delete_snapshot(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        self.delete_billed(StorageKind::Snapshot, id, at_ms)
    }

    /// What `owner` holds, for quotas.
    pub fn storage_totals(&self, owner: Option<&str>) -> Result<StorageTotals, StoreError> {
        self.lock()
            .query_row(
                "SELECT (SELECT COUNT(*) FROM volumes WHERE token_id IS ?1), \
                        (SELECT COUNT(*) FROM snapshots WHERE token_id IS ?1), \
                        (SELECT COALESCE(SUM(capacity), 0) FROM volumes WHERE token_id IS ?1) \
                      + (SELECT COALESCE(SUM(allocated_size), 0) FROM snapshots WHERE token_id IS ?1)",
                params![owner],
                |r| {
                    Ok(StorageTotals {
                        volumes: r.get::<_, i64>(0)? as u64,
                        snapshots: r.get::<_, i64>(1)? as u64,
                        bytes: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .ctx("summing storage")
    }
}
