//! Pure input checks for the REST layer: capacities and slugs.

use serde_json::Value;

const UNITS_HELP: &str = "GB, MB, kB (or KB), GiB, MiB, KiB, B, or none for bytes";

/// A volume capacity in bytes, from a JSON integer number of bytes or a
/// string such as `"10GB"`, `"1.5GiB"`, `"512 MiB"` or `"1000000"`.
///
/// Decimal units are powers of ten (`"1GB"` = 1 000 000 000 bytes), binary
/// units powers of two. `kB` and `KB` are both 1000. A fractional amount is
/// rounded down to whole bytes. Zero, negative and non-finite values and
/// unknown units are refused with a message that says what is accepted.
pub fn parse_capacity(value: &Value) -> Result<u64, String> {
    match value {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                return positive(u as u128);
            }
            if n.as_i64().is_some() {
                return Err(format!(
                    "capacity must be a positive number of bytes, not {n}"
                ));
            }
            let f = n.as_f64().unwrap_or(f64::NAN);
            if !f.is_finite() {
                return Err("capacity must be a finite number of bytes".into());
            }
            if f <= 0.0 {
                return Err(format!(
                    "capacity must be a positive number of bytes, not {n}"
                ));
            }
            if f.fract() != 0.0 || f > u64::MAX as f64 {
                return Err(format!(
                    "capacity as a JSON number must be a whole number of bytes, not {n}; \
                     use a string such as \"1.5GB\" for fractions of a unit"
                ));
            }
            positive(f as u128)
        }
        Value::String(s) => parse_capacity_str(s),
        other => Err(format!(
            "capacity must be a number of bytes or a string such as \"10GB\", not {}",
            json_type(other)
        )),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn positive(bytes: u128) -> Result<u64, String> {
    if bytes == 0 {
        return Err("capacity must be more than 0 bytes".into());
    }
    u64::try_from(bytes).map_err(|_| "capacity is too large".to_string())
}

fn parse_capacity_str(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("capacity must be positive, not {s:?}"));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim_start());
    let bad_number = || {
        format!(
            "capacity {s:?} is not a number with an optional unit; \
             write e.g. \"10GB\", \"1.5GiB\" or \"1048576\" (units: {UNITS_HELP})"
        )
    };
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || frac_part.contains('.')
        || (num.contains('.') && frac_part.is_empty())
    {
        return Err(bad_number());
    }
    let multiplier: u128 = match unit {
        "" | "B" => 1,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "capacity {s:?} has an unknown unit {unit:?}; use {UNITS_HELP}"
            ))
        }
    };
    // Exact integer arithmetic: "1.1GB" must be 1 100 000 000, which f64 would
    // not promise. 38 digits fit in u128; more is too large anyway.
    if int_part.len() + frac_part.len() > 30 {
        return Err("capacity is too large".into());
    }
    let digits = |d: &str| -> u128 { d.bytes().fold(0, |acc, b| acc * 10 + u128::from(b - b'0')) };
    let scale = 10u128.pow(frac_part.len() as u32);
    let mantissa = digits(int_part) * scale + digits(frac_part);
    let bytes = mantissa
        .checked_mul(multiplier)
        .ok_or_else(|| "capacity is too large".to_string())?
        / scale;
    positive(bytes)
}

/// A slug (a volume's or snapshot's user-chosen name): 2 to 32 characters of
/// lowercase letters, digits and '-', not starting or ending with '-', and
/// without "--" as the third and fourth characters (the `xn--` form that DNS
/// reserves for punycode).
pub fn validate_slug(slug: &str) -> Result<(), String> {
    const RULE: &str =
        "a slug is 2 to 32 characters of lowercase letters a-z, digits 0-9 and '-', \
         not starting or ending with '-', and not with \"--\" as its 3rd and 4th characters";
    let len = slug.chars().count();
    if !(2..=32).contains(&len) {
        return Err(format!("{slug:?} is {len} characters long; {RULE}"));
    }
    if let Some(c) = slug
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!("{slug:?} contains {c:?}; {RULE}"));
    }
    if slug.starts_with('-') || slug.ends_with('-') {
        return Err(format!("{slug:?} starts or ends with '-'; {RULE}"));
    }
    if slug.get(2..4) == Some("--") {
        return Err(format!(
            "{slug:?} has \"--\" as its 3rd and 4th characters (reserved for punycode such as \"xn--\"); {RULE}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn capacity_numbers() {
        assert_eq!(parse_capacity(&json!(1)), Ok(1));
        assert_eq!(parse_capacity(&json!(1073741824u64)), Ok(1 << 30));
        assert_eq!(parse_capacity(&json!(1e9)), Ok(1_000_000_000));
        assert!(parse_capacity(&json!(0))
            .unwrap_err()
            .contains("more than 0"));
        assert!(parse_capacity(&json!(-5)).unwrap_err().contains("positive"));
        assert!(parse_capacity(&json!(-5.5))
            .unwrap_err()
            .contains("positive"));
        assert!(parse_capacity(&json!(1.5))
            .unwrap_err()
            .contains("whole number"));
        assert!(parse_capacity(&json!(1e300)).is_err());
        // serde_json turns non-finite floats into null.
        assert!(parse_capacity(&json!(f64::NAN))
            .unwrap_err()
            .contains("null"));
        assert!(parse_capacity(&json!(true))
            .unwrap_err()
            .contains("a boolean"));
        assert!(parse_capacity(&json!([1])).is_err());
    }

    #[test]
    fn capacity_strings() {
        let ok = |s: &str, want: u64| assert_eq!(parse_capacity(&json!(s)), Ok(want), "{s}");
        ok("1GB", 1_000_000_000);
        ok("1.5GB", 1_500_000_000);
        ok("1.1GB", 1_100_000_000);
        ok("10MB", 10_000_000);
        ok("3kB", 3_000);
        ok("3KB", 3_000);
        ok("1GiB", 1 << 30);
        ok("1.5GiB", 3 << 29);
        ok("64MiB", 64 << 20);
        ok("4KiB", 4096);
        ok("512B", 512);
        ok("512", 512);
        ok(" 2 GB ", 2_000_000_000);
        ok("0.5KiB", 512);
        ok(".5KB", 500);
        ok("1.0001KB", 1000); // rounded down to whole bytes
    }

    #[test]
    fn capacity_string_errors() {
        let err = |s: &str| parse_capacity(&json!(s)).unwrap_err();
        assert!(err("-1GB").contains("positive"));
        assert!(err("0GB").contains("more than 0"));
        assert!(err("0").contains("more than 0"));
        assert!(err("0.1B").contains("more than 0"));
        assert!(err("1TB").contains("unknown unit \"TB\""));
        assert!(err("1TB").contains("GiB"), "lists what is allowed");
        assert!(err("1gb").contains("unknown unit"));
        assert!(err("1 G").contains("unknown unit"));
        assert!(err("").contains("not a number"));
        assert!(err("GB").contains("not a number"));
        assert!(err("1.2.3GB").contains("not a number"));
        assert!(err("1.GB").contains("not a number"));
        assert!(err("inf").contains("not a number"));
        assert!(err("NaN").contains("not a number"));
        assert!(err("1e9").contains("unknown unit"));
        assert!(err("99999999999999999999999GiB").contains("too large"));
        assert!(err("+1GB").contains("not a number"));
    }

    #[test]
    fn slugs() {
        for ok in ["ab", "my-volume", "a1", "0-9", &"a".repeat(32), "abc--d"] {
            assert_eq!(validate_slug(ok), Ok(()), "{ok}");
        }
        let err = |s: &str| validate_slug(s).unwrap_err();
        assert!(err("a").contains("1 characters"));
        assert!(err(&"a".repeat(33)).contains("33 characters"));
        assert!(err("").contains("0 characters"));
        assert!(err("My-vol").contains("'M'"));
        assert!(err("a_b").contains("'_'"));
        assert!(err("ümlaut").contains("'ü'"));
        assert!(err("-ab").contains("starts or ends"));
        assert!(err("ab-").contains("starts or ends"));
        assert!(err("xn--abc").contains("punycode"));
        assert!(err("ab--").contains("starts or ends"));
        assert!(err("ab--c").contains("punycode"));
        assert!(
            err("a b").contains("lowercase letters"),
            "says what is allowed"
        );
    }
}
