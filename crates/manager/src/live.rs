//! One running sandbox as the daemon holds it.

use crate::backend::Isolated;
use agent_client::AgentClient;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::{watch, Notify};

/// Why a sandbox ended; stored as its exit reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The creating client disconnected (session mode).
    Closed,
    /// Killed through the API.
    Killed,
    /// Its deadline or the maximum lifetime passed.
    TimedOut,
    /// PID 1 (the agent) died.
    AgentExited,
    /// The daemon shut down.
    Shutdown,
    /// PID 1 (the agent) died while the cgroup had recorded OOM kills: the
    /// sandbox ran out of memory (cgroup v1 has no group kill, so a sandbox
    /// OOM shows as the agent being the victim).
    Oom,
}

impl EndReason {
    pub const ALL: [EndReason; 6] = [
        Self::Closed,
        Self::Killed,
        Self::TimedOut,
        Self::AgentExited,
        Self::Shutdown,
        Self::Oom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Killed => "killed",
            Self::TimedOut => "timed out",
            Self::AgentExited => "agent exited",
            Self::Shutdown => "daemon shutdown",
            Self::Oom => "oom",
        }
    }
}

pub struct Live {
    pub id: String,
    /// The backend isolating it.
    pub isolation: crate::Isolation,
    pub client: AgentClient,
    pub created_at_ms: i64,
    pub(crate) stop_at_ms: Mutex<Option<i64>>,
    /// Wakes the deadline task when `stop_at_ms` changes.
    pub(crate) deadline_changed: Notify,
    pub(crate) ended: watch::Sender<Option<EndReason>>,
    pub(crate) isolated: Mutex<Option<Box<dyn Isolated>>>,
    /// The sandbox's egress gateway (dropped after the sandbox is gone).
    pub(crate) gateway: Mutex<Option<egress::Gateway>>,
    /// OOM kills already attributed to a process.
    oom_reported: AtomicU64,
    /// OOM kills already recorded as lifecycle events.
    oom_evented: AtomicU64,
    meter: Mutex<Meter>,
    /// The capacity this sandbox holds; given back when it ends.
    pub(crate) ticket: Mutex<Option<crate::Ticket>>,
    /// Volumes mounted for it; unmounted after it is gone.
    pub(crate) volumes: Mutex<Vec<crate::storage::Mounted>>,
    /// The snapshot or volume it booted from, if not the image.
    pub(crate) root: Mutex<Option<crate::storage::Root>>,
    /// Held while its root is copied into a snapshot.
    pub(crate) snapshotting: Mutex<()>,
}

/// Integrates memory in use over time between samples.
struct Meter {
    usage: store::Usage,
    last_ms: i64,
    last_memory: u64,
}

impl Live {
    pub(crate) fn new(
        id: String,
        isolation: crate::Isolation,
        client: AgentClient,
        isolated: Box<dyn Isolated>,
        gateway: Option<egress::Gateway>,
        created_at_ms: i64,
        stop_at_ms: Option<i64>,
    ) -> Self {
        Self {
            id,
            isolation,
            client,
            created_at_ms,
            stop_at_ms: Mutex::new(stop_at_ms),
            deadline_changed: Notify::new(),
            ended: watch::channel(None).0,
            isolated: Mutex::new(Some(isolated)),
            gateway: Mutex::new(gateway),
            oom_reported: AtomicU64::new(0),
            oom_evented: AtomicU64::new(0),
            ticket: Mutex::new(None),
            volumes: Mutex::new(Vec::new()),
            root: Mutex::new(None),
            snapshotting: Mutex::new(()),
            meter: Mutex::new(Meter {
                usage: store::Usage::default(),
                last_ms: created_at_ms,
                last_memory: 0,
            }),
        }
    }

    /// Reads the kernel's counters and adds the memory in use since the
    /// last sample (trapezoid rule) to the integral. `None` once the
    /// sandbox is gone (the last sample stands).
    pub fn sample(&self, now_ms: i64) -> Option<store::Usage> {
        let usage = self.usage()?;
        let mut m = self.meter.lock().expect("meter lock");
        let dt = (now_ms - m.last_ms).max(0) as u64;
        let avg = (u128::from(m.last_memory) + u128::from(usage.memory_current)) / 2;
        m.usage.memory_byte_ms = m
            .usage
            .memory_byte_ms
            .saturating_add((avg * u128::from(dt)).min(u128::from(u64::MAX)) as u64);
        m.usage.cpu_usec = usage.cpu_usec();
        m.usage.peak_memory_bytes = m
            .usage
            .peak_memory_bytes
            .max(usage.memory_peak)
            .max(usage.memory_current);
        m.last_ms = now_ms;
        m.last_memory = usage.memory_current;
        Some(m.usage)
    }

    /// `Some(reason)` once the sandbox has ended.
    pub fn ended(&self) -> watch::Receiver<Option<EndReason>> {
        self.ended.subscribe()
    }

    pub fn is_ended(&self) -> bool {
        self.ended.borrow().is_some()
    }

    pub fn stop_at_ms(&self) -> Option<i64> {
        *self.stop_at_ms.lock().expect("live lock")
    }

    /// Resource usage so far, from the sandbox's cgroup.
    pub fn usage(&self) -> Option<crate::ResourceUsage> {
        self.isolated
            .lock()
            .expect("live lock")
            .as_ref()
            .map(|j| j.usage())
    }

    /// Whether a process that just died of SIGKILL was an OOM victim: the
    /// cgroup's OOM-kill counter grew since the last one reported.
    pub fn take_oom(&self) -> bool {
        let Some(usage) = self.usage() else {
            return false;
        };
        let before = self.oom_reported.swap(usage.oom_kills, Ordering::SeqCst);
        usage.oom_kills > before
    }

    /// The cgroup's OOM-kill count if it grew since the last call (one
    /// lifecycle event per increase); `None` if not, or once it is gone.
    pub(crate) fn new_oom_kills(&self) -> Option<u64> {
        let now = self.usage()?.oom_kills;
        let before = self.oom_evented.fetch_max(now, Ordering::SeqCst);
        (now > before).then_some(now)
    }
}
