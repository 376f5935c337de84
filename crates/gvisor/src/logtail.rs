//! What runsc writes to its stderr, kept in a bounded buffer: runsc's own
//! messages explain a failed start, but the Sentry may log on behalf of
//! sandbox code for as long as the sandbox runs, which must not grow a host
//! file without bound.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};

/// The last this many bytes are kept.
const KEEP: usize = 16 * 1024;

#[derive(Clone, Default)]
pub struct LogTail {
    buf: Arc<Mutex<VecDeque<u8>>>,
}

impl LogTail {
    /// Reads `from` on a thread of its own until EOF (the writer's exit).
    pub fn follow(from: impl Read + Send + 'static) -> Self {
        let tail = Self::default();
        let buf = tail.buf.clone();
        let _ = std::thread::Builder::new()
            .name("runsc-log".into())
            .spawn(move || {
                let mut from = from;
                let mut chunk = [0u8; 4096];
                while let Ok(n) = from.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    let mut b = buf.lock().unwrap_or_else(|e| e.into_inner());
                    b.extend(&chunk[..n]);
                    let excess = b.len().saturating_sub(KEEP);
                    b.drain(..excess);
                }
            });
        tail
    }

    /// What was kept, as text.
    pub fn text(&self) -> String {
        let b = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        let (a, c) = b.as_slices();
        let mut bytes = a.to_vec();
        bytes.extend_from_slice(c);
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}
