//! `airlock image build|ls|rm`.

use anyhow::Result;
use clap::Subcommand;
use image::{ImageStore, Progress};
use std::io::Write;
use std::path::Path;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build an image (the default image: Debian with python3, pip, node, npm, deno, git, curl).
    Build {
        #[arg(default_value = "default")]
        name: String,
        /// Rebuild even if the image exists.
        #[arg(long)]
        force: bool,
    },
    /// List images.
    Ls,
    /// Remove an image.
    Rm { name: String },
}

/// Prints build progress to stderr, so `airlock run` output stays clean.
pub fn print_progress(p: Progress) {
    let mut err = std::io::stderr().lock();
    let _ = match p {
        Progress::Stage(s) => writeln!(err, "==> {s}"),
        Progress::Line(l) => writeln!(err, "    {l}"),
        Progress::Done { secs } => writeln!(err, "==> image ready in {secs:.1}s"),
    };
}

pub fn main(data_dir: &Path, cmd: ImageCommand) -> Result<()> {
    let store = ImageStore::new(data_dir);
    match cmd {
        ImageCommand::Build { name, force } => {
            // Without --force: build if missing or made by an older recipe.
            let info = if force {
                store.build(&name, true, &mut print_progress)?
            } else {
                store.ensure(&name, &mut print_progress)?
            };
            println!("{} {}", info.name, info.rootfs.display());
        }
        ImageCommand::Ls => {
            println!("{:<16} {:>10} {:<20} CONTENTS", "NAME", "SIZE", "CREATED");
            for i in store.list()? {
                println!(
                    "{:<16} {:>9}M {:<20} {}",
                    i.name,
                    i.size_bytes >> 20,
                    i.created_unix,
                    i.summary
                );
            }
        }
        ImageCommand::Rm { name } => {
            store.remove(&name)?;
            println!("removed {name}");
        }
    }
    Ok(())
}
