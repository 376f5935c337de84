//! Where gateways run: a few threads, each with its own single-threaded
//! tokio runtime. A sandbox's whole gateway (its stack task and the tasks
//! of its connections) lives on one of them, so handing data between the
//! stack and a connection never crosses threads (a futex wake and a cache
//! miss per chunk on a shared runtime); sandboxes are spread over the
//! threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::{Builder, Handle};

pub struct Shards {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

impl Shards {
    /// Starts `threads` runtime threads (at least one). They run for the
    /// life of the process.
    pub fn start(threads: usize) -> std::io::Result<Self> {
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let rt = Builder::new_current_thread().enable_all().build()?;
            handles.push(rt.handle().clone());
            std::thread::Builder::new()
                .name(format!("airlock-egress-{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        }
        Ok(Self {
            handles,
            next: AtomicUsize::new(0),
        })
    }

    /// The runtime the next gateway goes on (round robin).
    pub fn pick(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }
}
