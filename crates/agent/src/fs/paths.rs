//! Lexical path handling with the semantics of Deno's std/path (posix).
//!
//! Paths are reported back the way the caller wrote them (`walk("src")`
//! yields `src/a.rs`, as in Deno), while file access resolves relative
//! paths against the sandbox's working directory, which is the agent's
//! stand-in for the caller's `Deno.cwd()`.

use std::path::{Path, PathBuf};

/// The path to hand to the OS: `path` itself if absolute, else under `cwd`.
pub(crate) fn resolve(cwd: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

/// std/path `resolve(path)` with `cwd` as the current directory: an
/// absolute, normalized path without a trailing slash.
pub(crate) fn resolve_lexical(cwd: &Path, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", cwd.to_string_lossy())
    };
    let normalized = normalize(&joined);
    match normalized.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() => stripped.to_string(),
        _ => normalized,
    }
}

/// std/path `normalize`: collapses `//`, `.` and `..` lexically; keeps a
/// trailing slash; keeps leading `..` of relative paths; `""` becomes `.`.
pub(crate) fn normalize(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let absolute = path.starts_with('/');
    let trailing = path.ends_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            name => parts.push(name),
        }
    }
    let mut out = parts.join("/");
    if out.is_empty() && !absolute {
        out.push('.');
    }
    if !out.is_empty() && trailing {
        out.push('/');
    }
    if absolute {
        out.insert(0, '/');
    }
    out
}

/// std/path `join(a, b)`: empty parts are dropped, the result normalized.
pub(crate) fn join(a: &str, b: &str) -> String {
    let joined = match (a.is_empty(), b.is_empty()) {
        (true, true) => return ".".to_string(),
        (true, false) => b.to_string(),
        (false, true) => a.to_string(),
        (false, false) => format!("{a}/{b}"),
    };
    normalize(&joined)
}

/// std/path `basename`: the last component, ignoring trailing slashes.
pub(crate) fn basename(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(i) => trimmed[i + 1..].to_string(),
        None => trimmed.to_string(),
    }
}

/// A path as a JSON string; names that are not UTF-8 are shown lossily
/// because the wire format has no other way to carry them.
pub(crate) fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_matches_std_path() {
        assert_eq!(normalize(""), ".");
        assert_eq!(normalize("./"), "./");
        assert_eq!(normalize("a//b/./c/.."), "a/b");
        assert_eq!(normalize("a/b/"), "a/b/");
        assert_eq!(normalize("../../x"), "../../x");
        assert_eq!(normalize("/../x"), "/x");
        assert_eq!(normalize("/"), "/");
    }

    #[test]
    fn join_resolve_basename() {
        assert_eq!(join(".", "a"), "a");
        assert_eq!(join("/a/", "b"), "/a/b");
        assert_eq!(join("/", ""), "/");
        assert_eq!(resolve_lexical(Path::new("/w"), "x/../y/"), "/w/y");
        assert_eq!(resolve_lexical(Path::new("/w"), "/"), "/");
        assert_eq!(basename("/a/b/"), "b");
        assert_eq!(basename("/"), "");
        assert_eq!(resolve(Path::new("/w"), "/abs"), PathBuf::from("/abs"));
        assert_eq!(resolve(Path::new("/w"), "rel"), PathBuf::from("/w/rel"));
    }
}
