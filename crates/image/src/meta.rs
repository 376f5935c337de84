//! `image.json`: what an image is. Written into the staging directory
//! before the rename, so every visible image has one.

use crate::ImageError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Bumped when the layout of an image changes incompatibly.
pub(crate) const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Meta {
    pub format: u32,
    pub name: String,
    pub created_unix: u64,
    pub size_bytes: u64,
    pub summary: String,
    /// Version of the recipe that built it (0 for images from before
    /// recipes had versions); an older one is rebuilt by `ensure`.
    #[serde(default)]
    pub recipe: u32,
}

impl Meta {
    pub fn read(path: &Path) -> Result<Self, ImageError> {
        let bytes = std::fs::read(path).map_err(ImageError::io("read", path))?;
        serde_json::from_slice(&bytes).map_err(|error| ImageError::BadMetadata {
            path: path.to_path_buf(),
            error,
        })
    }

    pub fn write(&self, path: &Path) -> Result<(), ImageError> {
        let mut text =
            serde_json::to_string_pretty(self).map_err(|error| ImageError::BadMetadata {
                path: path.to_path_buf(),
                error,
            })?;
        text.push('\n');
        std::fs::write(path, text).map_err(ImageError::io("write", path))
    }
}
