//! Image names. They become directory and lock file names, so they must
//! never contain `/`, start with `.` (our private entries) or be empty.

use crate::ImageError;

const MAX_LEN: usize = 64;

/// Checks `name` against `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn validate_name(name: &str) -> Result<(), ImageError> {
    let fail = |reason| {
        Err(ImageError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return fail("empty");
    };
    if name.len() > MAX_LEN {
        return fail("longer than 64 characters");
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return fail("must start with a lowercase letter or digit");
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
    {
        return fail("only lowercase letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for name in ["default", "a", "0", "py3.11", "my_image-2", &"a".repeat(64)] {
            assert!(validate_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_invalid_names() {
        for name in [
            "",
            ".hidden",
            "-x",
            "_x",
            "Default",
            "a/b",
            "..",
            "a b",
            "é",
            "x\n",
            &"a".repeat(65),
        ] {
            let err = validate_name(name).unwrap_err();
            assert!(matches!(err, ImageError::InvalidName { .. }), "{name:?}");
        }
    }
}
