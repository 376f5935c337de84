"""SSH through the official Python SDK: `sandbox.expose_ssh()` answers
{hostname, username, port} for the daemon's SSH gateway, and the real OpenSSH
client (ssh, scp) logs into the sandbox with that username alone: exec with
exit status, files shared with the SDK's `fs`, scp. `create(ssh=True)` is
accepted (the SDK only sends it; `sandbox.ssh` stays None). A killed
sandbox's username is refused, and another token cannot get one.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import time
import uuid

import pytest
from deno_sandbox import AsyncDenoDeploy
from deno_sandbox.errors import HTTPStatusError
from deno_sandbox.sandbox import AsyncSandbox

# No config, no host key prompts, never ask a person (as crates/airlock/tests/ssh.rs).
SSH_OPTS = [
    "-F", "/dev/null",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "BatchMode=yes",
    "-o", "LogLevel=ERROR",
    "-o", "ConnectTimeout=10",
]


def ssh(creds: dict, command: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    """`ssh -p PORT USERNAME@HOSTNAME COMMAND` with the SDK's credentials."""
    return subprocess.run(
        ["ssh", *SSH_OPTS, "-p", str(creds["port"]), f"{creds['username']}@{creds['hostname']}",
         command],
        input=stdin, capture_output=True, timeout=60,
    )


def scp(creds: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["scp", *SSH_OPTS, "-P", str(creds["port"]), *args],
        capture_output=True, timeout=120,
    )


def describe(p: subprocess.CompletedProcess) -> str:
    return f"exit {p.returncode}\nstdout: {p.stdout!r}\nstderr: {p.stderr!r}"


def check_creds(creds, airlock) -> None:
    """The reply's shape: the SDK returns the JSON as-is (ExposeSSHResult)."""
    assert set(creds) == {"hostname", "username", "port"}, creds
    assert creds["hostname"] == "127.0.0.1", creds
    assert isinstance(creds["username"], str) and creds["username"], creds
    assert isinstance(creds["port"], int) and not isinstance(creds["port"], bool), creds
    if airlock["ssh_port"] is not None:
        assert creds["port"] == airlock["ssh_port"], (creds, airlock["ssh_port"])


def assert_refused(creds) -> None:
    """ssh exits 255 with "Permission denied" for a username that no longer
    maps to a live sandbox; the daemon may take a moment after a kill."""
    deadline = time.monotonic() + 15
    while True:
        p = ssh(creds, "echo still-here")
        if p.returncode == 255 and b"Permission denied" in p.stderr:
            return
        assert time.monotonic() < deadline, f"the username still works: {describe(p)}"
        time.sleep(0.25)


def test_expose_ssh_answers_the_gateway(client, airlock):
    with client.sandbox.create() as sb:
        assert sb.ssh is None
        creds = sb.expose_ssh()
        check_creds(creds, airlock)
        # Each call is a fresh random username, and both log in.
        again = sb.expose_ssh()
        check_creds(again, airlock)
        assert again["username"] != creds["username"]
        for c in (creds, again):
            p = ssh(c, "echo hi")
            assert p.returncode == 0 and p.stdout == b"hi\n", describe(p)


def test_exec_gives_output_and_exit_status(client):
    with client.sandbox.create() as sb:
        creds = sb.expose_ssh()
        p = ssh(creds, "echo out-$((6*7)); echo err >&2; cat; exit 7", b"from stdin\n")
        assert p.returncode == 7, describe(p)
        assert p.stdout == b"out-42\nfrom stdin\n", describe(p)
        assert p.stderr == b"err\n", describe(p)
        # The same sandbox the SDK drives: a process it starts sees the marker.
        sb.fs.write_text_file("/tmp/marker", sb.id)
        p = ssh(creds, "cat /tmp/marker")
        assert p.returncode == 0 and p.stdout.decode() == sb.id, describe(p)


def test_files_cross_between_the_sdk_and_ssh(client):
    with client.sandbox.create() as sb:
        creds = sb.expose_ssh()
        data = os.urandom(64 * 1024)
        sb.fs.write_file("/tmp/from-sdk.bin", data)
        p = ssh(creds, "cat /tmp/from-sdk.bin")
        assert p.returncode == 0, describe(p)
        assert p.stdout == data
        # And back: bytes piped into ssh, read with the SDK.
        other = os.urandom(64 * 1024)
        p = ssh(creds, "mkdir -p /tmp/d && cat > /tmp/d/from-ssh.bin", other)
        assert p.returncode == 0, describe(p)
        assert sb.fs.read_file("/tmp/d/from-ssh.bin") == other


def test_scp_up_is_read_byte_for_byte_by_the_sdk(client, tmp_path):
    with client.sandbox.create() as sb:
        creds = sb.expose_ssh()
        data = os.urandom(4 << 20)
        src = tmp_path / "blob.bin"
        src.write_bytes(data)
        remote = f"{creds['username']}@{creds['hostname']}:/tmp/blob.bin"
        p = scp(creds, str(src), remote)
        assert p.returncode == 0, describe(p)
        # The Python SDK reads at most 512 KiB a message: read through a handle.
        f = sb.fs.open("/tmp/blob.bin")
        got = bytearray()
        while len(got) < len(data):
            got += f.read(min(512 * 1024, len(data) - len(got)))
        f.close()
        assert sb.fs.stat("/tmp/blob.bin")["size"] == len(data)
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
        # And down: a file the SDK wrote, fetched with scp.
        sb.fs.write_file("/tmp/down.bin", io.BytesIO(data[: 1 << 20]))
        back = tmp_path / "down.bin"
        p = scp(creds, f"{creds['username']}@{creds['hostname']}:/tmp/down.bin", str(back))
        assert p.returncode == 0, describe(p)
        assert back.read_bytes() == data[: 1 << 20]


def test_create_with_ssh_true(client, airlock):
    with client.sandbox.create(ssh=True) as sb:
        # The SDK sends "ssh": true and never learns credentials itself.
        assert sb.ssh is None
        p = sb.spawn("sh", args=["-c", "echo usable"], stdout="piped", stderr="piped")
        assert p.stdout.read() == b"usable\n"
        assert p.wait()["code"] == 0
        creds = sb.expose_ssh()
        check_creds(creds, airlock)
        p = ssh(creds, "echo via-ssh; exit 3")
        assert p.returncode == 3 and p.stdout == b"via-ssh\n", describe(p)


def test_a_killed_sandboxs_username_is_refused(client):
    with client.sandbox.create() as sb:
        creds = sb.expose_ssh()
        p = ssh(creds, "true")
        assert p.returncode == 0, describe(p)
        sb.kill()
        assert_refused(creds)
    # A username nobody was given is refused the same way.
    assert_refused({**creds, "username": "x" + creds["username"][1:]})


def test_a_closed_sandboxs_username_is_refused(client):
    with client.sandbox.create() as sb:
        creds = sb.expose_ssh()
        assert ssh(creds, "true").returncode == 0
    assert_refused(creds)


async def test_another_token_cannot_expose_this_sandbox(aclient, airlock):
    if airlock["bin"] is None:
        pytest.skip("needs the suite's own daemon to make a second token")
    made = subprocess.run(
        [str(airlock["bin"]), "token", "create", "--store", str(airlock["store"]),
         f"other-{uuid.uuid4().hex[:12]}"],
        capture_output=True, text=True, check=True,
    )
    other = AsyncDenoDeploy({"token": made.stdout.split()[-1]})
    async with aclient.sandbox.create() as sb:
        # The other token cannot connect to it...
        with pytest.raises(Exception):
            async with other.sandbox.connect(sb.id):
                pass
        # ...nor, through the SDK's own expose_ssh with its credentials,
        # get a username for it: 404, as for a sandbox that is not there.
        foreign = AsyncSandbox(other.sandbox._client, sb._rpc, sb.id)
        with pytest.raises(HTTPStatusError) as e:
            await foreign.expose_ssh()
        assert e.value.status_code == 404, e.value
        # The owner still can.
        creds = await sb.expose_ssh()
        assert ssh(creds, "true").returncode == 0
