//! The ingress accept loop: TLS termination, routing by SNI, and a raw
//! splice to the sandbox's port.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::router::{Lookup, Route, Router};

/// Most bytes of request body read and dropped after an error response
/// (see [`Shared::reply`]).
const LINGER_BYTES: usize = 1 << 20;
/// Longest wait for the client to close after an error response.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Buffer per direction of a splice. TLS records carry up to 16 KiB, and
/// tokio's 8 KiB default splits them: in tests/bench.rs (2 cores) bulk
/// throughput went from ~420 to ~590 MiB/s with 32 KiB, and no further with
/// 64 or 256 KiB, which would only cost memory per connection.
const SPLICE_BUF: usize = 32 * 1024;

/// Limits of the ingress.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Connections open at once (handshaking, answering or spliced); a
    /// connection beyond this is closed at once. Each spliced connection
    /// holds about 100 KiB (splice and TLS buffers), so the default bounds
    /// that at about 200 MiB.
    pub max_connections: usize,
    /// Time for a client to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time to read the request head before an error response, and to
    /// write that response.
    pub response_timeout: Duration,
    /// Most bytes read looking for the end of the request head before an
    /// error response.
    pub max_head_bytes: usize,
    /// Time for [`Backend::open`](crate::Backend::open) to connect.
    pub open_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            max_connections: 2048,
            handshake_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(10),
            max_head_bytes: 16 * 1024,
            open_timeout: Duration::from_secs(10),
        }
    }
}

/// Counters for the daemon to export. Plain atomics, read with
/// `load(Ordering::Relaxed)`; all only grow except `active`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// TCP connections accepted.
    pub accepted: AtomicU64,
    /// Closed at once because `max_connections` were open.
    pub rejected_overload: AtomicU64,
    /// TLS handshake failed or timed out (including SNI outside the base
    /// domain, or none).
    pub tls_failed: AtomicU64,
    /// Answered 404: no such exposed domain.
    pub not_found: AtomicU64,
    /// Answered 503: domain allocated, no port bound yet.
    pub pending: AtomicU64,
    /// Answered 502/504: the sandbox's port could not be opened.
    pub backend_failed: AtomicU64,
    /// Spliced to a sandbox's port.
    pub proxied: AtomicU64,
    /// Spliced connections ended because their sandbox's routes were removed.
    pub closed_by_removal: AtomicU64,
    /// Connections open now (a gauge).
    pub active: AtomicU64,
    /// Bytes from clients to sandboxes, counted when a splice ends normally.
    pub bytes_to_backend: AtomicU64,
    /// Bytes from sandboxes to clients, counted when a splice ends normally.
    pub bytes_from_backend: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Decrements `active` however a connection task ends (panic included).
struct ActiveGuard<'a>(&'a AtomicU64);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The HTTPS ingress: owns the routing table handle, TLS config and limits.
pub struct Ingress {
    shared: Arc<Shared>,
}

struct Shared {
    router: Arc<Router>,
    acceptor: TlsAcceptor,
    options: ServeOptions,
    metrics: Arc<Metrics>,
}

impl Ingress {
    /// An ingress routing with `router` and terminating TLS with `tls`
    /// (normally [`ExposeCerts::server_config`](crate::ExposeCerts::server_config)).
    pub fn new(
        router: Arc<Router>,
        tls: Arc<rustls::ServerConfig>,
        options: ServeOptions,
    ) -> Ingress {
        // Bytes are spliced raw, so only HTTP/1.1 can be offered: h2 would
        // be negotiated with this end while the sandbox's server speaks
        // whatever it speaks. A config offering more is narrowed.
        let tls = if tls.alpn_protocols == [b"http/1.1".to_vec()] {
            tls
        } else {
            let mut narrowed = (*tls).clone();
            narrowed.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(narrowed)
        };
        Ingress {
            shared: Arc::new(Shared {
                router,
                acceptor: TlsAcceptor::from(tls),
                options,
                metrics: Arc::new(Metrics::default()),
            }),
        }
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.shared.metrics)
    }

    /// Accepts connections on `listener` until `shutdown` resolves, then
    /// stops accepting and closes every connection still open.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let limit = Arc::new(Semaphore::new(self.shared.options.max_connections));
        let mut connections = JoinSet::new();
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, base = %self.shared.router.base_domain(), "expose ingress listening");
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            // Typically EMFILE: back off instead of spinning,
                            // and keep serving the connections already open.
                            tracing::warn!("expose ingress accept failed: {err}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    bump(&self.shared.metrics.accepted);
                    let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                        bump(&self.shared.metrics.rejected_overload);
                        // Debug, not warn: a flood would otherwise flood the
                        // log too; the counter is what to alert on.
                        tracing::debug!(%peer, "expose ingress at its connection limit; closing");
                        continue;
                    };
                    let shared = Arc::clone(&self.shared);
                    connections.spawn(async move {
                        let _permit = permit;
                        shared.metrics.active.fetch_add(1, Ordering::Relaxed);
                        let _active = ActiveGuard(&shared.metrics.active);
                        shared.handle(tcp, peer).await;
                    });
                }
                // Reap finished tasks so the set does not grow without bound.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        tracing::info!(open = connections.len(), "expose ingress shutting down");
        connections.shutdown().await;
    }
}

/// Runs an [`Ingress`] with default [`ServeOptions`] until `shutdown`
/// resolves. Use [`Ingress`] directly to set limits or read its metrics.
pub async fn serve(
    listener: TcpListener,
    router: Arc<Router>,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    Ingress::new(router, tls, ServeOptions::default())
        .serve(listener, shutdown)
        .await;
}

/// An error answer to a client.
struct Reply {
    status: &'static str,
    body: String,
}

impl Shared {
    async fn handle(&self, tcp: TcpStream, peer: SocketAddr) {
        // Responses and WebSocket frames are forwarded as they come; Nagle
        // would delay the small ones.
        let _ = tcp.set_nodelay(true);
        let handshake =
            tokio::time::timeout(self.options.handshake_timeout, self.acceptor.accept(tcp)).await;
        let tls = match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(err)) => {
                bump(&self.metrics.tls_failed);
                tracing::debug!(%peer, "expose TLS handshake failed: {err}");
                return;
            }
            Err(_) => {
                bump(&self.metrics.tls_failed);
                tracing::debug!(%peer, "expose TLS handshake timed out");
                return;
            }
        };
        // Our resolver refuses handshakes without SNI; a caller-built config
        // might not, and then there is nothing to route on.
        let sni = tls.get_ref().1.server_name().unwrap_or_default().to_owned();

        match self.router.lookup(&sni) {
            None => {
                bump(&self.metrics.not_found);
                tracing::debug!(%peer, %sni, "expose: unknown domain");
                let body = format!(
                    "404: no sandbox port is exposed at {sni}.\n\
                     The sandbox may have ended, or the address may be mistyped.\n"
                );
                self.reply(
                    tls,
                    Reply {
                        status: "404 Not Found",
                        body,
                    },
                )
                .await;
            }
            Some(Lookup::Pending { sandbox_id }) => {
                bump(&self.metrics.pending);
                tracing::debug!(%peer, %sni, %sandbox_id, "expose: domain not bound yet");
                let body = format!(
                    "503: {sni} belongs to sandbox {sandbox_id}, but no port is exposed on it yet.\n\
                     Call exposeHttp with this domain and a port to route it.\n"
                );
                self.reply(
                    tls,
                    Reply {
                        status: "503 Service Unavailable",
                        body,
                    },
                )
                .await;
            }
            Some(Lookup::Bound(route)) => self.proxy(tls, peer, route).await,
        }
    }

    async fn proxy<S>(&self, mut client: S, peer: SocketAddr, route: Route)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Route {
            ref sandbox_id,
            port,
            ..
        } = route;
        let opened =
            tokio::time::timeout(self.options.open_timeout, route.backend.open(port)).await;
        let mut backend = match opened {
            Ok(Ok(backend)) => backend,
            Ok(Err(err)) => {
                bump(&self.metrics.backend_failed);
                tracing::debug!(%peer, %sandbox_id, port, "expose: opening the sandbox port failed: {err}");
                let body = if err.kind() == io::ErrorKind::ConnectionRefused {
                    format!(
                        "502: nothing is listening on port {port} in sandbox {sandbox_id}.\n\
                         Start a server on that port (listening on all interfaces or localhost).\n"
                    )
                } else {
                    format!("502: cannot reach port {port} in sandbox {sandbox_id}: {err}.\n")
                };
                self.reply(
                    client,
                    Reply {
                        status: "502 Bad Gateway",
                        body,
                    },
                )
                .await;
                return;
            }
            Err(_) => {
                bump(&self.metrics.backend_failed);
                tracing::debug!(%peer, %sandbox_id, port, "expose: opening the sandbox port timed out");
                let body = format!(
                    "504: port {port} in sandbox {sandbox_id} did not accept the connection within {:?}.\n",
                    self.options.open_timeout
                );
                self.reply(
                    client,
                    Reply {
                        status: "504 Gateway Timeout",
                        body,
                    },
                )
                .await;
                return;
            }
        };

        bump(&self.metrics.proxied);
        tracing::debug!(%peer, domain = %route.domain, %sandbox_id, port, "expose: splicing");
        // Raw bytes both ways: HTTP/1.1 keep-alive, chunked streaming and
        // WebSocket upgrades all pass through without being understood here.
        tokio::select! {
            copied = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut backend, SPLICE_BUF, SPLICE_BUF) => match copied {
                Ok((to_backend, from_backend)) => {
                    self.metrics.bytes_to_backend.fetch_add(to_backend, Ordering::Relaxed);
                    self.metrics.bytes_from_backend.fetch_add(from_backend, Ordering::Relaxed);
                    tracing::debug!(%peer, %sandbox_id, port, to_backend, from_backend, "expose: connection done");
                }
                // Resets and unclean TLS closes are routine for browsers.
                Err(err) => tracing::debug!(%peer, %sandbox_id, port, "expose: connection ended: {err}"),
            },
            () = route.removed() => {
                bump(&self.metrics.closed_by_removal);
                tracing::debug!(%peer, %sandbox_id, port, "expose: route removed; closing the connection");
            }
        }
    }

    /// Answers `reply` and closes the connection.
    async fn reply<S>(&self, mut client: S, reply: Reply)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let answer = async {
            // Read the request head first: closing a socket with unread
            // input makes the kernel send a reset, which can destroy the
            // response before the client reads it.
            read_head(&mut client, self.options.max_head_bytes).await?;
            // Hand-formatted: the responses are fixed and tiny, and this
            // crate speaks no HTTP beyond finding the end of the head, so an
            // HTTP library would add a dependency for a format string.
            let response = format!(
                "HTTP/1.1 {}\r\n\
                 content-type: text/plain; charset=utf-8\r\n\
                 content-length: {}\r\n\
                 cache-control: no-store\r\n\
                 connection: close\r\n\
                 \r\n\
                 {}",
                reply.status,
                reply.body.len(),
                reply.body
            );
            client.write_all(response.as_bytes()).await?;
            // Sends TLS close_notify, so the client sees a clean end.
            client.shutdown().await
        };
        match tokio::time::timeout(self.options.response_timeout, answer).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::debug!("expose: writing the {} response: {err}", reply.status);
                return;
            }
            Err(_) => {
                tracing::debug!("expose: client too slow for the {} response", reply.status);
                return;
            }
        }
        // Lingering close: a request body may still be arriving, and closing
        // with it unread would reset the connection, possibly before the
        // client has read the response. Drain a bounded amount for a bounded
        // time; a well-behaved client closes on `connection: close` at once.
        let _ = tokio::time::timeout(LINGER_TIME, drain(&mut client, LINGER_BYTES)).await;
    }
}

/// Reads until the end of an HTTP request head (a blank line), end of
/// stream, or `limit` bytes, whichever comes first. The bytes are dropped:
/// only the fact that the client is done sending matters.
async fn read_head<S: AsyncRead + Unpin>(client: &mut S, limit: usize) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    while head.len() < limit {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        // Rescan a few bytes before the new ones: the terminator may
        // straddle two reads.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        if find_head_end(&head[from..]) {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads and drops input until end of stream or `limit` bytes.
async fn drain<S: AsyncRead + Unpin>(client: &mut S, limit: usize) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    let mut total = 0;
    while total < limit {
        match client.read(&mut chunk).await? {
            0 => break,
            n => total += n,
        }
    }
    Ok(())
}

/// Whether `bytes` holds the blank line ending a request head (CRLF CRLF,
/// or bare LF LF, which lenient clients send).
fn find_head_end(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"\r\n\r\n") || bytes.windows(2).any(|w| w == b"\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn read_head_stops_at_the_blank_line_even_across_reads() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            read_head(&mut b, 1024).await.unwrap();
            b
        });
        a.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!reader.is_finished(), "stopped before the head ended");
        a.write_all(b"\n").await.unwrap();
        tokio::time::timeout(Duration::from_secs(1), reader)
            .await
            .expect("did not stop at the end of the head")
            .unwrap();
    }

    #[tokio::test]
    async fn read_head_is_bounded() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&[b'x'; 5000]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(1), read_head(&mut b, 4096))
            .await
            .expect("read past the limit")
            .unwrap();
    }

    #[test]
    fn head_end_variants() {
        assert!(find_head_end(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(find_head_end(b"GET / HTTP/1.1\n\n"));
        assert!(!find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"));
    }
}
