//! Each sandbox's network: its gateway (crate `egress`) and the audit
//! trail the gateways write to the store.

use crate::Totals;
use egress::{AuditEvent, AuditSink, EventKind, Verdict};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use store::{NetEvent, Store};
use tokio::sync::mpsc;

/// How sandboxes get their network. Without it a sandbox has only `lo`.
#[derive(Clone)]
pub struct NetworkConfig {
    /// The sandbox side of the link (interface name, addresses, MTU).
    pub link: crate::LinkSpec,
    pub resolver: Arc<egress::Resolver>,
    /// How the gateway verifies upstreams of intercepted connections.
    pub upstream_tls: Arc<egress::intercept::ca::UpstreamTls>,
    /// The threads gateways run on.
    pub shards: Arc<egress::Shards>,
    /// Bytes of gateway buffers each sandbox's connections may hold in the
    /// daemon (see `egress::budget`).
    pub memory_per_sandbox: usize,
    /// Gateway memory in use, all sandboxes together (for `/metrics`).
    pub memory: Arc<egress::GatewayMemory>,
}

impl std::fmt::Debug for NetworkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkConfig")
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

impl NetworkConfig {
    pub fn gateway_config(&self) -> egress::GatewayConfig {
        egress::GatewayConfig {
            gateway: self.link.gateway,
            sandbox: self.link.address,
            prefix_len: self.link.prefix_len,
            mtu: self.link.mtu as usize,
            resolver: self.resolver.clone(),
        }
    }

    /// A new sandbox's gateway memory budget.
    pub fn memory_budget(&self) -> Arc<egress::MemoryBudget> {
        egress::MemoryBudget::new(self.memory_per_sandbox, self.memory.clone())
    }
}

/// Most events written in one transaction.
const BATCH: usize = 512;

/// Starts the task that writes audit events to the store, in batches, and
/// returns a sink factory: one sink per sandbox.
pub(crate) fn audit_writer(store: Arc<Store>, totals: Arc<Totals>) -> AuditSender {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Arc<str>, AuditEvent)>();
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            let store = store.clone();
            let totals = totals.clone();
            let events = std::mem::take(&mut batch);
            // SQLite writes block: keep them off the async workers.
            let _ = tokio::task::spawn_blocking(move || write_batch(&store, &totals, events)).await;
        }
    });
    AuditSender(tx)
}

#[derive(Clone)]
pub(crate) struct AuditSender(mpsc::UnboundedSender<(Arc<str>, AuditEvent)>);

impl AuditSender {
    pub fn sink_for(&self, sandbox_id: &str) -> AuditSink {
        let tx = self.0.clone();
        let id: Arc<str> = Arc::from(sandbox_id);
        Arc::new(move |event| {
            let _ = tx.send((id.clone(), event));
        })
    }
}

fn write_batch(store: &Store, totals: &Totals, events: Vec<(Arc<str>, AuditEvent)>) {
    let mut by_sandbox: Vec<(Arc<str>, Vec<NetEvent>)> = Vec::new();
    for (id, e) in events {
        if e.kind == EventKind::Tcp {
            let counter = match e.verdict {
                Verdict::Allowed => &totals.net_allowed,
                Verdict::Denied => &totals.net_denied,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            totals
                .net_bytes_out
                .fetch_add(e.bytes_out, Ordering::Relaxed);
            totals.net_bytes_in.fetch_add(e.bytes_in, Ordering::Relaxed);
        }
        let row = NetEvent {
            id: 0,
            at_ms: e.at_ms,
            kind: e.kind.as_str().to_string(),
            name: e.name,
            port: e.port,
            verdict: e.verdict.as_str().to_string(),
            reason: e.reason,
            upstream: e.upstream,
            bytes_out: e.bytes_out,
            bytes_in: e.bytes_in,
            duration_ms: e.duration_ms,
            secrets: e.secrets,
        };
        match by_sandbox.iter_mut().find(|(s, _)| *s == id) {
            Some((_, rows)) => rows.push(row),
            None => by_sandbox.push((id, vec![row])),
        }
    }
    for (id, rows) in by_sandbox {
        if let Err(e) = store.record_net_events(&id, &rows) {
            tracing::warn!(sandbox = &*id, "recording network events: {e}");
        }
    }
}
