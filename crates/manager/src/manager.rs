use crate::live::{EndReason, Live};
use crate::new_sandbox_id;
use agent_client::AgentClient;
use jail::{JailPaths, Limits, Sandbox, SandboxSpec};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{now_ms, SandboxRecord, Store};
use thiserror::Error;

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub data_dir: PathBuf,
    pub image: String,
    pub agent_exe: PathBuf,
    pub jail_paths: JailPaths,
    /// No sandbox lives longer than this, whatever its deadline says.
    pub max_lifetime: Duration,
    pub disk_bytes: u64,
    pub cpu_millis: u64,
    pub pids: u64,
    /// The sandbox's default environment and working directory.
    pub env: Vec<(String, String)>,
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
    pub secret_names: Vec<String>,
}

#[derive(Debug, Error)]
pub enum ManagerError {
    #[error("creating the sandbox: {0}")]
    Jail(#[from] jail::JailError),
    #[error("image: {0}")]
    Image(#[from] image::ImageError),
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("sandbox agent: {0}")]
    Agent(String),
    #[error("sandbox {0} not found")]
    NotFound(String),
    #[error("internal: {0}")]
    Internal(String),
}

pub struct Manager {
    cfg: ManagerConfig,
    store: Arc<Store>,
    rootfs: PathBuf,
    live: Mutex<HashMap<String, Arc<Live>>>,
}

impl Manager {
    /// Prepares the image (building it on first use), then releases
    /// whatever a previous daemon left: its sandboxes' processes, cgroups
    /// and state, and their records, marked ended by "daemon restart".
    pub async fn start(cfg: ManagerConfig, store: Arc<Store>) -> Result<Arc<Self>, ManagerError> {
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
        let paths = cfg.jail_paths.clone();
        let reaped = tokio::task::spawn_blocking(move || jail::reap_leftovers(&paths))
            .await
            .map_err(|e| ManagerError::Internal(e.to_string()))??;
        let ended = store.end_all_running(now_ms(), "daemon restart")?;
        if !reaped.reaped.is_empty() || !ended.is_empty() {
            tracing::info!(
                reaped = reaped.reaped.len(),
                records = ended.len(),
                "recovered from a previous daemon"
            );
        }
        Ok(Arc::new(Self {
            cfg,
            store,
            rootfs: image.rootfs,
            live: Mutex::new(HashMap::new()),
        }))
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
        let id = new_sandbox_id(&req.region);
        let spec = SandboxSpec {
            id: id.clone(),
            image_rootfs: self.rootfs.clone(),
            agent_exe: self.cfg.agent_exe.clone(),
            paths: self.cfg.jail_paths.clone(),
            limits: Limits {
                memory_bytes: u64::from(req.memory_mb) << 20,
                cpu_millis: self.cfg.cpu_millis,
                pids: self.cfg.pids,
                disk_bytes: self.cfg.disk_bytes,
                ..Limits::default()
            },
            env: self.cfg.env.clone(),
            hostname: "sandbox".into(),
        };
        let mut sandbox = tokio::task::spawn_blocking(move || Sandbox::create(&spec))
            .await
            .map_err(|e| ManagerError::Internal(e.to_string()))??;
        let sock = sandbox
            .take_agent_socket()
            .ok_or_else(|| ManagerError::Internal("agent socket missing".into()))?;
        let client = match AgentClient::connect(sock).await {
            Ok((client, _hello)) => client,
            Err(e) => {
                destroy_blocking(sandbox).await;
                return Err(ManagerError::Agent(format!("{e:#}")));
            }
        };
        for (k, v) in &req.env {
            let r = client
                .call("envSet", serde_json::json!({"key": k, "value": v}))
                .await;
            if let Err(e) = r
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.message))
            {
                destroy_blocking(sandbox).await;
                return Err(ManagerError::Internal(format!("setting env {k}: {e}")));
            }
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
            secret_names: req.secret_names.clone(),
        };
        if let Err(e) = self.store.insert_sandbox(&record) {
            destroy_blocking(sandbox).await;
            return Err(e.into());
        }
        let live = Arc::new(Live::new(id.clone(), client, sandbox, now, req.stop_at_ms));
        self.live
            .lock()
            .expect("manager lock")
            .insert(id, live.clone());
        self.watch(live.clone());
        Ok(live)
    }

    /// Ends the sandbox at its deadline, at the maximum lifetime, or when
    /// its agent dies.
    fn watch(self: &Arc<Self>, live: Arc<Live>) {
        let mgr = self.clone();
        let max_end = live.created_at_ms + self.cfg.max_lifetime.as_millis() as i64;
        tokio::spawn(async move {
            let mut ended = live.ended();
            loop {
                let deadline = live.stop_at_ms().map_or(max_end, |s| s.min(max_end));
                let wait = Duration::from_millis((deadline - now_ms()).max(0) as u64);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {
                        mgr.kill(&live.id, EndReason::TimedOut).await;
                        break;
                    }
                    _ = live.deadline_changed.notified() => continue,
                    _ = live.client.closed() => {
                        mgr.kill(&live.id, EndReason::AgentExited).await;
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
        live.ended.send_replace(Some(reason));
        let jail = live.jail.lock().expect("live lock").take();
        if let Some(sandbox) = jail {
            destroy_blocking(sandbox).await;
        }
        if let Err(e) = self.store.end_sandbox(id, now_ms(), reason.as_str()) {
            tracing::warn!(sandbox = id, "recording the end: {e}");
        }
        tracing::info!(sandbox = id, reason = reason.as_str(), "sandbox ended");
        true
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
        Ok(granted)
    }

    /// Ends every live sandbox (daemon shutdown).
    pub async fn shutdown(&self) {
        let ids: Vec<String> = self
            .live
            .lock()
            .expect("manager lock")
            .keys()
            .cloned()
            .collect();
        for id in ids {
            self.kill(&id, EndReason::Shutdown).await;
        }
    }
}

async fn destroy_blocking(sandbox: Sandbox) {
    let id = sandbox.id().to_string();
    match tokio::task::spawn_blocking(move || sandbox.destroy()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(sandbox = id, "destroying: {e}"),
        Err(e) => tracing::warn!(sandbox = id, "destroying: {e}"),
    }
}
