//! `airlock volume ls|create|inspect|rm` against a running daemon, endpoint
//! and token from the SDKs' environment variables.

mod common;

use common::cli::{cli, fails, json_of, ok};
use common::daemon::Daemon;
use serde_json::{json, Value};

fn daemon() -> Daemon {
    Daemon::options("cli-volumes").token("volumes").start()
}

/// `volume create SLUG --capacity SIZE`; the id it printed.
fn create(d: &Daemon, slug: &str, capacity: &str) -> String {
    let id = ok(d, &["volume", "create", slug, "--capacity", capacity])
        .trim()
        .to_string();
    assert!(id.starts_with("vol_ord_"), "{id}");
    id
}

/// The table's rows below its header, split into cells.
fn rows(table: &str) -> Vec<Vec<String>> {
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "SLUG", "REGION", "CAPACITY", "USED", "BOOTABLE"]
    );
    lines
        .map(|l| {
            // Sizes are "64 MiB": two words per size column.
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(w.len(), 8, "{l}");
            vec![
                w[0].to_string(),
                w[1].to_string(),
                w[2].to_string(),
                format!("{} {}", w[3], w[4]),
                format!("{} {}", w[5], w[6]),
                w[7].to_string(),
            ]
        })
        .collect()
}

#[test]
fn create_ls_inspect_rm_with_the_daemons_messages() {
    let d = daemon();
    assert_eq!(json_of(&d, &["volume", "ls", "--json"]), json!([]));

    let data = create(&d, "data", "64MiB");
    let logs = create(&d, "logs", "20MB");

    let table = ok(&d, &["volume", "ls"]);
    let rows = rows(&table);
    assert_eq!(rows.len(), 2, "{table}");
    assert_eq!(
        rows[0][..4],
        [data.as_str(), "data", "ord", "64 MiB"],
        "{table}"
    );
    assert_eq!(
        rows[1][..4],
        [logs.as_str(), "logs", "ord", "20 MB"],
        "{table}"
    );
    for row in &rows {
        // A fresh ext4 image holds some blocks: "3.2 MB", "528 kB".
        let (n, unit) = row[4].split_once(' ').unwrap();
        assert!(n.parse::<f64>().unwrap() > 0.0, "{table}");
        assert!(["kB", "MB", "KiB", "MiB"].contains(&unit), "{table}");
        assert_eq!(row[5], "no", "{table}");
    }

    let list = json_of(&d, &["volume", "ls", "--json", "--search", "dat"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], data.as_str());
    assert_eq!(list[0]["capacity"], 64 << 20);
    assert!(list[0]["estimated_allocated_size"].as_u64().unwrap() > 0);
    assert_eq!(list[0]["is_bootable"], false);
    assert_eq!(list[0]["base_snapshot"], Value::Null);

    let by_slug = json_of(&d, &["volume", "inspect", "data"]);
    let by_id = json_of(&d, &["volume", "inspect", &data, "--json"]);
    assert_eq!(by_slug, by_id);
    assert_eq!(by_slug, list[0]);
    fails(&d, &["volume", "inspect", "nope"], "no such volume: nope");

    // The daemon's own messages, exit 1.
    fails(
        &d,
        &["volume", "create", "data", "--capacity", "64MB"],
        "already used by one of your volumes",
    );
    fails(
        &d,
        &["volume", "create", "other", "--capacity", "12XB"],
        "unknown unit",
    );
    fails(
        &d,
        &["volume", "create", "other", "--capacity", "1kB"],
        "out of range",
    );
    fails(
        &d,
        &["volume", "create", "Bad_Slug", "--capacity", "64MB"],
        "slug",
    );
    // A missing --capacity is clap's usage error.
    assert_eq!(
        cli(&d, &["volume", "create", "other"]).status.code(),
        Some(2)
    );
    assert_eq!(rows_of(&d).len(), 2);

    assert_eq!(
        ok(&d, &["volume", "rm", "data", &logs]),
        format!("data\n{logs}\n")
    );
    assert_eq!(json_of(&d, &["volume", "ls", "--json"]), json!([]));
    assert!(rows_of(&d).is_empty());
    fails(&d, &["volume", "rm", "data"], "no such volume: data");

    // One unknown among several: the rest are removed, exit 1.
    create(&d, "keep", "16MiB");
    fails(
        &d,
        &["volume", "rm", "gone", "keep"],
        "no such volume: gone",
    );
    assert!(rows_of(&d).is_empty());
}

fn rows_of(d: &Daemon) -> Vec<Vec<String>> {
    rows(&ok(d, &["volume", "ls"]))
}

#[test]
fn a_mounted_volume_is_removed_only_after_its_sandbox_ends() {
    let d = daemon();
    let vol = create(&d, "work", "64MiB");
    let (mut ws, sandbox) = d.create(json!({"volumes": {"/data": "work"}}));
    // Mounted for real: the sandbox writes to it.
    common::daemon::run_python(&mut ws, 1, "open('/data/x', 'w').write('hi')");

    fails(
        &d,
        &["volume", "rm", "work"],
        &format!("volume work is mounted in sandbox {sandbox}"),
    );
    fails(&d, &["volume", "rm", &vol], "mounted in sandbox");
    assert_eq!(rows_of(&d).len(), 1);

    assert_eq!(ok(&d, &["rm", &sandbox]).trim(), sandbox);
    drop(ws);
    // The daemon waits for an ending sandbox to let go of the volume.
    assert_eq!(ok(&d, &["volume", "rm", "work"]).trim(), "work");
    assert!(rows_of(&d).is_empty());
}
