//! Whether a process serves TCP: `denoHttpWait` (wait until it listens)
//! and the internal `httpPort` (which port it listens on).
//!
//! A process "listens" when it, or a descendant, holds a socket that the
//! kernel lists in LISTEN state (`0A`) in /proc/<pid>/net/tcp or tcp6.
//! Sockets are matched by inode: /proc/<pid>/fd/N links to `socket:[inode]`.
//! Only /proc is read, so nothing here reaps or signals the process; its
//! exit is learnt from the process table, which the PID 1 reaper fills.

use crate::process::Table;
use agent_proto::calls::HttpPortResult;
use agent_proto::ErrorObject;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// First and largest pause between two looks at /proc.
const FIRST_POLL: Duration = Duration::from_millis(5);
const MAX_POLL: Duration = Duration::from_millis(50);

/// Port of a TCP socket in LISTEN state held by `pid` or a descendant
/// (the lowest-numbered fd of the first process that has one).
pub fn listening_port(pid: i32) -> Option<u16> {
    let tree = process_tree(pid);
    let mut socket_inodes = Vec::new();
    for p in &tree {
        socket_inodes.extend(socket_inodes_of(*p));
    }
    if socket_inodes.is_empty() {
        return None;
    }
    // One network namespace per sandbox: any member's view lists them all.
    let listening = listening_inodes(pid);
    socket_inodes
        .iter()
        .find_map(|inode| listening.get(inode).copied())
}

/// `pid` and its descendants, found through each process's parent in
/// /proc/<n>/stat.
fn process_tree(pid: i32) -> Vec<i32> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(n) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = parent_of(n) {
                parents.push((n, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

/// The parent pid from /proc/<pid>/stat: `pid (comm) state ppid ...`;
/// `comm` may hold spaces and parentheses, so parse after the last ')'.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Inodes of the sockets `pid` holds, in fd order.
fn socket_inodes_of(pid: i32) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut fds: Vec<(u32, u64)> = entries
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target: PathBuf = std::fs::read_link(e.path()).ok()?;
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            Some((fd, inode))
        })
        .collect();
    fds.sort_unstable();
    fds.into_iter().map(|(_, inode)| inode).collect()
}

/// inode → port of every LISTEN socket in `pid`'s network namespace.
fn listening_inodes(pid: i32) -> HashMap<u64, u16> {
    let mut map = HashMap::new();
    for table in ["tcp", "tcp6"] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            parse_listening(&text, &mut map);
        }
    }
    map
}

/// Parses /proc/net/tcp{,6} lines:
/// `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`,
/// with `local_address` as `HEXADDR:HEXPORT` and LISTEN as state `0A`.
fn parse_listening(text: &str, map: &mut HashMap<u64, u16>) {
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 || fields[3] != "0A" {
            continue;
        }
        let port = fields[1]
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        if let (Some(port), Ok(inode)) = (port, fields[9].parse::<u64>()) {
            map.insert(inode, port);
        }
    }
}

/// `denoHttpWait {pid}`: true once the process listens, false once it has
/// exited (whichever is seen first).
pub async fn http_wait(table: &Table, pid: i32) -> Result<Value, ErrorObject> {
    let mut exit = table
        .exit_watch(pid)
        .ok_or_else(|| ErrorObject::no_such_process(pid as i64))?;
    let mut pause = FIRST_POLL;
    loop {
        if exit.borrow_and_update().is_some() {
            return Ok(Value::Bool(false));
        }
        if listening_port(pid).is_some() {
            return Ok(Value::Bool(true));
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            changed = exit.changed() => {
                if changed.is_err() {
                    return Ok(Value::Bool(false));
                }
            }
        }
        pause = (pause * 3 / 2).min(MAX_POLL);
    }
}

/// `httpPort {pid}` (internal, for the daemon): the port the process
/// listens on, or null (not listening, or exited).
pub fn http_port(table: &Table, pid: i32) -> Result<HttpPortResult, ErrorObject> {
    let exit = table
        .exit_watch(pid)
        .ok_or_else(|| ErrorObject::no_such_process(pid as i64))?;
    if exit.borrow().is_some() {
        return Ok(None);
    }
    Ok(listening_port(pid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn me() -> i32 {
        std::process::id() as i32
    }

    #[test]
    fn finds_a_real_listener_and_ignores_connections() {
        // Other tests in this process may listen too: look for this port.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let inodes = socket_inodes_of(me());
        let listening = listening_inodes(me());
        assert!(
            inodes.iter().any(|i| listening.get(i) == Some(&port)),
            "port {port} not found among {listening:?}"
        );
        // A connected (ESTABLISHED) socket is not a listener.
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let client_port = client.local_addr().unwrap().port();
        assert!(!listening_inodes(me()).values().any(|p| *p == client_port));
        drop(listener);
        let listening = listening_inodes(me());
        assert!(!socket_inodes_of(me())
            .iter()
            .any(|i| listening.get(i) == Some(&port)));
    }

    #[test]
    fn ipv6_listener() {
        let Ok(listener) = TcpListener::bind("[::1]:0") else {
            eprintln!("skipped: no IPv6 loopback");
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let listening = listening_inodes(me());
        assert!(socket_inodes_of(me())
            .iter()
            .any(|i| listening.get(i) == Some(&port)));
    }

    #[test]
    fn tree_includes_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let tree = process_tree(me());
        assert!(tree.contains(&(child.id() as i32)), "{tree:?}");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            parent_of(me()),
            Some(std::os::unix::process::parent_id() as i32)
        );
    }

    #[test]
    fn parses_proc_net_tcp() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:A000 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1\n";
        let mut map = HashMap::new();
        parse_listening(text, &mut map);
        assert_eq!(map, HashMap::from([(4242, 8080)]));
    }
}
