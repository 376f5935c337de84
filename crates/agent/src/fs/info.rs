//! `FileInfo` and `DirEntry` objects in the shape Deno's SDKs decode.

use super::time::{iso_or_epoch, Timestamp};
use serde_json::{json, Value};
use std::fs::{FileType, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// Deno's `FileInfo`: JS requires every key, and dates as ISO strings.
/// `mode` is the raw `st_mode` (type bits included), as Deno reports it.
pub(crate) fn file_info(md: &Metadata) -> Value {
    let ft = md.file_type();
    json!({
        "isFile": ft.is_file(),
        "isDirectory": ft.is_dir(),
        "isSymlink": ft.is_symlink(),
        "size": md.len(),
        "mtime": Timestamp::from_parts(md.mtime(), md.mtime_nsec()).to_iso(),
        "atime": Timestamp::from_parts(md.atime(), md.atime_nsec()).to_iso(),
        // statx may not know the birth time (older kernels, some file systems).
        "birthtime": iso_or_epoch(md.created().ok()),
        "ctime": Timestamp::from_parts(md.ctime(), md.ctime_nsec()).to_iso(),
        "dev": md.dev(),
        "ino": md.ino(),
        "mode": md.mode(),
        "nlink": md.nlink(),
        "uid": md.uid(),
        "gid": md.gid(),
        "rdev": md.rdev(),
        "blksize": md.blksize(),
        "blocks": md.blocks(),
        "isBlockDevice": ft.is_block_device(),
        "isCharDevice": ft.is_char_device(),
        "isFifo": ft.is_fifo(),
        "isSocket": ft.is_socket(),
    })
}

/// `readDir`'s entry: the type of the entry itself (symlinks not followed).
pub(crate) fn dir_entry(name: &str, ft: FileType) -> Value {
    json!({
        "name": name,
        "isFile": ft.is_file(),
        "isDirectory": ft.is_dir(),
        "isSymlink": ft.is_symlink(),
    })
}
