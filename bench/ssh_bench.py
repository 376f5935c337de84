#!/usr/bin/env python3
"""SSH into a sandbox with the real OpenSSH client, measured against the
same work done with airlock's own CLI in the same run (one `airlock serve`,
temporary store; the sandbox made with the official Python SDK, which
also mints the username with `expose_ssh()`). Rows:

  ssh exec          `ssh USER@HOST true`: TCP connect, key exchange, login,
                    exec, exit status; against `airlock exec SBX -- true`
                    (a WebSocket session to the daemon, spawn, wait)
  scp up / down     `scp` of a --mib MiB file into /tmp and back (SFTP,
                    through the agent's SFTP server); against `airlock cp`
                    of the same file both ways

Prints medians (p50) and ratios. Run as root:
  target/sdk/venv/bin/python bench/ssh_bench.py [--airlock target/release/airlock]
      [--runs 20] [--mib 64] [--reps 5]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sdk_bench import Daemon, ms_since, set_env  # noqa: E402

SSH_OPTS = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR"]


def timed(cmd):
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return ms_since(start)


def p50(samples):
    return statistics.median(samples)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--airlock", default="target/release/airlock")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: airlock serve creates real sandboxes")
    airlock = str(Path(args.airlock).resolve())
    daemon = Daemon(airlock, 1)
    try:
        set_env(daemon.endpoint, daemon.token)
        from deno_sandbox import DenoDeploy

        with DenoDeploy().sandbox.create(timeout="10m") as sb:
            cred = sb.expose_ssh()
            host = f"{cred['username']}@{cred['hostname']}"
            ssh = ["ssh", *SSH_OPTS, "-p", str(cred["port"]), host]
            scp = ["scp", *SSH_OPTS, "-P", str(cred["port"])]
            sid = sb.id

            ssh_exec = [timed([*ssh, "true"]) for _ in range(args.runs)]
            cli_exec = [timed([airlock, "exec", sid, "--", "true"]) for _ in range(args.runs)]

            with tempfile.TemporaryDirectory() as tmp:
                src = Path(tmp) / "blob"
                with open(src, "wb") as f:
                    f.write(os.urandom(args.mib << 20))
                back = Path(tmp) / "back"
                scp_up, scp_down, cp_up, cp_down = [], [], [], []
                for _ in range(args.reps):
                    scp_up.append(timed([*scp, str(src), f"{host}:/tmp/blob"]))
                    scp_down.append(timed([*scp, f"{host}:/tmp/blob", str(back)]))
                    cp_up.append(timed([airlock, "cp", str(src), f"{sid}:/tmp/blob2"]))
                    cp_down.append(timed([airlock, "cp", f"{sid}:/tmp/blob2", str(back)]))

        def rate(ms):
            return args.mib / (ms / 1000)

        print(f"ssh exec (connect, login, exec true)  p50 {p50(ssh_exec):7.1f} ms   "
              f"airlock exec {p50(cli_exec):7.1f} ms   ratio {p50(ssh_exec) / p50(cli_exec):.2f}x")
        for name, s, c in (("scp up", scp_up, cp_up), ("scp down", scp_down, cp_down)):
            print(f"{name:<9} {args.mib} MiB  p50 {rate(p50(s)):7.1f} MiB/s   airlock cp "
                  f"{rate(p50(c)):7.1f} MiB/s   time ratio {p50(s) / p50(c):.2f}x")
    finally:
        daemon.stop()


if __name__ == "__main__":
    main()
