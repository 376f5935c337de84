//! ATTACK: one sandbox must not grow the daemon by gigabytes through the
//! egress gateway. The gateway's buffers live in the daemon, outside the
//! sandbox's cgroup; a sandbox that opens many connections to an upstream
//! that sends a lot, and never reads them, once made the daemon hold
//! ~5.5 MiB per connection. Invariants: the daemon's RSS stays within a
//! stated bound over its baseline, connections past the sandbox's budget
//! are refused with an audit event saying why, the budget is visible in
//! `/metrics`, and the memory comes back when the sandbox ends.

mod common;

use common::daemon::{call, run_python, Daemon};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections the sandbox opens (under the gateway's 1024 per sandbox).
const CONNECTIONS: usize = 1000;
/// What the upstream offers on each connection: far more than any buffer
/// the gateway should keep for a reader that never reads.
const OFFERED: usize = 8 << 20;
/// The daemon may grow by this much under the attack: the default budget
/// (64 MiB) plus what the gateway keeps per sandbox outside it (packet
/// buffers, flow entries) and the allocator's slack. Before the fix it grew
/// by ~5 GiB.
const GROWTH_BOUND: u64 = 256 << 20;
/// And keeps at most this much over its baseline once the sandbox is gone.
const LEFT_BOUND: u64 = 64 << 20;

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib << 10
}

/// An upstream on loopback that writes `OFFERED` bytes on every connection
/// (blocking when the reader stops) and counts what the kernel took.
fn blast_server() -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let sent = counter.clone();
            let _ = std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let block = vec![b'x'; 64 * 1024];
                    let mut left = OFFERED;
                    while left > 0 {
                        let Ok(n) = conn.write(&block[..left.min(block.len())]) else {
                            return;
                        };
                        sent.fetch_add(n as u64, Ordering::Relaxed);
                        left -= n;
                    }
                    // Hold the connection until the other side closes it.
                    let _ = conn.read(&mut [0; 1]);
                });
        }
    });
    (port, sent)
}

fn metric(d: &Daemon, name: &str) -> f64 {
    let (status, body) = d.http("GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

fn mib(bytes: u64) -> u64 {
    bytes >> 20
}

#[test]
fn a_sandbox_that_never_reads_its_connections_cannot_grow_the_daemon() {
    let (port, sent) = blast_server();
    let d = Daemon::options("gwmem")
        .args(&["--resolve", "blast.test=127.0.0.1"])
        .start();
    let pid = d.pid().unwrap();
    let (mut ws, id) = d.create(json!({"memory_mb": 1024, "allow_net": ["blast.test"]}));
    // One connection first, so the baseline includes what any sandbox's
    // first connection sets up in the daemon.
    let warm = format!(
        "import socket\ns = socket.create_connection(('blast.test', {port}))\n\
         n = 0\nwhile n < 1 << 20: n += len(s.recv(65536))\n"
    );
    run_python(&mut ws, 1, &warm);
    std::thread::sleep(Duration::from_millis(500));
    let baseline = rss(pid);

    // The attack: CONNECTIONS connections, none of them read.
    let attack = format!(
        r#"
import resource, socket, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
addr = socket.gethostbyname("blast.test")
held, refused = [], 0
for _ in range({CONNECTIONS}):
    s = socket.socket()
    s.settimeout(20)
    try:
        s.connect((addr, {port}))
        held.append(s)
    except OSError:
        refused += 1
        s.close()
with open("/tmp/attack.txt", "w") as f:
    f.write(f"{{len(held)}} {{refused}}")
time.sleep(600)
"#
    );
    let r = call(
        &mut ws,
        3,
        "spawn",
        json!({"command": "python3", "args": ["-c", attack], "stdout": "null", "stderr": "null"}),
    );
    assert!(r["result"]["ok"]["pid"].is_u64(), "{r}");
    let mut peak = baseline;
    let deadline = Instant::now() + Duration::from_secs(90);
    let report = loop {
        peak = peak.max(rss(pid));
        let r = call(
            &mut ws,
            4,
            "readTextFile",
            json!({"path": "/tmp/attack.txt"}),
        );
        if let Some(text) = r["result"]["ok"].as_str() {
            break text.to_string();
        }
        assert!(Instant::now() < deadline, "the attack never finished: {r}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (held, refused) = report.split_once(' ').unwrap();
    let (held, refused): (usize, usize) = (held.parse().unwrap(), refused.parse().unwrap());
    // Wait until the upstream can send no more: every buffer on the way is
    // as full as it will get.
    let mut last = sent.load(Ordering::Relaxed);
    let mut still = 0;
    while still < 4 {
        std::thread::sleep(Duration::from_millis(500));
        peak = peak.max(rss(pid));
        let now = sent.load(Ordering::Relaxed);
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    peak = peak.max(rss(pid));
    eprintln!(
        "daemon RSS: baseline {} MiB, peak {} MiB under {held} held connections \
         ({refused} refused), upstream sent {} MiB",
        mib(baseline),
        mib(peak),
        mib(last),
    );
    assert!(
        peak - baseline < GROWTH_BOUND,
        "the daemon grew by {} MiB (bound {} MiB) for {held} connections",
        mib(peak - baseline),
        mib(GROWTH_BOUND)
    );
    assert_eq!(held + refused, CONNECTIONS);
    let in_use = metric(&d, "airlock_egress_memory_bytes");
    eprintln!("gateway memory in use: {} MiB", in_use as u64 >> 20);
    // The budget (64 MiB by default) was spent, and said so.
    assert!(refused > 0, "all {held} connections were admitted");
    assert!(in_use <= (64 << 20) as f64, "{in_use}");
    assert!(metric(&d, "airlock_egress_memory_refusals_total") >= refused as f64);
    let denied = d.audit_events(&id, "verdict=denied&limit=5", |e| !e.is_empty());
    assert!(
        Value::Array(denied.clone())
            .to_string()
            .contains("gateway memory is spent"),
        "no audit event for the refusals: {denied:?}"
    );

    // The sandbox ends: its connections' memory goes back.
    assert_eq!(d.http("DELETE", &format!("/api/v3/sandbox/{id}")).0, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&d, "airlock_egress_memory_bytes") > 0.0 || rss(pid) > baseline + LEFT_BOUND {
        assert!(
            Instant::now() < deadline,
            "after the sandbox ended: gateway memory {} bytes, daemon RSS {} MiB \
             (baseline {} MiB)",
            metric(&d, "airlock_egress_memory_bytes"),
            mib(rss(pid)),
            mib(baseline)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("daemon RSS after the sandbox ended: {} MiB", mib(rss(pid)));
}
