//! Random identifiers and secrets from the kernel CSPRNG.
//!
//! Read straight from /dev/urandom (Linux is the only target) rather than
//! pulling in a crate for a dozen lines. Both alphabets are sampled without
//! modulo bias: base32 takes 5 bits of a byte; base62 rejects bytes >= 248.

use std::fs::File;
use std::io::Read;

use crate::StoreError;

const BASE32_LOWER: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const BASE62: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn fill(buf: &mut [u8]) -> Result<(), StoreError> {
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(StoreError::Random)
}

/// `len` characters of lowercase RFC 4648 base32 (5 bits each).
pub(crate) fn base32_lower(len: usize) -> Result<String, StoreError> {
    let mut bytes = vec![0u8; len];
    fill(&mut bytes)?;
    Ok(bytes
        .iter()
        .map(|b| BASE32_LOWER[(b & 31) as usize] as char)
        .collect())
}

/// `len` characters of [A-Za-z0-9] (~5.95 bits each).
pub(crate) fn alphanumeric(len: usize) -> Result<String, StoreError> {
    let mut out = String::with_capacity(len);
    let mut bytes = [0u8; 64];
    while out.len() < len {
        fill(&mut bytes)?;
        for &b in &bytes {
            // 248 = 4 * 62: accepting only below it keeps every symbol equally likely.
            if b < 248 && out.len() < len {
                out.push(BASE62[(b % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}
