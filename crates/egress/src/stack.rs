//! One sandbox's network, seen from the daemon: the task that owns the TUN
//! fd, the `smoltcp` interface, the DNS responder and every TCP flow.
//!
//! A new TCP connection is held at its SYN until the policy allows it and
//! the real upstream has accepted: only then is a listening socket made
//! for it and the SYN handed to `smoltcp`, so the sandbox sees "connection
//! refused" (a RST) whenever the gateway or the upstream says no. At most
//! one socket listens at a time (the SYN is processed at once), so each
//! socket is bound to the flow it was made for.

use crate::audit::{AuditEvent, AuditLimiter, EventKind, Verdict};
use crate::budget::{self, Charge, MemoryBudget, RingCharge};
use crate::device::{Packet, QueueDevice};
use crate::dns::{self, Answer, QueryKind};
use crate::fakeip::FakeIpPool;
use crate::flow;
use crate::intercept::{InterceptStats, Interception};
use crate::policy::AllowList;
use crate::resolve::{self, Resolver};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpListenEndpoint, IpProtocol, Ipv4Packet, TcpPacket,
    UdpPacket,
};
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

/// Per-connection TCP buffers in the userspace stack. The send buffer (to
/// the sandbox) bounds the window in flight, and must cover a loopback-speed
/// stream's bandwidth-delay product (measured: 512 KiB caps a stream at
/// ~1.2 GiB/s, 2 MiB does not); its pages are charged to the sandbox's
/// budget as writes first reach them (see [`RingCharge`]), so a connection
/// that moves little costs little. The receive buffer (from the sandbox)
/// is the window the sandbox may fill on its own: it is charged whole when
/// the connection is admitted, so it is kept small.
const TCP_RX_BUFFER: usize = 64 * 1024;
const TCP_TX_BUFFER: usize = 2 * 1024 * 1024;
/// What a connection is charged when it is admitted: its receive buffer,
/// the first step of its send buffer, the most its task and channels hold,
/// and its bookkeeping (socket, task, flow entry).
const FLOW_BASE: usize = TCP_RX_BUFFER + budget::RING_STEP + flow::MAX_BUFFERED + 8 * 1024;
/// Packets read from the TUN device before the stack runs once (each
/// buffer is MTU-sized: up to 64 KiB).
const READ_BATCH: usize = 64;
/// A flow whose socket never left LISTEN (its SYN got lost) is dropped.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Distinct denied UDP destinations reported per sandbox; more are dropped
/// without a report.
const MAX_UDP_REPORTS: usize = 256;
/// TCP connections one sandbox may have open or opening at once: each holds
/// a socket (a file descriptor) in the daemon, which all sandboxes share.
const MAX_FLOWS: usize = 1024;
/// Audit events one sandbox may add per second, and in a burst.
const AUDIT_RATE: u32 = 200;
const AUDIT_BURST: u32 = 2000;

pub type AuditSink = Arc<dyn Fn(AuditEvent) + Send + Sync>;

/// Addresses of the sandbox's network, and where names are resolved.
#[derive(Clone)]
pub struct GatewayConfig {
    /// The gateway's address on the link: its DNS server is here.
    pub gateway: Ipv4Addr,
    /// The sandbox's address on its TUN interface.
    pub sandbox: Ipv4Addr,
    pub prefix_len: u8,
    /// MTU of the TUN interface (IP packet size).
    pub mtu: usize,
    pub resolver: Arc<Resolver>,
}

/// What to do with a packet from the sandbox.
enum Ingress {
    Stack,
    Drop,
    /// A retransmitted SYN of a flow still waiting for its upstream.
    HeldSyn(FlowKey),
    NewFlow(FlowKey),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
}

pub enum StackMsg {
    Connected {
        key: FlowKey,
        stream: TcpStream,
        upstream: SocketAddr,
    },
    Refused {
        key: FlowKey,
        reason: String,
    },
    Abort {
        key: FlowKey,
        reason: String,
    },
    /// An intercepted connection ended: what it did.
    Intercepted {
        key: FlowKey,
        stats: InterceptStats,
    },
}

struct Flow {
    at_ms: i64,
    started: Instant,
    name: String,
    port: u16,
    /// The name if it came from DNS (checked against the SNI), else None.
    tls_name: Option<String>,
    rule: String,
    upstream: Option<SocketAddr>,
    bytes_out: u64,
    bytes_in: u64,
    denied: Option<String>,
    intercepted: Option<InterceptStats>,
    state: FlowState,
    /// The flow's admission charge, given back when it ends.
    _charge: Charge,
}

enum FlowState {
    /// Waiting for the upstream; the sandbox's latest SYN is kept.
    Connecting {
        syn: Packet,
        task: JoinHandle<()>,
    },
    Open(Box<OpenFlow>),
}

struct OpenFlow {
    handle: SocketHandle,
    to_up: Option<mpsc::Sender<Vec<u8>>>,
    from_up: Option<mpsc::Receiver<flow::Chunk>>,
    pending: Option<(flow::Chunk, usize)>,
    fin_sent: bool,
    task: JoinHandle<()>,
    /// Address of the send buffer's first byte: where in the ring a write
    /// lands is what its pages cost.
    tx_base: usize,
    tx_charge: RingCharge,
}

impl Drop for Flow {
    fn drop(&mut self) {
        match &self.state {
            FlowState::Connecting { task, .. } => task.abort(),
            FlowState::Open(open) => open.task.abort(),
        }
    }
}

pub(crate) struct Stack {
    cfg: GatewayConfig,
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
    dns: SocketHandle,
    flows: HashMap<FlowKey, Flow>,
    fake: FakeIpPool,
    policy: watch::Receiver<Arc<AllowList>>,
    intercept: watch::Receiver<Option<Arc<Interception>>>,
    audit: AuditSink,
    msgs_tx: mpsc::UnboundedSender<StackMsg>,
    msgs: mpsc::UnboundedReceiver<StackMsg>,
    wake: Arc<Notify>,
    epoch: Instant,
    udp_reported: HashSet<SocketAddrV4>,
    limiter: std::cell::RefCell<AuditLimiter>,
    budget: Arc<MemoryBudget>,
    /// The TUN device, while [`Stack::run`] holds it.
    tun: RawFd,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Stack {
    pub fn new(
        cfg: GatewayConfig,
        policy: watch::Receiver<Arc<AllowList>>,
        intercept: watch::Receiver<Option<Arc<Interception>>>,
        audit: AuditSink,
        budget: Arc<MemoryBudget>,
    ) -> Self {
        let mut device = QueueDevice::new(cfg.mtu);
        let epoch = Instant::now();
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ip),
            &mut device,
            smoltcp::time::Instant::from_micros(0),
        );
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(cfg.gateway), cfg.prefix_len));
        });
        // Accept packets for any destination: every address the sandbox
        // dials (fake or literal) is answered by this interface.
        iface.set_any_ip(true);
        let mut sockets = SocketSet::new(Vec::new());
        let mut dns_socket = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0; 64 * 1024]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 64], vec![0; 64 * 1024]),
        );
        dns_socket
            .bind(IpListenEndpoint {
                addr: Some(IpAddress::Ipv4(cfg.gateway)),
                port: 53,
            })
            .expect("binding a fresh UDP socket");
        let dns = sockets.add(dns_socket);
        let (msgs_tx, msgs) = mpsc::unbounded_channel();
        Self {
            cfg,
            iface,
            device,
            sockets,
            dns,
            flows: HashMap::new(),
            fake: FakeIpPool::new(),
            policy,
            intercept,
            audit,
            msgs_tx,
            msgs,
            wake: Arc::new(Notify::new()),
            epoch,
            udp_reported: HashSet::new(),
            limiter: std::cell::RefCell::new(AuditLimiter::new(AUDIT_RATE, AUDIT_BURST)),
            budget,
            tun: -1,
        }
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    fn policy(&self) -> Arc<AllowList> {
        self.policy.borrow().clone()
    }

    /// Runs until the TUN device goes away (the sandbox ended) or the task
    /// is aborted.
    pub async fn run(mut self, tun: OwnedFd) -> io::Result<()> {
        set_nonblocking(&tun)?;
        // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open and
        // the same for the AsyncFd's whole life.
        let tun = unsafe { AsyncFd::register(tun) }.map_err(io::Error::from)?;
        self.tun = tun.get_ref().as_raw_fd();
        loop {
            let delay = self
                .iface
                .poll_delay(self.now(), &self.sockets)
                .map_or(Duration::from_secs(3600), |d| {
                    Duration::from_micros(d.total_micros())
                });
            tokio::select! {
                ready = tun.readable() => {
                    let mut guard = ready?;
                    for _ in 0..READ_BATCH {
                        let device = &self.device;
                        let read = guard.try_io(|fd| {
                            device.read_packet(|buf| read_packet(fd.get_ref(), buf))
                        });
                        match read {
                            Ok(Ok(p)) if p.len() == 0 => return Ok(()),
                            Ok(Ok(p)) => self.ingress(p),
                            Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(()),
                            Ok(Err(e)) => return Err(e),
                            Err(_would_block) => break,
                        }
                    }
                }
                Some(msg) = self.msgs.recv() => self.handle(msg),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(delay) => {}
            }
            while let Ok(msg) = self.msgs.try_recv() {
                self.handle(msg);
            }
            self.pump();
        }
    }

    /// Runs the TCP/IP stack and moves data until nothing more moves. The
    /// device queue towards the sandbox is bounded (the stack holds its
    /// packets when it is full), so it is written out as it fills.
    fn pump(&mut self) {
        loop {
            let now = self.now();
            self.iface.poll(now, &mut self.device, &mut self.sockets);
            let moved = self.serve_dns() | self.serve_flows();
            let was_full = self.device.tx_full();
            self.flush();
            if !moved && !was_full && self.device.rx.is_empty() {
                break;
            }
        }
    }

    fn flush(&mut self) {
        while let Some(packet) = self.device.tx.pop_front() {
            let bytes = packet.bytes();
            // SAFETY: writing a buffer we own to the TUN fd, which `run`
            // keeps open while the stack runs (-1 before: EBADF). A failure
            // means the device queue into the sandbox is full: the packet
            // is dropped, as a router would; TCP retransmits.
            unsafe { libc::write(self.tun, bytes.as_ptr().cast(), bytes.len()) };
            self.device.recycle(packet);
        }
    }

    /// A packet from the sandbox.
    fn ingress(&mut self, packet: Packet) {
        match self.classify(packet.bytes()) {
            Ingress::Stack => self.device.rx.push_back(packet),
            Ingress::Drop => self.device.recycle(packet),
            Ingress::HeldSyn(key) => {
                if let Some(Flow {
                    state: FlowState::Connecting { syn, .. },
                    ..
                }) = self.flows.get_mut(&key)
                {
                    let old = std::mem::replace(syn, packet);
                    self.device.recycle(old);
                }
            }
            Ingress::NewFlow(key) => self.new_flow(key, packet),
        }
    }

    /// Where a packet from the sandbox goes.
    fn classify(&mut self, packet: &[u8]) -> Ingress {
        // IPv6 and anything malformed is dropped here: IPv4 only.
        let Ok(ip) = Ipv4Packet::new_checked(packet) else {
            return Ingress::Drop;
        };
        if ip.src_addr() != self.cfg.sandbox {
            return Ingress::Drop; // spoofed source
        }
        match ip.next_header() {
            IpProtocol::Udp => {
                let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
                    return Ingress::Drop;
                };
                let dst = SocketAddrV4::new(ip.dst_addr(), udp.dst_port());
                if ip.dst_addr() == self.cfg.gateway && udp.dst_port() == 53 {
                    Ingress::Stack
                } else {
                    self.deny_udp(dst);
                    Ingress::Drop
                }
            }
            IpProtocol::Tcp => {
                let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
                    return Ingress::Drop;
                };
                let key = FlowKey {
                    src: SocketAddrV4::new(ip.src_addr(), tcp.src_port()),
                    dst: SocketAddrV4::new(ip.dst_addr(), tcp.dst_port()),
                };
                let is_syn = tcp.syn() && !tcp.ack();
                match self.flows.get(&key) {
                    Some(Flow {
                        state: FlowState::Connecting { .. },
                        ..
                    }) if is_syn => Ingress::HeldSyn(key),
                    Some(Flow {
                        state: FlowState::Connecting { .. },
                        ..
                    }) => Ingress::Drop,
                    Some(_) => Ingress::Stack,
                    None if is_syn => Ingress::NewFlow(key),
                    // Not part of any flow: smoltcp answers with a RST.
                    None => Ingress::Stack,
                }
            }
            // ICMP and every other protocol: dropped.
            _ => Ingress::Drop,
        }
    }

    fn deny_udp(&mut self, dst: SocketAddrV4) {
        if self.udp_reported.len() >= MAX_UDP_REPORTS || !self.udp_reported.insert(dst) {
            return;
        }
        self.emit(AuditEvent {
            at_ms: now_ms(),
            kind: EventKind::Udp,
            name: dst.ip().to_string(),
            port: dst.port(),
            verdict: Verdict::Denied,
            reason: "UDP goes only to the gateway's DNS server".into(),
            upstream: None,
            bytes_out: 0,
            bytes_in: 0,
            duration_ms: 0,
            secrets: Vec::new(),
        });
    }

    fn new_flow(&mut self, key: FlowKey, syn: Packet) {
        let policy = self.policy();
        let dst_ip = *key.dst.ip();
        let port = key.dst.port();
        let deny = |this: &mut Self, name: String, reason: String, syn: Packet| {
            this.report(EventKind::Tcp, name, port, Verdict::Denied, reason);
            // No socket listens: smoltcp answers the SYN with a RST.
            this.device.rx.push_back(syn);
        };
        if self.flows.len() >= MAX_FLOWS {
            let reason = format!("over {MAX_FLOWS} connections open at once");
            return deny(self, dst_ip.to_string(), reason, syn);
        }
        let Some(charge) = self.budget.charge(FLOW_BASE) else {
            self.budget.refused();
            let reason = format!(
                "the sandbox's gateway memory is spent: {} of {} KiB in use by its \
                 connections (--egress-memory-per-sandbox)",
                self.budget.used() >> 10,
                self.budget.limit() >> 10
            );
            return deny(self, dst_ip.to_string(), reason, syn);
        };
        if dst_ip == self.cfg.gateway {
            return deny(
                self,
                dst_ip.to_string(),
                "the gateway serves only DNS (UDP 53)".into(),
                syn,
            );
        }
        let (name, tls_name, rule) = if FakeIpPool::contains(dst_ip) {
            let Some(name) = self.fake.name_for(dst_ip).map(str::to_string) else {
                return deny(
                    self,
                    dst_ip.to_string(),
                    "no name was resolved to this address".into(),
                    syn,
                );
            };
            match policy.allows_name(&name, port) {
                Some(rule) => (name.clone(), Some(name), rule.to_string()),
                None => {
                    let reason = format!("{name}:{port} is not in allowNet");
                    return deny(self, name, reason, syn);
                }
            }
        } else {
            let name = dst_ip.to_string();
            match policy.allows_ip(IpAddr::V4(dst_ip), port) {
                Some(rule) => (name, None, rule.to_string()),
                None => {
                    let reason = format!("{name}:{port} is not in allowNet");
                    return deny(self, name, reason, syn);
                }
            }
        };
        let resolver = self.cfg.resolver.clone();
        let msgs = self.msgs_tx.clone();
        let wake = self.wake.clone();
        let literal = tls_name.is_none();
        let lookup_name = name.clone();
        let task = tokio::spawn(async move {
            let upstream = if literal {
                resolver.upstream_for_ip(IpAddr::V4(dst_ip), port)
            } else {
                resolver.upstream_for_name(&lookup_name, port).await
            };
            let result = match upstream {
                Ok(up) => resolve::connect(&up).await,
                Err(e) => Err(e),
            };
            let _ = msgs.send(match result {
                Ok((stream, upstream)) => StackMsg::Connected {
                    key,
                    stream,
                    upstream,
                },
                Err(reason) => StackMsg::Refused { key, reason },
            });
            wake.notify_one();
        });
        self.flows.insert(
            key,
            Flow {
                at_ms: now_ms(),
                started: Instant::now(),
                name,
                port,
                tls_name,
                rule,
                upstream: None,
                bytes_out: 0,
                bytes_in: 0,
                denied: None,
                intercepted: None,
                state: FlowState::Connecting { syn, task },
                _charge: charge,
            },
        );
    }

    fn handle(&mut self, msg: StackMsg) {
        match msg {
            StackMsg::Connected {
                key,
                stream,
                upstream,
            } => self.open(key, stream, upstream),
            StackMsg::Refused { key, reason } => {
                let Some(mut flow) = self.flows.remove(&key) else {
                    return;
                };
                if let FlowState::Connecting { syn, .. } = &mut flow.state {
                    let syn = std::mem::replace(syn, Packet::empty());
                    self.device.rx.push_back(syn);
                }
                flow.denied = Some(reason);
                self.finish(flow);
                self.pump();
            }
            StackMsg::Intercepted { key, stats } => {
                if let Some(flow) = self.flows.get_mut(&key) {
                    flow.intercepted = Some(stats);
                }
            }
            StackMsg::Abort { key, reason } => {
                if let Some(flow) = self.flows.get_mut(&key) {
                    flow.denied = Some(reason);
                    if let FlowState::Open(open) = &flow.state {
                        self.sockets.get_mut::<tcp::Socket>(open.handle).abort();
                    }
                }
            }
        }
    }

    fn open(&mut self, key: FlowKey, stream: TcpStream, upstream: SocketAddr) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return; // the sandbox gave up meanwhile
        };
        let FlowState::Connecting { syn, .. } = &mut flow.state else {
            return;
        };
        let syn = std::mem::replace(syn, Packet::empty());
        // Zeroed memory from the allocator is fresh pages, untouched until
        // written (see budget::tune_allocator). Moving the Vec into the
        // socket keeps its heap buffer where it is.
        let tx = vec![0; TCP_TX_BUFFER];
        let tx_base = tx.as_ptr() as usize;
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_RX_BUFFER]),
            tcp::SocketBuffer::new(tx),
        );
        socket.set_nagle_enabled(false);
        socket.set_ack_delay(None);
        if socket
            .listen(IpListenEndpoint {
                addr: Some(IpAddress::Ipv4(*key.dst.ip())),
                port: key.dst.port(),
            })
            .is_err()
        {
            return;
        }
        let handle = self.sockets.add(socket);
        let intercept = self.intercept.borrow().clone();
        let io = flow::spawn(
            stream,
            key,
            flow.tls_name.clone(),
            intercept,
            self.budget.clone(),
            self.wake.clone(),
            self.msgs_tx.clone(),
        );
        flow.upstream = Some(upstream);
        flow.started = Instant::now();
        flow.state = FlowState::Open(Box::new(OpenFlow {
            handle,
            to_up: Some(io.to_up),
            from_up: Some(io.from_up),
            pending: None,
            fin_sent: false,
            task: io.task,
            tx_base,
            tx_charge: RingCharge::new(&self.budget, TCP_TX_BUFFER),
        }));
        // Hand the SYN over now, so this is the only socket listening when
        // it arrives.
        self.device.rx.push_front(syn);
        let now = self.now();
        self.iface.poll(now, &mut self.device, &mut self.sockets);
    }

    fn serve_dns(&mut self) -> bool {
        let policy = self.policy();
        let mut answered = false;
        let mut buf = [0u8; 1500];
        loop {
            let socket = self.sockets.get_mut::<udp::Socket>(self.dns);
            let Ok((n, meta)) = socket.recv_slice(&mut buf) else {
                break;
            };
            answered = true;
            let mut asked = None;
            let fake = &mut self.fake;
            let reply = dns::respond(&buf[..n], |name, kind| {
                let allowed = policy.allows_name_any_port(name);
                asked = Some((name.to_string(), kind, allowed));
                match (allowed, kind) {
                    (true, QueryKind::A) => Answer::A(fake.ip_for(name)),
                    (true, _) => Answer::NoData,
                    (false, _) => Answer::NxDomain,
                }
            });
            if let Some(reply) = reply {
                let socket = self.sockets.get_mut::<udp::Socket>(self.dns);
                let _ = socket.send_slice(&reply, meta.endpoint);
            }
            // AAAA and other types for allowed names are not reported:
            // resolvers ask them alongside every A query.
            match asked {
                Some((name, QueryKind::A, true)) => self.report(
                    EventKind::Dns,
                    name,
                    53,
                    Verdict::Allowed,
                    "in allowNet; answered with a gateway address".into(),
                ),
                Some((name, _, false)) => self.report(
                    EventKind::Dns,
                    name,
                    53,
                    Verdict::Denied,
                    "not in allowNet; answered NXDOMAIN".into(),
                ),
                _ => {}
            }
        }
        answered
    }

    /// Moves data between every open socket and its upstream task; ends
    /// flows whose both sides are done.
    fn serve_flows(&mut self) -> bool {
        let mut moved = false;
        let mut done = Vec::new();
        for (key, flow) in self.flows.iter_mut() {
            let FlowState::Open(open) = &mut flow.state else {
                continue;
            };
            let socket = self.sockets.get_mut::<tcp::Socket>(open.handle);
            // Sandbox -> upstream, as far as the channel has room.
            if let Some(tx) = &open.to_up {
                let mut upstream_done = false;
                while socket.can_recv() {
                    let permit = match tx.try_reserve() {
                        Ok(p) => p,
                        Err(mpsc::error::TrySendError::Full(())) => break,
                        Err(mpsc::error::TrySendError::Closed(())) => {
                            upstream_done = true;
                            break;
                        }
                    };
                    let chunk = socket
                        .recv(|b| {
                            let n = b.len().min(flow::CHUNK);
                            (n, b[..n].to_vec())
                        })
                        .unwrap_or_default();
                    flow.bytes_out += chunk.len() as u64;
                    permit.send(chunk);
                    moved = true;
                }
                // The upstream task is gone, or the sandbox sent FIN: dropping
                // the channel closes the upstream's write side.
                if upstream_done || (sandbox_sent_fin(socket.state()) && !socket.can_recv()) {
                    open.to_up = None;
                }
            }
            // Upstream -> sandbox, as far as the socket has room and the
            // budget covers the send buffer's pages. What is not taken waits
            // in the channel, and the upstream task stops reading when that
            // is full: the upstream is held back, nothing queues.
            let OpenFlow {
                pending,
                from_up,
                tx_base,
                tx_charge,
                ..
            } = &mut **open;
            loop {
                if pending.is_none() {
                    let Some(rx) = from_up.as_mut() else {
                        break;
                    };
                    match rx.try_recv() {
                        Ok(chunk) => *pending = Some((chunk, 0)),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            *from_up = None;
                            break;
                        }
                    }
                }
                let Some((chunk, off)) = pending.as_mut() else {
                    break;
                };
                let chunk = &chunk.bytes;
                if !socket.can_send() {
                    break;
                }
                let n = socket
                    .send(|buf| {
                        let start = buf.as_ptr() as usize - *tx_base;
                        let want = buf.len().min(chunk.len() - *off);
                        let n = tx_charge.cover(start, start + want) - start;
                        buf[..n].copy_from_slice(&chunk[*off..*off + n]);
                        (n, n)
                    })
                    .unwrap_or(0);
                if n == 0 {
                    break;
                }
                *off += n;
                flow.bytes_in += n as u64;
                moved = true;
                if *off == chunk.len() {
                    *pending = None;
                }
            }
            if open.from_up.is_none() && open.pending.is_none() && !open.fin_sent {
                socket.close();
                open.fin_sent = true;
                moved = true;
            }
            let state = socket.state();
            let stuck = state == tcp::State::Listen && flow.started.elapsed() > LISTEN_TIMEOUT;
            if matches!(state, tcp::State::Closed | tcp::State::TimeWait) || stuck {
                done.push(*key);
            }
        }
        for key in done {
            if let Some(flow) = self.flows.remove(&key) {
                if let FlowState::Open(open) = &flow.state {
                    self.sockets.remove(open.handle);
                }
                self.finish(flow);
                moved = true;
            }
        }
        moved
    }

    /// Reports a flow that has ended.
    fn finish(&self, flow: Flow) {
        self.emit(flow_event(&flow, ""));
    }

    /// Hands an event to the daemon, within the sandbox's audit rate; the
    /// first event after a dropped stretch is preceded by their count.
    fn emit(&self, event: AuditEvent) {
        let Some(dropped) = self.limiter.borrow_mut().admit(Instant::now()) else {
            return;
        };
        if dropped > 0 {
            (self.audit)(AuditEvent {
                at_ms: now_ms(),
                kind: event.kind,
                name: "*".into(),
                port: 0,
                verdict: Verdict::Denied,
                reason: format!(
                    "{dropped} events not recorded: over the audit rate of {AUDIT_RATE}/s"
                ),
                upstream: None,
                bytes_out: 0,
                bytes_in: 0,
                duration_ms: 0,
                secrets: Vec::new(),
            });
        }
        (self.audit)(event);
    }

    fn report(&self, kind: EventKind, name: String, port: u16, verdict: Verdict, reason: String) {
        self.emit(AuditEvent {
            at_ms: now_ms(),
            kind,
            name,
            port,
            verdict,
            reason,
            upstream: None,
            bytes_out: 0,
            bytes_in: 0,
            duration_ms: 0,
            secrets: Vec::new(),
        });
    }
}

impl Drop for Stack {
    /// The sandbox is gone: report the connections it still had.
    fn drop(&mut self) {
        let flows: Vec<Flow> = self.flows.drain().map(|(_, f)| f).collect();
        for flow in flows {
            if matches!(flow.state, FlowState::Open(_)) {
                self.emit(flow_event(&flow, "; cut when the sandbox ended"));
            }
        }
        // The sockets' buffers go now, so that the freed memory can be
        // handed back (the connections' tasks end on their own threads:
        // what they free is returned as their heaps shrink).
        self.sockets = SocketSet::new(Vec::new());
        budget::trim_allocator();
    }
}

fn flow_event(flow: &Flow, note: &str) -> AuditEvent {
    let intercepted = match &flow.intercepted {
        Some(stats) => {
            let used: Vec<String> = stats
                .secrets
                .iter()
                .map(|(name, n)| format!("{name} in {n}"))
                .collect();
            let refused = match &stats.first_refusal {
                Some(why) => format!(
                    "; refused {} response(s) it could not mask, the first: {why}",
                    stats.refused
                ),
                None => String::new(),
            };
            format!(
                "; intercepted: {} request(s){}{refused}",
                stats.requests,
                if used.is_empty() {
                    String::new()
                } else {
                    format!(", secrets {}", used.join(", "))
                }
            )
        }
        None => String::new(),
    };
    let (verdict, reason) = match &flow.denied {
        Some(why) => (Verdict::Denied, why.clone()),
        None => (
            Verdict::Allowed,
            format!("allowNet: {}{intercepted}{note}", flow.rule),
        ),
    };
    let secrets = flow
        .intercepted
        .as_ref()
        .map(|s| s.secrets.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default();
    AuditEvent {
        at_ms: flow.at_ms,
        kind: EventKind::Tcp,
        name: flow.name.clone(),
        port: flow.port,
        verdict,
        reason,
        upstream: flow.upstream.map(|a| a.to_string()),
        bytes_out: flow.bytes_out,
        bytes_in: flow.bytes_in,
        duration_ms: flow.started.elapsed().as_millis() as u64,
        secrets,
    }
}

/// States in which the peer (the sandbox) has closed its sending side.
fn sandbox_sent_fin(state: tcp::State) -> bool {
    matches!(
        state,
        tcp::State::CloseWait
            | tcp::State::LastAck
            | tcp::State::Closing
            | tcp::State::TimeWait
            | tcp::State::Closed
    )
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn read_packet(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reading into a buffer we own from an fd we own.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
