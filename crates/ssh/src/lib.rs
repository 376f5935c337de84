//! airlock's SSH gateway: `ssh <username>@<host>` into a sandbox.
//!
//! `POST /api/v3/sandbox/{id}/expose/ssh` mints a username ([`Gateway::
//! expose`]); the username is the only credential, as on the hosted
//! service (the SDKs pass no key). The gateway, one listener in the daemon
//! (`--ssh-listen`), accepts a connection whose username maps to a live
//! sandbox and refuses every other login. Everything a session does runs
//! through that sandbox's agent, exactly like the SDKs' calls: a shell or
//! an `exec` is a `spawn` (with a PTY when the client asked for one, window
//! changes as `ptyResize`), and the `sftp` subsystem (what `scp` and `sftp`
//! speak) is an SFTP server inside the agent, reached over a tunnel.
//! Nothing runs on the host on a client's behalf, and port forwarding,
//! agent forwarding and X11 are refused: the gateway's only way into
//! anything is the sandbox's agent.
//!
//! The SSH protocol itself is `russh`'s; this crate maps its sessions and
//! channels onto the agent ([`session`], [`channel`]).

mod channel;
pub mod hostkey;
mod session;
mod users;

use agent_proto::console::ExposedSsh;
use manager::{Live, Manager};
use russh::keys::PrivateKey;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

pub use hostkey::HostKeyError;

/// What the gateway must finish before a client has logged in; then the
/// connection is dropped (sshd's LoginGraceTime, shorter: nothing here
/// waits for a person to type a password).
const LOGIN_GRACE: Duration = Duration::from_secs(30);
/// Connections at once, logged in or not; more are closed on accept.
const MAX_CONNECTIONS: usize = 1024;
/// Usernames one sandbox may have at once (each `expose/ssh` mints one).
const MAX_USERNAMES_PER_SANDBOX: usize = 64;

/// Where clients reach the gateway, as `expose/ssh` tells them.
#[derive(Clone, Debug)]
pub struct Advertised {
    /// The host name in the reply; `None`: the host the API request was
    /// sent to (the name the client already uses to reach this daemon).
    pub hostname: Option<String>,
    pub port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum ExposeError {
    #[error("the sandbox has ended")]
    Ended,
    #[error("this sandbox already has {MAX_USERNAMES_PER_SANDBOX} SSH usernames; use one of them")]
    TooMany,
    #[error("the system's random source failed")]
    Random,
}

pub struct Gateway {
    manager: Arc<Manager>,
    users: users::Users,
    config: Arc<russh::server::Config>,
    advertised: Advertised,
    connections: Arc<Semaphore>,
}

impl Gateway {
    pub fn new(manager: Arc<Manager>, host_key: PrivateKey, advertised: Advertised) -> Arc<Self> {
        let config = russh::server::Config {
            server_id: russh::SshId::Standard("SSH-2.0-airlock".into()),
            // The username is the credential; "none" is how a client
            // without keys asks, and OpenSSH always asks it first. A key
            // is never what grants access, so publickey is not offered.
            methods: [russh::MethodKind::None].as_slice().into(),
            // Unknown usernames are refused after the same delay, so timing
            // says nothing about which exist.
            auth_rejection_time: Duration::from_secs(1),
            auth_rejection_time_initial: Some(Duration::from_secs(1)),
            max_auth_attempts: 3,
            keys: vec![host_key],
            inactivity_timeout: Some(Duration::from_secs(3600)),
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 4,
            ..Default::default()
        };
        Arc::new(Self {
            manager,
            users: users::Users::default(),
            config: Arc::new(config),
            advertised,
            connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        })
    }

    /// Mints a username for `live` (the `expose/ssh` reply). `request_host`
    /// is the host the API request named, used when no `--ssh-hostname`
    /// was given. The username stops working when the sandbox ends.
    pub fn expose(
        self: &Arc<Self>,
        live: &Arc<Live>,
        request_host: &str,
    ) -> Result<ExposedSsh, ExposeError> {
        if live.is_ended() {
            return Err(ExposeError::Ended);
        }
        let had = self.users.count_for(&live.id);
        if had >= MAX_USERNAMES_PER_SANDBOX {
            return Err(ExposeError::TooMany);
        }
        let username = self.users.mint(&live.id).map_err(|_| ExposeError::Random)?;
        if had == 0 {
            // The sandbox's first username: forget them all when it ends.
            let gateway = self.clone();
            let id = live.id.clone();
            let mut ended = live.ended();
            tokio::spawn(async move {
                let _ = ended.wait_for(Option::is_some).await;
                gateway.users.forget_sandbox(&id);
            });
        }
        // Ended between the check and the watch: the watcher saw it
        // already, or never will for a sender that is gone.
        if live.is_ended() {
            self.users.forget_sandbox(&live.id);
            return Err(ExposeError::Ended);
        }
        Ok(ExposedSsh {
            hostname: self
                .advertised
                .hostname
                .clone()
                .unwrap_or_else(|| request_host.to_string()),
            username,
            port: self.advertised.port,
        })
    }

    /// Usernames that log in now (for `/metrics` and tests).
    pub fn usernames(&self) -> usize {
        self.users.len()
    }

    /// Accepts connections on `listener` until the process ends.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and the like: back off rather than spin.
                    tracing::warn!(error = %e, "ssh: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "ssh: too many connections; closing this one");
                continue;
            };
            let gateway = self.clone();
            tokio::spawn(async move {
                gateway.connection(tcp, peer).await;
                drop(permit);
            });
        }
    }

    async fn connection(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        // russh sets this only on sockets it accepts itself: without it,
        // Nagle holds each reply's last segment for the client's delayed
        // ACK (two 40 ms stalls per login, measured).
        let _ = tcp.set_nodelay(true);
        let (logged_in_tx, logged_in) = tokio::sync::watch::channel(false);
        let handler = session::Connection::new(self.clone(), peer, logged_in_tx);
        let started = tokio::time::timeout(
            LOGIN_GRACE,
            russh::server::run_stream(self.config.clone(), tcp, handler),
        );
        let running = match started.await {
            Ok(Ok(running)) => running,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "ssh: handshake failed");
                return;
            }
            Err(_) => return,
        };
        let handle = running.handle();
        let mut running = std::pin::pin!(running);
        let grace = async {
            tokio::time::sleep(LOGIN_GRACE).await;
            if *logged_in.borrow() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            r = &mut running => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "ssh: session ended with an error");
                }
                return;
            }
            () = grace => {}
        }
        let _ = handle
            .disconnect(
                russh::Disconnect::ByApplication,
                "no login within the grace time".into(),
                String::new(),
            )
            .await;
        let _ = running.await;
    }

    fn sandbox(&self, id: &str) -> Option<Arc<Live>> {
        self.manager.get(id).filter(|live| !live.is_ended())
    }
}
