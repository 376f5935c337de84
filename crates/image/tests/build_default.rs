//! Really builds the default image (needs root, mmdebstrap, npm and the
//! package registries; about a minute). Set AIRLOCK_TEST_DATA_DIR to reuse
//! a data dir across runs, so CI builds the image once.

use image::{ImageStore, Progress};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn chroot(rootfs: &Path, args: &[&str]) -> String {
    let out = Command::new("chroot")
        .arg(rootfs)
        .args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .output()
        .expect("run chroot");
    assert!(out.status.success(), "chroot {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn builds_default_image() {
    let temp;
    let data_dir: PathBuf = match std::env::var_os("AIRLOCK_TEST_DATA_DIR") {
        Some(dir) => dir.into(),
        None => {
            temp = tempfile::tempdir().expect("temp dir");
            temp.path().to_path_buf()
        }
    };
    let store = ImageStore::new(&data_dir);
    let mut stages = Vec::new();
    let info = store
        .ensure("default", &mut |p| {
            match p {
                Progress::Stage(s) => stages.push(s.to_string()),
                Progress::Line(_) => {}
                Progress::Done { secs } => eprintln!("built in {secs:.1}s"),
            }
            eprintln!("{p:?}");
        })
        .expect("build default image");
    eprintln!("{info:#?}");

    let root = &info.rootfs;
    for bin in [
        "usr/bin/python3",
        "usr/bin/node",
        "usr/bin/git",
        "usr/bin/curl",
        "usr/bin/bash",
    ] {
        assert!(root.join(bin).exists(), "{bin} missing");
    }
    let deno = std::fs::metadata(root.join("usr/local/bin/deno")).expect("deno");
    assert_eq!(deno.mode() & 0o7777, 0o755);
    assert_eq!(
        std::fs::metadata(root).unwrap().uid(),
        0,
        "rootfs must be owned by real root"
    );
    assert!(root.join("home/app").is_dir());
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "sandbox\n"
    );
    let resolv = std::fs::symlink_metadata(root.join("etc/resolv.conf")).unwrap();
    assert!(resolv.is_file() && resolv.len() == 0);

    assert!(chroot(root, &["/usr/local/bin/deno", "--version"]).starts_with("deno "));
    assert_eq!(chroot(root, &["python3", "-c", "print(1)"]), "1\n");
    assert!(chroot(root, &["node", "-e", "console.log(process.version)"]).starts_with('v'));
    // npm from its tarball, linked from /usr/local/bin as `npm i -g` would.
    for (bin, cli) in [("npm", "npm-cli.js"), ("npx", "npx-cli.js")] {
        let link = std::fs::read_link(root.join("usr/local/bin").join(bin)).expect(bin);
        assert_eq!(link, Path::new("../lib/node_modules/npm/bin").join(cli));
    }
    assert!(chroot(root, &["npm", "--version"]).starts_with("10."));
    assert_eq!(
        chroot(root, &["npm", "config", "get", "prefix"]),
        "/usr/local\n"
    );
    assert!(!root.join("usr/local/lib/node_modules/npm/docs").exists());
    assert!(chroot(root, &["python3", "-m", "pip", "--version"]).starts_with("pip "));
    assert!(
        !root.join("usr/lib/python3.11/EXTERNALLY-MANAGED").exists(),
        "pip install must not be refused (PEP 668 marker)"
    );
    assert!(root.join("usr/lib/python3.11/venv").is_dir());

    for part in ["python3 ", "python3-pip ", "nodejs ", "npm ", "deno "] {
        assert!(
            info.summary.contains(part),
            "summary {:?} lacks {part}",
            info.summary
        );
    }
    assert!(
        info.size_bytes > 100 << 20,
        "suspiciously small: {}",
        info.size_bytes
    );
    assert_eq!(store.list().unwrap(), std::slice::from_ref(&info));
    // A second ensure finds it instead of rebuilding.
    assert_eq!(
        store.ensure("default", &mut |_| panic!("rebuilt")).unwrap(),
        info
    );
}
