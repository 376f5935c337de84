//! The params and results of the calls the agent serves, as types: a
//! `spawn` goes from the daemon's WebSocket to the agent's process table
//! as a [`SpawnParams`] and comes back as a [`SpawnResult`].
//!
//! Params are decoded with [`FromParams`], not with serde's `Deserialize`:
//! the SDKs send loosely shaped JSON (`null` for an option not given,
//! options nested under `options`, `3.0` for an integer), and a param of
//! the wrong type must fail as the hosted service fails, with a zod-shaped
//! validation error naming its path ([`crate::ErrorObject::invalid_type`],
//! which the Python SDK raises as `RpcValidationError`). Each impl reads
//! the fields in the order the handlers always did, so the first bad
//! param reported is the same. Params derive `Serialize`, in the wire
//! form a sender writes (the daemon building an internal call, tests);
//! decoding what a value serializes to gives the value back.
//!
//! Results derive both: the agent serializes them, the daemon reads the
//! fields it rewrites (stream ids, sizes) from them.
//!
//! The calls the daemon serves itself (`fetch`, `abort`, `exposeHttp`)
//! are typed here too, as are the client protocol's JSON-RPC envelope
//! ([`Envelope`]) and its stream notifications ([`StreamMessage`]).

mod daemon;
mod deno;
mod env;
mod envelope;
mod fs;
mod process;
mod reader;
mod stream;
pub mod time;
mod tunnel;

pub use daemon::{
    pid_number, port_number, AbortParams, ExposeHttpParams, FetchParams, FetchResult, Redirect,
    SandboxPort,
};
pub use deno::{
    DenoModule, DenoProcessOptions, DenoReplCallParams, DenoReplEvalParams, SpawnDenoParams,
    SpawnDenoReplParams, SpawnDenoResult,
};
pub use env::{validate_env_name, EnvKeyParams, EnvSetParams, EnvToObjectResult};
pub use envelope::Envelope;
pub use fs::{
    path as path_param, time as time_param, ChmodParams, ChownParams, Content, CopyFileParams,
    DirEntry, ExpandGlobParams, FileHandleParams, FileHandleResult, FileInfo, FileLockParams,
    FileReadParams, FileReadResult, FileSeekParams, FileSeekResult, FileTruncateParams,
    FileUtimeParams, FileWriteParams, FileWriteResult, JsRegex, LinkParams, MakeTempParams,
    MkdirParams, OpenParams, PathParams, ReadFileParams, RemoveParams, RenameParams,
    TruncateParams, UmaskParams, UtimeParams, WalkEntry, WalkParams, WriteFileParams,
};
pub use process::{
    ExitStatus, PidParams, ProcessKillParams, PtyResizeParams, PtySize, PythonError,
    PythonRunParams, PythonRunResult, SpawnParams, SpawnResult, Stdio,
};
pub use reader::{as_integer, kind, Params};
pub use stream::StreamMessage;
pub use tunnel::{HttpPortResult, SftpOpenParams, StreamResult, TcpConnectParams};

use crate::{ErrorObject, Method};
use serde_json::Value;

/// A call's params, decoded from the JSON the caller sent.
pub trait FromParams: Sized {
    /// Whether a nested `options` object is flattened into the top level
    /// (the fs methods, whose options the JS SDK nests).
    const FLATTEN_OPTIONS: bool = false;

    fn from_params(p: &Params) -> Result<Self, ErrorObject>;

    /// Decodes `params` of a call to `method` (named in error messages).
    fn decode(method: Method, params: &Value) -> Result<Self, ErrorObject> {
        Self::decode_named(method.as_str(), params)
    }

    /// [`FromParams::decode`] for a caller that names the method itself.
    fn decode_named(method: &str, params: &Value) -> Result<Self, ErrorObject> {
        let p = if Self::FLATTEN_OPTIONS {
            Params::new(method, params)?
        } else {
            Params::top_level(method, params)?
        };
        Self::from_params(&p)
    }
}

/// Params of a call that takes none (`envToObject`, `ping`): anything is
/// accepted, as it always was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct NoParams {}

impl FromParams for NoParams {
    fn from_params(_: &Params) -> Result<Self, ErrorObject> {
        Ok(Self {})
    }
}

/// `value` as JSON, for a reply: every result type serializes.
pub fn to_reply<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("results serialize")
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::FromParams;
    use crate::Method;
    use std::fmt::Debug;

    /// Decoding what `value` serializes to gives `value` back: the names
    /// `Serialize` writes are the ones [`FromParams`] reads.
    pub(crate) fn round_trips<T>(method: Method, value: T)
    where
        T: FromParams + serde::Serialize + PartialEq + Debug,
    {
        let json = serde_json::to_value(&value).unwrap();
        let back = T::decode(method, &json).unwrap_or_else(|e| panic!("{method}: {e:?}"));
        assert_eq!(back, value, "{method}: {json}");
    }
}
