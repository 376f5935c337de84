//! Placeholder ⇄ real-value substitution for intercepted requests.
//!
//! The sandbox only ever sees placeholders (`AIRLOCK_SECRET_<48 alnum>`).
//! On the way out the gateway swaps each placeholder for the real value; on
//! the way back it swaps each real value for its placeholder, so that an echo
//! endpoint or an error message cannot hand the real value into the sandbox.
//!
//! Matching is leftmost-longest over raw bytes. Bodies are streamed, so
//! [`StreamReplacer`] holds back only the few trailing bytes that could still
//! grow into a match, which keeps memory bounded by the longest pattern while
//! producing exactly what [`Substitutions::replace_all`] would produce on the
//! whole body.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// Decoder for `Basic` credentials: clients are not consistent about padding,
/// so accept it present or absent; re-encoding always uses [`STANDARD`].
const BASIC_DECODE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A set of byte-string replacements (`from` → `to`), matched leftmost-longest.
///
/// Cloning is cheap: the compiled matcher is shared.
#[derive(Clone, Default)]
pub struct Substitutions {
    /// `None` when there is nothing to replace, so the common case of a host
    /// without secrets costs nothing.
    inner: Option<Arc<Inner>>,
}

struct Inner {
    /// Deduplicated pairs sorted by `from`; a match's pattern id indexes here.
    /// Sorting lets [`Inner::is_proper_prefix`] binary-search the patterns.
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    matcher: Matcher,
    /// Length of the longest `from`; at least 1 since empty ones are dropped.
    max_len: usize,
    /// Which bytes start some pattern: lets the tail scan skip most positions
    /// with one lookup.
    first_bytes: [bool; 256],
}

enum Matcher {
    Automaton(AhoCorasick),
    /// Used only if the automaton cannot be built (its limits are far beyond
    /// any realistic secret set). Falling back keeps substitution working,
    /// which matters because silently not scrubbing responses would leak
    /// real values into the sandbox.
    Naive,
}

/// One match: pattern id and byte range in the searched haystack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Found {
    id: usize,
    start: usize,
    end: usize,
}

impl Substitutions {
    /// Builds the set from `(from, to)` pairs. Empty `from`s are ignored
    /// (they would match everywhere); if the same `from` appears twice, the
    /// first pair wins.
    pub fn new(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = pairs
            .into_iter()
            .filter(|(from, _)| !from.is_empty())
            .collect();
        if pairs.is_empty() {
            return Self { inner: None };
        }
        // Stable sort keeps input order among equal `from`s, and dedup keeps
        // the first of each run, hence "first pair wins".
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|later, earlier| later.0 == earlier.0);

        let max_len = pairs.iter().map(|(from, _)| from.len()).max().unwrap_or(1);
        let mut first_bytes = [false; 256];
        for (from, _) in &pairs {
            if let Some(&b) = from.first() {
                first_bytes[usize::from(b)] = true;
            }
        }
        let matcher = match AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(pairs.iter().map(|(from, _)| from))
        {
            Ok(ac) => Matcher::Automaton(ac),
            Err(err) => {
                tracing::warn!(%err, "substitution automaton unavailable; using slow matcher");
                Matcher::Naive
            }
        };
        Self {
            inner: Some(Arc::new(Inner {
                pairs,
                matcher,
                max_len,
                first_bytes,
            })),
        }
    }

    /// True when nothing would ever be replaced.
    pub fn is_empty(&self) -> bool {
        self.inner.is_none()
    }

    /// Length of the longest pattern (0 when empty). A streaming replacer
    /// never holds back more than `max_pattern_len() - 1` bytes.
    pub fn max_pattern_len(&self) -> usize {
        self.inner.as_ref().map_or(0, |inner| inner.max_len)
    }

    /// Replaces every (leftmost-longest, non-overlapping) occurrence.
    /// Borrows the input when nothing matched, so callers can tell cheaply
    /// whether anything changed.
    pub fn replace_all<'a>(&self, input: &'a [u8]) -> Cow<'a, [u8]> {
        let Some(inner) = self.inner.as_deref() else {
            return Cow::Borrowed(input);
        };
        let mut out: Option<Vec<u8>> = None;
        let mut pos = 0;
        while let Some(m) = inner.find(input, pos) {
            let out = out.get_or_insert_with(|| Vec::with_capacity(input.len()));
            out.extend_from_slice(&input[pos..m.start]);
            out.extend_from_slice(inner.replacement(m.id));
            // Patterns are non-empty, so this always advances.
            pos = m.end;
        }
        match out {
            Some(mut out) => {
                out.extend_from_slice(&input[pos..]);
                Cow::Owned(out)
            }
            None => Cow::Borrowed(input),
        }
    }

    /// True when `input` contains any pattern.
    pub fn contains_any(&self, input: &[u8]) -> bool {
        self.inner
            .as_deref()
            .is_some_and(|inner| inner.find(input, 0).is_some())
    }

    /// A replacer for a body arriving in chunks. Cheap: shares the matcher.
    pub fn stream(&self) -> StreamReplacer {
        StreamReplacer {
            inner: self.inner.clone(),
            carry: Vec::new(),
            replaced: 0,
        }
    }

    /// The reverse mapping (`to` → `from`), for the response direction.
    /// Built from the effective pairs, so ignored/duplicate `from`s stay out;
    /// pairs with an empty `to` are dropped since an empty pattern is invalid.
    pub fn inverse(&self) -> Substitutions {
        let Some(inner) = self.inner.as_deref() else {
            return Substitutions { inner: None };
        };
        Substitutions::new(
            inner
                .pairs
                .iter()
                .map(|(from, to)| (to.clone(), from.clone()))
                .collect(),
        )
    }
}

// Hand-written so the real values never end up in a log line.
impl fmt::Debug for Substitutions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Substitutions")
            .field(
                "patterns",
                &self.inner.as_ref().map_or(0, |inner| inner.pairs.len()),
            )
            .field("max_pattern_len", &self.max_pattern_len())
            .finish()
    }
}

impl Inner {
    fn replacement(&self, id: usize) -> &[u8] {
        &self.pairs[id].1
    }

    /// Leftmost-longest match in `hay` starting at or after `at`.
    fn find(&self, hay: &[u8], at: usize) -> Option<Found> {
        let rest = hay.get(at..)?;
        let found = match &self.matcher {
            Matcher::Automaton(ac) => match ac.try_find(rest) {
                Ok(m) => m.map(|m| Found {
                    id: m.pattern().as_usize(),
                    start: m.start(),
                    end: m.end(),
                }),
                // Only reachable for search configurations we never use;
                // the naive matcher gives the same answer regardless.
                Err(_) => self.naive_find(rest),
            },
            Matcher::Naive => self.naive_find(rest),
        }?;
        Some(Found {
            id: found.id,
            start: found.start + at,
            end: found.end + at,
        })
    }

    /// Reference leftmost-longest search: first start position with any
    /// match, longest pattern there.
    fn naive_find(&self, hay: &[u8]) -> Option<Found> {
        hay.iter().enumerate().find_map(|(start, &b)| {
            if !self.first_bytes[usize::from(b)] {
                return None;
            }
            let rest = &hay[start..];
            self.pairs
                .iter()
                .enumerate()
                .filter(|(_, (from, _))| rest.starts_with(from))
                .max_by_key(|(_, (from, _))| from.len())
                .map(|(id, (from, _))| Found {
                    id,
                    start,
                    end: start + from.len(),
                })
        })
    }

    /// True when `tail` is a proper prefix of some pattern, i.e. more input
    /// could turn it into (a longer) match.
    fn is_proper_prefix(&self, tail: &[u8]) -> bool {
        // Patterns starting with `tail` sort contiguously, beginning at the
        // first pattern that is >= `tail`.
        let i = self
            .pairs
            .partition_point(|(from, _)| from.as_slice() < tail);
        self.pairs
            .get(i..)
            .unwrap_or_default()
            .iter()
            .take_while(|(from, _)| from.starts_with(tail))
            .any(|(from, _)| from.len() > tail.len())
    }

    /// Earliest position `s >= from` such that `buf[s..]` could still be the
    /// start of a match once more bytes arrive; `buf.len()` if none.
    ///
    /// Only the last `max_len - 1` positions can qualify, which is what
    /// bounds the carry.
    fn pending_start(&self, buf: &[u8], from: usize) -> usize {
        let lo = from.max(buf.len().saturating_sub(self.max_len - 1));
        (lo..buf.len())
            .find(|&s| self.first_bytes[usize::from(buf[s])] && self.is_proper_prefix(&buf[s..]))
            .unwrap_or(buf.len())
    }
}

/// Applies a [`Substitutions`] to a body delivered in chunks.
///
/// Concatenating every [`push`](Self::push) output and the
/// [`finish`](Self::finish) output gives exactly
/// `replace_all(concatenation of all chunks)`, for any chunking. At most
/// `max_pattern_len - 1` bytes are held back between calls.
pub struct StreamReplacer {
    inner: Option<Arc<Inner>>,
    /// Tail of the input seen so far that is a proper prefix of a pattern.
    carry: Vec<u8>,
    replaced: u64,
}

impl StreamReplacer {
    /// Feeds a chunk; returns the output that can no longer change.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.process(chunk, false)
    }

    /// Ends the stream: returns the held-back tail (with any matches inside
    /// it replaced). The replacer is then ready for a new stream.
    pub fn finish(&mut self) -> Vec<u8> {
        self.process(&[], true)
    }

    /// Number of replacements made so far.
    pub fn replaced(&self) -> u64 {
        self.replaced
    }

    /// Bytes currently held back (always < `max_pattern_len`).
    pub fn pending_len(&self) -> usize {
        self.carry.len()
    }

    fn process(&mut self, chunk: &[u8], eof: bool) -> Vec<u8> {
        let Some(inner) = self.inner.as_deref() else {
            // Nothing to replace, so nothing is ever carried.
            return chunk.to_vec();
        };
        let buf: Cow<'_, [u8]> = if self.carry.is_empty() {
            Cow::Borrowed(chunk)
        } else {
            let mut joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(chunk);
            Cow::Owned(joined)
        };
        let buf = buf.as_ref();
        let pending = |from: usize| {
            if eof {
                buf.len()
            } else {
                inner.pending_start(buf, from)
            }
        };

        // Why a match found in `buf` is final when it starts before `cut`:
        // no position before `cut` is a proper prefix of a pattern, so every
        // match the whole stream has at such a position lies inside `buf`.
        // The leftmost start and the longest pattern there are therefore
        // the same as on the whole stream. Positions from `cut` on might
        // still change with more input, so they are carried.
        let mut out = Vec::with_capacity(buf.len());
        let mut pos = 0;
        let mut cut = pending(0);
        while let Some(m) = inner.find(buf, pos) {
            if m.start >= cut {
                break;
            }
            out.extend_from_slice(&buf[pos..m.start]);
            out.extend_from_slice(inner.replacement(m.id));
            self.replaced = self.replaced.saturating_add(1);
            pos = m.end;
            // A match may run past `cut`; the next undecided position must
            // then be searched for again from where the match ended.
            if pos > cut {
                cut = pending(pos);
            }
        }
        out.extend_from_slice(&buf[pos..cut]);
        self.carry = buf[cut..].to_vec();
        out
    }
}

// Hand-written: the carry may hold part of a real value.
impl fmt::Debug for StreamReplacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReplacer")
            .field("pending_len", &self.carry.len())
            .field("replaced", &self.replaced)
            .finish()
    }
}

/// Substitutes in one header value; `None` when the value is unchanged.
///
/// Everything gets plain replacement. In addition, `Authorization` and
/// `Proxy-Authorization` values of the form `Basic <base64>` are decoded,
/// replaced and re-encoded, because a placeholder inside `user:password`
/// credentials is not visible in the encoded form.
pub fn substitute_header_value(subs: &Substitutions, name: &str, value: &[u8]) -> Option<Vec<u8>> {
    if subs.is_empty() {
        return None;
    }
    let is_auth = name.eq_ignore_ascii_case("authorization")
        || name.eq_ignore_ascii_case("proxy-authorization");
    if is_auth {
        if let Some(changed) = substitute_basic_credentials(subs, value) {
            return Some(changed);
        }
    }
    match subs.replace_all(value) {
        Cow::Borrowed(_) => None,
        Cow::Owned(changed) => Some(changed),
    }
}

/// `Some(new value)` when `value` is `Basic <base64>` and the decoded
/// credentials contained a pattern; `None` otherwise (including when the
/// token is not valid base64), leaving the caller to plain replacement.
fn substitute_basic_credentials(subs: &Substitutions, value: &[u8]) -> Option<Vec<u8>> {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let scheme_start = value.iter().position(|b| !is_ows(b))?;
    let rest = value.get(scheme_start..)?;
    // The scheme must be followed by whitespace and then the token.
    let scheme_len = rest.iter().position(is_ows)?;
    let (scheme, after_scheme) = rest.split_at(scheme_len);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let token_offset = after_scheme.iter().position(|b| !is_ows(b))?;
    let token_and_trailer = after_scheme.get(token_offset..)?;
    let token_len = token_and_trailer
        .iter()
        .position(is_ows)
        .unwrap_or(token_and_trailer.len());
    let (token, trailer) = token_and_trailer.split_at(token_len);
    // Anything after the token means this is not a single base64 token.
    if !trailer.iter().all(is_ows) {
        return None;
    }
    let decoded = BASIC_DECODE.decode(token).ok()?;
    let Cow::Owned(replaced) = subs.replace_all(&decoded) else {
        return None;
    };
    let encoded = STANDARD.encode(replaced);
    let prefix = value.get(..value.len() - token_and_trailer.len())?;
    let mut out = Vec::with_capacity(prefix.len() + encoded.len() + trailer.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(encoded.as_bytes());
    out.extend_from_slice(trailer);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PH1: &[u8] = b"AIRLOCK_SECRET_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const PH2: &[u8] = b"AIRLOCK_SECRET_Bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const REAL1: &[u8] = b"sk-live-REAL-1";
    const REAL2: &[u8] =
        b"a-much-longer-real-value-than-the-placeholder-it-stands-in-for-0123456789";

    fn subs(pairs: &[(&[u8], &[u8])]) -> Substitutions {
        Substitutions::new(
            pairs
                .iter()
                .map(|(a, b)| (a.to_vec(), b.to_vec()))
                .collect(),
        )
    }

    fn secrets() -> Substitutions {
        subs(&[(PH1, REAL1), (PH2, REAL2)])
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// Streams `input` cut at `splits` (sorted positions), checking the carry
    /// bound after every push; returns output and replacement count.
    fn stream_with_splits(s: &Substitutions, input: &[u8], splits: &[usize]) -> (Vec<u8>, u64) {
        let mut r = s.stream();
        let mut out = Vec::new();
        let mut prev = 0;
        for &at in splits.iter().chain(std::iter::once(&input.len())) {
            out.extend(r.push(&input[prev..at]));
            assert!(
                r.pending_len() < s.max_pattern_len().max(1),
                "carry {} exceeds bound for max_len {}",
                r.pending_len(),
                s.max_pattern_len()
            );
            prev = at;
        }
        out.extend(r.finish());
        assert_eq!(r.pending_len(), 0);
        (out, r.replaced())
    }

    fn count_matches(s: &Substitutions, input: &[u8]) -> u64 {
        let Some(inner) = s.inner.as_deref() else {
            return 0;
        };
        let (mut n, mut pos) = (0, 0);
        while let Some(m) = inner.find(input, pos) {
            n += 1;
            pos = m.end;
        }
        n
    }

    /// xorshift64*: deterministic, good enough to shuffle test inputs.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn single_pattern_and_borrowed_when_unchanged() {
        let s = subs(&[(b"KEY", b"value")]);
        assert_eq!(&*s.replace_all(b"a KEY b"), b"a value b");
        assert!(matches!(s.replace_all(b"a KE b"), Cow::Borrowed(_)));
        assert!(s.contains_any(b"xxKEYxx"));
        assert!(!s.contains_any(b"xxKExx"));
        assert!(!s.is_empty());
        assert_eq!(s.max_pattern_len(), 3);
    }

    #[test]
    fn multiple_patterns() {
        let s = secrets();
        let input = cat(&[b"{\"a\":\"", PH1, b"\",\"b\":\"", PH2, b"\"}"]);
        let want = cat(&[b"{\"a\":\"", REAL1, b"\",\"b\":\"", REAL2, b"\"}"]);
        assert_eq!(&*s.replace_all(&input), want.as_slice());
        assert_eq!(s.max_pattern_len(), PH1.len());
    }

    #[test]
    fn pattern_at_start_and_end_and_whole() {
        let s = secrets();
        assert_eq!(
            &*s.replace_all(&cat(&[PH1, b"/x"])),
            cat(&[REAL1, b"/x"]).as_slice()
        );
        assert_eq!(
            &*s.replace_all(&cat(&[b"/x?k=", PH1])),
            cat(&[b"/x?k=", REAL1]).as_slice()
        );
        assert_eq!(&*s.replace_all(PH2), REAL2);
    }

    #[test]
    fn adjacent_occurrences() {
        let s = secrets();
        let input = cat(&[PH1, PH1, PH2, PH1]);
        let want = cat(&[REAL1, REAL1, REAL2, REAL1]);
        assert_eq!(&*s.replace_all(&input), want.as_slice());
        let (out, n) = stream_with_splits(&s, &input, &[]);
        assert_eq!(out, want);
        assert_eq!(n, 4);
        // Overlap-prone short pattern: "aa" in "aaaaa" → two matches + "a".
        let s = subs(&[(b"aa", b"X")]);
        assert_eq!(&*s.replace_all(b"aaaaa"), b"XXa");
    }

    #[test]
    fn empty_set_passes_through() {
        let s = Substitutions::new(vec![(Vec::new(), b"ignored".to_vec())]);
        assert!(s.is_empty());
        assert_eq!(s.max_pattern_len(), 0);
        assert!(matches!(s.replace_all(b"abc"), Cow::Borrowed(_)));
        assert!(!s.contains_any(b"abc"));
        let mut r = s.stream();
        assert_eq!(r.push(b"abc"), b"abc");
        assert_eq!(r.finish(), b"");
        assert_eq!(r.replaced(), 0);
        assert!(s.inverse().is_empty());
        assert_eq!(
            substitute_header_value(&s, "authorization", b"Bearer x"),
            None
        );
    }

    #[test]
    fn duplicate_from_first_wins() {
        let s = subs(&[(b"K", b"first"), (b"K", b"second")]);
        assert_eq!(&*s.replace_all(b"K"), b"first");
    }

    #[test]
    fn every_single_split_point() {
        let s = secrets();
        let input = cat(&[b"x", PH1, b"yy", PH2, PH1, b"AIRLOCK_SECRET_", b"z"]);
        let want = s.replace_all(&input).into_owned();
        assert_eq!(
            want,
            cat(&[b"x", REAL1, b"yy", REAL2, REAL1, b"AIRLOCK_SECRET_", b"z"])
        );
        for i in 0..=input.len() {
            let (out, n) = stream_with_splits(&s, &input, &[i]);
            assert_eq!(out, want, "split at {i}");
            assert_eq!(n, 3, "split at {i}");
        }
    }

    #[test]
    fn every_pair_of_split_points_small_patterns() {
        // Small patterns with shared prefixes/suffixes stress the carry logic.
        let s = subs(&[
            (b"abc", b"1"),
            (b"abcde", b"22"),
            (b"cd", b"333"),
            (b"b", b""),
        ]);
        let input = b"xabcdeabcdabcabcdxbcdeab";
        let want = s.replace_all(input).into_owned();
        let matches = count_matches(&s, input);
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let (out, n) = stream_with_splits(&s, input, &[i, j]);
                assert_eq!(out, want, "splits at {i},{j}");
                assert_eq!(n, matches);
            }
        }
    }

    #[test]
    fn one_byte_chunks() {
        let s = secrets();
        let input = cat(&[
            b"GET /v1?key=",
            PH1,
            b"&other=",
            PH2,
            b" tail AIRLOCK_SECRET_aaa",
        ]);
        let splits: Vec<usize> = (1..input.len()).collect();
        let (out, n) = stream_with_splits(&s, &input, &splits);
        assert_eq!(out, s.replace_all(&input).into_owned());
        assert_eq!(n, 2);
    }

    #[test]
    fn random_chunkings_match_whole_replacement() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let pattern_sets: Vec<Substitutions> = vec![
            secrets(),
            subs(&[(b"ab", b"X"), (b"abcd", b"Y"), (b"bc", b"ZZZ"), (b"d", b"")]),
            subs(&[(b"aaa", b"b"), (b"aa", b"c"), (b"ba", b"aaaa")]),
        ];
        // Fragments that form partial and full patterns when concatenated.
        let fragments: Vec<&[u8]> = vec![
            PH1,
            PH2,
            &PH1[..20],
            &PH2[15..],
            b"AIRLOCK_",
            b"SECRET_",
            b"a",
            b"b",
            b"c",
            b"d",
            b"ab",
            b"abc",
            b"xyz",
            b"\"",
        ];
        for round in 0..3000 {
            let s = &pattern_sets[round % pattern_sets.len()];
            let mut input = Vec::new();
            for _ in 0..rng.below(30) {
                input.extend_from_slice(fragments[rng.below(fragments.len())]);
            }
            let mut splits = Vec::new();
            let mut at = 0;
            loop {
                // Mostly tiny chunks, sometimes big ones.
                at += if rng.below(4) == 0 {
                    rng.below(80)
                } else {
                    rng.below(4)
                };
                if at >= input.len() {
                    break;
                }
                splits.push(at);
            }
            let want = s.replace_all(&input).into_owned();
            let (out, n) = stream_with_splits(s, &input, &splits);
            assert_eq!(out, want, "round {round}");
            assert_eq!(n, count_matches(s, &input), "round {round}");
        }
    }

    #[test]
    fn automaton_agrees_with_naive_matcher() {
        let mut rng = Rng(42);
        let s = subs(&[(b"ab", b"X"), (b"abcd", b"Y"), (b"bcd", b"Z"), (b"c", b"W")]);
        let inner = s.inner.as_deref().expect("non-empty");
        assert!(matches!(inner.matcher, Matcher::Automaton(_)));
        for _ in 0..2000 {
            let input: Vec<u8> = (0..rng.below(40)).map(|_| b"abcdx"[rng.below(5)]).collect();
            for at in 0..=input.len() {
                let naive = inner
                    .naive_find(&input[at..])
                    .map(|m| (m.id, m.start + at, m.end + at));
                let auto = inner.find(&input, at).map(|m| (m.id, m.start, m.end));
                assert_eq!(
                    auto,
                    naive,
                    "input {:?} at {at}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }

    #[test]
    fn naive_fallback_streams_identically() {
        let s = subs(&[(b"ab", b"X"), (b"abcd", b"Y"), (b"bc", b"ZZZ")]);
        let inner = s.inner.as_deref().expect("non-empty");
        let naive = Substitutions {
            inner: Some(Arc::new(Inner {
                pairs: inner.pairs.clone(),
                matcher: Matcher::Naive,
                max_len: inner.max_len,
                first_bytes: inner.first_bytes,
            })),
        };
        let input = b"abcdabcabxbcdab";
        for i in 0..=input.len() {
            assert_eq!(
                stream_with_splits(&naive, input, &[i]).0,
                s.replace_all(input).into_owned()
            );
        }
    }

    #[test]
    fn prefix_at_end_of_stream_is_not_a_match() {
        let s = secrets();
        for cut in 1..PH1.len() {
            let input = cat(&[b"body ", &PH1[..cut]]);
            let mut r = s.stream();
            let mut out = r.push(&input);
            // The partial placeholder is held back: it might still complete.
            assert_eq!(r.pending_len(), cut);
            out.extend(r.finish());
            assert_eq!(out, input, "prefix of length {cut}");
            assert_eq!(r.replaced(), 0);
        }
        // A held-back prefix that turns out not to be a match is released
        // as soon as the diverging byte arrives.
        let mut r = s.stream();
        assert_eq!(r.push(b"xAIRLOCK_SEC"), b"x");
        assert_eq!(r.push(b"Z"), b"AIRLOCK_SECZ");
        assert_eq!(r.pending_len(), 0);
    }

    #[test]
    fn carry_holds_matches_found_inside_a_pending_prefix() {
        // "ab" is pending as a prefix of "abcd", yet contains a complete "b".
        let s = subs(&[(b"abcd", b"L"), (b"b", b"S")]);
        let mut r = s.stream();
        assert_eq!(r.push(b"ab"), b"");
        assert_eq!(r.finish(), b"aS");
        assert_eq!(r.replaced(), 1);
        let mut r = s.stream();
        assert_eq!(r.push(b"ab"), b"");
        assert_eq!(r.push(b"cd!"), b"L!");
        // A complete match that cannot grow is released at once, not carried.
        let mut r = s.stream();
        assert_eq!(r.push(b"xb"), b"xS");
        assert_eq!(r.pending_len(), 0);
    }

    #[test]
    fn earlier_longer_match_beats_later_shorter_one_across_chunks() {
        // In "abcd" the buffer alone would match "cd"; with the next byte
        // "abcde" starts earlier and must win.
        let s = subs(&[(b"abcde", b"L"), (b"cd", b"S")]);
        let mut r = s.stream();
        let mut out = r.push(b"abcd");
        out.extend(r.push(b"e"));
        out.extend(r.finish());
        assert_eq!(out, b"L");
        let mut r = s.stream();
        let mut out = r.push(b"abcd");
        out.extend(r.push(b"x"));
        out.extend(r.finish());
        assert_eq!(out, b"abSx");
    }

    #[test]
    fn pattern_that_prefixes_another() {
        let s = subs(&[(b"AIRLOCK_SECRET_a", b"short"), (PH1, b"long")]);
        assert_eq!(&*s.replace_all(PH1), b"long");
        assert_eq!(&*s.replace_all(b"AIRLOCK_SECRET_ab"), b"shortb");
        let input = cat(&[PH1, b"AIRLOCK_SECRET_a", b"AIRLOCK_SECRET_aa"]);
        let want = s.replace_all(&input).into_owned();
        assert_eq!(want, b"longshortshorta");
        for i in 0..=input.len() {
            assert_eq!(stream_with_splits(&s, &input, &[i]).0, want, "split at {i}");
        }
    }

    #[test]
    fn inverse_scrubs_real_values_in_responses() {
        let s = secrets();
        let inv = s.inverse();
        assert_eq!(inv.max_pattern_len(), REAL2.len());
        let body = cat(&[
            b"{\"echo\":\"",
            REAL1,
            b"\",\"err\":\"bad key ",
            REAL2,
            b"\"}",
        ]);
        let want = cat(&[b"{\"echo\":\"", PH1, b"\",\"err\":\"bad key ", PH2, b"\"}"]);
        assert_eq!(&*inv.replace_all(&body), want.as_slice());
        for i in 0..=body.len() {
            let (out, n) = stream_with_splits(&inv, &body, &[i]);
            assert_eq!(out, want, "split at {i}");
            assert_eq!(n, 2);
        }
        // Round trip restores the original.
        let req = cat(&[b"k=", PH1, b"&j=", PH2]);
        assert_eq!(&*inv.replace_all(&s.replace_all(&req)), req.as_slice());
    }

    #[test]
    fn values_longer_and_shorter_than_placeholders() {
        let s = subs(&[(PH1, b"x"), (PH2, &[b'y'; 300])]);
        let input = cat(&[b"<", PH1, b"|", PH2, b">"]);
        let want = cat(&[b"<x|", &[b'y'; 300], b">"]);
        let splits: Vec<usize> = (3..input.len()).step_by(7).collect();
        assert_eq!(stream_with_splits(&s, &input, &splits).0, want);
        // Inverse: a one-byte value becomes a pattern of length 1 (no carry).
        let inv = s.inverse();
        let mut r = inv.stream();
        assert_eq!(r.push(b"axb"), cat(&[b"a", PH1, b"b"]));
        assert_eq!(r.pending_len(), 0);
    }

    #[test]
    fn basic_auth_credentials_are_decoded_and_swapped() {
        let s = secrets();
        let creds = cat(&[b"user:", PH1]);
        let value = format!("Basic {}", STANDARD.encode(&creds));
        let out = substitute_header_value(&s, "Authorization", value.as_bytes())
            .expect("credentials contain a placeholder");
        let token = out.strip_prefix(b"Basic ").expect("scheme kept");
        assert_eq!(STANDARD.decode(token).unwrap(), cat(&[b"user:", REAL1]));

        // Response direction restores the placeholder exactly.
        let back = substitute_header_value(&s.inverse(), "authorization", &out).unwrap();
        assert_eq!(back, value.as_bytes());

        // Case-insensitive scheme and header name, missing padding, extra
        // whitespace, Proxy-Authorization.
        let unpadded = STANDARD.encode(&creds).trim_end_matches('=').to_string();
        assert_ne!(unpadded.len() % 4, 0, "test needs a token that is padded");
        let value = format!("  bAsIc \t{unpadded} ");
        let out = substitute_header_value(&s, "PROXY-AUTHORIZATION", value.as_bytes()).unwrap();
        let want = format!("  bAsIc \t{} ", STANDARD.encode(cat(&[b"user:", REAL1])));
        assert_eq!(out, want.as_bytes());
    }

    #[test]
    fn basic_auth_edge_cases() {
        let s = secrets();
        // Not base64 (placeholder used raw): plain replacement only.
        let value = cat(&[b"Basic ", PH1]);
        assert_eq!(
            substitute_header_value(&s, "authorization", &value).unwrap(),
            cat(&[b"Basic ", REAL1])
        );
        // Valid base64 without a placeholder: untouched.
        let value = format!("Basic {}", STANDARD.encode("user:pass"));
        assert_eq!(
            substitute_header_value(&s, "authorization", value.as_bytes()),
            None
        );
        // Only auth headers get decoded.
        let value = STANDARD.encode(cat(&[b"user:", PH1]));
        assert_eq!(
            substitute_header_value(&s, "x-custom", format!("Basic {value}").as_bytes()),
            None
        );
        // Malformed shapes do not panic and are left alone.
        for v in [
            &b"Basic"[..],
            b"Basic ",
            b"Basic  ",
            b"",
            b" ",
            b"Basic a b",
            b"Basic ====",
        ] {
            assert_eq!(substitute_header_value(&s, "authorization", v), None);
        }
    }

    #[test]
    fn bearer_and_plain_headers() {
        let s = secrets();
        let value = cat(&[b"Bearer ", PH2]);
        assert_eq!(
            substitute_header_value(&s, "Authorization", &value).unwrap(),
            cat(&[b"Bearer ", REAL2])
        );
        assert_eq!(
            substitute_header_value(&s, "x-api-key", PH1).unwrap(),
            REAL1.to_vec()
        );
        assert_eq!(substitute_header_value(&s, "x-api-key", b"unrelated"), None);
        assert_eq!(
            substitute_header_value(&s, "authorization", b"Bearer abc"),
            None
        );
    }

    #[test]
    fn debug_output_does_not_reveal_values() {
        let s = secrets();
        let mut r = s.inverse().stream();
        let _ = r.push(&REAL2[..10]);
        let text = format!("{s:?} {r:?} {:?}", s.inverse());
        assert!(!text.contains("sk-live"), "{text}");
        assert!(!text.contains("a-much"), "{text}");
        assert!(!text.contains("AIRLOCK"), "{text}");
    }
}
