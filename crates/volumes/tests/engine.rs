//! The engine against the real kernel: real XFS pool, real loop devices,
//! real ext4 mounts. Needs root, xfsprogs and e2fsprogs. Every test cleans
//! up through `TestPool`'s Drop (even when it fails), which then checks
//! that no loop device is left backed by a file of the test's directory.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use volumes::{allocated_bytes, Object, Pool, VolumeError};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

struct TestPool {
    pool: Option<Pool>,
    dir: tempfile::TempDir,
    _serial: Serial,
}

/// A test whose other mount namespace copies every mount of the process
/// (other tests' pools and volumes too, keeping their loop devices alive for
/// a while) runs alone.
static SERIAL: RwLock<()> = RwLock::new(());

#[allow(dead_code)] // held for its Drop
enum Serial {
    Shared(RwLockReadGuard<'static, ()>),
    Exclusive(RwLockWriteGuard<'static, ()>),
}

impl TestPool {
    fn new(pool_bytes: u64) -> TestPool {
        let serial = Serial::Shared(SERIAL.read().unwrap_or_else(|e| e.into_inner()));
        Self::with(pool_bytes, serial)
    }

    fn exclusive(pool_bytes: u64) -> TestPool {
        let serial = Serial::Exclusive(SERIAL.write().unwrap_or_else(|e| e.into_inner()));
        Self::with(pool_bytes, serial)
    }

    fn with(pool_bytes: u64, serial: Serial) -> TestPool {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "these tests need root");
        let dir = tempfile::Builder::new()
            .prefix("airlock-volumes-test-")
            .tempdir()
            .unwrap();
        let pool = Pool::open(dir.path().join("engine"), pool_bytes).unwrap();
        TestPool {
            pool: Some(pool),
            dir,
            _serial: serial,
        }
    }

    fn pool(&self) -> &Pool {
        self.pool.as_ref().unwrap()
    }

    fn image(&self) -> PathBuf {
        self.pool().dir().join("pool.img")
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        let result = self.pool.as_ref().map(|p| p.unmount_pool());
        drop(self.pool.take());
        let left = wait_loops_gone(self.dir.path(), |_| false);
        if std::thread::panicking() {
            return;
        }
        if let Some(r) = result {
            r.expect("unmount_pool");
        }
        assert!(left.is_empty(), "loop devices left behind: {left:?}");
    }
}

/// Every loop device whose backing file is under `dir` (checked from
/// outside the crate, as `losetup -a` would).
fn loop_backing_files_under(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut out = Vec::new();
    for e in fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(s) = fs::read_to_string(e.path().join("loop/backing_file")) {
            if Path::new(s.trim_end()).starts_with(&dir) {
                out.push(format!(
                    "{}: {}",
                    e.file_name().to_string_lossy(),
                    s.trim_end()
                ));
            }
        }
    }
    out
}

/// Deterministic incompressible bytes.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn sha256_file(path: &Path) -> Vec<u8> {
    let mut h = Sha256::new();
    let mut f = File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().to_vec()
}

fn write_file(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

/// Attaching again right after a detach: the loop device goes by
/// autoclear only when its last opener closes it, and another process may
/// hold it open for a moment (here: a child that a parallel test was
/// spawning while this test held the device's descriptor; see
/// `Pool::attach`), so this is what the daemon does too.
fn reattach(p: &Pool, id: &str) -> volumes::Attached {
    p.attach_waiting(id, Duration::from_secs(5)).unwrap()
}

/// Waits (up to 5 s, see `reattach`) until no loop device is backed by a
/// file under `dir` that `keep` does not accept; returns what is left.
fn wait_loops_gone(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = loop_backing_files_under(dir)
            .into_iter()
            .filter(|l| !keep(l))
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn is_in_use(r: Result<impl std::fmt::Debug, VolumeError>) -> bool {
    matches!(r, Err(VolumeError::InUse { .. }))
}

#[test]
fn tools_are_installed() {
    volumes::check_tools().unwrap();
}

#[test]
fn create_attach_write_detach_reattach() {
    let t = TestPool::new(GIB);
    let p = t.pool();
    assert_eq!(p.size_bytes(), None, "the pool is made lazily");
    p.create_volume("v1", 64 * MIB).unwrap();
    assert_eq!(p.size_bytes(), Some(GIB));
    let image = p.volume_path("v1");
    assert_eq!(
        fs::metadata(&image).unwrap().len(),
        64 * MIB,
        "exactly the capacity"
    );
    assert!(allocated_bytes(&image).unwrap() < 16 * MIB, "sparse");
    assert_eq!(fs::metadata(&image).unwrap().mode() & 0o777, 0o600);
    assert!(!image.with_extension("ext4.tmp").exists());

    let a = p.attach("v1").unwrap();
    assert_eq!(a.path(), p.dir().join("mnt/v1"));
    let root = fs::metadata(a.path()).unwrap();
    assert_eq!(
        (root.uid(), root.gid(), root.mode() & 0o7777),
        (0, 0, 0o755)
    );
    assert_eq!(
        fs::metadata(p.dir().join("mnt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );

    let big = pseudo_random(5 * MIB as usize, 7);
    write_file(&a.path().join("big.bin"), &big);
    fs::create_dir(a.path().join("sub")).unwrap();
    write_file(&a.path().join("sub/small.txt"), b"hello volume\n");
    let want = sha256_file(&a.path().join("big.bin"));

    // A second attach of the same image, and deleting it, are refused.
    assert!(is_in_use(p.attach("v1")));
    assert!(is_in_use(p.delete_volume("v1")));

    let mp = a.path().to_path_buf();
    a.detach().unwrap();
    assert!(!mp.exists(), "mount point removed");
    assert_eq!(
        wait_loops_gone(t.dir.path(), |l| l.ends_with("pool.img")),
        Vec::<String>::new()
    );

    let a = reattach(p, "v1");
    assert_eq!(sha256_file(&a.path().join("big.bin")), want);
    assert_eq!(fs::read(a.path().join("big.bin")).unwrap(), big);
    assert_eq!(
        fs::read(a.path().join("sub/small.txt")).unwrap(),
        b"hello volume\n"
    );
    drop(a); // Drop detaches too
    assert!(!mp.exists());
    wait_loops_gone(t.dir.path(), |l| l.ends_with("pool.img"));

    p.delete_volume("v1").unwrap();
    assert!(!image.exists());
    assert!(matches!(
        p.delete_volume("v1"),
        Err(VolumeError::NotFound {
            object: Object::Volume,
            ..
        })
    ));
    assert!(matches!(
        p.attach("v1"),
        Err(VolumeError::NotFound {
            object: Object::Volume,
            ..
        })
    ));
}

#[test]
fn full_volume_gives_enospc_and_stays_in_its_bounds() {
    let t = TestPool::new(GIB);
    let p = t.pool();
    let capacity = 64 * MIB;
    p.create_volume("full", capacity).unwrap();
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    let pool_before = allocated_bytes(&t.image()).unwrap();
    let a = p.attach("full").unwrap();
    let chunk = pseudo_random(MIB as usize, 3);
    let mut f = File::create(a.path().join("fill")).unwrap();
    let mut written = 0u64;
    let err = loop {
        match f.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e) => break e,
        }
        assert!(written <= capacity, "wrote past the capacity");
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    // No blocks held back for host root: nearly all of it is usable.
    assert!(written > capacity * 8 / 10, "only {written} bytes fitted");
    drop(f);
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    let vol_alloc = allocated_bytes(&p.volume_path("full")).unwrap();
    assert!(
        vol_alloc <= capacity,
        "volume image holds {vol_alloc} bytes"
    );
    let pool_growth = allocated_bytes(&t.image())
        .unwrap()
        .saturating_sub(pool_before);
    assert!(
        pool_growth <= capacity + 8 * MIB,
        "pool.img grew by {pool_growth} bytes for a {capacity}-byte volume"
    );
    eprintln!(
        "filled: wrote {written} bytes; image holds {vol_alloc}; pool.img grew {pool_growth}"
    );

    // Mounted with discard: freed blocks are punched out of the image, so
    // the space goes back to the pool.
    fs::remove_file(a.path().join("fill")).unwrap();
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    let after_rm = allocated_bytes(&p.volume_path("full")).unwrap();
    eprintln!("after deleting the file the image holds {after_rm}");
    assert!(after_rm < 16 * MIB, "image still holds {after_rm} bytes");
    a.detach().unwrap();
}

#[test]
fn snapshot_fork_and_independence() {
    let t = TestPool::new(GIB);
    let p = t.pool();
    p.create_volume("orig", 64 * MIB).unwrap();
    let a = p.attach("orig").unwrap();
    let data = pseudo_random(8 * MIB as usize, 11);
    write_file(&a.path().join("data"), &data);
    fs::write(a.path().join("note"), b"before").unwrap(); // not synced: the freeze flushes it
                                                          // Snapshot while attached: the filesystem is frozen for the clone.
    p.create_snapshot("orig", "s1").unwrap();
    fs::write(a.path().join("note"), b"after").unwrap();
    assert!(matches!(
        p.create_snapshot("orig", "s1"),
        Err(VolumeError::AlreadyExists {
            object: Object::Snapshot,
            ..
        })
    ));
    assert!(matches!(
        p.create_snapshot("nope", "s2"),
        Err(VolumeError::NotFound {
            object: Object::Volume,
            ..
        })
    ));
    // Shares blocks with the volume rather than copying them.
    let snap = p.snapshot_path("s1");
    assert_eq!(fs::metadata(&snap).unwrap().len(), 64 * MIB);

    assert!(matches!(
        p.create_volume_from_snapshot("s1", "small", 32 * MIB),
        Err(VolumeError::InvalidCapacity { .. })
    ));
    assert_eq!(p.snapshot_capacity("s1").unwrap(), 64 * MIB);
    p.create_volume_from_snapshot("s1", "fork", 64 * MIB)
        .unwrap();
    assert!(matches!(
        p.create_volume_from_snapshot("s1", "fork", 64 * MIB),
        Err(VolumeError::AlreadyExists {
            object: Object::Volume,
            ..
        })
    ));
    assert!(matches!(
        p.create_volume_from_snapshot("nope", "fork2", 64 * MIB),
        Err(VolumeError::NotFound {
            object: Object::Snapshot,
            ..
        })
    ));
    // Original and fork mounted at once (same ext4 UUID: ext4 allows it).
    let f = p.attach("fork").unwrap();
    assert_eq!(fs::read(f.path().join("data")).unwrap(), data);
    assert_eq!(fs::read(f.path().join("note")).unwrap(), b"before");
    write_file(&f.path().join("data"), b"fork wrote this");
    write_file(&f.path().join("only-in-fork"), b"x");
    f.detach().unwrap();
    // A fork may be bigger than its snapshot: the filesystem grows with it.
    p.create_volume_from_snapshot("s1", "grown", 128 * MIB)
        .unwrap();
    let g = p.attach("grown").unwrap();
    assert_eq!(fs::read(g.path().join("note")).unwrap(), b"before");
    let st = nix::sys::statvfs::statvfs(g.path()).unwrap();
    let total = st.blocks() as u64 * st.fragment_size() as u64;
    assert!(total > 100 * MIB, "grown filesystem is {total} bytes");
    g.detach().unwrap();

    assert_eq!(fs::read(a.path().join("data")).unwrap(), data);
    assert_eq!(fs::read(a.path().join("note")).unwrap(), b"after");
    assert!(!a.path().join("only-in-fork").exists());
    a.detach().unwrap();

    // The snapshot can go while its fork lives, and the other way round.
    p.delete_snapshot("s1").unwrap();
    let f = reattach(p, "fork");
    assert_eq!(fs::read(f.path().join("data")).unwrap(), b"fork wrote this");
    f.detach().unwrap();
    let a = reattach(p, "orig");
    assert_eq!(fs::read(a.path().join("data")).unwrap(), data);
    a.detach().unwrap();
    assert!(matches!(
        p.delete_snapshot("s1"),
        Err(VolumeError::NotFound {
            object: Object::Snapshot,
            ..
        })
    ));
}

/// A process in another mount namespace holds the volume's filesystem (as
/// a sandbox's namespace does, through its own bind mount): after we detach,
/// the loop device stays until that process exits, and attach must refuse
/// until then.
#[test]
fn held_by_another_namespace_then_attach_waiting() {
    let t = TestPool::exclusive(GIB);
    let p = t.pool();
    p.create_volume("held", 32 * MIB).unwrap();
    let a = p.attach("held").unwrap();
    fs::write(a.path().join("x"), b"1").unwrap();
    let hold = t.dir.path().join("hold");
    fs::create_dir(&hold).unwrap();
    let mut child = hold_mount(a.path(), &hold, Duration::from_millis(1500));
    a.detach().unwrap();
    assert!(
        is_in_use(p.attach("held")),
        "the other namespace still holds it"
    );
    assert!(is_in_use(p.delete_volume("held")));
    assert!(is_in_use(
        p.attach_waiting("held", Duration::from_millis(100))
    ));
    let started = Instant::now();
    let a = p.attach_waiting("held", Duration::from_secs(20)).unwrap();
    eprintln!("attach_waiting waited {:?}", started.elapsed());
    assert_eq!(fs::read(a.path().join("x")).unwrap(), b"1");
    assert!(child.wait().unwrap().success());
    a.detach().unwrap();
}

/// Starts a process in a new private mount namespace (a copy of ours) that
/// bind-mounts `src` at `dst` there and lives for `d`; returns once the bind
/// mount exists.
fn hold_mount(src: &Path, dst: &Path, d: Duration) -> Child {
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" "$2" && exec sleep "$3""#)
        .arg("sh")
        .arg(src)
        .arg(dst)
        .arg(format!("{}", d.as_secs_f64()))
        .spawn()
        .expect("unshare (util-linux)");
    let deadline = Instant::now() + Duration::from_secs(5);
    let dst = dst.to_string_lossy().into_owned();
    loop {
        let mounts =
            fs::read_to_string(format!("/proc/{}/mountinfo", child.id())).unwrap_or_default();
        if mounts
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(dst.as_str()))
        {
            return child;
        }
        if Instant::now() >= deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the holding process did not set up its bind mount");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn reap_mounts_after_a_leak() {
    let t = TestPool::new(GIB);
    let p = t.pool();
    p.create_volume("leak", 32 * MIB).unwrap();
    let a = p.attach("leak").unwrap();
    let mp = a.path().to_path_buf();
    std::mem::forget(a); // as if the daemon had been killed
    assert!(is_in_use(p.attach("leak")));
    assert_eq!(p.reap_mounts().unwrap(), 1);
    assert!(!mp.exists());
    let a = reattach(p, "leak");
    a.detach().unwrap();
    assert_eq!(p.reap_mounts().unwrap(), 0);
}

#[test]
fn remove_orphans_keeps_only_known_images() {
    let t = TestPool::new(GIB);
    let p = t.pool();
    for id in ["keep", "orphan", "busy"] {
        p.create_volume(id, 16 * MIB).unwrap();
    }
    p.create_snapshot("keep", "snap-keep").unwrap();
    p.create_snapshot("keep", "snap-orphan").unwrap();
    let vols = p.volume_path("keep").parent().unwrap().to_path_buf();
    let snaps = p.snapshot_path("keep").parent().unwrap().to_path_buf();
    fs::write(vols.join("crashed.ext4.tmp"), b"half").unwrap();
    fs::write(vols.join("keep.ext4.tmp"), b"half").unwrap();
    fs::write(snaps.join("s.ext4.tmp"), b"half").unwrap();
    fs::write(vols.join("README"), b"not ours").unwrap();
    let busy = p.attach("busy").unwrap();

    let mut removed = p
        .remove_orphans(["keep"], vec!["snap-keep".to_string()])
        .unwrap();
    removed.sort();
    let mut want = vec![
        vols.join("crashed.ext4.tmp"),
        vols.join("keep.ext4.tmp"),
        vols.join("orphan.ext4"),
        snaps.join("s.ext4.tmp"),
        snaps.join("snap-orphan.ext4"),
    ];
    want.sort();
    assert_eq!(removed, want);
    assert!(p.volume_path("keep").exists());
    assert!(p.snapshot_path("snap-keep").exists());
    assert!(p.volume_path("busy").exists(), "in use: kept");
    assert!(vols.join("README").exists());
    busy.detach().unwrap();
    wait_loops_gone(t.dir.path(), |l| l.ends_with("pool.img"));
    assert_eq!(
        p.remove_orphans(["keep"], ["snap-keep"]).unwrap(),
        vec![p.volume_path("busy")]
    );
}

#[test]
fn reopen_mounts_the_existing_pool() {
    let mut t = TestPool::new(GIB);
    let dir = t.pool().dir().to_path_buf();
    assert!(matches!(
        Pool::open(&dir, GIB),
        Err(VolumeError::InUse {
            object: Object::Pool,
            ..
        })
    ));
    t.pool().create_volume("persist", 32 * MIB).unwrap();
    let a = t.pool().attach("persist").unwrap();
    write_file(&a.path().join("f"), b"survives");
    std::mem::forget(a); // unmount_pool must detach it
    t.pool().unmount_pool().unwrap();
    assert!(loop_backing_files_under(t.dir.path()).is_empty());
    drop(t.pool.take());

    // As after a reboot: pool.img exists, nothing is mounted.
    t.pool = Some(Pool::open(&dir, 10 * GIB).unwrap());
    let p = t.pool();
    assert_eq!(
        p.size_bytes(),
        Some(GIB),
        "the existing size, not the new request"
    );
    let a = reattach(p, "persist");
    assert_eq!(fs::read(a.path().join("f")).unwrap(), b"survives");
    a.detach().unwrap();
    // Opening again while mounted finds the mount rather than mounting twice.
    drop(t.pool.take());
    t.pool = Some(Pool::open(&dir, GIB).unwrap());
    assert_eq!(t.pool().size_bytes(), Some(GIB));
    assert_eq!(
        wait_loops_gone(t.dir.path(), |l| l.ends_with("pool.img")),
        Vec::<String>::new()
    );
    assert_eq!(
        loop_backing_files_under(t.dir.path()).len(),
        1,
        "one loop device: the pool's"
    );
}

#[test]
fn refusals() {
    let t = TestPool::new(GIB);
    let p = t.pool();
    assert!(matches!(
        p.attach("missing"),
        Err(VolumeError::NotFound { .. })
    ));
    assert!(matches!(
        p.create_volume("../escape", 64 * MIB),
        Err(VolumeError::InvalidId { .. })
    ));
    assert!(matches!(
        p.create_volume("", 64 * MIB),
        Err(VolumeError::InvalidId { .. })
    ));
    assert!(matches!(
        p.create_volume("tiny", MIB),
        Err(VolumeError::InvalidCapacity { .. })
    ));
    assert!(matches!(
        p.create_volume("huge", 2 * GIB),
        Err(VolumeError::InvalidCapacity { .. })
    ));
    p.create_volume("dup", 16 * MIB).unwrap();
    assert!(matches!(
        p.create_volume("dup", 16 * MIB),
        Err(VolumeError::AlreadyExists { .. })
    ));
    // Odd sizes are kept exactly.
    p.create_volume("odd", 1_500_000_000 / 50).unwrap();
    assert_eq!(
        fs::metadata(p.volume_path("odd")).unwrap().len(),
        30_000_000
    );
    let e = VolumeError::ToolMissing {
        tool: "mkfs.xfs",
        package: "xfsprogs",
    };
    assert_eq!(
        e.to_string(),
        "mkfs.xfs is not installed; install the xfsprogs package"
    );
}

#[test]
fn pool_is_capped_by_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let free = || {
        let vfs = nix::sys::statvfs::statvfs(dir.path()).unwrap();
        vfs.blocks_available() as u64 * vfs.fragment_size() as u64
    };
    let p = Pool::open(dir.path(), u64::MAX / 2).unwrap();
    let free_before = free();
    let size = p.ensure_created().unwrap();
    // 90% of the free space, with slack for other writers on this disk.
    assert!(
        size <= (free_before + GIB) / 10 * 9,
        "{size} vs free {free_before}"
    );
    assert!(
        size >= free_before.saturating_sub(2 * GIB) / 10 * 9,
        "{size} vs free {free_before}"
    );
    assert_eq!(p.size_bytes(), Some(size));
    p.unmount_pool().unwrap();
    assert!(loop_backing_files_under(dir.path()).is_empty());
}

/// The figures asked for: pool creation, 1 GiB volume creation, attach and
/// detach, and a snapshot of a volume with 200 MiB written.
#[test]
fn timings() {
    let t = TestPool::new(4 * GIB);
    let p = t.pool();
    let started = Instant::now();
    let size = p.ensure_created().unwrap();
    let pool_t = started.elapsed();

    let started = Instant::now();
    p.create_volume("big", GIB).unwrap();
    let create_t = started.elapsed();

    let started = Instant::now();
    let a = p.attach("big").unwrap();
    let attach_t = started.elapsed();

    let chunk = pseudo_random(8 * MIB as usize, 5);
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(a.path().join("200m"))
        .unwrap();
    for _ in 0..25 {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);

    let started = Instant::now();
    p.create_snapshot("big", "snap").unwrap();
    let snap_attached_t = started.elapsed();
    // Whether the kernel took direct I/O for the loop devices (it falls
    // back to buffered I/O where the backing file cannot do it).
    for e in fs::read_dir("/sys/block").unwrap().flatten() {
        let dir = e.path().join("loop");
        if let Ok(b) = fs::read_to_string(dir.join("backing_file")) {
            if Path::new(b.trim_end()).starts_with(p.dir()) {
                let dio = fs::read_to_string(dir.join("dio")).unwrap_or_default();
                eprintln!("FIGURES {} direct I/O: {}", b.trim_end(), dio.trim_end());
            }
        }
    }

    let started = Instant::now();
    a.detach().unwrap();
    let detach_t = started.elapsed();

    let started = Instant::now();
    p.create_snapshot("big", "snap2").unwrap();
    let snap_detached_t = started.elapsed();

    let started = Instant::now();
    p.create_volume_from_snapshot("snap", "fork", 1 << 30)
        .unwrap();
    let fork_t = started.elapsed();

    eprintln!(
        "FIGURES pool({size} B) create+mount {pool_t:?}; 1 GiB volume create {create_t:?}; \
         attach {attach_t:?}; detach {detach_t:?}; snapshot with 200 MiB written: \
         {snap_attached_t:?} attached (freeze+clone), {snap_detached_t:?} detached; \
         fork from snapshot {fork_t:?}; volume image allocated {} B, snapshot allocated {} B",
        allocated_bytes(&p.volume_path("big")).unwrap(),
        allocated_bytes(&p.snapshot_path("snap")).unwrap(),
    );
    assert!(snap_attached_t < Duration::from_secs(1));
    assert!(snap_detached_t < Duration::from_secs(1));
    assert!(fork_t < Duration::from_secs(1));
}

/// A snapshot made from a directory tree keeps owners and modes, mounts
/// read-only for booting, and forks into a writable volume.
#[test]
fn snapshot_from_a_tree_boots_read_only_and_forks() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let t = TestPool::new(GIB);
    let p = t.pool();
    let tree = tempfile::tempdir().unwrap();
    fs::create_dir(tree.path().join("etc")).unwrap();
    fs::write(tree.path().join("etc/os-release"), "ID=test\n").unwrap();
    fs::write(tree.path().join("tool"), "#!/bin/sh\n").unwrap();
    // chown clears setuid: owner first, then the mode.
    std::os::unix::fs::chown(tree.path().join("tool"), Some(1000), Some(1000)).unwrap();
    fs::set_permissions(tree.path().join("tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    p.create_snapshot_from_tree("builtin-test", tree.path(), 64 * MIB)
        .unwrap();
    assert!(p
        .snapshot_ids()
        .unwrap()
        .contains(&"builtin-test".to_string()));

    let ro = p.attach_snapshot("builtin-test").unwrap();
    assert_eq!(
        fs::read_to_string(ro.path().join("etc/os-release")).unwrap(),
        "ID=test\n"
    );
    let meta = fs::metadata(ro.path().join("tool")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (1000, 0o4755));
    let err = fs::write(ro.path().join("new"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    // One read-only mount at a time; the caller shares it.
    assert!(matches!(
        p.attach_snapshot("builtin-test"),
        Err(VolumeError::InUse { .. })
    ));
    ro.detach().unwrap();

    p.create_volume_from_snapshot("builtin-test", "root", 128 * MIB)
        .unwrap();
    let rw = p.attach("root").unwrap();
    fs::write(rw.path().join("etc/written"), "persisted").unwrap();
    rw.detach().unwrap();
    let rw = p.attach("root").unwrap();
    assert_eq!(
        fs::read_to_string(rw.path().join("etc/written")).unwrap(),
        "persisted"
    );
    rw.detach().unwrap();
}
