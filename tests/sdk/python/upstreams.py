"""Local upstream servers for the network tests: plain HTTP and HTTPS with a
test CA (trustme), on 127.0.0.1, standing in for internet hosts. The daemon
is started with `--resolve NAME=127.0.0.1` for the names below, so sandboxes
reach these servers only through the egress gateway.

Routes (GET unless noted):
  /hello          -> "hello from <Host header>"
  /bytes/N        -> N bytes of a fixed pseudo-random stream (see stream_sha256)
  /slow/N         -> N bytes, 64 KiB at a time, forever-ish streaming for load
  POST /echo      -> the request body
  /echo-request   -> JSON of what arrived: method, path, headers, body
  /coded/C1,C2    -> the /echo-request JSON (after 32 KiB of padding), coded
                     with C1 then C2 whatever Accept-Encoding says, as
                     `Content-Encoding: C1, C2`; codings: gzip, x-gzip,
                     deflate (zlib), deflate-raw (sent as "deflate"), br, zstd;
                     any other name labels the body without coding it.
                     ?chunked=1: chunked, in 1000-byte chunks; &te=1: the
                     codings go in Transfer-Encoding instead
Every request is also appended to `Upstreams.received` (host, path,
headers, body), so tests can see exactly what reached the upstream.
  /git/...        -> static files of a bare git repository (dumb HTTP protocol)

A private network (PrivateNet) stands in for an operator's internal network:
a network namespace this suite makes, joined to the host by a veth pair,
with the same plain HTTP server on two of its addresses. The daemon is
started with `--egress-allow-cidr` for exactly one of them. Removed again
in `close()`, even after a failed start.
"""

from __future__ import annotations

import base64
import ctypes
import gzip
import hashlib
import http.server
import json
import os
import shutil
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import trustme

# Names the daemon maps to 127.0.0.1; the TLS certificate covers them all.
NAMES = ["api.test", "other.test", "*.wild.test", "daemon.test"]

BLOCK = 1 << 20


def _block() -> bytes:
    out = bytearray()
    seed = b"airlock-egress"
    while len(out) < BLOCK:
        seed = hashlib.sha256(seed).digest()
        out += seed
    return bytes(out[:BLOCK])


PATTERN = _block()


def stream_bytes(n: int):
    """The body of /bytes/N, in chunks."""
    full, rest = divmod(n, BLOCK)
    for _ in range(full):
        yield PATTERN
    if rest:
        yield PATTERN[:rest]


def stream_sha256(n: int) -> str:
    h = hashlib.sha256()
    for chunk in stream_bytes(n):
        h.update(chunk)
    return h.hexdigest()


RECEIVED: list[dict] = []


def encode(coding: str, data: bytes) -> tuple[str, bytes]:
    """`data` with one content coding applied, and the coding's name on
    the wire. An unknown name labels `data` without coding it."""
    if coding in ("gzip", "x-gzip"):
        return coding, gzip.compress(data)
    if coding == "deflate":
        return coding, zlib.compress(data)
    if coding == "deflate-raw":
        c = zlib.compressobj(wbits=-15)
        return "deflate", c.compress(data) + c.flush()
    # Imported here: only the coded routes need them (pinned in
    # scripts/sdk-tests.sh).
    if coding == "br":
        import brotli

        return coding, brotli.compress(data)
    if coding == "zstd":
        import zstandard

        return coding, zstandard.ZstdCompressor().compress(data)
    return coding, data


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    git_root: Path | None = None
    server_label = "http"

    def _record(self, body: bytes) -> dict:
        entry = {
            "server": self.server_label,
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("latin-1"),
        }
        RECEIVED.append(entry)
        return entry

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(n)

    def log_message(self, *args):  # quiet
        pass

    def setup(self):
        # Headers and body go out in separate writes: without NODELAY,
        # Nagle and the client's delayed ACK add 40 ms to every response.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        entry = self._record(b"")
        if path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            return self._websocket_echo()
        if path == "/echo-request":
            return self._send(200, json.dumps(entry).encode(), "application/json")
        if path.startswith("/coded/"):
            return self._coded(path[len("/coded/"):], entry)
        if path == "/hello":
            host = self.headers.get("Host", "")
            return self._send(200, f"hello from {host} over {self.server_label}".encode())
        if path.startswith("/bytes/"):
            n = int(path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            try:
                for chunk in stream_bytes(n):
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        if path.startswith("/git/") and self.git_root is not None:
            rel = os.path.normpath(path[len("/git/"):])
            target = self.git_root / rel
            if rel.startswith("..") or not target.is_file():
                return self._send(404, b"not found")
            return self._send(200, target.read_bytes(), "application/octet-stream")
        self._send(404, b"not found")

    def _coded(self, codings: str, entry: dict):
        """An upstream that ignores `Accept-Encoding: identity`."""
        query = self.path.partition("?")[2].split("&")
        chunked, te = "chunked=1" in query, "te=1" in query
        # The echo starts past the first 32 KiB, so it is likely to span
        # the boundary between two reads of the gateway's decoder.
        body = b"." * (32 * 1024 - 20) + json.dumps(entry).encode()
        names = []
        for coding in codings.split(","):
            name, body = encode(coding, body)
            names.append(name)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if te:
            self.send_header("Transfer-Encoding", ", ".join(names + ["chunked"]))
        else:
            self.send_header("Content-Encoding", ", ".join(names))
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if chunked or te:
            parts = [body[i:i + 1000] for i in range(0, len(body), 1000)]
            body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
        try:
            # Chunks still go out one by one: the socket is unbuffered.
            for i in range(0, len(body), 1009):
                self.wfile.write(body[i:i + 1009])
        except OSError:
            # A client (or the gateway) that refuses the response hangs up.
            self.close_connection = True

    def _websocket_echo(self):
        """A WebSocket handshake, then every byte echoed back as it is
        (enough to show that an upgraded connection passes through)."""
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        ).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        conn = self.connection
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            conn.sendall(data)

    def do_POST(self):
        body = self._read_body()
        entry = self._record(body)
        if self.path == "/echo":
            return self._send(200, body, self.headers.get("Content-Type", "text/plain"))
        if self.path.split("?", 1)[0] == "/echo-request":
            return self._send(200, json.dumps(entry).encode(), "application/json")
        self._send(404, b"not found")


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512


CLONE_NEWNET = 0x40000000


def _ip(*args: str, check: bool = True) -> str:
    out = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def _bind_in_netns(ns: str, addr: str, handler) -> "_Server":
    """A server bound inside namespace `ns`. A thread of its own enters the
    namespace (setns moves only the calling thread), so the rest of this
    process stays in the host's; the socket stays where it was made."""
    result: dict = {}

    def enter():
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {ns}")
            result["server"] = _Server((addr, 0), handler)
        except BaseException as e:  # handed to the caller
            result["error"] = e
        finally:
            os.close(fd)

    t = threading.Thread(target=enter)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["server"]


@dataclass
class PrivateNet:
    """10.213.N.0/24 in a namespace: `allowed` (the daemon's only
    --egress-allow-cidr) and `other`, each with the plain HTTP server."""

    ns: str
    host_if: str
    allowed: str
    other: str
    allowed_port: int = 0
    other_port: int = 0

    @staticmethod
    def start(handler, servers: list) -> "PrivateNet":
        pid = os.getpid()
        # 220..250: the Rust tests (crates/airlock/tests/common/netns.rs)
        # pick from 20..219, so the two never race for a /24.
        for n in [(pid + i) % 31 + 220 for i in range(31)]:
            if not _ip("-o", "addr", "show", "to", f"10.213.{n}.0/24").strip():
                break
        else:
            raise RuntimeError("no free 10.213.N.0/24 for the private network")
        net = PrivateNet(
            ns=f"airlock-sdk-{pid}",
            host_if=f"alks{pid % 100000}h",
            allowed=f"10.213.{n}.2",
            other=f"10.213.{n}.3",
        )
        try:
            peer = f"alks{pid % 100000}p"
            _ip("netns", "add", net.ns)
            _ip("link", "add", net.host_if, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", net.ns)
            _ip("addr", "add", f"10.213.{n}.1/24", "dev", net.host_if)
            _ip("link", "set", net.host_if, "up")
            for a in (net.allowed, net.other):
                _ip("-n", net.ns, "addr", "add", f"{a}/24", "dev", peer)
            _ip("-n", net.ns, "link", "set", peer, "up")
            allowed = _bind_in_netns(net.ns, net.allowed, handler)
            servers.append(allowed)
            other = _bind_in_netns(net.ns, net.other, handler)
            servers.append(other)
        except BaseException:
            net.close()
            raise
        net.allowed_port = allowed.server_address[1]
        net.other_port = other.server_address[1]
        return net

    def close(self) -> None:
        # The host end takes the namespace end (and its addresses) with it.
        _ip("link", "del", self.host_if, check=False)
        _ip("netns", "del", self.ns, check=False)


@dataclass
class Upstreams:
    http_port: int
    https_port: int
    # Plain HTTP on 0.0.0.0: a service on every address of the host, which
    # no allowNet rule may reach.
    wide_port: int
    ca_pem: str
    ca_file: Path
    workdir: Path
    private: PrivateNet | None = None
    servers: list = field(default_factory=list)
    received: list = field(default_factory=lambda: RECEIVED)

    def daemon_args(self) -> list[str]:
        """Points the names at these servers, and has the gateway trust
        their CA when it verifies an upstream it intercepts for secrets."""
        args = ["--upstream-ca", str(self.ca_file)]
        for name in NAMES:
            args += ["--resolve", f"{name}=127.0.0.1"]
        # Sandboxes may reach one address of the private network, nothing
        # else internal.
        if self.private is not None:
            args += ["--egress-allow-cidr", f"{self.private.allowed}/32"]
        return args

    def close(self) -> None:
        for s in self.servers:
            s.shutdown()
            s.server_close()
        if self.private is not None:
            self.private.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _git_repo(root: Path) -> Path:
    """A bare repository with one commit, ready for dumb-HTTP cloning."""
    work = root / "work"
    bare = root / "repo.git"
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True, env=env)
    (work / "README").write_text("cloned through the gateway\n")
    subprocess.run(["git", "-C", str(work), "add", "README"], check=True, env=env)
    subprocess.run(["git", "-C", str(work), "commit", "-q", "-m", "one"], check=True, env=env)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True, env=env)
    subprocess.run(["git", "-C", str(bare), "update-server-info"], check=True, env=env)
    return root


def start() -> Upstreams:
    workdir = Path(tempfile.mkdtemp(prefix="airlock-upstreams-"))
    git_root = _git_repo(workdir) if shutil.which("git") else None

    ca = trustme.CA()
    cert = ca.issue_cert(*NAMES)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ca_pem = ca.cert_pem.bytes().decode()
    ca_file = workdir / "ca.pem"
    ca_file.write_text(ca_pem)

    class Plain(_Handler):
        server_label = "http"

    class Tls(_Handler):
        server_label = "https"

    Plain.git_root = git_root
    Tls.git_root = git_root
    plain = _Server(("127.0.0.1", 0), Plain)
    tls = _Server(("127.0.0.1", 0), Tls)
    # The handshake happens in the handler thread, not in accept().
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True, do_handshake_on_connect=False)
    wide = _Server(("0.0.0.0", 0), Plain)
    servers = [plain, tls, wide]
    try:
        # Only root makes namespaces; without it (a daemon already running,
        # AIRLOCK_SDK_ENDPOINT) the tests that need the network skip.
        private = PrivateNet.start(Plain, servers) if os.geteuid() == 0 else None
    except BaseException:
        for s in servers:
            s.server_close()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    return Upstreams(
        http_port=plain.server_address[1],
        https_port=tls.server_address[1],
        wide_port=wide.server_address[1],
        ca_pem=ca_pem,
        ca_file=ca_file,
        workdir=workdir,
        private=private,
        servers=servers,
    )
