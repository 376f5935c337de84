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
mod storage;

pub use admission::{Admission, AdmissionError, AdmissionLimits, Ticket};
pub use backend::{
    Backend, BackendError, BindMount, Gvisor, Isolated, Isolation, LaunchSpec, LinkSpec, Native,
    ResourceLimits, ResourceUsage,
};
pub use backends::Backends;
pub use ids::new_sandbox_id;
/// Checks a volume's mount path (absolute, normalized, not `/` and not in
/// `/proc`, `/sys` or `/dev`); the jail checks it again.
pub use jail::check_bind_target as check_mount_path;
pub use live::{EndReason, Live};
pub use manager::{
    CreateRequest, Manager, ManagerConfig, ManagerError, PoolStats, Totals, METER_INTERVAL,
    STORAGE_METER_INTERVAL,
};
pub use network::NetworkConfig;
pub use storage::{
    human as human_bytes, BuiltinImage, NewVolume, SnapshotInfo, Storage, StorageConfig,
    StorageError, VolumeInfo, VolumeMount,
};
/// A volume capacity as the SDKs send it (bytes, or `"1GB"`, `"512MiB"`).
pub use volumes::parse_capacity;
