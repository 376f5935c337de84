//! `GET /metrics`: the daemon's state for Prometheus (OpenMetrics text, by
//! the `prometheus-client` crate). Request-path figures are counted as they
//! happen; sandbox figures are read at scrape time from the manager's
//! running totals, never by walking live sandboxes' cgroups.

use manager::{EndReason, Manager};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

/// The isolation backend (`native`, `gvisor`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IsolationLabels {
    pub isolation: String,
}

impl IsolationLabels {
    pub fn of(isolation: manager::Isolation) -> Self {
        Self {
            isolation: isolation.as_str().to_string(),
        }
    }
}

/// 0.25 ms .. ~8 s
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

type ByIsolation = Family<IsolationLabels, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// `quota` (a token's) or `capacity` (the host's).
    pub limit: String,
}

pub struct Metrics {
    registry: Registry,
    pub rpc_calls: Family<MethodLabels, Counter>,
    pub rpc_errors: Family<MethodLabels, Counter>,
    pub create_seconds: ByIsolation,
    pub spawn_seconds: ByIsolation,
    pub refusals: Family<LimitLabels, Counter>,
}

impl Metrics {
    pub fn new(manager: Arc<Manager>, expose: Option<Arc<expose::Metrics>>) -> Self {
        let mut registry = Registry::with_prefix("airlock");
        let rpc_calls = Family::<MethodLabels, Counter>::default();
        let rpc_errors = Family::<MethodLabels, Counter>::default();
        let create_seconds = ByIsolation::new_with_constructor(latency_histogram);
        let spawn_seconds = ByIsolation::new_with_constructor(latency_histogram);
        let refusals = Family::<LimitLabels, Counter>::default();
        registry.register(
            "rpc_calls",
            "JSON-RPC requests by method",
            rpc_calls.clone(),
        );
        registry.register(
            "rpc_errors",
            "JSON-RPC requests that failed, by method",
            rpc_errors.clone(),
        );
        registry.register(
            "create_seconds",
            "Time to create a sandbox (until the upgrade), by isolation backend",
            create_seconds.clone(),
        );
        registry.register(
            "spawn_seconds",
            "Time to answer a spawn, by isolation backend",
            spawn_seconds.clone(),
        );
        registry.register(
            "admission_refusals",
            "Creates refused by admission control",
            refusals.clone(),
        );
        registry.register_collector(Box::new(StorageCollector(manager.store().clone())));
        registry.register_collector(Box::new(SandboxCollector(manager)));
        if let Some(expose) = expose {
            registry.register_collector(Box::new(ExposeCollector(expose)));
        }
        Self {
            registry,
            rpc_calls,
            rpc_errors,
            create_seconds,
            spawn_seconds,
            refusals,
        }
    }

    /// Method names as labels: only those of the method table a client
    /// may call ([`agent_proto::Method::from_client`]), else `unknown`, so
    /// a client cannot create unbounded label values.
    pub fn method_label(method: Option<agent_proto::Method>) -> MethodLabels {
        MethodLabels {
            method: method.map_or("unknown", |m| m.as_str()).to_string(),
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

/// Sandbox figures, read from the manager at scrape time.
struct SandboxCollector(Arc<Manager>);

impl std::fmt::Debug for SandboxCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SandboxCollector")
    }
}

impl Collector for SandboxCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.0;
        let t = m.totals();
        let gauge = |enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64| {
            let g = ConstGauge::new(v);
            g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
        };
        let counter = |enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64| {
            let c = ConstCounter::new(v);
            c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
        };
        gauge(
            &mut encoder,
            "sandboxes_running",
            "Sandboxes alive now",
            m.live_count() as i64,
        )?;
        gauge(
            &mut encoder,
            "pool_size",
            "Ready sandboxes in the warm pool",
            m.pool_len() as i64,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "sandboxes_created",
                "Sandboxes handed out, by isolation backend",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for isolation in manager::Isolation::ALL {
                let n = t.created[isolation.index()].load(Ordering::Relaxed);
                ConstCounter::new(n as f64)
                    .encode(family.encode_family(&IsolationLabels::of(isolation))?)?;
            }
        }
        counter(
            &mut encoder,
            "pool_hits",
            "Creates served from the warm pool",
            m.pool_stats().hits.load(Ordering::Relaxed) as f64,
        )?;
        counter(
            &mut encoder,
            "pool_misses",
            "Creates that had to start a sandbox",
            m.pool_stats().misses.load(Ordering::Relaxed) as f64,
        )?;
        counter(
            &mut encoder,
            "oom_kills",
            "Processes killed for memory in ended sandboxes",
            t.oom_kills.load(Ordering::Relaxed) as f64,
        )?;
        counter(
            &mut encoder,
            "cpu_seconds",
            "CPU time used by ended sandboxes",
            t.cpu_usec.load(Ordering::Relaxed) as f64 / 1e6,
        )?;
        let gbh =
            t.memory_kib_ms.load(Ordering::Relaxed) as f64 / (1u64 << 20) as f64 / 3_600_000.0;
        counter(
            &mut encoder,
            "memory_gb_hours",
            "Memory over time used by ended sandboxes",
            gbh,
        )?;
        let ended = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "sandboxes_ended",
            "Sandboxes ended, by reason",
            None,
            ended.metric_type(),
        )?;
        for (i, reason) in EndReason::ALL.iter().enumerate() {
            let labels = [("reason", reason.as_str())];
            let c = ConstCounter::new(t.ended[i].load(Ordering::Relaxed));
            c.encode(family.encode_family(&labels)?)?;
        }
        labelled(
            &mut encoder,
            "egress_connections",
            "TCP connections from sandboxes through the egress gateway, by verdict",
            "verdict",
            &[
                ("allowed", t.net_allowed.load(Ordering::Relaxed)),
                ("denied", t.net_denied.load(Ordering::Relaxed)),
            ],
        )?;
        if let Some((memory, per_sandbox)) = m.gateway_memory() {
            gauge(
                &mut encoder,
                "egress_memory_bytes",
                "Bytes of egress gateway buffers held for sandboxes' connections now",
                memory.in_use.load(Ordering::Relaxed) as i64,
            )?;
            gauge(
                &mut encoder,
                "egress_memory_per_sandbox_bytes",
                "Egress gateway buffers one sandbox may hold (--egress-memory-per-sandbox)",
                per_sandbox as i64,
            )?;
            counter(
                &mut encoder,
                "egress_memory_refusals",
                "Connections refused because their sandbox's gateway memory was spent",
                memory.refusals.load(Ordering::Relaxed) as f64,
            )?;
        }
        labelled(
            &mut encoder,
            "egress_bytes",
            "Bytes through the egress gateway (out: from sandboxes), of ended connections",
            "direction",
            &[
                ("out", t.net_bytes_out.load(Ordering::Relaxed)),
                ("in", t.net_bytes_in.load(Ordering::Relaxed)),
            ],
        )?;
        Ok(())
    }
}

/// Volumes and snapshots, read from the store at scrape time: one query
/// over the records (a few per token) and the per-token bill totals.
struct StorageCollector(Arc<store::Store>);

impl std::fmt::Debug for StorageCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageCollector")
    }
}

impl Collector for StorageCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = match self.0.storage_summary() {
            Ok(s) => s,
            Err(e) => {
                // The rest of the scrape is still worth having.
                tracing::warn!("metrics: reading storage: {e}");
                return Ok(());
            }
        };
        let gauge = |enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64| {
            let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
            g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
        };
        gauge(&mut encoder, "volumes", "Volumes held now", s.volumes)?;
        gauge(&mut encoder, "snapshots", "Snapshots held now", s.snapshots)?;
        gauge(
            &mut encoder,
            "volume_reserved_bytes",
            "Bytes the volumes held now reserve (their capacities)",
            s.volume_reserved_bytes,
        )?;
        // Byte-seconds as a float: a counter in byte-seconds passes 2^64
        // within days for a few terabytes; the store counts byte-hours.
        let mut family = encoder.encode_descriptor(
            "storage_byte_seconds",
            "Storage billed: volume capacities and snapshot sizes over time, deleted ones \
             included (advances at each metering pass)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (kind, byte_hours) in [
            ("volume", s.billed.volume_byte_hours),
            ("snapshot", s.billed.snapshot_byte_hours),
        ] {
            ConstCounter::new(byte_hours as f64 * 3600.0)
                .encode(family.encode_family(&[("kind", kind)])?)?;
        }
        Ok(())
    }
}

/// The exposed-HTTP ingress's counters (`expose::Metrics`).
#[derive(Debug)]
struct ExposeCollector(Arc<expose::Metrics>);

impl Collector for ExposeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.0;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        labelled(
            &mut encoder,
            "expose_connections",
            "Connections to exposed HTTPS domains, by outcome",
            "outcome",
            &[
                ("proxied", n(&m.proxied)),
                ("not_found", n(&m.not_found)),
                ("pending", n(&m.pending)),
                ("backend_failed", n(&m.backend_failed)),
                ("tls_failed", n(&m.tls_failed)),
                ("overloaded", n(&m.rejected_overload)),
            ],
        )?;
        labelled(
            &mut encoder,
            "expose_bytes",
            "Bytes through exposed domains (in: to sandboxes), of ended connections",
            "direction",
            &[
                ("in", n(&m.bytes_to_backend)),
                ("out", n(&m.bytes_from_backend)),
            ],
        )?;
        let g = ConstGauge::new(n(&m.active) as i64);
        g.encode(encoder.encode_descriptor(
            "expose_active_connections",
            "Connections to exposed domains open now",
            None,
            g.metric_type(),
        )?)
    }
}

/// A counter family with one label, one value per label value.
fn labelled(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family =
        enc.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (value, n) in values {
        ConstCounter::new(*n).encode(family.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Metrics;
    use agent_proto::Method;

    /// Labels come from the method table: a client's arbitrary method names
    /// (and the daemon ↔ agent methods) all count as `unknown`.
    #[test]
    fn method_labels_are_the_tables_client_methods() {
        let label = |name: &str| Metrics::method_label(Method::from_client(name)).method;
        assert_eq!(label("spawn"), "spawn");
        assert_eq!(label("fileSyncData"), "fileSyncData");
        assert_eq!(label("vscode"), "vscode");
        for name in [
            "ping",
            "tcpConnect",
            "httpPort",
            "noSuchMethod",
            "Spawn",
            "",
        ] {
            assert_eq!(label(name), "unknown", "{name:?}");
        }
    }
}
