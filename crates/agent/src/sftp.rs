//! The agent's SFTP server (version 3, as OpenSSH speaks it), behind
//! `sftpOpen`: the SSH gateway hands an `sftp` subsystem channel to it, so
//! `sftp` and `scp` work on the sandbox's files.
//!
//! Why in the agent: like the agent's other fs methods, every path then
//! resolves inside the sandbox's mount namespace, with the agent's own
//! credentials, and the host never opens a sandbox path itself; and the
//! sandbox's root filesystem needs no `sftp-server` binary.
//!
//! The protocol (packets, framing) is russh-sftp's; this module is its
//! [`Handler`] over `std::fs`, blocking calls run with `spawn_blocking`.
//! Relative paths resolve against the agent's working directory, where
//! processes start, so `sftp` lands there. Client input never panics: every
//! failure is a status reply, its code mapped from errno as OpenSSH's
//! `sftp-server` maps it. A session holds at most [`MAX_HANDLES`] open
//! handles and reads at most [`MAX_READ`] bytes per request, and says so
//! with the `limits@openssh.com` extension.
//!
//! Names and paths travel as UTF-8 (russh-sftp's strings): a file name that
//! is not UTF-8 is listed lossily and cannot be opened by that name.

use chrono::{DateTime, Local};
use nix::fcntl::RenameFlags;
use nix::sys::stat::UtimensatFlags;
use nix::sys::statvfs::FsFlags;
use nix::sys::time::TimeSpec;
use russh_sftp::extensions::{self, LimitsExtension, Statvfs};
use russh_sftp::protocol::{
    Attrs, Data, ExtendedReply, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status,
    StatusCode, Version,
};
use russh_sftp::server::{Config, Handler, StatusReply};
use std::collections::HashMap;
use std::fs::{self, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// Open file and directory handles one session may hold.
pub const MAX_HANDLES: usize = 256;
/// The largest SFTP packet accepted from a client (its length field), as
/// OpenSSH's `sftp-server` allows.
pub const MAX_PACKET: u32 = 256 * 1024;
/// The most bytes one read answers (a larger request gets this many) and
/// one write should carry: a packet less room for its header.
pub const MAX_READ: u32 = MAX_PACKET - 1024;
/// Names per `SSH_FXP_NAME` reply to a readdir, as OpenSSH sends them.
const NAMES_PER_READDIR: usize = 100;

/// Serves one SFTP session on `stream` until the client closes it (or the
/// stream fails); relative paths resolve against `cwd`.
pub async fn serve<S>(stream: S, cwd: PathBuf)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // russh-sftp runs the session on a task of its own and does not say
    // when it ends; it drops the stream then, and with it this sender.
    let (done, ended) = oneshot::channel();
    let stream = Tracked {
        inner: stream,
        _done: done,
    };
    let config = Config {
        max_client_packet_len: MAX_PACKET,
    };
    russh_sftp::server::run_with_config(stream, Server::new(cwd), config).await;
    let _ = ended.await;
}

/// A stream that drops a sender along with itself.
struct Tracked<S> {
    inner: S,
    _done: oneshot::Sender<()>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a handle names.
enum Open {
    /// Read and written at explicit offsets (`pread`/`pwrite`), so the
    /// file is shared with the blocking task without a cursor.
    File(Arc<fs::File>),
    Dir(Arc<Mutex<Listing>>),
}

/// A directory being read, a batch of names per readdir.
struct Listing {
    path: PathBuf,
    entries: fs::ReadDir,
    /// `.` and `..` come first, as OpenSSH lists them (`ls -a`).
    dots_sent: bool,
}

/// One session's state.
struct Server {
    cwd: PathBuf,
    handles: HashMap<String, Open>,
    next_handle: u64,
    /// uid/gid → name, for `ls -l` long names; read on the first readdir.
    names: Option<Arc<Names>>,
}

impl Server {
    fn new(cwd: PathBuf) -> Self {
        Self {
            cwd,
            handles: HashMap::new(),
            next_handle: 0,
            names: None,
        }
    }

    fn path(&self, path: &str) -> PathBuf {
        crate::process::resolve(&self.cwd, path)
    }

    /// Checked before opening, so no file is created for a handle that
    /// would be refused. Requests are served one at a time, so the room is
    /// still there when the open is done.
    fn room_for_handle(&self) -> Result<(), StatusReply> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(StatusCode::Failure.with_message(format!(
                "too many open handles: at most {MAX_HANDLES} per session"
            )));
        }
        Ok(())
    }

    fn insert(&mut self, open: Open) -> String {
        self.next_handle += 1;
        let handle = self.next_handle.to_string();
        self.handles.insert(handle.clone(), open);
        handle
    }

    fn file(&self, handle: &str) -> Result<Arc<fs::File>, StatusReply> {
        match self.handles.get(handle) {
            Some(Open::File(f)) => Ok(f.clone()),
            Some(Open::Dir(_)) => Err(StatusCode::Failure.with_message("handle is a directory")),
            None => Err(no_handle()),
        }
    }

    /// `stat` or `lstat` (`metadata` says which) of a request's path.
    async fn attrs_of(
        &self,
        id: u32,
        path: &str,
        metadata: fn(PathBuf) -> io::Result<fs::Metadata>,
    ) -> Result<Attrs, StatusReply> {
        let path = self.path(path);
        let md = blocking(move || metadata(path)).await?;
        Ok(Attrs {
            id,
            attrs: attrs(&md),
        })
    }

    fn names(&mut self) -> Arc<Names> {
        self.names
            .get_or_insert_with(|| Arc::new(Names::read()))
            .clone()
    }
}

fn no_handle() -> StatusReply {
    StatusCode::Failure.with_message("no such handle")
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".to_string(),
        language_tag: "en-US".to_string(),
    }
}

/// An OS error as a status: errno mapped as OpenSSH's `sftp-server` maps
/// it (version 3 has few codes), the error's text as the message.
fn status(e: io::Error) -> StatusReply {
    let code = match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR | libc::EBADF | libc::ELOOP) => StatusCode::NoSuchFile,
        Some(libc::EPERM | libc::EACCES | libc::EFAULT) => StatusCode::PermissionDenied,
        Some(libc::ENAMETOOLONG | libc::EINVAL) => StatusCode::BadMessage,
        Some(libc::ENOSYS) => StatusCode::OpUnsupported,
        Some(_) => StatusCode::Failure,
        None => match e.kind() {
            io::ErrorKind::NotFound => StatusCode::NoSuchFile,
            io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
            _ => StatusCode::Failure,
        },
    };
    // "No such file or directory", without Rust's " (os error 2)".
    let text = e.to_string();
    let text = match e.raw_os_error() {
        Some(n) => text
            .strip_suffix(&format!(" (os error {n})"))
            .map(str::to_string)
            .unwrap_or(text),
        None => text,
    };
    code.with_message(text)
}

/// Runs blocking file system work off the async threads.
async fn blocking<T, F>(f: F) -> Result<T, StatusReply>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(status),
        Err(e) => Err(StatusCode::Failure.with_message(format!("internal error: {e}"))),
    }
}

/// Attributes as SFTP carries them: the full mode (type bits included),
/// times in whole seconds clamped to the protocol's u32.
fn attrs(md: &Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(md.size()),
        uid: Some(md.uid()),
        user: None,
        gid: Some(md.gid()),
        group: None,
        permissions: Some(md.mode()),
        atime: Some(seconds(md.atime())),
        mtime: Some(seconds(md.mtime())),
    }
}

fn seconds(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

fn text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// One name with no attributes, as `realpath` and `readlink` answer.
fn one_name(id: u32, name: String) -> Name {
    Name {
        id,
        files: vec![File {
            longname: name.clone(),
            filename: name,
            attrs: FileAttributes::empty(),
        }],
    }
}

/// `realpath`: absolute and canonical; the last component may be missing
/// (a file about to be uploaded), as OpenSSH allows.
fn real_path(path: &Path) -> io::Result<PathBuf> {
    match fs::canonicalize(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => Ok(fs::canonicalize(parent)?.join(name)),
            _ => Err(e),
        },
        r => r,
    }
}

/// `setstat`/`fsetstat`: in OpenSSH's order (size, mode, times, owner),
/// each attribute the client sent; a target is a path (following links)
/// or an open file.
enum Target<'a> {
    Path(&'a Path),
    File(&'a fs::File),
}

fn set_attrs(target: Target<'_>, a: &FileAttributes) -> io::Result<()> {
    if let Some(size) = a.size {
        match target {
            Target::Path(p) => nix::unistd::truncate(p, size_arg(size)?)?,
            Target::File(f) => f.set_len(size)?,
        }
    }
    if let Some(mode) = a.permissions {
        let perms = fs::Permissions::from_mode(mode & 0o7777);
        match target {
            Target::Path(p) => fs::set_permissions(p, perms)?,
            Target::File(f) => f.set_permissions(perms)?,
        }
    }
    if a.atime.is_some() || a.mtime.is_some() {
        let time = |t: Option<u32>| t.map_or(TimeSpec::UTIME_OMIT, |s| TimeSpec::new(s.into(), 0));
        let (atime, mtime) = (time(a.atime), time(a.mtime));
        match target {
            Target::Path(p) => {
                nix::sys::stat::utimensat(None, p, &atime, &mtime, UtimensatFlags::FollowSymlink)?
            }
            Target::File(f) => nix::sys::stat::futimens(f.as_raw_fd(), &atime, &mtime)?,
        }
    }
    if a.uid.is_some() || a.gid.is_some() {
        match target {
            Target::Path(p) => std::os::unix::fs::chown(p, a.uid, a.gid)?,
            Target::File(f) => std::os::unix::fs::fchown(f, a.uid, a.gid)?,
        }
    }
    Ok(())
}

fn size_arg(size: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))
}

/// Version 3's rename: never replaces an existing target. Atomic where the
/// file system has `RENAME_NOREPLACE`; checked first where it has not.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    match nix::fcntl::renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(io::Error::from_raw_os_error(libc::EEXIST));
            }
            fs::rename(from, to)
        }
        r => Ok(r?),
    }
}

/// The next batch of a listing's names with `ls -l` long names, or `None`
/// at its end.
fn read_batch(listing: &mut Listing, names: &Names) -> io::Result<Option<Vec<File>>> {
    let now = Local::now().timestamp();
    let entry = |name: String, md: &Metadata| File {
        longname: long_name(&name, md, names, now),
        filename: name,
        attrs: attrs(md),
    };
    let mut files = Vec::new();
    if !listing.dots_sent {
        listing.dots_sent = true;
        files.push(entry(
            ".".to_string(),
            &fs::symlink_metadata(&listing.path)?,
        ));
        if let Ok(md) = fs::symlink_metadata(listing.path.join("..")) {
            files.push(entry("..".to_string(), &md));
        }
    }
    while files.len() < NAMES_PER_READDIR {
        let Some(next) = listing.entries.next() else {
            break;
        };
        let next = next?;
        // Gone since it was listed: skip it, as `ls` would not show it.
        let Ok(md) = fs::symlink_metadata(next.path()) else {
            continue;
        };
        files.push(entry(next.file_name().to_string_lossy().into_owned(), &md));
    }
    Ok((!files.is_empty()).then_some(files))
}

/// The `ls -l` line OpenSSH's `sftp-server` sends as a long name (its
/// `sftp ls -l` prints it as is): mode, links, owner, group, size, date,
/// name. Dates older than six months (or in the future) show the year.
fn long_name(name: &str, md: &Metadata, names: &Names, now: i64) -> String {
    const HALF_YEAR: i64 = 365 * 24 * 3600 / 2;
    let mtime = md.mtime();
    let format = if mtime <= now && now - mtime < HALF_YEAR {
        "%b %e %H:%M"
    } else {
        "%b %e  %Y"
    };
    let date = DateTime::from_timestamp(mtime, 0)
        .map(|t| t.with_timezone(&Local).format(format).to_string())
        .unwrap_or_else(|| "?".to_string());
    format!(
        "{} {:>3} {:<8} {:<8} {:>8} {date} {name}",
        mode_string(md.mode()),
        md.nlink(),
        names.user(md.uid()),
        names.group(md.gid()),
        md.size(),
    )
}

/// `drwxr-xr-x`, with setuid/setgid/sticky as `ls` shows them.
fn mode_string(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        _ => '-',
    };
    let bit = |mask: u32, c: char| if mode & mask != 0 { c } else { '-' };
    let exec = |x: u32, special: u32, set: char| match (mode & x != 0, mode & special != 0) {
        (true, true) => set,
        (false, true) => set.to_ascii_uppercase(),
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        kind,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        exec(0o100, 0o4000, 's'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        exec(0o010, 0o2000, 's'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        exec(0o001, 0o1000, 't'),
    ]
    .iter()
    .collect()
}

/// User and group names from the sandbox's `/etc/passwd` and `/etc/group`,
/// read directly: the agent is static, so there is no NSS to ask.
#[derive(Default)]
struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    fn read() -> Self {
        let table = |path: &str| -> HashMap<u32, String> {
            let text = fs::read_to_string(path).unwrap_or_default();
            text.lines()
                .filter_map(|line| {
                    let mut fields = line.split(':');
                    let name = fields.next()?;
                    let id = fields.nth(1)?.parse().ok()?;
                    Some((id, name.to_string()))
                })
                .collect()
        };
        Self {
            users: table("/etc/passwd"),
            groups: table("/etc/group"),
        }
    }

    fn user(&self, uid: u32) -> String {
        self.users.get(&uid).cloned().unwrap_or(uid.to_string())
    }

    fn group(&self, gid: u32) -> String {
        self.groups.get(&gid).cloned().unwrap_or(gid.to_string())
    }
}

/// The SSH strings (u32 length, bytes) an extended request's data holds.
fn ssh_strings<const N: usize>(mut data: &[u8]) -> Result<[String; N], StatusReply> {
    let bad = || StatusCode::BadMessage.with_message("malformed extended request");
    let mut out: [String; N] = std::array::from_fn(|_| String::new());
    for s in &mut out {
        let (len, rest) = data.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(bad());
        }
        let (bytes, rest) = rest.split_at(len);
        *s = String::from_utf8(bytes.to_vec()).map_err(|_| bad())?;
        data = rest;
    }
    Ok(out)
}

fn extended_reply<T: serde::Serialize>(id: u32, value: &T) -> Result<Packet, StatusReply> {
    let data = russh_sftp::ser::to_bytes(value)
        .map_err(|e| StatusCode::Failure.with_message(e.to_string()))?;
    Ok(Packet::ExtendedReply(ExtendedReply {
        id,
        data: data.to_vec(),
    }))
}

const POSIX_RENAME: &str = "posix-rename@openssh.com";

impl Handler for Server {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusReply::new(StatusCode::OpUnsupported)
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        // Version 3 whatever the client offers, as OpenSSH answers.
        let mut version = Version::new();
        for (name, v) in [
            (POSIX_RENAME, "1"),
            (extensions::STATVFS, "2"),
            (extensions::HARDLINK, "1"),
            (extensions::FSYNC, "1"),
            (extensions::LIMITS, "1"),
        ] {
            version.extensions.insert(name.to_string(), v.to_string());
        }
        Ok(version)
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let path = self.path(&filename);
        let (read, write, append) = (
            pflags.contains(OpenFlags::READ),
            pflags.contains(OpenFlags::WRITE),
            pflags.contains(OpenFlags::APPEND),
        );
        let mut opts = OpenOptions::new();
        // No access flag at all is O_RDONLY, as in OpenSSH.
        opts.read(read || !(write || append))
            .write(write)
            .append(append);
        // POSIX creation flags directly: std refuses O_CREAT or O_TRUNC on
        // a file opened read-only, which open(2) (and so SFTP) allows.
        let mut creation = 0;
        if pflags.contains(OpenFlags::CREATE) {
            creation |= libc::O_CREAT;
            if pflags.contains(OpenFlags::EXCLUDE) {
                creation |= libc::O_EXCL;
            }
        }
        if pflags.contains(OpenFlags::TRUNCATE) {
            creation |= libc::O_TRUNC;
        }
        opts.custom_flags(creation)
            .mode(attrs.permissions.map_or(0o666, |p| p & 0o7777));
        self.room_for_handle()?;
        let file = blocking(move || opts.open(path)).await?;
        let handle = self.insert(Open::File(Arc::new(file)));
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(_) => Ok(ok(id)),
            None => Err(no_handle()),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let file = self.file(&handle)?;
        let len = len.min(MAX_READ) as usize;
        let data = blocking(move || {
            let mut buf = vec![0; len];
            let n = file.read_at(&mut buf, offset)?;
            buf.truncate(n);
            Ok(buf)
        })
        .await?;
        if data.is_empty() {
            return Err(StatusReply::new(StatusCode::Eof));
        }
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let file = self.file(&handle)?;
        blocking(move || file.write_all_at(&data, offset)).await?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.attrs_of(id, &path, fs::symlink_metadata).await
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.attrs_of(id, &path, fs::metadata).await
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let md = match self.handles.get(&handle) {
            Some(Open::File(f)) => {
                let f = f.clone();
                blocking(move || f.metadata()).await?
            }
            Some(Open::Dir(listing)) => {
                let path = listing.lock().expect("listing lock").path.clone();
                blocking(move || fs::metadata(path)).await?
            }
            None => return Err(no_handle()),
        };
        Ok(Attrs {
            id,
            attrs: attrs(&md),
        })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let path = self.path(&path);
        blocking(move || set_attrs(Target::Path(&path), &attrs)).await?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        match self.handles.get(&handle) {
            Some(Open::File(f)) => {
                let f = f.clone();
                blocking(move || set_attrs(Target::File(&f), &attrs)).await?;
            }
            Some(Open::Dir(listing)) => {
                let path = listing.lock().expect("listing lock").path.clone();
                blocking(move || set_attrs(Target::Path(&path), &attrs)).await?;
            }
            None => return Err(no_handle()),
        }
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let path = self.path(&path);
        self.room_for_handle()?;
        let listing = blocking(move || {
            let entries = fs::read_dir(&path)?;
            Ok(Listing {
                path,
                entries,
                dots_sent: false,
            })
        })
        .await?;
        let handle = self.insert(Open::Dir(Arc::new(Mutex::new(listing))));
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        let listing = match self.handles.get(&handle) {
            Some(Open::Dir(listing)) => listing.clone(),
            Some(Open::File(_)) => {
                return Err(StatusCode::Failure.with_message("handle is not a directory"))
            }
            None => return Err(no_handle()),
        };
        let names = self.names();
        let batch =
            blocking(move || read_batch(&mut listing.lock().expect("listing lock"), &names))
                .await?;
        match batch {
            Some(files) => Ok(Name { id, files }),
            None => Err(StatusReply::new(StatusCode::Eof)),
        }
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let path = self.path(&filename);
        blocking(move || fs::remove_file(path)).await?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let path = self.path(&path);
        let mode = attrs.permissions.map_or(0o777, |p| p & 0o7777);
        blocking(move || fs::DirBuilder::new().mode(mode).create(path)).await?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        let path = self.path(&path);
        blocking(move || fs::remove_dir(path)).await?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        // "" is the working directory, as "." is.
        let path = self.path(if path.is_empty() { "." } else { &path });
        let real = blocking(move || real_path(&path)).await?;
        Ok(one_name(id, text(&real)))
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        let (from, to) = (self.path(&oldpath), self.path(&newpath));
        blocking(move || rename_no_replace(&from, &to)).await?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let path = self.path(&path);
        let target = blocking(move || fs::read_link(path)).await?;
        Ok(one_name(id, text(&target)))
    }

    /// The wire order is OpenSSH's, the reverse of the draft's: first the
    /// link's target, then the link to create. russh-sftp names the fields
    /// by the draft, so `linkpath` holds the target here. The target is
    /// stored as given; only the new link's path resolves against the
    /// working directory.
    async fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> Result<Status, Self::Error> {
        let (target, link) = (PathBuf::from(linkpath), self.path(&targetpath));
        blocking(move || std::os::unix::fs::symlink(target, link)).await?;
        Ok(ok(id))
    }

    async fn extended(
        &mut self,
        id: u32,
        request: String,
        data: Vec<u8>,
    ) -> Result<Packet, Self::Error> {
        match request.as_str() {
            // A rename that replaces the target, atomically (rename(2)).
            POSIX_RENAME => {
                let [from, to] = ssh_strings(&data)?;
                let (from, to) = (self.path(&from), self.path(&to));
                blocking(move || fs::rename(from, to)).await?;
                Ok(Packet::Status(ok(id)))
            }
            extensions::HARDLINK => {
                let [from, to] = ssh_strings(&data)?;
                let (from, to) = (self.path(&from), self.path(&to));
                blocking(move || fs::hard_link(from, to)).await?;
                Ok(Packet::Status(ok(id)))
            }
            extensions::FSYNC => {
                let [handle] = ssh_strings(&data)?;
                let file = self.file(&handle)?;
                blocking(move || file.sync_all()).await?;
                Ok(Packet::Status(ok(id)))
            }
            extensions::STATVFS => {
                let [path] = ssh_strings(&data)?;
                let path = self.path(&path);
                let st = blocking(move || Ok(nix::sys::statvfs::statvfs(&path)?)).await?;
                let mut flags = 0;
                if st.flags().contains(FsFlags::ST_RDONLY) {
                    flags |= 1;
                }
                if st.flags().contains(FsFlags::ST_NOSUID) {
                    flags |= 2;
                }
                #[allow(clippy::useless_conversion)] // the widths differ by target
                let reply = Statvfs {
                    block_size: st.block_size().into(),
                    fragment_size: st.fragment_size().into(),
                    blocks: st.blocks().into(),
                    blocks_free: st.blocks_free().into(),
                    blocks_avail: st.blocks_available().into(),
                    inodes: st.files().into(),
                    inodes_free: st.files_free().into(),
                    inodes_avail: st.files_available().into(),
                    fs_id: st.filesystem_id().into(),
                    flags,
                    name_max: st.name_max().into(),
                };
                extended_reply(id, &reply)
            }
            extensions::LIMITS => extended_reply(
                id,
                &LimitsExtension {
                    max_packet_len: MAX_PACKET.into(),
                    max_read_len: MAX_READ.into(),
                    max_write_len: MAX_READ.into(),
                    max_open_handles: MAX_HANDLES as u64,
                },
            ),
            _ => Err(StatusCode::OpUnsupported.with_message(format!("{request} is not supported"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_ls_shows_them() {
        assert_eq!(mode_string(libc::S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(libc::S_IFREG | 0o644), "-rw-r--r--");
        assert_eq!(mode_string(libc::S_IFLNK | 0o777), "lrwxrwxrwx");
        assert_eq!(mode_string(libc::S_IFREG | 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(libc::S_IFREG | 0o2644), "-rw-r-Sr--");
        assert_eq!(mode_string(libc::S_IFDIR | 0o1777), "drwxrwxrwt");
    }

    #[test]
    fn extended_strings_parse_or_fail_cleanly() {
        let mut data = Vec::new();
        for s in ["a", "bc"] {
            data.extend_from_slice(&(s.len() as u32).to_be_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        assert_eq!(ssh_strings::<2>(&data).unwrap(), ["a", "bc"]);
        assert!(ssh_strings::<3>(&data).is_err());
        assert!(ssh_strings::<2>(&data[..data.len() - 1]).is_err());
        assert!(ssh_strings::<1>(&[0, 0, 0, 1, 0xff]).is_err());
    }

    #[test]
    fn errno_maps_to_sftp_status() {
        let code = |errno| status(io::Error::from_raw_os_error(errno)).status_code;
        assert_eq!(code(libc::ENOENT), StatusCode::NoSuchFile);
        assert_eq!(code(libc::EACCES), StatusCode::PermissionDenied);
        assert_eq!(code(libc::EEXIST), StatusCode::Failure);
        let reply = status(io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(
            reply.error_message.as_deref(),
            Some("No such file or directory")
        );
    }
}
