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
