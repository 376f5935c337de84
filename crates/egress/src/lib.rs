//! The egress gateway: the only way out of a sandbox.
//!
//! Each sandbox has one TUN interface (created by `jail` in its network
//! namespace) whose packets come here. A userspace TCP/IP stack
//! (`smoltcp`) terminates the sandbox's TCP connections and a fake-IP DNS
//! server answers its queries; every connection is checked against the
//! sandbox's `allowNet` policy, resolved by the daemon, checked again
//! against the address it resolved to (anti-SSRF), and spliced to a real
//! socket. Every decision is reported as an [`AuditEvent`].

pub mod audit;
pub mod budget;
pub mod dns;
pub mod fakeip;
pub mod intercept;
pub mod policy;
pub mod sni;

pub use audit::{AuditEvent, EventKind, Verdict};
pub use budget::{GatewayMemory, MemoryBudget};
mod device;
mod flow;
mod gateway;
pub mod resolve;
mod shards;
mod stack;

pub use gateway::Gateway;
pub use policy::AllowList;
pub use resolve::Resolver;
pub use shards::Shards;
pub use stack::{AuditSink, GatewayConfig};
