//! `envGet`, `envSet`, `envDelete`, `envToObject`: the sandbox's default
//! environment.

use super::{FromParams, Params};
use crate::ErrorObject;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// `envGet {key}` / `envDelete {key}`. `envGet` answers the value or
/// `null`; `envDelete` answers `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvKeyParams {
    /// Checked by [`validate_env_name`].
    pub key: String,
}

/// `envSet {key, value}`; answers `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvSetParams {
    pub key: String,
    pub value: String,
}

/// `envToObject`'s result: every variable, by name.
pub type EnvToObjectResult = BTreeMap<String, String>;

impl FromParams for EnvKeyParams {
    fn from_params(p: &Params) -> Result<Self, ErrorObject> {
        let key = match p.raw("key") {
            Some(Value::String(k)) => k.clone(),
            other => return Err(ErrorObject::invalid_type(&["key"], "string", other)),
        };
        validate_env_name(&key)
            .map_err(|e| ErrorObject::type_error(format!("{}: {e}", p.method())))?;
        Ok(Self { key })
    }
}

impl FromParams for EnvSetParams {
    fn from_params(p: &Params) -> Result<Self, ErrorObject> {
        let EnvKeyParams { key } = EnvKeyParams::from_params(p)?;
        let value = match p.raw("value") {
            Some(Value::String(v)) => v.clone(),
            other => return Err(ErrorObject::invalid_type(&["value"], "string", other)),
        };
        if value.contains('\0') {
            return Err(ErrorObject::type_error(format!(
                "{}: value contains a NUL byte",
                p.method()
            )));
        }
        Ok(Self { key, value })
    }
}

/// Validates an environment variable name as POSIX `execve` needs it.
pub fn validate_env_name(name: &str) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::test_util::round_trips;
    use crate::Method;
    use serde_json::json;

    #[test]
    fn params_round_trip_and_names_are_checked() {
        round_trips(Method::EnvGet, EnvKeyParams { key: "A".into() });
        round_trips(
            Method::EnvSet,
            EnvSetParams {
                key: "A".into(),
                value: "1".into(),
            },
        );
        let e = EnvKeyParams::decode(Method::EnvDelete, &json!({"key": "A=B"})).unwrap_err();
        assert_eq!(e.constructor_name, "TypeError");
        assert!(e.message.starts_with("envDelete: "), "{}", e.message);
        let e = EnvSetParams::decode(Method::EnvSet, &json!({"key": "A"})).unwrap_err();
        assert!(e.is_invalid_params(), "{e:?}");
    }
}
