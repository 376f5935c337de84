//! Which exposed domain leads to which port of which sandbox.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::watch;

use crate::backend::Backend;
use crate::{host_name, is_under, normalize_base_domain, ConfigError};

/// Most domains one sandbox may hold (pending or bound). Allocation is driven
/// by API calls, so without a bound a single sandbox could grow the table
/// until the daemon runs out of memory.
pub const MAX_ROUTES_PER_SANDBOX: usize = 64;

/// Characters of a random label: 36^16 ≈ 2^82.7 possibilities, so a domain
/// cannot be guessed, only learnt from whoever was given it.
const LABEL_LEN: usize = 16;
const LABEL_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("{domain:?} is not an exposed domain of this daemon (allocate one first)")]
    UnknownDomain { domain: String },

    // The owner is not named: the caller may be a different tenant.
    #[error("{domain:?} was allocated for a different sandbox")]
    WrongSandbox { domain: String },

    #[error("port 0 cannot be exposed")]
    InvalidPort,

    #[error("sandbox {sandbox_id} already has {max} exposed domains", max = MAX_ROUTES_PER_SANDBOX)]
    TooManyRoutes { sandbox_id: String },

    #[error("the system random number generator failed")]
    Random,
}

/// What a host name leads to.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Allocated for `sandbox_id`, but no port bound yet.
    Pending {
        sandbox_id: String,
    },
    Bound(Route),
}

/// A bound domain: where its connections go.
#[derive(Clone)]
pub struct Route {
    /// As [`Router::allocate`] returned it (with `:port` when not 443).
    pub domain: String,
    pub sandbox_id: String,
    pub port: u16,
    pub backend: Arc<dyn Backend>,
    /// Closed (the sender dropped) once the domain is removed, so that live
    /// connections end with their sandbox, not just new ones.
    removed: watch::Receiver<()>,
}

impl Route {
    /// Resolves once the domain has been removed from the router (at once if
    /// it already was).
    pub async fn removed(&self) {
        let mut rx = self.removed.clone();
        // Nothing is ever sent; `changed` only returns, with an error, once
        // the sender is dropped.
        while rx.changed().await.is_ok() {}
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("domain", &self.domain)
            .field("sandbox_id", &self.sandbox_id)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// One domain of a sandbox, for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// As [`Router::allocate`] returned it.
    pub domain: String,
    /// `None` while pending.
    pub port: Option<u16>,
}

struct Entry {
    sandbox_id: String,
    bound: Option<(u16, Arc<dyn Backend>)>,
    removed: watch::Sender<()>,
}

#[derive(Default)]
struct Table {
    /// Keyed by the name part of the domain (no port), lower-case.
    by_name: HashMap<String, Entry>,
    by_sandbox: HashMap<String, HashSet<String>>,
}

/// The table of exposed domains.
pub struct Router {
    base_domain: String,
    public_port: u16,
    rng: SystemRandom,
    table: Mutex<Table>,
}

impl Router {
    /// A router for names under `base_domain`, reached by clients on
    /// `public_port`. When that port is not 443, the domains handed out carry
    /// `:port`, so that `https://{domain}` is a working URL as it stands.
    pub fn new(base_domain: &str, public_port: u16) -> Result<Router, ConfigError> {
        if public_port == 0 {
            return Err(ConfigError::PublicPort);
        }
        Ok(Router {
            base_domain: normalize_base_domain(base_domain)?,
            public_port,
            rng: SystemRandom::new(),
            table: Mutex::new(Table::default()),
        })
    }

    pub fn base_domain(&self) -> &str {
        &self.base_domain
    }

    pub fn public_port(&self) -> u16 {
        self.public_port
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // Every mutation below leaves the maps consistent before anything
        // that could panic, so a poisoned lock holds valid data.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The public domain for a name: the name, plus `:port` unless 443.
    fn domain_for(&self, name: &str) -> String {
        if self.public_port == 443 {
            name.to_owned()
        } else {
            format!("{name}:{}", self.public_port)
        }
    }

    fn random_label(&self) -> Result<String, RouteError> {
        let mut label = String::with_capacity(LABEL_LEN);
        let mut bytes = [0u8; 32];
        while label.len() < LABEL_LEN {
            self.rng.fill(&mut bytes).map_err(|_| RouteError::Random)?;
            // Rejection sampling: 252 is the largest multiple of 36 that
            // fits a byte, so `b % 36` is uniform over the bytes kept.
            for b in bytes.iter().filter(|&&b| b < 252) {
                if label.len() == LABEL_LEN {
                    break;
                }
                label.push(char::from(LABEL_ALPHABET[usize::from(*b % 36)]));
            }
        }
        Ok(label)
    }

    /// Makes a fresh, unguessable domain for `sandbox_id`, pending until
    /// [`bind`](Self::bind). Returns it as clients will use it:
    /// `<label>.<base>` or `<label>.<base>:<public port>`.
    pub fn allocate(&self, sandbox_id: &str) -> Result<String, RouteError> {
        let mut table = self.table();
        if table
            .by_sandbox
            .get(sandbox_id)
            .is_some_and(|names| names.len() >= MAX_ROUTES_PER_SANDBOX)
        {
            return Err(RouteError::TooManyRoutes {
                sandbox_id: sandbox_id.to_owned(),
            });
        }
        let name = loop {
            let name = format!("{}.{}", self.random_label()?, self.base_domain);
            // A collision needs ~2^41 live domains; loop rather than assume.
            if !table.by_name.contains_key(&name) {
                break name;
            }
        };
        table.by_name.insert(
            name.clone(),
            Entry {
                sandbox_id: sandbox_id.to_owned(),
                bound: None,
                removed: watch::Sender::new(()),
            },
        );
        table
            .by_sandbox
            .entry(sandbox_id.to_owned())
            .or_default()
            .insert(name.clone());
        Ok(self.domain_for(&name))
    }

    /// Routes `domain` (as `allocate` returned it, with or without `:port`)
    /// to `port` of `sandbox_id` through `backend`. The domain must have been
    /// allocated for that same sandbox. Binding again replaces the port;
    /// connections already open stay on the old one.
    pub fn bind(
        &self,
        domain: &str,
        sandbox_id: &str,
        port: u16,
        backend: Arc<dyn Backend>,
    ) -> Result<(), RouteError> {
        if port == 0 {
            return Err(RouteError::InvalidPort);
        }
        let name = host_name(domain);
        let mut table = self.table();
        let entry = table
            .by_name
            .get_mut(&name)
            .ok_or_else(|| RouteError::UnknownDomain {
                domain: domain.to_owned(),
            })?;
        if entry.sandbox_id != sandbox_id {
            return Err(RouteError::WrongSandbox {
                domain: domain.to_owned(),
            });
        }
        entry.bound = Some((port, backend));
        Ok(())
    }

    /// Drops every domain of `sandbox_id`: new connections to them get 404,
    /// and connections open through them are closed. Returns how many there
    /// were.
    pub fn remove_sandbox(&self, sandbox_id: &str) -> usize {
        let mut table = self.table();
        let Some(names) = table.by_sandbox.remove(sandbox_id) else {
            return 0;
        };
        for name in &names {
            // Dropping the entry drops its `removed` sender.
            table.by_name.remove(name);
        }
        names.len()
    }

    /// What `host` (an SNI name or a Host header: any case, optional
    /// `:port`, optional trailing dot) leads to, if anything.
    pub fn lookup(&self, host: &str) -> Option<Lookup> {
        let name = host_name(host);
        if !is_under(&name, &self.base_domain) {
            return None;
        }
        let table = self.table();
        let entry = table.by_name.get(&name)?;
        Some(match &entry.bound {
            None => Lookup::Pending {
                sandbox_id: entry.sandbox_id.clone(),
            },
            Some((port, backend)) => Lookup::Bound(Route {
                domain: self.domain_for(&name),
                sandbox_id: entry.sandbox_id.clone(),
                port: *port,
                backend: Arc::clone(backend),
                removed: entry.removed.subscribe(),
            }),
        })
    }

    /// The domains of `sandbox_id`, sorted.
    pub fn routes_of(&self, sandbox_id: &str) -> Vec<RouteInfo> {
        let table = self.table();
        let mut routes: Vec<RouteInfo> = table
            .by_sandbox
            .get(sandbox_id)
            .into_iter()
            .flatten()
            .filter_map(|name| {
                let entry = table.by_name.get(name)?;
                Some(RouteInfo {
                    domain: self.domain_for(name),
                    port: entry.bound.as_ref().map(|(port, _)| *port),
                })
            })
            .collect();
        routes.sort_by(|a, b| a.domain.cmp(&b.domain));
        routes
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("base_domain", &self.base_domain)
            .field("public_port", &self.public_port)
            .field("domains", &self.table().by_name.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::TcpBackend;

    fn backend() -> Arc<dyn Backend> {
        Arc::new(TcpBackend::new([127, 0, 0, 1].into()))
    }

    fn label_of<'a>(domain: &'a str, base: &str) -> &'a str {
        domain
            .strip_suffix(&format!(".{base}"))
            .unwrap_or_else(|| panic!("{domain} not under {base}"))
    }

    #[test]
    fn labels_are_random_lowercase_alnum() {
        let router = Router::new("sandbox.localhost", 443).unwrap();
        let mut seen = HashSet::new();
        for i in 0..200 {
            let domain = router.allocate(&format!("sbx{i}")).unwrap();
            let label = label_of(&domain, "sandbox.localhost").to_owned();
            assert_eq!(label.len(), LABEL_LEN);
            assert!(label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
            assert!(seen.insert(label), "label repeated");
        }
    }

    #[test]
    fn port_443_is_implicit_other_ports_are_in_the_domain() {
        let router = Router::new("Sandbox.Example.", 443).unwrap();
        let domain = router.allocate("a").unwrap();
        assert!(domain.ends_with(".sandbox.example"), "{domain}");
        assert!(!domain.contains(':'));

        let router = Router::new("sandbox.localhost", 8443).unwrap();
        let domain = router.allocate("a").unwrap();
        let name = domain.strip_suffix(":8443").expect("port suffix");
        assert!(name.ends_with(".sandbox.localhost"));
        // Lookups match on the name whatever port the client spells.
        for host in [
            &domain[..],
            name,
            &name.to_uppercase(),
            &format!("{name}."),
            &format!("{name}:443"),
        ] {
            assert!(
                matches!(router.lookup(host), Some(Lookup::Pending { ref sandbox_id }) if sandbox_id == "a"),
                "{host}"
            );
        }
        assert_eq!(
            router.routes_of("a"),
            vec![RouteInfo {
                domain: domain.clone(),
                port: None
            }]
        );

        assert_eq!(
            Router::new("x.test", 0).unwrap_err(),
            ConfigError::PublicPort
        );
        assert!(Router::new("bad_name", 443).is_err());
    }

    #[test]
    fn bind_checks_its_inputs() {
        let router = Router::new("sandbox.localhost", 443).unwrap();
        let domain = router.allocate("a").unwrap();
        assert_eq!(
            router.bind("nope.sandbox.localhost", "a", 80, backend()),
            Err(RouteError::UnknownDomain {
                domain: "nope.sandbox.localhost".into()
            })
        );
        assert_eq!(
            router.bind("example.com", "a", 80, backend()),
            Err(RouteError::UnknownDomain {
                domain: "example.com".into()
            })
        );
        assert_eq!(
            router.bind(&domain, "b", 80, backend()),
            Err(RouteError::WrongSandbox {
                domain: domain.clone()
            })
        );
        assert_eq!(
            router.bind(&domain, "a", 0, backend()),
            Err(RouteError::InvalidPort)
        );
        assert!(matches!(
            router.lookup(&domain),
            Some(Lookup::Pending { .. })
        ));

        router
            .bind(&domain.to_uppercase(), "a", 8000, backend())
            .unwrap();
        match router.lookup(&domain) {
            Some(Lookup::Bound(route)) => {
                assert_eq!(
                    (route.port, &route.sandbox_id[..], &route.domain[..]),
                    (8000, "a", &domain[..])
                );
            }
            other => panic!("{other:?}"),
        }
        // Rebinding replaces the port.
        router.bind(&domain, "a", 9000, backend()).unwrap();
        assert_eq!(router.routes_of("a")[0].port, Some(9000));

        assert_eq!(router.remove_sandbox("a"), 1);
        assert!(router.lookup(&domain).is_none());
        assert!(matches!(
            router.bind(&domain, "a", 80, backend()),
            Err(RouteError::UnknownDomain { .. })
        ));
        assert!(router.routes_of("a").is_empty());
        assert_eq!(router.remove_sandbox("a"), 0);
    }

    #[test]
    fn lookup_ignores_names_outside_the_base() {
        let router = Router::new("sandbox.localhost", 443).unwrap();
        let domain = router.allocate("a").unwrap();
        let label = label_of(&domain, "sandbox.localhost");
        assert!(router.lookup(&format!("{label}.localhost")).is_none());
        assert!(router.lookup(label).is_none());
        assert!(router.lookup("sandbox.localhost").is_none());
    }

    #[test]
    fn sandboxes_are_bounded_and_separate() {
        let router = Router::new("sandbox.localhost", 443).unwrap();
        for _ in 0..MAX_ROUTES_PER_SANDBOX {
            router.allocate("a").unwrap();
        }
        assert_eq!(
            router.allocate("a"),
            Err(RouteError::TooManyRoutes {
                sandbox_id: "a".into()
            })
        );
        let b = router.allocate("b").unwrap();
        assert_eq!(router.remove_sandbox("a"), MAX_ROUTES_PER_SANDBOX);
        assert!(router.lookup(&b).is_some());
        assert_eq!(router.routes_of("b").len(), 1);
        router.allocate("a").unwrap();
    }

    #[tokio::test]
    async fn removal_is_signalled_to_routes() {
        let router = Router::new("sandbox.localhost", 443).unwrap();
        let domain = router.allocate("a").unwrap();
        router.bind(&domain, "a", 80, backend()).unwrap();
        let Some(Lookup::Bound(route)) = router.lookup(&domain) else {
            panic!("not bound")
        };
        let waiting = tokio::time::timeout(Duration::from_millis(50), route.removed()).await;
        assert!(waiting.is_err(), "signalled before removal");
        router.remove_sandbox("a");
        tokio::time::timeout(Duration::from_secs(1), route.removed())
            .await
            .expect("removal not signalled");
    }
}
