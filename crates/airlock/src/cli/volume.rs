//! `airlock volume ls|create|inspect|rm`: the token's persistent volumes,
//! through the daemon's `/api/v2/volumes` (the console API the SDKs use).

use crate::cli::api::{ApiArgs, Client};
use crate::cli::audit::printable;
use crate::cli::ls::print_table;
use crate::cli::storage::{self, size, yes_no, VOLUMES};
use agent_proto::console::{CreateVolume, Volume};
use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// List the token's volumes (ID, SLUG, REGION, CAPACITY, USED, BOOTABLE).
    Ls(LsArgs),
    /// Create a volume, empty or from a snapshot; prints its id.
    Create(CreateArgs),
    /// A volume's record, as JSON.
    Inspect(InspectArgs),
    /// Delete volumes (refused while a sandbox has one mounted).
    Rm(RmArgs),
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only volumes whose id or slug contains this.
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
    /// The volume's name: 2 to 32 of a-z, 0-9 and '-'.
    slug: String,
    /// Its size: bytes, or with a unit (kB, MB, GB, KiB, MiB, GiB), e.g. 1GiB.
    #[arg(long, value_name = "SIZE")]
    capacity: String,
    /// The region (airlock has one; the SDKs send "ord").
    #[arg(long, default_value = "ord")]
    region: String,
    /// Start as a copy of this snapshot (id or slug; the capacity must be at
    /// least the snapshot's), or as a bootable volume of airlock's image
    /// (builtin:debian-13).
    #[arg(long, value_name = "SNAPSHOT|builtin:NAME")]
    from: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The volume's id or slug.
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
    /// Volume ids or slugs.
    #[arg(required = true, value_name = "ID|SLUG")]
    keys: Vec<String>,
    #[command(flatten)]
    api: ApiArgs,
}

pub fn main(cmd: VolumeCommand) -> Result<i32> {
    match cmd {
        VolumeCommand::Ls(args) => ls(args),
        VolumeCommand::Create(args) => create(args),
        VolumeCommand::Inspect(args) => inspect(args),
        VolumeCommand::Rm(args) => rm(args),
    }
}

fn ls(args: LsArgs) -> Result<i32> {
    let client = Client::new(args.api.resolve()?)?;
    let list: Vec<Volume> = VOLUMES.list(&client, args.search.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    let mut rows = vec![[
        "ID".to_string(),
        "SLUG".into(),
        "REGION".into(),
        "CAPACITY".into(),
        "USED".into(),
        "BOOTABLE".into(),
    ]];
    for v in &list {
        rows.push([
            printable(&v.id),
            printable(&v.slug),
            printable(&v.region),
            size(v.capacity),
            size(v.estimated_allocated_size),
            yes_no(v.is_bootable),
        ]);
    }
    print_table(&rows);
    Ok(0)
}

fn create(args: CreateArgs) -> Result<i32> {
    let client = Client::new(args.api.resolve()?)?;
    storage::create(
        &client,
        "/api/v2/volumes",
        // The capacity goes as the string given: the daemon parses it
        // (bytes or a unit), as it does the SDKs'.
        &CreateVolume {
            slug: Some(args.slug.clone()),
            capacity: Some(args.capacity.clone().into()),
            region: Some(args.region.clone()),
            from: args.from.clone(),
        },
        &format!("creating volume {}", printable(&args.slug)),
    )
}

fn inspect(args: InspectArgs) -> Result<i32> {
    let _ = args.json;
    let client = Client::new(args.api.resolve()?)?;
    VOLUMES.inspect::<Volume>(&client, &args.key)
}

/// Deletes each volume; one that is unknown or mounted is reported and the
/// rest are still tried. Exit 1 if any failed.
fn rm(args: RmArgs) -> Result<i32> {
    let client = Client::new(args.api.resolve()?)?;
    VOLUMES.rm(&client, &args.keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_decode() {
        let v: Volume = serde_json::from_str(
            r#"{"id":"vol_ord_x","slug":"data","region":"ord","capacity":1073741824,
                "estimated_allocated_size":4096,"estimated_flattened_size":4096,
                "is_bootable":false,"base_snapshot":null}"#,
        )
        .unwrap();
        assert_eq!((v.slug.as_str(), v.capacity), ("data", 1 << 30));
        assert!(v.base_snapshot.is_none());
    }
}
