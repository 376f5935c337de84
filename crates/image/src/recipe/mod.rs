//! Recipes: how to fill a rootfs for a named image. The store owns where
//! and when (staging, locking, renaming); a recipe only knows what.

mod debian;

use crate::{ImageError, Progress};
use std::path::Path;

/// The images `build` knows how to make.
pub const KNOWN_IMAGES: &[&str] = &["default"];

pub(crate) trait Recipe: Sync {
    /// Bumped whenever the recipe changes what it builds, so images made
    /// by an older one are rebuilt on first use.
    fn version(&self) -> u32;

    /// Creates `rootfs` (which does not exist yet), using `work` (an empty
    /// directory removed afterwards) for downloads. Returns a one-line
    /// summary of the contents for `image.json`.
    fn build(
        &self,
        rootfs: &Path,
        work: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<String, ImageError>;
}

/// The recipe for `name`, or `UnknownImage` listing the known ones.
pub(crate) fn recipe_for(name: &str) -> Result<&'static dyn Recipe, ImageError> {
    match name {
        "default" => Ok(&debian::DEFAULT),
        _ => Err(ImageError::UnknownImage {
            name: name.to_string(),
            known: KNOWN_IMAGES.join(", "),
        }),
    }
}
