//! Signal names as the protocol spells them (`"SIGTERM"`).

const NAMES: &[(&str, i32)] = &[
    ("SIGHUP", libc::SIGHUP),
    ("SIGINT", libc::SIGINT),
    ("SIGQUIT", libc::SIGQUIT),
    ("SIGILL", libc::SIGILL),
    ("SIGTRAP", libc::SIGTRAP),
    ("SIGABRT", libc::SIGABRT),
    ("SIGBUS", libc::SIGBUS),
    ("SIGFPE", libc::SIGFPE),
    ("SIGKILL", libc::SIGKILL),
    ("SIGUSR1", libc::SIGUSR1),
    ("SIGSEGV", libc::SIGSEGV),
    ("SIGUSR2", libc::SIGUSR2),
    ("SIGPIPE", libc::SIGPIPE),
    ("SIGALRM", libc::SIGALRM),
    ("SIGTERM", libc::SIGTERM),
    ("SIGCHLD", libc::SIGCHLD),
    ("SIGCONT", libc::SIGCONT),
    ("SIGSTOP", libc::SIGSTOP),
    ("SIGTSTP", libc::SIGTSTP),
    ("SIGTTIN", libc::SIGTTIN),
    ("SIGTTOU", libc::SIGTTOU),
    ("SIGURG", libc::SIGURG),
    ("SIGXCPU", libc::SIGXCPU),
    ("SIGXFSZ", libc::SIGXFSZ),
    ("SIGVTALRM", libc::SIGVTALRM),
    ("SIGPROF", libc::SIGPROF),
    ("SIGWINCH", libc::SIGWINCH),
    ("SIGIO", libc::SIGIO),
    ("SIGPWR", libc::SIGPWR),
    ("SIGSYS", libc::SIGSYS),
];

/// Parses `SIGTERM`, `TERM` or a number.
pub fn parse(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    NAMES.iter().find(|(n, _)| *n == full).map(|(_, s)| *s)
}

pub fn name(signal: i32) -> String {
    NAMES
        .iter()
        .find(|(_, s)| *s == signal)
        .map(|(n, _)| n.to_string())
        .unwrap_or_else(|| format!("SIG{signal}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::parse("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(super::parse("kill"), Some(libc::SIGKILL));
        assert_eq!(super::parse("9"), Some(9));
        assert_eq!(super::parse("SIGNOPE"), None);
        assert_eq!(super::parse("0"), None);
        assert_eq!(super::name(libc::SIGINT), "SIGINT");
    }
}
