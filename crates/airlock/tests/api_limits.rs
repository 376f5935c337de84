//! The daemon's API against hostile or broken clients, over real sockets:
//! hand-built WebSocket frames after a real upgrade, messages at and over
//! the size limit, JSON that serde refuses, clients that never finish their
//! request headers, and more connections from one address than allowed.
//! Invariants: a protocol violation closes with the code RFC 6455 §7.4.1
//! assigns (1002, 1007; 1009 only for size); a bad message never costs the
//! client its session sandbox; a slow client cannot hold a socket forever
//! nor one address hold more than its share.

mod common;

use base64::Engine;
use common::daemon::{call, reply, Daemon, Ws};
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::Message;

/// Reads until the socket closes; the close frame's code and reason.
fn close_frame(ws: &mut Ws) -> Option<(CloseCode, String)> {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| (f.code, f.reason.to_string())),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// One WebSocket frame: `first` is the FIN/RSV/opcode byte; client frames
/// are masked unless `masked` is false.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask_bit = if masked { 0x80 } else { 0 };
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            f.push(mask_bit | 126);
            f.extend((n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        f.extend(key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend(payload);
    }
    f
}

fn write_raw(ws: &mut Ws, bytes: &[u8]) {
    match ws.get_mut() {
        MaybeTlsStream::Plain(s) => s.write_all(bytes).unwrap(),
        _ => unreachable!("the test daemon speaks plain ws"),
    }
}

/// A further client of sandbox `id` (its close never ends the sandbox).
fn attach(d: &Daemon, id: &str) -> Ws {
    let (ws, _) =
        tungstenite::connect(d.request(&format!("/api/v3/sandbox/{id}/connect"), None, &d.token))
            .expect("connect handshake");
    common::daemon::set_timeout(&ws);
    ws
}

/// Reads until a response to id `null` arrives.
fn reply_to_null(ws: &mut Ws) -> Value {
    loop {
        if let Message::Text(t) = ws.read().expect("reading a response") {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v.get("id") == Some(&Value::Null) {
                return v;
            }
        }
    }
}

#[test]
fn protocol_violations_close_with_their_rfc_codes_and_the_sandbox_lives() {
    let d = Daemon::start("limits");
    let (mut creator, id) = d.create(json!({}));
    let cases: &[(&str, Vec<u8>, CloseCode)] = &[
        (
            "text message that is not UTF-8",
            frame(0x81, &[b'"', 0xc3, 0x28, b'"'], true),
            CloseCode::Invalid,
        ),
        (
            "text message split between frames, not UTF-8",
            [frame(0x01, &[0xe2, 0x82], true), frame(0x80, &[0x28], true)].concat(),
            CloseCode::Invalid,
        ),
        (
            "close reason that is not UTF-8",
            frame(0x88, &[0x03, 0xe8, 0xff, 0xfe], true),
            CloseCode::Invalid,
        ),
        (
            "unmasked client frame",
            frame(0x81, b"{}", false),
            CloseCode::Protocol,
        ),
        (
            "RSV1 without an extension",
            frame(0xc1, b"{}", true),
            CloseCode::Protocol,
        ),
        (
            "RSV3 without an extension",
            frame(0x91, b"{}", true),
            CloseCode::Protocol,
        ),
        (
            "reserved data opcode 3",
            frame(0x83, b"{}", true),
            CloseCode::Protocol,
        ),
        (
            "reserved control opcode 0xB",
            frame(0x8b, b"", true),
            CloseCode::Protocol,
        ),
        (
            "fragmented ping",
            frame(0x09, b"", true),
            CloseCode::Protocol,
        ),
        (
            "ping with 126 bytes",
            frame(0x89, &[0; 126], true),
            CloseCode::Protocol,
        ),
        (
            "continuation with nothing to continue",
            frame(0x80, b"{}", true),
            CloseCode::Protocol,
        ),
    ];
    for (what, bytes, want) in cases {
        let mut ws = attach(&d, &id);
        write_raw(&mut ws, bytes);
        let got = close_frame(&mut ws);
        assert_eq!(got.as_ref().map(|f| f.0), Some(*want), "{what}: {got:?}");
    }
    // None of it touched the sandbox or its creator's connection.
    let r = call(&mut creator, 1, "envGet", json!({"key": "HOME"}));
    assert_eq!(r["result"]["ok"], "/root", "{r}");
}

#[test]
fn a_20_mib_message_in_one_frame_is_served_and_over_100_mib_closes_1009() {
    let d = Daemon::start("limits");
    let (mut ws, _id) = d.create(json!({}));
    // A `Uint8Array` body as the JS SDK sends it: one stream chunk, one
    // message, base64. tungstenite sends a message as one frame: 20 MiB of
    // it, over the 16 MiB frame limit the library has by default.
    let note = |method: &str, params: Value| {
        Message::text(json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string())
    };
    let chunk = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; 15 << 20]);
    let chunk = note(
        "$sandbox.stream.enqueue",
        json!({"streamId": 7, "data": chunk}),
    );
    assert!(chunk.len() > 20 << 20, "{}", chunk.len());
    ws.send(note("$sandbox.stream.start", json!({"streamId": 7})))
        .unwrap();
    ws.send(chunk).unwrap();
    ws.send(note("$sandbox.stream.end", json!({"streamId": 7})))
        .unwrap();
    let r = call(
        &mut ws,
        1,
        "writeFile",
        json!({"path": "/tmp/big", "contentStreamId": 7}),
    );
    assert_eq!(r["result"], json!({"ok": null}), "{r}");
    let r = call(&mut ws, 2, "stat", json!({"path": "/tmp/big"}));
    assert_eq!(r["result"]["ok"]["size"], 15 << 20, "{r}");
    // Over MAX_MESSAGE (100 MiB): 1009. The daemon closes as soon as it has
    // the frame's length, while the client still writes, so the client may
    // see a reset instead of the close frame.
    let _ = ws.send(Message::text("x".repeat(101 << 20)));
    let got = close_frame(&mut ws);
    assert!(matches!(got, Some((CloseCode::Size, _)) | None), "{got:?}");
}

#[test]
fn bad_messages_get_error_replies_and_the_session_sandbox_lives() {
    let d = Daemon::start("limits");
    let (mut ws, id) = d.create(json!({}));
    // A lone surrogate escape, as JSON.stringify writes a lone surrogate:
    // answered on its id, not a close that ends the session sandbox.
    ws.send(Message::text(
        r#"{"jsonrpc":"2.0","id":7,"method":"writeTextFile","params":{"path":"/tmp/s","content":"\udc80"}}"#,
    ))
    .unwrap();
    let r = reply(&mut ws, 7);
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("surrogate"), "{r}");
    // Not JSON, a binary message that is not UTF-8, a batch, an object
    // that is not JSON-RPC: each answered to id null.
    for (what, msg, code) in [
        ("not JSON", Message::text("{not json"), -32700),
        (
            "binary, not UTF-8",
            Message::binary(vec![0xff, 0xfe]),
            -32700,
        ),
        (
            "a batch",
            Message::text(r#"[{"jsonrpc":"2.0","id":1}]"#),
            -32600,
        ),
        ("not JSON-RPC", Message::text("{}"), -32600),
        ("not an object", Message::text("42"), -32600),
    ] {
        ws.send(msg).unwrap();
        let r = reply_to_null(&mut ws);
        assert_eq!(r["error"]["code"], code, "{what}: {r}");
    }
    // The same connection still drives the same sandbox.
    let r = call(
        &mut ws,
        8,
        "writeTextFile",
        json!({"path": "/tmp/s", "content": "ok"}),
    );
    assert!(r["result"].get("ok").is_some(), "{r}");
    let r = call(&mut ws, 9, "readTextFile", json!({"path": "/tmp/s"}));
    assert_eq!(r["result"]["ok"], "ok", "{r}");
    assert_eq!(d.http("GET", &format!("/api/v3/sandbox/{id}")).0, 200);
}

/// A raw HTTP connection from `from` (a loopback address) to the daemon.
fn connect_from(d: &Daemon, from: &str) -> TcpStream {
    let addr: SocketAddr = d.addr.parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let tcp = rt
        .block_on(async {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.bind(format!("{from}:0").parse().unwrap())?;
            s.connect(addr).await
        })
        .expect("connecting to the daemon");
    let tcp = tcp.into_std().unwrap();
    tcp.set_nonblocking(false).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    tcp
}

/// `GET /health` on a keep-alive connection: the status line.
fn health(tcp: &mut TcpStream) -> String {
    tcp.write_all(b"GET /health HTTP/1.1\r\nhost: airlock\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    // The answer is small: a head and the body "ok".
    while !got.ends_with(b"\r\n\r\nok") {
        let n = tcp.read(&mut buf).expect("reading /health");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().unwrap().to_string()
}

/// Reads until the daemon closes the connection; what it sent. Fails if
/// the connection is still open after the 60 s read timeout.
fn read_until_closed(tcp: &mut TcpStream) -> String {
    let mut got = Vec::new();
    match tcp.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("connection not closed by the daemon: {e}"),
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn slow_headers_are_cut_and_one_address_is_capped() {
    let d = Daemon::options("limits")
        .args(&["--header-timeout", "15s", "--max-connections-per-ip", "8"])
        .start();
    // Seven clients that send half a request head and then nothing.
    let mut slow: Vec<TcpStream> = (0..7)
        .map(|_| {
            let mut s = connect_from(&d, "127.0.0.1");
            s.write_all(b"GET /health HTTP/1.1\r\nhost: air").unwrap();
            s
        })
        .collect();
    // The eighth slot: a working keep-alive client.
    let mut good = connect_from(&d, "127.0.0.1");
    assert_eq!(health(&mut good), "HTTP/1.1 200 OK");
    // A ninth connection from the same address is refused, saying why.
    let mut ninth = connect_from(&d, "127.0.0.1");
    let _ = ninth.write_all(b"GET /health HTTP/1.1\r\nhost: airlock\r\n\r\n");
    let refused = read_until_closed(&mut ninth);
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(refused.contains("--max-connections-per-ip"), "{refused}");
    // The connections already open still work, and so does another address.
    assert_eq!(health(&mut good), "HTTP/1.1 200 OK");
    let mut other = connect_from(&d, "127.0.0.2");
    assert_eq!(health(&mut other), "HTTP/1.1 200 OK");
    // Every API connection has TCP keepalive: a peer that vanished without
    // closing is noticed even on a silent WebSocket, which has no timeout.
    let port = d.addr.rsplit(':').next().unwrap();
    let out = std::process::Command::new("ss")
        .args(["-Htno", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .expect("ss");
    let sockets = String::from_utf8_lossy(&out.stdout);
    // The slow clients' sockets: nothing in flight, so the keepalive timer
    // is the one armed.
    for s in &slow {
        let peer = s.local_addr().unwrap().to_string();
        let line = sockets.lines().find(|l| l.contains(&format!("{peer} ")));
        assert!(
            line.is_some_and(|l| l.contains("timer:(keepalive")),
            "{peer}: {sockets}"
        );
    }
    // The slow clients are disconnected (the header timeout), never served.
    for s in &mut slow {
        let got = read_until_closed(s);
        assert!(!got.contains("200 OK"), "{got}");
    }
    // So are idle keep-alive connections (the same timer, armed after
    // each response).
    for s in [&mut good, &mut other] {
        let got = read_until_closed(s);
        assert!(!got.contains("200 OK"), "{got}");
    }
    // Their slots are free again.
    let mut again = connect_from(&d, "127.0.0.1");
    assert_eq!(health(&mut again), "HTTP/1.1 200 OK");
}

/// Completed calls of `method`, from the daemon's metrics.
fn calls_done(d: &Daemon, method: &str) -> u64 {
    let (_, metrics) = d.http("GET", "/metrics");
    let want = format!("airlock_rpc_calls_total{{method=\"{method}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(want.as_str()))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// ATTACK: a client that asks for big files and never reads the answers
/// cannot make the daemon hold more than `FILE_BUDGET` (768 MiB) of them,
/// memory outside any sandbox's cgroup: a readFile that would exceed it
/// fails at once with an error saying so, and once the client reads its
/// answers the budget is free again. (Before, readFile of anything over the
/// agent's 1 MiB frame failed; files now move, so their bytes are bounded.)
#[test]
fn big_reads_a_client_does_not_take_stay_within_the_daemon_file_budget() {
    let d = Daemon::start("limits");
    // The client takes the replies whole when it finally reads them.
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(128 << 20))
        .max_frame_size(Some(128 << 20));
    let (mut ws, _) = tungstenite::client::connect_with_config(
        d.request("/api/v3/sandboxes/create", Some(json!({})), &d.token),
        Some(config),
        3,
    )
    .expect("create handshake");
    common::daemon::set_timeout(&ws);
    // 45 MiB: each reply holds 60 MiB of base64, so 12 fit in the budget.
    let size = 45 << 20;
    let r = call(
        &mut ws,
        1,
        "spawn",
        json!({"command": "sh", "args": ["-c", format!("head -c {size} /dev/urandom > /root/big")],
               "stdout": "null", "stderr": "null"}),
    );
    let pid = r["result"]["ok"]["pid"].clone();
    let r = call(&mut ws, 2, "processWait", json!({"pid": pid}));
    assert_eq!(r["result"]["ok"]["code"], 0, "{r}");

    let asked = 16u64;
    for i in 0..asked {
        ws.send(Message::text(
            json!({"jsonrpc": "2.0", "id": 100 + i, "method": "readFile", "params": {"path": "/root/big"}})
                .to_string(),
        ))
        .unwrap();
    }
    // Every read is answered (queued to the socket) before the client reads
    // one byte of the answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while calls_done(&d, "readFile") < asked {
        assert!(
            std::time::Instant::now() < deadline,
            "the reads did not finish"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (mut whole, mut refused) = (0, 0);
    // Answers come in the order they were ready.
    for _ in 0..asked {
        let r = match ws.read().expect("reading an answer") {
            Message::Text(t) => serde_json::from_str::<Value>(&t).unwrap(),
            other => panic!("unexpected {other:?}"),
        };
        if let Some(b64) = r["result"]["ok"].as_str() {
            let n = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap()
                .len();
            assert_eq!(n, size, "a whole file");
            whole += 1;
        } else {
            let msg = r["result"]["error"]["message"].as_str().unwrap_or_default();
            assert!(msg.contains("the daemon is already moving 768 MiB"), "{r}");
            refused += 1;
        }
    }
    assert_eq!((whole, refused), (12, 4), "12 × 60 MiB fit in 768 MiB");
    // Read, the answers gave their budget back.
    let r = call(&mut ws, 200, "readFile", json!({"path": "/root/big"}));
    assert!(r["result"]["ok"].is_string(), "{}", r["result"]["error"]);
}
