"""Exposed HTTP through the official Python SDK: `sandbox.expose_http` and
`Sandbox.create(port=...)` give `https://<random>.sandbox.localhost:<port>`,
served by the daemon's HTTPS ingress with a certificate from its own CA and
routed into the sandbox; checked with `curl --resolve` as the issue asks."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from test_fetch import SERVER, start_server

# A WebSocket echo server on the sandbox's loopback, on the stdlib only.
WS_SERVER = r"""
import base64, hashlib, socket, struct, sys, threading
def serve(c):
    head = b""
    while b"\r\n\r\n" not in head:
        head += c.recv(4096)
    key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
    acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
    f = c.makefile("rb")
    while True:
        b0, b1 = f.read(2)
        n = b1 & 127
        if n == 126: n = struct.unpack(">H", f.read(2))[0]
        elif n == 127: n = struct.unpack(">Q", f.read(8))[0]
        mask = f.read(4); data = bytes(x ^ mask[i % 4] for i, x in enumerate(f.read(n)))
        if b0 & 15 == 8: return
        out = b"echo:" + data
        hdr = bytes([0x81]) + (bytes([len(out)]) if len(out) < 126 else bytes([126]) + struct.pack(">H", len(out)))
        c.sendall(hdr + out)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def curl(airlock, url: str, *extra: str) -> tuple[int, str]:
    """GET url with curl, resolving its host to the daemon's ingress and
    trusting the daemon's CA; returns (status, body)."""
    parts = urllib.parse.urlsplit(url)
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--cacert", str(airlock["expose_ca"]),
         "--resolve", f"{parts.hostname}:{parts.port or 443}:127.0.0.1",
         "-w", "\n%{http_code}", *extra, url],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, f"curl {url}: {out.stderr}"
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def test_expose_http_serves_a_port_over_https(client, airlock):
    with client.sandbox.create() as sb:
        start_server(sb, 8000)
        url = sb.expose_http(port=8000)
        host = urllib.parse.urlsplit(url).hostname
        assert url.startswith("https://") and host.endswith(".sandbox.localhost"), url
        assert curl(airlock, url + "/hi", "-H", "X-Test: via-ingress") == (200, "hello /hi via-ingress")
        # A second domain for the same sandbox is a different, unguessable name.
        other = sb.expose_http(port=8000)
        assert urllib.parse.urlsplit(other).hostname != host
        assert curl(airlock, other + "/two")[0] == 200
        # The sandbox's inspect record lists them.
        rec = _inspect(airlock, sb.id)
        assert sorted(e["url"] for e in rec["exposed"]) == sorted([url, other])
        metrics = _get(airlock, "/metrics").decode()
        proxied = [l for l in metrics.splitlines()
                   if l.startswith('airlock_expose_connections_total{outcome="proxied"}')]
        assert proxied and float(proxied[0].split()[-1]) >= 2, proxied
    # Routing stops when the sandbox ends.
    deadline = time.monotonic() + 10
    while curl(airlock, url + "/gone")[0] != 404:
        assert time.monotonic() < deadline, "the route outlived its sandbox"
        time.sleep(0.2)


def test_expose_errors(client, airlock):
    with client.sandbox.create() as sb:
        # Nobody listens on the port: the ingress says so, the route stays.
        url = sb.expose_http(port=8001)
        code, body = curl(airlock, url + "/")
        assert code == 502 and "nothing is listening on port 8001" in body, (code, body)
        # Unknown names under the base domain are 404.
        fake = url.replace("https://", "https://zz")
        assert curl(airlock, fake)[0] == 404
        with pytest.raises(Exception):
            sb.expose_http(port=70000)
        with pytest.raises(Exception):
            sb.expose_http(port=0)
        # Another name than the daemon's base domain fails the TLS handshake.
        parts = urllib.parse.urlsplit(url)
        bad = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "--cacert", str(airlock["expose_ca"]),
             "--resolve", f"evil.example:{parts.port}:127.0.0.1", f"https://evil.example:{parts.port}/"],
            capture_output=True, text=True,
        )
        assert bad.returncode != 0
        # The SDK connection survives all of it.
        assert sb.fs.read_text_file("/etc/hostname").strip() == "sandbox"
        # Another sandbox cannot take over this sandbox's domain.
        domain = url.removeprefix("https://")
        with client.sandbox.create() as other:
            with pytest.raises(Exception) as e:
                other._bridge.run(other._rpc.call("exposeHttp", {"domain": domain, "port": 8001}))
            assert "different sandbox" in str(e.value), e.value
        # The ingress is a daemon address: sandboxes cannot reach it, even
        # when allowNet names it.
        with client.sandbox.create(allow_net=[f"127.0.0.1:{parts.port}"]) as inside:
            r = inside.spawn("curl", args=["-sk", "--max-time", "5", f"https://127.0.0.1:{parts.port}/"],
                             stdout="piped", stderr="piped")
            status = r.wait()
            assert status["code"] != 0, f"a sandbox reached the expose ingress: {status}"


def test_create_with_port_and_websockets(client, airlock):
    with client.sandbox.create(port=8002) as sb:
        sb.fs.write_text_file("/tmp/ws.py", WS_SERVER)
        sb.spawn("python3", args=["/tmp/ws.py", "8002"])
        rec = _inspect(airlock, sb.id)
        [exposed] = rec["exposed"]
        assert exposed["port"] == 8002
        url = urllib.parse.urlsplit(exposed["url"])
        ctx = ssl.create_default_context(cafile=str(airlock["expose_ca"]))
        from websockets.sync.client import connect

        deadline = time.monotonic() + 15
        while True:
            raw = socket.create_connection(("127.0.0.1", url.port))
            try:
                ws = connect(f"wss://{url.netloc}/chat", sock=raw, ssl=ctx, server_hostname=url.hostname)
                break
            except Exception:
                raw.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with ws:
            ws.send("ping")
            assert ws.recv(timeout=10) == "echo:ping"
            ws.send("x" * 1000)
            assert ws.recv(timeout=10) == "echo:" + "x" * 1000


def _get(airlock, path: str) -> bytes:
    req = urllib.request.Request(
        f"{airlock['endpoint']}{path}",
        headers={"Authorization": f"Bearer {airlock['token']}"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def _inspect(airlock, sandbox_id: str) -> dict:
    return json.loads(_get(airlock, f"/api/v3/sandbox/{sandbox_id}"))


def test_expose_by_pid_of_a_deno_runtime(client, airlock):
    with client.sandbox.create() as sb:
        p = sb.deno.run(
            code="Deno.serve({ port: 8126, onListen() {} }, (r) => new Response('deno ' + new URL(r.url).pathname))",
            stdout="null",
        )
        assert p.wait_http_ready() is True
        url = sb.expose_http(pid=p.pid)
        assert curl(airlock, url + "/x") == (200, "deno /x")
        # A process that serves nothing cannot be exposed by pid.
        idle = sb.spawn("sleep", args=["30"])
        with pytest.raises(Exception) as e:
            sb.expose_http(pid=idle.pid)
        assert "not listening" in str(e.value), e.value
