//! `airlock events`: sandbox lifecycle events (created, connected,
//! extended, oom, ended) from the daemon, optionally followed.

use crate::cli::api::{encode, ApiArgs, Client};
use crate::cli::audit::{printable, rfc3339_ms};
use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;
use std::time::Duration;

/// Events per request.
const PAGE: usize = 1000;
/// How often `--follow` asks for new events.
const POLL: Duration = Duration::from_millis(500);

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Only this sandbox's events (default: all of the token's sandboxes).
    #[arg(value_name = "SANDBOX")]
    sandbox: Option<String>,
    /// Keep printing new events until interrupted (Ctrl-C).
    #[arg(long, short)]
    follow: bool,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn main(args: EventsArgs) -> Result<i32> {
    let client = Client::new(args.api.resolve()?)?;
    let mut after: Option<i64> = None;
    let mut header = !args.json;
    loop {
        // Page until the daemon has nothing newer.
        loop {
            let mut query = vec![format!("limit={PAGE}")];
            if let Some(id) = &args.sandbox {
                query.push(format!("sandbox={}", encode(id)));
            }
            if let Some(a) = after {
                query.push(format!("after={a}"));
            }
            let resp = client.get(&format!("/api/v3/events?{}", query.join("&")))?;
            if resp.status == 404 {
                let id = args.sandbox.as_deref().unwrap_or_default();
                eprintln!("no such sandbox: {}", printable(id));
                return Ok(1);
            }
            let body = resp.ok()?.json()?;
            let events = body["events"]
                .as_array()
                .context("the daemon's answer has no events array")?;
            if header {
                println!("{:<24}  {:<28}  {:<9}  DETAIL", "TIME", "SANDBOX", "KIND");
                header = false;
            }
            for e in events {
                print_event(e, args.json)?;
                if let Some(id) = e["id"].as_i64() {
                    after = Some(after.map_or(id, |a| a.max(id)));
                }
            }
            if events.len() < PAGE {
                break;
            }
        }
        if !args.follow {
            return Ok(0);
        }
        std::thread::sleep(POLL);
    }
}

fn print_event(e: &Value, json: bool) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(e)?)?;
    } else {
        writeln!(
            out,
            "{:<24}  {:<28}  {:<9}  {}",
            e["atMs"].as_i64().map(rfc3339_ms).unwrap_or_default(),
            printable(e["sandboxId"].as_str().unwrap_or("?")),
            printable(e["kind"].as_str().unwrap_or("?")),
            printable(e["detail"].as_str().unwrap_or_default()),
        )?;
    }
    // Followed output goes to pipes too: show each event as it comes.
    out.flush()?;
    Ok(())
}
