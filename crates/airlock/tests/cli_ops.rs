//! The operator commands (`ls`, `rm`, `inspect`, `events`) against a
//! running daemon over its HTTP API, endpoint and token from the SDKs'
//! environment variables.

mod common;

use common::daemon::Daemon;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use tungstenite::client::IntoClientRequest;

fn daemon() -> Daemon {
    Daemon::options("cli-ops").token("ops").start()
}

/// Runs `airlock ARGS` against this daemon, endpoint and token from the
/// environment as the SDKs take them.
trait Cli {
    fn cli(&self, args: &[&str]) -> Output;
    fn cli_json(&self, args: &[&str]) -> Value;
}

impl Cli for Daemon {
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(common::AIRLOCK)
            .args(args)
            .env("DENO_SANDBOX_ENDPOINT", self.endpoint())
            .env("DENO_DEPLOY_TOKEN", &self.token)
            .env_remove("DENO_DEPLOY_ENDPOINT")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(out.status.success(), "{}", common::describe(&out));
        serde_json::from_str(&common::stdout(&out))
            .unwrap_or_else(|e| panic!("{e}: {}", common::describe(&out)))
    }
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn ls_lists_running_filters_by_label_and_rejects_bad_labels() {
    let d = daemon();
    let (_ws_a, a) = d.create(json!({"memory_mb": 1024, "labels": {"app": "a", "team": "x"}}));
    let (_ws_b, b) = d.create(json!({"labels": {"app": "b"}}));

    let list = d.cli_json(&["ls", "--json"]);
    let mut got = ids(&list);
    got.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(got, want, "{list}");
    let first = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == a.as_str())
        .unwrap();
    assert_eq!(first["memoryMb"], 1024, "{first}");
    assert_eq!(first["status"], "running", "{first}");
    assert!(first["cpuSeconds"].is_number(), "{first}");

    assert_eq!(
        ids(&d.cli_json(&["ls", "--json", "--label", "app=a"])),
        [a.as_str()]
    );
    assert_eq!(
        ids(&d.cli_json(&["ls", "--json", "--label", "app=a", "--label", "team=x"])),
        [a.as_str()]
    );
    assert!(ids(&d.cli_json(&["ls", "--json", "--label", "app=zzz"])).is_empty());

    // The table.
    let out = d.cli(&["ls"]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let text = common::stdout(&out);
    let header = text.lines().next().unwrap();
    for col in ["ID", "AGE", "MEMORY", "CPU S", "STATUS", "LABELS"] {
        assert!(header.contains(col), "{text}");
    }
    let row = text.lines().find(|l| l.starts_with(&a)).expect(&text);
    assert!(row.contains("1024MiB"), "{row}");
    assert!(row.contains("running"), "{row}");
    assert!(row.contains("app=a,team=x"), "{row}");

    // Stopped ones only with --all.
    let out = d.cli(&["rm", &b]);
    assert!(out.status.success(), "{}", common::describe(&out));
    assert_eq!(ids(&d.cli_json(&["ls", "--json"])), [a.as_str()]);
    let all = d.cli_json(&["ls", "--all", "--json"]);
    let stopped = all
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == b.as_str())
        .expect("the stopped sandbox with --all");
    assert_eq!(stopped["status"], "stopped");

    // Bad filter syntax: a usage error.
    let out = d.cli(&["ls", "--label", "app"]);
    assert_eq!(out.status.code(), Some(2), "{}", common::describe(&out));
    assert!(
        common::stderr(&out).contains("k=v"),
        "{}",
        common::describe(&out)
    );
}

#[test]
fn rm_kills_the_live_one_and_reports_the_unknown_one() {
    let d = daemon();
    let (_ws, live) = d.create(json!({}));
    let unknown = "sbx_ord_000000000000000000000";
    let out = d.cli(&["rm", unknown, &live]);
    assert_eq!(out.status.code(), Some(1), "{}", common::describe(&out));
    assert!(
        common::stderr(&out).contains(&format!("no such sandbox: {unknown}")),
        "{}",
        common::describe(&out)
    );
    assert_eq!(common::stdout(&out).trim(), live);
    let info = d.cli_json(&["inspect", &live]);
    assert_eq!(info["status"], "stopped", "{info}");
    assert_eq!(info["exitReason"], "killed", "{info}");
}

#[test]
fn inspect_shows_the_record_limits_usage_and_secret_names_only() {
    let d = daemon();
    let (_ws, id) = d.create(json!({
        "memory_mb": 1024,
        "labels": {"app": "x"},
        "allow_net": ["example.com"],
        "secrets": {"K": {"hosts": ["api.test"], "value": "VALUE-XYZ"}},
    }));
    let out = d.cli(&["inspect", &id]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let text = common::stdout(&out);
    assert!(!text.contains("VALUE-XYZ"), "{text}");
    let info: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(info["id"], id.as_str());
    assert_eq!(info["status"], "running");
    assert_eq!(info["memoryMb"], 1024);
    assert_eq!(info["labels"], json!({"app": "x"}));
    assert_eq!(info["allowNet"], json!(["example.com"]));
    assert_eq!(info["secrets"], json!(["K"]));
    assert!(info["createdAt"].is_string(), "{info}");
    assert!(info["stoppedAt"].is_null(), "{info}");
    assert!(info["exitReason"].is_null(), "{info}");
    assert!(info["limits"]["cpus"].as_f64().unwrap() > 0.0, "{info}");
    assert!(info["limits"]["pids"].as_u64().unwrap() > 0, "{info}");
    assert!(info["limits"]["diskBytes"].as_u64().unwrap() > 0, "{info}");
    for k in ["cpuSeconds", "memoryGbHours", "peakMemoryBytes"] {
        assert!(info["usage"][k].is_number(), "{k}: {info}");
    }
    // --json is accepted (the output is JSON anyway).
    assert_eq!(d.cli_json(&["inspect", "--json", &id])["id"], id.as_str());

    let out = d.cli(&["inspect", "sbx_ord_000000000000000000000"]);
    assert_eq!(out.status.code(), Some(1), "{}", common::describe(&out));
    assert!(common::stderr(&out).contains("no such sandbox"));
}

fn event_kinds(d: &Daemon, id: &str) -> Vec<String> {
    let out = d.cli(&["events", id, "--json"]);
    assert!(out.status.success(), "{}", common::describe(&out));
    common::stdout(&out)
        .lines()
        .map(|l| {
            let e: Value = serde_json::from_str(l).unwrap();
            assert_eq!(e["sandboxId"], id);
            e["kind"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn events_show_created_connected_extended_ended_and_follow_prints_new_ones() {
    let d = daemon();
    // A timed sandbox, so it outlives the creating socket.
    let stop_in = json!({"timeout": "5m"});
    let (ws, id) = d.create(stop_in);
    drop(ws);
    assert_eq!(event_kinds(&d, &id), ["created"]);

    // `--follow` prints what comes later.
    let mut follow = Command::new(common::AIRLOCK)
        .args(["events", &id, "--follow"])
        .env("DENO_SANDBOX_ENDPOINT", format!("http://{}", d.addr))
        .env("DENO_DEPLOY_TOKEN", &d.token)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let mut req = format!("ws://{}/api/v3/sandbox/{id}/connect", d.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", d.token).parse().unwrap(),
    );
    let (conn, _) = tungstenite::connect(req).expect("connect handshake");
    drop(conn);
    // extendTimeout's request.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let out = Command::new("curl")
        .args(["-sf", "-X", "PATCH", "-H"])
        .arg(format!("Authorization: Bearer {}", d.token))
        .args(["-H", "content-type: application/json", "-d"])
        .arg(json!({"stop_at_ms": now_ms + 600_000}).to_string())
        .arg(format!("http://{}/api/v3/sandbox/{id}", d.addr))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::describe(&out));
    let out = d.cli(&["rm", &id]);
    assert!(out.status.success(), "{}", common::describe(&out));
    assert_eq!(
        event_kinds(&d, &id),
        ["created", "connected", "extended", "ended"]
    );

    // The table form, and the follower saw all three.
    let out = d.cli(&["events", &id]);
    let text = common::stdout(&out);
    assert!(text.lines().next().unwrap().contains("KIND"), "{text}");
    assert!(text.contains("killed"), "{text}");
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while seen.len() < 5 {
        seen.push(lines.next().expect("follow output").unwrap());
    }
    assert!(seen[0].contains("KIND"), "{seen:?}");
    for (line, kind) in seen[1..]
        .iter()
        .zip(["created", "connected", "extended", "ended"])
    {
        assert!(line.contains(kind), "{seen:?}");
    }
    follow.kill().unwrap();
    follow.wait().unwrap();

    // All of the token's sandboxes' events without an id.
    let out = d.cli(&["events", "--json"]);
    assert!(
        common::stdout(&out).contains(&id),
        "{}",
        common::describe(&out)
    );
    // Unknown sandbox.
    let out = d.cli(&["events", "sbx_ord_000000000000000000000"]);
    assert_eq!(out.status.code(), Some(1), "{}", common::describe(&out));
}

#[test]
fn daemon_down_or_no_token_says_what_to_do() {
    // A port nobody listens on: bind, note, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    for args in [
        &["ls"][..],
        &["rm", "sbx_x"],
        &["inspect", "sbx_x"],
        &["events"],
    ] {
        let out = Command::new(common::AIRLOCK)
            .args(args)
            .env("DENO_SANDBOX_ENDPOINT", &endpoint)
            .env("DENO_DEPLOY_TOKEN", "ddo_whatever")
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{args:?}: {}",
            common::describe(&out)
        );
        let err = common::stderr(&out);
        assert!(
            err.contains(&format!("is `airlock serve` running at {endpoint}?")),
            "{args:?}: {err}"
        );
    }
    // --endpoint wins over the environment.
    let out = Command::new(common::AIRLOCK)
        .args(["ls", "--endpoint", &endpoint, "--token", "t"])
        .env("DENO_SANDBOX_ENDPOINT", "http://127.0.0.1:1")
        .env_remove("DENO_DEPLOY_TOKEN")
        .output()
        .unwrap();
    assert!(
        common::stderr(&out).contains(&endpoint),
        "{}",
        common::describe(&out)
    );
    // No token anywhere.
    let out = Command::new(common::AIRLOCK)
        .args(["ls"])
        .env_remove("DENO_DEPLOY_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(
        err.contains("DENO_DEPLOY_TOKEN") && err.contains("airlock token create"),
        "{err}"
    );
}
