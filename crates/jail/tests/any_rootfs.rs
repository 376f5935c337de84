//! The agent is PID 1 in any root filesystem: here one that is empty (no
//! libc, no shell, no /dev or /proc of its own). Needs root and the static
//! agent (scripts/build-agent.sh).

use agent_proto::{encode_frame, Decoder, Frame, FrameKind};
use jail::{JailPaths, Limits, Sandbox, SandboxSpec};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

fn agent() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/static/x86_64-unknown-linux-gnu/release/airlock-agent")
}

fn read_frame(sock: &mut UnixStream, dec: &mut Decoder) -> Frame {
    let mut buf = [0u8; 65536];
    loop {
        if let Some(f) = dec.next_frame().expect("well-formed frames") {
            return f;
        }
        let n = sock.read(&mut buf).expect("reading from the agent");
        assert!(n > 0, "agent closed the connection");
        dec.feed(&buf[..n]);
    }
}

fn call(sock: &mut UnixStream, dec: &mut Decoder, id: u32, method: &str, params: Value) -> Value {
    let mut out = Vec::new();
    let payload = serde_json::to_vec(&json!({"method": method, "params": params})).unwrap();
    encode_frame(FrameKind::Call, id, &payload, &mut out);
    sock.write_all(&out).unwrap();
    loop {
        let f = read_frame(sock, dec);
        if f.kind == FrameKind::Reply && f.id == id {
            return serde_json::from_slice(&f.payload).unwrap();
        }
    }
}

#[test]
fn agent_runs_in_an_empty_root_filesystem() {
    let rootfs = tempfile::tempdir().unwrap();
    let spec = SandboxSpec {
        id: format!("test-empty-{}", std::process::id()),
        image_rootfs: rootfs.path().to_path_buf(),
        agent_exe: agent(),
        paths: JailPaths::default(),
        limits: Limits {
            memory_bytes: 64 << 20,
            disk_bytes: 8 << 20,
            ..Limits::default()
        },
        env: vec![("PATH".into(), "/bin".into())],
        hostname: "empty".into(),
        network: None,
        binds: vec![],
        persistent_root: false,
    };
    let mut sandbox = Sandbox::create(&spec).expect("creating a sandbox on an empty rootfs");
    let mut sock = sandbox.take_agent_socket().unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut dec = Decoder::new();
    let hello = read_frame(&mut sock, &mut dec);
    assert_eq!(hello.kind, FrameKind::Hello);

    assert_eq!(
        call(&mut sock, &mut dec, 1, "ping", json!({})),
        json!({"ok": "pong"})
    );
    // The jail made the mount points; the agent sees the sandbox's tree only.
    let listing = call(&mut sock, &mut dec, 2, "readDir", json!({"path": "/"}));
    let mut names: Vec<String> = listing["ok"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["dev", "proc", "tmp"], "{listing}");
    // File work needs no libc in the rootfs.
    let w = call(
        &mut sock,
        &mut dec,
        3,
        "writeTextFile",
        json!({"path": "/tmp/x", "content": "hi"}),
    );
    assert_eq!(w, json!({"ok": null}));
    assert_eq!(
        call(
            &mut sock,
            &mut dec,
            4,
            "readTextFile",
            json!({"path": "/tmp/x"})
        ),
        json!({"ok": "hi"})
    );
    // There is no shell to run: a clear NotFound, not a crash.
    let r = call(
        &mut sock,
        &mut dec,
        5,
        "spawn",
        json!({"command": "sh", "stdout": "null", "stderr": "null"}),
    );
    assert_eq!(r["error"]["constructorName"], "NotFound", "{r}");
    assert_eq!(
        call(&mut sock, &mut dec, 6, "ping", json!({})),
        json!({"ok": "pong"})
    );
    assert!(sandbox.try_wait().is_none(), "PID 1 must still run");
    sandbox.destroy().unwrap();
    assert!(!std::path::Path::new("/run/airlock/sandboxes")
        .join(&spec.id)
        .exists());
}

/// A host directory bound at a tenant-chosen path: files written inside
/// land in it owned by host ids 0.. (the idmapped mount), and symlinks in
/// the root filesystem on the way to the mount point are resolved inside
/// the sandbox's root, never on the host.
#[test]
fn binds_land_in_the_host_directory_and_symlinks_stay_inside_the_root() {
    use std::os::unix::fs::MetadataExt;
    let rootfs = tempfile::tempdir().unwrap();
    let volume = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(volume.path().join("kept.txt"), "from the host").unwrap();
    // An attacker-shaped image: `/escape` names a host directory, `/up`
    // climbs above the root (on the host it would reach `/`).
    std::os::unix::fs::symlink(outside.path(), rootfs.path().join("escape")).unwrap();
    std::os::unix::fs::symlink("../../../../../..", rootfs.path().join("up")).unwrap();
    let host_vol = format!("/airlock-bind-test-{}", std::process::id());
    let spec = |binds: &[&str]| SandboxSpec {
        id: format!("test-binds-{}", std::process::id()),
        image_rootfs: rootfs.path().to_path_buf(),
        agent_exe: agent(),
        paths: JailPaths::default(),
        limits: Limits {
            memory_bytes: 64 << 20,
            disk_bytes: 8 << 20,
            ..Limits::default()
        },
        env: vec![("PATH".into(), "/bin".into())],
        hostname: "binds".into(),
        network: None,
        binds: binds
            .iter()
            .map(|t| jail::Bind {
                source: volume.path().to_path_buf(),
                target: t.to_string(),
            })
            .collect(),
        persistent_root: false,
    };
    // Through the absolute symlink: its target does not exist inside the
    // root, so the mount point cannot be made, and nothing is made on the
    // host.
    let err = Sandbox::create(&spec(&["/escape/vol"]))
        .map(|_| ())
        .expect_err("refused");
    assert!(err.to_string().contains("bind volume"), "{err}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

    let up = format!("/up{host_vol}");
    let mut sandbox =
        Sandbox::create(&spec(&["/data/vol", &up])).expect("creating a sandbox with binds");
    let mut sock = sandbox.take_agent_socket().unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut dec = Decoder::new();
    assert_eq!(read_frame(&mut sock, &mut dec).kind, FrameKind::Hello);
    let r = call(
        &mut sock,
        &mut dec,
        1,
        "readTextFile",
        json!({"path": "/data/vol/kept.txt"}),
    );
    assert_eq!(r, json!({"ok": "from the host"}));
    // The host's root-owned file is the sandbox root's.
    let st = call(
        &mut sock,
        &mut dec,
        2,
        "stat",
        json!({"path": "/data/vol/kept.txt"}),
    );
    assert_eq!(st["ok"]["uid"], 0, "{st}");
    let w = call(
        &mut sock,
        &mut dec,
        3,
        "writeTextFile",
        json!({"path": "/data/vol/new.txt", "content": "from inside"}),
    );
    assert_eq!(w, json!({"ok": null}));
    // `/up` resolved to the sandbox's own root.
    let path = format!("{host_vol}/kept.txt");
    let r = call(
        &mut sock,
        &mut dec,
        4,
        "readTextFile",
        json!({"path": path}),
    );
    assert_eq!(
        r,
        json!({"ok": "from the host"}),
        "the second bind is inside"
    );
    sandbox.destroy().unwrap();

    let written = volume.path().join("new.txt");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "from inside");
    let meta = std::fs::metadata(&written).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (0, 0),
        "written as sandbox root = host id 0"
    );
    assert!(
        !std::path::Path::new(&host_vol).exists(),
        "{host_vol} made on the host"
    );
}
