//! TLS server leaf certificates issued on the fly, one per DNS name, by an
//! in-memory CA, and kept in a bounded cache that re-issues them before they
//! expire.
//!
//! Both of airlock's TLS-terminating ends use this: the egress gateway's
//! per-sandbox CA (intercepting the sandbox's TLS) and the expose ingress's
//! persistent CA (serving exposed HTTPS ports). They differ only in the
//! numbers of [`LeafConfig`] and in what their CAs are named and constrained
//! to ([`new_ca`] makes one; expose also reloads its own from disk), and
//! deciding which names to answer stays with them.
//!
//! Leaves are ECDSA P-256, carry the name as their only SAN (and as CN when
//! it fits), the serverAuth EKU and an authority key identifier, and are valid
//! from [`BACKDATE`] ago for [`LeafConfig::lifetime`], capped by the CA's own
//! notAfter.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// Backdating of every certificate's notBefore, so a client whose clock lags
/// the host's a little still accepts them. Public so the CAs issuing the
/// leaves backdate themselves the same way.
pub const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// RFC 5280's upper bound for a commonName.
pub const MAX_CN_LEN: usize = 64;

/// What differs between users of a [`LeafIssuer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafConfig {
    /// How long a leaf is valid (capped by the CA's own notAfter).
    pub lifetime: Duration,
    /// A cached leaf is re-issued once it is this close to expiring, so no
    /// connection is served a certificate about to lapse mid-connection.
    pub refresh_margin: Duration,
    /// Most leaves kept (at least one is). Whoever can pick the names can
    /// make the issuer issue for as many as they like, so the cache must be
    /// bounded; a miss costs about a millisecond of key generation.
    pub max_cached: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LeafError {
    // Inner errors are part of the message rather than a `#[source]`, so that
    // printing the error once says everything, whatever the caller's style.
    #[error("leaf certificate for {name:?}: {step}: {error}")]
    Certificate {
        name: String,
        step: &'static str,
        error: rcgen::Error,
    },

    #[error("leaf certificate for {name:?}: rustls rejected its key: {error}")]
    Key { name: String, error: rustls::Error },

    #[error("leaf certificate for {name:?}: the CA has expired")]
    CaExpired { name: String },

    #[error("{0}")]
    Clock(#[from] ClockError),
}

#[derive(Debug, thiserror::Error)]
pub enum NewCaError {
    #[error("{step}: {error}")]
    Certificate {
        step: &'static str,
        error: rcgen::Error,
    },

    #[error("{0}")]
    Clock(#[from] ClockError),
}

/// A time that an X.509 certificate cannot express (before 1970, or too far
/// in the future): the system clock is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system clock is outside the range a certificate can express")]
pub struct ClockError;

/// Sets `params`' validity to `[not_before, not_after]`.
///
/// rcgen takes `time::OffsetDateTime`, a crate airlock does not depend on;
/// deriving the values from rcgen's own epoch keeps that type unnamed.
pub fn set_validity(
    params: &mut CertificateParams,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<(), ClockError> {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let convert = |t: SystemTime| {
        let since_epoch = t.duration_since(UNIX_EPOCH).ok()?;
        epoch.checked_add(since_epoch.try_into().ok()?)
    };
    params.not_before = convert(not_before).ok_or(ClockError)?;
    params.not_after = convert(not_after).ok_or(ClockError)?;
    Ok(())
}

/// A CA made by [`new_ca`].
pub struct NewCa {
    /// The CA certificate, for clients to trust.
    pub cert: Certificate,
    /// Signs leaves; holds the CA's private key ([`Issuer::key`]).
    pub issuer: Issuer<'static, KeyPair>,
    /// The CA certificate's notAfter, for [`LeafIssuer::new`].
    pub not_after: SystemTime,
}

/// Makes a CA to issue leaves with: a fresh ECDSA P-256 key, and a
/// certificate with `params`' name (and whatever constraints the caller set)
/// that is self-signed, valid from [`BACKDATE`] ago for `lifetime`, and able
/// to sign leaves only. This sets `params`' validity, CA flag and key usages.
pub fn new_ca(mut params: CertificateParams, lifetime: Duration) -> Result<NewCa, NewCaError> {
    let cert_err = |step: &'static str| move |error| NewCaError::Certificate { step, error };
    let now = SystemTime::now();
    // Backdated like the leaves, so a client whose clock lags the host's a
    // little still accepts them.
    let not_before = now.checked_sub(BACKDATE).ok_or(ClockError)?;
    let not_after = now.checked_add(lifetime).ok_or(ClockError)?;
    // Path length 0: this CA signs leaves only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, not_before, not_after)?;

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(cert_err("generating the key"))?;
    let cert = params
        .self_signed(&key)
        .map_err(cert_err("self-signing the certificate"))?;
    Ok(NewCa {
        cert,
        issuer: Issuer::new(params, key),
        not_after,
    })
}

impl fmt::Debug for NewCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewCa")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

struct CachedLeaf {
    key: Arc<CertifiedKey>,
    /// When to stop serving this leaf and issue a fresh one.
    refresh_at: SystemTime,
}

/// Issues leaf certificates signed by a CA and caches them per name.
///
/// The CA's private key never leaves this struct: there is no getter, and
/// `Debug` prints only the configuration and the cache's size.
pub struct LeafIssuer {
    issuer: Issuer<'static, KeyPair>,
    ca_not_after: SystemTime,
    provider: Arc<CryptoProvider>,
    config: LeafConfig,
    /// Keyed by the name as given (callers normalise it).
    cache: Mutex<HashMap<String, CachedLeaf>>,
}

impl LeafIssuer {
    /// An issuer signing with `issuer`, a CA valid until `ca_not_after`;
    /// `provider` loads the leaf keys for rustls.
    pub fn new(
        issuer: Issuer<'static, KeyPair>,
        ca_not_after: SystemTime,
        provider: Arc<CryptoProvider>,
        config: LeafConfig,
    ) -> LeafIssuer {
        LeafIssuer {
            issuer,
            ca_not_after,
            provider,
            config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<String, CachedLeaf>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every mutation is a single insert or remove), so poison is moot.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many leaves are cached.
    pub fn cached_len(&self) -> usize {
        self.cache().len()
    }

    /// The leaf for DNS name `name`, from the cache or freshly issued.
    ///
    /// `name` is used as given: callers normalise it (case, trailing dot),
    /// so that one name is one cache entry however a client spells it.
    pub fn leaf_for(&self, name: &str) -> Result<Arc<CertifiedKey>, LeafError> {
        self.leaf_for_at(name, SystemTime::now())
    }

    fn leaf_for_at(&self, name: &str, now: SystemTime) -> Result<Arc<CertifiedKey>, LeafError> {
        if let Some(hit) = self.cache().get(name) {
            if now < hit.refresh_at {
                return Ok(Arc::clone(&hit.key));
            }
        }

        // Issue outside the lock so handshakes for other names are not held
        // up by key generation. Two racing handshakes for the same new name
        // may both issue; the first insert wins and both get its leaf.
        let fresh = self.issue_at(name, now)?;

        let mut cache = self.cache();
        if let Some(hit) = cache.get(name) {
            if now < hit.refresh_at {
                return Ok(Arc::clone(&hit.key));
            }
        } else if cache.len() >= self.config.max_cached.max(1) {
            // Arbitrary victim (HashMap order is randomised per process).
            // Connections using it hold their own Arc and are unaffected.
            if let Some(victim) = cache.keys().next().cloned() {
                cache.remove(&victim);
            }
        }
        let key = Arc::clone(&fresh.key);
        cache.insert(name.to_owned(), fresh);
        Ok(key)
    }

    /// Issues a fresh leaf for DNS name `name`, bypassing the cache.
    pub fn issue(&self, name: &str) -> Result<Arc<CertifiedKey>, LeafError> {
        Ok(self.issue_at(name, SystemTime::now())?.key)
    }

    fn issue_at(&self, name: &str, now: SystemTime) -> Result<CachedLeaf, LeafError> {
        let cert_err = |step: &'static str| {
            move |error: rcgen::Error| LeafError::Certificate {
                name: name.to_owned(),
                step,
                error,
            }
        };

        // A leaf must not outlive its CA: clients reject such chains anyway.
        let wanted_not_after = now.checked_add(self.config.lifetime).ok_or(ClockError)?;
        let not_after = wanted_not_after.min(self.ca_not_after);
        if not_after <= now {
            return Err(LeafError::CaExpired {
                name: name.to_owned(),
            });
        }
        let not_before = now.checked_sub(BACKDATE).ok_or(ClockError)?;
        // Re-issuing helps only while the CA outlives the current leaf; once
        // the leaf is capped by the CA, keep serving it until it lapses.
        let refresh_at = if not_after < self.ca_not_after {
            not_after
                .checked_sub(self.config.refresh_margin)
                .unwrap_or(now)
        } else {
            not_after
        };

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        // Clients match on the SAN; the CN is only for humans, and is left out
        // when the name would exceed the CN length bound.
        if name.len() <= MAX_CN_LEN {
            dn.push(DnType::CommonName, name);
        }
        dn.push(DnType::OrganizationName, "airlock");
        params.distinguished_name = dn;
        let dns_name = name.try_into().map_err(cert_err("encoding the name"))?;
        params.subject_alt_names = vec![SanType::DnsName(dns_name)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // Lets clients match the leaf to the CA by key id, not just by name.
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, not_before, not_after)?;

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(cert_err("generating the key"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(cert_err("signing the certificate"))?;

        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = self
            .provider
            .key_provider
            .load_private_key(key_der)
            .map_err(|error| LeafError::Key {
                name: name.to_owned(),
                error,
            })?;
        // Clients trust the CA as a root, so the chain is the leaf alone.
        let certified = CertifiedKey::new(vec![cert.der().clone()], signing_key);
        Ok(CachedLeaf {
            key: Arc::new(certified),
            refresh_at,
        })
    }
}

impl fmt::Debug for LeafIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafIssuer")
            .field("config", &self.config)
            .field("ca_not_after", &self.ca_not_after)
            .field("cached_leaves", &self.cached_len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::RootCertStore;
    use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

    use super::*;

    const HOUR: Duration = Duration::from_secs(60 * 60);
    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    const CONFIG: LeafConfig = LeafConfig {
        lifetime: DAY,
        refresh_margin: HOUR,
        max_cached: 8,
    };

    fn ca_params() -> CertificateParams {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "leafcert test CA");
        params
    }

    /// A test CA valid until `not_after`: its certificate, and an issuer
    /// with `config` signing with it.
    fn issuer(config: LeafConfig, not_after: SystemTime) -> (CertificateDer<'static>, LeafIssuer) {
        let lifetime = not_after.duration_since(SystemTime::now()).unwrap();
        let ca = new_ca(ca_params(), lifetime).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // The exact time asked for, so tests can compare with it.
        let leaves = LeafIssuer::new(ca.issuer, not_after, provider, config);
        (ca.cert.der().clone(), leaves)
    }

    #[test]
    fn new_ca_signs_leaves_only() {
        let now = SystemTime::now();
        let ca = new_ca(ca_params(), 2 * DAY).unwrap();
        let (_, cert) = X509Certificate::from_der(ca.cert.der()).unwrap();
        assert!(cert.is_ca());
        let constraints = cert.basic_constraints().unwrap().unwrap().value;
        assert_eq!(constraints.path_len_constraint, Some(0));
        let usage = cert.key_usage().unwrap().unwrap().value;
        assert!(usage.key_cert_sign() && usage.crl_sign());
        assert!(!usage.digital_signature());
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .ok(),
            Some("leafcert test CA")
        );
        let validity = cert.validity();
        assert_eq!(validity.not_after.timestamp(), unix_secs(ca.not_after));
        assert!((unix_secs(ca.not_after) - unix_secs(now + 2 * DAY)).abs() <= 1);
        assert_eq!(
            validity.not_after.timestamp() - validity.not_before.timestamp(),
            (2 * DAY + BACKDATE).as_secs() as i64
        );
        // Its key is the issuer's.
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            ca.issuer.key().public_key_raw()
        );
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }

    fn leaf_der(key: &CertifiedKey) -> &CertificateDer<'_> {
        assert_eq!(key.cert.len(), 1, "the chain should be the leaf alone");
        key.end_entity_cert().unwrap()
    }

    fn common_name(der: &CertificateDer<'_>) -> Option<String> {
        let (_, cert) = X509Certificate::from_der(der).unwrap();
        let cn = cert.subject().iter_common_name().next()?;
        Some(cn.as_str().unwrap().to_owned())
    }

    fn not_after_secs(der: &CertificateDer<'_>) -> i64 {
        let (_, cert) = X509Certificate::from_der(der).unwrap();
        cert.validity().not_after.timestamp()
    }

    fn unix_secs(t: SystemTime) -> i64 {
        t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
    }

    /// Verifies `leaf` for `name` the way a TLS client trusting only `ca`
    /// would, at `now`.
    fn verify(
        ca: &CertificateDer<'static>,
        leaf: &CertificateDer<'_>,
        name: &str,
        now: SystemTime,
    ) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let now = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap());
        verifier
            .verify_server_cert(leaf, &[], &name, &[], now)
            .map(|_| ())
    }

    #[test]
    fn issues_a_server_leaf_a_client_accepts() {
        let now = SystemTime::now();
        let (ca, leaves) = issuer(CONFIG, now + 30 * DAY);
        let key = leaves.leaf_for("api.test").unwrap();
        let der = leaf_der(&key);
        verify(&ca, der, "api.test", now).unwrap();
        assert!(verify(&ca, der, "other.test", now).is_err());

        let (_, cert) = X509Certificate::from_der(der).unwrap();
        assert!(!cert.is_ca());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth);
        let has_key_id = cert.extensions().iter().any(|ext| {
            matches!(
                ext.parsed_extension(),
                ParsedExtension::AuthorityKeyIdentifier(aki) if aki.key_identifier.is_some()
            )
        });
        assert!(has_key_id, "no authority key identifier");
        // Backdated, and valid for the configured lifetime.
        let validity = cert.validity();
        assert!(validity.not_before.timestamp() <= unix_secs(now - BACKDATE + HOUR / 60));
        assert!(validity.not_before.timestamp() >= unix_secs(now - BACKDATE - HOUR / 60));
        let lifetime = validity.not_after.timestamp() - validity.not_before.timestamp();
        assert_eq!(lifetime, (CONFIG.lifetime + BACKDATE).as_secs() as i64);
        // A client whose clock lags by less than the backdating accepts it.
        verify(&ca, der, "api.test", now - BACKDATE / 2).unwrap();
    }

    #[test]
    fn caches_per_name() {
        let (_, leaves) = issuer(CONFIG, SystemTime::now() + 30 * DAY);
        let first = leaves.leaf_for("a.test").unwrap();
        assert!(Arc::ptr_eq(&first, &leaves.leaf_for("a.test").unwrap()));
        let other = leaves.leaf_for("b.test").unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(leaves.cached_len(), 2);
        // `issue` bypasses the cache.
        let uncached = leaves.issue("a.test").unwrap();
        assert!(!Arc::ptr_eq(&first, &uncached));
        assert!(Arc::ptr_eq(&first, &leaves.leaf_for("a.test").unwrap()));
        assert_eq!(leaves.cached_len(), 2);
    }

    #[test]
    fn cache_is_bounded() {
        let config = LeafConfig {
            max_cached: 3,
            ..CONFIG
        };
        let (_, leaves) = issuer(config, SystemTime::now() + 30 * DAY);
        for i in 0..5 {
            leaves.leaf_for(&format!("h{i}.test")).unwrap();
            assert_eq!(leaves.cached_len(), (i + 1).min(3));
        }
        // A name still cached is a hit, not an insert that evicts another.
        let cached: Vec<String> = leaves.cache().keys().cloned().collect();
        for name in &cached {
            leaves.leaf_for(name).unwrap();
        }
        let mut after: Vec<String> = leaves.cache().keys().cloned().collect();
        let mut before = cached;
        before.sort();
        after.sort();
        assert_eq!(before, after);

        // A bound of 0 still keeps the latest leaf.
        let (_, leaves) = issuer(
            LeafConfig {
                max_cached: 0,
                ..CONFIG
            },
            SystemTime::now() + 30 * DAY,
        );
        leaves.leaf_for("a.test").unwrap();
        leaves.leaf_for("b.test").unwrap();
        assert_eq!(leaves.cached_len(), 1);
    }

    #[test]
    fn refreshes_before_expiry() {
        let now = SystemTime::now();
        let (ca, leaves) = issuer(CONFIG, now + 30 * DAY);
        let first = leaves.leaf_for_at("a.test", now).unwrap();
        let refresh_at = now + CONFIG.lifetime - CONFIG.refresh_margin;

        let before = leaves
            .leaf_for_at("a.test", refresh_at - Duration::from_secs(1))
            .unwrap();
        assert!(Arc::ptr_eq(&first, &before));

        let after = leaves.leaf_for_at("a.test", refresh_at).unwrap();
        assert!(!Arc::ptr_eq(&first, &after));
        assert!(not_after_secs(leaf_der(&after)) > not_after_secs(leaf_der(&first)));
        verify(&ca, leaf_der(&after), "a.test", refresh_at).unwrap();
        // The fresh leaf replaced the stale one.
        assert_eq!(leaves.cached_len(), 1);
        assert!(Arc::ptr_eq(
            &after,
            &leaves.leaf_for_at("a.test", refresh_at).unwrap()
        ));
    }

    #[test]
    fn capped_by_the_ca_not_after() {
        let now = SystemTime::now();
        let ca_not_after = now + 3 * HOUR;
        let (ca, leaves) = issuer(CONFIG, ca_not_after);
        let first = leaves.leaf_for_at("a.test", now).unwrap();
        assert_eq!(not_after_secs(leaf_der(&first)), unix_secs(ca_not_after));
        verify(&ca, leaf_der(&first), "a.test", now).unwrap();

        // Re-issuing would not extend it, so it is served until it lapses,
        // refresh margin or not.
        let late = ca_not_after - Duration::from_secs(1);
        assert!(Arc::ptr_eq(
            &first,
            &leaves.leaf_for_at("a.test", late).unwrap()
        ));

        let err = leaves.leaf_for_at("a.test", ca_not_after).unwrap_err();
        assert!(
            matches!(&err, LeafError::CaExpired { name } if name == "a.test"),
            "{err}"
        );
        let err = leaves.leaf_for_at("new.test", ca_not_after).unwrap_err();
        assert!(matches!(err, LeafError::CaExpired { .. }), "{err}");
    }

    #[test]
    fn common_name_only_when_short_enough() {
        let now = SystemTime::now();
        let (ca, leaves) = issuer(CONFIG, now + 30 * DAY);

        let short = "api.test";
        let key = leaves.leaf_for(short).unwrap();
        assert_eq!(common_name(leaf_der(&key)).as_deref(), Some(short));

        let longest = format!("{}.test", "a".repeat(MAX_CN_LEN - ".test".len()));
        assert_eq!(longest.len(), MAX_CN_LEN);
        let key = leaves.leaf_for(&longest).unwrap();
        assert_eq!(common_name(leaf_der(&key)), Some(longest.clone()));

        // Over the CN bound: no CN, but the SAN still makes it valid.
        let long = format!("{}.{}.test", "a".repeat(63), "b".repeat(63));
        let key = leaves.leaf_for(&long).unwrap();
        assert_eq!(common_name(leaf_der(&key)), None);
        verify(&ca, leaf_der(&key), &long, now).unwrap();
    }

    #[test]
    fn errors_name_the_name() {
        let (_, leaves) = issuer(CONFIG, SystemTime::now() + 30 * DAY);
        let err = leaves.leaf_for("bücher.test").unwrap_err();
        assert!(
            matches!(&err, LeafError::Certificate { name, step: "encoding the name", .. } if name == "bücher.test"),
            "{err}"
        );
        assert!(err.to_string().contains("\"bücher.test\""), "{err}");
        assert_eq!(leaves.cached_len(), 0);
    }

    #[test]
    fn set_validity_rejects_times_before_the_epoch() {
        let mut params = CertificateParams::default();
        let before_epoch = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(
            set_validity(&mut params, before_epoch, SystemTime::now()),
            Err(ClockError)
        );
        assert_eq!(
            LeafError::from(ClockError).to_string(),
            ClockError.to_string()
        );
    }

    #[test]
    fn debug_does_not_leak_the_key() {
        let (_, leaves) = issuer(CONFIG, SystemTime::now() + 30 * DAY);
        leaves.leaf_for("api.test").unwrap();
        let debug = format!("{leaves:?}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
        assert!(debug.contains("cached_leaves: 1"), "{debug}");
    }
}
