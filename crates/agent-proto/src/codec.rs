//! Frame encoding and an incremental decoder that survives bad input.

use thiserror::Error;

/// Bytes in a frame header: length (4), kind (1), id (4).
pub const HEADER_LEN: usize = 9;
/// Largest payload either side accepts. Bigger frames are skipped whole and
/// reported as [`DecodeError::Oversized`]; the connection stays usable.
pub const MAX_PAYLOAD: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    Hello = 1,
    Call = 2,
    Reply = 3,
    Data = 4,
    End = 5,
    Cancel = 6,
    Credit = 7,
}

impl FrameKind {
    fn from_u8(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Hello,
            2 => Self::Call,
            3 => Self::Reply,
            4 => Self::Data,
            5 => Self::End,
            6 => Self::Cancel,
            7 => Self::Credit,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub id: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: FrameKind, id: u32, payload: Vec<u8>) -> Self {
        Self { kind, id, payload }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error(
        "frame of {len} bytes exceeds the limit of {MAX_PAYLOAD} bytes (kind {kind}, id {id})"
    )]
    Oversized { kind: u8, id: u32, len: usize },
    #[error("unknown frame kind {kind} (id {id})")]
    UnknownKind { kind: u8, id: u32 },
    #[error("frame header declares a length of {0}, shorter than its kind and id")]
    Truncated(u32),
}

/// Appends the encoding of one frame to `out`.
///
/// Panics if the payload exceeds [`MAX_PAYLOAD`]: senders split data first.
pub fn encode_frame(kind: FrameKind, id: u32, payload: &[u8], out: &mut Vec<u8>) {
    assert!(payload.len() <= MAX_PAYLOAD, "payload over MAX_PAYLOAD");
    let len = (payload.len() + 5) as u32;
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Incremental decoder: feed it whatever the socket returned, then drain
/// frames with [`Decoder::next_frame`]. A bad frame yields one error and is
/// skipped; decoding continues with the next frame.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes still to discard from an oversized frame.
    skipping: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        let mut bytes = bytes;
        if self.skipping > 0 {
            let n = self.skipping.min(bytes.len());
            self.skipping -= n;
            bytes = &bytes[n..];
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if self.skipping > 0 || self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.buf[0..4].try_into().expect("4 bytes"));
        let kind = self.buf[4];
        let id = u32::from_be_bytes(self.buf[5..9].try_into().expect("4 bytes"));
        if len < 5 {
            // Only the 4 length bytes can be trusted to be consumed.
            self.buf.drain(..4);
            return Err(DecodeError::Truncated(len));
        }
        let payload_len = len as usize - 5;
        if payload_len > MAX_PAYLOAD {
            let available = self.buf.len() - HEADER_LEN;
            let drop_now = available.min(payload_len);
            self.buf.drain(..HEADER_LEN + drop_now);
            self.skipping = payload_len - drop_now;
            return Err(DecodeError::Oversized {
                kind,
                id,
                len: payload_len,
            });
        }
        if self.buf.len() < HEADER_LEN + payload_len {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..HEADER_LEN + payload_len].to_vec();
        self.buf.drain(..HEADER_LEN + payload_len);
        match FrameKind::from_u8(kind) {
            Some(kind) => Ok(Some(Frame { kind, id, payload })),
            None => Err(DecodeError::UnknownKind { kind, id }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_split_at_every_byte() {
        let mut wire = Vec::new();
        encode_frame(FrameKind::Call, 7, b"{\"method\":\"x\"}", &mut wire);
        encode_frame(FrameKind::Data, 9, b"hello", &mut wire);
        encode_frame(FrameKind::End, 9, b"", &mut wire);
        for split in 0..wire.len() {
            let mut dec = Decoder::new();
            let mut frames = Vec::new();
            dec.feed(&wire[..split]);
            while let Some(f) = dec.next_frame().unwrap() {
                frames.push(f);
            }
            dec.feed(&wire[split..]);
            while let Some(f) = dec.next_frame().unwrap() {
                frames.push(f);
            }
            assert_eq!(frames.len(), 3, "split at {split}");
            assert_eq!(frames[0].kind, FrameKind::Call);
            assert_eq!(frames[1].payload, b"hello");
            assert_eq!(frames[2].kind, FrameKind::End);
            assert_eq!(dec.buffered(), 0);
        }
    }

    #[test]
    fn oversized_frame_is_skipped_and_decoding_resumes() {
        let mut wire = Vec::new();
        let len = (MAX_PAYLOAD + 10 + 5) as u32;
        wire.extend_from_slice(&len.to_be_bytes());
        wire.push(FrameKind::Data as u8);
        wire.extend_from_slice(&3u32.to_be_bytes());
        wire.extend(std::iter::repeat_n(0xAA, MAX_PAYLOAD + 10));
        encode_frame(FrameKind::End, 4, b"", &mut wire);
        let mut dec = Decoder::new();
        let mut errors = 0;
        let mut frames = Vec::new();
        for chunk in wire.chunks(4096) {
            dec.feed(chunk);
            loop {
                match dec.next_frame() {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(DecodeError::Oversized { id: 3, .. }) => errors += 1,
                    Err(e) => panic!("unexpected {e}"),
                }
            }
        }
        assert_eq!(errors, 1);
        assert_eq!(frames, vec![Frame::new(FrameKind::End, 4, vec![])]);
    }

    #[test]
    fn unknown_kind_and_truncated_header_are_errors_not_panics() {
        let mut dec = Decoder::new();
        dec.feed(&[0, 0, 0, 6, 99, 0, 0, 0, 1, b'x']);
        assert_eq!(
            dec.next_frame(),
            Err(DecodeError::UnknownKind { kind: 99, id: 1 })
        );
        dec.feed(&[0, 0, 0, 2, 1, 1, 1, 1, 1]);
        assert_eq!(dec.next_frame(), Err(DecodeError::Truncated(2)));
    }
}
