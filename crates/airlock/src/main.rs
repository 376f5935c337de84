//! `airlock`: self-hosted sandboxes for untrusted code.

mod agent_exe;
mod cli;
mod sandbox_env;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "airlock",
    version,
    about = "Self-hosted sandboxes for untrusted code"
)]
struct Cli {
    /// Where images and the store live.
    #[arg(
        long,
        global = true,
        env = "AIRLOCK_DATA_DIR",
        default_value = "/var/lib/airlock"
    )]
    data_dir: PathBuf,
    /// The daemon's SQLite store (default: DATA_DIR/airlock.db).
    #[arg(long, global = true, env = "AIRLOCK_STORE")]
    store: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the daemon (Deno Sandbox protocol; the official SDKs work against it).
    Serve(Box<cli::serve::ServeArgs>),
    /// Manage the daemon's access tokens.
    #[command(subcommand)]
    Token(cli::token::TokenCommand),
    /// What sandboxes used (CPU seconds, memory GB-hours), from the store.
    Usage(cli::usage::UsageArgs),
    /// A sandbox's network events (DNS, TCP, UDP) and the gateway's verdicts, from the store.
    Audit(cli::audit::AuditArgs),
    /// Run a command in a fresh sandbox, then remove the sandbox.
    Run(cli::run::RunArgs),
    /// Run a command in a running sandbox of the daemon (`exec [-i] [-t] SANDBOX -- CMD ARGS...`).
    Exec(cli::exec::ExecArgs),
    /// An interactive shell in a running sandbox (`bash -l`, else `sh`).
    Shell(cli::shell::ShellArgs),
    /// Copy files or directories between this host and a sandbox (`SANDBOX:/path` on one side).
    Cp(cli::cp::CpArgs),
    /// List the daemon's sandboxes (running; --all for stopped too).
    Ls(cli::ls::LsArgs),
    /// Kill sandboxes through the daemon.
    Rm(cli::rm::RmArgs),
    /// A sandbox's record, limits and usage, as JSON, from the daemon.
    Inspect(cli::inspect::InspectArgs),
    /// Sandbox lifecycle events (created, connected, extended, oom, ended) from the daemon.
    Events(cli::events::EventsArgs),
    /// A stateful language session in a running sandbox (`repl python SANDBOX [--session NAME]`).
    #[command(subcommand)]
    Repl(cli::repl::ReplCommand),
    /// Persistent volumes of the token, through the daemon (`volume ls|create|inspect|rm`).
    #[command(subcommand)]
    Volume(cli::volume::VolumeCommand),
    /// Snapshots of the token's volumes, through the daemon (`snapshot ls|create|inspect|rm`).
    #[command(subcommand)]
    Snapshot(cli::snapshot::SnapshotCommand),
    /// Build and list root filesystem images.
    #[command(subcommand)]
    Image(cli::image::ImageCommand),
    /// Release sandboxes left behind by airlock processes that died.
    Reap,
}

fn main() {
    let cli = Cli::parse();
    // The daemon logs what it does; one-shot commands only warnings.
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let store = cli
        .store
        .clone()
        .unwrap_or_else(|| cli::serve::default_store(&cli.data_dir));
    let result = match cli.command {
        Command::Serve(args) => cli::serve::main(&cli.data_dir, &store, *args),
        Command::Token(cmd) => cli::token::main(&store, cmd),
        Command::Usage(args) => cli::usage::main(&store, args),
        Command::Audit(args) => cli::audit::main(&store, args),
        Command::Run(args) => cli::run::main(&cli.data_dir, args),
        Command::Exec(args) => cli::exec::main(args),
        Command::Shell(args) => cli::shell::main(args),
        Command::Cp(args) => cli::cp::main(args),
        Command::Ls(args) => cli::ls::main(args),
        Command::Rm(args) => cli::rm::main(args),
        Command::Inspect(args) => cli::inspect::main(args),
        Command::Events(args) => cli::events::main(args),
        Command::Repl(cmd) => cli::repl::main(cmd),
        Command::Volume(cmd) => cli::volume::main(cmd),
        Command::Snapshot(cmd) => cli::snapshot::main(cmd),
        Command::Image(cmd) => cli::image::main(&cli.data_dir, cmd).map(|()| 0),
        Command::Reap => cli::reap(),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("airlock: {e:#}");
            std::process::exit(125);
        }
    }
}
