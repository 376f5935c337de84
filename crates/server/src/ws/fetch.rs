//! `fetch` (docs/protocol.md, "sandbox.fetch"): an HTTP request made from inside the
//! sandbox, typically to a server running in it (`http://localhost:8000`).
//!
//! The daemon speaks HTTP itself (hyper) over a TCP connection the agent
//! opens inside the sandbox (`AgentClient::tcp_connect`), so a server bound
//! to the sandbox's 127.0.0.1 is reachable and anything else goes out
//! through the sandbox's own network and egress policy. With `pid`, the
//! request goes to the port that process listens on (`deno.run`'s
//! `runtime.fetch`), whatever the URL's host says.

use agent_proto::calls::{FetchParams, Redirect};
use agent_proto::ErrorObject;
use axum::http::{self, Method, Uri};
use bytes::Bytes;
use egress::intercept::ca::UpstreamTls;
use futures_util::stream;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper_util::rt::TokioIo;
use manager::Live;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Redirects followed before giving up, as browsers do.
const MAX_REDIRECTS: usize = 20;
/// Response body chunks buffered ahead of the client.
const BODY_CHUNKS: usize = 16;

type ReqBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub(super) struct Response {
    pub status: u16,
    pub status_text: String,
    pub headers: Vec<[String; 2]>,
    /// `None` for responses that have no body (HEAD, 204, 304, ...).
    pub body: Option<mpsc::Receiver<Bytes>>,
}

fn type_error(msg: impl Into<String>) -> ErrorObject {
    ErrorObject::type_error(format!("fetch: {}", msg.into()))
}

/// Runs the request (following redirects as asked) and returns the final
/// response with its body streaming.
pub(super) async fn run(
    live: &Live,
    upstream_tls: Option<Arc<UpstreamTls>>,
    mut req: FetchParams,
    mut body: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
) -> Result<Response, ErrorObject> {
    let pid_port = match req.pid {
        Some(pid) => Some(crate::sandbox_port::port_of_pid(live, pid).await?),
        None => None,
    };
    for _ in 0..=MAX_REDIRECTS {
        let response = send(live, upstream_tls.as_deref(), &req, pid_port, body.take()).await?;
        let status = response.status();
        let location = response
            .headers()
            .get(http::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_string);
        let redirecting = status.is_redirection()
            && location.is_some()
            && status != http::StatusCode::NOT_MODIFIED;
        if !redirecting || req.redirect == Redirect::Manual {
            return Ok(into_response(&req.method, response));
        }
        if req.redirect == Redirect::Error {
            return Err(ErrorObject::type_error(format!(
                "fetch: {} redirected ({status}) and redirect is \"error\"",
                req.url
            )));
        }
        let location = location.expect("checked above");
        req.url = resolve_location(&req.url, &location)?;
        // 303, and 301/302 after a POST, become a GET without a body, as
        // the fetch standard says; a streamed body cannot be sent twice.
        if status == http::StatusCode::SEE_OTHER
            || (req.method == Method::POST && matches!(status.as_u16(), 301 | 302))
        {
            if req.method != Method::HEAD {
                req.method = Method::GET;
            }
            req.headers.retain(|(n, _)| {
                !matches!(
                    n.as_str(),
                    "content-type" | "content-length" | "content-encoding"
                )
            });
        }
    }
    Err(ErrorObject::type_error(format!(
        "fetch: more than {MAX_REDIRECTS} redirects, last to {}",
        req.url
    )))
}

/// A redirect's `Location` resolved against the request's URL, as the URL
/// standard says (absolute, `/path`, `path`, `../path`, `?query`, `//host`).
fn resolve_location(base: &Uri, location: &str) -> Result<Uri, ErrorObject> {
    let bad = || ErrorObject::type_error(format!("fetch: bad redirect location {location:?}"));
    let base = url::Url::parse(&base.to_string()).map_err(|_| bad())?;
    let joined = base.join(location).map_err(|_| bad())?;
    joined.as_str().parse().map_err(|_| bad())
}

async fn send(
    live: &Live,
    upstream_tls: Option<&UpstreamTls>,
    req: &FetchParams,
    pid_port: Option<u16>,
    body: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
) -> Result<hyper::Response<hyper::body::Incoming>, ErrorObject> {
    // With a pid the URL names only the path, query and Host: the process
    // listens in plain HTTP (as Deno's `runtime.fetch` serves it), so an
    // `https://` URL must not make the daemon speak TLS to it.
    let https = req.url.scheme_str() == Some("https") && pid_port.is_none();
    let url_host = req
        .url
        .host()
        .expect("FetchParams have a host")
        .trim_matches(['[', ']']);
    // `localhost` names are the sandbox's loopback, mapped here so they
    // never depend on the sandbox's /etc/hosts.
    let (host, port) = match pid_port {
        Some(port) => ("127.0.0.1".to_string(), port),
        None => {
            let host = if url_host == "localhost" || url_host.ends_with(".localhost") {
                "127.0.0.1".to_string()
            } else {
                url_host.to_string()
            };
            (
                host,
                req.url.port_u16().unwrap_or(if https { 443 } else { 80 }),
            )
        }
    };
    let tunnel = match live.client.tcp_connect(&host, port).await {
        Ok(Ok(t)) => t,
        Ok(Err(mut e)) => {
            e.message = format!("fetch {}: {}", req.url, e.message);
            return Err(e);
        }
        Err(e) => {
            return Err(ErrorObject::new(
                "Error",
                format!("sandbox agent: {e:#}"),
                None,
            ))
        }
    };

    let mut builder = hyper::Request::builder()
        .method(req.method.clone())
        .uri(req.url.path_and_query().map_or("/", |p| p.as_str()));
    let mut has_host = false;
    for (name, value) in &req.headers {
        has_host |= name == http::header::HOST;
        builder = builder.header(name, value);
    }
    if !has_host {
        let authority = req.url.authority().map_or(url_host, |a| a.as_str());
        builder = builder.header(http::header::HOST, authority);
    }
    let body: ReqBody = match body {
        Some(rx) => {
            let chunks = stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|chunk| {
                    (
                        Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(chunk))),
                        rx,
                    )
                })
            });
            BodyExt::boxed(StreamBody::new(chunks))
        }
        None if req.method == Method::GET || req.method == Method::HEAD => {
            BodyExt::boxed(Empty::new())
        }
        None => BodyExt::boxed(Full::new(Bytes::new())),
    };
    let request = builder
        .body(body)
        .map_err(|e| type_error(format!("building the request: {e}")))?;

    let failed = |e: &dyn std::fmt::Display| {
        ErrorObject::new("Http", format!("fetch {}: {e}", req.url), None)
    };
    let response = if https {
        let Some(tls) = upstream_tls else {
            return Err(type_error(
                "https:// needs the daemon's network (airlock serve without --no-network)",
            ));
        };
        let name = rustls::pki_types::ServerName::try_from(url_host.to_string())
            .map_err(|e| failed(&e))?;
        let stream = tls
            .connector(&[b"http/1.1".to_vec()])
            .connect(name, tunnel)
            .await
            .map_err(|e| failed(&format!("TLS: {e}")))?;
        exchange(TokioIo::new(stream), request)
            .await
            .map_err(|e| failed(&e))?
    } else {
        exchange(TokioIo::new(tunnel), request)
            .await
            .map_err(|e| failed(&e))?
    };
    Ok(response)
}

async fn exchange<I>(
    io: I,
    request: hyper::Request<ReqBody>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    // The connection task lives until the response body is read (or
    // dropped); upgrades are not offered through fetch.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(request).await
}

fn into_response(method: &Method, response: hyper::Response<hyper::body::Incoming>) -> Response {
    let status = response.status();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            [
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ]
        })
        .collect();
    // The JS SDK builds a WHATWG Response: these statuses must have a null body.
    let null_body = method == Method::HEAD || matches!(status.as_u16(), 101 | 204 | 205 | 304);
    let body = if null_body {
        None
    } else {
        let (tx, rx) = mpsc::channel(BODY_CHUNKS);
        let mut incoming = response.into_body();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = incoming.frame().await {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        break; // the client cancelled the stream
                    }
                }
            }
        });
        Some(rx)
    };
    Response {
        status: status.as_u16(),
        status_text: status.canonical_reason().unwrap_or("").to_string(),
        headers,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_locations_resolve_like_a_browser() {
        let base: Uri = "http://localhost:8000/a/b?x=1".parse().unwrap();
        for (location, want) in [
            (
                "/hello?from=moved",
                "http://localhost:8000/hello?from=moved",
            ),
            ("c", "http://localhost:8000/a/c"),
            ("../c", "http://localhost:8000/c"),
            ("?y=2", "http://localhost:8000/a/b?y=2"),
            ("//other:9/p", "http://other:9/p"),
            ("https://example.com/z", "https://example.com/z"),
        ] {
            assert_eq!(
                resolve_location(&base, location).unwrap().to_string(),
                want,
                "{location}"
            );
        }
        assert!(resolve_location(&base, "http://[bad").is_err());
    }
}
