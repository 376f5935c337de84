//! The path-based file system methods (§4.3), each a thin wrapper over one
//! std/nix call with Deno's defaults and error classes. Each takes its
//! params as decoded by [`call`] (types from `agent_proto::calls`).

use super::info::{dir_entry, file_info};
use super::paths::{display, resolve};
use super::time::Timestamp;
use super::{base64_decode, temp};
use agent_proto::calls::{
    to_reply, ChmodParams, ChownParams, Content, CopyFileParams, FromParams, LinkParams,
    MakeTempParams, MkdirParams, PathParams, ReadFileParams, RemoveParams, RenameParams,
    TruncateParams, UmaskParams, UtimeParams, WriteFileParams,
};
use agent_proto::{ErrorObject, Method};
use base64::Engine;
use nix::sys::stat::{Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use serde_json::Value;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Runs path-based `method` with its params decoded into the method's
/// type, or `None` if `method` is not one.
pub(crate) fn call(
    method: Method,
    params: &Value,
    cwd: &Path,
) -> Option<Result<Value, ErrorObject>> {
    fn run<T: FromParams>(
        method: Method,
        params: &Value,
        f: impl FnOnce(T) -> Result<Value, ErrorObject>,
    ) -> Result<Value, ErrorObject> {
        T::decode(method, params).and_then(f)
    }
    let m = method.as_str();
    Some(match method {
        Method::ReadFile => run(method, params, |p: ReadFileParams| {
            read_file(m, &p.path, cwd)
        }),
        Method::ReadTextFile => run(method, params, |p: ReadFileParams| {
            read_text_file(m, &p.path, cwd)
        }),
        Method::WriteFile | Method::WriteTextFile => {
            run(method, params, |p: WriteFileParams| write_file(m, &p, cwd))
        }
        Method::ReadDir => run(method, params, |p: PathParams| read_dir(m, &p, cwd)),
        Method::Remove => run(method, params, |p| remove(m, &p, cwd)),
        Method::Mkdir => run(method, params, |p| mkdir(m, &p, cwd)),
        Method::Rename => run(method, params, |p| rename(m, &p, cwd)),
        Method::Stat => run(method, params, |p| stat(m, &p, cwd, true)),
        Method::Lstat => run(method, params, |p| stat(m, &p, cwd, false)),
        Method::Chmod => run(method, params, |p| chmod(m, &p, cwd)),
        Method::Chown => run(method, params, |p| chown(m, &p, cwd)),
        Method::CopyFile => run(method, params, |p| copy_file(m, &p, cwd)),
        Method::Link => LinkParams::decode_link(m, params).and_then(|p| link(m, &p, cwd)),
        Method::Symlink => LinkParams::decode_symlink(m, params).and_then(|p| symlink(m, &p, cwd)),
        Method::ReadLink => run(method, params, |p| read_link(m, &p, cwd)),
        Method::RealPath => run(method, params, |p| real_path(m, &p, cwd)),
        Method::MakeTempDir => run(method, params, |p: MakeTempParams| {
            temp::make_temp_dir(m, &p, cwd)
        }),
        Method::MakeTempFile => run(method, params, |p: MakeTempParams| {
            temp::make_temp_file(m, &p, cwd)
        }),
        Method::Truncate => run(method, params, |p| truncate(m, &p, cwd)),
        Method::Umask => run(method, params, |p| umask(&p)),
        Method::Utime => run(method, params, |p| utime(m, &p, cwd)),
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

impl<'a> Target<'a> {
    /// `given` (a decoded path param, so not empty) against `cwd`.
    pub(crate) fn new(given: &'a str, cwd: &Path) -> Self {
        Self {
            given,
            path: resolve(cwd, given),
        }
    }

    pub(crate) fn err(&self, method: &str, err: &io::Error) -> ErrorObject {
        io_error(method, self.given, err)
    }
}

fn read_file(m: &str, path: &str, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = Target::new(path, cwd);
    let bytes = fs::read(&t.path).map_err(|e| t.err(m, &e))?;
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(bytes),
    ))
}

fn read_text_file(m: &str, path: &str, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = Target::new(path, cwd);
    let bytes = fs::read(&t.path).map_err(|e| t.err(m, &e))?;
    String::from_utf8(bytes).map(Value::String).map_err(|e| {
        let msg = format!("{}: {m} '{}'", e.utf8_error(), t.given);
        ErrorObject::new("InvalidData", msg, None)
    })
}

/// An inline write (base64 for writeFile, text for writeTextFile); content
/// sent on a stream is the dispatcher's job (it writes the stream's pieces
/// to a file from [`open_for_write`]).
fn write_file(m: &str, p: &WriteFileParams, cwd: &Path) -> Result<Value, ErrorObject> {
    let content = match &p.content {
        Content::Inline(content) => content,
        Content::Stream(_) => {
            return Err(ErrorObject::type_error(format!(
                "{m}: content arrives on stream \"contentStreamId\"; the dispatcher must write it to a file from open_for_write"
            )))
        }
    };
    let decoded;
    let bytes = if m == Method::WriteFile.as_str() {
        decoded = base64_decode(content).map_err(|e| {
            ErrorObject::type_error(format!("{m}: param \"content\" is not valid base64: {e}"))
        })?;
        &decoded[..]
    } else {
        content.as_bytes()
    };
    let (mut file, t) = open_for_write(m, p, cwd)?;
    file.write_all(bytes).map_err(|e| t.err(m, &e))?;
    Ok(Value::Null)
}

/// Opens (creates, truncates) the file of a writeFile/writeTextFile call
/// with Deno's options: `create` (default true), `createNew`, `append`
/// (else truncate), `mode` (also chmod'ed when given, as Deno does, so the
/// umask does not narrow it). The caller writes the content.
pub(crate) fn open_for_write<'p>(
    m: &str,
    p: &'p WriteFileParams,
    cwd: &Path,
) -> Result<(fs::File, Target<'p>), ErrorObject> {
    let t = Target::new(&p.path, cwd);
    let mut opts = OpenOptions::new();
    opts.write(true).append(p.append).truncate(!p.append);
    if p.create_new {
        opts.create_new(true);
    } else {
        opts.create(p.create);
    }
    if let Some(mode) = p.mode {
        opts.mode(mode);
    }
    let file = opts.open(&t.path).map_err(|e| t.err(m, &e))?;
    if let Some(mode) = p.mode {
        let perms = Permissions::from_mode(mode);
        file.set_permissions(perms).map_err(|e| t.err(m, &e))?;
    }
    Ok((file, t))
}

/// Entries sorted by name, so results do not depend on directory order.
fn read_dir(m: &str, p: &PathParams, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = Target::new(&p.path, cwd);
    let err = |e: io::Error| t.err(m, &e);
    let mut entries = Vec::new();
    for entry in fs::read_dir(&t.path).map_err(err)? {
        let entry = entry.map_err(err)?;
        let file_type = entry.file_type().map_err(err)?;
        entries.push((entry.file_name().to_string_lossy().into_owned(), file_type));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let entries: Vec<_> = entries
        .iter()
        .map(|(name, ft)| dir_entry(name, *ft))
        .collect();
    Ok(to_reply(&entries))
}

/// Deno.remove: a directory needs `recursive` unless empty; a symlink is
/// removed itself, never its target.
fn remove(m: &str, p: &RemoveParams, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = Target::new(&p.path, cwd);
    let err = |e: io::Error| t.err(m, &e);
    let md = fs::symlink_metadata(&t.path).map_err(err)?;
    let result = match (md.is_dir(), p.recursive) {
        (true, true) => fs::remove_dir_all(&t.path),
        (true, false) => fs::remove_dir(&t.path),
        (false, _) => fs::remove_file(&t.path),
    };
    result.map_err(err)?;
    Ok(Value::Null)
}

/// Deno.mkdir: `recursive` succeeds on an existing directory; `mode`
/// (default 0o777) is narrowed by the umask, as in Deno.
fn mkdir(m: &str, p: &MkdirParams, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = Target::new(&p.path, cwd);
    DirBuilder::new()
        .recursive(p.recursive)
        .mode(p.mode.unwrap_or(0o777))
        .create(&t.path)
        .map_err(|e| t.err(m, &e))?;
    Ok(Value::Null)
}

fn rename(m: &str, p: &RenameParams, cwd: &Path) -> Result<Value, ErrorObject> {
    let from = Target::new(&p.old_path, cwd);
    let to = Target::new(&p.new_path, cwd);
    fs::rename(&from.path, &to.path).map_err(|e| io_error2(m, from.given, to.given, &e))?;
    Ok(Value::Null)
}

/// stat (`follow`: of a symlink's target) or lstat.
fn stat(m: &str, p: &PathParams, cwd: &Path, follow: bool) -> Result<Value, ErrorObject> {
    let t = Target::new(&p.path, cwd);
    let md = if follow {
        fs::metadata(&t.path)
    } else {
        fs::symlink_metadata(&t.path)
    };
    let md = md.map_err(|e| t.err(m, &e))?;
    Ok(to_reply(&file_info(&md)))
}

fn chmod(m: &str, p: &ChmodParams, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = Target::new(&p.path, cwd);
    fs::set_permissions(&t.path, Permissions::from_mode(p.mode)).map_err(|e| t.err(m, &e))?;
    Ok(Value::Null)
}

/// A `null` (or absent) uid/gid leaves that id unchanged.
fn chown(m: &str, p: &ChownParams, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = Target::new(&p.path, cwd);
    let uid = p.uid.map(nix::unistd::Uid::from_raw);
    let gid = p.gid.map(nix::unistd::Gid::from_raw);
    nix::unistd::chown(&t.path, uid, gid).map_err(|e| t.err(m, &e.into()))?;
    Ok(Value::Null)
}

fn copy_file(m: &str, p: &CopyFileParams, cwd: &Path) -> Result<Value, ErrorObject> {
    let from = Target::new(&p.from_path, cwd);
    let to = Target::new(&p.to_path, cwd);
    fs::copy(&from.path, &to.path).map_err(|e| io_error2(m, from.given, to.given, &e))?;
    Ok(Value::Null)
}

/// `target` is the existing file, `path` the new hard link.
fn link(m: &str, p: &LinkParams, cwd: &Path) -> Result<Value, ErrorObject> {
    let existing = Target::new(&p.target, cwd);
    let new = Target::new(&p.path, cwd);
    fs::hard_link(&existing.path, &new.path)
        .map_err(|e| io_error2(m, existing.given, new.given, &e))?;
    Ok(Value::Null)
}

/// The link stores `target` verbatim: a relative target is relative to the
/// link's directory, not to the working directory. `type` only matters on
/// Windows and is ignored.
fn symlink(m: &str, p: &LinkParams, cwd: &Path) -> Result<Value, ErrorObject> {
    let new = Target::new(&p.path, cwd);
    std::os::unix::fs::symlink(&p.target, &new.path)
        .map_err(|e| io_error2(m, &p.target, new.given, &e))?;
    Ok(Value::Null)
}

fn read_link(m: &str, p: &PathParams, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = Target::new(&p.path, cwd);
    let dest = fs::read_link(&t.path).map_err(|e| t.err(m, &e))?;
    Ok(Value::String(display(&dest)))
}

fn real_path(m: &str, p: &PathParams, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = Target::new(&p.path, cwd);
    let real = fs::canonicalize(&t.path).map_err(|e| t.err(m, &e))?;
    Ok(Value::String(display(&real)))
}

/// Deno.truncate: the path param is called `name`; `length` defaults to 0.
fn truncate(m: &str, p: &TruncateParams, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = Target::new(&p.name, cwd);
    let err = |e: io::Error| t.err(m, &e);
    let file = OpenOptions::new().write(true).open(&t.path).map_err(err)?;
    file.set_len(p.length.unwrap_or(0)).map_err(err)?;
    Ok(Value::Null)
}

/// Sets the process umask when `mask` is given; always returns the previous
/// one. The agent's umask is inherited by processes it spawns later.
fn umask(p: &UmaskParams) -> Result<Value, ErrorObject> {
    let previous = match p.mask {
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

/// Deno.utime (follows symlinks).
fn utime(m: &str, p: &UtimeParams, cwd: &Path) -> Result<Value, ErrorObject> {
    let t = Target::new(&p.path, cwd);
    nix::sys::stat::utimensat(
        None,
        &t.path,
        &timespec(p.atime),
        &timespec(p.mtime),
        UtimensatFlags::FollowSymlink,
    )
    .map_err(|e| t.err(m, &e.into()))?;
    Ok(Value::Null)
}

fn timespec(t: Timestamp) -> TimeSpec {
    TimeSpec::new(t.secs, i64::from(t.nanos))
}
