//! The sandbox's default environment: what every spawn inherits unless it
//! asks for `clearEnv`. It starts as the agent's own environment (set by the
//! jail) and changes through `envSet`/`envDelete`.

use agent_proto::ErrorObject;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Variables the jail passes to the agent itself; not part of the sandbox's
/// environment.
pub const AGENT_CWD_VAR: &str = "AIRLOCK_AGENT_CWD";

pub struct Env {
    vars: Mutex<BTreeMap<String, String>>,
}

impl Env {
    pub fn from_process() -> Self {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k != AGENT_CWD_VAR)
            .collect();
        Self {
            vars: Mutex::new(vars),
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, String> {
        self.vars.lock().expect("env lock").clone()
    }

    pub fn call(&self, method: &str, params: &Value) -> Option<Result<Value, ErrorObject>> {
        let mut vars = self.vars.lock().expect("env lock");
        Some(match method {
            "envGet" => key(method, params).map(|k| vars.get(k).map_or(Value::Null, |v| json!(v))),
            "envSet" => key(method, params).and_then(|k| {
                let value = match params.get("value") {
                    Some(Value::String(v)) => v,
                    other => return Err(ErrorObject::invalid_type(&["value"], "string", other)),
                };
                if value.contains('\0') {
                    return Err(ErrorObject::type_error(format!(
                        "{method}: value contains a NUL byte"
                    )));
                }
                vars.insert(k.to_string(), value.to_string());
                Ok(Value::Null)
            }),
            "envDelete" => key(method, params).map(|k| {
                vars.remove(k);
                Value::Null
            }),
            "envToObject" => Ok(json!(*vars)),
            _ => return None,
        })
    }
}

/// Validates an environment variable name as POSIX `execve` needs it.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("environment variable name is empty".into());
    }
    if name.contains('=') || name.contains('\0') {
        return Err(format!(
            "environment variable name {name:?} contains '=' or NUL"
        ));
    }
    Ok(())
}

fn key<'a>(method: &str, params: &'a Value) -> Result<&'a str, ErrorObject> {
    let k = match params.get("key") {
        Some(Value::String(k)) => k.as_str(),
        other => return Err(ErrorObject::invalid_type(&["key"], "string", other)),
    };
    validate_name(k).map_err(|e| ErrorObject::type_error(format!("{method}: {e}")))?;
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_delete() {
        let env = Env {
            vars: Mutex::new(BTreeMap::new()),
        };
        env.call("envSet", &json!({"key": "A", "value": "1"}))
            .unwrap()
            .unwrap();
        assert_eq!(
            env.call("envGet", &json!({"key": "A"})).unwrap().unwrap(),
            json!("1")
        );
        assert_eq!(
            env.call("envToObject", &json!({})).unwrap().unwrap(),
            json!({"A": "1"})
        );
        env.call("envDelete", &json!({"key": "A"}))
            .unwrap()
            .unwrap();
        assert_eq!(
            env.call("envGet", &json!({"key": "A"})).unwrap().unwrap(),
            Value::Null
        );
        let err = env
            .call("envSet", &json!({"key": "A=B", "value": "1"}))
            .unwrap()
            .unwrap_err();
        assert_eq!(err.constructor_name, "TypeError");
        assert!(env.call("nope", &json!({})).is_none());
    }
}
