//! Undoing the content and transfer codings of an intercepted response, so
//! that the masking of real values sees the bytes a client will see.
//!
//! The gateway asks upstreams for `Accept-Encoding: identity`, but nothing
//! obliges an upstream to honour it: one that answers gzip anyway would
//! carry a real value past the masking inside compressed bytes, and the
//! sandbox's client (or the sandbox's code, by hand) would inflate it. So
//! every response body with a coding is decoded here, masked, and forwarded
//! decoded; a coding this module does not know is refused, never passed on.
//!
//! Decoders: async-compression (the maintained async front end over flate2,
//! brotli-decompressor and zstd, the crates HTTP clients such as reqwest use)
//! pulls the compressed body on demand and writes into a bounded buffer, so
//! memory per response is the codec's window (32 KiB for gzip/deflate, at
//! most 16 MiB for brotli, at most 8 MiB for zstd as RFC 9659 allows) plus
//! the buffers here, whatever the decoded size. A decompression bomb costs
//! CPU in proportion to what the sandbox reads, and nothing more: hyper
//! polls the body only as fast as the sandbox takes it.

use async_compression::tokio::bufread::{
    BrotliDecoder, DeflateDecoder, GzipDecoder, ZlibDecoder, ZstdDecoder,
};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http_body_util::{BodyDataStream, BodyExt};
use hyper::body::{Body, Frame, SizeHint};
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader, ReadBuf};
use tokio_util::io::StreamReader;

use super::body::BoxError;

/// Bytes read from a decoder at a time (one data frame at most).
const CHUNK: usize = 32 * 1024;
/// Buffer between one decoder and the coded bytes it reads.
const INPUT_BUFFER: usize = 16 * 1024;

/// A coding a response can carry that the gateway can undo. These are all
/// the codings curl, browsers, Node, Python and Go clients decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `gzip` and its alias `x-gzip`; several members are decoded in turn.
    Gzip,
    /// `deflate`: zlib-wrapped as RFC 9110 says, or raw deflate as some
    /// servers send it and clients accept (chosen by the first two bytes).
    Deflate,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
}

impl Coding {
    fn parse(token: &str) -> Option<Self> {
        match token.to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Some(Self::Gzip),
            "deflate" => Some(Self::Deflate),
            "br" => Some(Self::Brotli),
            "zstd" => Some(Self::Zstd),
            _ => None,
        }
    }
}

/// A coding the gateway cannot undo, so cannot mask inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCoding {
    /// `Content-Encoding` or `Transfer-Encoding`.
    pub header: &'static str,
    /// The token as the upstream sent it (cut short if long).
    pub token: String,
}

impl fmt::Display for UnknownCoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the response has {}: {:?}, which the gateway cannot decode, so it cannot \
             mask secrets in it; response refused",
            self.header, self.token
        )
    }
}

/// The codings of a response, in the order they were applied: every
/// `Content-Encoding` then every `Transfer-Encoding` but `chunked` (hyper has
/// already removed the chunked framing). `identity` is skipped. Empty when
/// the body is as sent.
pub fn codings(headers: &HeaderMap) -> Result<Vec<Coding>, UnknownCoding> {
    let mut out = Vec::new();
    for (name, header, skip) in [
        (header::CONTENT_ENCODING, "Content-Encoding", "identity"),
        (header::TRANSFER_ENCODING, "Transfer-Encoding", "chunked"),
    ] {
        for value in headers.get_all(name) {
            let unknown = |token: &str| UnknownCoding {
                header,
                token: token.chars().take(64).collect(),
            };
            let value = value
                .to_str()
                .map_err(|_| unknown(&String::from_utf8_lossy(value.as_bytes())))?;
            for token in value.split(',').map(str::trim) {
                if token.is_empty()
                    || token.eq_ignore_ascii_case("identity")
                    || token.eq_ignore_ascii_case(skip)
                {
                    continue;
                }
                out.push(Coding::parse(token).ok_or_else(|| unknown(token))?);
            }
        }
    }
    Ok(out)
}

type Reader = Pin<Box<dyn AsyncRead + Send + Sync>>;

/// `body` with `codings` (as [`codings`] returned them) undone, as a body of
/// plain bytes. A corrupt or truncated coding ends it with an error, so a
/// client gets a broken response rather than the undecodable rest.
pub fn decoded<B>(body: B, codings: &[Coding]) -> DecodedBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let raw = body.map_err(|e| io::Error::other(e.into()));
    let mut reader: Reader = Box::pin(StreamReader::new(BodyDataStream::new(raw)));
    // The last coding applied is the first to undo.
    for &coding in codings.iter().rev() {
        reader = Box::pin(Layer {
            coding,
            state: State::Peek {
                inner: reader,
                head: Vec::with_capacity(2),
            },
        });
    }
    DecodedBody {
        reader,
        buf: BytesMut::new(),
        done: false,
    }
}

/// One decoder. It first reads two bytes: an empty body stays empty (a
/// decoder would call it truncated), and `deflate` needs them to tell a
/// zlib header from raw deflate.
struct Layer {
    coding: Coding,
    state: State,
}

enum State {
    Peek { inner: Reader, head: Vec<u8> },
    Run(Reader),
    Empty,
}

impl Layer {
    fn start(coding: Coding, head: Vec<u8>, inner: Reader) -> Reader {
        let zlib = is_zlib_header(&head);
        let input = BufReader::with_capacity(INPUT_BUFFER, io::Cursor::new(head).chain(inner));
        match coding {
            Coding::Gzip => {
                let mut d = GzipDecoder::new(input);
                d.multiple_members(true);
                Box::pin(d)
            }
            Coding::Deflate if zlib => Box::pin(ZlibDecoder::new(input)),
            Coding::Deflate => Box::pin(DeflateDecoder::new(input)),
            Coding::Brotli => Box::pin(BrotliDecoder::new(input)),
            Coding::Zstd => {
                // Windows over 8 MiB are refused (RFC 9659), bounding memory.
                let mut d = ZstdDecoder::new_for_http(input);
                d.multiple_members(true);
                Box::pin(d)
            }
        }
    }
}

/// RFC 1950: compression method 8 with a window of at most 32 KiB, and a
/// check value making the first two bytes a multiple of 31.
fn is_zlib_header(head: &[u8]) -> bool {
    match head {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

impl AsyncRead for Layer {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Run(reader) => return reader.as_mut().poll_read(cx, buf),
                State::Empty => return Poll::Ready(Ok(())),
                State::Peek { inner, head } => {
                    let mut two = [0u8; 2];
                    let mut peek = ReadBuf::new(&mut two[head.len()..]);
                    ready!(inner.as_mut().poll_read(cx, &mut peek))?;
                    let got = peek.filled();
                    let eof = got.is_empty();
                    head.extend_from_slice(got);
                    if eof && head.is_empty() {
                        this.state = State::Empty;
                    } else if eof || head.len() == 2 {
                        let State::Peek { inner, head } =
                            std::mem::replace(&mut this.state, State::Empty)
                        else {
                            unreachable!("matched Peek above");
                        };
                        this.state = State::Run(Self::start(this.coding, head, inner));
                    }
                }
            }
        }
    }
}

/// The decoded bytes as a body. Trailers of the coded body are dropped.
pub struct DecodedBody {
    reader: Reader,
    buf: BytesMut,
    done: bool,
}

impl Body for DecodedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        this.buf.reserve(CHUNK);
        match ready!(tokio_util::io::poll_read_buf(
            this.reader.as_mut(),
            cx,
            &mut this.buf
        )) {
            Ok(0) => {
                this.done = true;
                Poll::Ready(None)
            }
            Ok(_) => Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze())))),
            Err(e) => {
                this.done = true;
                Poll::Ready(Some(Err(format!("decoding the response: {e}").into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_compression::tokio::bufread::{
        BrotliEncoder, DeflateEncoder, GzipEncoder, ZlibEncoder, ZstdEncoder,
    };
    use http::HeaderValue;
    use http_body_util::BodyExt;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn codings_are_read_in_order_and_unknown_ones_refused() {
        use Coding::*;
        assert_eq!(codings(&headers(&[])).unwrap(), vec![]);
        assert_eq!(
            codings(&headers(&[("content-encoding", "identity")])).unwrap(),
            vec![]
        );
        assert_eq!(
            codings(&headers(&[
                ("content-encoding", "GZip, br"),
                ("content-encoding", "x-gzip,,zstd"),
                ("transfer-encoding", "deflate, chunked"),
            ]))
            .unwrap(),
            vec![Gzip, Brotli, Gzip, Zstd, Deflate]
        );
        assert_eq!(
            codings(&headers(&[("transfer-encoding", "chunked")])).unwrap(),
            vec![]
        );
        for (h, v, token) in [
            ("content-encoding", "gzip, compress", "compress"),
            ("content-encoding", "aes128gcm", "aes128gcm"),
            ("content-encoding", "chunked", "chunked"),
            ("transfer-encoding", "x-custom, chunked", "x-custom"),
        ] {
            let err = codings(&headers(&[(h, v)])).unwrap_err();
            assert_eq!(err.token, token);
            assert!(err.to_string().contains("refused"), "{err}");
        }
    }

    async fn encode(coding: &str, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            "gzip" => GzipEncoder::new(data).read_to_end(&mut out).await,
            "zlib" => ZlibEncoder::new(data).read_to_end(&mut out).await,
            "raw" => DeflateEncoder::new(data).read_to_end(&mut out).await,
            "br" => BrotliEncoder::new(data).read_to_end(&mut out).await,
            "zstd" => ZstdEncoder::new(data).read_to_end(&mut out).await,
            _ => unreachable!(),
        }
        .unwrap();
        out
    }

    /// A body delivering `data` in chunks of `size` bytes.
    struct Chunks(std::collections::VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn chunks(data: &[u8], size: usize) -> Chunks {
        Chunks(
            data.chunks(size.max(1))
                .map(Bytes::copy_from_slice)
                .collect(),
        )
    }

    async fn decode_all(body: Chunks, c: &[Coding]) -> Result<Vec<u8>, String> {
        decoded(body, c)
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn every_coding_and_stacks_decode_at_any_chunking() {
        use Coding::*;
        let plain: Vec<u8> = (0..5_000u32)
            .flat_map(|i| format!("line {i} sk-live-secret\n").into_bytes())
            .collect();
        let cases: Vec<(Vec<&str>, Vec<Coding>)> = vec![
            (vec!["gzip"], vec![Gzip]),
            (vec!["zlib"], vec![Deflate]),
            (vec!["raw"], vec![Deflate]),
            (vec!["br"], vec![Brotli]),
            (vec!["zstd"], vec![Zstd]),
            // "gzip, br": gzip applied first, so br is undone first.
            (vec!["gzip", "br"], vec![Gzip, Brotli]),
            (vec!["zstd", "raw", "gzip"], vec![Zstd, Deflate, Gzip]),
        ];
        for (encoders, codings) in cases {
            let mut coded = plain.clone();
            for e in &encoders {
                coded = encode(e, &coded).await;
            }
            for size in [1, 2, 3, 7, 4096, usize::MAX] {
                let size = size.min(coded.len());
                let got = decode_all(chunks(&coded, size), &codings).await;
                assert!(
                    got.as_deref() == Ok(plain.as_slice()),
                    "{encoders:?} in {size}-byte chunks"
                );
            }
        }
    }

    #[tokio::test]
    async fn several_gzip_members_and_empty_bodies() {
        let mut coded = encode("gzip", b"first ").await;
        coded.extend(encode("gzip", b"second").await);
        assert_eq!(
            decode_all(chunks(&coded, 5), &[Coding::Gzip])
                .await
                .unwrap(),
            b"first second"
        );
        for c in [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd] {
            assert_eq!(decode_all(chunks(b"", 1), &[c]).await.unwrap(), b"");
        }
    }

    #[tokio::test]
    async fn corrupt_or_truncated_bodies_end_in_an_error() {
        let coded = encode("gzip", b"some text that is long enough").await;
        let err = decode_all(chunks(&coded[..coded.len() / 2], 4), &[Coding::Gzip])
            .await
            .unwrap_err();
        assert!(err.contains("decoding the response"), "{err}");
        // Not gzip at all (plain text labelled gzip).
        assert!(decode_all(chunks(b"plain text", 3), &[Coding::Gzip])
            .await
            .is_err());
        assert!(decode_all(chunks(b"plain text", 3), &[Coding::Zstd])
            .await
            .is_err());
    }

    #[tokio::test]
    async fn zstd_windows_over_8_mib_are_refused() {
        use async_compression::zstd::CParameter;
        let plain = vec![7u8; 1 << 20];
        let mut coded = Vec::new();
        ZstdEncoder::with_quality_and_params(
            plain.as_slice(),
            async_compression::Level::Default,
            &[CParameter::window_log(24)],
        )
        .read_to_end(&mut coded)
        .await
        .unwrap();
        assert!(decode_all(chunks(&coded, 1024), &[Coding::Zstd])
            .await
            .is_err());
    }

    #[test]
    fn zlib_headers_are_told_from_raw_deflate() {
        assert!(is_zlib_header(&[0x78, 0x9c]));
        assert!(is_zlib_header(&[0x78, 0x01]));
        assert!(is_zlib_header(&[0x78, 0xda]));
        assert!(!is_zlib_header(&[0x78, 0x9d]));
        assert!(!is_zlib_header(&[0x78]));
        // Raw deflate of "x" with a fixed-Huffman block.
        assert!(!is_zlib_header(&[0xab, 0x00]));
    }
}
