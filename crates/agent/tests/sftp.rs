//! The agent's SFTP server (`airlock_agent::sftp`, behind `sftpOpen`) on a
//! real file system: driven by russh-sftp's client over an in-memory pipe,
//! by the daemon's `AgentClient::sftp_open` through the real agent binary,
//! and by OpenSSH's own `sftp` client.

use agent_client::AgentClient;
use airlock_agent::sftp::{serve, MAX_HANDLES, MAX_READ};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::{RawSftpSession, SftpSession};
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use std::collections::BTreeSet;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An SFTP session with a server whose working directory is `cwd`.
async fn session(cwd: &Path) -> SftpSession {
    let (client, server) = tokio::io::duplex(1024 * 1024);
    tokio::spawn(serve(server, cwd.to_path_buf()));
    SftpSession::new(client).await.expect("sftp session")
}

/// A raw session: no limits learnt from the server, so the client sends
/// what a test asks and the server's own bounds are what answers.
async fn raw_session(cwd: &Path) -> RawSftpSession {
    let (client, server) = tokio::io::duplex(1024 * 1024);
    tokio::spawn(serve(server, cwd.to_path_buf()));
    let raw = RawSftpSession::new(client);
    raw.init().await.expect("init");
    raw
}

/// Reproducible bytes that do not repeat (xorshift).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn status_code(e: &SftpError) -> StatusCode {
    match e {
        SftpError::Status(s) => s.status_code,
        other => panic!("not a status reply: {other:?}"),
    }
}

#[tokio::test]
async fn multi_mib_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let sftp = session(dir.path()).await;
    let data = noise(7, 5 * 1024 * 1024 + 12345);
    let mut file = sftp.create("big.bin").await.unwrap();
    file.write_all(&data).await.unwrap();
    file.shutdown().await.unwrap();
    drop(file);
    assert!(
        std::fs::read(dir.path().join("big.bin")).unwrap() == data,
        "the file on disk is what was written"
    );
    let mut back = Vec::new();
    let mut file = sftp.open("big.bin").await.unwrap();
    file.read_to_end(&mut back).await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "read back what was written");
    assert_eq!(
        sftp.metadata("big.bin").await.unwrap().size,
        Some(data.len() as u64)
    );
}

#[tokio::test]
async fn reads_are_capped_and_end_with_eof() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), noise(3, 600 * 1024)).unwrap();
    let raw = raw_session(dir.path()).await;
    let h = raw
        .open("f", OpenFlags::READ, FileAttributes::empty())
        .await
        .unwrap()
        .handle;
    let data = raw.read(&h, 0, 1024 * 1024).await.unwrap().data;
    assert_eq!(
        data.len(),
        MAX_READ as usize,
        "one read answers at most MAX_READ"
    );
    let e = raw.read(&h, 600 * 1024, 10).await.unwrap_err();
    assert_eq!(status_code(&e), StatusCode::Eof);
    raw.close(&h).await.unwrap();
    let e = raw.read(&h, 0, 10).await.unwrap_err();
    assert_eq!(status_code(&e), StatusCode::Failure, "a closed handle");
}

#[tokio::test]
async fn readdir_lists_entries_with_long_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), b"12345").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    // More names than one reply carries.
    for i in 0..250 {
        std::fs::write(dir.path().join(format!("n{i:03}")), b"").unwrap();
    }
    let sftp = session(dir.path()).await;
    let names: BTreeSet<String> = sftp
        .read_dir(".")
        .await
        .unwrap()
        .map(|e| e.file_name())
        .collect();
    let mut want: BTreeSet<String> = (0..250).map(|i| format!("n{i:03}")).collect();
    want.extend(["a.txt".to_string(), "sub".to_string()]);
    assert_eq!(names, want);

    let raw = raw_session(dir.path()).await;
    let h = raw.opendir(".").await.unwrap().handle;
    let mut files = Vec::new();
    loop {
        match raw.readdir(&h).await {
            Ok(name) => {
                assert!(name.files.len() <= 100);
                files.extend(name.files)
            }
            Err(e) => {
                assert_eq!(status_code(&e), StatusCode::Eof);
                break;
            }
        }
    }
    assert_eq!(files.len(), 252 + 2, "every entry, with . and ..");
    let a = files.iter().find(|f| f.filename == "a.txt").unwrap();
    assert!(
        a.longname.starts_with("-rw") && a.longname.ends_with(" a.txt"),
        "{}",
        a.longname
    );
    let fields: Vec<&str> = a.longname.split_whitespace().collect();
    assert_eq!(fields[1], "1", "links: {}", a.longname);
    assert_eq!(fields[4], "5", "size: {}", a.longname);
    let sub = files.iter().find(|f| f.filename == "sub").unwrap();
    assert!(sub.longname.starts_with("drwx"), "{}", sub.longname);
    assert!(sub.attrs.is_dir());
    raw.close(&h).await.unwrap();
}

#[tokio::test]
async fn stat_lstat_fstat_report_sizes_and_modes() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"hello").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
    let sftp = session(dir.path()).await;
    let st = sftp.metadata("f").await.unwrap();
    assert_eq!(st.size, Some(5));
    assert_eq!(st.permissions, Some(0o100640));
    assert!(st.is_regular() && !st.is_dir());
    let md = std::fs::metadata(&f).unwrap();
    assert_eq!(st.uid, Some(md.uid()));
    assert_eq!(st.mtime, Some(md.mtime() as u32));
    // stat follows the link, lstat does not.
    assert_eq!(sftp.metadata("l").await.unwrap().size, Some(5));
    assert!(sftp.symlink_metadata("l").await.unwrap().is_symlink());
    let file = sftp.open("f").await.unwrap();
    assert_eq!(file.metadata().await.unwrap().size, Some(5));
    assert!(sftp.metadata(".").await.unwrap().is_dir());
}

#[tokio::test]
async fn mkdir_rmdir_remove() {
    let dir = tempfile::tempdir().unwrap();
    let sftp = session(dir.path()).await;
    sftp.create_dir("d").await.unwrap();
    assert!(dir.path().join("d").is_dir());
    let e = sftp.create_dir("d").await.unwrap_err();
    assert_eq!(status_code(&e), StatusCode::Failure, "it exists");
    // `write` opens without CREATE.
    let e = sftp.write("d/x", b"").await.unwrap_err();
    assert_eq!(status_code(&e), StatusCode::NoSuchFile);
    drop(sftp.create("d/x").await.unwrap());
    let e = sftp.remove_dir("d").await.unwrap_err();
    assert_eq!(status_code(&e), StatusCode::Failure, "not empty");
    sftp.remove_file("d/x").await.unwrap();
    sftp.remove_dir("d").await.unwrap();
    assert!(!dir.path().join("d").exists());
    let e = sftp.remove_file("d/x").await.unwrap_err();
    assert_eq!(status_code(&e), StatusCode::NoSuchFile);
    // mkdir with a mode.
    let raw = raw_session(dir.path()).await;
    let attrs = FileAttributes {
        permissions: Some(0o700),
        ..Default::default()
    };
    raw.mkdir("private", attrs).await.unwrap();
    let mode = std::fs::metadata(dir.path().join("private"))
        .unwrap()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[tokio::test]
async fn rename_never_replaces_but_posix_rename_does() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a"), b"A").unwrap();
    std::fs::write(dir.path().join("b"), b"B").unwrap();
    let sftp = session(dir.path()).await;
    sftp.rename("a", "c").await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("c")).unwrap(), b"A");
    assert!(!dir.path().join("a").exists());
    let e = sftp.rename("c", "b").await.unwrap_err();
    assert_eq!(status_code(&e), StatusCode::Failure, "b exists");
    assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), b"B");
    assert_eq!(std::fs::read(dir.path().join("c")).unwrap(), b"A");
    let e = sftp.rename("missing", "z").await.unwrap_err();
    assert_eq!(status_code(&e), StatusCode::NoSuchFile);

    let raw = raw_session(dir.path()).await;
    let mut data = Vec::new();
    for s in ["c", "b"] {
        data.extend_from_slice(&(s.len() as u32).to_be_bytes());
        data.extend_from_slice(s.as_bytes());
    }
    raw.extended("posix-rename@openssh.com", data)
        .await
        .unwrap();
    assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), b"A");
    assert!(!dir.path().join("c").exists());
    let reply = raw.extended("no-such@example.com", vec![]).await.unwrap();
    match reply {
        russh_sftp::protocol::Packet::Status(s) => {
            assert_eq!(s.status_code, StatusCode::OpUnsupported)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn symlink_and_readlink_use_openssh_argument_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("target.txt"), b"t").unwrap();
    let sftp = session(dir.path()).await;
    // OpenSSH's order: the target first, then the link to create.
    sftp.symlink("target.txt", "link").await.unwrap();
    assert_eq!(
        std::fs::read_link(dir.path().join("link")).unwrap(),
        PathBuf::from("target.txt"),
        "the target is stored as given"
    );
    assert_eq!(sftp.read_link("link").await.unwrap(), "target.txt");
    assert_eq!(sftp.read("link").await.unwrap(), b"t");
    let e = sftp.read_link("target.txt").await.unwrap_err();
    assert_eq!(
        status_code(&e),
        StatusCode::BadMessage,
        "EINVAL: not a link"
    );
}

#[tokio::test]
async fn setstat_and_fsetstat_change_mode_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"0123456789").unwrap();
    let sftp = session(dir.path()).await;
    let attrs = FileAttributes {
        permissions: Some(0o600),
        atime: Some(1_000_000_000),
        mtime: Some(1_200_000_000),
        ..Default::default()
    };
    sftp.set_metadata("f", attrs).await.unwrap();
    let md = std::fs::metadata(&f).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o600);
    assert_eq!(md.atime(), 1_000_000_000);
    assert_eq!(md.mtime(), 1_200_000_000);

    let raw = raw_session(dir.path()).await;
    let h = raw
        .open("f", OpenFlags::WRITE, FileAttributes::empty())
        .await
        .unwrap()
        .handle;
    let attrs = FileAttributes {
        size: Some(4),
        permissions: Some(0o644),
        atime: Some(1_300_000_000),
        mtime: Some(1_400_000_000),
        ..Default::default()
    };
    raw.fsetstat(&h, attrs).await.unwrap();
    let md = std::fs::metadata(&f).unwrap();
    assert_eq!(md.len(), 4);
    assert_eq!(md.mode() & 0o7777, 0o644);
    assert_eq!(md.mtime(), 1_400_000_000);
    // The owner set to what it is: allowed for anyone.
    let attrs = FileAttributes {
        uid: Some(md.uid()),
        gid: Some(md.gid()),
        ..Default::default()
    };
    raw.setstat("f", attrs).await.unwrap();
    let attrs = FileAttributes {
        permissions: Some(0o600),
        ..Default::default()
    };
    let e = raw.setstat("missing", attrs).await.unwrap_err();
    assert_eq!(status_code(&e), StatusCode::NoSuchFile);
}

#[tokio::test]
async fn open_flags_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let sftp = session(dir.path()).await;
    let e = sftp.open("missing").await.err().expect("missing");
    assert_eq!(status_code(&e), StatusCode::NoSuchFile);
    let e = sftp.open("no/such/dir/f").await.err().expect("missing");
    assert_eq!(status_code(&e), StatusCode::NoSuchFile);

    let raw = raw_session(dir.path()).await;
    let create = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE;
    let attrs = FileAttributes {
        permissions: Some(0o600),
        ..Default::default()
    };
    let h = raw.open("new", create, attrs.clone()).await.unwrap().handle;
    raw.write(&h, 0, b"abc".to_vec()).await.unwrap();
    raw.write(&h, 10, b"z".to_vec()).await.unwrap();
    raw.close(&h).await.unwrap();
    let md = std::fs::metadata(dir.path().join("new")).unwrap();
    assert_eq!(md.mode() & 0o777, 0o600, "created with the given mode");
    assert_eq!(
        std::fs::read(dir.path().join("new")).unwrap(),
        b"abc\0\0\0\0\0\0\0z",
        "writes land at their offsets"
    );
    let e = raw.open("new", create, attrs).await.unwrap_err();
    assert_eq!(
        status_code(&e),
        StatusCode::Failure,
        "EXCL on an existing file"
    );
    let h = raw
        .open(
            "new",
            OpenFlags::WRITE | OpenFlags::APPEND,
            FileAttributes::empty(),
        )
        .await
        .unwrap()
        .handle;
    raw.write(&h, 0, b"!".to_vec()).await.unwrap();
    raw.close(&h).await.unwrap();
    assert!(std::fs::read(dir.path().join("new"))
        .unwrap()
        .ends_with(b"z!"));
    let h = raw
        .open(
            "new",
            OpenFlags::WRITE | OpenFlags::TRUNCATE,
            FileAttributes::empty(),
        )
        .await
        .unwrap()
        .handle;
    raw.close(&h).await.unwrap();
    assert_eq!(std::fs::metadata(dir.path().join("new")).unwrap().len(), 0);
}

#[tokio::test]
async fn open_handles_are_capped_per_session() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    let raw = raw_session(dir.path()).await;
    let mut handles = Vec::new();
    for _ in 0..MAX_HANDLES - 1 {
        let h = raw.open("f", OpenFlags::READ, FileAttributes::empty());
        handles.push(h.await.unwrap().handle);
    }
    handles.push(raw.opendir(".").await.unwrap().handle);
    let distinct: BTreeSet<&String> = handles.iter().collect();
    assert_eq!(distinct.len(), MAX_HANDLES, "handles are distinct");
    let e = raw
        .open("f", OpenFlags::READ, FileAttributes::empty())
        .await
        .unwrap_err();
    assert_eq!(status_code(&e), StatusCode::Failure);
    assert!(e.to_string().contains("too many open handles"), "{e}");
    let e = raw.opendir(".").await.unwrap_err();
    assert_eq!(status_code(&e), StatusCode::Failure);
    // Nothing was created for a refused open.
    let e = raw
        .open(
            "g",
            OpenFlags::WRITE | OpenFlags::CREATE,
            FileAttributes::empty(),
        )
        .await
        .unwrap_err();
    assert_eq!(status_code(&e), StatusCode::Failure);
    assert!(!dir.path().join("g").exists());
    raw.close(&handles[0]).await.unwrap();
    let h = raw.open("f", OpenFlags::READ, FileAttributes::empty());
    h.await.unwrap();
}

#[tokio::test]
async fn relative_paths_resolve_against_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/f"), b"in sub").unwrap();
    let sftp = session(dir.path()).await;
    let real = std::fs::canonicalize(dir.path()).unwrap();
    let home = sftp.canonicalize(".").await.unwrap();
    assert_eq!(PathBuf::from(&home), real);
    assert_eq!(PathBuf::from(sftp.canonicalize("").await.unwrap()), real);
    assert_eq!(
        PathBuf::from(sftp.canonicalize("sub/../sub/f").await.unwrap()),
        real.join("sub/f")
    );
    // A file about to be uploaded: the last component may be missing.
    assert_eq!(
        PathBuf::from(sftp.canonicalize("sub/new").await.unwrap()),
        real.join("sub/new")
    );
    let e = sftp.canonicalize("nope/new").await.unwrap_err();
    assert_eq!(status_code(&e), StatusCode::NoSuchFile);
    assert_eq!(sftp.read("sub/f").await.unwrap(), b"in sub");
    let abs = format!("{home}/sub/f");
    assert_eq!(sftp.read(abs).await.unwrap(), b"in sub");
    let info = sftp
        .fs_info(".")
        .await
        .unwrap()
        .expect("statvfs@openssh.com");
    assert!(info.blocks > 0 && info.block_size > 0, "{info:?}");
}

// ------------------------------------------- through the real agent binary

/// The real agent on one end of a socket pair, the daemon's client on the
/// other.
async fn agent(cwd: &Path) -> (AgentClient, std::process::Child) {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_airlock-agent"));
    cmd.arg(format!("--fd={fd}"))
        .env("AIRLOCK_AGENT_CWD", cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Let the socket survive exec.
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            // Never outlive the test.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn airlock-agent");
    drop(theirs);
    let (client, _hello) = AgentClient::connect(ours).await.expect("agent hello");
    (client, child)
}

#[tokio::test]
async fn sftp_open_tunnels_a_session_through_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (client, mut child) = agent(dir.path()).await;
    let tunnel = client.sftp_open().await.unwrap().expect("sftpOpen");
    let sftp = SftpSession::new(tunnel)
        .await
        .expect("sftp over the tunnel");
    // More than the tunnel's window each way.
    let data = noise(11, 3 * 1024 * 1024 + 7);
    let mut file = sftp.create("up.bin").await.unwrap();
    file.write_all(&data).await.unwrap();
    file.shutdown().await.unwrap();
    drop(file);
    assert!(std::fs::read(dir.path().join("up.bin")).unwrap() == data);
    assert!(sftp.read("up.bin").await.unwrap() == data);
    let names: Vec<String> = sftp
        .read_dir(".")
        .await
        .unwrap()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["up.bin"]);
    // Two sessions at once, each its own.
    let other = SftpSession::new(client.sftp_open().await.unwrap().unwrap())
        .await
        .unwrap();
    assert_eq!(
        other.metadata("up.bin").await.unwrap().size,
        Some(data.len() as u64)
    );
    drop(other);
    sftp.close().await.unwrap();
    drop(sftp);
    // The agent is still well after its sessions end.
    let pong = client.call("ping", serde_json::Value::Null).await.unwrap();
    assert_eq!(pong.unwrap(), serde_json::json!("pong"));
    child.kill().unwrap();
    child.wait().unwrap();
}

// ------------------------------------------------- with OpenSSH's client

/// The example that serves SFTP on stdin/stdout, built by `cargo test`.
fn stdio_server() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap();
    target.join("examples").join("sftp-stdio")
}

#[test]
fn openssh_sftp_puts_gets_lists_renames_and_removes() {
    let sftp = Path::new("/usr/bin/sftp");
    if !sftp.exists() {
        eprintln!("skipped: no /usr/bin/sftp (scripts/deps.sh installs openssh-client)");
        return;
    }
    let server = stdio_server();
    assert!(
        server.exists(),
        "{} is missing: `cargo test -p airlock-agent` builds it (a `--test` filter does \
         not), as does `cargo build -p airlock-agent --example sftp-stdio`",
        server.display()
    );
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let data = noise(5, 2 * 1024 * 1024 + 99);
    std::fs::write(local.path().join("local.bin"), &data).unwrap();
    std::fs::set_permissions(
        local.path().join("local.bin"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let batch = local.path().join("batch");
    std::fs::write(
        &batch,
        "pwd\n\
         put -p local.bin up.bin\n\
         put -p local.bin kept.bin\n\
         get up.bin back.bin\n\
         mkdir dir\n\
         ln -s up.bin link\n\
         ls -l\n\
         rename up.bin dir/moved.bin\n\
         ls dir\n\
         rm dir/moved.bin\n\
         rmdir dir\n\
         df\n",
    )
    .unwrap();
    let out = Command::new(sftp)
        .arg("-b")
        .arg(&batch)
        .arg("-D")
        .arg(&server)
        .current_dir(local.path())
        .env("AIRLOCK_SFTP_CWD", remote.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sftp failed\n{stdout}\n{stderr}");
    let remote_real = std::fs::canonicalize(remote.path()).unwrap();
    assert!(
        stdout.contains(&format!(
            "Remote working directory: {}",
            remote_real.display()
        )),
        "{stdout}"
    );
    assert!(std::fs::read(local.path().join("back.bin")).unwrap() == data);
    // `put -p` kept the mode and the times.
    let (src, kept) = (
        std::fs::metadata(local.path().join("local.bin")).unwrap(),
        std::fs::metadata(remote.path().join("kept.bin")).unwrap(),
    );
    assert_eq!(kept.mode() & 0o777, 0o640);
    assert_eq!(kept.mtime(), src.mtime());
    assert!(std::fs::read(remote.path().join("kept.bin")).unwrap() == data);
    // `ls -l` printed the long names.
    let line = stdout
        .lines()
        .find(|l| l.ends_with(" up.bin") && l.starts_with('-'))
        .unwrap_or_else(|| panic!("no long name for up.bin:\n{stdout}"));
    assert!(line.starts_with("-rw-r-----"), "{line}");
    assert!(line.contains(&data.len().to_string()), "{line}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with('d') && l.ends_with(" dir")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with('l') && l.ends_with(" link")),
        "{stdout}"
    );
    assert!(stdout.contains("dir/moved.bin"), "{stdout}");
    // What is left: the copy and the link, now dangling.
    let left: BTreeSet<String> = std::fs::read_dir(remote.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, BTreeSet::from(["kept.bin".into(), "link".into()]));
    assert_eq!(
        std::fs::read_link(remote.path().join("link")).unwrap(),
        PathBuf::from("up.bin")
    );
}

#[test]
fn openssh_scp_copies_trees_and_keeps_times() {
    let scp = Path::new("/usr/bin/scp");
    if !scp.exists() {
        eprintln!("skipped: no /usr/bin/scp (scripts/deps.sh installs openssh-client)");
        return;
    }
    let server = stdio_server();
    let local = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let tree = local.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    let data = noise(9, 300 * 1024);
    std::fs::write(tree.join("sub/f.bin"), &data).unwrap();
    std::fs::write(tree.join("top.txt"), b"top").unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(981_173_106);
    std::fs::File::options()
        .write(true)
        .open(tree.join("sub/f.bin"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    // Up (`x:` names the server -D runs), then down again.
    for (from, to) in [("tree", "x:"), ("x:tree", "back")] {
        let out = Command::new(scp)
            .args(["-q", "-r", "-p", "-D"])
            .arg(&server)
            .args([from, to])
            .current_dir(local.path())
            .env("AIRLOCK_SFTP_CWD", remote.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scp {from} {to}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for root in [remote.path().join("tree"), local.path().join("back")] {
        assert!(std::fs::read(root.join("sub/f.bin")).unwrap() == data);
        assert_eq!(std::fs::read(root.join("top.txt")).unwrap(), b"top");
        let md = std::fs::metadata(root.join("sub/f.bin")).unwrap();
        assert_eq!(
            md.mtime(),
            981_173_106,
            "{}: -p keeps times",
            root.display()
        );
    }
}
