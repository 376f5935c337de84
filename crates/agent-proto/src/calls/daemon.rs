//! The calls the daemon serves itself ([`crate::Route::Daemon`]): `fetch`,
//! `abort` and `exposeHttp`; and the port and pid numbers by which its
//! requests (these, and the REST routes) name a port inside a sandbox.
//!
//! Like the agent's params these are read top level, in the order the
//! daemon always read them: a param of the wrong JSON type is a zod issue
//! (`-32602`), a value of the right type that makes no sense a `TypeError`
//! naming the method.

use super::{FromParams, Params};
use crate::ErrorObject;
use http::{HeaderName, HeaderValue, Uri};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// A port as a request names one: a JSON integer in 1..65535.
pub fn port_number(v: &Value) -> Option<u16> {
    v.as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
}

/// A process as the daemon's requests name one: a positive JSON integer.
/// Wider than a pid: the agent, asked about a process past `i32`, says
/// there is none in its own words.
pub fn pid_number(v: &Value) -> Option<i64> {
    v.as_i64().filter(|p| *p > 0)
}

/// `keys` present (not `null`) but not numbers: a zod issue, before any
/// range check.
fn numbers_typed(p: &Params, keys: &[&str]) -> Result<(), ErrorObject> {
    for &key in keys {
        if let Some(v) = p.get(key).filter(|v| !v.is_number()) {
            return Err(ErrorObject::invalid_type(&[key], "number", Some(v)));
        }
    }
    Ok(())
}

/// Optional `pid` (already [`numbers_typed`]).
fn opt_pid(p: &Params) -> Result<Option<i64>, ErrorObject> {
    p.get("pid")
        .map(|v| {
            pid_number(v).ok_or_else(|| p.error(format!("pid must be a positive integer, got {v}")))
        })
        .transpose()
}

/// `fetch {url, method?, headers?, redirect?, pid?, abortId?,
/// bodyStreamId?}`: an HTTP request made from inside the sandbox. Answers
/// a [`FetchResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchParams {
    /// `http://` or `https://`, with a host.
    #[serde(serialize_with = "display")]
    pub url: Uri,
    /// Default `GET`.
    #[serde(serialize_with = "display")]
    pub method: http::Method,
    /// In the order sent, repeats kept.
    #[serde(serialize_with = "header_pairs")]
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub redirect: Redirect,
    /// Send the request to the port this process listens on, whatever the
    /// URL's host says (`deno.run`'s `runtime.fetch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i64>,
    /// The id a later `abort` names to cancel the request. Read leniently,
    /// as always: one that is not an integer is no id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_id: Option<i64>,
    /// The client stream carrying the request's body. The daemon binds it
    /// (by [`crate::Method::client_stream_param`]) as the message arrives,
    /// before the call is decoded; one that is not an id is no body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_stream_id: Option<u64>,
}

/// `fetch`'s `redirect`, as in the fetch standard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Redirect {
    #[default]
    Follow,
    /// The redirect response is the answer.
    Manual,
    /// A redirect fails the request.
    Error,
}

fn display<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn header_pairs<S: Serializer>(
    headers: &[(HeaderName, HeaderValue)],
    s: S,
) -> Result<S::Ok, S::Error> {
    // Decoded from JSON strings, so the values are UTF-8 text.
    s.collect_seq(
        headers
            .iter()
            .map(|(n, v)| [n.as_str().into(), String::from_utf8_lossy(v.as_bytes())]),
    )
}

impl FromParams for FetchParams {
    fn from_params(p: &Params) -> Result<Self, ErrorObject> {
        let url_text = match p.raw("url") {
            Some(Value::String(u)) => u.as_str(),
            other => return Err(ErrorObject::invalid_type(&["url"], "string", other)),
        };
        let not_http = || p.error(format!("url {url_text:?} must be http:// or https://"));
        let lower = url_text.get(..8).unwrap_or(url_text).to_ascii_lowercase();
        if !lower.starts_with("http://") && !lower.starts_with("https://") {
            return Err(not_http());
        }
        let url: Uri = url_text
            .parse()
            .map_err(|e| p.error(format!("invalid url {url_text:?}: {e}")))?;
        if !matches!(url.scheme_str(), Some("http" | "https")) {
            return Err(not_http());
        }
        if url.host().is_none_or(str::is_empty) {
            return Err(p.error(format!("url {url_text:?} has no host")));
        }
        let method = match p.get("method") {
            None => http::Method::GET,
            Some(Value::String(m)) => http::Method::from_bytes(m.as_bytes())
                .map_err(|_| p.error(format!("invalid method {m:?}")))?,
            Some(other) => {
                return Err(ErrorObject::invalid_type(
                    &["method"],
                    "string",
                    Some(other),
                ))
            }
        };
        let headers = match p.get("headers") {
            None => Vec::new(),
            Some(Value::Array(pairs)) => pairs
                .iter()
                .map(|pair| header(p, pair))
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(ErrorObject::invalid_type(
                    &["headers"],
                    "array",
                    Some(other),
                ))
            }
        };
        // Leniently typed, as it always was: a non-string is the default.
        let redirect = match p.raw("redirect").and_then(Value::as_str) {
            None | Some("follow") => Redirect::Follow,
            Some("manual") => Redirect::Manual,
            Some("error") => Redirect::Error,
            Some(other) => {
                return Err(p.error(format!(
                    "redirect must be follow, manual or error, got {other:?}"
                )))
            }
        };
        numbers_typed(p, &["pid"])?;
        let pid = opt_pid(p)?;
        Ok(Self {
            url,
            method,
            headers,
            redirect,
            pid,
            abort_id: p.raw("abortId").and_then(Value::as_i64),
            body_stream_id: p.raw("bodyStreamId").and_then(Value::as_u64),
        })
    }
}

/// One `[name, value]` of `fetch`'s `headers`.
fn header(p: &Params, pair: &Value) -> Result<(HeaderName, HeaderValue), ErrorObject> {
    let (name, value) = match pair.as_array().map(Vec::as_slice) {
        Some([Value::String(n), Value::String(v)]) => (n, v),
        _ => {
            return Err(p.error(format!(
                "header {pair} must be a [name, value] pair of strings"
            )))
        }
    };
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| p.error(format!("invalid header name {name:?}")))?;
    let value = HeaderValue::from_str(value)
        .map_err(|_| p.error(format!("invalid value for header {name}")))?;
    Ok((name, value))
}

/// `fetch`'s result: the final response (after the redirects followed),
/// its body on a server stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchResult {
    pub status: u16,
    /// The status's canonical reason (`""` for one without).
    pub status_text: String,
    /// `[name, value]` pairs, in the response's order.
    pub headers: Vec<[String; 2]>,
    /// `null` for a response that has no body (HEAD, 204, 304, ...): the
    /// JS SDK builds a WHATWG `Response`, which must have a null body then.
    pub body_stream_id: Option<u64>,
}

/// `abort {abortId}`: cancels the in-flight `fetch` that named that id.
/// Answers `null` whatever it names, even nothing (the fetch may have
/// finished): an id that is not an integer names nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AbortParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_id: Option<i64>,
}

impl FromParams for AbortParams {
    fn from_params(p: &Params) -> Result<Self, ErrorObject> {
        Ok(Self {
            abort_id: p.raw("abortId").and_then(Value::as_i64),
        })
    }
}

/// `exposeHttp {domain, port}` or `{domain, pid}`: serves the domain (one
/// the REST call allocated) from a port inside the sandbox. Answers `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExposeHttpParams {
    pub domain: String,
    #[serde(flatten)]
    pub target: SandboxPort,
}

/// A port inside a sandbox: given, or the one a process listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxPort {
    Port(u16),
    Pid(i64),
}

impl FromParams for ExposeHttpParams {
    fn from_params(p: &Params) -> Result<Self, ErrorObject> {
        let domain = match p.raw("domain") {
            Some(Value::String(d)) => d.clone(),
            other => return Err(ErrorObject::invalid_type(&["domain"], "string", other)),
        };
        numbers_typed(p, &["port", "pid"])?;
        let port = p
            .get("port")
            .map(|v| {
                port_number(v).ok_or_else(|| p.error(format!("port must be 1..65535, got {v}")))
            })
            .transpose()?;
        let target = match (port, opt_pid(p)?) {
            (Some(port), None) => SandboxPort::Port(port),
            (None, Some(pid)) => SandboxPort::Pid(pid),
            _ => return Err(p.error("give exactly one of port and pid")),
        };
        Ok(Self { domain, target })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::test_util::round_trips;
    use crate::Method;
    use serde_json::json;

    #[test]
    fn params_round_trip() {
        round_trips(
            Method::Fetch,
            FetchParams {
                url: "https://example.com:8443/a?b=c".parse().unwrap(),
                method: http::Method::PATCH,
                headers: vec![
                    (
                        HeaderName::from_static("x-a"),
                        HeaderValue::from_static("1"),
                    ),
                    (
                        HeaderName::from_static("x-a"),
                        HeaderValue::from_str("ü").unwrap(),
                    ),
                ],
                redirect: Redirect::Manual,
                pid: Some(7),
                abort_id: Some(3),
                body_stream_id: Some(9),
            },
        );
        round_trips(
            Method::Fetch,
            FetchParams {
                url: "http://localhost:8000/".parse().unwrap(),
                method: http::Method::GET,
                headers: vec![],
                redirect: Redirect::Follow,
                pid: None,
                abort_id: None,
                body_stream_id: None,
            },
        );
        round_trips(Method::Abort, AbortParams { abort_id: Some(1) });
        round_trips(Method::Abort, AbortParams { abort_id: None });
        for target in [SandboxPort::Port(8000), SandboxPort::Pid(42)] {
            round_trips(
                Method::ExposeHttp,
                ExposeHttpParams {
                    domain: "d.example".into(),
                    target,
                },
            );
        }
    }

    #[test]
    fn fetch_as_the_sdks_send_it() {
        // Python: everything given, `pid` only with a process.
        let p = FetchParams::decode(
            Method::Fetch,
            &json!({"url": "http://127.0.0.1:8000/moved", "method": "GET", "headers": [],
                    "redirect": "manual", "abortId": 1}),
        )
        .unwrap();
        assert_eq!(p.redirect, Redirect::Manual);
        assert_eq!((p.pid, p.abort_id, p.body_stream_id), (None, Some(1), None));
        // JS: `undefined` members are left out; a body is a stream.
        let p = FetchParams::decode(
            Method::Fetch,
            &json!({"url": "HTTPS://Example.com", "method": "POST",
                    "headers": [["content-type", "text/plain"]], "redirect": "follow",
                    "bodyStreamId": 4}),
        )
        .unwrap();
        // http keeps the host as written and lowercases the scheme.
        assert_eq!(
            (p.url.scheme_str(), p.url.host()),
            (Some("https"), Some("Example.com"))
        );
        assert_eq!(p.method, http::Method::POST);
        assert_eq!(p.headers[0].0, http::header::CONTENT_TYPE);
        assert_eq!(p.body_stream_id, Some(4));
        // Nulls are the defaults; lenient members are read as they were.
        let p = FetchParams::decode(
            Method::Fetch,
            &json!({"url": "http://h/", "method": null, "headers": null, "redirect": 5,
                    "pid": null, "abortId": "x"}),
        )
        .unwrap();
        assert_eq!(
            (p.method, p.redirect, p.pid, p.abort_id),
            (http::Method::GET, Redirect::Follow, None, None)
        );
    }

    fn issue(e: &ErrorObject) -> Value {
        assert!(e.is_invalid_params(), "{e:?}");
        serde_json::from_str::<Value>(&e.message).unwrap()[0].clone()
    }

    fn type_error(e: &ErrorObject) -> &str {
        assert_eq!(e.constructor_name, "TypeError", "{e:?}");
        &e.message
    }

    /// A member of the wrong JSON type is a zod issue naming it; a value
    /// of the right type that is no URL, method or header a `TypeError`.
    #[test]
    fn bad_fetch_params_fail_as_they_always_did() {
        let bad = |params: Value| FetchParams::decode(Method::Fetch, &params).unwrap_err();
        assert_eq!(
            issue(&bad(json!({"method": "GET"}))),
            json!({"expected": "string", "code": "invalid_type", "path": ["url"],
                   "message": "Invalid input: expected string, received undefined"})
        );
        assert_eq!(
            issue(&bad(json!({"url": null})))["message"],
            "Invalid input: expected string, received null"
        );
        let url = "http://localhost/";
        assert_eq!(
            issue(&bad(json!({"url": url, "method": 1})))["path"],
            json!(["method"])
        );
        assert_eq!(
            issue(&bad(json!({"url": url, "headers": {"a": "b"}}))),
            json!({"expected": "array", "code": "invalid_type", "path": ["headers"],
                   "message": "Invalid input: expected array, received object"})
        );
        assert_eq!(
            issue(&bad(json!({"url": url, "pid": "1"})))["path"],
            json!(["pid"])
        );
        for (params, message) in [
            (
                json!({"url": "ftp://h/"}),
                r#"fetch: url "ftp://h/" must be http:// or https://"#,
            ),
            (
                json!({"url": "http://"}),
                r#"fetch: invalid url "http://": empty string"#,
            ),
            (
                json!({"url": url, "method": "GE T"}),
                r#"fetch: invalid method "GE T""#,
            ),
            (
                json!({"url": url, "headers": [["a"]]}),
                r#"fetch: header ["a"] must be a [name, value] pair of strings"#,
            ),
            (
                json!({"url": url, "headers": [["a b", "c"]]}),
                r#"fetch: invalid header name "a b""#,
            ),
            (
                json!({"url": url, "headers": [["a", "c\n"]]}),
                "fetch: invalid value for header a",
            ),
            (
                json!({"url": url, "redirect": "never"}),
                r#"fetch: redirect must be follow, manual or error, got "never""#,
            ),
            (
                json!({"url": url, "pid": 0}),
                "fetch: pid must be a positive integer, got 0",
            ),
            (
                json!({"url": url, "pid": 2.5}),
                "fetch: pid must be a positive integer, got 2.5",
            ),
        ] {
            assert_eq!(type_error(&bad(params.clone())), message, "{params}");
        }
        // The first bad member in the order read is the one reported.
        assert_eq!(
            type_error(&bad(json!({"url": "ftp://h/", "method": 1}))),
            r#"fetch: url "ftp://h/" must be http:// or https://"#
        );
    }

    #[test]
    fn bad_expose_params_fail_as_they_always_did() {
        let bad =
            |params: Value| ExposeHttpParams::decode(Method::ExposeHttp, &params).unwrap_err();
        assert_eq!(issue(&bad(json!({"port": 80})))["path"], json!(["domain"]));
        // Types first (port, then pid), then ranges.
        assert_eq!(
            issue(&bad(json!({"domain": "d", "port": -1, "pid": "x"}))),
            json!({"expected": "number", "code": "invalid_type", "path": ["pid"],
                   "message": "Invalid input: expected number, received string"})
        );
        assert_eq!(
            issue(&bad(json!({"domain": "d", "port": "8000"})))["path"],
            json!(["port"])
        );
        for (params, message) in [
            (
                json!({"domain": "d", "port": 70000}),
                "exposeHttp: port must be 1..65535, got 70000",
            ),
            (
                json!({"domain": "d", "pid": -1}),
                "exposeHttp: pid must be a positive integer, got -1",
            ),
            (
                json!({"domain": "d"}),
                "exposeHttp: give exactly one of port and pid",
            ),
            (
                json!({"domain": "d", "port": 1, "pid": 2}),
                "exposeHttp: give exactly one of port and pid",
            ),
        ] {
            assert_eq!(type_error(&bad(params.clone())), message, "{params}");
        }
        let p = ExposeHttpParams::decode(
            Method::ExposeHttp,
            &json!({"domain": "d", "port": 8000.0, "pid": null}),
        );
        // 8000.0 is a number but no integer: out of range, as it was.
        assert_eq!(
            type_error(&p.unwrap_err()),
            "exposeHttp: port must be 1..65535, got 8000.0"
        );
    }

    #[test]
    fn fetch_result_wire_form() {
        let r = FetchResult {
            status: 204,
            status_text: "No Content".into(),
            headers: vec![["a".into(), "b".into()]],
            body_stream_id: None,
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            json!({"status": 204, "statusText": "No Content", "headers": [["a", "b"]],
                   "bodyStreamId": null})
        );
        assert_eq!(serde_json::from_value::<FetchResult>(json).unwrap(), r);
    }
}
