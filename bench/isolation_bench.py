#!/usr/bin/env python3
"""The two isolation backends side by side: `airlock serve --isolation
native` against `--isolation gvisor` (gVisor's runsc), measured in one run
through the official Python SDK (deno-sandbox, sync API).

Each backend gets its own `airlock serve` (temporary store, own port,
`--resolve bench.test=127.0.0.1`), started once with the warm pool
(--pool N) and once with --pool 0 for the cold rows; one daemon runs at a
time, native first. Rows, each as native, gvisor and gvisor/native:

  create, warm pool       `sandbox.create()` until the context is entered, after
                          waiting (untimed) until /metrics shows the pool full
  create, cold            the same, back to back, --pool 0
  create -> first exec    create + spawn("true") + wait(), warm (paced) and cold
  spawn round trip        spawn("true") + wait() in one existing sandbox
  process start in-box    python3 in the sandbox: subprocess.run(["true"]), timed
                          in-process (the round trip without the agent and the SDK)
  syscall loop            python3 in the sandbox: 100k os.stat("/"), timed in-process
  CPU loop                python3 in the sandbox: sum(range(10M)), timed in-process
  untar                   `tar -xf` of --files small files into a fresh dir in the
                          sandbox's /tmp, timed by a python3 wrapper in the sandbox
                          (the tarball is made first, untimed)
  gateway download        --mib MiB from a TCP server on the host's 127.0.0.1 through
                          the egress gateway (allowNet: ["bench.test"]), MiB/s median

and gVisor's floor, from the host: `runsc --network=none do true`, p50 of
--floor-runs. Prints the table and PASS/MISS against the issue's targets:
gvisor create from the warm pool under 10 ms p50, and cold gvisor create ->
first exec within 1.5x of `runsc do true`. A row that fails on one backend
prints "n/a (error: ...)" and the run goes on.

usage: target/sdk/venv/bin/python bench/isolation_bench.py [--runs 20]
           [--airlock target/release/airlock] [--pool 2] [--reps 5] [--mib 64]
"""
import argparse
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from egress_bench import blast, serve  # noqa: E402
from sdk_bench import Daemon, ms_since, pct, set_env  # noqa: E402

WARM_CREATE_TARGET_MS = 10.0
FLOOR_RATIO_TARGET = 1.5
BACKENDS = ("native", "gvisor")
# A hung call on one backend must not hang the whole run.
ROW_TIMEOUT_S = 180

# In the sandbox: start `true` and wait for it, N times; ms each. The
# reference for the spawn round trip: the same process start without the agent.
PROCESS_JOB = r'''
import json, subprocess, sys, time
out = []
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter()
    subprocess.run(["true"], check=True)
    out.append((time.perf_counter() - t0) * 1000)
print(json.dumps(out))
'''

# In the sandbox: N os.stat("/") calls, REPS times; ms per repetition.
SYSCALL_JOB = r'''
import json, os, sys, time
n, reps = int(sys.argv[1]), int(sys.argv[2])
out = []
for _ in range(reps):
    t0 = time.perf_counter()
    for _ in range(n):
        os.stat("/")
    out.append((time.perf_counter() - t0) * 1000)
print(json.dumps(out))
'''

# In the sandbox: a pure-Python loop, REPS times; ms per repetition.
CPU_JOB = r'''
import json, sys, time
n, reps = int(sys.argv[1]), int(sys.argv[2])
out = []
for _ in range(reps):
    t0 = time.perf_counter()
    sum(range(n))
    out.append((time.perf_counter() - t0) * 1000)
print(json.dumps(out))
'''

# In the sandbox, untimed: FILES small files in 100 directories, then a tarball of them.
TAR_SETUP = r'''
import os, subprocess, sys
files = int(sys.argv[1])
src = "/tmp/isobench/src"
for i in range(files):
    d = f"{src}/d{i % 100}"
    if i < 100:
        os.makedirs(d)
    with open(f"{d}/f{i}", "wb") as f:
        f.write(os.urandom(256))
subprocess.run(["tar", "-cf", "/tmp/isobench/files.tar", "-C", src, "."], check=True)
'''

# In the sandbox: `tar -xf` into a fresh directory, REPS times; ms per repetition.
TAR_JOB = r'''
import json, os, subprocess, sys, time
reps = int(sys.argv[1])
out = []
for i in range(reps):
    dest = f"/tmp/isobench/x{i}"
    os.mkdir(dest)
    t0 = time.perf_counter()
    subprocess.run(["tar", "-xf", "/tmp/isobench/files.tar", "-C", dest], check=True)
    out.append((time.perf_counter() - t0) * 1000)
print(json.dumps(out))
'''

# In the sandbox: download NBYTES from the blast server, RUNS times; bytes/s each.
DOWNLOAD_JOB = r'''
import json, socket, sys, time
host, port, nbytes, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
addr = socket.gethostbyname(host)
view = memoryview(bytearray(1 << 20))
rates = []
for _ in range(runs):
    s = socket.create_connection((addr, port))
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
print(json.dumps(rates))
'''


class RowTimeout(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds):
    """SIGALRM after `seconds`: the SDK's sync calls wait on locks, which a
    signal interrupts, so a hung row raises instead of hanging the run."""
    def fire(_sig, _frame):
        raise RowTimeout(f"no answer in {seconds} s")
    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def short_error(e):
    text = f"{type(e).__name__}: {e}".replace("\n", " ")
    return text if len(text) <= 160 else text[:157] + "..."


class Backend:
    """One `airlock serve --isolation NAME --pool N` and an SDK client for it."""

    def __init__(self, airlock, isolation, pool, resolve):
        self.isolation = isolation
        self.pool = pool
        try:
            self.daemon = Daemon(airlock, pool, extra=["--isolation", isolation, "--resolve", resolve])
        except SystemExit as e:  # Daemon exits with the log when serve does not come up
            raise RuntimeError(f"airlock serve --isolation {isolation} did not start: {e}") from None
        set_env(self.daemon.endpoint, self.daemon.token)
        from deno_sandbox import DenoDeploy

        self.client = DenoDeploy()

    def metric(self, name):
        req = urllib.request.Request(
            f"{self.daemon.endpoint}/metrics",
            headers={"Authorization": f"Bearer {self.daemon.token}"},
        )
        text = urllib.request.urlopen(req, timeout=10).read().decode()
        m = re.search(rf"^airlock_{name}(?:_total)? (\S+)$", text, re.M)
        return float(m.group(1)) if m else None

    def wait_pool_full(self, timeout=60.0):
        """Untimed: until the warm pool holds --pool sandboxes again."""
        end = time.monotonic() + timeout
        while self.metric("pool_size") < self.pool:
            if time.monotonic() > end:
                raise RuntimeError(f"warm pool not refilled to {self.pool} in {timeout:g} s")
            time.sleep(0.01)

    def stop(self):
        self.daemon.stop()


def create_only(client):
    start = time.perf_counter()
    cm = client.sandbox.create()
    cm.__enter__()
    d = ms_since(start)
    cm.__exit__(None, None, None)
    return d


def first_exec(client):
    start = time.perf_counter()
    with client.sandbox.create() as sb:
        status = sb.spawn("true", stdout="null", stderr="null").wait()
        d = ms_since(start)
        assert status["code"] == 0, status
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


def run_in(sb, args):
    """python3 ARGS in the sandbox; its stdout parsed as JSON."""
    p = sb.spawn("python3", args=args, stdout="piped", stderr="piped")
    out, err = p.stdout.read(), p.stderr.read()
    status = p.wait()
    if status["code"] != 0:
        raise RuntimeError(f"python3 in the sandbox exited {status['code']}: {err.decode().strip()[-300:]}")
    return json.loads(out) if out.strip() else None


def job(sb, name, code, *argv):
    path = f"/tmp/{name}.py"
    sb.fs.write_text_file(path, code)
    return run_in(sb, [path, *map(str, argv)])


class Results:
    """row key -> backend -> samples, or the error that row ended with."""

    def __init__(self):
        self.rows = {}

    def measure(self, row, backend, fn):
        print(f"  {backend}: {row}...", file=sys.stderr)
        try:
            with deadline(ROW_TIMEOUT_S):
                value = fn()
        except Exception as e:  # noqa: BLE001 (a failing row is reported, not fatal)
            value = RuntimeError(short_error(e))
            print(f"    error: {value}", file=sys.stderr)
        self.rows.setdefault(row, {})[backend] = value

    def fail_all(self, rows, backend, error):
        for row in rows:
            self.rows.setdefault(row, {})[backend] = RuntimeError(short_error(error))

    def get(self, row, backend):
        return self.rows.get(row, {}).get(backend)


# The rows, in print order: key, label, kind. Kinds: "latency" (SDK calls
# timed on the host: p50 and p99 ms), "job" (timed in the sandbox: median
# ms), "rate" (MiB/s median, higher is better).
ROWS = [
    ("create_warm", "create, warm pool (paced)", "latency"),
    ("exec_warm", "create -> first exec, warm pool (paced)", "latency"),
    ("create_cold", "create, cold (--pool 0, back to back)", "latency"),
    ("exec_cold", "create -> first exec, cold (--pool 0)", "latency"),
    ("round_trip", "spawn round trip (existing sandbox)", "latency"),
    ("process", "in-sandbox subprocess.run(['true'])", "latency"),
    ("syscall", "syscall loop: 100k os.stat('/')", "job"),
    ("cpu", "CPU loop: sum(range(10M))", "job"),
    ("untar", "untar {files} small files", "job"),
    ("gateway", "gateway download {mib} MiB", "rate"),
]
WARM_KEYS = ["create_warm", "exec_warm", "round_trip", "process", "syscall", "cpu", "untar", "gateway"]
COLD_KEYS = ["create_cold", "exec_cold"]


def warm_phase(res, args, backend, resolve, port):
    try:
        b = Backend(args.airlock, backend, args.pool, resolve)
    except Exception as e:  # noqa: BLE001
        res.fail_all(WARM_KEYS, backend, e)
        return
    try:
        with deadline(ROW_TIMEOUT_S):
            first_exec(b.client)  # warm-up: imports, connection, page cache
        c = b.client

        def paced(fn):
            def go():
                out = []
                for _ in range(args.runs):
                    b.wait_pool_full()
                    out.append(fn(c))
                return out
            return go

        hits0 = b.metric("pool_hits") or 0
        res.measure("create_warm", backend, paced(create_only))
        res.measure("exec_warm", backend, paced(first_exec))
        hits = (b.metric("pool_hits") or 0) - hits0
        print(f"    {backend}: {hits:.0f} of {2 * args.runs} paced creates served by the pool", file=sys.stderr)
        res.measure("round_trip", backend, lambda: round_trips(c, args.runs))

        def in_sandbox(key, fn, **create):
            def go():
                with c.sandbox.create(**create) as sb:
                    return fn(sb)
            res.measure(key, backend, go)

        in_sandbox("process", lambda sb: job(sb, "process", PROCESS_JOB, args.runs))
        in_sandbox("syscall", lambda sb: job(sb, "syscall", SYSCALL_JOB, 100_000, args.reps))
        in_sandbox("cpu", lambda sb: job(sb, "cpu", CPU_JOB, 10_000_000, args.reps))

        def untar(sb):
            job(sb, "tarsetup", TAR_SETUP, args.files)
            return job(sb, "untar", TAR_JOB, args.reps)
        in_sandbox("untar", untar)

        def download(sb):
            rates = job(sb, "download", DOWNLOAD_JOB, "bench.test", port, args.mib << 20, args.reps)
            return [r / 2**20 for r in rates]
        in_sandbox("gateway", download, allow_net=["bench.test"])
    except Exception as e:  # noqa: BLE001 (the warm-up failed: every row of this daemon)
        res.fail_all(WARM_KEYS, backend, e)
    finally:
        b.stop()


def cold_phase(res, args, backend, resolve):
    try:
        b = Backend(args.airlock, backend, 0, resolve)
    except Exception as e:  # noqa: BLE001
        res.fail_all(COLD_KEYS, backend, e)
        return
    try:
        with deadline(ROW_TIMEOUT_S):
            first_exec(b.client)  # warm-up
        c = b.client
        res.measure("create_cold", backend, lambda: [create_only(c) for _ in range(args.runs)])
        res.measure("exec_cold", backend, lambda: [first_exec(c) for _ in range(args.runs)])
    except Exception as e:  # noqa: BLE001
        res.fail_all(COLD_KEYS, backend, e)
    finally:
        b.stop()


def runsc_floor(runsc, runs):
    """`runsc --network=none do true` from the host, wall time of each run (ms)."""
    out = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        subprocess.run([runsc, "--network=none", "do", "true"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")
        out.append(ms_since(start))
    return out[1:]  # the first run fills the page cache


def fmt(v):
    if v is None:
        return "-"
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def print_table(res, args, floor):
    rows = []  # (label, native value or error, gvisor value or error)
    for key, label, kind in ROWS:
        label = label.format(files=args.files, mib=args.mib)
        if kind == "rate":
            stats = [("MiB/s median", statistics.median)]
        elif kind == "job":
            stats = [(f"ms median of {args.reps}", statistics.median)]
        else:
            stats = [("p50 ms", lambda s: pct(s, 50)), ("p99 ms", lambda s: pct(s, 99))]
        for unit, stat in stats:
            vals = {}
            for b in BACKENDS:
                v = res.get(key, b)
                vals[b] = v if isinstance(v, Exception) or v is None else stat(v)
            rows.append((f"{label}, {unit}", vals["native"], vals["gvisor"]))

    w = max(len(r[0]) for r in rows)
    print()
    print(f"isolation_bench: {args.runs} runs per latency row, pool {args.pool}; "
          f"runsc {runsc_version(args.runsc)}")
    print(f"{'':{w}} {'native':>10} {'gvisor':>10} {'gvisor/native':>14}")
    for label, n, g in rows:
        cells = []
        for v in (n, g):
            cells.append(f"{fmt(v):>10}" if not isinstance(v, Exception) else f"{'n/a':>10}")
        ratio = f"{g / n:14.2f}" if all(isinstance(v, float) and v for v in (n, g)) else f"{'-':>14}"
        print(f"{label:{w}} {cells[0]} {cells[1]} {ratio}")
    for key, label, _ in ROWS:
        for b in BACKENDS:
            v = res.get(key, b)
            if isinstance(v, Exception):
                print(f"{label.format(files=args.files, mib=args.mib)} [{b}]: n/a (error: {v})")

    print()
    if isinstance(floor, Exception):
        print(f"runsc --network=none do true: n/a (error: {floor})")
        floor_p50 = None
    else:
        floor_p50 = pct(floor, 50)
        print(f"runsc --network=none do true (host, {len(floor)} runs): "
              f"p50 {floor_p50:.1f} ms, p99 {pct(floor, 99):.1f} ms")

    warm = res.get("create_warm", "gvisor")
    if isinstance(warm, list):
        p50 = pct(warm, 50)
        print(f"gvisor create, warm pool: p50 {p50:.2f} ms "
              f"{'PASS' if p50 < WARM_CREATE_TARGET_MS else 'MISS'} (target < {WARM_CREATE_TARGET_MS:g} ms)")
    else:
        print(f"gvisor create, warm pool: n/a (error: {warm}) MISS")
    cold = res.get("exec_cold", "gvisor")
    if isinstance(cold, list) and floor_p50:
        ratio = pct(cold, 50) / floor_p50
        print(f"gvisor cold create -> first exec / runsc do true: {pct(cold, 50):.1f} / {floor_p50:.1f} ms = "
              f"{ratio:.2f}x {'PASS' if ratio <= FLOOR_RATIO_TARGET else 'MISS'} "
              f"(target <= {FLOOR_RATIO_TARGET:g}x)")
    else:
        error = cold if isinstance(cold, Exception) else floor
        print(f"gvisor cold create -> first exec / runsc do true: n/a (error: {error}) MISS")


def runsc_version(runsc):
    try:
        out = subprocess.run([runsc, "--version"], capture_output=True, text=True, check=True).stdout
        return out.splitlines()[0].split()[-1]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20, help="samples per latency row")
    ap.add_argument("--airlock", default="target/release/airlock")
    ap.add_argument("--runsc", default="/usr/bin/runsc")
    ap.add_argument("--pool", type=int, default=2, help="warm pool of the warm-pool daemons")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each in-sandbox job")
    ap.add_argument("--files", type=int, default=5000, help="small files in the untar job")
    ap.add_argument("--mib", type=int, default=64, help="MiB per gateway download")
    ap.add_argument("--floor-runs", type=int, default=20, help="runs of `runsc do true`")
    args = ap.parse_args()
    if args.runs < 1 or args.reps < 1 or args.pool < 1:
        sys.exit("--runs, --reps and --pool must be at least 1")
    if os.geteuid() != 0:
        sys.exit("bench/isolation_bench.py needs root (airlock serve creates namespaces and cgroups)")

    t0 = time.monotonic()
    print(f"isolation_bench: {args.runs} runs, pool {args.pool}", file=sys.stderr)
    print("  runsc do true...", file=sys.stderr)
    try:
        floor = runsc_floor(args.runsc, args.floor_runs)
    except (OSError, subprocess.CalledProcessError) as e:
        floor = RuntimeError(short_error(e))

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    serve(listener, blast)
    port = listener.getsockname()[1]
    resolve = "bench.test=127.0.0.1"

    res = Results()
    for backend in BACKENDS:
        warm_phase(res, args, backend, resolve, port)
    for backend in BACKENDS:
        cold_phase(res, args, backend, resolve)
    listener.close()

    print_table(res, args, floor)
    print(f"(whole run {time.monotonic() - t0:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
