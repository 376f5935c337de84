//! Volumes: records in the store, data in the `volumes` crate's pool, and
//! which sandbox has each one mounted.
//!
//! The store is the source of truth. A volume's image is made before its
//! record and deleted after it, so a crash leaves at worst an image with
//! no record, which [`Storage::open`] removes: after a restart every volume
//! is either whole (record and image) or absent. A volume is mounted in at
//! most one sandbox at a time (two ext4 mounts of one image would corrupt
//! it); which one is kept here, in memory, because after a restart no
//! sandbox of the previous daemon is left to hold one.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use store::{SnapshotRecord, Store, StoreError, VolumeRecord};
use thiserror::Error;
use volumes::{Attached, Pool, VolumeError};

/// How long an attach waits for a sandbox that just ended to let go of the
/// volume's filesystem (its mount namespace goes with its last process).
const RELEASE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Where the pool and the mount points live (`<data dir>/storage`).
    pub dir: PathBuf,
    /// Size of the pool, the most all volumes together may reserve (capped
    /// at 90% of the free disk when the pool is made).
    pub pool_bytes: u64,
    pub min_capacity: u64,
    pub max_capacity: u64,
    /// Per token: volumes held, and bytes reserved (capacities).
    pub per_token_volumes: u64,
    pub per_token_bytes: u64,
}

impl StorageConfig {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            pool_bytes: 64 << 30,
            min_capacity: 16 << 20,
            max_capacity: 20_000_000_000,
            per_token_volumes: 50,
            per_token_bytes: 200_000_000_000,
        }
    }
}

/// Why a storage call failed; each maps to one HTTP status.
#[derive(Debug, Error)]
pub enum StorageError {
    /// Bad input (400).
    #[error("{0}")]
    Invalid(String),
    /// No such volume for this token (404).
    #[error("volume {0:?} not found")]
    VolumeNotFound(String),
    /// No such snapshot for this token (404).
    #[error("snapshot {0:?} not found")]
    SnapshotNotFound(String),
    /// `root` names no volume or snapshot of this token (404).
    #[error("root {0:?}: no volume or snapshot of that id or slug")]
    RootNotFound(String),
    /// `root` names a volume that cannot boot (400).
    #[error("{0}")]
    NotBootable(String),
    /// Mounted in a sandbox (409).
    #[error("{0}")]
    Conflict(String),
    /// Mounted in `sandbox` when another wanted it (409).
    #[error(
        "volume {volume} is mounted in sandbox {sandbox}: a volume is mounted in one sandbox \
         at a time; end that sandbox first"
    )]
    MountedIn { volume: String, sandbox: String },
    /// Booted from by `sandbox` when it was to be deleted (409).
    #[error(
        "snapshot {snapshot} is the root of sandbox {sandbox} (and maybe others): end them first"
    )]
    Booted { snapshot: String, sandbox: String },
    /// The token has a volume or snapshot of that slug (409).
    #[error("{0}")]
    SlugTaken(String),
    /// The token's quota (429).
    #[error("{0}")]
    Quota(String),
    /// The host's pool is fully reserved (507).
    #[error("{0}")]
    Full(String),
    /// This daemon cannot serve storage (501).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl StorageError {
    /// The sandbox holding what this call needed, if that is the refusal.
    pub fn held_by(&self) -> Option<&str> {
        match self {
            StorageError::MountedIn { sandbox, .. } | StorageError::Booted { sandbox, .. } => {
                Some(sandbox)
            }
            _ => None,
        }
    }
}

impl From<StoreError> for StorageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::SlugTaken(_) => StorageError::SlugTaken(e.to_string()),
            other => StorageError::Internal(format!("store: {other}")),
        }
    }
}

impl From<VolumeError> for StorageError {
    fn from(e: VolumeError) -> Self {
        match e {
            VolumeError::InvalidCapacity { .. } => StorageError::Invalid(e.to_string()),
            VolumeError::InUse { .. } => StorageError::Conflict(e.to_string()),
            VolumeError::ToolMissing { .. } => StorageError::Unavailable(e.to_string()),
            VolumeError::NotFound {
                object: volumes::Object::Snapshot,
                id,
            } => StorageError::SnapshotNotFound(id),
            VolumeError::NotFound { id, .. } => StorageError::VolumeNotFound(id),
            other => StorageError::Internal(other.to_string()),
        }
    }
}

/// A volume to create.
#[derive(Debug, Clone)]
pub struct NewVolume {
    pub slug: String,
    pub capacity: u64,
    pub region: String,
    /// A snapshot (id or slug) to fork; `None`: an empty volume.
    pub from: Option<String>,
}

/// A snapshot's record and what its image holds on disk.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    pub record: SnapshotRecord,
    pub allocated_bytes: u64,
}

/// A volume's record and what its image holds on disk.
#[derive(Debug, Clone)]
pub struct VolumeInfo {
    pub record: VolumeRecord,
    /// Bytes the image uses in the pool (its sparse file's blocks).
    pub allocated_bytes: u64,
}

/// A volume to mount at create: `volume` is an id or slug of the creating
/// token's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub volume: String,
    pub path: String,
}

/// A volume mounted for one sandbox.
pub(crate) struct Mounted {
    pub(crate) attached: Attached,
    pub(crate) target: String,
}

/// The image bootable volumes are made from (`from: "builtin:..."`).
#[derive(Debug, Clone)]
pub struct BuiltinImage {
    /// The daemon's image name (`default`).
    pub name: String,
    pub rootfs: PathBuf,
    /// Changes when the image is rebuilt (its build time).
    pub stamp: u64,
    /// Bytes its files take.
    pub size_bytes: u64,
}

impl BuiltinImage {
    /// The pool snapshot holding this build of the image.
    fn snapshot_id(&self) -> String {
        format!("builtin-{}-{}", self.name, self.stamp)
    }

    /// Its filesystem's size: the files, a quarter more for ext4's own
    /// structures and slack, in whole 64 MiB.
    fn snapshot_bytes(&self) -> u64 {
        const STEP: u64 = 64 << 20;
        (self.size_bytes + self.size_bytes / 4 + STEP).div_ceil(STEP) * STEP
    }
}

/// Names `from: "builtin:NAME"` accepts for the daemon's image: the
/// hosted service's, and airlock's own.
const BUILTIN_ALIASES: [&str; 3] = ["debian-13", "debian-12", "default"];

/// What a sandbox boots from when it names a `root`.
pub(crate) enum Root {
    /// A snapshot, read-only and shared; each sandbox writes to its own
    /// layer above it.
    Snapshot {
        id: String,
        path: PathBuf,
        sandbox: String,
    },
    /// A bootable volume, read-write, in this sandbox only.
    Volume(Mounted),
}

impl Root {
    pub(crate) fn path(&self) -> &std::path::Path {
        match self {
            Root::Snapshot { path, .. } => path,
            Root::Volume(m) => m.attached.path(),
        }
    }
}

pub struct Storage {
    pool: Pool,
    store: Arc<Store>,
    cfg: StorageConfig,
    /// Volume id → the sandbox that has it mounted.
    mounted_in: Mutex<HashMap<String, String>>,
    /// Snapshots sandboxes booted from: the one read-only mount each, and
    /// the sandboxes using it.
    booted: Mutex<HashMap<String, (Attached, HashSet<String>)>>,
    builtin: Mutex<Option<BuiltinImage>>,
    /// Serialises building the builtin snapshot (seconds, once per image).
    building: Mutex<()>,
}

impl Storage {
    /// Opens the pool, unmounts what a killed daemon left mounted, and
    /// removes images the store has no record of.
    pub fn open(cfg: StorageConfig, store: Arc<Store>) -> Result<Self, StorageError> {
        volumes::check_tools()?;
        let pool = Pool::open(&cfg.dir, cfg.pool_bytes)?;
        let unmounted = pool.reap_mounts()?;
        let volume_ids: Vec<String> = store.all_volumes()?.into_iter().map(|v| v.id).collect();
        // The builtin snapshots are the pool's own, not any token's.
        let mut snapshot_ids = store.all_snapshot_ids()?;
        snapshot_ids.extend(
            pool.snapshot_ids()?
                .into_iter()
                .filter(|id| id.starts_with("builtin-")),
        );
        let removed = pool.remove_orphans(&volume_ids, snapshot_ids)?;
        if unmounted > 0 || !removed.is_empty() {
            tracing::info!(
                unmounted,
                orphans = removed.len(),
                "storage: recovered from a previous daemon"
            );
        }
        Ok(Self {
            pool,
            store,
            cfg,
            mounted_in: Mutex::new(HashMap::new()),
            booted: Mutex::new(HashMap::new()),
            builtin: Mutex::new(None),
            building: Mutex::new(()),
        })
    }

    pub fn config(&self) -> &StorageConfig {
        &self.cfg
    }

    fn info(&self, record: VolumeRecord) -> VolumeInfo {
        let allocated_bytes =
            volumes::allocated_bytes(&self.pool.volume_path(&record.id)).unwrap_or(0);
        VolumeInfo {
            record,
            allocated_bytes,
        }
    }

    /// Creates an empty volume of `req.capacity` bytes for `owner`.
    pub fn create_volume(
        &self,
        owner: Option<&str>,
        req: NewVolume,
    ) -> Result<VolumeInfo, StorageError> {
        volumes::validate_slug(&req.slug)
            .map_err(|e| StorageError::Invalid(format!("slug: {e}")))?;
        let (min, max) = (self.cfg.min_capacity, self.cfg.max_capacity);
        if req.capacity < min || req.capacity > max {
            return Err(StorageError::Invalid(format!(
                "capacity {} is out of range: choose between {} and {}",
                human(req.capacity),
                human(min),
                human(max)
            )));
        }
        if self.store.get_volume(owner, &req.slug)?.is_some()
            || self.store.get_snapshot(owner, &req.slug)?.is_some()
        {
            return Err(StoreError::SlugTaken(req.slug).into());
        }
        let builtin = match req.from.as_deref().map(|f| f.strip_prefix("builtin:")) {
            Some(Some(name)) => Some(self.builtin_snapshot(name)?),
            _ => None,
        };
        let base = match (&req.from, &builtin) {
            (Some(key), None) => Some(
                self.store
                    .get_snapshot(owner, key)?
                    .ok_or_else(|| StorageError::SnapshotNotFound(key.clone()))?,
            ),
            _ => None,
        };
        self.admit(owner, req.capacity)?;
        let id = store::new_volume_id(&req.region)?;
        match (&base, &builtin) {
            (Some(snap), _) => {
                self.pool
                    .create_volume_from_snapshot(&snap.id, &id, req.capacity)?
            }
            (None, Some(snap)) => self
                .pool
                .create_volume_from_snapshot(snap, &id, req.capacity)?,
            (None, None) => self.pool.create_volume(&id, req.capacity)?,
        }
        let record = VolumeRecord {
            id: id.clone(),
            slug: req.slug,
            token_id: owner.map(str::to_string),
            region: req.region,
            capacity: req.capacity,
            is_bootable: builtin.is_some() || base.as_ref().is_some_and(|b| b.is_bootable),
            base_snapshot: base.map(|b| (b.id, b.slug)),
            created_at_ms: store::now_ms(),
        };
        if let Err(e) = self.store.insert_volume(&record) {
            // A create racing for the same slug: this image is not needed.
            if let Err(d) = self.pool.delete_volume(&id) {
                tracing::warn!(volume = id, "removing the image of a refused volume: {d}");
            }
            return Err(e.into());
        }
        tracing::info!(volume = id, capacity = record.capacity, "volume created");
        Ok(self.info(record))
    }

    /// Tells storage which image `from: "builtin:..."` copies.
    pub fn set_builtin(&self, image: BuiltinImage) {
        *self.builtin.lock().expect("storage lock") = Some(image);
    }

    /// The pool snapshot of the builtin image `name`, made on first use
    /// (`mkfs.ext4 -d` of the image: seconds, once per image build).
    fn builtin_snapshot(&self, name: &str) -> Result<String, StorageError> {
        let image = self
            .builtin
            .lock()
            .expect("storage lock")
            .clone()
            .ok_or_else(|| {
                StorageError::Unavailable("no image to make bootable volumes from".into())
            })?;
        if !BUILTIN_ALIASES.contains(&name) && name != image.name {
            return Err(StorageError::Invalid(format!(
                "from: \"builtin:{name}\" is not an image here: use builtin:{} (airlock's image, \
                 Debian 12 with python3, node, deno, git, curl; builtin:debian-13 and \
                 builtin:default name it too)",
                image.name
            )));
        }
        let id = image.snapshot_id();
        let _one_at_a_time = self.building.lock().expect("storage lock");
        if self.pool.snapshot_ids()?.contains(&id) {
            return Ok(id);
        }
        let started = std::time::Instant::now();
        self.pool
            .create_snapshot_from_tree(&id, &image.rootfs, image.snapshot_bytes())?;
        tracing::info!(
            snapshot = id,
            secs = started.elapsed().as_secs_f64(),
            "made the builtin snapshot bootable volumes start from"
        );
        Ok(id)
    }

    /// The smallest capacity a bootable volume of the builtin image has.
    pub fn builtin_capacity(&self) -> Option<u64> {
        self.builtin
            .lock()
            .expect("storage lock")
            .as_ref()
            .map(BuiltinImage::snapshot_bytes)
    }

    /// Mounts what sandbox `sandbox` boots from: `owner`'s snapshot `key`
    /// (read-only, shared) or bootable volume `key` (read-write, one
    /// sandbox at a time).
    pub(crate) fn attach_root(
        &self,
        owner: Option<&str>,
        sandbox: &str,
        key: &str,
    ) -> Result<Root, StorageError> {
        if let Some(snap) = self.store.get_snapshot(owner, key)? {
            if !snap.is_bootable {
                return Err(StorageError::NotBootable(format!(
                    "snapshot {key} is of a volume that is not bootable: boot from snapshots of \
                     volumes made with from: \"builtin:debian-13\", or fork this one into a \
                     volume and mount it at a path with `volumes`"
                )));
            }
            let mut booted = self.booted.lock().expect("storage lock");
            if let Some((attached, users)) = booted.get_mut(&snap.id) {
                users.insert(sandbox.to_string());
                return Ok(Root::Snapshot {
                    id: snap.id,
                    path: attached.path().to_path_buf(),
                    sandbox: sandbox.to_string(),
                });
            }
            let attached = self.pool.attach_snapshot(&snap.id)?;
            let path = attached.path().to_path_buf();
            booted.insert(
                snap.id.clone(),
                (attached, HashSet::from([sandbox.to_string()])),
            );
            return Ok(Root::Snapshot {
                id: snap.id,
                path,
                sandbox: sandbox.to_string(),
            });
        }
        let volume = self
            .store
            .get_volume(owner, key)?
            .ok_or_else(|| StorageError::RootNotFound(key.to_string()))?;
        if !volume.is_bootable {
            return Err(StorageError::NotBootable(format!(
                "volume {key} is not bootable: make one with from: \"builtin:debian-13\" (or from \
                 a snapshot of one), or mount this one at a path with `volumes`"
            )));
        }
        let mut mounted = self.attach(
            owner,
            sandbox,
            &[VolumeMount {
                volume: volume.id,
                path: "/".into(),
            }],
        )?;
        Ok(Root::Volume(mounted.remove(0)))
    }

    /// Lets go of a sandbox's root (after its processes are gone).
    pub(crate) fn release_root(&self, root: Root) {
        match root {
            Root::Volume(m) => self.release(vec![m]),
            // The read-only mount stays for the next boot (mounting it is
            // most of what booting from a snapshot costs over the image);
            // it goes when the snapshot is deleted or the daemon stops.
            Root::Snapshot { id, sandbox, .. } => {
                if let Some((_, users)) = self.booted.lock().expect("storage lock").get_mut(&id) {
                    users.remove(&sandbox);
                }
            }
        }
    }

    /// Refuses a new reservation of `bytes` over the token's quota or the
    /// pool's size.
    fn admit(&self, owner: Option<&str>, bytes: u64) -> Result<(), StorageError> {
        let held = self.store.storage_totals(owner)?;
        if held.volumes + 1 > self.cfg.per_token_volumes {
            return Err(StorageError::Quota(format!(
                "this token holds {} volumes, its limit: delete one you no longer need \
                 (DELETE /api/v2/volumes/{{id}} or `airlock volume rm`) and try again",
                held.volumes
            )));
        }
        if held.bytes + bytes > self.cfg.per_token_bytes {
            return Err(StorageError::Quota(format!(
                "this token's volumes and snapshots reserve {} of its {} limit, and this one \
                 needs {} more: delete or shrink what you no longer need and try again",
                human(held.bytes),
                human(self.cfg.per_token_bytes),
                human(bytes)
            )));
        }
        let pool = self.pool.ensure_created()?;
        let reserved = self.store.storage_summary()?.volume_reserved_bytes;
        if reserved + bytes > pool {
            return Err(StorageError::Full(format!(
                "the host's storage pool ({}) is fully reserved ({} in use): ask the operator \
                 for room, or create a smaller volume",
                human(pool),
                human(reserved)
            )));
        }
        Ok(())
    }

    /// `owner`'s volume whose id or slug is `key`.
    pub fn volume(&self, owner: Option<&str>, key: &str) -> Result<VolumeInfo, StorageError> {
        let record = self
            .store
            .get_volume(owner, key)?
            .ok_or_else(|| StorageError::VolumeNotFound(key.to_string()))?;
        Ok(self.info(record))
    }

    /// `owner`'s volumes, oldest first.
    pub fn volumes(
        &self,
        owner: Option<&str>,
        search: Option<&str>,
    ) -> Result<Vec<VolumeInfo>, StorageError> {
        Ok(self
            .store
            .list_volumes(owner, search)?
            .into_iter()
            .map(|r| self.info(r))
            .collect())
    }

    /// The sandbox that has volume `id` mounted, if any.
    pub fn mounted_in(&self, id: &str) -> Option<String> {
        self.mounted_in
            .lock()
            .expect("storage lock")
            .get(id)
            .cloned()
    }

    /// Deletes `owner`'s volume `key` and its data, unless a sandbox has it
    /// mounted. The record goes first (the slug is free at once), then the
    /// image: a crash in between leaves an orphan image that the next
    /// start removes.
    pub fn delete_volume(&self, owner: Option<&str>, key: &str) -> Result<(), StorageError> {
        let record = self
            .store
            .get_volume(owner, key)?
            .ok_or_else(|| StorageError::VolumeNotFound(key.to_string()))?;
        {
            let mounted = self.mounted_in.lock().expect("storage lock");
            if let Some(sandbox) = mounted.get(&record.id) {
                return Err(StorageError::MountedIn {
                    volume: record.slug,
                    sandbox: sandbox.clone(),
                });
            }
            // Under the lock: no attach can start between the check and
            // the record's removal.
            // Billed up to now in the same transaction: the bill stays.
            self.store.delete_volume(&record.id, store::now_ms())?;
        }
        match self.pool.delete_volume(&record.id) {
            Ok(()) => {}
            Err(VolumeError::NotFound { .. }) => {}
            // Still held by a loop device of a sandbox that is ending: the
            // next start's orphan sweep removes it.
            Err(e) => tracing::warn!(volume = record.id, "deleting the image: {e}"),
        }
        tracing::info!(volume = record.id, "volume deleted");
        Ok(())
    }

    /// Mounts `mounts` on the host for `sandbox`, refusing volumes that are
    /// not `owner`'s or are mounted elsewhere. All or nothing.
    pub(crate) fn attach(
        &self,
        owner: Option<&str>,
        sandbox: &str,
        mounts: &[VolumeMount],
    ) -> Result<Vec<Mounted>, StorageError> {
        let mut claimed: Vec<String> = Vec::new();
        let release_claims = |claimed: &[String]| {
            let mut map = self.mounted_in.lock().expect("storage lock");
            for id in claimed {
                map.remove(id);
            }
        };
        let mut records = Vec::with_capacity(mounts.len());
        for m in mounts {
            let found = self.store.get_volume(owner, &m.volume);
            let record = match found {
                Ok(Some(r)) => r,
                Ok(None) => {
                    release_claims(&claimed);
                    return Err(StorageError::VolumeNotFound(m.volume.clone()));
                }
                Err(e) => {
                    release_claims(&claimed);
                    return Err(e.into());
                }
            };
            let mut map = self.mounted_in.lock().expect("storage lock");
            if let Some(other) = map.get(&record.id) {
                let err = if other == sandbox {
                    StorageError::Invalid(format!(
                        "volume {} is given twice: mount each volume once",
                        m.volume
                    ))
                } else {
                    StorageError::MountedIn {
                        volume: m.volume.clone(),
                        sandbox: other.clone(),
                    }
                };
                drop(map);
                release_claims(&claimed);
                return Err(err);
            }
            map.insert(record.id.clone(), sandbox.to_string());
            claimed.push(record.id.clone());
            records.push((record, m.path.clone()));
        }
        let mut mounted = Vec::with_capacity(records.len());
        for (record, target) in records {
            match self.pool.attach_waiting(&record.id, RELEASE_WAIT) {
                Ok(attached) => mounted.push(Mounted { attached, target }),
                Err(e) => {
                    for m in mounted {
                        let _ = m.attached.detach();
                    }
                    release_claims(&claimed);
                    return Err(e.into());
                }
            }
        }
        Ok(mounted)
    }

    /// Snapshots `owner`'s volume `volume_key` as `slug`: a copy-on-write
    /// clone of its image (instant, whatever its size). Refused while a
    /// sandbox has the volume mounted, as on the hosted service.
    pub fn create_snapshot(
        &self,
        owner: Option<&str>,
        volume_key: &str,
        slug: String,
    ) -> Result<SnapshotInfo, StorageError> {
        volumes::validate_slug(&slug).map_err(|e| StorageError::Invalid(format!("slug: {e}")))?;
        let volume = self
            .store
            .get_volume(owner, volume_key)?
            .ok_or_else(|| StorageError::VolumeNotFound(volume_key.to_string()))?;
        if self.store.get_volume(owner, &slug)?.is_some()
            || self.store.get_snapshot(owner, &slug)?.is_some()
        {
            return Err(StoreError::SlugTaken(slug).into());
        }
        let allocated = volumes::allocated_bytes(&self.pool.volume_path(&volume.id)).unwrap_or(0);
        self.admit_snapshot(owner, allocated)?;
        let id = store::new_snapshot_id(&volume.region)?;
        {
            // Held across the clone: no sandbox mounts the volume meanwhile.
            let mounted = self.mounted_in.lock().expect("storage lock");
            if let Some(sandbox) = mounted.get(&volume.id) {
                return Err(StorageError::MountedIn {
                    volume: volume.slug,
                    sandbox: sandbox.clone(),
                });
            }
            self.pool.create_snapshot(&volume.id, &id)?;
        }
        let record = SnapshotRecord {
            id: id.clone(),
            slug,
            token_id: owner.map(str::to_string),
            region: volume.region.clone(),
            source: (volume.id.clone(), volume.slug.clone()),
            base_snapshot: volume.base_snapshot.clone(),
            is_bootable: volume.is_bootable,
            allocated_size: allocated,
            flattened_size: allocated,
            created_at_ms: store::now_ms(),
        };
        if let Err(e) = self.store.insert_snapshot(&record) {
            if let Err(d) = self.pool.delete_snapshot(&id) {
                tracing::warn!(
                    snapshot = id,
                    "removing the image of a refused snapshot: {d}"
                );
            }
            return Err(e.into());
        }
        tracing::info!(snapshot = id, volume = volume.id, "snapshot created");
        Ok(SnapshotInfo {
            record,
            allocated_bytes: allocated,
        })
    }

    /// For a snapshot of the root of a sandbox booted from `root` (`None`:
    /// the builtin image): the bytes it needs at most, what it booted from
    /// plus `writable` (the disk limit of its writable layer; the image is
    /// sparse and billed by what it holds, so the bound costs nothing); and
    /// the snapshot its root descends from, if any.
    pub(crate) fn root_snapshot_plan(
        &self,
        owner: Option<&str>,
        root: Option<&Root>,
        writable: u64,
    ) -> Result<(u64, Option<(String, String)>), StorageError> {
        let (base, lineage) = match root {
            None => (
                self.builtin_capacity().ok_or_else(|| {
                    StorageError::Unavailable("this daemon has no image to measure".into())
                })?,
                None,
            ),
            Some(Root::Snapshot { id, .. }) => (
                self.pool.snapshot_capacity(id)?,
                self.store.get_snapshot(owner, id)?.map(|s| (s.id, s.slug)),
            ),
            Some(Root::Volume(m)) => {
                let v = self
                    .store
                    .get_volume(owner, m.attached.id())?
                    .ok_or_else(|| StorageError::VolumeNotFound(m.attached.id().to_string()))?;
                (v.capacity, v.base_snapshot)
            }
        };
        // Whole MiB, as ext4 wants whole blocks.
        Ok(((base + writable).div_ceil(1 << 20) << 20, lineage))
    }

    /// Snapshots a running sandbox's root filesystem, the tree `tree`, as
    /// `owner`'s snapshot `slug` (bootable): an ext4 image of `bytes`
    /// made by `mkfs.ext4 -d` (seconds: it copies the files). `source` is
    /// the sandbox (its id twice: sandboxes have no slug), `base_snapshot`
    /// the snapshot its root descends from ([`Storage::root_snapshot_plan`]).
    /// The caller keeps the tree still meanwhile (freezes the sandbox).
    pub(crate) fn create_snapshot_of_tree(
        &self,
        owner: Option<&str>,
        slug: String,
        sandbox: &str,
        base_snapshot: Option<(String, String)>,
        bytes: u64,
        tree: volumes::TreeSource<'_>,
    ) -> Result<SnapshotInfo, StorageError> {
        volumes::validate_slug(&slug).map_err(|e| StorageError::Invalid(format!("slug: {e}")))?;
        if self.store.get_volume(owner, &slug)?.is_some()
            || self.store.get_snapshot(owner, &slug)?.is_some()
        {
            return Err(StoreError::SlugTaken(slug).into());
        }
        // Its size is known once made: the count and the bytes already
        // held are checked first, the new bytes after.
        self.admit_snapshot(owner, 0)?;
        let region = sandbox.get(4..7).unwrap_or("ord").to_string();
        let id = store::new_snapshot_id(&region)?;
        self.pool.create_snapshot_from_tree(&id, tree, bytes)?;
        let allocated = volumes::allocated_bytes(&self.pool.snapshot_path(&id)).unwrap_or(0);
        let record = SnapshotRecord {
            id: id.clone(),
            slug,
            token_id: owner.map(str::to_string),
            region,
            source: (sandbox.to_string(), sandbox.to_string()),
            base_snapshot,
            is_bootable: true,
            allocated_size: allocated,
            flattened_size: allocated,
            created_at_ms: store::now_ms(),
        };
        let recorded = self
            .admit_snapshot(owner, allocated)
            .and_then(|()| Ok(self.store.insert_snapshot(&record)?));
        if let Err(e) = recorded {
            if let Err(d) = self.pool.delete_snapshot(&id) {
                tracing::warn!(
                    snapshot = id,
                    "removing the image of a refused snapshot: {d}"
                );
            }
            return Err(e);
        }
        tracing::info!(
            snapshot = id,
            sandbox,
            bytes,
            allocated,
            "snapshot of a running sandbox created"
        );
        Ok(SnapshotInfo {
            record,
            allocated_bytes: allocated,
        })
    }

    /// Refuses a snapshot over the token's count or bytes.
    fn admit_snapshot(&self, owner: Option<&str>, bytes: u64) -> Result<(), StorageError> {
        let held = self.store.storage_totals(owner)?;
        if held.volumes + held.snapshots + 1 > self.cfg.per_token_volumes * 2 {
            return Err(StorageError::Quota(format!(
                "this token holds {} volumes and {} snapshots, its limit: delete a snapshot you \
                 no longer need (DELETE /api/v2/snapshots/{{id}}) and try again",
                held.volumes, held.snapshots
            )));
        }
        if held.bytes + bytes > self.cfg.per_token_bytes {
            return Err(StorageError::Quota(format!(
                "this token's volumes and snapshots reserve {} of its {} limit: delete what you \
                 no longer need and try again",
                human(held.bytes),
                human(self.cfg.per_token_bytes)
            )));
        }
        Ok(())
    }

    fn snapshot_info(&self, record: SnapshotRecord) -> SnapshotInfo {
        SnapshotInfo {
            allocated_bytes: record.allocated_size,
            record,
        }
    }

    /// `owner`'s snapshot whose id or slug is `key`.
    pub fn snapshot(&self, owner: Option<&str>, key: &str) -> Result<SnapshotInfo, StorageError> {
        let record = self
            .store
            .get_snapshot(owner, key)?
            .ok_or_else(|| StorageError::SnapshotNotFound(key.to_string()))?;
        Ok(self.snapshot_info(record))
    }

    /// `owner`'s snapshots, oldest first.
    pub fn snapshots(
        &self,
        owner: Option<&str>,
        search: Option<&str>,
    ) -> Result<Vec<SnapshotInfo>, StorageError> {
        Ok(self
            .store
            .list_snapshots(owner, search)?
            .into_iter()
            .map(|r| self.snapshot_info(r))
            .collect())
    }

    /// Deletes `owner`'s snapshot `key`. Volumes forked from it keep their
    /// data (a clone owns its blocks). Record first, then the image.
    pub fn delete_snapshot(&self, owner: Option<&str>, key: &str) -> Result<(), StorageError> {
        let record = self
            .store
            .get_snapshot(owner, key)?
            .ok_or_else(|| StorageError::SnapshotNotFound(key.to_string()))?;
        {
            let mut booted = self.booted.lock().expect("storage lock");
            if let Some(sandbox) = booted.get(&record.id).and_then(|(_, u)| u.iter().next()) {
                return Err(StorageError::Booted {
                    snapshot: key.to_string(),
                    sandbox: sandbox.clone(),
                });
            }
            // Under the lock: no sandbox boots from it meanwhile.
            self.store.delete_snapshot(&record.id, store::now_ms())?;
            if let Some((attached, _)) = booted.remove(&record.id) {
                if let Err(e) = attached.detach() {
                    tracing::warn!(snapshot = record.id, "unmounting: {e}");
                }
            }
        }
        match self.pool.delete_snapshot(&record.id) {
            Ok(()) | Err(VolumeError::NotFound { .. }) => {}
            Err(e) => tracing::warn!(snapshot = record.id, "deleting the image: {e}"),
        }
        tracing::info!(snapshot = record.id, "snapshot deleted");
        Ok(())
    }

    /// Unmounts a sandbox's volumes (after its processes are gone) and
    /// frees them for the next sandbox.
    pub(crate) fn release(&self, mounted: Vec<Mounted>) {
        for m in mounted {
            let id = m.attached.id().to_string();
            if let Err(e) = m.attached.detach() {
                tracing::warn!(volume = id, "unmounting: {e}");
            }
            self.mounted_in.lock().expect("storage lock").remove(&id);
        }
    }

    /// Unmounts the pool (daemon shutdown, after every sandbox ended).
    pub fn shutdown(&self) {
        for (id, (attached, _)) in self.booted.lock().expect("storage lock").drain() {
            if let Err(e) = attached.detach() {
                tracing::warn!(snapshot = id, "unmounting: {e}");
            }
        }
        if let Err(e) = self.pool.unmount_pool() {
            tracing::warn!("storage: unmounting the pool: {e}");
        }
    }
}

/// Bytes for people: decimal units, as capacities are given.
pub fn human(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GB", 1_000_000_000), ("MB", 1_000_000), ("kB", 1_000)];
    for (unit, size) in UNITS {
        if bytes >= size {
            let v = bytes as f64 / size as f64;
            return if v.fract() == 0.0 {
                format!("{v:.0} {unit}")
            } else {
                format!("{v:.1} {unit}")
            };
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human(1_000_000_000), "1 GB");
        assert_eq!(super::human(16 << 20), "16.8 MB");
        assert_eq!(super::human(999), "999 B");
    }
}
