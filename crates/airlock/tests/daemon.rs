//! The daemon over its wire protocol, with a raw WebSocket client: errors
//! in the protocol's shapes, malformed input, lifetimes, and recovery after
//! `kill -9`. (The official SDKs are exercised in tests/sdk/.)

mod common;

use base64::Engine;
use common::daemon::{call, run_python, set_timeout, Daemon, Ws};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

fn daemon() -> Daemon {
    daemon_with(&[])
}

fn daemon_with(extra: &[&str]) -> Daemon {
    Daemon::options("daemon").args(extra).start()
}

/// Reads until the socket closes; returns the close code.
fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| f.code),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

fn sandbox_leftovers(id: &str) -> Vec<String> {
    let mut left = Vec::new();
    if Path::new(common::STATE_DIR).join(id).exists() {
        left.push("state dir".into());
    }
    if common::cgroup_exists(id) {
        left.push("cgroup".into());
    }
    // The gvisor backend's: runsc's container state.
    if !common::runsc_files_of(id).is_empty() {
        left.push("runsc state".into());
    }
    left
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn spawn_wait_and_streams_over_the_wire() {
    let d = daemon();
    let (mut ws, id) = d.create(json!({"memory_mb": 1024}));
    assert!(id.starts_with("sbx_ord_") && id.len() == 28, "{id}");
    let r = call(
        &mut ws,
        1,
        "spawn",
        json!({"command": "sh", "args": ["-c", "echo out; exit 4"], "stdout": "piped", "stderr": "null"}),
    );
    let ok = &r["result"]["ok"];
    assert!(ok["stderrStreamId"].is_null(), "{r}");
    let sid = ok["stdoutStreamId"].as_u64().unwrap();
    let pid = ok["pid"].as_u64().unwrap();
    ws.send(Message::text(
        json!({"jsonrpc": "2.0", "id": 2, "method": "processWait", "params": {"pid": pid}})
            .to_string(),
    ))
    .unwrap();
    let (mut started, mut data, mut ended, mut status) = (false, Vec::new(), false, Value::Null);
    while !ended || status.is_null() {
        let Message::Text(t) = ws.read().unwrap() else {
            continue;
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["jsonrpc"], "2.0", "{v}");
        match v["method"].as_str() {
            Some("$sandbox.stream.start") if v["params"]["streamId"] == sid => started = true,
            Some("$sandbox.stream.enqueue") if v["params"]["streamId"] == sid => {
                assert!(started, "enqueue before start");
                let chunk = base64::engine::general_purpose::STANDARD
                    .decode(v["params"]["data"].as_str().unwrap())
                    .unwrap();
                assert!(!chunk.is_empty(), "empty enqueue");
                data.extend(chunk);
            }
            Some("$sandbox.stream.end") if v["params"]["streamId"] == sid => ended = true,
            _ if v["id"] == 2 => status = v["result"]["ok"].clone(),
            _ => {}
        }
    }
    assert_eq!(data, b"out\n");
    assert_eq!(
        status,
        json!({"success": false, "code": 4, "signal": null, "oom": null})
    );
    // Errors in the protocol's shapes.
    let r = call(&mut ws, 3, "readFile", json!({"path": "/nope"}));
    assert_eq!(r["result"]["error"]["constructorName"], "NotFound", "{r}");
    let r = call(
        &mut ws,
        4,
        "spawn",
        json!({"command": "no-such-command", "stdout": "null", "stderr": "null"}),
    );
    assert_eq!(r["result"]["error"]["constructorName"], "NotFound", "{r}");
    let r = call(&mut ws, 5, "processWait", json!({"pid": 999_999}));
    assert_eq!(
        r["result"]["error"],
        json!({"constructorName": "TypeError", "code": "ENOENT", "message": "no process with pid 999999"})
    );
}

#[test]
fn bad_requests_get_the_documented_errors() {
    let d = daemon();
    let (status, body) = d.create_err(json!({}), "ddo_wrong");
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("INVALID_TOKEN")),
        "{body}"
    );
    let (status, body) = d.create_err(json!({"memory_mb": 10}), &d.token);
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("INVALID_CONFIG")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("between 768 and 4096"),
        "{body}"
    );
    let (status, body) = d.create_err(json!({"timeout": "forever"}), &d.token);
    assert_eq!(status, 400, "{body}");
    let err = tungstenite::connect(d.request(
        "/api/v3/sandbox/sbx_ord_00000000000000000000/connect",
        None,
        &d.token,
    ))
    .unwrap_err();
    assert!(
        matches!(err, tungstenite::Error::Http(ref r) if r.status() == 404),
        "{err:?}"
    );
    assert_eq!(
        d.http("DELETE", "/api/v3/sandbox/sbx_ord_00000000000000000000")
            .0,
        404
    );

    let (mut ws, _id) = d.create(json!({}));
    let r = call(&mut ws, 1, "noSuchMethod", json!({}));
    assert_eq!(r["error"]["code"], -32601, "{r}");
    assert_eq!(r["error"]["message"], "Method not found");
    ws.send(Message::text(
        r#"{"jsonrpc":"2.0","id":2,"method":"spawn","params":"x"}"#,
    ))
    .unwrap();
    let r = loop {
        let Message::Text(t) = ws.read().unwrap() else {
            continue;
        };
        break serde_json::from_str::<Value>(&t).unwrap();
    };
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let r = call(&mut ws, 3, "vscode", json!({}));
    assert_eq!(
        r["result"]["error"]["constructorName"], "NotSupported",
        "{r}"
    );
    // Served by the agent, which checks the params.
    let r = call(&mut ws, 4, "spawnDeno", json!({}));
    assert_eq!(r["result"]["error"]["constructorName"], "TypeError", "{r}");
    assert!(
        r["result"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"entrypoint\""),
        "{r}"
    );
    // The JS SDK's text ping is answered, not treated as an error.
    ws.send(Message::text("ping")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("pong"));
    // Not JSON: a parse error to id null; the connection lives on (see
    // tests/api_limits.rs for the other malformed messages).
    ws.send(Message::text("{not json")).unwrap();
    let r = loop {
        let Message::Text(t) = ws.read().unwrap() else {
            continue;
        };
        break serde_json::from_str::<Value>(&t).unwrap();
    };
    assert_eq!(
        (&r["id"], &r["error"]["code"]),
        (&Value::Null, &json!(-32700)),
        "{r}"
    );
    // Over MAX_MESSAGE (100 MiB): closed with 1009. The daemon closes as soon
    // as it reads the frame's length, while the client is still writing, so
    // the client may see a reset instead of the close frame; a daemon that
    // took the message would answer it with a parse error.
    let _ = ws.send(Message::text("x".repeat(101 << 20)));
    let code = close_code(&mut ws);
    assert!(matches!(code, Some(CloseCode::Size) | None), "{code:?}");
    let (mut ws, _) = d.create(json!({}));
    assert_eq!(
        call(&mut ws, 1, "envGet", json!({"key": "HOME"}))["result"]["ok"],
        "/root"
    );
}

/// Missing or mistyped params, whether the agent or the daemon checks them,
/// are a top-level `-32602` whose `data` is a ZodError: `message` is the
/// JSON of zod 4 issues naming the bad field. Both SDKs' Python client
/// raises `RpcValidationError` only for this shape. Errors of the call
/// itself (a file that is not there) stay in `result.error`.
#[test]
fn missing_or_mistyped_params_are_zod_validation_errors() {
    let d = daemon();
    let (mut ws, _id) = d.create(json!({}));
    let issues = |r: &Value| -> Value {
        assert_eq!(r["error"]["code"], -32602, "{r}");
        assert_eq!(r["error"]["message"], "Invalid params", "{r}");
        assert_eq!(r["error"]["data"]["constructorName"], "ZodError", "{r}");
        assert!(r.get("result").is_none(), "{r}");
        serde_json::from_str(r["error"]["data"]["message"].as_str().unwrap()).unwrap()
    };

    // Served by the agent: zod's text, field order and indentation included.
    let r = call(&mut ws, 1, "readTextFile", json!({}));
    assert_eq!(
        r["error"]["data"]["message"],
        "[\n  {\n    \"expected\": \"string\",\n    \"code\": \"invalid_type\",\n    \"path\": [\n      \"path\"\n    ],\n    \"message\": \"Invalid input: expected string, received undefined\"\n  }\n]",
        "{r}"
    );
    let r = call(
        &mut ws,
        2,
        "writeTextFile",
        json!({"path": 7, "content": "x"}),
    );
    assert_eq!(
        issues(&r),
        json!([{"expected": "string", "code": "invalid_type", "path": ["path"],
                "message": "Invalid input: expected string, received number"}])
    );
    // An option nested under `options` (as the JS SDK sends it) is named there.
    let r = call(
        &mut ws,
        3,
        "mkdir",
        json!({"path": "/tmp/d", "options": {"recursive": "yes"}}),
    );
    assert_eq!(
        issues(&r)[0]["path"],
        json!(["options", "recursive"]),
        "{r}"
    );
    let r = call(&mut ws, 4, "processKill", json!({}));
    assert_eq!(issues(&r)[0]["path"], json!(["pid"]), "{r}");
    let r = call(
        &mut ws,
        5,
        "spawn",
        json!({"command": "true", "args": ["a", 1]}),
    );
    assert_eq!(issues(&r)[0]["path"], json!(["args", "1"]), "{r}");
    let r = call(&mut ws, 6, "envSet", json!({"key": "A"}));
    assert_eq!(issues(&r)[0]["path"], json!(["value"]), "{r}");

    // Checked by the daemon.
    let r = call(&mut ws, 7, "fetch", json!({"method": "GET"}));
    assert_eq!(
        issues(&r),
        json!([{"expected": "string", "code": "invalid_type", "path": ["url"],
                "message": "Invalid input: expected string, received undefined"}])
    );
    let r = call(
        &mut ws,
        8,
        "fetch",
        json!({"url": "http://localhost/", "pid": "1"}),
    );
    assert_eq!(issues(&r)[0]["path"], json!(["pid"]), "{r}");

    // Semantic errors are unchanged: a Deno error class in `result.error`.
    let r = call(&mut ws, 9, "readTextFile", json!({"path": "/no/such/file"}));
    assert_eq!(r["result"]["error"]["constructorName"], "NotFound", "{r}");
    let r = call(&mut ws, 10, "processKill", json!({"pid": -3}));
    assert_eq!(r["result"]["error"]["constructorName"], "TypeError", "{r}");
    // The connection is still good.
    assert_eq!(
        call(&mut ws, 11, "envGet", json!({"key": "HOME"}))["result"]["ok"],
        "/root"
    );
}

#[test]
fn session_sandbox_ends_with_its_creator_and_timed_one_outlives_it() {
    let d = daemon();
    let (mut ws, session_id) = d.create(json!({}));
    call(&mut ws, 1, "envGet", json!({"key": "HOME"}));
    // A second client attaches; its disconnect does not end the sandbox.
    let (mut other, _) = tungstenite::connect(d.request(
        &format!("/api/v3/sandbox/{session_id}/connect"),
        None,
        &d.token,
    ))
    .unwrap();
    set_timeout(&other);
    assert_eq!(
        call(&mut other, 1, "envGet", json!({"key": "HOME"}))["result"]["ok"],
        "/root"
    );
    other.close(None).unwrap();
    let _ = close_code(&mut other);
    assert_eq!(
        call(&mut ws, 2, "envGet", json!({"key": "HOME"}))["result"]["ok"],
        "/root"
    );
    ws.close(None).unwrap();
    let _ = close_code(&mut ws);
    wait_until(
        "the session sandbox to end",
        Duration::from_secs(10),
        || sandbox_leftovers(&session_id).is_empty(),
    );

    let stop_at = store::now_ms() + 60_000;
    let (mut ws, timed_id) = d.create(json!({"stop_at_ms": stop_at}));
    ws.close(None).unwrap();
    let _ = close_code(&mut ws);
    std::thread::sleep(Duration::from_millis(300));
    let (mut again, _) = tungstenite::connect(d.request(
        &format!("/api/v3/sandbox/{timed_id}/connect"),
        None,
        &d.token,
    ))
    .unwrap();
    set_timeout(&again);
    assert_eq!(
        call(&mut again, 1, "envGet", json!({"key": "HOME"}))["result"]["ok"],
        "/root"
    );
    // Extend, then kill through the API: the socket is closed with 1001.
    let (code, body) = d.http("DELETE", &format!("/api/v3/sandbox/{timed_id}"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(close_code(&mut again), Some(CloseCode::Away));
    assert!(sandbox_leftovers(&timed_id).is_empty());
    let (_, list) = d.http("GET", "/api/v2/sandboxes");
    let list: Value = serde_json::from_str(&list).unwrap();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == timed_id.as_str())
        .expect("listed");
    assert_eq!(entry["status"], "stopped");
    assert!(entry["stoppedAt"].is_string());
}

#[test]
fn deadline_ends_the_sandbox() {
    let d = daemon();
    let (mut ws, id) = d.create(json!({"timeout": "2s"}));
    let start = Instant::now();
    assert_eq!(close_code(&mut ws), Some(CloseCode::Away));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(sandbox_leftovers(&id).is_empty());
}

#[test]
fn kill_9_of_the_daemon_leaves_nothing_after_restart() {
    let mut d = daemon();
    let stop_at = store::now_ms() + 120_000;
    let mut ids = Vec::new();
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let (mut ws, id) = d.create(json!({"stop_at_ms": stop_at}));
        let r = call(
            &mut ws,
            1,
            "spawn",
            json!({"command": "sleep", "args": ["1000"], "stdout": "null", "stderr": "null"}),
        );
        assert!(r["result"]["ok"]["pid"].is_number(), "{r}");
        ids.push(id);
        sockets.push(ws);
    }
    for id in &ids {
        assert!(!sandbox_leftovers(id).is_empty(), "{id} should be running");
    }
    // A network decision for the audit log: a name that allowNet (empty)
    // does not allow.
    run_python(
        &mut sockets[0],
        2,
        "import socket\ntry:\n    socket.getaddrinfo('audit-me.test', 80)\nexcept socket.gaierror:\n    pass",
    );
    // Let the meter write a sample (every METER_INTERVAL) and the audit
    // writer its batch.
    std::thread::sleep(Duration::from_millis(1200));
    for id in &ids {
        assert!(
            !common::sandbox_pids(id).is_empty(),
            "{id} has no processes"
        );
    }
    d.kill9();
    // With the daemon gone, each agent (PID 1) reads EOF on its control
    // socket and exits, which ends every process of the sandbox and with
    // them its network namespace; no restart is needed for that. (Other
    // tests start daemons in parallel, and any daemon's start reaps the
    // directories and cgroups of sandboxes whose owner is gone, so who
    // removes those is not asserted until our own restart below.)
    for id in &ids {
        wait_until(
            "the sandbox's processes to end with the daemon",
            Duration::from_secs(30),
            || common::sandbox_pids(id).is_empty(),
        );
    }
    d.spawn();
    for id in &ids {
        assert_eq!(sandbox_leftovers(id), Vec::<String>::new(), "{id}");
    }
    let store = store::Store::open(&d.dir.join("store.db")).unwrap();
    for id in &ids {
        let rec = store.get_sandbox(id).unwrap().expect("recorded");
        assert_eq!(rec.status, "stopped");
        assert_eq!(rec.exit_reason.as_deref(), Some("daemon restart"));
        // Usage sampled before the crash survives it.
        let (usage, at) = store.get_usage(id).unwrap().unwrap();
        assert!(
            at.is_some() && usage.peak_memory_bytes > 0,
            "{id}: {usage:?}"
        );
    }
    // The network events written before the crash survive it.
    let events = store
        .net_events(&ids[0], &store::NetEventQuery::default())
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "dns" && e.name == "audit-me.test" && e.verdict == "denied"),
        "{events:?}"
    );
    // No process of those sandboxes is left: their cgroups are gone, and no
    // `sleep 1000` runs in a sandbox uid range.
    let sleepers = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("cmdline")).ok())
        .filter(|c| c == "sleep\u{0}1000\u{0}")
        .count();
    assert_eq!(sleepers, 0);
}

#[test]
fn token_cli_create_list_revoke() {
    let d = daemon();
    let store = d.dir.join("store.db");
    let airlock = |args: &[&str]| {
        let out = Command::new(common::AIRLOCK)
            .args(args)
            .arg("--store")
            .arg(&store)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, second, _) = airlock(&["token", "create", "ci"]);
    assert_eq!(code, Some(0));
    let second = second.trim().to_string();
    let (_, list, _) = airlock(&["token", "ls"]);
    assert!(list.contains("test") && list.contains("ci"), "{list}");
    assert!(
        !list.contains(&second) && !list.contains(&d.token),
        "secrets must never be listed: {list}"
    );
    let (mut ws, _) =
        tungstenite::connect(d.request("/api/v3/sandboxes/create", Some(json!({})), &second))
            .unwrap();
    ws.close(None).unwrap();
    let (code, _, _) = airlock(&["token", "revoke", "ci"]);
    assert_eq!(code, Some(0));
    let (status, body) = d.create_err(json!({}), &second);
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("INVALID_TOKEN"))
    );
    let (code, _, err) = airlock(&["token", "revoke", "no-such-token"]);
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("no active token"), "{err}");
}

#[test]
fn client_stream_may_end_before_its_request_arrives() {
    let d = daemon();
    let (mut ws, _) = d.create(json!({}));
    let note = |method: &str, params: Value| {
        Message::text(json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string())
    };
    // The whole content stream first, then the request that uses it.
    ws.send(note("$sandbox.stream.start", json!({"streamId": 7})))
        .unwrap();
    ws.send(note(
        "$sandbox.stream.enqueue",
        json!({"streamId": 7, "data": base64::engine::general_purpose::STANDARD.encode("early ")}),
    ))
    .unwrap();
    ws.send(note(
        "$sandbox.stream.enqueue",
        json!({"streamId": 7, "data": base64::engine::general_purpose::STANDARD.encode("bird")}),
    ))
    .unwrap();
    ws.send(note("$sandbox.stream.end", json!({"streamId": 7})))
        .unwrap();
    let r = call(
        &mut ws,
        1,
        "writeFile",
        json!({"path": "/tmp/early", "contentStreamId": 7}),
    );
    assert_eq!(r["result"], json!({"ok": null}), "{r}");
    // And the usual order, many times over, with the end right behind.
    for i in 0..50u64 {
        let sid = 100 + i;
        ws.send(note("$sandbox.stream.start", json!({"streamId": sid})))
            .unwrap();
        ws.send(Message::text(json!({"jsonrpc": "2.0", "id": 1000 + i, "method": "writeTextFile", "params": {"path": format!("/tmp/f{i}"), "contentStreamId": sid}}).to_string())).unwrap();
        ws.send(note("$sandbox.stream.enqueue", json!({"streamId": sid, "data": base64::engine::general_purpose::STANDARD.encode(format!("n{i}"))}))).unwrap();
        ws.send(note("$sandbox.stream.end", json!({"streamId": sid})))
            .unwrap();
    }
    let mut done = 0;
    while done < 50 {
        let Message::Text(t) = ws.read().expect("writeTextFile replies") else {
            continue;
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["id"].as_u64().is_some_and(|id| id >= 1000) {
            assert_eq!(v["result"], json!({"ok": null}), "{v}");
            done += 1;
        }
    }
    assert_eq!(
        call(&mut ws, 2, "readTextFile", json!({"path": "/tmp/early"}))["result"]["ok"],
        "early bird"
    );
    assert_eq!(
        call(&mut ws, 3, "readTextFile", json!({"path": "/tmp/f49"}))["result"]["ok"],
        "n49"
    );
}

#[test]
fn a_token_reaches_only_its_own_sandboxes() {
    let d = daemon();
    let other = d.token_create("other");
    let stop_at = store::now_ms() + 60_000;
    let (mut ws, id) = d.create(json!({"stop_at_ms": stop_at}));
    call(&mut ws, 1, "envGet", json!({"key": "HOME"}));
    // Another token can neither attach, nor extend, nor kill, nor list it.
    let err =
        tungstenite::connect(d.request(&format!("/api/v3/sandbox/{id}/connect"), None, &other))
            .unwrap_err();
    assert!(
        matches!(err, tungstenite::Error::Http(ref r) if r.status() == 404),
        "{err:?}"
    );
    assert_eq!(
        d.http_as(&other, "DELETE", &format!("/api/v3/sandbox/{id}"))
            .0,
        404
    );
    assert_eq!(
        d.http_as(&other, "DELETE", &format!("/api/v3/sandboxes/{id}"))
            .0,
        404
    );
    let (_, list) = d.http_as(&other, "GET", "/api/v2/sandboxes");
    assert!(!list.contains(&id), "{list}");
    // Its owner still can.
    let (_, list) = d.http("GET", "/api/v2/sandboxes");
    assert!(list.contains(&id), "{list}");
    assert_eq!(
        call(&mut ws, 2, "envGet", json!({"key": "HOME"}))["result"]["ok"],
        "/root"
    );
    assert_eq!(d.http("DELETE", &format!("/api/v3/sandbox/{id}")).0, 200);
}

#[test]
fn metering_matches_known_work() {
    let d = daemon();
    // 2 CPU-seconds of busy work.
    let (mut ws, cpu_id) = d.create(json!({}));
    run_python(
        &mut ws,
        1,
        "import time\nwhile time.process_time() < 2.0: pass",
    );
    // 512 MiB held for 10 s, in a sandbox that does little else.
    let (mut ws2, mem_id) = d.create(json!({}));
    let started = Instant::now();
    run_python(&mut ws2, 1, "import time\nb = bytearray(512 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\ntime.sleep(10)");
    let held = started.elapsed();
    for id in [&cpu_id, &mem_id] {
        assert_eq!(d.http("DELETE", &format!("/api/v3/sandbox/{id}")).0, 200);
    }
    let store = store::Store::open(&d.dir.join("store.db")).unwrap();
    let (cpu, _) = store.get_usage(&cpu_id).unwrap().unwrap();
    // Under gvisor the Sentry's own work for the sandbox is billed too
    // (the cgroup holds everything the sandbox costs the host).
    let (low, high) = if common::gvisor() {
        (1.7, 5.0)
    } else {
        (1.7, 2.3)
    };
    assert!(
        (low..=high).contains(&cpu.cpu_seconds()),
        "cpu seconds: {}",
        cpu.cpu_seconds()
    );
    let (mem, _) = store.get_usage(&mem_id).unwrap().unwrap();
    let expected = 0.5 * held.as_secs_f64() / 3600.0;
    let got = mem.memory_gb_hours();
    assert!(
        (got - expected).abs() <= 0.15 * expected,
        "memory GB-hours: got {got}, expected {expected}"
    );
    assert!(
        mem.peak_memory_bytes >= 512 << 20,
        "peak {}",
        mem.peak_memory_bytes
    );
    // The CLI shows the same, per sandbox.
    let out = Command::new(common::AIRLOCK)
        .args(["usage", "--by", "sandbox", "--json", "--store"])
        .arg(d.dir.join("store.db"))
        .output()
        .unwrap();
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == cpu_id.as_str())
        .expect("listed");
    assert!((row["cpu_seconds"].as_f64().unwrap() - cpu.cpu_seconds()).abs() < 1e-6);
    let bad = Command::new(common::AIRLOCK)
        .args(["usage", "--by", "colour"])
        .arg("--store")
        .arg(d.dir.join("store.db"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("label:KEY"));
}

#[test]
fn per_token_quota_refuses_the_fourth_and_frees_on_end() {
    let d = daemon_with(&["--max-sandboxes-per-token", "3"]);
    let mut held: Vec<(Ws, String)> = (0..3).map(|_| d.create(json!({}))).collect();
    let (status, body) = d.create_err(json!({}), &d.token);
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("QUOTA_EXCEEDED")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("at most 3 sandboxes"),
        "{body}"
    );
    for (i, (ws, _)) in held.iter_mut().enumerate() {
        assert_eq!(
            call(ws, i as u64, "envGet", json!({"key": "HOME"}))["result"]["ok"],
            "/root"
        );
    }
    let (mut ws, id) = held.remove(0);
    ws.close(None).unwrap();
    let _ = close_code(&mut ws);
    // The client's close returns before the teardown; the quota is free
    // once the record says the sandbox ended (after its capacity is).
    wait_until("the closed sandbox to end", Duration::from_secs(10), || {
        let (_, body) = d.http("GET", &format!("/api/v3/sandbox/{id}"));
        sandbox_leftovers(&id).is_empty() && !body.contains(r#""status":"running""#)
    });
    let (mut ws, _) = d.create(json!({}));
    assert_eq!(
        call(&mut ws, 1, "envGet", json!({"key": "HOME"}))["result"]["ok"],
        "/root"
    );
}

#[test]
fn host_capacity_fails_fast_and_recovers() {
    let d = daemon_with(&["--max-sandboxes", "2"]);
    let (a, _) = d.create(json!({}));
    let (mut b, b_id) = d.create(json!({}));
    let start = Instant::now();
    let (status, body) = d.create_err(json!({}), &d.token);
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("CAPACITY_EXHAUSTED")),
        "{body}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "refusal must be fast"
    );
    b.close(None).unwrap();
    let _ = close_code(&mut b);
    wait_until("a sandbox to end", Duration::from_secs(10), || {
        sandbox_leftovers(&b_id).is_empty()
    });
    // Its capacity is given back after the host side is gone, just before
    // the "ended" event: wait for that, not only for the leftovers.
    wait_until("the ended event", Duration::from_secs(10), || {
        let (_, body) = d.http("GET", &format!("/api/v3/events?sandbox={b_id}"));
        body.contains("\"ended\"")
    });
    let (mut c, _) = d.create(json!({}));
    assert_eq!(
        call(&mut c, 1, "envGet", json!({"key": "HOME"}))["result"]["ok"],
        "/root"
    );
    drop(a);
}

#[test]
fn hundred_concurrent_creates_against_a_limit_of_ten() {
    let d = daemon_with(&["--max-sandboxes-per-token", "10"]);
    let results: Vec<Result<(Ws, String), u16>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..100)
            .map(|_| {
                s.spawn(|| {
                    match tungstenite::connect(d.request(
                        "/api/v3/sandboxes/create",
                        Some(json!({})),
                        &d.token,
                    )) {
                        Ok((ws, resp)) => Ok((
                            ws,
                            resp.headers()["x-deno-sandbox-id"]
                                .to_str()
                                .unwrap()
                                .to_string(),
                        )),
                        Err(tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let admitted: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|(_, id)| id.clone())
        .collect();
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(admitted.len(), 10, "refusals: {refused:?}");
    assert!(refused.iter().all(|s| **s == 429), "{refused:?}");
    // Exactly ten exist; nothing half-made for the other ninety.
    let running = std::fs::read_dir("/run/airlock/sandboxes")
        .unwrap()
        .flatten()
        .filter(|e| admitted.contains(&e.file_name().to_string_lossy().into_owned()))
        .count();
    assert_eq!(running, 10);
    drop(results);
    for id in &admitted {
        wait_until("admitted sandboxes to end", Duration::from_secs(20), || {
            sandbox_leftovers(id).is_empty()
        });
    }
}

#[test]
fn oom_kill_is_reported_by_process_wait_and_the_sandbox_survives() {
    let d = daemon();
    let (mut ws, sandbox) = d.create(json!({"memory_mb": 768}));
    let r = call(
        &mut ws,
        1,
        "spawn",
        json!({"command": "python3", "args": ["-c", "b = bytearray(2 << 30)"], "stdout": "null", "stderr": "null"}),
    );
    let pid = r["result"]["ok"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("{r}"));
    let status = call(&mut ws, 2, "processWait", json!({"pid": pid}));
    if common::gvisor() {
        // Killed all the same, but the kill is gVisor's: the host cgroup's
        // OOM count that attributes it may not move.
        // Past the cgroup's limit the Sentry itself may go, and the
        // sandbox with it: the rest of this test is native's.
        let ok = &status["result"]["ok"];
        assert_eq!(
            (&ok["code"], &ok["signal"]),
            (&json!(137), &json!("SIGKILL")),
            "{status}"
        );
        return;
    } else {
        assert_eq!(
            status["result"]["ok"],
            json!({"success": false, "code": 137, "signal": "SIGKILL", "oom": "high-confidence"}),
            "{status}"
        );
    }
    // A plain SIGKILL afterwards is not blamed on memory.
    let r = call(
        &mut ws,
        3,
        "spawn",
        json!({"command": "sleep", "args": ["30"], "stdout": "null", "stderr": "null"}),
    );
    let pid = r["result"]["ok"]["pid"].as_u64().unwrap();
    call(
        &mut ws,
        4,
        "processKill",
        json!({"pid": pid, "signal": "SIGKILL"}),
    );
    let status = call(&mut ws, 5, "processWait", json!({"pid": pid}));
    assert_eq!(status["result"]["ok"]["oom"], Value::Null, "{status}");
    assert_eq!(status["result"]["ok"]["code"], 137);
    assert_eq!(
        call(&mut ws, 6, "envGet", json!({"key": "HOME"}))["result"]["ok"],
        "/root"
    );
    // The meter (every second) records one `oom` lifecycle event.
    let oom_events = || -> Vec<Value> {
        let (status, body) = d.http("GET", &format!("/api/v3/events?sandbox={sandbox}"));
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "oom")
            .cloned()
            .collect()
    };
    wait_until("an oom event", Duration::from_secs(10), || {
        !oom_events().is_empty()
    });
    let events = oom_events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail"], "oom kills: 1", "{events:?}");
}

#[test]
fn agent_oom_ends_the_sandbox_with_reason_oom() {
    native_only!("it steers the host kernel's OOM killer at the agent with oom_score_adj; under gvisor the agent is a task of the Sentry, which the host OOM killer never picks by that score");
    let d = daemon();
    let (mut ws, id) = d.create(json!({"memory_mb": 768}));
    // Make PID 1 (the agent) the memory cgroup's preferred OOM victim
    // (raising a score needs no privilege), then exhaust the sandbox's
    // memory: the kernel kills the agent, which ends the sandbox. The hogs
    // are several smaller processes (each well under the limit), forked by
    // a shell that kept score 0, so the agent's +1000 outweighs any one.
    let r = call(
        &mut ws,
        1,
        "spawn",
        json!({"command": "sh", "args": ["-c",
            "echo 1000 > /proc/1/oom_score_adj || exit 1; \
             for i in 1 2 3 4; do \
               python3 -c 'import time; b = bytearray(300 << 20); time.sleep(60)' & \
             done; wait"],
            "stdout": "null", "stderr": "null"}),
    );
    assert!(r["result"]["ok"]["pid"].is_u64(), "{r}");
    let _ = close_code(&mut ws);
    let mut inspect = Value::Null;
    wait_until("the sandbox to end", Duration::from_secs(30), || {
        let (status, body) = d.http("GET", &format!("/api/v3/sandbox/{id}"));
        assert_eq!(status, 200, "{body}");
        inspect = serde_json::from_str(&body).unwrap();
        inspect["status"] == "stopped"
    });
    assert_eq!(inspect["exitReason"], "oom", "{inspect}");
    let (status, body) = d.http("GET", &format!("/api/v3/events?sandbox={id}"));
    assert_eq!(status, 200, "{body}");
    let events: Value = serde_json::from_str(&body).unwrap();
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"created"), "{events}");
    assert!(kinds.contains(&"oom"), "{events}");
    assert_eq!(kinds.last(), Some(&"ended"), "{events}");
    let ended = events["events"].as_array().unwrap().last().unwrap();
    assert_eq!(ended["detail"], "oom", "{events}");
    // The metrics family counts it under its own reason.
    let (_, metrics) = d.http("GET", "/metrics");
    assert!(
        metrics.contains("airlock_sandboxes_ended_total{reason=\"oom\"} 1"),
        "{metrics}"
    );
}
