//! The JSON-RPC 2.0 envelope of a client's messages: a request (`method`,
//! `id`, `params`) or a notification (no `id`: the stream messages,
//! [`super::StreamMessage`]).

use serde::Deserialize;
use serde_json::{Map, Value};

/// A client message's envelope, read leniently: a member of the wrong
/// type is absent, so the daemon can answer what it can (a `-32600` to the
/// id it could read) rather than drop the message. `jsonrpc` is not
/// checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Absent unless a string.
    pub method: Option<String>,
    /// Absent unless a number or a string (JSON-RPC 2.0 §4).
    pub id: Option<Value>,
    /// As sent (`null` included), `{}` when absent; the method's type
    /// checks it.
    pub params: Value,
}

impl Envelope {
    /// `msg`, a JSON object, as an envelope; `params` is moved, not copied.
    pub fn from_object(mut msg: Map<String, Value>) -> Self {
        let method = match msg.remove("method") {
            Some(Value::String(m)) => Some(m),
            _ => None,
        };
        Self {
            method,
            id: msg.remove("id").filter(is_id),
            params: msg
                .remove("params")
                .unwrap_or_else(|| Value::Object(Map::new())),
        }
    }

    /// The id and method of a message serde_json refuses to parse whole,
    /// typically for a string with a lone UTF-16 surrogate escape (such as
    /// `"\udc80"`, which JavaScript's `JSON.stringify` writes for a lone
    /// surrogate but which is not Unicode text): the other members are
    /// skipped without being decoded. `(None, None)` for what is not JSON
    /// at all, or whose `method` is not a string.
    pub fn peek(text: &str) -> (Option<Value>, Option<String>) {
        #[derive(Deserialize)]
        struct Peek {
            id: Option<Value>,
            method: Option<String>,
        }
        match serde_json::from_str::<Peek>(text) {
            Ok(m) => (m.id.filter(is_id), m.method),
            Err(_) => (None, None),
        }
    }
}

fn is_id(v: &Value) -> bool {
    v.is_number() || v.is_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(v: Value) -> Envelope {
        let Value::Object(m) = v else { unreachable!() };
        Envelope::from_object(m)
    }

    #[test]
    fn requests_and_notifications() {
        assert_eq!(
            envelope(json!({"jsonrpc": "2.0", "id": 1, "method": "stat", "params": {"path": "/"}})),
            Envelope {
                method: Some("stat".into()),
                id: Some(json!(1)),
                params: json!({"path": "/"}),
            }
        );
        let n = envelope(json!({"method": "$sandbox.stream.end"}));
        assert_eq!((n.id, n.params), (None, json!({})));
        // `null` params stay null: the method's type refuses them.
        assert_eq!(
            envelope(json!({"id": "a", "method": "x", "params": null})).params,
            Value::Null
        );
    }

    #[test]
    fn members_of_the_wrong_type_are_absent() {
        let e = envelope(json!({"id": [1], "method": 5}));
        assert_eq!((e.method, e.id), (None, None));
        let e = envelope(json!({"id": null, "method": "x"}));
        assert_eq!(e.id, None);
    }

    #[test]
    fn peek_of_a_request_with_a_lone_surrogate() {
        let text = r#"{"jsonrpc":"2.0","id":7,"method":"writeTextFile","params":{"path":"/tmp/x","content":"\udc80"}}"#;
        assert!(serde_json::from_str::<Value>(text).is_err());
        assert_eq!(
            Envelope::peek(text),
            (Some(json!(7)), Some("writeTextFile".into()))
        );
        // A high surrogate without its low half, and an id after params.
        let text = r#"{"method":"stat","params":{"path":"\ud800x"},"id":"a"}"#;
        assert_eq!(
            Envelope::peek(text),
            (Some(json!("a")), Some("stat".into()))
        );
    }

    #[test]
    fn peek_of_what_is_not_json() {
        assert_eq!(Envelope::peek("{not json"), (None, None));
        assert_eq!(
            Envelope::peek(r#"{"id":1,"method":"x","params":{"#),
            (None, None)
        );
        // An id that is not a number or string is no id.
        assert_eq!(
            Envelope::peek(r#"{"id":[1],"method":"x","params":"\udc80"}"#).0,
            None
        );
    }
}
