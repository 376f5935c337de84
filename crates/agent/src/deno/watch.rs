//! `--watch` restarts for the JS SDK's `restart` event. Deno restarts the
//! program inside the same process, so the only outside sign is the line
//! its watcher prints to stderr ("Watcher Restarting! File change detected:
//! ..."). The agent reads the process's stderr for it and reports each
//! restart as one byte on a stream of its own (`watcherStreamId`), which
//! the daemon turns into `$sandbox.deno.watcher.restart` notifications.

use crate::process::{Ctx, StderrTap};
use tokio::sync::mpsc;

/// What Deno's watcher prints when it restarts the program.
const RESTART_LINE: &[u8] = b"Restarting! File change detected";

/// Counts [`RESTART_LINE`]s in a byte stream cut at arbitrary places.
#[derive(Default)]
pub struct RestartScanner {
    /// The end of the previous chunk: a line may be split across chunks.
    tail: Vec<u8>,
}

impl RestartScanner {
    /// Restarts seen in `chunk` (including one that began in the last one).
    pub fn feed(&mut self, chunk: &[u8]) -> usize {
        let mut hay = std::mem::take(&mut self.tail);
        hay.extend_from_slice(chunk);
        let found = hay
            .windows(RESTART_LINE.len())
            .filter(|w| *w == RESTART_LINE)
            .count();
        // Shorter than the line, so a match is never counted twice.
        let keep = (RESTART_LINE.len() - 1).min(hay.len());
        self.tail = hay[hay.len() - keep..].to_vec();
        found
    }
}

/// A stderr tap that notes restarts, and what starts the stream reporting
/// them once the process exists.
pub fn restart_tap() -> (StderrTap, PendingStream) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut scanner = RestartScanner::default();
    let tap: StderrTap = Box::new(move |chunk| {
        for _ in 0..scanner.feed(chunk) {
            let _ = tx.send(());
        }
    });
    (tap, PendingStream(rx))
}

/// The restarts the tap sees, not yet on a stream.
pub struct PendingStream(mpsc::UnboundedReceiver<()>);

impl PendingStream {
    /// Opens the restart stream: a byte per restart, ended when the
    /// process's stderr closes. Returns its id.
    pub fn start(self, ctx: &Ctx) -> u32 {
        let PendingStream(mut rx) = self;
        let id = ctx.streams.new_outbound();
        let (out, streams) = (ctx.out.clone(), ctx.streams.clone());
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                if !streams.is_cancelled(id) && !out.data(id, b"r").await {
                    break;
                }
            }
            out.end(id).await;
            streams.done_outbound(id);
        });
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_restarts_split_anywhere() {
        let text =
            b"Watcher Process started.\nWatcher Restarting! File change detected: \"/a.ts\"\nok\n\
            Watcher Restarting! File change detected: \"/b.ts\"\n";
        for cut in 0..text.len() {
            let mut s = RestartScanner::default();
            let n = s.feed(&text[..cut]) + s.feed(&text[cut..]);
            assert_eq!(n, 2, "cut at {cut}");
        }
        let mut s = RestartScanner::default();
        let n: usize = text.chunks(1).map(|c| s.feed(c)).sum();
        assert_eq!(n, 2, "byte by byte");
        let mut s = RestartScanner::default();
        assert_eq!(
            s.feed(b"Watcher Process finished. Restarting on file change..."),
            0
        );
    }
}
