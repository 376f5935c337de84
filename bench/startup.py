#!/usr/bin/env python3
"""Start-up benchmark: create a sandbox, run its first command, destroy it.

Times the whole `airlock run -- true` process (create -> first exec ->
destroy) against `bwrap --unshare-all` running `true` in the same image,
interleaved in the same run so both see the same machine state. Prints
p50/p99 for each and the ratio of medians.

usage: bench/startup.py [--runs 200] [--airlock target/release/airlock]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

ROOTFS = "/var/lib/airlock/images/default/rootfs"


def timed(cmd):
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000.0


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--airlock", default="target/release/airlock")
    ap.add_argument("--rootfs", default=ROOTFS)
    args = ap.parse_args()
    airlock = [args.airlock, "run", "--", "true"]
    bwrap = ["bwrap", "--unshare-all", "--ro-bind", args.rootfs, "/", "--proc", "/proc",
             "--dev", "/dev", "true"]
    for cmd in (airlock, bwrap):  # warm caches and the image check
        timed(cmd)
    a, b = [], []
    for _ in range(args.runs):
        a.append(timed(airlock))
        b.append(timed(bwrap))
    print(f"start-up: create -> first exec -> destroy, {args.runs} runs each, interleaved")
    print(f"{'':24} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, s in (("airlock run -- true", a), ("bwrap --unshare-all true", b)):
        print(f"{name:24} {pct(s, 50):8.2f} {pct(s, 99):8.2f} {statistics.mean(s):8.2f}")
    print(f"ratio airlock/bwrap p50: {pct(a, 50) / pct(b, 50):.2f}x")


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench/startup.py needs root (airlock creates namespaces and cgroups)")
    main()
