//! The airlock daemon's front: HTTP and WebSocket routes of the Deno
//! Sandbox protocol (see docs/protocol.md), so the official SDKs work
//! unchanged. Sandbox work goes to the `manager`; this crate never touches
//! namespaces or files of a sandbox.

mod auth;
mod config;
mod error;
pub mod expose;
pub mod listen;
pub mod metrics;
mod rest;
mod sandbox_port;
mod storage;
mod ws;

use axum::routing::{delete, get, post};
use axum::Router;
use manager::Manager;
use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use store::Store;

pub use config::{ConfigLimits, SandboxConfig};
pub use error::ApiError;

/// Largest WebSocket message accepted from a client; bigger is refused by
/// closing with 1009. The JS SDK sends a `Uint8Array` (`writeFile`,
/// `fetch` bodies, a stream's chunk) as one message in base64, and the
/// Python SDK's `write_file(bytes)` sends its bytes as one chunk, so this
/// is the JS SDK's own WebSocket limit (`ws`'s `maxPayload`, 100 MiB):
/// content up to 75 MiB in one piece, anything the SDK itself can send.
/// It is also the largest frame: clients send a message as one frame
/// (tungstenite's default frame limit of 16 MiB closed such messages with
/// 1009). The library holds a message whole before the daemon sees it, so
/// each connection can hold up to this much (outside any sandbox's
/// cgroup) while one arrives; [`FILE_BUDGET`] bounds what the daemon then
/// keeps of file contents across all connections.
pub const MAX_MESSAGE: usize = 100 << 20;

/// Bytes of file contents the daemon holds at once, across all clients:
/// `writeFile` content received inline while it streams to the agent, and
/// `readFile` replies assembled for SDKs that take a file as one message
/// (about 2.7 bytes per file byte while a reply is built). A call that
/// would exceed it fails at once with an error saying so.
pub const FILE_BUDGET: usize = 768 << 20;

pub struct AppState {
    pub manager: Arc<Manager>,
    pub store: Arc<Store>,
    pub limits: ConfigLimits,
    /// Server → client stream ids, unique across the whole daemon: the JS
    /// SDK keys inbound streams by bare id in one map per client process.
    pub(crate) next_stream_id: AtomicU64,
    /// Sandboxes killed through the console route (the Python SDK's),
    /// whose sockets stay open briefly so the SDK's close() can finish.
    pub(crate) killed_via_console: Mutex<HashSet<String>>,
    pub metrics: metrics::Metrics,
    /// Exposed HTTP (`exposeHttp`); `None` when the daemon serves none.
    pub expose: Option<Arc<expose::Exposure>>,
    /// [`FILE_BUDGET`], in bytes.
    pub(crate) file_budget: Arc<tokio::sync::Semaphore>,
    /// The SSH gateway (`expose/ssh`); `None` when the daemon serves none.
    pub ssh: Option<Arc<ssh::Gateway>>,
}

impl AppState {
    pub fn new(
        manager: Arc<Manager>,
        store: Arc<Store>,
        limits: ConfigLimits,
        expose: Option<Arc<expose::Exposure>>,
        ssh: Option<Arc<ssh::Gateway>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            limits,
            next_stream_id: AtomicU64::new(1),
            killed_via_console: Mutex::new(HashSet::new()),
            metrics: metrics::Metrics::new(
                manager.clone(),
                expose.as_ref().map(|e| e.metrics.clone()),
            ),
            manager,
            expose,
            file_budget: Arc::new(tokio::sync::Semaphore::new(FILE_BUDGET)),
            ssh,
        })
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v3/sandboxes/create", get(ws::create))
        .route("/api/v3/sandbox/{id}/connect", get(ws::connect))
        .route(
            "/api/v3/sandbox/{id}",
            get(rest::inspect).delete(rest::kill).patch(rest::extend),
        )
        .route("/api/v3/sandboxes/{id}", delete(rest::kill_console))
        .route("/api/v2/sandboxes", get(rest::list))
        .route("/api/v3/sandboxes", get(rest::list))
        .route("/api/v3/sandbox/{id}/expose/{kind}", post(rest::expose))
        .route("/api/v3/sandbox/{id}/audit", get(rest::audit))
        .route(
            "/api/v3/sandbox/{id}/snapshot",
            post(storage::create_sandbox_snapshot),
        )
        .route("/api/v3/events", get(rest::events))
        .route(
            "/api/v2/volumes",
            get(storage::list_volumes).post(storage::create_volume),
        )
        .route(
            "/api/v2/volumes/{id}",
            get(storage::get_volume).delete(storage::delete_volume),
        )
        .route(
            "/api/v2/volumes/{id}/snapshot",
            post(storage::create_snapshot),
        )
        .route("/api/v2/snapshots", get(storage::list_snapshots))
        .route(
            "/api/v2/snapshots/{id}",
            get(storage::get_snapshot).delete(storage::delete_snapshot),
        )
        .route("/metrics", get(rest::metrics))
        .route("/health", get(|| async { "ok" }))
        .fallback(rest::not_found)
        .with_state(state)
}

/// `/metrics` alone, without authentication, for a separate (private)
/// listen address (`airlock serve --metrics-listen`).
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(rest::metrics_open))
        .with_state(state)
}
