//! Capabilities of sandbox processes.
//!
//! Sandbox root keeps the small set Docker gives containers by default,
//! minus NET_RAW, MKNOD and AUDIT_WRITE, and only inside its own user
//! namespace: these powers apply to the sandbox's own files and processes,
//! never to the host. Everything else is dropped from the bounding set, so
//! no later exec (setuid binaries included) can regain it.

use std::io;

/// Capabilities sandbox root keeps (numbers from `<linux/capability.h>`).
pub const KEPT: &[(u32, &str)] = &[
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (3, "CAP_FOWNER"),
    (4, "CAP_FSETID"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (10, "CAP_NET_BIND_SERVICE"),
    (18, "CAP_SYS_CHROOT"),
    (31, "CAP_SETFCAP"),
];

/// Highest capability number the kernel may know (CAP_CHECKPOINT_RESTORE is
/// 40); higher numbers fail with EINVAL and are skipped.
const CAP_LAST: u32 = 63;

/// Bitmask of [`KEPT`].
pub fn kept_mask() -> u64 {
    KEPT.iter().fold(0u64, |m, (c, _)| m | (1u64 << c))
}

/// Drops every capability outside [`KEPT`] from the bounding set, the
/// ambient set, and the permitted/effective/inheritable sets. No allocation.
pub fn drop_to_kept() -> io::Result<()> {
    let kept = kept_mask();
    for cap in 0..=CAP_LAST {
        if kept & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break; // past the kernel's last capability
            }
            return Err(e);
        }
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    set_sets(kept)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn set_sets(mask: u64) -> io::Result<()> {
    const VERSION_3: u32 = 0x2008_0522;
    let header = CapHeader {
        version: VERSION_3,
        pid: 0,
    };
    let lo = mask as u32;
    let hi = (mask >> 32) as u32;
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: header and a 2-element data array as capset(2) v3 expects.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
