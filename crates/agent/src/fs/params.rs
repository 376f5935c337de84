//! Typed access to a call's JSON params, with a `TypeError` that names the
//! method and the param for every missing or wrongly typed value.
//!
//! JS sends options nested under `options`, and the PY SDK sends `null` for
//! options it was not given, so [`Params`] flattens `options` into the top
//! level and treats `null` like an absent key.

use agent_proto::ErrorObject;
use serde_json::{Map, Value};

pub(crate) struct Params<'a> {
    method: &'a str,
    map: Map<String, Value>,
}

impl<'a> Params<'a> {
    pub(crate) fn new(method: &'a str, params: &Value) -> Result<Self, ErrorObject> {
        let map = match params {
            Value::Null => Map::new(),
            Value::Object(top) => flatten(method, top)?,
            other => {
                return Err(ErrorObject::type_error(format!(
                    "{method}: params must be an object, got {}",
                    kind(other)
                )))
            }
        };
        Ok(Self { method, map })
    }

    pub(crate) fn method(&self) -> &str {
        self.method
    }

    /// A `TypeError` prefixed with the method name.
    pub(crate) fn error(&self, message: impl std::fmt::Display) -> ErrorObject {
        ErrorObject::type_error(format!("{}: {message}", self.method))
    }

    /// The value of `key`, with `null` treated as absent.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn wrong_type(&self, key: &str, want: &str, got: &Value) -> ErrorObject {
        self.error(format!("param \"{key}\" must be {want}, got {}", kind(got)))
    }

    fn missing(&self, key: &str, want: &str) -> ErrorObject {
        self.error(format!("missing {want} param \"{key}\""))
    }

    pub(crate) fn str(&self, key: &str) -> Result<&str, ErrorObject> {
        self.opt_str(key)?
            .ok_or_else(|| self.missing(key, "string"))
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&str>, ErrorObject> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong_type(key, "a string", other)),
        }
    }

    pub(crate) fn bool_or(&self, key: &str, default: bool) -> Result<bool, ErrorObject> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.wrong_type(key, "a boolean", other)),
        }
    }

    /// An integer that may arrive as `3` or `3.0` (JS numbers are doubles).
    pub(crate) fn opt_i64(&self, key: &str) -> Result<Option<i64>, ErrorObject> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => as_integer(v)
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "an integer", v)),
        }
    }

    pub(crate) fn opt_u64(&self, key: &str) -> Result<Option<u64>, ErrorObject> {
        match self.opt_i64(key)? {
            None => Ok(None),
            Some(n) => u64::try_from(n)
                .map(Some)
                .map_err(|_| self.error(format!("param \"{key}\" must not be negative, got {n}"))),
        }
    }

    pub(crate) fn u64(&self, key: &str) -> Result<u64, ErrorObject> {
        self.opt_u64(key)?
            .ok_or_else(|| self.missing(key, "integer"))
    }

    pub(crate) fn opt_u32(&self, key: &str) -> Result<Option<u32>, ErrorObject> {
        match self.opt_u64(key)? {
            None => Ok(None),
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| self.error(format!("param \"{key}\" is out of range: {n}"))),
        }
    }

    pub(crate) fn u32(&self, key: &str) -> Result<u32, ErrorObject> {
        self.opt_u32(key)?
            .ok_or_else(|| self.missing(key, "integer"))
    }

    /// A number that may be fractional or infinite-ish (walk's `maxDepth`).
    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>, ErrorObject> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(self.wrong_type(key, "a number", other)),
        }
    }

    pub(crate) fn opt_str_array(&self, key: &str) -> Result<Option<Vec<String>>, ErrorObject> {
        let items = match self.get(key) {
            None => return Ok(None),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(self.wrong_type(key, "an array of strings", other)),
        };
        items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(self.wrong_type(key, "an array of strings", other)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// Top-level keys plus the keys of a nested `options` object; a top-level
/// key wins over the same key in `options` unless it is `null`.
fn flatten(method: &str, top: &Map<String, Value>) -> Result<Map<String, Value>, ErrorObject> {
    let mut map: Map<String, Value> = top
        .iter()
        .filter(|(k, _)| k.as_str() != "options")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    match top.get("options") {
        None | Some(Value::Null) => {}
        Some(Value::Object(options)) => {
            for (k, v) in options {
                let keep_top = map.get(k).is_some_and(|t| !t.is_null());
                if !keep_top {
                    map.insert(k.clone(), v.clone());
                }
            }
        }
        Some(other) => {
            return Err(ErrorObject::type_error(format!(
                "{method}: param \"options\" must be an object, got {}",
                kind(other)
            )))
        }
    }
    Ok(map)
}

/// An integral JSON number as i64: accepts `5`, `5.0`; rejects `5.5`, strings.
pub(crate) fn as_integer(v: &Value) -> Option<i64> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    // -2^63..2^63 keeps the cast exact (2^63 itself is past i64::MAX).
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    let in_range = (-LIMIT..LIMIT).contains(&f);
    (f.fract() == 0.0 && in_range).then_some(f as i64)
}

/// The JSON type name of a value, for error messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
