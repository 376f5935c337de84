//! Certificates for TLS interception.
//!
//! [`SandboxCa`] is the per-sandbox certificate authority the sandbox trusts:
//! the gateway terminates the sandbox's TLS with leaf certificates it issues
//! on the fly, one per SNI name. [`UpstreamTls`] is the other side: the
//! gateway's own TLS client to the real upstream, which verifies the upstream
//! against the host's roots plus operator-configured CAs.
//!
//! Every rustls config here is built with the ring provider explicitly, so
//! behaviour never depends on which provider (if any) some other part of the
//! process installed as the default.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use leafcert::{LeafConfig, LeafError, NewCaError, MAX_CN_LEN};
use rcgen::{CertificateParams, DistinguishedName, DnType};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// CA lifetime: sandboxes live at most hours, so a month is generous while
/// still bounding the damage of a CA key that somehow leaked.
const CA_LIFETIME: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// The leaves the sandbox is served.
const LEAF_CONFIG: LeafConfig = LeafConfig {
    // Capped by the CA's own notAfter.
    lifetime: Duration::from_secs(7 * 24 * 60 * 60),
    // Re-issued this close to expiring, so no handshake is ever served a
    // certificate about to lapse mid-connection.
    refresh_margin: Duration::from_secs(60 * 60),
    // Per sandbox. A sandbox talking to more intercepted hosts than this
    // just pays for re-issuing (about a millisecond).
    max_cached: 1024,
};

const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    // Inner errors are part of the message rather than a `#[source]`, so that
    // printing the error once says everything, whatever the caller's style.
    #[error("sandbox CA for {label:?}: {step}: {error}")]
    Ca {
        label: String,
        step: &'static str,
        error: rcgen::Error,
    },

    #[error(transparent)]
    Leaf(LeafError),

    #[error("sandbox CA for {label:?} has expired; the sandbox needs a new CA")]
    CaExpired { label: String },

    #[error("the system clock is outside the range a certificate can express")]
    Clock,

    #[error("{what}: {error}")]
    TlsConfig {
        what: &'static str,
        error: rustls::Error,
    },

    #[error("reading extra CA file {}: {error}", path.display())]
    ReadCaFile { path: PathBuf, error: io::Error },

    #[error("extra CA file {} is not valid PEM: {error}", path.display())]
    BadPem {
        path: PathBuf,
        error: rustls::pki_types::pem::Error,
    },

    #[error(
        "extra CA file {} contains no certificate (expected a -----BEGIN CERTIFICATE----- block)",
        path.display()
    )]
    NoCertificate { path: PathBuf },

    #[error("extra CA file {}: certificate #{index} is not a usable trust anchor: {error}", path.display())]
    BadCaCertificate {
        path: PathBuf,
        index: usize,
        error: rustls::Error,
    },

    #[error("root PEM #{index}: {reason}")]
    BadRootPem { index: usize, reason: String },

    #[error("no trusted root certificates: {detail}")]
    NoRoots { detail: String },
}

/// The ring provider, the only one this crate builds rustls configs with.
fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `err` from issuing a leaf for the CA labelled `label`, as this crate
/// reports it.
fn leaf_error(label: &str, err: LeafError) -> CaError {
    match err {
        LeafError::CaExpired { .. } => CaError::CaExpired {
            label: label.to_owned(),
        },
        LeafError::Clock(_) => CaError::Clock,
        err @ (LeafError::Certificate { .. } | LeafError::Key { .. }) => CaError::Leaf(err),
    }
}

/// Truncates `s` to at most `max` bytes on a character boundary.
fn truncate_chars(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A per-sandbox certificate authority, and the TLS server config that
/// presents leaf certificates it issues for whatever name the sandbox asks.
///
/// The CA's private key never leaves this struct: there is no getter, and
/// `Debug` prints only the label.
pub struct SandboxCa {
    cert_pem: String,
    issuer: Arc<SniResolver>,
    server_config: Arc<ServerConfig>,
}

impl SandboxCa {
    /// Generates a fresh ECDSA P-256 CA named after `label` (typically the
    /// sandbox id), valid from an hour ago for 30 days.
    pub fn generate(label: &str) -> Result<SandboxCa, CaError> {
        let mut params = CertificateParams::default();
        // Keep the CN within RFC 5280's bound by shortening the label, not
        // the fixed part that tells a human what this certificate is.
        let overhead = "airlock sandbox CA ()".len();
        let short_label = truncate_chars(label, MAX_CN_LEN.saturating_sub(overhead));
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("airlock sandbox CA ({short_label})"),
        );
        dn.push(DnType::OrganizationName, "airlock");
        params.distinguished_name = dn;
        let ca = leafcert::new_ca(params, CA_LIFETIME).map_err(|err| match err {
            NewCaError::Certificate { step, error } => CaError::Ca {
                label: label.to_owned(),
                step,
                error,
            },
            NewCaError::Clock(_) => CaError::Clock,
        })?;

        let provider = ring_provider();
        let issuer = Arc::new(SniResolver {
            label: label.to_owned(),
            leaves: leafcert::LeafIssuer::new(
                ca.issuer,
                ca.not_after,
                Arc::clone(&provider),
                LEAF_CONFIG,
            ),
        });

        let mut server_config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| CaError::TlsConfig {
                what: "building the sandbox-facing TLS server config",
                error,
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&issuer) as Arc<dyn ResolvesServerCert>);
        // The caller reads the negotiated protocol to pick its HTTP codec.
        server_config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];

        Ok(SandboxCa {
            cert_pem: ca.cert.pem(),
            issuer,
            server_config: Arc::new(server_config),
        })
    }

    /// The CA certificate, PEM-encoded, for the sandbox's trust bundle.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The TLS server config for connections from the sandbox. Leaf
    /// certificates are issued on first use per SNI name and cached; a
    /// ClientHello without SNI gets no certificate and the handshake fails.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server_config)
    }
}

impl fmt::Debug for SandboxCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxCa")
            .field("label", &self.issuer.label)
            .field("cached_leaves", &self.issuer.cached_len())
            .finish_non_exhaustive()
    }
}

/// The rustls cert resolver of [`SandboxCa::server_config`]: a leaf per SNI
/// name, issued and cached by the CA.
struct SniResolver {
    label: String,
    leaves: leafcert::LeafIssuer,
}

impl SniResolver {
    fn cached_len(&self) -> usize {
        self.leaves.cached_len()
    }

    /// The leaf for `name` (already normalised), from the cache or freshly
    /// issued.
    fn leaf_for(&self, name: &str) -> Result<Arc<CertifiedKey>, CaError> {
        self.leaves
            .leaf_for(name)
            .map_err(|err| leaf_error(&self.label, err))
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("label", &self.label)
            .field("leaves", &self.leaves)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Without SNI there is no name to issue for; returning None makes
        // rustls abort the handshake.
        let Some(sni) = client_hello.server_name() else {
            tracing::debug!(ca = %self.label, "TLS ClientHello without SNI; refusing");
            return None;
        };
        // One cache entry per name however the sandbox spells it.
        let name = sni.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return None;
        }
        match self.leaf_for(&name) {
            Ok(key) => Some(key),
            Err(err) => {
                tracing::warn!(ca = %self.label, "cannot issue a leaf certificate: {err}");
                None
            }
        }
    }
}

/// TLS client configs for the gateway's connections to real upstreams,
/// verifying them against the host's roots plus operator-configured CAs.
pub struct UpstreamTls {
    root_count: usize,
    /// ALPN-less config; the other variants are clones with ALPN set.
    base: Arc<ClientConfig>,
    h2_http1: Arc<ClientConfig>,
    http1: Arc<ClientConfig>,
}

impl UpstreamTls {
    /// Trusts the host's system roots (via rustls-native-certs, which also
    /// honours SSL_CERT_FILE / SSL_CERT_DIR) plus every certificate in
    /// `extra_ca_pem_files`.
    ///
    /// Unparsable system certificates are skipped with a warning; an extra
    /// file that is unreadable or holds no usable certificate is an error.
    pub fn new(extra_ca_pem_files: &[PathBuf]) -> Result<UpstreamTls, CaError> {
        let mut roots = RootCertStore::empty();

        let native = rustls_native_certs::load_native_certs();
        for err in &native.errors {
            tracing::warn!("loading system root certificates: {err}");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        if ignored > 0 {
            tracing::warn!("ignored {ignored} unparsable system root certificates");
        }
        tracing::debug!("loaded {added} system root certificates");

        for path in extra_ca_pem_files {
            add_pem_file(&mut roots, path)?;
        }

        if roots.is_empty() {
            let detail = if native.errors.is_empty() {
                "the system store is empty and no extra CA files are configured".to_owned()
            } else {
                let errors: Vec<String> = native.errors.iter().map(|e| e.to_string()).collect();
                format!(
                    "the system store yielded none ({}) and no extra CA files are configured",
                    errors.join("; ")
                )
            };
            return Err(CaError::NoRoots { detail });
        }
        Self::from_roots(roots)
    }

    /// Trusts exactly the certificates in `pems` (each a PEM string holding
    /// one or more certificates), without the system store. For tests.
    pub fn with_roots_only(pems: &[String]) -> Result<UpstreamTls, CaError> {
        let mut roots = RootCertStore::empty();
        for (index, pem) in pems.iter().enumerate() {
            let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CaError::BadRootPem {
                    index,
                    reason: format!("not valid PEM: {e}"),
                })?;
            if certs.is_empty() {
                return Err(CaError::BadRootPem {
                    index,
                    reason: "contains no certificate".to_owned(),
                });
            }
            for cert in certs {
                roots.add(cert).map_err(|e| CaError::BadRootPem {
                    index,
                    reason: format!("not a usable trust anchor: {e}"),
                })?;
            }
        }
        if roots.is_empty() {
            return Err(CaError::NoRoots {
                detail: "no root PEMs were given".to_owned(),
            });
        }
        Self::from_roots(roots)
    }

    fn from_roots(roots: RootCertStore) -> Result<UpstreamTls, CaError> {
        let root_count = roots.len();
        let base = ClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| CaError::TlsConfig {
                what: "building the upstream TLS client config",
                error,
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Clones share the verifier and the session-resumption store.
        let with_alpn = |alpn: Vec<Vec<u8>>| {
            let mut config = base.clone();
            config.alpn_protocols = alpn;
            Arc::new(config)
        };
        let h2_http1 = with_alpn(vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()]);
        let http1 = with_alpn(vec![ALPN_HTTP1.to_vec()]);
        Ok(UpstreamTls {
            root_count,
            base: Arc::new(base),
            h2_http1,
            http1,
        })
    }

    /// A client config offering `alpn` (in order of preference). The common
    /// variants are prebuilt; others are built on each call.
    pub fn client_config(&self, alpn: &[Vec<u8>]) -> Arc<ClientConfig> {
        if alpn.is_empty() {
            return Arc::clone(&self.base);
        }
        if alpn == self.h2_http1.alpn_protocols.as_slice() {
            return Arc::clone(&self.h2_http1);
        }
        if alpn == self.http1.alpn_protocols.as_slice() {
            return Arc::clone(&self.http1);
        }
        let mut config = (*self.base).clone();
        config.alpn_protocols = alpn.to_vec();
        Arc::new(config)
    }

    /// A connector offering `alpn`; see [`UpstreamTls::client_config`].
    pub fn connector(&self, alpn: &[Vec<u8>]) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client_config(alpn))
    }
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("root_count", &self.root_count)
            .finish_non_exhaustive()
    }
}

/// Adds every certificate in the PEM file at `path` to `roots`.
fn add_pem_file(roots: &mut RootCertStore, path: &Path) -> Result<(), CaError> {
    let bytes = std::fs::read(path).map_err(|error| CaError::ReadCaFile {
        path: path.to_owned(),
        error,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| CaError::BadPem {
            path: path.to_owned(),
            error,
        })?;
    if certs.is_empty() {
        return Err(CaError::NoCertificate {
            path: path.to_owned(),
        });
    }
    for (index, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|error| CaError::BadCaCertificate {
            path: path.to_owned(),
            index,
            error,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::CertificateError;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

    /// Outcome of one in-memory handshake, from both ends.
    struct Outcome {
        client: io::Result<tokio_rustls::client::TlsStream<tokio::io::DuplexStream>>,
        server: io::Result<tokio_rustls::server::TlsStream<tokio::io::DuplexStream>>,
    }

    impl Outcome {
        fn both_ok(&self) -> bool {
            self.client.is_ok() && self.server.is_ok()
        }

        fn leaf(&self) -> CertificateDer<'static> {
            let client = self.client.as_ref().expect("client handshake failed");
            client
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .expect("server presented no certificate")
                .clone()
        }

        fn alpn(&self) -> Option<Vec<u8>> {
            let client = self.client.as_ref().expect("client handshake failed");
            client.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
        }
    }

    async fn handshake(
        server_config: Arc<ServerConfig>,
        client_config: Arc<ClientConfig>,
        name: &str,
    ) -> Outcome {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
        let connector = tokio_rustls::TlsConnector::from(client_config);
        let name = ServerName::try_from(name.to_owned()).expect("valid server name");
        let both = async {
            tokio::join!(
                connector.connect(name, client_io),
                acceptor.accept(server_io)
            )
        };
        let (client, server) = tokio::time::timeout(HANDSHAKE_TIMEOUT, both)
            .await
            .expect("handshake hung");
        Outcome { client, server }
    }

    fn client_trusting(pems: &[&str], alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for pem in pems {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(cert.expect("valid PEM")).expect("usable root");
            }
        }
        let mut config = ClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// The certificate error behind a failed client handshake, if that is
    /// why it failed.
    fn cert_error(err: &io::Error) -> Option<&CertificateError> {
        match err.get_ref()?.downcast_ref::<rustls::Error>()? {
            rustls::Error::InvalidCertificate(cert_err) => Some(cert_err),
            _ => None,
        }
    }

    fn valid_for(leaf: &CertificateDer<'_>, name: &str) -> bool {
        let parsed = rustls::server::ParsedCertificate::try_from(leaf).expect("parsable leaf");
        let name = ServerName::try_from(name.to_owned()).expect("valid server name");
        rustls::client::verify_server_name(&parsed, &name).is_ok()
    }

    #[tokio::test]
    async fn sandbox_ca_issues_and_caches_leaves_per_name() {
        let ca = SandboxCa::generate("sbx-test").unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let client = client_trusting(&[&ca.cert_pem()], &[]);

        let first = handshake(ca.server_config(), Arc::clone(&client), "api.test").await;
        assert!(
            first.both_ok(),
            "handshake failed: {:?}",
            first.client.err()
        );
        let leaf = first.leaf();
        assert!(valid_for(&leaf, "api.test"));
        assert!(!valid_for(&leaf, "other.test"));

        // Same name, spelled differently: same cached leaf.
        let again = handshake(ca.server_config(), Arc::clone(&client), "API.Test").await;
        assert!(again.both_ok());
        assert_eq!(again.leaf(), leaf);

        let other = handshake(ca.server_config(), client, "other.test").await;
        assert!(other.both_ok());
        let other_leaf = other.leaf();
        assert_ne!(other_leaf, leaf);
        assert!(valid_for(&other_leaf, "other.test"));
        assert_eq!(ca.issuer.cached_len(), 2);
    }

    #[tokio::test]
    async fn data_flows_over_intercepted_connection() {
        let ca = SandboxCa::generate("sbx-data").unwrap();
        let client = client_trusting(&[&ca.cert_pem()], &[]);
        let outcome = handshake(ca.server_config(), client, "api.test").await;
        let (mut c, mut s) = (outcome.client.unwrap(), outcome.server.unwrap());
        c.write_all(b"ping").await.unwrap();
        c.flush().await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[tokio::test]
    async fn client_not_trusting_the_ca_fails() {
        let ca = SandboxCa::generate("sbx-a").unwrap();
        let stranger = SandboxCa::generate("sbx-b").unwrap();
        let client = client_trusting(&[&stranger.cert_pem()], &[]);
        let outcome = handshake(ca.server_config(), client, "api.test").await;
        let err = outcome.client.expect_err("untrusted CA accepted");
        assert!(
            matches!(cert_error(&err), Some(CertificateError::UnknownIssuer)),
            "unexpected error: {err}"
        );
    }

    #[tokio::test]
    async fn alpn_prefers_h2_and_falls_back_to_http1() {
        let ca = SandboxCa::generate("sbx-alpn").unwrap();
        let pem = ca.cert_pem();

        let h2 = client_trusting(&[&pem], &[b"h2", b"http/1.1"]);
        let outcome = handshake(ca.server_config(), h2, "api.test").await;
        assert_eq!(outcome.alpn().as_deref(), Some(&b"h2"[..]));

        let h1 = client_trusting(&[&pem], &[b"http/1.1"]);
        let outcome = handshake(ca.server_config(), h1, "api.test").await;
        assert_eq!(outcome.alpn().as_deref(), Some(&b"http/1.1"[..]));

        let none = client_trusting(&[&pem], &[]);
        let outcome = handshake(ca.server_config(), none, "api.test").await;
        assert_eq!(outcome.alpn(), None);
    }

    #[tokio::test]
    async fn no_sni_fails() {
        let ca = SandboxCa::generate("sbx-nosni").unwrap();
        let mut config = (*client_trusting(&[&ca.cert_pem()], &[])).clone();
        config.enable_sni = false;
        let outcome = handshake(ca.server_config(), Arc::new(config), "api.test").await;
        assert!(outcome.client.is_err());
        assert!(outcome.server.is_err());
        assert_eq!(ca.issuer.cached_len(), 0);
    }

    #[test]
    fn leaf_cache_is_bounded() {
        let ca = SandboxCa::generate("sbx-bound").unwrap();
        for i in 0..LEAF_CONFIG.max_cached + 5 {
            ca.issuer.leaf_for(&format!("h{i}.test")).unwrap();
        }
        assert_eq!(ca.issuer.cached_len(), LEAF_CONFIG.max_cached);
    }

    #[test]
    fn long_labels_and_names_are_accepted() {
        let label = "x".repeat(200);
        let ca = SandboxCa::generate(&label).unwrap();
        let name = format!("{}.{}.test", "a".repeat(63), "b".repeat(63));
        ca.issuer.leaf_for(&name).unwrap();
    }

    #[test]
    fn debug_does_not_leak_the_key() {
        let ca = SandboxCa::generate("sbx-debug").unwrap();
        ca.issuer.leaf_for("api.test").unwrap();
        let debug = format!("{ca:?} {:?} {:?}", ca.issuer, ca.server_config());
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
        assert!(debug.contains("sbx-debug"));
    }

    #[test]
    fn timing_generate_and_issue() {
        let start = Instant::now();
        let ca = SandboxCa::generate("sbx-timing").unwrap();
        let generate = start.elapsed();

        let start = Instant::now();
        ca.issuer.leaf_for("first.test").unwrap();
        let first_leaf = start.elapsed();

        const N: u32 = 50;
        let start = Instant::now();
        for i in 0..N {
            ca.issuer.leaves.issue(&format!("n{i}.test")).unwrap();
        }
        let per_leaf = start.elapsed() / N;

        let start = Instant::now();
        ca.issuer.leaf_for("first.test").unwrap();
        let cached = start.elapsed();

        println!(
            "SandboxCa::generate: {generate:?}; first leaf: {first_leaf:?}; \
             leaf issuance (mean of {N}): {per_leaf:?}; cached lookup: {cached:?}"
        );
    }

    /// A test upstream: its own CA, and a server presenting a leaf for
    /// `upstream.test` signed by it.
    struct TestUpstream {
        ca_pem: String,
        server_config: Arc<ServerConfig>,
    }

    fn test_upstream() -> TestUpstream {
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "test upstream CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let mut leaf_params = CertificateParams::new(vec!["upstream.test".to_owned()]).unwrap();
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let server_config = ServerConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf_cert.der().clone()], key_der)
            .unwrap();
        TestUpstream {
            ca_pem: ca_cert.pem(),
            server_config: Arc::new(server_config),
        }
    }

    #[tokio::test]
    async fn upstream_verifies_name_and_issuer() {
        let upstream = test_upstream();
        let tls = UpstreamTls::with_roots_only(std::slice::from_ref(&upstream.ca_pem)).unwrap();

        let ok = handshake(
            Arc::clone(&upstream.server_config),
            tls.client_config(&[]),
            "upstream.test",
        )
        .await;
        assert!(ok.both_ok(), "handshake failed: {:?}", ok.client.err());

        let wrong_name = handshake(
            Arc::clone(&upstream.server_config),
            tls.client_config(&[]),
            "other.test",
        )
        .await;
        let err = wrong_name.client.expect_err("name mismatch accepted");
        assert!(
            matches!(
                cert_error(&err),
                Some(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                )
            ),
            "unexpected error: {err}"
        );

        let unrelated = SandboxCa::generate("unrelated").unwrap();
        let stranger = UpstreamTls::with_roots_only(&[unrelated.cert_pem()]).unwrap();
        let untrusted = handshake(
            Arc::clone(&upstream.server_config),
            stranger.client_config(&[]),
            "upstream.test",
        )
        .await;
        let err = untrusted.client.expect_err("unknown CA accepted");
        assert!(
            matches!(cert_error(&err), Some(CertificateError::UnknownIssuer)),
            "unexpected error: {err}"
        );
    }

    #[tokio::test]
    async fn upstream_connector_offers_alpn() {
        let upstream = test_upstream();
        let mut server_config = (*upstream.server_config).clone();
        server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let server_config = Arc::new(server_config);
        let tls = UpstreamTls::with_roots_only(&[upstream.ca_pem]).unwrap();

        let both = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let h1 = vec![b"http/1.1".to_vec()];
        // The common variants are cached, not rebuilt.
        assert!(Arc::ptr_eq(
            &tls.client_config(&both),
            &tls.client_config(&both)
        ));
        assert!(Arc::ptr_eq(
            &tls.client_config(&h1),
            &tls.client_config(&h1)
        ));
        assert!(Arc::ptr_eq(
            &tls.client_config(&[]),
            &tls.client_config(&[])
        ));

        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from("upstream.test").unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&server_config));
        let (client, server) = tokio::join!(
            tls.connector(&h1).connect(name, client_io),
            acceptor.accept(server_io)
        );
        server.unwrap();
        assert_eq!(
            client.unwrap().get_ref().1.alpn_protocol(),
            Some(&b"http/1.1"[..])
        );

        let outcome = handshake(server_config, tls.client_config(&both), "upstream.test").await;
        assert_eq!(outcome.alpn().as_deref(), Some(&b"h2"[..]));
    }

    /// A path in the temp dir unique to this process and `tag`.
    fn temp_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "airlock-egress-ca-test-{}-{tag}.pem",
            std::process::id()
        ))
    }

    #[tokio::test]
    async fn upstream_new_loads_extra_ca_files() {
        let upstream = test_upstream();
        let path = temp_path("extra");
        std::fs::write(&path, &upstream.ca_pem).unwrap();
        let tls = UpstreamTls::new(std::slice::from_ref(&path));
        let _ = std::fs::remove_file(&path);
        let tls = tls.unwrap();

        let outcome = handshake(
            upstream.server_config,
            tls.client_config(&[]),
            "upstream.test",
        )
        .await;
        assert!(
            outcome.both_ok(),
            "handshake failed: {:?}",
            outcome.client.err()
        );
    }

    #[test]
    fn upstream_new_rejects_bad_extra_ca_files() {
        let missing = temp_path("missing");
        let err = UpstreamTls::new(std::slice::from_ref(&missing)).unwrap_err();
        assert!(matches!(err, CaError::ReadCaFile { .. }), "{err}");
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );

        let keyonly = temp_path("keyonly");
        let key = KeyPair::generate().unwrap();
        std::fs::write(&keyonly, key.serialize_pem()).unwrap();
        let err = UpstreamTls::new(std::slice::from_ref(&keyonly)).unwrap_err();
        let _ = std::fs::remove_file(&keyonly);
        assert!(matches!(err, CaError::NoCertificate { .. }), "{err}");
        assert!(
            err.to_string().contains(&keyonly.display().to_string()),
            "{err}"
        );

        let garbage = temp_path("garbage");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let err = UpstreamTls::new(std::slice::from_ref(&garbage)).unwrap_err();
        let _ = std::fs::remove_file(&garbage);
        assert!(matches!(err, CaError::NoCertificate { .. }), "{err}");
    }

    #[test]
    fn roots_only_rejects_empty_input() {
        assert!(matches!(
            UpstreamTls::with_roots_only(&[]),
            Err(CaError::NoRoots { .. })
        ));
        assert!(matches!(
            UpstreamTls::with_roots_only(&["nothing here".to_owned()]),
            Err(CaError::BadRootPem { index: 0, .. })
        ));
    }
}
