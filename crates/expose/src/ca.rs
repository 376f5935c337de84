//! The ingress's TLS identity: a local CA kept on disk that issues a leaf
//! certificate per SNI name, or one operator-given certificate for all names.
//!
//! Either way the rustls resolver answers only names equal to or under the
//! base domain; any other SNI (or none) fails the handshake, so the ingress
//! never presents a certificate for a name it does not serve.
//!
//! Every rustls object here is built with the ring provider explicitly, so
//! behaviour never depends on which provider (if any) some other part of the
//! process installed as the default.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leafcert::{LeafConfig, LeafError, LeafIssuer, NewCaError, MAX_CN_LEN};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, GeneralSubtree, Issuer, KeyPair, NameConstraints,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use crate::{is_under, normalize_base_domain, ConfigError};

/// The CA certificate's file name in the CA directory. World-readable: users
/// copy it into their trust stores (or pass it to `curl --cacert`).
pub const CA_CERT_FILE: &str = "expose-ca.pem";
/// The CA private key's file name in the CA directory (mode 0600).
pub const CA_KEY_FILE: &str = "expose-ca-key.pem";

/// CA lifetime. Users install this CA by hand, so it should not need
/// re-installing often; its name constraint limits a leaked key's reach to
/// names under the base domain.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// The leaves the ingress presents.
const LEAF_CONFIG: LeafConfig = LeafConfig {
    // Capped by the CA's own notAfter. Leaves live only in memory, so a long
    // one costs nothing; 90 days stays under what clients cap server
    // certificates at.
    lifetime: Duration::from_secs(90 * 24 * 60 * 60),
    // Re-issued this close to expiring, so no connection is served a
    // certificate about to lapse.
    refresh_margin: Duration::from_secs(24 * 60 * 60),
    // A client can make the ingress issue for any name under the base, so
    // the cache must be bounded; a miss costs about a millisecond.
    max_cached: 4096,
};

const ALPN_HTTP1: &[u8] = b"http/1.1";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(transparent)]
    Config(#[from] ConfigError),

    // Inner errors are part of the message rather than a `#[source]`, so that
    // printing the error once says everything, whatever the caller's style.
    #[error("{action} {}: {error}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },

    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },

    #[error("generating the expose CA: {step}: {error}")]
    Generate {
        step: &'static str,
        error: rcgen::Error,
    },

    #[error(transparent)]
    Leaf(LeafError),

    #[error("the expose CA has expired; delete it to have a new one made")]
    CaExpired,

    #[error("the system clock is outside the range a certificate can express")]
    Clock,

    #[error("building the ingress TLS server config: {0}")]
    Tls(rustls::Error),
}

/// The ring provider, the only one this crate builds rustls configs with.
fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `err` from issuing a leaf, as this crate reports it.
fn leaf_error(err: LeafError) -> CertError {
    match err {
        LeafError::CaExpired { .. } => CertError::CaExpired,
        LeafError::Clock(_) => CertError::Clock,
        err @ (LeafError::Certificate { .. } | LeafError::Key { .. }) => CertError::Leaf(err),
    }
}

/// The ingress's certificates and the TLS server config presenting them.
///
/// No private key leaves this struct: there is no getter, and `Debug`
/// prints only the base domain and where the certificates came from.
pub struct ExposeCerts {
    base_domain: String,
    /// Set in CA mode: the CA certificate and its file.
    ca: Option<(String, PathBuf)>,
    resolver: Arc<ExposeResolver>,
    server_config: Arc<ServerConfig>,
}

impl ExposeCerts {
    /// Loads the CA kept in `dir` ([`CA_CERT_FILE`], [`CA_KEY_FILE`]), or
    /// makes one there if there is none, and issues leaves for names under
    /// `base_domain` with it.
    ///
    /// A new CA is an ECDSA P-256 key, valid for 10 years, name-constrained
    /// to `base_domain`. A file that is unreadable, not what it should be,
    /// or a CA that cannot issue for `base_domain` (e.g. made for another
    /// base) is an error naming the file; nothing is overwritten then.
    ///
    /// One daemon owns a directory: two processes creating a CA in the same
    /// empty directory at once could leave a key that is not the
    /// certificate's, which the next load reports as an error.
    pub fn load_or_create(dir: &Path, base_domain: &str) -> Result<ExposeCerts, CertError> {
        let base_domain = normalize_base_domain(base_domain)?;
        fs::create_dir_all(dir).map_err(|error| CertError::Io {
            action: "creating the CA directory",
            path: dir.to_owned(),
            error,
        })?;
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);

        let (cert_pem, key_pem) = match (read_optional(&cert_path)?, read_optional(&key_path)?) {
            (Some(cert), Some(key)) => (cert, key),
            // The key is written before the certificate, so a key alone is a
            // creation that was interrupted. Nobody can have trusted a CA
            // whose certificate was never written: make a new one.
            (None, _) => create_ca(&base_domain, &cert_path, &key_path)?,
            (Some(_), None) => {
                return Err(CertError::BadFile {
                    path: key_path.clone(),
                    reason: format!(
                        "missing, but the CA certificate {} exists; restore the key, or \
                         delete the certificate to have a new CA made",
                        cert_path.display()
                    ),
                })
            }
        };

        let (issuer, ca_not_after) = load_ca(&cert_path, &cert_pem, &key_path, &key_pem)?;
        warn_if_key_readable_by_others(&key_path);
        let issuer = LeafIssuer::new(issuer, ca_not_after, ring_provider(), LEAF_CONFIG);
        self_check(&issuer, &cert_pem, &base_domain).map_err(|reason| CertError::BadFile {
            path: cert_path.clone(),
            reason: format!(
                "this CA cannot issue certificates that clients accept for names under \
                 {base_domain} ({reason}); if the base domain changed, delete {} and {} \
                 to have a new CA made",
                cert_path.display(),
                key_path.display()
            ),
        })?;
        tracing::info!(ca = %cert_path.display(), %base_domain, "expose CA ready");
        Self::build(
            base_domain,
            Some((cert_pem, cert_path)),
            Source::Ca(Box::new(issuer)),
        )
    }

    /// Presents the operator's certificate chain (`cert_chain`, PEM, leaf
    /// first) with its private key (`key`, PEM) for every name under
    /// `base_domain`, typically a wildcard `*.<base>` certificate.
    pub fn from_files(
        cert_chain: &Path,
        key: &Path,
        base_domain: &str,
    ) -> Result<ExposeCerts, CertError> {
        let base_domain = normalize_base_domain(base_domain)?;
        let bad = |path: &Path, reason: String| CertError::BadFile {
            path: path.to_owned(),
            reason,
        };
        let chain_pem = read(cert_chain)?;
        let key_pem = read(key)?;
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(cert_chain, format!("not valid PEM: {e}")))?;
        if chain.is_empty() {
            return Err(bad(
                cert_chain,
                "contains no certificate (expected -----BEGIN CERTIFICATE----- blocks)".into(),
            ));
        }
        let key_der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| bad(key, format!("holds no usable PEM private key: {e}")))?;
        let certified = CertifiedKey::from_der(chain, key_der, &ring_provider()).map_err(|e| {
            bad(
                key,
                format!(
                    "cannot be used with the certificate in {}: {e}",
                    cert_chain.display()
                ),
            )
        })?;
        tracing::info!(cert = %cert_chain.display(), %base_domain, "expose certificate loaded");
        Self::build(base_domain, None, Source::Fixed(Arc::new(certified)))
    }

    fn build(
        base_domain: String,
        ca: Option<(String, PathBuf)>,
        source: Source,
    ) -> Result<ExposeCerts, CertError> {
        let resolver = Arc::new(ExposeResolver {
            base_domain: base_domain.clone(),
            source,
        });
        let mut server_config = ServerConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .map_err(CertError::Tls)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        // HTTP/1.1 only: bytes are spliced raw to the sandbox's server, which
        // cannot be assumed to speak h2 (and h2 over TLS needs ALPN to say
        // so, which this end cannot answer for it).
        server_config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(ExposeCerts {
            base_domain,
            ca,
            resolver,
            server_config: Arc::new(server_config),
        })
    }

    pub fn base_domain(&self) -> &str {
        &self.base_domain
    }

    /// The CA certificate (PEM), for users to trust; `None` with an
    /// operator certificate.
    pub fn ca_cert_pem(&self) -> Option<&str> {
        self.ca.as_ref().map(|(pem, _)| pem.as_str())
    }

    /// Where the CA certificate is kept; `None` with an operator certificate.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.ca.as_ref().map(|(_, path)| path.as_path())
    }

    /// The certificate resolver alone, for a caller building its own config.
    pub fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        Arc::clone(&self.resolver) as Arc<dyn ResolvesServerCert>
    }

    /// The TLS server config for [`serve`](crate::serve): ALPN `http/1.1`.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server_config)
    }
}

impl fmt::Debug for ExposeCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExposeCerts")
            .field("base_domain", &self.base_domain)
            .field("ca_cert_path", &self.ca_cert_path())
            .field("cached_leaves", &self.resolver.cached_len())
            .finish_non_exhaustive()
    }
}

/// The key was written 0600; if it has since been opened up (copied with
/// other permissions, restored from a backup), say so but keep working:
/// refusing to start would not make the key any less exposed.
fn warn_if_key_readable_by_others(key_path: &Path) {
    if let Ok(meta) = fs::metadata(key_path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                key = %key_path.display(),
                "the expose CA key is accessible to other users; it should be mode 0600"
            );
        }
    }
}

/// Reads a file, `None` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, CertError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(CertError::Io {
            action: "reading",
            path: path.to_owned(),
            error,
        }),
    }
}

fn read(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|error| CertError::Io {
        action: "reading",
        path: path.to_owned(),
        error,
    })
}

/// Writes `contents` to `path` with exactly `mode`, atomically: a temporary
/// file in the same directory, synced, then renamed over `path`. A reader
/// (or a crash) never sees a half-written file.
fn write_atomically(path: &Path, contents: &str, mode: u32) -> Result<(), CertError> {
    let io_err = |error| CertError::Io {
        action: "writing",
        path: path.to_owned(),
        error,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    // A leftover from an earlier crashed process that had the same pid.
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        // Created with the final mode from the start, so the key is never
        // readable by others, not even for an instant.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The create mode was filtered by the umask; the CA certificate must
        // be world-readable whatever the daemon's umask is.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(error) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(error));
    }
    // Make the rename itself durable; failing that only risks losing a CA
    // nobody has trusted yet, so it is not an error.
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Generates a CA for `base_domain` and writes it: key first, certificate
/// last (see [`ExposeCerts::load_or_create`] for why that order). Returns
/// (certificate PEM, key PEM).
fn create_ca(
    base_domain: &str,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(String, String), CertError> {
    let mut params = CertificateParams::default();
    let mut cn = format!("airlock expose CA for {base_domain}");
    if cn.len() > MAX_CN_LEN {
        cn = "airlock expose CA".to_owned();
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "airlock");
    params.distinguished_name = dn;
    // Users add this CA to their trust stores; the constraint makes clients
    // refuse anything it signs outside the base domain, so its key (on the
    // daemon's disk) cannot be used to impersonate other sites.
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::DnsName(base_domain.to_owned())],
        excluded_subtrees: vec![],
    });
    let ca = leafcert::new_ca(params, CA_LIFETIME).map_err(|err| match err {
        NewCaError::Certificate { step, error } => CertError::Generate { step, error },
        NewCaError::Clock(_) => CertError::Clock,
    })?;
    // The issuer is dropped: the files just written are loaded like any
    // others, so a new CA is checked the same way as a persisted one.
    let (cert_pem, key_pem) = (ca.cert.pem(), ca.issuer.key().serialize_pem());

    write_atomically(key_path, &key_pem, 0o600)?;
    write_atomically(cert_path, &cert_pem, 0o644)?;
    tracing::info!(ca = %cert_path.display(), %base_domain, "created a new expose CA");
    Ok((cert_pem, key_pem))
}

/// Parses a persisted CA and checks that the key belongs to the certificate
/// and that it is an unexpired CA. Returns the issuer and its notAfter.
fn load_ca(
    cert_path: &Path,
    cert_pem: &str,
    key_path: &Path,
    key_pem: &str,
) -> Result<(Issuer<'static, KeyPair>, SystemTime), CertError> {
    let bad = |path: &Path, reason: String| CertError::BadFile {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert_path, format!("not valid PEM: {e}")))?;
    let [cert] = certs.as_slice() else {
        return Err(bad(
            cert_path,
            format!("expected exactly one certificate, found {}", certs.len()),
        ));
    };
    let key = KeyPair::from_pem(key_pem).map_err(|e| {
        bad(
            key_path,
            format!("not a private key this daemon can use: {e}"),
        )
    })?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| bad(cert_path, format!("not a parsable X.509 certificate: {e}")))?;
    if !parsed.is_ca() {
        return Err(bad(cert_path, "not a CA certificate".into()));
    }
    if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(bad(
            key_path,
            format!(
                "is not the key of the CA certificate {}",
                cert_path.display()
            ),
        ));
    }
    let not_after = UNIX_EPOCH
        + Duration::from_secs(u64::try_from(parsed.validity().not_after.timestamp()).unwrap_or(0));
    if not_after <= SystemTime::now() {
        return Err(bad(
            cert_path,
            format!(
                "this CA has expired; delete it and {} to have a new one made (and trust that)",
                key_path.display()
            ),
        ));
    }
    let issuer = Issuer::from_ca_cert_der(cert, key)
        .map_err(|e| bad(cert_path, format!("cannot sign with this CA: {e}")))?;
    Ok((issuer, not_after))
}

enum Source {
    // Boxed: the issuer is large, and the enum lives once per ingress anyway.
    Ca(Box<LeafIssuer>),
    Fixed(Arc<CertifiedKey>),
}

/// The rustls certificate resolver: names under the base domain only.
struct ExposeResolver {
    base_domain: String,
    source: Source,
}

impl ExposeResolver {
    fn cached_len(&self) -> usize {
        match &self.source {
            Source::Ca(issuer) => issuer.cached_len(),
            Source::Fixed(_) => 0,
        }
    }
}

impl fmt::Debug for ExposeResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExposeResolver")
            .field("base_domain", &self.base_domain)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ExposeResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Returning None makes rustls abort the handshake.
        let Some(sni) = client_hello.server_name() else {
            tracing::debug!("TLS ClientHello without SNI; refusing");
            return None;
        };
        let name = sni.strip_suffix('.').unwrap_or(sni).to_ascii_lowercase();
        if !is_under(&name, &self.base_domain) {
            tracing::debug!(sni = %name, base = %self.base_domain, "SNI not under the base domain; refusing");
            return None;
        }
        match &self.source {
            Source::Fixed(key) => Some(Arc::clone(key)),
            Source::Ca(issuer) => match issuer.leaf_for(&name) {
                Ok(key) => Some(key),
                Err(err) => {
                    let err = leaf_error(err);
                    tracing::warn!("cannot issue a leaf certificate: {err}");
                    None
                }
            },
        }
    }
}

/// Issues a leaf for a name under `base_domain` and verifies it the way a
/// client would, against the CA alone: catches a key that does not sign for
/// the certificate and a name constraint for another base domain.
fn self_check(issuer: &LeafIssuer, ca_pem: &str, base_domain: &str) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| e.to_string())?;
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), ring_provider())
        .build()
        .map_err(|e| e.to_string())?;
    let name = format!("check.{base_domain}");
    let leaf = issuer.issue(&name).map_err(|e| leaf_error(e).to_string())?;
    let server_name = ServerName::try_from(name).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(
            leaf.end_entity_cert().map_err(|e| e.to_string())?,
            &[],
            &server_name,
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn leaf_count_after(certs: &ExposeCerts, names: &[&str]) -> usize {
        let Source::Ca(issuer) = &certs.resolver.source else {
            panic!("not CA mode")
        };
        for name in names {
            issuer.leaf_for(name).unwrap();
        }
        issuer.cached_len()
    }

    #[test]
    fn leaves_are_cached_per_name_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let certs = ExposeCerts::load_or_create(dir.path(), "sandbox.localhost").unwrap();
        assert_eq!(
            leaf_count_after(&certs, &["a.sandbox.localhost", "a.sandbox.localhost"]),
            1
        );
        let Source::Ca(issuer) = &certs.resolver.source else {
            unreachable!()
        };
        for i in 0..LEAF_CONFIG.max_cached + 3 {
            issuer.leaf_for(&format!("n{i}.sandbox.localhost")).unwrap();
        }
        assert_eq!(issuer.cached_len(), LEAF_CONFIG.max_cached);
    }

    #[test]
    fn files_have_the_right_modes() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("nested/ca");
        let certs = ExposeCerts::load_or_create(&ca_dir, "sandbox.localhost").unwrap();
        let mode = |name: &str| {
            fs::metadata(ca_dir.join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(CA_CERT_FILE), 0o644);
        assert_eq!(mode(CA_KEY_FILE), 0o600);
        assert_eq!(
            certs.ca_cert_path(),
            Some(ca_dir.join(CA_CERT_FILE).as_path())
        );
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(&ca_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let debug = format!("{certs:?}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
    }

    #[test]
    fn timing_create_load_issue() {
        let dir = tempfile::tempdir().unwrap();
        let start = Instant::now();
        ExposeCerts::load_or_create(dir.path(), "sandbox.localhost").unwrap();
        let create = start.elapsed();
        let start = Instant::now();
        let certs = ExposeCerts::load_or_create(dir.path(), "sandbox.localhost").unwrap();
        let load = start.elapsed();
        let Source::Ca(issuer) = &certs.resolver.source else {
            unreachable!()
        };
        const N: u32 = 50;
        let start = Instant::now();
        for i in 0..N {
            issuer.leaf_for(&format!("t{i}.sandbox.localhost")).unwrap();
        }
        let per_leaf = start.elapsed() / N;
        println!(
            "create CA: {create:?}; load CA: {load:?}; leaf issuance (mean of {N}): {per_leaf:?}"
        );
    }
}
