//! The agent's SFTP server on stdin/stdout, for tests with the real
//! OpenSSH client: `sftp -D` runs a server program (no arguments) and
//! speaks SFTP over its standard streams, as `sshd` runs `sftp-server`.
//! Relative paths resolve against `AIRLOCK_SFTP_CWD` if set, else the
//! working directory.

use std::path::PathBuf;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cwd = std::env::var_os("AIRLOCK_SFTP_CWD")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::current_dir().expect("working directory"));
    let stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    airlock_agent::sftp::serve(stdio, cwd).await;
}
