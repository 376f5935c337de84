//! Finds the static agent binary that becomes PID 1 of each sandbox.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Where `scripts/build.sh` puts the static agent, relative to the
/// directory of the `airlock` binary (`target/release`).
const BUILD_RELATIVE: &str = "../static/x86_64-unknown-linux-gnu/release/airlock-agent";

pub fn locate() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("AIRLOCK_AGENT") {
        let p = PathBuf::from(p);
        check(&p).with_context(|| format!("AIRLOCK_AGENT={}", p.display()))?;
        return Ok(p);
    }
    let exe = std::env::current_exe().context("locating the airlock binary")?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [
        dir.join("airlock-agent.static"),
        dir.join(BUILD_RELATIVE),
        dir.join("..").join(BUILD_RELATIVE), // test binaries live in target/*/deps
        PathBuf::from("/usr/local/lib/airlock/airlock-agent"),
    ];
    for c in &candidates {
        if c.is_file() && check(c).is_ok() {
            return Ok(c.clone());
        }
    }
    bail!(
        "no static airlock-agent found (looked at $AIRLOCK_AGENT and {}); build it with scripts/build.sh",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

const HEAD: usize = 64 * 1024;

/// The agent must be a static ELF: it runs in root filesystems that may
/// have no dynamic loader or libc.
fn check(path: &Path) -> Result<()> {
    // The ELF and program headers sit at the start of the file; the agent
    // itself is tens of MiB, so read only the head.
    let mut head = Vec::with_capacity(HEAD);
    std::fs::File::open(path)
        .and_then(|f| {
            std::io::Read::read_to_end(&mut std::io::Read::take(f, HEAD as u64), &mut head)
        })
        .with_context(|| format!("reading {}", path.display()))?;
    if has_interpreter(&head)? {
        bail!(
            "{} is dynamically linked; build it static (scripts/build.sh)",
            path.display()
        );
    }
    Ok(())
}

/// Whether an ELF64 little-endian file has a PT_INTERP program header.
fn has_interpreter(elf: &[u8]) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    if elf.len() < 64 || &elf[0..4] != b"\x7fELF" || elf[4] != 2 {
        bail!("not an ELF64 file");
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[32..40].try_into().expect("8 bytes")) as usize;
    let phentsize = u16_at(54);
    let phnum = u16_at(56);
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        if off + 4 > elf.len() {
            bail!("truncated ELF program headers");
        }
        if u32::from_le_bytes(elf[off..off + 4].try_into().expect("4 bytes")) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_dynamic_binaries() {
        let sh = std::fs::read("/bin/sh").unwrap();
        assert!(has_interpreter(&sh).unwrap());
        assert!(has_interpreter(b"not an elf").is_err());
    }
}
