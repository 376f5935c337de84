//! The default image: Debian bookworm minbase from mmdebstrap with python3
//! (pip, venv), nodejs, git and curl, plus npm and deno from their npm
//! packages.

use super::Recipe;
use crate::fsutil::{empty_dir, ensure_dir, install_file, replace_file};
use crate::run::{run, Stdout, MMDEBSTRAP, NPM, TAR};
use crate::{ImageError, Progress};
use serde::Deserialize;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::path::PathBuf;

pub(super) struct Debian {
    suite: &'static str,
    packages: &'static [&'static str],
}

pub(super) const DEFAULT: Debian = Debian {
    suite: "bookworm",
    // python3-requests: the HTTP client most Python code uses (and the one
    // users check secrets and CA trust with). python3-pip: agents install
    // packages all the time (10 MiB with setuptools and wheel, which pip
    // needs to build source packages); python3-venv adds 3 MiB (the wheels
    // `python3 -m venv` seeds a venv with, offline).
    packages: &[
        "python3",
        "python3-requests",
        "python3-pip",
        "python3-venv",
        "nodejs",
        "ca-certificates",
        "curl",
        "git",
    ],
};

/// The npm package that ships the deno binary for x86_64 glibc Linux.
const DENO_NPM_PACKAGE: &str = "@deno/linux-x64-glibc";

/// npm itself, from its registry tarball, which bundles its dependencies:
/// 12 MiB (16 MiB on disk: 2000 small files) without its docs, where
/// Debian 12's `npm` package (npm 9.2) pulls in 349 packages and 100 MiB
/// (eslint, webpack, babel, libssl-dev, ...). Pinned so a rebuild gives the
/// same npm; 10.x is the newest major that still supports Debian 12's
/// nodejs 18 (npm 11 needs node 20.17).
const NPM_PACKAGE: &str = "npm@10.9.9";

/// Where npm goes in the rootfs: /usr/local, away from dpkg's files; its
/// builtin npmrc makes `npm install -g` (npm itself included) use it too.
const NPM_DIR: &str = "usr/local/lib/node_modules/npm";

/// npm's builtin config (`npmrc` in its own directory, read before the
/// user's). Without `prefix` npm would derive /usr from node's path and put
/// global packages among dpkg's files; the update check would ask the
/// registry on every command, from a sandbox that usually cannot reach it.
const NPM_BUILTIN_RC: &str = "prefix=/usr/local\nupdate-notifier=false\n";

/// Parts of the npm tarball a sandbox does not need (`npm help` needs `man`
/// or a browser, neither of which the image has).
const NPM_EXCLUDE: &[&str] = &["package/docs", "package/man"];

/// pip's system-wide config. Sandbox commands run as (namespaced) root, so
/// pip's warning about installing as root is noise; the version check would
/// ask PyPI on every command.
const PIP_CONF: &str =
    "[global]\ndisable-pip-version-check = true\n\n[install]\nroot-user-action = ignore\n";

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
    /// 1: first release. 2: `sudo` shim. 3: python3-requests. 4: npm (with
    /// npx) and pip (with venv).
    fn version(&self) -> u32 {
        4
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

        // deno and npm first: they are quick, and a missing host npm should
        // fail before the long part rather than after it.
        progress(Progress::Stage(&format!(
            "fetch deno (npm pack {DENO_NPM_PACKAGE})"
        )));
        let deno = fetch_deno(work, progress)?;
        progress(Progress::Stage(&format!(
            "fetch npm (npm pack {NPM_PACKAGE})"
        )));
        let npm = npm_pack(work, NPM_PACKAGE, progress)?;

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

        progress(Progress::Stage(&format!(
            "install npm to /{NPM_DIR} (npm, npx in /usr/local/bin)"
        )));
        install_npm(rootfs, &npm.tarball, progress)?;

        progress(Progress::Stage(
            "configure (/home/app, hostname, hosts, resolv.conf, pip, apt cleanup)",
        ));
        configure(rootfs)?;

        let mut parts = vec![format!("debian {} minbase", self.suite)];
        let versions = dpkg_versions(rootfs, &["python3", "python3-pip", "nodejs", "git", "curl"])?;
        parts.extend(versions.into_iter().map(|(pkg, v)| format!("{pkg} {v}")));
        parts.push(format!("npm {}", npm.version));
        parts.push(format!("deno {}", deno.version));
        Ok(parts.join(", "))
    }
}

struct Deno {
    binary: PathBuf,
    version: String,
}

/// One entry of `npm pack --json`.
#[derive(Deserialize)]
struct Packed {
    filename: String,
    version: String,
}

/// A package tarball fetched by `npm pack`.
struct Tarball {
    tarball: PathBuf,
    version: String,
}

/// Downloads the npm package `spec` into `work` with the host's npm (which
/// trusts the host's CA store, unlike anything inside the new rootfs, and
/// checks the tarball against the registry's integrity hash).
fn npm_pack(
    work: &Path,
    spec: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<Tarball, ImageError> {
    let mut cmd = NPM.command();
    // Run in `work` so a package.json in the caller's directory is not involved.
    cmd.current_dir(work)
        .args(["pack", "--json", "--pack-destination"])
        .arg(work)
        .arg(spec);
    let json = run(NPM, &mut cmd, Stdout::Capture, progress)?;
    let packed: Vec<Packed> =
        serde_json::from_str(&json).map_err(|e| ImageError::UnexpectedOutput {
            command: format!("npm pack --json {spec}"),
            detail: format!("{e}; output was {json:?}"),
        })?;
    let Some(packed) = packed.into_iter().next() else {
        return Err(ImageError::UnexpectedOutput {
            command: format!("npm pack --json {spec}"),
            detail: "no package in its output".into(),
        });
    };
    // npm names the file itself; refuse anything that is not a plain name.
    if packed.filename.contains('/') || packed.filename.starts_with('.') {
        return Err(ImageError::UnexpectedOutput {
            command: format!("npm pack --json {spec}"),
            detail: format!("odd tarball name {:?}", packed.filename),
        });
    }
    Ok(Tarball {
        tarball: work.join(&packed.filename),
        version: packed.version,
    })
}

/// Fetches the deno npm package and unpacks the binary from it.
fn fetch_deno(work: &Path, progress: &mut dyn FnMut(Progress)) -> Result<Deno, ImageError> {
    let Tarball { tarball, version } = npm_pack(work, DENO_NPM_PACKAGE, progress)?;
    let mut cmd = TAR.command();
    cmd.arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(work)
        .arg("package/deno");
    run(TAR, &mut cmd, Stdout::Stream, progress)?;
    let binary = work.join("package/deno");
    expect_file(&binary, &tarball)?;
    Ok(Deno { binary, version })
}

/// Unpacks npm's tarball (less its docs) into the rootfs, with its builtin
/// npmrc and the `npm` and `npx` links that `npm install -g npm` would make.
fn install_npm(
    rootfs: &Path,
    tarball: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), ImageError> {
    let dir = rootfs.join(NPM_DIR);
    fs::create_dir_all(&dir).map_err(ImageError::io("create directory", &dir))?;
    let mut cmd = TAR.command();
    // The files belong to the image's root, whoever the tarball names.
    cmd.arg("-xzf")
        .arg(tarball)
        .arg("-C")
        .arg(&dir)
        .arg("--strip-components=1")
        .arg("--no-same-owner");
    for path in NPM_EXCLUDE {
        cmd.arg(format!("--exclude={path}"));
    }
    run(TAR, &mut cmd, Stdout::Stream, progress)?;
    for cli in ["npm-cli.js", "npx-cli.js"] {
        expect_file(&dir.join("bin").join(cli), tarball)?;
    }
    replace_file(&dir.join("npmrc"), &mut NPM_BUILTIN_RC.as_bytes(), 0o644)?;

    let bin = rootfs.join("usr/local/bin");
    fs::create_dir_all(&bin).map_err(ImageError::io("create directory", &bin))?;
    for (name, cli) in [("npm", "npm-cli.js"), ("npx", "npx-cli.js")] {
        let link = bin.join(name);
        // Relative, so the link works both in the sandbox and on the host.
        let target = format!("../lib/node_modules/npm/bin/{cli}");
        symlink(&target, &link).map_err(ImageError::io("create symlink", &link))?;
    }
    Ok(())
}

/// Checks that unpacking `tarball` left a regular file at `path`.
fn expect_file(path: &Path, tarball: &Path) -> Result<(), ImageError> {
    let meta = fs::symlink_metadata(path).map_err(ImageError::io("stat", path))?;
    if !meta.is_file() {
        return Err(ImageError::UnexpectedOutput {
            command: format!("tar -xzf {}", tarball.display()),
            detail: format!("{} is not a regular file", path.display()),
        });
    }
    Ok(())
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
    configure_pip(rootfs)?;
    // mmdebstrap already cleans these; doing it again keeps the image small
    // even if its defaults change. apt expects `lock` and `partial` to stay.
    empty_dir(&rootfs.join("var/lib/apt/lists"), &["lock", "partial"])?;
    empty_dir(&rootfs.join("var/cache/apt/archives"), &["lock", "partial"])?;
    empty_dir(&rootfs.join("var/cache/apt"), &["archives"])?;
    Ok(())
}

/// Lets `pip install` install. Debian marks its Python "externally managed"
/// (PEP 668), so pip refuses to install outside a venv lest it break
/// dpkg's Python packages. A sandbox is disposable and users (agents above
/// all) expect `pip install x` to work as it does in the python images;
/// PEP 668 itself suggests container images delete the marker. Deleting it
/// (rather than pip's break-system-packages setting) serves every
/// installer, not just pip. The damage it guards against is small here:
/// Debian's pip installs to /usr/local/lib/python3.X/dist-packages, not
/// among dpkg's files.
fn configure_pip(rootfs: &Path) -> Result<(), ImageError> {
    let lib = rootfs.join("usr/lib");
    let entries = match fs::read_dir(&lib) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ImageError::io("read directory", &lib)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(ImageError::io("read directory", &lib))?;
        if !entry.file_name().to_string_lossy().starts_with("python3") {
            continue;
        }
        let marker = entry.path().join("EXTERNALLY-MANAGED");
        match fs::remove_file(&marker) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io("remove", &marker)(e)),
        }
    }
    replace_file(
        &rootfs.join("etc/pip.conf"),
        &mut PIP_CONF.as_bytes(),
        0o644,
    )
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
        fs::create_dir_all(r.join("usr/lib/python3.11")).unwrap();
        fs::write(r.join("usr/lib/python3.11/EXTERNALLY-MANAGED"), "x").unwrap();
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
        assert!(!r.join("usr/lib/python3.11/EXTERNALLY-MANAGED").exists());
        assert!(r.join("usr/lib/python3.11").is_dir());
        assert_eq!(
            fs::read_to_string(r.join("etc/pip.conf")).unwrap(),
            PIP_CONF
        );
    }
}
