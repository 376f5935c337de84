//! Snapshots of a running sandbox's root filesystem (airlock extension,
//! `POST /api/v3/sandbox/{id}/snapshot`): what the snapshot holds (and
//! leaves out), booting and forking it, the sandbox running on after, the
//! refusals, and `airlock snapshot create sbx_...`.

mod common;

use common::cli::{fails, ok};
use common::daemon::{call, Daemon, Ws};
use serde_json::{json, Value};
use std::time::Instant;

/// Runs `sh -c SCRIPT` in the sandbox (request ids `id`..`id + 2`) with its
/// output in a file, and returns (exit code, output).
fn sh(ws: &mut Ws, id: u64, script: &str) -> (i64, String) {
    let out = format!("/root/.sh-out-{id}");
    let r = call(
        ws,
        id,
        "spawn",
        json!({"command": "sh", "args": ["-c", format!("({script}) >{out} 2>&1")],
               "stdout": "null", "stderr": "null"}),
    );
    let pid = r["result"]["ok"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("{r}"));
    let status = call(ws, id + 1, "processWait", json!({"pid": pid}));
    let code = status["result"]["ok"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("{status}"));
    let text = call(ws, id + 2, "readTextFile", json!({"path": out}));
    let text = text["result"]["ok"]
        .as_str()
        .unwrap_or_else(|| panic!("{text}"))
        .to_string();
    (code, text)
}

/// `sh`, which must exit 0; its output.
#[track_caller]
fn sh_ok(ws: &mut Ws, id: u64, script: &str) -> String {
    let (code, text) = sh(ws, id, script);
    assert_eq!(code, 0, "{script}\n{text}");
    text
}

fn snapshot(d: &Daemon, token: &str, sandbox: &str, slug: &str) -> (u16, Value) {
    d.post_as(
        token,
        &format!("/api/v3/sandbox/{sandbox}/snapshot"),
        &json!({ "slug": slug }),
    )
}

/// What the first sandbox leaves in its root, on a volume and in /tmp.
const PREPARE: &str = r#"set -e
test -e /etc/issue
echo kept > /root/kept.txt
mkdir -p /home/u
echo mine > /home/u/owned.txt
chown 1000:1000 /home/u/owned.txt
printf '#!/bin/sh\necho ran-tool\n' > /usr/local/bin/tool
chmod 0750 /usr/local/bin/tool
ln -s /etc/shadow /root/shadow-link
rm /etc/issue
echo scratch > /tmp/scratch.txt
echo on-volume > /data/onvol.txt
echo prepared"#;

/// What a sandbox booted from the snapshot (or a fork of it) sees.
const CHECK: &str = r#"cat /root/kept.txt
stat -c 'owned %u:%g %a' /home/u/owned.txt
stat -c 'tool %u:%g %a' /usr/local/bin/tool
/usr/local/bin/tool
stat -c 'root %u:%g' / /etc/passwd
test -L /root/shadow-link && echo "link -> $(readlink /root/shadow-link)"
test -e /etc/issue && echo issue-present || echo issue-gone
test -e /data/onvol.txt && echo volume-file-present || echo volume-file-absent
cat /tmp/scratch.txt 2>/dev/null || echo no-scratch"#;

fn check_booted(ws: &mut Ws) {
    let seen = sh_ok(ws, 10, CHECK);
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(
        lines,
        [
            "kept",
            "owned 1000:1000 644",
            "tool 0:0 750",
            "ran-tool",
            "root 0:0",
            "root 0:0",
            "link -> /etc/shadow",
            "issue-gone",
            "volume-file-absent",
            // /tmp is a directory of the root filesystem in a native
            // sandbox (not a tmpfs): it is copied like the rest.
            "scratch",
        ],
        "{seen}"
    );
}

#[test]
fn snapshot_a_running_sandbox_boot_it_fork_it() {
    native_only!("gVisor sandboxes answer 501 (see the next test)");
    // A small disk limit keeps the snapshot's size (what the sandbox
    // booted from plus its disk) and so the fork's capacity small: the
    // pool is capped by the host's free space.
    let d = Daemon::options("snapshot-sandbox")
        .token("snap")
        .args(&["--disk", "512M"])
        .start();
    let (status, v) = d.post_as(
        &d.token,
        "/api/v2/volumes",
        &json!({"slug": "data", "capacity": "32MB", "region": "ord"}),
    );
    assert_eq!(status, 200, "{v}");
    let (mut ws, sandbox) = d.create(json!({"volumes": {"/data": "data"}}));
    assert_eq!(sh_ok(&mut ws, 1, PREPARE).trim(), "prepared");

    let started = Instant::now();
    let (status, snap) = snapshot(&d, &d.token, &sandbox, "prepared");
    let took = started.elapsed();
    assert_eq!(status, 200, "{snap}");
    eprintln!("snapshot of a running sandbox (default image) took {took:?}: {snap}");
    assert!(
        snap["id"].as_str().unwrap().starts_with("snp_ord_"),
        "{snap}"
    );
    assert_eq!(snap["slug"], "prepared");
    assert_eq!(snap["is_bootable"], true);
    assert_eq!(snap["volume"], json!({"id": sandbox, "slug": sandbox}));
    assert!(
        snap["allocated_size"].as_u64().unwrap() > 100 << 20,
        "{snap}"
    );

    // The sandbox was thawed and runs on.
    assert_eq!(sh_ok(&mut ws, 4, "cat /root/kept.txt").trim(), "kept");
    let (status, listed) = d.http("GET", "/api/v2/snapshots");
    assert_eq!(status, 200, "{listed}");
    assert!(listed.contains("\"prepared\""), "{listed}");

    // Refusals: the slug is taken; another token's sandbox does not exist
    // for it; an unknown sandbox neither.
    let (status, body) = snapshot(&d, &d.token, &sandbox, "prepared");
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("SLUG_TAKEN")),
        "{body}"
    );
    let (status, body) = snapshot(&d, &d.token, &sandbox, "data");
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("SLUG_TAKEN")),
        "{body}"
    );
    let other = d.token_create("other");
    let (status, body) = snapshot(&d, &other, &sandbox, "mine");
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("SANDBOX_NOT_FOUND")),
        "{body}"
    );
    let (status, body) = snapshot(&d, &d.token, "sbx_ord_nosuchsandbox", "x1");
    assert_eq!(status, 404, "{body}");
    let (status, body) = snapshot(&d, &d.token, &sandbox, "Bad Slug");
    assert_eq!(status, 400, "{body}");
    // Thawed after a refusal too.
    assert_eq!(
        sh_ok(&mut ws, 7, "echo still-running").trim(),
        "still-running"
    );

    // Boot from it: with the volume mounted again, its file is there only
    // through the volume.
    let (mut booted, _) = d.create(json!({"root": "prepared"}));
    check_booted(&mut booted);
    drop(booted);

    // Fork it into a bootable volume and boot that.
    let (status, vol) = d.post_as(
        &d.token,
        "/api/v2/volumes",
        &json!({"slug": "forked", "capacity": "2GB", "region": "ord", "from": "prepared"}),
    );
    assert_eq!(status, 200, "{vol}");
    assert_eq!(vol["is_bootable"], true, "{vol}");
    let (mut forked, forked_id) = d.create(json!({"root": "forked"}));
    check_booted(&mut forked);
    // A snapshot of a sandbox booted from a fork descends from what was
    // forked.
    let (status, again) = snapshot(&d, &d.token, &forked_id, "again");
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["base_snapshot"]["slug"], "prepared", "{again}");
    drop(forked);

    // The CLI dispatches on the sbx_ prefix.
    let id = ok(&d, &["snapshot", "create", &sandbox, "--slug", "via-cli"]);
    assert!(id.trim().starts_with("snp_ord_"), "{id}");
    fails(
        &d,
        &[
            "snapshot",
            "create",
            "sbx_ord_nosuchsandbox",
            "--slug",
            "x2",
        ],
        "sandbox sbx_ord_nosuchsandbox does not exist or has ended",
    );
    drop(ws);
}

#[test]
fn a_gvisor_sandbox_answers_not_supported() {
    if !common::gvisor() {
        eprintln!("skipped: runs with AIRLOCK_ISOLATION=gvisor");
        return;
    }
    let d = Daemon::options("snapshot-sandbox-gvisor").start();
    let (ws, sandbox) = d.create(json!({}));
    let (status, body) = snapshot(&d, &d.token, &sandbox, "nope");
    assert_eq!(
        (status, body["code"].as_str()),
        (501, Some("NOT_SUPPORTED")),
        "{body}"
    );
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("not supported yet") && msg.contains("volume"),
        "{msg}"
    );
    drop(ws);
}
