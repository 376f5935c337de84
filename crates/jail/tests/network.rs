//! The optional TUN interface of a sandbox, on the real kernel: what the
//! sandbox sees (interfaces, routes, resolv.conf), packets both ways through
//! the fd the creator gets, and clean-up on destroy. Needs root and the
//! static agent (scripts/build-agent.sh); the tests that run programs inside
//! also need the default image (skipped with a message when it is absent).

use agent_proto::{encode_frame, Decoder, Frame, FrameKind};
use jail::{JailError, JailPaths, Limits, NetworkSpec, Sandbox, SandboxSpec};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const IMAGE: &str = "/var/lib/airlock/images/default/rootfs";
const TIMEOUT: Duration = Duration::from_secs(20);

/// The tests compare this process's open fds before and after; they must
/// not create sandboxes concurrently.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn agent_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/static/x86_64-unknown-linux-gnu/release/airlock-agent")
}

fn image() -> Option<PathBuf> {
    let path = PathBuf::from(IMAGE);
    if path.join("usr/bin/python3").exists() {
        Some(path)
    } else {
        eprintln!("SKIPPED: no image with python3 at {IMAGE} (run `airlock image pull` first)");
        None
    }
}

fn spec(name: &str, rootfs: &Path, network: Option<NetworkSpec>) -> SandboxSpec {
    SandboxSpec {
        id: format!("test-net-{name}-{}", std::process::id()),
        image_rootfs: rootfs.to_path_buf(),
        agent_exe: agent_exe(),
        paths: JailPaths::default(),
        limits: Limits {
            memory_bytes: 256 << 20,
            disk_bytes: 16 << 20,
            ..Limits::default()
        },
        env: vec![(
            "PATH".into(),
            "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into(),
        )],
        hostname: "net".into(),
        network,
        binds: vec![],
        persistent_root: false,
    }
}

/// A synchronous client of the agent in a sandbox.
struct Agent {
    sock: UnixStream,
    dec: Decoder,
    next_id: u32,
    replies: BTreeMap<u32, Value>,
    streams: BTreeMap<u32, Vec<u8>>,
    ended: BTreeSet<u32>,
}

impl Agent {
    fn connect(sandbox: &mut Sandbox) -> Self {
        let sock = sandbox.take_agent_socket().expect("agent socket");
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut agent = Self {
            sock,
            dec: Decoder::new(),
            next_id: 1,
            replies: BTreeMap::new(),
            streams: BTreeMap::new(),
            ended: BTreeSet::new(),
        };
        let hello = agent.read_frame();
        assert_eq!(hello.kind, FrameKind::Hello);
        agent
    }

    fn read_frame(&mut self) -> Frame {
        let mut buf = [0u8; 65536];
        loop {
            if let Some(f) = self.dec.next_frame().expect("well-formed frames") {
                return f;
            }
            let n = self.sock.read(&mut buf).expect("reading from the agent");
            assert!(n > 0, "agent closed the connection");
            self.dec.feed(&buf[..n]);
        }
    }

    /// Reads one frame and files it.
    fn pump(&mut self) {
        let f = self.read_frame();
        match f.kind {
            FrameKind::Reply => {
                self.replies
                    .insert(f.id, serde_json::from_slice(&f.payload).unwrap());
            }
            FrameKind::Data => self
                .streams
                .entry(f.id)
                .or_default()
                .extend_from_slice(&f.payload),
            FrameKind::End => {
                self.ended.insert(f.id);
            }
            _ => {}
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = Vec::new();
        let payload = serde_json::to_vec(&json!({"method": method, "params": params})).unwrap();
        encode_frame(FrameKind::Call, id, &payload, &mut out);
        self.sock.write_all(&out).unwrap();
        loop {
            if let Some(v) = self.replies.remove(&id) {
                return v;
            }
            self.pump();
        }
    }

    fn ok(&mut self, method: &str, params: Value) -> Value {
        let shown = params.to_string();
        let r = self.call(method, params);
        match r.get("ok") {
            Some(v) => v.clone(),
            None => panic!("{method} {shown} failed: {r}"),
        }
    }

    fn read_text(&mut self, path: &str) -> String {
        self.ok("readTextFile", json!({"path": path}))
            .as_str()
            .unwrap()
            .to_string()
    }

    fn stream(&mut self, id: &Value) -> String {
        let id = id.as_u64().expect("stream id") as u32;
        while !self.ended.contains(&id) {
            self.pump();
        }
        String::from_utf8(self.streams.remove(&id).unwrap_or_default()).unwrap()
    }

    /// Starts `python3 -c code`; returns the spawn reply.
    fn spawn_python(&mut self, code: &str) -> Value {
        self.ok(
            "spawn",
            json!({"command": "/usr/bin/python3", "args": ["-c", code],
                   "stdout": "piped", "stderr": "piped"}),
        )
    }

    /// Output and exit of a process started by [`Agent::spawn_python`].
    fn finish(&mut self, spawned: &Value) -> (String, String, Value) {
        let out = self.stream(&spawned["stdoutStreamId"]);
        let err = self.stream(&spawned["stderrStreamId"]);
        let status = self.ok("processWait", json!({"pid": spawned["pid"]}));
        (out, err, status)
    }
}

/// Interface names in /proc/net/dev.
fn interfaces(dev: &str) -> BTreeSet<String> {
    dev.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .collect()
}

/// /proc/net/route's hex form of an address (host byte order of the raw
/// network-order bytes).
fn route_hex(ip: Ipv4Addr) -> String {
    format!("{:08X}", u32::from_le_bytes(ip.octets()))
}

/// Where this process's fds point, by number.
fn own_fds() -> BTreeMap<String, String> {
    fds_of("self")
}

fn fds_of(pid: &str) -> BTreeMap<String, String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                target.to_string_lossy().into_owned(),
            ))
        })
        .collect()
}

/// poll(2) on one fd; returns revents (0 on timeout).
fn poll(fd: &OwnedFd, events: libc::c_short, timeout: Duration) -> libc::c_short {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int) };
    assert!(n >= 0, "poll: {}", std::io::Error::last_os_error());
    p.revents
}

/// Reads IPv4 packets off the TUN fd until one is UDP to `port`; fails on
/// any IPv6 packet (IPv6 is off in the sandbox) or after TIMEOUT.
fn next_udp_to(tun: &OwnedFd, port: u16) -> Vec<u8> {
    let deadline = Instant::now() + TIMEOUT;
    let mut file = File::from(tun.try_clone().unwrap());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no UDP packet to port {port} on the TUN fd"
        );
        if poll(tun, libc::POLLIN, left) & libc::POLLIN == 0 {
            continue;
        }
        let mut buf = vec![0u8; 65536];
        let n = file.read(&mut buf).expect("reading the TUN fd");
        buf.truncate(n);
        assert!(n > 0);
        assert_eq!(buf[0] >> 4, 4, "non-IPv4 packet on the TUN fd: {buf:02x?}");
        let ihl = usize::from(buf[0] & 0xf) * 4;
        if buf[9] == 17 && u16::from_be_bytes([buf[ihl + 2], buf[ihl + 3]]) == port {
            return buf;
        }
    }
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4/UDP packet (UDP checksum 0: none, allowed for IPv4).
fn udp_packet(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.0.octets());
    p[16..20].copy_from_slice(&dst.0.octets());
    let sum = checksum(&p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&src.1.to_be_bytes());
    p.extend_from_slice(&dst.1.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

#[test]
fn sandbox_sees_lo_and_eth0_a_default_route_and_resolv_conf() {
    let Some(image) = image() else { return };
    let _serial = serial();
    let host_resolv = std::fs::read(Path::new(IMAGE).join("etc/resolv.conf")).ok();
    let mut sandbox =
        Sandbox::create(&spec("view", &image, Some(NetworkSpec::default()))).expect("create");
    let tun = sandbox.take_tun().expect("a TUN fd");
    assert!(sandbox.take_tun().is_none(), "the TUN fd is taken once");
    let mut agent = Agent::connect(&mut sandbox);

    let dev = agent.read_text("/proc/net/dev");
    assert_eq!(
        interfaces(&dev),
        BTreeSet::from(["lo".to_string(), "eth0".to_string()]),
        "{dev}"
    );
    let route = agent.read_text("/proc/net/route");
    let rows: Vec<Vec<&str>> = route
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let default = rows
        .iter()
        .find(|r| r[1] == "00000000" && r[7] == "00000000")
        .unwrap_or_else(|| panic!("no default route:\n{route}"));
    assert_eq!(default[0], "eth0", "{route}");
    assert_eq!(
        default[2],
        route_hex(Ipv4Addr::new(100, 96, 0, 1)),
        "{route}"
    );
    // RTF_UP | RTF_GATEWAY
    assert_eq!(
        u16::from_str_radix(default[3], 16).unwrap() & 3,
        3,
        "{route}"
    );
    assert!(
        rows.iter().any(|r| r[0] == "eth0"
            && r[1] == route_hex(Ipv4Addr::new(100, 96, 0, 0))
            && r[7] == route_hex(Ipv4Addr::new(255, 255, 255, 252))),
        "no route to 100.96.0.0/30 on eth0:\n{route}"
    );
    // IPv6 is off: no IPv6 address on any interface.
    let inet6 = agent.call("readTextFile", json!({"path": "/proc/net/if_inet6"}));
    if let Some(text) = inet6.get("ok") {
        assert_eq!(text, "", "IPv6 addresses in the sandbox");
    }
    // The address, MTU and flags as the sandbox's own tools see them.
    let spawned = agent.spawn_python(
        "import fcntl, socket, struct\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         req = struct.pack('16s24x', b'eth0')\n\
         addr = fcntl.ioctl(s, 0x8915, req)[20:24]\n\
         mtu = struct.unpack('i', fcntl.ioctl(s, 0x8921, req)[16:20])[0]\n\
         flags = struct.unpack('H', fcntl.ioctl(s, 0x8913, req)[16:18])[0]\n\
         print(socket.inet_ntoa(addr), mtu, flags & 1)\n",
    );
    let (out, err, status) = agent.finish(&spawned);
    assert_eq!(status["code"], 0, "{err}");
    assert_eq!(out.trim(), "100.96.0.2 65520 1", "{err}");

    assert_eq!(
        agent.read_text("/etc/resolv.conf"),
        "nameserver 100.96.0.1\noptions timeout:1 attempts:2\n"
    );
    let info = agent.ok("lstat", json!({"path": "/etc/resolv.conf"}));
    assert_eq!(info["isFile"], true, "{info}");
    assert_eq!(info["mode"].as_u64().unwrap() & 0o7777, 0o644, "{info}");
    // The device node is not in the sandbox.
    let r = agent.call("lstat", json!({"path": "/dev/net/tun"}));
    assert!(r.get("error").is_some(), "/dev/net/tun visible: {r}");
    // Neither PID 1 (the agent) nor anything else inside holds the TUN fd.
    let pid1 = fds_of(&sandbox.pid().to_string());
    assert!(
        !pid1.values().any(|t| t.contains("tun")),
        "PID 1 holds {pid1:?}"
    );
    // The image is untouched.
    assert_eq!(
        std::fs::read(Path::new(IMAGE).join("etc/resolv.conf")).ok(),
        host_resolv
    );
    drop(tun);
    sandbox.destroy().unwrap();
}

#[test]
fn udp_goes_both_ways_through_the_tun_fd() {
    let Some(image) = image() else { return };
    let _serial = serial();
    let mut sandbox =
        Sandbox::create(&spec("udp", &image, Some(NetworkSpec::default()))).expect("create");
    let tun = sandbox.take_tun().expect("a TUN fd");
    let mut agent = Agent::connect(&mut sandbox);

    // Send from a bound port, then wait for a reply on it.
    let spawned = agent.spawn_python(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('0.0.0.0', 7777))\n\
         s.settimeout(15)\n\
         s.sendto(b'hello from inside', ('198.18.0.7', 9999))\n\
         data, peer = s.recvfrom(100)\n\
         print(data.decode(), peer[0], peer[1])\n",
    );
    let packet = next_udp_to(&tun, 9999);
    let ihl = usize::from(packet[0] & 0xf) * 4;
    assert_eq!(packet[9], 17, "UDP");
    assert_eq!(&packet[12..16], &[100, 96, 0, 2], "source address");
    assert_eq!(&packet[16..20], &[198, 18, 0, 7], "destination address");
    assert_eq!(
        u16::from_be_bytes([packet[ihl], packet[ihl + 1]]),
        7777,
        "source port"
    );
    assert_eq!(&packet[ihl + 8..], b"hello from inside");

    // The reverse direction: a packet written to the fd reaches the socket.
    let reply = udp_packet(
        (Ipv4Addr::new(198, 18, 0, 7), 9999),
        (Ipv4Addr::new(100, 96, 0, 2), 7777),
        b"hello from outside",
    );
    let mut file = File::from(tun.try_clone().unwrap());
    assert_eq!(file.write(&reply).unwrap(), reply.len());
    let (out, err, status) = agent.finish(&spawned);
    assert_eq!(status["code"], 0, "{out}{err}");
    assert_eq!(out.trim(), "hello from outside 198.18.0.7 9999", "{err}");
    drop(file);
    drop(tun);
    sandbox.destroy().unwrap();
}

#[test]
fn without_a_network_there_is_only_lo_and_no_fd() {
    let _serial = serial();
    let rootfs = tempfile::tempdir().unwrap();
    let mut sandbox = Sandbox::create(&spec("none", rootfs.path(), None)).expect("create");
    assert!(sandbox.take_tun().is_none());
    let mut agent = Agent::connect(&mut sandbox);
    let dev = agent.read_text("/proc/net/dev");
    assert_eq!(
        interfaces(&dev),
        BTreeSet::from(["lo".to_string()]),
        "{dev}"
    );
    let route = agent.read_text("/proc/net/route");
    assert_eq!(
        route.lines().count(),
        1,
        "routes without a network:\n{route}"
    );
    sandbox.destroy().unwrap();
}

#[test]
fn network_on_an_empty_rootfs_makes_no_etc() {
    let _serial = serial();
    let rootfs = tempfile::tempdir().unwrap();
    let mut sandbox = Sandbox::create(&spec("empty", rootfs.path(), Some(NetworkSpec::default())))
        .expect("create");
    let tun = sandbox.take_tun().expect("a TUN fd");
    let mut agent = Agent::connect(&mut sandbox);
    let listing = agent.ok("readDir", json!({"path": "/"}));
    let mut names: Vec<&str> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["dev", "proc", "tmp"], "{listing}");
    let dev = agent.read_text("/proc/net/dev");
    assert!(interfaces(&dev).contains("eth0"), "{dev}");
    // The device lives as long as its fd: closing it removes eth0.
    drop(tun);
    let dev = agent.read_text("/proc/net/dev");
    assert_eq!(
        interfaces(&dev),
        BTreeSet::from(["lo".to_string()]),
        "{dev}"
    );
    sandbox.destroy().unwrap();
}

#[test]
fn a_resolv_conf_symlink_is_replaced_not_followed() {
    let _serial = serial();
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::create_dir(rootfs.path().join("etc")).unwrap();
    std::os::unix::fs::symlink(
        "/tmp/written-through",
        rootfs.path().join("etc/resolv.conf"),
    )
    .unwrap();
    let custom = NetworkSpec {
        if_name: "net0".into(),
        address: Ipv4Addr::new(10, 0, 0, 2),
        prefix_len: 24,
        gateway: Ipv4Addr::new(10, 0, 0, 1),
        dns: Ipv4Addr::new(10, 0, 0, 53),
        mtu: 1500,
    };
    let mut sandbox =
        Sandbox::create(&spec("symlink", rootfs.path(), Some(custom))).expect("create");
    let mut agent = Agent::connect(&mut sandbox);
    let info = agent.ok("lstat", json!({"path": "/etc/resolv.conf"}));
    assert_eq!(info["isFile"], true, "{info}");
    assert_eq!(
        agent.read_text("/etc/resolv.conf"),
        "nameserver 10.0.0.53\noptions timeout:1 attempts:2\n"
    );
    let r = agent.call("lstat", json!({"path": "/tmp/written-through"}));
    assert!(r.get("error").is_some(), "the symlink was followed: {r}");
    let dev = agent.read_text("/proc/net/dev");
    assert_eq!(
        interfaces(&dev),
        BTreeSet::from(["lo".to_string(), "net0".to_string()]),
        "{dev}"
    );
    let route = agent.read_text("/proc/net/route");
    assert!(
        route.lines().any(|l| {
            let r: Vec<&str> = l.split_whitespace().collect();
            r[0] == "net0" && r[1] == "00000000" && r[2] == route_hex(Ipv4Addr::new(10, 0, 0, 1))
        }),
        "{route}"
    );
    sandbox.destroy().unwrap();
    // The image's symlink is untouched.
    assert_eq!(
        std::fs::read_link(rootfs.path().join("etc/resolv.conf")).unwrap(),
        Path::new("/tmp/written-through")
    );
}

#[test]
fn destroy_detaches_the_tun_fd_and_leaves_nothing_open() {
    let _serial = serial();
    let rootfs = tempfile::tempdir().unwrap();
    let before = own_fds();
    let spec = spec("destroy", rootfs.path(), Some(NetworkSpec::default()));
    let mut sandbox = Sandbox::create(&spec).expect("create");
    let tun = sandbox.take_tun().expect("a TUN fd");
    let netns = std::fs::read_link(format!("/proc/{}/ns/net", sandbox.pid())).unwrap();
    // Nothing to read yet: IPv6 is off, so the kernel sends nothing.
    assert_eq!(poll(&tun, libc::POLLIN, Duration::from_millis(200)), 0);
    let mut agent = Agent::connect(&mut sandbox);
    drop(agent.ok("ping", json!({})));
    drop(agent);

    sandbox.destroy().unwrap();
    // The interface is gone: the fd reports an error instead of blocking.
    let revents = poll(&tun, libc::POLLIN, Duration::from_secs(5));
    assert_ne!(revents & libc::POLLERR, 0, "revents {revents:#x}");
    let mut buf = [0u8; 2048];
    let err = File::from(tun.try_clone().unwrap())
        .read(&mut buf)
        .expect_err("reading a TUN fd after destroy");
    assert_eq!(err.raw_os_error(), Some(libc::EBADFD), "{err}");
    let mut file = File::from(tun.try_clone().unwrap());
    assert!(file.write(&[0x45; 40]).is_err(), "writing after destroy");
    drop(file);
    drop(tun);
    // No process is left in the network namespace, and this process holds
    // nothing of the sandbox: with the TUN fd closed, nothing refers to the
    // namespace any more.
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(ns) = std::fs::read_link(entry.path().join("ns/net")) {
            assert_ne!(
                ns,
                netns,
                "pid {:?} is in the sandbox's netns",
                entry.file_name()
            );
        }
    }
    assert_eq!(own_fds(), before);
    assert!(!spec.paths.sandbox(&spec.id).exists());
}

#[test]
fn a_bad_network_spec_is_refused_before_anything_is_made() {
    let _serial = serial();
    let rootfs = tempfile::tempdir().unwrap();
    let spec = spec(
        "bad",
        rootfs.path(),
        Some(NetworkSpec {
            if_name: "much-too-long-name".into(),
            ..NetworkSpec::default()
        }),
    );
    let err = Sandbox::create(&spec).expect_err("an invalid interface name");
    assert!(matches!(err, JailError::InvalidNetwork(_)), "{err}");
    assert!(!spec.paths.sandbox(&spec.id).exists());
}

/// Cost of the TUN set-up, back to back as a busy daemon would see it:
/// `cargo test --release -p jail --test network -- --ignored --nocapture
/// create_time`. The TUN fd is held across destroy, as its user would.
#[test]
#[ignore]
fn create_time_with_and_without_network() {
    let _serial = serial();
    let empty = tempfile::tempdir().unwrap();
    let rootfs = image().unwrap_or_else(|| empty.path().to_path_buf());
    const N: usize = 50;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for round in 0..2 {
        for network in [None, Some(NetworkSpec::default())] {
            let with = network.is_some();
            let (mut create, mut destroy, mut close) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..N {
                let spec = spec(&format!("time-{with}-{i}"), &rootfs, network.clone());
                let start = Instant::now();
                let mut sandbox = Sandbox::create(&spec).expect("create");
                create.push(ms(start.elapsed()));
                let tun = sandbox.take_tun();
                let start = Instant::now();
                sandbox.destroy().unwrap();
                destroy.push(ms(start.elapsed()));
                let start = Instant::now();
                drop(tun);
                close.push(ms(start.elapsed()));
            }
            let stats = |v: &mut Vec<f64>| {
                v.sort_by(|a, b| a.partial_cmp(b).unwrap());
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                format!(
                    "mean {mean:.2} median {:.2} p90 {:.2}",
                    v[N / 2],
                    v[N * 9 / 10]
                )
            };
            eprintln!(
                "round {round} network={with}: {N} creates: {} ms; destroy: {} ms; TUN close: {} ms",
                stats(&mut create),
                stats(&mut destroy),
                stats(&mut close)
            );
        }
    }
}
