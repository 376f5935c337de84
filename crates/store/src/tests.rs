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
        isolation: "gvisor".to_owned(),
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
    assert_eq!(SCHEMA_VERSION, 7);
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

fn net_event(at_ms: i64, kind: &str, name: &str, verdict: &str) -> NetEvent {
    NetEvent {
        id: 0,
        at_ms,
        kind: kind.to_owned(),
        name: name.to_owned(),
        port: if kind == "dns" { 53 } else { 443 },
        verdict: verdict.to_owned(),
        reason: if verdict == "allowed" {
            "allow-net example.com".to_owned()
        } else {
            "not in allow-net".to_owned()
        },
        upstream: (verdict == "allowed").then(|| "93.184.215.14:443".to_owned()),
        bytes_out: 100,
        bytes_in: 2000,
        duration_ms: 35,
        secrets: Vec::new(),
    }
}

fn event_ids(events: &[NetEvent]) -> Vec<i64> {
    events.iter().map(|e| e.id).collect()
}

fn all_events(store: &Store, sandbox_id: &str) -> Vec<NetEvent> {
    store
        .net_events(
            sandbox_id,
            &NetEventQuery {
                limit: usize::MAX,
                ..Default::default()
            },
        )
        .unwrap()
}

#[test]
fn net_events_roundtrip_and_survive_reopen() {
    let (_dir, path, store) = temp_store();
    store.insert_sandbox(&sandbox("sbx_net", 1, &[])).unwrap();
    let mut full = net_event(1_700_000_000_123, "tcp", "api.openai.com", "allowed");
    full.secrets = vec!["OPENAI_API_KEY".into(), "OTHER".into()];
    full.bytes_out = i64::MAX as u64;
    full.bytes_in = 0;
    full.duration_ms = 86_400_000;
    full.port = 65535;
    full.name = "ünïcode.example\u{1b}[31m".into();
    let mut dns = net_event(1_700_000_000_200, "dns", "evil.example", "denied");
    dns.upstream = None;
    let udp = net_event(1_700_000_000_300, "udp", "10.0.0.1", "denied");
    let sent = vec![full, dns, udp];
    assert_eq!(store.count_net_events("sbx_net").unwrap(), 0);
    assert!(all_events(&store, "sbx_net").is_empty());
    store.record_net_events("sbx_net", &sent).unwrap();
    assert_eq!(store.count_net_events("sbx_net").unwrap(), 3);

    let got = all_events(&store, "sbx_net");
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|e| e.id > 0), "{got:?}");
    let without_ids: Vec<NetEvent> = got
        .iter()
        .map(|e| NetEvent { id: 0, ..e.clone() })
        .collect();
    assert_eq!(without_ids, sent);
    drop(store);

    // Events are in the file: a new process (here a new Store) sees them.
    let store = Store::open(&path).unwrap();
    assert_eq!(all_events(&store, "sbx_net"), got);
    assert_eq!(store.count_net_events("sbx_net").unwrap(), 3);
    // Only names of secrets, comma-separated, reach the file.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let raw: String = conn
        .query_row(
            "SELECT secrets FROM net_events WHERE id = ?1",
            [got[0].id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(raw, "OPENAI_API_KEY,OTHER");
}

#[test]
fn net_events_serialise_in_camel_case() {
    let mut e = net_event(5, "tcp", "example.com", "allowed");
    e.id = 7;
    e.secrets = vec!["K".into()];
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "id": 7, "atMs": 5, "kind": "tcp", "name": "example.com", "port": 443,
            "verdict": "allowed", "reason": "allow-net example.com",
            "upstream": "93.184.215.14:443", "bytesOut": 100, "bytesIn": 2000,
            "durationMs": 35, "secrets": ["K"]
        })
    );
    let back: NetEvent = serde_json::from_value(v).unwrap();
    assert_eq!(back, e);
}

#[test]
fn net_events_keep_order_and_page_with_after_id() {
    let store = Store::open_in_memory().unwrap();
    store.insert_sandbox(&sandbox("a", 1, &[])).unwrap();
    store.insert_sandbox(&sandbox("b", 2, &[])).unwrap();
    // Batches of the two sandboxes interleave; at_ms is not monotonic (a
    // long connection is reported when it ends): order is insertion order.
    let mut expected_names = Vec::new();
    for batch in 0..5 {
        let events: Vec<NetEvent> = (0..5)
            .map(|i| {
                let name = format!("host{batch}-{i}.example");
                net_event(1_000 - (batch * 5 + i), "tcp", &name, "allowed")
            })
            .collect();
        expected_names.extend(events.iter().map(|e| e.name.clone()));
        store.record_net_events("a", &events).unwrap();
        store
            .record_net_events("b", &[net_event(0, "dns", "b.example", "denied")])
            .unwrap();
    }
    let all = all_events(&store, "a");
    let names: Vec<&str> = all.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, expected_names);
    let ids = event_ids(&all);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(store.count_net_events("a").unwrap(), 25);
    assert_eq!(store.count_net_events("b").unwrap(), 5);
    assert_eq!(store.count_net_events("nobody").unwrap(), 0);

    // Pages of 10 after the last id seen: 10 + 10 + 5, then nothing.
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .net_events(
                "a",
                &NetEventQuery {
                    after_id: after,
                    limit: 10,
                    verdict: None,
                },
            )
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = Some(page.last().unwrap().id);
        pages.push(page);
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
    assert_eq!(pages.concat(), all);
    // after_id is exclusive and need not be an id of this sandbox.
    let after_third = store
        .net_events(
            "a",
            &NetEventQuery {
                after_id: Some(all[2].id),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(after_third, all[3..]);
    let limit_zero = NetEventQuery {
        limit: 0,
        ..Default::default()
    };
    assert!(store.net_events("a", &limit_zero).unwrap().is_empty());
    assert_eq!(NetEventQuery::default().limit, 1000);
}

#[test]
fn net_events_filter_by_verdict() {
    let store = Store::open_in_memory().unwrap();
    store.insert_sandbox(&sandbox("s", 1, &[])).unwrap();
    let events: Vec<NetEvent> = (0..12)
        .map(|i| {
            let verdict = if i % 3 == 0 { "denied" } else { "allowed" };
            net_event(i, "tcp", &format!("h{i}"), verdict)
        })
        .collect();
    store.record_net_events("s", &events).unwrap();
    let query = |verdict: Option<&str>, after_id, limit| {
        store.net_events(
            "s",
            &NetEventQuery {
                after_id,
                limit,
                verdict: verdict.map(str::to_owned),
            },
        )
    };
    let denied = query(Some("denied"), None, 100).unwrap();
    let names: Vec<&str> = denied.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["h0", "h3", "h6", "h9"]);
    assert_eq!(query(Some("allowed"), None, 100).unwrap().len(), 8);
    assert_eq!(query(None, None, 100).unwrap().len(), 12);
    // Filter and paging combine.
    let page = query(Some("denied"), Some(denied[1].id), 1).unwrap();
    assert_eq!(page, denied[2..3]);
    assert!(matches!(
        query(Some("maybe"), None, 100),
        Err(StoreError::InvalidNetEvent(m)) if m.contains("\"maybe\"")
    ));
}

#[test]
fn net_events_bad_batches_record_nothing() {
    let store = Store::open_in_memory().unwrap();
    store.insert_sandbox(&sandbox("s", 1, &[])).unwrap();
    let good = net_event(1, "tcp", "ok.example", "allowed");
    let bad_kind = NetEvent {
        kind: "icmp".into(),
        ..good.clone()
    };
    let bad_verdict = NetEvent {
        verdict: "maybe".into(),
        ..good.clone()
    };
    let bad_secret = NetEvent {
        secrets: vec!["A,B".into()],
        ..good.clone()
    };
    for bad in [bad_kind, bad_verdict, bad_secret] {
        let err = store
            .record_net_events("s", &[good.clone(), bad.clone()])
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidNetEvent(_)), "{err}");
    }
    assert!(matches!(
        store.record_net_events("missing", std::slice::from_ref(&good)),
        Err(StoreError::SandboxNotFound(id)) if id == "missing"
    ));
    assert_eq!(store.count_net_events("s").unwrap(), 0);
    assert_eq!(store.count_net_events("missing").unwrap(), 0);
    store.record_net_events("s", &[]).unwrap();
    store.record_net_events("missing", &[]).unwrap();
    store.record_net_events("s", &[good]).unwrap();
    assert_eq!(store.count_net_events("s").unwrap(), 1);
}

#[test]
fn v2_database_upgrades_to_v3_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airlock.db");
    // A database as airlock with schema v2 left it, written without Store.
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .unwrap();
    schema::migrate_to(&mut conn, 2).unwrap();
    assert_eq!(schema::user_version(&conn).unwrap(), 2);
    conn.execute_batch(
        "INSERT INTO tokens (id, name, secret_sha256, created_at_ms) \
             VALUES ('tok_old', 'old', 'abc', 1); \
         INSERT INTO sandboxes (id, token_id, region, status, created_at_ms, memory_mb, \
             labels, allow_net, secret_names, cpu_usec, memory_byte_ms, peak_memory_bytes, \
             usage_at_ms) \
             VALUES ('sbx_old', 'tok_old', 'ord', 'stopped', 10, 1280, '{\"k\":\"v\"}', \
             '[\"example.com\"]', '[]', 7000000, 99, 4096, 20);",
    )
    .unwrap();
    let tables = |conn: &rusqlite::Connection| -> Vec<String> {
        let mut stmt = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'index') ORDER BY name",
            )
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(!tables(&conn).contains(&"net_events".to_string()));
    drop(conn);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let rec = store.get_sandbox("sbx_old").unwrap().unwrap();
    assert_eq!(rec.token_id.as_deref(), Some("tok_old"));
    assert_eq!(rec.status, STATUS_STOPPED);
    assert_eq!(rec.labels.get("k").map(String::as_str), Some("v"));
    assert_eq!(rec.allow_net, ["example.com"]);
    let (usage, at) = store.get_usage("sbx_old").unwrap().unwrap();
    assert_eq!(
        (
            usage.cpu_usec,
            usage.memory_byte_ms,
            usage.peak_memory_bytes,
            at
        ),
        (7_000_000, 99, 4096, Some(20))
    );
    assert_eq!(store.list_tokens().unwrap()[0].id, "tok_old");
    // The old sandbox can have events now.
    assert_eq!(store.count_net_events("sbx_old").unwrap(), 0);
    store
        .record_net_events("sbx_old", &[net_event(30, "dns", "x.example", "denied")])
        .unwrap();
    assert_eq!(all_events(&store, "sbx_old").len(), 1);
    drop(store);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let names = tables(&conn);
    assert!(names.contains(&"net_events".to_string()), "{names:?}");
    assert!(
        names.contains(&"net_events_sandbox".to_string()),
        "{names:?}"
    );
    // The index really is on (sandbox_id, id).
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_index_info('net_events_sandbox') ORDER BY seqno")
        .unwrap();
    let cols: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(cols, ["sandbox_id", "id"]);
    drop(stmt);
    // Reopening an up-to-date database migrates nothing and loses nothing.
    drop(conn);
    let store = Store::open(&path).unwrap();
    assert_eq!(all_events(&store, "sbx_old").len(), 1);
}

#[test]
fn sandbox_events_record_filter_and_page() {
    let (_dir, path, store) = temp_store();
    store.insert_sandbox(&sandbox("a", 1, &[])).unwrap();
    let mut other = sandbox("b", 2, &[]);
    other.token_id = Some("tok_bbbbbbbbbbbb".to_owned());
    store.insert_sandbox(&other).unwrap();

    let e1 = store
        .record_sandbox_event("a", 10, "created", "memory 1280 MiB")
        .unwrap();
    let e2 = store.record_sandbox_event("b", 11, "created", "").unwrap();
    let e3 = store
        .record_sandbox_event("a", 12, "connected", "")
        .unwrap();
    let e4 = store.record_sandbox_event("a", 13, "oom", "1").unwrap();
    let e5 = store.record_sandbox_event("a", 14, "ended", "oom").unwrap();
    assert!(e1 < e2 && e2 < e3 && e3 < e4 && e4 < e5);

    // Bad kind, unknown sandbox: nothing recorded.
    assert!(matches!(
        store.record_sandbox_event("a", 15, "exploded", ""),
        Err(StoreError::InvalidSandboxEvent(_))
    ));
    assert!(matches!(
        store.record_sandbox_event("missing", 15, "created", ""),
        Err(StoreError::SandboxNotFound(_))
    ));

    let all = store.sandbox_events(&SandboxEventQuery::default()).unwrap();
    assert_eq!(
        all.iter().map(|e| e.id).collect::<Vec<_>>(),
        [e1, e2, e3, e4, e5]
    );
    assert_eq!(
        all[0],
        SandboxEvent {
            id: e1,
            sandbox_id: "a".into(),
            at_ms: 10,
            kind: "created".into(),
            detail: "memory 1280 MiB".into(),
        }
    );
    let kinds = |q: &SandboxEventQuery| -> Vec<String> {
        store
            .sandbox_events(q)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    };
    let one = SandboxEventQuery {
        sandbox_id: Some("a".into()),
        ..Default::default()
    };
    assert_eq!(kinds(&one), ["created", "connected", "oom", "ended"]);
    // Paging with after_id and limit.
    let page = SandboxEventQuery {
        after_id: Some(e3),
        limit: 1,
        ..one.clone()
    };
    assert_eq!(kinds(&page), ["oom"]);
    // The token filter sees only its own sandboxes' events.
    let by_token = SandboxEventQuery {
        token_id: Some("tok_bbbbbbbbbbbb".into()),
        ..Default::default()
    };
    assert_eq!(store.sandbox_events(&by_token).unwrap()[0].id, e2);
    assert_eq!(store.sandbox_events(&by_token).unwrap().len(), 1);
    let mismatch = SandboxEventQuery {
        token_id: Some("tok_bbbbbbbbbbbb".into()),
        sandbox_id: Some("a".into()),
        ..Default::default()
    };
    assert!(store.sandbox_events(&mismatch).unwrap().is_empty());
    // camelCase on the wire.
    let v = serde_json::to_value(&all[0]).unwrap();
    assert_eq!(v["sandboxId"], "a");
    assert_eq!(v["atMs"], 10);

    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store
            .sandbox_events(&SandboxEventQuery::default())
            .unwrap()
            .len(),
        5
    );
}

#[test]
fn v3_database_upgrades_to_v4_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airlock.db");
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    schema::migrate_to(&mut conn, 3).unwrap();
    assert_eq!(schema::user_version(&conn).unwrap(), 3);
    conn.execute_batch(
        "INSERT INTO sandboxes (id, token_id, region, status, created_at_ms, memory_mb) \
             VALUES ('sbx_old', 'tok_old', 'ord', 'stopped', 10, 1280); \
         INSERT INTO net_events (sandbox_id, at_ms, kind, name, port, verdict, reason, \
             bytes_out, bytes_in, duration_ms) \
             VALUES ('sbx_old', 11, 'dns', 'x.example', 53, 'denied', 'r', 0, 0, 0);",
    )
    .unwrap();
    drop(conn);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.count_net_events("sbx_old").unwrap(), 1);
    assert!(store
        .sandbox_events(&SandboxEventQuery::default())
        .unwrap()
        .is_empty());
    store
        .record_sandbox_event("sbx_old", 20, "ended", "deleted")
        .unwrap();
    drop(store);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_index_info('sandbox_events_sandbox') ORDER BY seqno")
        .unwrap();
    let cols: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(cols, ["sandbox_id", "id"]);
}

#[test]
fn usage_report_sums_egress_bytes_per_group() {
    let (_dir, _path, store) = temp_store();
    store.insert_sandbox(&sandbox("sbx_a", 1, &[])).unwrap();
    store.insert_sandbox(&sandbox("sbx_b", 1, &[])).unwrap();
    let mut e1 = net_event(1_000, "tcp", "api.test", "allowed");
    (e1.bytes_out, e1.bytes_in) = (100, 5_000);
    let mut e2 = net_event(2_000, "tcp", "api.test", "allowed");
    (e2.bytes_out, e2.bytes_in) = (20, 700);
    let mut e3 = net_event(3_000, "tcp", "other.test", "allowed");
    (e3.bytes_out, e3.bytes_in) = (1, 2);
    store.record_net_events("sbx_a", &[e1, e2]).unwrap();
    store.record_net_events("sbx_b", &[e3]).unwrap();
    let rows = store.usage_report(0, &UsageGroup::Sandbox).unwrap();
    let get = |id: &str| rows.iter().find(|r| r.key == id).unwrap();
    assert_eq!(
        (get("sbx_a").net_bytes_out, get("sbx_a").net_bytes_in),
        (120, 5_700)
    );
    assert_eq!(
        (get("sbx_b").net_bytes_out, get("sbx_b").net_bytes_in),
        (1, 2)
    );
    let by_token = store.usage_report(0, &UsageGroup::Token).unwrap();
    assert_eq!(by_token.iter().map(|r| r.net_bytes_in).sum::<u64>(), 5_702);
}

#[test]
fn v4_database_upgrades_to_v5_with_native_sandboxes_and_unpinned_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airlock.db");
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    schema::migrate_to(&mut conn, 4).unwrap();
    conn.execute_batch(
        "INSERT INTO sandboxes (id, token_id, region, status, created_at_ms, memory_mb) \
             VALUES ('sbx_old', 'tok_old', 'ord', 'stopped', 10, 1280); \
         INSERT INTO tokens (id, name, secret_sha256, created_at_ms) \
             VALUES ('tok_old', 'old', 'abc', 10);",
    )
    .unwrap();
    drop(conn);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    // Everything before backends existed ran on the native one.
    assert_eq!(
        store.get_sandbox("sbx_old").unwrap().unwrap().isolation,
        "native"
    );
    let old = store.list_tokens().unwrap();
    assert_eq!(old[0].isolation, None);
}

#[test]
fn tokens_can_be_pinned_and_sandboxes_record_their_backend() {
    let (_dir, _path, store) = temp_store();
    let pinned = store.create_pinned_token("tenant", Some("gvisor")).unwrap();
    let plain = store.create_token("ops").unwrap();
    let info = store.verify_token(&pinned.secret).unwrap().unwrap();
    assert_eq!(info.isolation.as_deref(), Some("gvisor"));
    let info = store.verify_token(&plain.secret).unwrap().unwrap();
    assert_eq!(info.isolation, None);

    let rec = sandbox("sbx_ord_pinned", 1_000, &[]);
    store.insert_sandbox(&rec).unwrap();
    assert_eq!(
        store
            .get_sandbox("sbx_ord_pinned")
            .unwrap()
            .unwrap()
            .isolation,
        "gvisor"
    );
}

fn volume(id: &str, slug: &str, owner: Option<&str>) -> VolumeRecord {
    VolumeRecord {
        id: id.into(),
        slug: slug.into(),
        token_id: owner.map(Into::into),
        region: "ord".into(),
        capacity: 64 << 20,
        is_bootable: false,
        base_snapshot: None,
        created_at_ms: 1,
    }
}

#[test]
fn volumes_are_scoped_to_their_owner_and_slugs_are_unique_per_owner() {
    let store = Store::open_in_memory().unwrap();
    store
        .insert_volume(&volume("vol_a", "cache", Some("tok_a")))
        .unwrap();
    // Another owner may use the same slug; the same owner may not.
    store
        .insert_volume(&volume("vol_b", "cache", Some("tok_b")))
        .unwrap();
    let err = store
        .insert_volume(&volume("vol_c", "cache", Some("tok_a")))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SlugTaken(ref s) if s == "cache"),
        "{err}"
    );
    // A daemon without tokens is an owner of its own.
    store
        .insert_volume(&volume("vol_n", "cache", None))
        .unwrap();
    assert!(store
        .insert_volume(&volume("vol_m", "cache", None))
        .is_err());

    let a = store.get_volume(Some("tok_a"), "cache").unwrap().unwrap();
    assert_eq!(a.id, "vol_a");
    assert_eq!(store.get_volume(Some("tok_a"), "vol_a").unwrap(), Some(a));
    // tok_b cannot see tok_a's volume by id.
    assert_eq!(store.get_volume(Some("tok_b"), "vol_a").unwrap(), None);
    assert_eq!(store.get_volume(None, "vol_a").unwrap(), None);
    assert_eq!(store.list_volumes(Some("tok_a"), None).unwrap().len(), 1);
    assert_eq!(
        store
            .list_volumes(Some("tok_a"), Some("zzz"))
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        store
            .list_volumes(Some("tok_a"), Some("cac"))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.all_volumes().unwrap().len(), 3);

    assert!(store.delete_volume("vol_a", 2).unwrap());
    assert!(!store.delete_volume("vol_a", 2).unwrap());
    // The slug is free again at once.
    store
        .insert_volume(&volume("vol_d", "cache", Some("tok_a")))
        .unwrap();
}

#[test]
fn volumes_and_snapshots_share_one_slug_namespace() {
    let store = Store::open_in_memory().unwrap();
    store
        .insert_volume(&volume("vol_a", "tools", Some("t")))
        .unwrap();
    let snap = SnapshotRecord {
        id: "snp_a".into(),
        slug: "tools".into(),
        token_id: Some("t".into()),
        region: "ord".into(),
        source: ("vol_a".into(), "tools".into()),
        base_snapshot: None,
        is_bootable: false,
        allocated_size: 10,
        flattened_size: 10,
        created_at_ms: 2,
    };
    assert!(matches!(
        store.insert_snapshot(&snap).unwrap_err(),
        StoreError::SlugTaken(_)
    ));
    let snap = SnapshotRecord {
        slug: "tools-v1".into(),
        ..snap
    };
    store.insert_snapshot(&snap).unwrap();
    assert!(matches!(
        store
            .insert_volume(&volume("vol_b", "tools-v1", Some("t")))
            .unwrap_err(),
        StoreError::SlugTaken(_)
    ));
    assert_eq!(
        store.get_snapshot(Some("t"), "tools-v1").unwrap(),
        Some(snap.clone())
    );
    assert_eq!(store.get_snapshot(Some("u"), "snp_a").unwrap(), None);
    assert_eq!(store.list_snapshots(Some("t"), None).unwrap(), vec![snap]);
    assert_eq!(
        store.storage_totals(Some("t")).unwrap(),
        StorageTotals {
            volumes: 1,
            snapshots: 1,
            bytes: (64 << 20) + 10
        }
    );
    assert_eq!(store.all_snapshot_ids().unwrap(), vec!["snp_a".to_string()]);
    assert!(store.delete_snapshot("snp_a", 3).unwrap());
    assert_eq!(store.storage_totals(Some("t")).unwrap().snapshots, 0);
}

#[test]
fn storage_ids_are_random_and_prefixed() {
    let a = new_volume_id("ord").unwrap();
    let b = new_volume_id("ord").unwrap();
    assert!(a.starts_with("vol_ord_") && a.len() == 28, "{a}");
    assert_ne!(a, b);
    assert!(new_snapshot_id("ord").unwrap().starts_with("snp_ord_"));
}

const HOUR: i64 = 3_600_000;
const GIB: u64 = 1 << 30;

fn sized_volume(id: &str, owner: Option<&str>, capacity: u64, created_at_ms: i64) -> VolumeRecord {
    VolumeRecord {
        capacity,
        created_at_ms,
        ..volume(id, id, owner)
    }
}

fn sized_snapshot(id: &str, owner: Option<&str>, size: u64, created_at_ms: i64) -> SnapshotRecord {
    SnapshotRecord {
        id: id.into(),
        slug: id.into(),
        token_id: owner.map(Into::into),
        region: "ord".into(),
        source: ("vol_gone".into(), "gone".into()),
        base_snapshot: None,
        is_bootable: false,
        allocated_size: size,
        flattened_size: size,
        created_at_ms,
    }
}

fn usage(volume_byte_hours: u64, snapshot_byte_hours: u64) -> StorageUsage {
    StorageUsage {
        volume_byte_hours,
        snapshot_byte_hours,
    }
}

/// Volumes bill their capacity and snapshots their size, from creation,
/// per owner (a daemon without tokens is an owner of its own); a pass at
/// the same time, or at an earlier one (a clock stepping back), bills
/// nothing more.
#[test]
fn storage_is_billed_in_byte_hours_per_owner() {
    let store = Store::open_in_memory().unwrap();
    store
        .insert_volume(&sized_volume("vol_a", Some("tok_a"), GIB, HOUR))
        .unwrap();
    store
        .insert_volume(&sized_volume("vol_n", None, GIB, HOUR))
        .unwrap();
    store
        .insert_snapshot(&sized_snapshot(
            "snp_a",
            Some("tok_a"),
            GIB / 2,
            HOUR + HOUR / 2,
        ))
        .unwrap();

    // Two 1 GiB volumes for an hour; half a GiB for half an hour.
    assert_eq!(
        store.meter_storage(2 * HOUR).unwrap(),
        usage(2 * GIB, GIB / 4)
    );
    assert_eq!(store.meter_storage(2 * HOUR).unwrap(), usage(0, 0));
    assert_eq!(store.meter_storage(2 * HOUR - 1000).unwrap(), usage(0, 0));
    // The checkpoint did not move back: the next hour is billed once.
    assert_eq!(
        store.meter_storage(3 * HOUR).unwrap(),
        usage(2 * GIB, GIB / 2)
    );

    let billed = store.storage_usage_since(0).unwrap();
    assert_eq!(
        billed.into_iter().collect::<Vec<_>>(),
        [
            (None, usage(2 * GIB, 0)),
            (Some("tok_a".to_string()), usage(2 * GIB, GIB / 4 + GIB / 2)),
        ]
    );
    let summary = store.storage_summary().unwrap();
    assert_eq!(
        summary,
        StorageSummary {
            volumes: 2,
            snapshots: 1,
            volume_reserved_bytes: 2 * GIB,
            billed: usage(4 * GIB, GIB / 4 + GIB / 2),
        }
    );
    assert!((summary.billed.volume_gb_hours() - 4.0).abs() < 1e-12);
}

/// A delete bills up to the delete in the transaction that removes the
/// row, and the bill stays after the row has gone.
#[test]
fn a_delete_bills_up_to_the_delete_and_the_bill_stays() {
    let store = Store::open_in_memory().unwrap();
    store
        .insert_volume(&sized_volume("vol_a", Some("tok_a"), GIB, 0))
        .unwrap();
    store
        .insert_snapshot(&sized_snapshot("snp_a", None, GIB, 0))
        .unwrap();
    assert_eq!(store.meter_storage(HOUR).unwrap(), usage(GIB, GIB));
    // Neither was metered since: the delete bills the half hour itself.
    assert!(store.delete_volume("vol_a", HOUR + HOUR / 2).unwrap());
    assert!(store.delete_snapshot("snp_a", HOUR + HOUR / 4).unwrap());
    assert!(!store.delete_volume("vol_a", 5 * HOUR).unwrap());
    assert!(!store.delete_snapshot("snp_a", 5 * HOUR).unwrap());
    // Nothing is left to meter, and nothing billed is lost.
    assert_eq!(store.meter_storage(10 * HOUR).unwrap(), usage(0, 0));
    let billed = store.storage_usage_since(0).unwrap();
    assert_eq!(billed[&Some("tok_a".to_string())], usage(GIB + GIB / 2, 0));
    assert_eq!(billed[&None], usage(0, GIB + GIB / 4));
    let summary = store.storage_summary().unwrap();
    assert_eq!((summary.volumes, summary.snapshots), (0, 0));
    assert_eq!(summary.volume_reserved_bytes, 0);
    assert_eq!(summary.billed, usage(GIB + GIB / 2, GIB + GIB / 4));
    // The slug is free again and a new volume starts from its creation.
    store
        .insert_volume(&sized_volume("vol_a", Some("tok_a"), GIB, 10 * HOUR))
        .unwrap();
    assert_eq!(store.meter_storage(11 * HOUR).unwrap(), usage(GIB, 0));
}

/// Bills are split by UTC hour, so a report over a period takes the hours
/// it overlaps; the totals are the sums of the hours.
#[test]
fn storage_usage_over_a_period_counts_the_hours_it_overlaps() {
    let store = Store::open_in_memory().unwrap();
    // 3600 bytes from 00:30 to 02:15 of hour 0: 1800 + 3600 + 900 byte-hours.
    store
        .insert_volume(&sized_volume("vol_a", Some("t"), 3600, HOUR / 2))
        .unwrap();
    assert_eq!(
        store.meter_storage(HOUR / 2 + 2 * HOUR - HOUR / 4).unwrap(),
        usage(6300, 0)
    );
    let since = |at: i64| {
        store
            .storage_usage_since(at)
            .unwrap()
            .get(&Some("t".to_string()))
            .copied()
    };
    assert_eq!(since(0), Some(usage(6300, 0)));
    assert_eq!(since(HOUR), Some(usage(4500, 0)));
    // An hour counts whole when the period starts inside it.
    assert_eq!(since(HOUR + 1), Some(usage(4500, 0)));
    assert_eq!(since(2 * HOUR + 1), Some(usage(900, 0)));
    assert_eq!(since(3 * HOUR), None);
    assert_eq!(store.storage_summary().unwrap().billed, usage(6300, 0));
}

/// After a restart the first pass bills the downtime (the data existed)
/// from where the last pass left off: once, and nothing skipped.
#[test]
fn the_first_pass_after_a_restart_bills_the_downtime_once() {
    let (_dir, path, store) = temp_store();
    store
        .insert_volume(&sized_volume("vol_a", Some("t"), 1_000_000, 10 * HOUR))
        .unwrap();
    store
        .insert_snapshot(&sized_snapshot("snp_a", Some("t"), 2_000, 10 * HOUR))
        .unwrap();
    store.meter_storage(10 * HOUR + 10_000).unwrap();
    // Killed here: nothing after the last pass was written.
    drop(store);

    let store = Store::open(&path).unwrap();
    store.meter_storage(12 * HOUR).unwrap();
    store.meter_storage(12 * HOUR).unwrap();
    assert_eq!(
        store.storage_summary().unwrap().billed,
        usage(2_000_000, 4_000)
    );
}

/// A database from before V7 keeps its volumes, and they are billed from
/// their creation.
#[test]
fn v6_database_upgrades_to_v7_and_bills_volumes_from_their_creation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airlock.db");
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    schema::migrate_to(&mut conn, 6).unwrap();
    conn.execute_batch(
        "INSERT INTO volumes (id, slug, token_id, region, capacity, created_at_ms) \
             VALUES ('vol_old', 'old', NULL, 'ord', 7200, 0);",
    )
    .unwrap();
    drop(conn);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.meter_storage(HOUR / 2).unwrap(), usage(3600, 0));
    assert_eq!(store.storage_usage_since(0).unwrap()[&None], usage(3600, 0));
}

/// Grouped by token, every row says what storage the token was billed for,
/// and a token with storage but no sandbox has a row; other groupings have
/// no storage figures.
#[test]
fn usage_report_by_token_has_each_tokens_storage() {
    let store = Store::open_in_memory().unwrap();
    let rec = SandboxRecord {
        token_id: Some("t1".into()),
        ..sandbox("s1", 1_000, &[])
    };
    store.insert_sandbox(&rec).unwrap();
    store
        .insert_volume(&sized_volume("vol_a", Some("t2"), GIB, 0))
        .unwrap();
    store
        .insert_volume(&sized_volume("vol_n", None, GIB, 0))
        .unwrap();
    store.meter_storage(2 * HOUR).unwrap();

    let rows = store.usage_report(0, &UsageGroup::Token).unwrap();
    let got: Vec<_> = rows
        .iter()
        .map(|r| (r.key.as_str(), r.sandboxes, r.storage))
        .collect();
    assert_eq!(
        got,
        [
            ("-", 0, Some(usage(2 * GIB, 0))),
            ("t1", 1, Some(usage(0, 0))),
            ("t2", 0, Some(usage(2 * GIB, 0))),
        ]
    );
    assert!((rows[2].storage.unwrap().volume_gb_hours() - 2.0).abs() < 1e-12);
    let rows = store.usage_report(0, &UsageGroup::Sandbox).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].storage, None);
}
