//! JSON payloads of `Hello`, `Call` and `Reply` frames.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ErrorObject;

/// Bumped on any incompatible change to frames or to a method's shape.
/// 2: the `Credit` frame and `tcpConnect`.
/// 3: file contents as windowed streams (`readFile` with `stream: true`,
///    `writeFile` streams credited), so files are not capped by a frame.
pub const PROTOCOL_VERSION: u32 = 3;

/// The agent's first frame: who it is and which protocol it speaks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hello {
    pub version: u32,
    pub agent: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Call {
    pub method: String,
    #[serde(default)]
    pub params: Value,
}

/// Result of a call, in the same `{"ok": ...}` / `{"error": ...}` shape as the
/// Deno Sandbox protocol, so the daemon can forward it without re-encoding.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    Ok(Value),
    Error(ErrorObject),
}

impl Reply {
    pub fn into_result(self) -> Result<Value, ErrorObject> {
        match self {
            Reply::Ok(v) => Ok(v),
            Reply::Error(e) => Err(e),
        }
    }
}

impl From<Result<Value, ErrorObject>> for Reply {
    fn from(r: Result<Value, ErrorObject>) -> Self {
        match r {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_shapes_match_the_deno_envelope() {
        let ok = serde_json::to_string(&Reply::Ok(Value::Null)).unwrap();
        assert_eq!(ok, r#"{"ok":null}"#);
        let err = serde_json::to_value(Reply::Error(ErrorObject::not_found("gone"))).unwrap();
        assert_eq!(err["error"]["constructorName"], "NotFound");
        assert_eq!(err["error"]["code"], "ENOENT");
    }
}
