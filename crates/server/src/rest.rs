//! REST routes: kill, extend, list, inspect, expose, audit, events.

use crate::auth::{authenticate, authorize_sandbox};
use crate::{ApiError, AppState};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Json;
use manager::EndReason;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use store::{now_ms, NetEventQuery, SandboxEventQuery, SandboxFilter, NET_VERDICTS};

/// Most a single extend call may add (the Deno Sandbox documentation's cap).
const MAX_EXTEND: Duration = Duration::from_secs(30 * 60);

/// `DELETE /api/v3/sandbox/{id}` (JS SDK): kill and close its sockets now.
pub async fn kill(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    kill_sandbox(&state, &headers, &id, false).await
}

/// `DELETE /api/v3/sandboxes/{id}` (Python SDK, console host): kill, but
/// let the socket linger so the SDK's `close()` can still send its
/// `processKill`s.
pub async fn kill_console(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    kill_sandbox(&state, &headers, &id, true).await
}

async fn kill_sandbox(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    linger: bool,
) -> Result<Json<Value>, ApiError> {
    let token = authenticate(state, headers)?;
    authorize_sandbox(state, &token, id)?;
    let lingering = || state.killed_via_console.lock().expect("state lock");
    if linger {
        lingering().insert(id.to_string());
    }
    if !state.manager.kill(id, EndReason::Killed).await {
        lingering().remove(id);
        return Err(ApiError::not_found(id));
    }
    Ok(Json(json!({})))
}

/// `PATCH /api/v3/sandbox/{id}` `{"stop_at_ms"}` → the deadline granted.
pub async fn extend(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<Value>>,
) -> Result<Json<Value>, ApiError> {
    let token = authenticate(&state, &headers)?;
    authorize_sandbox(&state, &token, &id)?;
    let Some(Json(body)) = body else {
        return Err(ApiError::bad_config(
            "expected a JSON body {\"stop_at_ms\": <epoch ms>}",
        ));
    };
    let wanted = body
        .get("stop_at_ms")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::bad_config("stop_at_ms must be epoch milliseconds"))?;
    let now = now_ms();
    if wanted <= now {
        return Err(ApiError::bad_config("stop_at_ms is in the past"));
    }
    let wanted = wanted.min(now + MAX_EXTEND.as_millis() as i64);
    match state.manager.extend(&id, wanted) {
        Ok(granted) => Ok(Json(json!({ "stop_at_ms": granted }))),
        Err(manager::ManagerError::NotFound(_)) => Err(ApiError::not_found(&id)),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// `GET /api/v2/sandboxes` (JS, `labels[k]=v`) and `/api/v3/sandboxes`
/// (Python, `labels={'k': 'v'}` as a Python repr).
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let token = authenticate(&state, &headers)?;
    let mut labels = Vec::new();
    for (k, v) in &query {
        if let Some(key) = k.strip_prefix("labels[").and_then(|r| r.strip_suffix(']')) {
            labels.push((key.to_string(), v.clone()));
        } else if k == "labels" {
            labels.extend(parse_python_dict(v));
        }
    }
    // A token sees its own sandboxes only.
    let filter = SandboxFilter {
        running_only: false,
        labels,
        token_id: Some(token.id),
        limit: Some(1000),
    };
    let records = state
        .store
        .list_sandboxes(&filter)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let usages: std::collections::HashMap<String, store::Usage> = records
        .iter()
        .filter_map(|r| {
            let (u, _) = state.store.get_usage(&r.id).ok()??;
            Some((r.id.clone(), u))
        })
        .collect();
    let items: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "createdAt": iso(r.created_at_ms),
                "stoppedAt": r.stopped_at_ms.map(iso),
                "region": r.region,
                "status": r.status,
                "labels": r.labels,
                // airlock extensions (the SDKs ignore them), for `airlock ls`
                "memoryMb": r.memory_mb,
                "isolation": r.isolation,
                "cpuSeconds": usages.get(&r.id).map_or(0.0, |u| u.cpu_seconds()),
            })
        })
        .collect();
    Ok(Json(Value::Array(items)))
}

/// Most events one `GET .../audit` returns; page on with `after`.
const MAX_AUDIT_LIMIT: usize = 10_000;

/// A 400 for a bad query parameter of the event endpoints.
fn bad_query(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
}

/// The `after` parameter of the event endpoints: an event id.
fn parse_after(value: &str) -> Result<i64, ApiError> {
    value
        .parse()
        .map_err(|_| bad_query(format!("after must be an event id, got {value:?}")))
}

/// The `limit` parameter of the event endpoints: 1..=`max`. Out of range is
/// refused, not capped, so a client never takes a capped page for the last.
fn parse_limit(value: &str, max: usize) -> Result<usize, ApiError> {
    value
        .parse()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            bad_query(format!(
                "limit must be a number from 1 to {max}, got {value:?}"
            ))
        })
}

/// `GET /api/v3/sandbox/{id}/audit` (airlock extension): the sandbox's
/// network events, oldest first. Query: `after` (an event id: only later
/// events), `limit` (default 1000, at most 10000), `verdict` (`allowed` or
/// `denied`). Answers `{"events": [{"id", "atMs", "kind", ...}]}`; the
/// sandbox may have ended.
pub async fn audit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let token = authenticate(&state, &headers)?;
    authorize_sandbox(&state, &token, &id)?;
    let mut query = NetEventQuery::default();
    for (key, value) in &params {
        match key.as_str() {
            "after" => query.after_id = Some(parse_after(value)?),
            "limit" => query.limit = parse_limit(value, MAX_AUDIT_LIMIT)?,
            "verdict" => {
                if !NET_VERDICTS.contains(&value.as_str()) {
                    return Err(bad_query(format!(
                        "verdict must be one of {}, got {value:?}",
                        NET_VERDICTS.join(", ")
                    )));
                }
                query.verdict = Some(value.clone());
            }
            _ => {}
        }
    }
    // Up to 10000 rows: off the async workers.
    let store = state.store.clone();
    let events = tokio::task::spawn_blocking(move || store.net_events(&id, &query))
        .await
        .map_err(|e| ApiError::internal(format!("reading network events: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(json!({ "events": events })))
}

/// `GET /api/v3/sandbox/{id}` (airlock extension, `airlock inspect`):
/// the sandbox's record, limits and usage so far. Secret names only,
/// never values.
pub async fn inspect(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let token = authenticate(&state, &headers)?;
    authorize_sandbox(&state, &token, &id)?;
    let rec = state
        .store
        .get_sandbox(&id)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::not_found(&id))?;
    // The last meter sample (every second while it runs; final at its end).
    let (usage, usage_at) = state
        .store
        .get_usage(&id)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .unwrap_or_default();
    let cfg = state.manager.config();
    Ok(Json(json!({
        "id": rec.id,
        "region": rec.region,
        "status": rec.status,
        "createdAt": iso(rec.created_at_ms),
        "stoppedAt": rec.stopped_at_ms.map(iso),
        "stopAt": rec.stop_at_ms.map(iso),
        "exitReason": rec.exit_reason,
        "labels": rec.labels,
        "memoryMb": rec.memory_mb,
        "isolation": rec.isolation,
        "limits": {
            "cpus": cfg.cpu_millis as f64 / 1000.0,
            "pids": cfg.pids,
            "diskBytes": cfg.disk_bytes,
        },
        "allowNet": rec.allow_net,
        "secrets": rec.secret_names,
        "exposed": crate::expose::routes_json(&state, &rec.id),
        "usage": {
            "cpuSeconds": usage.cpu_seconds(),
            "memoryGbHours": usage.memory_gb_hours(),
            "peakMemoryBytes": usage.peak_memory_bytes,
            "sampledAt": usage_at.map(iso),
        },
    })))
}

/// Most events one `GET /api/v3/events` returns; page on with `after`.
const MAX_EVENTS_LIMIT: usize = 10_000;

/// `GET /api/v3/events` (airlock extension, `airlock events`): lifecycle
/// events (created, connected, extended, oom, ended) of the token's
/// sandboxes, oldest first. Query: `sandbox` (one sandbox's; 404 if the
/// token has no such sandbox), `after` (an event id), `limit` (default
/// 1000, at most 10000). Answers `{"events": [{"id", "sandboxId", "atMs",
/// "kind", "detail"}]}`.
pub async fn events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let token = authenticate(&state, &headers)?;
    let mut query = SandboxEventQuery {
        token_id: Some(token.id.clone()),
        ..Default::default()
    };
    for (key, value) in &params {
        match key.as_str() {
            "sandbox" => {
                authorize_sandbox(&state, &token, value)?;
                query.sandbox_id = Some(value.clone());
            }
            "after" => query.after_id = Some(parse_after(value)?),
            "limit" => query.limit = parse_limit(value, MAX_EVENTS_LIMIT)?,
            _ => {}
        }
    }
    let store = state.store.clone();
    let events = tokio::task::spawn_blocking(move || store.sandbox_events(&query))
        .await
        .map_err(|e| ApiError::internal(format!("reading sandbox events: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(json!({ "events": events })))
}

/// `POST /api/v3/sandbox/{id}/expose/http` → `{"domain"}`: a fresh domain
/// for the sandbox, bound by the `exposeHttp` RPC that follows. The JS SDK
/// sends `{}`, the Python SDK `{"port"}` or `{"pid"}` (checked here, bound
/// by its RPC). `expose/ssh` → `{hostname, username, port}` ([`expose_ssh`]).
/// Other kinds (vscode) are not supported.
pub async fn expose(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, kind)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Result<axum::response::Response, ApiError> {
    let token = authenticate(&state, &headers)?;
    authorize_sandbox(&state, &token, &id)?;
    match kind.as_str() {
        "http" => expose_http(&state, &id, body)
            .await
            .map(IntoResponse::into_response),
        "ssh" => expose_ssh(&state, &headers, &id).map(IntoResponse::into_response),
        _ => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "NOT_SUPPORTED",
            format!("exposing {kind} is not supported by this airlock version"),
        )),
    }
}

/// `expose/ssh`: a username for `ssh USERNAME@HOSTNAME -p PORT`, good until
/// the sandbox ends. The host name defaults to the one this request was
/// sent to, which the client can evidently reach.
fn expose_ssh(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<Json<agent_proto::console::ExposedSsh>, ApiError> {
    let Some(gateway) = &state.ssh else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "NOT_SUPPORTED",
            "SSH is off on this daemon (airlock serve --ssh-listen ADDR)",
        ));
    };
    let live = match state.manager.get(id) {
        Some(live) if !live.is_ended() => live,
        _ => return Err(ApiError::not_found(id)),
    };
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(host_without_port)
        .unwrap_or("localhost");
    match gateway.expose(&live, host) {
        Ok(exposed) => Ok(Json(exposed)),
        Err(ssh::ExposeError::Ended) => Err(ApiError::not_found(id)),
        Err(e @ ssh::ExposeError::TooMany) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "QUOTA_EXCEEDED",
            e.to_string(),
        )),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// `example.com:7070` → `example.com`, `[::1]:7070` → `::1`.
fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

async fn expose_http(
    state: &AppState,
    id: &str,
    body: Option<Json<Value>>,
) -> Result<Json<Value>, ApiError> {
    let Some(exposure) = &state.expose else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "NOT_SUPPORTED",
            "exposing HTTP is off on this daemon (airlock serve --expose-listen ADDR)",
        ));
    };
    let params = match body {
        None => serde_json::Map::new(),
        Some(Json(Value::Object(m))) => m,
        Some(Json(other)) => {
            return Err(ApiError::bad_config(format!(
                "expected a JSON object {{}}, {{\"port\": N}} or {{\"pid\": N}}, got {other}"
            )))
        }
    };
    let bad = |m: String| ApiError::bad_config(format!("expose: {m}"));
    let port = crate::sandbox_port::port_param(&params).map_err(bad)?;
    let pid = crate::sandbox_port::pid_param(&params).map_err(bad)?;
    if port.is_some() && pid.is_some() {
        return Err(ApiError::bad_config(
            "expose: give one of port and pid, not both",
        ));
    }
    let live = match state.manager.get(id) {
        Some(live) if !live.is_ended() => live,
        _ => return Err(ApiError::not_found(id)),
    };
    let domain = exposure.allocate(&live)?;
    Ok(Json(json!({ "domain": domain })))
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no route for {}", uri.path()),
    )
}

fn iso(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses `{'k': 'v', "k2": "v2"}` (a Python dict repr of strings).
fn parse_python_dict(text: &str) -> Vec<(String, String)> {
    let inner = text.trim().trim_start_matches('{').trim_end_matches('}');
    let unquote = |s: &str| s.trim().trim_matches(|c| c == '\'' || c == '"').to_string();
    inner
        .split(',')
        .filter_map(|pair| pair.split_once(':'))
        .map(|(k, v)| (unquote(k), unquote(v)))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// `GET /metrics` on the API address: needs a token like every other route.
pub async fn metrics(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    authenticate(&state, &headers)?;
    Ok(metrics_open(State(state)).await)
}

pub async fn metrics_open(State(state): State<Arc<AppState>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    // Off the async threads: the storage figures are a store query.
    let body = match tokio::task::spawn_blocking(move || state.metrics.encode()).await {
        Ok(body) => body,
        Err(e) => {
            return (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding metrics: {e}"),
            )
                .into_response()
        }
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_without_its_port() {
        assert_eq!(host_without_port("example.com:7070"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("127.0.0.1:80"), "127.0.0.1");
        assert_eq!(host_without_port("[::1]:7070"), "::1");
        assert_eq!(host_without_port("[::1]"), "::1");
    }

    #[test]
    fn python_label_repr() {
        assert_eq!(
            parse_python_dict("{'k': 'v', 'a': 'b'}"),
            vec![("k".into(), "v".into()), ("a".into(), "b".into())]
        );
        assert!(parse_python_dict("{}").is_empty());
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
