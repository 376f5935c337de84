//! Choosing the isolation backend (`--isolation native|gvisor`).

use anyhow::{Context, Result};
use manager::{Backend, Isolation};
use std::sync::Arc;

/// The backend for `isolation`, checked to be usable on this host: an
/// error names what to install rather than failing at the first sandbox.
pub fn backend(isolation: Isolation) -> Result<Arc<dyn Backend>> {
    Ok(described(isolation, &[])?.0)
}

/// [`backend`] and a line for the operator ("gvisor (runsc version ...)").
/// `hidden`: host mount points a backend's runtime detaches in its own
/// mount namespace (the daemon's volume storage).
pub fn described(
    isolation: Isolation,
    hidden: &[std::path::PathBuf],
) -> Result<(Arc<dyn Backend>, String)> {
    let paths = jail::JailPaths::default();
    Ok(match isolation {
        Isolation::Native => (Arc::new(manager::Native { paths }), "native".into()),
        Isolation::Gvisor => {
            let gvisor = manager::Gvisor::new(paths)
                .context("--isolation gvisor cannot be used on this host")?
                .hiding(hidden.to_vec());
            let line = format!("gvisor ({})", gvisor.runsc_version());
            (Arc::new(gvisor), line)
        }
    })
}

/// clap's parser for `--isolation`.
pub fn parse(s: &str) -> Result<Isolation, String> {
    s.parse()
}

/// The daemon's backends: `default` (which must work here), and the other
/// where this host can run it, for tokens pinned to it; where it cannot,
/// the reason is kept for the error such a token's creates get.
pub fn daemon_backends(
    default: Isolation,
    hidden: &[std::path::PathBuf],
) -> Result<(manager::Backends, String)> {
    let (backend, line) = described(default, hidden)?;
    let mut backends = manager::Backends::new(backend);
    for other in Isolation::ALL.into_iter().filter(|i| *i != default) {
        backends = match described(other, hidden) {
            Ok((b, _)) => backends.with(b),
            Err(e) => backends.without(other, format!("{e:#}")),
        };
    }
    Ok((backends, line))
}
