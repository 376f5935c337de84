//! Network audit events: `airlock audit` against a store file, and
//! `GET /api/v3/sandbox/{id}/audit` on a running daemon. The CLI tests need
//! no privileges; the daemon test, like tests/daemon.rs, needs root and the
//! static agent.

mod common;

use base64::Engine;
use common::daemon::Daemon;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use store::{NetEvent, SandboxRecord, Store};
use tungstenite::client::IntoClientRequest;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "airlock-audit-test-{}-{}",
            std::process::id(),
            common::random_hex()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sandbox_record(id: &str) -> SandboxRecord {
    SandboxRecord {
        id: id.into(),
        token_id: Some("tok_aaaaaaaaaaaa".into()),
        region: "ord".into(),
        status: store::STATUS_STOPPED.into(),
        created_at_ms: 1_700_000_000_000,
        stopped_at_ms: Some(1_700_000_060_000),
        memory_mb: 1280,
        ..Default::default()
    }
}

/// An allowed TCP connection, a denied DNS query with a hostile name, a
/// dropped UDP flow.
fn sample_events() -> Vec<NetEvent> {
    vec![
        NetEvent {
            id: 0,
            at_ms: 1_700_000_000_123,
            kind: "tcp".into(),
            name: "api.openai.com".into(),
            port: 443,
            verdict: "allowed".into(),
            reason: "allow-net api.openai.com".into(),
            upstream: Some("162.159.140.245:443".into()),
            bytes_out: 1536,
            bytes_in: 3 << 20,
            duration_ms: 1500,
            secrets: vec!["OPENAI_API_KEY".into()],
        },
        NetEvent {
            id: 0,
            at_ms: 1_700_000_001_000,
            kind: "dns".into(),
            name: "evil\u{1b}[2J.example".into(),
            port: 53,
            verdict: "denied".into(),
            reason: "not in allow-net".into(),
            upstream: None,
            bytes_out: 0,
            bytes_in: 0,
            duration_ms: 0,
            secrets: vec![],
        },
        NetEvent {
            id: 0,
            at_ms: 1_700_000_002_000,
            kind: "udp".into(),
            name: "2001:db8::1".into(),
            port: 443,
            verdict: "denied".into(),
            reason: "udp is not forwarded".into(),
            upstream: None,
            bytes_out: 1200,
            bytes_in: 0,
            duration_ms: 0,
            secrets: vec![],
        },
    ]
}

/// `airlock --store STORE audit ARGS...`
fn audit(store: &Path, args: &[&str]) -> Output {
    Command::new(common::AIRLOCK)
        .arg("--store")
        .arg(store)
        .arg("audit")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running airlock audit")
}

/// A store file with sandbox `sbx_a` and its sample events, and `sbx_quiet`
/// without any.
fn sample_store() -> (TempDir, PathBuf) {
    let dir = TempDir::new();
    let path = dir.0.join("airlock.db");
    let store = Store::open(&path).unwrap();
    store.insert_sandbox(&sandbox_record("sbx_a")).unwrap();
    store.insert_sandbox(&sandbox_record("sbx_quiet")).unwrap();
    store.record_net_events("sbx_a", &sample_events()).unwrap();
    (dir, path)
}

#[test]
fn cli_prints_a_table_of_the_events() {
    let (_dir, path) = sample_store();
    let out = audit(&path, &["sbx_a"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::describe(&out));
    let text = common::stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "TIME",
            "KIND",
            "NAME:PORT",
            "VERDICT",
            "REASON",
            "UPSTREAM",
            "OUT",
            "IN",
            "DURATION"
        ]
    );
    let tcp = lines[1];
    for cell in [
        "2023-11-14T22:13:20.123Z",
        "tcp",
        "api.openai.com:443",
        "allowed",
        "allow-net api.openai.com",
        "162.159.140.245:443",
        "1.5KiB",
        "3.0MiB",
        "1.5s",
    ] {
        assert!(tcp.contains(cell), "{cell:?} missing from {tcp:?}");
    }
    // The sandbox chose that name: its escape sequence is shown, not obeyed.
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(
        lines[2].contains("evil\\u{1b}[2J.example:53"),
        "{}",
        lines[2]
    );
    assert!(lines[2].contains(" denied "), "{}", lines[2]);
    assert!(lines[3].contains("[2001:db8::1]:443"), "{}", lines[3]);
    // Columns line up: every row's VERDICT starts where the header's does.
    let col = lines[0].find("VERDICT").unwrap();
    for l in &lines[1..] {
        assert!(
            l[col..].starts_with("allowed") || l[col..].starts_with("denied"),
            "{l:?}"
        );
    }

    let out = audit(&path, &["sbx_a", "--denied"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::describe(&out));
    let text = common::stdout(&out);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(!text.contains("allowed"), "{text}");

    let out = audit(&path, &["sbx_a", "--limit", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::describe(&out));
    assert_eq!(common::stdout(&out).lines().count(), 2);
    assert!(
        common::stderr(&out).contains("showing the first 1 of 3 events"),
        "{}",
        common::describe(&out)
    );
    let out = audit(&path, &["sbx_a", "--limit", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", common::describe(&out));
}

#[test]
fn cli_json_is_one_array_of_api_objects() {
    let (_dir, path) = sample_store();
    let out = audit(&path, &["sbx_a", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::describe(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let events = v.as_array().expect("an array");
    assert_eq!(events.len(), 3);
    let first = &events[0];
    assert!(first["id"].as_i64().unwrap() > 0, "{first}");
    assert_eq!(first["atMs"], 1_700_000_000_123i64);
    assert_eq!(first["kind"], "tcp");
    assert_eq!(first["name"], "api.openai.com");
    assert_eq!(first["port"], 443);
    assert_eq!(first["bytesOut"], 1536);
    assert_eq!(first["bytesIn"], 3 << 20);
    assert_eq!(first["durationMs"], 1500);
    assert_eq!(first["secrets"], json!(["OPENAI_API_KEY"]));
    assert_eq!(events[1]["name"], "evil\u{1b}[2J.example");
    assert_eq!(events[1]["upstream"], Value::Null);

    let out = audit(&path, &["sbx_a", "--json", "--denied"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let verdicts: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["denied", "denied"]);

    let out = audit(&path, &["sbx_quiet", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::describe(&out));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!([])
    );
}

#[test]
fn cli_known_sandbox_without_events() {
    let (_dir, path) = sample_store();
    let out = audit(&path, &["sbx_quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::describe(&out));
    let text = common::stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("TIME"), "{text}");
    assert_eq!(lines[1], "(no network events)");
}

#[test]
fn cli_unknown_sandbox_exits_1() {
    let (dir, path) = sample_store();
    let out = audit(&path, &["sbx_nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", common::describe(&out));
    assert!(out.stdout.is_empty(), "{}", common::describe(&out));
    let expected = format!("no sandbox sbx_nope in {}", path.display());
    assert!(
        common::stderr(&out).contains(&expected),
        "{}",
        common::describe(&out)
    );
    // A mistyped store path is reported the same way, and not created.
    let missing = dir.0.join("nowhere/airlock.db");
    let out = audit(&missing, &["sbx_a", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", common::describe(&out));
    assert!(
        common::stderr(&out).contains(&format!("no sandbox sbx_a in {}", missing.display())),
        "{}",
        common::describe(&out)
    );
    assert!(!dir.0.join("nowhere").exists());
}

// --- the HTTP endpoint, on a real daemon ---

fn daemon() -> Daemon {
    Daemon::options("audit").no_token().start()
}

trait Audit {
    fn token(&self, name: &str) -> String;
    fn get(&self, path: &str, token: Option<&str>) -> (u16, Value);
}

impl Audit for Daemon {
    fn token(&self, name: &str) -> String {
        self.token_create(name)
    }

    /// `GET path` with curl: (status, JSON body).
    fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}"]);
        if let Some(t) = token {
            cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
        }
        let out = cmd
            .arg(format!("http://{}{}", self.addr, path))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (
            code.trim().parse().unwrap(),
            serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
        )
    }
}

#[test]
fn audit_endpoint_serves_a_tokens_own_sandbox_events() {
    let d = daemon();
    let token = d.token("owner");
    let other = d.token("other");
    // A sandbox through the raw protocol, as the SDKs create one.
    let mut req = format!("ws://{}/api/v3/sandboxes/create", d.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let config = json!({"stop_at_ms": store::now_ms() + 60_000}).to_string();
    req.headers_mut().insert(
        "x-deno-sandbox-config",
        base64::engine::general_purpose::STANDARD
            .encode(config)
            .parse()
            .unwrap(),
    );
    let (ws, resp) = tungstenite::connect(req).expect("create handshake");
    let id = resp.headers()["x-deno-sandbox-id"]
        .to_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v3/sandbox/{id}/audit");

    let (status, body) = d.get(&path, Some(&token));
    assert_eq!((status, &body), (200, &json!({"events": []})));

    // The gateway's side, through a second connection to the daemon's
    // (WAL) store file.
    Store::open(&d.store)
        .unwrap()
        .record_net_events(&id, &sample_events())
        .unwrap();

    let (status, body) = d.get(&path, Some(&token));
    assert_eq!(status, 200, "{body}");
    let events = body["events"].as_array().expect("events array");
    assert_eq!(events.len(), 3, "{body}");
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let mut first = events[0].clone();
    first["id"] = json!(0);
    assert_eq!(first, serde_json::to_value(&sample_events()[0]).unwrap());
    assert_eq!(events[0]["bytesOut"], 1536, "{body}");
    assert_eq!(events[0]["atMs"], 1_700_000_000_123i64, "{body}");

    let (_, body) = d.get(&format!("{path}?verdict=denied"), Some(&token));
    let kinds: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["dns", "udp"], "{body}");
    let (_, body) = d.get(&format!("{path}?verdict=allowed"), Some(&token));
    assert_eq!(body["events"].as_array().unwrap().len(), 1, "{body}");
    let (_, body) = d.get(&format!("{path}?after={}&limit=1", ids[0]), Some(&token));
    assert_eq!(body["events"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["events"][0]["id"], ids[1], "{body}");
    let (_, body) = d.get(&format!("{path}?after={}", ids[2]), Some(&token));
    assert_eq!(body, json!({"events": []}));

    // No token, or a bad one.
    let (status, body) = d.get(&path, None);
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("INVALID_TOKEN"))
    );
    let (status, body) = d.get(&path, Some("ddo_wrong"));
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("INVALID_TOKEN"))
    );
    // Another token's sandbox looks like no sandbox at all.
    let (status, body) = d.get(&path, Some(&other));
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("SANDBOX_NOT_FOUND")),
        "{body}"
    );
    let (status, _) = d.get(
        "/api/v3/sandbox/sbx_ord_00000000000000000000/audit",
        Some(&token),
    );
    assert_eq!(status, 404);
    // Bad parameters: 400 in the protocol's {code, message} shape.
    for bad in [
        "verdict=maybe",
        "limit=0",
        "limit=10001",
        "limit=x",
        "after=x",
    ] {
        let (status, body) = d.get(&format!("{path}?{bad}"), Some(&token));
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("INVALID_REQUEST")),
            "{bad}: {body}"
        );
        assert!(body["message"].is_string(), "{bad}: {body}");
    }
    let (status, _) = d.get(&format!("{path}?limit=10000"), Some(&token));
    assert_eq!(status, 200);

    // The CLI reads the same events from the live daemon's store.
    let out = audit(&d.store, &[&id, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::describe(&out));
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(&cli, &body_events(&d, &path, &token));

    // Events outlive the sandbox.
    drop(ws);
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
            "-H",
        ])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("http://{}/api/v3/sandbox/{id}", d.addr))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    let (status, body) = d.get(&path, Some(&token));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 3, "{body}");
}

fn body_events(d: &Daemon, path: &str, token: &str) -> Value {
    let (status, body) = d.get(path, Some(token));
    assert_eq!(status, 200, "{body}");
    body["events"].clone()
}
