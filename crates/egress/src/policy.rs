//! The `allowNet` policy and the address classes the gateway refuses to dial.
//!
//! `allowNet` entries follow the Deno Sandbox form: host names (optionally
//! `*.`-prefixed) or IP literals, each with an optional port. Parsing is
//! strict on purpose: an entry that does not mean exactly one thing is an
//! error naming the entry, never a silently broader or narrower rule.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

/// An `allowNet` entry that could not be parsed, with a reason a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid allowNet entry {entry:?}: {reason}")]
pub struct PolicyError {
    /// The entry as the user wrote it.
    pub entry: String,
    /// What is wrong with it and, where possible, what to write instead.
    pub reason: String,
}

/// Host names are at most 253 characters written out (RFC 1035's 255
/// octets on the wire, less the length bytes).
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// One parsed `allowNet` entry. Displays as the entry's text, so audit
/// events can say which rule allowed a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    text: String,
    host: Host,
    /// `None` means any port.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// A lower-case host name without a trailing dot.
    Exact(String),
    /// `*.suffix`: the suffix, lower-case, without the `*.`.
    Subdomains(String),
    /// An IP literal, IPv4-mapped IPv6 stored as IPv4 so both spellings match.
    Ip(IpAddr),
}

impl Rule {
    /// The port this rule is limited to, or `None` for any port.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The entry's text (surrounding whitespace removed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn port_matches(&self, port: u16) -> bool {
        match self.port {
            None => true,
            Some(p) => p == port,
        }
    }

    fn name_matches(&self, name: &str) -> bool {
        match &self.host {
            Host::Exact(exact) => exact == name,
            // At least one more label than the suffix: "a.example.com"
            // matches "*.example.com" but "example.com" does not.
            Host::Subdomains(suffix) => name
                .strip_suffix(suffix.as_str())
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|head| !head.is_empty()),
            Host::Ip(_) => false,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A sandbox's parsed `allowNet` list. Rules are tried in the order they
/// were written; the first match is the one reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<Rule>,
}

impl AllowList {
    /// Parses every entry; the first bad one is the error.
    pub fn parse(entries: &[String]) -> Result<AllowList, PolicyError> {
        let rules = entries
            .iter()
            .map(|entry| {
                parse_rule(entry).map_err(|reason| PolicyError {
                    entry: entry.clone(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AllowList { rules })
    }

    /// The rule allowing a connection to host `name` on `port`, if any.
    ///
    /// `name` is compared case-insensitively and a trailing dot is ignored.
    /// A name that is itself an IP literal, or that is not a valid host
    /// name at all, never matches a name rule: IP literals are
    /// [`AllowList::allows_ip`]'s business, and a rule like `*.example.com`
    /// must not be satisfiable by something a resolver could read as an
    /// address.
    pub fn allows_name(&self, name: &str, port: u16) -> Option<&Rule> {
        let name = normalize_query_name(name)?;
        self.rules
            .iter()
            .find(|rule| rule.port_matches(port) && rule.name_matches(&name))
    }

    /// Whether any rule names `name`, on whatever port. This is what the DNS
    /// responder asks: a name gets an address if it could be connected to
    /// at all; the port is checked when the connection comes.
    pub fn allows_name_any_port(&self, name: &str) -> bool {
        normalize_query_name(name)
            .is_some_and(|name| self.rules.iter().any(|rule| rule.name_matches(&name)))
    }

    /// The IP-literal rule allowing a connection to `ip` on `port`, if any.
    /// Name rules never match here, even if the name resolves to `ip`.
    pub fn allows_ip(&self, ip: IpAddr, port: u16) -> Option<&Rule> {
        let ip = ip.to_canonical();
        self.rules
            .iter()
            .find(|rule| rule.host == Host::Ip(ip) && rule.port_matches(port))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// The rules in the order they were written.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// Parses one entry; the error is the reason only (the caller adds the entry).
fn parse_rule(entry: &str) -> Result<Rule, String> {
    let text = entry.trim();
    if text.is_empty() {
        return Err("the entry is empty; write a host name such as \"example.com\"".into());
    }
    if text.contains("://") {
        return Err(
            "URLs are not allowed; write just the host and optional port, e.g. \"example.com:443\""
                .into(),
        );
    }
    if text.contains('/') {
        return Err(
            "paths and CIDR ranges are not allowed; write a single host or address, e.g. \"example.com\" or \"203.0.113.10\""
                .into(),
        );
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '?' | '#' | '@'))
    {
        return Err(format!(
            "{c:?} cannot appear in a host; write just the host and optional port, e.g. \"example.com:443\""
        ));
    }

    let (host, port) = split_host_port(text)?;
    let host = match host {
        HostPart::Ip(ip) => Host::Ip(ip.to_canonical()),
        HostPart::Name(name) => parse_name_pattern(name)?,
    };
    Ok(Rule {
        text: text.to_string(),
        host,
        port,
    })
}

enum HostPart<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

/// Splits `host[:port]`, `[v6][:port]` and bare IPv6 literals.
fn split_host_port(text: &str) -> Result<(HostPart<'_>, Option<u16>), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or("a '[' must be closed by ']', e.g. \"[2001:db8::1]:443\"")?;
        let ip: Ipv6Addr = inside
            .parse()
            .map_err(|_| format!("{inside:?} inside brackets is not an IPv6 address"))?;
        let port = if after.is_empty() {
            None
        } else {
            let port = after
                .strip_prefix(':')
                .ok_or("only \":port\" may follow \"]\", e.g. \"[2001:db8::1]:443\"")?;
            Some(parse_port(port)?)
        };
        return Ok((HostPart::Ip(IpAddr::V6(ip)), port));
    }

    match text.matches(':').count() {
        0 => Ok((host_part(text), None)),
        1 => {
            let (host, port) = text.split_once(':').ok_or("unreachable: one colon")?;
            if host.is_empty() {
                return Err("the host before \":port\" is empty".into());
            }
            Ok((host_part(host), Some(parse_port(port)?)))
        }
        // Several colons can only be an IPv6 literal; with a port it has to
        // be bracketed, because "2001:db8::1:80" is itself a valid address.
        _ => match text.parse::<Ipv6Addr>() {
            Ok(ip) => Ok((HostPart::Ip(IpAddr::V6(ip)), None)),
            Err(_) => Err(
                "not a valid IPv6 address; an IPv6 address with a port must be bracketed, e.g. \"[2001:db8::1]:443\""
                    .into(),
            ),
        },
    }
}

fn host_part(host: &str) -> HostPart<'_> {
    match host.parse::<Ipv4Addr>() {
        Ok(ip) => HostPart::Ip(IpAddr::V4(ip)),
        Err(_) => HostPart::Name(host),
    }
}

fn parse_port(port: &str) -> Result<u16, String> {
    // `u16::from_str` would also take "+443"; only plain digits are a port.
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {port:?} is not a number from 1 to 65535"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port {port:?} is not a number from 1 to 65535")),
        Ok(port) => Ok(port),
    }
}

/// `name` or `*.name`, validated and lower-cased.
fn parse_name_pattern(name: &str) -> Result<Host, String> {
    if name == "*" || name == "*." {
        return Err(
            "a bare \"*\" is not allowed; list the hosts, or use \"*.example.com\" for subdomains"
                .into(),
        );
    }
    let (wildcard, rest) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    if rest.contains('*') {
        return Err("\"*\" is only allowed as a whole first label, as in \"*.example.com\"".into());
    }
    if !rest.is_ascii() {
        return Err(
            "non-ASCII host names must be written in their punycode form (\"xn--...\")".into(),
        );
    }
    let lower = rest.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    validate_name(lower, false)?;
    Ok(if wildcard {
        Host::Subdomains(lower.to_string())
    } else {
        Host::Exact(lower.to_string())
    })
}

/// Checks a lower-case name without a trailing dot. Rules must be strict
/// host names; names being looked up may also carry `_` (some real hosts
/// do), which a wildcard rule may then cover.
fn validate_name(name: &str, allow_underscore: bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("the host name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the host name is {} characters long; at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("the host name has an empty label (\"..\" or a leading dot)".into());
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!(
                "label {label:?} is longer than {MAX_LABEL_LEN} characters"
            ));
        }
        let ok_byte = |b: u8| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b == b'-'
                || (allow_underscore && b == b'_')
        };
        if let Some(bad) = label.bytes().find(|&b| !ok_byte(b)) {
            return Err(format!(
                "{:?} is not allowed in a host name (letters, digits and '-' only)",
                char::from(bad)
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    // A name whose last label starts with a digit is not a host name:
    // resolvers may read "127.1" or "0x7f000001" as an IPv4 address, and
    // no top-level domain starts with a digit.
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
        return Err(
            "this is neither a valid IPv4 address nor a host name (the last label starts with a digit)"
                .into(),
        );
    }
    Ok(())
}

/// Lower-cases `name`, drops one trailing dot, and returns it only if it is
/// a valid host name (and not an IP literal).
fn normalize_query_name(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    if lower.parse::<IpAddr>().is_ok() {
        return None;
    }
    validate_name(lower, true).ok()?;
    Some(lower.to_string())
}

/// What kind of address an IP is, as far as the anti-SSRF check cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// Globally routable unicast.
    Public,
    Loopback,
    /// RFC 1918 IPv4 and IPv6 unique-local (and deprecated site-local).
    Private,
    LinkLocal,
    /// A cloud instance-metadata endpoint (credentials live there).
    Metadata,
    Unspecified,
    Multicast,
    Broadcast,
    /// Reserved, special-purpose or not globally routable in any other way.
    Reserved,
    /// 100.64.0.0/10, carrier-grade NAT (and some clouds' internal services).
    SharedCgnat,
    /// 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// 198.18.0.0/15 (RFC 2544) and 2001:2::/48; the gateway's own fake IPs.
    Benchmark,
}

impl AddressClass {
    /// Whether the gateway must refuse to connect to such an address.
    ///
    /// Everything but [`AddressClass::Public`] is internal, Documentation
    /// and Benchmark included: those ranges are never routed on the
    /// Internet, so if the daemon's host can reach them at all it is over
    /// some local network (a lab, a test harness, a VPN) - exactly what a
    /// sandbox must not reach. A public name resolving into them is a
    /// rebinding trick, not a real destination. Benchmark also holds the
    /// gateway's own fake IPs, which must never be dialled for real.
    pub fn is_internal(self) -> bool {
        self != AddressClass::Public
    }

    fn phrase(self) -> &'static str {
        match self {
            AddressClass::Public => "a public address",
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::Metadata => "the cloud metadata address",
            AddressClass::Unspecified => "the unspecified address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Broadcast => "the broadcast address",
            AddressClass::Reserved => "a reserved address",
            AddressClass::SharedCgnat => "a shared (carrier-grade NAT) address",
            AddressClass::Documentation => "a documentation address",
            AddressClass::Benchmark => "a benchmarking address",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.phrase())
    }
}

/// Classifies an address. IPv6 forms that embed an IPv4 address a host
/// would actually reach (see [`canonical`], and 6to4) are classified by
/// that IPv4 address.
pub fn classify(ip: IpAddr) -> AddressClass {
    match canonical(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// The address a connection to `ip` really reaches: the IPv4 address inside
/// an IPv4-mapped (`::ffff:a.b.c.d`, which a dual-stack socket dials as
/// IPv4), IPv4-compatible (`::a.b.c.d`, tunnelled by `sit`) or NAT64
/// (`64:ff9b::a.b.c.d`, translated by the network) address; any other
/// address as it is. Every check that compares or classifies an address
/// does it on this form, so no spelling of an address slips past a check
/// written for another. `::` and `::1` stay as they are (they are not
/// IPv4-compatible addresses but the unspecified and loopback ones).
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let bits = u128::from(ip);
    if bits >> 32 == 0 && bits > 1 {
        return Some(Ipv4Addr::from(bits as u32));
    }
    // NAT64 (RFC 6052 well-known prefix): the host's network may translate it.
    if in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        return Some(Ipv4Addr::from(bits as u32));
    }
    None
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    use AddressClass::*;
    // Checked most specific first, so the single metadata addresses win
    // over their link-local /16.
    let table: &[([u8; 4], u32, AddressClass)] = &[
        ([0, 0, 0, 0], 32, Unspecified),
        // AWS/GCP/Azure/OpenStack metadata, and the ECS task credentials endpoint.
        ([169, 254, 169, 254], 32, Metadata),
        ([169, 254, 170, 2], 32, Metadata),
        ([255, 255, 255, 255], 32, Broadcast),
        // "This network": Linux connects 0.x.y.z to the local host.
        ([0, 0, 0, 0], 8, Reserved),
        ([127, 0, 0, 0], 8, Loopback),
        ([10, 0, 0, 0], 8, Private),
        ([172, 16, 0, 0], 12, Private),
        ([192, 168, 0, 0], 16, Private),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([100, 64, 0, 0], 10, SharedCgnat),
        ([192, 0, 0, 0], 24, Reserved),
        ([192, 0, 2, 0], 24, Documentation),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([198, 18, 0, 0], 15, Benchmark),
        // Deprecated 6to4 relay anycast: traffic there is tunnelled.
        ([192, 88, 99, 0], 24, Reserved),
        ([224, 0, 0, 0], 4, Multicast),
        ([240, 0, 0, 0], 4, Reserved),
    ];
    table
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map_or(Public, |(_, _, class)| *class)
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    use AddressClass::*;
    let bits = u128::from(ip);
    if ip == Ipv6Addr::UNSPECIFIED {
        return Unspecified;
    }
    if ip == Ipv6Addr::LOCALHOST {
        return Loopback;
    }
    // IPv4-mapped, -compatible and NAT64 forms were made IPv4 by `classify`.
    // 6to4: 2002:AABB:CCDD::/48 tunnels to AA.BB.CC.DD.
    if in_v6(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        return classify_v4(Ipv4Addr::from((bits >> 80) as u32));
    }
    let table: &[(Ipv6Addr, u32, AddressClass)] = &[
        (
            Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254),
            128,
            Metadata,
        ),
        (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, Private),
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, LinkLocal),
        // Deprecated site-local: still routed inside some networks.
        (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, Private),
        (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, Multicast),
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
            32,
            Documentation,
        ),
        (
            Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
            20,
            Documentation,
        ),
        (Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0), 48, Benchmark),
        // Teredo and the rest of the IETF protocol block: tunnels and
        // special uses, not ordinary destinations.
        (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23, Reserved),
        // Local-use NAT64 (RFC 8215), discard-only.
        (
            Ipv6Addr::new(0x64, 0xff9b, 0x1, 0, 0, 0, 0, 0),
            48,
            Reserved,
        ),
        (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64, Reserved),
    ];
    if let Some((_, _, class)) = table
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
    {
        return *class;
    }
    // Only 2000::/3 is allocated for global unicast; anything else is not
    // a public destination.
    if in_v6(ip, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3) {
        Public
    } else {
        Reserved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        match AllowList::parse(&entries) {
            Ok(list) => list,
            Err(e) => panic!("{entries:?} should parse: {e}"),
        }
    }

    fn parse_err(entry: &str) -> PolicyError {
        match AllowList::parse(&[entry.to_string()]) {
            Ok(list) => panic!("{entry:?} should be rejected, got {list:?}"),
            Err(e) => e,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn exact_name_case_and_trailing_dot() {
        let l = list(&["Example.COM"]);
        assert!(l.allows_name("example.com", 443).is_some());
        assert!(l.allows_name("EXAMPLE.com.", 80).is_some());
        assert!(l.allows_name("www.example.com", 443).is_none());
        assert!(l.allows_name("example.co", 443).is_none());
        assert!(l.allows_name("notexample.com", 443).is_none());
        let l = list(&["example.com."]);
        assert!(l.allows_name("example.com", 1).is_some());
    }

    #[test]
    fn wildcard_needs_one_more_label() {
        let l = list(&["*.example.com"]);
        assert!(l.allows_name("a.example.com", 443).is_some());
        assert!(l.allows_name("a.b.example.com", 443).is_some());
        assert!(l.allows_name("A.Example.Com.", 443).is_some());
        assert!(l.allows_name("example.com", 443).is_none());
        assert!(l.allows_name("badexample.com", 443).is_none());
        assert!(l.allows_name(".example.com", 443).is_none());
        assert!(l.allows_name("a.example.com.evil.net", 443).is_none());
        assert!(!l.allows_name_any_port("example.com"));
        assert!(l.allows_name_any_port("x.example.com"));
    }

    #[test]
    fn wildcard_does_not_match_a_queried_star() {
        let l = list(&["*.example.com"]);
        assert!(l.allows_name("*.example.com", 443).is_none());
        assert!(l.allows_name("_acme.example.com", 443).is_some());
    }

    #[test]
    fn ports() {
        let l = list(&["example.com:443", "other.org"]);
        assert!(l.allows_name("example.com", 443).is_some());
        assert!(l.allows_name("example.com", 80).is_none());
        assert!(l.allows_name_any_port("example.com"));
        assert!(l.allows_name("other.org", 1).is_some());
        assert!(l.allows_name("other.org", 65535).is_some());
        assert_eq!(l.rules()[0].port(), Some(443));
        assert_eq!(l.rules()[1].port(), None);
        let l = list(&["example.com:65535", "example.com:1"]);
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn first_matching_rule_is_reported_as_written() {
        let l = list(&["  *.example.com:443 ", "api.example.com"]);
        let rule = l.allows_name("api.example.com", 443).expect("allowed");
        assert_eq!(rule.to_string(), "*.example.com:443");
        let rule = l.allows_name("api.example.com", 80).expect("allowed");
        assert_eq!(rule.as_str(), "api.example.com");
    }

    #[test]
    fn ip_rules() {
        let l = list(&[
            "203.0.113.110",
            "[2001:db8::1]:80",
            "2001:db8::2",
            "[2001:db8::3]",
        ]);
        assert!(l.allows_ip(ip("203.0.113.110"), 5).is_some());
        assert!(l.allows_ip(ip("203.0.113.111"), 5).is_none());
        assert!(l.allows_ip(ip("2001:db8::1"), 80).is_some());
        assert!(l.allows_ip(ip("2001:db8::1"), 443).is_none());
        assert!(l.allows_ip(ip("2001:db8::2"), 443).is_some());
        assert!(l.allows_ip(ip("2001:db8::3"), 443).is_some());
        // The mapped spelling reaches the same host, so it matches too.
        assert!(l.allows_ip(ip("::ffff:203.0.113.110"), 1).is_some());
        let l = list(&["[::ffff:198.51.100.1]:443"]);
        assert!(l.allows_ip(ip("198.51.100.1"), 443).is_some());
    }

    #[test]
    fn unbracketed_ipv6_that_looks_like_a_port_is_an_address() {
        // "2001:db8::1:80" is a valid address in its own right.
        let l = list(&["2001:db8::1:80"]);
        assert!(l.allows_ip(ip("2001:db8::1:80"), 443).is_some());
        assert!(l.allows_ip(ip("2001:db8::1"), 80).is_none());
    }

    #[test]
    fn ip_literal_names_only_match_ip_rules() {
        let l = list(&["10.0.0.1", "example.com"]);
        assert!(l.allows_name("10.0.0.1", 80).is_none());
        assert!(!l.allows_name_any_port("10.0.0.1"));
        assert!(l.allows_name("::1", 80).is_none());
        assert!(l.allows_ip(ip("10.0.0.1"), 80).is_some());
        // Name rules never match by address.
        assert!(l.allows_ip(ip("93.184.216.34"), 80).is_none());
    }

    #[test]
    fn numeric_looking_names_never_match() {
        let l = list(&["*.example.com"]);
        assert!(l.allows_name("127.1", 80).is_none());
        assert!(l.allows_name("1.example.com", 80).is_some());
        assert!(parse_err("127.1").reason.contains("IPv4"));
        assert!(parse_err("0x7f000001").reason.contains("IPv4"));
        assert!(parse_err("256.1.1.1").reason.contains("IPv4"));
    }

    #[test]
    fn empty_list() {
        let l = AllowList::parse(&[]).expect("empty parses");
        assert!(l.is_empty());
        assert!(l.allows_name("example.com", 443).is_none());
        assert!(!l.allows_name_any_port("example.com"));
        assert!(l.allows_ip(ip("1.1.1.1"), 443).is_none());
    }

    #[test]
    fn rejects_bad_entries() {
        for bad in [
            "",
            "   ",
            "*",
            "*.",
            "*example.com",
            "a.*.example.com",
            "example.*",
            "**.example.com",
            "https://example.com",
            "example.com/path",
            "10.0.0.0/8",
            "user@example.com",
            "example.com?x",
            "exa mple.com",
            "example.com:0",
            "example.com:65536",
            "example.com:",
            "example.com:+443",
            "example.com:https",
            ":443",
            "example..com",
            ".example.com",
            "example.com..",
            "-example.com",
            "example-.com",
            "exa_mple.com",
            "exämple.com",
            "2001:db8::1::2",
            "2001:db8::g:80",
            "[2001:db8::1",
            "[2001:db8::1]80",
            "[2001:db8::1]:0",
            "[10.0.0.1]",
            "[fe80::1%eth0]",
            "1.2.3.4:5:6",
        ] {
            let err = parse_err(bad);
            assert_eq!(err.entry, bad);
            assert!(!err.reason.is_empty());
        }
    }

    #[test]
    fn errors_name_the_entry_and_the_fix() {
        let err = parse_err("https://example.com");
        let msg = err.to_string();
        assert!(msg.contains("\"https://example.com\""), "{msg}");
        assert!(msg.contains("URL"), "{msg}");
        assert!(parse_err("*").reason.contains("*.example.com"));
        assert!(parse_err("2001:db8::g:80").reason.contains("bracketed"));
        assert!(parse_err("example.com:0").reason.contains("1 to 65535"));
        // The first bad entry is reported, not a later one.
        let entries = vec!["ok.com".to_string(), "bad..com".into(), "*".into()];
        let err = AllowList::parse(&entries).expect_err("bad entry");
        assert_eq!(err.entry, "bad..com");
    }

    #[test]
    fn name_length_limits() {
        let label63 = "a".repeat(63);
        list(&[&format!("{label63}.com")]);
        parse_err(&format!("{}a.com", label63));
        // 4 * 63 + 3 dots = 255 > 253.
        let long = [label63.as_str(); 4].join(".");
        assert!(parse_err(&long).reason.contains("253"));
        let ok = format!("{}.{}.{}.{}", label63, label63, label63, "a".repeat(61));
        assert_eq!(ok.len(), 253);
        let l = list(&[&ok]);
        assert!(l.allows_name(&ok, 1).is_some());
        assert!(l.allows_name(&format!("{ok}."), 1).is_some());
    }

    #[test]
    fn invalid_query_names_do_not_match() {
        let l = list(&["*.example.com", "example.com"]);
        for name in [
            "",
            ".",
            "example..com",
            "ex ample.com",
            "exa\0mple.com",
            "a.example.com\\",
        ] {
            assert!(l.allows_name(name, 1).is_none(), "{name:?}");
            assert!(!l.allows_name_any_port(name), "{name:?}");
        }
    }

    #[test]
    fn classify_ipv4() {
        use AddressClass::*;
        for (addr, class) in [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Reserved),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("172.32.0.1", Public),
            ("172.15.255.255", Public),
            ("192.168.1.1", Private),
            ("169.254.1.1", LinkLocal),
            ("169.254.169.254", Metadata),
            ("169.254.170.2", Metadata),
            ("100.64.0.1", SharedCgnat),
            ("100.127.255.255", SharedCgnat),
            ("100.128.0.0", Public),
            ("192.0.0.8", Reserved),
            ("192.0.2.1", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.110", Documentation),
            ("198.18.0.10", Benchmark),
            ("198.19.255.255", Benchmark),
            ("198.20.0.0", Public),
            ("224.0.0.1", Multicast),
            ("239.255.255.255", Multicast),
            ("240.0.0.1", Reserved),
            ("255.255.255.254", Reserved),
            ("255.255.255.255", Broadcast),
            ("8.8.8.8", Public),
            ("93.184.216.34", Public),
            ("1.1.1.1", Public),
        ] {
            assert_eq!(classify(ip(addr)), class, "{addr}");
        }
    }

    #[test]
    fn classify_ipv6() {
        use AddressClass::*;
        for (addr, class) in [
            ("::", Unspecified),
            ("::1", Loopback),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("fd00:ec2::254", Metadata),
            ("fd00:ec2::253", Private),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", Private),
            ("ff02::1", Multicast),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("2001:2::1", Benchmark),
            ("2001::1", Reserved),
            ("100::1", Reserved),
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:169.254.169.254", Metadata),
            ("::ffff:8.8.8.8", Public),
            ("64:ff9b::10.0.0.1", Private),
            ("64:ff9b::8.8.8.8", Public),
            ("64:ff9b:1::1", Reserved),
            ("2002:7f00:0001::1", Loopback),
            ("2002:a9fe:a9fe::", Metadata),
            ("2002:0808:0808::1", Public),
            ("::10.0.0.1", Private),
            ("::ffff:0.0.0.0", Unspecified),
            ("::ffff:10.1.2.3", Private),
            ("::ffff:100.64.0.1", SharedCgnat),
            ("::169.254.169.254", Metadata),
            ("64:ff9b::127.0.0.1", Loopback),
            ("64:ff9b::a9fe:a9fe", Metadata),
            ("::2", Reserved),
            ("4000::1", Reserved),
            ("2606:4700:4700::1111", Public),
            ("2a00:1450:4001::200e", Public),
        ] {
            assert_eq!(classify(ip(addr)), class, "{addr}");
        }
    }

    #[test]
    fn canonical_unwraps_every_ipv4_in_ipv6_form() {
        for (addr, want) in [
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("::ffff:0.0.0.0", "0.0.0.0"),
            ("::ffff:169.254.169.254", "169.254.169.254"),
            ("::127.0.0.1", "127.0.0.1"),
            ("64:ff9b::10.0.0.1", "10.0.0.1"),
            // Not IPv4 forms: unchanged.
            ("::", "::"),
            ("::1", "::1"),
            ("2002:7f00:1::1", "2002:7f00:1::1"),
            ("64:ff9b:1::1", "64:ff9b:1::1"),
            ("2606:4700:4700::1111", "2606:4700:4700::1111"),
            ("10.0.0.1", "10.0.0.1"),
        ] {
            assert_eq!(canonical(ip(addr)), ip(want), "{addr}");
        }
    }

    #[test]
    fn internal_and_phrases() {
        use AddressClass::*;
        assert!(!Public.is_internal());
        for class in [
            Loopback,
            Private,
            LinkLocal,
            Metadata,
            Unspecified,
            Multicast,
            Broadcast,
            Reserved,
            SharedCgnat,
            Documentation,
            Benchmark,
        ] {
            assert!(class.is_internal(), "{class:?}");
            assert!(!class.to_string().is_empty());
        }
        assert_eq!(Metadata.to_string(), "the cloud metadata address");
        assert_eq!(Loopback.to_string(), "a loopback address");
    }
}
