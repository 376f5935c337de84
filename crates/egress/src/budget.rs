//! What one sandbox's connections may hold in the daemon's memory.
//!
//! The gateway's buffers live in the daemon, outside the sandbox's cgroup:
//! without a bound, a sandbox that opens many connections and never reads
//! them makes the daemon hold whatever its upstreams send. Each sandbox has
//! a [`MemoryBudget`]; a connection is charged for its buffers as they are
//! allocated or first touched, and gives the charge back when it ends. A
//! connection that does not fit is refused; a connection whose buffer
//! cannot grow keeps to what it has (it is slowed, not cut). Buffers grow
//! only into the first three quarters of the budget: streams that are not
//! read cannot starve the sandbox of new connections.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// The default budget of one sandbox's gateway connections.
pub const DEFAULT_PER_SANDBOX: usize = 64 << 20;

/// Daemon-wide figures for `/metrics`, shared by every sandbox's budget.
#[derive(Debug, Default)]
pub struct GatewayMemory {
    /// Bytes charged now, all sandboxes together.
    pub in_use: AtomicU64,
    /// Connections refused because their sandbox's budget was spent.
    pub refusals: AtomicU64,
}

/// One sandbox's budget.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    totals: Arc<GatewayMemory>,
}

impl MemoryBudget {
    pub fn new(limit: usize, totals: Arc<GatewayMemory>) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            totals,
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Charges `bytes` if they fit, as a [`Charge`] that gives them back
    /// when dropped.
    pub fn charge(self: &Arc<Self>, bytes: usize) -> Option<Charge> {
        let mut charge = Charge {
            budget: self.clone(),
            bytes: 0,
        };
        charge.grow(bytes).then_some(charge)
    }

    /// Most bytes that growing buffers may bring the charges to.
    fn growth_limit(&self) -> usize {
        self.limit - self.limit / 4
    }

    /// As [`MemoryBudget::charge`], for a buffer a connection grows into
    /// while it streams: within the first three quarters of the budget.
    pub fn charge_growth(self: &Arc<Self>, bytes: usize) -> Option<Charge> {
        let mut charge = Charge {
            budget: self.clone(),
            bytes: 0,
        };
        charge.grow_to(bytes, self.growth_limit()).then_some(charge)
    }

    fn take(&self, bytes: usize, ceiling: usize) -> bool {
        let fits = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&n| n <= ceiling)
            })
            .is_ok();
        if fits {
            self.totals
                .in_use
                .fetch_add(bytes as u64, Ordering::Relaxed);
        }
        fits
    }

    fn give(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        self.totals
            .in_use
            .fetch_sub(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a connection refused for want of budget.
    pub fn refused(&self) {
        self.totals.refusals.fetch_add(1, Ordering::Relaxed);
    }
}

/// Bytes held against a budget until dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Charge {
    /// Adds `bytes` to the charge if the budget has them.
    pub fn grow(&mut self, bytes: usize) -> bool {
        self.grow_to(bytes, self.budget.limit)
    }

    fn grow_to(&mut self, bytes: usize, ceiling: usize) -> bool {
        if bytes == 0 || self.budget.take(bytes, ceiling) {
            self.bytes += bytes;
            true
        } else {
            false
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.give(self.bytes);
        }
    }
}

/// A ring buffer of `capacity` bytes whose pages are charged the first time
/// a write reaches them: a connection that moves little costs little, one
/// that streams grows to the full ring as long as its budget allows. Its
/// first [`RING_STEP`] is paid with the connection's admission, so every
/// admitted connection can move data however spent the budget is.
///
/// The ring's memory must come untouched from the allocator (fresh
/// zero pages, see [`tune_allocator`]), so that bytes never written are not
/// resident: the charge then follows what the daemon really holds.
#[derive(Debug)]
pub struct RingCharge {
    charge: Charge,
    /// Bytes from the ring's start already charged (touched or allowed to
    /// be); writes past it need more budget.
    high: usize,
    capacity: usize,
}

/// Rings grow by this much at a time (fewer, larger charges).
pub const RING_STEP: usize = 32 * 1024;

impl RingCharge {
    /// A ring whose first [`RING_STEP`] bytes were paid for elsewhere.
    pub fn new(budget: &Arc<MemoryBudget>, capacity: usize) -> Self {
        Self {
            charge: Charge {
                budget: budget.clone(),
                bytes: 0,
            },
            high: RING_STEP.min(capacity),
            capacity,
        }
    }

    /// A write wants bytes `start..end` of the ring: the end it may go to
    /// (at least `start`), growing the charge as the budget allows.
    pub fn cover(&mut self, start: usize, end: usize) -> usize {
        if end <= self.high {
            return end;
        }
        let want = end
            .div_ceil(RING_STEP)
            .saturating_mul(RING_STEP)
            .min(self.capacity);
        let ceiling = self.charge.budget.growth_limit();
        if self.charge.grow_to(want - self.high, ceiling) {
            self.high = want;
            end
        } else {
            self.high.max(start)
        }
    }

    pub fn bytes(&self) -> usize {
        self.charge.bytes()
    }
}

/// Makes the allocator hand out large blocks (the gateway's ring buffers)
/// as fresh mappings, returned to the system when freed: glibc otherwise
/// raises its mapping threshold after the first large free and serves
/// later ones from its heaps, where `calloc` zeroes (touches) every page
/// and freed memory stays with the process. Fixing the threshold also
/// fixes the heaps' trim threshold, at 128 KiB by default: heaps would
/// then shrink and fault back in with every burst of packet buffers
/// (measured: gateway throughput fell by nearly half), so it is raised;
/// [`trim_allocator`] returns the memory when a sandbox ends. Called once,
/// at daemon start.
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes glibc's allocation thresholds; it is
    // called before the daemon starts its threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
    }
}

/// Gives freed heap memory back to the system (glibc keeps it otherwise):
/// called when a sandbox's gateway ends, after its connections' buffers
/// are freed.
pub fn trim_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of glibc's heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_fit_the_limit_and_are_given_back() {
        let totals = Arc::new(GatewayMemory::default());
        let budget = MemoryBudget::new(1000, totals.clone());
        let a = budget.charge(600).unwrap();
        assert!(budget.charge(500).is_none());
        let mut b = budget.charge(400).unwrap();
        assert!(!b.grow(1));
        assert_eq!(budget.used(), 1000);
        assert_eq!(totals.in_use.load(Ordering::Relaxed), 1000);
        drop(a);
        assert!(b.grow(600));
        drop(b);
        assert_eq!(budget.used(), 0);
        assert_eq!(totals.in_use.load(Ordering::Relaxed), 0);
        // Growth stops at three quarters; admissions may use the rest.
        assert!(budget.charge_growth(751).is_none());
        let grown = budget.charge_growth(750).unwrap();
        assert!(budget.charge_growth(1).is_none());
        let admitted = budget.charge(250).unwrap();
        drop((grown, admitted));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_ring_grows_in_steps_and_keeps_to_its_charge_when_spent() {
        // Growth may bring the charges to 3 of these 4 steps.
        let budget = MemoryBudget::new(4 * RING_STEP, Arc::default());
        let mut ring = RingCharge::new(&budget, 8 * RING_STEP);
        // The first step is prepaid.
        assert_eq!(ring.cover(0, 10), 10);
        assert_eq!(ring.bytes(), 0);
        assert_eq!(ring.cover(10, RING_STEP + 1), RING_STEP + 1);
        assert_eq!(ring.bytes(), RING_STEP);
        let other = budget.charge(2 * RING_STEP).unwrap();
        // Spent for growth: the write stops at what is charged, or does
        // not start.
        assert_eq!(ring.cover(RING_STEP, 4 * RING_STEP), 2 * RING_STEP);
        assert_eq!(ring.cover(3 * RING_STEP, 4 * RING_STEP), 3 * RING_STEP);
        // Back at the ring's start, within the charge: no new charge.
        assert_eq!(ring.cover(0, 100), 100);
        // The last quarter is kept for admissions.
        let admitted = budget.charge(RING_STEP).unwrap();
        drop((other, admitted));
        assert_eq!(ring.cover(2 * RING_STEP, 3 * RING_STEP), 3 * RING_STEP);
        assert_eq!(ring.bytes(), 2 * RING_STEP);
        drop(ring);
        assert_eq!(budget.used(), 0);
    }
}
