//! One WebSocket client of a sandbox: reads JSON-RPC messages, routes
//! requests and stream notifications, writes responses and server streams.

use super::rpc::Rpc;
use crate::{AppState, MAX_MESSAGE};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use manager::{EndReason, Live};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a socket of a sandbox killed through the console route stays
/// open, so the Python SDK's `close()` can send its `processKill`s.
const CONSOLE_KILL_GRACE: Duration = Duration::from_secs(2);
/// How long an ended sandbox's socket waits for its pending calls to be
/// answered before it closes (they fail fast once the agent is gone).
const DRAIN_ON_END: Duration = Duration::from_millis(500);

pub async fn run(
    state: Arc<AppState>,
    live: Arc<Live>,
    socket: WebSocket,
    primary: bool,
    kind: super::ClientKind,
) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let writer = tokio::spawn(async move {
        while let Some(Outgoing { msg, held }) = rx.recv().await {
            let closing = matches!(msg, Message::Close(_));
            let sent = sink.send(msg).await;
            // What a big reply held of the daemon's file budget is free
            // once the message has gone.
            drop(held);
            if sent.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let rpc = Rpc::new(state.clone(), live.clone(), tx.clone(), kind);
    let mut ended = live.ended();
    let mut close_at: Option<tokio::time::Instant> = None;
    loop {
        let grace = async {
            match close_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = stream.next() => match msg {
                None | Some(Ok(Message::Close(_))) => break,
                Some(Err(e)) => {
                    // The library failed the connection (RFC 6455 §7.1.7):
                    // tell the client why with the code §7.4.1 assigns.
                    if let Some(frame) = close_for_read_error(e) {
                        let _ = tx.send(frame.into());
                    }
                    break;
                }
                Some(Ok(Message::Text(t))) => {
                    if t.as_str() == "ping" {
                        let _ = tx.send(Message::Text("pong".into()).into());
                    } else {
                        rpc.on_message(t.as_str()).await;
                    }
                }
                Some(Ok(Message::Binary(b))) => match std::str::from_utf8(&b) {
                    Ok(t) => rpc.on_message(t).await,
                    // A bad message gets an error reply, not the loss of
                    // the connection (and with it a session sandbox).
                    Err(e) => rpc.parse_error(&format!("binary message is not UTF-8 text: {e}")),
                },
                Some(Ok(_)) => {} // ping/pong control frames are answered by the library
            },
            _ = async { let _ = ended.wait_for(|e| e.is_some()).await; }, if close_at.is_none() => {
                let reason = ended.borrow().map_or("ended", EndReason::as_str);
                let console = state.killed_via_console.lock().expect("state lock").contains(&live.id);
                if console {
                    close_at = Some(tokio::time::Instant::now() + CONSOLE_KILL_GRACE);
                } else {
                    rpc.drain(DRAIN_ON_END).await;
                    let _ = tx.send(close(1001, &format!("sandbox {reason}")).into());
                    break;
                }
            }
            _ = grace => {
                let _ = tx.send(close(1001, "sandbox killed").into());
                break;
            }
        }
    }
    // Answer a client's close (or end ours) now: the writer stops at the
    // first Close it sends, so this is a no-op after one already queued.
    // Without it the writer would wait for every clone of `tx` (held by
    // stream relays) and the client would wait for our close frame.
    let _ = tx.send(Message::Close(None).into());
    drop(tx);
    rpc.shutdown();
    drop(rpc);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    // The connection closes when both halves are gone; the writer has let
    // go of its half. Closing now, before a session sandbox is torn down
    // below, means a client's `close()` (which waits for the server to
    // close TCP, RFC 6455 §7.1.1) returns at once instead of waiting for
    // the teardown. The daemon still counts the sandbox for admission until
    // `kill` has released everything of it.
    drop(stream);
    if close_at.is_some() {
        state
            .killed_via_console
            .lock()
            .expect("state lock")
            .remove(&live.id);
    }
    // Session mode: the sandbox ends with its creating client.
    if primary && live.stop_at_ms().is_none() && !live.is_ended() {
        state.manager.kill(&live.id, EndReason::Closed).await;
    }
}

/// The close frame for an error reading the socket, by RFC 6455 §7.4.1:
/// 1009 for a message over [`MAX_MESSAGE`], 1007 for a text message (or
/// close reason) that is not UTF-8, 1002 for any other protocol violation
/// (an unmasked client frame, RSV bits without an extension, a reserved
/// opcode, a fragmented or oversized control frame). `None` when the
/// connection itself is gone.
fn close_for_read_error(e: axum::Error) -> Option<Message> {
    use tungstenite::error::Error as WsError;
    let e = e.into_inner();
    let Some(e) = e.downcast_ref::<WsError>() else {
        return Some(close(1011, &format!("reading the socket failed: {e}")));
    };
    match e {
        WsError::Capacity(c) => Some(close(
            1009,
            &format!("message too big ({c}); the limit is {MAX_MESSAGE} bytes"),
        )),
        // The error's text holds the invalid bytes; the reason must be UTF-8.
        WsError::Utf8(_) => Some(close(1007, "text message is not valid UTF-8")),
        WsError::Protocol(p) => Some(close(1002, &format!("protocol error: {p}"))),
        WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_) => None,
        other => Some(close(1002, &other.to_string())),
    }
}

fn close(code: u16, reason: &str) -> Message {
    // A close reason is at most 123 bytes (RFC 6455 §5.5).
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason[..end];
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// A message on its way to the client, with what it holds of the daemon's
/// budget for file contents (released once it is written to the socket).
pub struct Outgoing {
    pub msg: Message,
    pub held: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl From<Message> for Outgoing {
    fn from(msg: Message) -> Self {
        Self { msg, held: None }
    }
}

/// A JSON-RPC notification (no id).
pub fn notification(method: &str, params: Value) -> Message {
    Message::Text(
        serde_json::json!({"jsonrpc": "2.0", "method": method, "params": params})
            .to_string()
            .into(),
    )
}
