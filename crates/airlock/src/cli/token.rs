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
    },
    /// List tokens (never their secrets).
    Ls,
    /// Revoke a token by id or name.
    Revoke { id_or_name: String },
}

pub fn main(store_path: &Path, cmd: TokenCommand) -> Result<i32> {
    let store = Store::open(store_path)?;
    match cmd {
        TokenCommand::Create { name } => {
            let token = store.create_token(&name)?;
            eprintln!(
                "created token {} ({}); the secret is shown only now:",
                token.id, token.name
            );
            println!("{}", token.secret);
        }
        TokenCommand::Ls => {
            println!("{:<18} {:<20} {:<10} LAST USED", "ID", "NAME", "STATUS");
            for t in store.list_tokens()? {
                let status = if t.revoked_at_ms.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                let used = t.last_used_at_ms.map_or("never".to_string(), |ms| {
                    format!("{}s ago", (store::now_ms() - ms) / 1000)
                });
                println!("{:<18} {:<20} {:<10} {}", t.id, t.name, status, used);
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
