//! The path-based file system methods (§4.3), each a thin wrapper over one
//! std/nix call with Deno's defaults and error classes.

use super::info::{dir_entry, file_info};
use super::params::Params;
use super::paths::{display, resolve};
use super::time::{parse_time_value, Timestamp};
use super::{base64_decode, temp};
use agent_proto::{ErrorObject, Method};
use base64::Engine;
use nix::sys::stat::{Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use serde_json::Value;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

type Handler = fn(&Params, &Path) -> Result<Value, ErrorObject>;

/// The handler of a path-based method, or `None` if `method` is not one.
pub(crate) fn lookup(method: Method) -> Option<Handler> {
    Some(match method {
        Method::ReadFile => read_file,
        Method::ReadTextFile => read_text_file,
        Method::WriteFile => write_file,
        Method::WriteTextFile => write_text_file,
        Method::ReadDir => read_dir,
        Method::Remove => remove,
        Method::Mkdir => mkdir,
        Method::Rename => rename,
        Method::Stat => stat,
        Method::Lstat => lstat,
        Method::Chmod => chmod,
        Method::Chown => chown,
        Method::CopyFile => copy_file,
        Method::Link => link,
        Method::Symlink => symlink,
        Method::ReadLink => read_link,
        Method::RealPath => real_path,
        Method::MakeTempDir => temp::make_temp_dir,
        Method::MakeTempFile => temp::make_temp_file,
        Method::Truncate => truncate,
        Method::Umask => umask,
        Method::Utime => utime,
        _ => return None,
    })
}

/// An OS error with Deno-style context: `... (os error 2): readFile '/x'`.
pub(crate) fn io_error(method: &str, path: &str, err: &io::Error) -> ErrorObject {
    ErrorObject::from_io_with_context(err, Some(&format!("{method} '{path}'")))
}

fn io_error2(method: &str, from: &str, to: &str, err: &io::Error) -> ErrorObject {
    ErrorObject::from_io_with_context(err, Some(&format!("{method} '{from}' -> '{to}'")))
}

/// A path param as the caller wrote it (for messages) and as resolved.
pub(crate) struct Target<'a> {
    pub given: &'a str,
    pub path: PathBuf,
}

impl Target<'_> {
    pub(crate) fn err(&self, method: &str, err: &io::Error) -> ErrorObject {
        io_error(method, self.given, err)
    }
}

/// Reads path param `key`. An empty path is `NotFound`, as in Deno; without
/// this check it would resolve to the working directory itself.
pub(crate) fn target<'a>(p: &'a Params, key: &str, cwd: &Path) -> Result<Target<'a>, ErrorObject> {
    let given = p.str(key)?;
    if given.is_empty() {
        let enoent = io::Error::from_raw_os_error(libc::ENOENT);
        return Err(io_error(p.method(), given, &enoent));
    }
    Ok(Target {
        given,
        path: resolve(cwd, given),
    })
}

fn read_file(p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = target(p, "path", cwd)?;
    let bytes = fs::read(&t.path).map_err(|e| t.err(p.method(), &e))?;
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(bytes),
    ))
}

fn read_text_file(p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = target(p, "path", cwd)?;
    let bytes = fs::read(&t.path).map_err(|e| t.err(p.method(), &e))?;
    String::from_utf8(bytes).map(Value::String).map_err(|e| {
        let msg = format!("{}: {} '{}'", e.utf8_error(), p.method(), t.given);
        ErrorObject::new("InvalidData", msg, None)
    })
}

fn write_file(p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
    let bytes = match inline_content(p)? {
        Value::String(b64) => base64_decode(b64)
            .map_err(|e| p.error(format!("param \"content\" is not valid base64: {e}")))?,
        other => return Err(p.wrong_type("content", "string", other)),
    };
    write_bytes(p, &bytes, cwd)
}

fn write_text_file(p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
    match inline_content(p)? {
        Value::String(text) => write_bytes(p, text.as_bytes(), cwd),
        other => Err(p.wrong_type("content", "string", other)),
    }
}

/// The inline `content`; content sent on a stream is the dispatcher's job
/// (it writes the stream's pieces to a file from `open_for_write`).
fn inline_content<'p>(p: &'p Params) -> Result<&'p Value, ErrorObject> {
    if let Some(content) = p.get("content") {
        return Ok(content);
    }
    if p.has("contentStreamId") {
        return Err(p.error(
            "content arrives on stream \"contentStreamId\"; the dispatcher must write it to a file from open_for_write",
        ));
    }
    Err(p.missing("content", "string"))
}

/// writeFile/writeTextFile with Deno's options: `create` (default true),
/// `createNew`, `append` (else truncate), `mode` (also chmod'ed when given,
/// as Deno does, so the umask does not narrow it).
pub(crate) fn write_bytes(p: &Params, bytes: &[u8], cwd: &Path) -> Result<Value, ErrorObject> {
    let (mut file, t) = open_for_write(p, cwd)?;
    file.write_all(bytes).map_err(|e| t.err(p.method(), &e))?;
    Ok(Value::Null)
}

/// Opens (creates, truncates) the file of a writeFile/writeTextFile call as
/// its options say; the caller writes the content.
pub(crate) fn open_for_write<'p>(
    p: &'p Params,
    cwd: &Path,
) -> Result<(fs::File, Target<'p>), ErrorObject> {
    let t = target(p, "path", cwd)?;
    let append = p.bool_or("append", false)?;
    let create = p.bool_or("create", true)?;
    let create_new = p.bool_or("createNew", false)?;
    let mode = p.opt_u32("mode")?;
    let mut opts = OpenOptions::new();
    opts.write(true).append(append).truncate(!append);
    if create_new {
        opts.create_new(true);
    } else {
        opts.create(create);
    }
    if let Some(mode) = mode {
        opts.mode(mode);
    }
    let method = p.method();
    let file = opts.open(&t.path).map_err(|e| t.err(method, &e))?;
    if let Some(mode) = mode {
        let perms = Permissions::from_mode(mode);
        file.set_permissions(perms).map_err(|e| t.err(method, &e))?;
    }
    Ok((file, t))
}

/// Entries sorted by name, so results do not depend on directory order.
fn read_dir(p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = target(p, "path", cwd)?;
    let err = |e: io::Error| t.err(p.method(), &e);
    let mut entries = Vec::new();
    for entry in fs::read_dir(&t.path).map_err(err)? {
        let entry = entry.map_err(err)?;
        let file_type = entry.file_type().map_err(err)?;
        entries.push((entry.file_name().to_string_lossy().into_owned(), file_type));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries
        .iter()
        .map(|(name, ft)| dir_entry(name, *ft))
        .collect())
}

/// Deno.remove: a directory needs `recursive` unless empty; a symlink is
/// removed itself, never its target.
fn remove(p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = target(p, "path", cwd)?;
    let recursive = p.bool_or("recursive", false)?;
    let err = |e: io::Error| t.err(p.method(), &e);
    let md = fs::symlink_metadata(&t.path).map_err(err)?;
    let result = match (md.is_dir(), recursive) {
        (true, true) => fs::remove_dir_all(&t.path),
        (true, false) => fs::remove_dir(&t.path),
        (false, _) => fs::remove_file(&t.path),
    };
    result.map_err(err)?;
    Ok(Value::Null)
}

/// Deno.mkdir: `recursive` succeeds on an existing directory; `mode`
/// (default 0o777) is narrowed by the umask, as in Deno.
fn mkdir(p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = target(p, "path", cwd)?;
    let recursive = p.bool_or("recursive", false)?;
    let mode = p.opt_u32("mode")?.unwrap_or(0o777);
    DirBuilder::new()
        .recursive(recursive)
        .mode(mode)
        .create(&t.path)
        .map_err(|e| t.err(p.method(), &e))?;
    Ok(Value::Null)
}

fn rename(p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
    let from = target(p, "oldPath", cwd)?;
    let to = target(p, "newPath", cwd)?;
    fs::rename(&from.path, &to.path)
        .map_err(|e| io_error2(p.method(), from.given, to.given, &e))?;
    Ok(Value::Null)
}

fn stat(p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = target(p, "path", cwd)?;
    let md = fs::metadata(&t.path).map_err(|e| t.err(p.method(), &e))?;
    Ok(file_info(&md))
}

fn lstat(p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = target(p, "path", cwd)?;
    let md = fs::symlink_metadata(&t.path).map_err(|e| t.err(p.method(), &e))?;
    Ok(file_info(&md))
}

fn chmod(p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = target(p, "path", cwd)?;
    let mode = p.u32("mode")?;
    fs::set_permissions(&t.path, Permissions::from_mode(mode))
        .map_err(|e| t.err(p.method(), &e))?;
    Ok(Value::Null)
}

/// A `null` (or absent) uid/gid leaves that id unchanged.
fn chown(p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = target(p, "path", cwd)?;
    let uid = p.opt_u32("uid")?.map(nix::unistd::Uid::from_raw);
    let gid = p.opt_u32("gid")?.map(nix::unistd::Gid::from_raw);
    nix::unistd::chown(&t.path, uid, gid).map_err(|e| t.err(p.method(), &e.into()))?;
    Ok(Value::Null)
}

fn copy_file(p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
    let from = target(p, "fromPath", cwd)?;
    let to = target(p, "toPath", cwd)?;
    fs::copy(&from.path, &to.path).map_err(|e| io_error2(p.method(), from.given, to.given, &e))?;
    Ok(Value::Null)
}

/// `target` is the existing file, `path` the new hard link.
fn link(p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
    let existing = target(p, "target", cwd)?;
    let new = target(p, "path", cwd)?;
    fs::hard_link(&existing.path, &new.path)
        .map_err(|e| io_error2(p.method(), existing.given, new.given, &e))?;
    Ok(Value::Null)
}

/// The link stores `target` verbatim: a relative target is relative to the
/// link's directory, not to the working directory. `type` only matters on
/// Windows and is ignored.
fn symlink(p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
    let link_target = p.str("target")?;
    let new = target(p, "path", cwd)?;
    std::os::unix::fs::symlink(link_target, &new.path)
        .map_err(|e| io_error2(p.method(), link_target, new.given, &e))?;
    Ok(Value::Null)
}

fn read_link(p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = target(p, "path", cwd)?;
    let dest = fs::read_link(&t.path).map_err(|e| t.err(p.method(), &e))?;
    Ok(Value::String(display(&dest)))
}

fn real_path(p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = target(p, "path", cwd)?;
    let real = fs::canonicalize(&t.path).map_err(|e| t.err(p.method(), &e))?;
    Ok(Value::String(display(&real)))
}

/// Deno.truncate: the path param is called `name`; `length` defaults to 0.
fn truncate(p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
    let key = if p.has("name") || !p.has("path") {
        "name"
    } else {
        "path"
    };
    let t = target(p, key, cwd)?;
    let len = p.opt_u64("length")?.unwrap_or(0);
    let err = |e: io::Error| t.err(p.method(), &e);
    let file = OpenOptions::new().write(true).open(&t.path).map_err(err)?;
    file.set_len(len).map_err(err)?;
    Ok(Value::Null)
}

/// Sets the process umask when `mask` is given; always returns the previous
/// one. The agent's umask is inherited by processes it spawns later.
fn umask(p: &Params, _cwd: &Path) -> Result<Value, ErrorObject> {
    let previous = match p.opt_u32("mask")? {
        Some(mask) => nix::sys::stat::umask(Mode::from_bits_truncate(mask)),
        None => {
            // There is no read-only umask call: set and restore.
            let current = nix::sys::stat::umask(Mode::empty());
            nix::sys::stat::umask(current);
            current
        }
    };
    Ok(Value::from(previous.bits()))
}

/// Deno.utime (follows symlinks). Times are ISO strings (JS) or epoch
/// seconds (PY).
fn utime(p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = target(p, "path", cwd)?;
    let atime = time_param(p, "atime")?;
    let mtime = time_param(p, "mtime")?;
    nix::sys::stat::utimensat(
        None,
        &t.path,
        &timespec(atime),
        &timespec(mtime),
        UtimensatFlags::FollowSymlink,
    )
    .map_err(|e| t.err(p.method(), &e.into()))?;
    Ok(Value::Null)
}

/// A required time param (`atime`/`mtime`).
pub(crate) fn time_param(p: &Params, key: &str) -> Result<Timestamp, ErrorObject> {
    // A missing time is a validation error; one that does not parse is a
    // TypeError that says which forms are taken.
    let v = p.get(key).ok_or_else(|| p.missing(key, "number"))?;
    parse_time_value(v).ok_or_else(|| {
        p.error(format!(
            "param \"{key}\" must be an ISO-8601 date string or a number of seconds since the epoch, got {v}"
        ))
    })
}

fn timespec(t: Timestamp) -> TimeSpec {
    TimeSpec::new(t.secs, i64::from(t.nanos))
}
