//! Byte tunnels into a sandbox, handed to the daemon as an ordinary byte
//! stream: TCP connections made from inside it (the agent's `tcpConnect`)
//! and SFTP sessions served by the agent (`sftpOpen`). Both are set up and
//! pumped alike; only the call that opens them differs.

use crate::{AgentClient, PIECE};
use agent_proto::calls::{SftpOpenParams, StreamResult, TcpConnectParams};
use agent_proto::{ErrorObject, Method, TUNNEL_WINDOW};
use anyhow::{anyhow, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// The daemon's end of a tunnel: reads what the sandbox side sent, writes
/// reach it; shutting down the write side half-closes the TCP connection
/// (ends the SFTP session), dropping it closes the connection.
pub type Tunnel = DuplexStream;

/// Bytes buffered between the tunnel's user and its pumps.
const PIPE: usize = 256 * 1024;

impl AgentClient {
    /// Connects to `host:port` from inside the sandbox (so `127.0.0.1` is
    /// the sandbox's own loopback). The outer error is a lost agent, the
    /// inner one the connect's own failure, e.g. `ConnectionRefused`.
    pub async fn tcp_connect(
        &self,
        host: &str,
        port: u16,
    ) -> Result<std::result::Result<Tunnel, ErrorObject>> {
        self.open_tunnel(Method::TcpConnect, |in_stream_id| TcpConnectParams {
            host: Some(host.to_string()),
            port,
            in_stream_id,
        })
        .await
    }

    /// Starts an SFTP (version 3) session served by the agent on the
    /// sandbox's files, for the SSH gateway's `sftp` subsystem: the
    /// tunnel carries the SFTP packets both ways. The outer error is a lost
    /// agent, the inner one the agent's refusal.
    pub async fn sftp_open(&self) -> Result<std::result::Result<Tunnel, ErrorObject>> {
        self.open_tunnel(Method::SftpOpen, |in_stream_id| SftpOpenParams {
            in_stream_id,
        })
        .await
    }

    /// Calls `method` with the params `params` builds around the id of a
    /// new windowed stream (the bytes to the sandbox), and pumps that and
    /// the stream the agent answers (the bytes from it) to and from a
    /// [`Tunnel`].
    async fn open_tunnel<P: serde::Serialize>(
        &self,
        method: Method,
        params: impl FnOnce(u32) -> P,
    ) -> Result<std::result::Result<Tunnel, ErrorObject>> {
        let (in_id, window) = self.open_windowed_stream(TUNNEL_WINDOW);
        let params = params(in_id);
        let out_id = match self.call_typed::<_, StreamResult>(method, &params).await {
            Ok(Ok(reply)) => reply.stream_id,
            Ok(Err(e)) => {
                self.close_windowed_stream(in_id);
                return Ok(Err(e));
            }
            Err(e) => {
                self.close_windowed_stream(in_id);
                return Err(e);
            }
        };
        let Some(mut rx) = self.take_stream(out_id) else {
            self.close_windowed_stream(in_id);
            return Err(anyhow!("{method}: stream {out_id} was already taken"));
        };
        let (user, ours) = tokio::io::duplex(PIPE);
        let (mut from_user, mut to_user) = tokio::io::split(ours);

        // User → sandbox, never more than the agent's window in flight.
        let client = self.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; PIECE];
            loop {
                let n = match from_user.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                match window.acquire_many(n as u32).await {
                    Ok(permits) => permits.forget(),
                    Err(_) => break, // the agent cancelled or is gone
                }
                if client.send_data(in_id, &buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = client.send_end(in_id).await;
            client.close_windowed_stream(in_id);
        });

        // Sandbox → user, crediting the agent as the user takes the bytes.
        let client = self.clone();
        tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if to_user.write_all(&chunk).await.is_err() {
                    // The user is gone. The agent ends the stream after a
                    // cancel; what is still in flight (at most a window) is
                    // drained so the stream's slot can go.
                    let _ = client.send_cancel(out_id).await;
                    while rx.recv().await.is_some() {}
                    break;
                }
                if client
                    .send_credit(out_id, chunk.len() as u32)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            let _ = to_user.shutdown().await;
            client.drop_stream(out_id);
        });
        Ok(Ok(user))
    }
}
