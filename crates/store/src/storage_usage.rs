//! Storage metering: byte-hours of what volumes and snapshots reserve,
//! billed to their owners (see migration V7 in `schema.rs` for the tables
//! and why they are shaped so).
//!
//! A volume reserves its capacity, a snapshot its `allocated_size`, from
//! its creation to its delete. [`Store::meter_storage`] bills every object
//! from its checkpoint (`usage_at_ms`) up to now; a delete bills the rest
//! in the transaction that removes the row. So a daemon killed at any
//! moment loses nothing, and the first pass after a restart bills the
//! downtime exactly once.

use std::collections::BTreeMap;

use rusqlite::{params, Transaction, TransactionBehavior};

use crate::error::{Context, StoreError};
use crate::Store;

const HOUR_MS: i64 = 3_600_000;
/// Bytes in a GB as `airlock usage` counts them (2^30, as for memory).
const GB: f64 = (1u64 << 30) as f64;

/// What is billed: volume or snapshot bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    Volume,
    Snapshot,
}

impl StorageKind {
    fn index(self) -> usize {
        match self {
            StorageKind::Volume => 0,
            StorageKind::Snapshot => 1,
        }
    }
}

/// Byte-hours billed (by one pass, to one owner, or in all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageUsage {
    pub volume_byte_hours: u64,
    pub snapshot_byte_hours: u64,
}

impl StorageUsage {
    /// GB-hours, with GB = 2^30 bytes.
    pub fn volume_gb_hours(&self) -> f64 {
        self.volume_byte_hours as f64 / GB
    }

    pub fn snapshot_gb_hours(&self) -> f64 {
        self.snapshot_byte_hours as f64 / GB
    }
}

/// What the store holds now and what it has billed, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageSummary {
    pub volumes: u64,
    pub snapshots: u64,
    /// Sum of the volumes' capacities.
    pub volume_reserved_bytes: u64,
    /// Everything billed so far, deleted objects included.
    pub billed: StorageUsage,
}

/// Byte-milliseconds per (owner, hour), per kind, before rounding.
type Spans = BTreeMap<(String, i64), [u128; 2]>;

/// Adds `bytes` held over `[from, to)` to `spans`, split at UTC hours.
fn add_span(spans: &mut Spans, owner: &str, kind: StorageKind, bytes: u64, from: i64, to: i64) {
    let mut t = from;
    while t < to {
        let hour = t - t.rem_euclid(HOUR_MS);
        let end = (hour + HOUR_MS).min(to);
        let slot = spans.entry((owner.to_string(), hour)).or_default();
        slot[kind.index()] += u128::from(bytes) * (end - t) as u128;
        t = end;
    }
}

/// Byte-ms to byte-hours, to the nearest (saturating: 2^63 byte-hours is
/// an exabyte for a million years).
fn byte_hours(byte_ms: u128) -> i64 {
    let h = (byte_ms + HOUR_MS as u128 / 2) / HOUR_MS as u128;
    i64::try_from(h).unwrap_or(i64::MAX)
}

/// Writes `spans` to both ledgers; what they added.
fn bill(tx: &Transaction<'_>, spans: &Spans, at_ms: i64) -> Result<StorageUsage, StoreError> {
    let mut per_owner: BTreeMap<&str, [i64; 2]> = BTreeMap::new();
    let mut hours = tx
        .prepare_cached(
            "INSERT INTO storage_usage_hours \
             (token_id, hour_ms, volume_byte_hours, snapshot_byte_hours) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (token_id, hour_ms) DO UPDATE SET \
             volume_byte_hours = volume_byte_hours + excluded.volume_byte_hours, \
             snapshot_byte_hours = snapshot_byte_hours + excluded.snapshot_byte_hours",
        )
        .ctx("billing storage")?;
    for ((owner, hour), [v, s]) in spans {
        let (v, s) = (byte_hours(*v), byte_hours(*s));
        if v == 0 && s == 0 {
            continue;
        }
        hours
            .execute(params![owner, hour, v, s])
            .ctx("billing storage")?;
        let t = per_owner.entry(owner).or_default();
        t[0] = t[0].saturating_add(v);
        t[1] = t[1].saturating_add(s);
    }
    let mut totals = tx
        .prepare_cached(
            "INSERT INTO storage_usage \
             (token_id, volume_byte_hours, snapshot_byte_hours, updated_at_ms) \
             VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (token_id) DO UPDATE SET \
             volume_byte_hours = volume_byte_hours + excluded.volume_byte_hours, \
             snapshot_byte_hours = snapshot_byte_hours + excluded.snapshot_byte_hours, \
             updated_at_ms = excluded.updated_at_ms",
        )
        .ctx("billing storage")?;
    let mut added = StorageUsage::default();
    for (owner, [v, s]) in per_owner {
        totals
            .execute(params![owner, v, s, at_ms])
            .ctx("billing storage")?;
        added.volume_byte_hours += v as u64;
        added.snapshot_byte_hours += s as u64;
    }
    Ok(added)
}

/// The objects of `table` (`volumes` or `snapshots`) not billed up to
/// `at_ms`, as (owner, bytes, billed up to), added to `spans` up to `at_ms`.
fn collect(
    tx: &Transaction<'_>,
    kind: StorageKind,
    id: Option<&str>,
    at_ms: i64,
    spans: &mut Spans,
) -> Result<usize, StoreError> {
    let (table, bytes) = match kind {
        StorageKind::Volume => ("volumes", "capacity"),
        StorageKind::Snapshot => ("snapshots", "allocated_size"),
    };
    let mut stmt = tx
        .prepare_cached(&format!(
            "SELECT COALESCE(token_id, ''), {bytes}, COALESCE(usage_at_ms, created_at_ms) \
             FROM {table} WHERE (?1 IS NULL OR id = ?1)"
        ))
        .ctx("reading storage to bill")?;
    let rows = stmt
        .query_map(params![id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .ctx("reading storage to bill")?;
    let mut n = 0;
    for row in rows {
        let (owner, bytes, from) = row.ctx("reading storage to bill")?;
        add_span(spans, &owner, kind, bytes.max(0) as u64, from, at_ms);
        n += 1;
    }
    Ok(n)
}

/// Moves the checkpoints of `table` up to `at_ms` (never back: a clock
/// that steps back bills nothing twice).
fn advance(
    tx: &Transaction<'_>,
    kind: StorageKind,
    id: Option<&str>,
    at_ms: i64,
) -> Result<(), StoreError> {
    let table = match kind {
        StorageKind::Volume => "volumes",
        StorageKind::Snapshot => "snapshots",
    };
    tx.execute(
        &format!(
            "UPDATE {table} SET usage_at_ms = ?1 \
             WHERE COALESCE(usage_at_ms, created_at_ms) < ?1 AND (?2 IS NULL OR id = ?2)"
        ),
        params![at_ms, id],
    )
    .ctx("moving storage checkpoints")?;
    Ok(())
}

impl Store {
    /// Bills every volume and snapshot from its checkpoint (or creation)
    /// up to `at_ms` to its owner, and moves the checkpoints to `at_ms`:
    /// one transaction. Returns what it billed.
    pub fn meter_storage(&self, at_ms: i64) -> Result<StorageUsage, StoreError> {
        let mut conn = self.lock();
        // Immediate: the pass writes, so take the write lock up front
        // rather than fail to upgrade a read if the CLI holds the file.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("metering storage")?;
        let mut spans = Spans::new();
        for kind in [StorageKind::Volume, StorageKind::Snapshot] {
            collect(&tx, kind, None, at_ms, &mut spans)?;
            advance(&tx, kind, None, at_ms)?;
        }
        let added = bill(&tx, &spans, at_ms)?;
        tx.commit().ctx("metering storage")?;
        Ok(added)
    }

    /// Deletes record `id` of `kind`, billing it up to `at_ms` in the same
    /// transaction; whether there was one.
    pub(crate) fn delete_billed(
        &self,
        kind: StorageKind,
        id: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("deleting storage")?;
        let mut spans = Spans::new();
        if collect(&tx, kind, Some(id), at_ms, &mut spans)? == 0 {
            return Ok(false);
        }
        bill(&tx, &spans, at_ms)?;
        let table = match kind {
            StorageKind::Volume => "volumes",
            StorageKind::Snapshot => "snapshots",
        };
        tx.execute(&format!("DELETE FROM {table} WHERE id = ?1"), params![id])
            .ctx("deleting storage")?;
        tx.commit().ctx("deleting storage")?;
        Ok(true)
    }

    /// Storage billed per owner (`None`: a daemon without tokens) in the
    /// UTC hours that overlap `[since_ms, now)`: an hour counts whole.
    pub fn storage_usage_since(
        &self,
        since_ms: i64,
    ) -> Result<BTreeMap<Option<String>, StorageUsage>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT token_id, SUM(volume_byte_hours), SUM(snapshot_byte_hours) \
                 FROM storage_usage_hours WHERE hour_ms > ?1 - 3600000 GROUP BY token_id",
            )
            .ctx("reading storage usage")?;
        let rows = stmt
            .query_map([since_ms], |r| {
                let owner: String = r.get(0)?;
                Ok((
                    Some(owner).filter(|o| !o.is_empty()),
                    StorageUsage {
                        volume_byte_hours: r.get::<_, i64>(1)? as u64,
                        snapshot_byte_hours: r.get::<_, i64>(2)? as u64,
                    },
                ))
            })
            .ctx("reading storage usage")?;
        rows.collect::<Result<_, _>>().ctx("reading storage usage")
    }

    /// Counts, reserved bytes and everything billed, for `/metrics`.
    pub fn storage_summary(&self) -> Result<StorageSummary, StoreError> {
        self.lock()
            .query_row(
                "SELECT (SELECT COUNT(*) FROM volumes), \
                        (SELECT COUNT(*) FROM snapshots), \
                        (SELECT COALESCE(SUM(capacity), 0) FROM volumes), \
                        (SELECT COALESCE(SUM(volume_byte_hours), 0) FROM storage_usage), \
                        (SELECT COALESCE(SUM(snapshot_byte_hours), 0) FROM storage_usage)",
                [],
                |r| {
                    Ok(StorageSummary {
                        volumes: r.get::<_, i64>(0)? as u64,
                        snapshots: r.get::<_, i64>(1)? as u64,
                        volume_reserved_bytes: r.get::<_, i64>(2)? as u64,
                        billed: StorageUsage {
                            volume_byte_hours: r.get::<_, i64>(3)? as u64,
                            snapshot_byte_hours: r.get::<_, i64>(4)? as u64,
                        },
                    })
                },
            )
            .ctx("summing storage")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_split_at_utc_hours() {
        let mut spans = Spans::new();
        // 30 min before an hour to 15 min after it.
        let from = 5 * HOUR_MS - HOUR_MS / 2;
        add_span(
            &mut spans,
            "t",
            StorageKind::Volume,
            10,
            from,
            5 * HOUR_MS + HOUR_MS / 4,
        );
        add_span(&mut spans, "t", StorageKind::Snapshot, 4, from, from + 1000);
        assert_eq!(
            spans.into_iter().collect::<Vec<_>>(),
            [
                (("t".into(), 4 * HOUR_MS), [10 * HOUR_MS as u128 / 2, 4000]),
                (("t".into(), 5 * HOUR_MS), [10 * HOUR_MS as u128 / 4, 0]),
            ]
        );
        // An empty or backwards span bills nothing.
        let mut spans = Spans::new();
        add_span(&mut spans, "t", StorageKind::Volume, 10, 7, 7);
        add_span(&mut spans, "t", StorageKind::Volume, 10, 9, 3);
        assert!(spans.is_empty());
    }

    #[test]
    fn byte_hours_round_to_the_nearest() {
        assert_eq!(byte_hours(0), 0);
        assert_eq!(byte_hours(HOUR_MS as u128 / 2 - 1), 0);
        assert_eq!(byte_hours(HOUR_MS as u128 / 2), 1);
        assert_eq!(byte_hours(3 * HOUR_MS as u128), 3);
        assert_eq!(byte_hours(u128::MAX / 2), i64::MAX);
    }
}
