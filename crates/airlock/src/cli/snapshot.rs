//! `airlock snapshot ls|create|inspect|rm`: the token's snapshots (read-only
//! copies of a volume, to fork volumes from or boot sandboxes from),
//! through the daemon's `/api/v2/snapshots` (the console API the SDKs use).
//! `create` also snapshots a running sandbox's root filesystem (airlock's
//! `/api/v3/sandbox/{id}/snapshot`).

use crate::cli::api::{encode, ApiArgs, Client};
use crate::cli::audit::printable;
use crate::cli::ls::print_table;
use crate::cli::storage::{self, size, yes_no, SNAPSHOTS};
use agent_proto::console::{CreateSnapshot, Snapshot};
use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// List the token's snapshots (ID, SLUG, VOLUME, BOOTABLE, SIZE).
    Ls(LsArgs),
    /// Snapshot a volume (refused while a sandbox has it mounted), or a
    /// running sandbox's root filesystem (given its sbx_ id; bootable);
    /// prints the snapshot's id.
    Create(CreateArgs),
    /// A snapshot's record, as JSON.
    Inspect(InspectArgs),
    /// Delete snapshots (refused while a sandbox boots from one).
    Rm(RmArgs),
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only snapshots whose id or slug contains this.
    #[arg(long)]
    search: Option<String>,
    /// Print JSON (the API's objects) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The volume to snapshot (its id or slug), or a running sandbox (its
    /// id, `sbx_...`) whose root filesystem to snapshot.
    #[arg(value_name = "VOLUME|SANDBOX")]
    volume: String,
    /// The snapshot's name: 2 to 32 of a-z, 0-9 and '-'.
    #[arg(long)]
    slug: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The snapshot's id or slug.
    #[arg(value_name = "ID|SLUG")]
    key: String,
    /// Print JSON (the default and only format; accepted for scripts).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Snapshot ids or slugs.
    #[arg(required = true, value_name = "ID|SLUG")]
    keys: Vec<String>,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn main(cmd: SnapshotCommand) -> Result<i32> {
    match cmd {
        SnapshotCommand::Ls(args) => ls(args),
        SnapshotCommand::Create(args) => create(args),
        SnapshotCommand::Inspect(args) => inspect(args),
        SnapshotCommand::Rm(args) => rm(args),
    }
}

fn ls(args: LsArgs) -> Result<i32> {
    let client = Client::new(args.api.resolve()?)?;
    let list: Vec<Snapshot> = SNAPSHOTS.list(&client, args.search.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    let mut rows = vec![[
        "ID".to_string(),
        "SLUG".into(),
        "VOLUME".into(),
        "BOOTABLE".into(),
        "SIZE".into(),
    ]];
    for s in &list {
        rows.push([
            printable(&s.id),
            printable(&s.slug),
            printable(&s.volume.slug),
            yes_no(s.is_bootable),
            size(s.allocated_size),
        ]);
    }
    print_table(&rows);
    Ok(0)
}

/// Sandbox ids start so; no volume id or slug can (slugs have no `_`).
const SANDBOX_PREFIX: &str = "sbx_";

fn create(args: CreateArgs) -> Result<i32> {
    let client = Client::new(args.api.resolve()?)?;
    let (path, what) = if args.volume.starts_with(SANDBOX_PREFIX) {
        (
            format!("/api/v3/sandbox/{}/snapshot", encode(&args.volume)),
            "the root filesystem of sandbox",
        )
    } else {
        (
            format!("/api/v2/volumes/{}/snapshot", encode(&args.volume)),
            "volume",
        )
    };
    storage::create(
        &client,
        &path,
        &CreateSnapshot {
            slug: Some(args.slug.clone()),
        },
        &format!(
            "snapshotting {what} {} as {}",
            printable(&args.volume),
            printable(&args.slug)
        ),
    )
}

fn inspect(args: InspectArgs) -> Result<i32> {
    let _ = args.json;
    let client = Client::new(args.api.resolve()?)?;
    SNAPSHOTS.inspect::<Snapshot>(&client, &args.key)
}

/// Deletes each snapshot; one that is unknown or booted from is reported
/// and the rest are still tried. Exit 1 if any failed.
fn rm(args: RmArgs) -> Result<i32> {
    let client = Client::new(args.api.resolve()?)?;
    SNAPSHOTS.rm(&client, &args.keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_decode() {
        let s: Snapshot = serde_json::from_str(
            r#"{"id":"snp_ord_x","slug":"base","region":"ord","allocated_size":4096,
                "flattened_size":4096,"is_bootable":false,
                "volume":{"id":"vol_ord_y","slug":"data"},"base_snapshot":null}"#,
        )
        .unwrap();
        assert_eq!((s.slug.as_str(), s.volume.slug.as_str()), ("base", "data"));
        assert!(s.base_snapshot.is_none());
    }
}
