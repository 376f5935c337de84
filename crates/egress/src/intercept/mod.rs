//! TLS interception for hosts that have secrets: the gateway terminates the
//! sandbox's TLS with a per-sandbox CA, swaps placeholders for real values
//! on the way out and real values for placeholders on the way back, and
//! speaks TLS to the real upstream, verifying its certificate itself.
//!
//! Only connections whose SNI is one of a secret's hosts are intercepted;
//! every other TLS connection is spliced byte for byte.

mod body;
pub mod ca;
mod decode;
mod proxy;
pub mod substitute;

pub use proxy::serve;

use crate::policy::{AllowList, PolicyError};
use ca::{CaError, SandboxCa, UpstreamTls};
use std::fmt;
use std::sync::Arc;
use substitute::Substitutions;

/// Placeholders are this prefix and 48 random letters and digits: only
/// characters that appear verbatim in URLs, JSON, forms and headers.
pub const PLACEHOLDER_PREFIX: &str = "AIRLOCK_SECRET_";
const PLACEHOLDER_RANDOM: usize = 48;

/// One secret as the API gives it. The value is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretSpec {
    pub name: String,
    pub hosts: Vec<String>,
    pub value: String,
}

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSpec")
            .field("name", &self.name)
            .field("hosts", &self.hosts)
            .field("value", &"<redacted>")
            .finish()
    }
}

struct Secret {
    name: String,
    hosts: AllowList,
    placeholder: String,
    value: String,
}

/// A sandbox's secrets, its CA, and how the gateway reaches upstreams.
pub struct Interception {
    secrets: Vec<Secret>,
    ca: SandboxCa,
    upstream: Arc<UpstreamTls>,
}

impl fmt::Debug for Interception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.secrets.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("Interception")
            .field("secrets", &names)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    #[error("secret {name}: hosts: {source}")]
    Hosts { name: String, source: PolicyError },
    #[error("secret {0}: it has no hosts")]
    NoHosts(String),
    #[error("secret {0}: its value is empty")]
    EmptyValue(String),
    #[error("generating the sandbox CA: {0}")]
    Ca(#[from] CaError),
    #[error("no secure random source: {0}")]
    Random(String),
}

impl Interception {
    /// Prepares interception for `specs`: a fresh CA and one fresh
    /// placeholder per secret. Returns the (name, placeholder) pairs the
    /// sandbox's environment gets.
    pub fn new(
        label: &str,
        specs: &[SecretSpec],
        upstream: Arc<UpstreamTls>,
    ) -> Result<(Self, Vec<(String, String)>), InterceptError> {
        let mut secrets = Vec::with_capacity(specs.len());
        for spec in specs {
            if spec.hosts.is_empty() {
                return Err(InterceptError::NoHosts(spec.name.clone()));
            }
            if spec.value.is_empty() {
                return Err(InterceptError::EmptyValue(spec.name.clone()));
            }
            let hosts = AllowList::parse(&spec.hosts).map_err(|source| InterceptError::Hosts {
                name: spec.name.clone(),
                source,
            })?;
            secrets.push(Secret {
                name: spec.name.clone(),
                hosts,
                placeholder: placeholder()?,
                value: spec.value.clone(),
            });
        }
        let env = secrets
            .iter()
            .map(|s| (s.name.clone(), s.placeholder.clone()))
            .collect();
        let ca = SandboxCa::generate(label)?;
        Ok((
            Self {
                secrets,
                ca,
                upstream,
            },
            env,
        ))
    }

    /// The CA certificate the sandbox must trust (PEM).
    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem()
    }

    /// Whether a TLS connection to `host:port` is intercepted.
    pub fn applies_to(&self, host: &str, port: u16) -> bool {
        self.secrets
            .iter()
            .any(|s| s.hosts.allows_name(host, port).is_some())
    }

    /// Placeholder -> value, one set per secret that may go to `host`.
    fn outbound(&self, host: &str, port: u16) -> Vec<(String, Substitutions)> {
        self.secrets
            .iter()
            .filter(|s| s.hosts.allows_name(host, port).is_some())
            .map(|s| {
                (
                    s.name.clone(),
                    Substitutions::new(vec![(
                        s.placeholder.as_bytes().to_vec(),
                        s.value.as_bytes().to_vec(),
                    )]),
                )
            })
            .collect()
    }

    /// Value -> placeholder for every secret of the sandbox: whatever a
    /// response carries back is masked, whichever secret it is.
    fn inbound(&self) -> Substitutions {
        Substitutions::new(
            self.secrets
                .iter()
                .map(|s| {
                    (
                        s.value.as_bytes().to_vec(),
                        s.placeholder.as_bytes().to_vec(),
                    )
                })
                .collect(),
        )
    }
}

fn placeholder() -> Result<String, InterceptError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let provider = rustls::crypto::ring::default_provider();
    let mut bytes = [0u8; PLACEHOLDER_RANDOM];
    provider
        .secure_random
        .fill(&mut bytes)
        .map_err(|e| InterceptError::Random(format!("{e:?}")))?;
    // 62 letters: `b % 62` is very slightly biased toward the first 8; at 48
    // characters that still leaves far over 256 bits of entropy.
    let random: String = bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect();
    Ok(format!("{PLACEHOLDER_PREFIX}{random}"))
}

/// What one intercepted connection did, for its audit event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InterceptStats {
    pub requests: u64,
    /// Secret names substituted, with the number of requests each was in.
    pub secrets: Vec<(String, u64)>,
    /// Responses refused because the gateway could not decode them to
    /// mask them, and why the first one was.
    pub refused: u64,
    pub first_refusal: Option<String>,
}
