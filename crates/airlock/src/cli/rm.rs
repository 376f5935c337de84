//! `airlock rm`: kill sandboxes through the daemon.

use crate::cli::api::{encode, ApiArgs, Client};
use crate::cli::audit::printable;
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Sandbox ids.
    #[arg(required = true, value_name = "SANDBOX")]
    ids: Vec<String>,
    #[command(flatten)]
    api: ApiArgs,
}

/// Kills each sandbox; one that is unknown (or already ended) is reported
/// and the rest are still tried. Exit 1 if any failed.
pub fn main(args: RmArgs) -> Result<i32> {
    let client = Client::new(args.api.resolve()?)?;
    let mut code = 0;
    for id in &args.ids {
        let resp = client.delete(&format!("/api/v3/sandbox/{}", encode(id)))?;
        if resp.status == 404 {
            eprintln!("no such sandbox: {}", printable(id));
            code = 1;
            continue;
        }
        match resp.ok() {
            Ok(_) => println!("{}", printable(id)),
            Err(e) => {
                eprintln!("airlock: removing {}: {e:#}", printable(id));
                code = 1;
            }
        }
    }
    Ok(code)
}
