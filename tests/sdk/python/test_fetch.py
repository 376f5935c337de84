"""`sandbox.fetch` through the official Python SDK: requests made from inside
the sandbox to a server running in it (the daemon speaks HTTP over a TCP
connection the agent opens inside the sandbox)."""

from __future__ import annotations

import time

import pytest

# A server bound to the sandbox's loopback only: reachable only from inside.
SERVER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/moved":
            self.send_response(302); self.send_header("Location", "/hello?from=moved")
            self.send_header("Content-Length", "0"); self.end_headers(); return
        if self.path == "/empty":
            self.send_response(204); self.end_headers(); return
        body = ("hello " + self.path + " " + self.headers.get("X-Test", "-")).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("X-Server", "in-sandbox")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def start_server(sb, port: int):
    sb.fs.write_text_file("/tmp/server.py", SERVER)
    proc = sb.spawn("python3", args=["/tmp/server.py", str(port)])
    deadline = time.monotonic() + 15
    while True:
        try:
            return proc, sb.fetch(f"http://localhost:{port}/ready")
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def header(resp, name):
    return [v for k, v in resp.headers if k.lower() == name]


def test_fetch_reaches_a_loopback_server_in_the_sandbox(client):
    with client.sandbox.create() as sb:
        _, ready = start_server(sb, 8000)
        assert ready.status_code == 200
        r = sb.fetch("http://localhost:8000/hello", headers={"X-Test": "yes"})
        assert r.status_code == 200 and r.is_success
        assert header(r, "x-server") == ["in-sandbox"]
        assert header(r, "content-length") == [str(len("hello /hello yes"))]
        # Redirects are followed by default, and returned as-is on "manual".
        r = sb.fetch("http://127.0.0.1:8000/moved")
        assert r.status_code == 200
        r = sb.fetch("http://127.0.0.1:8000/moved", redirect="manual")
        assert r.status_code == 302 and header(r, "location") == ["/hello?from=moved"]
        assert sb.fetch("http://localhost:8000/empty").status_code == 204
        # POST without a body.
        assert sb.fetch("http://localhost:8000/x", method="POST").status_code == 501


def test_fetch_errors(client):
    with client.sandbox.create() as sb:
        with pytest.raises(Exception) as e:
            sb.fetch("http://localhost:9/")
        assert "refused" in str(e.value).lower() and "127.0.0.1:9" in str(e.value), e.value
        with pytest.raises(Exception) as e:
            sb.fetch("ftp://localhost/")
        assert "http" in str(e.value), e.value
        with pytest.raises(Exception) as e:
            sb.fetch("http://localhost:8000/", method="BAD METHOD")
        assert "method" in str(e.value), e.value
        # The connection survives every error.
        assert sb.fs.read_text_file("/etc/hostname").strip() == "sandbox"


def test_fetch_to_the_outside_obeys_the_egress_policy(client, upstreams):
    # Not in allowNet: the connection is made inside the sandbox, so the
    # gateway refuses it like any other.
    with client.sandbox.create() as sb:
        with pytest.raises(Exception):
            sb.fetch(f"http://api.test:{upstreams.http_port}/")
    with client.sandbox.create(allow_net=["api.test"]) as sb:
        r = sb.fetch(f"http://api.test:{upstreams.http_port}/hello")
        assert r.status_code == 200
