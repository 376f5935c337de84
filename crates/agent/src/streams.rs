//! Byte streams in both directions.
//!
//! Inbound (host → agent, ids chosen by the host): data may arrive before
//! the call that consumes it (e.g. stdin before `spawn`), so it is buffered
//! per id until a consumer claims it. Outbound (agent → host, ids chosen
//! here): a counter, and the ids handed out and not yet done, each with
//! whether the host has cancelled it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Semaphore};

/// Unclaimed inbound streams kept at most; more is a misbehaving host.
const MAX_UNCLAIMED: usize = 4096;

struct Inbound {
    tx: Option<mpsc::UnboundedSender<Vec<u8>>>,
    rx: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
}

impl Inbound {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx: Some(tx),
            rx: Some(rx),
        }
    }
}

#[derive(Default)]
pub struct Streams {
    inbound: Mutex<HashMap<u32, Inbound>>,
    next_out: AtomicU32,
    /// Outbound streams in use: id → cancelled by the host. A Cancel for an
    /// id not in here (never handed out, or already done) is ignored, so it
    /// cannot silence a stream that gets that id later.
    outbound: Mutex<HashMap<u32, bool>>,
    /// Windowed outbound streams (tunnels): id → bytes the host still
    /// accepts. Permits are taken before sending and returned by `Credit`.
    windows: Mutex<HashMap<u32, Arc<Semaphore>>>,
}

impl Streams {
    pub fn new() -> Self {
        Self {
            next_out: AtomicU32::new(1),
            ..Default::default()
        }
    }

    /// Data for inbound stream `id`. Returns false if the stream table is
    /// full and the data was dropped.
    pub fn push(&self, id: u32, data: Vec<u8>) -> bool {
        let mut map = self.inbound.lock().expect("streams lock");
        if !map.contains_key(&id) && map.len() >= MAX_UNCLAIMED {
            return false;
        }
        let entry = map.entry(id).or_insert_with(Inbound::new);
        if let Some(tx) = &entry.tx {
            let _ = tx.send(data);
        }
        true
    }

    /// The host finished inbound stream `id`.
    pub fn finish(&self, id: u32) {
        let mut map = self.inbound.lock().expect("streams lock");
        let entry = map.entry(id).or_insert_with(Inbound::new);
        entry.tx = None;
        if entry.rx.is_none() {
            map.remove(&id);
        }
    }

    /// Takes the receiving end of inbound stream `id` (once).
    pub fn claim(&self, id: u32) -> Option<mpsc::UnboundedReceiver<Vec<u8>>> {
        let mut map = self.inbound.lock().expect("streams lock");
        let entry = map.entry(id).or_insert_with(Inbound::new);
        let rx = entry.rx.take();
        if entry.tx.is_none() {
            map.remove(&id);
        }
        rx
    }

    /// Drops a claimed stream's sender side once its consumer is done.
    pub fn forget(&self, id: u32) {
        self.inbound.lock().expect("streams lock").remove(&id);
    }

    pub fn new_outbound(&self) -> u32 {
        let id = self.next_out.fetch_add(1, Ordering::Relaxed);
        self.outbound
            .lock()
            .expect("streams lock")
            .insert(id, false);
        id
    }

    pub fn cancel_outbound(&self, id: u32) {
        if let Some(cancelled) = self.outbound.lock().expect("streams lock").get_mut(&id) {
            *cancelled = true;
        }
        // A sender waiting for window wakes up and sees the cancel.
        if let Some(sem) = self.windows.lock().expect("streams lock").get(&id) {
            sem.close();
        }
    }

    pub fn is_cancelled(&self, id: u32) -> bool {
        self.outbound
            .lock()
            .expect("streams lock")
            .get(&id)
            .copied()
            .unwrap_or(false)
    }

    pub fn done_outbound(&self, id: u32) {
        self.outbound.lock().expect("streams lock").remove(&id);
        self.windows.lock().expect("streams lock").remove(&id);
    }

    /// A new outbound stream whose sender waits for the host's credit.
    pub fn new_windowed(&self, window: usize) -> (u32, Arc<Semaphore>) {
        let id = self.new_outbound();
        let sem = Arc::new(Semaphore::new(window));
        self.windows
            .lock()
            .expect("streams lock")
            .insert(id, sem.clone());
        (id, sem)
    }

    /// The host consumed `bytes` of windowed stream `id`. Credit for other
    /// streams is ignored; a host granting more than it was sent only hurts
    /// its own memory.
    pub fn credit(&self, id: u32, bytes: u32) {
        if let Some(sem) = self.windows.lock().expect("streams lock").get(&id) {
            sem.add_permits(bytes as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn data_before_claim_is_kept() {
        let s = Streams::new();
        assert!(s.push(5, b"ab".to_vec()));
        s.finish(5);
        let mut rx = s.claim(5).unwrap();
        assert_eq!(rx.recv().await.unwrap(), b"ab");
        assert!(rx.recv().await.is_none());
        assert!(
            s.claim(5).is_some(),
            "a finished, claimed stream is forgotten"
        );
    }

    #[test]
    fn outbound_ids_are_unique() {
        let s = Streams::new();
        // A Cancel for an id not yet handed out is ignored.
        s.cancel_outbound(1);
        let a = s.new_outbound();
        assert!(!s.is_cancelled(a));
        let b = s.new_outbound();
        assert_ne!(a, b);
        s.cancel_outbound(a);
        assert!(s.is_cancelled(a));
        assert!(!s.is_cancelled(b));
    }
}
