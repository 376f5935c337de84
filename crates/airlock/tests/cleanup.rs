//! Nothing leaks: many sandboxes in a row leave nothing behind, and a
//! sandbox whose `airlock` process was SIGKILLed is released by
//! `airlock reap`.
//!
//! One test only, so it never runs beside another test of this binary
//! (cargo runs test binaries one after another): it compares the host's
//! whole sandbox state before and after.

mod common;

use common::*;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn all_sandbox_pids() -> Vec<u32> {
    pids_with_uid_in(SANDBOX_UID_BASE, u64::from(u32::MAX))
}

/// The host processes of a running sandbox: in native's uid range, or
/// (gvisor) in its cgroup.
fn processes_of(id: &str, uid: u64) -> Vec<u32> {
    if gvisor() {
        sandbox_pids(id)
    } else {
        pids_with_uid_in(uid, uid + 65536)
    }
}

/// What runsc keeps under its root (gvisor).
fn runsc_entries() -> Vec<String> {
    std::fs::read_dir(RUNSC_ROOT)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn nothing_leaks() {
    sequential_runs_leave_nothing();
    killed_owner_is_reaped();
    lockless_state_dir_is_reaped_once_stale();
}

fn sequential_runs_leave_nothing() {
    let states = state_ids();
    let cgroups = cgroup_names();
    let pids = all_sandbox_pids();
    let runsc = runsc_entries();
    let started = Instant::now();
    // Fewer under gvisor, whose starts cost ~0.2 s of runsc each.
    let runs = if gvisor() { 50 } else { 200 };
    for i in 0..runs {
        let o = run(&["run", "--", "true"], None);
        assert!(o.status.success(), "run {i}: {}", describe(&o));
    }
    // Sanity: they really ran (a marker from one more).
    let o = run(&["run", "--", "echo", "MARK"], None);
    assert_ran(&o, "MARK");
    eprintln!("{} runs in {:?}", runs + 1, started.elapsed());

    let new_states: Vec<_> = state_ids()
        .into_iter()
        .filter(|s| !states.contains(s))
        .collect();
    assert!(new_states.is_empty(), "state dirs left: {new_states:?}");
    let new_cgroups: Vec<_> = cgroup_names()
        .into_iter()
        .filter(|s| !cgroups.contains(s))
        .collect();
    assert!(new_cgroups.is_empty(), "cgroups left: {new_cgroups:?}");
    let new_pids: Vec<_> = all_sandbox_pids()
        .into_iter()
        .filter(|p| !pids.contains(p))
        .collect();
    assert!(new_pids.is_empty(), "sandbox processes left: {new_pids:?}");
    let new_runsc: Vec<_> = runsc_entries()
        .into_iter()
        .filter(|e| !runsc.contains(e))
        .collect();
    assert!(new_runsc.is_empty(), "runsc state left: {new_runsc:?}");
}

fn killed_owner_is_reaped() {
    let Running {
        mut child, id, uid, ..
    } = run_until_ready("echo ready; sleep 1000 & sleep 1000", Stdio::null());
    wait_until("the sandbox's sleeps", Duration::from_secs(5), || {
        // Native: the agent, sh and two sleeps. Gvisor: the Sentry and
        // the gofer (sandbox processes are the Sentry's tasks).
        processes_of(&id, uid).len() >= if gvisor() { 2 } else { 3 }
    });

    // SIGKILL the owner: it gets no chance to clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let state_dir = Path::new(STATE_DIR).join(&id);
    assert!(
        state_dir.exists() || cgroup_exists(&id),
        "nothing left after SIGKILL: the test would be vacuous"
    );

    let o = run(&["reap"], None);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(
        stdout(&o).contains(&id),
        "reap did not list {id}\n{}",
        describe(&o)
    );
    assert!(!state_dir.exists(), "state dir of {id} left after reap");
    assert!(!cgroup_exists(&id), "cgroup of {id} left after reap");
    wait_until(
        "the sandbox's processes to go",
        Duration::from_secs(5),
        || processes_of(&id, uid).is_empty(),
    );

    // A second reap finds nothing more of it.
    let o = run(&["reap"], None);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(!stdout(&o).contains(&id), "{}", describe(&o));
}

/// A state dir whose owner died before it made the lock: reaped once it is
/// older than the grace an owner removing its dir gets, not before.
fn lockless_state_dir_is_reaped_once_stale() {
    let stale = Path::new(STATE_DIR).join(format!("test-lockless-old-{}", std::process::id()));
    let fresh = Path::new(STATE_DIR).join(format!("test-lockless-new-{}", std::process::id()));
    for dir in [&stale, &fresh] {
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    }
    let touched = std::process::Command::new("touch")
        .args(["-d", "5 minutes ago"])
        .arg(&stale)
        .status()
        .unwrap();
    assert!(touched.success());

    let o = run(&["reap"], None);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(
        !stale.exists(),
        "a stale lockless state dir was left\n{}",
        describe(&o)
    );
    assert!(fresh.exists(), "a fresh lockless state dir was removed");
    assert!(
        stdout(&o).contains("test-lockless-old-"),
        "{}",
        describe(&o)
    );
    std::fs::remove_dir_all(&fresh).unwrap();
}
