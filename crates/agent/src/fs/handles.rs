//! Open file handles (§4.4): `open`/`create` hand out numeric ids, the
//! `file*` methods act on them, `fileClose` drops them.

use super::info::file_info;
use super::ops::Target;
use agent_proto::calls::{
    to_reply, FileHandleParams, FileHandleResult, FileLockParams, FileReadParams, FileReadResult,
    FileSeekParams, FileSeekResult, FileTruncateParams, FileUtimeParams, FileWriteParams,
    FileWriteResult, FromParams, OpenParams, PathParams,
};
use agent_proto::{ErrorObject, Method};
use base64::Engine;
use serde_json::Value;
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

/// Runs handle `method` with its params decoded into the method's type,
/// or `None` if `method` is not one.
pub(crate) fn call(
    handles: &mut Handles,
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
    let h = handles;
    Some(match method {
        Method::Open => run(method, params, |p| h.open(m, &p, cwd)),
        Method::Create => run(method, params, |p| h.create(m, &p, cwd)),
        Method::FileRead => run(method, params, |p| h.read(m, &p)),
        Method::FileWrite => run(method, params, |p| h.write(m, &p)),
        Method::FileSeek => run(method, params, |p| h.seek(m, &p)),
        Method::FileStat => run(method, params, |p| h.stat(m, &p)),
        Method::FileTruncate => run(method, params, |p| h.truncate(m, &p)),
        Method::FileUtime => run(method, params, |p| h.utime(m, &p)),
        Method::FileLock => run(method, params, |p| h.lock(m, &p)),
        Method::FileUnlock => run(method, params, |p| h.unlock(m, &p)),
        Method::FileSync => run(method, params, |p| h.sync(m, &p)),
        Method::FileSyncData => run(method, params, |p| h.sync_data(m, &p)),
        Method::FileClose => run(method, params, |p| h.close(m, &p)),
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
    fn handle(&self, m: &str, id: u32) -> Result<(u32, &OpenFile), ErrorObject> {
        match self.files.get(&id) {
            Some(open) => Ok((id, open)),
            None => Err(unknown_handle(m, id)),
        }
    }

    fn file(&self, m: &str, id: u32) -> Result<(u32, &File), ErrorObject> {
        self.handle(m, id).map(|(id, open)| (id, &open.file))
    }

    /// Deno.open, with the options its params allow.
    fn open(&mut self, m: &str, p: &OpenParams, cwd: &Path) -> Result<Value, ErrorObject> {
        let t = Target::new(&p.path, cwd);
        let mut opts = OpenOptions::new();
        opts.read(p.read)
            .write(p.write)
            .append(p.append)
            .truncate(p.truncate)
            .create(p.create)
            .create_new(p.create_new);
        if let Some(mode) = p.mode {
            opts.mode(mode);
        }
        let file = opts.open(&t.path).map_err(|e| t.err(m, &e))?;
        self.opened(file)
    }

    /// Deno.create: read-write, created or truncated.
    fn create(&mut self, m: &str, p: &PathParams, cwd: &Path) -> Result<Value, ErrorObject> {
        let t = Target::new(&p.path, cwd);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&t.path)
            .map_err(|e| t.err(m, &e))?;
        self.opened(file)
    }

    fn opened(&mut self, file: File) -> Result<Value, ErrorObject> {
        Ok(to_reply(&FileHandleResult {
            file_handle_id: self.insert(file)?,
        }))
    }

    /// One read of at most `length` bytes (capped at [`MAX_READ`]);
    /// `{data: null}` at end of file.
    fn read(&mut self, m: &str, p: &FileReadParams) -> Result<Value, ErrorObject> {
        let (id, mut file) = self.file(m, p.file_handle_id)?;
        let want = usize::try_from(p.length).unwrap_or(MAX_READ).min(MAX_READ);
        let data = if want == 0 {
            Some(String::new())
        } else {
            let mut buf = vec![0u8; want];
            let n = retry_eintr(|| file.read(&mut buf)).map_err(|e| handle_error(m, id, &e))?;
            (n > 0).then(|| base64::engine::general_purpose::STANDARD.encode(&buf[..n]))
        };
        Ok(to_reply(&FileReadResult { data }))
    }

    fn write(&mut self, m: &str, p: &FileWriteParams) -> Result<Value, ErrorObject> {
        let (id, mut file) = self.file(m, p.file_handle_id)?;
        let data = super::base64_decode(&p.data).map_err(|e| {
            ErrorObject::type_error(format!("{m}: param \"data\" is not valid base64: {e}"))
        })?;
        file.write_all(&data).map_err(|e| handle_error(m, id, &e))?;
        Ok(to_reply(&FileWriteResult {
            bytes_written: data.len() as u64,
        }))
    }

    fn seek(&mut self, m: &str, p: &FileSeekParams) -> Result<Value, ErrorObject> {
        let (id, mut file) = self.file(m, p.file_handle_id)?;
        let offset = p.offset;
        let error = |message: String| ErrorObject::type_error(format!("{m}: {message}"));
        let from = match p.whence {
            0 => SeekFrom::Start(u64::try_from(offset).map_err(|_| {
                error(format!(
                    "cannot seek to negative position {offset} from the start"
                ))
            })?),
            1 => SeekFrom::Current(offset),
            2 => SeekFrom::End(offset),
            w => {
                return Err(error(format!(
                    "param \"whence\" must be 0 (start), 1 (current) or 2 (end), got {w}"
                )))
            }
        };
        let position = file.seek(from).map_err(|e| handle_error(m, id, &e))?;
        Ok(to_reply(&FileSeekResult { position }))
    }

    fn stat(&mut self, m: &str, p: &FileHandleParams) -> Result<Value, ErrorObject> {
        let (id, file) = self.file(m, p.file_handle_id)?;
        let md = file.metadata().map_err(|e| handle_error(m, id, &e))?;
        Ok(to_reply(&file_info(&md)))
    }

    fn truncate(&mut self, m: &str, p: &FileTruncateParams) -> Result<Value, ErrorObject> {
        let (id, file) = self.file(m, p.file_handle_id)?;
        file.set_len(p.len.unwrap_or(0))
            .map_err(|e| handle_error(m, id, &e))?;
        Ok(Value::Null)
    }

    fn utime(&mut self, m: &str, p: &FileUtimeParams) -> Result<Value, ErrorObject> {
        let (id, file) = self.file(m, p.file_handle_id)?;
        let atime = system_time(m, "atime", p.atime)?;
        let mtime = system_time(m, "mtime", p.mtime)?;
        let times = FileTimes::new().set_accessed(atime).set_modified(mtime);
        file.set_times(times).map_err(|e| handle_error(m, id, &e))?;
        Ok(Value::Null)
    }

    /// flock: shared unless `exclusive`. It blocks while another process
    /// holds a conflicting lock, but fails with `WouldBlock` when the
    /// conflict is another handle of this agent: calls are handled one at a
    /// time, so waiting for our own handle would hang the agent for good.
    fn lock(&mut self, m: &str, p: &FileLockParams) -> Result<Value, ErrorObject> {
        if let Some(done) = self.try_lock(m, p)? {
            return Ok(done);
        }
        // Another process holds it: wait for it here (the agent's
        // dispatcher uses `try_lock` instead, to wait without this state).
        let (id, open) = self.handle(m, p.file_handle_id)?;
        let op = if p.exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        flock(&open.file, op).map_err(|e| handle_error(m, id, &e))?;
        self.set_lock(id, Some(p.exclusive));
        Ok(Value::Null)
    }

    /// One non-blocking attempt at `fileLock`: `Ok(None)` when another
    /// process holds a conflicting lock, so the caller can wait without
    /// holding up every other fs call.
    pub(crate) fn try_lock(
        &mut self,
        m: &str,
        p: &FileLockParams,
    ) -> Result<Option<Value>, ErrorObject> {
        let exclusive = p.exclusive;
        let (id, open) = self.handle(m, p.file_handle_id)?;
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
                        "{m}: file handle {other} of this sandbox holds a conflicting lock on the same file; unlock or close it first"
                    );
                    return Err(ErrorObject::new("WouldBlock", msg, Some("EWOULDBLOCK")));
                }
                Ok(None)
            }
            Err(e) => Err(handle_error(m, id, &e)),
        }
    }

    fn unlock(&mut self, m: &str, p: &FileHandleParams) -> Result<Value, ErrorObject> {
        let (id, file) = self.file(m, p.file_handle_id)?;
        flock(file, libc::LOCK_UN).map_err(|e| handle_error(m, id, &e))?;
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

    fn sync(&mut self, m: &str, p: &FileHandleParams) -> Result<Value, ErrorObject> {
        let (id, file) = self.file(m, p.file_handle_id)?;
        file.sync_all().map_err(|e| handle_error(m, id, &e))?;
        Ok(Value::Null)
    }

    fn sync_data(&mut self, m: &str, p: &FileHandleParams) -> Result<Value, ErrorObject> {
        let (id, file) = self.file(m, p.file_handle_id)?;
        file.sync_data().map_err(|e| handle_error(m, id, &e))?;
        Ok(Value::Null)
    }

    /// Closing releases any flock with the descriptor.
    fn close(&mut self, m: &str, p: &FileHandleParams) -> Result<Value, ErrorObject> {
        let id = p.file_handle_id;
        match self.files.remove(&id) {
            Some(_) => Ok(Value::Null),
            None => Err(unknown_handle(m, id)),
        }
    }
}

fn unknown_handle(m: &str, id: u32) -> ErrorObject {
    ErrorObject::bad_resource(format!("Bad resource ID: {m}: no open file handle {id}"))
}

fn handle_error(m: &str, id: u32, err: &io::Error) -> ErrorObject {
    ErrorObject::from_io_with_context(err, Some(&format!("{m} (file handle {id})")))
}

fn system_time(m: &str, key: &str, t: super::time::Timestamp) -> Result<SystemTime, ErrorObject> {
    t.to_system_time()
        .ok_or_else(|| ErrorObject::type_error(format!("{m}: param \"{key}\" is out of range")))
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
