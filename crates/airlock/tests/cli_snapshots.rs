//! `airlock snapshot ls|create|inspect|rm` and `airlock volume create
//! --from` against a running daemon, with sandboxes that write the data, read
//! it back from a fork and boot from what the CLI made.

mod common;

use common::cli::{cli, fails, json_of, ok};
use common::daemon::{call, run_python, Daemon, Ws};
use serde_json::{json, Value};

fn daemon() -> Daemon {
    Daemon::options("cli-snapshots").token("snapshots").start()
}

/// Runs `airlock ARGS`, which must print one id starting with `prefix`.
#[track_caller]
fn id_of(d: &Daemon, args: &[&str], prefix: &str) -> String {
    let id = ok(d, args).trim().to_string();
    assert!(id.starts_with(prefix), "{args:?}: {id}");
    id
}

/// A table's rows below its header (checked to be `header`), split into
/// words.
fn rows(table: &str, header: &[&str]) -> Vec<Vec<String>> {
    let mut lines = table.lines();
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(head, header, "{table}");
    lines
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// Ends sandbox `id` through the CLI and closes its socket; the daemon
/// lets go of its volumes by itself before a later storage call.
fn end(d: &Daemon, ws: Ws, id: &str) {
    assert_eq!(ok(d, &["rm", id]).trim(), id);
    drop(ws);
}

fn read_text(ws: &mut Ws, id: u64, path: &str) -> Value {
    call(ws, id, "readTextFile", json!({"path": path}))["result"].clone()
}

#[test]
fn snapshot_a_volume_fork_it_and_remove_it() {
    let d = daemon();
    assert_eq!(json_of(&d, &["snapshot", "ls", "--json"]), json!([]));
    let data = id_of(
        &d,
        &["volume", "create", "data", "--capacity", "64MiB"],
        "vol_ord_",
    );

    let (mut ws, sandbox) = d.create(json!({"volumes": {"/data": "data"}}));
    let r = call(
        &mut ws,
        1,
        "writeTextFile",
        json!({"path": "/data/hello.txt", "content": "kept in the snapshot"}),
    );
    assert!(r["result"].get("ok").is_some(), "{r}");
    // Mounted: the daemon cannot snapshot it yet.
    fails(
        &d,
        &["snapshot", "create", "data", "--slug", "base"],
        &format!("volume data is mounted in sandbox {sandbox}"),
    );
    end(&d, ws, &sandbox);

    let snap = id_of(
        &d,
        &["snapshot", "create", "data", "--slug", "base"],
        "snp_",
    );
    let table = ok(&d, &["snapshot", "ls"]);
    let listed = rows(&table, &["ID", "SLUG", "VOLUME", "BOOTABLE", "SIZE"]);
    assert_eq!(listed.len(), 1, "{table}");
    // SIZE is "3.3 MB": two words.
    assert_eq!(listed[0].len(), 6, "{table}");
    assert_eq!(
        listed[0][..4],
        [snap.as_str(), "base", "data", "no"],
        "{table}"
    );

    let list = json_of(&d, &["snapshot", "ls", "--json", "--search", "bas"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], snap.as_str());
    assert_eq!(list[0]["volume"], json!({"id": data, "slug": "data"}));
    assert_eq!(list[0]["is_bootable"], false);
    assert!(list[0]["allocated_size"].as_u64().unwrap() > 0);
    assert_eq!(
        json_of(&d, &["snapshot", "ls", "--json", "--search", "nothing"]),
        json!([])
    );
    let by_slug = json_of(&d, &["snapshot", "inspect", "base"]);
    assert_eq!(
        by_slug,
        json_of(&d, &["snapshot", "inspect", &snap, "--json"])
    );
    assert_eq!(by_slug, list[0]);

    // A fork of the snapshot holds the file.
    let fork = id_of(
        &d,
        &[
            "volume",
            "create",
            "fork",
            "--capacity",
            "64MiB",
            "--from",
            "base",
        ],
        "vol_ord_",
    );
    let vol = json_of(&d, &["volume", "inspect", "fork"]);
    assert_eq!(vol["id"], fork.as_str());
    assert_eq!(vol["base_snapshot"], json!({"id": snap, "slug": "base"}));
    assert_eq!(vol["is_bootable"], false);
    let table = ok(&d, &["volume", "ls", "--search", "fork"]);
    let listed = rows(
        &table,
        &["ID", "SLUG", "REGION", "CAPACITY", "USED", "BOOTABLE"],
    );
    // Sizes are "64 MiB": two words each.
    assert_eq!(listed.len(), 1, "{table}");
    assert_eq!(listed[0][1], "fork", "{table}");
    assert_eq!(listed[0][7], "no", "{table}");
    let (mut ws, sandbox) = d.create(json!({"volumes": {"/data": "fork"}}));
    assert_eq!(
        read_text(&mut ws, 1, "/data/hello.txt"),
        json!({"ok": "kept in the snapshot"})
    );
    end(&d, ws, &sandbox);

    // The daemon's refusals, with its messages, exit 1.
    fails(
        &d,
        &["snapshot", "create", "data", "--slug", "base"],
        "already used by one of your volumes or snapshots",
    );
    fails(
        &d,
        &["snapshot", "create", "nope", "--slug", "other"],
        "volume \"nope\" not found",
    );
    fails(
        &d,
        &["snapshot", "create", "data", "--slug", "Bad_Slug"],
        "slug",
    );
    fails(
        &d,
        &["snapshot", "inspect", "nope"],
        "no such snapshot: nope",
    );
    fails(
        &d,
        &[
            "volume",
            "create",
            "other",
            "--capacity",
            "64MiB",
            "--from",
            "nope",
        ],
        "snapshot \"nope\" not found",
    );
    fails(
        &d,
        &[
            "volume",
            "create",
            "other",
            "--capacity",
            "16MiB",
            "--from",
            "base",
        ],
        "at least as big as the snapshot's volume",
    );
    // A missing --slug is clap's usage error.
    assert_eq!(
        cli(&d, &["snapshot", "create", "data"]).status.code(),
        Some(2)
    );

    // The fork keeps its data when the snapshot goes; one unknown among
    // several is reported and the rest are removed.
    fails(
        &d,
        &["snapshot", "rm", "gone", "base"],
        "no such snapshot: gone",
    );
    assert_eq!(json_of(&d, &["snapshot", "ls", "--json"]), json!([]));
    fails(&d, &["snapshot", "rm", &snap], "no such snapshot");
    let (mut ws, sandbox) = d.create(json!({"volumes": {"/data": "fork"}}));
    assert_eq!(
        read_text(&mut ws, 1, "/data/hello.txt"),
        json!({"ok": "kept in the snapshot"})
    );
    end(&d, ws, &sandbox);
    assert_eq!(ok(&d, &["volume", "rm", "fork", "data"]), "fork\ndata\n");
}

/// `print(6*7)` in the sandbox, read back from a file (the agent's spawn
/// sends output to null in [`run_python`]).
fn python_answers(ws: &mut Ws, id: u64) {
    run_python(ws, id, "open('/tmp/answer', 'w').write(str(6*7))");
    assert_eq!(read_text(ws, id + 2, "/tmp/answer"), json!({"ok": "42"}));
}

#[test]
fn boot_from_a_builtin_volume_and_its_snapshot() {
    let d = daemon();
    let os = id_of(
        &d,
        &[
            "volume",
            "create",
            "os",
            "--capacity",
            "1GB",
            "--from",
            "builtin:debian-13",
        ],
        "vol_ord_",
    );
    let table = ok(&d, &["volume", "ls"]);
    let listed = rows(
        &table,
        &["ID", "SLUG", "REGION", "CAPACITY", "USED", "BOOTABLE"],
    );
    assert_eq!(listed.len(), 1, "{table}");
    assert_eq!(listed[0][..2], [os.as_str(), "os"], "{table}");
    assert_eq!(listed[0][7], "yes", "{table}");

    // Booted from the volume, read-write: a file written there stays.
    let (mut ws, sandbox) = d.create(json!({"root": {"volume": "os"}}));
    python_answers(&mut ws, 1);
    run_python(&mut ws, 4, "open('/etc/booted-from', 'w').write('os')");
    end(&d, ws, &sandbox);

    let snap = id_of(
        &d,
        &["snapshot", "create", "os", "--slug", "os-base"],
        "snp_",
    );
    let table = ok(&d, &["snapshot", "ls"]);
    let listed = rows(&table, &["ID", "SLUG", "VOLUME", "BOOTABLE", "SIZE"]);
    assert_eq!(
        listed[0][..4],
        [snap.as_str(), "os-base", "os", "yes"],
        "{table}"
    );

    // Booted from the snapshot, which cannot go while the sandbox runs.
    let (mut ws, sandbox) = d.create(json!({"root": {"volume": "os-base"}}));
    python_answers(&mut ws, 1);
    assert_eq!(
        read_text(&mut ws, 4, "/etc/booted-from"),
        json!({"ok": "os"})
    );
    fails(
        &d,
        &["snapshot", "rm", "os-base"],
        &format!("snapshot os-base is the root of sandbox {sandbox}"),
    );
    fails(&d, &["snapshot", "rm", &snap], "end them first");
    assert_eq!(
        json_of(&d, &["snapshot", "inspect", "os-base"])["id"],
        snap.as_str()
    );
    end(&d, ws, &sandbox);
    // The daemon waits for the ending sandbox to let go of its root.
    assert_eq!(ok(&d, &["snapshot", "rm", "os-base"]), "os-base\n");
    assert_eq!(json_of(&d, &["snapshot", "ls", "--json"]), json!([]));
    assert_eq!(ok(&d, &["volume", "rm", "os"]), "os\n");
}
