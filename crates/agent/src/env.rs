//! The sandbox's default environment: what every spawn inherits unless it
//! asks for `clearEnv`. It starts as the agent's own environment (set by the
//! jail) and changes through `envSet`/`envDelete`.

use agent_proto::calls::{EnvKeyParams, EnvSetParams, EnvToObjectResult};
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

    /// `envGet`: the value, if set.
    pub fn get(&self, p: &EnvKeyParams) -> Option<String> {
        self.vars.lock().expect("env lock").get(&p.key).cloned()
    }

    /// `envSet`.
    pub fn set(&self, p: EnvSetParams) {
        self.vars.lock().expect("env lock").insert(p.key, p.value);
    }

    /// `envDelete`.
    pub fn delete(&self, p: &EnvKeyParams) {
        self.vars.lock().expect("env lock").remove(&p.key);
    }

    /// `envToObject`.
    pub fn to_object(&self) -> EnvToObjectResult {
        self.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_proto::calls::FromParams;
    use agent_proto::Method;
    use serde_json::json;

    #[test]
    fn set_get_delete() {
        let env = Env {
            vars: Mutex::new(BTreeMap::new()),
        };
        let key = |k: &str| EnvKeyParams::decode(Method::EnvGet, &json!({ "key": k })).unwrap();
        env.set(EnvSetParams::decode(Method::EnvSet, &json!({"key": "A", "value": "1"})).unwrap());
        assert_eq!(env.get(&key("A")), Some("1".to_string()));
        assert_eq!(
            env.to_object(),
            BTreeMap::from([("A".to_string(), "1".to_string())])
        );
        env.delete(&key("A"));
        assert_eq!(env.get(&key("A")), None);
        let err =
            EnvSetParams::decode(Method::EnvSet, &json!({"key": "A=B", "value": "1"})).unwrap_err();
        assert_eq!(err.constructor_name, "TypeError");
    }
}
