//! Attack tests of the gateway's anti-SSRF check, from inside real
//! sandboxes of a real daemon. The invariant: a tenant decides nothing
//! about which internal addresses its sandbox reaches. `allowNet` comes
//! from the tenant, so naming a private, link-local (cloud metadata) or
//! host address there never reaches it; only the operator's
//! `--egress-allow-cidr` ranges do, never the host's own addresses, and
//! no spelling of an address (IPv4-mapped IPv6, the unspecified address)
//! reaches the daemon's own listeners even through an operator's
//! `--resolve`.
//!
//! The private networks are namespaces these tests make (common/netns.rs),
//! with servers that answer "hello from ADDR"; every server is also
//! reached from the host first, so a refusal is the gateway's doing.

mod common;

use common::daemon::{call, run_python, Daemon, Ws};
use common::netns::{Banner, TestNet};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

/// What a sandbox got when it connected to each `host:port`: "refused",
/// "error ERRNO", or "connected: DATA".
fn connect_from_sandbox(ws: &mut Ws, targets: &[(String, u16)]) -> BTreeMap<String, String> {
    let code = format!(
        r#"
import json, socket
out = {{}}
for host, port in {targets}:
    key = f"{{host}}:{{port}}"
    s = socket.socket()
    s.settimeout(10)
    try:
        s.connect((host, port))
    except ConnectionRefusedError:
        out[key] = "refused"
        continue
    except OSError as e:
        out[key] = f"error {{e.errno}}"
        continue
    # The test servers speak first; an HTTP server (the daemon's) is
    # asked for its metrics, to show what a reached listener gives away.
    s.settimeout(1)
    try:
        data = s.recv(200)
    except socket.timeout:
        s.settimeout(5)
        try:
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            data = s.recv(200)
        except OSError as e:
            data = f"(recv {{e}})".encode()
    except OSError as e:
        data = f"(recv {{e}})".encode()
    out[key] = "connected: " + data.decode(errors="replace").strip()
    s.close()
open("/tmp/out.json", "w").write(json.dumps(out))
"#,
        targets = serde_json::to_string(targets).unwrap()
    );
    run_python(ws, 1, &code);
    let text = call(ws, 3, "readTextFile", json!({"path": "/tmp/out.json"}));
    serde_json::from_str(
        text["result"]["ok"]
            .as_str()
            .unwrap_or_else(|| panic!("{text}")),
    )
    .unwrap()
}

/// Whether some denied TCP event for `name:port` has a reason containing
/// every one of `words`.
fn denied(events: &[Value], name: &str, port: u16, words: &[&str]) -> bool {
    events.iter().any(|e| {
        e["kind"] == "tcp"
            && e["verdict"] == "denied"
            && e["name"] == name
            && e["port"] == port
            && words
                .iter()
                .all(|w| e["reason"].as_str().is_some_and(|r| r.contains(w)))
    })
}

/// Connects from the host (the test itself) and reads the banner: the
/// server is there and routed, so only the gateway can keep a sandbox out.
fn reachable_from_host(addr: SocketAddr) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("the host cannot reach {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert_eq!(text, format!("hello from {addr}\n"));
}

fn target(addr: SocketAddr) -> (String, u16) {
    (addr.ip().to_string(), addr.port())
}

fn key(addr: SocketAddr) -> String {
    format!("{}:{}", addr.ip(), addr.port())
}

fn create(d: &Daemon, allow_net: &[String]) -> (Ws, String) {
    d.create(json!({"allow_net": allow_net, "stop_at_ms": store::now_ms() + 120_000}))
}

#[test]
fn a_private_address_in_allow_net_is_reached_only_where_the_operator_allows_it() {
    let mut net = TestNet::new();
    net.add_inside(net.addr(3));
    let allowed = net.serve_inside(SocketAddr::new(net.addr(2).into(), 0));
    let other = net.serve_inside(SocketAddr::new(net.addr(3).into(), 0));
    reachable_from_host(allowed);
    reachable_from_host(other);
    let allow_net = vec![allowed.ip().to_string(), other.ip().to_string()];
    let targets = [target(allowed), target(other)];

    // The default daemon: the tenant names both addresses; neither is
    // reached, and the refusal tells the operator what would allow it.
    let d = Daemon::options("ssrf-default").start();
    let (mut ws, id) = create(&d, &allow_net);
    let got = connect_from_sandbox(&mut ws, &targets);
    assert_eq!(got[&key(allowed)], "refused", "{got:?}");
    assert_eq!(got[&key(other)], "refused", "{got:?}");
    let events = d.audit_events(&id, "", |ev| {
        denied(ev, &allowed.ip().to_string(), allowed.port(), &[])
    });
    for addr in [allowed, other] {
        assert!(
            denied(
                &events,
                &addr.ip().to_string(),
                addr.port(),
                &["is a private address", "--egress-allow-cidr"]
            ),
            "{events:?}"
        );
    }
    drop(ws);
    drop(d);

    // The operator allows exactly one of them.
    let cidr = format!("{}/32", allowed.ip());
    let d = Daemon::options("ssrf-operator")
        .args(&["--egress-allow-cidr", &cidr])
        .start();
    let (mut ws, id) = create(&d, &allow_net);
    let got = connect_from_sandbox(&mut ws, &targets);
    assert_eq!(
        got[&key(allowed)],
        format!("connected: hello from {allowed}"),
        "{got:?}"
    );
    assert_eq!(got[&key(other)], "refused", "{got:?}");
    let events = d.audit_events(&id, "", |ev| {
        denied(ev, &other.ip().to_string(), other.port(), &[])
    });
    assert!(
        denied(
            &events,
            &other.ip().to_string(),
            other.port(),
            &["is a private address", "--egress-allow-cidr"]
        ),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e["verdict"] == "allowed"
            && e["upstream"] == allowed.to_string()
            && e["name"] == allowed.ip().to_string()),
        "{events:?}"
    );
}

#[test]
fn a_metadata_address_in_allow_net_is_refused() {
    // 169.254.170.2 is the ECS task-credentials endpoint, in the same
    // class as 169.254.169.254; a test route to it takes over nothing the
    // host uses (a route to 169.254.169.254 would, on a cloud host).
    let metadata = Ipv4Addr::new(169, 254, 170, 2);
    let mut net = TestNet::new();
    net.add_routed(metadata);
    let server = net.serve_inside(SocketAddr::new(metadata.into(), 80));
    reachable_from_host(server);

    let d = Daemon::options("ssrf-metadata").start();
    let (mut ws, id) = create(&d, &[metadata.to_string()]);
    let got = connect_from_sandbox(&mut ws, &[target(server)]);
    assert_eq!(got[&key(server)], "refused", "{got:?}");
    let events = d.audit_events(&id, "", |ev| denied(ev, "169.254.170.2", 80, &[]));
    assert!(
        denied(
            &events,
            "169.254.170.2",
            80,
            &[
                "169.254.170.2 is a link-local cloud metadata address",
                "--egress-allow-cidr"
            ]
        ),
        "{events:?}"
    );
}

#[test]
fn no_spelling_of_a_daemon_listener_is_reachable_through_an_override() {
    // An ordinary service on the host's loopback, which the operator's
    // override may point at (in its IPv4-mapped spelling too).
    let service = Banner::bind("127.0.0.1:0".parse().unwrap());
    reachable_from_host(service.addr);
    let d = Daemon::options("ssrf-listeners")
        .args(&[
            "--metrics-listen",
            "127.0.0.1:0",
            "--resolve",
            "m.test=::ffff:127.0.0.1",
            "--resolve",
            "z.test=::ffff:0.0.0.0",
            "--resolve",
            "u.test=::",
            "--resolve",
            "a.test=0.0.0.0",
            "--resolve",
            "l.test=127.0.0.2",
        ])
        .start();
    let port = |addr: &str| addr.rsplit_once(':').unwrap().1.parse::<u16>().unwrap();
    let ports = [
        port(&d.addr),
        port(d.metrics_addr.as_deref().expect("a metrics address")),
        port(d.expose_addr.as_deref().expect("an expose address")),
    ];
    let names = ["m.test", "z.test", "u.test", "a.test", "l.test"];
    let (mut ws, id) = create(&d, &names.map(String::from));
    let mut targets: Vec<(String, u16)> = names
        .iter()
        .flat_map(|n| ports.map(|p| (n.to_string(), p)))
        .collect();
    targets.push(("m.test".into(), service.addr.port()));
    let got = connect_from_sandbox(&mut ws, &targets);
    assert_eq!(
        got[&format!("m.test:{}", service.addr.port())],
        format!("connected: hello from {}", service.addr),
        "{got:?}"
    );
    for name in names {
        for p in ports {
            assert_eq!(
                got[&format!("{name}:{p}")],
                "refused",
                "{name}:{p}: {got:?}"
            );
        }
    }
    let events = d.audit_events(&id, "", |ev| {
        names
            .iter()
            .all(|n| ports.iter().all(|p| denied(ev, n, *p, &[])))
    });
    for name in names {
        for p in ports {
            assert!(
                denied(&events, name, p, &["daemon itself"]),
                "{name}:{p}: {events:?}"
            );
        }
    }
}

/// The host's address on its default route (no packet is sent).
fn host_default_ipv4() -> Option<Ipv4Addr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    match s.local_addr().ok()?.ip() {
        IpAddr::V4(ip) if !ip.is_loopback() => Some(ip),
        _ => None,
    }
}

#[test]
fn the_hosts_own_addresses_are_refused_even_inside_an_allowed_range() {
    let mut net = TestNet::new();
    // A second address of the host, inside the range the operator allows,
    // with a service on it (a second daemon, a database...).
    let own = net.addr(9);
    net.add_to_host(own);
    let on_host = net.serve_on_host(SocketAddr::new(own.into(), 0));
    let peer = net.serve_inside(SocketAddr::new(net.addr(2).into(), 0));
    // A service on every address of the host.
    let wide = Banner::bind("0.0.0.0:0".parse().unwrap());
    reachable_from_host(on_host);
    reachable_from_host(peer);
    let mut targets = vec![target(on_host), target(peer)];
    let mut allow_net = vec![own.to_string(), peer.ip().to_string()];
    let default_ip = host_default_ipv4();
    if let Some(ip) = default_ip {
        targets.push((ip.to_string(), wide.addr.port()));
        allow_net.push(ip.to_string());
    }

    let cidr = format!("10.213.{}.0/24", net.n);
    let mut args = vec!["--egress-allow-cidr", &cidr];
    let default_cidr = default_ip.map(|ip| format!("{ip}/32"));
    if let Some(c) = &default_cidr {
        args.extend(["--egress-allow-cidr", c]);
    }
    let d = Daemon::options("ssrf-host").args(&args).start();
    let (mut ws, id) = create(&d, &allow_net);
    let got = connect_from_sandbox(&mut ws, &targets);
    // The range is open: its other host answers.
    assert_eq!(
        got[&key(peer)],
        format!("connected: hello from {peer}"),
        "{got:?}"
    );
    // The host's own address in it is not.
    assert_eq!(got[&key(on_host)], "refused", "{got:?}");
    let events = d.audit_events(&id, "", |ev| {
        denied(ev, &own.to_string(), on_host.port(), &[])
    });
    assert!(
        denied(
            &events,
            &own.to_string(),
            on_host.port(),
            &["of the daemon's host", "--resolve"]
        ),
        "{events:?}"
    );
    if let Some(ip) = default_ip {
        assert_eq!(
            got[&format!("{ip}:{}", wide.addr.port())],
            "refused",
            "{got:?}"
        );
        let events = d.audit_events(&id, "", |ev| {
            denied(ev, &ip.to_string(), wide.addr.port(), &[])
        });
        assert!(
            denied(
                &events,
                &ip.to_string(),
                wide.addr.port(),
                &["of the daemon's host"]
            ),
            "{events:?}"
        );
    }
}
