//! `airlock cp SRC DST`: copies files and directory trees between this host
//! and a running sandbox; exactly one side is `SANDBOX:/path`.
//!
//! Into the sandbox: `mkdir` per directory, `writeFile` with a
//! `contentStreamId` per file (the content goes as stream chunks). Out of
//! it: `stat`/`readDir`, then `open` + `fileRead` pulls per file. Either
//! way no file travels whole in one message.

use super::api::ApiArgs;
use super::client::{stream_param, Client, CHUNK};
use super::exec::block_on;
use agent_proto::calls::{
    ChmodParams, Content, DirEntry, FileHandleParams, FileHandleResult, FileInfo, FileReadParams,
    FileReadResult, LinkParams, MkdirParams, OpenParams, PathParams, RemoveParams, WriteFileParams,
};
use agent_proto::Method;
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use clap::Args;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct CpArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// What to copy: a local path, or SANDBOX:/path.
    pub src: String,
    /// Where to: a local path, or SANDBOX:/path.
    pub dst: String,
}

const USAGE: &str = "usage: airlock cp SANDBOX:/path LOCAL  or  airlock cp LOCAL SANDBOX:/path";

/// `SANDBOX:/path` → (sandbox, path); anything else is a local path (a
/// colon after a slash, or a leading `.`/`/`, is part of a local name).
fn remote(spec: &str) -> Option<(&str, &str)> {
    let (name, path) = spec.split_once(':')?;
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    Some((name, path))
}

pub fn main(args: CpArgs) -> Result<i32> {
    let (src_remote, dst_remote) = (remote(&args.src), remote(&args.dst));
    let (sandbox, into) = match (src_remote, dst_remote) {
        (Some(_), Some(_)) => {
            eprintln!("airlock cp: copying between two sandboxes is not supported\n{USAGE}");
            return Ok(2);
        }
        (None, None) => {
            eprintln!("airlock cp: one side must be SANDBOX:/path\n{USAGE}");
            return Ok(2);
        }
        (Some((s, _)), None) | (None, Some((s, _))) => (s.to_string(), dst_remote.is_some()),
    };
    let target = args.api.resolve()?;
    let result = block_on(async {
        let client = Client::connect(&target, &sandbox).await?;
        let mut progress = Progress::new();
        if into {
            let (_, path) = dst_remote.expect("remote destination");
            copy_in(&client, Path::new(&args.src), path, &mut progress).await?;
        } else {
            let (_, path) = src_remote.expect("remote source");
            copy_out(&client, &sandbox, path, Path::new(&args.dst), &mut progress).await?;
        }
        progress.done();
        client.close().await;
        Ok(0)
    });
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("airlock cp: {e:#}");
            Ok(1)
        }
    }
}

/// Bytes copied, on stderr when it is a terminal (at most 5 times a second).
struct Progress {
    bytes: u64,
    show: bool,
    shown: bool,
    last: Instant,
}

impl Progress {
    fn new() -> Self {
        Self {
            bytes: 0,
            show: std::io::stderr().is_terminal(),
            shown: false,
            last: Instant::now(),
        }
    }

    fn add(&mut self, n: usize) {
        self.bytes += n as u64;
        if self.show && self.last.elapsed() >= Duration::from_millis(200) {
            self.last = Instant::now();
            self.shown = true;
            eprint!("\rcopied {}", human(self.bytes));
            let _ = std::io::stderr().flush();
        }
    }

    fn done(&self) {
        if self.shown {
            eprintln!("\rcopied {}", human(self.bytes));
        }
    }
}

fn human(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

fn base_name(p: &str) -> Option<&str> {
    p.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty() && *s != "." && *s != "..")
}

/// Joins a sandbox path.
fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The parent of a sandbox path ("." for a bare name).
fn parent(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    match t.rfind('/') {
        Some(0) => "/",
        Some(i) => &t[..i],
        None => ".",
    }
}

/// `stat` in the sandbox: `None` when it is not there.
async fn remote_stat(client: &Client, path: &str) -> Result<Option<FileInfo>> {
    match client.call_typed(Method::Stat, &path_params(path)).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() || e.class() == Some("NotADirectory") => Ok(None),
        Err(e) => Err(anyhow!("{path}: {e}")),
    }
}

fn is_dir(info: &FileInfo) -> bool {
    info.is_directory
}

fn path_params(path: &str) -> PathParams {
    PathParams {
        path: path.to_string(),
    }
}

// ---- into the sandbox -------------------------------------------------

async fn copy_in(client: &Client, src: &Path, dst: &str, progress: &mut Progress) -> Result<()> {
    let meta = std::fs::metadata(src)
        .with_context(|| format!("no such file or directory: {}", src.display()))?;
    let dst_info = remote_stat(client, dst).await?;
    let target = match dst_info {
        Some(info) if is_dir(&info) => {
            let name = src
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .or_else(|| {
                    let full = std::fs::canonicalize(src).ok()?;
                    full.file_name().map(|n| n.to_string_lossy().into_owned())
                })
                .ok_or_else(|| anyhow!("cannot name {} in the sandbox", src.display()))?;
            join(dst, &name)
        }
        Some(_) if dst.ends_with('/') => bail!("not a directory: {dst}"),
        Some(_) if meta.is_dir() => {
            bail!("cannot copy directory {} onto file {dst}", src.display())
        }
        Some(_) => dst.to_string(),
        None if dst.ends_with('/') => bail!("no such directory: {dst} (in the sandbox)"),
        None => {
            let p = parent(dst);
            match remote_stat(client, p).await? {
                Some(info) if is_dir(&info) => dst.to_string(),
                Some(_) => bail!("not a directory: {p} (in the sandbox)"),
                None => bail!("no such directory: {p} (in the sandbox)"),
            }
        }
    };
    if meta.is_dir() {
        Box::pin(put_dir(client, src, &target, progress)).await
    } else {
        put_file(client, src, &target, meta.permissions().mode(), progress).await
    }
}

async fn put_dir(client: &Client, src: &Path, dst: &str, progress: &mut Progress) -> Result<()> {
    let mode = std::fs::metadata(src)?.permissions().mode() & 0o7777;
    let mkdir = MkdirParams {
        path: dst.to_string(),
        recursive: false,
        mode: Some(mode),
    };
    match client.call_typed::<_, ()>(Method::Mkdir, &mkdir).await {
        Ok(_) => {}
        Err(e) if e.class() == Some("AlreadyExists") => {}
        Err(e) => bail!("mkdir {dst}: {e}"),
    }
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .with_context(|| format!("reading {}", src.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            bail!("{}: name is not UTF-8", entry.path().display());
        };
        let path = entry.path();
        let child = join(dst, name);
        let ft = entry.file_type()?;
        if ft.is_symlink() {
            let link = std::fs::read_link(&path)?;
            let remove = RemoveParams {
                path: child.clone(),
                recursive: false,
            };
            let _ = client.call_typed::<_, ()>(Method::Remove, &remove).await;
            let symlink = LinkParams {
                target: link.to_string_lossy().into_owned(),
                path: child.clone(),
            };
            client
                .call_typed::<_, ()>(Method::Symlink, &symlink)
                .await
                .map_err(|e| anyhow!("symlink {child}: {e}"))?;
        } else if ft.is_dir() {
            Box::pin(put_dir(client, &path, &child, progress)).await?;
        } else if ft.is_file() {
            let mode = entry.metadata()?.permissions().mode();
            put_file(client, &path, &child, mode, progress).await?;
        }
        // Sockets, fifos, devices: skipped.
    }
    Ok(())
}

/// `writeFile` with the content as a client stream, then the mode.
async fn put_file(
    client: &Client,
    src: &Path,
    dst: &str,
    mode: u32,
    progress: &mut Progress,
) -> Result<()> {
    let mut file =
        std::fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let stream = client.open_stream().await?;
    let write = WriteFileParams {
        path: dst.to_string(),
        content: Content::Stream(stream_param(stream)?),
        append: false,
        create: true,
        create_new: false,
        mode: Some(mode & 0o7777),
    };
    let mut answer = client.request_typed(Method::WriteFile, &write).await?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        // The daemon may refuse early (e.g. a directory in the way).
        if let Ok(result) = answer.try_recv() {
            result.map_err(|e| anyhow!("writing {dst}: {e}"))?;
            bail!("writing {dst}: the daemon answered before the content was sent");
        }
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", src.display()))?;
        if n == 0 {
            break;
        }
        client.send_data(stream, &buf[..n]).await?;
        progress.add(n);
    }
    client.end_stream(stream).await?;
    client
        .answer(answer)
        .await
        .map_err(|e| anyhow!("writing {dst}: {e}"))?;
    let chmod = ChmodParams {
        path: dst.to_string(),
        mode: mode & 0o7777,
    };
    client
        .call_typed::<_, ()>(Method::Chmod, &chmod)
        .await
        .map_err(|e| anyhow!("chmod {dst}: {e}"))?;
    Ok(())
}

// ---- out of the sandbox -----------------------------------------------

async fn copy_out(
    client: &Client,
    sandbox: &str,
    src: &str,
    dst: &Path,
    progress: &mut Progress,
) -> Result<()> {
    let Some(info) = remote_stat(client, src).await? else {
        bail!("no such file or directory: {sandbox}:{src}");
    };
    if src.ends_with('/') && !is_dir(&info) {
        bail!("not a directory: {sandbox}:{src}");
    }
    let dst_str = dst.to_string_lossy();
    let target: PathBuf = match std::fs::metadata(dst) {
        Ok(m) if m.is_dir() => {
            let name = base_name(src).unwrap_or("root");
            dst.join(name)
        }
        Ok(_) if dst_str.ends_with('/') => bail!("not a directory: {}", dst.display()),
        Ok(_) if is_dir(&info) => bail!(
            "cannot copy directory {sandbox}:{src} onto file {}",
            dst.display()
        ),
        Ok(_) => dst.to_path_buf(),
        Err(_) if dst_str.ends_with('/') => bail!("no such directory: {}", dst.display()),
        Err(_) => {
            let p = match dst.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if p.exists() && !p.is_dir() {
                bail!("not a directory: {}", p.display());
            }
            if !p.is_dir() {
                bail!("no such directory: {}", p.display());
            }
            dst.to_path_buf()
        }
    };
    if is_dir(&info) {
        Box::pin(get_dir(client, src, &target, mode_of(&info), progress)).await
    } else {
        get_file(client, src, &target, mode_of(&info), progress).await
    }
}

fn mode_of(info: &FileInfo) -> u32 {
    info.mode & 0o7777
}

async fn get_dir(
    client: &Client,
    src: &str,
    dst: &Path,
    mode: u32,
    progress: &mut Progress,
) -> Result<()> {
    match std::fs::create_dir(dst) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dst.is_dir() => {}
        Err(e) => return Err(e).with_context(|| format!("mkdir {}", dst.display())),
    }
    let mut entries: Vec<DirEntry> = client
        .call_typed(Method::ReadDir, &path_params(src))
        .await
        .map_err(|e| anyhow!("reading directory {src}: {e}"))?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    for entry in entries {
        let name = entry.name.as_str();
        if name.contains('/') || name == "." || name == ".." {
            bail!("{src}: the sandbox returned a bad name {name:?}");
        }
        let child = join(src, name);
        let local = dst.join(name);
        if entry.is_symlink {
            let link: String = client
                .call_typed(Method::ReadLink, &path_params(&child))
                .await
                .map_err(|e| anyhow!("readLink {child}: {e}"))?;
            let _ = std::fs::remove_file(&local);
            std::os::unix::fs::symlink(link, &local)
                .with_context(|| format!("symlink {}", local.display()))?;
        } else if entry.is_directory {
            let info: FileInfo = client
                .call_typed(Method::Stat, &path_params(&child))
                .await
                .map_err(|e| anyhow!("stat {child}: {e}"))?;
            Box::pin(get_dir(client, &child, &local, mode_of(&info), progress)).await?;
        } else if entry.is_file {
            let info: FileInfo = client
                .call_typed(Method::Stat, &path_params(&child))
                .await
                .map_err(|e| anyhow!("stat {child}: {e}"))?;
            get_file(client, &child, &local, mode_of(&info), progress).await?;
        }
    }
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", dst.display()))?;
    Ok(())
}

/// `open` + `fileRead` pulls + `fileClose`.
async fn get_file(
    client: &Client,
    src: &str,
    dst: &Path,
    mode: u32,
    progress: &mut Progress,
) -> Result<()> {
    let open = OpenParams {
        path: src.to_string(),
        read: true,
        write: false,
        append: false,
        truncate: false,
        create: false,
        create_new: false,
        mode: None,
    };
    let handle: FileHandleResult = client
        .call_typed(Method::Open, &open)
        .await
        .map_err(|e| anyhow!("opening {src}: {e}"))?;
    let result = pull(client, handle, src, dst, progress).await;
    let _ = client.call_typed::<_, ()>(Method::FileClose, &handle).await;
    result?;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", dst.display()))?;
    Ok(())
}

async fn pull(
    client: &Client,
    handle: FileHandleParams,
    src: &str,
    dst: &Path,
    progress: &mut Progress,
) -> Result<()> {
    let mut out =
        std::fs::File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    loop {
        let read = FileReadParams {
            file_handle_id: handle.file_handle_id,
            length: 2 * CHUNK as u64,
        };
        let r: FileReadResult = client
            .call_typed(Method::FileRead, &read)
            .await
            .map_err(|e| anyhow!("reading {src}: {e}"))?;
        let Some(data) = r.data else {
            break; // EOF
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| anyhow!("reading {src}: bad data: {e}"))?;
        if bytes.is_empty() {
            break;
        }
        out.write_all(&bytes)
            .with_context(|| format!("writing {}", dst.display()))?;
        progress.add(bytes.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_specs() {
        assert_eq!(remote("sbx:/a/b"), Some(("sbx", "/a/b")));
        assert_eq!(remote("./a:b"), None);
        assert_eq!(remote("/tmp/a:b"), None);
        assert_eq!(remote("plain"), None);
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("a"), ".");
        assert_eq!(base_name("/a/b/"), Some("b"));
        assert_eq!(join("/", "x"), "/x");
    }
}
