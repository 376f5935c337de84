//! Open file handles (§4.4): `open`/`create` hand out numeric ids, the
//! `file*` methods act on them, `fileClose` drops them.

use super::info::file_info;
use super::ops::target;
use super::params::{as_integer, kind, Params};
use super::time::Timestamp;
use agent_proto::calls::time_param;
use agent_proto::{ErrorObject, Method};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fs::{File, FileTimes, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::SystemTime;

/// Largest `fileRead` answer: it travels base64-encoded inside one JSON
/// reply, and the SDK reads in 64 KiB pieces anyway.
pub(crate) const MAX_READ: usize = 700 * 1024;

/// Open handles are file descriptors of PID 1; a leaky client must not be
/// able to exhaust the agent's descriptor table.
const MAX_HANDLES: usize = 4096;

struct OpenFile {
    file: File,
    /// The flock this handle holds: `Some(true)` exclusive, `Some(false)` shared.
    lock: Option<bool>,
}

pub(crate) struct Handles {
    files: HashMap<u32, OpenFile>,
    next_id: u32,
}

type Handler = fn(&mut Handles, &Params, &Path) -> Result<Value, ErrorObject>;

/// The handler of a handle method, or `None` if `method` is not one.
pub(crate) fn lookup(method: Method) -> Option<Handler> {
    Some(match method {
        Method::Open => Handles::open,
        Method::Create => Handles::create,
        Method::FileRead => Handles::read,
        Method::FileWrite => Handles::write,
        Method::FileSeek => Handles::seek,
        Method::FileStat => Handles::stat,
        Method::FileTruncate => Handles::truncate,
        Method::FileUtime => Handles::utime,
        Method::FileLock => Handles::lock,
        Method::FileUnlock => Handles::unlock,
        Method::FileSync => Handles::sync,
        Method::FileSyncData => Handles::sync_data,
        Method::FileClose => Handles::close,
        _ => return None,
    })
}

impl Handles {
    pub(crate) fn new() -> Self {
        // Ids start at 1: 0 is falsy in both SDK languages.
        Self {
            files: HashMap::new(),
            next_id: 1,
        }
    }

    fn insert(&mut self, file: File) -> Result<u32, ErrorObject> {
        if self.files.len() >= MAX_HANDLES {
            let msg =
                format!("too many open file handles ({MAX_HANDLES}); close some with fileClose");
            return Err(ErrorObject::new("Error", msg, Some("EMFILE")));
        }
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if let std::collections::hash_map::Entry::Vacant(slot) = self.files.entry(id) {
                slot.insert(OpenFile { file, lock: None });
                return Ok(id);
            }
        }
    }

    /// The handle named by `fileHandleId`, or `BadResource`.
    fn handle(&self, p: &Params) -> Result<(u32, &OpenFile), ErrorObject> {
        let id = p.u32("fileHandleId")?;
        match self.files.get(&id) {
            Some(open) => Ok((id, open)),
            None => Err(unknown_handle(p, id)),
        }
    }

    fn file(&self, p: &Params) -> Result<(u32, &File), ErrorObject> {
        self.handle(p).map(|(id, open)| (id, &open.file))
    }

    /// Deno.open. No options means read-only; the option checks Deno does
    /// client-side are repeated here because the SDKs skip them.
    fn open(&mut self, p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
        let t = target(p, "path", cwd)?;
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
        let mut opts = OpenOptions::new();
        opts.read(read)
            .write(write)
            .append(append)
            .truncate(truncate)
            .create(create)
            .create_new(create_new);
        if let Some(mode) = p.opt_u32("mode")? {
            opts.mode(mode);
        }
        let file = opts.open(&t.path).map_err(|e| t.err(p.method(), &e))?;
        Ok(json!({ "fileHandleId": self.insert(file)? }))
    }

    /// Deno.create: read-write, created or truncated.
    fn create(&mut self, p: &Params, cwd: &Path) -> Result<Value, ErrorObject> {
        let t = target(p, "path", cwd)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&t.path)
            .map_err(|e| t.err(p.method(), &e))?;
        Ok(json!({ "fileHandleId": self.insert(file)? }))
    }

    /// One read of at most `length` bytes (capped at [`MAX_READ`]);
    /// `{data: null}` at end of file.
    fn read(&mut self, p: &Params, _cwd: &Path) -> Result<Value, ErrorObject> {
        let (id, mut file) = self.file(p)?;
        let want = usize::try_from(p.u64("length")?)
            .unwrap_or(MAX_READ)
            .min(MAX_READ);
        if want == 0 {
            return Ok(json!({ "data": "" }));
        }
        let mut buf = vec![0u8; want];
        let n = retry_eintr(|| file.read(&mut buf)).map_err(|e| handle_error(p, id, &e))?;
        if n == 0 {
            return Ok(json!({ "data": null }));
        }
        Ok(json!({ "data": base64::engine::general_purpose::STANDARD.encode(&buf[..n]) }))
    }

    fn write(&mut self, p: &Params, _cwd: &Path) -> Result<Value, ErrorObject> {
        let (id, mut file) = self.file(p)?;
        let data = super::base64_decode(p.str("data")?)
            .map_err(|e| p.error(format!("param \"data\" is not valid base64: {e}")))?;
        file.write_all(&data).map_err(|e| handle_error(p, id, &e))?;
        Ok(json!({ "bytesWritten": data.len() }))
    }

    fn seek(&mut self, p: &Params, _cwd: &Path) -> Result<Value, ErrorObject> {
        let (id, mut file) = self.file(p)?;
        let offset = seek_offset(p)?;
        let from = match p.u64("whence")? {
            0 => SeekFrom::Start(u64::try_from(offset).map_err(|_| {
                p.error(format!(
                    "cannot seek to negative position {offset} from the start"
                ))
            })?),
            1 => SeekFrom::Current(offset),
            2 => SeekFrom::End(offset),
            w => {
                return Err(p.error(format!(
                    "param \"whence\" must be 0 (start), 1 (current) or 2 (end), got {w}"
                )))
            }
        };
        let position = file.seek(from).map_err(|e| handle_error(p, id, &e))?;
        Ok(json!({ "position": position }))
    }

    fn stat(&mut self, p: &Params, _cwd: &Path) -> Result<Value, ErrorObject> {
        let (id, file) = self.file(p)?;
        let md = file.metadata().map_err(|e| handle_error(p, id, &e))?;
        Ok(file_info(&md))
    }

    /// JS sends `len`, PY sends `size`; absent means 0, as in Deno.
    fn truncate(&mut self, p: &Params, _cwd: &Path) -> Result<Value, ErrorObject> {
        let (id, file) = self.file(p)?;
        let len = match p.opt_u64("len")? {
            Some(len) => len,
            None => p.opt_u64("size")?.unwrap_or(0),
        };
        file.set_len(len).map_err(|e| handle_error(p, id, &e))?;
        Ok(Value::Null)
    }

    fn utime(&mut self, p: &Params, _cwd: &Path) -> Result<Value, ErrorObject> {
        let (id, file) = self.file(p)?;
        let atime = system_time(p, "atime", time_param(p, "atime")?)?;
        let mtime = system_time(p, "mtime", time_param(p, "mtime")?)?;
        let times = FileTimes::new().set_accessed(atime).set_modified(mtime);
        file.set_times(times).map_err(|e| handle_error(p, id, &e))?;
        Ok(Value::Null)
    }

    /// flock: shared unless `exclusive`. It blocks while another process
    /// holds a conflicting lock, but fails with `WouldBlock` when the
    /// conflict is another handle of this agent: calls are handled one at a
    /// time, so waiting for our own handle would hang the agent for good.
    fn lock(&mut self, p: &Params, _cwd: &Path) -> Result<Value, ErrorObject> {
        if let Some(done) = self.try_lock(p)? {
            return Ok(done);
        }
        // Another process holds it: wait for it here (the agent's
        // dispatcher uses `try_lock` instead, to wait without this state).
        let exclusive = p.bool_or("exclusive", false)?;
        let (id, open) = self.handle(p)?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        flock(&open.file, op).map_err(|e| handle_error(p, id, &e))?;
        self.set_lock(id, Some(exclusive));
        Ok(Value::Null)
    }

    /// One non-blocking attempt at `fileLock`: `Ok(None)` when another
    /// process holds a conflicting lock, so the caller can wait without
    /// holding up every other fs call.
    pub(crate) fn try_lock(&mut self, p: &Params) -> Result<Option<Value>, ErrorObject> {
        let exclusive = p.bool_or("exclusive", false)?;
        let (id, open) = self.handle(p)?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        match flock(&open.file, op | libc::LOCK_NB) {
            Ok(()) => {
                self.set_lock(id, Some(exclusive));
                Ok(Some(Value::Null))
            }
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                if let Some(other) = self.conflicting_handle(id, exclusive) {
                    let msg = format!(
                        "{}: file handle {other} of this sandbox holds a conflicting lock on the same file; unlock or close it first",
                        p.method()
                    );
                    return Err(ErrorObject::new("WouldBlock", msg, Some("EWOULDBLOCK")));
                }
                Ok(None)
            }
            Err(e) => Err(handle_error(p, id, &e)),
        }
    }

    fn unlock(&mut self, p: &Params, _cwd: &Path) -> Result<Value, ErrorObject> {
        let (id, file) = self.file(p)?;
        flock(file, libc::LOCK_UN).map_err(|e| handle_error(p, id, &e))?;
        self.set_lock(id, None);
        Ok(Value::Null)
    }

    fn set_lock(&mut self, id: u32, lock: Option<bool>) {
        if let Some(open) = self.files.get_mut(&id) {
            open.lock = lock;
        }
    }

    /// Another handle on the same file whose flock conflicts with the one
    /// `id` wants.
    fn conflicting_handle(&self, id: u32, exclusive: bool) -> Option<u32> {
        let key = file_key(&self.files.get(&id)?.file)?;
        self.files.iter().find_map(|(&other, open)| {
            let conflicts = match open.lock {
                Some(held_exclusive) => held_exclusive || exclusive,
                None => false,
            };
            (other != id && conflicts && file_key(&open.file) == Some(key)).then_some(other)
        })
    }

    fn sync(&mut self, p: &Params, _cwd: &Path) -> Result<Value, ErrorObject> {
        let (id, file) = self.file(p)?;
        file.sync_all().map_err(|e| handle_error(p, id, &e))?;
        Ok(Value::Null)
    }

    fn sync_data(&mut self, p: &Params, _cwd: &Path) -> Result<Value, ErrorObject> {
        let (id, file) = self.file(p)?;
        file.sync_data().map_err(|e| handle_error(p, id, &e))?;
        Ok(Value::Null)
    }

    /// Closing releases any flock with the descriptor.
    fn close(&mut self, p: &Params, _cwd: &Path) -> Result<Value, ErrorObject> {
        let id = p.u32("fileHandleId")?;
        match self.files.remove(&id) {
            Some(_) => Ok(Value::Null),
            None => Err(unknown_handle(p, id)),
        }
    }
}

fn unknown_handle(p: &Params, id: u32) -> ErrorObject {
    ErrorObject::bad_resource(format!(
        "Bad resource ID: {}: no open file handle {id}",
        p.method()
    ))
}

fn handle_error(p: &Params, id: u32, err: &io::Error) -> ErrorObject {
    ErrorObject::from_io_with_context(err, Some(&format!("{} (file handle {id})", p.method())))
}

/// `offset`: a number, or a decimal string (JS sends BigInt that way).
fn seek_offset(p: &Params) -> Result<i64, ErrorObject> {
    let v = p
        .get("offset")
        .ok_or_else(|| p.missing("offset", "number"))?;
    let parsed = match v {
        Value::String(s) => s.trim().parse::<i64>().ok(),
        other => as_integer(other),
    };
    parsed.ok_or_else(|| {
        p.error(format!(
            "param \"offset\" must be an integer or a decimal string, got {} {v}",
            kind(v)
        ))
    })
}

fn system_time(p: &Params, key: &str, t: Timestamp) -> Result<SystemTime, ErrorObject> {
    t.to_system_time()
        .ok_or_else(|| p.error(format!("param \"{key}\" is out of range")))
}

/// Identifies the file behind a descriptor.
fn file_key(file: &File) -> Option<(u64, u64)> {
    file.metadata().ok().map(|md| (md.dev(), md.ino()))
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    retry_eintr(|| {
        // SAFETY: the descriptor belongs to `file`, which outlives the call;
        // flock only changes the lock state of that open file description.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    })
}

fn retry_eintr<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
