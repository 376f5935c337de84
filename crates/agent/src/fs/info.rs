//! `FileInfo` and `DirEntry` objects in the shape Deno's SDKs decode.

use super::time::{iso_or_epoch, Timestamp};
use agent_proto::calls::{DirEntry, FileInfo};
use std::fs::{FileType, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// Deno's `FileInfo` of `md`.
pub(crate) fn file_info(md: &Metadata) -> FileInfo {
    let ft = md.file_type();
    FileInfo {
        is_file: ft.is_file(),
        is_directory: ft.is_dir(),
        is_symlink: ft.is_symlink(),
        size: md.len(),
        mtime: Timestamp::from_parts(md.mtime(), md.mtime_nsec()).to_iso(),
        atime: Timestamp::from_parts(md.atime(), md.atime_nsec()).to_iso(),
        // statx may not know the birth time (older kernels, some file systems).
        birthtime: iso_or_epoch(md.created().ok()),
        ctime: Timestamp::from_parts(md.ctime(), md.ctime_nsec()).to_iso(),
        dev: md.dev(),
        ino: md.ino(),
        mode: md.mode(),
        nlink: md.nlink(),
        uid: md.uid(),
        gid: md.gid(),
        rdev: md.rdev(),
        blksize: md.blksize(),
        blocks: md.blocks(),
        is_block_device: ft.is_block_device(),
        is_char_device: ft.is_char_device(),
        is_fifo: ft.is_fifo(),
        is_socket: ft.is_socket(),
    }
}

/// `readDir`'s entry for `name`, of type `ft`.
pub(crate) fn dir_entry(name: &str, ft: FileType) -> DirEntry {
    DirEntry {
        name: name.to_string(),
        is_file: ft.is_file(),
        is_directory: ft.is_dir(),
        is_symlink: ft.is_symlink(),
    }
}
