//! airlock's HTTPS ingress for `sandbox.exposeHttp`.
//!
//! A user asks the daemon to expose a port of a sandbox; the daemon
//! [allocates](Router::allocate) an unguessable domain under the configured
//! base domain (`<label>.sandbox.localhost` by default), [binds](Router::bind)
//! it to the sandbox's port once the sandbox says which, and the URL
//! `https://<domain>` then reaches that port through [`serve`].
//!
//! The pieces, one job each:
//! - [`ExposeCerts`]: the TLS identity — a local CA kept on disk that issues a
//!   leaf per SNI name, or an operator-given certificate — and the rustls
//!   server config built on it.
//! - [`Router`]: domain → (sandbox, port, [`Backend`]) table.
//! - [`Backend`]: how bytes reach a port inside a sandbox (the daemon tunnels
//!   through the sandbox agent; [`TcpBackend`] dials a plain address).
//! - [`Ingress`] / [`serve`]: the accept loop. It terminates TLS, routes by
//!   SNI, answers the few failure cases with a fixed plain-text response, and
//!   otherwise splices bytes raw, so streaming, keep-alive and WebSocket
//!   upgrades work without this crate parsing HTTP.

mod backend;
mod ca;
mod router;
mod server;

pub use backend::{Backend, BoxFuture, BoxedIo, Io, TcpBackend};
pub use ca::{CertError, ExposeCerts, CA_CERT_FILE, CA_KEY_FILE};
pub use router::{Lookup, Route, RouteError, RouteInfo, Router, MAX_ROUTES_PER_SANDBOX};
pub use server::{serve, Ingress, Metrics, ServeOptions};

/// The base domain used when the operator configures none.
pub const DEFAULT_BASE_DOMAIN: &str = "sandbox.localhost";

/// A configuration value this crate cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid base domain {domain:?}: {reason}")]
    BaseDomain {
        domain: String,
        reason: &'static str,
    },

    #[error("the public port must not be 0")]
    PublicPort,
}

/// Longest base domain accepted: a DNS name is at most 253 characters, and
/// every exposed name adds a label and a dot in front of the base.
const MAX_BASE_DOMAIN_LEN: usize = 253 - 64;

/// Lower-cases `domain`, drops one trailing dot, and checks that it is a
/// plain DNS name (letters, digits, hyphens; labels of 1..=63 characters).
pub(crate) fn normalize_base_domain(domain: &str) -> Result<String, ConfigError> {
    let err = |reason| ConfigError::BaseDomain {
        domain: domain.to_owned(),
        reason,
    };
    let name = domain
        .strip_suffix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase();
    if name.is_empty() {
        return Err(err("it is empty"));
    }
    if name.len() > MAX_BASE_DOMAIN_LEN {
        return Err(err("it is too long to have names under it"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(err("every label must be 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(err("only letters, digits, hyphens and dots are allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(err("a label cannot start or end with a hyphen"));
        }
    }
    Ok(name)
}

/// Whether `name` (already lower-case, no trailing dot) is `base` or a name
/// under it.
pub(crate) fn is_under(name: &str, base: &str) -> bool {
    name == base
        || name
            .strip_suffix(base)
            .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.'))
}

/// The name part of an HTTP host: without a trailing `:port`, without a
/// trailing dot, lower-cased.
pub(crate) fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_domain_is_normalized_and_checked() {
        assert_eq!(
            normalize_base_domain("Sandbox.LocalHost.").unwrap(),
            "sandbox.localhost"
        );
        assert_eq!(normalize_base_domain("a-b.example").unwrap(), "a-b.example");
        for bad in ["", ".", "a..b", "-a.b", "a-.b", "a_b.c", "a b", "ex*.com"] {
            assert!(normalize_base_domain(bad).is_err(), "{bad:?} accepted");
        }
        assert!(normalize_base_domain(&"a.".repeat(120)).is_err());
        assert!(normalize_base_domain(&"a".repeat(64)).is_err());
    }

    #[test]
    fn is_under_needs_a_dot_boundary() {
        assert!(is_under("sandbox.localhost", "sandbox.localhost"));
        assert!(is_under("x.sandbox.localhost", "sandbox.localhost"));
        assert!(is_under("a.b.sandbox.localhost", "sandbox.localhost"));
        assert!(!is_under("xsandbox.localhost", "sandbox.localhost"));
        assert!(!is_under(".sandbox.localhost", "sandbox.localhost"));
        assert!(!is_under("localhost", "sandbox.localhost"));
    }

    #[test]
    fn host_name_drops_port_and_dot() {
        assert_eq!(
            host_name("ABC.Sandbox.localhost:8443"),
            "abc.sandbox.localhost"
        );
        assert_eq!(host_name("abc.sandbox.localhost."), "abc.sandbox.localhost");
        assert_eq!(
            host_name("abc.sandbox.localhost.:443"),
            "abc.sandbox.localhost"
        );
        assert_eq!(
            host_name("abc.sandbox.localhost:"),
            "abc.sandbox.localhost:"
        );
        assert_eq!(host_name("abc"), "abc");
    }
}
