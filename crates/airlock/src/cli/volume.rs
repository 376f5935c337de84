//! `airlock volume ls|create|inspect|rm`: the token's persistent volumes,
//! through the daemon's `/api/v2/volumes` (the console API the SDKs use).

use crate::cli::api::{encode, ApiArgs, Client, Response};
use crate::cli::audit::printable;
use crate::cli::ls::print_table;
use anyhow::Result;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// List the token's volumes (ID, SLUG, REGION, CAPACITY, USED).
    Ls(LsArgs),
    /// Create an empty volume; prints its id.
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

/// A volume as `/api/v2/volumes` answers it.
#[derive(Debug, Serialize, Deserialize)]
struct Volume {
    id: String,
    slug: String,
    region: String,
    capacity: u64,
    estimated_allocated_size: u64,
    estimated_flattened_size: u64,
    is_bootable: bool,
    base_snapshot: Option<SnapshotRef>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotRef {
    id: String,
    slug: String,
}

/// `POST /api/v2/volumes`'s body. The capacity goes as the string given:
/// the daemon parses it (bytes or a unit), as it does the SDKs'.
#[derive(Debug, Serialize)]
struct CreateVolume<'a> {
    slug: &'a str,
    capacity: &'a str,
    region: &'a str,
}

pub fn main(cmd: VolumeCommand) -> Result<i32> {
    match cmd {
        VolumeCommand::Ls(args) => ls(args),
        VolumeCommand::Create(args) => create(args),
        VolumeCommand::Inspect(args) => inspect(args),
        VolumeCommand::Rm(args) => rm(args),
    }
}

/// The daemon's message when it refused the request itself (bad input, a
/// conflict, a quota, a full pool): the user's to fix, so exit 1 with it.
/// A bad token and the daemon's own failures go through [`Response::ok`].
fn refusal(resp: &Response) -> Option<String> {
    let user_fixable = (400..500).contains(&resp.status) && resp.status != 401;
    (user_fixable || resp.status == 507).then(|| resp.message())
}

fn ls(args: LsArgs) -> Result<i32> {
    let client = Client::new(args.api.resolve()?)?;
    let path = match args.search.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => format!("/api/v2/volumes?search={}", encode(s)),
        None => "/api/v2/volumes".to_string(),
    };
    let list: Vec<Volume> = client.get(&path)?.ok()?.decode()?;
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
    ]];
    for v in &list {
        rows.push([
            printable(&v.id),
            printable(&v.slug),
            printable(&v.region),
            size(v.capacity),
            size(v.estimated_allocated_size),
        ]);
    }
    print_table(&rows);
    Ok(0)
}

fn create(args: CreateArgs) -> Result<i32> {
    let client = Client::new(args.api.resolve()?)?;
    let resp = client.post_json(
        "/api/v2/volumes",
        &CreateVolume {
            slug: &args.slug,
            capacity: &args.capacity,
            region: &args.region,
        },
    )?;
    if let Some(msg) = refusal(&resp) {
        eprintln!(
            "airlock: creating volume {}: {}",
            printable(&args.slug),
            printable(&msg)
        );
        return Ok(1);
    }
    let volume: Volume = resp.ok()?.decode()?;
    println!("{}", printable(&volume.id));
    Ok(0)
}

fn inspect(args: InspectArgs) -> Result<i32> {
    let _ = args.json;
    let client = Client::new(args.api.resolve()?)?;
    let resp = client.get(&format!("/api/v2/volumes/{}", encode(&args.key)))?;
    if resp.status == 404 {
        eprintln!("no such volume: {}", printable(&args.key));
        return Ok(1);
    }
    let volume: Volume = resp.ok()?.decode()?;
    println!("{}", serde_json::to_string_pretty(&volume)?);
    Ok(0)
}

/// Deletes each volume; one that is unknown or mounted is reported and the
/// rest are still tried. Exit 1 if any failed.
fn rm(args: RmArgs) -> Result<i32> {
    let client = Client::new(args.api.resolve()?)?;
    let mut code = 0;
    for key in &args.keys {
        let resp = client.delete(&format!("/api/v2/volumes/{}", encode(key)))?;
        if resp.status == 404 {
            eprintln!("no such volume: {}", printable(key));
            code = 1;
            continue;
        }
        if let Some(msg) = refusal(&resp) {
            eprintln!("airlock: removing {}: {}", printable(key), printable(&msg));
            code = 1;
            continue;
        }
        match resp.ok() {
            Ok(_) => println!("{}", printable(key)),
            Err(e) => {
                eprintln!("airlock: removing {}: {e:#}", printable(key));
                code = 1;
            }
        }
    }
    Ok(code)
}

/// A size for people. A whole number of GiB or MiB (a capacity given in
/// binary units) is shown in them; the rest in the decimal units the
/// daemon's messages use.
fn size(bytes: u64) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    if bytes >= GIB && bytes.is_multiple_of(GIB) && !bytes.is_multiple_of(1_000_000_000) {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB && bytes.is_multiple_of(MIB) && !bytes.is_multiple_of(1_000_000) {
        format!("{} MiB", bytes / MIB)
    } else {
        manager::human_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(64_000_000), "64 MB");
        assert_eq!(size(1 << 30), "1 GiB");
        assert_eq!(size(64 << 20), "64 MiB");
        assert_eq!(size(1_500_000_000), "1.5 GB");
        assert_eq!(size(3_309_568), "3.3 MB");
        assert_eq!(size(0), "0 B");
    }

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
