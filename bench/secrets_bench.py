#!/usr/bin/env python3
"""Request latency and throughput through secret interception against
splice, in one run.

Starts the local HTTPS upstream of the SDK tests (tests/sdk/python/
upstreams.py: a test CA, names api.test and other.test on 127.0.0.1) and
its own `airlock serve --resolve ... --upstream-ca ...`. One sandbox has a
secret for api.test, so its TLS to api.test is terminated and re-made by
the gateway (interception); other.test is only in allowNet, so its TLS is
spliced byte for byte. The same client, inside the sandbox, measures for
each host:

  request   GET /hello with the placeholder in a header, keep-alive, --requests
            times: p50/p99 ms
  download  one GET of --mib MiB: MiB/s (median of --runs)

and prints the interception/splice ratios.

usage: target/sdk/venv/bin/python bench/secrets_bench.py [--airlock target/release/airlock]
           [--requests 500] [--mib 64] [--runs 3]
"""
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests/sdk/python"))
from sdk_bench import Daemon, pct, request_bench_args, set_env  # noqa: E402
import upstreams as up  # noqa: E402

CLIENT = r'''
import http.client, json, os, ssl, sys, time
port, requests, nbytes, runs = map(int, sys.argv[1:5])
ctx = ssl.create_default_context()              # system bundle: has the sandbox CA
ctx.load_verify_locations("/tmp/upstream-ca.pem")  # the test CA, for the spliced host
key = os.environ["API_KEY"]
out = {}
for host in ("api.test", "other.test"):
    c = http.client.HTTPSConnection(host, port, context=ctx)
    lat = []
    for i in range(requests + 10):
        t0 = time.perf_counter()
        c.request("GET", "/hello", headers={"x-key": key})
        r = c.getresponse()
        r.read()
        if i >= 10:
            lat.append((time.perf_counter() - t0) * 1000)
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        c.request("GET", f"/bytes/{nbytes}")
        r = c.getresponse()
        got = 0
        while chunk := r.read(1 << 20):
            got += len(chunk)
        assert got == nbytes, got
        rates.append(nbytes / (time.perf_counter() - t0))
    out[host] = {"lat_ms": lat, "rates": rates}
print(json.dumps(out))
'''



def main():
    args = request_bench_args("secrets_bench.py")
    servers = up.start()
    daemon = Daemon(args.airlock, 1, extra=servers.daemon_args())
    try:
        set_env(daemon.endpoint, daemon.token)
        from deno_sandbox import DenoDeploy

        secrets = {"API_KEY": {"hosts": ["api.test"], "value": "sk-bench-" + "x" * 40}}
        with DenoDeploy().sandbox.create(secrets=secrets, allow_net=["other.test"]) as sb:
            sb.fs.write_text_file("/tmp/upstream-ca.pem", servers.ca_pem)
            sb.fs.write_text_file("/tmp/client.py", CLIENT)
            argv = [str(servers.https_port), str(args.requests), str(args.mib << 20), str(args.runs)]
            p = sb.spawn("python3", args=["/tmp/client.py", *argv], stdout="piped", stderr="piped")
            out, err = p.stdout.read(), p.stderr.read()
            if p.wait()["code"] != 0:
                sys.exit(f"client in the sandbox failed: {err.decode()}")
            res = json.loads(out)
    finally:
        daemon.stop()
        servers.close()
    i, s = res["api.test"], res["other.test"]
    print(f"{'':30} {'splice':>10} {'intercept':>10} {'ratio':>7}")
    for label, p in (("request ms p50", 50), ("request ms p99", 99)):
        a, b = pct(s["lat_ms"], p), pct(i["lat_ms"], p)
        print(f"{label:30} {a:10.3f} {b:10.3f} {b / a:7.2f}")
    a = statistics.median(s["rates"]) / 2**20
    b = statistics.median(i["rates"]) / 2**20
    print(f"{'download MiB/s (median)':30} {a:10.0f} {b:10.0f} {b / a:7.2f}")


if __name__ == "__main__":
    main()
