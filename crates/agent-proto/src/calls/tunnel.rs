//! The internal calls between the daemon and the agent: `tcpConnect`
//! (tunnels for `fetch` and exposed ports) and `httpPort`; and the
//! `{streamId}` result of the calls that answer a stream.

use super::process::stream_id;
use super::{FromParams, Params};
use crate::ErrorObject;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `tcpConnect {host?, port, inStreamId}`: a TCP connection from inside
/// the sandbox; `inStreamId` (windowed) carries the daemon's bytes to it.
/// Answers a [`StreamResult`] naming the stream of the connection's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpConnectParams {
    /// Not empty; `None` is `127.0.0.1`, the sandbox's own loopback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// 1..65535.
    pub port: u16,
    pub in_stream_id: u32,
}

impl TcpConnectParams {
    pub fn host(&self) -> &str {
        self.host.as_deref().unwrap_or("127.0.0.1")
    }
}

impl FromParams for TcpConnectParams {
    fn from_params(p: &Params) -> Result<Self, ErrorObject> {
        let port = p
            .raw("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| ErrorObject::type_error("tcpConnect: port must be 1..65535"))?;
        let host = match p.get("host") {
            None => None,
            Some(Value::String(h)) if !h.is_empty() => Some(h.clone()),
            Some(other) => {
                return Err(ErrorObject::type_error(format!(
                    "tcpConnect: host must be a non-empty string, got {other}"
                )))
            }
        };
        let in_stream_id = p
            .raw("inStreamId")
            .and_then(stream_id)
            .ok_or_else(|| ErrorObject::type_error("tcpConnect: inStreamId must be a stream id"))?;
        Ok(Self {
            host,
            port,
            in_stream_id,
        })
    }
}

/// `{streamId}`: `tcpConnect`, `walk`, `expandGlob`, and `readFile` /
/// `readTextFile` with `stream: true` (which add the file's `size` as
/// `fstat` saw it, a hint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamResult {
    pub stream_id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// `httpPort {pid}`'s result: the port the process listens on, or `None`
/// (`null`: not listening, or exited).
pub type HttpPortResult = Option<u16>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::test_util::round_trips;
    use crate::Method;

    #[test]
    fn params_round_trip() {
        round_trips(
            Method::TcpConnect,
            TcpConnectParams {
                host: Some("::1".into()),
                port: 80,
                in_stream_id: 3,
            },
        );
        let r: StreamResult = serde_json::from_str(r#"{"streamId": 4}"#).unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"streamId":4}"#);
    }
}
