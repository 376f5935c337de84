//! End-to-end tests of the ingress: real sockets, real TLS, real clients.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use expose::{Backend, BoxFuture, BoxedIo, ExposeCerts, ServeOptions, CA_CERT_FILE, CA_KEY_FILE};
use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn routed_get_with_curl_verifies_against_the_persisted_ca() {
    let h = start().await;
    let port = http_backend().await;
    let domain = h.expose("sbx-1", port);
    assert!(
        domain.ends_with(&format!(".{BASE}:{}", h.addr.port())),
        "{domain}"
    );

    // curl verifies with the CA file users are told to trust; it offers h2
    // by default and must get HTTP/1.1.
    let (code, body, stderr) = h.curl(&domain, "/hello", &h.ca_path(), &[]).await;
    assert_eq!(code, "200 1.1", "curl: {stderr}");
    assert_eq!(body, "hello from the sandbox: /hello");

    // And the rustls client, by SNI as spelled with different case.
    let (status, response) = h.get(&domain.to_uppercase(), "/again").await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(body_of(&response), "hello from the sandbox: /again");
    assert_eq!(h.metrics.proxied.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn keep_alive_requests_share_one_connection() {
    let h = start().await;
    let domain = h.expose("sbx-ka", http_backend().await);
    let mut tls = h.connect(&h.ca_pem(), &domain).await.unwrap();
    for i in 0..3 {
        let request = format!("GET /{i} HTTP/1.1\r\nHost: {domain}\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        let expected = format!("hello from the sandbox: /{i}");
        let mut response = Vec::new();
        while !response.ends_with(expected.as_bytes()) {
            let mut buf = [0u8; 1024];
            let n = tokio::time::timeout(STEP, tls.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed after {} requests", i);
            response.extend_from_slice(&buf[..n]);
        }
    }
    assert_eq!(h.metrics.proxied.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn ca_reload_gives_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let first = ExposeCerts::load_or_create(dir.path(), BASE).unwrap();
    let pem = first.ca_cert_pem().unwrap().to_owned();
    drop(first);
    let again = ExposeCerts::load_or_create(dir.path(), "Sandbox.Localhost.").unwrap();
    assert_eq!(again.ca_cert_pem(), Some(pem.as_str()));
    assert_eq!(
        std::fs::read_to_string(dir.path().join(CA_CERT_FILE)).unwrap(),
        pem
    );

    // Leaves issued by the reloaded CA verify against the original PEM.
    let h = start_with(
        tempfile::tempdir().unwrap(),
        &again,
        ServeOptions::default(),
    )
    .await;
    let domain = h.expose("sbx-reload", http_backend().await);
    let tls = h
        .connect(&pem, &domain)
        .await
        .expect("reloaded CA's leaf not trusted");
    let (status, _) = get_on(tls, &domain, "/").await;
    assert_eq!(status, 200);
}

#[test]
fn bad_ca_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join(CA_CERT_FILE);
    let key_path = dir.path().join(CA_KEY_FILE);
    ExposeCerts::load_or_create(dir.path(), BASE).unwrap();
    let good_cert = std::fs::read_to_string(&cert_path).unwrap();
    let good_key = std::fs::read_to_string(&key_path).unwrap();
    let expect_err = |path: &std::path::Path, what: &str| {
        let err = ExposeCerts::load_or_create(dir.path(), BASE).expect_err(what);
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{what}: {msg}");
        msg
    };

    std::fs::write(&cert_path, "garbage\n").unwrap();
    expect_err(&cert_path, "garbage certificate");

    std::fs::write(&cert_path, &good_cert).unwrap();
    std::fs::write(
        &key_path,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    expect_err(&key_path, "corrupt key");

    // Someone else's key next to our certificate.
    let foreign = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(&key_path, foreign.serialize_pem()).unwrap();
    expect_err(&key_path, "foreign key");

    // A leaf (not a CA) in place of the CA certificate.
    std::fs::write(&key_path, &good_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["x.test".to_owned()])
        .unwrap()
        .self_signed(&leaf_key)
        .unwrap();
    std::fs::write(&cert_path, leaf.pem()).unwrap();
    expect_err(&cert_path, "non-CA certificate");

    // Certificate without its key: never silently replaced.
    std::fs::write(&cert_path, &good_cert).unwrap();
    std::fs::remove_file(&key_path).unwrap();
    let msg = expect_err(&key_path, "missing key");
    assert!(msg.contains("missing"), "{msg}");
    assert_eq!(std::fs::read_to_string(&cert_path).unwrap(), good_cert);

    // A CA made for another base domain cannot serve this one.
    std::fs::write(&key_path, &good_key).unwrap();
    let err = ExposeCerts::load_or_create(dir.path(), "other.example").unwrap_err();
    assert!(
        err.to_string().contains(&cert_path.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("other.example"), "{err}");
    ExposeCerts::load_or_create(dir.path(), BASE).expect("the good pair still loads");

    // A key alone is an interrupted creation: a new CA is made.
    std::fs::remove_file(&cert_path).unwrap();
    let fresh = ExposeCerts::load_or_create(dir.path(), BASE).unwrap();
    assert_ne!(fresh.ca_cert_pem().unwrap(), good_cert);
    assert!(ExposeCerts::load_or_create(dir.path(), "bad_domain").is_err());
}

/// A test CA and a `*.sandbox.localhost` certificate it signed:
/// (CA PEM, chain PEM, key PEM).
fn operator_certificate() -> (String, String, String) {
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "operator test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_params = CertificateParams::new(vec![format!("*.{BASE}")]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    (
        ca_cert.pem(),
        format!("{}{}", leaf.pem(), ca_cert.pem()),
        leaf_key.serialize_pem(),
    )
}

#[tokio::test]
async fn operator_certificate_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, chain_pem, key_pem) = operator_certificate();
    let chain_path = dir.path().join("chain.pem");
    let key_path = dir.path().join("key.pem");
    let ca_path = dir.path().join("operator-ca.pem");
    std::fs::write(&chain_path, &chain_pem).unwrap();
    std::fs::write(&key_path, &key_pem).unwrap();
    std::fs::write(&ca_path, &ca_pem).unwrap();

    let certs = ExposeCerts::from_files(&chain_path, &key_path, BASE).unwrap();
    assert!(certs.ca_cert_pem().is_none());
    let h = start_with(dir, &certs, ServeOptions::default()).await;
    let domain = h.expose("sbx-op", http_backend().await);

    let (code, body, stderr) = h.curl(&domain, "/op", &ca_path, &[]).await;
    assert_eq!(code, "200 1.1", "curl: {stderr}");
    assert_eq!(body, "hello from the sandbox: /op");
    // Names outside the base are still refused, operator certificate or not.
    assert!(h.connect(&ca_pem, "example.com").await.is_err());

    // A key that is not the certificate's, and a chain with no certificate.
    let other_key = h.dir.path().join("other-key.pem");
    std::fs::write(&other_key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let err = ExposeCerts::from_files(&chain_path, &other_key, BASE).unwrap_err();
    assert!(
        err.to_string().contains(&other_key.display().to_string()),
        "{err}"
    );
    let err = ExposeCerts::from_files(&key_path, &key_path, BASE).unwrap_err();
    assert!(err.to_string().contains("no certificate"), "{err}");
    let missing = h.dir.path().join("missing.pem");
    let err = ExposeCerts::from_files(&missing, &key_path, BASE).unwrap_err();
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_domain_is_404() {
    let h = start().await;
    let domain = format!("nosuchdomain0000.{BASE}:{}", h.addr.port());
    let (code, body, stderr) = h.curl(&domain, "/", &h.ca_path(), &[]).await;
    assert_eq!(code, "404 1.1", "curl: {stderr}");
    assert!(
        body.contains("no sandbox port is exposed at nosuchdomain0000.sandbox.localhost"),
        "{body}"
    );
    // The base domain itself routes nowhere either.
    let (status, _) = h.get(&format!("{BASE}:{}", h.addr.port()), "/").await;
    assert_eq!(status, 404);
    assert_eq!(h.metrics.not_found.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn pending_domain_is_503() {
    let h = start().await;
    let domain = h.router.allocate("sbx-pending").unwrap();
    let (code, body, stderr) = h.curl(&domain, "/", &h.ca_path(), &[]).await;
    assert_eq!(code, "503 1.1", "curl: {stderr}");
    assert!(body.contains("sandbox sbx-pending"), "{body}");
    assert!(body.contains("no port is exposed"), "{body}");
    assert_eq!(h.metrics.pending.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn refused_port_is_502_naming_port_and_sandbox() {
    let h = start().await;
    let port = closed_port().await;
    let domain = h.expose("sbx-502", port);
    let (code, body, stderr) = h.curl(&domain, "/", &h.ca_path(), &[]).await;
    assert_eq!(code, "502 1.1", "curl: {stderr}");
    assert!(
        body.contains(&format!(
            "nothing is listening on port {port} in sandbox sbx-502"
        )),
        "{body}"
    );
    assert_eq!(h.metrics.backend_failed.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn streamed_chunks_arrive_before_the_response_ends() {
    let h = start().await;
    let release = Arc::new(Notify::new());
    let domain = h.expose("sbx-stream", streaming_backend(Arc::clone(&release)).await);
    let mut tls = h.connect(&h.ca_pem(), &domain).await.unwrap();
    let request = format!("GET /stream HTTP/1.1\r\nHost: {domain}\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();

    // The backend holds the rest of the body until released, so seeing
    // `first` now proves it was forwarded without waiting for the end.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("first\n") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(STEP, tls.read(&mut buf))
            .await
            .expect("first chunk not forwarded while the response is open")
            .unwrap();
        assert!(n > 0, "closed early");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(!String::from_utf8_lossy(&seen).contains("second"));
    release.notify_one();
    let rest = read_all(&mut tls).await;
    assert!(rest.contains("second\n"), "{rest}");
    assert!(rest.ends_with("0\r\n\r\n"), "{rest:?}");
}

#[tokio::test]
async fn websocket_upgrade_echoes() {
    let h = start().await;
    let domain = h.expose("sbx-ws", ws_backend().await);
    let tls = h.connect(&h.ca_pem(), &domain).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(format!("wss://{domain}/ws"), tls)
        .await
        .expect("WebSocket handshake through the ingress");
    assert_eq!(response.status(), 101);
    for i in 0..3 {
        ws.send(Message::text(format!("hi {i}"))).await.unwrap();
        let reply = tokio::time::timeout(STEP, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(reply, Message::text(format!("echo: hi {i}")));
    }
    let blob = vec![7u8; 100_000];
    ws.send(Message::binary(blob.clone())).await.unwrap();
    let reply = tokio::time::timeout(STEP, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply.into_data().as_ref(), &blob[..]);
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn remove_sandbox_stops_routing_and_closes_open_connections() {
    let h = start().await;
    let http = h.expose("sbx-gone", http_backend().await);
    let ws_domain = h.expose("sbx-gone", ws_backend().await);
    let other = h.expose("sbx-stays", http_backend().await);
    assert_eq!(h.get(&http, "/").await.0, 200);

    let tls = h.connect(&h.ca_pem(), &ws_domain).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://{ws_domain}/"), tls)
        .await
        .unwrap();
    ws.send(Message::text("before")).await.unwrap();
    assert!(ws.next().await.unwrap().is_ok());

    assert_eq!(h.router.remove_sandbox("sbx-gone"), 2);
    // The open WebSocket ends (an error or end of stream, not a message).
    let after = tokio::time::timeout(STEP, ws.next())
        .await
        .expect("connection left open");
    assert!(!matches!(after, Some(Ok(Message::Text(_)))), "{after:?}");
    eventually(&h.metrics.closed_by_removal, 1).await;

    assert_eq!(h.get(&http, "/").await.0, 404);
    assert_eq!(h.get(&ws_domain, "/").await.0, 404);
    assert_eq!(h.get(&other, "/").await.0, 200);
}

#[tokio::test]
async fn sni_outside_the_base_or_none_fails_the_handshake() {
    let h = start().await;
    let ca = h.ca_pem();
    for sni in [
        "example.com",
        "sandbox.localhost.example.com",
        "xsandbox.localhost",
        "localhost",
    ] {
        let err = h.connect(&ca, sni).await.expect_err(sni);
        assert!(!err.to_string().contains("timed out"), "{sni}: {err}");
    }
    // An IP address as the server name: rustls sends no SNI.
    let no_sni = connect_as(
        h.addr,
        &ca,
        ServerName::from(std::net::IpAddr::from(LOOPBACK)),
    )
    .await;
    assert!(no_sni.is_err());
    // The server side counts them as it notices (after the client's alert).
    eventually(&h.metrics.tls_failed, 5).await;

    // curl says why: no certificate for a name the ingress does not serve.
    let (code, _, stderr) = h
        .curl(
            &format!("example.com:{}", h.addr.port()),
            "/",
            &h.ca_path(),
            &[],
        )
        .await;
    assert_eq!(code, "000 0", "{stderr}");
    assert!(!stderr.is_empty());
}

#[tokio::test]
async fn stalled_handshake_is_dropped_and_connections_are_bounded() {
    let h = start_opts(ServeOptions {
        max_connections: 1,
        handshake_timeout: Duration::from_millis(500),
        ..ServeOptions::default()
    })
    .await;
    let mut first = TcpStream::connect(h.addr).await.unwrap();
    // Wait until the ingress holds the first connection.
    while h.metrics.active.load(Ordering::Relaxed) < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut second = TcpStream::connect(h.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(STEP, second.read(&mut buf))
        .await
        .expect("over-limit connection kept");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert_eq!(h.metrics.rejected_overload.load(Ordering::Relaxed), 1);

    // The first never handshakes: closed after the timeout.
    let n = tokio::time::timeout(STEP, first.read(&mut buf))
        .await
        .expect("stalled handshake kept");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    eventually(&h.metrics.tls_failed, 1).await;
    eventually(&h.metrics.active, 0).await;
    // With the slot free, a real request goes through.
    let domain = h.expose("sbx-limit", http_backend().await);
    assert_eq!(h.get(&domain, "/").await.0, 200);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_closes_connections() {
    let mut h = start().await;
    let domain = h.expose("sbx-stop", ws_backend().await);
    let tls = h.connect(&h.ca_pem(), &domain).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://{domain}/"), tls)
        .await
        .unwrap();
    h.stop().await;
    let after = tokio::time::timeout(STEP, ws.next())
        .await
        .expect("connection outlived shutdown");
    assert!(!matches!(after, Some(Ok(Message::Text(_)))), "{after:?}");
    assert!(TcpStream::connect(h.addr).await.is_err(), "still accepting");
    assert_eq!(h.metrics.active.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn error_answer_survives_an_unread_request_body() {
    let h = start().await;
    let domain = h.router.allocate("sbx-post").unwrap();
    let tls = h.connect(&h.ca_pem(), &domain).await.unwrap();
    let mut tls = tls;
    // More than the socket buffers hold while nobody reads, less than the
    // ingress drains after answering.
    let body = vec![b'x'; 600_000];
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {domain}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    // A simple client sends the whole request before reading. The ingress
    // answers after the head and must not cut the upload short or lose the
    // answer to a reset. (Linux loopback with large socket buffers passes
    // this even without the lingering drain; slower paths need it.)
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body)
        .await
        .expect("request body not accepted");
    let response = read_all(&mut tls).await;
    assert_eq!(status_of(&response), 503, "{response}");
    assert!(body_of(&response).contains("sbx-post"), "{response}");
}

/// A backend shaped like the daemon's agent tunnel: not TCP, an in-memory
/// stream per connection, served by a task that answers one request.
struct InMemoryBackend;

impl Backend for InMemoryBackend {
    fn open(&self, port: u16) -> BoxFuture<'static, std::io::Result<BoxedIo>> {
        Box::pin(async move {
            let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if theirs.read(&mut byte).await.ok()? == 0 {
                        return None;
                    }
                    head.push(byte[0]);
                }
                let body = format!("in-memory port {port}");
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                theirs.write_all(response.as_bytes()).await.ok()?;
                theirs.shutdown().await.ok()
            });
            Ok(Box::new(ours) as BoxedIo)
        })
    }
}

/// A backend whose `open` never completes.
struct HangingBackend;

impl Backend for HangingBackend {
    fn open(&self, _port: u16) -> BoxFuture<'static, std::io::Result<BoxedIo>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn any_backend_stream_works_and_a_hanging_open_is_504() {
    let h = start_opts(ServeOptions {
        open_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    })
    .await;
    let domain = h.router.allocate("sbx-mem").unwrap();
    h.router
        .bind(&domain, "sbx-mem", 3000, Arc::new(InMemoryBackend))
        .unwrap();
    let (status, response) = h.get(&domain, "/").await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(body_of(&response), "in-memory port 3000");

    let hanging = h.router.allocate("sbx-hang").unwrap();
    h.router
        .bind(&hanging, "sbx-hang", 3000, Arc::new(HangingBackend))
        .unwrap();
    let (status, response) = h.get(&hanging, "/").await;
    assert_eq!(status, 504, "{response}");
    assert!(
        body_of(&response).contains("port 3000 in sandbox sbx-hang"),
        "{response}"
    );
}

#[tokio::test]
async fn a_config_offering_h2_is_narrowed_to_http1() {
    let dir = tempfile::tempdir().unwrap();
    let certs = ExposeCerts::load_or_create(&dir.path().join("ca"), BASE).unwrap();
    let mut tls = (*certs.server_config()).clone();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let h = start_with_config(dir, Arc::new(tls), ServeOptions::default()).await;
    let domain = h.expose("sbx-alpn", http_backend().await);
    let (code, body, stderr) = h.curl(&domain, "/", &h.ca_path(), &["--http2"]).await;
    assert_eq!(code, "200 1.1", "curl: {stderr}");
    assert_eq!(body, "hello from the sandbox: /");
}
