//! Behaviour tests of the fs methods against real temporary directories.

use super::*;
use agent_proto::calls::{to_reply, FromParams};
use serde_json::json;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use tempfile::TempDir;

/// `walk` as the dispatcher runs it: params decoded, entries as JSON.
fn walk(params: &Value, cwd: &std::path::Path) -> Result<Vec<Value>, ErrorObject> {
    let p = WalkParams::decode(Method::Walk, params)?;
    Ok(super::walk(&p, cwd)?.iter().map(to_reply).collect())
}

/// `expandGlob` as the dispatcher runs it.
fn expand_glob(params: &Value, cwd: &std::path::Path) -> Result<Vec<Value>, ErrorObject> {
    let p = ExpandGlobParams::decode(Method::ExpandGlob, params)?;
    Ok(super::expand_glob(&p, cwd)?.iter().map(to_reply).collect())
}

/// A scratch directory used as the working directory, plus fs state.
struct Fx {
    dir: TempDir,
    fs: FsState,
}

impl Fx {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            fs: FsState::new(),
        }
    }

    fn cwd(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Absolute path (as a string) of `rel` inside the scratch dir.
    fn p(&self, rel: &str) -> String {
        self.dir.path().join(rel).to_string_lossy().into_owned()
    }

    fn call(&mut self, method: &str, params: Value) -> Result<Value, ErrorObject> {
        let cwd = self.cwd();
        let m = Method::from_wire(method).unwrap_or_else(|| panic!("{method} is not a method"));
        self.fs
            .call(m, &params, &cwd)
            .unwrap_or_else(|| panic!("{method} is not an fs method"))
    }

    fn ok(&mut self, method: &str, params: Value) -> Value {
        self.call(method, params.clone())
            .unwrap_or_else(|e| panic!("{method} {params} failed: {e:?}"))
    }

    fn err(&mut self, method: &str, params: Value) -> ErrorObject {
        match self.call(method, params.clone()) {
            Ok(v) => panic!("{method} {params} should fail, got {v}"),
            Err(e) => e,
        }
    }

    fn write(&self, rel: &str, content: &str) {
        let path = self.dir.path().join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(path, content).expect("write");
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.dir.path().join(rel)).expect("read")
    }

    fn open(&mut self, params: Value) -> Value {
        self.ok("open", params)["fileHandleId"].clone()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A validation error (ZodError) with one `invalid_type` issue at `path`.
fn assert_invalid(e: &ErrorObject, path: &[&str], expected: &str, received: &str) {
    assert!(e.is_invalid_params(), "{e:?}");
    let issues: Value = serde_json::from_str(&e.message).expect("issues JSON");
    assert_eq!(
        issues,
        json!([{"expected": expected, "code": "invalid_type", "path": path,
                "message": format!("Invalid input: expected {expected}, received {received}")}]),
    );
}

fn assert_class(e: &ErrorObject, class: &str, code: Option<&str>) {
    assert_eq!(e.constructor_name, class, "{e:?}");
    if code.is_some() {
        assert_eq!(e.code.as_deref(), code, "{e:?}");
    }
}

// ---------------------------------------------------------------- dispatch

#[test]
fn the_fs_tables_serve_exactly_the_method_tables_fs_methods() {
    let mut fx = Fx::new();
    let cwd = fx.cwd();
    let mut served = 0;
    // A wrongly typed params value reaches every handler without side effects.
    for &m in Method::ALL {
        match fx.fs.call(m, &json!("not an object"), &cwd) {
            Some(r) => {
                assert!(m.is_fs(), "{m} is served by the fs tables but not is_fs");
                assert_invalid(&r.expect_err("bad params"), &[], "object", "string");
                served += 1;
            }
            None => assert!(!m.is_fs(), "{m} is_fs but unhandled"),
        }
    }
    // 22 path-based methods and 13 file-handle ones.
    assert_eq!(served, 35);
}

// ------------------------------------------------------ validation errors

/// Missing or wrongly typed params are zod-shaped validation errors naming
/// the param's path; values of the right type but out of range are
/// `TypeError`s naming the method.
#[test]
fn bad_params_are_validation_errors_naming_the_param() {
    let mut fx = Fx::new();
    let e = fx.err("readFile", json!({}));
    assert_invalid(&e, &["path"], "string", "undefined");
    let e = fx.err("readFile", json!({"path": null}));
    assert_invalid(&e, &["path"], "string", "null");

    let e = fx.err("readFile", json!({"path": 5}));
    assert_invalid(&e, &["path"], "string", "number");

    let e = fx.err("mkdir", json!({"path": "d", "options": 3}));
    assert_invalid(&e, &["options"], "object", "number");

    let e = fx.err(
        "mkdir",
        json!({"path": "d", "options": {"recursive": "yes"}}),
    );
    assert_invalid(&e, &["options", "recursive"], "boolean", "string");
    let e = fx.err("mkdir", json!({"path": "d", "recursive": "yes"}));
    assert_invalid(&e, &["recursive"], "boolean", "string");

    let e = fx.err("chmod", json!({"path": "x", "mode": 1.5}));
    assert_invalid(&e, &["mode"], "int", "number");

    let e = fx.err("chmod", json!({"path": "x", "mode": -1}));
    assert_class(&e, "TypeError", None);
    assert!(e.message.contains("must not be negative"), "{}", e.message);

    let e = fx.err("fileRead", json!({"fileHandleId": "1", "length": 4}));
    assert_invalid(&e, &["fileHandleId"], "number", "string");

    let e = fx.err(
        "utime",
        json!({"path": "x", "atime": "yesterday", "mtime": 0}),
    );
    assert!(
        e.message
            .starts_with("utime: param \"atime\" must be an ISO-8601"),
        "{}",
        e.message
    );

    let e = fx.err("writeFile", json!({"path": "x", "content": "!!not base64"}));
    assert_class(&e, "TypeError", None);
    assert!(
        !fx.dir.path().join("x").exists(),
        "nothing written on bad content"
    );
}

// ------------------------------------------------------- read and write

#[test]
fn write_and_read_files_base64_and_text() {
    let mut fx = Fx::new();
    let bytes = [0u8, 159, 146, 150, b'\n'];
    assert_eq!(
        fx.ok(
            "writeFile",
            json!({"path": fx.p("bin"), "content": b64(&bytes)})
        ),
        Value::Null
    );
    assert_eq!(
        fx.ok("readFile", json!({"path": fx.p("bin")})),
        json!(b64(&bytes))
    );

    // Relative paths resolve against cwd.
    fx.ok(
        "writeTextFile",
        json!({"path": "t.txt", "content": "héllo"}),
    );
    assert_eq!(fx.read("t.txt"), "héllo");
    assert_eq!(
        fx.ok("readTextFile", json!({"path": "t.txt"})),
        json!("héllo")
    );

    // Unpadded base64 is accepted, as JS's lenient decoder does.
    fx.ok("writeFile", json!({"path": "np", "content": "YWI"}));
    assert_eq!(fx.read("np"), "ab");

    let e = fx.err("readTextFile", json!({"path": "bin"}));
    assert_class(&e, "InvalidData", None);
    assert!(e.message.contains("readTextFile 'bin'"), "{}", e.message);
}

#[test]
fn write_options_append_create_create_new_mode() {
    let mut fx = Fx::new();
    fx.ok("writeTextFile", json!({"path": "f", "content": "a"}));
    fx.ok(
        "writeTextFile",
        json!({"path": "f", "content": "b", "options": {"append": true}}),
    );
    assert_eq!(fx.read("f"), "ab");
    // Without append the file is truncated.
    fx.ok("writeTextFile", json!({"path": "f", "content": "c"}));
    assert_eq!(fx.read("f"), "c");

    let e = fx.err(
        "writeTextFile",
        json!({"path": "nope", "content": "x", "options": {"create": false}}),
    );
    assert_class(&e, "NotFound", Some("ENOENT"));
    let e = fx.err(
        "writeTextFile",
        json!({"path": "f", "content": "x", "options": {"createNew": true}}),
    );
    assert_class(&e, "AlreadyExists", Some("EEXIST"));
    assert_eq!(fx.read("f"), "c");

    // PY sends explicit nulls for unset options.
    fx.ok(
        "writeTextFile",
        json!({"path": "m", "content": "x", "options": {"mode": 0o640, "append": null, "create": null}}),
    );
    let mode = fs::metadata(fx.p("m")).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
}

/// Writes `bytes` to the file a streamed writeFile with `params` opens.
fn write_streamed(params: &Value, bytes: &[u8], cwd: &std::path::Path) -> Result<(), ErrorObject> {
    use agent_proto::calls::FromParams;
    use std::io::Write;
    let p = WriteFileParams::decode(Method::WriteFile, params)?;
    let mut file = open_for_write(Method::WriteFile, &p, cwd)?;
    file.write_all(bytes)
        .map_err(|e| write_error(Method::WriteFile, &p.path, &e))
}

#[test]
fn content_streams_go_through_open_for_write() {
    let mut fx = Fx::new();
    let e = fx.err("writeFile", json!({"path": "s", "contentStreamId": 7}));
    assert_class(&e, "TypeError", None);
    assert!(e.message.contains("open_for_write"), "{}", e.message);
    let e = fx.err("writeFile", json!({"path": "s"}));
    assert_invalid(&e, &["content"], "string", "undefined");
    assert!(e.message.contains("\"content\""), "{}", e.message);

    let cwd = fx.cwd();
    let params = json!({"path": "s", "contentStreamId": 7, "options": {"append": true}});
    write_streamed(&params, b"one ", &cwd).expect("write");
    write_streamed(&params, b"two", &cwd).expect("append");
    assert_eq!(fx.read("s"), "one two");
    let e = write_streamed(
        &json!({"path": "s", "contentStreamId": 7, "options": {"createNew": true}}),
        b"x",
        &cwd,
    )
    .expect_err("exists");
    assert_class(&e, "AlreadyExists", Some("EEXIST"));
    let e = write_streamed(&json!({"contentStreamId": 7}), b"x", &cwd).expect_err("no path");
    assert_invalid(&e, &["path"], "string", "undefined");
}

fn read_params(path: &str) -> ReadFileParams {
    ReadFileParams {
        path: path.to_string(),
        stream: true,
    }
}

#[test]
fn reads_as_a_stream_fail_like_inline_reads() {
    let mut fx = Fx::new();
    let cwd = fx.cwd();
    fx.ok("writeTextFile", json!({"path": "f", "content": "abc"}));
    let (_, size, first) =
        open_for_read(Method::ReadFile, &read_params("f"), &cwd, 2).expect("open");
    assert_eq!((size, first.as_slice()), (3, &b"ab"[..]));
    let e = open_for_read(Method::ReadFile, &read_params("missing"), &cwd, 2).expect_err("missing");
    assert_eq!(e.code.as_deref(), Some("ENOENT"));
    assert!(e.message.ends_with("readFile 'missing'"), "{}", e.message);
    fx.ok("mkdir", json!({"path": "d"}));
    let e = open_for_read(Method::ReadTextFile, &read_params("d"), &cwd, 2).expect_err("dir");
    assert_eq!(e.code.as_deref(), Some("EISDIR"));
}

#[test]
fn os_errors_keep_their_class_code_and_path() {
    let mut fx = Fx::new();
    fx.write("file", "x");
    fs::create_dir(fx.p("dir")).expect("mkdir");

    let e = fx.err("readFile", json!({"path": "missing"}));
    assert_class(&e, "NotFound", Some("ENOENT"));
    assert!(e.message.ends_with("readFile 'missing'"), "{}", e.message);
    assert!(e.message.contains("(os error 2)"), "{}", e.message);

    let e = fx.err("readFile", json!({"path": "dir"}));
    assert_class(&e, "IsADirectory", Some("EISDIR"));

    let e = fx.err("readFile", json!({"path": "file/sub"}));
    assert_class(&e, "NotADirectory", Some("ENOTDIR"));

    let e = fx.err("stat", json!({"path": ""}));
    assert_class(&e, "NotFound", Some("ENOENT"));

    let e = fx.err("readDir", json!({"path": "file"}));
    assert_class(&e, "NotADirectory", Some("ENOTDIR"));
}

// ----------------------------------------------------------- directories

#[test]
fn read_dir_lists_sorted_entries_with_types() {
    let mut fx = Fx::new();
    fx.write("b.txt", "");
    fs::create_dir(fx.p("a")).expect("mkdir");
    std::os::unix::fs::symlink("b.txt", fx.p("c")).expect("symlink");
    let entries = fx.ok("readDir", json!({"path": "."}));
    assert_eq!(
        entries,
        json!([
            {"name": "a", "isFile": false, "isDirectory": true, "isSymlink": false},
            {"name": "b.txt", "isFile": true, "isDirectory": false, "isSymlink": false},
            {"name": "c", "isFile": false, "isDirectory": false, "isSymlink": true},
        ])
    );
}

#[test]
fn mkdir_recursive_and_mode() {
    let mut fx = Fx::new();
    let e = fx.err("mkdir", json!({"path": "x/y"}));
    assert_class(&e, "NotFound", Some("ENOENT"));
    fx.ok(
        "mkdir",
        json!({"path": "x/y", "options": {"recursive": true}}),
    );
    assert!(fx.dir.path().join("x/y").is_dir());
    // Recursive on an existing directory succeeds; plain mkdir does not.
    fx.ok(
        "mkdir",
        json!({"path": "x/y", "options": {"recursive": true}}),
    );
    let e = fx.err("mkdir", json!({"path": "x"}));
    assert_class(&e, "AlreadyExists", Some("EEXIST"));
    fx.ok("mkdir", json!({"path": "m", "options": {"mode": 0o700}}));
    let mode = fs::metadata(fx.p("m")).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn remove_needs_recursive_for_non_empty_dirs() {
    let mut fx = Fx::new();
    fx.write("d/inner/f", "x");
    let e = fx.err("remove", json!({"path": "d"}));
    assert_eq!(e.code.as_deref(), Some("ENOTEMPTY"), "{e:?}");
    assert!(fx.dir.path().join("d/inner/f").exists());
    fx.ok(
        "remove",
        json!({"path": "d", "options": {"recursive": true}}),
    );
    assert!(!fx.dir.path().join("d").exists());

    fs::create_dir(fx.p("empty")).expect("mkdir");
    fx.ok("remove", json!({"path": "empty"}));
    assert!(!fx.dir.path().join("empty").exists());

    // A symlink is removed itself, never its target.
    fx.write("target", "t");
    std::os::unix::fs::symlink(fx.p("target"), fx.p("link")).expect("symlink");
    fx.ok(
        "remove",
        json!({"path": "link", "options": {"recursive": true}}),
    );
    assert!(fx.dir.path().join("target").exists());
    assert!(fs::symlink_metadata(fx.p("link")).is_err());

    let e = fx.err("remove", json!({"path": "missing"}));
    assert_class(&e, "NotFound", Some("ENOENT"));
}

// --------------------------------------------------------- links, copies

#[test]
fn rename_copy_link_symlink_readlink_realpath() {
    let mut fx = Fx::new();
    fx.write("a", "data");
    fx.ok("rename", json!({"oldPath": "a", "newPath": "b"}));
    assert!(!fx.dir.path().join("a").exists());
    assert_eq!(fx.read("b"), "data");
    let e = fx.err("rename", json!({"oldPath": "a", "newPath": "c"}));
    assert_class(&e, "NotFound", Some("ENOENT"));
    assert!(e.message.ends_with("rename 'a' -> 'c'"), "{}", e.message);

    fx.ok("copyFile", json!({"fromPath": "b", "toPath": "c"}));
    assert_eq!(fx.read("c"), "data");

    fx.ok("link", json!({"target": "b", "path": "hard"}));
    assert_eq!(fs::metadata(fx.p("b")).expect("stat").nlink(), 2);
    let e = fx.err("link", json!({"target": "b", "path": "hard"}));
    assert_class(&e, "AlreadyExists", Some("EEXIST"));

    // The target is stored verbatim (relative to the link), `type` ignored.
    fs::create_dir(fx.p("sub")).expect("mkdir");
    fx.ok(
        "symlink",
        json!({"target": "../b", "path": "sub/ln", "options": {"type": "file"}}),
    );
    assert_eq!(fx.ok("readLink", json!({"path": "sub/ln"})), json!("../b"));
    let real = fs::canonicalize(fx.p("b")).expect("canonicalize");
    assert_eq!(
        fx.ok("realPath", json!({"path": "sub/ln"})),
        json!(real.to_string_lossy())
    );

    let e = fx.err("readLink", json!({"path": "b"}));
    assert_class(&e, "TypeError", Some("EINVAL"));
}

// ------------------------------------------------------------------ stat

#[test]
fn stat_and_lstat_report_every_file_info_key() {
    let mut fx = Fx::new();
    fx.write("f", "12345");
    std::os::unix::fs::symlink("f", fx.p("ln")).expect("symlink");
    let info = fx.ok("stat", json!({"path": "ln"}));
    let keys = [
        "isFile",
        "isDirectory",
        "isSymlink",
        "size",
        "mtime",
        "atime",
        "birthtime",
        "ctime",
        "dev",
        "ino",
        "mode",
        "nlink",
        "uid",
        "gid",
        "rdev",
        "blksize",
        "blocks",
        "isBlockDevice",
        "isCharDevice",
        "isFifo",
        "isSocket",
    ];
    let obj = info.as_object().expect("object");
    assert_eq!(obj.len(), keys.len());
    for key in keys {
        assert!(obj.contains_key(key), "missing {key}");
    }
    assert_eq!(info["isFile"], json!(true));
    assert_eq!(info["isSymlink"], json!(false));
    assert_eq!(info["size"], json!(5));
    let md = fs::metadata(fx.p("f")).expect("stat");
    assert_eq!(info["mode"], json!(md.mode()), "st_mode with type bits");
    assert_eq!(info["ino"], json!(md.ino()));
    for key in ["mtime", "atime", "birthtime", "ctime"] {
        let s = info[key].as_str().expect("string");
        assert!(
            time::parse_iso(s).is_some() && s.len() == 24 && s.ends_with('Z'),
            "{key}: {s}"
        );
    }
    let expected_mtime = time::Timestamp::from_parts(md.mtime(), md.mtime_nsec()).to_iso();
    assert_eq!(info["mtime"], json!(expected_mtime));

    let linfo = fx.ok("lstat", json!({"path": "ln"}));
    assert_eq!(linfo["isSymlink"], json!(true));
    assert_eq!(linfo["isFile"], json!(false));
}

// ------------------------------------------------------ permissions, times

#[test]
fn chmod_and_chown() {
    let mut fx = Fx::new();
    fx.write("f", "");
    fx.ok("chmod", json!({"path": "f", "mode": 0o604}));
    assert_eq!(
        fs::metadata(fx.p("f")).expect("stat").permissions().mode() & 0o777,
        0o604
    );

    let md = fs::metadata(fx.p("f")).expect("stat");
    // null ids leave both unchanged; our own ids are always allowed.
    fx.ok("chown", json!({"path": "f", "uid": null, "gid": null}));
    fx.ok("chown", json!({"path": "f", "uid": md.uid(), "gid": null}));
    let after = fs::metadata(fx.p("f")).expect("stat");
    assert_eq!((after.uid(), after.gid()), (md.uid(), md.gid()));

    let e = fx.err(
        "chown",
        json!({"path": "missing", "uid": null, "gid": null}),
    );
    assert_class(&e, "NotFound", Some("ENOENT"));
}

#[test]
fn utime_accepts_iso_strings_and_epoch_numbers() {
    let mut fx = Fx::new();
    fx.write("f", "");
    fx.ok("utime", json!({"path": "f", "atime": "2001-02-03T04:05:06.789Z", "mtime": "2020-01-01T00:00:00.000Z"}));
    let md = fs::metadata(fx.p("f")).expect("stat");
    assert_eq!(md.mtime(), 1_577_836_800);
    assert_eq!(md.atime(), 981_173_106);
    assert_eq!(md.atime_nsec(), 789_000_000);
    assert_eq!(
        fx.ok("stat", json!({"path": "f"}))["mtime"],
        json!("2020-01-01T00:00:00.000Z")
    );

    // PY: numbers (float seconds).
    fx.ok(
        "utime",
        json!({"path": "f", "atime": 1000.5, "mtime": 2000}),
    );
    let md = fs::metadata(fx.p("f")).expect("stat");
    assert_eq!(
        (md.atime(), md.atime_nsec(), md.mtime()),
        (1000, 500_000_000, 2000)
    );

    let e = fx.err("utime", json!({"path": "f", "atime": 1}));
    assert_invalid(&e, &["mtime"], "number", "undefined");
}

#[test]
fn truncate_by_name_with_optional_length() {
    let mut fx = Fx::new();
    fx.write("f", "123456");
    fx.ok("truncate", json!({"name": "f", "length": 2}));
    assert_eq!(fx.read("f"), "12");
    fx.ok("truncate", json!({"name": "f", "length": null}));
    assert_eq!(fx.read("f"), "");
    fx.write("g", "abc");
    fx.ok("truncate", json!({"path": "g"}));
    assert_eq!(fx.read("g"), "");
    let e = fx.err("truncate", json!({"name": "missing"}));
    assert_class(&e, "NotFound", Some("ENOENT"));
    let e = fx.err("truncate", json!({}));
    assert_invalid(&e, &["name"], "string", "undefined");
}

#[test]
fn umask_returns_previous_mask() {
    let mut fx = Fx::new();
    let original = fx.ok("umask", json!({"mask": 0o027}));
    assert_eq!(
        fx.ok("umask", json!({"mask": null})),
        json!(0o027),
        "null only reads"
    );
    assert_eq!(fx.ok("umask", json!({})), json!(0o027));
    assert_eq!(fx.ok("umask", json!({"mask": original})), json!(0o027));
}

#[test]
fn make_temp_dir_and_file() {
    let mut fx = Fx::new();
    let dir = fx.ok(
        "makeTempDir",
        json!({"options": {"dir": fx.p(""), "prefix": "pre-", "suffix": ".d"}}),
    );
    let dir = PathBuf::from(dir.as_str().expect("string"));
    let name = dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("pre-") && name.ends_with(".d") && name.len() > 6,
        "{name}"
    );
    let md = fs::metadata(&dir).expect("created");
    assert!(md.is_dir());
    assert_eq!(md.permissions().mode() & 0o777, 0o700);

    // Relative `dir` resolves against cwd, and the result keeps its form.
    fs::create_dir(fx.p("t")).expect("mkdir");
    let file = fx.ok(
        "makeTempFile",
        json!({"options": {"dir": "t", "suffix": ".txt"}}),
    );
    let file = file.as_str().expect("string").to_string();
    assert!(file.starts_with("t/") && file.ends_with(".txt"), "{file}");
    let md = fs::metadata(fx.dir.path().join(&file)).expect("created");
    assert!(md.is_file());
    assert_eq!(md.permissions().mode() & 0o777, 0o600);

    let a = fx.ok("makeTempFile", json!({"options": {"dir": "t"}}));
    let b = fx.ok("makeTempFile", json!({"options": {"dir": "t"}}));
    assert_ne!(a, b);

    // Default: the system temp dir.
    let tmp = fx.ok("makeTempDir", json!({}));
    let tmp = PathBuf::from(tmp.as_str().expect("string"));
    assert!(tmp.starts_with(std::env::temp_dir()) && tmp.is_dir());
    fs::remove_dir(&tmp).expect("cleanup");

    let e = fx.err("makeTempFile", json!({"options": {"dir": "no/such"}}));
    assert_class(&e, "NotFound", Some("ENOENT"));
}

// --------------------------------------------------------------- handles

#[test]
fn handles_write_seek_read_stat_truncate_close() {
    let mut fx = Fx::new();
    let id = fx.ok("create", json!({"path": "h"}))["fileHandleId"].clone();
    assert!(id.as_u64().is_some_and(|n| n > 0));
    assert_eq!(
        fx.ok(
            "fileWrite",
            json!({"fileHandleId": id, "data": b64(b"hello world")})
        ),
        json!({"bytesWritten": 11})
    );
    assert_eq!(
        fx.ok(
            "fileSeek",
            json!({"fileHandleId": id, "offset": 0, "whence": 0})
        ),
        json!({"position": 0})
    );
    assert_eq!(
        fx.ok("fileRead", json!({"fileHandleId": id, "length": 5})),
        json!({"data": b64(b"hello")})
    );
    // BigInt offsets arrive as decimal strings.
    assert_eq!(
        fx.ok(
            "fileSeek",
            json!({"fileHandleId": id, "offset": "1", "whence": 1})
        ),
        json!({"position": 6})
    );
    assert_eq!(
        fx.ok("fileRead", json!({"fileHandleId": id, "length": 100})),
        json!({"data": b64(b"world")})
    );
    assert_eq!(
        fx.ok("fileRead", json!({"fileHandleId": id, "length": 100})),
        json!({"data": null}),
        "EOF"
    );
    assert_eq!(
        fx.ok(
            "fileSeek",
            json!({"fileHandleId": id, "offset": -5, "whence": 2})
        ),
        json!({"position": 6})
    );

    let e = fx.err(
        "fileSeek",
        json!({"fileHandleId": id, "offset": 0, "whence": 3}),
    );
    assert_class(&e, "TypeError", None);
    let e = fx.err(
        "fileSeek",
        json!({"fileHandleId": id, "offset": "x", "whence": 0}),
    );
    assert_class(&e, "TypeError", None);
    let e = fx.err(
        "fileSeek",
        json!({"fileHandleId": id, "offset": -1, "whence": 0}),
    );
    assert_class(&e, "TypeError", None);

    assert_eq!(
        fx.ok("fileStat", json!({"fileHandleId": id}))["size"],
        json!(11)
    );
    fx.ok("fileTruncate", json!({"fileHandleId": id, "len": 4}));
    assert_eq!(fx.read("h"), "hell");
    // PY sends `size`, possibly null.
    fx.ok("fileTruncate", json!({"fileHandleId": id, "size": 2}));
    assert_eq!(fx.read("h"), "he");
    fx.ok("fileTruncate", json!({"fileHandleId": id, "size": null}));
    assert_eq!(fx.read("h"), "");

    fx.ok("fileSync", json!({"fileHandleId": id}));
    fx.ok("fileSyncData", json!({"fileHandleId": id}));
    fx.ok("fileClose", json!({"fileHandleId": id}));
    let e = fx.err("fileClose", json!({"fileHandleId": id}));
    assert_class(&e, "BadResource", Some("EBADF"));
    let e = fx.err("fileRead", json!({"fileHandleId": id, "length": 1}));
    assert_class(&e, "BadResource", Some("EBADF"));
}

#[test]
fn unknown_handles_are_bad_resource_for_every_handle_method() {
    let mut fx = Fx::new();
    let params = json!({"fileHandleId": 999, "length": 1, "data": "", "offset": 0, "whence": 0,
        "atime": 0, "mtime": 0});
    for method in [
        "fileRead",
        "fileWrite",
        "fileSeek",
        "fileStat",
        "fileTruncate",
        "fileUtime",
        "fileLock",
        "fileUnlock",
        "fileSync",
        "fileSyncData",
        "fileClose",
    ] {
        let e = fx.err(method, params.clone());
        assert_class(&e, "BadResource", Some("EBADF"));
        assert!(
            e.message.contains(method) && e.message.contains("999"),
            "{}",
            e.message
        );
    }
    let e = fx.err("fileStat", json!({}));
    assert_invalid(&e, &["fileHandleId"], "number", "undefined");
}

#[test]
fn open_options_follow_deno() {
    let mut fx = Fx::new();
    fx.write("f", "abcdef");
    // No options: read-only.
    let id = fx.open(json!({"path": "f"}));
    assert_eq!(
        fx.ok("fileRead", json!({"fileHandleId": id, "length": 3})),
        json!({"data": b64(b"abc")})
    );
    let e = fx.err("fileWrite", json!({"fileHandleId": id, "data": b64(b"x")}));
    assert_class(&e, "BadResource", Some("EBADF"));

    let id = fx.open(json!({"path": "f", "options": {"write": true, "append": true}}));
    fx.ok("fileWrite", json!({"fileHandleId": id, "data": b64(b"gh")}));
    assert_eq!(fx.read("f"), "abcdefgh");

    let id =
        fx.open(json!({"path": "f", "options": {"write": true, "truncate": true, "read": null}}));
    fx.ok("fileWrite", json!({"fileHandleId": id, "data": b64(b"z")}));
    assert_eq!(fx.read("f"), "z");

    let e = fx.err("open", json!({"path": "f", "options": {"truncate": true}}));
    assert_eq!(e.message, "open: 'truncate' option requires 'write' option");
    let e = fx.err("open", json!({"path": "new", "options": {"create": true}}));
    assert_class(&e, "TypeError", None);
    let e = fx.err("open", json!({"path": "missing"}));
    assert_class(&e, "NotFound", Some("ENOENT"));
    let e = fx.err(
        "open",
        json!({"path": "f", "options": {"write": true, "createNew": true}}),
    );
    assert_class(&e, "AlreadyExists", Some("EEXIST"));

    fx.open(json!({"path": "new", "options": {"write": true, "createNew": true, "mode": 0o600}}));
    assert_eq!(
        fs::metadata(fx.p("new"))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // create truncates an existing file.
    fx.write("c", "old");
    fx.ok("create", json!({"path": "c"}));
    assert_eq!(fx.read("c"), "");
}

#[test]
fn file_read_caps_length() {
    let mut fx = Fx::new();
    let big = vec![7u8; handles::MAX_READ + 10];
    fs::write(fx.p("big"), &big).expect("write");
    let id = fx.open(json!({"path": "big"}));
    let v = fx.ok(
        "fileRead",
        json!({"fileHandleId": id, "length": 10_000_000}),
    );
    let data = base64_decode(v["data"].as_str().expect("data")).expect("base64");
    assert!(
        !data.is_empty() && data.len() <= handles::MAX_READ,
        "{}",
        data.len()
    );
    assert_eq!(
        fx.ok("fileRead", json!({"fileHandleId": id, "length": 0})),
        json!({"data": ""})
    );
}

#[test]
fn file_utime_accepts_numbers_and_strings() {
    let mut fx = Fx::new();
    fx.write("f", "");
    let id = fx.open(json!({"path": "f", "options": {"write": true}}));
    fx.ok(
        "fileUtime",
        json!({"fileHandleId": id, "atime": 100.25, "mtime": "1970-01-01T00:16:40.000Z"}),
    );
    let md = fs::metadata(fx.p("f")).expect("stat");
    assert_eq!(
        (md.atime(), md.atime_nsec(), md.mtime()),
        (100, 250_000_000, 1000)
    );
}

#[test]
fn file_lock_shared_exclusive_and_own_conflicts() {
    let mut fx = Fx::new();
    fx.write("l", "");
    let a = fx.open(json!({"path": "l"}));
    let b = fx.open(json!({"path": "l"}));
    // Two shared locks coexist (PY sends exclusive: null).
    fx.ok("fileLock", json!({"fileHandleId": a, "exclusive": null}));
    fx.ok("fileLock", json!({"fileHandleId": b}));
    // An exclusive lock conflicting with our own handle fails instead of
    // hanging the agent.
    let e = fx.err("fileLock", json!({"fileHandleId": a, "exclusive": true}));
    assert_class(&e, "WouldBlock", Some("EWOULDBLOCK"));
    assert!(
        e.message.contains(&format!("file handle {b}")),
        "{}",
        e.message
    );
    fx.ok("fileUnlock", json!({"fileHandleId": b}));
    fx.ok("fileLock", json!({"fileHandleId": a, "exclusive": true}));
    let e = fx.err("fileLock", json!({"fileHandleId": b}));
    assert_class(&e, "WouldBlock", None);
    // Closing releases the lock.
    fx.ok("fileClose", json!({"fileHandleId": a}));
    fx.ok("fileLock", json!({"fileHandleId": b, "exclusive": true}));
}

// ------------------------------------------------------------------ walk

/// A tree used by the walk and glob tests:
/// a.rs, b.txt, src/{lib.rs, main.rs, mod/x.rs}, docs/readme.md,
/// node_modules/dep/index.js, link -> src
fn tree() -> Fx {
    let fx = Fx::new();
    for f in [
        "a.rs",
        "b.txt",
        "src/lib.rs",
        "src/main.rs",
        "src/mod/x.rs",
        "docs/readme.md",
        "node_modules/dep/index.js",
    ] {
        fx.write(f, f);
    }
    std::os::unix::fs::symlink("src", fx.p("link")).expect("symlink");
    fx
}

fn paths(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["path"].as_str().expect("path").to_string())
        .collect()
}

fn walk_rel(fx: &Fx, params: Value) -> Vec<String> {
    walk(&params, &fx.cwd())
        .unwrap_or_else(|e| panic!("walk {params}: {e:?}"))
        .iter()
        .map(|e| e["path"].as_str().expect("path").to_string())
        .collect()
}

#[test]
fn walk_visits_pre_order_in_name_order() {
    let fx = tree();
    assert_eq!(
        walk_rel(&fx, json!({"path": "."})),
        [
            ".",
            "a.rs",
            "b.txt",
            "docs",
            "docs/readme.md",
            "link",
            "node_modules",
            "node_modules/dep",
            "node_modules/dep/index.js",
            "src",
            "src/lib.rs",
            "src/main.rs",
            "src/mod",
            "src/mod/x.rs",
        ]
    );
    let entries = walk(&json!({"path": fx.p("src"), "maxDepth": 1}), &fx.cwd()).expect("walk");
    assert_eq!(
        entries[0],
        json!({"path": fx.p("src"), "name": "src", "isFile": false, "isDirectory": true, "isSymlink": false})
    );
    assert_eq!(
        entries[1],
        json!({"path": fx.p("src/lib.rs"), "name": "lib.rs", "isFile": true, "isDirectory": false, "isSymlink": false})
    );
    assert_eq!(paths(&entries).len(), 4, "src, lib.rs, main.rs, mod");
    let link = walk(&json!({"path": "."}), &fx.cwd())
        .expect("walk")
        .into_iter()
        .find(|e| e["name"] == "link");
    assert_eq!(link.expect("link")["isSymlink"], json!(true));
}

#[test]
fn walk_filters_depth_exts_match_skip_and_kinds() {
    let fx = tree();
    assert_eq!(
        walk_rel(&fx, json!({"path": "src", "maxDepth": 0})),
        ["src"]
    );
    assert!(walk_rel(&fx, json!({"path": "src", "maxDepth": -1})).is_empty());
    assert_eq!(
        walk_rel(
            &fx,
            json!({"path": "src", "exts": ["rs"], "includeDirs": false})
        ),
        ["src/lib.rs", "src/main.rs", "src/mod/x.rs"]
    );
    assert_eq!(
        walk_rel(
            &fx,
            json!({"path": ".", "match": [{"source": "\\.MD$", "flags": "i"}]})
        ),
        ["docs/readme.md"]
    );
    // skip prunes whole subtrees.
    let skipped = walk_rel(
        &fx,
        json!({"path": ".", "skip": [{"source": "node_modules|src|docs", "flags": ""}]}),
    );
    assert_eq!(skipped, [".", "a.rs", "b.txt", "link"]);
    assert_eq!(
        walk_rel(
            &fx,
            json!({"path": ".", "includeFiles": false, "includeSymlinks": false})
        ),
        [
            ".",
            "docs",
            "node_modules",
            "node_modules/dep",
            "src",
            "src/mod"
        ]
    );
}

#[test]
fn walk_accepts_py_nested_options() {
    let fx = tree();
    let py = json!({"path": "src", "options": {"maxDepth": 1, "includeDirs": false, "exts": null,
        "match": null, "skip": null, "followSymlinks": null}});
    assert_eq!(walk_rel(&fx, py), ["src/lib.rs", "src/main.rs"]);
}

#[test]
fn walk_follows_symlinks_without_looping() {
    let fx = tree();
    std::os::unix::fs::symlink("..", fx.p("src/mod/up")).expect("symlink");
    let real_src = fs::canonicalize(fx.p("src"))
        .expect("canonicalize")
        .to_string_lossy()
        .into_owned();
    let followed = walk_rel(
        &fx,
        json!({"path": ".", "followSymlinks": true, "includeDirs": false}),
    );
    // `link` is walked through as the canonical src; `up` points back into
    // a directory being walked and is not entered again.
    assert!(
        followed.contains(&format!("{real_src}/lib.rs")),
        "{followed:?}"
    );
    assert_eq!(
        followed.iter().filter(|p| p.ends_with("x.rs")).count(),
        2,
        "{followed:?}"
    );
    let uncanon = walk_rel(
        &fx,
        json!({"path": ".", "followSymlinks": true, "canonicalize": false, "includeDirs": false}),
    );
    assert!(uncanon.contains(&"link/lib.rs".to_string()), "{uncanon:?}");
}

#[test]
fn walk_errors() {
    let fx = tree();
    let e = walk(&json!({"path": "missing"}), &fx.cwd()).expect_err("missing");
    assert_class(&e, "NotFound", Some("ENOENT"));
    let e = walk(&json!({}), &fx.cwd()).expect_err("no path");
    assert_invalid(&e, &["path"], "string", "undefined");
    let e =
        walk(&json!({"path": ".", "match": [{"source": "("}]}), &fx.cwd()).expect_err("bad regex");
    assert_class(&e, "TypeError", None);
    let e = walk(&json!({"path": ".", "maxDepth": "2"}), &fx.cwd()).expect_err("bad depth");
    assert_invalid(&e, &["maxDepth"], "number", "string");
}

// ------------------------------------------------------------ expandGlob

fn glob_abs(fx: &Fx, params: Value) -> Vec<String> {
    let prefix = format!(
        "{}/",
        fs::canonicalize(fx.cwd())
            .expect("canonicalize")
            .to_string_lossy()
    );
    let raw_prefix = format!("{}/", fx.cwd().to_string_lossy());
    expand_glob(&params, &fx.cwd())
        .unwrap_or_else(|e| panic!("expandGlob {params}: {e:?}"))
        .iter()
        .map(|e| {
            let p = e["path"].as_str().expect("path");
            p.strip_prefix(&raw_prefix)
                .or_else(|| p.strip_prefix(&prefix))
                .unwrap_or(p)
                .to_string()
        })
        .collect()
}

#[test]
fn expand_glob_globstar_and_braces() {
    let fx = tree();
    assert_eq!(
        glob_abs(&fx, json!({"glob": "**/*.rs"})),
        ["a.rs", "src/lib.rs", "src/main.rs", "src/mod/x.rs"]
    );
    assert_eq!(
        glob_abs(&fx, json!({"glob": "*.{rs,txt}"})),
        ["a.rs", "b.txt"]
    );
    assert_eq!(
        glob_abs(&fx, json!({"glob": "{docs,src}/*.{md,rs}"})),
        ["docs/readme.md", "src/lib.rs", "src/main.rs"]
    );
    assert_eq!(
        glob_abs(&fx, json!({"glob": "src/*"})),
        ["src/lib.rs", "src/main.rs", "src/mod"]
    );
    let entries = expand_glob(&json!({"glob": "a.*"}), &fx.cwd()).expect("glob");
    assert_eq!(
        entries,
        [
            json!({"path": fx.p("a.rs"), "name": "a.rs", "isFile": true, "isDirectory": false, "isSymlink": false})
        ]
    );
}

#[test]
fn expand_glob_options() {
    let fx = tree();
    // Directories only with a trailing slash; no directories with includeDirs false.
    assert_eq!(
        glob_abs(&fx, json!({"glob": "*/"})),
        ["docs", "node_modules", "src"]
    );
    assert_eq!(
        glob_abs(&fx, json!({"glob": "src/*", "includeDirs": false})),
        ["src/lib.rs", "src/main.rs"]
    );
    assert_eq!(
        glob_abs(&fx, json!({"glob": "*.RS", "caseInsensitive": true})),
        ["a.rs"]
    );
    assert!(glob_abs(&fx, json!({"glob": "*.RS"})).is_empty());
    assert_eq!(
        glob_abs(&fx, json!({"glob": "**/*.rs", "exclude": ["src/mod"]})),
        ["a.rs", "src/lib.rs", "src/main.rs"]
    );
    assert_eq!(
        glob_abs(&fx, json!({"glob": "*.rs", "root": fx.p("src")})),
        ["src/lib.rs", "src/main.rs"]
    );
    assert_eq!(
        glob_abs(&fx, json!({"glob": "*.rs", "root": "src"})),
        ["src/lib.rs", "src/main.rs"]
    );
    assert_eq!(
        glob_abs(&fx, json!({"glob": "src/mod/../*.rs"})),
        ["src/lib.rs", "src/main.rs"]
    );
    assert_eq!(
        glob_abs(&fx, json!({"glob": "@(a|b).*"})),
        ["a.rs", "b.txt"]
    );
    assert_eq!(glob_abs(&fx, json!({"glob": "!(a).*"})), ["b.txt"]);
    // Absolute globs ignore cwd.
    let abs = format!("{}/src/*.rs", fx.cwd().to_string_lossy());
    assert_eq!(
        glob_abs(&fx, json!({"glob": abs, "root": "/elsewhere"})),
        ["src/lib.rs", "src/main.rs"]
    );
    // A missing fixed prefix matches nothing rather than failing.
    assert!(glob_abs(&fx, json!({"glob": "nowhere/*.rs"})).is_empty());
    // PY nests options.
    assert_eq!(
        glob_abs(
            &fx,
            json!({"glob": "*.RS", "options": {"caseInsensitive": true, "root": null}})
        ),
        ["a.rs"]
    );
    // `**` enters symlinked dirs only when following them.
    assert_eq!(glob_abs(&fx, json!({"glob": "**/x.rs"})), ["src/mod/x.rs"]);
    let follow = json!({"glob": "**/x.rs", "followSymlinks": true, "canonicalize": false});
    assert_eq!(glob_abs(&fx, follow), ["link/mod/x.rs", "src/mod/x.rs"]);
    // With canonical paths the two routes to x.rs are one entry.
    assert_eq!(
        glob_abs(&fx, json!({"glob": "**/x.rs", "followSymlinks": true})),
        ["src/mod/x.rs"]
    );

    let e = expand_glob(&json!({"glob": 3}), &fx.cwd()).expect_err("bad glob");
    assert_invalid(&e, &["glob"], "string", "number");
}
