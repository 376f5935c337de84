//! What `airlock volume` and `airlock snapshot` share: the console API's
//! storage objects are listed, inspected and deleted the same way, and
//! their refusals and sizes are shown the same way.

use crate::cli::api::{encode, Client, Response};
use crate::cli::audit::printable;
use anyhow::Result;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// One kind of storage object: its name in messages ("volume") and its
/// collection's path (`/api/v2/volumes`).
#[derive(Clone, Copy)]
pub struct Kind {
    pub noun: &'static str,
    pub path: &'static str,
}

pub const VOLUMES: Kind = Kind {
    noun: "volume",
    path: "/api/v2/volumes",
};

pub const SNAPSHOTS: Kind = Kind {
    noun: "snapshot",
    path: "/api/v2/snapshots",
};

impl Kind {
    /// The collection, narrowed to ids or slugs containing `search`.
    fn list_path(self, search: Option<&str>) -> String {
        match search.filter(|s| !s.is_empty()) {
            Some(s) => format!("{}?search={}", self.path, encode(s)),
            None => self.path.to_string(),
        }
    }

    fn item_path(self, key: &str) -> String {
        format!("{}/{}", self.path, encode(key))
    }

    /// `GET` the collection.
    pub fn list<T: DeserializeOwned>(self, client: &Client, search: Option<&str>) -> Result<T> {
        client.get(&self.list_path(search))?.ok()?.decode()
    }

    /// Prints the object `key` as JSON (read as `T`, so a daemon answering
    /// something else is an error, not passed through). An unknown one is
    /// "no such NOUN", exit 1.
    pub fn inspect<T: DeserializeOwned + Serialize>(
        self,
        client: &Client,
        key: &str,
    ) -> Result<i32> {
        let resp = client.get(&self.item_path(key))?;
        if resp.status == 404 {
            eprintln!("no such {}: {}", self.noun, printable(key));
            return Ok(1);
        }
        let object: T = resp.ok()?.decode()?;
        println!("{}", serde_json::to_string_pretty(&object)?);
        Ok(0)
    }

    /// Deletes each of `keys`, printing each one removed; one that is
    /// unknown or refused is reported and the rest are still tried. Exit
    /// 1 if any failed.
    pub fn rm(self, client: &Client, keys: &[String]) -> Result<i32> {
        let mut code = 0;
        for key in keys {
            let resp = client.delete(&self.item_path(key))?;
            if resp.status == 404 {
                eprintln!("no such {}: {}", self.noun, printable(key));
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
}

/// The daemon's message when it refused the request itself (bad input, a
/// conflict, a quota, a full pool): the user's to fix, so exit 1 with it.
/// A bad token and the daemon's own failures go through [`Response::ok`].
fn refusal(resp: &Response) -> Option<String> {
    let user_fixable = (400..500).contains(&resp.status) && resp.status != 401;
    (user_fixable || resp.status == 507).then(|| resp.message())
}

/// `POST path` with `body`; on success prints the new object's id (its
/// `id` field) and returns 0; on a refusal prints "airlock: DOING: the
/// daemon's message" and returns 1.
pub fn create(client: &Client, path: &str, body: &impl Serialize, doing: &str) -> Result<i32> {
    #[derive(serde::Deserialize)]
    struct Created {
        id: String,
    }
    let resp = client.post_json(path, body)?;
    if let Some(msg) = refusal(&resp) {
        eprintln!("airlock: {doing}: {}", printable(&msg));
        return Ok(1);
    }
    let created: Created = resp.ok()?.decode()?;
    println!("{}", printable(&created.id));
    Ok(0)
}

/// A table cell for a flag.
pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// A size for people. A whole number of GiB or MiB (a capacity given in
/// binary units) is shown in them; the rest in the decimal units the
/// daemon's messages use.
pub fn size(bytes: u64) -> String {
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
    fn paths_are_encoded() {
        assert_eq!(SNAPSHOTS.list_path(None), "/api/v2/snapshots");
        assert_eq!(SNAPSHOTS.list_path(Some("")), "/api/v2/snapshots");
        assert_eq!(
            VOLUMES.list_path(Some("a b")),
            "/api/v2/volumes?search=a%20b"
        );
        assert_eq!(SNAPSHOTS.item_path("x/y"), "/api/v2/snapshots/x%2Fy");
    }
}
