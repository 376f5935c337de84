//! Sandbox records: what ran, for whom, with which limits, and how it ended.
//!
//! The live state of a sandbox is in the manager's memory; this table is the
//! history plus what the daemon needs after a restart (which sandboxes it
//! must mark as ended). Variable-length fields are JSON text columns: they
//! are read whole, and label filters use SQLite's built-in `json_each`.

use std::collections::BTreeMap;

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension, Row};

use crate::error::{Context, StoreError};
use crate::Store;

pub const STATUS_RUNNING: &str = "running";
pub const STATUS_STOPPED: &str = "stopped";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxRecord {
    pub id: String,
    pub token_id: Option<String>,
    pub region: String,
    /// [`STATUS_RUNNING`] or [`STATUS_STOPPED`].
    pub status: String,
    pub created_at_ms: i64,
    pub stopped_at_ms: Option<i64>,
    /// When the sandbox is due to be stopped (timeout), if it has a deadline.
    pub stop_at_ms: Option<i64>,
    pub memory_mb: u32,
    pub labels: BTreeMap<String, String>,
    pub exit_reason: Option<String>,
    pub allow_net: Vec<String>,
    /// Names of the secrets the sandbox may use. Values never reach the store.
    pub secret_names: Vec<String>,
    /// The isolation backend it runs on (`native`, `gvisor`).
    pub isolation: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxFilter {
    pub running_only: bool,
    /// Every pair must be present in the sandbox's labels.
    pub labels: Vec<(String, String)>,
    pub token_id: Option<String>,
    pub limit: Option<usize>,
}

const COLUMNS: &str = "id, token_id, region, status, created_at_ms, stopped_at_ms, stop_at_ms, \
                       memory_mb, labels, exit_reason, allow_net, secret_names, isolation";

/// The row as stored, before the JSON columns are parsed. Parsing happens
/// outside rusqlite's row callback so a bad column can name its sandbox.
struct RawRow {
    rec: SandboxRecord,
    labels: String,
    allow_net: String,
    secret_names: String,
}

fn raw_from_row(r: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        rec: SandboxRecord {
            id: r.get(0)?,
            token_id: r.get(1)?,
            region: r.get(2)?,
            status: r.get(3)?,
            created_at_ms: r.get(4)?,
            stopped_at_ms: r.get(5)?,
            stop_at_ms: r.get(6)?,
            memory_mb: r.get(7)?,
            exit_reason: r.get(9)?,
            isolation: r.get(12)?,
            ..Default::default()
        },
        labels: r.get(8)?,
        allow_net: r.get(10)?,
        secret_names: r.get(11)?,
    })
}

impl RawRow {
    fn parse(self) -> Result<SandboxRecord, StoreError> {
        let mut rec = self.rec;
        let bad = |column, error| StoreError::BadJson {
            id: rec.id.clone(),
            column,
            error,
        };
        let labels = serde_json::from_str(&self.labels).map_err(|e| bad("labels", e))?;
        let allow_net = serde_json::from_str(&self.allow_net).map_err(|e| bad("allow_net", e))?;
        let secret_names =
            serde_json::from_str(&self.secret_names).map_err(|e| bad("secret_names", e))?;
        rec.labels = labels;
        rec.allow_net = allow_net;
        rec.secret_names = secret_names;
        Ok(rec)
    }
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    // Serialising maps of strings and vectors of strings cannot fail.
    serde_json::to_string(v).expect("string collections serialise to JSON")
}

impl Store {
    /// Records a new sandbox. Fails if the id already exists.
    pub fn insert_sandbox(&self, rec: &SandboxRecord) -> Result<(), StoreError> {
        if rec.status != STATUS_RUNNING && rec.status != STATUS_STOPPED {
            return Err(StoreError::InvalidStatus(rec.status.clone()));
        }
        self.lock()
            .execute(
                &format!(
                    "INSERT INTO sandboxes ({COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
                ),
                params![
                    rec.id,
                    rec.token_id,
                    rec.region,
                    rec.status,
                    rec.created_at_ms,
                    rec.stopped_at_ms,
                    rec.stop_at_ms,
                    rec.memory_mb,
                    to_json(&rec.labels),
                    rec.exit_reason,
                    to_json(&rec.allow_net),
                    to_json(&rec.secret_names),
                    rec.isolation,
                ],
            )
            .ctx("inserting sandbox")?;
        Ok(())
    }

    /// Marks a sandbox stopped. Ending an already stopped sandbox is a no-op
    /// that keeps the first time and reason (the kill that ended it, not the
    /// reaper that noticed later); an unknown id is an error.
    pub fn end_sandbox(
        &self,
        id: &str,
        stopped_at_ms: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        let n = conn
            .execute(
                "UPDATE sandboxes SET status = 'stopped', stopped_at_ms = ?2, exit_reason = ?3 \
                 WHERE id = ?1 AND status = 'running'",
                params![id, stopped_at_ms, reason],
            )
            .ctx("ending sandbox")?;
        if n == 0 && !exists(&conn, id)? {
            return Err(StoreError::SandboxNotFound(id.to_owned()));
        }
        Ok(())
    }

    /// Sets or clears the sandbox's deadline (timeout extended or removed).
    pub fn set_stop_at(&self, id: &str, stop_at_ms: Option<i64>) -> Result<(), StoreError> {
        let n = self
            .lock()
            .execute(
                "UPDATE sandboxes SET stop_at_ms = ?2 WHERE id = ?1",
                params![id, stop_at_ms],
            )
            .ctx("setting sandbox deadline")?;
        if n == 0 {
            return Err(StoreError::SandboxNotFound(id.to_owned()));
        }
        Ok(())
    }

    pub fn get_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, StoreError> {
        let raw = self
            .lock()
            .query_row(
                &format!("SELECT {COLUMNS} FROM sandboxes WHERE id = ?1"),
                [id],
                raw_from_row,
            )
            .optional()
            .ctx("reading sandbox")?;
        raw.map(RawRow::parse).transpose()
    }

    /// Sandboxes matching `filter`, newest first.
    pub fn list_sandboxes(&self, filter: &SandboxFilter) -> Result<Vec<SandboxRecord>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM sandboxes WHERE 1");
        let mut args: Vec<Value> = Vec::new();
        if filter.running_only {
            sql.push_str(" AND status = 'running'");
        }
        if let Some(token) = &filter.token_id {
            args.push(Value::Text(token.clone()));
            sql.push_str(&format!(" AND token_id = ?{}", args.len()));
        }
        for (key, value) in &filter.labels {
            // json_each compares keys literally, so keys with dots or quotes
            // need no JSON-path escaping (json_extract would).
            args.push(Value::Text(key.clone()));
            args.push(Value::Text(value.clone()));
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM json_each(sandboxes.labels) \
                 WHERE json_each.key = ?{} AND json_each.value = ?{})",
                args.len() - 1,
                args.len()
            ));
        }
        // rowid breaks ties between sandboxes created in the same millisecond.
        sql.push_str(" ORDER BY created_at_ms DESC, rowid DESC");
        if let Some(limit) = filter.limit {
            args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
            sql.push_str(&format!(" LIMIT ?{}", args.len()));
        }

        let conn = self.lock();
        let mut stmt = conn.prepare(&sql).ctx("listing sandboxes")?;
        let raws = stmt
            .query_map(params_from_iter(args), raw_from_row)
            .ctx("listing sandboxes")?
            .collect::<Result<Vec<_>, _>>()
            .ctx("listing sandboxes")?;
        drop(stmt);
        drop(conn);
        raws.into_iter().map(RawRow::parse).collect()
    }

    /// Marks every running sandbox stopped and returns their ids. The daemon
    /// calls this at start-up: sandboxes do not survive a daemon restart, so
    /// any still "running" here died with the previous process.
    pub fn end_all_running(
        &self,
        stopped_at_ms: i64,
        reason: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().ctx("ending running sandboxes")?;
        let ids = {
            let mut stmt = tx
                .prepare("SELECT id FROM sandboxes WHERE status = 'running' ORDER BY created_at_ms, rowid")
                .ctx("ending running sandboxes")?;
            let ids = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .ctx("ending running sandboxes")?
                .collect::<Result<Vec<_>, _>>()
                .ctx("ending running sandboxes")?;
            ids
        };
        tx.execute(
            "UPDATE sandboxes SET status = 'stopped', stopped_at_ms = ?1, exit_reason = ?2 \
             WHERE status = 'running'",
            params![stopped_at_ms, reason],
        )
        .ctx("ending running sandboxes")?;
        tx.commit().ctx("ending running sandboxes")?;
        Ok(ids)
    }
}

pub(crate) fn exists(conn: &rusqlite::Connection, id: &str) -> Result<bool, StoreError> {
    conn.query_row("SELECT 1 FROM sandboxes WHERE id = ?1", [id], |_| Ok(()))
        .optional()
        .ctx("reading sandbox")
        .map(|o| o.is_some())
}
