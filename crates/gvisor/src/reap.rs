//! Recovery after a crash: what runsc keeps of sandboxes whose owner died.

use crate::{Error, Runsc};
use jail::JailPaths;
use std::fs::File;
use std::os::fd::AsRawFd;

/// Releases the sandboxes of dead owners: runsc's container state (and the
/// cgroups runsc made, and any Sentry or gofer still running) by `runsc
/// delete --force`, then, through [`jail::reap_leftovers`], the cgroups and
/// state dirs airlock made (of both backends). Returns what was released
/// and what is still owned by live processes.
pub fn reap_leftovers(paths: &JailPaths, runsc: &Runsc) -> Result<jail::ReapReport, Error> {
    let mut reaped = Vec::new();
    for id in runsc.list_ids() {
        if owner_alive(paths, &id) {
            continue;
        }
        let _ = runsc.delete(&id);
        // `delete` leaves its lock file and socket, and the state file of
        // a container that never got past creation.
        runsc.forget(&id);
        reaped.push(id);
    }
    let mut report = jail::reap_leftovers(paths)?;
    for id in reaped {
        if !report.reaped.contains(&id) {
            report.reaped.push(id);
        }
    }
    report.reaped.sort();
    Ok(report)
}

/// Whether a live process holds the sandbox's owner lock.
fn owner_alive(paths: &JailPaths, id: &str) -> bool {
    let Ok(lock) = File::open(paths.sandbox(id).join("owner.lock")) else {
        return false;
    };
    // SAFETY: flock on an fd we own; released when `lock` is dropped.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 }
}
