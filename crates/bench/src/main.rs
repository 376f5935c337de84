//! `airlock-bench`: latency of the airlock daemon over its WebSocket API.
//!
//! Measures, each over `--runs` samples:
//! * **create**: TCP connect + WebSocket upgrade of `/api/v3/sandboxes/create`
//!   until the 101 arrives, with a pause between creates so the warm pool
//!   refills, and again with no pause (the pool drains: misses);
//! * **create → first exec**: create + `spawn sh -c 'echo hi'` +
//!   `processWait` until both the stdout data and the exit status arrived;
//! * **round trip**: on one sandbox, `spawn true` + `processWait` reply;
//! * the same-run reference: the whole `airlock run -- true` process.
//!
//! Either benchmarks a running daemon (`--endpoint`, `--token`) or starts
//! one of its own (`--spawn-daemon PATH_TO_AIRLOCK`) and stops it at the end.

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Targets from the issue.
const CREATE_TARGET_MS: f64 = 10.0;
const ROUND_TRIP_TARGET_MS: f64 = 3.0;
/// No single step of a sample may take longer than this.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
#[command(
    name = "airlock-bench",
    about = "Latency benchmarks for the airlock daemon"
)]
struct Args {
    /// Start a daemon from this airlock binary (temp store, fresh token),
    /// benchmark it, and stop it at the end.
    #[arg(long, value_name = "PATH_TO_AIRLOCK", conflicts_with_all = ["endpoint", "token"])]
    spawn_daemon: Option<PathBuf>,
    /// A running daemon, e.g. http://127.0.0.1:7070.
    #[arg(
        long,
        env = "DENO_SANDBOX_ENDPOINT",
        required_unless_present = "spawn_daemon"
    )]
    endpoint: Option<String>,
    /// Access token of that daemon.
    #[arg(
        long,
        env = "DENO_DEPLOY_TOKEN",
        required_unless_present = "spawn_daemon"
    )]
    token: Option<String>,
    /// Samples per measurement.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Pause between creates so the warm pool refills.
    #[arg(long, default_value_t = 50)]
    pause_ms: u64,
    /// Warm pool size of the spawned daemon (`serve --pool`).
    #[arg(long, default_value_t = 2)]
    pool: usize,
    /// After each sample, wait this long at most for the server's close
    /// frame (the full handshake is measured separately).
    #[arg(long, default_value_t = 100)]
    close_wait_ms: u64,
    /// Samples of the full close handshake (Close → server close frame).
    #[arg(long, default_value_t = 5)]
    close_runs: usize,
    /// `memory_mb` in the create config.
    #[arg(long, default_value_t = 1280)]
    memory_mb: u32,
    /// airlock binary for the `airlock run -- true` reference (default: the
    /// --spawn-daemon binary; without either the reference is skipped).
    #[arg(long, value_name = "PATH_TO_AIRLOCK")]
    reference: Option<PathBuf>,
    /// Samples of the `airlock run -- true` reference (default: --runs).
    #[arg(long)]
    reference_runs: Option<usize>,
}

type Ws = WebSocketStream<TcpStream>;

struct Target {
    /// host:port
    addr: String,
    token: String,
    config_b64: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let mut daemon = None;
    let (endpoint, token) = match &args.spawn_daemon {
        Some(airlock) => {
            let d = Daemon::start(airlock, args.pool).await?;
            let e = (d.endpoint.clone(), d.token.clone());
            daemon = Some(d);
            e
        }
        None => (
            args.endpoint.clone().expect("clap requires it"),
            args.token.clone().expect("clap requires it"),
        ),
    };
    let result = bench(&args, &endpoint, &token).await;
    if let Some(d) = daemon {
        d.stop().await;
    }
    result
}

async fn bench(args: &Args, endpoint: &str, token: &str) -> Result<()> {
    let addr = endpoint
        .trim_end_matches('/')
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("--endpoint must be http://host:port, got {endpoint:?}"))?
        .to_string();
    let config = json!({ "memory_mb": args.memory_mb }).to_string();
    let t = Target {
        addr,
        token: token.to_string(),
        config_b64: base64::engine::general_purpose::STANDARD.encode(config),
    };
    // Paused runs give each sandbox's teardown a head start; no-pause runs
    // send the Close frame and go on at once.
    let paused_close = Duration::from_millis(args.close_wait_ms);
    let nopause_close = Duration::ZERO;
    let n = args.runs;
    let pause = Duration::from_millis(args.pause_ms);
    eprintln!("airlock-bench: {endpoint}, {n} runs per measurement");

    // Warm-up: one full create → exec, and let the pool refill.
    first_exec(&t, paused_close)
        .await
        .context("warm-up create → first exec")?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut rows: Vec<Row> = Vec::new();

    eprintln!("  create, {} ms pause...", args.pause_ms);
    let create_paused = sample(n, pause, || create_only(&t, paused_close)).await?;
    eprintln!("  create, no pause...");
    let create_nopause = sample(n, Duration::ZERO, || create_only(&t, nopause_close)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!("  create burst, {BURST} held open at once...");
    let create_burst = create_bursts(&t, n).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!("  create → first exec, {} ms pause...", args.pause_ms);
    let exec_paused = sample(n, pause, || first_exec(&t, paused_close)).await?;
    eprintln!("  create → first exec, no pause...");
    let exec_nopause = sample(n, Duration::ZERO, || first_exec(&t, nopause_close)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!("  round trip...");
    let (rt_piped, rt_null) = round_trips(&t, n).await?;

    let closes = if args.close_runs > 0 {
        eprintln!("  close handshake x{}...", args.close_runs);
        Some(close_handshakes(&t, args.close_runs).await?)
    } else {
        None
    };

    let reference_bin = args.reference.as_ref().or(args.spawn_daemon.as_ref());
    let reference = match reference_bin {
        Some(bin) => {
            let runs = args.reference_runs.unwrap_or(n);
            eprintln!("  reference: `airlock run -- true` x{runs}...");
            Some(run_reference(bin, runs).await?)
        }
        None => None,
    };

    rows.push(Row::new(
        &format!("create ({} ms pause)", args.pause_ms),
        &create_paused,
        Some(CREATE_TARGET_MS),
    ));
    rows.push(Row::new("create (no pause)", &create_nopause, None));
    rows.push(Row::new(
        &format!("create (bursts of {BURST}, held open)"),
        &create_burst,
        None,
    ));
    rows.push(Row::new(
        &format!("create → first exec ({} ms pause)", args.pause_ms),
        &exec_paused,
        None,
    ));
    rows.push(Row::new(
        "create → first exec (no pause)",
        &exec_nopause,
        None,
    ));
    rows.push(Row::new(
        "round trip: spawn true + wait",
        &rt_piped,
        Some(ROUND_TRIP_TARGET_MS),
    ));
    rows.push(Row::new("  same, stdout/stderr null", &rt_null, None));
    if let Some(c) = &closes {
        rows.push(Row::new("close: Close → server's close frame", c, None));
    }
    if let Some(r) = &reference {
        rows.push(Row::new("ref: `airlock run -- true`", r, None));
    }

    println!();
    println!(
        "airlock-bench: {n} runs each; daemon {endpoint}; pool {}",
        if args.spawn_daemon.is_some() {
            args.pool.to_string()
        } else {
            "?".into()
        }
    );
    println!(
        "{:<38} {:>8} {:>8} {:>8} {:>8}  target",
        "", "p50 ms", "p99 ms", "mean ms", "max ms"
    );
    for r in &rows {
        println!("{r}");
    }
    println!();
    println!("warm pool (inferred from the create latency: two clusters, not daemon counters):");
    for (name, s) in [
        (
            format!("create ({} ms pause)", args.pause_ms),
            &create_paused,
        ),
        ("create (no pause)".to_string(), &create_nopause),
        (format!("create (bursts of {BURST})"), &create_burst),
        (
            format!("create → first exec ({} ms pause)", args.pause_ms),
            &exec_paused,
        ),
        ("create → first exec (no pause)".to_string(), &exec_nopause),
    ] {
        println!("  {name:<36} {}", describe_split(s));
    }
    if let Some(r) = &reference {
        let rp = pct(r, 50.0);
        println!();
        println!("ratios of p50 (reference `airlock run -- true` / daemon path):");
        for (name, s) in [
            (
                format!("create → first exec ({} ms pause)", args.pause_ms),
                &exec_paused,
            ),
            ("create → first exec (no pause)".to_string(), &exec_nopause),
            ("round trip on a live sandbox".to_string(), &rt_piped),
        ] {
            println!("  {name:<36} {:>7.1}x", rp / pct(s, 50.0));
        }
    }
    Ok(())
}

/// `n` samples of `f`, with `pause` before each.
async fn sample<F, Fut>(n: usize, pause: Duration, mut f: F) -> Result<Vec<f64>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<f64>>,
{
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        out.push(f().await.with_context(|| format!("sample {i}"))?);
    }
    Ok(out)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// TCP connect + WebSocket upgrade; returns the socket once the 101 is in.
async fn connect(t: &Target) -> Result<Ws> {
    let tcp = TcpStream::connect(&t.addr)
        .await
        .with_context(|| format!("connecting to {}", t.addr))?;
    tcp.set_nodelay(true)?;
    let mut req = format!("ws://{}/api/v3/sandboxes/create", t.addr).into_client_request()?;
    let h = req.headers_mut();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", t.token))?,
    );
    h.insert(
        "x-deno-sandbox-config",
        HeaderValue::from_str(&t.config_b64)?,
    );
    let (ws, resp) = tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::client_async(req, tcp))
        .await
        .context("create handshake timed out")?
        .context("create handshake")?;
    if resp.headers().get("x-deno-sandbox-id").is_none() {
        bail!("101 without x-deno-sandbox-id");
    }
    Ok(ws)
}

/// Sends a Close frame and waits up to `wait` for the server's (or EOF);
/// returns how long that took, `None` if the wait ran out.
async fn close_within(mut ws: Ws, wait: Duration) -> Option<f64> {
    let start = Instant::now();
    let sent = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    if !matches!(sent, Ok(Ok(()))) {
        return None;
    }
    tokio::time::timeout(wait, async {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await
    .ok()
    .map(|()| ms(start.elapsed()))
}

/// The full close handshake: create, then Close → the server's close frame.
async fn close_handshakes(t: &Target, n: usize) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let ws = connect(t).await?;
        let d = close_within(ws, Duration::from_secs(10))
            .await
            .ok_or_else(|| anyhow!("no close frame from the daemon in 10 s"))?;
        out.push(d);
    }
    Ok(out)
}

/// (a) create handshake until 101.
async fn create_only(t: &Target, close_wait: Duration) -> Result<f64> {
    let start = Instant::now();
    let ws = connect(t).await?;
    let d = ms(start.elapsed());
    close_within(ws, close_wait).await;
    Ok(d)
}

/// Creates per burst: more than the pool holds, all kept open until the
/// burst ends, so the later ones cannot be served from the pool.
const BURST: usize = 8;

/// (a) again, in bursts of [`BURST`] back-to-back creates held open, then
/// all closed and a pause for the pool to refill.
async fn create_bursts(t: &Target, n: usize) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut open = Vec::with_capacity(BURST);
        for _ in 0..BURST.min(n - out.len()) {
            let start = Instant::now();
            open.push(connect(t).await?);
            out.push(ms(start.elapsed()));
        }
        for ws in open {
            close_within(ws, Duration::ZERO).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(out)
}

/// (b) create + `sh -c 'echo hi'` + processWait + stdout data.
async fn first_exec(t: &Target, close_wait: Duration) -> Result<f64> {
    let start = Instant::now();
    let mut ws = connect(t).await?;
    let mut rpc = Rpc::default();
    let spawned = rpc
        .call(
            &mut ws,
            "spawn",
            json!({"command": "sh", "args": ["-c", "echo hi"], "stdout": "piped", "stderr": "piped"}),
        )
        .await?;
    let pid = spawned["pid"].clone();
    let stdout_id = spawned["stdoutStreamId"].clone();
    let wait_id = rpc
        .send(&mut ws, "processWait", json!({ "pid": pid }))
        .await?;
    let mut stdout = Vec::new();
    let mut exit: Option<Value> = None;
    let mut stdout_ended = false;
    while exit.is_none() || !stdout_ended {
        let msg = rpc.next(&mut ws).await?;
        if msg["id"] == wait_id {
            exit = Some(ok_of(&msg)?);
        } else if msg["params"]["streamId"] == stdout_id {
            match msg["method"].as_str() {
                Some("$sandbox.stream.enqueue") => {
                    let data = msg["params"]["data"].as_str().unwrap_or_default();
                    stdout.extend(base64::engine::general_purpose::STANDARD.decode(data)?);
                }
                Some("$sandbox.stream.end") => stdout_ended = true,
                _ => {}
            }
        }
    }
    let d = ms(start.elapsed());
    let exit = exit.expect("loop ends with it");
    if stdout != b"hi\n" || exit["code"] != 0 {
        bail!(
            "unexpected result: stdout {:?}, exit {exit}",
            String::from_utf8_lossy(&stdout)
        );
    }
    close_within(ws, close_wait).await;
    Ok(d)
}

/// (c) on one sandbox: `spawn true` + `processWait` reply, with piped
/// stdio (what the SDKs send) and with stdio "null".
async fn round_trips(t: &Target, n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut ws = connect(t).await?;
    let mut rpc = Rpc::default();
    for _ in 0..5 {
        spawn_wait(&mut ws, &mut rpc, "piped").await?;
    }
    let mut piped = Vec::with_capacity(n);
    let mut null = Vec::with_capacity(n);
    for _ in 0..n {
        piped.push(spawn_wait(&mut ws, &mut rpc, "piped").await?);
        null.push(spawn_wait(&mut ws, &mut rpc, "null").await?);
    }
    close_within(ws, Duration::ZERO).await;
    Ok((piped, null))
}

async fn spawn_wait(ws: &mut Ws, rpc: &mut Rpc, stdio: &str) -> Result<f64> {
    let params = json!({"command": "true", "stdout": stdio, "stderr": stdio});
    let start = Instant::now();
    let spawned = rpc.call(ws, "spawn", params).await?;
    let exit = rpc
        .call(ws, "processWait", json!({ "pid": spawned["pid"] }))
        .await?;
    let d = ms(start.elapsed());
    if exit["code"] != 0 {
        bail!("`true` exited with {exit}");
    }
    Ok(d)
}

#[derive(Default)]
struct Rpc {
    next_id: u64,
}

impl Rpc {
    async fn send(&mut self, ws: &mut Ws, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = json!(self.next_id);
        let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        ws.send(Message::text(req.to_string())).await?;
        Ok(id)
    }

    /// The next JSON message (pings are answered by tungstenite).
    async fn next(&mut self, ws: &mut Ws) -> Result<Value> {
        loop {
            let m = tokio::time::timeout(STEP_TIMEOUT, ws.next())
                .await
                .context("no message from the daemon")?
                .ok_or_else(|| anyhow!("the daemon closed the socket"))??;
            match m {
                Message::Text(s) => return Ok(serde_json::from_str(s.as_str())?),
                Message::Binary(b) => return Ok(serde_json::from_slice(&b)?),
                Message::Close(c) => bail!("the daemon closed the socket: {c:?}"),
                _ => {}
            }
        }
    }

    /// Sends a request and returns the `ok` value of its reply; other
    /// messages (stream notifications) are dropped.
    async fn call(&mut self, ws: &mut Ws, method: &str, params: Value) -> Result<Value> {
        let id = self.send(ws, method, params).await?;
        loop {
            let msg = self.next(ws).await?;
            if msg["id"] == id {
                return ok_of(&msg).with_context(|| method.to_string());
            }
        }
    }
}

fn ok_of(msg: &Value) -> Result<Value> {
    match msg.get("result").and_then(|r| r.get("ok")) {
        Some(v) => Ok(v.clone()),
        None => bail!("error reply: {msg}"),
    }
}

/// The whole `airlock run -- true` process, `n` times.
async fn run_reference(airlock: &Path, n: usize) -> Result<Vec<f64>> {
    let run = || async {
        let start = Instant::now();
        let st = tokio::process::Command::new(airlock)
            .args(["run", "--", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .await?;
        let d = ms(start.elapsed());
        if !st.success() {
            bail!("`airlock run -- true` failed: {st}");
        }
        Ok(d)
    };
    run().await?; // warm the page cache and the image check
    sample(n, Duration::ZERO, run).await
}

/// A daemon this run started: temp store, fresh token, `serve --pool N`.
struct Daemon {
    child: tokio::process::Child,
    endpoint: String,
    token: String,
    dir: tempfile::TempDir,
}

impl Daemon {
    async fn start(airlock: &Path, pool: usize) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("airlock-bench-")
            .tempdir()?;
        let store = dir.path().join("store.db");
        let out = tokio::process::Command::new(airlock)
            .arg("token")
            .arg("create")
            .arg("--store")
            .arg(&store)
            .arg("bench")
            .stderr(Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {}", airlock.display()))?;
        if !out.status.success() {
            bail!("`airlock token create` failed: {}", out.status);
        }
        let token = String::from_utf8(out.stdout)?
            .lines()
            .last()
            .ok_or_else(|| anyhow!("`airlock token create` printed no token"))?
            .trim()
            .to_string();
        let log = std::fs::File::create(dir.path().join("daemon.log"))?;
        // The exposed-HTTP ingress defaults to port 8443, which another
        // daemon on this host may hold: give it a free port, as the tests
        // do. A reference build older than the ingress has no such flag.
        let help = tokio::process::Command::new(airlock)
            .args(["serve", "--help"])
            .output()
            .await
            .with_context(|| format!("running {} serve --help", airlock.display()))?;
        let help = String::from_utf8_lossy(&help.stdout);
        let expose_args: &[&str] = if help.contains("--expose-listen") {
            &["--expose-listen", "127.0.0.1:0"]
        } else {
            &[]
        };
        // Likewise the SSH gateway's default, port 2222.
        let ssh_args: &[&str] = if help.contains("--ssh-listen") {
            &["--ssh-listen", "127.0.0.1:0"]
        } else {
            &[]
        };
        let mut child = tokio::process::Command::new(airlock)
            .arg("serve")
            .arg("--store")
            .arg(&store)
            .args(["--listen", "127.0.0.1:0", "--pool", &pool.to_string()])
            .args(expose_args)
            .args(ssh_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} serve", airlock.display()))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let log_path = dir.path().join("daemon.log");
        let endpoint = tokio::time::timeout(Duration::from_secs(300), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("listening on ") {
                    return Ok(url.trim().to_string());
                }
            }
            bail!("the daemon exited; see {}", log_path.display())
        })
        .await
        .context("the daemon did not print its listening line in 300 s")??;
        // Keep draining its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        eprintln!(
            "airlock-bench: started {} serve at {endpoint}",
            airlock.display()
        );
        // Give the warm pool a moment to fill before the first measurement.
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(Self {
            child,
            endpoint,
            token,
            dir,
        })
    }

    /// SIGTERM (graceful: the daemon ends its sandboxes), then SIGKILL.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling our own child, which has not been reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("airlock-bench: the daemon ignored SIGTERM; killing it");
                let _ = self.child.kill().await;
            }
        }
        let _ = &self.dir; // removed on drop
    }
}

fn pct(samples: &[f64], p: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

fn mean(s: &[f64]) -> f64 {
    s.iter().sum::<f64>() / s.len() as f64
}

struct Row {
    name: String,
    p50: f64,
    p99: f64,
    mean: f64,
    max: f64,
    target: Option<f64>,
}

impl Row {
    fn new(name: &str, s: &[f64], target: Option<f64>) -> Self {
        Self {
            name: name.to_string(),
            p50: pct(s, 50.0),
            p99: pct(s, 99.0),
            mean: mean(s),
            max: s.iter().copied().fold(f64::MIN, f64::max),
            target,
        }
    }
}

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Pad by characters: "→" is one column but three bytes.
        let pad = 38usize.saturating_sub(self.name.chars().count());
        write!(
            f,
            "{}{} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            self.name,
            " ".repeat(pad),
            self.p50,
            self.p99,
            self.mean,
            self.max
        )?;
        if let Some(t) = self.target {
            let verdict = if self.p50 < t { "PASS" } else { "MISS" };
            write!(f, "  p50 < {t} ms: {verdict}")?;
        }
        Ok(())
    }
}

/// Splits latencies into two clusters (2-means on log scale); when the
/// cluster centres are at least 3x apart the fast one is taken as pool
/// hits and the slow one as misses.
fn split(samples: &[f64]) -> Option<(usize, usize, f64, f64, f64)> {
    let logs: Vec<f64> = samples.iter().map(|v| v.max(1e-3).ln()).collect();
    let (mut lo, mut hi) = logs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    for _ in 0..50 {
        let cut = (lo + hi) / 2.0;
        let (a, b): (Vec<f64>, Vec<f64>) = logs.iter().partition(|&&v| v <= cut);
        if a.is_empty() || b.is_empty() {
            return None;
        }
        lo = mean(&a);
        hi = mean(&b);
    }
    if hi - lo < 3f64.ln() {
        return None;
    }
    let cut = ((lo + hi) / 2.0).exp();
    let fast: Vec<f64> = samples.iter().copied().filter(|&v| v <= cut).collect();
    let slow: Vec<f64> = samples.iter().copied().filter(|&v| v > cut).collect();
    Some((
        fast.len(),
        slow.len(),
        cut,
        pct(&fast, 50.0),
        pct(&slow, 50.0),
    ))
}

fn describe_split(s: &[f64]) -> String {
    match split(s) {
        Some((hits, misses, cut, hp50, mp50)) => format!(
            "{hits} hits (p50 {hp50:.2} ms), {misses} misses (p50 {mp50:.2} ms); cut at {cut:.2} ms"
        ),
        None => "one cluster (all hits or all misses)".to_string(),
    }
}
