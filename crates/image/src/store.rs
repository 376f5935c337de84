//! The image store: finding, building and removing images under a data
//! dir. Builds are staged next to the images and renamed into place, under
//! a per-name lock; see the crate docs for the layout.

use crate::fsutil::{disk_usage, ensure_dir, remove_tree};
use crate::layout::Layout;
use crate::lock::NameLock;
use crate::meta::{Meta, FORMAT};
use crate::recipe::{recipe_for, Recipe};
use crate::{validate_name, ImageError, Progress};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Images under one data dir (e.g. `/var/lib/airlock`).
#[derive(Debug, Clone)]
pub struct ImageStore {
    layout: Layout,
}

/// A finished image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub name: String,
    /// The root filesystem, owned by uid 0.
    pub rootfs: PathBuf,
    pub created_unix: u64,
    /// Bytes on disk (like `du -s`).
    pub size_bytes: u64,
    /// What is inside, e.g. "debian bookworm minbase, python3 3.11.2-1+b1, ...".
    pub summary: String,
    /// Version of the recipe that built it.
    pub recipe: u32,
}

impl ImageStore {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            layout: Layout::new(&data_dir.into()),
        }
    }

    /// Every finished image, sorted by name. Entries that are not images
    /// (unreadable metadata) are skipped with a warning rather than hiding
    /// all the others.
    pub fn list(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let dir = self.layout.images_dir();
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ImageError::io("read directory", dir)(e)),
        };
        let mut images = Vec::new();
        for entry in entries {
            let entry = entry.map_err(ImageError::io("read directory", dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if validate_name(&name).is_err() {
                continue; // staging dirs, lock files, strangers
            }
            match self.get(&name) {
                Ok(Some(info)) => images.push(info),
                Ok(None) => {}
                Err(e) => tracing::warn!(image = %name, error = %e, "skipping unreadable image"),
            }
        }
        images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(images)
    }

    /// The image called `name`, if it has been built.
    pub fn get(&self, name: &str) -> Result<Option<ImageInfo>, ImageError> {
        validate_name(name)?;
        let dir = self.layout.image_dir(name);
        let meta_path = Layout::meta_file(&dir);
        match fs::symlink_metadata(&meta_path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ImageError::io("stat", meta_path)(e)),
        }
        let meta = Meta::read(&meta_path)?;
        let rootfs = self.layout.rootfs(name);
        if !rootfs.is_dir() {
            return Err(ImageError::io("find rootfs", rootfs)(
                io::ErrorKind::NotFound.into(),
            ));
        }
        Ok(Some(ImageInfo {
            name: name.to_string(),
            rootfs,
            created_unix: meta.created_unix,
            size_bytes: meta.size_bytes,
            summary: meta.summary,
            recipe: meta.recipe,
        }))
    }

    /// Builds the named image; an existing one is kept unless `force`.
    /// Concurrent builders of one name wait for each other, so the second
    /// finds the first one's image ready.
    pub fn build(
        &self,
        name: &str,
        force: bool,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ImageInfo, ImageError> {
        validate_name(name)?;
        let recipe = recipe_for(name)?;
        self.build_with(name, force, recipe, progress)
    }

    /// Returns the image, building it first when missing.
    pub fn ensure(
        &self,
        name: &str,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ImageInfo, ImageError> {
        let current = recipe_for(name)?.version();
        match self.get(name)? {
            Some(info) if info.recipe >= current => Ok(info),
            Some(info) => {
                let msg = format!(
                    "image {name} was built by recipe version {}, this airlock has version {current}: rebuilding",
                    info.recipe
                );
                progress(Progress::Stage(&msg));
                self.build(name, true, progress)
            }
            None => self.build(name, false, progress),
        }
    }

    /// Deletes the image. Sandboxes still using its rootfs are the caller's
    /// concern.
    pub fn remove(&self, name: &str) -> Result<(), ImageError> {
        validate_name(name)?;
        let _lock = self.lock(name, &mut |_| {})?;
        let dir = self.layout.image_dir(name);
        if !dir.exists() {
            return Err(ImageError::NotFound {
                name: name.to_string(),
                dir: self.layout.images_dir().to_path_buf(),
            });
        }
        // Rename first so a removal that dies half way leaves a leftover,
        // not a half image under the real name.
        let doomed = self.layout.removing_dir(name, std::process::id());
        fs::rename(&dir, &doomed).map_err(ImageError::io("rename", &dir))?;
        remove_tree(&doomed)
    }

    pub(crate) fn build_with(
        &self,
        name: &str,
        force: bool,
        recipe: &dyn Recipe,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ImageInfo, ImageError> {
        validate_name(name)?;
        let _lock = self.lock(name, progress)?;
        self.remove_leftovers(name)?;
        if !force {
            if let Some(info) = self.get(name)? {
                return Ok(info);
            }
        }

        let started = Instant::now();
        let staging = self.layout.staging_dir(name, std::process::id());
        ensure_dir(&staging, 0o755)?;
        // Any early return below removes the staging dir; a crash leaves it
        // for remove_leftovers.
        let mut guard = RemoveOnDrop(Some(staging.clone()));
        let work = staging.join("work");
        ensure_dir(&work, 0o700)?;
        let rootfs = staging.join("rootfs");
        let summary = recipe.build(&rootfs, &work, progress)?;
        remove_tree(&work)?;

        progress(Progress::Stage("measure and record"));
        let meta = Meta {
            format: FORMAT,
            name: name.to_string(),
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            size_bytes: disk_usage(&rootfs)?,
            summary,
            recipe: recipe.version(),
        };
        meta.write(&Layout::meta_file(&staging))?;

        let target = self.layout.image_dir(name);
        if exchange(&staging, &target).is_ok() {
            // The staging path now holds the old image: the guard deletes it.
            guard.finish_now();
        } else {
            // No old image (or no RENAME_EXCHANGE on this filesystem).
            if target.exists() {
                let old = self.layout.removing_dir(name, std::process::id());
                fs::rename(&target, &old).map_err(ImageError::io("rename", &target))?;
                rename_into_place(&staging, &target)?;
                guard.0 = Some(old);
            } else {
                rename_into_place(&staging, &target)?;
                guard.0 = None;
            }
            guard.finish_now();
        }

        let info = self.get(name)?.ok_or_else(|| {
            ImageError::io("find new image", &target)(io::ErrorKind::NotFound.into())
        })?;
        progress(Progress::Done {
            secs: started.elapsed().as_secs_f64(),
        });
        Ok(info)
    }

    /// Takes the build lock of `name`, telling the user when it must wait.
    fn lock(&self, name: &str, progress: &mut dyn FnMut(Progress)) -> Result<NameLock, ImageError> {
        let dir = self.layout.images_dir();
        fs::create_dir_all(dir).map_err(ImageError::io("create directory", dir))?;
        let path = self.layout.lock_file(name);
        if let Some(lock) = NameLock::try_acquire(&path)? {
            return Ok(lock);
        }
        progress(Progress::Stage(&format!(
            "waiting for another build of image {name:?}"
        )));
        NameLock::acquire(&path)
    }

    /// Removes staging and removal dirs of builds that died. Those of
    /// `name` are dead by definition (we hold its lock); those of other
    /// names only when nobody holds their lock.
    fn remove_leftovers(&self, name: &str) -> Result<(), ImageError> {
        let dir = self.layout.images_dir();
        for entry in fs::read_dir(dir).map_err(ImageError::io("read directory", dir))? {
            let entry = entry.map_err(ImageError::io("read directory", dir))?;
            let Some(leftover) = entry.file_name().to_str().and_then(Layout::parse_leftover) else {
                continue;
            };
            let _other = if leftover.name == name {
                None
            } else {
                match NameLock::try_acquire(&self.layout.lock_file(&leftover.name))? {
                    Some(lock) => Some(lock),
                    None => continue, // being built right now
                }
            };
            tracing::info!(path = %entry.path().display(), pid = leftover.pid, "removing leftover of a dead build");
            remove_tree(&entry.path())?;
        }
        Ok(())
    }
}

/// Deletes a directory tree when dropped, unless its path was taken.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn finish_now(&mut self) {
        if let Some(path) = self.0.take() {
            if let Err(e) = remove_tree(&path) {
                tracing::warn!(error = %e, "could not remove; the next build will");
            }
        }
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.finish_now();
    }
}

fn rename_into_place(from: &Path, to: &Path) -> Result<(), ImageError> {
    fs::rename(from, to).map_err(ImageError::io("rename into place", to))
}

/// Atomically swaps two existing directories (renameat2 RENAME_EXCHANGE), so
/// a forced rebuild never leaves a moment without an image.
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    let a = CString::new(a.as_os_str().as_bytes())?;
    let b = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Writes a marker file; counts its runs; optionally slow or failing.
    #[derive(Default)]
    struct Fake {
        runs: AtomicUsize,
        delay: Duration,
        fail: bool,
    }

    impl Recipe for Fake {
        fn version(&self) -> u32 {
            1
        }

        fn build(
            &self,
            rootfs: &Path,
            work: &Path,
            progress: &mut dyn FnMut(Progress),
        ) -> Result<String, ImageError> {
            let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
            progress(Progress::Stage("fake"));
            assert!(work.is_dir());
            fs::create_dir_all(rootfs.join("etc")).unwrap();
            fs::write(rootfs.join("etc/run"), n.to_string()).unwrap();
            std::thread::sleep(self.delay);
            if self.fail {
                return Err(ImageError::CommandFailed {
                    command: "fake".into(),
                    status: "exit status: 1".into(),
                    tail: String::new(),
                });
            }
            Ok(format!("fake run {n}"))
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn build_list_get_remove() {
        let data = tempfile::tempdir().unwrap();
        let store = ImageStore::new(data.path());
        assert!(store.list().unwrap().is_empty());
        assert_eq!(store.get("default").unwrap(), None);

        let fake = Fake::default();
        let mut events = Vec::new();
        let info = store
            .build_with("default", false, &fake, &mut |p| {
                events.push(format!("{p:?}"))
            })
            .unwrap();
        assert_eq!(info.rootfs, data.path().join("images/default/rootfs"));
        assert_eq!(info.summary, "fake run 1");
        assert!(info.size_bytes > 0 && info.created_unix > 0);
        assert!(events.last().unwrap().starts_with("Done"));
        assert_eq!(
            entries(&data.path().join("images")),
            [".default.lock", "default"]
        );
        assert_eq!(
            entries(&data.path().join("images/default")),
            ["image.json", "rootfs"]
        );

        assert_eq!(store.get("default").unwrap(), Some(info.clone()));
        assert_eq!(store.list().unwrap(), [info]);

        store.remove("default").unwrap();
        assert_eq!(store.get("default").unwrap(), None);
        assert!(matches!(
            store.remove("default"),
            Err(ImageError::NotFound { .. })
        ));
        assert_eq!(entries(&data.path().join("images")), [".default.lock"]);
    }

    #[test]
    fn existing_image_is_kept_unless_forced() {
        let data = tempfile::tempdir().unwrap();
        let store = ImageStore::new(data.path());
        let fake = Fake::default();
        store.build_with("x", false, &fake, &mut |_| {}).unwrap();
        let again = store.build_with("x", false, &fake, &mut |_| {}).unwrap();
        assert_eq!(fake.runs.load(Ordering::SeqCst), 1);
        assert_eq!(again.summary, "fake run 1");

        let forced = store.build_with("x", true, &fake, &mut |_| {}).unwrap();
        assert_eq!(forced.summary, "fake run 2");
        assert_eq!(
            fs::read_to_string(forced.rootfs.join("etc/run")).unwrap(),
            "2"
        );
        // The old image went away with the staging dir.
        assert_eq!(entries(&data.path().join("images")), [".x.lock", "x"]);
    }

    #[test]
    fn failed_build_leaves_nothing_behind() {
        let data = tempfile::tempdir().unwrap();
        let store = ImageStore::new(data.path());
        let fake = Fake {
            fail: true,
            ..Fake::default()
        };
        assert!(store.build_with("x", false, &fake, &mut |_| {}).is_err());
        assert_eq!(store.get("x").unwrap(), None);
        assert_eq!(entries(&data.path().join("images")), [".x.lock"]);
    }

    #[test]
    fn leftovers_of_dead_builds_are_removed() {
        let data = tempfile::tempdir().unwrap();
        let store = ImageStore::new(data.path());
        let images = data.path().join("images");
        for dead in [".building-x-999999", ".removing-x-5", ".building-other-7"] {
            fs::create_dir_all(images.join(dead).join("rootfs/etc")).unwrap();
        }
        // A build of "busy" in progress (its lock is held) is left alone.
        fs::create_dir_all(images.join(".building-busy-8")).unwrap();
        let _busy = NameLock::acquire(&images.join(".busy.lock")).unwrap();

        store
            .build_with("x", false, &Fake::default(), &mut |_| {})
            .unwrap();
        assert_eq!(
            entries(&images),
            [
                ".building-busy-8",
                ".busy.lock",
                ".other.lock",
                ".x.lock",
                "x"
            ]
        );
        // Half-built dirs never show up as images.
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn concurrent_builders_build_once() {
        let data = tempfile::tempdir().unwrap();
        let fake = Arc::new(Fake {
            delay: Duration::from_millis(300),
            ..Fake::default()
        });
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (store, fake) = (ImageStore::new(data.path()), fake.clone());
                std::thread::spawn(move || {
                    store.build_with("x", false, &*fake, &mut |_| {}).unwrap()
                })
            })
            .collect();
        let infos: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(fake.runs.load(Ordering::SeqCst), 1);
        assert!(infos.iter().all(|i| i == &infos[0]));
    }

    #[test]
    fn unknown_and_invalid_names() {
        let data = tempfile::tempdir().unwrap();
        let store = ImageStore::new(data.path());
        let err = store.build("nope", false, &mut |_| {}).unwrap_err();
        assert!(matches!(err, ImageError::UnknownImage { .. }));
        assert!(err.to_string().contains("default"), "{err}");
        for bad in ["../etc", ".x", ""] {
            assert!(matches!(
                store.get(bad),
                Err(ImageError::InvalidName { .. })
            ));
            assert!(matches!(
                store.build(bad, false, &mut |_| {}),
                Err(ImageError::InvalidName { .. })
            ));
            assert!(matches!(
                store.remove(bad),
                Err(ImageError::InvalidName { .. })
            ));
        }
    }

    #[test]
    fn unreadable_image_is_skipped_by_list() {
        let data = tempfile::tempdir().unwrap();
        let store = ImageStore::new(data.path());
        store
            .build_with("good", false, &Fake::default(), &mut |_| {})
            .unwrap();
        let bad = data.path().join("images/bad");
        fs::create_dir_all(bad.join("rootfs")).unwrap();
        fs::write(bad.join("image.json"), "{").unwrap();
        assert!(matches!(
            store.get("bad"),
            Err(ImageError::BadMetadata { .. })
        ));
        let names: Vec<_> = store.list().unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["good"]);
    }
}
