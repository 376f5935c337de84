//! Reads the server name (SNI) out of a TLS ClientHello, so the gateway can
//! check that a TLS connection to an allowed name is really for that name
//! (and not fronting another host behind the same address).
//!
//! The parser is strict: whatever does not parse as a well-formed
//! ClientHello is [`ClientHello::NotTls`]. That verdict therefore means
//! "not a ClientHello this gateway can vouch for", not "harmless": a
//! server may be laxer than this parser and read a name out of bytes we
//! rejected. Where the SNI check matters, the caller should refuse a
//! connection that is `NotTls` but [`starts_like_tls`].

/// How many bytes of a connection's start [`inspect`] looks at: one full
/// TLS record (2^14 bytes of payload) plus its 5-byte header. Real
/// ClientHellos are well under this (0.5-2 KiB, post-quantum key shares
/// included). `inspect` never answers [`ClientHello::Incomplete`] once it has
/// this many bytes, so the caller never needs to buffer more.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024 + 5;

/// TLS record payloads are at most 2^14 bytes (RFC 8446 5.1).
const MAX_RECORD_PAYLOAD: usize = 16 * 1024;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
const CONTENT_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST_NAME: u8 = 0;
/// The longest DNS name written out, without a trailing dot.
const MAX_HOST_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// What the first bytes of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// Not a well-formed TLS ClientHello (see the module docs for what the
    /// caller should make of that).
    NotTls,
    /// A prefix of what may still become a ClientHello; buffer more.
    Incomplete,
    /// A complete, well-formed ClientHello. `sni` is its host name,
    /// lower-case and without a trailing dot, or `None` if it sent no
    /// server_name extension (as clients do when dialling an IP address).
    Tls { sni: Option<String> },
}

/// Whether `buf` begins like a TLS handshake record (or is too short to
/// tell). A connection for which this holds but [`inspect`] says
/// [`ClientHello::NotTls`] is a malformed ClientHello, not another protocol.
pub fn starts_like_tls(buf: &[u8]) -> bool {
    matches!(check_record_header(buf), Header::Ok { .. } | Header::Short)
}

/// Decides what the first bytes a client sent are. Only the first
/// [`MAX_CLIENT_HELLO`] bytes are looked at; anything after the ClientHello
/// (a ChangeCipherSpec, early data) is ignored.
///
/// A ClientHello may span several handshake records; their fragments are
/// joined (RFC 8446 5.1). The name is only reported once the whole
/// ClientHello is there and parses, so a truncated or doctored one never
/// yields a name.
pub fn inspect(buf: &[u8]) -> ClientHello {
    let buf = &buf[..buf.len().min(MAX_CLIENT_HELLO)];
    match reassemble(buf) {
        Reassembled::NotTls => ClientHello::NotTls,
        // Past the bound and still not whole: nothing to wait for.
        Reassembled::Incomplete if buf.len() >= MAX_CLIENT_HELLO => ClientHello::NotTls,
        Reassembled::Incomplete => ClientHello::Incomplete,
        Reassembled::Message(message) => match parse_client_hello(&message) {
            Some(sni) => ClientHello::Tls { sni },
            None => ClientHello::NotTls,
        },
    }
}

enum Header {
    NotTls,
    /// Too short to read the length yet (but fine so far).
    Short,
    Ok {
        payload_len: usize,
    },
}

/// Checks as much of a handshake record header as `buf` holds.
fn check_record_header(buf: &[u8]) -> Header {
    // Content type handshake, legacy record version 3.0 to 3.4.
    let expected: [fn(u8) -> bool; 3] = [|b| b == CONTENT_HANDSHAKE, |b| b == 3, |b| b <= 4];
    for (byte, ok) in buf.iter().zip(expected) {
        if !ok(*byte) {
            return Header::NotTls;
        }
    }
    if buf.len() < RECORD_HEADER_LEN {
        return Header::Short;
    }
    let payload_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    // Empty handshake fragments are forbidden, and so are oversized records.
    if payload_len == 0 || payload_len > MAX_RECORD_PAYLOAD {
        return Header::NotTls;
    }
    Header::Ok { payload_len }
}

enum Reassembled {
    NotTls,
    Incomplete,
    /// The whole handshake message, header included.
    Message(Vec<u8>),
}

/// Joins handshake record fragments until one whole handshake message is
/// there, checking as early as possible that it is a ClientHello.
fn reassemble(buf: &[u8]) -> Reassembled {
    let mut message = Vec::new();
    let mut rest = buf;
    loop {
        let payload_len = match check_record_header(rest) {
            Header::NotTls => return Reassembled::NotTls,
            Header::Short => return Reassembled::Incomplete,
            Header::Ok { payload_len } => payload_len,
        };
        let available = &rest[RECORD_HEADER_LEN..];
        let fragment = &available[..available.len().min(payload_len)];
        message.extend_from_slice(fragment);

        if message
            .first()
            .is_some_and(|&t| t != HANDSHAKE_CLIENT_HELLO)
        {
            return Reassembled::NotTls;
        }
        if message.len() >= HANDSHAKE_HEADER_LEN {
            let body_len = u24(&message[1..4]);
            let total = HANDSHAKE_HEADER_LEN + body_len;
            // It could never fit in what we are willing to buffer.
            if total > MAX_CLIENT_HELLO - RECORD_HEADER_LEN {
                return Reassembled::NotTls;
            }
            if message.len() >= total {
                message.truncate(total);
                return Reassembled::Message(message);
            }
        }
        if fragment.len() < payload_len {
            return Reassembled::Incomplete;
        }
        rest = &available[payload_len..];
    }
}

fn u24(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take(3)
        .fold(0, |acc, &b| (acc << 8) | usize::from(b))
}

/// A bounds-checked cursor; every read is `None` past the end.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3).map(u24)
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Option<Reader<'a>> {
        let len = usize::from(self.u8()?);
        self.take(len).map(Reader::new)
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Option<Reader<'a>> {
        let len = usize::from(self.u16()?);
        self.take(len).map(Reader::new)
    }
}

/// Parses a whole ClientHello handshake message (RFC 8446 4.1.2, which is
/// also the TLS 1.0-1.2 layout). `Some(sni)` if well-formed, `None` if not.
fn parse_client_hello(message: &[u8]) -> Option<Option<String>> {
    let mut r = Reader::new(message);
    if r.u8()? != HANDSHAKE_CLIENT_HELLO {
        return None;
    }
    let body_len = r.u24()?;
    let mut body = Reader::new(r.take(body_len)?);
    if !r.is_empty() {
        return None;
    }

    let [major, _minor] = body.u16()?.to_be_bytes();
    if major != 3 {
        return None;
    }
    body.take(32)?; // random
    if body.vec8()?.buf.len() > 32 {
        return None; // legacy_session_id
    }
    let suites = body.vec16()?;
    if suites.buf.is_empty() || suites.buf.len() % 2 != 0 {
        return None;
    }
    if body.vec8()?.is_empty() {
        return None; // compression methods: at least "null"
    }
    // Pre-TLS-1.2 clients may send no extensions block at all.
    if body.is_empty() {
        return Some(None);
    }
    let mut extensions = body.vec16()?;
    if !body.is_empty() {
        return None;
    }

    let mut seen = Vec::new();
    let mut sni = None;
    while !extensions.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        seen.push(kind);
        if kind == EXT_SERVER_NAME {
            sni = Some(parse_server_name(data)?);
        }
    }
    // RFC 8446 4.2: no extension type may appear twice. A second
    // server_name in particular could mean different things to us and to
    // the server.
    seen.sort_unstable();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    Some(sni)
}

/// The server_name extension's data (RFC 6066 3): exactly one host_name.
/// Other name types have no defined encoding, so a list holding one cannot
/// be parsed and is malformed; so is a second host_name.
fn parse_server_name(mut data: Reader<'_>) -> Option<String> {
    let mut list = data.vec16()?;
    if !data.is_empty() {
        return None;
    }
    let mut host = None;
    while !list.is_empty() {
        if list.u8()? != NAME_TYPE_HOST_NAME || host.is_some() {
            return None;
        }
        host = Some(list.vec16()?.buf);
    }
    normalize_host_name(host?)
}

/// The host name lower-cased and without a trailing dot, if it is a
/// plausible DNS name: ASCII letters, digits, '-', '_' in non-empty labels.
/// Anything else (non-ASCII, control bytes, empty labels) makes the
/// ClientHello malformed rather than nameless: mapping it to "no SNI" would
/// let a client smuggle a name past the check that a lenient server might
/// still read.
fn normalize_host_name(raw: &[u8]) -> Option<String> {
    let name = raw.strip_suffix(b".").unwrap_or(raw);
    if name.is_empty() || name.len() > MAX_HOST_NAME_LEN {
        return None;
    }
    let label_ok = |label: &[u8]| {
        (1..=MAX_LABEL_LEN).contains(&label.len())
            && label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !name.split(|&b| b == b'.').all(label_ok) {
        return None;
    }
    let name = std::str::from_utf8(name).ok()?;
    Some(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    /// The first flight of a real rustls client connecting to `server`.
    fn rustls_hello(server: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        let name = ServerName::try_from(server.to_string()).expect("server name");
        let mut conn = ClientConnection::new(Arc::new(config), name).expect("connection");
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).expect("write to a Vec");
        }
        out
    }

    /// Re-frames the handshake bytes of `flight` (one record) into records
    /// carrying at most `chunk` bytes each.
    fn split_records(flight: &[u8], chunk: usize) -> Vec<u8> {
        let len = usize::from(u16::from_be_bytes([flight[3], flight[4]]));
        let payload = &flight[5..5 + len];
        let mut out = Vec::new();
        for piece in payload.chunks(chunk) {
            out.extend_from_slice(&[0x16, 0x03, 0x03]);
            out.extend_from_slice(&(piece.len() as u16).to_be_bytes());
            out.extend_from_slice(piece);
        }
        out.extend_from_slice(&flight[5 + len..]);
        out
    }

    fn tls(sni: Option<&str>) -> ClientHello {
        ClientHello::Tls {
            sni: sni.map(str::to_string),
        }
    }

    /// A hand-built ClientHello with the given extensions (type, data).
    fn hello_with(extensions: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[0x01, 0x00]); // null compression
        if let Some(extensions) = extensions {
            let mut block = Vec::new();
            for (kind, data) in extensions {
                block.extend_from_slice(&kind.to_be_bytes());
                block.extend_from_slice(&(data.len() as u16).to_be_bytes());
                block.extend_from_slice(data);
            }
            body.extend_from_slice(&(block.len() as u16).to_be_bytes());
            body.extend_from_slice(&block);
        }
        record(&handshake(&body))
    }

    fn handshake(body: &[u8]) -> Vec<u8> {
        let mut msg = vec![HANDSHAKE_CLIENT_HELLO];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(body);
        msg
    }

    fn record(payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x16, 0x03, 0x01];
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// server_name extension data for the given (type, name) entries.
    fn server_name<N: AsRef<[u8]>>(entries: &[(u8, N)]) -> Vec<u8> {
        let mut list = Vec::new();
        for (kind, name) in entries {
            let name = name.as_ref();
            list.push(*kind);
            list.extend_from_slice(&(name.len() as u16).to_be_bytes());
            list.extend_from_slice(name);
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        data
    }

    fn sni_hello(name: &[u8]) -> Vec<u8> {
        hello_with(Some(&[
            (0x000a, vec![0, 2, 0, 0x1d]),
            (0, server_name(&[(0, name)])),
        ]))
    }

    /// A tiny deterministic generator, so the fuzz-style tests repeat.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn rustls_hello_with_sni() {
        let flight = rustls_hello("Example.COM");
        assert_eq!(inspect(&flight), tls(Some("example.com")));
        assert!(starts_like_tls(&flight));
    }

    #[test]
    fn rustls_hello_to_an_ip_has_no_sni() {
        for ip in ["203.0.113.7", "2001:db8::1"] {
            let flight = rustls_hello(ip);
            assert_eq!(inspect(&flight), tls(None), "{ip}");
        }
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let flight = rustls_hello("api.example.com");
        for len in 0..flight.len() {
            assert_eq!(
                inspect(&flight[..len]),
                ClientHello::Incomplete,
                "prefix {len}"
            );
        }
        assert_eq!(inspect(&flight), tls(Some("api.example.com")));
    }

    #[test]
    fn split_across_records() {
        let flight = rustls_hello("split.example.com");
        for chunk in [1, 2, 3, 4, 5, 7, 64, 100, 511] {
            let split = split_records(&flight, chunk);
            assert_eq!(
                inspect(&split),
                tls(Some("split.example.com")),
                "chunk {chunk}"
            );
            for len in 0..split.len() {
                assert_eq!(
                    inspect(&split[..len]),
                    ClientHello::Incomplete,
                    "chunk {chunk}, prefix {len}"
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_are_ignored() {
        let mut flight = rustls_hello("example.com");
        // A middlebox-compatibility ChangeCipherSpec and some early data.
        flight.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]);
        flight.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x02, 0xaa, 0xbb]);
        assert_eq!(inspect(&flight), tls(Some("example.com")));
    }

    #[test]
    fn other_records_may_not_interleave() {
        let flight = rustls_hello("example.com");
        let split = split_records(&flight, 50);
        // An alert between the first and second fragment.
        let mut bad = split[..55].to_vec();
        bad.extend_from_slice(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00]);
        bad.extend_from_slice(&split[55..]);
        assert_eq!(inspect(&bad), ClientHello::NotTls);
    }

    #[test]
    fn plain_protocols_are_not_tls() {
        assert_eq!(
            inspect(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
            ClientHello::NotTls
        );
        assert_eq!(inspect(b"G"), ClientHello::NotTls);
        assert_eq!(inspect(b"SSH-2.0-OpenSSH_9.6\r\n"), ClientHello::NotTls);
        // An SSLv2-format ClientHello.
        assert_eq!(
            inspect(&[0x80, 0x2e, 0x01, 0x03, 0x01]),
            ClientHello::NotTls
        );
        assert!(!starts_like_tls(b"GET /"));
        assert_eq!(inspect(&[]), ClientHello::Incomplete);
        assert!(starts_like_tls(&[]));
    }

    #[test]
    fn bad_record_headers() {
        assert_eq!(inspect(&[0x16, 0x02]), ClientHello::NotTls);
        assert_eq!(inspect(&[0x16, 0x03, 0x05]), ClientHello::NotTls);
        assert_eq!(inspect(&[0x16, 0x03, 0x01]), ClientHello::Incomplete);
        // Empty and oversized records.
        assert_eq!(
            inspect(&[0x16, 0x03, 0x01, 0x00, 0x00]),
            ClientHello::NotTls
        );
        assert_eq!(
            inspect(&[0x16, 0x03, 0x01, 0x40, 0x01]),
            ClientHello::NotTls
        );
        assert_eq!(
            inspect(&[0x16, 0x03, 0x01, 0x40, 0x00]),
            ClientHello::Incomplete
        );
        // A handshake that is not a ClientHello (ServerHello), as soon as its type is seen.
        assert_eq!(
            inspect(&[0x16, 0x03, 0x03, 0x00, 0x40, 0x02]),
            ClientHello::NotTls
        );
    }

    #[test]
    fn oversized_client_hello_is_refused_early() {
        // Declares a 64 KiB ClientHello: more than we will ever buffer.
        let buf = [0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x01, 0x00, 0x00];
        assert_eq!(inspect(&buf), ClientHello::NotTls);
        // The largest one that still fits is waited for.
        let body = (MAX_CLIENT_HELLO - 5 - 4) as u32;
        let mut buf = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01];
        buf.extend_from_slice(&body.to_be_bytes()[1..]);
        assert_eq!(inspect(&buf), ClientHello::Incomplete);
    }

    #[test]
    fn never_incomplete_past_the_bound() {
        // Fragmenting into one-byte records costs six bytes per byte, so a
        // big enough ClientHello runs past the bound before it is whole.
        let sni = "a".repeat(60);
        let padding = (21, vec![0u8; 3000]);
        let hello = hello_with(Some(&[(0, server_name(&[(0, sni.as_bytes())])), padding]));
        let split = split_records(&hello, 1);
        assert!(split.len() > MAX_CLIENT_HELLO);
        assert_eq!(
            inspect(&split[..MAX_CLIENT_HELLO - 1]),
            ClientHello::Incomplete
        );
        assert_eq!(inspect(&split[..MAX_CLIENT_HELLO]), ClientHello::NotTls);
        assert_eq!(inspect(&split), ClientHello::NotTls);
        // Unsplit, the same ClientHello is fine.
        assert_eq!(inspect(&hello), tls(Some(&sni)));
    }

    #[test]
    fn hand_built_names() {
        assert_eq!(
            inspect(&sni_hello(b"WWW.Example.com")),
            tls(Some("www.example.com"))
        );
        assert_eq!(
            inspect(&sni_hello(b"example.com.")),
            tls(Some("example.com"))
        );
        assert_eq!(
            inspect(&sni_hello(b"_srv.example-1.com")),
            tls(Some("_srv.example-1.com"))
        );
        assert_eq!(inspect(&sni_hello(b"localhost")), tls(Some("localhost")));
        let long = [&"a".repeat(63)[..]; 4].join(".");
        assert_eq!(
            inspect(&sni_hello(&long.as_bytes()[..253])),
            tls(Some(&long[..253]))
        );
    }

    #[test]
    fn invalid_names_are_malformed() {
        let long = "a".repeat(254);
        let long_label = format!("{}.com", "a".repeat(64));
        for bad in [
            long_label.as_bytes(),
            &b""[..],
            b".",
            b"example..com",
            b".example.com",
            b"example.com..",
            b"exa mple.com",
            b"example.com\0evil.net",
            "ex\u{e4}mple.com".as_bytes(),
            b"\xff\xfe",
            b"example.com/",
            long.as_bytes(),
        ] {
            assert_eq!(inspect(&sni_hello(bad)), ClientHello::NotTls, "{bad:?}");
        }
    }

    #[test]
    fn server_name_list_shapes() {
        // No extensions at all, and an empty extension block.
        assert_eq!(inspect(&hello_with(None)), tls(None));
        assert_eq!(inspect(&hello_with(Some(&[]))), tls(None));
        // Other extensions only.
        assert_eq!(
            inspect(&hello_with(Some(&[(0x002b, vec![2, 3, 4])]))),
            tls(None)
        );
        // Two host names, an unknown name type, an empty list, empty data.
        for data in [
            server_name(&[(0, b"a.com"), (0, b"b.com")]),
            server_name(&[(1, b"a.com")]),
            server_name(&[(0, b"a.com"), (1, b"b.com")]),
            server_name::<&[u8]>(&[]),
            vec![],
            // List length longer than the data.
            vec![0x00, 0x09, 0x00, 0x00, 0x01, b'a'],
            // Trailing bytes after the list.
            {
                let mut d = server_name(&[(0, b"a.com")]);
                d.push(0);
                d
            },
        ] {
            assert_eq!(
                inspect(&hello_with(Some(&[(0, data.clone())]))),
                ClientHello::NotTls,
                "{data:?}"
            );
        }
    }

    #[test]
    fn duplicate_extensions_are_malformed() {
        let sn = server_name(&[(0, b"a.com")]);
        let dup_sni = [(0, sn.clone()), (0, server_name(&[(0, b"b.com")]))];
        assert_eq!(inspect(&hello_with(Some(&dup_sni))), ClientHello::NotTls);
        let dup_other = [(0, sn), (0x000a, vec![0, 0]), (0x000a, vec![0, 0])];
        assert_eq!(inspect(&hello_with(Some(&dup_other))), ClientHello::NotTls);
    }

    #[test]
    fn malformed_bodies() {
        let good = sni_hello(b"a.com");
        assert_eq!(inspect(&good), tls(Some("a.com")));
        let body = good[9..].to_vec();
        let with_body = |body: &[u8]| record(&handshake(body));

        // Trailing byte inside the ClientHello.
        let mut b = body.clone();
        b.push(0);
        assert_eq!(inspect(&with_body(&b)), ClientHello::NotTls);
        // Truncated body, properly framed.
        assert_eq!(
            inspect(&with_body(&body[..body.len() - 1])),
            ClientHello::NotTls
        );
        assert_eq!(inspect(&with_body(&body[..20])), ClientHello::NotTls);
        // Legacy version with a wrong major.
        let mut b = body.clone();
        b[0] = 2;
        assert_eq!(inspect(&with_body(&b)), ClientHello::NotTls);
        // Session id longer than 32.
        let mut b = body.clone();
        b[34] = 33;
        assert_eq!(inspect(&with_body(&b)), ClientHello::NotTls);
        // Odd cipher suite length.
        let mut b = body.clone();
        b[36] = 3;
        assert_eq!(inspect(&with_body(&b)), ClientHello::NotTls);
        // No compression methods.
        let mut b = body.clone();
        b.splice(39..41, [0x00]);
        assert_eq!(inspect(&with_body(&b)), ClientHello::NotTls);
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..5000 {
            let len = (rng.next() % 300) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if !buf.is_empty() && buf[0] != 0x16 {
                assert_eq!(inspect(&buf), ClientHello::NotTls);
            }
            // Also garbage behind a plausible record header.
            if buf.len() > 5 {
                buf[0] = 0x16;
                buf[1] = 0x03;
                buf[2] = 0x01;
                buf[5] = 0x01;
                let _ = inspect(&buf);
            }
        }
    }

    #[test]
    fn mutated_hellos_never_panic() {
        let flight = rustls_hello("mutate.example.com");
        let split = split_records(&flight, 97);
        let mut rng = XorShift(12345);
        for base in [&flight, &split] {
            for _ in 0..3000 {
                let mut buf = base.clone();
                for _ in 0..=(rng.next() % 4) {
                    let at = (rng.next() as usize) % buf.len();
                    buf[at] = rng.next() as u8;
                }
                let cut = (rng.next() as usize) % (buf.len() + 1);
                match inspect(&buf[..cut]) {
                    // Whatever comes out is a plain ASCII name.
                    ClientHello::Tls { sni: Some(name) } => assert!(name.is_ascii(), "{name:?}"),
                    ClientHello::Tls { sni: None }
                    | ClientHello::Incomplete
                    | ClientHello::NotTls => {}
                }
            }
        }
    }
}
