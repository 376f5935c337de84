//! The OCI bundle `runsc` starts a sandbox from: `config.json` in the
//! sandbox's state dir.
//!
//! Only the part of the OCI runtime spec airlock sets is typed here, as
//! plain serde structs: the `oci-spec` crate models all of it behind
//! builders, which buys nothing for one fixed document of fifteen fields.

use jail::Limits;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where the agent binary appears inside the sandbox (bind-mounted
/// read-only from the host; not in the image).
pub const AGENT_PATH: &str = "/.airlock/agent";

/// Capabilities sandbox root keeps: the same set as on the native backend
/// (`jail::caps::KEPT`), so programs behave alike. Under gVisor they are
/// the Sentry's capabilities, never the host's.
fn capabilities() -> Vec<String> {
    jail::caps::KEPT
        .iter()
        .map(|(_, name)| (*name).to_string())
        .collect()
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    oci_version: &'static str,
    process: Process,
    root: Root,
    hostname: String,
    mounts: Vec<Mount>,
    linux: Linux,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Process {
    terminal: bool,
    user: User,
    args: Vec<String>,
    env: Vec<String>,
    cwd: String,
    capabilities: Capabilities,
    rlimits: Vec<Rlimit>,
    no_new_privileges: bool,
}

#[derive(Debug, Serialize)]
struct User {
    uid: u32,
    gid: u32,
}

#[derive(Debug, Serialize)]
struct Capabilities {
    bounding: Vec<String>,
    effective: Vec<String>,
    inheritable: Vec<String>,
    permitted: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Rlimit {
    #[serde(rename = "type")]
    kind: &'static str,
    hard: u64,
    soft: u64,
}

#[derive(Debug, Serialize)]
struct Root {
    path: PathBuf,
    readonly: bool,
}

#[derive(Debug, Serialize)]
struct Mount {
    destination: String,
    #[serde(rename = "type")]
    kind: &'static str,
    source: PathBuf,
    options: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Linux {
    cgroups_path: String,
    namespaces: Vec<Namespace>,
}

#[derive(Debug, Serialize)]
struct Namespace {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'static str>,
}

/// What the bundle is made from.
pub struct BundleSpec<'a> {
    /// The image, as runsc's private mount namespace shows it: under a
    /// host overlay that takes the gofer's mount points (see
    /// `runsc::Launch`).
    pub root: &'a Path,
    /// The agent binary, as runsc's mount namespace shows it: read-only.
    pub agent_exe: &'a Path,
    /// The sandbox's /tmp: a directory of the disk-limited writable layer.
    pub tmp: &'a Path,
    /// Volumes: host directories bound read-write, outside the overlay.
    pub binds: &'a [jail::Bind],
    /// A file holding the sandbox's `/etc/resolv.conf`, if it has a network.
    pub resolv_conf: Option<&'a Path>,
    pub env: &'a [(String, String)],
    pub hostname: &'a str,
    pub limits: &'a Limits,
    /// The sandbox's cgroup, relative to the hierarchy's root (which runsc
    /// finds itself); airlock has made it and set its limits already.
    pub cgroups_path: String,
}

impl Config {
    pub fn new(spec: &BundleSpec<'_>) -> Self {
        let caps = capabilities();
        let ro_bind = vec!["bind", "ro", "nosuid", "nodev"];
        let mut mounts = vec![
            Mount {
                destination: "/proc".into(),
                kind: "proc",
                source: "proc".into(),
                options: vec![],
            },
            Mount {
                destination: "/dev".into(),
                kind: "tmpfs",
                source: "tmpfs".into(),
                options: vec!["nosuid", "strictatime", "mode=755"],
            },
            Mount {
                destination: "/dev/pts".into(),
                kind: "devpts",
                source: "devpts".into(),
                options: vec![
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                ],
            },
            Mount {
                destination: "/dev/shm".into(),
                kind: "tmpfs",
                source: "shm".into(),
                options: vec!["nosuid", "nodev", "mode=1777"],
            },
            Mount {
                destination: "/sys".into(),
                kind: "sysfs",
                source: "sysfs".into(),
                options: vec!["nosuid", "noexec", "nodev", "ro"],
            },
            // Declared, so that runsc does not put a tmpfs of its own (in
            // the Sentry's memory, outside the disk limit) there: a
            // directory of the same disk-limited tmpfs as the overlay's
            // file store.
            Mount {
                destination: "/tmp".into(),
                kind: "bind",
                source: spec.tmp.to_path_buf(),
                options: vec!["bind", "rw", "nosuid", "nodev"],
            },
            Mount {
                destination: AGENT_PATH.into(),
                kind: "bind",
                source: spec.agent_exe.to_path_buf(),
                options: ro_bind.clone(),
            },
        ];
        // After /tmp: a volume may be mounted under it. runsc resolves
        // each destination inside the sandbox's own root.
        mounts.extend(spec.binds.iter().map(|b| Mount {
            destination: b.target.clone(),
            kind: "bind",
            source: b.source.clone(),
            options: vec!["bind", "rw", "nosuid", "nodev"],
        }));
        if let Some(resolv) = spec.resolv_conf {
            mounts.push(Mount {
                destination: "/etc/resolv.conf".into(),
                kind: "bind",
                source: resolv.to_path_buf(),
                options: ro_bind,
            });
        }
        Self {
            oci_version: "1.0.2",
            process: Process {
                terminal: false,
                user: User { uid: 0, gid: 0 },
                // The control socket is the container's stdin: runsc hands
                // only stdio descriptors into a sandbox.
                args: vec![AGENT_PATH.into(), "--fd=0".into()],
                env: spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                cwd: "/".into(),
                capabilities: Capabilities {
                    bounding: caps.clone(),
                    effective: caps.clone(),
                    inheritable: vec![],
                    permitted: caps,
                },
                rlimits: vec![Rlimit {
                    kind: "RLIMIT_NOFILE",
                    hard: spec.limits.nofile,
                    soft: spec.limits.nofile,
                }],
                no_new_privileges: true,
            },
            root: Root {
                path: spec.root.to_path_buf(),
                // Writable as far as runsc knows, so that it puts its
                // overlay (`--overlay2`) over it: the sandbox's writes land
                // in that overlay, the gofer's mount points in the host
                // overlay below it, never in the image.
                readonly: false,
            },
            hostname: spec.hostname.to_string(),
            mounts,
            linux: Linux {
                cgroups_path: spec.cgroups_path.clone(),
                namespaces: ["pid", "ipc", "uts", "mount"]
                    .into_iter()
                    .map(|kind| Namespace { kind, path: None })
                    .chain(std::iter::once(Namespace {
                        kind: "network",
                        // runsc is started inside the sandbox's network
                        // namespace (see `runsc.rs`): "this one".
                        path: Some("/proc/self/ns/net"),
                    }))
                    .collect(),
            },
        }
    }

    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("config.json"), json)
    }
}
