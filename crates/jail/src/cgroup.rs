//! Per-sandbox cgroups, for both hierarchies: v1 (one directory per
//! controller, as on the development machines) and v2 (one unified
//! directory, as on most production hosts). Detected once per process.
//!
//! Limits are the kernel's: memory (OOM kills inside the sandbox), CPU quota
//! and pids. Counters read here are what metering bills.

use crate::{JailError, Limits};
use std::ffi::CString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ROOT: &str = "/sys/fs/cgroup";
/// Parent of every sandbox cgroup, under each hierarchy's root.
pub const PARENT: &str = "airlock";
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

impl CgroupVersion {
    /// A pure v2 host has `cgroup.controllers` at the root.
    pub fn detect() -> Self {
        if Path::new(ROOT).join("cgroup.controllers").exists() {
            Self::V2
        } else {
            Self::V1
        }
    }
}

/// What a sandbox has used so far, from the kernel's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_user_usec: u64,
    pub cpu_system_usec: u64,
    pub memory_current: u64,
    pub memory_peak: u64,
    pub pids_current: u64,
    pub oom_kills: u64,
}

impl Usage {
    pub fn cpu_usec(&self) -> u64 {
        self.cpu_user_usec + self.cpu_system_usec
    }
}

#[derive(Debug, Clone)]
pub struct Cgroup {
    version: CgroupVersion,
    /// v2: one directory. v1: memory, cpu, cpuacct, pids (deduplicated when
    /// controllers are co-mounted).
    dirs: Vec<PathBuf>,
}

/// v1 controllers a sandbox is placed in.
const V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];
/// The v1 controller that can stop a sandbox's processes for a moment
/// (a point-in-time copy of its root); used where it is mounted.
const V1_FREEZER: &str = "freezer";

/// The v1 controllers of this host a sandbox is placed in: the required
/// ones, and the freezer where the host mounts it.
fn v1_controllers() -> impl Iterator<Item = &'static str> {
    let freezer = Path::new(ROOT)
        .join(V1_FREEZER)
        .join("cgroup.procs")
        .exists();
    V1_CONTROLLERS
        .into_iter()
        .chain(freezer.then_some(V1_FREEZER))
}

impl Cgroup {
    /// Handle on the cgroup named `name`, whether or not it exists.
    pub fn named(name: &str) -> Self {
        let version = CgroupVersion::detect();
        let dirs = match version {
            CgroupVersion::V2 => vec![Path::new(ROOT).join(PARENT).join(name)],
            CgroupVersion::V1 => {
                let mut dirs: Vec<PathBuf> = Vec::new();
                for ctrl in v1_controllers() {
                    let base = Path::new(ROOT).join(ctrl);
                    let base = fs::canonicalize(&base).unwrap_or(base);
                    let dir = base.join(PARENT).join(name);
                    if !dirs.contains(&dir) {
                        dirs.push(dir);
                    }
                }
                dirs
            }
        };
        Self { version, dirs }
    }

    /// Creates the cgroup and applies `limits`.
    pub fn create(name: &str, limits: &Limits) -> Result<Self, JailError> {
        let cg = Self::named(name);
        if cg.version == CgroupVersion::V2 {
            enable_v2_controllers()?;
        }
        for dir in &cg.dirs {
            fs::create_dir_all(dir).map_err(|e| JailError::path("creating cgroup", dir, e))?;
        }
        if let Err(e) = cg.apply(limits) {
            let _ = cg.remove(Duration::from_millis(100));
            return Err(e);
        }
        Ok(cg)
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    fn apply(&self, limits: &Limits) -> Result<(), JailError> {
        let quota = limits.cpu_millis * CPU_PERIOD_US / 1000;
        match self.version {
            CgroupVersion::V2 => {
                self.write("memory.max", &limits.memory_bytes.to_string())?;
                // No swap: memory.max must be the real ceiling. Absent
                // without swap accounting, which is the same thing.
                self.write_optional("memory.swap.max", "0")?;
                self.write("cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
                self.write("pids.max", &limits.pids.to_string())?;
            }
            CgroupVersion::V1 => {
                self.write("memory.limit_in_bytes", &limits.memory_bytes.to_string())?;
                self.write_optional(
                    "memory.memsw.limit_in_bytes",
                    &limits.memory_bytes.to_string(),
                )?;
                self.write_optional("memory.swappiness", "0")?;
                self.write("cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                self.write("cpu.cfs_quota_us", &quota.to_string())?;
                self.write("pids.max", &limits.pids.to_string())?;
            }
        }
        Ok(())
    }

    /// Changes the memory limit of a live cgroup (e.g. when a warm sandbox
    /// is handed out with the caller's settings).
    pub fn set_memory_limit(&self, bytes: u64) -> Result<(), JailError> {
        match self.version {
            CgroupVersion::V2 => self.write("memory.max", &bytes.to_string()),
            CgroupVersion::V1 => {
                // v1 refuses a memory limit above memsw, and memsw below the
                // memory limit: order the writes by direction.
                let current: u64 = self
                    .read("memory.limit_in_bytes")
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
                if bytes > current {
                    self.write_optional("memory.memsw.limit_in_bytes", &bytes.to_string())?;
                    self.write("memory.limit_in_bytes", &bytes.to_string())
                } else {
                    self.write("memory.limit_in_bytes", &bytes.to_string())?;
                    self.write_optional("memory.memsw.limit_in_bytes", &bytes.to_string())
                }
            }
        }
    }

    /// `cgroup.procs` files a process writes "0" to, to move itself in.
    pub fn procs_files(&self) -> Vec<CString> {
        self.dirs
            .iter()
            .map(|d| {
                CString::new(d.join("cgroup.procs").into_os_string().into_encoded_bytes())
                    .expect("cgroup paths contain no NUL")
            })
            .collect()
    }

    pub fn exists(&self) -> bool {
        self.dirs.iter().any(|d| d.exists())
    }

    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        match self.version {
            CgroupVersion::V2 => {
                let stat = self.read("cpu.stat").unwrap_or_default();
                u.cpu_user_usec = keyed(&stat, "user_usec");
                u.cpu_system_usec = keyed(&stat, "system_usec");
                u.memory_current = self.read_u64("memory.current");
                u.memory_peak = self.read_u64("memory.peak").max(u.memory_current);
                u.pids_current = self.read_u64("pids.current");
                u.oom_kills = keyed(&self.read("memory.events").unwrap_or_default(), "oom_kill");
            }
            CgroupVersion::V1 => {
                u.cpu_user_usec = self.read_u64("cpuacct.usage_user") / 1000;
                u.cpu_system_usec = self.read_u64("cpuacct.usage_sys") / 1000;
                u.memory_current = self.read_u64("memory.usage_in_bytes");
                u.memory_peak = self.read_u64("memory.max_usage_in_bytes");
                u.pids_current = self.read_u64("pids.current");
                u.oom_kills = keyed(
                    &self.read("memory.oom_control").unwrap_or_default(),
                    "oom_kill",
                );
            }
        }
        u
    }

    /// Pids in the cgroup (from the first hierarchy that lists any).
    pub fn pids(&self) -> Vec<libc::pid_t> {
        let mut all = Vec::new();
        for dir in &self.dirs {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                all.extend(
                    text.lines()
                        .filter_map(|l| l.trim().parse::<libc::pid_t>().ok()),
                );
            }
        }
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Whether [`Cgroup::freeze`] can work here: always on v2; on v1 where
    /// the freezer controller is mounted.
    pub fn can_freeze(&self) -> bool {
        match self.version {
            CgroupVersion::V2 => true,
            CgroupVersion::V1 => self.file("freezer.state").is_some(),
        }
    }

    /// Stops every process in the cgroup (they cannot run until
    /// [`Cgroup::thaw`]), waiting up to `timeout` until all are stopped.
    /// On failure the cgroup is thawed again.
    pub fn freeze(&self, timeout: Duration) -> Result<(), JailError> {
        if !self.can_freeze() {
            return Err(JailError::Cgroup(
                "the freezer controller is not mounted (cgroup v1)".into(),
            ));
        }
        let (file, value) = match self.version {
            CgroupVersion::V2 => ("cgroup.freeze", "1"),
            CgroupVersion::V1 => ("freezer.state", "FROZEN"),
        };
        self.write(file, value)?;
        let deadline = Instant::now() + timeout;
        loop {
            let frozen = match self.version {
                CgroupVersion::V2 => {
                    keyed(&self.read("cgroup.events").unwrap_or_default(), "frozen") == 1
                }
                CgroupVersion::V1 => {
                    self.read("freezer.state").as_deref().map(str::trim) == Some("FROZEN")
                }
            };
            if frozen {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.thaw();
                return Err(JailError::Cgroup(format!(
                    "its processes did not all stop within {timeout:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Lets the processes of a frozen cgroup run again (a no-op on one
    /// that is not frozen).
    pub fn thaw(&self) -> Result<(), JailError> {
        match self.version {
            CgroupVersion::V2 => self.write_optional("cgroup.freeze", "0"),
            CgroupVersion::V1 => self.write_optional("freezer.state", "THAWED"),
        }
    }

    /// Kills every process in the cgroup.
    pub fn kill_all(&self) {
        // A frozen v1 task does not die of SIGKILL until thawed: a daemon
        // killed mid-snapshot would otherwise leave it unkillable.
        let _ = self.thaw();
        if self.version == CgroupVersion::V2 && self.write("cgroup.kill", "1").is_ok() {
            return;
        }
        for pid in self.pids() {
            // SAFETY: sending a signal; a stale pid at worst gets ESRCH. The
            // pids come from this sandbox's cgroup, which only sandbox
            // processes enter.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }

    /// Kills what is left and removes the cgroup directories, waiting up to
    /// `patience` for dying processes to leave.
    pub fn remove(&self, patience: Duration) -> Result<(), JailError> {
        let deadline = Instant::now() + patience;
        for dir in &self.dirs {
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        self.kill_all();
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err(e) => return Err(JailError::path("removing cgroup", dir, e)),
                }
            }
        }
        Ok(())
    }

    fn file(&self, name: &str) -> Option<PathBuf> {
        self.dirs.iter().map(|d| d.join(name)).find(|p| p.exists())
    }

    fn write(&self, name: &str, value: &str) -> Result<(), JailError> {
        let path = self.file(name).ok_or_else(|| {
            JailError::Cgroup(format!("{name} is missing: is its controller enabled?"))
        })?;
        fs::write(&path, value).map_err(|e| JailError::path("writing", path, e))
    }

    fn write_optional(&self, name: &str, value: &str) -> Result<(), JailError> {
        match self.file(name) {
            Some(_) => self.write(name, value),
            None => Ok(()),
        }
    }

    fn read(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.file(name)?).ok()
    }

    fn read_u64(&self, name: &str) -> u64 {
        self.read(name)
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// The value of `key` in a "key value" per line file.
fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// v2 only: controllers must be enabled in every ancestor's
/// `cgroup.subtree_control` before a child cgroup can use them.
fn enable_v2_controllers() -> Result<(), JailError> {
    let parent = Path::new(ROOT).join(PARENT);
    fs::create_dir_all(&parent).map_err(|e| JailError::path("creating cgroup", &parent, e))?;
    for dir in [Path::new(ROOT), parent.as_path()] {
        let ctl = dir.join("cgroup.subtree_control");
        let current = fs::read_to_string(&ctl).unwrap_or_default();
        for c in ["memory", "cpu", "pids"] {
            if !current.split_whitespace().any(|x| x == c) {
                fs::write(&ctl, format!("+{c}")).map_err(|e| {
                    JailError::Cgroup(format!(
                        "enabling the {c} controller in {}: {e}",
                        ctl.display()
                    ))
                })?;
            }
        }
    }
    Ok(())
}

/// Names of sandbox cgroups that exist under the airlock parent.
pub fn list_names() -> Vec<String> {
    let parents: Vec<PathBuf> = match CgroupVersion::detect() {
        CgroupVersion::V2 => vec![Path::new(ROOT).join(PARENT)],
        CgroupVersion::V1 => v1_controllers()
            .map(|c| Path::new(ROOT).join(c).join(PARENT))
            .collect(),
    };
    let mut names = Vec::new();
    for p in parents {
        if let Ok(rd) = fs::read_dir(p) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    names.push(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_parses_stat_files() {
        let text = "usage_usec 10\nuser_usec 7\nsystem_usec 3\n";
        assert_eq!(keyed(text, "user_usec"), 7);
        assert_eq!(keyed(text, "missing"), 0);
        assert_eq!(
            keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", "oom_kill"),
            2
        );
    }
}
