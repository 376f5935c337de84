//! `airlock ls`: the daemon's sandboxes (of the token), as a table or JSON.

use crate::cli::api::{encode, ApiArgs, Client};
use crate::cli::audit::printable;
use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Stopped sandboxes too (default: running only).
    #[arg(long, short)]
    all: bool,
    /// Only sandboxes with this label (repeatable: all must match).
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Print JSON (the API's objects) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

/// `k=v` → `(k, v)`; clap reports an error (exit 2) otherwise.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?}: a label filter is k=v")),
    }
}

pub fn main(args: LsArgs) -> Result<i32> {
    let client = Client::new(args.api.resolve()?)?;
    let query: Vec<String> = args
        .labels
        .iter()
        .map(|(k, v)| format!("{}={}", encode(&format!("labels[{k}]")), encode(v)))
        .collect();
    let path = if query.is_empty() {
        "/api/v3/sandboxes".to_string()
    } else {
        format!("/api/v3/sandboxes?{}", query.join("&"))
    };
    let list = client.get(&path)?.ok()?.json()?;
    let items: Vec<Value> = list
        .as_array()
        .context("the daemon's sandbox list is not an array")?
        .iter()
        .filter(|s| args.all || s["status"] == "running")
        .cloned()
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(0);
    }
    let now = std::time::SystemTime::now();
    let mut rows = vec![[
        "ID".to_string(),
        "AGE".into(),
        "MEMORY".into(),
        "ISOLATION".into(),
        "CPU S".into(),
        "STATUS".into(),
        "LABELS".into(),
    ]];
    for s in &items {
        let age = s["createdAt"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .and_then(|t| now.duration_since(t).ok())
            .map_or_else(|| "?".to_string(), |d| short_duration(d.as_secs()));
        let labels = s["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        rows.push([
            printable(s["id"].as_str().unwrap_or("?")),
            age,
            s["memoryMb"]
                .as_u64()
                .map_or_else(|| "?".into(), |m| format!("{m}MiB")),
            printable(s["isolation"].as_str().unwrap_or("?")),
            s["cpuSeconds"]
                .as_f64()
                .map_or_else(|| "?".into(), |c| format!("{c:.1}")),
            printable(s["status"].as_str().unwrap_or("?")),
            printable(&labels),
        ]);
    }
    print_table(&rows);
    Ok(0)
}

/// `42s`, `5m`, `3h`, `2d`.
pub fn short_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
pub fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        println!("{}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse() {
        assert_eq!(parse_label("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_label("a=").unwrap(), ("a".into(), "".into()));
        assert!(parse_label("ab").is_err());
        assert!(parse_label("=b").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(short_duration(5), "5s");
        assert_eq!(short_duration(300), "5m");
        assert_eq!(short_duration(7200), "2h");
        assert_eq!(short_duration(200_000), "2d");
    }
}
