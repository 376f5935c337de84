//! JS regular expressions as they arrive on the wire
//! ([`JsRegex`]: `{source, flags}`), compiled with `fancy-regex`.
//!
//! Why fancy-regex rather than plain `regex`: JS patterns may use
//! look-around and back-references, and std/path's glob translation emits a
//! negative look-ahead for `!(...)`; `regex` supports neither. fancy-regex
//! hands every pattern without those features to regex-automata whole, so
//! ordinary patterns keep linear-time matching; the rest run on its
//! backtracker, which has a step limit instead of running away.

use agent_proto::calls::JsRegex;
use agent_proto::ErrorObject;
use fancy_regex::Regex;

/// Compiles one wire regex for `method`'s param `key`.
pub(crate) fn compile(method: &str, key: &str, re: &JsRegex) -> Result<Regex, ErrorObject> {
    let (source, flags) = (&re.source, &re.flags);
    let inline = inline_flags(flags).map_err(|f| {
        ErrorObject::type_error(format!(
            "{method}: unsupported regex flag '{f}' in \"{key}\""
        ))
    })?;
    Regex::new(&format!("{inline}{source}")).map_err(|e| {
        ErrorObject::type_error(format!(
            "{method}: invalid regex /{source}/{flags} in \"{key}\": {e}"
        ))
    })
}

/// Compiles the wire regexes of param `key`.
pub(crate) fn compile_all(
    method: &str,
    key: &str,
    regexes: &[JsRegex],
) -> Result<Vec<Regex>, ErrorObject> {
    regexes.iter().map(|re| compile(method, key, re)).collect()
}

/// JS flags `i`, `m`, `s` become inline flags; `g`, `u`, `y`, `d`, `v` do not
/// change whether a pattern matches, so they are dropped.
fn inline_flags(flags: &str) -> Result<String, char> {
    let mut inline = String::new();
    for f in flags.chars() {
        match f {
            'i' | 'm' | 's' if !inline.contains(f) => inline.push(f),
            'i' | 'm' | 's' | 'g' | 'u' | 'y' | 'd' | 'v' => {}
            other => return Err(other),
        }
    }
    Ok(if inline.is_empty() {
        inline
    } else {
        format!("(?{inline})")
    })
}

/// `regex.test(text)`; a pattern that exhausts the backtracking limit is an
/// error rather than a silent "no match".
pub(crate) fn is_match(re: &Regex, text: &str) -> Result<bool, ErrorObject> {
    re.is_match(text).map_err(|e| {
        ErrorObject::new(
            "Error",
            format!("regex /{}/ failed on '{text}': {e}", re.as_str()),
            None,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_proto::calls::{FromParams, WalkParams};
    use agent_proto::Method;
    use serde_json::{json, Value};

    /// `v` as a walk's `match` entry.
    fn compile_wire(key: &str, v: &Value) -> Result<Regex, ErrorObject> {
        let p = WalkParams::decode(Method::Walk, &json!({ "path": ".", key: [v] }))?;
        let res = if key == "match" { p.r#match } else { p.skip };
        compile("walk", key, &res[0])
    }

    fn matches(v: Value, text: &str) -> bool {
        let re = compile_wire("match", &v).expect("compiles");
        is_match(&re, text).expect("matches")
    }

    #[test]
    fn translates_js_flags() {
        assert!(matches(
            json!({"source": "\\.RS$", "flags": "i"}),
            "src/a.rs"
        ));
        assert!(!matches(
            json!({"source": "\\.RS$", "flags": ""}),
            "src/a.rs"
        ));
        assert!(matches(json!({"source": "^b$", "flags": "gm"}), "a\nb"));
        assert!(matches(json!({"source": "a.b", "flags": "s"}), "a\nb"));
        assert!(matches(
            json!({"source": "node_modules\\/(?!keep)"}),
            "x/node_modules/y"
        ));
        assert!(!matches(
            json!({"source": "node_modules\\/(?!keep)"}),
            "x/node_modules/keep"
        ));
        assert!(matches(json!("plain"), "a plain string"));
    }

    #[test]
    fn rejects_bad_regexes_with_type_error() {
        for bad in [
            json!({"source": "("}),
            json!({"source": "a", "flags": "q"}),
            json!(5),
            json!({}),
        ] {
            let e = compile_wire("skip", &bad).expect_err("must fail");
            assert_eq!(e.constructor_name, "TypeError", "{bad}");
            assert!(e.message.starts_with("walk: "), "{}", e.message);
        }
    }
}
