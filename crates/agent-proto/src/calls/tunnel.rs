//! The internal calls between the daemon and the agent: `tcpConnect`
//! (tunnels for `fetch` and exposed ports), `sftpOpen` (the SSH gateway's
//! SFTP subsystem) and `httpPort`; and the `{streamId}` result of the calls
//! that answer a stream.

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

/// `sftpOpen {inStreamId}`: an SFTP (version 3) session served by the
/// agent itself, inside the sandbox, with the agent's credentials;
/// `inStreamId` (windowed) carries the client's SFTP packets to it.
/// Answers a [`StreamResult`] naming the stream of the server's packets.
/// The bytes are the SFTP protocol's own (length-prefixed packets), as an
/// SSH `sftp` subsystem channel carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SftpOpenParams {
    pub in_stream_id: u32,
}

impl FromParams for SftpOpenParams {
    fn from_params(p: &Params) -> Result<Self, ErrorObject> {
        let in_stream_id = p
            .raw("inStreamId")
            .and_then(stream_id)
            .ok_or_else(|| ErrorObject::type_error("sftpOpen: inStreamId must be a stream id"))?;
        Ok(Self { in_stream_id })
    }
}

/// `{streamId}`: `tcpConnect`, `sftpOpen`, `walk`, `expandGlob`, and `readFile` /
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
        round_trips(Method::SftpOpen, SftpOpenParams { in_stream_id: 9 });
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"inStreamId": -1}),
            serde_json::json!({"inStreamId": "1"}),
        ] {
            let e = SftpOpenParams::decode(Method::SftpOpen, &bad).unwrap_err();
            assert!(e.message.contains("inStreamId"), "{bad}: {e:?}");
        }
        let r: StreamResult = serde_json::from_str(r#"{"streamId": 4}"#).unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"streamId":4}"#);
    }
}
