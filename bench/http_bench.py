#!/usr/bin/env python3
"""HTTP into a sandbox: `exposeHttp` (the daemon's HTTPS ingress and the
agent tunnel) and `sandbox.fetch`, each against a reference in the same run.

Starts its own `airlock serve` (bench/sdk_bench.py's Daemon). One sandbox runs
a Python HTTP/1.1 server on its 127.0.0.1:8000; the same server code also runs
on the host's loopback with TLS (a trustme certificate) as the reference. The
same client measures both:

  expose request   GET /small on one keep-alive TLS connection, --requests times:
                   p50/p99 ms, through the ingress vs the host-local server
  expose download  one GET of --mib MiB: MiB/s (median of --runs), same pair
  fetch            sandbox.fetch("http://localhost:8000/small") round trip through
                   the SDK: p50/p99 ms, against a plain SDK round trip (fs.stat)

usage: target/sdk/venv/bin/python bench/http_bench.py [--airlock target/release/airlock]
           [--requests 500] [--mib 64] [--runs 3]
"""
import http.client
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from sdk_bench import Daemon, pct, request_bench_args, set_env  # noqa: E402

SERVER = r'''
import http.server, socket, sys
BIG = b"x" * (int(sys.argv[2]) << 20) if __name__ == "__main__" else b""
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup()
        # Headers and body are two writes: without this, Nagle holds the
        # body for the client's delayed ACK (40 ms) on every request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def do_GET(self):
        body = BIG if self.path == "/big" else b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
def make(port):
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
if __name__ == "__main__":
    make(int(sys.argv[1])).serve_forever()
'''


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to 127.0.0.1:port but speaks TLS and HTTP for `host`, like
    `curl --resolve` (the exposed names need no DNS)."""

    def connect(self):
        raw = socket.create_connection(("127.0.0.1", self.port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def requests(host, port, ctx, n):
    conn = PinnedHTTPSConnection(host, port, context=ctx)
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("GET", "/small")
        r = conn.getresponse()
        assert r.read() == b"ok", r.status
        samples.append((time.perf_counter() - t) * 1000)
    conn.close()
    return samples


def download(host, port, ctx, mib):
    conn = PinnedHTTPSConnection(host, port, context=ctx)
    t = time.perf_counter()
    conn.request("GET", "/big")
    r = conn.getresponse()
    got = 0
    while chunk := r.read(1 << 20):
        got += len(chunk)
    assert got == mib << 20, got
    conn.close()
    return mib / (time.perf_counter() - t)


def host_reference(mib, tmp):
    """The same server on the host's loopback with TLS (trustme)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("ref.test")
    ns = {"__name__": "reference"}
    exec(compile(SERVER, "server", "exec"), ns)
    ns["BIG"] = b"x" * (mib << 20)  # the handler reads the module global
    httpd = ns["make"](0)
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(sctx)
    httpd.socket = sctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    cctx = ssl.create_default_context()
    ca.configure_trust(cctx)
    return httpd, "ref.test", httpd.server_address[1], cctx


def row(name, ref, ours, unit, lower_is_better=True):
    ratio = ours / ref if ref else float("nan")
    print(f"{name:<34} {ref:>10.3f} {ours:>10.3f} {unit:<6} ratio {ratio:.2f}"
          + (" (lower is better)" if lower_is_better else ""))


def main():
    args = request_bench_args("http_bench.py")
    from deno_sandbox import DenoDeploy

    daemon = Daemon(args.airlock, pool=1)
    try:
        set_env(daemon.endpoint, daemon.token)
        ca_file = Path(daemon.tmp.name) / "expose-ca.pem"
        with tempfile.TemporaryDirectory() as tmp, DenoDeploy().sandbox.create() as sb:
            sb.fs.write_text_file("/tmp/server.py", SERVER)
            sb.spawn("python3", args=["/tmp/server.py", "8000", str(args.mib)])
            url = urllib.parse.urlsplit(sb.expose_http(port=8000))
            ctx = ssl.create_default_context(cafile=str(ca_file))
            deadline = time.monotonic() + 30
            while True:
                try:
                    requests(url.hostname, url.port, ctx, 1)
                    break
                except (AssertionError, OSError, http.client.HTTPException):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            httpd, ref_host, ref_port, ref_ctx = host_reference(args.mib, tmp)

            print(f"# 2-core host; {args.requests} requests, {args.mib} MiB x {args.runs}")
            print(f"{'':<34} {'reference':>10} {'airlock':>10}")
            ref = requests(ref_host, ref_port, ref_ctx, args.requests)
            ours = requests(url.hostname, url.port, ctx, args.requests)
            row("expose request p50 (ms)", pct(ref, 50), pct(ours, 50), "ms")
            row("expose request p99 (ms)", pct(ref, 99), pct(ours, 99), "ms")
            ref = statistics.median(download(ref_host, ref_port, ref_ctx, args.mib) for _ in range(args.runs))
            ours = statistics.median(download(url.hostname, url.port, ctx, args.mib) for _ in range(args.runs))
            row("expose download (MiB/s)", ref, ours, "MiB/s", lower_is_better=False)
            httpd.shutdown()

            def timed(fn, n):
                out = []
                for _ in range(n):
                    t = time.perf_counter()
                    fn()
                    out.append((time.perf_counter() - t) * 1000)
                return out

            ref = timed(lambda: sb.fs.stat("/"), args.requests)
            ours = timed(lambda: sb.fetch("http://localhost:8000/small"), args.requests)
            row("fetch round trip p50 (ms) vs stat", pct(ref, 50), pct(ours, 50), "ms")
            row("fetch round trip p99 (ms) vs stat", pct(ref, 99), pct(ours, 99), "ms")
    finally:
        daemon.stop()


if __name__ == "__main__":
    main()
