//! Latency and throughput through the ingress against the same traffic
//! straight to the backend, measured in one run:
//!
//! ```text
//! cargo test --release -p expose --test bench -- --ignored --nocapture
//! ```
//!
//! - keep-alive request: one GET round trip on an open connection
//!   (direct: plain TCP; ingress: TLS to the ingress, spliced to the same
//!   backend);
//! - new connection: connect (+ TLS handshake through the ingress), one
//!   GET, close;
//! - bulk: one stream of `BULK_MIB` MiB from the backend to the client.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEEP_ALIVE_REQUESTS: usize = 2000;
const NEW_CONNECTIONS: usize = 300;
const BULK_MIB: usize = 256;

fn pct(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p / 100.0).round() as usize;
    samples[index].as_secs_f64() * 1e3
}

fn report(name: &str, direct: &mut [Duration], ingress: &mut [Duration]) {
    let (d50, d99) = (pct(direct, 50.0), pct(direct, 99.0));
    let (i50, i99) = (pct(ingress, 50.0), pct(ingress, 99.0));
    println!(
        "{name:24} direct p50 {d50:7.3} ms p99 {d99:7.3} ms | ingress p50 {i50:7.3} ms p99 {i99:7.3} ms | added p50 {:7.3} ms",
        i50 - d50
    );
}

/// One GET round trip on an open keep-alive connection.
async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, host: &str) {
    let request = format!("GET /b HTTP/1.1\r\nHost: {host}\r\n\r\n");
    io.write_all(request.as_bytes()).await.unwrap();
    let want = b"hello from the sandbox: /b";
    let mut got = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !got.ends_with(want) {
        let n = io.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
}

/// A backend that sends `BULK_MIB` MiB on each connection, then closes.
async fn bulk_backend() -> u16 {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let block = vec![0x5au8; 1 << 20];
                for _ in 0..BULK_MIB {
                    if tcp.write_all(&block).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

async fn drain<S: AsyncRead + Unpin>(io: &mut S) -> usize {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0;
    loop {
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
async fn ingress_vs_direct() {
    let h = start().await;
    let ca = h.ca_pem();
    let port = http_backend().await;
    let domain = h.expose("sbx-bench", port);

    // Keep-alive round trips, alternating direct and ingress in blocks so
    // drift on the machine hits both alike.
    let mut direct = TcpStream::connect((LOOPBACK, port)).await.unwrap();
    direct.set_nodelay(true).unwrap();
    let mut tls = h.connect(&ca, &domain).await.unwrap();
    for _ in 0..100 {
        round_trip(&mut direct, &domain).await;
        round_trip(&mut tls, &domain).await;
    }
    let (mut d, mut i) = (Vec::new(), Vec::new());
    for _ in 0..KEEP_ALIVE_REQUESTS / 100 {
        for _ in 0..100 {
            let start = Instant::now();
            round_trip(&mut direct, &domain).await;
            d.push(start.elapsed());
        }
        for _ in 0..100 {
            let start = Instant::now();
            round_trip(&mut tls, &domain).await;
            i.push(start.elapsed());
        }
    }
    report("keep-alive request", &mut d, &mut i);

    // New connection per request (TLS handshake included via the ingress).
    let (mut d, mut i) = (Vec::new(), Vec::new());
    for _ in 0..NEW_CONNECTIONS {
        let start = Instant::now();
        let mut tcp = TcpStream::connect((LOOPBACK, port)).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        round_trip(&mut tcp, &domain).await;
        drop(tcp);
        d.push(start.elapsed());

        let start = Instant::now();
        let mut tls = h.connect(&ca, &domain).await.unwrap();
        round_trip(&mut tls, &domain).await;
        drop(tls);
        i.push(start.elapsed());
    }
    report("new connection + request", &mut d, &mut i);

    // Bulk throughput, best of 3 each.
    let bulk = bulk_backend().await;
    let bulk_domain = h.expose("sbx-bench", bulk);
    let mut best = (0.0f64, 0.0f64);
    for _ in 0..3 {
        let start = Instant::now();
        let mut tcp = TcpStream::connect((LOOPBACK, bulk)).await.unwrap();
        assert_eq!(drain(&mut tcp).await, BULK_MIB << 20);
        best.0 = best.0.max(BULK_MIB as f64 / start.elapsed().as_secs_f64());

        let start = Instant::now();
        let mut tls = h.connect(&ca, &bulk_domain).await.unwrap();
        assert_eq!(drain(&mut tls).await, BULK_MIB << 20);
        best.1 = best.1.max(BULK_MIB as f64 / start.elapsed().as_secs_f64());
    }
    println!(
        "{:24} direct {:7.0} MiB/s | ingress {:7.0} MiB/s | ratio {:.2}",
        format!("bulk {BULK_MIB} MiB"),
        best.0,
        best.1,
        best.1 / best.0
    );
}
