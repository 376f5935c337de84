//! Sandbox lifecycle for the daemon: creation (backend + agent connection),
//! lookup, deadlines and the maximum lifetime, kill, and recovery after a
//! daemon crash. Knows nothing of the wire format.

mod admission;
pub mod backend;
mod backends;
mod ids;
mod live;
mod manager;
mod network;

pub use admission::{Admission, AdmissionError, AdmissionLimits, Ticket};
pub use backend::{
    Backend, BackendError, Gvisor, Isolated, Isolation, LaunchSpec, LinkSpec, Native,
    ResourceLimits, ResourceUsage,
};
pub use backends::Backends;
pub use ids::new_sandbox_id;
pub use live::{EndReason, Live};
pub use manager::{
    CreateRequest, Manager, ManagerConfig, ManagerError, PoolStats, Totals, METER_INTERVAL,
};
pub use network::NetworkConfig;
