//! The handle the daemon keeps per sandbox.

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
    task: JoinHandle<()>,
}

impl Gateway {
    /// Starts serving the sandbox behind `tun` with `policy` (an empty
    /// list allows nothing). Must be called inside a tokio runtime.
    pub fn spawn(tun: OwnedFd, config: GatewayConfig, policy: AllowList, audit: AuditSink) -> Self {
        let (tx, rx) = watch::channel(Arc::new(policy));
        let stack = Stack::new(config, rx, audit);
        let task = tokio::spawn(async move {
            if let Err(e) = stack.run(tun).await {
                tracing::warn!("egress gateway stopped: {e}");
            }
        });
        Self { policy: tx, task }
    }

    /// Replaces the policy (a warm sandbox handed out to a caller). Open
    /// connections are kept; new ones follow the new policy.
    pub fn set_policy(&self, policy: AllowList) {
        self.policy.send_replace(Arc::new(policy));
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}
