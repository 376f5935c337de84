//! Recovery after a crash: what runsc keeps of sandboxes whose owner died.

use crate::{Error, Runsc};
use jail::JailPaths;
use std::fs::File;
use std::os::fd::AsRawFd;

/// Releases the sandboxes of dead owners: runsc's container state (and the
/// cgroups runsc made, and any Sentry or gofer still running) by `runsc
/// delete --force`, then, through [`jail::reap_leftovers`], the cgroups and
/// state dirs airlock made. Returns the ids released.
pub fn reap_leftovers(paths: &JailPaths, runsc: &Runsc) -> Result<Vec<String>, Error> {
    let mut reaped = Vec::new();
    for id in runsc.list_ids() {
        if owner_alive(paths, &id) {
            continue;
        }
        let _ = runsc.delete(&id);
        // `delete` leaves the state file where the container never got
        // past creation; a dead owner's is garbage either way.
        let _ = std::fs::remove_file(runsc.root.join(format!("{id}.state")));
        reaped.push(id);
    }
    let report = jail::reap_leftovers(paths)?;
    for id in report.reaped {
        if !reaped.contains(&id) {
            reaped.push(id);
        }
    }
    reaped.sort();
    Ok(reaped)
}

/// Whether a live process holds the sandbox's owner lock.
fn owner_alive(paths: &JailPaths, id: &str) -> bool {
    let Ok(lock) = File::open(paths.sandbox(id).join("owner.lock")) else {
        return false;
    };
    // SAFETY: flock on an fd we own; released when `lock` is dropped.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 }
}
