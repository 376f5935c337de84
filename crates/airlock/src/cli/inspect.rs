//! `airlock inspect`: one sandbox's record, limits and usage, as JSON.

use crate::cli::api::{encode, ApiArgs, Client};
use crate::cli::audit::printable;
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The sandbox id.
    #[arg(value_name = "SANDBOX")]
    id: String,
    /// Print JSON (the default and only format; accepted for scripts).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn main(args: InspectArgs) -> Result<i32> {
    let _ = args.json;
    let client = Client::new(args.api.resolve()?)?;
    let resp = client.get(&format!("/api/v3/sandbox/{}", encode(&args.id)))?;
    if resp.status == 404 {
        eprintln!("no such sandbox: {}", printable(&args.id));
        return Ok(1);
    }
    let value = resp.ok()?.json()?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(0)
}
