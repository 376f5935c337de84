//! Talking to a running daemon over its HTTP API (like docker talks to
//! dockerd): where it is, which token to send, and a small blocking
//! HTTP/1.1 client for the operator commands.
//!
//! Endpoint: `--endpoint`, else `DENO_SANDBOX_ENDPOINT`, else
//! `DENO_DEPLOY_ENDPOINT`, else `http://127.0.0.1:7070`.
//! Token: `--token`, else `DENO_DEPLOY_TOKEN`.

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7070";

/// The daemon to talk to and the token to send.
#[derive(Debug, Clone)]
pub struct ApiTarget {
    pub endpoint: String,
    pub token: String,
}

/// Endpoint and token from the flags, else the environment the SDKs use.
pub fn resolve(endpoint_flag: Option<String>, token_flag: Option<String>) -> Result<ApiTarget> {
    let endpoint = endpoint_flag
        .filter(|s| !s.is_empty())
        .or_else(|| env_nonempty("DENO_SANDBOX_ENDPOINT"))
        .or_else(|| env_nonempty("DENO_DEPLOY_ENDPOINT"))
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    let endpoint = endpoint.trim_end_matches('/').to_string();
    let token = token_flag
        .filter(|s| !s.is_empty())
        .or_else(|| env_nonempty("DENO_DEPLOY_TOKEN"))
        .ok_or_else(|| {
            anyhow!(
                "no API token: set DENO_DEPLOY_TOKEN or pass --token; \
                 create one with `airlock token create`"
            )
        })?;
    Ok(ApiTarget { endpoint, token })
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

/// The `--endpoint`/`--token` flags every API command takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ApiArgs {
    /// The daemon's URL [env: DENO_SANDBOX_ENDPOINT, DENO_DEPLOY_ENDPOINT; default: http://127.0.0.1:7070].
    #[arg(long)]
    pub endpoint: Option<String>,
    /// API token [env: DENO_DEPLOY_TOKEN].
    #[arg(long)]
    pub token: Option<String>,
}

impl ApiArgs {
    pub fn resolve(&self) -> Result<ApiTarget> {
        resolve(self.endpoint.clone(), self.token.clone())
    }
}

/// A daemon's answer.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("the daemon's answer is not JSON")
    }

    /// The answer read as `T` (an API object of known shape).
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body)
            .context("the daemon's answer is not what this CLI expects")
    }

    /// The daemon's error message (`{code, message}`), else the body's text.
    pub fn message(&self) -> String {
        #[derive(serde::Deserialize)]
        struct ApiError {
            message: String,
        }
        serde_json::from_slice::<ApiError>(&self.body)
            .map(|e| e.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&self.body).trim().to_string())
    }

    /// Fails with the daemon's message unless the status is 2xx.
    pub fn ok(self) -> Result<Self> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        let msg = self.message();
        if self.status == 401 {
            bail!("the daemon refused the token (HTTP 401): {msg}; check DENO_DEPLOY_TOKEN or --token");
        }
        bail!("the daemon answered HTTP {}: {msg}", self.status)
    }
}

/// A blocking client for one daemon. One connection per request.
pub struct Client {
    pub target: ApiTarget,
    host: String,
    port: u16,
    base_path: String,
    rt: tokio::runtime::Runtime,
}

impl Client {
    pub fn new(target: ApiTarget) -> Result<Self> {
        let rest = target.endpoint.strip_prefix("http://").ok_or_else(|| {
            anyhow!(
                "endpoint {} is not an http:// URL (the daemon speaks plain HTTP)",
                target.endpoint
            )
        })?;
        let (authority, base_path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/').to_string()),
            None => (rest, String::new()),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse()
                    .with_context(|| format!("bad port in endpoint {}", target.endpoint))?;
                (h.to_string(), port)
            }
            _ => (authority.to_string(), 80),
        };
        if host.is_empty() {
            bail!("endpoint {} has no host", target.endpoint);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the HTTP client runtime")?;
        Ok(Self {
            target,
            host,
            port,
            base_path,
            rt,
        })
    }

    pub fn get(&self, path: &str) -> Result<Response> {
        self.request(hyper::Method::GET, path)
    }

    pub fn delete(&self, path: &str) -> Result<Response> {
        self.request(hyper::Method::DELETE, path)
    }

    /// `POST path` with `body` as JSON.
    pub fn post_json(&self, path: &str, body: &impl serde::Serialize) -> Result<Response> {
        let body = serde_json::to_vec(body).context("encoding the request")?;
        self.send(hyper::Method::POST, path, Some(body))
    }

    pub fn request(&self, method: hyper::Method, path: &str) -> Result<Response> {
        self.send(method, path, None)
    }

    /// One request; `json` is sent as an `application/json` body.
    fn send(&self, method: hyper::Method, path: &str, json: Option<Vec<u8>>) -> Result<Response> {
        let unreachable = || {
            format!(
                "cannot reach the daemon: is `airlock serve` running at {}?",
                self.target.endpoint
            )
        };
        self.rt.block_on(async {
            let host = self.host.trim_start_matches('[').trim_end_matches(']');
            let stream = tokio::net::TcpStream::connect((host, self.port))
                .await
                .with_context(unreachable)?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .with_context(unreachable)?;
            let conn = tokio::spawn(conn);
            let mut req = hyper::Request::builder()
                .method(method)
                .uri(format!("{}{}", self.base_path, path))
                .header(hyper::header::HOST, format!("{}:{}", self.host, self.port))
                .header(
                    hyper::header::AUTHORIZATION,
                    format!("Bearer {}", self.target.token),
                )
                .header(hyper::header::USER_AGENT, "airlock-cli");
            if json.is_some() {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
            }
            let req = req
                .body(Full::new(Bytes::from(json.unwrap_or_default())))
                .context("building the request")?;
            let resp = sender.send_request(req).await.with_context(unreachable)?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .context("reading the daemon's answer")?
                .to_bytes()
                .to_vec();
            drop(sender);
            conn.abort();
            Ok(Response { status, body })
        })
    }
}

/// Percent-encodes a query or path component.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_and_trailing_slash_goes() {
        let t = resolve(Some("http://h:1/".into()), Some("tok".into())).unwrap();
        assert_eq!(t.endpoint, "http://h:1");
        assert_eq!(t.token, "tok");
    }

    #[test]
    fn client_parses_endpoint() {
        let c = Client::new(ApiTarget {
            endpoint: "http://127.0.0.1:7070".into(),
            token: "t".into(),
        })
        .unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 7070));
        assert!(Client::new(ApiTarget {
            endpoint: "https://x".into(),
            token: "t".into()
        })
        .is_err());
    }
}
