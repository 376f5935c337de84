//! API tokens.
//!
//! Only the SHA-256 of a secret is stored. Lookup is by that hash through a
//! unique index, so no secret-dependent comparison happens in our code and a
//! constant-time compare is not needed; the 40-character random secret (~238
//! bits) makes an unsalted fast hash safe, unlike a password.

use std::fmt;

use rusqlite::{params, OptionalExtension, Row};
use sha2::{Digest, Sha256};

use crate::error::{Context, StoreError};
use crate::{now_ms, random, Store};

/// The Deno SDKs refuse tokens that do not start with this.
pub const SECRET_PREFIX: &str = "ddo_";
const SECRET_RANDOM_LEN: usize = 40;
pub const TOKEN_ID_PREFIX: &str = "tok_";
const TOKEN_ID_RANDOM_LEN: usize = 12;
const MAX_NAME_LEN: usize = 64;

/// last_used_at_ms is refreshed at most this often, so that verifying a token
/// on every request does not turn every request into a disk write.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// A freshly created token. `secret` is the only copy of the plaintext:
/// show it once and drop it.
#[derive(Clone, PartialEq, Eq)]
pub struct NewToken {
    pub id: String,
    pub name: String,
    pub secret: String,
}

/// Redacts the secret so a stray `{:?}` in a log cannot leak it.
impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
    /// The isolation backend this token's sandboxes always get (`None`:
    /// the daemon's default). The daemon validates the name.
    pub isolation: Option<String>,
}

const INFO_COLUMNS: &str = "id, name, created_at_ms, revoked_at_ms, last_used_at_ms, isolation";

fn info_from_row(r: &Row<'_>) -> rusqlite::Result<TokenInfo> {
    Ok(TokenInfo {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at_ms: r.get(2)?,
        revoked_at_ms: r.get(3)?,
        last_used_at_ms: r.get(4)?,
        isolation: r.get(5)?,
    })
}

fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push(char::from_digit((b >> 4) as u32, 16).unwrap());
        hex.push(char::from_digit((b & 15) as u32, 16).unwrap());
    }
    hex
}

/// Names are shown in `airlock token ls` and typed back into `revoke`, so
/// keep them short and printable.
fn check_name(name: &str) -> Result<(), StoreError> {
    let reason = if name.trim().is_empty() {
        "must not be empty"
    } else if name.chars().count() > MAX_NAME_LEN {
        "longer than 64 characters"
    } else if name.chars().any(char::is_control) {
        "contains control characters"
    } else if name.starts_with(TOKEN_ID_PREFIX) {
        // `revoke` takes an id or a name; a name shaped like an id would be ambiguous.
        "must not start with \"tok_\""
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidTokenName {
        name: name.to_owned(),
        reason,
    })
}

impl Store {
    /// Creates a token named `name` (unique among active tokens) and
    /// returns its plaintext secret, which is not stored anywhere.
    pub fn create_token(&self, name: &str) -> Result<NewToken, StoreError> {
        self.create_pinned_token(name, None)
    }

    /// [`Store::create_token`], its sandboxes pinned to an isolation backend.
    pub fn create_pinned_token(
        &self,
        name: &str,
        isolation: Option<&str>,
    ) -> Result<NewToken, StoreError> {
        check_name(name)?;
        let id = format!(
            "{TOKEN_ID_PREFIX}{}",
            random::base32_lower(TOKEN_ID_RANDOM_LEN)?
        );
        let secret = format!(
            "{SECRET_PREFIX}{}",
            random::alphanumeric(SECRET_RANDOM_LEN)?
        );
        let conn = self.lock();
        let res = conn.execute(
            "INSERT INTO tokens (id, name, secret_sha256, created_at_ms, isolation) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, name, hash_secret(&secret), now_ms(), isolation],
        );
        match res {
            Ok(_) => Ok(NewToken {
                id,
                name: name.to_owned(),
                secret,
            }),
            // The only unique constraint a caller can hit is the active-name
            // index (an id or hash collision at 60/238 bits is not a concern).
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::TokenNameTaken(name.to_owned()))
            }
            Err(error) => Err(StoreError::Sqlite {
                context: "inserting token",
                error,
            }),
        }
    }

    /// The active token whose secret is `secret`, or `None` (unknown or
    /// revoked). Also records the use, at [`LAST_USED_RESOLUTION_MS`] granularity.
    pub fn verify_token(&self, secret: &str) -> Result<Option<TokenInfo>, StoreError> {
        // Cheap reject of obvious garbage without touching the database.
        if !secret.starts_with(SECRET_PREFIX) {
            return Ok(None);
        }
        let conn = self.lock();
        let found = conn
            .query_row(
                &format!(
                    "SELECT {INFO_COLUMNS} FROM tokens \
                     WHERE secret_sha256 = ?1 AND revoked_at_ms IS NULL"
                ),
                [hash_secret(secret)],
                info_from_row,
            )
            .optional()
            .ctx("looking up token")?;
        let Some(mut info) = found else {
            return Ok(None);
        };
        let now = now_ms();
        if !matches!(info.last_used_at_ms, Some(t) if now - t < LAST_USED_RESOLUTION_MS) {
            conn.execute(
                "UPDATE tokens SET last_used_at_ms = ?1 WHERE id = ?2",
                params![now, info.id],
            )
            .ctx("recording token use")?;
            info.last_used_at_ms = Some(now);
        }
        Ok(Some(info))
    }

    /// All tokens, revoked ones included, oldest first.
    pub fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {INFO_COLUMNS} FROM tokens ORDER BY created_at_ms, rowid"
            ))
            .ctx("listing tokens")?;
        let rows = stmt
            .query_map([], info_from_row)
            .ctx("listing tokens")?
            .collect::<Result<Vec<_>, _>>()
            .ctx("listing tokens")?;
        Ok(rows)
    }

    /// Revokes the active token with this id or name. `false` if there is no
    /// such active token (unknown, or already revoked). The row is kept so
    /// sandbox records can still name the token that created them.
    pub fn revoke_token(&self, id_or_name: &str) -> Result<bool, StoreError> {
        let n = self
            .lock()
            .execute(
                "UPDATE tokens SET revoked_at_ms = ?1 \
                 WHERE (id = ?2 OR name = ?2) AND revoked_at_ms IS NULL",
                params![now_ms(), id_or_name],
            )
            .ctx("revoking token")?;
        Ok(n > 0)
    }

    /// The number of active (non-revoked) tokens.
    pub fn token_count(&self) -> Result<usize, StoreError> {
        let n: i64 = self
            .lock()
            .query_row(
                "SELECT COUNT(*) FROM tokens WHERE revoked_at_ms IS NULL",
                [],
                |r| r.get(0),
            )
            .ctx("counting tokens")?;
        Ok(n as usize)
    }
}

#[cfg(test)]
pub(crate) fn hash_for_test(secret: &str) -> String {
    hash_secret(secret)
}
