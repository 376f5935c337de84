//! A port inside a sandbox, as requests name it: a `port` param, a `pid`
//! param, or the port a process listens on (asked of the agent). The
//! JSON-RPC calls (`exposeHttp`, `fetch`) decode theirs with their types
//! (`agent_proto::calls`); the REST routes (the create config's `port`,
//! `POST .../expose/http`) read theirs here, by the same rules, and add
//! their own context to the messages.

use agent_proto::calls::{pid_number, port_number, HttpPortResult, PidParams};
use agent_proto::{ErrorObject, Method};
use manager::Live;
use serde_json::{Map, Value};

/// `port` (1..65535) from REST params (`POST .../expose/http`, the create
/// config), if present.
pub(crate) fn port_param(params: &Map<String, Value>) -> Result<Option<u16>, String> {
    match params.get("port") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => port_number(v)
            .map(Some)
            .ok_or_else(|| format!("port must be 1..65535, got {v}")),
    }
}

/// `pid` (positive) from REST params, if present.
pub(crate) fn pid_param(params: &Map<String, Value>) -> Result<Option<i64>, String> {
    match params.get("pid") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => pid_number(v)
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
