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
}
