//! Choosing the isolation backend (`--isolation native|gvisor`).

use anyhow::{Context, Result};
use manager::{Backend, Isolation};
use std::sync::Arc;

/// The backend for `isolation`, checked to be usable on this host: an
/// error names what to install rather than failing at the first sandbox.
pub fn backend(isolation: Isolation) -> Result<Arc<dyn Backend>> {
    Ok(described(isolation)?.0)
}

/// [`backend`] and a line for the operator ("gvisor (runsc version ...)").
pub fn described(isolation: Isolation) -> Result<(Arc<dyn Backend>, String)> {
    let paths = jail::JailPaths::default();
    Ok(match isolation {
        Isolation::Native => (Arc::new(manager::Native { paths }), "native".into()),
        Isolation::Gvisor => {
            let gvisor = manager::Gvisor::new(paths)
                .context("--isolation gvisor cannot be used on this host")?;
            let line = format!("gvisor ({})", gvisor.runsc_version());
            (Arc::new(gvisor), line)
        }
    })
}

/// clap's parser for `--isolation`.
pub fn parse(s: &str) -> Result<Isolation, String> {
    s.parse()
}
