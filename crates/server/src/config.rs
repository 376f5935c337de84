//! The create config (`x-deno-sandbox-config`: base64 of a JSON object) in
//! the union of what both SDKs send, validated with errors a person can act
//! on. See docs/protocol.md, "The create config".

use crate::ApiError;
use base64::Engine;
use egress::intercept::SecretSpec;
use manager::{CreateRequest, VolumeMount};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ConfigLimits {
    pub min_memory_mb: u32,
    pub max_memory_mb: u32,
    pub default_memory_mb: u32,
    /// Longest `timeout` / deadline a create may ask for.
    pub max_lifetime: Duration,
}

impl Default for ConfigLimits {
    fn default() -> Self {
        // The range the Deno Sandbox documentation promises.
        Self {
            min_memory_mb: 768,
            max_memory_mb: 4096,
            default_memory_mb: 1280,
            max_lifetime: Duration::from_secs(1800),
        }
    }
}

/// A validated create config.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    pub memory_mb: u32,
    pub stop_at_ms: Option<i64>,
    pub labels: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    pub allow_net: Vec<String>,
    /// Values are never printed (`SecretSpec`'s Debug redacts them).
    pub secrets: Vec<SecretSpec>,
    pub region: String,
    /// A port to expose over HTTPS at create (the Python SDK's `port`;
    /// the JS SDK calls `exposeHttp` itself).
    pub port: Option<u16>,
    /// Volumes to mount, in either SDK's spelling.
    pub volumes: Vec<VolumeMount>,
    /// A snapshot or bootable volume to boot from (`{"volume": KEY}`).
    pub root: Option<String>,
    /// `"ssh": true` (the Python SDK's `ssh=True`): SSH wanted. The
    /// credentials come from `expose/ssh`; the daemon only checks here
    /// that it serves SSH at all.
    pub ssh: bool,
}

impl SandboxConfig {
    pub fn into_request(self, token_id: Option<String>) -> CreateRequest {
        CreateRequest {
            token_id,
            region: self.region,
            memory_mb: self.memory_mb,
            labels: self.labels,
            env: self.env,
            stop_at_ms: self.stop_at_ms,
            allow_net: self.allow_net,
            secrets: self.secrets,
            isolation: None,
            volumes: self.volumes,
            root: self.root,
        }
    }
}

const MAX_LABELS: usize = 5;
const MAX_LABEL_KEY: usize = 64;
const MAX_LABEL_VALUE: usize = 128;

/// Decodes the header value. JS `btoa`s a Latin-1 string, PY an ASCII one:
/// try UTF-8, fall back to Latin-1.
pub fn decode_header(value: Option<&[u8]>) -> Result<Map<String, Value>, ApiError> {
    let Some(raw) = value else {
        return Ok(Map::new());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.trim_ascii())
        .map_err(|e| ApiError::bad_config(format!("x-deno-sandbox-config is not base64: {e}")))?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => e.into_bytes().iter().map(|&b| b as char).collect(),
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_config(
            "x-deno-sandbox-config must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_config(format!(
            "x-deno-sandbox-config is not JSON: {e}"
        ))),
    }
}

pub fn parse(
    map: &Map<String, Value>,
    limits: &ConfigLimits,
    now_ms: i64,
) -> Result<SandboxConfig, ApiError> {
    let memory_mb = match map.get("memory_mb") {
        None | Some(Value::Null) => limits.default_memory_mb,
        Some(v) => {
            let mb = v.as_u64().ok_or_else(|| {
                ApiError::bad_config(format!("memory_mb must be a whole number of MiB, got {v}"))
            })?;
            if mb < u64::from(limits.min_memory_mb) || mb > u64::from(limits.max_memory_mb) {
                return Err(ApiError::bad_config(format!(
                    "memory_mb {mb} is out of range: choose between {} and {} MiB",
                    limits.min_memory_mb, limits.max_memory_mb
                )));
            }
            mb as u32
        }
    };
    let max_ms = limits.max_lifetime.as_millis() as i64;
    let stop_at_ms = match (map.get("stop_at_ms"), map.get("timeout")) {
        (Some(v), _) if !v.is_null() => {
            let at = v.as_i64().ok_or_else(|| {
                ApiError::bad_config(format!("stop_at_ms must be epoch milliseconds, got {v}"))
            })?;
            if at <= now_ms {
                return Err(ApiError::bad_config(
                    "stop_at_ms is in the past: the timeout must be positive",
                ));
            }
            Some(at.min(now_ms + max_ms))
        }
        (_, Some(Value::String(t))) => {
            parse_timeout(t)?.map(|d| now_ms + (d.as_millis() as i64).min(max_ms))
        }
        (_, None | Some(Value::Null)) => None,
        (_, Some(other)) => {
            return Err(ApiError::bad_config(format!(
                "timeout must be a string like \"5m\", got {other}"
            )))
        }
    };
    let labels = string_map(map.get("labels"), "labels")?;
    if labels.len() > MAX_LABELS {
        return Err(ApiError::bad_config(format!(
            "at most {MAX_LABELS} labels are allowed, got {}",
            labels.len()
        )));
    }
    for (k, v) in &labels {
        if k.is_empty() || k.len() > MAX_LABEL_KEY {
            return Err(ApiError::bad_config(format!(
                "label key {k:?} must be 1 to {MAX_LABEL_KEY} bytes"
            )));
        }
        if v.len() > MAX_LABEL_VALUE {
            return Err(ApiError::bad_config(format!(
                "label {k:?}: value must be at most {MAX_LABEL_VALUE} bytes"
            )));
        }
    }
    let env = string_map(map.get("env"), "env")?;
    for k in env.keys() {
        validate_env_name(k).map_err(|e| ApiError::bad_config(format!("env: {e}")))?;
    }
    let allow_net = match map.get("allow_net") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                let host = v.as_str().ok_or_else(|| {
                    ApiError::bad_config("allow_net must be an array of host names")
                })?;
                Ok(host.to_string())
            })
            .collect::<Result<Vec<_>, ApiError>>()?,
        Some(_) => {
            return Err(ApiError::bad_config(
                "allow_net must be an array of host names",
            ))
        }
    };
    // The gateway's own parser: what is accepted here is what it enforces.
    egress::AllowList::parse(&allow_net)
        .map_err(|e| ApiError::bad_config(format!("allow_net: {e}")))?;
    let secrets = parse_secrets(map.get("secrets"))?;
    for s in &secrets {
        if env.contains_key(&s.name) {
            return Err(ApiError::bad_config(format!(
                "{} is both in env and in secrets; keep one",
                s.name
            )));
        }
    }
    let ssh = match map.get("ssh") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ApiError::bad_config(format!(
                "ssh must be true or false, got {other}"
            )))
        }
    };
    let port = crate::sandbox_port::port_param(map).map_err(ApiError::bad_config)?;
    let region = match map.get("region") {
        Some(Value::String(r)) => r.clone(),
        _ => "ord".to_string(),
    };
    Ok(SandboxConfig {
        memory_mb,
        stop_at_ms,
        labels,
        env,
        allow_net,
        secrets,
        region,
        port,
        volumes: parse_volumes(map.get("volumes"))?,
        root: parse_root(map.get("root"))?,
        ssh,
    })
}

/// `"session"` (no deadline), `"30s"`, `"5m"`, `"1h"`.
pub fn parse_timeout(text: &str) -> Result<Option<Duration>, ApiError> {
    if text == "session" {
        return Ok(None);
    }
    let bad = || {
        ApiError::bad_config(format!("timeout {text:?} is invalid: use \"session\" or a duration like \"30s\", \"5m\", \"1h\""))
    };
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = text.split_at(unit_at);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(bad()),
    };
    if secs == 0 {
        return Err(ApiError::bad_config("timeout must be positive"));
    }
    Ok(Some(Duration::from_secs(secs)))
}

fn string_map(v: Option<&Value>, what: &str) -> Result<BTreeMap<String, String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                let v = v
                    .as_str()
                    .ok_or_else(|| ApiError::bad_config(format!("{what}.{k} must be a string")))?;
                Ok((k.clone(), v.to_string()))
            })
            .collect(),
        Some(_) => Err(ApiError::bad_config(format!(
            "{what} must be an object of strings"
        ))),
    }
}

fn validate_env_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid environment variable name (letters, digits and _, not starting with a digit)"))
    }
}

fn parse_secrets(v: Option<&Value>) -> Result<Vec<SecretSpec>, ApiError> {
    let map = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(ApiError::bad_config(
                "secrets must be an object {NAME: {hosts, value}}",
            ))
        }
    };
    let mut secrets = Vec::new();
    for (name, spec) in map {
        validate_env_name(name).map_err(|e| ApiError::bad_config(format!("secret name: {e}")))?;
        let hosts: Vec<String> = match spec.get("hosts").and_then(Value::as_array) {
            Some(h) if !h.is_empty() => h
                .iter()
                .map(|host| {
                    host.as_str().map(str::to_string).ok_or_else(|| {
                        ApiError::bad_config(format!("secret {name}: hosts must be strings"))
                    })
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(ApiError::bad_config(format!(
                    "secret {name} needs a non-empty \"hosts\" list"
                )))
            }
        };
        // The gateway's own parser: what is accepted is what it matches.
        egress::AllowList::parse(&hosts)
            .map_err(|e| ApiError::bad_config(format!("secret {name}: hosts: {e}")))?;
        let value = match spec.get("value").and_then(Value::as_str) {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => {
                return Err(ApiError::bad_config(format!(
                    "secret {name} needs a non-empty string \"value\""
                )))
            }
        };
        if value.contains(egress::intercept::PLACEHOLDER_PREFIX) {
            return Err(ApiError::bad_config(format!(
                "secret {name}: the value looks like an airlock placeholder; give the real value"
            )));
        }
        secrets.push(SecretSpec {
            name: name.clone(),
            hosts,
            value,
        });
    }
    Ok(secrets)
}

/// `root`: `{"volume": "<snapshot or bootable volume, id or slug>"}` as
/// both SDKs send it.
fn parse_root(value: Option<&Value>) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => match o.get("volume").and_then(Value::as_str) {
            Some(key) if !key.is_empty() => Ok(Some(key.to_string())),
            _ => Err(ApiError::bad_config(format!(
                "root: expected {{\"volume\": \"<snapshot or bootable volume>\"}}, got {}",
                Value::Object(o.clone())
            ))),
        },
        Some(Value::String(key)) if !key.is_empty() => Ok(Some(key.clone())),
        Some(other) => Err(ApiError::bad_config(format!(
            "root: expected {{\"volume\": \"<snapshot or bootable volume>\"}}, got {other}"
        ))),
    }
}

/// Most volumes one sandbox may mount.
const MAX_VOLUMES: usize = 8;

/// `volumes`, as the JS SDK sends it (`[{"volume", "path"}]`, always
/// present) or as the Python SDK does (`{"/path": "volume"}`).
fn parse_volumes(value: Option<&Value>) -> Result<Vec<VolumeMount>, ApiError> {
    let bad = |m: String| ApiError::bad_config(format!("volumes: {m}"));
    let mounts: Vec<VolumeMount> = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let field = |k: &str| item.get(k).and_then(Value::as_str);
                match (field("volume"), field("path")) {
                    (Some(v), Some(p)) => Ok(VolumeMount {
                        volume: v.to_string(),
                        path: p.to_string(),
                    }),
                    _ => Err(bad(format!(
                        "each entry needs string \"volume\" and \"path\", got {item}"
                    ))),
                }
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Object(map)) => map
            .iter()
            .map(|(path, v)| match v.as_str() {
                Some(v) => Ok(VolumeMount {
                    volume: v.to_string(),
                    path: path.clone(),
                }),
                None => Err(bad(format!(
                    "the volume mounted at {path:?} must be a volume id or slug, got {v}"
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(bad(format!(
                "expected a list of {{volume, path}} or an object of path -> volume, got {other}"
            )))
        }
    };
    if mounts.len() > MAX_VOLUMES {
        return Err(bad(format!(
            "{} volumes given; a sandbox mounts at most {MAX_VOLUMES}",
            mounts.len()
        )));
    }
    for (i, m) in mounts.iter().enumerate() {
        if m.volume.is_empty() {
            return Err(bad(format!("the volume for {:?} is empty", m.path)));
        }
        manager::check_mount_path(&m.path).map_err(&bad)?;
        let path = m.path.trim_end_matches('/');
        for other in &mounts[..i] {
            let o = other.path.trim_end_matches('/');
            let nested = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
            if nested(path, o) || nested(o, path) {
                return Err(bad(format!(
                    "mount paths {:?} and {:?} overlap: give each volume its own directory",
                    other.path, m.path
                )));
            }
        }
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> Result<SandboxConfig, ApiError> {
        parse(v.as_object().unwrap(), &ConfigLimits::default(), 1_000_000)
    }

    #[test]
    fn minimal_configs_of_both_sdks() {
        let js = cfg(json!({"memory_mb": 1280, "volumes": []})).unwrap();
        assert_eq!(js.memory_mb, 1280);
        assert_eq!(js.stop_at_ms, None);
        let py = cfg(json!({"memory_mb": 1280, "debug": false})).unwrap();
        assert_eq!(py.region, "ord");
    }

    #[test]
    fn timeouts() {
        assert_eq!(
            cfg(json!({"timeout": "5m"})).unwrap().stop_at_ms,
            Some(1_000_000 + 300_000)
        );
        assert_eq!(cfg(json!({"timeout": "session"})).unwrap().stop_at_ms, None);
        assert_eq!(
            cfg(json!({"stop_at_ms": 1_005_000})).unwrap().stop_at_ms,
            Some(1_005_000)
        );
        assert!(cfg(json!({"timeout": "5 minutes"}))
            .unwrap_err()
            .message
            .contains("invalid"));
        assert!(cfg(json!({"timeout": "0s"})).is_err());
        assert!(cfg(json!({"stop_at_ms": 10}))
            .unwrap_err()
            .message
            .contains("past"));
        // Capped at the maximum lifetime.
        assert_eq!(
            cfg(json!({"timeout": "10h"})).unwrap().stop_at_ms,
            Some(1_000_000 + 1_800_000)
        );
    }

    #[test]
    fn bad_inputs_say_what_to_fix() {
        assert!(cfg(json!({"memory_mb": 10}))
            .unwrap_err()
            .message
            .contains("between 768 and 4096"));
        assert!(cfg(json!({"memory_mb": "big"})).is_err());
        let labels: Map<String, Value> = (0..6).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert!(cfg(json!({"labels": labels}))
            .unwrap_err()
            .message
            .contains("at most 5"));
        assert!(cfg(json!({"env": {"1BAD": "x"}})).is_err());
        let msg = cfg(json!({"allow_net": ["https://x.com"]}))
            .unwrap_err()
            .message;
        assert!(
            msg.contains("allow_net") && msg.contains("URLs are not allowed"),
            "{msg}"
        );
        assert!(cfg(json!({"allow_net": ["x.com:0"]})).is_err());
        assert!(cfg(
            json!({"allow_net": ["api.example.com", "*.example.org", "example.net:8443"]})
        )
        .is_ok());
        assert!(cfg(json!({"secrets": {"K": {"hosts": [], "value": "v"}}}))
            .unwrap_err()
            .message
            .contains("hosts"));
        assert!(cfg(json!({"secrets": {"K": {"hosts": ["a.com"], "value": ""}}})).is_err());
        let secrets = cfg(json!({"secrets": {"K": {"hosts": ["a.com"], "value": "v"}}}))
            .unwrap()
            .secrets;
        assert_eq!(secrets.len(), 1);
        assert_eq!(
            (secrets[0].name.as_str(), secrets[0].value.as_str()),
            ("K", "v")
        );
        // Values never show in Debug output (logs).
        assert!(!format!("{secrets:?}").contains("\"v\""), "{secrets:?}");
        assert!(cfg(json!({"secrets": {"1K": {"hosts": ["a.com"], "value": "v"}}})).is_err());
        assert!(
            cfg(json!({"secrets": {"K": {"hosts": ["https://a.com"], "value": "v"}}}))
                .unwrap_err()
                .message
                .contains("secret K")
        );
        assert!(cfg(
            json!({"env": {"K": "x"}, "secrets": {"K": {"hosts": ["a.com"], "value": "v"}}})
        )
        .unwrap_err()
        .message
        .contains("both in env and in secrets"));
        assert!(cfg(json!({"ssh": true})).unwrap().ssh);
        assert!(!cfg(json!({"ssh": false})).unwrap().ssh);
        assert!(!cfg(json!({})).unwrap().ssh);
        assert!(cfg(json!({"ssh": "yes"}))
            .unwrap_err()
            .message
            .contains("ssh must be true or false"));
        assert_eq!(
            cfg(json!({"root": {"volume": "snap"}}))
                .unwrap()
                .root
                .as_deref(),
            Some("snap")
        );
        assert_eq!(
            cfg(json!({"root": {"x": 1}})).unwrap_err().code,
            "INVALID_CONFIG"
        );
    }

    #[test]
    fn volumes_in_both_sdk_spellings() {
        let js = cfg(json!({"volumes": [{"volume": "cache", "path": "/data"}]})).unwrap();
        let py = cfg(json!({"volumes": {"/data": "cache"}})).unwrap();
        let want = vec![VolumeMount {
            volume: "cache".into(),
            path: "/data".into(),
        }];
        assert_eq!(js.volumes, want);
        assert_eq!(py.volumes, want);
        assert!(cfg(json!({"volumes": []})).unwrap().volumes.is_empty());
        for (bad, says) in [
            (json!({"/": "v"}), "root filesystem"),
            (json!({"/proc/x": "v"}), "/proc"),
            (json!({"/a/../etc": "v"}), "normalized"),
            (json!({"data": "v"}), "absolute"),
            (json!({"/data": ""}), "empty"),
            (json!({"/data": 3}), "volume id or slug"),
            (json!({"/data": "a", "/data/sub": "b"}), "overlap"),
            (json!([{"volume": "a"}]), "\"path\""),
            (json!("x"), "expected a list"),
        ] {
            let e = cfg(json!({ "volumes": bad })).unwrap_err();
            assert_eq!(e.code, "INVALID_CONFIG");
            assert!(e.message.contains(says), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn header_decoding() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(r#"{"memory_mb":1024}"#);
        assert_eq!(
            decode_header(Some(b64.as_bytes())).unwrap()["memory_mb"],
            1024
        );
        assert!(decode_header(Some(b"!!!")).is_err());
        assert!(decode_header(None).unwrap().is_empty());
        // Latin-1 text from JS btoa.
        let latin1: Vec<u8> =
            br#"{"labels":{"k":"caf"#.iter().copied().chain([0xE9]).chain(*br#""}}"#).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(latin1);
        assert_eq!(
            decode_header(Some(b64.as_bytes())).unwrap()["labels"]["k"],
            "café"
        );
    }
}
