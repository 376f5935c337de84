//! Network audit events: what each sandbox tried to reach and what the
//! egress gateway decided, one row per DNS query, per denied or finished
//! TCP connection and per dropped UDP flow.
//!
//! The table is append-only and read in `id` order, so `id` doubles as the
//! paging cursor (`NetEventQuery::after_id`). Names and reasons come from
//! untrusted sandbox traffic: callers that print them to a terminal must
//! escape control characters.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Row};
use serde::{Deserialize, Serialize};

use crate::error::{Context, StoreError};
use crate::sandboxes::exists;
use crate::Store;

/// The values of [`NetEvent::kind`].
pub const NET_KINDS: &[&str] = &["dns", "tcp", "udp"];
/// The values of [`NetEvent::verdict`].
pub const NET_VERDICTS: &[&str] = &["allowed", "denied"];
/// How many events a [`NetEventQuery`] returns unless told otherwise.
pub const NET_EVENTS_DEFAULT_LIMIT: usize = 1000;

/// One network event of a sandbox. Serialises with camelCase keys
/// (`atMs`, `bytesOut`, ...), the shape of the HTTP API and `airlock audit
/// --json` alike.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetEvent {
    /// The row id, increasing in insertion order; ignored (pass 0) when
    /// recording.
    #[serde(default)]
    pub id: i64,
    /// When it happened (for a connection: when it ended), epoch ms.
    pub at_ms: i64,
    /// One of [`NET_KINDS`].
    pub kind: String,
    /// The host name queried or dialled (or an IP address).
    pub name: String,
    pub port: u16,
    /// One of [`NET_VERDICTS`].
    pub verdict: String,
    /// Why: the allow-list entry that matched, or why it was denied.
    pub reason: String,
    /// The address actually connected to, if any.
    pub upstream: Option<String>,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub duration_ms: u64,
    /// Names of the secrets used on the connection, never their values.
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// Which events [`Store::net_events`] returns: those after `after_id`,
/// optionally of one verdict, at most `limit` of them, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetEventQuery {
    pub after_id: Option<i64>,
    pub limit: usize,
    /// One of [`NET_VERDICTS`], or `None` for all.
    pub verdict: Option<String>,
}

impl Default for NetEventQuery {
    fn default() -> Self {
        Self {
            after_id: None,
            limit: NET_EVENTS_DEFAULT_LIMIT,
            verdict: None,
        }
    }
}

fn check_one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), StoreError> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(StoreError::InvalidNetEvent(format!(
        "{field} {value:?} is not one of {}",
        allowed.join(", ")
    )))
}

impl NetEvent {
    fn validate(&self) -> Result<(), StoreError> {
        check_one_of("kind", &self.kind, NET_KINDS)?;
        check_one_of("verdict", &self.verdict, NET_VERDICTS)?;
        // Stored comma-separated, so a name must be non-empty and comma-free
        // to read back as itself.
        if let Some(bad) = self
            .secrets
            .iter()
            .find(|s| s.is_empty() || s.contains(','))
        {
            return Err(StoreError::InvalidNetEvent(format!(
                "secret name {bad:?} is empty or contains a comma"
            )));
        }
        Ok(())
    }
}

/// Counters are u64 in the API and i64 in SQLite; values past i64::MAX
/// (never reached in practice) saturate rather than wrap negative.
fn to_sql_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_sql_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

const COLUMNS: &str = "id, at_ms, kind, name, port, verdict, reason, upstream, \
                       bytes_out, bytes_in, duration_ms, secrets";

fn from_row(r: &Row<'_>) -> rusqlite::Result<NetEvent> {
    let secrets: String = r.get(11)?;
    Ok(NetEvent {
        id: r.get(0)?,
        at_ms: r.get(1)?,
        kind: r.get(2)?,
        name: r.get(3)?,
        port: r.get(4)?,
        verdict: r.get(5)?,
        reason: r.get(6)?,
        upstream: r.get(7)?,
        bytes_out: from_sql_u64(r.get(8)?),
        bytes_in: from_sql_u64(r.get(9)?),
        duration_ms: from_sql_u64(r.get(10)?),
        secrets: if secrets.is_empty() {
            Vec::new()
        } else {
            secrets.split(',').map(str::to_owned).collect()
        },
    })
}

impl Store {
    /// Appends a batch of events of one sandbox in one transaction: all of
    /// them or, on error, none. Each event's `id` is ignored. Fails with
    /// [`StoreError::SandboxNotFound`] for a sandbox without a record and
    /// [`StoreError::InvalidNetEvent`] for a kind, verdict or secret name
    /// outside its set.
    pub fn record_net_events(
        &self,
        sandbox_id: &str,
        events: &[NetEvent],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        for e in events {
            e.validate()?;
        }
        let mut conn = self.lock();
        let tx = conn.transaction().ctx("recording network events")?;
        if !exists(&tx, sandbox_id)? {
            return Err(StoreError::SandboxNotFound(sandbox_id.to_owned()));
        }
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO net_events (sandbox_id, at_ms, kind, name, port, verdict, \
                     reason, upstream, bytes_out, bytes_in, duration_ms, secrets) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .ctx("recording network events")?;
            for e in events {
                stmt.execute(params![
                    sandbox_id,
                    e.at_ms,
                    e.kind,
                    e.name,
                    e.port,
                    e.verdict,
                    e.reason,
                    e.upstream,
                    to_sql_u64(e.bytes_out),
                    to_sql_u64(e.bytes_in),
                    to_sql_u64(e.duration_ms),
                    e.secrets.join(","),
                ])
                .ctx("recording network events")?;
            }
        }
        tx.commit().ctx("recording network events")
    }

    /// The sandbox's events matching `query`, in the order they were
    /// recorded, with their ids. An unknown sandbox has none.
    pub fn net_events(
        &self,
        sandbox_id: &str,
        query: &NetEventQuery,
    ) -> Result<Vec<NetEvent>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM net_events WHERE sandbox_id = ?1");
        let mut args = vec![Value::Text(sandbox_id.to_owned())];
        if let Some(after) = query.after_id {
            args.push(Value::Integer(after));
            sql.push_str(&format!(" AND id > ?{}", args.len()));
        }
        if let Some(verdict) = &query.verdict {
            check_one_of("verdict", verdict, NET_VERDICTS)?;
            args.push(Value::Text(verdict.clone()));
            sql.push_str(&format!(" AND verdict = ?{}", args.len()));
        }
        args.push(Value::Integer(
            i64::try_from(query.limit).unwrap_or(i64::MAX),
        ));
        sql.push_str(&format!(" ORDER BY id LIMIT ?{}", args.len()));

        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&sql).ctx("reading network events")?;
        let events = stmt
            .query_map(params_from_iter(args), from_row)
            .ctx("reading network events")?
            .collect::<Result<Vec<_>, _>>()
            .ctx("reading network events")?;
        Ok(events)
    }

    /// How many events the sandbox has, all verdicts.
    pub fn count_net_events(&self, sandbox_id: &str) -> Result<u64, StoreError> {
        self.lock()
            .query_row(
                "SELECT COUNT(*) FROM net_events WHERE sandbox_id = ?1",
                [sandbox_id],
                |r| r.get::<_, i64>(0),
            )
            .map(from_sql_u64)
            .ctx("counting network events")
    }
}
