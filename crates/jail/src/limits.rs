//! Resource limits of a sandbox and the parsers for their human forms
//! (`1280M`, `2G`, `5m`).

use crate::JailError;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Memory limit (cgroup), bytes. The sandbox is OOM-killed past it.
    pub memory_bytes: u64,
    /// CPU quota in thousandths of a CPU (2000 = two full cores).
    pub cpu_millis: u64,
    /// Maximum number of tasks (processes and threads).
    pub pids: u64,
    /// Size of the writable layer of the root filesystem, bytes.
    pub disk_bytes: u64,
    /// Open files per process (RLIMIT_NOFILE).
    pub nofile: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 1280 << 20,
            cpu_millis: 2000,
            pids: 1024,
            disk_bytes: 2 << 30,
            nofile: 65536,
        }
    }
}

impl Limits {
    pub const MIN_MEMORY: u64 = 32 << 20;
    pub const MIN_DISK: u64 = 1 << 20;

    pub fn validate(&self) -> Result<(), JailError> {
        if self.memory_bytes < Self::MIN_MEMORY {
            return Err(JailError::InvalidLimit(format!(
                "memory {} is below the minimum of 32M",
                self.memory_bytes
            )));
        }
        if self.cpu_millis < 10 {
            return Err(JailError::InvalidLimit("cpus must be at least 0.01".into()));
        }
        if self.pids < 2 {
            return Err(JailError::InvalidLimit(
                "pids must be at least 2 (the agent and one process)".into(),
            ));
        }
        if self.disk_bytes < Self::MIN_DISK {
            return Err(JailError::InvalidLimit("disk must be at least 1M".into()));
        }
        Ok(())
    }
}

/// Parses `512M`, `1.5G`, `1280MiB`, `4096` (bytes), `64k`. Binary units.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        format!("invalid size {text:?}: expected a number with an optional unit like 512M or 2G")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {text:?}: use K, M, G or T"
            ))
        }
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("size {text:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// Parses `30s`, `5m`, `1h`, `1h30m`, `250ms`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration: use e.g. 30s, 5m or 1h".into());
    }
    if let Ok(secs) = t.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration {text:?}: use e.g. 30s, 5m, 1h30m"
            ));
        }
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            "d" => value * 86400.0,
            _ => {
                return Err(format!(
                    "invalid duration unit {unit:?} in {text:?}: use ms, s, m, h or d"
                ))
            }
        };
        total += Duration::from_secs_f64(secs);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1280M").unwrap(), 1280 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert!(parse_size("12X").unwrap_err().contains("unit"));
        assert!(parse_size("abc").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m5").is_err());
    }

    #[test]
    fn limits_validate() {
        assert!(Limits::default().validate().is_ok());
        let l = Limits {
            memory_bytes: 1 << 20,
            ..Limits::default()
        };
        assert!(l.validate().unwrap_err().to_string().contains("memory"));
    }
}
