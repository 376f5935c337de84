//! Root filesystems ("images") on disk.
//!
//! An image is a directory `images/<name>/` under the daemon's data dir that
//! holds `rootfs/` (owned by real root; sandboxes see it through idmapped
//! mounts) and `image.json` (what it is, when it was built, how big it is).
//!
//! Builds happen in `images/.building-<name>-<pid>/` and are renamed into
//! place only when complete, so a crashed build never looks like an image.
//! Builders of the same name are serialised with an `flock` on
//! `images/.<name>.lock`.

mod error;
mod fsutil;
mod layout;
mod lock;
mod meta;
mod name;
mod progress;
mod recipe;
mod run;
mod store;

pub use error::ImageError;
pub use name::validate_name;
pub use progress::Progress;
pub use recipe::KNOWN_IMAGES;
pub use store::{ImageInfo, ImageStore};
