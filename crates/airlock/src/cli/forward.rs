//! Forwarding the local terminal to a command in a sandbox: stdin, signals
//! and window size. `airlock exec` talks to the daemon (its WebSocket
//! client) and `airlock run` to the agent directly; [`Remote`] is what both
//! connections offer, so the forwarding is written once.

use super::client::{Client, RpcError};
use super::term::terminal_size;
use agent_client::AgentClient;
use agent_proto::calls::{ProcessKillParams, PtyResizeParams};
use agent_proto::Method;
use serde::de::IgnoredAny;
use serde::Serialize;
use std::future::Future;
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};

/// A connection to a sandbox that can take stream data and calls.
pub trait Remote: Clone + Send + Sync + 'static {
    /// A client → sandbox stream's id on this connection.
    type StreamId: Copy + Send + 'static;

    /// Sends `data` on stream `id`; false once the connection is gone.
    fn send_data(&self, id: Self::StreamId, data: &[u8]) -> impl Future<Output = bool> + Send;

    /// Ends stream `id`.
    fn end_stream(&self, id: Self::StreamId) -> impl Future<Output = ()> + Send;

    /// Calls `method` with params of its type in `agent_proto::calls`,
    /// ignoring its result; false when the other side does not know the
    /// method (so there is no point calling it again).
    fn call_known<P: Serialize + Sync>(
        &self,
        method: Method,
        params: &P,
    ) -> impl Future<Output = bool> + Send;
}

impl Remote for Client {
    type StreamId = u64;

    async fn send_data(&self, id: u64, data: &[u8]) -> bool {
        Client::send_data(self, id, data).await.is_ok()
    }

    async fn end_stream(&self, id: u64) {
        let _ = Client::end_stream(self, id).await;
    }

    async fn call_known<P: Serialize + Sync>(&self, method: Method, params: &P) -> bool {
        !matches!(
            self.call_typed::<_, IgnoredAny>(method, params).await,
            Err(RpcError::Protocol { code: -32601, .. })
        )
    }
}

impl Remote for AgentClient {
    type StreamId = u32;

    async fn send_data(&self, id: u32, data: &[u8]) -> bool {
        AgentClient::send_data(self, id, data).await.is_ok()
    }

    async fn end_stream(&self, id: u32) {
        let _ = self.send_end(id).await;
    }

    /// The agent ships with this airlock: it knows every method it is sent.
    async fn call_known<P: Serialize + Sync>(&self, method: Method, params: &P) -> bool {
        let _ = self.call_typed::<_, IgnoredAny>(method, params).await;
        true
    }
}

/// Copies local stdin to stream `id` until EOF, then ends it.
pub async fn stdin<R: Remote>(remote: R, id: R::StreamId) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !remote.send_data(id, &buf[..n]).await {
                    return;
                }
            }
        }
    }
    remote.end_stream(id).await;
}

/// Ctrl-C and friends go to the command, as if it ran locally (on a PTY the
/// terminal sends them as bytes instead).
pub async fn signals<R: Remote>(remote: R, pid: i32) {
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return;
    };
    loop {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
        };
        let kill = ProcessKillParams {
            pid,
            signal: Some(name.to_string()),
        };
        remote.call_known(Method::ProcessKill, &kill).await;
    }
}

/// Window size changes go to the PTY (`ptyResize`). Best effort: a daemon
/// that does not serve the method leaves the size as it was at spawn.
pub async fn resizes<R: Remote>(remote: R, pid: i32) {
    let Ok(mut winch) = signal(SignalKind::window_change()) else {
        return;
    };
    while winch.recv().await.is_some() {
        if let Some((rows, cols)) = terminal_size() {
            let resize = PtyResizeParams { pid, rows, cols };
            if !remote.call_known(Method::PtyResize, &resize).await {
                return;
            }
        }
    }
}
