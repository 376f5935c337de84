//! The reader the [`super::FromParams`] impls decode with: typed access
//! to a call's JSON params. A missing or wrongly typed value is
//! a zod-shaped validation error naming the param's path (the daemon answers
//! it as JSON-RPC `-32602`, which the Python SDK raises as
//! `RpcValidationError`); a value of the right type but out of range is a
//! `TypeError` naming the method.
//!
//! JS sends options nested under `options`, and the PY SDK sends `null` for
//! options it was not given, so [`Params`] flattens `options` into the top
//! level and treats `null` like an absent key. The process methods read
//! their params as they always did, top level only
//! ([`Params::top_level`]).

use crate::ErrorObject;
use serde_json::{Map, Value};
use std::collections::HashSet;

pub struct Params<'a> {
    method: &'a str,
    map: Map<String, Value>,
    /// Keys taken from the nested `options` object, so an issue's path
    /// says where the client put the value.
    nested: HashSet<String>,
}

impl<'a> Params<'a> {
    /// `params` with a nested `options` object flattened into the top
    /// level (the fs methods).
    pub fn new(method: &'a str, params: &Value) -> Result<Self, ErrorObject> {
        let (map, nested) = match params {
            Value::Null => (Map::new(), HashSet::new()),
            Value::Object(top) => flatten(top)?,
            other => return Err(ErrorObject::invalid_type(&[], "object", Some(other))),
        };
        Ok(Self {
            method,
            map,
            nested,
        })
    }

    /// `params` as they are: an `options` key is just another param.
    pub fn top_level(method: &'a str, params: &Value) -> Result<Self, ErrorObject> {
        let map = match params {
            Value::Null => Map::new(),
            Value::Object(top) => top.clone(),
            other => return Err(ErrorObject::invalid_type(&[], "object", Some(other))),
        };
        Ok(Self {
            method,
            map,
            nested: HashSet::new(),
        })
    }

    /// The value of `key` as sent, `null` included.
    pub fn raw(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    pub fn method(&self) -> &str {
        self.method
    }

    /// A `TypeError` prefixed with the method name.
    pub fn error(&self, message: impl std::fmt::Display) -> ErrorObject {
        ErrorObject::type_error(format!("{}: {message}", self.method))
    }

    /// The value of `key`, with `null` treated as absent.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// A validation error for `key`; `expected` is zod's type name.
    fn invalid(&self, key: &str, expected: &str, got: Option<&Value>) -> ErrorObject {
        if self.nested.contains(key) {
            ErrorObject::invalid_type(&["options", key], expected, got)
        } else {
            ErrorObject::invalid_type(&[key], expected, got)
        }
    }

    pub fn wrong_type(&self, key: &str, expected: &str, got: &Value) -> ErrorObject {
        self.invalid(key, expected, Some(got))
    }

    /// Absent, or `null` (which zod reports as received).
    pub fn missing(&self, key: &str, expected: &str) -> ErrorObject {
        self.invalid(key, expected, self.map.get(key))
    }

    pub fn str(&self, key: &str) -> Result<&str, ErrorObject> {
        self.opt_str(key)?
            .ok_or_else(|| self.missing(key, "string"))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, ErrorObject> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong_type(key, "string", other)),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, ErrorObject> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.wrong_type(key, "boolean", other)),
        }
    }

    /// An integer that may arrive as `3` or `3.0` (JS numbers are doubles).
    pub fn opt_i64(&self, key: &str) -> Result<Option<i64>, ErrorObject> {
        match self.get(key) {
            None => Ok(None),
            // zod 4 calls a fractional number an `int` it expected.
            Some(v) => as_integer(v).map(Some).ok_or_else(|| {
                let expected = if v.is_number() { "int" } else { "number" };
                self.wrong_type(key, expected, v)
            }),
        }
    }

    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, ErrorObject> {
        match self.opt_i64(key)? {
            None => Ok(None),
            Some(n) => u64::try_from(n)
                .map(Some)
                .map_err(|_| self.error(format!("param \"{key}\" must not be negative, got {n}"))),
        }
    }

    pub fn u64(&self, key: &str) -> Result<u64, ErrorObject> {
        self.opt_u64(key)?
            .ok_or_else(|| self.missing(key, "number"))
    }

    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>, ErrorObject> {
        match self.opt_u64(key)? {
            None => Ok(None),
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| self.error(format!("param \"{key}\" is out of range: {n}"))),
        }
    }

    pub fn u32(&self, key: &str) -> Result<u32, ErrorObject> {
        self.opt_u32(key)?
            .ok_or_else(|| self.missing(key, "number"))
    }

    /// A number that may be fractional or infinite-ish (walk's `maxDepth`).
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, ErrorObject> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(self.wrong_type(key, "number", other)),
        }
    }

    pub fn opt_str_array(&self, key: &str) -> Result<Option<Vec<String>>, ErrorObject> {
        let items = match self.get(key) {
            None => return Ok(None),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(self.wrong_type(key, "array", other)),
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                // zod's path would hold the index as a number, which the
                // Python SDK cannot join; a string index reads the same.
                other => {
                    let index = i.to_string();
                    let path = if self.nested.contains(key) {
                        vec!["options", key, &index]
                    } else {
                        vec![key, &index]
                    };
                    Err(ErrorObject::invalid_type(&path, "string", Some(other)))
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// Top-level keys plus the keys of a nested `options` object; a top-level
/// key wins over the same key in `options` unless it is `null`. Also
/// returns the keys taken from `options`.
fn flatten(top: &Map<String, Value>) -> Result<(Map<String, Value>, HashSet<String>), ErrorObject> {
    let mut map: Map<String, Value> = top
        .iter()
        .filter(|(k, _)| k.as_str() != "options")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut nested = HashSet::new();
    match top.get("options") {
        None | Some(Value::Null) => {}
        Some(Value::Object(options)) => {
            for (k, v) in options {
                let keep_top = map.get(k).is_some_and(|t| !t.is_null());
                if !keep_top {
                    map.insert(k.clone(), v.clone());
                    nested.insert(k.clone());
                }
            }
        }
        Some(other) => {
            return Err(ErrorObject::invalid_type(
                &["options"],
                "object",
                Some(other),
            ))
        }
    }
    Ok((map, nested))
}

/// An integral JSON number as i64: accepts `5`, `5.0`; rejects `5.5`, strings.
pub fn as_integer(v: &Value) -> Option<i64> {
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

/// The JSON type name of a value, for error messages (zod's names).
pub fn kind(v: &Value) -> &'static str {
    crate::zod_type(v)
}
