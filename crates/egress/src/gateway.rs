//! The handle the daemon keeps per sandbox.

use crate::budget::MemoryBudget;
use crate::intercept::Interception;
use crate::policy::AllowList;
use crate::stack::{AuditSink, GatewayConfig, Stack};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running gateway. Dropping it stops the gateway and cuts every
/// connection the sandbox has open.
pub struct Gateway {
    policy: watch::Sender<Arc<AllowList>>,
    intercept: watch::Sender<Option<Arc<Interception>>>,
    task: JoinHandle<()>,
}

impl Gateway {
    /// Starts serving the sandbox behind `tun` with `policy` (an empty
    /// list allows nothing); its connections' buffers are charged to
    /// `budget`. Must be called inside a tokio runtime.
    pub fn spawn(
        tun: OwnedFd,
        config: GatewayConfig,
        policy: AllowList,
        audit: AuditSink,
        budget: Arc<MemoryBudget>,
    ) -> Self {
        Self::spawn_on(
            &tokio::runtime::Handle::current(),
            tun,
            config,
            policy,
            audit,
            budget,
        )
    }

    /// As [`Gateway::spawn`], on the given runtime (see [`crate::Shards`]).
    pub fn spawn_on(
        rt: &tokio::runtime::Handle,
        tun: OwnedFd,
        config: GatewayConfig,
        policy: AllowList,
        audit: AuditSink,
        budget: Arc<MemoryBudget>,
    ) -> Self {
        let (tx, rx) = watch::channel(Arc::new(policy));
        let (itx, irx) = watch::channel(None);
        let stack = Stack::new(config, rx, irx, audit, budget);
        let task = rt.spawn(async move {
            if let Err(e) = stack.run(tun).await {
                tracing::warn!("egress gateway stopped: {e}");
            }
        });
        Self {
            policy: tx,
            intercept: itx,
            task,
        }
    }

    /// Replaces the policy and the secrets to intercept for (a warm
    /// sandbox handed out to a caller). Open connections are kept; new
    /// ones follow the new settings.
    pub fn set_policy(&self, policy: AllowList, intercept: Option<Arc<Interception>>) {
        self.intercept.send_replace(intercept);
        self.policy.send_replace(Arc::new(policy));
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}
