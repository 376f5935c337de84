//! `airlock`: self-hosted sandboxes for untrusted code.

mod agent_client;
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command in a fresh sandbox, then remove the sandbox.
    Run(cli::run::RunArgs),
    /// Build and list root filesystem images.
    #[command(subcommand)]
    Image(cli::image::ImageCommand),
    /// Release sandboxes left behind by airlock processes that died.
    Reap,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("AIRLOCK_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cli::run::main(&cli.data_dir, args),
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
