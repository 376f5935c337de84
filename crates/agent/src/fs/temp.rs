//! makeTempDir / makeTempFile: a fresh name `{prefix}{random}{suffix}` in
//! `dir` (default: `$TMPDIR` or /tmp), created exclusively so two callers
//! never get the same path.

use super::ops::io_error;
use super::paths::{display, resolve};
use agent_proto::calls::MakeTempParams;
use agent_proto::ErrorObject;
use serde_json::Value;
use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Names are 48 random bits; a clash is rare, a second clash rarer still.
const ATTEMPTS: usize = 16;

pub(crate) fn make_temp_dir(m: &str, p: &MakeTempParams, cwd: &Path) -> Result<Value, ErrorObject> {
    // 0o700 like Deno: a temp dir is private to its creator.
    make_temp(m, p, cwd, |path| DirBuilder::new().mode(0o700).create(path))
}

pub(crate) fn make_temp_file(
    m: &str,
    p: &MakeTempParams,
    cwd: &Path,
) -> Result<Value, ErrorObject> {
    make_temp(m, p, cwd, |path| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map(drop)
    })
}

/// Tries fresh names until `create` does not report `AlreadyExists`.
/// Returns the path in the caller's form (relative if `dir` was relative).
fn make_temp(
    m: &str,
    p: &MakeTempParams,
    cwd: &Path,
    create: impl Fn(&Path) -> io::Result<()>,
) -> Result<Value, ErrorObject> {
    let dir = match &p.dir {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir(),
    };
    let prefix = p.prefix.as_deref().unwrap_or("");
    let suffix = p.suffix.as_deref().unwrap_or("");
    let mut last_err = io::Error::from_raw_os_error(libc::EEXIST);
    for _ in 0..ATTEMPTS {
        let given = dir.join(format!("{prefix}{}{suffix}", random_hex()));
        let given = display(&given);
        match create(&resolve(cwd, &given)) {
            Ok(()) => return Ok(Value::String(given)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = e,
            Err(e) => return Err(io_error(m, &given, &e)),
        }
    }
    Err(io_error(m, &display(&dir), &last_err))
}

/// 12 hex digits from the kernel's CSPRNG. getrandom(2) needs no /dev in
/// the sandbox; if it fails, time and a counter still give distinct names
/// (exclusive creation keeps them safe either way).
pub(crate) fn random_hex() -> String {
    let mut buf = [0u8; 6];
    // SAFETY: the pointer and length describe `buf`, which is writable and
    // lives across the call; getrandom writes at most `buf.len()` bytes.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if usize::try_from(n).ok() != Some(buf.len()) {
        buf = fallback_bytes();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn fallback_bytes() -> [u8; 6] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed = nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(40);
    let bytes = mixed.to_le_bytes();
    [bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5]]
}
