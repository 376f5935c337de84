//! Volumes at the daemon: what survives a kill -9, what is left on the host
//! afterwards, and symlinks a tenant plants in a volume. The SDK suites
//! (tests/sdk) cover the API through both official SDKs.

mod common;

use common::daemon::{call, run_python, Daemon};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `POST /api/v2/volumes` with `body`: (status, JSON).
fn post_volume(d: &Daemon, body: Value) -> (u16, Value) {
    d.post_as(&d.token, "/api/v2/volumes", &body)
}

fn write_text(ws: &mut common::daemon::Ws, id: u64, path: &str, content: &str) {
    let r = call(
        ws,
        id,
        "writeTextFile",
        json!({"path": path, "content": content}),
    );
    assert!(r["result"].get("ok").is_some(), "{r}");
}

fn read_text(ws: &mut common::daemon::Ws, id: u64, path: &str) -> Value {
    call(ws, id, "readTextFile", json!({"path": path}))["result"].clone()
}

/// Mount points and loop devices of the host that lie under `dir`.
fn host_footprint(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    let mut left: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(|m| format!("mount {m}"))
        .collect();
    for dev in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let backing = dev.path().join("loop/backing_file");
        if let Ok(file) = std::fs::read_to_string(&backing) {
            if file.trim().starts_with(&dir) {
                left.push(format!(
                    "loop {} -> {}",
                    dev.file_name().to_string_lossy(),
                    file.trim()
                ));
            }
        }
    }
    left
}

#[test]
fn volume_data_survives_a_kill_9_and_nothing_stays_on_the_host() {
    let mut d = Daemon::start("volumes");
    let dir = d.dir.clone();
    let (status, v) = post_volume(
        &d,
        json!({"slug": "keep", "capacity": "32MB", "region": "ord"}),
    );
    assert_eq!(status, 200, "{v}");
    let (mut ws, sandbox) = d.create(json!({"volumes": {"/data": "keep"}}));
    write_text(&mut ws, 1, "/data/precious.txt", "written before the crash");
    run_python(&mut ws, 2, "import os; os.sync()");

    d.kill9();
    drop(ws);
    wait_until(
        "the sandbox's processes to end with the daemon",
        Duration::from_secs(30),
        || common::sandbox_pids(&sandbox).is_empty(),
    );
    d.spawn();
    // The record and the data are whole; the killed daemon's mount is gone
    // and the volume is free for a new sandbox.
    let (status, body) = d.http("GET", "/api/v2/volumes/keep");
    assert_eq!(status, 200, "{body}");
    let (mut ws, _) = d.create(json!({"volumes": [{"volume": "keep", "path": "/srv/again"}]}));
    assert_eq!(
        read_text(&mut ws, 3, "/srv/again/precious.txt"),
        json!({"ok": "written before the crash"})
    );
    drop(ws);
    drop(d);
    // A daemon that exits unmounts its pool and every volume: no mount and
    // no loop device of its storage is left on the host.
    assert_eq!(host_footprint(&dir), Vec::<String>::new());
}

#[test]
fn symlinks_planted_in_a_volume_resolve_inside_the_next_sandbox() {
    let d = Daemon::start("volumes");
    let (status, v) = post_volume(
        &d,
        json!({"slug": "links", "capacity": "32MB", "region": "ord"}),
    );
    assert_eq!(status, 200, "{v}");
    // The first tenant plants links to the root and to /etc.
    {
        let (mut ws, _) = d.create(json!({"volumes": {"/data": "links"}}));
        for (i, (target, name)) in [
            ("/", "/data/root"),
            ("/etc", "/data/etc"),
            ("../../..", "/data/up"),
        ]
        .iter()
        .enumerate()
        {
            let r = call(
                &mut ws,
                10 + i as u64,
                "symlink",
                json!({"target": target, "path": name}),
            );
            assert!(r["result"].get("ok").is_some(), "{r}");
        }
        write_text(&mut ws, 20, "/etc/marker", "the first sandbox");
    }
    // The next sandbox follows them into its own tree, never the host's.
    let (mut ws, _) = d.create(json!({"volumes": {"/mnt/vol": "links"}}));
    write_text(&mut ws, 1, "/etc/marker", "the second sandbox");
    assert_eq!(
        read_text(&mut ws, 2, "/mnt/vol/etc/marker"),
        json!({"ok": "the second sandbox"})
    );
    assert_eq!(
        read_text(&mut ws, 3, "/mnt/vol/root/etc/marker"),
        json!({"ok": "the second sandbox"})
    );
    assert_eq!(
        read_text(&mut ws, 4, "/mnt/vol/up/etc/marker"),
        json!({"ok": "the second sandbox"})
    );
    // Writing through a link lands in the sandbox, not on the host.
    write_text(&mut ws, 5, "/mnt/vol/etc/planted", "x");
    assert!(!Path::new("/etc/planted").exists());
    assert!(!Path::new("/etc/marker").exists());
}

#[test]
fn a_volume_mount_cannot_reach_another_tokens_volume_or_the_host() {
    let d = Daemon::start("volumes");
    let (status, v) = post_volume(
        &d,
        json!({"slug": "mine", "capacity": "32MB", "region": "ord"}),
    );
    assert_eq!(status, 200, "{v}");
    let other = d.token_create("other");
    // By slug and by id: absent for the other token.
    for key in ["mine", v["id"].as_str().unwrap()] {
        let (status, body) = d.create_err(json!({"volumes": {"/data": key}}), &other);
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["code"], "VOLUME_NOT_FOUND");
    }
    let (status, _) = d.http_as(
        &other,
        "GET",
        &format!("/api/v2/volumes/{}", v["id"].as_str().unwrap()),
    );
    assert_eq!(status, 404);
    // Slugs with path tricks are refused before anything is made.
    for slug in ["../../etc", "a/b", "..", "x\u{0}y"] {
        let (status, body) = post_volume(
            &d,
            json!({"slug": slug, "capacity": "32MB", "region": "ord"}),
        );
        assert_eq!(status, 400, "{slug:?}: {body}");
    }
    let (_, list) = d.http("GET", "/api/v2/volumes");
    assert_eq!(
        serde_json::from_str::<Value>(&list)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
