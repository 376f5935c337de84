//! The `smoltcp` side of the TUN device: two packet queues and a pool of
//! packet buffers. The stack task moves packets between these queues and
//! the TUN fd itself, so the TCP/IP stack never blocks on I/O; buffers are
//! reused, so a packet costs no allocation and no zeroing.

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use std::cell::RefCell;
use std::collections::VecDeque;

/// Buffers kept for reuse; more are freed. Each is MTU-sized (up to
/// 64 KiB): the pool is what an idle sandbox's gateway keeps.
const POOL_MAX: usize = 64;
/// Packets queued towards the sandbox before the stack must wait for them
/// to be written to the TUN device (smoltcp keeps the data in its sockets
/// meanwhile): the queue is bounded however many connections send at once.
const TX_MAX: usize = 64;

/// One IP packet in a buffer of the device's pool.
pub struct Packet {
    buf: Vec<u8>,
    len: usize,
}

impl Packet {
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// A packet that holds no buffer (a placeholder after a packet was
    /// handed on): costs no memory, and is never pooled.
    pub fn empty() -> Self {
        Self {
            buf: Vec::new(),
            len: 0,
        }
    }
}

#[derive(Default)]
pub struct BufferPool {
    free: RefCell<Vec<Vec<u8>>>,
    size: usize,
}

impl BufferPool {
    fn take(&self) -> Vec<u8> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0; self.size])
    }

    fn give(&self, buf: Vec<u8>) {
        let mut free = self.free.borrow_mut();
        // Only full-size buffers: a short one would truncate a later read.
        if free.len() < POOL_MAX && buf.len() >= self.size {
            free.push(buf);
        }
    }
}

pub struct QueueDevice {
    pub rx: VecDeque<Packet>,
    pub tx: VecDeque<Packet>,
    pool: BufferPool,
    mtu: usize,
}

impl QueueDevice {
    pub fn new(mtu: usize) -> Self {
        Self {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            pool: BufferPool {
                free: RefCell::new(Vec::new()),
                size: mtu,
            },
            mtu,
        }
    }

    /// Fills a pooled buffer with `fill` (which returns the length read,
    /// or an error that is passed through).
    pub fn read_packet<E>(
        &self,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<Packet, E> {
        let mut buf = self.pool.take();
        match fill(&mut buf) {
            Ok(len) => Ok(Packet { buf, len }),
            Err(e) => {
                self.pool.give(buf);
                Err(e)
            }
        }
    }

    pub fn recycle(&self, packet: Packet) {
        self.pool.give(packet.buf);
    }

    /// Whether the queue towards the sandbox is full (the stack holds
    /// further packets until it is written out).
    pub fn tx_full(&self) -> bool {
        self.tx.len() >= TX_MAX
    }
}

pub struct RxToken<'a> {
    packet: Packet,
    pool: &'a BufferPool,
}

pub struct TxToken<'a> {
    queue: &'a mut VecDeque<Packet>,
    pool: &'a BufferPool,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(self.packet.bytes());
        self.pool.give(self.packet.buf);
        r
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.pool.take();
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let r = f(&mut buf[..len]);
        self.queue.push_back(Packet { buf, len });
        r
    }
}

impl phy::Device for QueueDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((
            RxToken {
                packet,
                pool: &self.pool,
            },
            TxToken {
                queue: &mut self.tx,
                pool: &self.pool,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        if self.tx_full() {
            return None;
        }
        Some(TxToken {
            queue: &mut self.tx,
            pool: &self.pool,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // Packets come from the sandbox's kernel over a memory path: their
        // checksums were just computed and cannot have been corrupted, so
        // verifying them again only costs throughput. Outgoing packets must
        // carry checksums: the kernel verifies what a TUN device injects.
        let mut checksum = ChecksumCapabilities::default();
        checksum.ipv4 = Checksum::Tx;
        checksum.tcp = Checksum::Tx;
        checksum.udp = Checksum::Tx;
        caps.checksum = checksum;
        caps
    }
}
