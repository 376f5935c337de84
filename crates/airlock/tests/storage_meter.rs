//! Storage metering at the daemon: volumes bill their capacity to their
//! token in byte-hours, `airlock usage` and `/metrics` show it, a delete
//! keeps what was billed, and a kill -9 and restart bill the downtime
//! once. The daemon meters every 200 ms here (`--storage-meter-interval`,
//! hidden; 10 s by default).

mod common;

use common::daemon::Daemon;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};
use store::Store;

const INTERVAL_MS: i64 = 200;
const HOUR_MS: f64 = 3_600_000.0;
/// 32 MB, as the API parses "32MB".
const CAPACITY: u64 = 32_000_000;

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `airlock usage --by token --json` on the daemon's store: its rows.
fn usage_by_token(d: &Daemon) -> Vec<Value> {
    let out = Command::new(common::AIRLOCK)
        .args(["usage", "--by", "token", "--json", "--store"])
        .arg(&d.store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::describe(&out));
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The usage row of token id `token` (`Null` if it has none).
fn row_of(d: &Daemon, token: &str) -> Value {
    usage_by_token(d)
        .into_iter()
        .find(|r| r["key"] == token)
        .unwrap_or(Value::Null)
}

/// The value of the `/metrics` sample named (with labels) `sample`.
fn metric(d: &Daemon, sample: &str) -> f64 {
    let (status, body) = d.http("GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {sample} in /metrics:\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

/// Byte-hours of `capacity` bytes held over `[from_ms, to_ms)`.
fn byte_hours(capacity: u64, from_ms: i64, to_ms: i64) -> f64 {
    capacity as f64 * (to_ms - from_ms) as f64 / HOUR_MS
}

/// The most rounding can shift an owner's bill over `[from_ms, to_ms)`:
/// half a byte-hour per pass (and per delete).
fn rounding(from_ms: i64, to_ms: i64) -> f64 {
    ((to_ms - from_ms) / INTERVAL_MS + 3) as f64 * 0.5
}

#[test]
fn volumes_are_billed_across_deletes_and_a_kill_9() {
    let mut d = Daemon::options("storage-meter")
        .args(&["--storage-meter-interval", &format!("{INTERVAL_MS}ms")])
        .start();
    let other = d.token_create("other");
    let store = Store::open(&d.store).unwrap();
    let token_id = |name: &str| {
        store
            .list_tokens()
            .unwrap()
            .into_iter()
            .find(|t| t.name == name)
            .unwrap()
            .id
    };
    let (mine, theirs) = (token_id("test"), token_id("other"));

    // One volume each; and a snapshot of mine.
    let volume = json!({"slug": "billed", "capacity": "32MB", "region": "ord"});
    let (status, v) = d.post_as(&d.token, "/api/v2/volumes", &volume);
    assert_eq!(status, 200, "{v}");
    let (status, gone) = d.post_as(&other, "/api/v2/volumes", &volume);
    assert_eq!(status, 200, "{gone}");
    let path = format!("/api/v2/volumes/{}/snapshot", v["id"].as_str().unwrap());
    let (status, snap) = d.post_as(&d.token, &path, &json!({"slug": "billed-v1"}));
    assert_eq!(status, 200, "{snap}");
    assert_eq!(metric(&d, "airlock_volumes"), 2.0);
    assert_eq!(metric(&d, "airlock_snapshots"), 1.0);
    assert_eq!(
        metric(&d, "airlock_volume_reserved_bytes"),
        2.0 * CAPACITY as f64
    );

    // Past a pass: `airlock usage` shows volume GB-hours for both tokens.
    wait_until("a metering pass", Duration::from_secs(10), || {
        let gbh = |t: &str| row_of(&d, t)["volume_gb_hours"].as_f64().unwrap_or(0.0);
        gbh(&mine) > 0.0 && gbh(&theirs) > 0.0
    });
    let row = row_of(&d, &mine);
    assert_eq!(row["sandboxes"], 0, "{row}");
    assert!(row["snapshot_gb_hours"].is_number(), "{row}");
    assert!(metric(&d, "airlock_storage_byte_seconds_total{kind=\"volume\"}") > 0.0);

    // The other token deletes its volume: billed up to the delete, and
    // the bill stays, no longer growing.
    let created = store
        .get_volume(Some(&theirs), "billed")
        .unwrap()
        .unwrap()
        .created_at_ms;
    let before = store::now_ms();
    let (status, body) = d.http_as(&other, "DELETE", "/api/v2/volumes/billed");
    assert_eq!(status, 204, "{body}");
    let after = store::now_ms();
    let billed = |t: &str| {
        store.storage_usage_since(0).unwrap()[&Some(t.to_string())].volume_byte_hours as f64
    };
    let gone_bill = billed(&theirs);
    assert!(
        gone_bill >= byte_hours(CAPACITY, created, before) - rounding(created, after)
            && gone_bill <= byte_hours(CAPACITY, created, after) + rounding(created, after),
        "billed {gone_bill} byte-hours for {} ms",
        before - created
    );
    std::thread::sleep(Duration::from_millis(3 * INTERVAL_MS as u64));
    assert_eq!(billed(&theirs), gone_bill);
    let row = row_of(&d, &theirs);
    assert!(row["volume_gb_hours"].as_f64().unwrap() > 0.0, "{row}");
    assert_eq!(metric(&d, "airlock_volumes"), 1.0);
    assert_eq!(metric(&d, "airlock_volume_reserved_bytes"), CAPACITY as f64);

    // kill -9, down for 3 s, restart: the first pass bills the downtime,
    // once. Mine is billed from its creation up to the last pass, which
    // is at most a pass (and its own time) before now.
    let counter_before = metric(&d, "airlock_storage_byte_seconds_total{kind=\"volume\"}");
    d.kill9();
    std::thread::sleep(Duration::from_secs(3));
    d.spawn();
    let created = store
        .get_volume(Some(&mine), "billed")
        .unwrap()
        .unwrap()
        .created_at_ms;
    let restarted = store::now_ms();
    wait_until("a pass after the restart", Duration::from_secs(10), || {
        billed(&mine) >= byte_hours(CAPACITY, created, restarted)
    });
    std::thread::sleep(Duration::from_millis(3 * INTERVAL_MS as u64));
    let now = store::now_ms();
    let bill = billed(&mine);
    let (low, high) = (
        byte_hours(CAPACITY, created, now - 5 * INTERVAL_MS),
        byte_hours(CAPACITY, created, now) + rounding(created, now),
    );
    assert!(
        (low..=high).contains(&bill),
        "billed {bill} byte-hours, expected {low}..{high} (a skipped downtime is 3 s short, \
         a doubled one 3 s over)"
    );
    assert_eq!(billed(&theirs), gone_bill);
    assert!(
        metric(&d, "airlock_storage_byte_seconds_total{kind=\"volume\"}") > counter_before,
        "the counter carries on from the store's bill"
    );
    let snap_row = row_of(&d, &mine);
    if snap["allocated_size"].as_u64().unwrap_or(0) > 0 {
        assert!(
            snap_row["snapshot_gb_hours"].as_f64().unwrap() > 0.0,
            "{snap_row}"
        );
    }

    // The table shows the storage columns by token.
    let out = Command::new(common::AIRLOCK)
        .args(["usage", "--store"])
        .arg(&d.store)
        .output()
        .unwrap();
    let text = common::stdout(&out);
    assert!(
        text.contains("VOLUME GB-H") && text.contains("SNAPSHOT GB-H") && text.contains(&mine),
        "{text}"
    );

    // A storage price bills both kinds by the GB-hour.
    let out = Command::new(common::AIRLOCK)
        .args([
            "usage",
            "--by",
            "token",
            "--json",
            "--price-storage-gb-hour",
            "1000",
            "--store",
        ])
        .arg(&d.store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::describe(&out));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows.iter().find(|r| r["key"] == mine.as_str()).unwrap();
    let gbh = row["volume_gb_hours"].as_f64().unwrap() + row["snapshot_gb_hours"].as_f64().unwrap();
    let amount = row["amount"].as_f64().unwrap();
    assert!(gbh > 0.0 && (amount - gbh * 1000.0).abs() < 1e-9, "{row}");
}
