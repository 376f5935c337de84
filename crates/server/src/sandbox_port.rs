//! A port inside a sandbox, as requests name it: a `port` param, a `pid`
//! param, or the port a process listens on (asked of the agent). Shared by
//! the create config's `port`, `POST .../expose/http`, `exposeHttp` and
//! `fetch`; callers add their own context to the messages.

use agent_proto::calls::{HttpPortResult, PidParams};
use agent_proto::{ErrorObject, Method};
use manager::Live;
use serde_json::{Map, Value};

/// A JSON-RPC caller's `keys` (`port`, `pid`) present but not numbers: a
/// validation error (answered as -32602), before the range checks below,
/// whose messages are `TypeError`s.
pub(crate) fn numbers_typed(params: &Map<String, Value>, keys: &[&str]) -> Result<(), ErrorObject> {
    for &key in keys {
        if let Some(v) = params.get(key).filter(|v| !v.is_null() && !v.is_number()) {
            return Err(ErrorObject::invalid_type(&[key], "number", Some(v)));
        }
    }
    Ok(())
}

/// `port` (1..65535) from request params, if present.
pub(crate) fn port_param(params: &Map<String, Value>) -> Result<Option<u16>, String> {
    match params.get("port") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .map(Some)
            .ok_or_else(|| format!("port must be 1..65535, got {v}")),
    }
}

/// `pid` (positive) from request params, if present.
pub(crate) fn pid_param(params: &Map<String, Value>) -> Result<Option<i64>, String> {
    match params.get("pid") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .filter(|p| *p > 0)
            .map(Some)
            .ok_or_else(|| format!("pid must be a positive integer, got {v}")),
    }
}

/// The port process `pid` serves HTTP on, asked of the agent (for
/// `exposeHttp {pid}` and `fetch {pid}`).
pub(crate) async fn port_of_pid(live: &Live, pid: i64) -> Result<u16, ErrorObject> {
    // No process has a pid past i32: the agent's own answer to one.
    let params = PidParams {
        pid: i32::try_from(pid).map_err(|_| {
            ErrorObject::type_error(format!(
                "{}: pid must be a positive integer, got {pid}",
                Method::HttpPort
            ))
        })?,
    };
    let reply = live
        .client
        .call_typed::<_, HttpPortResult>(Method::HttpPort, &params);
    let port = match reply.await {
        Ok(r) => r?,
        Err(e) => {
            return Err(ErrorObject::new(
                "Error",
                format!("sandbox agent: {e:#}"),
                None,
            ))
        }
    };
    port.ok_or_else(|| {
        ErrorObject::new(
            "ConnectionRefused",
            format!("process {pid} is not listening for HTTP (yet: wait for httpReady)"),
            Some("ECONNREFUSED"),
        )
    })
}
