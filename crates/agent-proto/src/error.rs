//! The error shape of the Deno Sandbox protocol (`ErrorObject`), used for
//! every failed call so the SDKs can decode it into their own classes.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io;

/// The class of a parameter validation error. The hosted Deno service
/// validates params with zod; the daemon answers an error of this class as
/// a top-level JSON-RPC `-32602` whose `data` is this object, which the
/// Python SDK turns into `RpcValidationError` (`deno_sandbox/rpc.py`).
pub const VALIDATION_ERROR: &str = "ZodError";

/// One zod 4 issue, fields in zod's order. The Python SDK requires
/// `expected` and a `path` of strings (it snake-cases each element).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ZodIssue {
    pub expected: String,
    pub code: String,
    pub path: Vec<String>,
    pub message: String,
}

impl ZodIssue {
    /// An `invalid_type` issue worded as zod 4 words it:
    /// `Invalid input: expected string, received undefined`. `got` is
    /// `None` for a missing value.
    pub fn invalid_type(path: &[&str], expected: &str, got: Option<&Value>) -> Self {
        let received = match got {
            None => "undefined",
            Some(v) => zod_type(v),
        };
        Self {
            expected: expected.to_string(),
            code: "invalid_type".to_string(),
            path: path.iter().map(|p| p.to_string()).collect(),
            message: format!("Invalid input: expected {expected}, received {received}"),
        }
    }
}

/// zod's name for the type of a parsed JSON value (also the name error
/// messages use for it).
pub fn zod_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorObject {
    /// The class the SDK rebuilds: `NotFound`, `TypeError`, `Error`, ...
    pub constructor_name: String,
    pub message: String,
    /// errno name (`ENOENT`), copied to `error.code` by the SDKs.
    #[serde(default)]
    pub code: Option<String>,
}

impl ErrorObject {
    pub fn new(constructor: &str, message: impl Into<String>, code: Option<&str>) -> Self {
        Self {
            constructor_name: constructor.to_string(),
            message: message.into(),
            code: code.map(str::to_string),
        }
    }

    /// Params that failed validation: a [`VALIDATION_ERROR`] whose message
    /// is the JSON of the issues, indented by two spaces as zod's
    /// `ZodError.message` is (`JSON.stringify(issues, null, 2)`).
    pub fn invalid_params(issues: &[ZodIssue]) -> Self {
        let message = serde_json::to_string_pretty(issues).expect("issues serialize");
        Self::new(VALIDATION_ERROR, message, None)
    }

    /// A missing (`got: None`) or wrongly typed param at `path`.
    pub fn invalid_type(path: &[&str], expected: &str, got: Option<&Value>) -> Self {
        Self::invalid_params(&[ZodIssue::invalid_type(path, expected, got)])
    }

    /// Whether this is a parameter validation error (see [`VALIDATION_ERROR`]).
    pub fn is_invalid_params(&self) -> bool {
        self.constructor_name == VALIDATION_ERROR
    }

    /// Invalid arguments from the caller.
    pub fn type_error(message: impl Into<String>) -> Self {
        Self::new("TypeError", message, None)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("NotFound", message, Some("ENOENT"))
    }

    /// An unknown or already-reaped pid. Both SDKs treat exactly this shape
    /// as "process already exited".
    pub fn no_such_process(pid: i64) -> Self {
        Self::new(
            "TypeError",
            format!("no process with pid {pid}"),
            Some("ENOENT"),
        )
    }

    pub fn bad_resource(message: impl Into<String>) -> Self {
        Self::new("BadResource", message, Some("EBADF"))
    }

    pub fn unknown_method(method: &str) -> Self {
        Self::new(
            "TypeError",
            format!("unknown method {method:?}"),
            Some("ENOSYS"),
        )
    }

    /// Maps an OS error to the Deno error class and errno name, with a
    /// message in Rust/Deno style (`No such file or directory (os error 2)`).
    pub fn from_io(err: &io::Error) -> Self {
        Self::from_io_with_context(err, None)
    }

    /// Like [`ErrorObject::from_io`], naming the operation and path:
    /// `No such file or directory (os error 2): readFile '/x'`.
    pub fn from_io_with_context(err: &io::Error, context: Option<&str>) -> Self {
        let errno = err.raw_os_error();
        let (class, code) = match errno {
            Some(n) => (deno_class_for_errno(n), errno_name(n)),
            None => match err.kind() {
                io::ErrorKind::NotFound => ("NotFound", Some("ENOENT")),
                io::ErrorKind::AlreadyExists => ("AlreadyExists", Some("EEXIST")),
                io::ErrorKind::PermissionDenied => ("PermissionDenied", Some("EACCES")),
                io::ErrorKind::InvalidInput => ("TypeError", Some("EINVAL")),
                io::ErrorKind::InvalidData => ("InvalidData", None),
                io::ErrorKind::UnexpectedEof => ("UnexpectedEof", None),
                _ => ("Error", None),
            },
        };
        let message = match context {
            Some(ctx) => format!("{err}: {ctx}"),
            None => err.to_string(),
        };
        Self::new(class, message, code)
    }
}

fn deno_class_for_errno(errno: i32) -> &'static str {
    match errno {
        libc::ENOENT => "NotFound",
        libc::EEXIST => "AlreadyExists",
        libc::EACCES | libc::EPERM | libc::EROFS => "PermissionDenied",
        libc::ENOTDIR => "NotADirectory",
        libc::EISDIR => "IsADirectory",
        libc::ELOOP => "FilesystemLoop",
        libc::EBUSY | libc::ETXTBSY => "Busy",
        libc::EAGAIN => "WouldBlock",
        libc::EINTR => "Interrupted",
        libc::EBADF => "BadResource",
        libc::EPIPE => "BrokenPipe",
        libc::EINVAL | libc::ENAMETOOLONG => "TypeError",
        libc::ECONNREFUSED => "ConnectionRefused",
        libc::ECONNRESET => "ConnectionReset",
        libc::ETIMEDOUT => "TimedOut",
        libc::ENOTSUP => "NotSupported",
        _ => "Error",
    }
}

/// The symbolic errno name, for the `code` field.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::EPIPE => "EPIPE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENOTSUP => "ENOTSUP",
        libc::EDQUOT => "EDQUOT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ETIMEDOUT => "ETIMEDOUT",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text the hosted service's zod 4 gives, field order included.
    #[test]
    fn invalid_type_is_a_zod_4_issue() {
        let e = ErrorObject::invalid_type(&["path"], "string", None);
        assert!(e.is_invalid_params());
        assert_eq!(
            e.message,
            r#"[
  {
    "expected": "string",
    "code": "invalid_type",
    "path": [
      "path"
    ],
    "message": "Invalid input: expected string, received undefined"
  }
]"#
        );
        let e = ErrorObject::invalid_type(&["a", "0"], "number", Some(&Value::Null));
        assert!(e.message.contains("received null"), "{}", e.message);
        assert!(!ErrorObject::type_error("x").is_invalid_params());
    }

    #[test]
    fn io_errors_map_to_deno_classes() {
        let e = ErrorObject::from_io(&io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(e.constructor_name, "NotFound");
        assert_eq!(e.code.as_deref(), Some("ENOENT"));
        assert!(e.message.contains("os error 2"), "{}", e.message);
        let e = ErrorObject::from_io_with_context(
            &io::Error::from_raw_os_error(libc::EEXIST),
            Some("mkdir '/a'"),
        );
        assert_eq!(e.constructor_name, "AlreadyExists");
        assert!(e.message.ends_with("mkdir '/a'"));
    }

    #[test]
    fn missing_file_never_looks_like_exited_process() {
        let e = ErrorObject::from_io(&io::Error::from_raw_os_error(libc::ENOENT));
        assert_ne!(e.constructor_name, "TypeError");
    }
}
