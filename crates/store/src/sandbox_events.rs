//! Sandbox lifecycle events: created, connected, extended, oom, ended.
//!
//! Append-only and read in `id` order, so `id` is the paging cursor, as for
//! network events. `detail` is free text (a reason, a deadline, a count).

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Row};
use serde::{Deserialize, Serialize};

use crate::error::{Context, StoreError};
use crate::sandboxes::exists;
use crate::Store;

/// The values of [`SandboxEvent::kind`].
pub const SANDBOX_EVENT_KINDS: &[&str] = &["created", "connected", "extended", "oom", "ended"];
/// How many events [`Store::sandbox_events`] returns when given limit 0.
pub const SANDBOX_EVENTS_DEFAULT_LIMIT: usize = 1000;

/// One lifecycle event. Serialises with camelCase keys (`sandboxId`,
/// `atMs`), the shape of the HTTP API and `airlock events --json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxEvent {
    pub id: i64,
    pub sandbox_id: String,
    pub at_ms: i64,
    /// One of [`SANDBOX_EVENT_KINDS`].
    pub kind: String,
    pub detail: String,
}

/// Which events [`Store::sandbox_events`] returns, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxEventQuery {
    /// Only this sandbox's events.
    pub sandbox_id: Option<String>,
    /// Only events with a larger id.
    pub after_id: Option<i64>,
    /// At most this many (0: [`SANDBOX_EVENTS_DEFAULT_LIMIT`]).
    pub limit: usize,
    /// Only events of sandboxes created with this token.
    pub token_id: Option<String>,
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<SandboxEvent> {
    Ok(SandboxEvent {
        id: r.get(0)?,
        sandbox_id: r.get(1)?,
        at_ms: r.get(2)?,
        kind: r.get(3)?,
        detail: r.get(4)?,
    })
}

impl Store {
    /// Appends one event of sandbox `sandbox_id` at `at_ms` and returns its
    /// id. Fails with [`StoreError::SandboxNotFound`] for a sandbox without
    /// a record and [`StoreError::InvalidSandboxEvent`] for a kind outside
    /// [`SANDBOX_EVENT_KINDS`].
    pub fn record_sandbox_event(
        &self,
        sandbox_id: &str,
        at_ms: i64,
        kind: &str,
        detail: &str,
    ) -> Result<i64, StoreError> {
        if !SANDBOX_EVENT_KINDS.contains(&kind) {
            return Err(StoreError::InvalidSandboxEvent(format!(
                "kind {kind:?} is not one of {}",
                SANDBOX_EVENT_KINDS.join(", ")
            )));
        }
        let mut conn = self.lock();
        let tx = conn.transaction().ctx("recording a sandbox event")?;
        if !exists(&tx, sandbox_id)? {
            return Err(StoreError::SandboxNotFound(sandbox_id.to_owned()));
        }
        tx.execute(
            "INSERT INTO sandbox_events (sandbox_id, at_ms, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            params![sandbox_id, at_ms, kind, detail],
        )
        .ctx("recording a sandbox event")?;
        let id = tx.last_insert_rowid();
        tx.commit().ctx("recording a sandbox event")?;
        Ok(id)
    }

    /// The events matching `query`, in the order they were recorded.
    pub fn sandbox_events(
        &self,
        query: &SandboxEventQuery,
    ) -> Result<Vec<SandboxEvent>, StoreError> {
        let mut sql = String::from(
            "SELECT e.id, e.sandbox_id, e.at_ms, e.kind, e.detail FROM sandbox_events e",
        );
        let mut args: Vec<Value> = Vec::new();
        let mut conds: Vec<String> = Vec::new();
        if let Some(token) = &query.token_id {
            sql.push_str(" JOIN sandboxes s ON s.id = e.sandbox_id");
            args.push(Value::Text(token.clone()));
            conds.push(format!("s.token_id = ?{}", args.len()));
        }
        if let Some(id) = &query.sandbox_id {
            args.push(Value::Text(id.clone()));
            conds.push(format!("e.sandbox_id = ?{}", args.len()));
        }
        if let Some(after) = query.after_id {
            args.push(Value::Integer(after));
            conds.push(format!("e.id > ?{}", args.len()));
        }
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        let limit = if query.limit == 0 {
            SANDBOX_EVENTS_DEFAULT_LIMIT
        } else {
            query.limit
        };
        args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        sql.push_str(&format!(" ORDER BY e.id LIMIT ?{}", args.len()));

        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&sql).ctx("reading sandbox events")?;
        let events = stmt
            .query_map(params_from_iter(args), from_row)
            .ctx("reading sandbox events")?
            .collect::<Result<Vec<_>, _>>()
            .ctx("reading sandbox events")?;
        Ok(events)
    }
}
