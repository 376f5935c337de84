//! The environment every sandbox starts with.

/// Default PATH inside sandboxes (Debian's, plus /usr/local for deno).
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Where commands run unless told otherwise; relative fs paths resolve here.
pub const WORKDIR: &str = "/home/app";

/// The agent's environment: the sandbox's default environment plus the
/// agent's own settings (which the agent strips before anything sees them).
pub fn agent_env(workdir: &str, term: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_string(), PATH.to_string()),
        ("HOME".to_string(), "/root".to_string()),
        ("USER".to_string(), "root".to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
        ("HOSTNAME".to_string(), "sandbox".to_string()),
        (agent_cwd_var().to_string(), workdir.to_string()),
    ];
    if let Some(t) = term {
        env.push(("TERM".to_string(), t.to_string()));
    }
    env
}

fn agent_cwd_var() -> &'static str {
    // Kept in step with airlock_agent::env::AGENT_CWD_VAR.
    "AIRLOCK_AGENT_CWD"
}
