//! WebSocket routes: create a sandbox, or attach to one, then serve its
//! JSON-RPC session.

mod fetch;
mod rpc;
mod session;

use crate::auth::{authenticate, authorize_sandbox};
use crate::config;
use crate::{ApiError, AppState, MAX_MESSAGE};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use manager::{AdmissionError, EndReason, Live, ManagerError};
use std::sync::Arc;
use store::now_ms;

/// `GET /api/v3/sandboxes/create` (upgrade): validates the config, creates
/// the sandbox, then upgrades; the socket is the sandbox's primary client.
pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let started = std::time::Instant::now();
    match create_sandbox(&state, &headers).await {
        Ok(live) => {
            state
                .metrics
                .create_seconds
                .get_or_create(&crate::metrics::IsolationLabels::of(live.isolation))
                .observe(started.elapsed().as_secs_f64());
            upgrade(state, live, ws, true, ClientKind::of(&headers))
        }
        Err(e) => e.into_response(),
    }
}

async fn create_sandbox(state: &Arc<AppState>, headers: &HeaderMap) -> Result<Arc<Live>, ApiError> {
    let token = authenticate(state, headers)?;
    let raw = headers.get("x-deno-sandbox-config").map(|v| v.as_bytes());
    let map = config::decode_header(raw)?;
    let cfg = config::parse(&map, &state.limits, now_ms())?;
    let port = cfg.port;
    if port.is_some() && state.expose.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "NOT_SUPPORTED",
            "`port`: exposing HTTP is off on this daemon (airlock serve --expose-listen ADDR)",
        ));
    }
    if cfg.ssh && state.ssh.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "NOT_SUPPORTED",
            "`ssh`: SSH is off on this daemon (airlock serve --ssh-listen ADDR)",
        ));
    }
    let isolation = pinned_isolation(&token)?;
    let mut request = cfg.into_request(Some(token.id));
    request.isolation = isolation;
    let live = state.manager.create(request).await.map_err(|e| {
        if let ManagerError::Refused(r) = &e {
            let limit = match r {
                AdmissionError::Quota(_) => "quota",
                AdmissionError::Capacity(_) => "capacity",
            };
            state
                .metrics
                .refusals
                .get_or_create(&crate::metrics::LimitLabels {
                    limit: limit.into(),
                })
                .inc();
        }
        create_error(e)
    })?;
    if let (Some(port), Some(exposure)) = (port, &state.expose) {
        let exposed = exposure.allocate(&live).and_then(|domain| {
            exposure
                .bind(&live, &domain, port)
                .map_err(|e| ApiError::internal(e.message))
        });
        if let Err(e) = exposed {
            state.manager.kill(&live.id, EndReason::Killed).await;
            return Err(e);
        }
    }
    Ok(live)
}

/// The backend the token is pinned to (`airlock token create --isolation`),
/// if any.
fn pinned_isolation(token: &store::TokenInfo) -> Result<Option<manager::Isolation>, ApiError> {
    token
        .isolation
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e| ApiError::internal(format!("token {}: {e}", token.id)))
}

/// A refused or failed create, as the protocol's upgrade error: 429 for a
/// token's quota, 503 when the host is full or creation failed.
fn create_error(e: ManagerError) -> ApiError {
    match e {
        ManagerError::Refused(AdmissionError::Quota(m)) => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "QUOTA_EXCEEDED", m)
        }
        ManagerError::Refused(AdmissionError::Capacity(m)) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "CAPACITY_EXHAUSTED", m)
        }
        ManagerError::Storage(e) => crate::storage::storage_error(e),
        other => {
            tracing::warn!("create failed: {other}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SANDBOX_CREATE_FAILED",
                other.to_string(),
            )
        }
    }
}

/// `GET /api/v3/sandbox/{id}/connect` (upgrade): a further client of a live
/// sandbox; its disconnect never ends the sandbox.
pub async fn connect(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    let authorized =
        authenticate(&state, &headers).and_then(|token| authorize_sandbox(&state, &token, &id));
    if let Err(e) = authorized {
        return e.into_response();
    }
    match state.manager.get(&id) {
        Some(live) if !live.is_ended() => {
            state.manager.record_event(&id, "connected", "");
            upgrade(state, live, ws, false, ClientKind::of(&headers))
        }
        _ => ApiError::not_found(&id).into_response(),
    }
}

/// Which SDK is on the other end, where the server must answer the two
/// differently (docs/protocol.md, "airlock extensions").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientKind {
    /// The Python SDK (its `websockets` library names itself in the
    /// User-Agent): `walk`/`expandGlob` must answer with lists.
    Python,
    /// The JS SDK, and anything else: the protocol as the JS schema has it.
    Standard,
}

impl ClientKind {
    /// Largest message the client's WebSocket accepts: the Python SDK's
    /// `websockets` closes the connection over 1 MiB (its default
    /// `max_size`), the JS SDK's `ws` over 100 MiB (its default
    /// `maxPayload`).
    pub(crate) fn max_message(self) -> usize {
        match self {
            ClientKind::Python => 1 << 20,
            ClientKind::Standard => 100 << 20,
        }
    }

    fn of(headers: &HeaderMap) -> Self {
        let ua = headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if ua.contains("websockets/") {
            ClientKind::Python
        } else {
            ClientKind::Standard
        }
    }
}

fn upgrade(
    state: Arc<AppState>,
    live: Arc<Live>,
    ws: WebSocketUpgrade,
    primary: bool,
    kind: ClientKind,
) -> Response {
    let id = live.id.clone();
    let on_fail = (state.clone(), live.clone());
    let mut resp = ws
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_failed_upgrade(move |e| {
            tracing::warn!(sandbox = on_fail.1.id, "websocket upgrade failed: {e}");
            if primary && on_fail.1.stop_at_ms().is_none() {
                let (state, live) = on_fail;
                tokio::spawn(async move { state.manager.kill(&live.id, EndReason::Closed).await });
            }
        })
        .on_upgrade(move |socket| session::run(state, live, socket, primary, kind));
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-deno-sandbox-id", v);
    }
    resp
}
