//! What the gateway reports about every network decision. The daemon
//! stores these with the sandbox record; they never carry secret values.

/// What kind of traffic an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A DNS query to the gateway's resolver.
    Dns,
    /// A TCP connection.
    Tcp,
    /// A UDP datagram (only DNS to the gateway is ever allowed).
    Udp,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Dns => "dns",
            EventKind::Tcp => "tcp",
            EventKind::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
        }
    }
}

/// One network decision. A TCP connection that was allowed is reported
/// once, when it closes, with its byte counts and duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// When the query or connection attempt began (Unix ms).
    pub at_ms: i64,
    pub kind: EventKind,
    /// The host name the sandbox asked for, or the IP literal it dialled.
    pub name: String,
    /// Destination port (53 for DNS).
    pub port: u16,
    pub verdict: Verdict,
    /// Why: the matching allowNet rule, or what refused it.
    pub reason: String,
    /// The real address the gateway connected to, if it got that far.
    pub upstream: Option<String>,
    /// Bytes from the sandbox to the upstream.
    pub bytes_out: u64,
    /// Bytes from the upstream to the sandbox.
    pub bytes_in: u64,
    pub duration_ms: u64,
    /// Secrets swapped in on this connection, by name (never values).
    pub secrets: Vec<String>,
}

/// Bounds how fast one sandbox can add audit events (a token bucket), so a
/// sandbox that floods DNS queries or connection attempts cannot flood the
/// store. Events over the rate are counted, and the count is reported with
/// the next event that is recorded.
#[derive(Debug)]
pub struct AuditLimiter {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: std::time::Instant,
    suppressed: u64,
}

impl AuditLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: std::time::Instant::now(),
            suppressed: 0,
        }
    }

    /// `Some(n)` if an event may be recorded now, `n` being how many were
    /// dropped since the last one recorded; `None` if this one is dropped.
    pub fn admit(&mut self, now: std::time::Instant) -> Option<u64> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens < 1.0 {
            self.suppressed += 1;
            return None;
        }
        self.tokens -= 1.0;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn limiter_allows_a_burst_then_the_rate_and_counts_the_rest() {
        let mut l = AuditLimiter::new(10, 5);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.admit(t0), Some(0));
        }
        for _ in 0..3 {
            assert_eq!(l.admit(t0), None);
        }
        // 100 ms later one token has come back: the next event carries the
        // count of the three dropped.
        assert_eq!(l.admit(t0 + Duration::from_millis(100)), Some(3));
        assert_eq!(l.admit(t0 + Duration::from_millis(100)), None);
        // The bucket never holds more than the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(l.admit(later), Some(1));
        for _ in 0..4 {
            assert_eq!(l.admit(later), Some(0));
        }
        assert_eq!(l.admit(later), None);
    }
}
