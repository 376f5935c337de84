//! File contents through the daemon: big inline writes streamed to the
//! agent, and reads assembled into the one message the SDKs expect, within
//! the daemon's file budget.

use super::Rpc;
use crate::ws::ClientKind;
use agent_proto::calls::{
    to_reply, Content, FromParams, ReadFileParams, StreamResult, WriteFileParams,
};
use agent_proto::{ErrorObject, Method, FILE_WINDOW};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::OwnedSemaphorePermit;

impl Rpc {
    /// Takes `bytes` of the daemon's [`crate::FILE_BUDGET`] for `method`,
    /// or says why not. Never waits: two calls each holding part of the
    /// budget and waiting for more would wait for ever.
    fn take_budget(
        &self,
        method: &str,
        bytes: usize,
        held: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<(), ErrorObject> {
        let permit = u32::try_from(bytes)
            .ok()
            .and_then(|n| {
                self.state
                    .file_budget
                    .clone()
                    .try_acquire_many_owned(n)
                    .ok()
            })
            .ok_or_else(|| {
                ErrorObject::new(
                    "Error",
                    format!(
                        "{method}: the daemon is already moving {} MiB of file contents for its \
                         clients (its limit); retry shortly, or move the file as a stream",
                        crate::FILE_BUDGET >> 20
                    ),
                    None,
                )
            })?;
        match held {
            Some(h) => h.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }

    /// writeFile/writeTextFile. Content the SDK sent inline is forwarded
    /// inline when it fits an agent frame; bigger content goes to the agent
    /// as a windowed stream (the agent writes it piece by piece), decoded
    /// from the request a piece at a time, so neither side holds the file
    /// twice. Content already on a stream is relayed by `feed`/`notification`.
    pub(super) async fn write_file(
        &self,
        method: Method,
        mut params: Map<String, Value>,
    ) -> Result<Value, ErrorObject> {
        let m = method.as_str();
        let Some(content) = WriteFileParams::take_inline_over(&mut params, INLINE_WRITE_MAX) else {
            return self.forward(m, params).await;
        };
        let mut held = None;
        self.take_budget(m, content.len(), &mut held)?;
        let base64 = method == Method::WriteFile;
        if base64 {
            check_base64(&content).map_err(|e| {
                ErrorObject::type_error(format!("{m}: param \"content\" is not valid base64: {e}"))
            })?;
        }
        // The other params as the agent would decode them (its errors,
        // after the daemon's own about the contents, as they always came);
        // the stream is opened once they decode.
        let mut write = WriteFileParams::decode_streamed(m, &params, 0)?;
        drop(params);
        let client = &self.live.client;
        let (id, window) = client.open_windowed_stream(FILE_WINDOW);
        write.content = Content::Stream(id);
        let pump = async {
            let mut piece = vec![0u8; B64_PIECE / 4 * 3];
            let step = if base64 { B64_PIECE } else { TEXT_PIECE };
            for chunk in content.as_bytes().chunks(step) {
                let bytes = if base64 {
                    let n = LENIENT_B64
                        .decode_slice(chunk, &mut piece)
                        .expect("checked by check_base64");
                    &piece[..n]
                } else {
                    chunk
                };
                if bytes.is_empty() {
                    continue;
                }
                if client.send_windowed(id, &window, bytes).await.is_err() {
                    // The agent failed the call (its reply says why).
                    return;
                }
            }
            let _ = client.send_end(id).await;
        };
        let (result, ()) = tokio::join!(self.forward(m, to_reply(&write)), pump);
        client.close_windowed_stream(id);
        drop(held);
        result
    }

    /// readFile/readTextFile: the agent sends the file as a windowed stream
    /// (`stream: true`), and the reply the SDKs expect (the whole file in
    /// one message) is assembled here, up to what the client's WebSocket
    /// takes in one message and within the daemon's file budget. A bigger
    /// file is an error that names the limit and the way to read it in
    /// pieces, not a message the SDK would drop with its connection.
    pub(super) async fn read_file(
        &self,
        method: Method,
        params: Map<String, Value>,
        held: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<Value, ErrorObject> {
        let mut read = ReadFileParams::decode(method, &Value::Object(params))?;
        read.stream = true;
        let reply = self.forward(method.as_str(), to_reply(&read)).await?;
        let text = method == Method::ReadTextFile;
        let (method, path) = (method.as_str(), read.path);
        let Ok(StreamResult {
            stream_id: agent_id,
            size,
        }) = StreamResult::deserialize(&reply)
        else {
            // An agent that answered inline (it has no stream to offer).
            return Ok(reply);
        };
        let client = &self.live.client;
        let Some(mut rx) = client.take_stream(agent_id) else {
            return Err(ErrorObject::new(
                "Error",
                format!("{method}: stream {agent_id} was already taken"),
                None,
            ));
        };
        let limit = self.kind.max_message() - REPLY_ENVELOPE;
        // Bytes held per file byte: the raw text and its reply, or the
        // base64 (4 per 3) built into the reply in place.
        let cost = |bytes: usize| {
            if text {
                bytes.saturating_mul(2)
            } else {
                bytes.div_ceil(3).saturating_mul(4)
            }
        };
        let too_big = |bytes: usize| {
            if text {
                bytes > limit
            } else {
                bytes.div_ceil(3).saturating_mul(4) > limit
            }
        };
        // The size the agent saw decides at once what most files need (one
        // that grows meanwhile takes more as it comes): a file too big is
        // refused before it moves, and concurrent reads are admitted or
        // refused whole, rather than all failing halfway through the budget.
        let size = usize::try_from(size.unwrap_or(0)).unwrap_or(usize::MAX);
        let early = if too_big(size) {
            Some(self.too_big(method, &path))
        } else {
            self.take_budget(method, cost(size), held).err()
        };
        let mut reserved = if early.is_none() { cost(size) } else { 0 };
        // Sized up front (with room for the reply's envelope, added in
        // place), so growing never holds two copies at once.
        let (mut b64, mut raw) = match (&early, text) {
            (None, false) => (String::with_capacity(reserved + 256), Vec::new()),
            (None, true) => (String::new(), Vec::with_capacity(size)),
            (Some(_), _) => (String::new(), Vec::new()),
        };
        let mut total = 0usize;
        // Base64 is encoded in multiples of 3 bytes; the rest waits here.
        let mut carry = Vec::with_capacity(3);
        if early.is_some() {
            let _ = client.send_cancel(agent_id).await;
        }
        let mut failure = early;
        while let Some(chunk) = rx.recv().await {
            let _ = client.send_credit(agent_id, chunk.len() as u32).await;
            if failure.is_some() {
                continue;
            }
            total += chunk.len();
            let need = cost(total);
            if too_big(total) {
                failure = Some(self.too_big(method, &path));
            } else if need > reserved {
                match self.take_budget(method, need - reserved, held) {
                    Ok(()) => reserved = need,
                    Err(e) => failure = Some(e),
                }
            }
            if failure.is_some() {
                // Stop the agent; what is in flight (a window) is drained.
                let _ = client.send_cancel(agent_id).await;
                b64 = String::new();
                raw = Vec::new();
                continue;
            }
            if text {
                raw.extend_from_slice(&chunk);
                continue;
            }
            carry.extend_from_slice(&chunk);
            let whole = carry.len() / 3 * 3;
            base64::engine::general_purpose::STANDARD.encode_string(&carry[..whole], &mut b64);
            carry.drain(..whole);
        }
        client.drop_stream(agent_id);
        if let Some(e) = failure {
            // An error reply holds nothing.
            *held = None;
            return Err(e);
        }
        if !text {
            base64::engine::general_purpose::STANDARD.encode_string(&carry, &mut b64);
            return Ok(Value::String(b64));
        }
        let text = String::from_utf8(raw).map_err(|e| {
            let msg = format!("{}: {method} '{path}'", e.utf8_error());
            ErrorObject::new("InvalidData", msg, None)
        })?;
        if escaped_len(&text) > limit {
            return Err(self.too_big(method, &path));
        }
        Ok(Value::String(text))
    }

    /// The error for a file bigger than the client takes in one message.
    fn too_big(&self, method: &str, path: &str) -> ErrorObject {
        let (sdk, how) = match self.kind {
            ClientKind::Python => (
                "the Python SDK",
                "open it with fs.open() and read it in pieces of at most 512 KiB",
            ),
            ClientKind::Standard => (
                "the SDK",
                "read it in pieces with sandbox.fs.open() (FsFile.read or .readable), \
                 or copy it out with sandbox.fs.download()",
            ),
        };
        ErrorObject::new(
            "RangeError",
            format!(
                "{method} '{path}': the file is larger than {sdk} takes in one message \
                 ({} KiB with its encoding); {how}",
                self.kind.max_message() >> 10
            ),
            Some("EFBIG"),
        )
    }
}

/// Largest writeFile/writeTextFile content (as sent, base64 for bytes)
/// passed to the agent inline in the call: well within an agent frame
/// (`agent_proto::MAX_PAYLOAD`, 1 MiB). Bigger content is streamed.
const INLINE_WRITE_MAX: usize = 256 << 10;
/// Base64 characters decoded per piece of a streamed inline writeFile (a
/// multiple of 4, so every piece but the last is whole quanta).
const B64_PIECE: usize = 64 << 10;
/// Bytes per piece of a streamed inline writeTextFile.
const TEXT_PIECE: usize = 64 << 10;
/// Room left in a reply message for its JSON-RPC envelope.
const REPLY_ENVELOPE: usize = 4 << 10;
/// Standard-alphabet base64 with padding optional, as the agent (and JS)
/// decode it.
const LENIENT_B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Checks that `s` decodes, a piece at a time (nothing is kept), so a
/// streamed write never starts with content that fails halfway.
fn check_base64(s: &str) -> Result<(), base64::DecodeSliceError> {
    let mut scratch = vec![0u8; B64_PIECE / 4 * 3];
    for chunk in s.as_bytes().chunks(B64_PIECE) {
        LENIENT_B64.decode_slice(chunk, &mut scratch)?;
    }
    Ok(())
}

/// Length of `s` as a JSON string's contents (escapes counted).
fn escaped_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum()
}
