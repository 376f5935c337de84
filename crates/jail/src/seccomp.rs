//! The sandbox's seccomp policy.
//!
//! A deny-list, compiled with `seccompiler`: every call that Docker's
//! default profile refuses to an unprivileged container is refused here too
//! (EPERM), plus a few Docker allows but a multi-tenant host should not
//! (io_uring, AF_VSOCK sockets, TIOCSTI). Namespace-creating `clone` flags
//! are refused, and `clone3` answers ENOSYS so libc falls back to `clone`,
//! whose flags a filter can see.
//!
//! A deny-list lets new, unknown syscalls through, so a second, tiny filter
//! (hand-assembled: seccompiler cannot express ranges) answers ENOSYS to
//! every syscall number above the newest one this list was written against,
//! and to the x32 ABI (numbers with bit 30 set), which seccompiler's
//! architecture check does not catch.

use crate::JailError;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// Highest x86_64 syscall number this policy has reviewed (`mseal` = 462
/// in Linux 6.10; 463-470 are reviewed below as well).
pub const MAX_REVIEWED_SYSCALL: u32 = 470;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Syscalls refused outright.
const DENIED: &[(&str, libc::c_long)] = &[
    ("acct", libc::SYS_acct),
    ("add_key", libc::SYS_add_key),
    ("bpf", libc::SYS_bpf),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("clock_settime", libc::SYS_clock_settime),
    ("settimeofday", libc::SYS_settimeofday),
    ("adjtimex", libc::SYS_adjtimex),
    ("create_module", 174),
    ("delete_module", libc::SYS_delete_module),
    ("finit_module", libc::SYS_finit_module),
    ("init_module", libc::SYS_init_module),
    ("get_kernel_syms", 177),
    ("query_module", 178),
    ("ioperm", libc::SYS_ioperm),
    ("iopl", libc::SYS_iopl),
    ("kcmp", libc::SYS_kcmp),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("kexec_load", libc::SYS_kexec_load),
    ("keyctl", libc::SYS_keyctl),
    ("request_key", libc::SYS_request_key),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("nfsservctl", libc::SYS_nfsservctl),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("ptrace", libc::SYS_ptrace),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("quotactl", libc::SYS_quotactl),
    ("reboot", libc::SYS_reboot),
    ("setns", libc::SYS_setns),
    ("unshare", libc::SYS_unshare),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("sysfs", libc::SYS_sysfs),
    ("_sysctl", libc::SYS__sysctl),
    ("syslog", libc::SYS_syslog),
    ("uselib", libc::SYS_uselib),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("ustat", libc::SYS_ustat),
    ("vhangup", libc::SYS_vhangup),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("mbind", libc::SYS_mbind),
    ("set_mempolicy", libc::SYS_set_mempolicy),
    ("move_pages", libc::SYS_move_pages),
    ("migrate_pages", libc::SYS_migrate_pages),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("quotactl_fd", 443),
    ("memfd_secret", 447),
    ("set_mempolicy_home_node", 450),
    ("lsm_set_self_attr", 460),
    ("open_tree_attr", 467),
];

const NAMESPACE_FLAGS: [u64; 8] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    0x80, // CLONE_NEWTIME
];

const AF_VSOCK: u64 = 40;
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;

/// The compiled filters, in the order they must be installed.
pub struct Policy {
    pub programs: Vec<BpfProgram>,
}

impl Policy {
    pub fn build() -> Result<Self, JailError> {
        let err = |e: seccompiler::BackendError| JailError::Seccomp(e.to_string());
        let eq = |arg: u8, value: u64| {
            SeccompCondition::new(arg, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, value)
                .map_err(err)
        };
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for &(_, nr) in DENIED {
            if nr >= 0 {
                rules.insert(nr, vec![]);
            }
        }
        let mut clone_rules = Vec::new();
        for flag in NAMESPACE_FLAGS {
            let cond = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .map_err(err)?;
            clone_rules.push(SeccompRule::new(vec![cond]).map_err(err)?);
        }
        rules.insert(libc::SYS_clone, clone_rules);
        rules.insert(
            libc::SYS_socket,
            vec![SeccompRule::new(vec![eq(0, AF_VSOCK)?]).map_err(err)?],
        );
        rules.insert(
            libc::SYS_ioctl,
            vec![
                SeccompRule::new(vec![eq(1, TIOCSTI)?]).map_err(err)?,
                SeccompRule::new(vec![eq(1, TIOCLINUX)?]).map_err(err)?,
            ],
        );
        let deny = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            TargetArch::x86_64,
        )
        .map_err(err)?;

        let mut clone3 = BTreeMap::new();
        clone3.insert(libc::SYS_clone3, vec![]);
        let clone3 = SeccompFilter::new(
            clone3,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            TargetArch::x86_64,
        )
        .map_err(err)?;

        let deny: BpfProgram = deny
            .try_into()
            .map_err(|e: seccompiler::BackendError| err(e))?;
        let clone3: BpfProgram = clone3
            .try_into()
            .map_err(|e: seccompiler::BackendError| err(e))?;
        Ok(Self {
            programs: vec![unknown_syscall_guard(), clone3, deny],
        })
    }
}

/// `nr >= X32_SYSCALL_BIT || nr > MAX_REVIEWED_SYSCALL` → ENOSYS.
///
/// Hand-assembled because seccompiler matches syscalls by exact number
/// only. The architecture is checked by the seccompiler filters installed
/// with it (a foreign architecture is killed there).
fn unknown_syscall_guard() -> BpfProgram {
    use seccompiler::sock_filter;
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    // Every x32 number is above MAX_REVIEWED_SYSCALL, so one comparison
    // covers both.
    const { assert!(X32_SYSCALL_BIT > MAX_REVIEWED_SYSCALL) };
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        // seccomp_data.nr is at offset 0.
        ins(LD_W_ABS, 0, 0, 0),
        // nr > MAX (this also covers every x32 number, which are all > 2^30)
        ins(JGT_K, 1, 0, MAX_REVIEWED_SYSCALL),
        ins(RET_K, 0, 0, SECCOMP_RET_ALLOW),
        ins(RET_K, 0, 0, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    ]
}

/// Installs the filters on the calling thread. No allocation: safe between
/// fork and exec. Requires `no_new_privs` (or CAP_SYS_ADMIN) first.
pub fn install(policy: &Policy) -> std::io::Result<()> {
    for prog in &policy.programs {
        seccompiler::apply_filter(prog).map_err(|e| match e {
            seccompiler::Error::Seccomp(io) => io,
            other => std::io::Error::other(other.to_string()),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_compiles() {
        let p = Policy::build().unwrap();
        assert_eq!(p.programs.len(), 3);
        assert!(p.programs.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn denied_list_has_no_duplicates() {
        let mut nrs: Vec<_> = DENIED.iter().map(|(_, n)| *n).filter(|n| *n >= 0).collect();
        nrs.sort();
        let len = nrs.len();
        nrs.dedup();
        assert_eq!(nrs.len(), len);
        assert!(nrs.iter().all(|n| *n as u32 <= MAX_REVIEWED_SYSCALL));
    }
}
