//! The API's HTTP server: hyper's HTTP/1 connection driver around the axum
//! router, with the limits `axum::serve` has no knobs for.
//!
//! * A request head must arrive within [`ConnLimits::header_timeout`]. hyper
//!   arms the same timer when a keep-alive connection goes idle after a
//!   response, so it is also the keep-alive idle timeout. Without it, a
//!   client sending half a header held its socket (and a task) forever.
//! * One client address may hold [`ConnLimits::per_address`] connections
//!   that are still HTTP at once; more are answered 429 and closed. A
//!   connection stops counting once it is upgraded to a WebSocket: that
//!   client passed token authentication, and its sockets are bounded by the
//!   token's sandbox quota, so an SDK driving many sandboxes from one host
//!   is not capped here.
//!
//! Established WebSockets get no idle timeout: the SDKs keep a sandbox's
//! socket open and silent for as long as they hold the sandbox. TCP
//! keepalive ([`KEEPALIVE`]) still finds a peer that vanished without
//! closing (its host gone, the network cut), whose session sandbox would
//! otherwise live until its lifetime ends: a live peer's kernel answers the
//! probes, so silence alone never ends a socket.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use socket2::{SockRef, TcpKeepalive};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Default [`ConnLimits::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ConnLimits::per_address`]. The SDK suites drive 50 sandboxes
/// at once from one host, and a test makes 100 creates at once: each is an
/// HTTP connection until its upgrade.
pub const DEFAULT_PER_ADDRESS: usize = 128;

/// Probes after 60 s of silence, every 10 s, 6 unanswered: a vanished
/// peer's connection ends about two minutes after its last byte.
const KEEPALIVE: TcpKeepalive = TcpKeepalive::new()
    .with_time(Duration::from_secs(60))
    .with_interval(Duration::from_secs(10))
    .with_retries(6);

/// How long shutdown waits for HTTP connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a refused connection is kept to read what the client sent, so
/// closing it does not reset the connection before the 429 is read.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Limits of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Time to receive a whole request head, counted from the connection's
    /// start or, on a keep-alive connection, from the previous response.
    pub header_timeout: Duration,
    /// HTTP connections one client may hold at once (0: no cap); a client
    /// is an IPv4 address or an IPv6 /64.
    pub per_address: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            per_address: DEFAULT_PER_ADDRESS,
        }
    }
}

/// The address a client's connections count against: an IPv6 client's
/// /64 (one host usually holds a whole /64, so counting single addresses
/// would give it billions of caps), an IPv4 client's address.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// Open HTTP connections per client address ([`client_key`]).
#[derive(Default)]
struct AddressCounts(Mutex<HashMap<IpAddr, usize>>);

/// One counted connection; uncounts on drop.
struct AddressSlot {
    counts: Arc<AddressCounts>,
    ip: IpAddr,
}

impl AddressCounts {
    fn acquire(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<AddressSlot> {
        let mut counts = self.0.lock().expect("address counts lock");
        let n = counts.entry(ip).or_insert(0);
        if cap != 0 && *n >= cap {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().expect("address counts lock");
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops
/// accepting and lets open requests finish (at most [`SHUTDOWN_GRACE`]).
/// Upgraded WebSockets run on their own tasks and are not waited for.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let counts = Arc::new(AddressCounts::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning,
                        // and keep serving the connections already open.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Small JSON-RPC messages must not wait for Nagle's
                // algorithm: without TCP_NODELAY a spawn+wait round trip
                // costs ~90 ms of delayed ACKs.
                let _ = tcp.set_nodelay(true);
                if let Err(e) = SockRef::from(&tcp).set_tcp_keepalive(&KEEPALIVE) {
                    tracing::debug!(%peer, "setting TCP keepalive: {e}");
                }
                let client = client_key(peer.ip());
                let Some(slot) = counts.acquire(client, limits.per_address) else {
                    // Debug, not warn: a flood would flood the log too.
                    tracing::debug!(%peer, "per-address connection cap reached; refusing");
                    tokio::spawn(refuse(tcp, client, limits.per_address));
                    continue;
                };
                let router = router.clone();
                let stop = stop_rx.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    connection(tcp, router, limits, stop).await;
                });
            }
            // Reap finished tasks so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let _ = stop_tx.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        connections.shutdown().await;
    }
}

/// Drives one HTTP/1 connection until it closes or is upgraded.
async fn connection(
    tcp: TcpStream,
    router: Router,
    limits: ConnLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(router))
        .with_upgrades();
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("connection ended: {e}");
                }
                return;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Answers a connection over the per-address cap with 429 and closes it.
async fn refuse(mut tcp: TcpStream, client: IpAddr, cap: usize) {
    let who = match client {
        IpAddr::V6(_) => format!("{client}/64"),
        IpAddr::V4(_) => client.to_string(),
    };
    let body = serde_json::json!({
        "code": "TOO_MANY_CONNECTIONS",
        "message": format!(
            "{who} already has {cap} HTTP connections open to this daemon; close some, \
             or raise the limit (airlock serve --max-connections-per-ip)"
        ),
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let answered = async {
        tcp.write_all(response.as_bytes()).await?;
        tcp.shutdown().await?;
        // Read (and drop) the request until the client closes, so our
        // close does not reset the connection under the unread 429.
        let mut buf = [0u8; 4096];
        while tcp.read(&mut buf).await? != 0 {}
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, answered).await;
}

#[cfg(test)]
mod tests {
    use super::client_key;
    use std::net::IpAddr;

    #[test]
    fn clients_count_by_ipv4_address_and_ipv6_64() {
        let key = |s: &str| client_key(s.parse::<IpAddr>().unwrap()).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
