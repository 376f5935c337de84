//! `airlock usage`: what sandboxes used, totalled like a bill; by token,
//! with the storage each token was billed for (volume and snapshot
//! GB-hours).

use anyhow::{bail, Result};
use clap::Args;
use std::path::Path;
use std::time::Duration;
use store::{Store, UsageGroup};

#[derive(Args, Debug)]
pub struct UsageArgs {
    /// The period: sandboxes alive at any time in the last DURATION (and,
    /// by token, storage billed in the hours it overlaps).
    #[arg(long, default_value = "24h", value_parser = jail::parse_duration)]
    since: Duration,
    /// Group by `token`, `sandbox`, or `label:KEY`.
    #[arg(long, default_value = "token")]
    by: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Price of one CPU-hour; adds an amount column.
    #[arg(long)]
    price_cpu_hour: Option<f64>,
    /// Price of one GB-hour of memory; adds an amount column.
    #[arg(long)]
    price_gb_hour: Option<f64>,
    /// Price of one GB-hour of volumes and snapshots (by token); adds an
    /// amount column.
    #[arg(long)]
    price_storage_gb_hour: Option<f64>,
}

fn parse_group(by: &str) -> Result<UsageGroup> {
    Ok(match by {
        "token" => UsageGroup::Token,
        "sandbox" => UsageGroup::Sandbox,
        other => match other.strip_prefix("label:") {
            Some(key) if !key.is_empty() => UsageGroup::Label(key.to_string()),
            _ => bail!("--by {other:?}: use token, sandbox or label:KEY"),
        },
    })
}

pub fn main(store_path: &Path, args: UsageArgs) -> Result<i32> {
    let group = parse_group(&args.by)?;
    let store = Store::open(store_path)?;
    let since = store::now_ms() - args.since.as_millis() as i64;
    let rows = store.usage_report(since, &group)?;
    let priced = args.price_cpu_hour.is_some()
        || args.price_gb_hour.is_some()
        || args.price_storage_gb_hour.is_some();
    let amount = |r: &store::UsageRow| -> Option<f64> {
        let storage_gbh = r
            .storage
            .map_or(0.0, |s| s.volume_gb_hours() + s.snapshot_gb_hours());
        priced.then(|| {
            r.cpu_seconds / 3600.0 * args.price_cpu_hour.unwrap_or(0.0)
                + r.memory_gb_hours * args.price_gb_hour.unwrap_or(0.0)
                + storage_gbh * args.price_storage_gb_hour.unwrap_or(0.0)
        })
    };
    if args.json {
        let items: Vec<_> = rows
            .iter()
            .map(|r| {
                let mut item = serde_json::json!({
                    "key": r.key,
                    "sandboxes": r.sandboxes,
                    "cpu_seconds": r.cpu_seconds,
                    "memory_gb_hours": r.memory_gb_hours,
                    "peak_memory_bytes": r.peak_memory_bytes,
                    "wall_seconds": r.wall_seconds,
                    "net_bytes_out": r.net_bytes_out,
                    "net_bytes_in": r.net_bytes_in,
                    "amount": amount(r),
                });
                // By token only: storage belongs to a token.
                if let Some(s) = &r.storage {
                    item["volume_gb_hours"] = s.volume_gb_hours().into();
                    item["snapshot_gb_hours"] = s.snapshot_gb_hours().into();
                }
                item
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(0);
    }
    let storage = group == UsageGroup::Token;
    println!(
        "{:<30} {:>9} {:>12} {:>14} {:>10} {:>11} {:>10} {:>10}{}{}",
        args.by.to_uppercase(),
        "SANDBOXES",
        "CPU SECONDS",
        "MEMORY GB-H",
        "PEAK MEM",
        "WALL",
        "NET OUT",
        "NET IN",
        if storage {
            format!(" {:>14} {:>14}", "VOLUME GB-H", "SNAPSHOT GB-H")
        } else {
            String::new()
        },
        if priced { "      AMOUNT" } else { "" }
    );
    for r in &rows {
        let key = if r.key.is_empty() {
            "(none)"
        } else {
            r.key.as_str()
        };
        let amount = amount(r).map_or(String::new(), |a| format!(" {a:>11.4}"));
        let storage = r.storage.map_or(String::new(), |s| {
            format!(
                " {:>14.6} {:>14.6}",
                s.volume_gb_hours(),
                s.snapshot_gb_hours()
            )
        });
        println!(
            "{:<30} {:>9} {:>12.2} {:>14.6} {:>9}M {:>10.0}s {:>10} {:>10}{}{}",
            key,
            r.sandboxes,
            r.cpu_seconds,
            r.memory_gb_hours,
            r.peak_memory_bytes >> 20,
            r.wall_seconds,
            super::audit::human_bytes(r.net_bytes_out),
            super::audit::human_bytes(r.net_bytes_in),
            storage,
            amount
        );
    }
    Ok(0)
}
