//! Admission control: a create is refused, before anything is made, when it
//! would pass a per-token or a host limit. Each admitted sandbox holds a
//! [`Ticket`]; dropping it gives the capacity back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Concurrent sandboxes one token may hold.
    pub per_token_sandboxes: usize,
    /// Sum of memory limits one token may hold, MiB.
    pub per_token_memory_mb: u64,
    /// Concurrent sandboxes on this host.
    pub host_sandboxes: usize,
    /// Sum of memory limits on this host, MiB: total RAM times the
    /// overcommit ratio the operator accepts.
    pub host_memory_mb: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AdmissionError {
    /// A per-token quota (HTTP 429).
    #[error("{0}")]
    Quota(String),
    /// The host is full (HTTP 503).
    #[error("{0}")]
    Capacity(String),
}

#[derive(Default)]
struct Counts {
    per_token: HashMap<String, (usize, u64)>,
    sandboxes: usize,
    memory_mb: u64,
}

pub struct Admission {
    limits: AdmissionLimits,
    counts: Mutex<Counts>,
}

/// Capacity held by one sandbox; released on drop.
pub struct Ticket {
    admission: Arc<Admission>,
    token: Option<String>,
    memory_mb: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = self.admission.counts.lock().expect("admission lock");
        c.sandboxes -= 1;
        c.memory_mb -= self.memory_mb;
        if let Some(t) = &self.token {
            if let Some(entry) = c.per_token.get_mut(t) {
                entry.0 -= 1;
                entry.1 -= self.memory_mb;
                if entry.0 == 0 {
                    c.per_token.remove(t);
                }
            }
        }
    }
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            counts: Mutex::new(Counts::default()),
        })
    }

    pub fn limits(&self) -> &AdmissionLimits {
        &self.limits
    }

    /// Reserves room for one sandbox of `memory_mb`, or says which limit
    /// refuses it. Check and reservation are one step, so concurrent
    /// creates can never overshoot.
    pub fn admit(
        self: &Arc<Self>,
        token: Option<&str>,
        memory_mb: u64,
    ) -> Result<Ticket, AdmissionError> {
        let l = &self.limits;
        let mut c = self.counts.lock().expect("admission lock");
        if let Some(t) = token {
            let (n, mem) = c.per_token.get(t).copied().unwrap_or((0, 0));
            if n + 1 > l.per_token_sandboxes {
                return Err(AdmissionError::Quota(format!(
                    "quota reached: a token may hold at most {} sandboxes at once ({n} running); end one first",
                    l.per_token_sandboxes
                )));
            }
            if mem + memory_mb > l.per_token_memory_mb {
                return Err(AdmissionError::Quota(format!(
                    "quota reached: a token may hold at most {} MiB of sandbox memory ({mem} MiB in use, {memory_mb} MiB asked)",
                    l.per_token_memory_mb
                )));
            }
        }
        if c.sandboxes + 1 > l.host_sandboxes {
            return Err(AdmissionError::Capacity(format!(
                "host capacity reached: at most {} sandboxes run on this host; try again when one ends",
                l.host_sandboxes
            )));
        }
        if c.memory_mb + memory_mb > l.host_memory_mb {
            return Err(AdmissionError::Capacity(format!(
                "host capacity reached: {} of {} MiB of memory are promised to sandboxes; {memory_mb} MiB more do not fit",
                c.memory_mb, l.host_memory_mb
            )));
        }
        c.sandboxes += 1;
        c.memory_mb += memory_mb;
        if let Some(t) = token {
            let entry = c.per_token.entry(t.to_string()).or_default();
            entry.0 += 1;
            entry.1 += memory_mb;
        }
        Ok(Ticket {
            admission: self.clone(),
            token: token.map(str::to_string),
            memory_mb,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            per_token_sandboxes: 2,
            per_token_memory_mb: 3000,
            host_sandboxes: 3,
            host_memory_mb: 5000,
        }
    }

    #[test]
    fn per_token_and_host_limits_and_release() {
        let a = Admission::new(limits());
        let t1 = a.admit(Some("a"), 1000).unwrap();
        let _t2 = a.admit(Some("a"), 1000).unwrap();
        let e = a.admit(Some("a"), 1000).err().unwrap();
        assert!(
            matches!(e, AdmissionError::Quota(ref m) if m.contains("at most 2 sandboxes")),
            "{e}"
        );
        let _t3 = a.admit(Some("b"), 1000).unwrap();
        let e = a.admit(Some("c"), 1000).err().unwrap();
        assert!(
            matches!(e, AdmissionError::Capacity(ref m) if m.contains("at most 3 sandboxes")),
            "{e}"
        );
        drop(t1);
        let _t4 = a.admit(Some("c"), 1000).unwrap();
        let e = a.admit(Some("b"), 2500).err().unwrap();
        assert!(
            matches!(e, AdmissionError::Quota(ref m) if m.contains("3000 MiB")),
            "{e}"
        );
    }

    #[test]
    fn host_memory_limit() {
        let a = Admission::new(AdmissionLimits {
            host_sandboxes: 10,
            per_token_sandboxes: 10,
            ..limits()
        });
        let _t = a.admit(Some("a"), 2900).unwrap();
        let _u = a.admit(None, 2000).unwrap();
        let e = a.admit(None, 200).err().unwrap();
        assert!(
            matches!(e, AdmissionError::Capacity(ref m) if m.contains("4900 of 5000 MiB")),
            "{e}"
        );
    }
}
