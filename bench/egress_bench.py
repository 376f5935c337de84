#!/usr/bin/env python3
"""Throughput and connection set-up through airlock's egress gateway, against
the same transfer on the host's loopback, measured in one run.

Starts a TCP upstream on 127.0.0.1 (a blast server: sends N bytes on request;
and a ping server: answers one byte) and its own `airlock serve --resolve
bench.test=127.0.0.1`. The same Python client then runs twice:

  direct    on the host, to 127.0.0.1
  gateway   inside a sandbox (allowNet: ["bench.test"]), to bench.test, so
            every packet crosses the TUN device and the userspace TCP/IP stack

and measures single-stream throughput (--mib MiB per run, median of --runs)
and connection set-up (connect + one byte each way + close, --connects times:
p50/p99). Prints both, the ratios, and PASS/MISS against the issue's
targets: throughput at least half of direct, added connect p50 under 1 ms.

usage: target/sdk/venv/bin/python bench/egress_bench.py [--airlock target/release/airlock]
           [--mib 256] [--runs 5] [--connects 500]
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sdk_bench import Daemon, pct, set_env  # noqa: E402

THROUGHPUT_RATIO_TARGET = 0.5
ADDED_CONNECT_P50_TARGET_MS = 1.0

# The client, run on the host and in the sandbox alike.
CLIENT = r'''
import json, socket, sys, time
host, blast_port, ping_port, nbytes, runs, connects = sys.argv[1:7]
blast_port, ping_port, nbytes, runs, connects = map(int, (blast_port, ping_port, nbytes, runs, connects))
addr = socket.gethostbyname(host)
buf = bytearray(1 << 20)
view = memoryview(buf)
rates = []
for _ in range(runs):
    s = socket.create_connection((addr, blast_port))
    t0 = time.perf_counter()
    s.sendall(b"%d\n" % nbytes)
    got = 0
    while got < nbytes:
        n = s.recv_into(view)
        if not n:
            raise SystemExit(f"short read: {got} of {nbytes}")
        got += n
    rates.append(nbytes / (time.perf_counter() - t0))
    s.close()
lat = []
for _ in range(connects):
    t0 = time.perf_counter()
    s = socket.create_connection((addr, ping_port))
    s.sendall(b"x")
    if s.recv(1) != b"x":
        raise SystemExit("no ping answer")
    s.close()
    lat.append((time.perf_counter() - t0) * 1000)
print(json.dumps({"rates": rates, "lat_ms": lat}))
'''


def serve(listener, handler):
    def loop():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handler, args=(conn,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()


BLOCK = memoryview(os.urandom(1 << 20))


def blast(conn):
    with conn:
        f = conn.makefile("rb")
        n = int(f.readline())
        while n > 0:
            k = min(n, len(BLOCK))
            conn.sendall(BLOCK[:k])
            n -= k


def ping(conn):
    with conn:
        conn.sendall(conn.recv(1))



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--airlock", default="target/release/airlock")
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--connects", type=int, default=500)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/egress_bench.py needs root (airlock serve creates namespaces)")

    listeners = []
    for handler in (blast, ping):
        l = socket.socket()
        l.bind(("127.0.0.1", 0))
        l.listen(512)
        serve(l, handler)
        listeners.append(l)
    blast_port, ping_port = (l.getsockname()[1] for l in listeners)
    argv = [str(blast_port), str(ping_port), str(args.mib << 20), str(args.runs), str(args.connects)]

    print(f"egress_bench: {args.mib} MiB x {args.runs} runs, {args.connects} connects", file=sys.stderr)
    direct = json.loads(subprocess.run(
        [sys.executable, "-c", CLIENT, "127.0.0.1", *argv], check=True, capture_output=True, text=True,
    ).stdout)

    daemon = Daemon(args.airlock, 1, extra=["--resolve", "bench.test=127.0.0.1"])
    try:
        set_env(daemon.endpoint, daemon.token)
        from deno_sandbox import DenoDeploy

        with DenoDeploy().sandbox.create(allow_net=["bench.test"]) as sb:
            sb.fs.write_text_file("/tmp/client.py", CLIENT)
            p = sb.spawn("python3", args=["/tmp/client.py", "bench.test", *argv], stdout="piped", stderr="piped")
            out, err = p.stdout.read(), p.stderr.read()
            status = p.wait()
            if status["code"] != 0:
                sys.exit(f"client in the sandbox failed: {err.decode()}")
            gateway = json.loads(out)
    finally:
        daemon.stop()

    d_rate = statistics.median(direct["rates"]) / 2**20
    g_rate = statistics.median(gateway["rates"]) / 2**20
    d50, d99 = pct(direct["lat_ms"], 50), pct(direct["lat_ms"], 99)
    g50, g99 = pct(gateway["lat_ms"], 50), pct(gateway["lat_ms"], 99)
    ratio = g_rate / d_rate
    added = g50 - d50
    print(f"{'':28} {'direct':>12} {'gateway':>12} {'ratio':>8}")
    print(f"{'throughput MiB/s (median)':28} {d_rate:12.0f} {g_rate:12.0f} {ratio:8.2f}  "
          f"{'PASS' if ratio >= THROUGHPUT_RATIO_TARGET else 'MISS'} (target >= {THROUGHPUT_RATIO_TARGET})")
    print(f"{'connect+ping ms p50':28} {d50:12.3f} {g50:12.3f} {g50 / d50:8.2f}  "
          f"added {added:.3f} ms {'PASS' if added < ADDED_CONNECT_P50_TARGET_MS else 'MISS'} "
          f"(target < {ADDED_CONNECT_P50_TARGET_MS} ms)")
    print(f"{'connect+ping ms p99':28} {d99:12.3f} {g99:12.3f} {g99 / d99:8.2f}")


if __name__ == "__main__":
    main()
