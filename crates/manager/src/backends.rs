//! The backends one daemon runs sandboxes on: a default, and others a
//! token can be pinned to.

use crate::backend::{Backend, BackendError, Isolation};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone)]
pub struct Backends {
    default: Isolation,
    available: HashMap<Isolation, Arc<dyn Backend>>,
    /// Why a backend cannot be used on this host, said when one is asked
    /// for (a token pinned to gvisor on a host without runsc).
    missing: HashMap<Isolation, String>,
}

impl Backends {
    /// `default` is what sandboxes get unless their token says otherwise.
    pub fn new(default: Arc<dyn Backend>) -> Self {
        let isolation = default.isolation();
        Self {
            default: isolation,
            available: HashMap::from([(isolation, default)]),
            missing: HashMap::new(),
        }
    }

    /// Also offers `backend` (to pinned tokens).
    pub fn with(mut self, backend: Arc<dyn Backend>) -> Self {
        self.missing.remove(&backend.isolation());
        self.available.entry(backend.isolation()).or_insert(backend);
        self
    }

    /// Records why `isolation` is not offered.
    pub fn without(mut self, isolation: Isolation, why: String) -> Self {
        if !self.available.contains_key(&isolation) {
            self.missing.insert(isolation, why);
        }
        self
    }

    pub fn default_isolation(&self) -> Isolation {
        self.default
    }

    /// The backend for `isolation` (`None`: the default).
    pub fn get(&self, isolation: Option<Isolation>) -> Result<&Arc<dyn Backend>, BackendError> {
        let isolation = isolation.unwrap_or(self.default);
        self.available.get(&isolation).ok_or_else(|| {
            BackendError::Unavailable(match self.missing.get(&isolation) {
                Some(why) => format!("isolation {isolation} is not available on this host: {why}"),
                None => format!("isolation {isolation} is not available on this host"),
            })
        })
    }

    /// Every available backend, the default first.
    pub fn all(&self) -> Vec<&Arc<dyn Backend>> {
        let mut all: Vec<_> = self.available.values().collect();
        all.sort_by_key(|b| (b.isolation() != self.default, b.isolation().as_str()));
        all
    }
}
