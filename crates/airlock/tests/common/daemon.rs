//! A test harness for `airlock serve`: a daemon on a temp store with a fresh
//! token, its address read from the "listening on http://..." line, sandboxes
//! created over the WebSocket API, killed (SIGTERM) and its store removed on
//! drop. Needs root and the static agent, like the sandboxes themselves.

use super::AIRLOCK;
use base64::Engine;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::WebSocket;

pub type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// A running `airlock serve --listen 127.0.0.1:0 --pool 1 --store DIR/store.db`.
pub struct Daemon {
    child: Option<Child>,
    /// The temp directory holding the store; removed on drop.
    pub dir: PathBuf,
    /// `dir/store.db`.
    pub store: PathBuf,
    /// `host:port` the daemon listens on.
    pub addr: String,
    /// `host:port` of the token-less metrics listener, when
    /// `--metrics-listen` was given.
    pub metrics_addr: Option<String>,
    /// `host:port` the HTTPS ingress for exposed ports listens on.
    pub expose_addr: Option<String>,
    /// `host:port` the SSH gateway listens on.
    pub ssh_addr: Option<String>,
    /// The token created before the daemon started (empty with
    /// [`DaemonOptions::no_token`]).
    pub token: String,
    extra: Vec<String>,
}

/// How to start a [`Daemon`]: see [`Daemon::options`].
pub struct DaemonOptions {
    tag: String,
    token: Option<String>,
    extra: Vec<String>,
}

impl DaemonOptions {
    /// The name of the token created before the daemon starts ("test").
    pub fn token(mut self, name: &str) -> Self {
        self.token = Some(name.to_string());
        self
    }

    /// Creates no token up front; `Daemon::token` stays empty.
    pub fn no_token(mut self) -> Self {
        self.token = None;
        self
    }

    /// Extra arguments for `airlock serve`.
    pub fn args(mut self, extra: &[&str]) -> Self {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn start(self) -> Daemon {
        let dir = std::env::temp_dir().join(format!(
            "airlock-{}-test-{}-{}",
            self.tag,
            std::process::id(),
            super::random_hex()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store = dir.join("store.db");
        let token = match &self.token {
            Some(name) => token_create(&store, name),
            None => String::new(),
        };
        let mut d = Daemon {
            child: None,
            dir,
            store,
            addr: String::new(),
            metrics_addr: None,
            expose_addr: None,
            ssh_addr: None,
            token,
            extra: self.extra,
        };
        d.spawn();
        d
    }
}

impl Daemon {
    /// Options for a daemon whose temp dir is named after `tag`; by default
    /// with a token named "test" and no extra arguments.
    pub fn options(tag: &str) -> DaemonOptions {
        DaemonOptions {
            tag: tag.to_string(),
            token: Some("test".to_string()),
            extra: Vec::new(),
        }
    }

    /// A daemon with the default options.
    pub fn start(tag: &str) -> Self {
        Self::options(tag).start()
    }

    /// (Re)starts `airlock serve` on this daemon's store and waits until it
    /// listens. Its stdout is drained from then on, so it never blocks.
    pub fn spawn(&mut self) {
        let mut child = Command::new(AIRLOCK)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--expose-listen",
                "127.0.0.1:0",
                "--ssh-listen",
                "127.0.0.1:0",
            ])
            .args(["--pool", "1", "--store"])
            .arg(&self.store)
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting airlock serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("daemon exited before listening")
                .unwrap();
            if let Some(url) = line.strip_prefix("listening on http://") {
                break url.to_string();
            }
            if let Some(rest) = line.strip_prefix("ssh on ") {
                self.ssh_addr = rest.split(' ').next().map(str::to_string);
            }
            if let Some(url) = line.strip_prefix("metrics on http://") {
                self.metrics_addr = url.strip_suffix("/metrics").map(str::to_string);
            }
            if let Some((_, rest)) = line
                .strip_prefix("exposed ports on ")
                .and_then(|l| l.split_once("(listening on "))
            {
                self.expose_addr = rest.split([';', ')']).next().map(str::to_string);
            }
        };
        // Keep draining stdout so the daemon never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        self.addr = addr;
        self.child = Some(child);
    }

    /// SIGKILLs the daemon (no cleanup on its side); [`Daemon::spawn`]
    /// starts it again.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `http://host:port`, as `DENO_SANDBOX_ENDPOINT` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates another token in this daemon's store.
    pub fn token_create(&self, name: &str) -> String {
        token_create(&self.store, name)
    }

    /// A WebSocket request for `path` with `token`, and `config` as the
    /// create header when given.
    pub fn request(
        &self,
        path: &str,
        config: Option<Value>,
        token: &str,
    ) -> tungstenite::handshake::client::Request {
        let mut req = format!("ws://{}{}", self.addr, path)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        if let Some(cfg) = config {
            let b64 = base64::engine::general_purpose::STANDARD.encode(cfg.to_string());
            req.headers_mut()
                .insert("x-deno-sandbox-config", b64.parse().unwrap());
        }
        req
    }

    /// Creates a sandbox with `config` (the raw create header); returns the
    /// socket (with a 20 s read timeout) and the sandbox id.
    pub fn create(&self, config: Value) -> (Ws, String) {
        self.create_as(config, &self.token)
    }

    /// [`Daemon::create`] with another token.
    pub fn create_as(&self, config: Value, token: &str) -> (Ws, String) {
        let (ws, resp) =
            tungstenite::connect(self.request("/api/v3/sandboxes/create", Some(config), token))
                .expect("create handshake");
        let id = resp.headers()["x-deno-sandbox-id"]
            .to_str()
            .unwrap()
            .to_string();
        set_timeout(&ws);
        (ws, id)
    }

    /// A failed upgrade: (status, JSON body).
    pub fn create_err(&self, config: Value, token: &str) -> (u16, Value) {
        match tungstenite::connect(self.request("/api/v3/sandboxes/create", Some(config), token)) {
            Err(tungstenite::Error::Http(resp)) => {
                let body = resp.body().clone().unwrap_or_default();
                (
                    resp.status().as_u16(),
                    serde_json::from_slice(&body).unwrap_or(Value::Null),
                )
            }
            other => panic!(
                "expected an HTTP error, got {:?}",
                other.map(|(_, r)| r.status())
            ),
        }
    }

    /// `METHOD path` with curl and this daemon's token: (status, body).
    pub fn http(&self, method: &str, path: &str) -> (u16, String) {
        self.http_as(&self.token, method, path)
    }

    /// Sandbox `id`'s audit events (`GET .../audit?QUERY`), polled until
    /// `want` holds for them (the daemon writes them in batches) or 10 s
    /// pass; the last answer either way.
    pub fn audit_events(
        &self,
        id: &str,
        query: &str,
        want: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = self.http("GET", &format!("/api/v3/sandbox/{id}/audit?{query}"));
            assert_eq!(status, 200, "{body}");
            let body: Value = serde_json::from_str(&body).unwrap();
            let events = body["events"].as_array().unwrap().clone();
            if want(&events) || std::time::Instant::now() > deadline {
                return events;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `POST path` with a JSON `body` as `token`: (status, JSON; `Null`
    /// for a body that is not JSON).
    pub fn post_as(&self, token: &str, path: &str, body: &Value) -> (u16, Value) {
        let out = Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .args(["-H", "content-type: application/json", "-d"])
            .arg(body.to_string())
            .arg(format!("http://{}{}", self.addr, path))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (
            code.trim().parse().unwrap(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }

    /// `METHOD path` with curl and `token`: (status, body).
    pub fn http_as(&self, token: &str, method: &str, path: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("http://{}{}", self.addr, path))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap(), body.to_string())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM: the daemon ends its sandboxes and exits.
            // SAFETY: signalling our own child.
            unsafe { libc_kill(c.id() as i32, 15) };
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// `airlock token create --store STORE NAME`; the new token.
pub fn token_create(store: &Path, name: &str) -> String {
    let out = Command::new(AIRLOCK)
        .args(["token", "create", "--store"])
        .arg(store)
        .arg(name)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", super::describe(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("ddo_"), "{token}");
    token
}

/// A 20 s read timeout, so a test waiting on a reply fails instead of
/// hanging.
pub fn set_timeout(ws: &Ws) {
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    }
}

/// Sends request `method` with `id` and returns its response (other
/// messages on the way are skipped).
pub fn call(ws: &mut Ws, id: u64, method: &str, params: Value) -> Value {
    ws.send(tungstenite::Message::text(
        serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
            .to_string(),
    ))
    .unwrap();
    reply(ws, id)
}

/// Reads until the response to `id` arrives.
pub fn reply(ws: &mut Ws, id: u64) -> Value {
    loop {
        let msg = ws.read().expect("reading a response");
        if let tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v.get("id") == Some(&serde_json::json!(id)) {
                return v;
            }
        }
    }
}

/// Spawns `python3 -c CODE` in the sandbox (request ids `id` and `id + 1`)
/// and waits for it to exit 0.
pub fn run_python(ws: &mut Ws, id: u64, code: &str) {
    let r = call(
        ws,
        id,
        "spawn",
        serde_json::json!({"command": "python3", "args": ["-c", code], "stdout": "null", "stderr": "null"}),
    );
    let pid = r["result"]["ok"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("{r}"));
    let status = call(ws, id + 1, "processWait", serde_json::json!({"pid": pid}));
    assert_eq!(status["result"]["ok"]["code"], 0, "{status}");
}
