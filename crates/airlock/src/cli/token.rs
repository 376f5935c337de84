//! `airlock token create|ls|revoke`: access tokens for the daemon's API.

use anyhow::{bail, Result};
use clap::Subcommand;
use std::path::Path;
use store::Store;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once and only its hash is stored.
    Create {
        /// A name to recognise it by.
        #[arg(default_value = "default")]
        name: String,
        /// Pin the token's sandboxes to this isolation backend (native or
        /// gvisor), whatever the daemon's default: give less-trusted
        /// tenants gvisor.
        #[arg(long, value_parser = super::isolation::parse)]
        isolation: Option<manager::Isolation>,
    },
    /// List tokens (never their secrets).
    Ls,
    /// Revoke a token by id or name.
    Revoke { id_or_name: String },
}

pub fn main(store_path: &Path, cmd: TokenCommand) -> Result<i32> {
    let store = Store::open(store_path)?;
    match cmd {
        TokenCommand::Create { name, isolation } => {
            let token = store.create_pinned_token(&name, isolation.map(|i| i.as_str()))?;
            let pinned = isolation.map_or(String::new(), |i| format!(", pinned to {i}"));
            eprintln!(
                "created token {} ({}{pinned}); the secret is shown only now:",
                token.id, token.name
            );
            println!("{}", token.secret);
        }
        TokenCommand::Ls => {
            println!(
                "{:<18} {:<20} {:<10} {:<10} LAST USED",
                "ID", "NAME", "STATUS", "ISOLATION"
            );
            for t in store.list_tokens()? {
                let status = if t.revoked_at_ms.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                let used = t.last_used_at_ms.map_or("never".to_string(), |ms| {
                    format!("{}s ago", (store::now_ms() - ms) / 1000)
                });
                let isolation = t.isolation.as_deref().unwrap_or("default");
                println!(
                    "{:<18} {:<20} {:<10} {:<10} {}",
                    t.id, t.name, status, isolation, used
                );
            }
        }
        TokenCommand::Revoke { id_or_name } => {
            if !store.revoke_token(&id_or_name)? {
                bail!("no active token {id_or_name:?}: see `airlock token ls`");
            }
            println!("revoked {id_or_name}");
        }
    }
    Ok(0)
}
