//! One SSH connection: russh's [`Handler`], mapping the login to a sandbox
//! and its session channels to [`SessionChannel`]s. Whatever a client asks
//! beyond sessions in that sandbox (TCP/Unix forwarding either way, agent
//! or X11 forwarding) is refused: russh's defaults refuse them, and
//! [`Connection`] keeps those defaults on purpose.

use crate::channel::{Command, PtyRequest, SessionChannel, Started};
use crate::Gateway;
use agent_proto::calls::PtySize;
use manager::Live;
use russh::server::{Auth, ChannelOpenHandle, Handler, Msg, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, Pty, Sig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Session channels one connection may have open (OpenSSH multiplexing
/// opens a few; nothing needs hundreds).
const MAX_CHANNELS: usize = 16;

pub struct Connection {
    gateway: Arc<Gateway>,
    peer: SocketAddr,
    logged_in: watch::Sender<bool>,
    /// The sandbox the username maps to, once logged in.
    live: Option<Arc<Live>>,
    channels: HashMap<ChannelId, SessionChannel>,
    /// Disconnects the session when its sandbox ends; stopped with it.
    end_watch: Option<tokio::task::JoinHandle<()>>,
}

impl Connection {
    pub fn new(gateway: Arc<Gateway>, peer: SocketAddr, logged_in: watch::Sender<bool>) -> Self {
        Self {
            gateway,
            peer,
            logged_in,
            live: None,
            channels: HashMap::new(),
            end_watch: None,
        }
    }

    /// The channel's state, when it is a session channel of a logged-in
    /// connection.
    fn channel(&mut self, id: ChannelId) -> Option<(&Arc<Live>, &mut SessionChannel)> {
        let live = self.live.as_ref()?;
        Some((live, self.channels.get_mut(&id)?))
    }

    /// Starts `what` on `channel` (shell, exec or sftp), once per channel.
    async fn start(
        &mut self,
        id: ChannelId,
        what: Start,
        session: &mut Session,
    ) -> Result<(), anyhow::Error> {
        let handle = session.handle();
        let peer = self.peer;
        let Some((live, channel)) = self.channel(id) else {
            session.channel_failure(id)?;
            return Ok(());
        };
        if channel.started.is_some() {
            session.channel_failure(id)?;
            return Ok(());
        }
        let client = live.client.clone();
        let started = match what {
            Start::Process(command) => {
                channel
                    .start_process(&client, handle.clone(), id, command)
                    .await
            }
            Start::Sftp => channel.start_sftp(&client, handle.clone(), id).await,
        };
        match started {
            Ok(()) => session.channel_success(id)?,
            Err(message) => {
                tracing::info!(%peer, sandbox = %live.id, %message, "ssh: start failed");
                session.channel_failure(id)?;
                // The client shows stderr, so say why before closing.
                session.extended_data(id, 1, format!("airlock: {message}\r\n").into_bytes())?;
                session.exit_status_request(id, 255)?;
                session.close(id)?;
            }
        }
        Ok(())
    }
}

enum Start {
    Process(Command),
    Sftp,
}

impl Handler for Connection {
    type Error = anyhow::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        let live = self
            .gateway
            .users
            .sandbox_of(user)
            .and_then(|id| self.gateway.sandbox(&id));
        match live {
            Some(live) => {
                tracing::info!(peer = %self.peer, sandbox = %live.id, "ssh: logged in");
                self.live = Some(live);
                Ok(Auth::Accept)
            }
            None => {
                tracing::info!(peer = %self.peer, "ssh: unknown or expired username refused");
                Ok(Auth::reject())
            }
        }
    }

    // A key never grants access (the username is the credential), so a
    // key is never "acceptable" either: the client moves on instead of
    // signing.
    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        _offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::reject())
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        let _ = self.logged_in.send(true);
        // The session ends with its sandbox.
        if let Some(live) = &self.live {
            let mut ended = live.ended();
            let handle = session.handle();
            self.end_watch = Some(tokio::spawn(async move {
                let _ = ended.wait_for(Option::is_some).await;
                let _ = handle
                    .disconnect(
                        russh::Disconnect::ByApplication,
                        "the sandbox has ended".into(),
                        String::new(),
                    )
                    .await;
            }));
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.live.is_none() {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
        } else if self.channels.len() >= MAX_CHANNELS {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
        } else {
            // Requests and data arrive through the handler's callbacks;
            // the channel object itself is not needed.
            self.channels
                .insert(channel.id(), SessionChannel::default());
            reply.accept().await;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        id: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.channel(id) {
            Some((_, channel)) if channel.started.is_none() => {
                let term = if term.is_empty() || term.contains('\0') {
                    "xterm".to_string()
                } else {
                    term.to_string()
                };
                let size = PtySize {
                    rows: u16::try_from(row_height).unwrap_or(u16::MAX).max(1),
                    cols: u16::try_from(col_width).unwrap_or(u16::MAX).max(1),
                };
                channel.pty = Some(PtyRequest { term, size });
                session.channel_success(id)?;
            }
            _ => session.channel_failure(id)?,
        }
        Ok(())
    }

    async fn env_request(
        &mut self,
        id: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let set = match self.channel(id) {
            Some((_, channel)) if channel.started.is_none() => channel.set_env(name, value),
            _ => false,
        };
        if set {
            session.channel_success(id)?
        } else {
            session.channel_failure(id)?
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        id: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(id, Start::Process(Command::Shell), session)
            .await
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Ok(line) = std::str::from_utf8(data) else {
            session.channel_failure(id)?;
            return Ok(());
        };
        self.start(id, Start::Process(Command::Exec(line.to_string())), session)
            .await
    }

    async fn subsystem_request(
        &mut self,
        id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "sftp" {
            self.start(id, Start::Sftp, session).await
        } else {
            session.channel_failure(id)?;
            Ok(())
        }
    }

    async fn data(
        &mut self,
        id: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some((live, channel)) = self.channel(id) {
            let client = live.client.clone();
            channel.input(&client, data).await;
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        id: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some((live, channel)) = self.channel(id) {
            let client = live.client.clone();
            channel.end_input(&client).await;
        }
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        id: ChannelId,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some((live, channel)) = self.channel(id) {
            let client = live.client.clone();
            channel.resize(&client, col_width, row_height).await;
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        id: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(name) = signal_name(&signal) else {
            return Ok(());
        };
        if let Some((live, channel)) = self.channel(id) {
            let client = live.client.clone();
            channel.signal(&client, name).await;
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        id: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let (Some(live), Some(channel)) = (&self.live, self.channels.remove(&id)) {
            hang_up(live, channel);
        }
        Ok(())
    }
}

impl Drop for Connection {
    /// The connection is gone: what its channels still run gets SIGHUP,
    /// as sshd's sessions do when the client goes away.
    fn drop(&mut self) {
        if let Some(watch) = self.end_watch.take() {
            watch.abort();
        }
        if let Some(live) = &self.live {
            for (_, channel) in self.channels.drain() {
                hang_up(live, channel);
            }
        }
    }
}

/// SIGHUP to the channel's process, if it still runs (a finished one's
/// pid is gone from the agent's table, so this is a no-op for it).
fn hang_up(live: &Arc<Live>, channel: SessionChannel) {
    if let Some(Started::Process(p)) = channel.started {
        let client = live.client.clone();
        tokio::spawn(async move { crate::channel::kill(&client, p.pid, "SIGHUP").await });
    }
}

/// The agent's name for an SSH signal; `None` for one it does not know.
fn signal_name(signal: &Sig) -> Option<&'static str> {
    Some(match signal {
        Sig::ABRT => "SIGABRT",
        Sig::ALRM => "SIGALRM",
        Sig::FPE => "SIGFPE",
        Sig::HUP => "SIGHUP",
        Sig::ILL => "SIGILL",
        Sig::INT => "SIGINT",
        Sig::KILL => "SIGKILL",
        Sig::PIPE => "SIGPIPE",
        Sig::QUIT => "SIGQUIT",
        Sig::SEGV => "SIGSEGV",
        Sig::TERM => "SIGTERM",
        Sig::USR1 => "SIGUSR1",
        Sig::Custom(_) => return None,
    })
}
