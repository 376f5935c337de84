//! Running `runsc`, gVisor's OCI runtime.
//!
//! Each sandbox is one `runsc run` process, a child of its owner, started
//! inside the sandbox's network namespace and in a private mount namespace
//! of its own (see [`Launch`] for why each).

use crate::Error;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The oldest release airlock runs on (Debian 13's is 20240729).
const MIN_RELEASE: u32 = 20230101;

/// Where Debian installs it (`apt install runsc`).
const DEFAULT_EXE: &str = "/usr/bin/runsc";

/// The `runsc` binary and the directory where it keeps container state.
#[derive(Debug, Clone)]
pub struct Runsc {
    pub exe: PathBuf,
    /// The release date in its version (`0.0~20240729.0`,
    /// `release-20240729.0`).
    pub release: u32,
    /// `runsc --root`: airlock's own, so `runsc list` there shows only
    /// airlock's sandboxes and the reaper knows what to delete.
    pub root: PathBuf,
    /// Host mount points (with everything under them) that runsc's mount
    /// namespace detaches: the daemon's volume storage, whose mounts a
    /// copied namespace would otherwise keep busy for the sandbox's life.
    pub hidden_mounts: Vec<PathBuf>,
}

impl Runsc {
    /// Finds `runsc` (`$AIRLOCK_RUNSC`, then `/usr/bin/runsc`, then `PATH`)
    /// and checks that it runs.
    pub fn locate(root: PathBuf) -> Result<Self, Error> {
        // An explicit AIRLOCK_RUNSC is used or refused, never searched past.
        let exe = match std::env::var_os("AIRLOCK_RUNSC") {
            Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
            None => Some(PathBuf::from(DEFAULT_EXE))
                .filter(|p| p.is_file())
                .or_else(|| find_in_path("runsc")),
        }
        .ok_or(Error::RunscMissing)?;
        let out = Command::new(&exe)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io("running runsc --version", e))?;
        if !out.status.success() {
            return Err(Error::RunscBroken(format!(
                "{} --version failed: {}",
                exe.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let release = release_date(&String::from_utf8_lossy(&out.stdout));
        if release < MIN_RELEASE {
            return Err(Error::RunscBroken(format!(
                "{} is release {release}; airlock needs {MIN_RELEASE} or later (earlier ones \
                 refuse the statx flags of Debian's coreutils, so `ls` fails in every \
                 sandbox): install a newer one with scripts/install-runsc.sh",
                exe.display()
            )));
        }
        Ok(Self {
            exe,
            root,
            release,
            hidden_mounts: Vec::new(),
        })
    }

    /// `--overlay2` over the root only, its file store in `dir`. Not over
    /// every mount (`all`): a volume's writes must reach the volume, and
    /// /tmp is a plain directory of the same disk-limited tmpfs instead.
    pub fn overlay_flag(&self, dir: &Path) -> String {
        format!("--overlay2=root:dir={}", dir.display())
    }

    /// The version line `runsc --version` prints first.
    pub fn version(&self) -> String {
        Command::new(&self.exe)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(str::to_string))
            .unwrap_or_default()
    }

    /// `runsc --root R <args>`. With `AIRLOCK_RUNSC_DEBUG_LOG=DIR` in the
    /// environment, runsc also writes its debug logs into DIR (for
    /// operators chasing a failure; they grow without bound).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--root").arg(&self.root);
        if let Some(dir) = std::env::var_os("AIRLOCK_RUNSC_DEBUG_LOG") {
            let mut flag = std::ffi::OsString::from("--debug-log=");
            flag.push(dir);
            flag.push("/");
            cmd.arg("--debug").arg(flag);
        }
        cmd
    }

    /// `runsc delete --force ID`: stops what runs and removes runsc's state
    /// and the cgroups runsc made. Errors are the caller's to ignore: the
    /// container may never have been created.
    pub fn delete(&self, id: &str) -> std::io::Result<std::process::Output> {
        self.command()
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .output()
    }

    /// Ids of the containers runsc keeps anything for under our root:
    /// `<id>.state`, `<id>_sandbox:<id>.lock` and `runsc-<id>.sock`.
    pub fn list_ids(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| id_of_entry(&e.file_name().into_string().ok()?))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Removes what runsc keeps of container `id` once it is deleted (its
    /// lock file and socket outlive `runsc delete`).
    pub fn forget(&self, id: &str) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if name.to_str().and_then(id_of_entry).as_deref() == Some(id) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The container id an entry of runsc's root belongs to:
/// `<id>_sandbox:<id>.state`, `<id>_sandbox:<id>.lock` (20240729),
/// `<id>.state` (older releases) or `runsc-<id>.sock`.
fn id_of_entry(name: &str) -> Option<String> {
    let id = match name
        .strip_prefix("runsc-")
        .and_then(|n| n.strip_suffix(".sock"))
    {
        Some(id) => id,
        None => {
            let stem = name
                .strip_suffix(".state")
                .or_else(|| name.strip_suffix(".lock"))?;
            stem.split_once("_sandbox:").map_or(stem, |(id, _)| id)
        }
    };
    (!id.is_empty()).then(|| id.to_string())
}

/// The first run of eight digits in `runsc --version`'s output (0 if none).
fn release_date(version: &str) -> u32 {
    let bytes = version.as_bytes();
    (0..bytes.len().saturating_sub(7))
        .find(|&i| bytes[i..i + 8].iter().all(u8::is_ascii_digit))
        .and_then(|i| version[i..i + 8].parse().ok())
        .unwrap_or(0)
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// How one `runsc run` is started. Between fork and exec the child:
///
/// 1. enters the sandbox's network namespace, so runsc's `--network=sandbox`
///    takes over the TUN interface there (and nothing of the host's);
/// 2. makes a private mount namespace, in which it
/// 3. mounts an empty tmpfs over `/proc/sys/net/core`: runsc 20221219 (Debian
///    12's) decides "this is the host's network namespace, refuse" by
///    whether `/proc/sys/net/core/rmem_default` exists, which on kernels
///    since 6.x it does in every namespace. Hiding it from runsc alone
///    (the sandbox's own /proc is gVisor's) is the narrowest fix;
/// 4. mounts the sandbox's writable layer, a tmpfs of the disk limit, where
///    runsc's overlay keeps its file store (`--overlay2=root:DIR`) and
///    where the sandbox's /tmp is a directory (mode 1777, bound rw by the
///    bundle): the disk limit is the kernel's ENOSPC on that tmpfs, for
///    the root's writes and /tmp together, and the mount lives only in
///    this namespace, so it vanishes with the sandbox's last process and
///    can never be left mounted on the host.
/// 5. binds the sandbox's volumes (host mounts under the daemon's
///    storage directory) to private paths in its state directory, then
///    detaches the storage directory ([`Runsc::hidden_mounts`]): runsc's
///    processes keep only this sandbox's volumes, never a copy of another
///    sandbox's (which would keep its loop device busy);
/// 6. mounts the bundle's root: an overlayfs of the host kernel whose
///    lower layer is the image and whose upper layer is a directory of
///    that tmpfs. runsc's gofer creates mount points in the root it is
///    given (`/.airlock/agent`, a volume's path), which must not touch the
///    shared image: the host kernel keeps the image unwritten even by a
///    compromised Sentry or gofer, and such writes cost the sandbox's own
///    disk limit. The sandbox's own writes go to runsc's overlay above it.
/// 7. binds the agent binary read-only where the bundle takes it from: a
///    read-only spec mount is enforced by the Sentry alone, so it is the
///    host kernel that keeps it unwritten.
pub struct Launch {
    netns: i32,
    core: CString,
    rw: CString,
    rw_opts: CString,
    tmp: CString,
    lower: CString,
    /// The root when it is a volume (`persistent`).
    image: CString,
    persistent: bool,
    upper: CString,
    work: CString,
    overlay_opts: CString,
    volumes: Vec<(CString, CString)>,
    hidden: Vec<CString>,
    agent: CString,
    agent_ro: CString,
}

/// The host paths [`Launch`] mounts.
pub struct LaunchPaths<'a> {
    pub image: &'a Path,
    /// Where the root's host overlay is mounted (an empty directory).
    pub lower: &'a Path,
    /// `image` is a writable volume to bind as the root itself.
    pub persistent_root: bool,
    /// The writable layer's tmpfs (an empty directory).
    pub rw: &'a Path,
    /// The sandbox's /tmp, a directory made inside `rw`.
    pub tmp: &'a Path,
    pub agent: &'a Path,
    /// Where the agent is bound read-only (an empty file).
    pub agent_ro: &'a Path,
    /// Volumes: (host mount, private directory to bind it to).
    pub volumes: &'a [(PathBuf, PathBuf)],
    /// Host mount points to detach ([`Runsc::hidden_mounts`]).
    pub hidden: &'a [PathBuf],
}

impl Launch {
    pub fn new(
        netns: BorrowedFd<'_>,
        paths: &LaunchPaths<'_>,
        disk_bytes: u64,
    ) -> Result<Self, Error> {
        let c = |s: &str| {
            CString::new(s).map_err(|_| Error::io("path", std::io::Error::other("contains NUL")))
        };
        let p = |p: &Path| c(&p.to_string_lossy());
        Ok(Self {
            netns: netns.as_raw_fd(),
            core: c("/proc/sys/net/core")?,
            rw: p(paths.rw)?,
            rw_opts: c(&format!("size={disk_bytes},mode=0700"))?,
            tmp: p(paths.tmp)?,
            lower: p(paths.lower)?,
            image: p(paths.image)?,
            persistent: paths.persistent_root,
            upper: p(&paths.rw.join("upper"))?,
            work: p(&paths.rw.join("work"))?,
            overlay_opts: c(&format!(
                "lowerdir={},upperdir={},workdir={}",
                paths.image.display(),
                paths.rw.join("upper").display(),
                paths.rw.join("work").display()
            ))?,
            volumes: paths
                .volumes
                .iter()
                .map(|(src, dst)| Ok((p(src)?, p(dst)?)))
                .collect::<Result<_, Error>>()?,
            hidden: paths
                .hidden
                .iter()
                .map(|h| p(h))
                .collect::<Result<_, _>>()?,
            agent: p(paths.agent)?,
            agent_ro: p(paths.agent_ro)?,
        })
    }

    /// Arranges for [`Launch`]'s steps to run in `cmd`'s child.
    pub fn apply(self, cmd: &mut Command) {
        // SAFETY: the closure makes only raw syscalls (setns, unshare,
        // mount) over data prepared before fork, which are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || self.in_child());
        }
    }

    fn in_child(&self) -> std::io::Result<()> {
        let check = |r: libc::c_int| {
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        let tmpfs = c"tmpfs";
        // SAFETY: raw syscalls on a valid fd and NUL-terminated strings
        // that outlive the calls; nothing is allocated.
        unsafe {
            check(libc::setns(self.netns, libc::CLONE_NEWNET))?;
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                tmpfs.as_ptr(),
                self.core.as_ptr(),
                tmpfs.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"size=4k,mode=0555".as_ptr().cast(),
            ))?;
            check(libc::mount(
                tmpfs.as_ptr(),
                self.rw.as_ptr(),
                tmpfs.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                self.rw_opts.as_ptr().cast(),
            ))?;
            check(libc::mkdir(self.tmp.as_ptr(), 0o1777))?;
            // mkdir applies the umask; /tmp must be world-writable and sticky.
            check(libc::chmod(self.tmp.as_ptr(), 0o1777))?;
            if self.persistent {
                // A volume as the root: bound as it is, writes persist.
                bind(&self.image, &self.lower, 0)?;
            } else {
                check(libc::mkdir(self.upper.as_ptr(), 0o755))?;
                check(libc::mkdir(self.work.as_ptr(), 0o700))?;
                check(libc::mount(
                    c"overlay".as_ptr(),
                    self.lower.as_ptr(),
                    c"overlay".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    self.overlay_opts.as_ptr().cast(),
                ))?;
            }
            bind(&self.agent, &self.agent_ro, libc::MS_RDONLY)?;
            // Last: the root's overlay and the binds above hold their own
            // references to what they were made from.
            for (source, target) in &self.volumes {
                check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
            }
            for hidden in &self.hidden {
                // Not mounted (no volume was ever made): nothing to hide.
                if libc::umount2(hidden.as_ptr(), libc::MNT_DETACH) < 0 {
                    let e = std::io::Error::last_os_error();
                    if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Binds `source` at `target`, then remounts the bind `nosuid`, `nodev`
/// and `extra` (a bind takes its flags only on a remount). Raw syscalls on
/// prepared strings: safe between fork and exec.
fn bind(source: &CStr, target: &CStr, extra: libc::c_ulong) -> std::io::Result<()> {
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: NUL-terminated strings that outlive the calls.
    unsafe {
        check(libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            std::ptr::null(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV | extra,
            std::ptr::null(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_runscs_root_name_their_container() {
        assert_eq!(
            id_of_entry("sbx_ord_ab.state").as_deref(),
            Some("sbx_ord_ab")
        );
        assert_eq!(
            id_of_entry("run-1f_sandbox:run-1f.state").as_deref(),
            Some("run-1f")
        );
        assert_eq!(
            id_of_entry("run-1f_sandbox:run-1f.lock").as_deref(),
            Some("run-1f")
        );
        assert_eq!(id_of_entry("runsc-run-1f.sock").as_deref(), Some("run-1f"));
        assert_eq!(id_of_entry("other.txt"), None);
        assert_eq!(id_of_entry(".state"), None);
    }

    #[test]
    fn release_dates_of_both_version_styles() {
        assert_eq!(
            release_date("runsc version 0.0~20221219.0\nspec: 1.0.2-dev"),
            20221219
        );
        assert_eq!(release_date("runsc version release-20240729.0\n"), 20240729);
        assert_eq!(release_date("runsc version unknown"), 0);
    }
}
