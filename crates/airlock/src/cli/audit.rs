//! `airlock audit SANDBOX`: the sandbox's network events (DNS queries, TCP
//! connections, dropped UDP flows) and what the egress gateway decided,
//! read from the store file, so it works while the daemon is down.

use anyhow::Result;
use clap::Args;
use std::path::Path;
use store::{NetEvent, NetEventQuery, Store};

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// The sandbox id.
    sandbox: String,
    /// Print one JSON array (the HTTP API's event objects) instead of a table.
    #[arg(long)]
    json: bool,
    /// Only denied events.
    #[arg(long)]
    denied: bool,
    /// Show at most N events, oldest first.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    limit: u64,
}

pub fn main(store_path: &Path, args: AuditArgs) -> Result<i32> {
    let unknown = |why: &str| {
        eprintln!(
            "airlock: no sandbox {} in {}{why}; list them with GET /api/v3/sandboxes",
            args.sandbox,
            store_path.display()
        );
        Ok(1)
    };
    // Reading must not create an empty store where a path was mistyped.
    if !store_path.exists() {
        return unknown(" (no such file)");
    }
    let store = Store::open(store_path)?;
    if store.get_sandbox(&args.sandbox)?.is_none() {
        return unknown("");
    }
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    // One more than asked, to tell whether the output was cut short.
    let mut events = store.net_events(
        &args.sandbox,
        &NetEventQuery {
            after_id: None,
            limit: limit.saturating_add(1),
            verdict: args.denied.then(|| "denied".to_string()),
        },
    )?;
    let truncated = events.len() > limit;
    events.truncate(limit);

    if args.json {
        println!("{}", serde_json::to_string_pretty(&events)?);
    } else {
        print!("{}", table(&events, args.denied));
    }
    if truncated {
        let of = if args.denied {
            "denied".to_string()
        } else {
            format!("of {}", store.count_net_events(&args.sandbox)?)
        };
        eprintln!("airlock: showing the first {limit} {of} events; raise --limit to see more");
    }
    Ok(0)
}

const HEADER: [&str; 9] = [
    "TIME",
    "KIND",
    "NAME:PORT",
    "VERDICT",
    "REASON",
    "UPSTREAM",
    "OUT",
    "IN",
    "DURATION",
];

/// Columns aligned right (the numbers).
const RIGHT: [bool; 9] = [false, false, false, false, false, false, true, true, true];

fn table(events: &[NetEvent], denied_only: bool) -> String {
    let rows: Vec<[String; 9]> = events
        .iter()
        .map(|e| {
            [
                rfc3339_ms(e.at_ms),
                printable(&e.kind),
                printable(&host_port(&e.name, e.port)),
                printable(&e.verdict),
                printable(&e.reason),
                e.upstream.as_deref().map_or("-".to_string(), printable),
                human_bytes(e.bytes_out),
                human_bytes(e.bytes_in),
                human_duration(e.duration_ms),
            ]
        })
        .collect();
    let mut widths = HEADER.map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| -> String {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            if RIGHT[i] {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                if i + 1 < cells.len() {
                    out.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(&HEADER);
    for row in &rows {
        out.push_str(&line(&row.each_ref().map(String::as_str)));
    }
    if rows.is_empty() {
        out.push_str(if denied_only {
            "(no denied network events)\n"
        } else {
            "(no network events)\n"
        });
    }
    out
}

/// `name:port`, with an IPv6 address bracketed; a port of 0 (no port, as
/// for some DNS events) is left out.
fn host_port(name: &str, port: u16) -> String {
    match (port, name.contains(':')) {
        (0, _) => name.to_string(),
        (_, true) => format!("[{name}]:{port}"),
        (_, false) => format!("{name}:{port}"),
    }
}

/// Names and reasons come from the sandbox's own traffic: escape control
/// and bidirectional-formatting characters so they cannot drive or spoof
/// the terminal.
pub(crate) fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let hidden = matches!(c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
        if c.is_control() || hidden {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Epoch milliseconds as RFC 3339 UTC with milliseconds
/// (`2023-11-14T22:13:20.123Z`), the daemon API's format.
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        day_secs / 3600,
        day_secs % 3600 / 60,
        day_secs % 60,
        ms.rem_euclid(1000)
    )
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// 512B, 1.5KiB, 3.0MiB, ...
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}

/// 35ms, 1.5s, 2m03s, 1h05m.
fn human_duration(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc_with_millis() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        // Every day boundary of four years (leap years included) round-trips
        // against a naive day-by-day calendar walk.
        let (mut y, mut m, mut d) = (2023i64, 1u32, 1u32);
        let start = 19_358; // 2023-01-01
        for day in start..start + 4 * 366 {
            assert_eq!(civil_from_days(day), (y, m, d), "day {day}");
            let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
            let len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1536), "1.5KiB");
        assert_eq!(human_bytes(3 << 20), "3.0MiB");
        assert_eq!(human_bytes(u64::MAX), "16.0EiB");
        assert_eq!(human_duration(35), "35ms");
        assert_eq!(human_duration(1500), "1.5s");
        assert_eq!(human_duration(123_000), "2m03s");
        assert_eq!(human_duration(3_900_000), "1h05m");
    }

    #[test]
    fn hostile_names_are_escaped() {
        assert_eq!(printable("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\u{a}");
        assert_eq!(printable("evil\u{202e}moc.x"), "evil\\u{202e}moc.x");
        assert_eq!(printable("ünïcode.example"), "ünïcode.example");
        assert_eq!(host_port("::1", 443), "[::1]:443");
        assert_eq!(host_port("example.com", 0), "example.com");
    }
}
