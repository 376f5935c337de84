//! The default image: Debian bookworm minbase from mmdebstrap with python3,
//! nodejs, git and curl, plus deno from its npm package.

use super::Recipe;
use crate::fsutil::{empty_dir, ensure_dir, install_file, replace_file};
use crate::run::{run, Stdout, MMDEBSTRAP, NPM, TAR};
use crate::{ImageError, Progress};
use serde::Deserialize;
use std::fs;
use std::path::Path;

pub(super) struct Debian {
    suite: &'static str,
    packages: &'static [&'static str],
}

pub(super) const DEFAULT: Debian = Debian {
    suite: "bookworm",
    // python3-requests: the HTTP client most Python code uses (and the one
    // users check secrets and CA trust with).
    packages: &[
        "python3",
        "python3-requests",
        "nodejs",
        "ca-certificates",
        "curl",
        "git",
    ],
};

/// The npm package that ships the deno binary for x86_64 glibc Linux.
const DENO_NPM_PACKAGE: &str = "@deno/linux-x64-glibc";

/// Documentation, manuals and translations are dead weight in a sandbox;
/// dpkg skips them at unpack time (copyright files stay, for licences).
const DPKG_PATH_FILTERS: &[&str] = &[
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
];

const HOSTNAME: &str = "sandbox";

impl Recipe for Debian {
    /// 1: first release. 2: `sudo` shim. 3: python3-requests.
    fn version(&self) -> u32 {
        3
    }

    fn build(
        &self,
        rootfs: &Path,
        work: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<String, ImageError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        if uid != 0 {
            // mmdebstrap's unshare mode would work unprivileged but leaves
            // files owned by subordinate uids; the jail expects uid 0.
            return Err(ImageError::NotRoot { uid });
        }

        // deno first: it is quick, and a missing npm should fail before the
        // long part rather than after it.
        progress(Progress::Stage(&format!(
            "fetch deno (npm pack {DENO_NPM_PACKAGE})"
        )));
        let deno = fetch_deno(work, progress)?;

        let stage = format!(
            "mmdebstrap {} minbase ({})",
            self.suite,
            self.packages.join(" ")
        );
        progress(Progress::Stage(&stage));
        let mut cmd = MMDEBSTRAP.command();
        cmd.arg("--mode=root")
            .arg("--variant=minbase")
            .arg("--format=directory")
            .arg(format!("--include={}", self.packages.join(",")));
        for filter in DPKG_PATH_FILTERS {
            cmd.arg(format!("--dpkgopt={filter}"));
        }
        cmd.arg(self.suite).arg(rootfs);
        run(MMDEBSTRAP, &mut cmd, Stdout::Stream, progress)?;

        progress(Progress::Stage("install deno to /usr/local/bin/deno"));
        let bin = rootfs.join("usr/local/bin");
        fs::create_dir_all(&bin).map_err(ImageError::io("create directory", &bin))?;
        install_file(&deno.binary, &bin.join("deno"), 0o755)?;

        progress(Progress::Stage(
            "configure (/home/app, hostname, hosts, resolv.conf, apt cleanup)",
        ));
        configure(rootfs)?;

        let mut parts = vec![format!("debian {} minbase", self.suite)];
        let versions = dpkg_versions(rootfs, &["python3", "nodejs", "git", "curl"])?;
        parts.extend(versions.into_iter().map(|(pkg, v)| format!("{pkg} {v}")));
        parts.push(format!("deno {}", deno.version));
        Ok(parts.join(", "))
    }
}

struct Deno {
    binary: std::path::PathBuf,
    version: String,
}

/// One entry of `npm pack --json`.
#[derive(Deserialize)]
struct Packed {
    filename: String,
    version: String,
}

/// Downloads the deno npm package with the host's npm (which trusts the
/// host's CA store, unlike anything inside the new rootfs) and unpacks the
/// binary from it.
fn fetch_deno(work: &Path, progress: &mut dyn FnMut(Progress)) -> Result<Deno, ImageError> {
    let mut cmd = NPM.command();
    // Run in `work` so a package.json in the caller's directory is not involved.
    cmd.current_dir(work)
        .args(["pack", "--json", "--pack-destination"])
        .arg(work)
        .arg(DENO_NPM_PACKAGE);
    let json = run(NPM, &mut cmd, Stdout::Capture, progress)?;
    let packed: Vec<Packed> =
        serde_json::from_str(&json).map_err(|e| ImageError::UnexpectedOutput {
            command: format!("npm pack --json {DENO_NPM_PACKAGE}"),
            detail: format!("{e}; output was {json:?}"),
        })?;
    let Some(packed) = packed.into_iter().next() else {
        return Err(ImageError::UnexpectedOutput {
            command: format!("npm pack --json {DENO_NPM_PACKAGE}"),
            detail: "no package in its output".into(),
        });
    };
    // npm names the file itself; refuse anything that is not a plain name.
    if packed.filename.contains('/') || packed.filename.starts_with('.') {
        return Err(ImageError::UnexpectedOutput {
            command: format!("npm pack --json {DENO_NPM_PACKAGE}"),
            detail: format!("odd tarball name {:?}", packed.filename),
        });
    }

    let tarball = work.join(&packed.filename);
    let mut cmd = TAR.command();
    cmd.arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(work)
        .arg("package/deno");
    run(TAR, &mut cmd, Stdout::Stream, progress)?;
    let binary = work.join("package/deno");
    let meta = fs::symlink_metadata(&binary).map_err(ImageError::io("stat", &binary))?;
    if !meta.is_file() {
        return Err(ImageError::UnexpectedOutput {
            command: format!("tar -xzf {}", tarball.display()),
            detail: "package/deno is not a regular file".into(),
        });
    }
    Ok(Deno {
        binary,
        version: packed.version,
    })
}

const SUDO_SHIM: &str = r#"#!/bin/sh
# airlock: commands in a sandbox already run as its root; run the command.
while [ $# -gt 0 ]; do
  case "$1" in
    -u|-g|-C|-D|-h|-p|-r|-t|-U) shift 2 ;;
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
  esac
done
exec "$@"
"#;

/// The sandbox-facing settings that mmdebstrap leaves as the host's.
fn configure(rootfs: &Path) -> Result<(), ImageError> {
    ensure_dir(&rootfs.join("home/app"), 0o755)?;
    let etc = rootfs.join("etc");
    // mmdebstrap copies the host's hostname and resolv.conf: neither may
    // leak into a sandbox. The network setup writes resolv.conf later; it
    // must exist as a regular file so it can be bind-mounted over.
    replace_file(
        &etc.join("hostname"),
        &mut format!("{HOSTNAME}\n").as_bytes(),
        0o644,
    )?;
    replace_file(&etc.join("resolv.conf"), &mut &b""[..], 0o644)?;
    let hosts = format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    );
    replace_file(&etc.join("hosts"), &mut hosts.as_bytes(), 0o644)?;
    // Sandbox commands already run as (namespaced) root; the Deno SDK's
    // `sh().sudo()` prefixes `sudo`, so a shim that just runs the command.
    let bin = rootfs.join("usr/local/bin");
    fs::create_dir_all(&bin).map_err(ImageError::io("create directory", &bin))?;
    replace_file(
        &rootfs.join("usr/local/bin/sudo"),
        &mut SUDO_SHIM.as_bytes(),
        0o755,
    )?;
    // mmdebstrap already cleans these; doing it again keeps the image small
    // even if its defaults change. apt expects `lock` and `partial` to stay.
    empty_dir(&rootfs.join("var/lib/apt/lists"), &["lock", "partial"])?;
    empty_dir(&rootfs.join("var/cache/apt/archives"), &["lock", "partial"])?;
    empty_dir(&rootfs.join("var/cache/apt"), &["archives"])?;
    Ok(())
}

/// Installed versions of `packages` from the rootfs's dpkg database: no need
/// to run anything from the new rootfs on the host.
fn dpkg_versions(rootfs: &Path, packages: &[&str]) -> Result<Vec<(String, String)>, ImageError> {
    let path = rootfs.join("var/lib/dpkg/status");
    let status = fs::read_to_string(&path).map_err(ImageError::io("read", &path))?;
    let mut found = Vec::new();
    for stanza in status.split("\n\n") {
        let field = |key: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(": ")))
        };
        if let (Some(pkg), Some(version)) = (field("Package"), field("Version")) {
            if packages.contains(&pkg) && field("Status").is_some_and(|s| s.ends_with(" installed"))
            {
                found.push((pkg.to_string(), version.to_string()));
            }
        }
    }
    // Report in the caller's order, whatever dpkg's order is.
    found.sort_by_key(|(pkg, _)| packages.iter().position(|p| p == pkg));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_versions_from_dpkg_status() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("var/lib/dpkg");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("status"),
            "Package: git\nStatus: install ok installed\nVersion: 1:2.39.5\n\n\
             Package: curl\nStatus: deinstall ok config-files\nVersion: 7.88\n\n\
             Package: python3\nStatus: install ok installed\nPriority: optional\nVersion: 3.11.2-1+b1\n",
        )
        .unwrap();
        let v = dpkg_versions(root.path(), &["python3", "nodejs", "git", "curl"]).unwrap();
        assert_eq!(
            v,
            [
                ("python3".into(), "3.11.2-1+b1".into()),
                ("git".into(), "1:2.39.5".into())
            ]
        );
    }

    #[test]
    fn configure_replaces_host_files() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in [
            "etc",
            "home",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
        ] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::write(r.join("etc/hostname"), "vm\n").unwrap();
        fs::write(r.join("etc/resolv.conf"), "nameserver 10.0.0.1\n").unwrap();
        fs::write(r.join("var/lib/apt/lists/deb.debian.org_Packages"), "x").unwrap();
        fs::write(r.join("var/cache/apt/pkgcache.bin"), "x").unwrap();
        configure(r).unwrap();
        assert_eq!(
            fs::read_to_string(r.join("etc/hostname")).unwrap(),
            "sandbox\n"
        );
        assert_eq!(fs::read(r.join("etc/resolv.conf")).unwrap(), b"");
        assert!(r.join("home/app").is_dir());
        assert!(r.join("var/lib/apt/lists/partial").is_dir());
        assert!(!r.join("var/lib/apt/lists/deb.debian.org_Packages").exists());
        assert!(!r.join("var/cache/apt/pkgcache.bin").exists());
        assert!(r.join("var/cache/apt/archives/partial").is_dir());
    }
}
