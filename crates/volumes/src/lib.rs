//! The on-disk storage engine for airlock's persistent volumes and
//! snapshots (as the Deno Sandbox protocol needs them).
//!
//! Layout under the engine's directory `<dir>`:
//!
//! ```text
//! <dir>/lock                      flock: one daemon per directory
//! <dir>/pool.img                  sparse file holding an XFS filesystem (reflink=1)
//! <dir>/pool/                     pool.img loop-mounted here (nosuid,nodev,noexec)
//! <dir>/pool/volumes/<id>.ext4    a volume: sparse ext4 image of exactly `capacity` bytes
//! <dir>/pool/snapshots/<id>.ext4  a snapshot: reflink clone of a volume image
//! <dir>/mnt/<id>                  where an attached volume is mounted (mode 0700 parent)
//! ```
//!
//! Why this design:
//!
//! * **One XFS pool in one file.** Everything volumes can ever write lands
//!   inside `pool.img`, whose size is fixed when it is made (capped at 90% of
//!   the free space where it lives), so volumes can never fill the host's
//!   disk beyond the pool. XFS with `reflink=1` gives the FICLONE ioctl:
//!   snapshots and forks are copy-on-write clones that share every block
//!   until one side writes, made in milliseconds whatever the size, never
//!   full copies. The pool is created lazily, on the first volume, so hosts
//!   that never use volumes pay nothing; after a reboot `Pool::open` mounts
//!   the existing image again.
//! * **A volume is an ext4 image file of exactly its capacity.** The bound
//!   is the filesystem's own size, so a full volume gives the sandbox ENOSPC
//!   (not a quota that root could lift, nor EIO). The file is sparse: it
//!   takes pool space only for what was written. ext4 with a journal
//!   survives a crash of the host or of a sandbox mid-write. Its root is
//!   0:0 mode 0755 and no blocks are reserved for root (`-m 0`): inside the
//!   sandbox, seen through an idmapped mount, its root owns the volume and
//!   can use all of it (the reservation would belong to host root, whom the
//!   sandbox is not). The image is only ever written through the kernel's
//!   ext4 driver (sandboxes get the mounted filesystem, never the block
//!   device), so mounting it does not parse untrusted metadata.
//! * **Atomic creation.** Images are written as `<id>.ext4.tmp`, synced and
//!   renamed into place (without replacing), and the directory is synced: a
//!   crash leaves nothing or a whole image; a `.tmp` is always garbage,
//!   removed by [`Pool::remove_orphans`].
//! * **Loop devices with autoclear, through the kernel API** (see
//!   `loopdev.rs` for why not a crate). A device lives exactly as long as
//!   the filesystem on it, in whichever mount namespace holds it longest.
//! * **Refuse double mounts.** Two ext4 mounts of one image (through two
//!   loop devices) would corrupt it, so [`Pool::attach`] refuses with
//!   [`VolumeError::InUse`] while any loop device is backed by the image;
//!   [`Pool::attach_waiting`] waits for a sandbox that is ending to let go.
//! * **Discard all the way down.** Volumes and the pool are mounted with
//!   `discard`, so blocks freed in a volume are punched out of its image,
//!   then out of `pool.img`, and space returns to the pool and the host.
//!
//! Thin provisioning: the pool may hold volumes whose capacities add up to
//! more than its size. A volume then gets ENOSPC from the pool (as EIO in
//! the sandbox, and ext4 remounts read-only) before reaching its capacity;
//! callers that want a guarantee compare the sum of capacities with
//! [`Pool::size_bytes`].
//!
//! The API is synchronous (mkfs takes tens of milliseconds); the daemon
//! calls it from `spawn_blocking`. `Pool` is `Sync`.

mod error;
mod loopdev;
mod mounts;
mod parse;
mod pool;
mod tools;

pub use error::{Object, VolumeError};
pub use parse::{parse_capacity, validate_slug};
pub use pool::{
    allocated_bytes, Attached, ConfinedTree, Pool, TreeSource, MIN_POOL_BYTES, MIN_VOLUME_BYTES,
};
pub use tools::check_tools;
