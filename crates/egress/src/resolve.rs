//! Real name resolution and the anti-SSRF check, done by the daemon when a
//! sandbox connects (never when it merely asks DNS: the sandbox only ever
//! sees fake addresses, so rebinding its answers gains it nothing).
//!
//! Who decides what a sandbox may reach inside the host's networks is the
//! operator, never the tenant: `allowNet` comes from whoever creates the
//! sandbox, so an IP literal there is an allow rule like any other and does
//! not lift the internal-address check. Only the operator's ranges
//! (`--egress-allow-cidr`) do, and only the operator's overrides
//! (`--resolve`) may point at the host itself.

use crate::policy::{canonical, classify, AddressClass};
pub use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The daemon flag that lets sandboxes reach an internal range; refusals
/// name it so an operator knows what to change.
pub const ALLOW_CIDR_FLAG: &str = "--egress-allow-cidr";

/// How the daemon turns names into addresses, and which addresses it
/// refuses to dial for a sandbox.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    /// Operator-configured answers (`--resolve NAME=IP`), consulted before
    /// the system resolver. They are trusted: an override may point at a
    /// loopback or private address, or at the host itself (that is what
    /// they are for: tests and internal services); only the daemon's own
    /// listeners stay out of reach.
    overrides: HashMap<String, Vec<IpAddr>>,
    /// Addresses the daemon itself serves on: never reachable from a
    /// sandbox, whatever the policy, ranges or overrides say.
    protected: Vec<SocketAddr>,
    /// Internal ranges the operator lets sandboxes reach
    /// (`--egress-allow-cidr`), IPv4 ranges in IPv4 form.
    allowed: Vec<IpNet>,
    host: HostAddrs,
}

/// The addresses of the daemon's host: a sandbox must not reach its
/// services (another daemon, a database on 0.0.0.0, sshd) by naming one
/// of them, whichever range it lies in.
#[derive(Debug, Clone)]
enum HostAddrs {
    /// Read from the host's interfaces (getifaddrs), again when the last
    /// read is over [`HOST_ADDRS_TTL`] old, so an address added after the
    /// daemon started (DHCP, a new bridge) is protected within a second.
    /// Not at every check: a read is a netlink dump, measured at about
    /// 80 µs on a host with four interfaces, and grows with their number.
    Interfaces(Arc<Mutex<Option<Snapshot>>>),
    /// A fixed list, for tests of the logic without touching interfaces.
    #[cfg(test)]
    Fixed(Vec<IpAddr>),
}

const HOST_ADDRS_TTL: Duration = Duration::from_secs(1);

/// The host's addresses, and when they were read.
type Snapshot = (Instant, Arc<[IpAddr]>);

impl Default for HostAddrs {
    fn default() -> Self {
        HostAddrs::Interfaces(Arc::default())
    }
}

impl HostAddrs {
    /// Whether `ip` (canonical) is the host's. If the interfaces cannot be
    /// read, the check fails and the caller refuses: the safe side.
    fn contains(&self, ip: IpAddr) -> Result<bool, String> {
        if ip.is_loopback() || ip.is_unspecified() {
            return Ok(true);
        }
        match self {
            HostAddrs::Interfaces(cache) => {
                let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
                let fresh = cache
                    .as_ref()
                    .filter(|(at, _)| at.elapsed() < HOST_ADDRS_TTL)
                    .map(|(_, addrs)| addrs.clone());
                let addrs = match fresh {
                    Some(addrs) => addrs,
                    None => {
                        let addrs = read_interface_addrs()?;
                        *cache = Some((Instant::now(), addrs.clone()));
                        addrs
                    }
                };
                Ok(addrs.contains(&ip))
            }
            #[cfg(test)]
            HostAddrs::Fixed(list) => Ok(list.iter().any(|a| canonical(*a) == ip)),
        }
    }
}

/// Every address on the host's interfaces, canonical.
fn read_interface_addrs() -> Result<Arc<[IpAddr]>, String> {
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| format!("could not read the host's addresses: {e}"))?;
    Ok(addrs
        .filter_map(|a| a.address)
        .filter_map(|a| match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
            (Some(v4), _) => Some(IpAddr::V4(v4.ip())),
            (_, Some(v6)) => Some(canonical(IpAddr::V6(v6.ip()))),
            _ => None,
        })
        .collect())
}

/// Where a connection may go, and why.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub addrs: Vec<SocketAddr>,
    /// "resolver override" / "literal address" / "resolved".
    pub via: &'static str,
}

/// Parses one `--egress-allow-cidr` value: `ADDR/PREFIX`, or a bare address
/// for that one address. Strict, with the fix in the message: a range with
/// host bits set (`10.1.2.3/16`) is refused rather than silently widened
/// or narrowed, and IPv4 is written as IPv4 (the checks compare IPv4-mapped
/// addresses in their IPv4 form).
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let net = match s.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match s.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => {
                return Err(format!(
                    "{s:?} is not an address range; write ADDRESS/PREFIX, e.g. 10.20.0.0/16 or fd00:1::/64"
                ))
            }
        },
    };
    if net.trunc() != net {
        return Err(format!(
            "{s:?} has bits set after its /{} prefix; write {}",
            net.prefix_len(),
            net.trunc()
        ));
    }
    if let IpNet::V6(v6) = net {
        if canonical(IpAddr::V6(v6.addr())) != IpAddr::V6(v6.addr()) {
            return Err(format!(
                "{s:?} is an IPv6 form of IPv4 addresses; write the IPv4 range, e.g. 10.20.0.0/16"
            ));
        }
    }
    Ok(net)
}

impl Resolver {
    pub fn new(overrides: HashMap<String, Vec<IpAddr>>, protected: Vec<SocketAddr>) -> Self {
        let overrides = overrides
            .into_iter()
            .map(|(k, v)| (normalise(&k), v))
            .collect();
        Self {
            overrides,
            protected,
            allowed: Vec::new(),
            host: HostAddrs::default(),
        }
    }

    /// Lets sandboxes reach these internal ranges (`--egress-allow-cidr`).
    pub fn with_allowed(mut self, allowed: Vec<IpNet>) -> Self {
        self.allowed = allowed;
        self
    }

    #[cfg(test)]
    fn with_host_addrs(mut self, addrs: Vec<IpAddr>) -> Self {
        self.host = HostAddrs::Fixed(addrs);
        self
    }

    /// An override for `name`: an exact entry, else the closest `*.suffix`
    /// entry (which, as in allowNet, does not cover the bare suffix).
    fn override_for(&self, name: &str) -> Option<&Vec<IpAddr>> {
        let name = normalise(name);
        if let Some(ips) = self.overrides.get(&name) {
            return Some(ips);
        }
        let mut rest = name.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(ips) = self.overrides.get(&format!("*.{parent}")) {
                return Some(ips);
            }
            rest = parent;
        }
        None
    }

    /// Whether `addr` (canonical) is one the daemon serves on. A wildcard
    /// listener answers on every address of the host and every internal
    /// one, a loopback listener on all of 127/8 (and `0.0.0.0`/`::` reach
    /// any listener on the host).
    fn is_protected(&self, addr: SocketAddr) -> Result<bool, String> {
        let ip = addr.ip();
        for p in &self.protected {
            if p.port() != addr.port() {
                continue;
            }
            let own = canonical(p.ip());
            if own == ip
                || ip.is_unspecified()
                || (own.is_loopback() && ip.is_loopback())
                || (own.is_unspecified()
                    && (classify(ip).is_internal() || self.host.contains(ip)?))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Why a destination the sandbox chose (an allowNet IP literal, or what
    /// the system resolver answered for an allowed name) must not be
    /// dialled, as the rest of a sentence starting with the address; `None`
    /// if it may be.
    fn refusal(&self, addr: SocketAddr) -> Option<String> {
        let ip = addr.ip();
        let class = classify(ip);
        let checked = self.is_protected(addr).and_then(|daemon| {
            if daemon {
                return Ok(Some("is the airlock daemon itself".to_string()));
            }
            if self.host.contains(ip)? {
                return Ok(Some(format!(
                    "is {class} of the daemon's host, which sandboxes never reach by address \
                     (the operator can name a host service with --resolve NAME=IP)"
                )));
            }
            if class.is_internal() && !self.allowed.iter().any(|net| net.contains(&ip)) {
                return Ok(Some(format!(
                    "is {}; the operator can allow it with {ALLOW_CIDR_FLAG}",
                    describe(ip, class)
                )));
            }
            Ok(None)
        });
        checked.unwrap_or_else(|e| Some(format!("cannot be checked: {e}")))
    }

    /// The addresses a connection to `name:port` may use: override
    /// answers (minus the daemon's own), or the system resolver's answers
    /// that pass [`Resolver::refusal`].
    pub async fn upstream_for_name(&self, name: &str, port: u16) -> Result<Upstream, String> {
        if let Some(ips) = self.override_for(name) {
            let mut addrs = Vec::new();
            let mut daemon = None;
            for ip in ips {
                let addr = SocketAddr::new(canonical(*ip), port);
                if self.is_protected(addr)? {
                    daemon.get_or_insert(addr);
                } else {
                    addrs.push(addr);
                }
            }
            return match (addrs.is_empty(), daemon) {
                (true, Some(a)) => Err(format!("{a} is the airlock daemon itself")),
                (true, None) => Err(format!("{name} has no addresses")),
                (false, _) => Ok(Upstream {
                    addrs,
                    via: "resolver override",
                }),
            };
        }
        let found: Vec<SocketAddr> =
            match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, port))).await
            {
                Ok(Ok(it)) => it.collect(),
                Ok(Err(e)) => return Err(format!("could not resolve {name}: {e}")),
                Err(_) => return Err(format!("resolving {name} took over 5 s")),
            };
        let mut refused = None;
        let mut addrs = Vec::new();
        for addr in found {
            let addr = SocketAddr::new(canonical(addr.ip()), addr.port());
            match self.refusal(addr) {
                Some(why) => {
                    refused.get_or_insert((addr.ip(), why));
                }
                None => addrs.push(addr),
            }
        }
        match (addrs.is_empty(), refused) {
            (true, Some((ip, why))) => Err(format!("{name} resolves to {ip}, which {why}")),
            (true, None) => Err(format!("{name} has no addresses")),
            (false, _) => Ok(Upstream {
                addrs,
                via: "resolved",
            }),
        }
    }

    /// A connection to an IP literal that `allowNet` names. The rule lets
    /// the sandbox ask; whether the address may be dialled is
    /// [`Resolver::refusal`]'s to say.
    pub fn upstream_for_ip(&self, ip: IpAddr, port: u16) -> Result<Upstream, String> {
        let addr = SocketAddr::new(canonical(ip), port);
        if let Some(why) = self.refusal(addr) {
            return Err(format!("{} {why}", addr.ip()));
        }
        Ok(Upstream {
            addrs: vec![addr],
            via: "literal address",
        })
    }
}

/// A class as a refusal names it, with what it usually is where that
/// helps an operator decide.
fn describe(ip: IpAddr, class: AddressClass) -> String {
    match (class, ip) {
        (AddressClass::Metadata, IpAddr::V4(_)) => {
            "a link-local cloud metadata address (where a cloud host's credentials live)".into()
        }
        (AddressClass::Metadata, IpAddr::V6(_)) => {
            "a cloud metadata address (where a cloud host's credentials live)".into()
        }
        (other, _) => other.to_string(),
    }
}

/// Connects to the first address that answers.
pub async fn connect(upstream: &Upstream) -> Result<(TcpStream, SocketAddr), String> {
    let mut last = String::from("no addresses");
    for addr in &upstream.addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((s, *addr));
            }
            Ok(Err(e)) => last = format!("connecting to {addr}: {e}"),
            Err(_) => last = format!("connecting to {addr} timed out"),
        }
    }
    Err(last)
}

pub fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn resolver() -> Resolver {
        let mut o = HashMap::new();
        o.insert("API.test.".to_string(), vec![ip("127.0.0.1")]);
        o.insert("daemon.test".to_string(), vec![ip("127.0.0.1")]);
        o.insert("*.wild.test".to_string(), vec![ip("127.0.0.2")]);
        o.insert("mapped.test".to_string(), vec![ip("::ffff:127.0.0.1")]);
        o.insert("mapped0.test".to_string(), vec![ip("::ffff:0.0.0.0")]);
        o.insert("any6.test".to_string(), vec![ip("::")]);
        o.insert("any4.test".to_string(), vec![ip("0.0.0.0")]);
        o.insert("host.test".to_string(), vec![ip("10.9.0.7")]);
        Resolver::new(o, vec!["127.0.0.1:7070".parse().unwrap()])
            .with_host_addrs(vec![ip("10.9.0.7"), ip("fd00:9::7")])
    }

    #[tokio::test]
    async fn overrides_are_trusted_but_never_reach_the_daemon() {
        let r = resolver();
        let up = r.upstream_for_name("api.test", 8443).await.unwrap();
        assert_eq!(up.addrs, vec!["127.0.0.1:8443".parse().unwrap()]);
        assert_eq!(up.via, "resolver override");
        // The operator may point a name at the host itself, mapped or not
        // (connected to in its IPv4 form).
        let up = r.upstream_for_name("mapped.test", 8443).await.unwrap();
        assert_eq!(up.addrs, vec!["127.0.0.1:8443".parse().unwrap()]);
        let up = r.upstream_for_name("host.test", 22).await.unwrap();
        assert_eq!(up.addrs, vec!["10.9.0.7:22".parse().unwrap()]);
        // Every spelling of the daemon's own listener is refused.
        for name in [
            "daemon.test",
            "mapped.test",
            "mapped0.test",
            "any6.test",
            "any4.test",
            "x.wild.test",
        ] {
            let err = r.upstream_for_name(name, 7070).await.unwrap_err();
            assert!(err.contains("daemon itself"), "{name}: {err}");
        }
    }

    #[test]
    fn a_literal_in_allow_net_never_lifts_the_internal_check() {
        let r = resolver();
        for (addr, class) in [
            ("169.254.169.254", "cloud metadata"),
            ("::ffff:169.254.169.254", "cloud metadata"),
            ("64:ff9b::a9fe:a9fe", "cloud metadata"),
            ("169.254.1.1", "link-local"),
            ("10.1.2.3", "private"),
            ("::ffff:10.1.2.3", "private"),
            ("100.64.0.1", "carrier-grade"),
            ("192.168.1.1", "private"),
            ("fd12::1", "private"),
            ("224.0.0.1", "multicast"),
        ] {
            let err = r.upstream_for_ip(ip(addr), 80).unwrap_err();
            assert!(err.contains(class), "{addr}: {err}");
            assert!(err.contains(ALLOW_CIDR_FLAG), "{addr}: {err}");
        }
        let up = r.upstream_for_ip(ip("93.184.216.34"), 80).unwrap();
        assert_eq!(up.via, "literal address");
    }

    #[test]
    fn operator_ranges_allow_internal_addresses_but_not_the_host() {
        let r = resolver().with_allowed(vec![
            parse_cidr("10.0.0.0/8").unwrap(),
            parse_cidr("169.254.169.254").unwrap(),
            parse_cidr("fd00:9::/32").unwrap(),
        ]);
        for addr in [
            "10.1.2.3",
            "::ffff:10.1.2.3",
            "169.254.169.254",
            "fd00:9::8",
        ] {
            let up = r.upstream_for_ip(ip(addr), 80).unwrap();
            assert_eq!(up.addrs[0].ip(), canonical(ip(addr)), "{addr}");
        }
        assert!(r.upstream_for_ip(ip("169.254.169.253"), 80).is_err());
        assert!(r.upstream_for_ip(ip("192.168.1.1"), 80).is_err());
        // The host's own addresses, in any spelling, even inside a range.
        for addr in ["10.9.0.7", "::ffff:10.9.0.7", "fd00:9::7"] {
            let err = r.upstream_for_ip(ip(addr), 80).unwrap_err();
            assert!(err.contains("of the daemon's host"), "{addr}: {err}");
        }
        // Loopback and unspecified are the host too, whatever the ranges.
        let r = r.with_allowed(vec![
            parse_cidr("0.0.0.0/0").unwrap(),
            parse_cidr("::/0").unwrap(),
        ]);
        for addr in [
            "127.0.0.1",
            "127.3.2.1",
            "::1",
            "0.0.0.0",
            "::",
            "::ffff:0.0.0.0",
            "::ffff:127.0.0.1",
        ] {
            let err = r.upstream_for_ip(ip(addr), 80).unwrap_err();
            assert!(err.contains("host"), "{addr}: {err}");
        }
        // The daemon's listener says so.
        let err = r.upstream_for_ip(ip("::ffff:127.0.0.1"), 7070).unwrap_err();
        assert!(err.contains("daemon itself"), "{err}");
    }

    #[tokio::test]
    async fn loopback_from_the_system_resolver_is_refused() {
        let r = resolver();
        let err = r.upstream_for_name("localhost", 80).await.unwrap_err();
        assert!(err.contains("resolves to"), "{err}");
        assert!(err.contains("loopback"), "{err}");
        let r = resolver().with_allowed(vec![parse_cidr("127.0.0.0/8").unwrap()]);
        let err = r.upstream_for_name("localhost", 80).await.unwrap_err();
        assert!(err.contains("host"), "{err}");
    }

    #[test]
    fn wildcard_overrides_cover_subdomains_only() {
        let r = resolver();
        let two: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(r.override_for("a.wild.test"), Some(&vec![two]));
        assert_eq!(r.override_for("x.y.WILD.test."), Some(&vec![two]));
        assert_eq!(r.override_for("wild.test"), None);
        assert_eq!(r.override_for("api.test").map(Vec::len), Some(1));
    }

    #[test]
    fn protected_matches_wildcard_listeners() {
        let r = Resolver::new(
            HashMap::new(),
            vec![
                "0.0.0.0:7070".parse().unwrap(),
                "[::]:9090".parse().unwrap(),
            ],
        )
        .with_host_addrs(vec![ip("203.0.113.9")]);
        let protected = |a: &str| r.is_protected(a.parse().unwrap()).unwrap();
        assert!(protected("127.0.0.1:7070"));
        assert!(protected("0.0.0.0:7070"));
        assert!(protected("10.0.0.1:7070"));
        // A host address outside every internal range.
        assert!(protected("203.0.113.9:7070"));
        assert!(protected("203.0.113.9:9090"));
        assert!(!protected("127.0.0.1:7071"));
        assert!(!protected("93.184.216.34:7070"));
    }

    #[test]
    fn the_real_host_addresses_include_loopback() {
        let host = HostAddrs::default();
        assert!(!read_interface_addrs().unwrap().is_empty());
        assert_eq!(host.contains(ip("127.0.0.1")), Ok(true));
        assert_eq!(host.contains(ip("93.184.216.34")), Ok(false));
    }

    #[test]
    fn cidrs_parse_strictly() {
        assert_eq!(
            parse_cidr("10.20.0.0/16").unwrap().to_string(),
            "10.20.0.0/16"
        );
        assert_eq!(
            parse_cidr("169.254.169.254").unwrap().to_string(),
            "169.254.169.254/32"
        );
        assert_eq!(
            parse_cidr("fd00:1::/64").unwrap().to_string(),
            "fd00:1::/64"
        );
        let err = parse_cidr("10.20.1.2/16").unwrap_err();
        assert!(err.contains("write 10.20.0.0/16"), "{err}");
        let err = parse_cidr("::ffff:10.0.0.0/104").unwrap_err();
        assert!(err.contains("IPv4 range"), "{err}");
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0/8", "10.0.0.0/"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }
}
