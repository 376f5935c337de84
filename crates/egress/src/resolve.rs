//! Real name resolution and the anti-SSRF check, done by the daemon when a
//! sandbox connects (never when it merely asks DNS: the sandbox only ever
//! sees fake addresses, so rebinding its answers gains it nothing).

use crate::policy::{classify, AllowList};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpStream;

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the daemon turns names into addresses.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    /// Operator-configured answers (`--resolve NAME=IP`), consulted before
    /// the system resolver. They are trusted: an override may point at a
    /// loopback or private address (that is what they are for: tests and
    /// internal services), which the anti-SSRF check would otherwise refuse.
    overrides: HashMap<String, Vec<IpAddr>>,
    /// Addresses the daemon itself serves on: never reachable from a
    /// sandbox, whatever the policy or overrides say.
    protected: Vec<SocketAddr>,
}

/// Where a connection may go, and why.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub addrs: Vec<SocketAddr>,
    /// "resolver override" / "literal address" / "resolved".
    pub via: &'static str,
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
        }
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

    fn is_protected(&self, addr: SocketAddr) -> bool {
        self.protected.iter().any(|p| {
            // A wildcard listener answers on every internal address of the
            // host, a loopback one on all of 127/8.
            p.port() == addr.port()
                && (p.ip() == addr.ip()
                    || addr.ip().is_unspecified()
                    || (p.ip().is_loopback() && addr.ip().is_loopback())
                    || (p.ip().is_unspecified() && classify(addr.ip()).is_internal()))
        })
    }

    /// The addresses a connection to `name:port` may use: override
    /// answers, or the system resolver's answers minus internal addresses
    /// (unless `allowNet` names that address literally).
    pub async fn upstream_for_name(
        &self,
        name: &str,
        port: u16,
        policy: &AllowList,
    ) -> Result<Upstream, String> {
        if let Some(ips) = self.override_for(name) {
            let addrs = self.unprotected(ips.iter().map(|ip| SocketAddr::new(*ip, port)))?;
            return Ok(Upstream {
                addrs,
                via: "resolver override",
            });
        }
        let found: Vec<SocketAddr> =
            match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, port))).await
            {
                Ok(Ok(it)) => it.collect(),
                Ok(Err(e)) => return Err(format!("could not resolve {name}: {e}")),
                Err(_) => return Err(format!("resolving {name} took over 5 s")),
            };
        if found.is_empty() {
            return Err(format!("{name} has no addresses"));
        }
        let mut refused = None;
        let mut safe = Vec::new();
        for addr in found {
            let class = classify(addr.ip());
            if class.is_internal() && !policy.names_ip_literally(addr.ip()) {
                refused.get_or_insert((addr.ip(), class));
            } else {
                safe.push(addr);
            }
        }
        if safe.is_empty() {
            let (ip, class) = refused.expect("found was not empty");
            return Err(format!(
                "{name} resolves to {ip}, {class}, which allowNet does not name"
            ));
        }
        let addrs = self.unprotected(safe.into_iter())?;
        Ok(Upstream {
            addrs,
            via: "resolved",
        })
    }

    /// A connection to an IP literal that `allowNet` names.
    pub fn upstream_for_ip(&self, ip: IpAddr, port: u16) -> Result<Upstream, String> {
        let addrs = self.unprotected(std::iter::once(SocketAddr::new(ip, port)))?;
        Ok(Upstream {
            addrs,
            via: "literal address",
        })
    }

    fn unprotected(
        &self,
        addrs: impl Iterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, String> {
        let mut blocked = None;
        let ok: Vec<SocketAddr> = addrs
            .filter(|a| {
                let p = self.is_protected(*a);
                if p {
                    blocked = Some(*a);
                }
                !p
            })
            .collect();
        match (ok.is_empty(), blocked) {
            (true, Some(a)) => Err(format!("{a} is the airlock daemon itself")),
            (true, None) => Err("no addresses".into()),
            _ => Ok(ok),
        }
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

    fn resolver() -> Resolver {
        let mut o = HashMap::new();
        o.insert("API.test.".to_string(), vec!["127.0.0.1".parse().unwrap()]);
        o.insert(
            "daemon.test".to_string(),
            vec!["127.0.0.1".parse().unwrap()],
        );
        o.insert(
            "*.wild.test".to_string(),
            vec!["127.0.0.2".parse().unwrap()],
        );
        Resolver::new(o, vec!["127.0.0.1:7070".parse().unwrap()])
    }

    #[tokio::test]
    async fn overrides_are_trusted_but_never_reach_the_daemon() {
        let r = resolver();
        let none = AllowList::parse(&[]).unwrap();
        let up = r.upstream_for_name("api.test", 8443, &none).await.unwrap();
        assert_eq!(up.addrs, vec!["127.0.0.1:8443".parse().unwrap()]);
        assert_eq!(up.via, "resolver override");
        let err = r
            .upstream_for_name("daemon.test", 7070, &none)
            .await
            .unwrap_err();
        assert!(err.contains("daemon"), "{err}");
    }

    #[tokio::test]
    async fn loopback_from_the_system_resolver_is_refused() {
        let r = resolver();
        let none = AllowList::parse(&[]).unwrap();
        let err = r
            .upstream_for_name("localhost", 80, &none)
            .await
            .unwrap_err();
        assert!(err.contains("resolves to"), "{err}");
        let literal = AllowList::parse(&["127.0.0.1".to_string()]).unwrap();
        let up = r
            .upstream_for_name("localhost", 80, &literal)
            .await
            .unwrap();
        assert!(up.addrs.iter().all(|a| a.ip().is_loopback()));
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
        let r = Resolver::new(HashMap::new(), vec!["0.0.0.0:7070".parse().unwrap()]);
        assert!(r.is_protected("127.0.0.1:7070".parse().unwrap()));
        assert!(!r.is_protected("127.0.0.1:7071".parse().unwrap()));
    }
}
