//! Exposed HTTP (`sandbox.exposeHttp`, docs/protocol.md, "Exposed HTTP"): the
//! REST call allocates a domain, the `exposeHttp` RPC binds it to a port of
//! the sandbox, and the `expose` crate's ingress serves `https://{domain}`
//! by splicing each connection into a TCP connection the sandbox's agent
//! opens to that port (so a server on the sandbox's 127.0.0.1 is reachable).
//! A sandbox's domains are dropped, and their open connections closed, when
//! it ends.

use crate::sandbox_port;
use crate::{ApiError, AppState};
use agent_client::AgentClient;
use agent_proto::calls::{ExposeHttpParams, FromParams, SandboxPort};
use agent_proto::{ErrorObject, Method};
use axum::http::StatusCode;
use expose::{Backend, BoxFuture, BoxedIo, RouteError, Router};
use manager::Live;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The daemon's exposure state: the routing table the ingress reads.
pub struct Exposure {
    pub router: Arc<Router>,
    pub metrics: Arc<expose::Metrics>,
    /// The local CA users trust for exposed URLs (none with an operator
    /// certificate).
    pub ca_path: Option<PathBuf>,
    /// Sandboxes whose end is already being watched.
    watched: Arc<Mutex<HashSet<String>>>,
}

impl Exposure {
    pub fn new(
        router: Arc<Router>,
        metrics: Arc<expose::Metrics>,
        ca_path: Option<PathBuf>,
    ) -> Self {
        Self {
            router,
            metrics,
            ca_path,
            watched: Arc::default(),
        }
    }

    /// A fresh domain for `live`; its routes go when it ends.
    pub(crate) fn allocate(&self, live: &Arc<Live>) -> Result<String, ApiError> {
        let domain = self.router.allocate(&live.id).map_err(|e| match e {
            RouteError::TooManyRoutes { .. } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "QUOTA_EXCEEDED",
                e.to_string(),
            ),
            other => ApiError::internal(other.to_string()),
        })?;
        if self
            .watched
            .lock()
            .expect("expose lock")
            .insert(live.id.clone())
        {
            let router = self.router.clone();
            let watched = self.watched.clone();
            let id = live.id.clone();
            let mut ended = live.ended();
            tokio::spawn(async move {
                let _ = ended.wait_for(Option::is_some).await;
                router.remove_sandbox(&id);
                watched.lock().expect("expose lock").remove(&id);
            });
        }
        Ok(domain)
    }

    /// Binds `domain` (allocated for `live`) to `port`.
    pub(crate) fn bind(&self, live: &Live, domain: &str, port: u16) -> Result<(), ErrorObject> {
        let backend = Arc::new(AgentBackend {
            client: live.client.clone(),
        });
        self.router
            .bind(domain, &live.id, port, backend)
            .map_err(|e| match e {
                RouteError::UnknownDomain { .. } | RouteError::WrongSandbox { .. } => {
                    ErrorObject::new(
                        "NotFound",
                        format!(
                            "exposeHttp: {e}; get one from POST /api/v3/sandbox/{}/expose/http",
                            live.id
                        ),
                        Some("ENOENT"),
                    )
                }
                other => ErrorObject::type_error(format!("exposeHttp: {other}")),
            })
    }
}

/// Opens exposed connections through the sandbox's agent.
struct AgentBackend {
    client: AgentClient,
}

impl Backend for AgentBackend {
    fn open(&self, port: u16) -> BoxFuture<'static, io::Result<BoxedIo>> {
        let client = self.client.clone();
        Box::pin(async move {
            match client.tcp_connect("127.0.0.1", port).await {
                Ok(Ok(tunnel)) => Ok(Box::new(tunnel) as BoxedIo),
                // The ingress answers "nothing is listening" for exactly this.
                Ok(Err(e)) if e.code.as_deref() == Some("ECONNREFUSED") => {
                    Err(io::Error::new(io::ErrorKind::ConnectionRefused, e.message))
                }
                Ok(Err(e)) => Err(io::Error::other(e.message)),
                Err(e) => Err(io::Error::other(format!("sandbox agent: {e:#}"))),
            }
        })
    }
}

/// The `exposeHttp` RPC ([`ExposeHttpParams`]), decoded here: a daemon
/// that does not expose HTTP says so whatever the params.
pub(crate) async fn bind_rpc(
    state: &AppState,
    live: &Live,
    params: &Value,
) -> Result<Value, ErrorObject> {
    let Some(exposure) = &state.expose else {
        return Err(disabled_error());
    };
    let ExposeHttpParams { domain, target } = ExposeHttpParams::decode(Method::ExposeHttp, params)?;
    let port = match target {
        SandboxPort::Port(port) => port,
        SandboxPort::Pid(pid) => sandbox_port::port_of_pid(live, pid).await?,
    };
    exposure.bind(live, &domain, port)?;
    Ok(Value::Null)
}

fn disabled_error() -> ErrorObject {
    ErrorObject::new(
        "NotSupported",
        "exposing HTTP is off on this daemon (airlock serve --expose-listen ADDR)",
        None,
    )
}

/// What `GET /api/v3/sandbox/{id}` shows of a sandbox's exposed domains.
pub(crate) fn routes_json(state: &AppState, id: &str) -> Value {
    let Some(exposure) = &state.expose else {
        return json!([]);
    };
    let routes: Vec<Value> = exposure
        .router
        .routes_of(id)
        .into_iter()
        .map(|r| json!({"url": format!("https://{}", r.domain), "port": r.port}))
        .collect();
    Value::Array(routes)
}
