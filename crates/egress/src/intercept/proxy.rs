//! One intercepted connection: TLS from the sandbox terminated with the
//! sandbox CA, HTTP/1.1 or HTTP/2 (as the sandbox chose by ALPN) served by
//! hyper, each request rewritten and forwarded over the gateway's own TLS
//! connection to the upstream, each response rewritten back.

use super::body::{BoxError, ReplacingBody};
use super::substitute::{substitute_header_value, Substitutions};
use super::{InterceptStats, Interception};
use crate::budget::{Charge, MemoryBudget};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
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
        // of responses: ask for them uncompressed.
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
        strip_hop_by_hop(&mut parts.headers);
        for (name, value) in parts.headers.iter_mut() {
            if let Some(new) = substitute_header_value(inbound, name.as_str(), value.as_bytes()) {
                *value = HeaderValue::from_bytes(&new).map_err(|e| e.to_string())?;
            }
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
