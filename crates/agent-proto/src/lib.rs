//! The protocol spoken between the airlock host side and the agent, PID 1 of
//! every sandbox, over one inherited `SOCK_STREAM` unix socket.
//!
//! It multiplexes request/response calls and byte streams over one socket:
//!
//! ```text
//! frame  = header payload
//! header = len:u32be kind:u8 id:u32be       (len counts kind+id+payload)
//! ```
//!
//! | kind   | id          | payload                                   | sender  |
//! |--------|-------------|-------------------------------------------|---------|
//! | Hello  | 0           | JSON [`Hello`]                            | agent, first frame |
//! | Call   | call id     | JSON [`Call`] `{method, params}`          | host    |
//! | Reply  | call id     | JSON `{"ok": v}` or `{"error": ErrorObject}` | agent |
//! | Data   | stream id   | raw bytes (never empty)                   | either  |
//! | End    | stream id   | empty: the sender's stream is finished    | either  |
//! | Cancel | stream id   | empty: the receiver wants no more data    | either  |
//! | Credit | stream id   | u32be: the receiver took this many more bytes | either |
//!
//! Stream ids are chosen by the side that sends the data, so the two
//! directions have separate id spaces: `Data`/`End` name a stream of the
//! sender, `Cancel` and `Credit` name a stream of the receiver. After a
//! `Cancel` the sender stops sending data but still sends `End`, so the
//! receiver knows when it may forget the stream.
//!
//! Most streams are unwindowed (process output, walk entries). Tunnel
//! streams (`tcpConnect`, `sftpOpen`) and file contents (`writeFile` with
//! `contentStreamId`, `readFile` with `stream: true`) are windowed: their
//! sender keeps at most [`TUNNEL_WINDOW`] / [`FILE_WINDOW`] bytes
//! unacknowledged and the receiver returns `Credit` as it consumes, so a
//! slow reader on one end holds back the other end's socket instead of
//! growing a buffer in the daemon or the agent (whose memory counts
//! towards the sandbox's cgroup).
//!
//! Files of any size move this way: a frame carries at most
//! [`MAX_PAYLOAD`] bytes, but a file is a stream of frames. `readFile` /
//! `readTextFile` with `stream: true` reply `{streamId}` and send the
//! file's bytes on that stream; `writeFile` / `writeTextFile` with
//! `contentStreamId` write each piece as it arrives and credit it back.
//!
//! The call methods and their params deliberately mirror the Deno Sandbox
//! JSON-RPC methods (`spawn`, `processWait`, `readFile`, ...), so the daemon
//! forwards most calls unchanged; see `crates/agent/src/dispatch.rs`. The
//! methods are listed in [`Method`]; their params and results are the
//! types in [`calls`].

pub mod calls;
mod codec;
pub mod console;
mod error;
mod messages;
mod methods;

/// Bytes a tunnel stream's sender may have in flight before a `Credit`.
pub const TUNNEL_WINDOW: usize = 1 << 20;
/// Bytes of a file's contents either side may have in flight before a
/// `Credit` (`readFile` with `stream: true`, `writeFile` with
/// `contentStreamId`).
pub const FILE_WINDOW: usize = 1 << 20;

pub use codec::{encode_frame, DecodeError, Decoder, Frame, FrameKind, HEADER_LEN, MAX_PAYLOAD};
pub use error::{zod_type, ErrorObject, ZodIssue, VALIDATION_ERROR};
pub use messages::{Call, Hello, Reply, PROTOCOL_VERSION};
pub use methods::{Method, Route};
