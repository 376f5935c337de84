#!/usr/bin/env python3
"""Volumes, measured through the official Python SDK (deno-sandbox, sync
API) against one `airlock serve` (temporary store, warm pool --pool N).
Rows, with the reference each is compared with in the same run:

  volume create          `volumes.create(slug, "ord", "1GB")`, back to back (the
                         first one also makes the storage pool; reported apart)
  volume delete          `volumes.delete(id)` of an unmounted volume
  create -> first exec   `sandbox.create(volumes={"/data": v})` + spawn("true") +
                         wait(), against the same without a volume (warm pool)
  write throughput       `dd if=/dev/zero bs=1M count=--mib conv=fsync` into the
                         volume, against the same into the sandbox's own disk (/root)
  snapshot create        `volumes.snapshot(v)` of a volume holding 64 MiB, back to back
  bootable volume        `volumes.create(from_snapshot="builtin:debian-13")`: the first
                         (makes the image's pool snapshot) and the next ones
  boot from a snapshot   create(root=snapshot) + spawn("true") + wait(), against the
                         default image started fresh (region "fra": not from the
                         warm pool) and from the warm pool
  running sandbox        `POST /api/v3/sandbox/{id}/snapshot` (airlock extension) of a
                         sandbox of the default image: its whole root, copied while
                         it is paused; against a volume snapshot (above)

Prints medians (p50) and ratios. Run as root:
  target/sdk/venv/bin/python bench/volumes_bench.py [--airlock target/release/airlock]
      [--runs 20] [--pool 2] [--mib 256] [--reps 5]
"""
import argparse
import json
import os
import urllib.request
import re
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sdk_bench import Daemon, ms_since, set_env  # noqa: E402

DD_RATE = re.compile(r"([\d.]+) ([kMG]?B)/s")


def p50(samples):
    return statistics.median(samples)


def dd_mib_per_s(sb, path, mib):
    p = sb.spawn(
        "dd",
        args=["if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}", "conv=fsync"],
        stdout="piped",
        stderr="piped",
    )
    err = p.stderr.read().decode()
    p.stdout.read()
    assert p.wait()["code"] == 0, err
    sb.spawn("rm", args=["-f", path]).wait()
    m = DD_RATE.search(err)
    value, unit = float(m.group(1)), m.group(2)
    scale = {"B": 1 / (1 << 20), "kB": 1e3 / (1 << 20), "MB": 1e6 / (1 << 20), "GB": 1e9 / (1 << 20)}
    return value * scale[unit]


def post_json(daemon, path, body):
    req = urllib.request.Request(
        daemon.endpoint + path, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {daemon.token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


def create_exec(client, **kw):
    start = time.perf_counter()
    with client.sandbox.create(**kw) as sb:
        sb.spawn("true").wait()
        return ms_since(start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--airlock", default="target/release/airlock")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: airlock serve creates real sandboxes")
    daemon = Daemon(args.airlock, args.pool)
    try:
        set_env(daemon.endpoint, daemon.token)
        from deno_sandbox import DenoDeploy

        client = DenoDeploy()
        start = time.perf_counter()
        first = client.volumes.create(f"first-{uuid.uuid4().hex[:8]}", "ord", "1GB")
        first_ms = ms_since(start)
        creates, deletes, ids = [], [], []
        for _ in range(args.runs):
            start = time.perf_counter()
            v = client.volumes.create(f"b-{uuid.uuid4().hex[:10]}", "ord", "1GB")
            creates.append(ms_since(start))
            ids.append(v["id"])
        for vid in ids:
            start = time.perf_counter()
            client.volumes.delete(vid)
            deletes.append(ms_since(start))

        with_volume, without = [], []
        for _ in range(args.runs):
            without.append(create_exec(client))
            time.sleep(0.2)  # let the pool refill: the warm path is the reference
            with_volume.append(create_exec(client, volumes={"/data": first["id"]}))

        vol_rates, disk_rates = [], []
        with client.sandbox.create(volumes={"/data": first["id"]}) as sb:
            for _ in range(args.reps):
                vol_rates.append(dd_mib_per_s(sb, "/data/dd.bin", args.mib))
                disk_rates.append(dd_mib_per_s(sb, "/root/dd.bin", args.mib))
        # Snapshots of a volume holding 64 MiB.
        with client.sandbox.create(volumes={"/data": first["id"]}) as sb:
            sb.spawn("dd", args=["if=/dev/urandom", "of=/data/blob", "bs=1M", "count=64"],
                     stdout="null", stderr="null").wait()
        snaps, snap_ids = [], []
        for _ in range(args.runs):
            start = time.perf_counter()
            snap = client.volumes.snapshot(first["id"], slug=f"s-{uuid.uuid4().hex[:10]}")
            snaps.append(ms_since(start))
            snap_ids.append(snap["id"])
        for sid in snap_ids:
            client.snapshots.delete(sid)
        client.volumes.delete(first["id"])

        # Bootable volumes and booting from a snapshot of one.
        start = time.perf_counter()
        boot = client.volumes.create(f"boot-{uuid.uuid4().hex[:8]}", "ord", "1GB",
                                     from_snapshot="builtin:debian-13")
        first_bootable_ms = ms_since(start)
        bootables = []
        for _ in range(min(args.runs, 5)):
            start = time.perf_counter()
            v = client.volumes.create(f"bv-{uuid.uuid4().hex[:10]}", "ord", "1GB",
                                      from_snapshot="builtin:debian-13")
            bootables.append(ms_since(start))
            client.volumes.delete(v["id"])
        env_snap = client.volumes.snapshot(boot["id"], slug=f"env-{uuid.uuid4().hex[:8]}")
        from_snapshot, fresh_default, warm_default = [], [], []
        for _ in range(args.runs):
            from_snapshot.append(create_exec(client, root=env_snap["id"]))
            fresh_default.append(create_exec(client, region="fra"))
            warm_default.append(create_exec(client))
            time.sleep(0.2)
        client.snapshots.delete(env_snap["id"])
        client.volumes.delete(boot["id"])

        running = []
        with client.sandbox.create() as sb:
            for _ in range(min(args.reps, 3)):
                start = time.perf_counter()
                snap = post_json(daemon, f"/api/v3/sandbox/{sb.id}/snapshot",
                                 {"slug": f"run-{uuid.uuid4().hex[:8]}"})
                running.append(ms_since(start))
                client.snapshots.delete(snap["id"])
    finally:
        daemon.stop()

    print(f"volumes benchmark ({args.runs} runs, {args.reps} x {args.mib} MiB writes)")
    print(f"  first volume create (makes the pool): {first_ms:8.1f} ms")
    print(f"  volume create (1 GB)                  {p50(creates):8.1f} ms p50")
    print(f"  volume delete                         {p50(deletes):8.1f} ms p50")
    a, b = p50(with_volume), p50(without)
    print(f"  create -> first exec, with a volume   {a:8.1f} ms p50")
    print(f"  create -> first exec, default (warm)  {b:8.1f} ms p50   ratio {a / b:.2f}x")
    a, b = p50(vol_rates), p50(disk_rates)
    print(f"  write, volume (dd conv=fsync)         {a:8.0f} MiB/s p50")
    print(f"  write, sandbox's own disk             {b:8.0f} MiB/s p50   ratio {a / b:.2f}x")
    print(f"  snapshot create (64 MiB in it)        {p50(snaps):8.1f} ms p50")
    print(f"  first bootable volume (builtin image) {first_bootable_ms:8.1f} ms")
    print(f"  bootable volume, next ones            {p50(bootables):8.1f} ms p50")
    a, b, c = p50(from_snapshot), p50(fresh_default), p50(warm_default)
    print(f"  create -> first exec, root=snapshot   {a:8.1f} ms p50")
    print(f"  create -> first exec, default, fresh  {b:8.1f} ms p50   ratio {a / b:.2f}x")
    print(f"  create -> first exec, default, warm   {c:8.1f} ms p50   ratio {a / c:.2f}x")
    a = p50(running)
    print(f"  snapshot of a running sandbox         {a:8.1f} ms p50   ratio {a / p50(snaps):.0f}x"
          " a volume snapshot")


if __name__ == "__main__":
    main()
