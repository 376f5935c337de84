#!/usr/bin/env python3
"""Latency of the Deno runtime methods through the official Python SDK
(deno-sandbox, sync API), with a same-run reference.

Starts its own `airlock serve` (see sdk_bench.py), creates one sandbox, and
measures over --runs samples each:

  deno.eval("1+1")        spawnDenoRepl -> denoReplEval -> denoReplClose: a
                          fresh Deno process per call (what sdk.deno.eval does)
  repl.eval("1+1")        one round trip on an open REPL
  repl.call("add", 1, 2)  one denoReplCall round trip on the same REPL
  ref: deno eval 1+1      spawn("deno", ["eval", "console.log(1+1)"]) + read +
                          wait: Deno's own start-up cost, same sandbox
  ref: pythonRun 1+1      airlock's stateful Python round trip, same sandbox

Prints p50/p99/mean in ms. Stops the daemon at the end.

usage: target/sdk/venv/bin/python bench/deno_bench.py [--runs 100]
           [--airlock target/release/airlock]
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "clients/python"))
from sdk_bench import Daemon, pct, set_env  # noqa: E402

WARMUP = 5


def timed(n, fn):
    out = []
    for i in range(n + WARMUP):
        start = time.perf_counter()
        fn()
        if i >= WARMUP:
            out.append((time.perf_counter() - start) * 1000.0)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--airlock", default="target/release/airlock")
    args = ap.parse_args()
    if args.runs < 1:
        sys.exit("--runs must be at least 1")
    if os.geteuid() != 0:
        sys.exit("bench/deno_bench.py needs root (airlock serve creates namespaces and cgroups)")

    daemon = Daemon(args.airlock, 1)
    try:
        set_env(daemon.endpoint, daemon.token)
        from deno_sandbox import DenoDeploy
        from airlock_ext import python_run

        client = DenoDeploy()
        n = args.runs
        print(f"deno_bench: {daemon.endpoint} ({args.airlock}), {n} runs each", file=sys.stderr)
        rows = []
        with client.sandbox.create() as sb:
            def deno_eval():
                assert sb.deno.eval("1+1") == 2

            rows.append(("deno.eval('1+1') (new REPL each)", timed(n, deno_eval)))

            repl = sb.deno.repl(stdout="null", stderr="null")
            repl.eval("function add(a, b) { return a + b }")

            def repl_eval():
                assert repl.eval("1+1") == 2

            def repl_call():
                assert repl.call("add", [1, 2]) == 3

            rows.append(("repl.eval('1+1') (open REPL)", timed(n, repl_eval)))
            rows.append(("repl.call('add', [1, 2]) (open REPL)", timed(n, repl_call)))
            repl.close()

            def deno_cli():
                p = sb.spawn("deno", args=["eval", "console.log(1+1)"], stdout="piped")
                assert p.stdout.read() == b"2\n"
                assert p.wait()["code"] == 0

            rows.append(("ref: spawn deno eval 1+1", timed(n, deno_cli)))

            def python():
                assert python_run(sb, "1+1").value == "2"

            rows.append(("ref: pythonRun 1+1 (open session)", timed(n, python)))

        print(f"\n{'':40} {'p50':>8} {'p99':>8} {'mean':>8}   (ms, n={n})")
        for name, s in rows:
            print(f"{name:40} {pct(s, 50):8.2f} {pct(s, 99):8.2f} {statistics.mean(s):8.2f}")
    finally:
        daemon.stop()


if __name__ == "__main__":
    main()
