//! Usernames → sandboxes. A username is the only credential (as on the
//! hosted service), so it is long and random (130 bits), lives only in
//! memory, and is forgotten the moment its sandbox ends.

use std::collections::HashMap;
use std::sync::Mutex;

/// Base32 without look-alikes (the sandbox ids' alphabet): 5 bits a
/// character, and 32 divides 256, so every character is equally likely.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// 26 × 5 = 130 bits.
const RANDOM_CHARS: usize = 26;

#[derive(Default)]
pub struct Users {
    by_name: Mutex<HashMap<String, String>>,
}

impl Users {
    /// A new username for `sandbox_id`.
    pub fn mint(&self, sandbox_id: &str) -> Result<String, ring::error::Unspecified> {
        let mut bytes = [0u8; RANDOM_CHARS];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)?;
        let name: String = bytes
            .iter()
            .map(|b| ALPHABET[usize::from(b & 31)] as char)
            .collect();
        self.by_name
            .lock()
            .expect("users lock")
            .insert(name.clone(), sandbox_id.to_string());
        Ok(name)
    }

    /// The sandbox `name` logs into, if it is a live username.
    pub fn sandbox_of(&self, name: &str) -> Option<String> {
        self.by_name.lock().expect("users lock").get(name).cloned()
    }

    /// How many usernames `sandbox_id` has.
    pub fn count_for(&self, sandbox_id: &str) -> usize {
        self.by_name
            .lock()
            .expect("users lock")
            .values()
            .filter(|id| *id == sandbox_id)
            .count()
    }

    /// Forgets every username of `sandbox_id`.
    pub fn forget_sandbox(&self, sandbox_id: &str) {
        self.by_name
            .lock()
            .expect("users lock")
            .retain(|_, id| id != sandbox_id);
    }

    pub fn len(&self) -> usize {
        self.by_name.lock().expect("users lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_names_map_to_their_sandbox_until_forgotten() {
        let users = Users::default();
        let a = users.mint("sbx_a").unwrap();
        let a2 = users.mint("sbx_a").unwrap();
        let b = users.mint("sbx_b").unwrap();
        assert_ne!(a, a2);
        assert_eq!(a.len(), RANDOM_CHARS);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)));
        assert_eq!(users.sandbox_of(&a).as_deref(), Some("sbx_a"));
        assert_eq!(users.sandbox_of(&b).as_deref(), Some("sbx_b"));
        assert_eq!(users.sandbox_of("root"), None);
        assert_eq!(users.count_for("sbx_a"), 2);
        users.forget_sandbox("sbx_a");
        assert_eq!(users.sandbox_of(&a), None);
        assert_eq!(users.sandbox_of(&a2), None);
        assert_eq!(users.sandbox_of(&b).as_deref(), Some("sbx_b"));
        assert_eq!(users.len(), 1);
    }
}
