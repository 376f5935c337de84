//! End-to-end tests of the real `airlock-agent` binary over its protocol
//! socket: a small synchronous host client drives it through fd 3.
//!
//! The agent runs directly on the host here, not as PID 1, so it is made a
//! child subreaper: orphans of the processes it spawns are re-parented to it
//! exactly as they would be to PID 1 in a sandbox.

use agent_proto::{
    encode_frame, Decoder, Frame, FrameKind, FILE_WINDOW, MAX_PAYLOAD, PROTOCOL_VERSION,
    TUNNEL_WINDOW,
};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use std::collections::{BTreeSet, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long any single expectation may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(20);

enum Recv {
    Frame(Frame),
    Timeout,
    Closed,
}

/// The host side of one agent: the child process, our end of its socket and
/// the frames read but not yet consumed.
struct Agent {
    child: Child,
    sock: Option<UnixStream>,
    decoder: Decoder,
    stash: VecDeque<Frame>,
    next_call: u32,
    dir: tempfile::TempDir,
    stderr: tempfile::NamedTempFile,
    hello: Option<Frame>,
}

impl Agent {
    /// Starts the agent and reads its Hello.
    fn start() -> Self {
        let mut agent = Self::spawn_only();
        let hello = agent.next_frame_by(Instant::now() + TIMEOUT);
        agent.hello = Some(hello);
        agent
    }

    /// Starts the agent without reading anything from it.
    fn spawn_only() -> Self {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr = tempfile::NamedTempFile::new().expect("stderr file");
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_airlock-agent"));
        cmd.arg("--fd=3")
            .env("AIRLOCK_AGENT_CWD", dir.path())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.reopen().expect("reopen stderr"));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    // Already in place: just let it survive exec.
                    if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) < 0 {
                    // dup2 leaves the new fd without FD_CLOEXEC.
                    return Err(io::Error::last_os_error());
                }
                // Stand in for PID 1: orphans of its children come to it.
                if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                // Never outlive the test thread.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn airlock-agent");
        drop(theirs);
        ours.set_write_timeout(Some(TIMEOUT))
            .expect("write timeout");
        Self {
            child,
            sock: Some(ours),
            decoder: Decoder::new(),
            stash: VecDeque::new(),
            next_call: 1,
            dir,
            stderr,
            hello: None,
        }
    }

    fn cwd(&self) -> &Path {
        self.dir.path()
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn sock(&self) -> &UnixStream {
        self.sock.as_ref().expect("socket still open")
    }

    fn assert_alive(&mut self, what: &str) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "agent died after {what}: {status}; stderr:\n{}",
                self.stderr_text()
            );
        }
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    // ---- writing ----

    fn send_raw(&mut self, bytes: &[u8]) {
        self.sock().write_all(bytes).expect("write to agent socket");
    }

    fn send(&mut self, kind: FrameKind, id: u32, payload: &[u8]) {
        let mut buf = Vec::new();
        encode_frame(kind, id, payload, &mut buf);
        self.send_raw(&buf);
    }

    fn next_id(&mut self) -> u32 {
        let id = self.next_call;
        self.next_call += 1;
        id
    }

    /// Sends a Call and returns its id without waiting for the reply.
    fn send_call(&mut self, method: &str, params: Value) -> u32 {
        let id = self.next_id();
        let payload = serde_json::to_vec(&json!({"method": method, "params": params})).unwrap();
        self.send(FrameKind::Call, id, &payload);
        id
    }

    // ---- reading ----

    /// Reads the next frame off the wire (not the stash).
    fn recv(&mut self, deadline: Instant) -> Recv {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    check_agent_frame(&frame);
                    return Recv::Frame(frame);
                }
                Ok(None) => {}
                Err(e) => panic!("agent sent an undecodable frame: {e}"),
            }
            let now = Instant::now();
            if now >= deadline {
                return Recv::Timeout;
            }
            let wait = (deadline - now).clamp(Duration::from_millis(1), Duration::from_millis(100));
            self.sock().set_read_timeout(Some(wait)).unwrap();
            match self.sock.as_ref().expect("socket").read(&mut buf) {
                Ok(0) => return Recv::Closed,
                Ok(n) => self.decoder.feed(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Recv::Closed,
                Err(e) => panic!("reading agent socket: {e}"),
            }
        }
    }

    fn next_frame_by(&mut self, deadline: Instant) -> Frame {
        match self.recv(deadline) {
            Recv::Frame(f) => f,
            Recv::Timeout => panic!("no frame from the agent within {TIMEOUT:?}"),
            Recv::Closed => panic!("agent closed the socket; stderr:\n{}", self.stderr_text()),
        }
    }

    /// The first stashed frame matching `want`, else reads until one arrives
    /// (stashing the rest). `None` on timeout.
    fn take_matching(&mut self, deadline: Instant, want: impl Fn(&Frame) -> bool) -> Option<Frame> {
        if let Some(pos) = self.stash.iter().position(&want) {
            return self.stash.remove(pos);
        }
        loop {
            match self.recv(deadline) {
                Recv::Frame(f) if want(&f) => return Some(f),
                Recv::Frame(f) => self.stash.push_back(f),
                Recv::Timeout => return None,
                Recv::Closed => panic!("agent closed the socket; stderr:\n{}", self.stderr_text()),
            }
        }
    }

    /// Waits for the Reply to call `id`: `Ok(v)` for `{"ok": v}`, `Err(e)`
    /// for `{"error": e}`.
    fn reply(&mut self, id: u32, what: &str) -> Result<Value, Value> {
        let frame = self
            .take_matching(Instant::now() + TIMEOUT, |f| {
                f.kind == FrameKind::Reply && f.id == id
            })
            .unwrap_or_else(|| panic!("no reply to call {id} ({what}) within {TIMEOUT:?}"));
        parse_reply(&frame.payload)
    }

    fn call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.send_call(method, params);
        self.reply(id, method)
    }

    fn ok(&mut self, method: &str, params: Value) -> Value {
        let shown = params.to_string();
        self.call(method, params)
            .unwrap_or_else(|e| panic!("{method} {shown} failed: {e}"))
    }

    fn err(&mut self, method: &str, params: Value) -> Value {
        let shown = params.to_string();
        match self.call(method, params) {
            Ok(v) => panic!("{method} {shown} succeeded with {v}, expected an error"),
            Err(e) => e,
        }
    }

    /// Collects outbound stream `id` until its End.
    fn stream(&mut self, id: u32) -> Vec<u8> {
        let deadline = Instant::now() + TIMEOUT;
        let mut data = Vec::new();
        loop {
            let frame = self
                .take_matching(deadline, |f| {
                    f.id == id && matches!(f.kind, FrameKind::Data | FrameKind::End)
                })
                .unwrap_or_else(|| {
                    panic!(
                        "stream {id} did not end within {TIMEOUT:?}; got so far {:?}",
                        String::from_utf8_lossy(&data)
                    )
                });
            match frame.kind {
                FrameKind::Data => data.extend_from_slice(&frame.payload),
                _ => return data,
            }
        }
    }

    fn stream_text(&mut self, id: &Value) -> String {
        let id = stream_id(id);
        String::from_utf8(self.stream(id)).expect("utf-8 output")
    }

    fn assert_ping(&mut self, after: &str) {
        self.assert_alive(after);
        match self.call("ping", Value::Null) {
            Ok(v) => assert_eq!(v, json!("pong"), "ping after {after}"),
            Err(e) => panic!("ping after {after} failed: {e}"),
        }
        self.assert_alive(after);
    }

    /// `spawn` then the full stdout, stderr and wait result.
    fn run(&mut self, params: Value) -> (String, String, Value) {
        let spawned = self.ok("spawn", params);
        let out = match &spawned["stdoutStreamId"] {
            Value::Null => String::new(),
            id => self.stream_text(id),
        };
        let err = match &spawned["stderrStreamId"] {
            Value::Null => String::new(),
            id => self.stream_text(id),
        };
        let status = self.ok("processWait", json!({"pid": spawned["pid"]}));
        (out, err, status)
    }

    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Hangs up like the host does; the agent must exit 0 without having
    /// panicked anywhere.
    fn finish(mut self) {
        self.assert_alive("the test");
        self.sock = None;
        let status = self
            .wait_exit(TIMEOUT)
            .expect("agent did not exit after the host hung up");
        let stderr = self.stderr_text();
        assert!(
            !stderr.contains("panicked"),
            "agent panicked somewhere:\n{stderr}"
        );
        assert_eq!(
            status.code(),
            Some(0),
            "agent exit: {status}; stderr:\n{stderr}"
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Invariants every frame from the agent must keep.
fn check_agent_frame(frame: &Frame) {
    match frame.kind {
        FrameKind::Data => assert!(
            !frame.payload.is_empty(),
            "empty Data frame on stream {}",
            frame.id
        ),
        FrameKind::End | FrameKind::Cancel => assert!(
            frame.payload.is_empty(),
            "{:?} frame with a payload",
            frame.kind
        ),
        FrameKind::Reply => {
            let _ = parse_reply(&frame.payload);
        }
        FrameKind::Credit => assert_eq!(frame.payload.len(), 4, "Credit payload is a u32"),
        FrameKind::Hello => assert_eq!(frame.id, 0, "Hello with a non-zero id"),
        FrameKind::Call => panic!("the agent sent a Call frame"),
    }
}

/// A Reply payload: exactly `{"ok": v}` or `{"error": {constructorName, message, ...}}`.
fn parse_reply(payload: &[u8]) -> Result<Value, Value> {
    let v: Value = serde_json::from_slice(payload).expect("Reply payload is JSON");
    let obj = v.as_object().expect("Reply payload is an object");
    assert_eq!(obj.len(), 1, "Reply must have exactly one key: {v}");
    if let Some(ok) = obj.get("ok") {
        return Ok(ok.clone());
    }
    let err = obj.get("error").unwrap_or_else(|| panic!("bad Reply {v}"));
    assert!(
        err["constructorName"].is_string() && err["message"].is_string(),
        "error without constructorName/message: {err}"
    );
    Err(err.clone())
}

fn stream_id(v: &Value) -> u32 {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or_else(|| panic!("not a stream id: {v}"))
}

fn assert_error(err: &Value, constructor: &str, code: Option<&str>) {
    assert_eq!(err["constructorName"], json!(constructor), "error {err}");
    if let Some(code) = code {
        assert_eq!(err["code"], json!(code), "error {err}");
    }
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn sh(script: &str) -> Value {
    json!({"command": "/bin/sh", "args": ["-c", script], "stdout": "piped", "stderr": "piped"})
}

/// xorshift64*: deterministic "random" bytes without a dependency.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

// ---------------------------------------------------------------- hello

#[test]
fn hello_comes_first_with_the_protocol_version() {
    let mut agent = Agent::spawn_only();
    let frame = agent.next_frame_by(Instant::now() + TIMEOUT);
    assert_eq!(frame.kind, FrameKind::Hello, "first frame: {frame:?}");
    assert_eq!(frame.id, 0);
    let hello: agent_proto::Hello = serde_json::from_slice(&frame.payload).expect("Hello JSON");
    assert_eq!(hello.version, PROTOCOL_VERSION);
    assert!(hello.agent.starts_with("airlock-agent"), "{hello:?}");
    agent.assert_ping("hello");
    agent.finish();
}

#[test]
fn agent_exits_cleanly_when_the_host_hangs_up() {
    let agent = Agent::start();
    agent.finish();
}

// ---------------------------------------------------------------- robustness

#[test]
fn unknown_frame_kind_is_skipped() {
    let mut agent = Agent::start();
    let mut wire = Vec::new();
    let payload = b"{\"method\":\"ping\"}";
    wire.extend_from_slice(&((payload.len() + 5) as u32).to_be_bytes());
    wire.push(99);
    wire.extend_from_slice(&77u32.to_be_bytes());
    wire.extend_from_slice(payload);
    agent.send_raw(&wire);
    agent.assert_ping("a frame of kind 99");
    // Skipped whole: no reply to id 77.
    assert!(
        !agent
            .stash
            .iter()
            .any(|f| f.kind == FrameKind::Reply && f.id == 77),
        "a frame of unknown kind was answered"
    );
    agent.finish();
}

#[test]
fn header_shorter_than_kind_and_id_is_skipped() {
    let mut agent = Agent::start();
    for len in 0u32..5 {
        // Only the length field is consumed, so the next frame still parses.
        agent.send_raw(&len.to_be_bytes());
        agent.assert_ping(&format!("a header declaring length {len}"));
    }
    agent.finish();
}

#[test]
/// A call that cannot be read is a `TypeError`; params missing or of the
/// wrong type are a `ZodError` (the daemon answers it as JSON-RPC -32602);
/// well-typed but bad values are `TypeError`s.
fn malformed_calls_get_type_or_validation_errors() {
    let mut agent = Agent::start();

    let id = agent.next_id();
    agent.send(FrameKind::Call, id, b"{not json");
    let err = agent.reply(id, "invalid JSON").unwrap_err();
    assert_error(&err, "TypeError", None);
    agent.assert_ping("a Call with invalid JSON");

    let id = agent.next_id();
    agent.send(FrameKind::Call, id, b"");
    assert_error(
        &agent.reply(id, "empty call").unwrap_err(),
        "TypeError",
        None,
    );
    agent.assert_ping("an empty Call");

    let id = agent.next_id();
    agent.send(FrameKind::Call, id, br#"{"params":{}}"#);
    assert_error(
        &agent.reply(id, "no method").unwrap_err(),
        "TypeError",
        None,
    );

    let err = agent.err("ping", json!("a string"));
    assert_error(&err, "ZodError", None);
    agent.assert_ping("a Call whose params is a string");

    for params in [json!([1, 2]), json!(5), json!(true)] {
        let err = agent.err("readFile", params);
        assert_error(&err, "ZodError", None);
    }
    agent.assert_ping("Calls with non-object params");

    let err = agent.err("noSuchMethod", json!({}));
    assert_error(&err, "TypeError", Some("ENOSYS"));
    agent.assert_ping("an unknown method");

    // Wrongly typed params of real methods.
    assert_error(&agent.err("spawn", json!({})), "ZodError", None);
    assert_error(&agent.err("spawn", json!({"command": 5})), "ZodError", None);
    assert_error(
        &agent.err("processWait", json!({"pid": "x"})),
        "ZodError",
        None,
    );
    assert_error(
        &agent.err("processWait", json!({"pid": -1})),
        "TypeError",
        None,
    );
    assert_error(&agent.err("envSet", json!({"key": "K"})), "ZodError", None);
    let err = agent.err("readFile", json!({"path": 7}));
    assert_error(&err, "ZodError", None);
    let issues: Value = serde_json::from_str(err["message"].as_str().unwrap()).unwrap();
    assert_eq!(
        issues,
        json!([{"expected": "string", "code": "invalid_type", "path": ["path"],
                "message": "Invalid input: expected string, received number"}])
    );
    assert_error(
        &agent.err("writeFile", json!({"path": "x"})),
        "ZodError",
        None,
    );
    assert_error(
        &agent.err("writeFile", json!({"path": "x", "content": "***"})),
        "TypeError",
        None,
    );
    assert_error(
        &agent.err("processKill", json!({"pid": 1, "signal": "SIGNOPE"})),
        "TypeError",
        None,
    );
    agent.assert_ping("badly typed params");
    agent.finish();
}

#[test]
fn oversized_call_gets_a_range_error_and_the_connection_survives() {
    let mut agent = Agent::start();
    let id = agent.next_id();
    let payload_len = MAX_PAYLOAD + 1000;
    let mut wire = Vec::with_capacity(payload_len + 9);
    wire.extend_from_slice(&((payload_len + 5) as u32).to_be_bytes());
    wire.push(FrameKind::Call as u8);
    wire.extend_from_slice(&id.to_be_bytes());
    // A well-formed call, just too big.
    let mut body = br#"{"method":"ping","params":{"pad":""#.to_vec();
    body.resize(payload_len - 3, b'a');
    body.extend_from_slice(br#""}}"#);
    assert_eq!(body.len(), payload_len);
    wire.extend_from_slice(&body);
    agent.send_raw(&wire);
    let err = agent.reply(id, "oversized call").unwrap_err();
    assert_error(&err, "RangeError", None);
    agent.assert_ping("an oversized Call");

    // Oversized Data is dropped without a reply.
    let mut wire = Vec::new();
    wire.extend_from_slice(&((payload_len + 5) as u32).to_be_bytes());
    wire.push(FrameKind::Data as u8);
    wire.extend_from_slice(&4242u32.to_be_bytes());
    wire.resize(wire.len() + payload_len, 0xAB);
    agent.send_raw(&wire);
    agent.assert_ping("an oversized Data frame");
    agent.finish();
}

#[test]
fn stream_frames_for_unknown_ids_are_harmless() {
    let mut agent = Agent::start();
    agent.send(FrameKind::Data, 9001, b"nobody reads this");
    agent.assert_ping("Data for an unknown stream");
    agent.send(FrameKind::End, 9002, b"");
    agent.assert_ping("End for an unknown stream");
    agent.send(FrameKind::Cancel, 9003, b"");
    agent.assert_ping("Cancel for an unknown stream");
    // Frames only the agent sends are ignored when the host sends them.
    agent.send(FrameKind::Hello, 0, b"{}");
    agent.send(FrameKind::Reply, 3, b"{\"ok\":null}");
    agent.assert_ping("Hello and Reply from the host");
    // Data with an empty payload (which the protocol forbids) is ignored.
    agent.send(FrameKind::Data, 9004, b"");
    agent.assert_ping("empty Data");
    agent.finish();
}

/// The agent numbers its outbound streams itself. A stray Cancel naming an
/// id it has not handed out yet must not silence the stream that later gets
/// that id.
#[test]
fn cancel_for_a_future_stream_id_is_ignored() {
    let mut agent = Agent::start();
    for id in 0..64 {
        agent.send(FrameKind::Cancel, id, b"");
    }
    agent.assert_ping("Cancels for not yet allocated streams");
    let (out, err, status) = agent.run(sh("echo out; echo err >&2"));
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    assert_eq!(status["code"], json!(0));
    agent.finish();
}

#[test]
fn random_garbage_never_crashes_the_agent() {
    std::thread::scope(|scope| {
        for seed in 1..=16u64 {
            scope.spawn(move || garbage_run(seed));
        }
    });
}

/// One agent fed 10,000 bytes of garbage from `seed`.
fn garbage_run(seed: u64) {
    let mut agent = Agent::start();
    let bytes = garbage(seed, 10_000);
    // In pieces, so frame boundaries fall at random places in reads too.
    for chunk in bytes.chunks(1 + (seed as usize * 37) % 1500) {
        agent.send_raw(chunk);
    }
    std::thread::sleep(Duration::from_millis(50));
    agent.assert_alive(&format!("garbage (seed {seed})"));
    // Framing may now be lost for good (e.g. a header promised 4 GiB),
    // so a ping may go unanswered; but any answer must be well formed
    // (checked on receipt), and the agent must stay up.
    let id = agent.send_call("ping", Value::Null);
    let deadline = Instant::now() + Duration::from_millis(300);
    if let Some(f) = agent.take_matching(deadline, |f| f.kind == FrameKind::Reply && f.id == id) {
        // A garbage Call may have used the same id; only a real answer
        // to our ping can be "pong".
        if let Ok(v) = parse_reply(&f.payload) {
            assert_eq!(v, json!("pong"), "seed {seed}");
        }
    }
    agent.assert_alive(&format!("garbage and a ping (seed {seed})"));
    agent.finish();
}

// ---------------------------------------------------------------- processes

#[test]
fn spawn_pipes_output_and_reports_the_exit_code() {
    let mut agent = Agent::start();
    let spawned = agent.ok("spawn", sh("echo out; echo err >&2; exit 7"));
    assert!(spawned["pid"].as_i64().unwrap() > 0, "{spawned}");
    let out_id = stream_id(&spawned["stdoutStreamId"]);
    let err_id = stream_id(&spawned["stderrStreamId"]);
    assert_ne!(out_id, err_id);
    assert_eq!(agent.stream(out_id), b"out\n");
    assert_eq!(agent.stream(err_id), b"err\n");
    let status = agent.ok("processWait", json!({"pid": spawned["pid"]}));
    assert_eq!(
        status,
        json!({"success": false, "code": 7, "signal": null, "oom": null})
    );
    // Waiting again gives the same answer.
    let again = agent.ok("processWait", json!({"pid": spawned["pid"]}));
    assert_eq!(again, status);

    let (out, err, status) = agent.run(sh("printf ok"));
    assert_eq!((out.as_str(), err.as_str()), ("ok", ""));
    assert_eq!(
        status,
        json!({"success": true, "code": 0, "signal": null, "oom": null})
    );
    agent.finish();
}

#[test]
fn spawn_respects_null_stdio_and_cwd() {
    let mut agent = Agent::start();
    std::fs::create_dir(agent.cwd().join("sub")).unwrap();
    let spawned = agent.ok(
        "spawn",
        json!({"command": "/bin/sh", "args": ["-c", "pwd; echo e >&2"], "stdout": "piped",
               "stderr": "null", "cwd": "sub"}),
    );
    assert_eq!(spawned["stderrStreamId"], Value::Null, "{spawned}");
    let out = agent.stream_text(&spawned["stdoutStreamId"]);
    let want = agent.cwd().join("sub").canonicalize().unwrap();
    assert_eq!(
        Path::new(out.trim_end()).canonicalize().unwrap(),
        want,
        "pwd printed {out:?}"
    );
    agent.ok("processWait", json!({"pid": spawned["pid"]}));

    // The default cwd is AIRLOCK_AGENT_CWD.
    let (out, _, _) = agent.run(sh("pwd"));
    assert_eq!(
        Path::new(out.trim_end()).canonicalize().unwrap(),
        agent.cwd().canonicalize().unwrap()
    );
    agent.finish();
}

#[test]
fn stdin_stream_feeds_the_process() {
    let mut agent = Agent::start();
    let spawned = agent.ok(
        "spawn",
        json!({"command": "cat", "stdinStreamId": 1, "stdout": "piped", "stderr": "piped"}),
    );
    agent.send(FrameKind::Data, 1, b"hel");
    agent.send(FrameKind::Data, 1, b"lo");
    agent.send(FrameKind::End, 1, b"");
    assert_eq!(agent.stream_text(&spawned["stdoutStreamId"]), "hello");
    assert_eq!(agent.stream_text(&spawned["stderrStreamId"]), "");
    let status = agent.ok("processWait", json!({"pid": spawned["pid"]}));
    assert_eq!(status["code"], json!(0), "{status}");
    assert_eq!(status["success"], json!(true));

    // Stdin sent before the spawn that consumes it is kept for it.
    agent.send(FrameKind::Data, 2, b"early bird");
    agent.send(FrameKind::End, 2, b"");
    let mut params = sh("tr a-z A-Z");
    params["stdinStreamId"] = json!(2);
    let (out, _, status) = agent.run(params);
    assert_eq!(out, "EARLY BIRD");
    assert_eq!(status["code"], json!(0));
    agent.finish();
}

#[test]
fn process_kill_and_wait_report_the_signal() {
    let mut agent = Agent::start();
    let spawned = agent.ok("spawn", json!({"command": "sleep", "args": ["30"]}));
    let pid = spawned["pid"].clone();
    assert_eq!(
        agent.ok("processKill", json!({"pid": pid, "signal": "SIGTERM"})),
        Value::Null
    );
    let status = agent.ok("processWait", json!({"pid": pid}));
    assert_eq!(
        status,
        json!({"success": false, "code": 143, "signal": "SIGTERM", "oom": null})
    );
    // Killing an exited (already reaped) process is not an error.
    assert_eq!(
        agent.ok("processKill", json!({"pid": pid, "signal": "SIGKILL"})),
        Value::Null
    );

    // The default signal is SIGTERM; names without SIG work too.
    let spawned = agent.ok("spawn", json!({"command": "sleep", "args": ["30"]}));
    agent.ok(
        "processKill",
        json!({"pid": spawned["pid"], "signal": "KILL"}),
    );
    let status = agent.ok("processWait", json!({"pid": spawned["pid"]}));
    assert_eq!(status["code"], json!(137), "{status}");
    assert_eq!(status["signal"], json!("SIGKILL"), "{status}");
    agent.finish();
}

#[test]
fn unknown_pids_look_like_exited_processes() {
    let mut agent = Agent::start();
    let unknown = json!({"pid": 0x7fff_fff0});
    for method in ["processWait", "processKill"] {
        let err = agent.err(method, unknown.clone());
        assert_error(&err, "TypeError", Some("ENOENT"));
    }
    let err = agent.err(
        "ptyResize",
        json!({"pid": 0x7fff_fff0, "rows": 1, "cols": 1}),
    );
    assert_error(&err, "TypeError", Some("ENOENT"));
    // A pid the agent did not spawn is unknown too, even if it exists.
    let err = agent.err("processWait", json!({"pid": std::process::id()}));
    assert_error(&err, "TypeError", Some("ENOENT"));
    agent.finish();
}

#[test]
fn spawning_a_missing_command_is_not_found() {
    let mut agent = Agent::start();
    for command in [
        "/nonexistent/airlock-no-such-binary",
        "airlock-no-such-command",
    ] {
        let err = agent.err("spawn", json!({"command": command}));
        assert_error(&err, "NotFound", Some("ENOENT"));
    }
    agent.assert_ping("failed spawns");
    agent.finish();
}

#[test]
fn pty_spawn_has_a_terminal_of_the_requested_size() {
    let mut agent = Agent::start();
    let spawned = agent.ok(
        "spawn",
        json!({"command": "/bin/sh", "args": ["-c", "tty; stty size"],
               "pty": {"rows": 33, "cols": 101}}),
    );
    // A PTY merges stdout and stderr.
    assert_eq!(spawned["stderrStreamId"], Value::Null, "{spawned}");
    let out = agent.stream_text(&spawned["stdoutStreamId"]);
    assert!(out.contains("/dev/pts/"), "tty printed {out:?}");
    assert!(out.contains("33 101"), "stty size printed {out:?}");
    let status = agent.ok("processWait", json!({"pid": spawned["pid"]}));
    assert_eq!(status["code"], json!(0), "{status}");
    agent.finish();
}

#[test]
fn pty_resize_and_stdin() {
    let mut agent = Agent::start();
    let spawned = agent.ok(
        "spawn",
        json!({"command": "/bin/sh", "args": ["-c", "read line; echo \"got $line\"; stty size"],
               "pty": {"rows": 24, "cols": 80}, "stdinStreamId": 5}),
    );
    let pid = spawned["pid"].clone();
    agent.ok("ptyResize", json!({"pid": pid, "rows": 40, "cols": 120}));
    agent.send(FrameKind::Data, 5, b"go\n");
    let out = agent.stream_text(&spawned["stdoutStreamId"]);
    assert!(out.contains("got go"), "output {out:?}");
    assert!(out.contains("40 120"), "stty size after resize: {out:?}");
    agent.ok("processWait", json!({"pid": pid}));
    agent.send(FrameKind::End, 5, b"");

    // A process without a terminal cannot be resized.
    let spawned = agent.ok("spawn", json!({"command": "sleep", "args": ["30"]}));
    let err = agent.err(
        "ptyResize",
        json!({"pid": spawned["pid"], "rows": 10, "cols": 10}),
    );
    assert_error(&err, "TypeError", None);
    agent.ok(
        "processKill",
        json!({"pid": spawned["pid"], "signal": "SIGKILL"}),
    );
    agent.ok("processWait", json!({"pid": spawned["pid"]}));
    agent.finish();
}

#[test]
fn spawned_processes_do_not_inherit_the_control_socket() {
    let mut agent = Agent::start();
    let (out, err, status) = agent.run(json!({"command": "ls", "args": ["-l", "/proc/self/fd"]}));
    assert_eq!(status["code"], json!(0), "ls failed: {err}");
    assert!(
        !out.contains("socket:"),
        "a socket leaked into the process:\n{out}"
    );
    let mut fds = BTreeSet::new();
    for line in out.lines().filter(|l| l.starts_with('l')) {
        let (left, target) = line.split_once(" -> ").expect("ls -l symlink line");
        let fd: u32 = left
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no fd number in {line:?}"));
        match fd {
            0 => assert_eq!(target, "/dev/null", "stdin"),
            1 | 2 => assert!(target.starts_with("pipe:"), "fd {fd} -> {target}"),
            // ls's own handle on the directory it lists.
            _ => assert!(
                target.starts_with("/proc/") && target.ends_with("/fd"),
                "leaked fd {fd} -> {target}\n{out}"
            ),
        }
        fds.insert(fd);
    }
    assert!(
        fds.contains(&0) && fds.contains(&1) && fds.contains(&2),
        "{out}"
    );
    assert!(fds.len() <= 4, "unexpected fds {fds:?}:\n{out}");
    agent.finish();
}

#[test]
fn orphans_are_reaped() {
    let mut agent = Agent::start();
    let (out, _, status) = agent.run(sh("sleep 1 >/dev/null 2>&1 </dev/null & echo $!"));
    assert_eq!(status["code"], json!(0));
    let orphan: i32 = out.trim().parse().expect("background pid");
    let stat_path = format!("/proc/{orphan}/stat");
    // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces.
    let parse = |stat: &str| -> (char, i32) {
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let mut it = rest.split_whitespace();
        let state = it.next().unwrap().chars().next().unwrap();
        (state, it.next().unwrap().parse().unwrap())
    };
    if let Ok(stat) = std::fs::read_to_string(&stat_path) {
        let (_, ppid) = parse(&stat);
        assert_eq!(ppid, agent.pid(), "the orphan was re-parented elsewhere");
    }
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match std::fs::read_to_string(&stat_path) {
            Err(_) => break, // gone: reaped
            Ok(stat) => {
                let (state, ppid) = parse(&stat);
                assert!(
                    Instant::now() < deadline,
                    "orphan {orphan} not reaped: state {state}, ppid {ppid}"
                );
                if ppid != agent.pid() {
                    break; // pid reused by an unrelated process: it was reaped
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    agent.assert_ping("reaping an orphan");
    agent.finish();
}

// ---------------------------------------------------------------- env

#[test]
fn env_methods_and_what_processes_see() {
    let mut agent = Agent::start();
    let show = r#"printf '%s|%s' "${AIRLOCK_TEST_VAR-unset}" "${AIRLOCK_AGENT_CWD-unset}""#;

    assert_eq!(
        agent.ok("envGet", json!({"key": "AIRLOCK_TEST_VAR"})),
        Value::Null
    );
    assert_eq!(
        agent.ok(
            "envSet",
            json!({"key": "AIRLOCK_TEST_VAR", "value": "v 1=2"})
        ),
        Value::Null
    );
    assert_eq!(
        agent.ok("envGet", json!({"key": "AIRLOCK_TEST_VAR"})),
        json!("v 1=2")
    );
    let all = agent.ok("envToObject", json!({}));
    assert_eq!(all["AIRLOCK_TEST_VAR"], json!("v 1=2"), "{all}");
    assert!(
        all.get("AIRLOCK_AGENT_CWD").is_none(),
        "the agent's own variable leaked into the sandbox env: {all}"
    );

    let (out, _, _) = agent.run(sh(show));
    assert_eq!(out, "v 1=2|unset");

    let mut params = sh(show);
    params["clearEnv"] = json!(true);
    let (out, _, _) = agent.run(params);
    assert_eq!(out, "unset|unset", "clearEnv");

    let mut params = sh(show);
    params["env"] = json!({"AIRLOCK_TEST_VAR": "override"});
    let (out, _, _) = agent.run(params);
    assert_eq!(out, "override|unset", "per-spawn env");
    // ...without changing the default.
    assert_eq!(
        agent.ok("envGet", json!({"key": "AIRLOCK_TEST_VAR"})),
        json!("v 1=2")
    );

    assert_eq!(
        agent.ok("envDelete", json!({"key": "AIRLOCK_TEST_VAR"})),
        Value::Null
    );
    assert_eq!(
        agent.ok("envGet", json!({"key": "AIRLOCK_TEST_VAR"})),
        Value::Null
    );
    let (out, _, _) = agent.run(sh(show));
    assert_eq!(out, "unset|unset", "after envDelete");

    for bad in [
        json!({"key": "A=B", "value": "1"}),
        json!({"key": "", "value": "1"}),
    ] {
        assert_error(&agent.err("envSet", bad), "TypeError", None);
    }
    assert_error(
        &agent.err("envSet", json!({"key": "K", "value": "a\u{0}b"})),
        "TypeError",
        None,
    );
    agent.finish();
}

// ---------------------------------------------------------------- fs

#[test]
fn fs_write_read_stat_rename_remove() {
    let mut agent = Agent::start();
    let cwd = agent.cwd().to_path_buf();

    agent.ok(
        "writeFile",
        json!({"path": "a.txt", "content": b64(b"hello"), "options": {"mode": 0o640}}),
    );
    assert_eq!(std::fs::read(cwd.join("a.txt")).unwrap(), b"hello");
    assert_eq!(
        agent.ok("readFile", json!({"path": "a.txt"})),
        json!(b64(b"hello"))
    );
    let abs = cwd.join("a.txt").to_string_lossy().into_owned();
    assert_eq!(
        agent.ok("readFile", json!({"path": abs})),
        json!(b64(b"hello"))
    );
    assert_eq!(
        agent.ok("readTextFile", json!({"path": "a.txt"})),
        json!("hello")
    );

    let binary: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    agent.ok("writeFile", json!({"path": "bin", "content": b64(&binary)}));
    let back = agent.ok("readFile", json!({"path": "bin"}));
    assert_eq!(B64.decode(back.as_str().unwrap()).unwrap(), binary);

    agent.ok(
        "writeFile",
        json!({"path": "a.txt", "content": b64(b" world"), "options": {"append": true}}),
    );
    assert_eq!(std::fs::read(cwd.join("a.txt")).unwrap(), b"hello world");

    let info = agent.ok("stat", json!({"path": "a.txt"}));
    for key in [
        "isFile",
        "isDirectory",
        "isSymlink",
        "size",
        "mtime",
        "atime",
        "birthtime",
        "ctime",
        "dev",
        "ino",
        "mode",
        "nlink",
        "uid",
        "gid",
        "rdev",
        "blksize",
        "blocks",
        "isBlockDevice",
        "isCharDevice",
        "isFifo",
        "isSocket",
    ] {
        assert!(info.get(key).is_some(), "stat lacks {key}: {info}");
    }
    assert_eq!(info["isFile"], json!(true));
    assert_eq!(info["isDirectory"], json!(false));
    assert_eq!(info["isSymlink"], json!(false));
    assert_eq!(info["size"], json!(11));
    let mode = info["mode"].as_u64().unwrap();
    assert_eq!(
        mode & 0o170000,
        0o100000,
        "mode {mode:o} is not a regular file"
    );
    assert_eq!(mode & 0o777, 0o640, "mode {mode:o}");
    let mtime = info["mtime"].as_str().expect("mtime is an ISO string");
    assert!(mtime.contains('T') && mtime.ends_with('Z'), "mtime {mtime}");
    let dir_info = agent.ok("stat", json!({"path": "."}));
    assert_eq!(dir_info["isDirectory"], json!(true));
    assert_eq!(dir_info["isFile"], json!(false));

    // mkdir: recursive creates parents and tolerates existing dirs.
    agent.ok(
        "mkdir",
        json!({"path": "d/e/f", "options": {"recursive": true}}),
    );
    assert!(cwd.join("d/e/f").is_dir());
    agent.ok(
        "mkdir",
        json!({"path": "d/e/f", "options": {"recursive": true}}),
    );
    assert_error(
        &agent.err("mkdir", json!({"path": "d/e/f"})),
        "AlreadyExists",
        Some("EEXIST"),
    );
    assert_error(
        &agent.err("mkdir", json!({"path": "x/y"})),
        "NotFound",
        Some("ENOENT"),
    );

    agent.ok("rename", json!({"oldPath": "a.txt", "newPath": "d/b.txt"}));
    assert!(!cwd.join("a.txt").exists());
    assert_eq!(std::fs::read(cwd.join("d/b.txt")).unwrap(), b"hello world");
    assert_error(
        &agent.err("stat", json!({"path": "a.txt"})),
        "NotFound",
        Some("ENOENT"),
    );

    let entries = agent.ok("readDir", json!({"path": "d"}));
    assert_eq!(
        entries,
        json!([
            {"name": "b.txt", "isFile": true, "isDirectory": false, "isSymlink": false},
            {"name": "e", "isFile": false, "isDirectory": true, "isSymlink": false},
        ])
    );

    assert_error(
        &agent.err("remove", json!({"path": "d"})),
        "Error",
        Some("ENOTEMPTY"),
    );
    agent.ok("remove", json!({"path": "d/b.txt"}));
    assert!(!cwd.join("d/b.txt").exists());
    agent.ok(
        "remove",
        json!({"path": "d", "options": {"recursive": true}}),
    );
    assert!(!cwd.join("d").exists());
    assert_error(
        &agent.err("remove", json!({"path": "d"})),
        "NotFound",
        Some("ENOENT"),
    );
    agent.finish();
}

#[test]
fn fs_errors_have_the_deno_shape() {
    let mut agent = Agent::start();
    let err = agent.err("readFile", json!({"path": "missing.txt"}));
    assert_error(&err, "NotFound", Some("ENOENT"));
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("missing.txt"), "message names the path: {msg}");
    assert_error(
        &agent.err("readFile", json!({"path": ""})),
        "NotFound",
        Some("ENOENT"),
    );
    std::fs::create_dir(agent.cwd().join("dir")).unwrap();
    assert_error(
        &agent.err("readFile", json!({"path": "dir"})),
        "IsADirectory",
        Some("EISDIR"),
    );
    assert_error(
        &agent.err("writeFile", json!({"path": "dir/../nope/x", "content": ""})),
        "NotFound",
        Some("ENOENT"),
    );
    assert_error(
        &agent.err(
            "writeFile",
            json!({"path": "new", "content": "", "options": {"create": false}}),
        ),
        "NotFound",
        Some("ENOENT"),
    );
    agent.finish();
}

#[test]
fn write_file_from_a_stream() {
    let mut agent = Agent::start();
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let id = agent.send_call(
        "writeFile",
        json!({"path": "streamed.bin", "contentStreamId": 7}),
    );
    let (first, rest) = content.split_at(100_000);
    agent.send(FrameKind::Data, 7, first);
    for chunk in rest.chunks(65_536) {
        agent.send(FrameKind::Data, 7, chunk);
    }
    // No reply before the stream ends.
    let early = agent.take_matching(Instant::now() + Duration::from_millis(300), |f| {
        f.kind == FrameKind::Reply && f.id == id
    });
    assert!(early.is_none(), "writeFile replied before End: {early:?}");
    agent.send(FrameKind::End, 7, b"");
    assert_eq!(agent.reply(id, "streamed writeFile"), Ok(Value::Null));
    assert_eq!(
        std::fs::read(agent.cwd().join("streamed.bin")).unwrap(),
        content
    );
    let back = agent.ok("readFile", json!({"path": "streamed.bin"}));
    assert_eq!(B64.decode(back.as_str().unwrap()).unwrap(), content);

    // Content that arrives before the call is kept for it.
    agent.send(FrameKind::Data, 8, b"early");
    agent.send(FrameKind::End, 8, b"");
    agent.ok(
        "writeFile",
        json!({"path": "early.txt", "contentStreamId": 8}),
    );
    assert_eq!(
        std::fs::read(agent.cwd().join("early.txt")).unwrap(),
        b"early"
    );

    // An empty stream writes an empty file.
    let id = agent.send_call("writeFile", json!({"path": "empty", "contentStreamId": 9}));
    agent.send(FrameKind::End, 9, b"");
    assert_eq!(agent.reply(id, "empty streamed writeFile"), Ok(Value::Null));
    assert_eq!(std::fs::read(agent.cwd().join("empty")).unwrap(), b"");

    // The same stream id can be used again once finished.
    let id = agent.send_call("writeFile", json!({"path": "again", "contentStreamId": 7}));
    agent.send(FrameKind::Data, 7, b"second");
    agent.send(FrameKind::End, 7, b"");
    assert_eq!(agent.reply(id, "reused stream id"), Ok(Value::Null));
    assert_eq!(std::fs::read(agent.cwd().join("again")).unwrap(), b"second");
    agent.finish();
}

#[test]
fn file_handles() {
    let mut agent = Agent::start();
    let opened = agent.ok(
        "open",
        json!({"path": "h.txt", "options": {"read": true, "write": true, "create": true}}),
    );
    let h = opened["fileHandleId"].clone();
    assert!(h.as_u64().unwrap() > 0, "{opened}");
    let written = agent.ok(
        "fileWrite",
        json!({"fileHandleId": h, "data": b64(b"hello world")}),
    );
    assert_eq!(written, json!({"bytesWritten": 11}));
    let pos = agent.ok(
        "fileSeek",
        json!({"fileHandleId": h, "offset": 6, "whence": 0}),
    );
    assert_eq!(pos, json!({"position": 6}));
    let read = agent.ok("fileRead", json!({"fileHandleId": h, "length": 100}));
    assert_eq!(read, json!({"data": b64(b"world")}));
    let eof = agent.ok("fileRead", json!({"fileHandleId": h, "length": 100}));
    assert_eq!(eof, json!({"data": null}), "end of file");
    let pos = agent.ok(
        "fileSeek",
        json!({"fileHandleId": h, "offset": "-5", "whence": 2}),
    );
    assert_eq!(pos, json!({"position": 6}));
    let info = agent.ok("fileStat", json!({"fileHandleId": h}));
    assert_eq!(info["size"], json!(11));
    assert_eq!(
        agent.ok("fileClose", json!({"fileHandleId": h})),
        Value::Null
    );
    assert_eq!(
        std::fs::read(agent.cwd().join("h.txt")).unwrap(),
        b"hello world"
    );

    for method in ["fileRead", "fileClose"] {
        let err = agent.err(method, json!({"fileHandleId": h, "length": 1}));
        assert_error(&err, "BadResource", Some("EBADF"));
    }
    assert_error(
        &agent.err("open", json!({"path": "nope.txt"})),
        "NotFound",
        Some("ENOENT"),
    );
    agent.finish();
}

#[test]
fn walk_streams_one_entry_per_data_frame() {
    let mut agent = Agent::start();
    let cwd = agent.cwd().to_path_buf();
    std::fs::create_dir_all(cwd.join("w/sub")).unwrap();
    std::fs::write(cwd.join("w/a.txt"), "a").unwrap();
    std::fs::write(cwd.join("w/sub/b.txt"), "b").unwrap();
    std::fs::write(cwd.join("w/sub/c.md"), "c").unwrap();

    let id = agent.send_call("walk", json!({"path": "w"}));
    let reply = agent.reply(id, "walk").expect("walk");
    let sid = stream_id(&reply["streamId"]);
    assert_eq!(reply, json!({"streamId": sid}));
    // The entries follow the reply.
    assert!(
        !agent
            .stash
            .iter()
            .any(|f| f.id == sid && f.kind != FrameKind::Reply),
        "walk data arrived before its reply"
    );
    let deadline = Instant::now() + TIMEOUT;
    let mut entries = Vec::new();
    loop {
        let frame = agent
            .take_matching(deadline, |f| {
                f.id == sid && matches!(f.kind, FrameKind::Data | FrameKind::End)
            })
            .expect("walk stream ended");
        if frame.kind == FrameKind::End {
            break;
        }
        // Exactly one JSON document per frame.
        let entry: Value = serde_json::from_slice(&frame.payload).unwrap_or_else(|e| {
            panic!(
                "Data frame is not one JSON entry ({e}): {:?}",
                String::from_utf8_lossy(&frame.payload)
            )
        });
        let keys: BTreeSet<&str> = entry
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["path", "name", "isFile", "isDirectory", "isSymlink"]),
            "{entry}"
        );
        entries.push(entry);
    }
    let paths: Vec<&str> = entries
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["w", "w/a.txt", "w/sub", "w/sub/b.txt", "w/sub/c.md"]
    );
    assert_eq!(
        entries[2],
        json!({"path": "w/sub", "name": "sub", "isFile": false, "isDirectory": true, "isSymlink": false})
    );
    assert_eq!(entries[1]["isFile"], json!(true));

    // Options: only files with a given extension.
    let reply = agent.ok(
        "walk",
        json!({"path": "w", "options": {"exts": [".md"], "includeDirs": false}}),
    );
    let text = agent.stream(stream_id(&reply["streamId"]));
    let entry: Value = serde_json::from_slice(&text).expect("one entry");
    assert_eq!(entry["path"], json!("w/sub/c.md"));

    // expandGlob streams the same way.
    let reply = agent.ok("expandGlob", json!({"glob": "w/**/*.txt"}));
    let sid = stream_id(&reply["streamId"]);
    let mut names = BTreeSet::new();
    loop {
        let frame = agent
            .take_matching(Instant::now() + TIMEOUT, |f| {
                f.id == sid && f.kind != FrameKind::Reply
            })
            .expect("expandGlob stream ended");
        match frame.kind {
            FrameKind::Data => {
                let entry: Value = serde_json::from_slice(&frame.payload).expect("entry");
                names.insert(entry["name"].as_str().unwrap().to_string());
            }
            FrameKind::End => break,
            other => panic!("unexpected {other:?} on expandGlob stream"),
        }
    }
    assert_eq!(
        names,
        BTreeSet::from(["a.txt".to_string(), "b.txt".to_string()])
    );

    // A missing root is an error reply, not a stream.
    assert_error(
        &agent.err("walk", json!({"path": "nope"})),
        "NotFound",
        Some("ENOENT"),
    );
    agent.finish();
}

#[test]
fn cancelled_walk_stream_stops_without_breaking_the_connection() {
    let mut agent = Agent::start();
    let cwd = agent.cwd().to_path_buf();
    for i in 0..200 {
        std::fs::write(cwd.join(format!("f{i:03}")), "x").unwrap();
    }
    let reply = agent.ok("walk", json!({"path": "."}));
    let sid = stream_id(&reply["streamId"]);
    agent.send(FrameKind::Cancel, sid, b"");
    agent.assert_ping("cancelling a walk stream");
    // Whatever was sent before the Cancel landed, it is at most the whole walk.
    let frames = agent.stash.iter().filter(|f| f.id == sid).count();
    assert!(frames <= 202, "{frames} frames on a 201-entry walk");
    // It still ends, so the host can forget it.
    agent.stream(sid);
    agent.finish();
}

#[test]
fn file_lock_held_by_another_process_waits_without_blocking_other_calls() {
    let mut a = Agent::start();
    let path = a.cwd().join("locked");
    std::fs::write(&path, "x").unwrap();
    // Another process holds an exclusive flock for a while.
    let holder = a.ok(
        "spawn",
        json!({"command": "flock", "args": [path.to_str().unwrap(), "sleep", "1.5"], "stdout": "null", "stderr": "null"}),
    );
    std::thread::sleep(Duration::from_millis(300));
    let h = a.ok(
        "open",
        json!({"path": "locked", "options": {"read": true, "write": true}}),
    );
    let started = Instant::now();
    let lock = a.send_call(
        "fileLock",
        json!({"fileHandleId": h["fileHandleId"], "exclusive": true}),
    );
    // While fileLock waits, other fs calls are answered at once.
    let t = Instant::now();
    assert_eq!(a.ok("readTextFile", json!({"path": "locked"})), json!("x"));
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "fs calls stalled behind fileLock: {:?}",
        t.elapsed()
    );
    assert_eq!(a.reply(lock, "fileLock"), Ok(Value::Null));
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "fileLock returned before the holder let go"
    );
    a.ok("processWait", json!({"pid": holder["pid"]}));
    a.finish();
}

// ---------------------------------------------------------------- tunnels

/// Credit the agent granted for host stream `id`, summed over the stash and
/// what arrives until `want` bytes are credited.
fn credited(agent: &mut Agent, id: u32, want: usize) -> usize {
    let deadline = Instant::now() + TIMEOUT;
    let mut total = 0;
    while total < want {
        let f = agent
            .take_matching(deadline, |f| f.kind == FrameKind::Credit && f.id == id)
            .unwrap_or_else(|| panic!("only {total} of {want} bytes credited on stream {id}"));
        total += u32::from_be_bytes(f.payload[..4].try_into().unwrap()) as usize;
    }
    total
}

#[test]
fn tcp_connect_carries_bytes_both_ways_and_half_closes() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Upper-cases what it reads until EOF, then closes.
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        conn.write_all(&got.to_ascii_uppercase()).unwrap();
        got.len()
    });
    let mut agent = Agent::start();
    let reply = agent.ok("tcpConnect", json!({"port": port, "inStreamId": 7}));
    let out = stream_id(&reply["streamId"]);
    agent.send(FrameKind::Data, 7, b"hello ");
    agent.send(FrameKind::Data, 7, b"tunnel");
    agent.send(FrameKind::End, 7, b"");
    assert_eq!(
        credited(&mut agent, 7, 12),
        12,
        "written bytes are credited"
    );
    assert_eq!(agent.stream(out), b"HELLO TUNNEL");
    assert_eq!(server.join().unwrap(), 12);
    agent.finish();
}

#[test]
fn tcp_connect_sends_no_more_than_the_window_before_credit() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let total = 3 * TUNNEL_WINDOW;
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(&garbage(5, total)).unwrap();
    });
    let mut agent = Agent::start();
    let reply = agent.ok("tcpConnect", json!({"port": port, "inStreamId": 1}));
    let out = stream_id(&reply["streamId"]);
    let mut got = Vec::new();
    let collect = |agent: &mut Agent, got: &mut Vec<u8>, quiet: Duration| {
        while let Some(f) = agent.take_matching(Instant::now() + quiet, |f| {
            f.id == out && f.kind == FrameKind::Data
        }) {
            got.extend_from_slice(&f.payload);
        }
    };
    collect(&mut agent, &mut got, Duration::from_millis(500));
    // A read bigger than the window's rest waits whole, so up to one read
    // (64 KiB) of the window may stay unused.
    assert!(
        got.len() <= TUNNEL_WINDOW && got.len() > TUNNEL_WINDOW - 64 * 1024,
        "about a window, then nothing without credit: {} bytes",
        got.len()
    );
    while got.len() < total {
        agent.send(
            FrameKind::Credit,
            out,
            &(TUNNEL_WINDOW as u32).to_be_bytes(),
        );
        let before = got.len();
        collect(&mut agent, &mut got, Duration::from_millis(300));
        assert!(got.len() > before, "credit let more through");
    }
    assert_eq!(got, garbage(5, total));
    server.join().unwrap();
    agent.send(
        FrameKind::Credit,
        out,
        &(TUNNEL_WINDOW as u32).to_be_bytes(),
    );
    assert!(
        agent.stream(out).is_empty(),
        "the stream ends after the data"
    );
    agent.finish();
}

/// The SFTP session itself is tested in tests/sftp.rs; this is the frames.
#[test]
fn sftp_open_answers_the_sessions_packets_on_a_stream() {
    let mut agent = Agent::start();
    let reply = agent.ok("sftpOpen", json!({"inStreamId": 7}));
    let out = stream_id(&reply["streamId"]);
    // SSH_FXP_INIT (1), version 3, framed by its length.
    agent.send(FrameKind::Data, 7, &[0, 0, 0, 5, 1, 0, 0, 0, 3]);
    agent.send(FrameKind::End, 7, b"");
    assert_eq!(credited(&mut agent, 7, 9), 9, "the packet is credited");
    let got = agent.stream(out);
    let len = u32::from_be_bytes(got[..4].try_into().unwrap()) as usize;
    assert_eq!(got.len(), 4 + len, "one packet, then the end: {got:?}");
    assert_eq!(got[4], 2, "SSH_FXP_VERSION");
    assert_eq!(got[5..9], [0, 0, 0, 3], "version 3");
    for bad in [json!({}), json!({"inStreamId": "7"})] {
        let e = agent.err("sftpOpen", bad);
        assert_error(&e, "TypeError", None);
    }
    agent.finish();
}

/// An SFTP packet: length, type, body.
fn sftp_packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut p = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    p.push(kind);
    p.extend_from_slice(body);
    p
}

fn sftp_string(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

/// A client that stops reading replies (the host cancels them) mid-way
/// through many requests still gets all its requests consumed and
/// credited, and the session ends with the request stream: the server
/// never blocks on replies nobody reads.
#[test]
fn sftp_open_winds_down_after_its_replies_are_cancelled() {
    let mut agent = Agent::start();
    std::fs::write(agent.cwd().join("f"), garbage(1, 64 * 1024)).unwrap();
    let reply = agent.ok("sftpOpen", json!({"inStreamId": 7}));
    let out = stream_id(&reply["streamId"]);
    let mut requests = sftp_packet(1, &3u32.to_be_bytes());
    // SSH_FXP_OPEN id 1, "f", READ, no attrs: handle "1".
    let mut open = 1u32.to_be_bytes().to_vec();
    open.extend(sftp_string(b"f"));
    open.extend(1u32.to_be_bytes());
    open.extend(0u32.to_be_bytes());
    requests.extend(sftp_packet(3, &open));
    // 64 KiB replies, far more than the window and the pipes hold; the
    // requests themselves more than a pipe holds, well within the window.
    for id in 2..12_000u32 {
        let mut read = id.to_be_bytes().to_vec();
        read.extend(sftp_string(b"1"));
        read.extend(0u64.to_be_bytes());
        read.extend((64 * 1024u32).to_be_bytes());
        requests.extend(sftp_packet(5, &read));
    }
    assert!(requests.len() > 256 * 1024 && requests.len() < TUNNEL_WINDOW);
    for chunk in requests.chunks(64 * 1024) {
        agent.send(FrameKind::Data, 7, chunk);
    }
    // A window of replies arrives, then nothing without credit.
    let mut got = 0;
    while let Some(f) = agent.take_matching(Instant::now() + Duration::from_millis(500), |f| {
        f.id == out && f.kind == FrameKind::Data
    }) {
        got += f.payload.len();
    }
    assert!(got <= TUNNEL_WINDOW, "{got} bytes before credit");
    agent.send(FrameKind::Cancel, out, b"");
    agent.send(FrameKind::End, 7, b"");
    assert_eq!(
        credited(&mut agent, 7, requests.len()),
        requests.len(),
        "every request is consumed"
    );
    agent.stream(out);
    agent.assert_ping("a cancelled sftp session");
    agent.finish();
}

#[test]
fn tcp_connect_errors_name_the_address() {
    // A port nothing listens on: bind, learn the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut agent = Agent::start();
    let e = agent.err("tcpConnect", json!({"port": port, "inStreamId": 1}));
    assert_error(&e, "ConnectionRefused", Some("ECONNREFUSED"));
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{port}")),
        "{e}"
    );
    for bad in [
        json!({"port": 0, "inStreamId": 1}),
        json!({"port": 70000, "inStreamId": 1}),
        json!({"port": 80}),
        json!({"port": 80, "inStreamId": 1, "host": 5}),
    ] {
        let e = agent.err("tcpConnect", bad);
        assert_error(&e, "TypeError", None);
    }
    agent.assert_ping("tunnel errors");
    agent.finish();
}

// ---------------------------------------------------------------- big files

/// Files bigger than a frame (`MAX_PAYLOAD`) move as windowed streams both
/// ways: a streamed writeFile credits what it wrote (so the host never has
/// more than `FILE_WINDOW` buffered in the agent), and readFile with
/// `stream: true` sends at most a window before the host's credit.
#[test]
fn files_bigger_than_a_frame_move_as_windowed_streams() {
    let mut agent = Agent::start();
    let size = 5 * MAX_PAYLOAD + 123;
    let content = garbage(9, size);
    let id = agent.send_call(
        "writeFile",
        json!({"path": "big.bin", "contentStreamId": 11}),
    );
    for chunk in content.chunks(64 * 1024) {
        agent.send(FrameKind::Data, 11, chunk);
    }
    agent.send(FrameKind::End, 11, b"");
    assert_eq!(agent.reply(id, "big streamed writeFile"), Ok(Value::Null));
    assert_eq!(
        credited(&mut agent, 11, size),
        size,
        "written bytes are credited"
    );
    assert_eq!(std::fs::read(agent.cwd().join("big.bin")).unwrap(), content);

    // Inline, the result would not fit a frame: a clear error, not a
    // dropped connection.
    let e = agent.err("readFile", json!({"path": "big.bin"}));
    assert_eq!(e["constructorName"], "RangeError", "{e}");

    let reply = agent.ok("readFile", json!({"path": "big.bin", "stream": true}));
    let out = stream_id(&reply["streamId"]);
    let mut got = Vec::new();
    let data = |f: &Frame| f.id == out && matches!(f.kind, FrameKind::Data | FrameKind::End);
    // Without credit, no more than a window arrives.
    while let Some(f) = agent.take_matching(Instant::now() + Duration::from_millis(500), data) {
        assert_eq!(f.kind, FrameKind::Data, "ended early");
        got.extend_from_slice(&f.payload);
    }
    assert!(
        got.len() <= FILE_WINDOW && got.len() > FILE_WINDOW - 64 * 1024,
        "about a window, then nothing without credit: {} bytes",
        got.len()
    );
    agent.send(FrameKind::Credit, out, &(got.len() as u32).to_be_bytes());
    loop {
        let f = agent
            .take_matching(Instant::now() + TIMEOUT, data)
            .unwrap_or_else(|| panic!("stream stalled at {} of {size} bytes", got.len()));
        if f.kind == FrameKind::End {
            break;
        }
        got.extend_from_slice(&f.payload);
        agent.send(
            FrameKind::Credit,
            out,
            &(f.payload.len() as u32).to_be_bytes(),
        );
    }
    assert_eq!(got.len(), size);
    assert!(got == content, "the streamed read differs from the file");

    // Failing to open fails the call itself, with the inline error.
    let e = agent.err("readTextFile", json!({"path": "missing", "stream": true}));
    assert_eq!(e["code"], "ENOENT", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .ends_with("readTextFile 'missing'"),
        "{e}"
    );
    // A write into a directory that does not exist fails before any data
    // is taken, and tells the host to stop sending.
    let id = agent.send_call(
        "writeFile",
        json!({"path": "nope/x", "contentStreamId": 12}),
    );
    let e = agent
        .reply(id, "writeFile into a missing directory")
        .unwrap_err();
    assert_eq!(e["code"], "ENOENT", "{e}");
    assert!(
        agent
            .take_matching(Instant::now() + TIMEOUT, |f| {
                f.kind == FrameKind::Cancel && f.id == 12
            })
            .is_some(),
        "the host is told to stop sending"
    );
    agent.finish();
}

/// The agent serves every method the table (`agent_proto::Method`) routes
/// to it, and answers the daemon's own methods as unknown: the table and
/// the agent's dispatch (and its fs lookup tables) cannot drift apart.
/// Params name only paths under the test's directory (some calls, such as
/// `mkdir`, succeed there), so no call touches the rest of the host.
#[test]
fn agent_serves_exactly_the_tables_agent_methods() {
    use agent_proto::{Method, Route};
    let mut agent = Agent::start();
    let absent = agent.dir.path().join("absent");
    let params = json!({
        "path": absent,
        "dir": absent,
        "from": absent,
        "to": absent,
        "oldpath": absent,
        "newpath": absent,
    });
    for &m in Method::ALL {
        let reply = agent.call(m.as_str(), params.clone());
        let unknown = matches!(&reply, Err(e) if e["code"] == json!("ENOSYS")
            && e["message"].as_str().is_some_and(|s| s.starts_with("unknown method")));
        match m.route() {
            Route::Agent | Route::Internal => assert!(!unknown, "{m} is unknown to the agent"),
            Route::Daemon | Route::NotYet => assert!(unknown, "{m}: {reply:?}"),
        }
    }
    agent.assert_ping("every method of the table");
}
