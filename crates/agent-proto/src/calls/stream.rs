//! The stream messages of the client protocol (docs/protocol.md,
//! "Sessions, envelopes and streams"): JSON-RPC notifications
//! `$sandbox.stream.*`, sent by a stream's sender (`start`, `enqueue`,
//! `end`, `error`) or by its receiver (`cancel`). Client and daemon each
//! number their own streams; a call names a client stream by a param
//! ([`crate::Method::client_stream_param`]), a result names a server
//! stream ([`crate::Method::server_stream_results`]).

use base64::Engine;
use serde_json::{json, Value};

/// One stream notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamMessage {
    /// `{streamId}`: a stream begins (the daemon starts every server
    /// stream with it).
    Start { stream_id: u64 },
    /// `{streamId, data}`: bytes, base64 on the wire.
    Enqueue { stream_id: u64, data: Vec<u8> },
    /// `{streamId}`: the sender is done.
    End { stream_id: u64 },
    /// `{streamId, error}`: the sender failed. What it says (a JS error
    /// object, a Python message) is not read: the stream just ends.
    Error { stream_id: u64 },
    /// `{streamId, reason?}`: the receiver wants no more. Its reason is
    /// not read.
    Cancel { stream_id: u64 },
}

impl StreamMessage {
    pub const START: &'static str = "$sandbox.stream.start";
    pub const ENQUEUE: &'static str = "$sandbox.stream.enqueue";
    pub const END: &'static str = "$sandbox.stream.end";
    pub const ERROR: &'static str = "$sandbox.stream.error";
    pub const CANCEL: &'static str = "$sandbox.stream.cancel";

    /// The notification's method.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Start { .. } => Self::START,
            Self::Enqueue { .. } => Self::ENQUEUE,
            Self::End { .. } => Self::END,
            Self::Error { .. } => Self::ERROR,
            Self::Cancel { .. } => Self::CANCEL,
        }
    }

    pub fn stream_id(&self) -> u64 {
        match *self {
            Self::Start { stream_id }
            | Self::Enqueue { stream_id, .. }
            | Self::End { stream_id }
            | Self::Error { stream_id }
            | Self::Cancel { stream_id } => stream_id,
        }
    }

    /// The notification `method` with `params`, if it is a stream message
    /// that can be read. A notification has no reply to carry an error,
    /// so one that cannot (another method, no integer `streamId`, `data`
    /// that is not base64) is `None`, and dropped, as the SDKs drop the
    /// ones they cannot parse. An `enqueue` without a string `data` is
    /// one of no bytes.
    pub fn decode(method: &str, params: &Value) -> Option<Self> {
        let stream_id = params.get("streamId").and_then(Value::as_u64)?;
        Some(match method {
            Self::START => Self::Start { stream_id },
            Self::ENQUEUE => {
                let data = params.get("data").and_then(Value::as_str).unwrap_or("");
                let data = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .ok()?;
                Self::Enqueue { stream_id, data }
            }
            Self::END => Self::End { stream_id },
            Self::ERROR => Self::Error { stream_id },
            Self::CANCEL => Self::Cancel { stream_id },
            _ => return None,
        })
    }

    /// The params, as sent.
    pub fn params(&self) -> Value {
        match self {
            Self::Enqueue { stream_id, data } => json!({
                "streamId": stream_id,
                "data": base64::engine::general_purpose::STANDARD.encode(data),
            }),
            other => json!({ "streamId": other.stream_id() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for m in [
            StreamMessage::Start { stream_id: 1 },
            StreamMessage::Enqueue {
                stream_id: 2,
                data: b"hi\0".to_vec(),
            },
            StreamMessage::Enqueue {
                stream_id: 2,
                data: Vec::new(),
            },
            StreamMessage::End { stream_id: 3 },
            StreamMessage::Error { stream_id: 4 },
            StreamMessage::Cancel { stream_id: 5 },
        ] {
            assert_eq!(StreamMessage::decode(m.method(), &m.params()), Some(m));
        }
        assert_eq!(
            StreamMessage::Enqueue {
                stream_id: 2,
                data: b"hi".to_vec()
            }
            .params(),
            json!({"streamId": 2, "data": "aGk="})
        );
    }

    #[test]
    fn as_the_sdks_send_them() {
        let m = StreamMessage::decode(
            StreamMessage::ERROR,
            &json!({"streamId": 3, "error": {"name": "Error", "message": "x"}}),
        );
        assert_eq!(m, Some(StreamMessage::Error { stream_id: 3 }));
        let m = StreamMessage::decode(StreamMessage::CANCEL, &json!({"streamId": 3}));
        assert_eq!(m, Some(StreamMessage::Cancel { stream_id: 3 }));
        // No data is no bytes.
        let m = StreamMessage::decode(StreamMessage::ENQUEUE, &json!({"streamId": 3}));
        assert_eq!(
            m,
            Some(StreamMessage::Enqueue {
                stream_id: 3,
                data: vec![]
            })
        );
    }

    #[test]
    fn unreadable_ones_are_none() {
        let enqueue = |params: Value| StreamMessage::decode(StreamMessage::ENQUEUE, &params);
        assert_eq!(enqueue(json!({"streamId": "1", "data": "aGk="})), None);
        assert_eq!(enqueue(json!({"streamId": -1, "data": "aGk="})), None);
        assert_eq!(enqueue(json!({"data": "aGk="})), None);
        assert_eq!(enqueue(json!({"streamId": 1, "data": "a!"})), None);
        assert_eq!(
            StreamMessage::decode("$sandbox.stream.pause", &json!({"streamId": 1})),
            None
        );
        assert_eq!(
            StreamMessage::decode("spawn", &json!({"streamId": 1})),
            None
        );
        assert_eq!(StreamMessage::decode(StreamMessage::END, &json!([1])), None);
    }
}
