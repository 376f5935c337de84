"""Secrets through the official Python SDK: the sandbox holds placeholders;
the gateway swaps in real values only on TLS to the secret's hosts, and
masks real values in responses. Upstreams are the local servers of
upstreams.py, which record exactly what reached them.
"""

from __future__ import annotations

import base64
import json
import time

import pytest

from test_network import audit, has, py, run, sh

VALUE = "sk-live-" + "7f3a9c" * 6 + "-REAL"
PLACEHOLDER_PREFIX = "AIRLOCK_SECRET_"


def received_since(upstreams, start: int, pred=lambda e: True):
    return [e for e in upstreams.received[start:] if pred(e)]


def test_the_upstream_gets_the_value_and_the_sandbox_only_placeholders(client, upstreams, airlock):
    s = upstreams.https_port
    secrets = {"API_KEY": {"hosts": ["api.test"], "value": VALUE}}
    mark = len(upstreams.received)
    with client.sandbox.create(secrets=secrets) as sb:
        # The environment holds a placeholder, unique and unguessable.
        status, out, err = sh(sb, "printf %s \"$API_KEY\"")
        placeholder = out.decode()
        assert placeholder.startswith(PLACEHOLDER_PREFIX) and len(placeholder) >= 60, placeholder
        assert VALUE not in placeholder

        url = f"https://api.test:{s}/echo-request"
        # curl: a header, the query string, a JSON body (the system bundle
        # trusts the sandbox CA: no flags).
        status, out, err = sh(
            sb,
            f'curl -sS -m 10 -H "Authorization: Bearer $API_KEY" '
            f'-H "Content-Type: application/json" -d "{{\\"key\\": \\"$API_KEY\\"}}" '
            f'"{url}?key=$API_KEY"',
        )
        assert status["code"] == 0, err
        echoed = out.decode()
        # The echo carries the value back: the sandbox sees the placeholder.
        assert VALUE not in echoed and placeholder in echoed, echoed
        # Basic auth: the placeholder inside base64.
        status, out, err = sh(sb, f'curl -sS -m 10 -u "user:$API_KEY" "{url}"')
        assert status["code"] == 0, err
        # A form body, through Python's urllib (REQUESTS_CA_BUNDLE /
        # SSL_CERT_FILE point at the bundle).
        status, out, err = py(
            sb,
            "import os, urllib.request, urllib.parse\n"
            "data = urllib.parse.urlencode({'token': os.environ['API_KEY']}).encode()\n"
            f"print(urllib.request.urlopen('{url}', data=data).read().decode())",
        )
        assert status["code"] == 0, err
        assert VALUE not in out.decode()
        # Node and Deno fetch.
        for cmd in (
            "node -e \"fetch('URL', {headers: {'x-key': process.env.API_KEY}}).then(r => r.text()).then(console.log)\"",
            "deno eval \"console.log(await (await fetch('URL', {headers: {'x-key': Deno.env.get('API_KEY')}})).text())\"",
        ):
            status, out, err = sh(sb, cmd.replace("URL", url))
            assert status["code"] == 0, (cmd, err)
            assert VALUE not in out.decode() and placeholder in out.decode(), out

        # requests (REQUESTS_CA_BUNDLE points at the system bundle).
        status, out, err = py(
            sb,
            "import os, requests\n"
            f"r = requests.post('{url}', json={{'api_key': os.environ['API_KEY']}})\n"
            "print(r.text)",
        )
        assert status["code"] == 0, err
        assert VALUE not in out.decode() and placeholder in out.decode(), out

        got = received_since(upstreams, mark, lambda e: e["server"] == "https")
        assert len(got) == 6, got
        bearer, basic, form, node, deno, req = got
        assert json.loads(req["body"]) == {"api_key": VALUE}
        assert bearer["headers"]["authorization"] == f"Bearer {VALUE}"
        assert bearer["path"].endswith(f"?key={VALUE}")
        assert json.loads(bearer["body"]) == {"key": VALUE}
        assert base64.b64decode(basic["headers"]["authorization"].split()[1]).decode() == f"user:{VALUE}"
        assert form["body"] == f"token={VALUE}"
        assert node["headers"]["x-key"] == VALUE and deno["headers"]["x-key"] == VALUE
        assert all(placeholder not in json.dumps(e) for e in got), got

        events = audit(airlock, sb.id, lambda ev: sum("API_KEY" in (e.get("secrets") or []) for e in ev) >= 6)
        used = [e for e in events if "API_KEY" in (e.get("secrets") or [])]
        assert len(used) >= 6, events
        assert all(VALUE not in json.dumps(e) for e in events)


def test_a_placeholder_sent_elsewhere_stays_a_placeholder(client, upstreams):
    s = upstreams.https_port
    secrets = {"API_KEY": {"hosts": ["api.test"], "value": VALUE}}
    mark = len(upstreams.received)
    with client.sandbox.create(secrets=secrets, allow_net=["other.test"]) as sb:
        sb.fs.write_text_file("/tmp/upstream-ca.pem", upstreams.ca_pem)
        status, out, err = sh(
            sb,
            f'curl -sS -m 10 --cacert /tmp/upstream-ca.pem -H "x-key: $API_KEY" https://other.test:{s}/echo-request',
        )
        assert status["code"] == 0, err
        got = received_since(upstreams, mark)
        assert len(got) == 1 and got[0]["headers"]["x-key"].startswith(PLACEHOLDER_PREFIX), got
        # Plain HTTP to the secret's own host: not TLS, never substituted.
        status, out, err = sh(sb, f'curl -sS -m 10 -H "x-key: $API_KEY" http://api.test:{upstreams.http_port}/echo-request')
        assert status["code"] == 0, err
        got = received_since(upstreams, mark)
        assert got[-1]["headers"]["x-key"].startswith(PLACEHOLDER_PREFIX), got


def test_keep_alive_and_chunked_bodies(client, upstreams):
    s = upstreams.https_port
    secrets = {"API_KEY": {"hosts": ["api.test"], "value": VALUE}}
    mark = len(upstreams.received)
    code = f"""
import http.client, os, ssl
key = os.environ["API_KEY"]
c = http.client.HTTPSConnection("api.test", {s}, context=ssl.create_default_context())
c.request("POST", "/echo-request", body=f"first {{key}}".encode(), headers={{"x-key": key}})
print(c.getresponse().read().decode())
def chunks():
    yield b"second "
    yield key[:10].encode()
    yield key[10:].encode()
    yield b" end"
c.request("POST", "/echo-request", body=chunks(), encode_chunked=True)
print(c.getresponse().read().decode())
"""
    with client.sandbox.create(secrets=secrets) as sb:
        status, out, err = py(sb, code)
        assert status["code"] == 0, err
        assert VALUE not in out.decode()
    got = received_since(upstreams, mark)
    assert [e["body"] for e in got] == [f"first {VALUE}", f"second {VALUE} end"], got


def test_the_value_is_nowhere_in_the_sandbox_or_the_logs(client, upstreams, airlock):
    secrets = {"API_KEY": {"hosts": ["api.test"], "value": VALUE}}
    # The search gets the value reversed, so it is not in any argv.
    needle = VALUE[::-1]
    code = f"""
import os
needle = {needle!r}[::-1].encode()
hits = []
for root in ["/etc", "/home", "/root", "/tmp", "/var", "/usr/local", "/run"]:
    for d, dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            try:
                if needle in open(p, "rb").read():
                    hits.append(p)
            except OSError:
                pass
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) != os.getpid():
        for f in ("environ", "cmdline"):
            try:
                if needle in open(f"/proc/{{pid}}/{{f}}", "rb").read():
                    hits.append(f"/proc/{{pid}}/{{f}}")
            except OSError:
                pass
print(hits)
"""
    with client.sandbox.create(secrets=secrets) as sb:
        # Make a request first, so the value has been on the wire.
        sh(sb, f'curl -sS -m 10 -H "x-key: $API_KEY" https://api.test:{upstreams.https_port}/echo-request')
        status, out, err = py(sb, code)
        assert status["code"] == 0, err
        assert out.strip() == b"[]", out
    log = airlock.get("log")
    if log is not None:
        assert VALUE not in log.read_text(errors="replace")


@pytest.mark.parametrize(
    "secrets, message",
    [
        ({"K": {"hosts": [], "value": "v"}}, "hosts"),
        ({"K": {"hosts": ["api.test"], "value": ""}}, "value"),
        ({"K": {"hosts": ["https://api.test"], "value": "v"}}, "URLs are not allowed"),
        ({"1K": {"hosts": ["api.test"], "value": "v"}}, "not a valid environment variable name"),
    ],
)
def test_bad_secrets_are_refused_at_create(client, secrets, message):
    with pytest.raises(Exception) as e:
        with client.sandbox.create(secrets=secrets):
            pass
    # The SDK raises the HTTP 400; the protocol's error body is in it.
    text = repr(e.value)
    assert "INVALID_CONFIG" in text and message in text, text


def test_http2_from_the_sandbox_and_websocket_upgrades_pass_through(client, upstreams):
    s = upstreams.https_port
    secrets = {"API_KEY": {"hosts": ["api.test"], "value": VALUE}}
    mark = len(upstreams.received)
    ws = f"""
import os, socket, ssl
key = os.environ["API_KEY"]
ctx = ssl.create_default_context()
ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection(("api.test", {s})), server_hostname="api.test")
s.sendall((
    "GET /ws HTTP/1.1\\r\\nHost: api.test\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n"
    f"x-key: {{key}}\\r\\n\\r\\n"
).encode())
head = b""
while b"\\r\\n\\r\\n" not in head:
    head += s.recv(4096)
assert head.startswith(b"HTTP/1.1 101"), head
payload = b"raw bytes after the upgrade " + key.encode()
s.sendall(payload)
got = b""
while len(got) < len(payload):
    got += s.recv(65536)
print(got == payload)
"""
    with client.sandbox.create(secrets=secrets) as sb:
        # curl speaks HTTP/2 to the gateway when offered (ALPN); the upstream
        # here only speaks HTTP/1.1: the gateway translates.
        status, out, err = sh(
            sb,
            f'curl -sS -m 10 --http2 -o /dev/null -w "%{{http_version}}" -H "x-key: $API_KEY" '
            f"https://api.test:{s}/echo-request",
        )
        assert (status["code"], out) == (0, b"2"), err
        status, out, err = py(sb, ws)
        assert status["code"] == 0, err
        # After the upgrade bytes pass as they are: no substitution.
        assert out.strip() == b"True", (out, err)
    got = received_since(upstreams, mark)
    assert [e["path"] for e in got] == ["/echo-request", "/ws"], got
    assert all(e["headers"]["x-key"] == VALUE for e in got), got


# Codings an upstream may answer with although the gateway asked for
# `Accept-Encoding: identity` (the route /coded/ of upstreams.py ignores it),
# each as a URL path and query: one coding and stacks, with Content-Length
# and chunked, and in Transfer-Encoding.
CODED = [
    "gzip",
    "gzip?chunked=1",
    "x-gzip",
    "deflate",
    "deflate?chunked=1",
    "deflate-raw",
    "br",
    "br?chunked=1",
    "zstd",
    "zstd?chunked=1",
    "gzip,br?chunked=1",
    "deflate-raw,zstd,gzip",
    "gzip?te=1",
]


def test_a_compressed_echo_of_the_value_reaches_the_sandbox_masked(client, upstreams):
    """Invariant: the real value never reaches the sandbox, whatever content
    or transfer coding the upstream wraps it in; the gateway decodes, masks
    and forwards the body decoded (attack: an upstream that ignores
    `Accept-Encoding: identity` echoes the Authorization header gzip'd, and
    the sandbox's client inflates it)."""
    s = upstreams.https_port
    secrets = {"API_KEY": {"hosts": ["api.test"], "value": VALUE}}
    mark = len(upstreams.received)
    # One shell for all the requests: each answer with its headers, between
    # markers. --compressed makes curl ask for and decode every coding it
    # knows; it speaks HTTP/2 to the gateway unless told HTTP/1.1 (the
    # upstream speaks HTTP/1.1 either way).
    cases = [(version, path) for version in ("--http1.1", "--http2") for path in CODED]
    script = "".join(
        f'echo "@@@ {version} {path}"; curl -sS -m 10 {version} --compressed -D - '
        f'-H "Authorization: Bearer $API_KEY" "https://api.test:{s}/coded/{path}"; echo "@@@ rc $?"\n'
        for version, path in cases
    )
    with client.sandbox.create(secrets=secrets) as sb:
        status, out, err = sh(sb, "printf %s \"$API_KEY\"")
        placeholder = out.decode()
        # This curl decodes every coding under test.
        status, out, err = sh(sb, "curl --version")
        features = out.decode()
        assert all(f in features for f in ("libz", "brotli", "zstd")), features

        status, out, err = sh(sb, script)
        assert status["code"] == 0, err
        text = out.decode(errors="replace")
        assert VALUE not in text
        answers = text.split("@@@ ")[1:]
        assert len(answers) == 2 * len(cases), text[:2000]
        for case, (head, rc) in zip(cases, zip(answers[::2], answers[1::2])):
            assert rc.strip() == "rc 0", (case, head[-500:], err)
            headers, _, body = head.partition("\r\n\r\n")
            want = "HTTP/1.1 200" if case[0] == "--http1.1" else "HTTP/2 200"
            assert headers.split("\n", 2)[1].startswith(want), (case, headers)
            # Decoded by the gateway: no coding left for the client to undo.
            assert "content-encoding" not in headers.lower(), (case, headers)
            assert placeholder in body and VALUE not in body, (case, body[-500:])

        # Python requests and Node's fetch inflate gzip themselves.
        url = f"https://api.test:{s}/coded/gzip?chunked=1"
        status, out, err = py(
            sb,
            "import os, requests\n"
            f"print(requests.get('{url}', headers={{'Authorization': 'Bearer ' + os.environ['API_KEY']}}).text)",
        )
        assert status["code"] == 0, err
        assert VALUE.encode() not in out and placeholder.encode() in out, out[-300:]
        status, out, err = sh(
            sb,
            f"node -e \"fetch('{url}', {{headers: {{authorization: 'Bearer ' + process.env.API_KEY}}}})"
            ".then(r => r.text()).then(console.log)\"",
        )
        assert status["code"] == 0, err
        assert VALUE.encode() not in out and placeholder.encode() in out, out[-300:]

    # The upstream did get the value, and was asked for no coding.
    got = received_since(upstreams, mark)
    assert len(got) == len(cases) + 2, got
    assert all(e["headers"]["authorization"] == f"Bearer {VALUE}" for e in got), got
    assert all(e["headers"]["accept-encoding"] == "identity" for e in got), got


@pytest.mark.parametrize("path", ["x-unknown", "gzip,compress?chunked=1", "aes128gcm", "x-unknown?te=1"])
def test_a_coding_the_gateway_cannot_decode_is_refused(client, upstreams, airlock, path):
    """Invariant: a response the gateway cannot decode, and so cannot mask,
    never reaches the sandbox: a 502 that says why, and an audit event."""
    s = upstreams.https_port
    secrets = {"API_KEY": {"hosts": ["api.test"], "value": VALUE}}
    with client.sandbox.create(secrets=secrets) as sb:
        status, out, err = sh(
            sb,
            f'curl -sS -m 10 -w "\\n%{{http_code}}" -H "Authorization: Bearer $API_KEY" '
            f'"https://api.test:{s}/coded/{path}"',
        )
        assert status["code"] == 0, err
        text = out.decode(errors="replace")
        assert text.endswith("\n502"), text[-300:]
        assert "cannot decode" in text and "refused" in text, text
        assert VALUE not in text
        events = audit(airlock, sb.id, lambda ev: has(ev, reason="refused 1 response"))
    assert has(events, name="api.test", reason="refused 1 response"), events
    assert all(VALUE not in json.dumps(e) for e in events)
