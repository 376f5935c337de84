#!/usr/bin/env python3
"""Latency of airlock through the official Python SDK (deno-sandbox, sync API).

Starts its own `airlock serve` (temporary store, fresh token, --listen
127.0.0.1:0, --pool N), points the SDK's environment at it, and measures over
--runs samples:

  create                 `client.sandbox.create()` until the context is entered
  create -> first exec   create + spawn("sh", ["-c", "echo hi"]) + stdout read + wait()
  round trip             on one sandbox: spawn("true") + wait()
  create -> exec -> close  back to back, as agents use it (close included)
  close                  the SDK's close() (context exit) of the samples above

with --pause-ms between creates so the warm pool refills. Prints p50/p99/mean
in ms and PASS/MISS against the issue's targets (create p50 < 10 ms from the
warm pool, round trip p50 < 3 ms). Stops the daemon at the end.

usage: target/sdk/venv/bin/python bench/sdk_bench.py [--runs 200]
           [--airlock target/release/airlock] [--pool 2] [--pause-ms 50]
"""
import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CREATE_TARGET_MS = 10.0
ROUND_TRIP_TARGET_MS = 3.0
LISTEN_RE = re.compile(r"listening on (http://\S+)")


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def request_bench_args(name):
    """The flags of the request/download benchmarks (secrets, http), parsed;
    exits unless root, which `airlock serve` needs."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--airlock", default="target/release/airlock")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit(f"bench/{name} needs root (airlock serve creates namespaces)")
    return args


def ms_since(start):
    return (time.perf_counter() - start) * 1000.0


class Daemon:
    """`airlock serve` on a fresh store; SIGTERM (then SIGKILL) on stop."""

    def __init__(self, airlock, pool, extra=()):
        self.tmp = tempfile.TemporaryDirectory(prefix="airlock-sdk-bench-")
        store = Path(self.tmp.name) / "store.db"
        made = subprocess.run(
            [airlock, "token", "create", "--store", str(store), "bench"],
            check=True, capture_output=True, text=True,
        )
        self.token = made.stdout.strip().splitlines()[-1]
        self.log_path = Path(self.tmp.name) / "daemon.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [airlock, "serve", "--store", str(store), "--listen", "127.0.0.1:0",
             "--expose-listen", "127.0.0.1:0", "--ssh-listen", "127.0.0.1:0",
             "--pool", str(pool), *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        deadline = time.monotonic() + 300
        self.endpoint = None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                self.stop()
                sys.exit(f"airlock serve exited early; log:\n{self.log_path.read_text()}")
            m = LISTEN_RE.search(line)
            if m:
                self.endpoint = m.group(1)
                break
        if self.endpoint is None:
            self.stop()
            sys.exit("airlock serve did not print its listening line in 300 s")
        # Nothing else is read from stdout; send the rest nowhere so it never blocks.
        self.proc.stdout.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.tmp.cleanup()


def set_env(endpoint, token):
    os.environ["DENO_DEPLOY_TOKEN"] = token
    os.environ["DENO_SANDBOX_ENDPOINT"] = endpoint
    os.environ["DENO_DEPLOY_ENDPOINT"] = endpoint
    extra = "127.0.0.1,localhost"
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = extra


CLOSE_MS = []  # how long each sandbox's context exit (the SDK's close()) took


def shorten_close(sb, close_timeout):
    """websockets' close() waits up to close_timeout (10 s) for the server's
    close frame; --close-timeout caps that wait (not timed either way)."""
    if close_timeout is not None:
        sb._rpc._transport._ws.close_timeout = close_timeout


def timed_exit(cm):
    start = time.perf_counter()
    cm.__exit__(None, None, None)
    CLOSE_MS.append(ms_since(start))


def first_exec(client, close_timeout):
    start = time.perf_counter()
    cm = client.sandbox.create()
    sb = cm.__enter__()
    try:
        p = sb.spawn("sh", args=["-c", "echo hi"], stdout="piped", stderr="piped")
        out = p.stdout.read()
        status = p.wait()
        d = ms_since(start)
        assert out == b"hi\n" and status["code"] == 0, (out, status)
    except BaseException:
        cm.__exit__(*sys.exc_info())
        raise
    shorten_close(sb, close_timeout)
    timed_exit(cm)
    return d


def create_exec_close(client, close_timeout):
    """How agents use a sandbox: create, one command, close, back to back."""
    start = time.perf_counter()
    with client.sandbox.create() as sb:
        shorten_close(sb, close_timeout)
        status = sb.spawn("true", stdout="null", stderr="null").wait()
        assert status["code"] == 0, status
    return ms_since(start)


def create_only(client, close_timeout):
    start = time.perf_counter()
    cm = client.sandbox.create()
    sb = cm.__enter__()
    d = ms_since(start)
    shorten_close(sb, close_timeout)
    timed_exit(cm)
    return d


def round_trips(client, n):
    out = []
    with client.sandbox.create() as sb:
        for i in range(n + 5):
            start = time.perf_counter()
            status = sb.spawn("true").wait()
            d = ms_since(start)
            assert status["code"] == 0, status
            if i >= 5:  # warm-up
                out.append(d)
    return out


def sampled(n, pause_s, fn):
    out = []
    for _ in range(n):
        if pause_s:
            time.sleep(pause_s)
        out.append(fn())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--airlock", default="target/release/airlock")
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--pause-ms", type=int, default=50)
    ap.add_argument("--close-timeout", type=float, default=None,
                    help="cap (s) on the SDK's wait for the server's close frame when a "
                         "sandbox is closed (default: the SDK's own, 10 s)")
    args = ap.parse_args()
    if args.runs < 1:
        sys.exit("--runs must be at least 1")
    if os.geteuid() != 0:
        sys.exit("bench/sdk_bench.py needs root (airlock serve creates namespaces and cgroups)")

    daemon = Daemon(args.airlock, args.pool)
    try:
        set_env(daemon.endpoint, daemon.token)
        from deno_sandbox import DenoDeploy

        client = DenoDeploy()
        print(f"sdk_bench: {daemon.endpoint}, {args.runs} runs each", file=sys.stderr)
        ct = args.close_timeout
        first_exec(client, ct)  # warm-up: imports, connections, page cache
        time.sleep(0.5)
        pause = args.pause_ms / 1000.0
        n = args.runs
        rows = []
        print("  create...", file=sys.stderr)
        rows.append((f"create ({args.pause_ms} ms pause)", sampled(n, pause, lambda: create_only(client, ct)),
                     CREATE_TARGET_MS))
        print("  create -> first exec...", file=sys.stderr)
        rows.append((f"create -> first exec ({args.pause_ms} ms pause)",
                     sampled(n, pause, lambda: first_exec(client, ct)), None))
        rows.append(("create -> first exec (no pause)", sampled(n, 0, lambda: first_exec(client, ct)), None))
        rows.append(("create -> exec -> close (no pause)",
                     sampled(n, 0, lambda: create_exec_close(client, ct)), None))
        time.sleep(1)
        print("  round trip...", file=sys.stderr)
        rows.append(('round trip: spawn("true").wait()', round_trips(client, n), ROUND_TRIP_TARGET_MS))
    finally:
        daemon.stop()

    print()
    print(f"sdk_bench (deno-sandbox, sync API): {args.runs} runs each; pool {args.pool}")
    print(f"{'':40} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'max ms':>8}  target")
    for name, s, target in rows:
        line = (f"{name:40} {pct(s, 50):8.2f} {pct(s, 99):8.2f} {statistics.mean(s):8.2f}"
                f" {max(s):8.2f}")
        if target is not None:
            line += f"  p50 < {target:g} ms: {'PASS' if pct(s, 50) < target else 'MISS'}"
        print(line)
    c = CLOSE_MS
    cap = "default" if args.close_timeout is None else f"{args.close_timeout:g} s"
    print(f"{'close (close_timeout ' + cap + ')':40} {pct(c, 50):8.2f} {pct(c, 99):8.2f}"
          f" {statistics.mean(c):8.2f} {max(c):8.2f}  (not in the rows above)")


if __name__ == "__main__":
    main()
