#!/usr/bin/env python3
"""`/metrics` scrape time and daemon memory with many idle sandboxes.

Starts its own `airlock serve` (release build, no warm pool, a host memory
overcommit high enough that admission does not stop it first), then grows
the number of idle sandboxes (created with a timeout, so they outlive the
creating connection) through the steps given, and at each step measures:

  scrape   GET /metrics, median and p99 of --scrapes requests (ms)
  RSS      the daemon's resident memory (VmRSS), MiB
  host     MemAvailable drop since the start, MiB (all sandboxes, kernel included)

usage: target/sdk/venv/bin/python bench/scale_bench.py [--airlock target/release/airlock]
           [--steps 10,100,1000] [--scrapes 50]
"""
import argparse
import os
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sdk_bench import Daemon, pct, set_env  # noqa: E402


def mem_available_mib():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--airlock", default="target/release/airlock")
    ap.add_argument("--steps", default="10,100,1000")
    ap.add_argument("--scrapes", type=int, default=50)
    args = ap.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    if os.geteuid() != 0:
        sys.exit("bench/scale_bench.py needs root")
    base = mem_available_mib()
    daemon = Daemon(args.airlock, 0, extra=["--memory-overcommit", "1000", "--max-sandboxes", str(max(steps) + 10),
                                         "--max-sandboxes-per-token", str(max(steps) + 10),
                                         "--max-memory-per-token", "100T"])
    try:
        set_env(daemon.endpoint, daemon.token)
        from deno_sandbox import DenoDeploy

        client = DenoDeploy()
        req = urllib.request.Request(
            f"{daemon.endpoint}/metrics", headers={"Authorization": f"Bearer {daemon.token}"}
        )
        print(f"{'sandboxes':>10} {'scrape p50 ms':>14} {'scrape p99 ms':>14} {'daemon RSS MiB':>15} {'host MiB used':>14}")
        alive = 0
        for target in steps:
            t0 = time.monotonic()
            while alive < target:
                try:
                    with client.sandbox.create(timeout="30m", memory_mb=768):
                        pass
                except Exception as e:  # the host is full: report what it held
                    print(f"stopped at {alive} sandboxes: {e}", file=sys.stderr)
                    target = alive
                    break
                alive += 1
            print(f"  ({alive} sandboxes alive; made in {time.monotonic() - t0:.1f} s)", file=sys.stderr)
            time.sleep(2)
            times = []
            for _ in range(args.scrapes):
                t = time.perf_counter()
                with urllib.request.urlopen(req) as r:
                    r.read()
                times.append((time.perf_counter() - t) * 1000)
            print(f"{alive:>10} {statistics.median(times):>14.2f} {pct(times, 99):>14.2f} "
                  f"{rss_mib(daemon.proc.pid):>15.1f} {base - mem_available_mib():>14.0f}")
            if target < max(steps) and alive < target:
                break
    finally:
        daemon.stop()


if __name__ == "__main__":
    main()
