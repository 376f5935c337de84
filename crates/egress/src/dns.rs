//! The gateway's DNS responder: the sandbox's only resolver. It never
//! forwards anything; it answers A queries for allowed names with a fake
//! IP and everything else with an empty answer or an error, as the
//! caller's `decide` says.
//!
//! Messages are parsed and built with `hickory-proto`. Responses carry no
//! EDNS OPT record, which is what a server without EDNS sends (RFC 6891 7);
//! with one question and at most one answer they always fit in the
//! classic 512-byte UDP limit.

use std::net::Ipv4Addr;

use hickory_proto::op::{Header, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// TTL of the A records handed out. Short, so a sandbox re-asks (and the
/// policy is re-checked) often, but long enough not to flood the gateway.
pub const ANSWER_TTL: u32 = 60;

/// The classic DNS-over-UDP message size limit (RFC 1035 4.2.1).
pub const MAX_UDP_RESPONSE: usize = 512;

/// What the caller decided for a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The name's (fake) address. Only used for A questions; given for any
    /// other type it is answered as [`Answer::NoData`], since an A record
    /// does not answer e.g. an AAAA question.
    A(Ipv4Addr),
    /// The name exists but has no record of the asked type (NOERROR, no
    /// answers): e.g. AAAA for an allowed name, so the client falls back to A.
    NoData,
    /// The name does not exist (as far as this sandbox is concerned).
    NxDomain,
    /// The server will not answer this.
    Refused,
}

/// The type of the question asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    A,
    Aaaa,
    /// Any other type, by its number.
    Other(u16),
}

/// Answers one DNS query in UDP wire format.
///
/// `decide` gets the first question's name (lower-case, no trailing dot;
/// bytes that are not letters, digits, '-' or '_' appear escaped in
/// master-file style, e.g. `\.` or `\000`, so such a name can never equal
/// a real host name) and its type. The response has the query's id and
/// RD bit, RA set, and echoes the question exactly as asked (resolvers
/// that randomise the name's case check the echo).
///
/// Returns `None`, meaning "send nothing", when the message is too short
/// for a header or is itself a response (answering responses could make
/// two servers bounce messages forever). Other opcodes than QUERY get
/// NOTIMP; a query that does not parse or has no question gets FORMERR; a
/// class other than IN gets REFUSED without asking `decide`.
pub fn respond(query: &[u8], mut decide: impl FnMut(&str, QueryKind) -> Answer) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(query)).ok()?;
    if header.message_type != MessageType::Query {
        return None;
    }
    let mut metadata = Metadata::response_from_request(&header.metadata);
    metadata.recursion_available = true;

    if header.op_code != OpCode::Query {
        return encode(error(metadata, ResponseCode::NotImp));
    }
    let request = match Message::from_vec(query) {
        Ok(request) => request,
        Err(_) => return encode(error(metadata, ResponseCode::FormErr)),
    };
    let Some(question) = request.queries.into_iter().next() else {
        return encode(error(metadata, ResponseCode::FormErr));
    };

    let mut response = Message::new(header.id, MessageType::Response, OpCode::Query);
    response.metadata = metadata;
    let owner = question.name().clone();
    let query_type = question.query_type();
    let query_class = question.query_class();
    response.add_query(question);

    if query_class != DNSClass::IN {
        response.metadata.response_code = ResponseCode::Refused;
        return encode(response);
    }

    let kind = match query_type {
        RecordType::A => QueryKind::A,
        RecordType::AAAA => QueryKind::Aaaa,
        other => QueryKind::Other(u16::from(other)),
    };
    match decide(&normalize(&owner), kind) {
        Answer::A(ip) if kind == QueryKind::A => {
            response.add_answer(Record::from_rdata(owner, ANSWER_TTL, RData::A(A(ip))));
        }
        Answer::A(_) | Answer::NoData => {}
        Answer::NxDomain => response.metadata.response_code = ResponseCode::NXDomain,
        Answer::Refused => response.metadata.response_code = ResponseCode::Refused,
    }
    encode(response)
}

fn error(metadata: Metadata, code: ResponseCode) -> Message {
    let mut message = Message::new(metadata.id, MessageType::Response, metadata.op_code);
    message.metadata = metadata;
    message.metadata.response_code = code;
    message
}

/// Serialises a response. Cannot exceed 512 bytes with one question (at
/// most 259 bytes) and one compressed A record (16); should it anyway, the
/// answers are dropped and TC set, as RFC 1035 prescribes.
fn encode(mut message: Message) -> Option<Vec<u8>> {
    let bytes = message.to_vec().ok()?;
    if bytes.len() <= MAX_UDP_RESPONSE {
        return Some(bytes);
    }
    message.answers.clear();
    message.metadata.truncation = true;
    message.to_vec().ok()
}

/// Lower-case, escaped, without the trailing dot.
fn normalize(name: &Name) -> String {
    let mut ascii = name.to_lowercase().to_ascii();
    if ascii.ends_with('.') {
        ascii.pop();
    }
    ascii
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use std::str::FromStr;

    fn query_for(name: &str, record_type: RecordType) -> Message {
        let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        let name = Name::from_str(name).expect("test name");
        message.add_query(Query::query(name, record_type));
        message
    }

    fn wire(message: &Message) -> Vec<u8> {
        message.to_vec().expect("encode test query")
    }

    fn parse(bytes: &[u8]) -> Message {
        assert!(bytes.len() <= MAX_UDP_RESPONSE, "{} bytes", bytes.len());
        Message::from_vec(bytes).expect("response parses")
    }

    /// A `decide` allowing example.com (A gets 198.18.0.10), refusing
    /// refused.test, and denying the rest; it records what it was asked.
    fn policy(seen: &mut Vec<(String, QueryKind)>) -> impl FnMut(&str, QueryKind) -> Answer + '_ {
        move |name, kind| {
            seen.push((name.to_string(), kind));
            match (name, kind) {
                ("example.com", QueryKind::A) => Answer::A(Ipv4Addr::new(198, 18, 0, 10)),
                ("example.com", _) => Answer::NoData,
                ("refused.test", _) => Answer::Refused,
                ("wrong-type.test", _) => Answer::A(Ipv4Addr::new(198, 18, 0, 11)),
                _ => Answer::NxDomain,
            }
        }
    }

    #[test]
    fn a_answer_for_an_allowed_name() {
        let mut seen = Vec::new();
        let query = query_for("Example.COM.", RecordType::A);
        let bytes = respond(&wire(&query), policy(&mut seen)).expect("answered");
        let response = parse(&bytes);
        assert_eq!(seen, vec![("example.com".to_string(), QueryKind::A)]);
        assert_eq!(response.metadata.id, 0x1234);
        assert_eq!(response.metadata.message_type, MessageType::Response);
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.metadata.recursion_available);
        assert!(response.metadata.recursion_desired);
        assert!(!response.metadata.truncation);
        // The question comes back exactly as asked, case included.
        assert_eq!(response.queries, query.queries);
        assert!(response.queries[0]
            .name()
            .eq_case(&Name::from_str("Example.COM.").expect("name")));
        assert_eq!(response.answers.len(), 1);
        let answer = &response.answers[0];
        assert_eq!(answer.ttl, ANSWER_TTL);
        assert_eq!(answer.dns_class, DNSClass::IN);
        assert!(answer.name.eq_case(query.queries[0].name()));
        assert_eq!(&answer.data, &RData::A(A(Ipv4Addr::new(198, 18, 0, 10))));
    }

    #[test]
    fn rd_is_copied_not_forced() {
        let mut query = query_for("example.com.", RecordType::A);
        query.metadata.recursion_desired = false;
        let mut seen = Vec::new();
        let response = parse(&respond(&wire(&query), policy(&mut seen)).expect("answered"));
        assert!(!response.metadata.recursion_desired);
        assert!(response.metadata.recursion_available);
    }

    #[test]
    fn aaaa_and_other_types_for_allowed_names_are_nodata() {
        for (record_type, kind) in [
            (RecordType::AAAA, QueryKind::Aaaa),
            (RecordType::MX, QueryKind::Other(15)),
            (RecordType::TXT, QueryKind::Other(16)),
            (RecordType::HTTPS, QueryKind::Other(65)),
        ] {
            let mut seen = Vec::new();
            let query = query_for("example.com.", record_type);
            let response = parse(&respond(&wire(&query), policy(&mut seen)).expect("answered"));
            assert_eq!(seen, vec![("example.com".to_string(), kind)]);
            assert_eq!(response.metadata.response_code, ResponseCode::NoError);
            assert!(response.answers.is_empty());
            assert_eq!(response.queries, query.queries);
        }
    }

    #[test]
    fn an_a_answer_to_another_type_is_nodata() {
        let mut seen = Vec::new();
        let query = query_for("wrong-type.test.", RecordType::AAAA);
        let response = parse(&respond(&wire(&query), policy(&mut seen)).expect("answered"));
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.answers.is_empty());
    }

    #[test]
    fn denied_and_refused_names() {
        for record_type in [RecordType::A, RecordType::AAAA] {
            let mut seen = Vec::new();
            let query = query_for("evil.example.net.", record_type);
            let response = parse(&respond(&wire(&query), policy(&mut seen)).expect("answered"));
            assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
            assert!(response.answers.is_empty());
            assert_eq!(response.queries, query.queries);

            let query = query_for("refused.test.", record_type);
            let response = parse(&respond(&wire(&query), policy(&mut seen)).expect("answered"));
            assert_eq!(response.metadata.response_code, ResponseCode::Refused);
        }
    }

    #[test]
    fn only_the_first_question_is_answered() {
        let mut query = query_for("example.com.", RecordType::A);
        query.add_query(Query::query(
            Name::from_str("other.net.").expect("name"),
            RecordType::A,
        ));
        let mut seen = Vec::new();
        let response = parse(&respond(&wire(&query), policy(&mut seen)).expect("answered"));
        assert_eq!(seen.len(), 1);
        assert_eq!(response.queries.len(), 1);
        assert_eq!(response.answers.len(), 1);
    }

    #[test]
    fn odd_names_are_escaped_for_decide() {
        let label_with_dot = Name::from_labels(vec![&b"example.com"[..]]).expect("name");
        let cases: [(Name, &str); 4] = [
            (label_with_dot, "example\\.com"),
            (Name::root(), ""),
            (
                Name::from_str("*.example.com.").expect("name"),
                "*.example.com",
            ),
            (
                Name::from_labels(vec![&b"a\0b"[..], b"com"]).expect("name"),
                "a\\000b.com",
            ),
        ];
        for (name, expected) in cases {
            let mut query = Message::new(7, MessageType::Query, OpCode::Query);
            query.add_query(Query::query(name, RecordType::A));
            let mut seen = Vec::new();
            let response = parse(&respond(&wire(&query), policy(&mut seen)).expect("answered"));
            assert_eq!(seen, vec![(expected.to_string(), QueryKind::A)]);
            assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
        }
    }

    #[test]
    fn longest_name_fits_in_512_bytes() {
        let label = "a".repeat(63);
        let name = format!("{label}.{label}.{label}.{}.", "b".repeat(61));
        let query = query_for(&name, RecordType::A);
        let bytes = respond(&wire(&query), |_, _| {
            Answer::A(Ipv4Addr::new(198, 18, 0, 10))
        })
        .expect("answered");
        let response = parse(&bytes);
        assert_eq!(response.answers.len(), 1);
        assert!(!response.metadata.truncation);
    }

    #[test]
    fn non_in_class_is_refused_without_asking() {
        let mut query = Message::new(9, MessageType::Query, OpCode::Query);
        let mut question = Query::query(
            Name::from_str("version.bind.").expect("name"),
            RecordType::TXT,
        );
        question.set_query_class(DNSClass::CH);
        query.add_query(question);
        let mut asked = false;
        let bytes = respond(&wire(&query), |_, _| {
            asked = true;
            Answer::NoData
        })
        .expect("answered");
        assert!(!asked);
        let response = parse(&bytes);
        assert_eq!(response.metadata.response_code, ResponseCode::Refused);
        assert_eq!(response.queries, query.queries);
    }

    #[test]
    fn no_question_is_formerr() {
        let query = Message::new(0xbeef, MessageType::Query, OpCode::Query);
        let response = parse(&respond(&wire(&query), |_, _| Answer::NoData).expect("answered"));
        assert_eq!(response.metadata.id, 0xbeef);
        assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
        assert!(response.queries.is_empty());
    }

    #[test]
    fn malformed_body_is_formerr() {
        let mut bytes = wire(&query_for("example.com.", RecordType::A));
        bytes.truncate(20);
        let mut asked = false;
        let response = respond(&bytes, |_, _| {
            asked = true;
            Answer::NoData
        })
        .expect("answered");
        assert!(!asked);
        let response = parse(&response);
        assert_eq!(response.metadata.id, 0x1234);
        assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
        assert!(response.metadata.recursion_desired);

        // A question count with no questions behind it.
        let mut bytes = wire(&Message::new(5, MessageType::Query, OpCode::Query));
        bytes[5] = 1;
        let response = parse(&respond(&bytes, |_, _| Answer::NoData).expect("answered"));
        assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
    }

    #[test]
    fn other_opcodes_are_notimp() {
        let mut query = query_for("example.com.", RecordType::A);
        query.metadata.op_code = OpCode::Update;
        let response = parse(&respond(&wire(&query), |_, _| Answer::NoData).expect("answered"));
        assert_eq!(response.metadata.response_code, ResponseCode::NotImp);
        assert_eq!(response.metadata.op_code, OpCode::Update);
        assert!(response.answers.is_empty());
    }

    #[test]
    fn responses_and_short_messages_are_dropped() {
        let mut message = query_for("example.com.", RecordType::A);
        message.metadata.message_type = MessageType::Response;
        assert_eq!(respond(&wire(&message), |_, _| Answer::NoData), None);
        assert_eq!(respond(&[], |_, _| Answer::NoData), None);
        assert_eq!(respond(&[0x12; 11], |_, _| Answer::NoData), None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let base = wire(&query_for("www.example.com.", RecordType::A));
        for _ in 0..5000 {
            let mut bytes = base.clone();
            for _ in 0..=(next() % 6) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            bytes.truncate((next() as usize) % (bytes.len() + 1));
            if let Some(response) = respond(&bytes, |_, _| Answer::A(Ipv4Addr::new(198, 18, 0, 10)))
            {
                assert!(response.len() <= MAX_UDP_RESPONSE);
                assert_eq!(response[..2], bytes[..2]);
            }
        }
    }
}
