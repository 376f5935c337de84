//! Loop devices through the kernel's own interface (include/uapi/linux/loop.h).
//!
//! Why not a crate: the loop-device crates (`loopdev`, `loopdev-3`) generate
//! their bindings with bindgen at build time, so every build host would need
//! libclang. What we use is a few ioctl numbers and two `#[repr(C)]` structs,
//! which are stable kernel ABI, so they are written out here.
//!
//! Every device is set up with `LO_FLAGS_AUTOCLEAR`: the kernel unbinds it
//! when the last opener goes away, which after a mount is the filesystem
//! (possibly living on in a sandbox's mount namespace after we unmount ours).
//! So no code path has to remember to free a device, and a killed daemon
//! leaks none: its open fd is closed by the kernel, and mounted ones clear on
//! unmount.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_SET_DIRECT_IO: libc::c_ulong = 0x4C08;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;

const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

impl LoopInfo64 {
    fn new(backing: &Path, flags: u32) -> Self {
        let mut name = [0u8; LO_NAME_SIZE];
        // Informational only (sysfs shows the real path); truncated, and
        // the last byte stays NUL.
        let bytes = backing.as_os_str().as_bytes();
        let n = bytes.len().min(LO_NAME_SIZE - 1);
        name[..n].copy_from_slice(&bytes[..n]);
        LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name: name,
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        }
    }
}

/// A bound loop device, open. Keep it until the filesystem on it is
/// mounted: dropping it before that lets autoclear unbind the device.
pub(crate) struct LoopDevice {
    _file: File,
    pub(crate) path: PathBuf,
}

/// How many times to go back to `LOOP_CTL_GET_FREE` when another process
/// (another daemon thread, `losetup`, udisks) took the free device between our
/// asking and our binding it.
const RACE_RETRIES: usize = 100;

/// Binds a free loop device to `backing`, with autoclear and direct I/O.
///
/// Direct I/O keeps the image's blocks out of the page cache a second time
/// (the filesystem on the loop device already caches them); where the
/// backing filesystem cannot do it the kernel either falls back to buffered
/// I/O by itself or refuses, and then we retry without it.
pub(crate) fn attach(backing: &File, backing_path: &Path) -> io::Result<LoopDevice> {
    attach_with(backing, backing_path, false)
}

/// [`attach`], read-only when `read_only` (the backing file may then be
/// open read-only).
pub(crate) fn attach_with(
    backing: &File,
    backing_path: &Path,
    read_only: bool,
) -> io::Result<LoopDevice> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")?;
    let mut last_err = None;
    for _ in 0..RACE_RETRIES {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device
        // number or -1; the fd is a valid open /dev/loop-control.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = match OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => f,
            // The node may not exist yet where /dev is not devtmpfs and
            // udev has not caught up; or the device was just removed.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                last_err = Some(e);
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) => return Err(e),
        };
        match configure(&dev, backing, backing_path, read_only) {
            Ok(()) => {
                return Ok(LoopDevice { _file: dev, path });
            }
            // Someone else bound this device after GET_FREE said it was free.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                last_err = Some(e);
                std::thread::yield_now();
                continue;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no free loop device")))
}

fn configure(dev: &File, backing: &File, backing_path: &Path, read_only: bool) -> io::Result<()> {
    let mut err = None;
    let ro = if read_only { LO_FLAGS_READ_ONLY } else { 0 };
    for flags in [
        LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO | ro,
        LO_FLAGS_AUTOCLEAR | ro,
    ] {
        let config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64::new(backing_path, flags),
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which
        // `LoopConfig` lays out exactly (repr(C), same field types); the
        // pointer is valid for the duration of the call and both fds are
        // open.
        let rc = unsafe {
            libc::ioctl(
                dev.as_raw_fd(),
                LOOP_CONFIGURE,
                &config as *const LoopConfig,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
        // EINVAL: either this kernel refuses direct I/O on this backing file
        // (try again without it) or it predates LOOP_CONFIGURE (5.8).
        err = Some(e);
    }
    match err {
        Some(e) if e.raw_os_error() == Some(libc::EINVAL) => configure_legacy(dev, backing, ro),
        Some(e) => Err(e),
        None => unreachable!("the loop returns on success"),
    }
}

/// Before LOOP_CONFIGURE (Linux < 5.8): bind, then set the flags. Not atomic:
/// a crash in between leaves a bound device without autoclear, which is why
/// LOOP_CONFIGURE is preferred.
fn configure_legacy(dev: &File, backing: &File, ro: u32) -> io::Result<()> {
    // SAFETY: LOOP_SET_FD takes the backing file's fd as an integer argument;
    // both fds are open.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let info = LoopInfo64::new(Path::new(""), LO_FLAGS_AUTOCLEAR | ro);
    // SAFETY: LOOP_SET_STATUS64 reads a `struct loop_info64`, which
    // `LoopInfo64` lays out exactly; the pointer is valid during the call.
    let rc = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_SET_STATUS64,
            &info as *const LoopInfo64,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        // SAFETY: LOOP_CLR_FD takes no argument; undoes our LOOP_SET_FD.
        unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD, 0) };
        return Err(e);
    }
    // Best effort: buffered I/O is correct, only costlier in memory.
    // SAFETY: LOOP_SET_DIRECT_IO takes an integer argument (1 = on).
    unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_DIRECT_IO, 1 as libc::c_ulong) };
    Ok(())
}

/// Every bound loop device and the path of its backing file, as the kernel
/// reports it in /sys/block/loopN/loop/backing_file (relative to our root;
/// with " (deleted)" appended once the file is unlinked).
pub(crate) fn backing_files() -> io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/sys/block")? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        // Absent when the device is not bound; a device can also be unbound
        // or removed between read_dir and the read (ENODEV, ENXIO while the
        // kernel tears it down): all mean "not backed by anything".
        match std::fs::read(entry.path().join("loop/backing_file")) {
            Ok(bytes) => out.push((name, sysfs_path(bytes))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODEV | libc::ENXIO)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Whether any loop device is backed by `image` (an absolute, canonical path).
pub(crate) fn in_use(image: &Path) -> io::Result<bool> {
    Ok(backing_files()?.iter().any(|(_, p)| p == image))
}

/// The backing file of the block device `major:minor`, if it is a bound loop
/// device.
pub(crate) fn backing_file_of(major: u32, minor: u32) -> Option<PathBuf> {
    std::fs::read(format!("/sys/dev/block/{major}:{minor}/loop/backing_file"))
        .ok()
        .map(sysfs_path)
}

/// A path as sysfs prints it: the bytes, then a newline.
fn sysfs_path(mut bytes: Vec<u8>) -> PathBuf {
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}
