//! Sandbox ids in the shape the Deno SDKs check:
//! `sbx_<3 lowercase letters>_<20 of [0-9a-hjkmnp-z]>` (JS validates it and
//! builds the connect URL from the region part).

const ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";

pub fn new_sandbox_id(region: &str) -> String {
    let region = if region.len() == 3 && region.bytes().all(|b| b.is_ascii_lowercase()) {
        region
    } else {
        "ord"
    };
    let mut bytes = [0u8; 20];
    // SAFETY: getrandom fills the buffer it is given.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    assert_eq!(n, 20, "getrandom failed");
    let tail: String = bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect();
    format!("sbx_{region}_{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_the_js_sdk_pattern() {
        for _ in 0..200 {
            let id = new_sandbox_id("ord");
            assert_eq!(id.len(), 28, "{id}");
            assert!(id.starts_with("sbx_ord_"));
            assert!(id[8..].bytes().all(|b| ALPHABET.contains(&b)), "{id}");
            assert!(!id[8..].contains(['i', 'l', 'o', 'u']));
        }
        assert!(new_sandbox_id("us-east-1").starts_with("sbx_ord_"));
        assert!(new_sandbox_id("ams").starts_with("sbx_ams_"));
    }
}
