//! Usage metering: what each sandbox used (CPU time, memory over time,
//! peak memory), sampled by the manager from the kernel's counters, and
//! totals over a period grouped like a bill (with, per token, the storage
//! it was billed for).

use std::collections::BTreeMap;

use rusqlite::params;

use crate::error::{Context, StoreError};
use crate::{now_ms, Store};

/// Cumulative counters of one sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time, user + system.
    pub cpu_usec: u64,
    /// Memory in use integrated over the sandbox's life (bytes x ms).
    pub memory_byte_ms: u64,
    pub peak_memory_bytes: u64,
}

impl Usage {
    pub fn cpu_seconds(&self) -> f64 {
        self.cpu_usec as f64 / 1e6
    }

    /// GB-hours, with GB = 2^30 bytes.
    pub fn memory_gb_hours(&self) -> f64 {
        self.memory_byte_ms as f64 / (1u64 << 30) as f64 / 3_600_000.0
    }
}

/// How `usage_report` groups sandboxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageGroup {
    Token,
    /// By the value of this label ("" for sandboxes without it).
    Label(String),
    Sandbox,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    pub key: String,
    pub sandboxes: u64,
    pub cpu_seconds: f64,
    pub memory_gb_hours: f64,
    pub peak_memory_bytes: u64,
    pub wall_seconds: f64,
    /// Bytes through the egress gateway (out: from the sandboxes), counted
    /// when each connection ends.
    pub net_bytes_out: u64,
    pub net_bytes_in: u64,
    /// Storage billed to the token in the period (byte-hours of volumes'
    /// capacities and snapshots' sizes); only when grouped by token, as
    /// storage belongs to a token, not to a sandbox or a label.
    pub storage: Option<crate::StorageUsage>,
}

impl UsageRow {
    fn new(key: String) -> Self {
        UsageRow {
            key,
            sandboxes: 0,
            cpu_seconds: 0.0,
            memory_gb_hours: 0.0,
            peak_memory_bytes: 0,
            wall_seconds: 0.0,
            net_bytes_out: 0,
            net_bytes_in: 0,
            storage: None,
        }
    }
}

impl Store {
    /// Replaces the sandbox's counters (they are cumulative).
    pub fn record_usage(&self, id: &str, usage: &Usage, at_ms: i64) -> Result<(), StoreError> {
        let n = self
            .lock()
            .execute(
                "UPDATE sandboxes SET cpu_usec = ?2, memory_byte_ms = ?3, peak_memory_bytes = ?4, \
                 usage_at_ms = ?5 WHERE id = ?1",
                params![
                    id,
                    usage.cpu_usec as i64,
                    usage.memory_byte_ms as i64,
                    usage.peak_memory_bytes as i64,
                    at_ms
                ],
            )
            .ctx("recording usage")?;
        if n == 0 {
            return Err(StoreError::SandboxNotFound(id.to_owned()));
        }
        Ok(())
    }

    /// The sandbox's counters and when they were last written.
    pub fn get_usage(&self, id: &str) -> Result<Option<(Usage, Option<i64>)>, StoreError> {
        use rusqlite::OptionalExtension;
        self.lock()
            .query_row(
                "SELECT cpu_usec, memory_byte_ms, peak_memory_bytes, usage_at_ms FROM sandboxes WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        Usage {
                            cpu_usec: r.get::<_, i64>(0)? as u64,
                            memory_byte_ms: r.get::<_, i64>(1)? as u64,
                            peak_memory_bytes: r.get::<_, i64>(2)? as u64,
                        },
                        r.get(3)?,
                    ))
                },
            )
            .optional()
            .ctx("reading usage")
    }

    /// Totals of the sandboxes alive at any time since `since_ms`, grouped.
    /// A sandbox counts whole in the period it overlaps. Grouped by token,
    /// each row also has the storage billed in the UTC hours the period
    /// overlaps ([`Store::storage_usage_since`]).
    pub fn usage_report(
        &self,
        since_ms: i64,
        group: &UsageGroup,
    ) -> Result<Vec<UsageRow>, StoreError> {
        let now = now_ms();
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT id, token_id, labels, created_at_ms, stopped_at_ms, usage_at_ms, \
                 cpu_usec, memory_byte_ms, peak_memory_bytes, \
                 (SELECT COALESCE(SUM(bytes_out), 0) FROM net_events n WHERE n.sandbox_id = s.id), \
                 (SELECT COALESCE(SUM(bytes_in), 0) FROM net_events n WHERE n.sandbox_id = s.id) \
                 FROM sandboxes s \
                 WHERE stopped_at_ms IS NULL OR stopped_at_ms >= ?1",
            )
            .ctx("preparing usage report")?;
        let rows = stmt
            .query_map([since_ms], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    Usage {
                        cpu_usec: r.get::<_, i64>(6)? as u64,
                        memory_byte_ms: r.get::<_, i64>(7)? as u64,
                        peak_memory_bytes: r.get::<_, i64>(8)? as u64,
                    },
                    (r.get::<_, i64>(9)? as u64, r.get::<_, i64>(10)? as u64),
                ))
            })
            .ctx("reading usage report")?;
        let mut totals: BTreeMap<String, UsageRow> = BTreeMap::new();
        for row in rows {
            let (id, token, labels, created, stopped, usage_at, usage, (net_out, net_in)) =
                row.ctx("reading usage row")?;
            let key = match group {
                UsageGroup::Sandbox => id,
                UsageGroup::Token => token.unwrap_or_else(|| "-".into()),
                UsageGroup::Label(name) => {
                    serde_json::from_str::<BTreeMap<String, String>>(&labels)
                        .ok()
                        .and_then(|l| l.get(name).cloned())
                        .unwrap_or_default()
                }
            };
            let end = stopped.or(usage_at).unwrap_or(now).max(created);
            let t = totals
                .entry(key.clone())
                .or_insert_with(|| UsageRow::new(key));
            t.sandboxes += 1;
            t.cpu_seconds += usage.cpu_seconds();
            t.memory_gb_hours += usage.memory_gb_hours();
            t.peak_memory_bytes = t.peak_memory_bytes.max(usage.peak_memory_bytes);
            t.wall_seconds += (end - created) as f64 / 1000.0;
            t.net_bytes_out += net_out;
            t.net_bytes_in += net_in;
        }
        drop(stmt);
        drop(conn);
        if *group == UsageGroup::Token {
            // Tokens that held storage but ran no sandbox get a row too;
            // every row says what storage its token was billed for.
            for (owner, storage) in self.storage_usage_since(since_ms)? {
                let key = owner.unwrap_or_else(|| "-".into());
                totals
                    .entry(key.clone())
                    .or_insert_with(|| UsageRow::new(key))
                    .storage = Some(storage);
            }
            for t in totals.values_mut() {
                t.storage.get_or_insert_with(Default::default);
            }
        }
        Ok(totals.into_values().collect())
    }
}
