//! Per-sandbox fake addresses: the gateway's resolver answers every
//! allowed name with an address from 198.18.0.0/15 (RFC 2544 benchmarking
//! space, never routed on the Internet), and maps connections to that
//! address back to the name. The sandbox never learns a real address, so
//! every connection goes through the name-based policy.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The whole fake range, 198.18.0.0/15. The gateway claims all of it, even
/// the addresses it never hands out, so none of it is ever dialled for real.
pub const FAKE_NETWORK: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
pub const FAKE_PREFIX_LEN: u8 = 15;

/// The first address handed out. The ones below are left for the gateway
/// itself (its resolver and router addresses may live there).
pub const FIRST_FAKE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
/// The last address handed out (the /15's broadcast address is skipped).
pub const LAST_FAKE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 254);

/// How many names can hold an address at once: 131,061.
pub const POOL_SIZE: usize = (u32_of(LAST_FAKE_IP) - u32_of(FIRST_FAKE_IP) + 1) as usize;

const fn u32_of(ip: Ipv4Addr) -> u32 {
    let o = ip.octets();
    u32::from_be_bytes(o)
}

/// Assigns fake addresses to names, one sandbox's worth.
///
/// Addresses are handed out in order through the range, wrapping around.
/// When `limit` names hold an address, the next new name takes over the
/// address of the least recently *assigned* one (first in, first out; a
/// name being looked up again does not refresh it). Handing addresses out
/// in order means a recycled address is the one that has been out the
/// longest, so a stale connection or cache entry in the sandbox is least
/// likely to land on the new name; and every name keeps its address for
/// at least `limit` further new names.
///
/// Memory is bounded by `limit` entries of one shared name string each
/// (at most 253 bytes) plus map overhead; a full default pool is on the
/// order of tens of MiB, so the daemon may pick a smaller `limit`.
#[derive(Debug)]
pub struct FakeIpPool {
    /// Name to offset from [`FIRST_FAKE_IP`].
    by_name: HashMap<Arc<str>, u32>,
    /// Live names in assignment order; the front holds offset `front`, and
    /// each next one the following offset (modulo the pool size).
    names: VecDeque<Arc<str>>,
    front: u32,
    limit: usize,
}

impl Default for FakeIpPool {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeIpPool {
    /// A pool using the whole range ([`POOL_SIZE`] names at once).
    pub fn new() -> Self {
        Self::with_limit(POOL_SIZE)
    }

    /// A pool holding at most `limit` names at once (clamped to
    /// 1..=[`POOL_SIZE`]); addresses still cycle through the whole range.
    pub fn with_limit(limit: usize) -> Self {
        FakeIpPool {
            by_name: HashMap::new(),
            names: VecDeque::new(),
            front: 0,
            limit: limit.clamp(1, POOL_SIZE),
        }
    }

    /// Whether `ip` is in the fake range, assigned or not.
    pub const fn contains(ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - FAKE_PREFIX_LEN as u32);
        u32_of(ip) & mask == u32_of(FAKE_NETWORK)
    }

    /// The address for `name`, assigning one if it has none. The name is
    /// compared lower-case and without a trailing dot, so spellings of the
    /// same name share an address.
    pub fn ip_for(&mut self, name: &str) -> Ipv4Addr {
        let name = normalize(name);
        if let Some(&offset) = self.by_name.get(name.as_str()) {
            return ip_of(offset);
        }
        if self.names.len() >= self.limit {
            self.evict_oldest();
        }
        let offset = self.next_offset();
        let name: Arc<str> = name.into();
        self.by_name.insert(Arc::clone(&name), offset);
        self.names.push_back(name);
        ip_of(offset)
    }

    /// The name `ip` was assigned to, if it is a live fake address.
    pub fn name_for(&self, ip: Ipv4Addr) -> Option<&str> {
        let value = u32_of(ip);
        if !(u32_of(FIRST_FAKE_IP)..=u32_of(LAST_FAKE_IP)).contains(&value) {
            return None;
        }
        let offset = value - u32_of(FIRST_FAKE_IP);
        // Position in the queue: how far past the front this offset is.
        let index = (offset + POOL_SIZE as u32 - self.front) % POOL_SIZE as u32;
        self.names.get(index as usize).map(|name| &**name)
    }

    /// How many names hold an address.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The offset after the newest live one (or the front, when empty).
    fn next_offset(&self) -> u32 {
        // `names.len() < POOL_SIZE` here, so this never lands on a live one.
        (self.front + self.names.len() as u32) % POOL_SIZE as u32
    }

    fn evict_oldest(&mut self) {
        if let Some(old) = self.names.pop_front() {
            self.by_name.remove(&old);
            self.front = (self.front + 1) % POOL_SIZE as u32;
        }
    }
}

fn ip_of(offset: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32_of(FIRST_FAKE_IP) + offset)
}

fn normalize(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_size_is_the_range_less_reserved() {
        assert_eq!(POOL_SIZE, 131_061);
        assert!(FakeIpPool::contains(FIRST_FAKE_IP));
        assert!(FakeIpPool::contains(LAST_FAKE_IP));
    }

    #[test]
    fn contains_is_the_whole_slash_15() {
        assert!(FakeIpPool::contains(Ipv4Addr::new(198, 18, 0, 0)));
        assert!(FakeIpPool::contains(Ipv4Addr::new(198, 18, 0, 1)));
        assert!(FakeIpPool::contains(Ipv4Addr::new(198, 19, 255, 255)));
        assert!(!FakeIpPool::contains(Ipv4Addr::new(198, 17, 255, 255)));
        assert!(!FakeIpPool::contains(Ipv4Addr::new(198, 20, 0, 0)));
        assert!(!FakeIpPool::contains(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn stable_and_normalised() {
        let mut pool = FakeIpPool::new();
        let a = pool.ip_for("example.com");
        assert_eq!(a, FIRST_FAKE_IP);
        assert_eq!(pool.ip_for("Example.COM."), a);
        assert_eq!(pool.ip_for("example.com"), a);
        let b = pool.ip_for("other.org");
        assert_ne!(a, b);
        assert_eq!(b, Ipv4Addr::new(198, 18, 0, 11));
        assert_eq!(pool.name_for(a), Some("example.com"));
        assert_eq!(pool.name_for(b), Some("other.org"));
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn unknown_addresses_have_no_name() {
        let mut pool = FakeIpPool::new();
        assert!(pool.is_empty());
        assert_eq!(pool.name_for(FIRST_FAKE_IP), None);
        pool.ip_for("example.com");
        assert_eq!(pool.name_for(Ipv4Addr::new(198, 18, 0, 11)), None);
        assert_eq!(pool.name_for(Ipv4Addr::new(198, 18, 0, 9)), None);
        assert_eq!(pool.name_for(Ipv4Addr::new(198, 18, 0, 0)), None);
        assert_eq!(pool.name_for(Ipv4Addr::new(198, 19, 255, 255)), None);
        assert_eq!(pool.name_for(LAST_FAKE_IP), None);
        assert_eq!(pool.name_for(Ipv4Addr::new(8, 8, 8, 8)), None);
    }

    #[test]
    fn recycles_least_recently_assigned() {
        let mut pool = FakeIpPool::with_limit(3);
        let a = pool.ip_for("a");
        let b = pool.ip_for("b");
        let c = pool.ip_for("c");
        // Asking again does not refresh "a".
        assert_eq!(pool.ip_for("a"), a);
        let d = pool.ip_for("d");
        assert_eq!(pool.len(), 3);
        assert_eq!(pool.name_for(a), None);
        assert_eq!(pool.name_for(b), Some("b"));
        assert_eq!(pool.name_for(c), Some("c"));
        assert_eq!(pool.name_for(d), Some("d"));
        // Addresses keep moving forward rather than reusing "a"'s at once.
        assert_eq!(d, Ipv4Addr::new(198, 18, 0, 13));
        // "a" comes back with a new address, evicting "b".
        let a2 = pool.ip_for("a");
        assert_ne!(a2, a);
        assert_eq!(pool.name_for(b), None);
        assert_eq!(pool.name_for(a2), Some("a"));
    }

    #[test]
    fn limit_is_clamped() {
        let mut pool = FakeIpPool::with_limit(0);
        let a = pool.ip_for("a");
        let b = pool.ip_for("b");
        assert_eq!(pool.name_for(a), None);
        assert_eq!(pool.name_for(b), Some("b"));
        assert_eq!(FakeIpPool::with_limit(usize::MAX).limit, POOL_SIZE);
    }

    #[test]
    fn full_range_wraps_around() {
        let mut pool = FakeIpPool::new();
        let mut last = FIRST_FAKE_IP;
        for i in 0..POOL_SIZE {
            last = pool.ip_for(&format!("n{i}"));
        }
        assert_eq!(last, LAST_FAKE_IP);
        assert_eq!(pool.len(), POOL_SIZE);
        assert_eq!(pool.name_for(FIRST_FAKE_IP), Some("n0"));
        assert_eq!(
            pool.name_for(LAST_FAKE_IP),
            Some(&*format!("n{}", POOL_SIZE - 1))
        );
        // Exhausted: the oldest ("n0") gives up the first address.
        assert_eq!(pool.ip_for("new"), FIRST_FAKE_IP);
        assert_eq!(pool.name_for(FIRST_FAKE_IP), Some("new"));
        assert_eq!(pool.ip_for("n1"), Ipv4Addr::new(198, 18, 0, 11));
        // "n0" was evicted, so it comes back on the next oldest's ("n1")
        // address, and "n1" is gone.
        assert_eq!(pool.ip_for("n0"), Ipv4Addr::new(198, 18, 0, 11));
        assert_eq!(pool.name_for(Ipv4Addr::new(198, 18, 0, 11)), Some("n0"));
        assert_eq!(pool.name_for(Ipv4Addr::new(198, 18, 0, 12)), Some("n2"));
        assert_eq!(pool.len(), POOL_SIZE);
        assert_eq!(pool.by_name.len(), POOL_SIZE);
    }

    #[test]
    fn wraps_with_a_small_limit() {
        let mut pool = FakeIpPool::with_limit(2);
        let mut previous: Option<(String, Ipv4Addr)> = None;
        // Twice around the range: the mapping stays consistent throughout.
        for i in 0..(2 * POOL_SIZE + 5) {
            let name = format!("n{i}");
            let ip = pool.ip_for(&name);
            assert_eq!(pool.name_for(ip), Some(name.as_str()));
            if let Some((prev_name, prev_ip)) = &previous {
                assert_eq!(pool.name_for(*prev_ip), Some(prev_name.as_str()));
            }
            previous = Some((name, ip));
        }
        assert_eq!(pool.len(), 2);
        assert_eq!(pool.by_name.len(), 2);
    }
}
