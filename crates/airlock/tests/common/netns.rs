//! Network fixtures for the egress attack tests: a network namespace joined
//! to the host by a veth pair (a private network the host can route to, as
//! a VPC or an office LAN would be), addresses added inside it or on the
//! host, and TCP servers on them. Nothing here uses a real private or
//! public address: the namespace's network is 10.213.N.0/24 with N picked
//! free, and a host route to one link-local address goes to the veth only.
//!
//! The [`TestNet`] guard removes every namespace, link, route and address
//! it made when dropped, so a failing test leaves nothing behind.

use nix::sched::{setns, CloneFlags};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One namespace's network; see the module comment.
pub struct TestNet {
    /// The namespace's name (`ip netns`).
    pub ns: String,
    /// The host end of the veth pair.
    pub host_if: String,
    /// The namespace end of the veth pair.
    peer_if: String,
    /// The `/24` third octet: the network is 10.213.`n`.0/24.
    pub n: u8,
    /// Commands that undo what was made, run in reverse order on drop.
    undo: Vec<Vec<String>>,
    servers: Vec<Banner>,
}

/// Serialises the choice of a free /24 between the tests of one binary.
static PICK: Mutex<()> = Mutex::new(());
static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs `ip ARGS`, panicking with its output on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip_output(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("running ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl TestNet {
    /// A namespace with 10.213.N.2/24 on its veth end, the host end at
    /// 10.213.N.1/24.
    pub fn new() -> TestNet {
        let _pick = PICK.lock().unwrap_or_else(|e| e.into_inner());
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Start somewhere that depends on the process, so two test
        // binaries running at once rarely probe the same /24s, and take
        // the first /24 nobody on the host uses.
        let start = (pid.wrapping_mul(7).wrapping_add(seq * 13) % 200) as u8 + 20;
        let n = (0..200u8)
            .map(|i| ((start as u16 - 20 + i as u16) % 200 + 20) as u8)
            .find(|n| {
                let net = format!("10.213.{n}.0/24");
                ip_output(&["-o", "addr", "show", "to", &net])
                    .trim()
                    .is_empty()
                    && ip_output(&["route", "show", "to", "match", &format!("10.213.{n}.1")])
                        .lines()
                        .all(|l| l.starts_with("default"))
            })
            .expect("a free 10.213.N.0/24");
        let tag = format!("{}{}", pid % 100_000, seq % 100);
        let mut net = TestNet {
            ns: format!("airlock-test-{pid}-{seq}"),
            host_if: format!("alk{tag}h"),
            peer_if: format!("alk{tag}p"),
            n,
            undo: Vec::new(),
            servers: Vec::new(),
        };
        let (ns, host_if, peer) = (net.ns.clone(), net.host_if.clone(), net.peer_if.clone());
        ip(&["netns", "add", &ns]);
        net.undo(&["netns", "del", &ns]);
        ip(&[
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &net.peer_if,
        ]);
        // Deleting the host end deletes both ends, and the routes and
        // addresses on them.
        net.undo(&["link", "del", &host_if]);
        ip(&["link", "set", &net.peer_if, "netns", &net.ns]);
        ip(&[
            "addr",
            "add",
            &format!("10.213.{n}.1/24"),
            "dev",
            &net.host_if,
        ]);
        ip(&["link", "set", &net.host_if, "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.213.{n}.2/24"),
            "dev",
            &peer,
        ]);
        ip(&["-n", &ns, "link", "set", &peer, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        // Replies to addresses outside the /24 (see `add_routed`) go back
        // over the veth too.
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &format!("10.213.{n}.1"),
        ]);
        net
    }

    /// 10.213.N.`host`: an address in the namespace's network.
    pub fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.n, host)
    }

    /// Adds `addr` inside the namespace (10.213.N.x addresses are routed
    /// there by the host's /24 route).
    pub fn add_inside(&mut self, addr: Ipv4Addr) {
        let ns = self.ns.clone();
        let peer = self.peer_if.clone();
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            &peer,
        ]);
    }

    /// Adds `addr` inside the namespace and a host route for it (that one
    /// address, over this veth only), as a cloud's metadata address is
    /// reachable from its instances. The route goes with the link.
    pub fn add_routed(&mut self, addr: Ipv4Addr) {
        self.add_inside(addr);
        let src = self.addr(1).to_string();
        let dst = format!("{addr}/32");
        let dev = self.host_if.clone();
        ip(&["route", "add", &dst, "dev", &dev, "src", &src]);
        self.undo(&["route", "del", &dst, "dev", &dev]);
    }

    /// Adds `addr` to the host itself (a second address on the host end
    /// of the veth, which goes with the link), as a host's address on an
    /// internal network would be.
    pub fn add_to_host(&mut self, addr: Ipv4Addr) {
        let dev = self.host_if.clone();
        ip(&["addr", "add", &format!("{addr}/32"), "dev", &dev]);
    }

    /// A server on `addr` inside the namespace that answers every
    /// connection with "hello from ADDR\n".
    pub fn serve_inside(&mut self, addr: SocketAddr) -> SocketAddr {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.ns)).expect("netns file");
        // A thread of its own enters the namespace to bind, so this
        // process's other threads stay in the host's; the socket stays in
        // the namespace it was made in.
        let listener = std::thread::spawn(move || {
            setns(ns, CloneFlags::CLONE_NEWNET).expect("setns");
            TcpListener::bind(addr)
        })
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("binding {addr} in the namespace: {e}"));
        self.keep(Banner::start(listener))
    }

    /// The same server, on `addr` in the host's namespace.
    pub fn serve_on_host(&mut self, addr: SocketAddr) -> SocketAddr {
        self.keep(Banner::bind(addr))
    }

    fn keep(&mut self, server: Banner) -> SocketAddr {
        let addr = server.addr;
        self.servers.push(server);
        addr
    }

    fn undo(&mut self, args: &[&str]) {
        self.undo.push(args.iter().map(|s| s.to_string()).collect());
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Servers first: an open socket would keep the namespace alive.
        self.servers.clear();
        for cmd in self.undo.iter().rev() {
            // Best effort: a link may already be gone with its namespace.
            let _ = Command::new("ip").args(cmd).output();
        }
    }
}

/// A TCP server that writes "hello from ADDR\n" to each connection and
/// closes it; stopped (and its socket closed) on drop.
pub struct Banner {
    pub addr: SocketAddr,
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Banner {
    /// A server on `addr` in the host's namespace.
    pub fn bind(addr: SocketAddr) -> Banner {
        Banner::start(TcpListener::bind(addr).unwrap_or_else(|e| panic!("binding {addr}: {e}")))
    }

    fn start(listener: TcpListener) -> Banner {
        let addr = listener.local_addr().unwrap();
        let listener = Arc::new(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let (l, stopped) = (listener.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                if let Ok((mut c, _)) = l.accept() {
                    let _ = c.write_all(format!("hello from {addr}\n").as_bytes());
                }
            }
        });
        Banner {
            addr,
            listener,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Banner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // On Linux, shutting a listening socket down wakes a blocked
        // accept() with an error, and the loop sees `stop`.
        // SAFETY: shutdown(2) on the listener's own fd, which the Arc
        // keeps open.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
