//! Filesystem methods of the Deno Sandbox protocol (docs/protocol.md),
//! run by the agent inside the sandbox's mount namespace, so every path
//! resolves inside the sandbox.
//!
//! - [`FsState::call`]: the 22 path-based methods and the 13 file-handle
//!   methods, params as the JS and PY SDKs send them, each decoded into
//!   its type in `agent_proto::calls` before its handler runs.
//! - [`open_for_write`], [`open_for_read`]: writeFile/writeTextFile whose
//!   content comes on a stream and readFile/readTextFile that send it on
//!   one, piece by piece (files of any size, held a window at a time).
//! - [`walk`], [`expand_glob`]: the entries the dispatcher streams back, one
//!   JSON document per chunk.
//!
//! Bad params never panic: a missing or mistyped one is a zod-shaped
//! validation error naming its path, a senseless value a `TypeError` naming
//! the method and the param. OS errors keep their errno (`code`) and Deno
//! class.

mod glob;
mod handles;
mod info;
mod jsregex;
mod ops;
mod paths;
pub(crate) mod temp;
mod time;
mod walk;

#[cfg(test)]
mod tests;

use agent_proto::calls::{
    ExpandGlobParams, FileLockParams, ReadFileParams, WalkEntry, WalkParams, WriteFileParams,
};
use agent_proto::{ErrorObject, Method};
use base64::Engine;
use serde_json::Value;
use std::path::Path;

/// The agent's file system state: the open file handles.
pub struct FsState {
    handles: handles::Handles,
}

impl Default for FsState {
    fn default() -> Self {
        Self::new()
    }
}

impl FsState {
    pub fn new() -> Self {
        Self {
            handles: handles::Handles::new(),
        }
    }

    /// Runs one fs method with its JSON params; relative paths resolve
    /// against `cwd`. `None` when `method` is not one of the 35 methods
    /// handled here (`walk`/`expandGlob` stream their results, so the
    /// dispatcher calls [`walk`]/[`expand_glob`] for those).
    ///
    /// writeFile/writeTextFile with `contentStreamId` instead of `content`
    /// answer `TypeError`: the dispatcher writes the stream with
    /// [`open_for_write`].
    pub fn call(
        &mut self,
        method: Method,
        params: &Value,
        cwd: &Path,
    ) -> Option<Result<Value, ErrorObject>> {
        if let Some(result) = ops::call(method, params, cwd) {
            return Some(result);
        }
        handles::call(&mut self.handles, method, params, cwd)
    }
}

impl FsState {
    /// `fileLock` without blocking: `None` while another process holds a
    /// conflicting lock (retry later, without holding this state's lock).
    pub fn try_file_lock(&mut self, p: &FileLockParams) -> Option<Result<Value, ErrorObject>> {
        match self.handles.try_lock(Method::FileLock.as_str(), p) {
            Ok(Some(v)) => Some(Ok(v)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// writeFile / writeTextFile whose content arrives on a stream: opens the
/// file as the call's params say (`path`, options `{append, create,
/// createNew, mode}`); the caller writes each piece as it comes, so no file
/// is ever held whole in the agent's memory. Errors while writing are
/// reported with [`write_error`].
pub fn open_for_write(
    method: Method,
    params: &WriteFileParams,
    cwd: &Path,
) -> Result<std::fs::File, ErrorObject> {
    ops::open_for_write(method.as_str(), params, cwd).map(|(file, _)| file)
}

/// An error writing the file of `method` at `given` (the path as the
/// caller wrote it), in the same shape as the inline write's.
pub fn write_error(method: Method, given: &str, err: &std::io::Error) -> ErrorObject {
    ops::io_error(method.as_str(), given, err)
}

/// readFile / readTextFile as a stream (`stream: true`): opens the file and
/// reads its first piece, so that a missing file, a directory or an
/// unreadable file fail the call itself with the same error as the inline
/// read. Returns the open file, its size as `fstat` has it (0 for many
/// `/proc` files, which have contents all the same) and the first piece
/// (empty at end of file).
pub fn open_for_read(
    method: Method,
    params: &ReadFileParams,
    cwd: &Path,
    piece: usize,
) -> Result<(std::fs::File, u64, Vec<u8>), ErrorObject> {
    use std::io::Read;
    let method = method.as_str();
    let t = ops::Target::new(&params.path, cwd);
    let mut file = std::fs::File::open(&t.path).map_err(|e| t.err(method, &e))?;
    let mut first = vec![0u8; piece];
    let n = loop {
        match file.read(&mut first) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(t.err(method, &e)),
        }
    };
    first.truncate(n);
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((file, size, first))
}

/// std/fs `walk`: the entries in walk order.
pub fn walk(params: &WalkParams, cwd: &Path) -> Result<Vec<WalkEntry>, ErrorObject> {
    let Some(opts) = walk::options(params)? else {
        return Ok(Vec::new());
    };
    let entries = walk::walk(&params.path, &opts, cwd)?;
    Ok(entries.iter().map(walk::Entry::to_wire).collect())
}

/// std/fs `expandGlob`: the matching entries, sorted by path.
pub fn expand_glob(params: &ExpandGlobParams, cwd: &Path) -> Result<Vec<WalkEntry>, ErrorObject> {
    let entries = glob::expand_glob(params, cwd)?;
    Ok(entries.iter().map(walk::Entry::to_wire).collect())
}

/// Standard-alphabet base64, padding optional: JS decodes leniently, so a
/// missing `=` from a hand-rolled client should not be an error either.
fn base64_decode(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::engine::{
        general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig,
    };
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(s)
}
