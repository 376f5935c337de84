//! Unit tests against real SQLite files in temporary directories.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use super::*;

fn temp_store() -> (tempfile::TempDir, std::path::PathBuf, Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/state/airlock.db");
    let store = Store::open(&path).unwrap();
    (dir, path, store)
}

fn sandbox(id: &str, created_at_ms: i64, labels: &[(&str, &str)]) -> SandboxRecord {
    SandboxRecord {
        id: id.to_owned(),
        token_id: Some("tok_aaaaaaaaaaaa".to_owned()),
        region: "local".to_owned(),
        status: STATUS_RUNNING.to_owned(),
        created_at_ms,
        stopped_at_ms: None,
        stop_at_ms: Some(created_at_ms + 300_000),
        memory_mb: 1280,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        exit_reason: None,
        allow_net: vec!["example.com".to_owned(), "*.deno.land".to_owned()],
        secret_names: vec!["OPENAI_API_KEY".to_owned()],
    }
}

fn ids(recs: &[SandboxRecord]) -> Vec<&str> {
    recs.iter().map(|r| r.id.as_str()).collect()
}

/// Every byte of the database, WAL included, as it would sit on disk.
fn file_bytes(path: &std::path::Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let wal = path.with_extension("db-wal");
    if let Ok(more) = std::fs::read(wal) {
        bytes.extend(more);
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn token_lifecycle() {
    let (_dir, _path, store) = temp_store();
    assert_eq!(store.token_count().unwrap(), 0);
    let tok = store.create_token("ci").unwrap();
    assert_eq!(tok.name, "ci");
    assert_eq!(store.token_count().unwrap(), 1);

    let info = store
        .verify_token(&tok.secret)
        .unwrap()
        .expect("valid token");
    assert_eq!(info.id, tok.id);
    assert_eq!(info.name, "ci");
    assert!(info.revoked_at_ms.is_none());
    assert!(info.last_used_at_ms.is_some());

    assert_eq!(store.verify_token("ddo_nope").unwrap(), None);
    assert_eq!(store.verify_token("").unwrap(), None);
    let mut wrong = tok.secret.clone();
    wrong.pop();
    wrong.push('!');
    assert_eq!(store.verify_token(&wrong).unwrap(), None);

    assert!(store.revoke_token(&tok.id).unwrap());
    assert_eq!(store.verify_token(&tok.secret).unwrap(), None);
    assert_eq!(store.token_count().unwrap(), 0);
    // Already revoked, and unknown, both report false.
    assert!(!store.revoke_token(&tok.id).unwrap());
    assert!(!store.revoke_token("nobody").unwrap());

    let listed = store.list_tokens().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked_at_ms.is_some());
    assert_eq!(listed[0].last_used_at_ms, info.last_used_at_ms);
}

#[test]
fn revoke_by_name_and_name_reuse() {
    let store = Store::open_in_memory().unwrap();
    let a = store.create_token("laptop").unwrap();
    assert!(matches!(
        store.create_token("laptop"),
        Err(StoreError::TokenNameTaken(n)) if n == "laptop"
    ));
    assert!(store.revoke_token("laptop").unwrap());
    assert_eq!(store.verify_token(&a.secret).unwrap(), None);
    // A revoked token's name is free again.
    let b = store.create_token("laptop").unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(store.verify_token(&b.secret).unwrap().unwrap().id, b.id);
    assert_eq!(store.list_tokens().unwrap().len(), 2);
}

#[test]
fn token_names_are_validated() {
    let store = Store::open_in_memory().unwrap();
    for bad in ["", "  ", "a\nb", "tok_abc", &"x".repeat(65)] {
        assert!(
            matches!(
                store.create_token(bad),
                Err(StoreError::InvalidTokenName { .. })
            ),
            "{bad:?} accepted"
        );
    }
    store.create_token(&"x".repeat(64)).unwrap();
    store.create_token("deploy bot (prod)").unwrap();
}

#[test]
fn only_the_hash_reaches_the_file() {
    let (_dir, path, store) = temp_store();
    let tok = store.create_token("secretive").unwrap();
    assert!(store.verify_token(&tok.secret).is_ok());
    let bytes = file_bytes(&path);
    assert!(
        contains(&bytes, tok.id.as_bytes()),
        "sanity: the id is there"
    );
    assert!(contains(
        &bytes,
        tokens::hash_for_test(&tok.secret).as_bytes()
    ));
    assert!(!contains(&bytes, tok.secret.as_bytes()));
    // Nor its random part alone.
    assert!(!contains(
        &bytes,
        &tok.secret.as_bytes()[SECRET_PREFIX.len()..]
    ));
    drop(store);
    assert!(!contains(&file_bytes(&path), tok.secret.as_bytes()));
}

#[test]
fn secret_and_id_formats() {
    let store = Store::open_in_memory().unwrap();
    for i in 0..50 {
        let tok = store.create_token(&format!("t{i}")).unwrap();
        // ^ddo_[A-Za-z0-9]{40}$
        let rest = tok.secret.strip_prefix("ddo_").expect("ddo_ prefix");
        assert_eq!(rest.len(), 40, "{}", tok.secret);
        assert!(
            rest.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{}",
            tok.secret
        );
        // ^tok_[a-z2-7]{12}$
        let rest = tok.id.strip_prefix("tok_").expect("tok_ prefix");
        assert_eq!(rest.len(), 12, "{}", tok.id);
        assert!(
            rest.bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)),
            "{}",
            tok.id
        );
        assert!(
            !format!("{tok:?}").contains(&tok.secret),
            "Debug leaks the secret"
        );
    }
}

#[test]
fn ids_and_secrets_unique_over_1000_creates() {
    let store = Store::open_in_memory().unwrap();
    let mut ids = HashSet::new();
    let mut secrets = HashSet::new();
    for i in 0..1000 {
        let tok = store.create_token(&format!("t{i}")).unwrap();
        assert!(ids.insert(tok.id));
        assert!(secrets.insert(tok.secret));
    }
    assert_eq!(store.token_count().unwrap(), 1000);
}

#[test]
fn sandbox_insert_get_end() {
    let (_dir, _path, store) = temp_store();
    let rec = sandbox("sbx_1", 1_000, &[("team", "a"), ("weird.key\"", "v")]);
    store.insert_sandbox(&rec).unwrap();
    assert_eq!(store.get_sandbox("sbx_1").unwrap().as_ref(), Some(&rec));
    assert_eq!(store.get_sandbox("missing").unwrap(), None);
    assert!(store.insert_sandbox(&rec).is_err(), "duplicate id");

    store.set_stop_at("sbx_1", Some(9_999)).unwrap();
    assert_eq!(
        store.get_sandbox("sbx_1").unwrap().unwrap().stop_at_ms,
        Some(9_999)
    );
    store.set_stop_at("sbx_1", None).unwrap();
    assert_eq!(
        store.get_sandbox("sbx_1").unwrap().unwrap().stop_at_ms,
        None
    );
    assert!(matches!(
        store.set_stop_at("missing", None),
        Err(StoreError::SandboxNotFound(_))
    ));

    store.end_sandbox("sbx_1", 2_000, "killed").unwrap();
    let got = store.get_sandbox("sbx_1").unwrap().unwrap();
    assert_eq!(got.status, STATUS_STOPPED);
    assert_eq!(got.stopped_at_ms, Some(2_000));
    assert_eq!(got.exit_reason.as_deref(), Some("killed"));
    // The first end wins.
    store.end_sandbox("sbx_1", 3_000, "timeout").unwrap();
    let again = store.get_sandbox("sbx_1").unwrap().unwrap();
    assert_eq!(again, got);
    assert!(matches!(
        store.end_sandbox("missing", 1, "x"),
        Err(StoreError::SandboxNotFound(_))
    ));

    let bad = SandboxRecord {
        status: "paused".into(),
        ..sandbox("sbx_2", 1, &[])
    };
    assert!(matches!(
        store.insert_sandbox(&bad),
        Err(StoreError::InvalidStatus(_))
    ));
}

#[test]
fn sandbox_list_filters() {
    let store = Store::open_in_memory().unwrap();
    store
        .insert_sandbox(&sandbox("a", 100, &[("env", "prod"), ("team", "x")]))
        .unwrap();
    store
        .insert_sandbox(&sandbox("b", 300, &[("env", "dev"), ("team", "x")]))
        .unwrap();
    store
        .insert_sandbox(&sandbox("c", 200, &[("env", "prod")]))
        .unwrap();
    // Same millisecond as "b": insertion order breaks the tie.
    let mut d = sandbox("d", 300, &[]);
    d.token_id = Some("tok_other".into());
    store.insert_sandbox(&d).unwrap();
    store.end_sandbox("c", 400, "done").unwrap();

    let list = |f: SandboxFilter| store.list_sandboxes(&f).unwrap();
    assert_eq!(ids(&list(SandboxFilter::default())), ["d", "b", "c", "a"]);
    let running = SandboxFilter {
        running_only: true,
        ..Default::default()
    };
    assert_eq!(ids(&list(running.clone())), ["d", "b", "a"]);

    let label = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let prod = SandboxFilter {
        labels: label(&[("env", "prod")]),
        ..Default::default()
    };
    assert_eq!(ids(&list(prod.clone())), ["c", "a"]);
    assert_eq!(
        ids(&list(SandboxFilter {
            running_only: true,
            ..prod
        })),
        ["a"]
    );
    // All pairs must match.
    assert_eq!(
        ids(&list(SandboxFilter {
            labels: label(&[("env", "prod"), ("team", "x")]),
            ..Default::default()
        })),
        ["a"]
    );
    assert!(list(SandboxFilter {
        labels: label(&[("env", "prod"), ("team", "y")]),
        ..Default::default()
    })
    .is_empty());
    // A key alone, or a value under another key, is not a match.
    assert!(list(SandboxFilter {
        labels: label(&[("prod", "env")]),
        ..Default::default()
    })
    .is_empty());

    assert_eq!(
        ids(&list(SandboxFilter {
            token_id: Some("tok_other".into()),
            ..Default::default()
        })),
        ["d"]
    );
    assert_eq!(
        ids(&list(SandboxFilter {
            limit: Some(2),
            ..Default::default()
        })),
        ["d", "b"]
    );
    assert!(list(SandboxFilter {
        limit: Some(0),
        ..Default::default()
    })
    .is_empty());
}

#[test]
fn end_all_running_for_restart_recovery() {
    let store = Store::open_in_memory().unwrap();
    store.insert_sandbox(&sandbox("a", 1, &[])).unwrap();
    store.insert_sandbox(&sandbox("b", 2, &[])).unwrap();
    store.insert_sandbox(&sandbox("c", 3, &[])).unwrap();
    store.end_sandbox("b", 5, "killed").unwrap();

    let mut ended = store.end_all_running(10, "daemon restarted").unwrap();
    ended.sort();
    assert_eq!(ended, ["a", "c"]);
    for id in ["a", "c"] {
        let r = store.get_sandbox(id).unwrap().unwrap();
        assert_eq!(r.status, STATUS_STOPPED);
        assert_eq!(r.stopped_at_ms, Some(10));
        assert_eq!(r.exit_reason.as_deref(), Some("daemon restarted"));
    }
    let b = store.get_sandbox("b").unwrap().unwrap();
    assert_eq!(
        (b.stopped_at_ms, b.exit_reason.as_deref()),
        (Some(5), Some("killed"))
    );
    assert!(store.end_all_running(11, "again").unwrap().is_empty());
}

#[test]
fn reopen_keeps_data_and_schema_version() {
    let (_dir, path, store) = temp_store();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 2);
    let tok = store.create_token("keep").unwrap();
    let rec = sandbox("sbx_keep", 42, &[("k", "v")]);
    store.insert_sandbox(&rec).unwrap();
    drop(store);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.verify_token(&tok.secret).unwrap().unwrap().id, tok.id);
    assert_eq!(store.get_sandbox("sbx_keep").unwrap(), Some(rec));
    drop(store);

    // Independent check of the header and journal mode with a raw connection.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn refuses_a_newer_schema() {
    let (_dir, path, store) = temp_store();
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    match Store::open(&path) {
        Err(StoreError::SchemaTooNew {
            found: 99,
            supported,
        }) => {
            assert_eq!(supported, SCHEMA_VERSION)
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("opened a newer schema"),
    }
}

#[test]
fn file_is_private() {
    let (_dir, path, store) = temp_store();
    store.create_token("x").unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // An existing, looser file is tightened on open.
    drop(store);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _store = Store::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn concurrent_use_from_8_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();

    let (_dir, _path, store) = temp_store();
    let store = Arc::new(store);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let tok = store.create_token(&format!("thread-{t}")).unwrap();
                for i in 0..50 {
                    let id = format!("sbx_{t}_{i}");
                    let mut rec = sandbox(&id, now_ms(), &[("thread", &t.to_string())]);
                    rec.token_id = Some(tok.id.clone());
                    store.insert_sandbox(&rec).unwrap();
                    assert_eq!(store.verify_token(&tok.secret).unwrap().unwrap().id, tok.id);
                    if i % 2 == 0 {
                        store.end_sandbox(&id, now_ms(), "done").unwrap();
                    }
                    store.list_sandboxes(&SandboxFilter::default()).unwrap();
                }
                tok.id
            })
        })
        .collect();
    let token_ids: Vec<String> = threads.into_iter().map(|h| h.join().unwrap()).collect();

    assert_eq!(store.token_count().unwrap(), 8);
    assert_eq!(
        store
            .list_sandboxes(&SandboxFilter::default())
            .unwrap()
            .len(),
        400
    );
    let running = SandboxFilter {
        running_only: true,
        ..Default::default()
    };
    assert_eq!(store.list_sandboxes(&running).unwrap().len(), 200);
    for (t, tok) in token_ids.iter().enumerate() {
        let mine = store
            .list_sandboxes(&SandboxFilter {
                token_id: Some(tok.clone()),
                labels: vec![("thread".into(), t.to_string())],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(mine.len(), 50);
    }
}

#[test]
fn usage_is_recorded_and_reported_by_group() {
    let store = Store::open_in_memory().unwrap();
    let mut labels = BTreeMap::new();
    labels.insert("team".to_string(), "a".to_string());
    for (id, token, team) in [
        ("s1", "t1", Some("a")),
        ("s2", "t1", None),
        ("s3", "t2", Some("a")),
    ] {
        let mut rec = SandboxRecord {
            id: id.into(),
            token_id: Some(token.into()),
            region: "ord".into(),
            status: "running".into(),
            created_at_ms: 1_000,
            memory_mb: 1280,
            ..Default::default()
        };
        if team.is_some() {
            rec.labels = labels.clone();
        }
        store.insert_sandbox(&rec).unwrap();
        let gib_for_an_hour = (1u64 << 30) * 3_600_000;
        store
            .record_usage(
                id,
                &Usage {
                    cpu_usec: 2_000_000,
                    memory_byte_ms: gib_for_an_hour,
                    peak_memory_bytes: 5,
                },
                11_000,
            )
            .unwrap();
    }
    store.end_sandbox("s2", 21_000, "closed").unwrap();
    let (u, at) = store.get_usage("s1").unwrap().unwrap();
    assert_eq!(at, Some(11_000));
    assert!((u.cpu_seconds() - 2.0).abs() < 1e-9);
    assert!((u.memory_gb_hours() - 1.0).abs() < 1e-9);

    let by_token = store.usage_report(0, &UsageGroup::Token).unwrap();
    assert_eq!(by_token.len(), 2);
    assert_eq!((by_token[0].key.as_str(), by_token[0].sandboxes), ("t1", 2));
    assert!((by_token[0].cpu_seconds - 4.0).abs() < 1e-9);
    assert!((by_token[0].memory_gb_hours - 2.0).abs() < 1e-9);
    // s1 ran 10 s (to its last sample), s2 20 s (to its end).
    assert!((by_token[0].wall_seconds - 30.0).abs() < 1e-9);
    let by_label = store
        .usage_report(0, &UsageGroup::Label("team".into()))
        .unwrap();
    let keys: Vec<_> = by_label
        .iter()
        .map(|r| (r.key.as_str(), r.sandboxes))
        .collect();
    assert_eq!(keys, [("", 1), ("a", 2)]);
    // A sandbox that stopped before the period is not in it.
    let since = store.usage_report(30_000, &UsageGroup::Sandbox).unwrap();
    assert_eq!(
        since.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["s1", "s3"]
    );
    assert!(matches!(
        store.record_usage("nope", &Usage::default(), 1),
        Err(StoreError::SandboxNotFound(_))
    ));
}
