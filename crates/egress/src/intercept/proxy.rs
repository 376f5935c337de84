//! One intercepted connection: TLS from the sandbox terminated with the
//! sandbox CA, HTTP/1.1 or HTTP/2 (as the sandbox chose by ALPN) served by
//! hyper, each request rewritten and forwarded over the gateway's own TLS
//! connection to the upstream, each response rewritten back.

use super::body::{BoxError, ReplacingBody};
use super::decode;
use super::substitute::{substitute_header_value, Substitutions};
use super::{InterceptStats, Interception};
use crate::budget::{Charge, MemoryBudget};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::client::conn::{http1 as client1, http2 as client2};
use hyper::server::conn::{http1 as server1, http2 as server2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::TlsAcceptor;

type ProxyBody = BoxBody<Bytes, BoxError>;

/// Bodies up to this size with a known length are rewritten whole, so the
/// upstream (or the sandbox) still gets a Content-Length; larger ones are
/// streamed (chunked on HTTP/1.1). A body rewritten whole is held about
/// three times over (as read, as copied, as rewritten): that is charged to
/// the sandbox's gateway budget while it is rewritten, and a body that does
/// not fit is streamed instead.
const BUFFER_LIMIT: u64 = 1 << 20;
const BUFFER_COPIES: usize = 3;

/// Hop-by-hop headers (RFC 9110 7.6.1): they describe one connection, and
/// the two sides of the gateway are different connections, possibly of
/// different HTTP versions.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
];

enum Upstream {
    H1(Mutex<client1::SendRequest<ProxyBody>>),
    H2(client2::SendRequest<ProxyBody>),
}

struct Conn {
    host: String,
    port: u16,
    upstream: Upstream,
    /// Per secret that may go to this host: its substitutions and the
    /// number of requests it was used in.
    outbound: Vec<(String, Substitutions, Arc<AtomicU64>)>,
    inbound: Substitutions,
    requests: AtomicU64,
    /// Responses refused because their coding could not be decoded (so
    /// not masked): how many, and why the first was, for the audit event.
    refused: AtomicU64,
    first_refusal: std::sync::OnceLock<String>,
    /// Upgraded (WebSocket) tunnels: the connection lasts until they end.
    tunnels: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    budget: Arc<MemoryBudget>,
}

/// Serves one intercepted connection until either side closes. `sandbox`
/// carries the sandbox's bytes, starting with its ClientHello; `upstream`
/// is the TCP connection the gateway already made to `host:port`.
pub async fn serve<S>(
    sandbox: S,
    upstream: TcpStream,
    host: &str,
    port: u16,
    icpt: Arc<Interception>,
    budget: Arc<MemoryBudget>,
) -> Result<InterceptStats, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tls = TlsAcceptor::from(icpt.ca.server_config())
        .accept(sandbox)
        .await
        .map_err(|e| format!("TLS from the sandbox: {e}"))?;
    let sandbox_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    // Offer the upstream what the sandbox chose, so an HTTP/1.1 client
    // (a WebSocket upgrade, say) meets an HTTP/1.1 upstream.
    let alpn: Vec<Vec<u8>> = if sandbox_h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
    let up = icpt
        .upstream
        .connector(&alpn)
        .connect(name, upstream)
        .await
        .map_err(|e| format!("TLS to {host}: {e}"))?;
    let upstream = if up.get_ref().1.alpn_protocol() == Some(b"h2") {
        let (send, conn) = client2::handshake(TokioExecutor::new(), TokioIo::new(up))
            .await
            .map_err(|e| format!("HTTP/2 to {host}: {e}"))?;
        tokio::spawn(conn);
        Upstream::H2(send)
    } else {
        let (send, conn) = client1::handshake(TokioIo::new(up))
            .await
            .map_err(|e| format!("HTTP/1.1 to {host}: {e}"))?;
        tokio::spawn(conn.with_upgrades());
        Upstream::H1(Mutex::new(send))
    };
    let conn = Arc::new(Conn {
        outbound: icpt
            .outbound(host, port)
            .into_iter()
            .map(|(n, s)| (n, s, Arc::new(AtomicU64::new(0))))
            .collect(),
        inbound: icpt.inbound(),
        host: host.to_string(),
        port,
        upstream,
        requests: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        first_refusal: std::sync::OnceLock::new(),
        tunnels: std::sync::Mutex::new(Vec::new()),
        budget,
    });
    let svc_conn = conn.clone();
    let service = service_fn(move |req| {
        let conn = svc_conn.clone();
        async move { Ok::<_, std::convert::Infallible>(conn.handle(req).await) }
    });
    let io = TokioIo::new(tls);
    let served = if sandbox_h2 {
        server2::Builder::new(TokioExecutor::new())
            .serve_connection(io, service)
            .await
    } else {
        server1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades()
            .await
    };
    if let Err(e) = served {
        tracing::debug!(host = %conn.host, "intercepted connection: {e}");
    }
    let tunnels = std::mem::take(&mut *conn.tunnels.lock().unwrap_or_else(|e| e.into_inner()));
    for tunnel in tunnels {
        let _ = tunnel.await;
    }
    Ok(conn.stats())
}

impl Conn {
    fn stats(&self) -> InterceptStats {
        InterceptStats {
            requests: self.requests.load(Ordering::Relaxed),
            secrets: self
                .outbound
                .iter()
                .map(|(n, _, hits)| (n.clone(), hits.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            refused: self.refused.load(Ordering::Relaxed),
            first_refusal: self.first_refusal.get().cloned(),
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match self.forward(req).await {
            Ok(resp) => resp,
            Err(msg) => {
                tracing::debug!(host = %self.host, "intercepted request failed: {msg}");
                error_response(StatusCode::BAD_GATEWAY, &msg)
            }
        }
    }

    async fn forward(&self, mut req: Request<Incoming>) -> Result<Response<ProxyBody>, String> {
        let upgrade = is_websocket_upgrade(req.headers());
        // WebSocket: once both sides have switched protocols the bytes are
        // passed through as they are.
        let sandbox_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let mut used = vec![false; self.outbound.len()];

        // The request target.
        let target = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let mut target = target.into_bytes();
        for (i, (_, subs, _)) in self.outbound.iter().enumerate() {
            if let std::borrow::Cow::Owned(new) = subs.replace_all(&target) {
                used[i] = true;
                target = new;
            }
        }
        let target = String::from_utf8(target)
            .map_err(|_| "the secret's value cannot go in a URL".to_string())?;

        // Headers.
        if !upgrade {
            strip_hop_by_hop(&mut parts.headers);
        }
        for (name, value) in parts.headers.iter_mut() {
            for (i, (_, subs, _)) in self.outbound.iter().enumerate() {
                if let Some(new) = substitute_header_value(subs, name.as_str(), value.as_bytes()) {
                    *value = HeaderValue::from_bytes(&new).map_err(|_| {
                        format!("the secret's value cannot go in the {name} header")
                    })?;
                    used[i] = true;
                }
            }
        }
        // Compressed responses would hide a real value from the masking
        // of responses: ask for them uncompressed. An upstream may answer
        // compressed all the same; `respond` decodes what it gets.
        parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        let authority = if self.port == 443 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        parts.uri = match &self.upstream {
            Upstream::H2(_) => format!("https://{authority}{target}"),
            Upstream::H1(_) => target,
        }
        .parse::<Uri>()
        .map_err(|e| format!("rewritten request target: {e}"))?;
        parts.version = http::Version::default();
        if matches!(self.upstream, Upstream::H1(_)) {
            parts.headers.insert(
                header::HOST,
                HeaderValue::from_str(&authority).map_err(|e| e.to_string())?,
            );
        } else {
            parts.headers.remove(header::HOST);
        }

        // The body.
        let length = content_length(&parts.headers);
        let body: ProxyBody = match self.whole_body_charge(length) {
            Some(_charge) => {
                let bytes = body
                    .collect()
                    .await
                    .map_err(|e| format!("reading the request body: {e}"))?
                    .to_bytes();
                let mut bytes = bytes.to_vec();
                for (i, (_, subs, _)) in self.outbound.iter().enumerate() {
                    if let std::borrow::Cow::Owned(new) = subs.replace_all(&bytes) {
                        used[i] = true;
                        bytes = new;
                    }
                }
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                Full::new(Bytes::from(bytes))
                    .map_err(|never| match never {})
                    .boxed()
            }
            _ => {
                parts.headers.remove(header::CONTENT_LENGTH);
                let mut streamed = ReplacingBody::new(body);
                for (_, subs, hits) in &self.outbound {
                    streamed = streamed.stage(subs, Some(hits.clone()));
                }
                streamed.boxed()
            }
        };
        for (i, (_, _, hits)) in self.outbound.iter().enumerate() {
            if used[i] {
                hits.fetch_add(1, Ordering::Relaxed);
            }
        }

        let request = Request::from_parts(parts, body);
        let response = match &self.upstream {
            Upstream::H2(send) => {
                let mut send = send.clone();
                send.ready().await.map_err(|e| e.to_string())?;
                send.send_request(request).await
            }
            Upstream::H1(send) => {
                let fut = {
                    let mut send = send.lock().await;
                    send.ready().await.map_err(|e| e.to_string())?;
                    send.send_request(request)
                };
                fut.await
            }
        }
        .map_err(|e| format!("{}: {e}", self.host))?;
        let mut response = response;
        if let (Some(sandbox_side), StatusCode::SWITCHING_PROTOCOLS) =
            (sandbox_upgrade, response.status())
        {
            let upstream_side = hyper::upgrade::on(&mut response);
            let tunnel = tokio::spawn(async move {
                if let (Ok(a), Ok(b)) = (sandbox_side.await, upstream_side.await) {
                    let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
            });
            self.tunnels
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(tunnel);
        }
        self.respond(response).await
    }

    /// The charge for rewriting a body of `length` whole; None: stream it.
    fn whole_body_charge(&self, length: Option<u64>) -> Option<Charge> {
        let n = length.filter(|&n| n <= BUFFER_LIMIT)?;
        self.budget.charge(BUFFER_COPIES * n as usize)
    }

    async fn respond(&self, response: Response<Incoming>) -> Result<Response<ProxyBody>, String> {
        let (mut parts, body) = response.into_parts();
        let inbound = &self.inbound;
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            // No body; and the upstream's connection is handed over only
            // once its (empty) body is gone.
            drop(body);
            return Ok(Response::from_parts(parts, empty()));
        }
        // Before the hop-by-hop headers go: Transfer-Encoding may name a
        // coding too.
        let codings = match decode::codings(&parts.headers) {
            Ok(codings) => codings,
            Err(unknown) => {
                let msg = format!("{}: {unknown}", self.host);
                self.refused.fetch_add(1, Ordering::Relaxed);
                let _ = self.first_refusal.set(msg.clone());
                return Err(msg);
            }
        };
        strip_hop_by_hop(&mut parts.headers);
        for (name, value) in parts.headers.iter_mut() {
            if let Some(new) = substitute_header_value(inbound, name.as_str(), value.as_bytes()) {
                *value = HeaderValue::from_bytes(&new).map_err(|e| e.to_string())?;
            }
        }
        // A coded body is decoded before it is masked, and goes to the
        // sandbox decoded: a real value must not ride past the masking
        // inside compressed bytes that the sandbox then inflates. A body
        // known to be empty (HEAD, 204, 304, Content-Length: 0) has nothing
        // to mask and keeps its headers as they are.
        if !codings.is_empty() && !body.is_end_stream() {
            parts.headers.remove(header::CONTENT_ENCODING);
            parts.headers.remove(header::CONTENT_LENGTH);
            let body = ReplacingBody::new(decode::decoded(body, &codings)).stage(inbound, None);
            return Ok(Response::from_parts(parts, body.boxed()));
        }
        let body: ProxyBody = match self.whole_body_charge(content_length(&parts.headers)) {
            Some(_charge) => {
                let bytes = body
                    .collect()
                    .await
                    .map_err(|e| format!("reading the response: {e}"))?
                    .to_bytes();
                let masked = inbound.replace_all(&bytes).into_owned();
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(masked.len()));
                Full::new(Bytes::from(masked))
                    .map_err(|never| match never {})
                    .boxed()
            }
            _ => {
                parts.headers.remove(header::CONTENT_LENGTH);
                ReplacingBody::new(body).stage(inbound, None).boxed()
            }
        };
        Ok(Response::from_parts(parts, body))
    }
}

fn is_websocket_upgrade(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

fn error_response(status: StatusCode, msg: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("airlock gateway: {msg}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::super::ca::{SandboxCa, UpstreamTls};
    use super::super::SecretSpec;
    use super::*;
    use async_compression::tokio::bufread::{GzipEncoder, ZstdEncoder};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    const VALUE: &str = "sk-live-real-value-0123456789";

    /// An upstream on loopback (HTTP/1.1 or HTTP/2, as ALPN decides) that
    /// ignores Accept-Encoding: it echoes the Authorization header it got,
    /// coded as the path says (`/gzip,zstd`, `/x-unknown`).
    async fn upstream(ca: Arc<SandboxCa>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = TlsAcceptor::from(ca.server_config());
                tokio::spawn(async move {
                    let tls = acceptor.accept(tcp).await.unwrap();
                    let service = service_fn(|req: Request<Incoming>| async move {
                        let auth = req.headers()[header::AUTHORIZATION].as_bytes().to_vec();
                        let mut body = format!("{:?} echo: ", req.version()).into_bytes();
                        body.extend(auth);
                        let codings = req.uri().path().trim_start_matches('/').to_string();
                        for coding in codings.split(',') {
                            let mut out = Vec::new();
                            match coding {
                                "gzip" => {
                                    GzipEncoder::new(body.as_slice())
                                        .read_to_end(&mut out)
                                        .await
                                }
                                "zstd" => {
                                    ZstdEncoder::new(body.as_slice())
                                        .read_to_end(&mut out)
                                        .await
                                }
                                // Labelled, not coded.
                                _ => body.as_slice().read_to_end(&mut out).await,
                            }
                            .unwrap();
                            body = out;
                        }
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        resp.headers_mut().insert(
                            header::CONTENT_ENCODING,
                            HeaderValue::from_str(&codings).unwrap(),
                        );
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        port
    }

    /// One request from the "sandbox" through `serve`, over `alpn`.
    async fn through_gateway(path: &str, alpn: &[u8]) -> (Response<Bytes>, String, InterceptStats) {
        let upstream_ca = Arc::new(SandboxCa::generate("upstream").unwrap());
        let port = upstream(upstream_ca.clone()).await;
        let upstream_tls = UpstreamTls::with_roots_only(&[upstream_ca.cert_pem()]).unwrap();
        let spec = SecretSpec {
            name: "API_KEY".into(),
            hosts: vec!["api.test".into()],
            value: VALUE.into(),
        };
        let (icpt, env) = Interception::new("sbx", &[spec], Arc::new(upstream_tls)).unwrap();
        let placeholder = env[0].1.clone();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(icpt.ca_pem().as_bytes()).unwrap())
            .unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        client.alpn_protocols = vec![alpn.to_vec()];

        let (sandbox, gateway) = tokio::io::duplex(64 * 1024);
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let gateway = tokio::spawn(async move {
            let budget = MemoryBudget::new(
                crate::budget::DEFAULT_PER_SANDBOX,
                Arc::new(crate::budget::GatewayMemory::default()),
            );
            serve(gateway, tcp, "api.test", port, Arc::new(icpt), budget)
                .await
                .unwrap()
        });
        let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(ServerName::try_from("api.test").unwrap(), sandbox)
            .await
            .unwrap();
        let req = Request::get(format!("https://api.test:{port}/{path}"))
            .header(header::AUTHORIZATION, format!("Bearer {placeholder}"))
            .header(header::ACCEPT_ENCODING, "gzip, deflate, br, zstd")
            .body(empty())
            .unwrap();
        let resp = if alpn == b"h2" {
            let (mut send, conn) = client2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        } else {
            let (mut send, conn) = client1::handshake(TokioIo::new(tls)).await.unwrap();
            tokio::spawn(conn);
            let mut req = req;
            *req.uri_mut() = format!("/{path}").parse().unwrap();
            req.headers_mut()
                .insert(header::HOST, HeaderValue::from_static("api.test"));
            send.send_request(req).await.unwrap()
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let stats = gateway.await.unwrap();
        (Response::from_parts(parts, body), placeholder, stats)
    }

    /// Invariant: with HTTP/2 or HTTP/1.1 on either side, a real value an
    /// upstream sends back compressed reaches the sandbox masked.
    #[tokio::test]
    async fn compressed_echoes_are_decoded_and_masked_over_h1_and_h2() {
        for alpn in [&b"h2"[..], b"http/1.1"] {
            for path in ["gzip", "zstd,gzip"] {
                let (resp, placeholder, stats) = through_gateway(path, alpn).await;
                let body = String::from_utf8_lossy(resp.body()).into_owned();
                assert_eq!(resp.status(), StatusCode::OK, "{path}: {body}");
                assert!(!resp.headers().contains_key(header::CONTENT_ENCODING));
                let version = if alpn == b"h2" {
                    "HTTP/2.0"
                } else {
                    "HTTP/1.1"
                };
                assert_eq!(
                    body,
                    format!("{version} echo: Bearer {placeholder}"),
                    "{path}"
                );
                assert_eq!(stats.refused, 0);
            }
        }
    }

    /// Invariant: a response the gateway cannot decode is never passed on.
    #[tokio::test]
    async fn unknown_codings_are_refused() {
        for alpn in [&b"h2"[..], b"http/1.1"] {
            let (resp, _, stats) = through_gateway("x-unknown", alpn).await;
            let body = String::from_utf8_lossy(resp.body()).into_owned();
            assert_eq!(resp.status(), StatusCode::BAD_GATEWAY, "{body}");
            assert!(
                body.contains("cannot decode") && !body.contains(VALUE),
                "{body}"
            );
            assert_eq!(stats.refused, 1);
            assert!(stats.first_refusal.unwrap().contains("x-unknown"));
        }
    }
}
