//! The sandbox's seccomp policy.
//!
//! A deny-list, compiled with `seccompiler`: every call that Docker's
//! default profile refuses to an unprivileged container is refused here too
//! (EPERM), plus a few Docker allows but a multi-tenant host should not
//! (io_uring, AF_VSOCK sockets, TIOCSTI). Namespace-creating `clone` flags
//! are refused, and `clone3` answers ENOSYS so libc falls back to `clone`,
//! whose flags a filter can see. Argument checks are a table
//! ([`ARG_RULES`]) whose rows state the width the kernel reads: `int`
//! arguments are compared on their low 32 bits only, so high bits cannot
//! disguise a refused value.
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

/// How many bits of a syscall argument the kernel reads. The BPF program
/// sees all 64 bits of every argument register, but for an `int` or
/// `unsigned int` parameter the kernel ignores the upper half: a rule that
/// compared 64 bits could be dodged by setting any high bit
/// (`socket(AF_VSOCK | 1 << 32, ...)` is still an AF_VSOCK socket to the
/// kernel). So every rule states the width of the parameter it inspects,
/// copied from the kernel's `SYSCALL_DEFINE` for that call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Width {
    /// `int` / `unsigned int`: only the low 32 bits are compared.
    Int,
    /// `long` / `unsigned long` / pointers: all 64 bits.
    Long,
}

/// What a rule checks in its argument.
#[derive(Debug, Clone, Copy)]
enum Test {
    /// The argument equals the value.
    Equals(u64),
    /// Every bit of the mask is set in the argument.
    HasBits(u64),
}

/// One argument-filtered refusal: the syscall is refused (EPERM) when its
/// argument `arg` passes `test`. A syscall may have several rows; any match
/// refuses it.
struct ArgRule {
    name: &'static str,
    nr: libc::c_long,
    /// Zero-based argument index.
    arg: u8,
    width: Width,
    test: Test,
}

const AF_VSOCK: u64 = 40;
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;
const CLONE_NEWTIME: u64 = 0x80;

/// The argument-filtered refusals, one row each.
///
/// * `socket(int family, ...)`: AF_VSOCK has no network namespace, so a
///   vsock socket would reach the hypervisor around the egress gateway.
/// * `ioctl(unsigned int fd, unsigned int cmd, unsigned long arg)`:
///   TIOCSTI pushes input into a terminal another process reads; TIOCLINUX
///   reaches the console.
/// * `clone(unsigned long flags, ...)`: namespace-creating flags (64-bit:
///   the kernel reads all of `flags`, and every flag tested is in the low
///   half anyway).
#[rustfmt::skip]
const ARG_RULES: &[ArgRule] = &[
    ArgRule { name: "socket(AF_VSOCK)", nr: libc::SYS_socket, arg: 0, width: Width::Int, test: Test::Equals(AF_VSOCK) },
    ArgRule { name: "ioctl(TIOCSTI)", nr: libc::SYS_ioctl, arg: 1, width: Width::Int, test: Test::Equals(TIOCSTI) },
    ArgRule { name: "ioctl(TIOCLINUX)", nr: libc::SYS_ioctl, arg: 1, width: Width::Int, test: Test::Equals(TIOCLINUX) },
    ArgRule { name: "clone(CLONE_NEWNS)", nr: libc::SYS_clone, arg: 0, width: Width::Long, test: Test::HasBits(libc::CLONE_NEWNS as u64) },
    ArgRule { name: "clone(CLONE_NEWCGROUP)", nr: libc::SYS_clone, arg: 0, width: Width::Long, test: Test::HasBits(libc::CLONE_NEWCGROUP as u64) },
    ArgRule { name: "clone(CLONE_NEWUTS)", nr: libc::SYS_clone, arg: 0, width: Width::Long, test: Test::HasBits(libc::CLONE_NEWUTS as u64) },
    ArgRule { name: "clone(CLONE_NEWIPC)", nr: libc::SYS_clone, arg: 0, width: Width::Long, test: Test::HasBits(libc::CLONE_NEWIPC as u64) },
    ArgRule { name: "clone(CLONE_NEWUSER)", nr: libc::SYS_clone, arg: 0, width: Width::Long, test: Test::HasBits(libc::CLONE_NEWUSER as u64) },
    ArgRule { name: "clone(CLONE_NEWPID)", nr: libc::SYS_clone, arg: 0, width: Width::Long, test: Test::HasBits(libc::CLONE_NEWPID as u64) },
    ArgRule { name: "clone(CLONE_NEWNET)", nr: libc::SYS_clone, arg: 0, width: Width::Long, test: Test::HasBits(libc::CLONE_NEWNET as u64) },
    ArgRule { name: "clone(CLONE_NEWTIME)", nr: libc::SYS_clone, arg: 0, width: Width::Long, test: Test::HasBits(CLONE_NEWTIME) },
];

impl ArgRule {
    fn condition(&self) -> Result<SeccompCondition, seccompiler::BackendError> {
        let len = match self.width {
            Width::Int => SeccompCmpArgLen::Dword,
            Width::Long => SeccompCmpArgLen::Qword,
        };
        let (op, value) = match self.test {
            Test::Equals(v) => (SeccompCmpOp::Eq, v),
            Test::HasBits(mask) => (SeccompCmpOp::MaskedEq(mask), mask),
        };
        SeccompCondition::new(self.arg, len, op, value)
    }
}

/// The compiled filters, in the order they must be installed.
pub struct Policy {
    pub programs: Vec<BpfProgram>,
}

impl Policy {
    pub fn build() -> Result<Self, JailError> {
        let err = |e: seccompiler::BackendError| JailError::Seccomp(e.to_string());
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for &(_, nr) in DENIED {
            if nr >= 0 {
                rules.insert(nr, vec![]);
            }
        }
        for rule in ARG_RULES {
            let cond = rule
                .condition()
                .map_err(|e| JailError::Seccomp(format!("{}: {e}", rule.name)))?;
            rules
                .entry(rule.nr)
                .or_default()
                .push(SeccompRule::new(vec![cond]).map_err(err)?);
        }
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

    #[test]
    fn argument_rules_never_soften_an_outright_denial() {
        // A syscall with an empty rule list is refused outright; adding an
        // argument rule to it would make the refusal conditional.
        for rule in ARG_RULES {
            assert!(
                DENIED.iter().all(|(_, nr)| *nr != rule.nr),
                "{} is also denied outright",
                rule.name
            );
        }
    }

    /// Runs `syscall(nr, args...)` under the policy on a thread of its own
    /// and returns its errno (0 when the call succeeded). Seccomp filters
    /// and `no_new_privs` belong to the calling thread only, so they end
    /// with it. A thread rather than a forked child: a child would share
    /// every open file of this test process, flock locks of other tests
    /// included, for as long as it lives.
    fn errno_under_policy(nr: libc::c_long, args: [u64; 3]) -> i32 {
        let policy = Policy::build().unwrap();
        std::thread::spawn(move || {
            // SAFETY: prctl with constant arguments, for this thread only.
            let nnp = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            assert_eq!(nnp, 0, "no_new_privs: {}", std::io::Error::last_os_error());
            install(&policy).expect("installing the policy");
            // SAFETY: the probed calls take integer arguments only (no
            // pointers the kernel would write through).
            let rc = unsafe { libc::syscall(nr, args[0], args[1], args[2]) };
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if nr == libc::SYS_clone && rc == 0 {
                // The clone's own child: it exists only if the rule failed.
                // SAFETY: leaving the child at once, touching nothing.
                unsafe { libc::_exit(0) };
            }
            if rc < 0 {
                return errno;
            }
            // SAFETY: releasing what the call made: a socket fd, or the
            // child of a clone that should have been refused.
            unsafe {
                if nr == libc::SYS_clone {
                    libc::waitpid(rc as libc::pid_t, std::ptr::null_mut(), 0);
                } else {
                    libc::close(rc as libc::c_int);
                }
            }
            0
        })
        .join()
        .expect("the probe thread panicked")
    }

    /// Each argument rule, tried through the kernel with the refused value
    /// as written and with high bits set: an `int` argument the kernel
    /// truncates must be refused however its upper half is filled.
    #[test]
    fn every_argument_rule_holds_with_high_bits_set() {
        for rule in ARG_RULES {
            let value = match rule.test {
                Test::Equals(v) | Test::HasBits(v) => v,
            };
            let mut variants = vec![value];
            if rule.width == Width::Int {
                variants.extend([value | 1 << 32, value | 0xffff_ffff_0000_0000]);
            } else {
                variants.push(value | 1 << 63);
            }
            for v in variants {
                let mut args = [0u64; 3];
                args[rule.arg as usize] = v;
                if rule.nr == libc::SYS_clone {
                    args[0] |= libc::SIGCHLD as u64;
                }
                if rule.nr == libc::SYS_socket {
                    args[1] = libc::SOCK_STREAM as u64;
                }
                assert_eq!(
                    errno_under_policy(rule.nr, args),
                    libc::EPERM,
                    "{} with argument {v:#x} was not refused",
                    rule.name
                );
            }
        }
    }

    /// The other side of the same coin: high bits on an allowed value do
    /// not turn it into a refused one (the filter reads what the kernel
    /// reads, no more).
    #[test]
    fn allowed_values_with_high_bits_still_work() {
        let unix = libc::AF_UNIX as u64 | 1 << 32;
        assert_eq!(
            errno_under_policy(libc::SYS_socket, [unix, libc::SOCK_STREAM as u64, 0]),
            0
        );
        // FIONREAD on a bad fd: refused by the kernel (EBADF), not the filter.
        let fionread = libc::FIONREAD | 1 << 32;
        assert_eq!(
            errno_under_policy(libc::SYS_ioctl, [u64::MAX >> 1, fionread, 0]),
            libc::EBADF
        );
    }
}
