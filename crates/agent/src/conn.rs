//! The agent's end of the connection: one writer task fed by a channel, so
//! replies and stream data from many tasks interleave as whole frames.

use agent_proto::{encode_frame, FrameKind, Reply, MAX_PAYLOAD};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Largest data chunk sent in one frame. Small enough that a busy stream
/// does not delay replies for long.
pub const CHUNK: usize = 64 * 1024;

#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Vec<u8>>,
}

impl Outbox {
    /// Starts the writer task on `writer`; it ends when every Outbox is gone
    /// or the socket fails.
    pub fn start<W: tokio::io::AsyncWrite + Unpin + Send + 'static>(mut writer: W) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
        tokio::spawn(async move {
            while let Some(buf) = rx.recv().await {
                if writer.write_all(&buf).await.is_err() {
                    break;
                }
            }
        });
        Self { tx }
    }

    async fn send(&self, kind: FrameKind, id: u32, payload: &[u8]) -> bool {
        let mut buf = Vec::with_capacity(payload.len() + agent_proto::HEADER_LEN);
        encode_frame(kind, id, payload, &mut buf);
        self.tx.send(buf).await.is_ok()
    }

    pub async fn hello(&self, hello: &agent_proto::Hello) -> bool {
        let payload = serde_json::to_vec(hello).expect("Hello serializes");
        self.send(FrameKind::Hello, 0, &payload).await
    }

    pub async fn reply(&self, call_id: u32, reply: Reply) -> bool {
        let mut payload = serde_json::to_vec(&reply).expect("Reply serializes");
        if payload.len() > MAX_PAYLOAD {
            let err = agent_proto::ErrorObject::new(
                "RangeError",
                format!(
                    "result of {} bytes exceeds the {} byte frame limit",
                    payload.len(),
                    MAX_PAYLOAD
                ),
                Some("E2BIG"),
            );
            payload = serde_json::to_vec(&Reply::Error(err)).expect("Reply serializes");
        }
        self.send(FrameKind::Reply, call_id, &payload).await
    }

    /// Sends `data` on stream `id`, split into chunks; never sends an empty
    /// frame.
    pub async fn data(&self, id: u32, data: &[u8]) -> bool {
        for chunk in data.chunks(CHUNK) {
            if !self.send(FrameKind::Data, id, chunk).await {
                return false;
            }
        }
        true
    }

    pub async fn end(&self, id: u32) -> bool {
        self.send(FrameKind::End, id, &[]).await
    }

    pub async fn cancel(&self, id: u32) -> bool {
        self.send(FrameKind::Cancel, id, &[]).await
    }

    /// Tells the host it may send `bytes` more on windowed stream `id`.
    pub async fn credit(&self, id: u32, bytes: u32) -> bool {
        self.send(FrameKind::Credit, id, &bytes.to_be_bytes()).await
    }
}
