"""The egress gateway, through the official Python SDK: allowNet as Deno
Sandbox documents it, every denial path, and the audit trail.

Upstreams are local servers (upstreams.py) that the daemon reaches through
its resolver override (`--resolve NAME=127.0.0.1`); nothing here touches
the internet. Clients inside the sandbox: curl, Python, Node, Deno, git.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request

import pytest

from test_sdk import run, sh
from upstreams import stream_sha256

CA = "/tmp/test-ca.pem"


def py(sb, code, **kwargs):
    return run(sb, "python3", "-c", code, **kwargs)


def with_ca(sb, upstreams):
    sb.fs.write_text_file(CA, upstreams.ca_pem)


def audit(airlock, sandbox_id, want=lambda events: True, timeout_s=10.0, limit=1000):
    """The sandbox's network events from the daemon's HTTP endpoint, polled
    until `want(events)` holds (events are written in batches)."""
    url = f"{airlock['endpoint']}/api/v3/sandbox/{sandbox_id}/audit?limit={limit}"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {airlock['token']}"})
    deadline = time.monotonic() + timeout_s
    while True:
        with urllib.request.urlopen(req, timeout=10) as resp:
            events = json.load(resp)["events"]
        if want(events) or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def has(events, **match):
    return any(all(str(v) in str(e.get(k)) for k, v in match.items()) for e in events)


def host_ipv4() -> str | None:
    """The host's own non-loopback address (no packet is sent)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") else ip


# --------------------------------------------------------------------------- allowed


def test_no_allow_net_reaches_nothing(client, upstreams, airlock):
    with client.sandbox.create() as sb:
        started = time.monotonic()
        status, out, err = sh(sb, f"curl -sS -m 10 http://api.test:{upstreams.http_port}/hello")
        assert status["code"] == 6, (out, err)  # could not resolve host
        assert b"resolve" in err.lower(), err
        code = f"""
import socket, errno
for target in [("198.18.0.10", 80), ("1.1.1.1", 443), ("100.96.0.1", 80)]:
    s = socket.socket()
    s.settimeout(10)
    try:
        s.connect(target)
        print("CONNECTED", target)
    except ConnectionRefusedError:
        print("refused", target)
    except OSError as e:
        print("error", target, e)
try:
    socket.getaddrinfo("api.test", 80)
    print("RESOLVED")
except socket.gaierror:
    print("nxdomain")
"""
        status, out, err = py(sb, code)
        elapsed = time.monotonic() - started
        text = out.decode()
        assert "CONNECTED" not in text and "RESOLVED" not in text, text
        assert text.count("refused") == 3 and "nxdomain" in text, (text, err)
        # Refusals are immediate, not timeouts.
        assert elapsed < 8, elapsed
        events = audit(airlock, sb.id, lambda ev: has(ev, name="1.1.1.1"))
        assert has(events, kind="dns", name="api.test", verdict="denied"), events
        assert has(events, kind="tcp", name="1.1.1.1", port=443, verdict="denied"), events
        assert all(e["verdict"] == "denied" for e in events), events


def test_allowed_host_over_http_and_https_from_every_client(client, upstreams, airlock):
    h, s = upstreams.http_port, upstreams.https_port
    with client.sandbox.create(allow_net=["api.test"]) as sb:
        with_ca(sb, upstreams)
        status, out, err = sh(sb, f"curl -sS -m 10 http://api.test:{h}/hello")
        assert out == f"hello from api.test:{h} over http".encode(), (status, err)
        status, out, err = sh(sb, f"curl -sS -m 10 --cacert {CA} https://api.test:{s}/hello")
        assert out == f"hello from api.test:{s} over https".encode(), (status, err)
        status, out, err = py(
            sb,
            "import ssl, urllib.request\n"
            f"ctx = ssl.create_default_context(cafile='{CA}')\n"
            f"print(urllib.request.urlopen('https://api.test:{s}/hello', context=ctx).read().decode())",
        )
        assert out.strip() == f"hello from api.test:{s} over https".encode(), err
        # Variables go through the shell: the Python SDK camel-cases the
        # keys of `env` (DENO_CERT would arrive as another name).
        status, out, err = sh(
            sb,
            f"NODE_EXTRA_CA_CERTS={CA} node -e "
            f"\"fetch('https://api.test:{s}/hello').then(r => r.text()).then(t => console.log(t))\"",
        )
        assert out.strip() == f"hello from api.test:{s} over https".encode(), err
        status, out, err = sh(
            sb,
            f"DENO_CERT={CA} DENO_NO_UPDATE_CHECK=1 deno eval "
            f"\"console.log(await (await fetch('https://api.test:{s}/hello')).text())\"",
        )
        assert out.strip() == f"hello from api.test:{s} over https".encode(), err
        status, out, err = sh(
            sb,
            f"GIT_SSL_CAINFO={CA} git clone -q https://api.test:{s}/git/repo.git /tmp/repo "
            "&& cat /tmp/repo/README",
        )
        assert out == b"cloned through the gateway\n", (status, err)
        # A raw socket, no HTTP library.
        status, out, err = py(
            sb,
            "import socket\n"
            f"s = socket.create_connection(('api.test', {h}), timeout=10)\n"
            "s.sendall(b'GET /hello HTTP/1.0\\r\\nHost: raw\\r\\n\\r\\n')\n"
            "data = b''\n"
            "while chunk := s.recv(4096): data += chunk\n"
            "print(data.split(b'\\r\\n\\r\\n', 1)[1].decode())",
        )
        assert out.strip() == b"hello from raw over http", err
        events = audit(
            airlock, sb.id, lambda ev: sum(e["kind"] == "tcp" for e in ev) >= 7
        )
        tcp = [e for e in events if e["kind"] == "tcp"]
        assert len(tcp) >= 7, events
        assert all(e["verdict"] == "allowed" for e in tcp), tcp
        assert all(e["name"] == "api.test" for e in tcp), tcp
        assert all(e["upstream"].startswith("127.0.0.1:") for e in tcp), tcp
        assert all(e["bytesIn"] > 0 and e["bytesOut"] > 0 for e in tcp), tcp
        assert has(events, kind="dns", name="api.test", verdict="allowed"), events


def test_allow_net_rule_forms(client, upstreams):
    h, s = upstreams.http_port, upstreams.https_port
    rules = [f"api.test:{h}", "*.wild.test"]
    with client.sandbox.create(allow_net=rules) as sb:
        with_ca(sb, upstreams)

        def curl(url):
            status, out, err = sh(sb, f"curl -sS -m 10 --cacert {CA} {url}")
            return status["code"], out.decode(), err.decode()

        code, out, _ = curl(f"http://api.test:{h}/hello")
        assert (code, out) == (0, f"hello from api.test:{h} over http")
        # Same host, a port the rule does not name: refused.
        code, _, err = curl(f"https://api.test:{s}/hello")
        assert code == 7, err  # failed to connect
        # The wildcard: any subdomain, any depth, any port; not the apex.
        code, out, err = curl(f"https://a.wild.test:{s}/hello")
        assert (code, out) == (0, f"hello from a.wild.test:{s} over https"), err
        code, out, err = curl(f"http://x.y.wild.test:{h}/hello")
        assert (code, out) == (0, f"hello from x.y.wild.test:{h} over http"), err
        assert curl(f"http://wild.test:{h}/hello")[0] == 6
        assert curl(f"http://other.test:{h}/hello")[0] == 6
        # Names are case-insensitive.
        code, out, _ = curl(f"http://API.Test:{h}/hello")
        assert code == 0, out


def test_ip_literal_rule(client, upstreams, airlock):
    """An IP literal in allowNet is an allow rule like a name; whether an
    internal address may be reached at all is the operator's to say (the
    suite's daemon allows exactly `private.allowed`)."""
    net = upstreams.private
    if airlock["bin"] is None or net is None:
        pytest.skip("needs the suite's own daemon, started with --egress-allow-cidr")
    ip, port = net.allowed, net.allowed_port
    with client.sandbox.create(allow_net=[f"{ip}:{port}"]) as sb:
        status, out, err = sh(sb, f"curl -sS -m 10 http://{ip}:{port}/hello")
        assert out == f"hello from {ip}:{port} over http".encode(), err
        # The same address on another port is not allowed.
        status, out, err = sh(sb, f"curl -sS -m 10 http://{ip}:{net.other_port}/hello")
        assert status["code"] == 7, err


def test_a_tenant_cannot_name_its_way_to_internal_addresses(client, upstreams, airlock):
    """ATTACK: allowNet comes from the tenant, so naming an internal address
    there must not reach it: another address of the same private network
    (listening, and reachable from the host), the cloud metadata address,
    and the host's own address with a service on it."""
    net = upstreams.private
    if net is None:
        pytest.skip("the private network needs root to make")
    other = f"{net.other}:{net.other_port}"
    with urllib.request.urlopen(f"http://{other}/hello", timeout=5) as resp:
        assert resp.read() == f"hello from {other} over http".encode()
    targets = {"private": other, "metadata": "169.254.169.254:80"}
    host = host_ipv4()
    if host is not None:
        targets["host"] = f"{host}:{upstreams.wide_port}"
    allow = [t.rsplit(":", 1)[0] for t in targets.values()]
    with client.sandbox.create(allow_net=allow) as sb:
        for what, target in targets.items():
            status, out, err = sh(sb, f"curl -sS -m 10 http://{target}/hello")
            assert status["code"] == 7, (what, out, err)  # refused
        want = {
            "private": "is a private address; the operator can allow it with --egress-allow-cidr",
            "metadata": "is a link-local cloud metadata address",
            "host": "of the daemon's host",
        }

        def complete(ev):
            return all(has(ev, name=t.rsplit(":", 1)[0], verdict="denied") for t in targets.values())

        events = audit(airlock, sb.id, complete)
        for what, target in targets.items():
            name, port = target.rsplit(":", 1)
            assert has(events, kind="tcp", name=name, port=port, verdict="denied", reason=want[what]), (
                what,
                events,
            )


# --------------------------------------------------------------------------- denied


def test_every_denial_path_fails_fast_and_is_audited(client, upstreams, airlock):
    host_name = socket.gethostname()
    try:
        host_addrs = {a[4][0] for a in socket.getaddrinfo(host_name, 80, socket.AF_INET)}
    except socket.gaierror:
        host_addrs = set()
    daemon_port = int(airlock["endpoint"].rsplit(":", 1)[1])
    allow = ["api.test", "daemon.test", host_name]
    with client.sandbox.create(allow_net=allow) as sb:
        with_ca(sb, upstreams)
        code = f"""
import socket, ssl, json
out = {{}}
def connect(name, port):
    s = socket.socket()
    s.settimeout(10)
    try:
        s.connect((name, port))
        return s
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        return f"error {{e.errno}}"

# The daemon's own API port, through a name that maps to loopback.
r = connect("daemon.test", {daemon_port})
out["daemon"] = r if isinstance(r, str) else "CONNECTED"

# A name whose real address is internal (the host's own name).
r = connect({host_name!r}, 80)
out["internal"] = r if isinstance(r, str) else "CONNECTED"

# Domain fronting: TLS to api.test's address with another server name.
s = connect("api.test", {upstreams.https_port})
ctx = ssl.create_default_context(cafile="{CA}")
ctx.check_hostname = False
try:
    ctx.wrap_socket(s, server_hostname="evil.test").do_handshake()
    out["fronting"] = "HANDSHAKE"
except (OSError, ssl.SSLError) as e:
    out["fronting"] = type(e).__name__

# DNS to any other server: dropped.
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(1)
u.sendto(b"\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x03api\\x04test\\x00\\x00\\x01\\x00\\x01", ("8.8.8.8", 53))
try:
    u.recvfrom(512)
    out["udp"] = "ANSWERED"
except socket.timeout:
    out["udp"] = "dropped"

# DNS over TCP to the gateway: refused.
r = connect("100.96.0.1", 53)
out["dns_tcp"] = r if isinstance(r, str) else "CONNECTED"

# IPv6: no route at all.
s6 = socket.socket(socket.AF_INET6)
s6.settimeout(5)
try:
    s6.connect(("2001:db8::1", 80))
    out["ipv6"] = "CONNECTED"
except OSError as e:
    out["ipv6"] = f"error {{e.errno}}"

# The host's loopback: 127.0.0.1 is the sandbox's own.
r = connect("127.0.0.1", {upstreams.http_port})
out["loopback"] = r if isinstance(r, str) else "CONNECTED"
print(json.dumps(out))
"""
        status, out, err = py(sb, code)
        assert status["code"] == 0, err
        got = json.loads(out)
        assert got["daemon"] == "refused", got
        if host_addrs:
            assert got["internal"] == "refused", got
        assert got["fronting"] in ("ConnectionResetError", "SSLEOFError", "SSLError", "SSLZeroReturnError", "OSError"), got
        assert got["udp"] == "dropped", got
        assert got["dns_tcp"] == "refused", got
        assert got["ipv6"].startswith("error"), got
        assert got["loopback"] == "refused", got

        def complete(ev):
            return has(ev, reason="TLS server name") and has(ev, kind="udp")

        events = audit(airlock, sb.id, complete)
        assert has(events, name="daemon.test", verdict="denied", reason="daemon"), events
        if host_addrs:
            assert has(events, name=host_name, verdict="denied", reason="resolves to"), events
        assert has(events, name="api.test", verdict="denied", reason="TLS server name evil.test"), events
        assert has(events, kind="udp", name="8.8.8.8", port=53, verdict="denied"), events
        assert has(events, kind="tcp", name="100.96.0.1", verdict="denied"), events


# --------------------------------------------------------------------------- volume


def test_hundred_megabytes_arrive_intact(client, upstreams, airlock):
    n = 100 * 1024 * 1024
    with client.sandbox.create(allow_net=["api.test"]) as sb:
        with_ca(sb, upstreams)
        status, out, err = sh(
            sb,
            f"curl -sS -m 120 --cacert {CA} https://api.test:{upstreams.https_port}/bytes/{n} | sha256sum",
        )
        assert status["code"] == 0, err
        assert out.split()[0].decode() == stream_sha256(n)
        events = audit(airlock, sb.id, lambda ev: has(ev, kind="tcp"))
        tcp = [e for e in events if e["kind"] == "tcp"]
        assert tcp and tcp[0]["bytesIn"] > n, tcp


def test_two_hundred_concurrent_connections(client, upstreams):
    code = f"""
import socket
conns = [socket.create_connection(("api.test", {upstreams.http_port}), timeout=30) for _ in range(200)]
for i, c in enumerate(conns):
    c.sendall(f"GET /hello HTTP/1.0\\r\\nHost: c{{i}}\\r\\n\\r\\n".encode())
ok = 0
for i, c in enumerate(conns):
    data = b""
    while chunk := c.recv(4096):
        data += chunk
    ok += data.endswith(f"hello from c{{i}} over http".encode())
print(ok)
"""
    with client.sandbox.create(allow_net=["api.test"]) as sb:
        status, out, err = py(sb, code)
        assert status["code"] == 0, err
        assert out.strip() == b"200", (out, err)


async def test_a_saturating_sandbox_does_not_stall_another(aclient, upstreams):
    big = 4 * 1024 * 1024 * 1024
    url = f"http://api.test:{upstreams.http_port}"
    async with aclient.sandbox.create(allow_net=["api.test"]) as hog, aclient.sandbox.create(
        allow_net=["api.test"]
    ) as quiet:
        flood = await hog.spawn(
            "bash", args=["-c", f"for i in 1 2 3 4; do curl -s {url}/bytes/{big} -o /dev/null & done; wait"],
            stdout="null", stderr="null",
        )
        await asyncio.sleep(1)
        p = await quiet.spawn(
            "bash",
            args=["-c", f"for i in $(seq 20); do curl -sS -m 10 {url}/hello || exit 1; echo; done"],
            stdout="piped", stderr="piped",
        )
        out, err = await asyncio.gather(p.stdout.read(), p.stderr.read())
        status = await asyncio.wait_for(p.wait(), 60)
        assert status["code"] == 0, err
        assert out.count(b"hello from") == 20
        # The flood was still going while the quiet sandbox got its answers.
        check = await hog.spawn(
            "bash", args=["-c", "grep -qx curl /proc/[0-9]*/comm"], stdout="null", stderr="null"
        )
        assert (await check.wait())["code"] == 0
        await flood.kill()


def test_a_dns_flood_cannot_flood_the_audit_log(client, airlock):
    code = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
def query(i):
    labels = b"".join(bytes([len(p)]) + p for p in f"x{i}.flood.test".encode().split(b"."))
    return (i % 65536).to_bytes(2, "big") + bytes.fromhex("01000001000000000000") + labels + bytes.fromhex("0000010001")
answered = 0
for i in range(5000):
    s.sendto(query(i), ("100.96.0.1", 53))
    try:
        s.recvfrom(512)
        answered += 1
    except socket.timeout:
        pass
time.sleep(1.5)
s.sendto(query(99999), ("100.96.0.1", 53))
s.recvfrom(512)
print(answered)
"""
    with client.sandbox.create() as sb:
        status, out, err = py(sb, code)
        assert status["code"] == 0, err
        # Every query was answered (NXDOMAIN): the gateway kept serving.
        assert int(out) == 5000, out
        events = audit(airlock, sb.id, lambda ev: has(ev, reason="not recorded"), limit=10000)
        assert has(events, reason="events not recorded: over the audit rate"), events[-3:]
        assert len(events) < 4000, len(events)
