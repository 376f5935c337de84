use crate::backend::{BackendError, Isolated, Isolation, LaunchSpec, ResourceLimits};
use crate::live::{EndReason, Live};
use crate::new_sandbox_id;
use crate::Backends;
use agent_client::AgentClient;
use agent_proto::calls::{Content, EnvSetParams, MkdirParams, WriteFileParams};
use agent_proto::Method;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{now_ms, SandboxRecord, Store};
use thiserror::Error;
use tokio::sync::Notify;

/// Where the sandbox CA is installed when a sandbox has secrets.
const CA_DIR: &str = "/etc/airlock";
const CA_FILE: &str = "/etc/airlock/sandbox-ca.pem";
/// Debian's system bundle (OpenSSL's default CA file, curl's, Python's).
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How long a create waits for an ending sandbox to let go of a volume.
const ENDING_HOLDER_WAIT: Duration = Duration::from_secs(10);

/// How often usage is sampled and written to the store: the most a daemon
/// crash can lose.
pub const METER_INTERVAL: Duration = Duration::from_secs(1);

/// How often volumes and snapshots are billed (byte-hours to their owners'
/// ledger). A crash loses nothing: each object keeps in the store the time
/// it is billed up to, and the next pass bills from there.
pub const STORAGE_METER_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub data_dir: PathBuf,
    pub image: String,
    pub agent_exe: PathBuf,
    /// No sandbox lives longer than this, whatever its deadline says.
    pub max_lifetime: Duration,
    pub disk_bytes: u64,
    pub cpu_millis: u64,
    pub pids: u64,
    /// The sandbox's default environment and working directory.
    pub env: Vec<(String, String)>,
    /// Ready sandboxes kept in reserve so a create does not wait for
    /// namespaces, root filesystem and agent start-up.
    pub pool_size: usize,
    /// Memory limit pool sandboxes are made with (changed at hand-out).
    pub default_memory_mb: u32,
    pub admission: crate::AdmissionLimits,
    /// Each sandbox's network (TUN + egress gateway); `None`: only `lo`.
    pub network: Option<crate::NetworkConfig>,
    /// Volumes; `None`: this daemon serves none.
    pub storage: Option<crate::StorageConfig>,
    /// How often storage is billed ([`STORAGE_METER_INTERVAL`]).
    pub storage_meter_interval: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub token_id: Option<String>,
    pub region: String,
    pub memory_mb: u32,
    pub labels: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    /// Absolute deadline; `None` means session mode (ends with its creator).
    pub stop_at_ms: Option<i64>,
    pub allow_net: Vec<String>,
    /// Secrets: the sandbox sees placeholders; the gateway swaps the values
    /// in on TLS to their hosts. (Debug redacts the values.)
    pub secrets: Vec<egress::intercept::SecretSpec>,
    /// The backend to isolate it with (`None`: the daemon's default).
    pub isolation: Option<Isolation>,
    /// Volumes of the token's to mount (paths checked by
    /// `jail::check_bind_target`).
    pub volumes: Vec<crate::VolumeMount>,
    /// A snapshot or bootable volume of the token's to boot from instead
    /// of the image.
    pub root: Option<String>,
}

#[derive(Debug, Error)]
pub enum ManagerError {
    #[error("creating the sandbox: {0}")]
    Backend(#[from] BackendError),
    #[error("image: {0}")]
    Image(#[from] image::ImageError),
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("sandbox agent: {0}")]
    Agent(String),
    #[error(transparent)]
    Refused(#[from] crate::AdmissionError),
    #[error("sandbox {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Storage(#[from] crate::StorageError),
    #[error("internal: {0}")]
    Internal(String),
}

pub struct Manager {
    cfg: ManagerConfig,
    store: Arc<Store>,
    backends: Backends,
    admission: Arc<crate::Admission>,
    rootfs: PathBuf,
    live: Mutex<HashMap<String, Arc<Live>>>,
    pool: Mutex<VecDeque<Prepared>>,
    /// Wakes the pool filler after a sandbox was taken.
    pool_taken: Notify,
    pool_stats: PoolStats,
    totals: Arc<Totals>,
    audit: crate::network::AuditSender,
    /// Volumes, or why this daemon serves none.
    storage: Result<Arc<crate::Storage>, String>,
}

/// A started sandbox with its agent connected, not yet handed out.
struct Prepared {
    id: String,
    isolation: Isolation,
    sandbox: Box<dyn Isolated>,
    client: AgentClient,
    /// Serves the sandbox's network; allows nothing until handed out.
    gateway: Option<egress::Gateway>,
}

/// Counters of the warm pool, for operators and benchmarks.
#[derive(Default, Debug)]
pub struct PoolStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// Running totals for metrics, kept as sandboxes start and end, so a scrape
/// never walks the cgroups of live sandboxes.
#[derive(Default, Debug)]
pub struct Totals {
    /// Sandboxes handed out, by backend, indexed by `Isolation::ALL`.
    pub created: [AtomicU64; Isolation::ALL.len()],
    /// Ended sandboxes by [`EndReason`], indexed by `EndReason::ALL`.
    pub ended: [AtomicU64; EndReason::ALL.len()],
    pub oom_kills: AtomicU64,
    /// Usage of ended sandboxes.
    pub cpu_usec: AtomicU64,
    /// Memory over time in KiB·ms: byte·ms would overflow a u64 after
    /// about 47 hours of 100 GiB in use across the host; KiB·ms lasts over
    /// five years of that.
    pub memory_kib_ms: AtomicU64,
    /// TCP connections through the egress gateways, by verdict, and the
    /// bytes they carried (out: from sandboxes).
    pub net_allowed: AtomicU64,
    pub net_denied: AtomicU64,
    pub net_bytes_out: AtomicU64,
    pub net_bytes_in: AtomicU64,
}

impl Manager {
    /// Prepares the image (building it on first use), then releases
    /// whatever a previous daemon left: its sandboxes' processes, cgroups
    /// and state, and their records, marked ended by "daemon restart".
    pub async fn start(
        cfg: ManagerConfig,
        store: Arc<Store>,
        backends: Backends,
    ) -> Result<Arc<Self>, ManagerError> {
        let c = cfg.clone();
        let image = tokio::task::spawn_blocking(move || {
            image::ImageStore::new(&c.data_dir).ensure(&c.image, &mut |p| match p {
                image::Progress::Stage(s) => tracing::info!("image: {s}"),
                image::Progress::Line(l) => tracing::info!("image:   {l}"),
                image::Progress::Done { secs } => tracing::info!("image ready in {secs:.1}s"),
            })
        })
        .await
        .map_err(|e| ManagerError::Internal(e.to_string()))??;
        // Every backend's leftovers: a previous daemon may have run with
        // another default, or with pinned tokens.
        let reapers = backends.clone();
        let reaped = tokio::task::spawn_blocking(move || {
            reapers
                .all()
                .into_iter()
                .map(|b| b.reap_leftovers())
                .sum::<Result<usize, BackendError>>()
        })
        .await
        .map_err(|e| ManagerError::Internal(e.to_string()))??;
        let ended = store.end_all_running(now_ms(), "daemon restart")?;
        if reaped > 0 || !ended.is_empty() {
            tracing::info!(
                reaped,
                records = ended.len(),
                "recovered from a previous daemon"
            );
        }
        let storage = match cfg.storage.clone() {
            None => Err("this daemon serves no volumes (airlock serve --no-volumes)".to_string()),
            Some(sc) => {
                let st = store.clone();
                tokio::task::spawn_blocking(move || crate::Storage::open(sc, st))
                    .await
                    .map_err(|e| ManagerError::Internal(e.to_string()))?
                    .map(Arc::new)
                    .map_err(|e| {
                        tracing::warn!("volumes are off: {e}");
                        format!("volumes are off on this daemon: {e}")
                    })
            }
        };
        if let Ok(storage) = &storage {
            storage.set_builtin(crate::BuiltinImage {
                name: cfg.image.clone(),
                rootfs: image.rootfs.clone(),
                stamp: image.created_unix,
                size_bytes: image.size_bytes,
            });
        }
        let admission = crate::Admission::new(cfg.admission.clone());
        let totals = Arc::new(Totals::default());
        let audit = crate::network::audit_writer(store.clone(), totals.clone());
        let mgr = Arc::new(Self {
            audit,
            admission,
            cfg,
            store,
            rootfs: image.rootfs,
            backends,
            live: Mutex::new(HashMap::new()),
            pool: Mutex::new(VecDeque::new()),
            pool_taken: Notify::new(),
            pool_stats: PoolStats::default(),
            totals,
            storage,
        });
        if mgr.cfg.pool_size > 0 {
            mgr.clone().fill_pool();
        }
        mgr.meter_storage();
        Ok(mgr)
    }

    pub fn pool_stats(&self) -> &PoolStats {
        &self.pool_stats
    }

    /// The gateways' memory in use and each sandbox's budget, when
    /// sandboxes have a network.
    pub fn gateway_memory(&self) -> Option<(&egress::GatewayMemory, usize)> {
        let net = self.cfg.network.as_ref()?;
        Some((&net.memory, net.memory_per_sandbox))
    }

    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    pub fn pool_len(&self) -> usize {
        self.pool.lock().expect("pool lock").len()
    }

    /// Bills volumes and snapshots every `storage_meter_interval`, starting
    /// now: the first pass after a restart bills the time the daemon was
    /// down (the data existed), from where the last pass left off. Runs
    /// with `--no-volumes` too: volumes made earlier still hold their data.
    fn meter_storage(&self) {
        let store = self.store.clone();
        let every = self.cfg.storage_meter_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                bill_storage(store.clone()).await;
            }
        });
    }

    /// Keeps the pool at its size, in the background, one sandbox at a time
    /// so that refilling never competes hard with the work being served.
    fn fill_pool(self: Arc<Self>) {
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                while self.pool_len() < self.cfg.pool_size {
                    let memory = self.cfg.default_memory_mb;
                    match self
                        .prepare(new_sandbox_id("ord"), memory, None, vec![], None)
                        .await
                    {
                        Ok(p) => {
                            failures = 0;
                            self.pool.lock().expect("pool lock").push_back(p);
                        }
                        Err(e) => {
                            failures += 1;
                            tracing::warn!("warm pool: {e}");
                            // Back off, up to 25 s, rather than spin on a broken host.
                            tokio::time::sleep(Duration::from_millis(100 << failures.min(8))).await;
                        }
                    }
                }
                self.pool_taken.notified().await;
            }
        });
    }

    /// Starts a sandbox (namespaces, root filesystem, agent) with no owner
    /// yet, on `isolation`'s backend (`None`: the default).
    async fn prepare(
        &self,
        id: String,
        memory_mb: u32,
        isolation: Option<Isolation>,
        binds: Vec<crate::BindMount>,
        root: Option<(PathBuf, bool)>,
    ) -> Result<Prepared, ManagerError> {
        let backend = self.backends.get(isolation)?.clone();
        let isolation = backend.isolation();
        let (image_rootfs, persistent_root) = root.unwrap_or_else(|| (self.rootfs.clone(), false));
        let spec = LaunchSpec {
            id: id.clone(),
            image_rootfs,
            agent_exe: self.cfg.agent_exe.clone(),
            limits: ResourceLimits {
                memory_bytes: u64::from(memory_mb) << 20,
                cpu_millis: self.cfg.cpu_millis,
                pids: self.cfg.pids,
                disk_bytes: self.cfg.disk_bytes,
                ..ResourceLimits::default()
            },
            env: self.cfg.env.clone(),
            hostname: "sandbox".into(),
            network: self.cfg.network.as_ref().map(|n| n.link.clone()),
            binds,
            persistent_root,
        };
        let mut sandbox = tokio::task::spawn_blocking(move || backend.create(&spec))
            .await
            .map_err(|e| ManagerError::Internal(e.to_string()))??;
        let sock = sandbox
            .take_agent_socket()
            .ok_or_else(|| ManagerError::Internal("agent socket missing".into()))?;
        let gateway = match (&self.cfg.network, sandbox.take_tun()) {
            (Some(net), Some(tun)) => Some(egress::Gateway::spawn_on(
                net.shards.pick(),
                tun,
                net.gateway_config(),
                egress::AllowList::default(),
                self.audit.sink_for(&id),
                net.memory_budget(),
            )),
            (Some(_), None) => {
                destroy_blocking(sandbox).await;
                return Err(ManagerError::Internal(
                    "the sandbox came up without its network device".into(),
                ));
            }
            (None, _) => None,
        };
        match AgentClient::connect(sock).await {
            Ok((client, _hello)) => Ok(Prepared {
                id,
                isolation,
                sandbox,
                client,
                gateway,
            }),
            Err(e) => {
                destroy_blocking(sandbox).await;
                Err(ManagerError::Agent(format!("{e:#}")))
            }
        }
    }

    /// A prepared sandbox: from the pool when one fits, else a fresh one
    /// (always for one with volumes, which are mounted as it starts).
    async fn take_prepared(
        &self,
        req: &CreateRequest,
        id: String,
        binds: Vec<crate::BindMount>,
        root: Option<(PathBuf, bool)>,
    ) -> Result<Prepared, ManagerError> {
        // The pool holds sandboxes of the default backend only.
        let poolable = binds.is_empty()
            && root.is_none()
            && req
                .isolation
                .is_none_or(|i| i == self.backends.default_isolation());
        let pooled = if poolable && new_sandbox_id(&req.region).starts_with("sbx_ord_") {
            self.pool.lock().expect("pool lock").pop_front()
        } else {
            None
        };
        self.pool_taken.notify_one();
        let Some(p) = pooled else {
            self.pool_stats.misses.fetch_add(1, Ordering::Relaxed);
            return self
                .prepare(id, req.memory_mb, req.isolation, binds, root)
                .await;
        };
        self.pool_stats.hits.fetch_add(1, Ordering::Relaxed);
        if req.memory_mb != self.cfg.default_memory_mb {
            if let Err(e) = p.sandbox.set_memory_limit(u64::from(req.memory_mb) << 20) {
                destroy_blocking(p.sandbox).await;
                return Err(e.into());
            }
        }
        Ok(p)
    }

    /// The configuration the manager runs with.
    pub fn config(&self) -> &ManagerConfig {
        &self.cfg
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn get(&self, id: &str) -> Option<Arc<Live>> {
        self.live.lock().expect("manager lock").get(id).cloned()
    }

    pub fn live_count(&self) -> usize {
        self.live.lock().expect("manager lock").len()
    }

    pub async fn create(self: &Arc<Self>, req: CreateRequest) -> Result<Arc<Live>, ManagerError> {
        // Refused before anything is made: nothing half-created to undo.
        let ticket = self
            .admission
            .admit(req.token_id.as_deref(), u64::from(req.memory_mb))?;
        // A secret's hosts are reachable without being listed in allowNet:
        // naming them as a secret's hosts says the sandbox is to call them.
        let mut allow = req.allow_net.clone();
        allow.extend(req.secrets.iter().flat_map(|s| s.hosts.iter().cloned()));
        let policy = egress::AllowList::parse(&allow)
            .map_err(|e| ManagerError::Internal(format!("allowNet: {e}")))?;
        if !req.secrets.is_empty() && self.cfg.network.is_none() {
            return Err(ManagerError::Internal(
                "secrets need the egress gateway, and this daemon runs without one".into(),
            ));
        }
        // A sandbox with volumes is started fresh under this id (the
        // pool's have theirs).
        let id = new_sandbox_id(&req.region);
        let root = self.mount_root(&req, &id).await?;
        let mounted = match self.mount_volumes(&req, &id).await {
            Ok(m) => m,
            Err(e) => {
                self.release_root(root).await;
                return Err(e);
            }
        };
        let binds = mounted
            .iter()
            .map(|m| crate::BindMount {
                source: m.attached.path().to_path_buf(),
                target: m.target.clone(),
            })
            .collect();
        let root_spec = root.as_ref().map(|r| {
            (
                r.path().to_path_buf(),
                matches!(r, crate::storage::Root::Volume(_)),
            )
        });
        let prepared = self.take_prepared(&req, id, binds, root_spec).await;
        let Prepared {
            id,
            isolation,
            sandbox,
            client,
            gateway,
        } = match prepared {
            Ok(p) => p,
            Err(e) => {
                self.release_volumes(mounted).await;
                self.release_root(root).await;
                return Err(e);
            }
        };
        let configured = self.configure(&id, &client, &req).await;
        let interception = match configured {
            Ok(i) => i,
            Err(e) => {
                destroy_blocking(sandbox).await;
                self.release_volumes(mounted).await;
                self.release_root(root).await;
                return Err(e);
            }
        };
        if let Some(gateway) = &gateway {
            gateway.set_policy(policy, interception);
        }
        let now = now_ms();
        let record = SandboxRecord {
            id: id.clone(),
            token_id: req.token_id.clone(),
            region: id[4..7].to_string(),
            status: "running".into(),
            created_at_ms: now,
            stopped_at_ms: None,
            stop_at_ms: req.stop_at_ms,
            memory_mb: req.memory_mb,
            labels: req.labels.clone(),
            exit_reason: None,
            allow_net: req.allow_net.clone(),
            secret_names: req.secrets.iter().map(|s| s.name.clone()).collect(),
            isolation: isolation.as_str().to_string(),
        };
        if let Err(e) = self.store.insert_sandbox(&record) {
            destroy_blocking(sandbox).await;
            self.release_volumes(mounted).await;
            self.release_root(root).await;
            return Err(e.into());
        }
        let live = Arc::new(Live::new(
            id.clone(),
            isolation,
            client,
            sandbox,
            gateway,
            now,
            req.stop_at_ms,
        ));
        *live.ticket.lock().expect("live lock") = Some(ticket);
        *live.volumes.lock().expect("live lock") = mounted;
        *live.root.lock().expect("live lock") = root;
        self.totals.created[isolation.index()].fetch_add(1, Ordering::Relaxed);
        self.record_event(
            &id,
            "created",
            &format!(
                "{isolation}, memory {} MiB, allowNet {}, secrets {}",
                req.memory_mb,
                req.allow_net.len(),
                req.secrets.len()
            ),
        );
        self.live
            .lock()
            .expect("manager lock")
            .insert(id, live.clone());
        self.watch(live.clone());
        Ok(live)
    }

    /// Volumes, if this daemon serves them.
    pub fn storage(&self) -> Result<&Arc<crate::Storage>, crate::StorageError> {
        self.storage
            .as_ref()
            .map_err(|why| crate::StorageError::Unavailable(why.clone()))
    }

    /// Runs storage call `op` (blocking) and, while it is refused because
    /// a volume is held by a sandbox that is ending, runs it again: a
    /// client's close returns before the teardown, and the volume is free
    /// as soon as that ends (up to [`ENDING_HOLDER_WAIT`]). A live holder is
    /// a refusal at once.
    async fn storage_call<T: Send + 'static>(
        &self,
        op: impl Fn(&crate::Storage) -> Result<T, crate::StorageError> + Send + Sync + 'static,
    ) -> Result<T, ManagerError> {
        let storage = self.storage()?.clone();
        let op = Arc::new(op);
        let deadline = tokio::time::Instant::now() + ENDING_HOLDER_WAIT;
        loop {
            let (storage, op) = (storage.clone(), op.clone());
            let result = tokio::task::spawn_blocking(move || op(&storage))
                .await
                .map_err(|e| ManagerError::Internal(e.to_string()))?;
            match result {
                Err(e)
                    if e.held_by().is_some_and(|s| self.get(s).is_none())
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                other => return Ok(other?),
            }
        }
    }

    /// Deletes `owner`'s volume `key` (see [`Manager::storage_call`]).
    pub async fn delete_volume(&self, owner: Option<&str>, key: &str) -> Result<(), ManagerError> {
        let (owner, key) = (owner.map(str::to_string), key.to_string());
        self.storage_call(move |s| s.delete_volume(owner.as_deref(), &key))
            .await
    }

    /// Deletes `owner`'s snapshot `key` (see [`Manager::storage_call`]).
    pub async fn delete_snapshot(
        &self,
        owner: Option<&str>,
        key: &str,
    ) -> Result<(), ManagerError> {
        let (owner, key) = (owner.map(str::to_string), key.to_string());
        self.storage_call(move |s| s.delete_snapshot(owner.as_deref(), &key))
            .await
    }

    /// Snapshots `owner`'s volume `key` as `slug` (see
    /// [`Manager::storage_call`]).
    pub async fn create_snapshot(
        &self,
        owner: Option<&str>,
        key: &str,
        slug: &str,
    ) -> Result<crate::SnapshotInfo, ManagerError> {
        let (owner, key, slug) = (owner.map(str::to_string), key.to_string(), slug.to_string());
        self.storage_call(move |s| s.create_snapshot(owner.as_deref(), &key, slug.clone()))
            .await
    }

    /// Snapshots the root filesystem of `owner`'s running sandbox `id` as
    /// the bootable snapshot `slug` (airlock extension). The sandbox's
    /// processes are frozen while its files are copied (seconds), then run
    /// on. Native isolation only.
    pub async fn snapshot_sandbox(
        &self,
        owner: Option<&str>,
        id: &str,
        slug: &str,
    ) -> Result<crate::SnapshotInfo, ManagerError> {
        let storage = self.storage()?.clone();
        let live = self
            .get(id)
            .ok_or_else(|| ManagerError::NotFound(id.to_string()))?;
        if live.isolation != Isolation::Native {
            return Err(crate::StorageError::Unavailable(format!(
                "snapshots of running {} sandboxes are not supported yet (their root filesystem \
                 lives inside gVisor's kernel): snapshot a volume instead (POST \
                 /api/v2/volumes/{{id}}/snapshot), e.g. boot from a bootable volume and \
                 snapshot that after the sandbox ends",
                live.isolation
            ))
            .into());
        }
        let (owner, id, slug) = (owner.map(str::to_string), id.to_string(), slug.to_string());
        let disk_bytes = self.cfg.disk_bytes;
        tokio::task::spawn_blocking(move || {
            // One copy of a sandbox at a time: the first one's thaw would
            // end a second one's freeze.
            let _one = live.snapshotting.lock().expect("live lock");
            let view = {
                let isolated = live.isolated.lock().expect("live lock");
                let sandbox = isolated
                    .as_ref()
                    .ok_or_else(|| ManagerError::NotFound(id.clone()))?;
                sandbox.root_view()?
            };
            if !view.can_freeze() {
                // Without a freezer the copy would be neither of one
                // moment nor safe from a file swapped under mkfs.
                return Err(crate::StorageError::Unavailable(
                    "snapshots of running sandboxes need the cgroup freezer: this host runs \
                     cgroup v1 without the freezer controller mounted"
                        .into(),
                )
                .into());
            }
            let (bytes, base_snapshot) = {
                let root = live.root.lock().expect("live lock");
                storage.root_snapshot_plan(owner.as_deref(), root.as_ref(), disk_bytes)?
            };
            let started = std::time::Instant::now();
            let frozen = view
                .freeze()
                .map_err(|e| ManagerError::Internal(format!("freezing the sandbox: {e}")))?;
            let made = storage.create_snapshot_of_tree(
                owner.as_deref(),
                slug,
                &id,
                base_snapshot,
                bytes,
                volumes::TreeSource::Confined(volumes::ConfinedTree {
                    dir: view.tree(),
                    owner: view.host_root(),
                    confine: Box::new(view.confine()),
                }),
            );
            if let Err(e) = frozen.thaw() {
                tracing::error!(sandbox = id, "thawing after a snapshot: {e}");
            }
            tracing::info!(
                sandbox = id,
                secs = started.elapsed().as_secs_f64(),
                ok = made.is_ok(),
                "copied a running sandbox's root"
            );
            Ok(made?)
        })
        .await
        .map_err(|e| ManagerError::Internal(e.to_string()))?
    }

    /// Mounts the request's volumes on the host for sandbox `id`.
    async fn mount_volumes(
        &self,
        req: &CreateRequest,
        id: &str,
    ) -> Result<Vec<crate::storage::Mounted>, ManagerError> {
        if req.volumes.is_empty() {
            return Ok(Vec::new());
        }
        let (owner, sid, mounts) = (req.token_id.clone(), id.to_string(), req.volumes.clone());
        self.storage_call(move |s| s.attach(owner.as_deref(), &sid, &mounts))
            .await
    }

    /// Mounts what the request boots from, if it names a `root`.
    async fn mount_root(
        &self,
        req: &CreateRequest,
        id: &str,
    ) -> Result<Option<crate::storage::Root>, ManagerError> {
        let Some(key) = req.root.clone() else {
            return Ok(None);
        };
        let (owner, sid) = (req.token_id.clone(), id.to_string());
        self.storage_call(move |s| s.attach_root(owner.as_deref(), &sid, &key))
            .await
            .map(Some)
    }

    /// Lets go of the root of a sandbox that is gone (or never started).
    async fn release_root(&self, root: Option<crate::storage::Root>) {
        let Some(root) = root else {
            return;
        };
        if let Ok(storage) = self.storage() {
            let storage = storage.clone();
            let _ = tokio::task::spawn_blocking(move || storage.release_root(root)).await;
        }
    }

    /// Unmounts volumes of a sandbox that is gone (or never started).
    async fn release_volumes(&self, mounted: Vec<crate::storage::Mounted>) {
        if mounted.is_empty() {
            return;
        }
        if let Ok(storage) = self.storage() {
            let storage = storage.clone();
            let _ = tokio::task::spawn_blocking(move || storage.release(mounted)).await;
        }
    }

    /// Applies the caller's settings to a prepared sandbox: its env, and
    /// for secrets their placeholders and the CA the gateway intercepts
    /// with (added to the system bundle; the usual variables point at it).
    async fn configure(
        &self,
        id: &str,
        client: &AgentClient,
        req: &CreateRequest,
    ) -> Result<Option<Arc<egress::intercept::Interception>>, ManagerError> {
        for (k, v) in &req.env {
            let set = EnvSetParams {
                key: k.clone(),
                value: v.clone(),
            };
            agent_call(client, Method::EnvSet, &set).await?;
        }
        if req.secrets.is_empty() {
            return Ok(None);
        }
        let net = self
            .cfg
            .network
            .as_ref()
            .ok_or_else(|| ManagerError::Internal("no egress gateway".into()))?;
        let (interception, placeholders) =
            egress::intercept::Interception::new(id, &req.secrets, net.upstream_tls.clone())
                .map_err(|e| ManagerError::Internal(e.to_string()))?;
        let pem = interception.ca_pem();
        let ca_dir = MkdirParams {
            path: CA_DIR.to_string(),
            recursive: true,
            mode: None,
        };
        agent_call(client, Method::Mkdir, &ca_dir).await?;
        let text_file = |path: &str, content: String, append: bool| WriteFileParams {
            path: path.to_string(),
            content: Content::Inline(content),
            append,
            create: true,
            create_new: false,
            mode: None,
        };
        let ca_file = text_file(CA_FILE, pem.clone(), false);
        agent_call(client, Method::WriteTextFile, &ca_file).await?;
        let bundle = text_file(SYSTEM_BUNDLE, format!("\n{pem}"), true);
        agent_call(client, Method::WriteTextFile, &bundle).await?;
        let mut env: Vec<(String, String)> = placeholders;
        env.extend(
            [
                ("SSL_CERT_FILE", SYSTEM_BUNDLE),
                ("REQUESTS_CA_BUNDLE", SYSTEM_BUNDLE),
                ("CURL_CA_BUNDLE", SYSTEM_BUNDLE),
                ("NODE_EXTRA_CA_CERTS", CA_FILE),
                ("DENO_CERT", CA_FILE),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        for (key, value) in env {
            agent_call(client, Method::EnvSet, &EnvSetParams { key, value }).await?;
        }
        Ok(Some(Arc::new(interception)))
    }

    /// Ends the sandbox at its deadline, at the maximum lifetime, or when
    /// its agent dies; meanwhile meters it every [`METER_INTERVAL`].
    fn watch(self: &Arc<Self>, live: Arc<Live>) {
        let mgr = self.clone();
        let max_end = live.created_at_ms + self.cfg.max_lifetime.as_millis() as i64;
        tokio::spawn(async move {
            let mut ended = live.ended();
            let mut meter = tokio::time::interval(METER_INTERVAL);
            meter.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let deadline = live.stop_at_ms().map_or(max_end, |s| s.min(max_end));
                let wait = Duration::from_millis((deadline - now_ms()).max(0) as u64);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {
                        mgr.kill(&live.id, EndReason::TimedOut).await;
                        break;
                    }
                    _ = live.deadline_changed.notified() => continue,
                    _ = meter.tick() => {
                        let _ = mgr.record_usage(&live);
                        mgr.record_oom(&live);
                        continue;
                    }
                    _ = live.client.closed() => {
                        // cgroup v1 has no group kill: a sandbox out of
                        // memory shows as its agent (PID 1) being the victim.
                        let oom = live.usage().is_some_and(|u| u.oom_kills > 0);
                        let reason = if oom { EndReason::Oom } else { EndReason::AgentExited };
                        mgr.kill(&live.id, reason).await;
                        break;
                    }
                    _ = async { let _ = ended.wait_for(|e| e.is_some()).await; } => break,
                }
            }
        });
    }

    /// Ends a sandbox: every connection is told (`Live::ended`), all its
    /// processes die, its cgroup and state go, and its record says why.
    /// Returns false if no such sandbox is live.
    pub async fn kill(&self, id: &str, reason: EndReason) -> bool {
        let Some(live) = self.live.lock().expect("manager lock").remove(id) else {
            return false;
        };
        // A last sample while the counters still exist.
        self.record_oom(&live);
        if let Some(usage) = self.record_usage(&live) {
            self.totals
                .cpu_usec
                .fetch_add(usage.cpu_usec, Ordering::Relaxed);
            self.totals
                .memory_kib_ms
                .fetch_add(usage.memory_byte_ms >> 10, Ordering::Relaxed);
        }
        if let Some(kernel) = live.usage() {
            self.totals
                .oom_kills
                .fetch_add(kernel.oom_kills, Ordering::Relaxed);
        }
        let index = EndReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.totals.ended[index].fetch_add(1, Ordering::Relaxed);
        let isolated = live.isolated.lock().expect("live lock").take();
        if let Some(sandbox) = isolated {
            destroy_blocking(sandbox).await;
        }
        // After its processes: nothing of the sandbox holds them now.
        let volumes = std::mem::take(&mut *live.volumes.lock().expect("live lock"));
        self.release_volumes(volumes).await;
        let root = live.root.lock().expect("live lock").take();
        self.release_root(root).await;
        // After the processes: the connections they had are reported cut.
        live.gateway.lock().expect("live lock").take();
        // Its capacity is free only now that everything of it is gone.
        live.ticket.lock().expect("live lock").take();
        if let Err(e) = self.store.end_sandbox(id, now_ms(), reason.as_str()) {
            tracing::warn!(sandbox = id, "recording the end: {e}");
        }
        self.record_event(id, "ended", reason.as_str());
        // Told last, so a client that sees its socket close (1001) finds
        // everything of the sandbox already released.
        live.ended.send_replace(Some(reason));
        tracing::info!(sandbox = id, reason = reason.as_str(), "sandbox ended");
        true
    }

    /// Appends a lifecycle event to the store (a failure is only logged).
    pub fn record_event(&self, id: &str, kind: &str, detail: &str) {
        if let Err(e) = self.store.record_sandbox_event(id, now_ms(), kind, detail) {
            tracing::warn!(sandbox = id, kind, "recording a sandbox event: {e}");
        }
    }

    /// Records an `oom` event if the cgroup's OOM-kill counter grew.
    fn record_oom(&self, live: &Live) {
        if let Some(count) = live.new_oom_kills() {
            self.record_event(&live.id, "oom", &format!("oom kills: {count}"));
        }
    }

    fn record_usage(&self, live: &Live) -> Option<store::Usage> {
        let now = now_ms();
        let usage = live.sample(now)?;
        if let Err(e) = self.store.record_usage(&live.id, &usage, now) {
            tracing::warn!(sandbox = live.id, "recording usage: {e}");
        }
        Some(usage)
    }

    /// Moves a sandbox's deadline; returns the deadline granted (capped by
    /// the maximum lifetime).
    pub fn extend(&self, id: &str, stop_at_ms: i64) -> Result<i64, ManagerError> {
        let live = self
            .get(id)
            .ok_or_else(|| ManagerError::NotFound(id.to_string()))?;
        let max_end = live.created_at_ms + self.cfg.max_lifetime.as_millis() as i64;
        let granted = stop_at_ms.min(max_end);
        *live.stop_at_ms.lock().expect("live lock") = Some(granted);
        live.deadline_changed.notify_one();
        self.store.set_stop_at(id, Some(granted))?;
        self.record_event(id, "extended", &format!("stopAt {granted}"));
        Ok(granted)
    }

    /// Ends every live sandbox (daemon shutdown).
    pub async fn shutdown(&self) {
        let pooled: Vec<Prepared> = self.pool.lock().expect("pool lock").drain(..).collect();
        for p in pooled {
            destroy_blocking(p.sandbox).await;
        }
        let ids: Vec<String> = self
            .live
            .lock()
            .expect("manager lock")
            .keys()
            .cloned()
            .collect();
        // Concurrently, a batch at a time: tearing down a sandbox's network
        // device takes the kernel ~30 ms, and a host may hold a thousand.
        for batch in ids.chunks(64) {
            futures_util::future::join_all(
                batch.iter().map(|id| self.kill(id, EndReason::Shutdown)),
            )
            .await;
        }
        if let Ok(storage) = self.storage() {
            let storage = storage.clone();
            let _ = tokio::task::spawn_blocking(move || storage.shutdown()).await;
        }
        // A last pass, so a daemon that is not started again has billed
        // everything up to its stop.
        bill_storage(self.store.clone()).await;
    }
}

/// One storage metering pass ([`Store::meter_storage`]) off the async
/// threads. A failure is only logged: the next pass bills the same span.
async fn bill_storage(store: Arc<Store>) {
    match tokio::task::spawn_blocking(move || store.meter_storage(now_ms())).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!("metering storage: {e}"),
        Err(e) => tracing::warn!("metering storage: {e}"),
    }
}

async fn destroy_blocking(sandbox: Box<dyn Isolated>) {
    let id = sandbox.id().to_string();
    match tokio::task::spawn_blocking(move || sandbox.destroy()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(sandbox = id, "destroying: {e}"),
        Err(e) => tracing::warn!(sandbox = id, "destroying: {e}"),
    }
}

/// One call to a sandbox's agent whose result is `null` (the calls that
/// set a sandbox up), with params of its type in `agent_proto::calls`.
async fn agent_call<P: serde::Serialize>(
    client: &AgentClient,
    method: Method,
    params: &P,
) -> Result<(), ManagerError> {
    client
        .call_typed::<P, ()>(method, params)
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.message))
        .map_err(|e| ManagerError::Internal(format!("{method}: {e}")))
}
