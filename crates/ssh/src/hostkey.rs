//! The gateway's host key: one Ed25519 key kept beside the store, made on
//! first start, so clients that pinned it (`known_hosts`) keep trusting
//! the daemon across restarts.

use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an OpenSSH private key: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path} is readable by other users (mode {mode:o}); chmod 600 it")]
    Exposed { path: PathBuf, mode: u32 },
    #[error("making a host key: {0}")]
    Generate(String),
}

/// Loads the key at `path`, or makes one there when there is none.
pub fn load_or_create(path: &Path) -> Result<PrivateKey, HostKeyError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let mode = fs::metadata(path)
                .map_err(|source| HostKeyError::Io {
                    what: "reading",
                    path: path.into(),
                    source,
                })?
                .permissions()
                .mode();
            // A host key others can read lets them impersonate the daemon.
            if mode & 0o077 != 0 {
                return Err(HostKeyError::Exposed {
                    path: path.into(),
                    mode: mode & 0o777,
                });
            }
            PrivateKey::from_openssh(text.as_bytes()).map_err(|e| HostKeyError::Invalid {
                path: path.into(),
                reason: e.to_string(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(source) => Err(HostKeyError::Io {
            what: "reading",
            path: path.into(),
            source,
        }),
    }
}

/// Writes a new key: to a temporary file (mode 0600 from its creation),
/// synced, then renamed into place, so a crash leaves either no key or a
/// whole one.
fn create(path: &Path) -> Result<PrivateKey, HostKeyError> {
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| HostKeyError::Generate("the system's random source failed".into()))?;
    let key = PrivateKey::new(
        KeypairData::Ed25519(Ed25519Keypair::from_seed(&seed)),
        "airlock ssh gateway",
    )
    .map_err(|e| HostKeyError::Generate(e.to_string()))?;
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| HostKeyError::Generate(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    let io = |what, source| HostKeyError::Io {
        what,
        path: tmp.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io("creating", e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io("writing", e))?;
    fs::rename(&tmp, path).map_err(|source| HostKeyError::Io {
        what: "renaming into",
        path: path.into(),
        source,
    })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_reloaded_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_host_ed25519_key");
        let made = load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_create(&path).unwrap();
        assert_eq!(made.public_key(), again.public_key());
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn a_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn garbage_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        fs::write(&path, "not a key").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("not an OpenSSH private key"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "not a key");
    }
}
