//! The path-based filesystem methods (docs/protocol.md §4.3): `readFile`,
//! `writeFile`, `stat`, `rename`, ... Options may come flat (PY) or under
//! `options` (JS); both decode the same ([`FromParams::FLATTEN_OPTIONS`]).
//!
//! A path param must not be empty: an empty path is `NotFound`, as in
//! Deno (it would otherwise resolve to the working directory itself). It
//! is checked as the path is decoded, so the first bad param reported is
//! the one the handlers always reported.

use super::process::stream_id;
use super::time::{parse_time_value, Timestamp};
use super::{as_integer, kind, FromParams, Params};
use crate::ErrorObject;
use serde::{Deserialize, Serialize, Serializer};
use std::io;

/// `{path}`: `readDir`, `stat`, `lstat`, `readLink`, `realPath`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathParams {
    pub path: String,
}

/// `readFile {path}` / `readTextFile {path}`. With `stream: true` (sent by
/// the daemon only) the agent answers a [`super::StreamResult`] with the
/// file's `size` and sends the contents on that stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadFileParams {
    pub path: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

/// `writeFile {path, content | contentStreamId, append?, create?,
/// createNew?, mode?}` / `writeTextFile` (content as text, not base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteFileParams {
    pub path: String,
    #[serde(flatten)]
    pub content: Content,
    pub append: bool,
    /// Default true.
    pub create: bool,
    pub create_new: bool,
    /// Also chmod'ed when given, so the umask does not narrow it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

impl WriteFileParams {
    /// The inline `content` of `params`, taken out by value (not copied)
    /// when it is a top-level string longer than `limit`: a daemon sends
    /// such contents to the agent on a stream ([`Self::decode_streamed`])
    /// rather than in the call, which a frame bounds. `None` leaves
    /// `params` as they were.
    pub fn take_inline_over(
        params: &mut serde_json::Map<String, serde_json::Value>,
        limit: usize,
    ) -> Option<String> {
        match params.get("content") {
            Some(serde_json::Value::String(c)) if c.len() > limit => {}
            _ => return None,
        }
        match params.remove("content") {
            Some(serde_json::Value::String(c)) => Some(c),
            _ => unreachable!("checked above"),
        }
    }

    /// `params` decoded as a write whose contents come on stream
    /// `stream_id`, whatever `content` or `contentStreamId` they name.
    pub fn decode_streamed(
        method: &str,
        params: &serde_json::Map<String, serde_json::Value>,
        stream_id: u32,
    ) -> Result<Self, ErrorObject> {
        let mut params = params.clone();
        params.insert("contentStreamId".into(), stream_id.into());
        Self::decode_named(method, &serde_json::Value::Object(params))
    }
}

/// A write's contents: inline, or on a client → sandbox stream (the daemon
/// turns big inline contents into a stream, and rewrites the id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Content {
    /// base64 for `writeFile`, text for `writeTextFile`.
    #[serde(rename = "content")]
    Inline(String),
    #[serde(rename = "contentStreamId")]
    Stream(u32),
}

/// `remove {path, recursive?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoveParams {
    pub path: String,
    pub recursive: bool,
}

/// `mkdir {path, recursive?, mode?}`; `mode` defaults to 0o777 (narrowed
/// by the umask).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MkdirParams {
    pub path: String,
    pub recursive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// `rename {oldPath, newPath}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenameParams {
    pub old_path: String,
    pub new_path: String,
}

/// `chmod {path, mode}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChmodParams {
    pub path: String,
    pub mode: u32,
}

/// `chown {path, uid?, gid?}`; an absent id is left unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChownParams {
    pub path: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// `copyFile {fromPath, toPath}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyFileParams {
    pub from_path: String,
    pub to_path: String,
}

/// `link {target, path}` (a hard link at `path` to the existing `target`)
/// and `symlink {target, path, type?}`: the symlink stores `target`
/// verbatim (it may be empty or relative; `type` only matters on Windows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkParams {
    pub target: String,
    pub path: String,
}

/// `makeTempDir` / `makeTempFile {dir?, prefix?, suffix?}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct MakeTempParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
}

/// `truncate {name, length?}` (Deno calls the path `name`; `path` is taken
/// too); `length` defaults to 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TruncateParams {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
}

/// `umask {mask?}`: sets it when given; answers the previous one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UmaskParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<u32>,
}

/// `utime {path, atime, mtime}`: times as ISO strings (JS) or epoch
/// seconds (PY).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UtimeParams {
    pub path: String,
    pub atime: Timestamp,
    pub mtime: Timestamp,
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_iso())
    }
}

/// A path param: a string, not empty.
pub fn path(p: &Params, key: &str) -> Result<String, ErrorObject> {
    let given = p.str(key)?;
    if given.is_empty() {
        let enoent = io::Error::from_raw_os_error(libc::ENOENT);
        let context = format!("{} '{given}'", p.method());
        return Err(ErrorObject::from_io_with_context(&enoent, Some(&context)));
    }
    Ok(given.to_string())
}

/// A required time param (`atime`/`mtime`). A missing time is a
/// validation error; one that does not parse is a `TypeError` that says
/// which forms are taken.
pub fn time(p: &Params, key: &str) -> Result<Timestamp, ErrorObject> {
    let v = p.get(key).ok_or_else(|| p.missing(key, "number"))?;
    parse_time_value(v).ok_or_else(|| {
        p.error(format!(
            "param \"{key}\" must be an ISO-8601 date string or a number of seconds since the epoch, got {v}"
        ))
    })
}

macro_rules! flattened {
    ($($t:ty => |$p:ident| $body:expr;)*) => {
        $(impl FromParams for $t {
            const FLATTEN_OPTIONS: bool = true;
            fn from_params($p: &Params) -> Result<Self, ErrorObject> {
                Ok($body)
            }
        })*
    };
}

flattened! {
    PathParams => |p| Self { path: path(p, "path")? };
    ReadFileParams => |p| Self {
        path: path(p, "path")?,
        stream: p.raw("stream") == Some(&serde_json::Value::Bool(true)),
    };
    WriteFileParams => |p| {
        // The content first: a write without any is refused before its
        // path is looked at.
        let content = match (p.get("contentStreamId"), p.get("content")) {
            (Some(id), _) => Content::Stream(stream_id(id).ok_or_else(|| {
                p.error("contentStreamId must be a stream id")
            })?),
            (None, Some(serde_json::Value::String(s))) => Content::Inline(s.clone()),
            (None, Some(other)) => return Err(p.wrong_type("content", "string", other)),
            (None, None) => return Err(p.missing("content", "string")),
        };
        Self {
            path: path(p, "path")?,
            content,
            append: p.bool_or("append", false)?,
            create: p.bool_or("create", true)?,
            create_new: p.bool_or("createNew", false)?,
            mode: p.opt_u32("mode")?,
        }
    };
    RemoveParams => |p| Self {
        path: path(p, "path")?,
        recursive: p.bool_or("recursive", false)?,
    };
    MkdirParams => |p| Self {
        path: path(p, "path")?,
        recursive: p.bool_or("recursive", false)?,
        mode: p.opt_u32("mode")?,
    };
    RenameParams => |p| Self {
        old_path: path(p, "oldPath")?,
        new_path: path(p, "newPath")?,
    };
    ChmodParams => |p| Self {
        path: path(p, "path")?,
        mode: p.u32("mode")?,
    };
    ChownParams => |p| Self {
        path: path(p, "path")?,
        uid: p.opt_u32("uid")?,
        gid: p.opt_u32("gid")?,
    };
    CopyFileParams => |p| Self {
        from_path: path(p, "fromPath")?,
        to_path: path(p, "toPath")?,
    };
    MakeTempParams => |p| Self {
        dir: p.opt_str("dir")?.map(str::to_string),
        prefix: p.opt_str("prefix")?.map(str::to_string),
        suffix: p.opt_str("suffix")?.map(str::to_string),
    };
    TruncateParams => |p| {
        let key = if p.has("name") || !p.has("path") { "name" } else { "path" };
        Self {
            name: path(p, key)?,
            length: p.opt_u64("length")?,
        }
    };
    UmaskParams => |p| Self { mask: p.opt_u32("mask")? };
    UtimeParams => |p| Self {
        path: path(p, "path")?,
        atime: time(p, "atime")?,
        mtime: time(p, "mtime")?,
    };
}

/// `link`'s target is an existing file (a path, not empty); `symlink`'s
/// is stored as given.
impl LinkParams {
    pub fn decode_link(method: &str, params: &serde_json::Value) -> Result<Self, ErrorObject> {
        let p = Params::new(method, params)?;
        Ok(Self {
            target: path(&p, "target")?,
            path: path(&p, "path")?,
        })
    }

    pub fn decode_symlink(method: &str, params: &serde_json::Value) -> Result<Self, ErrorObject> {
        let p = Params::new(method, params)?;
        Ok(Self {
            target: p.str("target")?.to_string(),
            path: path(&p, "path")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::test_util::round_trips;
    use crate::Method;
    use serde_json::json;

    #[test]
    fn params_round_trip() {
        let path = || "/a".to_string();
        round_trips(Method::Stat, PathParams { path: path() });
        round_trips(
            Method::ReadFile,
            ReadFileParams {
                path: path(),
                stream: true,
            },
        );
        for content in [Content::Inline("aGk=".into()), Content::Stream(3)] {
            round_trips(
                Method::WriteFile,
                WriteFileParams {
                    path: path(),
                    content,
                    append: true,
                    create: false,
                    create_new: true,
                    mode: Some(0o600),
                },
            );
        }
        round_trips(
            Method::Remove,
            RemoveParams {
                path: path(),
                recursive: true,
            },
        );
        round_trips(
            Method::Mkdir,
            MkdirParams {
                path: path(),
                recursive: true,
                mode: Some(0o700),
            },
        );
        round_trips(
            Method::Rename,
            RenameParams {
                old_path: path(),
                new_path: "/b".into(),
            },
        );
        round_trips(
            Method::Chmod,
            ChmodParams {
                path: path(),
                mode: 0o644,
            },
        );
        round_trips(
            Method::Chown,
            ChownParams {
                path: path(),
                uid: Some(1),
                gid: None,
            },
        );
        round_trips(
            Method::CopyFile,
            CopyFileParams {
                from_path: path(),
                to_path: "/b".into(),
            },
        );
        round_trips(
            Method::MakeTempDir,
            MakeTempParams {
                dir: Some("/t".into()),
                prefix: Some("p".into()),
                suffix: None,
            },
        );
        round_trips(
            Method::Truncate,
            TruncateParams {
                name: path(),
                length: Some(3),
            },
        );
        round_trips(Method::Umask, UmaskParams { mask: Some(0o22) });
        round_trips(
            Method::Utime,
            UtimeParams {
                path: path(),
                atime: Timestamp::from_parts(1, 0),
                mtime: Timestamp::from_parts(2, 5_000_000),
            },
        );
    }

    /// The Python SDK's `read_text_file()` without a path: a zod issue at
    /// `["path"]` (raised as `RpcValidationError`).
    #[test]
    fn missing_path_is_a_zod_issue_and_empty_is_not_found() {
        let e = ReadFileParams::decode(Method::ReadTextFile, &json!({})).unwrap_err();
        assert!(e.is_invalid_params(), "{e:?}");
        assert!(e.message.contains("\"path\""), "{}", e.message);
        let e = PathParams::decode(Method::Stat, &json!({"path": ""})).unwrap_err();
        assert_eq!(e.constructor_name, "NotFound");
        assert!(e.message.ends_with("stat ''"), "{}", e.message);
        let e = MkdirParams::decode(
            Method::Mkdir,
            &json!({"path": "/a", "options": {"mode": "x"}}),
        )
        .unwrap_err();
        assert!(
            e.message.contains("\"options\",\n      \"mode\""),
            "{}",
            e.message
        );
        let e = WriteFileParams::decode(Method::WriteFile, &json!({"path": "/a"})).unwrap_err();
        assert!(e.message.contains("\"content\""), "{}", e.message);
    }

    /// Big inline contents are taken out whole; the rest decodes as a
    /// write on the daemon's stream, with the agent's errors.
    #[test]
    fn big_inline_contents_go_on_a_stream() {
        let obj = |v: serde_json::Value| v.as_object().unwrap().clone();
        let mut params = obj(json!({"path": "/a", "content": "aGk=", "options": {"mode": 384}}));
        assert_eq!(WriteFileParams::take_inline_over(&mut params, 4), None);
        assert_eq!(
            WriteFileParams::take_inline_over(&mut params, 3).as_deref(),
            Some("aGk=")
        );
        assert!(!params.contains_key("content"));
        let w = WriteFileParams::decode_streamed("writeFile", &params, 9).unwrap();
        assert_eq!(w.content, Content::Stream(9));
        assert_eq!(
            (w.path.as_str(), w.mode, w.create),
            ("/a", Some(0o600), true)
        );
        // Only a top-level string is taken.
        for v in [
            json!({"path": "/a", "content": 5}),
            json!({"path": "/a", "options": {"content": "aGk="}}),
        ] {
            let mut params = obj(v);
            let before = params.clone();
            assert_eq!(WriteFileParams::take_inline_over(&mut params, 0), None);
            assert_eq!(params, before);
        }
        let e = WriteFileParams::decode_streamed("writeTextFile", &obj(json!({"path": 1})), 9)
            .unwrap_err();
        assert!(e.message.contains("\"path\""), "{}", e.message);
    }
}

// The file-handle methods (§4.4): `open`/`create` answer a
// [`FileHandleResult`], the `file*` methods name it.

/// `open {path, read?, write?, append?, truncate?, create?, createNew?,
/// mode?}`. No flag at all means read-only; the option checks Deno does
/// client-side are repeated here because the SDKs skip them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenParams {
    pub path: String,
    pub read: bool,
    pub write: bool,
    pub append: bool,
    pub truncate: bool,
    pub create: bool,
    pub create_new: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// `{fileHandleId}`: `fileStat`, `fileSync`, `fileSyncData`,
/// `fileUnlock`, `fileClose`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileHandleParams {
    pub file_handle_id: u32,
}

/// `open`'s and `create`'s result. Ids start at 1 (0 is falsy in both SDK
/// languages).
pub type FileHandleResult = FileHandleParams;

/// `fileRead {fileHandleId, length}`: one read of at most `length` bytes
/// (capped by the agent); answers [`FileReadResult`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileReadParams {
    pub file_handle_id: u32,
    pub length: u64,
}

/// `fileRead`'s result: base64, or `None` (`null`) at end of file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReadResult {
    pub data: Option<String>,
}

/// `fileWrite {fileHandleId, data}` (`data` base64); answers
/// [`FileWriteResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileWriteParams {
    pub file_handle_id: u32,
    pub data: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileWriteResult {
    pub bytes_written: u64,
}

/// `fileSeek {fileHandleId, offset, whence}`: `offset` a number or a
/// decimal string (JS sends a BigInt that way); `whence` 0 (start), 1
/// (current) or 2 (end), checked by the agent. Answers
/// [`FileSeekResult`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileSeekParams {
    pub file_handle_id: u32,
    pub offset: i64,
    pub whence: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSeekResult {
    pub position: u64,
}

/// `fileTruncate {fileHandleId, len?}`: JS sends `len`, PY `size`;
/// absent means 0, as in Deno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileTruncateParams {
    pub file_handle_id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub len: Option<u64>,
}

/// `fileUtime {fileHandleId, atime, mtime}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileUtimeParams {
    pub file_handle_id: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
}

/// `fileLock {fileHandleId, exclusive?}`: shared unless `exclusive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileLockParams {
    pub file_handle_id: u32,
    pub exclusive: bool,
}

/// An integer that may arrive as a decimal string.
fn seek_offset(p: &Params) -> Result<i64, ErrorObject> {
    let v = p
        .get("offset")
        .ok_or_else(|| p.missing("offset", "number"))?;
    let parsed = match v {
        serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
        other => as_integer(other),
    };
    parsed.ok_or_else(|| {
        p.error(format!(
            "param \"offset\" must be an integer or a decimal string, got {} {v}",
            kind(v)
        ))
    })
}

flattened! {
    OpenParams => |p| {
        let path = path(p, "path")?;
        let flag = |key| p.bool_or(key, false);
        let (mut read, write, append) = (flag("read")?, flag("write")?, flag("append")?);
        let (truncate, create, create_new) =
            (flag("truncate")?, flag("create")?, flag("createNew")?);
        if !(read || write || append || truncate || create || create_new) {
            read = true;
        }
        if truncate && !write {
            return Err(p.error("'truncate' option requires 'write' option"));
        }
        if (create || create_new) && !(write || append) {
            return Err(
                p.error("'create' or 'createNew' options require 'write' or 'append' option")
            );
        }
        Self {
            path,
            read,
            write,
            append,
            truncate,
            create,
            create_new,
            mode: p.opt_u32("mode")?,
        }
    };
    FileHandleParams => |p| Self { file_handle_id: p.u32("fileHandleId")? };
    FileReadParams => |p| Self {
        file_handle_id: p.u32("fileHandleId")?,
        length: p.u64("length")?,
    };
    FileWriteParams => |p| Self {
        file_handle_id: p.u32("fileHandleId")?,
        data: p.str("data")?.to_string(),
    };
    FileSeekParams => |p| Self {
        file_handle_id: p.u32("fileHandleId")?,
        offset: seek_offset(p)?,
        whence: p.u64("whence")?,
    };
    FileTruncateParams => |p| Self {
        file_handle_id: p.u32("fileHandleId")?,
        len: match p.opt_u64("len")? {
            Some(len) => Some(len),
            None => p.opt_u64("size")?,
        },
    };
    FileUtimeParams => |p| Self {
        file_handle_id: p.u32("fileHandleId")?,
        atime: time(p, "atime")?,
        mtime: time(p, "mtime")?,
    };
    FileLockParams => |p| {
        let exclusive = p.bool_or("exclusive", false)?;
        Self {
            file_handle_id: p.u32("fileHandleId")?,
            exclusive,
        }
    };
}

#[cfg(test)]
mod handle_tests {
    use super::*;
    use crate::calls::test_util::round_trips;
    use crate::Method;
    use serde_json::json;

    #[test]
    fn params_round_trip() {
        round_trips(
            Method::Open,
            OpenParams {
                path: "/a".into(),
                read: true,
                write: true,
                append: false,
                truncate: true,
                create: true,
                create_new: false,
                mode: Some(0o600),
            },
        );
        let id = 3;
        round_trips(Method::FileStat, FileHandleParams { file_handle_id: id });
        round_trips(
            Method::FileRead,
            FileReadParams {
                file_handle_id: id,
                length: 10,
            },
        );
        round_trips(
            Method::FileWrite,
            FileWriteParams {
                file_handle_id: id,
                data: "aGk=".into(),
            },
        );
        round_trips(
            Method::FileSeek,
            FileSeekParams {
                file_handle_id: id,
                offset: -2,
                whence: 2,
            },
        );
        round_trips(
            Method::FileTruncate,
            FileTruncateParams {
                file_handle_id: id,
                len: Some(1),
            },
        );
        round_trips(
            Method::FileUtime,
            FileUtimeParams {
                file_handle_id: id,
                atime: Timestamp::from_parts(1, 0),
                mtime: Timestamp::from_parts(2, 0),
            },
        );
        round_trips(
            Method::FileLock,
            FileLockParams {
                file_handle_id: id,
                exclusive: true,
            },
        );
    }

    #[test]
    fn sdk_shapes_decode() {
        let p = FileSeekParams::decode(
            Method::FileSeek,
            &json!({"fileHandleId": 1, "offset": "-5", "whence": 1.0}),
        )
        .unwrap();
        assert_eq!((p.offset, p.whence), (-5, 1));
        let p = FileTruncateParams::decode(
            Method::FileTruncate,
            &json!({"fileHandleId": 1, "size": 4}),
        )
        .unwrap();
        assert_eq!(p.len, Some(4));
        let p = OpenParams::decode(Method::Open, &json!({"path": "f", "options": null})).unwrap();
        assert!(p.read && !p.write);
        let e = OpenParams::decode(
            Method::Open,
            &json!({"path": "f", "options": {"truncate": true}}),
        )
        .unwrap_err();
        assert_eq!(e.message, "open: 'truncate' option requires 'write' option");
    }
}

// `walk` and `expandGlob` answer a `{streamId}` and send one
// [`WalkEntry`] per `Data` frame.

/// A JS regular expression as the SDKs send it: a `RegExp` as `{source,
/// flags}`, or a plain string (a pattern without flags, for PY callers,
/// whose `re.Pattern` cannot be serialized). The agent compiles it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JsRegex {
    pub source: String,
    pub flags: String,
}

/// std/fs `walk {path, maxDepth?, includeFiles?, includeDirs?,
/// includeSymlinks?, followSymlinks?, canonicalize?, exts?, match?,
/// skip?}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WalkParams {
    pub path: String,
    /// Fractional depths compare as in JS; a negative one walks nothing
    /// (std/fs yields nothing at all), so the options after it are not
    /// read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<f64>,
    pub include_files: bool,
    pub include_dirs: bool,
    pub include_symlinks: bool,
    pub follow_symlinks: bool,
    pub canonicalize: bool,
    /// With or without the leading dot; empty means no filter.
    pub exts: Vec<String>,
    /// Empty means no filter.
    pub r#match: Vec<JsRegex>,
    pub skip: Vec<JsRegex>,
}

impl WalkParams {
    /// Whether `maxDepth` says to walk nothing at all.
    pub fn walks_nothing(&self) -> bool {
        self.max_depth.is_some_and(|d| d < 0.0)
    }
}

/// std/fs `expandGlob {glob, root?, exclude?, extended?, globstar?,
/// caseInsensitive?, followSymlinks?, canonicalize?, includeDirs?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpandGlobParams {
    pub glob: String,
    pub extended: bool,
    pub globstar: bool,
    pub case_insensitive: bool,
    /// Default: `/` for an absolute glob, else the working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Globs, relative to the root.
    pub exclude: Vec<String>,
    pub follow_symlinks: bool,
    pub canonicalize: bool,
    pub include_dirs: bool,
}

/// std/fs `WalkEntry`: a `DirEntry` plus its path. The Python SDK gets
/// `expandGlob`'s as their paths only (the daemon collects them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalkEntry {
    pub path: String,
    pub name: String,
    pub is_file: bool,
    pub is_directory: bool,
    pub is_symlink: bool,
}

/// Wire regexes `key` (an array): shape errors are `TypeError`s naming the
/// method, as compiling them is.
fn regexes(p: &Params, key: &str) -> Result<Vec<JsRegex>, ErrorObject> {
    use serde_json::Value;
    let m = p.method();
    match p.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(JsRegex {
                    source: s.clone(),
                    flags: String::new(),
                }),
                Value::Object(o) => {
                    let source = o.get("source").and_then(Value::as_str).ok_or_else(|| {
                        ErrorObject::type_error(format!(
                            "{m}: \"{key}\" entries need a string \"source\""
                        ))
                    })?;
                    let flags = o.get("flags").and_then(Value::as_str).unwrap_or("");
                    Ok(JsRegex {
                        source: source.to_string(),
                        flags: flags.to_string(),
                    })
                }
                other => Err(ErrorObject::type_error(format!(
                    "{m}: \"{key}\" entries must be {{source, flags}} objects, got {}",
                    kind(other)
                ))),
            })
            .collect(),
        Some(other) => Err(ErrorObject::invalid_type(&[key], "array", Some(other))),
    }
}

flattened! {
    WalkParams => |p| {
        let path = p.str("path")?.to_string();
        let max_depth = p.opt_f64("maxDepth")?;
        let mut walk = Self {
            path,
            max_depth,
            include_files: true,
            include_dirs: true,
            include_symlinks: true,
            follow_symlinks: false,
            canonicalize: true,
            exts: Vec::new(),
            r#match: Vec::new(),
            skip: Vec::new(),
        };
        if walk.walks_nothing() {
            return Ok(walk);
        }
        walk.exts = p.opt_str_array("exts")?.unwrap_or_default();
        walk.include_files = p.bool_or("includeFiles", true)?;
        walk.include_dirs = p.bool_or("includeDirs", true)?;
        walk.include_symlinks = p.bool_or("includeSymlinks", true)?;
        walk.follow_symlinks = p.bool_or("followSymlinks", false)?;
        walk.canonicalize = p.bool_or("canonicalize", true)?;
        walk.r#match = regexes(p, "match")?;
        walk.skip = regexes(p, "skip")?;
        walk
    };
    ExpandGlobParams => |p| Self {
        glob: p.str("glob")?.to_string(),
        extended: p.bool_or("extended", true)?,
        globstar: p.bool_or("globstar", true)?,
        case_insensitive: p.bool_or("caseInsensitive", false)?,
        root: p.opt_str("root")?.map(str::to_string),
        exclude: p.opt_str_array("exclude")?.unwrap_or_default(),
        follow_symlinks: p.bool_or("followSymlinks", false)?,
        canonicalize: p.bool_or("canonicalize", true)?,
        include_dirs: p.bool_or("includeDirs", true)?,
    };
}

#[cfg(test)]
mod walk_tests {
    use super::*;
    use crate::calls::test_util::round_trips;
    use crate::Method;
    use serde_json::json;

    #[test]
    fn params_round_trip() {
        round_trips(
            Method::Walk,
            WalkParams {
                path: ".".into(),
                max_depth: Some(2.5),
                include_files: false,
                include_dirs: true,
                include_symlinks: false,
                follow_symlinks: true,
                canonicalize: false,
                exts: vec!["rs".into()],
                r#match: vec![JsRegex {
                    source: "a".into(),
                    flags: "i".into(),
                }],
                skip: vec![],
            },
        );
        round_trips(
            Method::ExpandGlob,
            ExpandGlobParams {
                glob: "**/*.rs".into(),
                extended: false,
                globstar: true,
                case_insensitive: true,
                root: Some("/src".into()),
                exclude: vec!["target".into()],
                follow_symlinks: false,
                canonicalize: true,
                include_dirs: false,
            },
        );
    }

    #[test]
    fn regexes_as_the_sdks_send_them() {
        let p = WalkParams::decode(
            Method::Walk,
            &json!({"path": ".", "options": {"skip": ["x", {"source": "y", "flags": "g"}]}}),
        )
        .unwrap();
        assert_eq!(p.skip[0].source, "x");
        assert_eq!(p.skip[1].flags, "g");
        let e = WalkParams::decode(Method::Walk, &json!({"path": ".", "match": [5]})).unwrap_err();
        assert_eq!(
            e.message,
            "walk: \"match\" entries must be {source, flags} objects, got number"
        );
        // Nothing to walk: the rest is not read.
        let p = WalkParams::decode(
            Method::Walk,
            &json!({"path": ".", "maxDepth": -1, "includeFiles": "x"}),
        )
        .unwrap();
        assert!(p.walks_nothing());
    }
}

/// Deno's `FileInfo` (`stat`, `lstat`, `fileStat`): JS requires every key,
/// and dates as ISO strings (the epoch when unknown, never null). `mode`
/// is the raw `st_mode`, type bits included, as Deno reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    pub is_file: bool,
    pub is_directory: bool,
    pub is_symlink: bool,
    pub size: u64,
    pub mtime: String,
    pub atime: String,
    pub birthtime: String,
    pub ctime: String,
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub blksize: u64,
    pub blocks: u64,
    pub is_block_device: bool,
    pub is_char_device: bool,
    pub is_fifo: bool,
    pub is_socket: bool,
}

/// `readDir`'s entry: the type of the entry itself (symlinks not
/// followed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirEntry {
    pub name: String,
    pub is_file: bool,
    pub is_directory: bool,
    pub is_symlink: bool,
}
