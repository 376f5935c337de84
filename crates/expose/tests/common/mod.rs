//! Shared pieces of the ingress tests: a real ingress on loopback, real
//! backends, and real TLS clients (rustls and curl).

#![allow(dead_code)] // each test binary uses a different subset

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use expose::{ExposeCerts, Ingress, Metrics, Router, ServeOptions, TcpBackend};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

pub const BASE: &str = "sandbox.localhost";
pub const LOOPBACK: std::net::Ipv4Addr = std::net::Ipv4Addr::LOCALHOST;
/// Upper bound for any single network step in these tests.
pub const STEP: Duration = Duration::from_secs(10);

/// A running ingress on 127.0.0.1 with its own temp dir.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub router: Arc<Router>,
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<()>>,
}

/// An ingress with a CA made in a fresh temp dir.
pub async fn start() -> Harness {
    start_opts(ServeOptions::default()).await
}

pub async fn start_opts(options: ServeOptions) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let certs = ExposeCerts::load_or_create(&dir.path().join("ca"), BASE).unwrap();
    start_with(dir, &certs, options).await
}

pub async fn start_with(
    dir: tempfile::TempDir,
    certs: &ExposeCerts,
    options: ServeOptions,
) -> Harness {
    start_with_config(dir, certs.server_config(), options).await
}

pub async fn start_with_config(
    dir: tempfile::TempDir,
    tls: Arc<rustls::ServerConfig>,
    options: ServeOptions,
) -> Harness {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Arc::new(Router::new(BASE, addr.port()).unwrap());
    let ingress = Ingress::new(Arc::clone(&router), tls, options);
    let metrics = ingress.metrics();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(ingress.serve(listener, async {
        let _ = stopped.await;
    }));
    Harness {
        dir,
        router,
        addr,
        metrics,
        stop: Some(stop),
        task: Some(task),
    }
}

impl Harness {
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca").join(expose::CA_CERT_FILE)
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca_path()).unwrap()
    }

    /// Allocates a domain for `sandbox` and binds it to 127.0.0.1:`port`.
    pub fn expose(&self, sandbox: &str, port: u16) -> String {
        let domain = self.router.allocate(sandbox).unwrap();
        self.router
            .bind(
                &domain,
                sandbox,
                port,
                Arc::new(TcpBackend::new(LOOPBACK.into())),
            )
            .unwrap();
        domain
    }

    /// A TLS connection to the ingress with `sni`, trusting `roots_pem`.
    pub async fn connect(&self, roots_pem: &str, sni: &str) -> io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(name_of(sni).to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        connect_as(self.addr, roots_pem, name).await
    }

    /// GET `path` on `domain` over a fresh connection trusting the CA.
    pub async fn get(&self, domain: &str, path: &str) -> (u16, String) {
        let tls = self.connect(&self.ca_pem(), domain).await.unwrap();
        get_on(tls, domain, path).await
    }

    /// Runs curl against `https://{domain}{path}`, resolving the name to
    /// the ingress and trusting `cacert`. Returns (HTTP code, body, stderr).
    pub async fn curl(
        &self,
        domain: &str,
        path: &str,
        cacert: &Path,
        extra: &[&str],
    ) -> (String, String, String) {
        let resolve = format!("{}:{}:127.0.0.1", name_of(domain), self.addr.port());
        let mut args: Vec<String> = vec![
            "-sS".into(),
            "--max-time".into(),
            "10".into(),
            "--resolve".into(),
            resolve,
            "--cacert".into(),
            cacert.display().to_string(),
            "-w".into(),
            "\n%{http_code} %{http_version}".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("https://{domain}{path}"));
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(&args)
                .output()
                .expect("running curl")
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        (code.to_owned(), body.to_owned(), stderr)
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(STEP, task)
                .await
                .expect("serve did not stop")
                .unwrap();
        }
    }
}

/// The name part of a domain that may carry `:port`.
pub fn name_of(domain: &str) -> &str {
    domain.rsplit_once(':').map_or(domain, |(name, _)| name)
}

pub fn client_config(roots_pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

pub async fn connect_as(
    addr: SocketAddr,
    roots_pem: &str,
    name: ServerName<'static>,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let connector = TlsConnector::from(client_config(roots_pem));
    tokio::time::timeout(STEP, connector.connect(name, tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))?
}

/// Sends a `Connection: close` GET and reads the whole response.
pub async fn get_on<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    domain: &str,
    path: &str,
) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n");
    io.write_all(request.as_bytes()).await.unwrap();
    let response = read_all(&mut io).await;
    (status_of(&response), response)
}

/// Reads until EOF (or an error: an unclean close still counts as the end).
pub async fn read_all<S: AsyncRead + Unpin>(io: &mut S) -> String {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(STEP, io.read(&mut buf))
            .await
            .expect("read hung")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

pub fn status_of(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {response:?}"))
}

pub fn body_of(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// Reads one request head; `None` at EOF.
async fn read_request_head(tcp: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// An HTTP/1.1 server with keep-alive that answers every request with
/// `hello from the sandbox: <path>`.
pub async fn http_backend() -> u16 {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                while let Some(head) = read_request_head(&mut tcp).await {
                    let path = head.split(' ').nth(1).unwrap_or("?").to_owned();
                    let body = format!("hello from the sandbox: {path}");
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tcp.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                    if head.to_ascii_lowercase().contains("connection: close") {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A server whose response is chunked: `first` at once, `second` and the
/// end only after `release` is notified.
pub async fn streaming_backend(release: Arc<Notify>) -> u16 {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let release = Arc::clone(&release);
            tokio::spawn(async move {
                read_request_head(&mut tcp).await?;
                tcp.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n6\r\nfirst\n\r\n")
                    .await
                    .ok()?;
                release.notified().await;
                tcp.write_all(b"7\r\nsecond\n\r\n0\r\n\r\n").await.ok()
            });
        }
    });
    port
}

/// A WebSocket server that answers each text message `m` with `echo: m`
/// and each binary message with the same bytes.
pub async fn ws_backend() -> u16 {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    let reply = match msg {
                        Message::Text(text) => Message::text(format!("echo: {}", text.as_str())),
                        Message::Binary(bytes) => Message::Binary(bytes),
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if ws.send(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// A loopback port with nothing listening on it.
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Waits until `counter` reads `want` (the ingress may update it just after
/// the client has seen the effect), failing after [`STEP`].
pub async fn eventually(counter: &std::sync::atomic::AtomicU64, want: u64) {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let got = counter.load(std::sync::atomic::Ordering::Relaxed);
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "counter is {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
