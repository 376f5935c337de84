//! Where things live under the data dir. Everything that is not a finished
//! image starts with a dot, so listing images is "every entry without one".

use std::path::{Path, PathBuf};

const BUILDING: &str = ".building-";
const REMOVING: &str = ".removing-";

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    images: PathBuf,
}

/// An unfinished directory left by a build or a removal, parsed from its name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Leftover {
    pub name: String,
    pub pid: u32,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            images: data_dir.join("images"),
        }
    }

    pub fn images_dir(&self) -> &Path {
        &self.images
    }

    pub fn image_dir(&self, name: &str) -> PathBuf {
        self.images.join(name)
    }

    pub fn rootfs(&self, name: &str) -> PathBuf {
        self.image_dir(name).join("rootfs")
    }

    pub fn meta_file(image_dir: &Path) -> PathBuf {
        image_dir.join("image.json")
    }

    pub fn lock_file(&self, name: &str) -> PathBuf {
        self.images.join(format!(".{name}.lock"))
    }

    /// The pid keeps builders of different processes apart even before the
    /// lock is checked, and tells a human whose leftover it was.
    pub fn staging_dir(&self, name: &str, pid: u32) -> PathBuf {
        self.images.join(format!("{BUILDING}{name}-{pid}"))
    }

    /// An image being deleted is renamed here first, so a removal that dies
    /// half way never leaves a half image under the real name.
    pub fn removing_dir(&self, name: &str, pid: u32) -> PathBuf {
        self.images.join(format!("{REMOVING}{name}-{pid}"))
    }

    /// Parses a `.building-<name>-<pid>` or `.removing-<name>-<pid>` entry.
    pub fn parse_leftover(file_name: &str) -> Option<Leftover> {
        let rest = file_name
            .strip_prefix(BUILDING)
            .or_else(|| file_name.strip_prefix(REMOVING))?;
        // Names may contain '-', pids never do: split at the last one.
        let (name, pid) = rest.rsplit_once('-')?;
        crate::validate_name(name).ok()?;
        Some(Leftover {
            name: name.to_string(),
            pid: pid.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let l = Layout::new(Path::new("/var/lib/airlock"));
        assert_eq!(l.images_dir(), Path::new("/var/lib/airlock/images"));
        assert_eq!(
            l.rootfs("default"),
            Path::new("/var/lib/airlock/images/default/rootfs")
        );
        assert_eq!(
            Layout::meta_file(&l.image_dir("default")),
            Path::new("/var/lib/airlock/images/default/image.json")
        );
        assert_eq!(
            l.lock_file("default"),
            Path::new("/var/lib/airlock/images/.default.lock")
        );
        assert_eq!(
            l.staging_dir("default", 42),
            Path::new("/var/lib/airlock/images/.building-default-42")
        );
    }

    #[test]
    fn parses_leftovers() {
        let l = Layout::new(Path::new("/d"));
        for dir in [l.staging_dir("my-img-2", 7), l.removing_dir("my-img-2", 7)] {
            let file_name = dir.file_name().unwrap().to_str().unwrap();
            assert_eq!(
                Layout::parse_leftover(file_name),
                Some(Leftover {
                    name: "my-img-2".into(),
                    pid: 7
                })
            );
        }
        for other in [
            "default",
            ".default.lock",
            ".building-",
            ".building-x",
            ".building-x-y",
            ".building--1",
        ] {
            assert_eq!(Layout::parse_leftover(other), None, "{other}");
        }
    }
}
