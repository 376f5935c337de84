"""Compatibility tests: the official `deno-sandbox` PyPI SDK against airlock.

Written against deno-sandbox 0.16.0 (see /work/shared/PROTOCOL.md). Known SDK
bugs are avoided on purpose, not tested (PROTOCOL.md §9.2):
  * FsFile.read at EOF raises TypeError (fileRead -> data:null), so reads
    below never go past the end of a file;
  * fs.walk / fs.expand_glob return the RPC result as the list, unlike the
    JS schema's stream; airlock answers the Python SDK (known by its
    `websockets` User-Agent) with lists, so they work (test below), but
    their `match`/`skip` patterns are not JSON and fail client-side;
  * dict keys are camel-cased on the way out and snake-cased on the way back,
    so env names read back through env.as_dict() and labels use lower-case
    names without underscores;
  * spawn(stdin_data=b"...") iterates the bytes as ints and fails client-side,
    so stdin data is given as a file object or a list of byte strings.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import re
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from deno_sandbox import AsyncDenoDeploy, DenoDeploy, HTTPStatusError
from deno_sandbox.errors import (
    AuthenticationError,
    ProcessAlreadyExited,
    RpcValidationError,
    UnknownRpcMethod,
)

from conftest import ISOLATION

# The JS SDK refuses any other id shape before connecting (PROTOCOL.md §2).
SANDBOX_ID_RE = re.compile(r"^sbx_[a-z]{3}_[0-9a-hjkmnp-z]{20}$")
UNKNOWN_ID = "sbx_ord_" + "0" * 20


# --------------------------------------------------------------------------- helpers


def run(sb, command, *args, **kwargs):
    """Spawns with piped stdout/stderr; returns (status, stdout, stderr)."""
    p = sb.spawn(command, args=list(args), stdout="piped", stderr="piped", **kwargs)
    out = p.stdout.read()
    err = p.stderr.read()
    return p.wait(), out, err


def sh(sb, script, **kwargs):
    return run(sb, "bash", "-c", script, **kwargs)


async def arun(sb, command, *args, **kwargs):
    p = await sb.spawn(command, args=list(args), stdout="piped", stderr="piped", **kwargs)
    out, err = await asyncio.gather(p.stdout.read(), p.stderr.read())
    return await p.wait(), out, err


def list_all(client) -> list[dict]:
    page = client.sandbox.list()
    items = list(page.items)
    for _ in range(100):
        if not page.has_more:
            break
        page = page.get_next_page()
        if page is None:
            break
        items.extend(page.items)
    return items


def find(client, sandbox_id: str) -> dict | None:
    return next((s for s in list_all(client) if s["id"] == sandbox_id), None)


def wait_stopped(client, sandbox_id: str, timeout_s: float = 15.0) -> dict | None:
    """Polls the listing until the sandbox is gone or reported stopped."""
    deadline = time.monotonic() + timeout_s
    item = find(client, sandbox_id)
    while item is not None and item["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.25)
        item = find(client, sandbox_id)
    return item


def assert_gone(client, sandbox_id: str) -> None:
    item = wait_stopped(client, sandbox_id)
    assert item is None or item["status"] == "stopped", item
    if item is not None:
        assert item.get("stopped_at"), item
    with pytest.raises(Exception):
        with client.sandbox.connect(sandbox_id) as sb:
            sb.spawn("true", stdout="null", stderr="null").wait()


@contextlib.contextmanager
def tolerate_close_after_kill():
    """PY's close() after kill() raises if the server already closed the socket
    (PROTOCOL.md §9.2-10); test_kill_then_exit_is_clean checks that on its own."""
    try:
        yield
    except Exception as e:
        if "ConnectionClosed" not in type(e).__name__:
            raise


def app_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg.startswith("Application Error"), msg
    return msg


# --------------------------------------------------------------------------- processes


def test_create_spawn_echo(client):
    with client.sandbox.create() as sb:
        assert SANDBOX_ID_RE.match(sb.id), sb.id
        p = sb.spawn("echo", args=["hello"], stdout="piped", stderr="piped")
        assert isinstance(p.pid, int)
        assert p.stdout.read() == b"hello\n"
        assert p.stderr.read() == b""
        status = p.wait()
        assert status["success"] is True
        assert status["code"] == 0
        assert status["signal"] is None


async def test_async_create_spawn_echo(aclient):
    async with aclient.sandbox.create() as sb:
        assert SANDBOX_ID_RE.match(sb.id), sb.id
        status, out, err = await arun(sb, "echo", "hello", "async")
        assert out == b"hello async\n"
        assert err == b""
        assert status == {"success": True, "code": 0, "signal": None}


def test_exit_codes_and_stderr(client):
    with client.sandbox.create() as sb:
        status, out, err = sh(sb, "echo out; echo err >&2; exit 3")
        assert (out, err) == (b"out\n", b"err\n")
        assert status["success"] is False
        assert status["code"] == 3
        status, _, _ = run(sb, "false")
        assert (status["success"], status["code"]) == (False, 1)
        status, _, _ = run(sb, "true")
        assert (status["success"], status["code"]) == (True, 0)


def test_sandbox_basics(client):
    """Debian with the promised tools (pip and npm too); cwd /home/app; root inside."""
    with client.sandbox.create() as sb:
        _, out, _ = run(sb, "pwd")
        assert out == b"/home/app\n"
        _, out, _ = run(sb, "id", "-u")
        assert out == b"0\n"
        status, out, err = sh(
            sb,
            "for t in bash python3 pip node npm npx deno git curl; do command -v $t >/dev/null || echo missing $t; done;"
            " node --version; python3 -c 'print(6*7)'; python3 -m pip --version; npm --version",
        )
        assert status["success"], err
        lines = out.decode().splitlines()
        assert not [l for l in lines if l.startswith("missing")], lines
        assert lines[0].startswith("v18."), lines
        assert lines[1] == "42"
        assert lines[2].startswith("pip "), lines
        assert lines[3].startswith("10."), lines


def test_spawn_cwd_env_clear_env(client):
    with client.sandbox.create() as sb:
        _, out, _ = run(sb, "pwd", cwd="/tmp")
        assert out == b"/tmp\n"
        # Names without "_" or capitals after the first letter survive PY's key mangling.
        _, out, _ = sh(sb, 'echo "$GREETING"', env={"GREETING": "hi there"})
        assert out == b"hi there\n"
        _, out, _ = run(sb, "/usr/bin/env", clear_env=True, env={"ONLY": "1"})
        assert out.decode().splitlines() == ["ONLY=1"]


def test_stdout_null(client):
    with client.sandbox.create() as sb:
        p = sb.spawn("echo", args=["ignored"], stdout="null", stderr="null")
        assert p.wait()["code"] == 0


def test_stdin_data(client):
    with client.sandbox.create() as sb:
        _, out, _ = run(sb, "cat", stdin_data=io.BytesIO(b"from a file object\n"))
        assert out == b"from a file object\n"
        _, out, _ = run(sb, "wc", "-c", stdin_data=[b"abc", b"def", b"\n"])
        assert out.strip() == b"7"
        big = bytes(range(256)) * 1024  # 256 KiB: several 64 KiB stream chunks
        _, out, _ = run(sb, "sha256sum", stdin_data=io.BytesIO(big))
        assert out.split()[0].decode() == hashlib.sha256(big).hexdigest()


def test_large_stdout(client):
    with client.sandbox.create() as sb:
        status, out, _ = sh(sb, "head -c 3000000 /dev/zero")
        assert status["code"] == 0
        assert len(out) == 3_000_000 and out.count(0) == 3_000_000


async def test_kill_process(aclient):
    async with aclient.sandbox.create() as sb:
        p = await sb.spawn(
            "bash", args=["-c", "echo $$ > /tmp/pid; exec sleep 60"], stdout="null", stderr="null"
        )
        for _ in range(100):
            try:
                pid = (await sb.fs.read_text_file("/tmp/pid")).strip()
                if pid:
                    break
            except Exception:
                pass
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the process never wrote its pid")
        started = time.monotonic()
        await p.kill()
        for _ in range(100):
            status, _, _ = await arun(sb, "test", "-d", f"/proc/{pid}")
            if status["code"] != 0:
                break
            await asyncio.sleep(0.1)
        assert status["code"] != 0, f"process {pid} still alive after kill"
        assert time.monotonic() - started < 15


def test_process_context_manager_kills(client):
    with client.sandbox.create() as sb:
        with sb.spawn("sleep", args=["61"], stdout="null", stderr="null"):
            pass
        find_sleep = (
            'for p in /proc/[0-9]*; do [ "$(tr "\\0" " " < $p/cmdline 2>/dev/null)" = "sleep 61 " ]'
            " && echo $p; done; true"
        )
        for _ in range(50):
            _, out, _ = sh(sb, find_sleep)
            if out == b"":
                break
            time.sleep(0.1)
        assert out == b"", f"sleep still running: {out!r}"


def test_unknown_command(client):
    with client.sandbox.create() as sb:
        with pytest.raises(Exception) as excinfo:
            sb.spawn("definitely-not-a-command", stdout="piped", stderr="piped")
        # A missing binary must not look like "process already exited"
        # (TypeError + ENOENT) to the PY SDK (PROTOCOL.md §6.1).
        assert not isinstance(excinfo.value, ProcessAlreadyExited)
        assert "NotFound" in app_error(excinfo)
        # The sandbox is still usable afterwards.
        assert run(sb, "echo", "ok")[1] == b"ok\n"


def test_unknown_rpc_method(client):
    """PY's fs.download sends an RPC the protocol does not have (PROTOCOL.md §4.9)."""
    with client.sandbox.create() as sb:
        with pytest.raises(UnknownRpcMethod):
            sb.fs.download("/tmp/local", "/etc/hostname")
        assert run(sb, "echo", "ok")[1] == b"ok\n"


def test_missing_or_mistyped_params_raise_rpc_validation_error(client):
    """Bad params are a JSON-RPC -32602 ZodError, which the SDK raises as
    RpcValidationError with the zod issues (paths snake-cased by the SDK)."""
    with client.sandbox.create() as sb:
        # No params at all, through the SDK's own RPC client.
        with pytest.raises(RpcValidationError) as e:
            sb._bridge.run(sb._rpc.call("readTextFile", {}))
        assert e.value.errors == [
            {
                "expected": "string",
                "code": "invalid_type",
                "path": ["path"],
                "message": "Invalid input: expected string, received undefined",
            }
        ]
        assert "Path: path, Expected: string" in str(e.value)
        # Through the public API: a None path is sent as null.
        with pytest.raises(RpcValidationError) as e:
            sb.fs.read_text_file(None)  # type: ignore[arg-type]
        assert e.value.errors[0]["message"].endswith("received null"), e.value.errors
        # A method the daemon serves itself, and an option of the wrong type.
        with pytest.raises(RpcValidationError) as e:
            sb._bridge.run(sb._rpc.call("fetch", {"method": "GET"}))
        assert e.value.errors[0]["path"] == ["url"]
        with pytest.raises(RpcValidationError) as e:
            sb._bridge.run(sb._rpc.call("exposeHttp", {"domain": "x", "port": "8000"}))
        assert e.value.errors[0]["path"] == ["port"]
        with pytest.raises(RpcValidationError) as e:
            sb._bridge.run(sb._rpc.call("writeTextFile", {"path": "/tmp/x", "content": 5}))
        assert e.value.errors[0]["path"] == ["content"]
        # A missing file is still an application error, not a validation one.
        with pytest.raises(Exception) as e:
            sb.fs.read_text_file("/no/such/file")
        assert not isinstance(e.value, RpcValidationError)
        assert "NotFound" in app_error(e)
        assert run(sb, "echo", "ok")[1] == b"ok\n"


# --------------------------------------------------------------------------- env


def test_env_in_create(client):
    # The config header is not key-mangled, so "_" is fine here.
    with client.sandbox.create(env={"MY_VAR": "from-create", "other": "x"}) as sb:
        _, out, _ = sh(sb, 'echo "$MY_VAR/$other"')
        assert out == b"from-create/x\n"
        assert sb.env.get("other") == "x"


def test_env_api(client):
    with client.sandbox.create() as sb:
        assert sb.env.get("greeting") is None
        sb.env.set("greeting", "hello world")
        assert sb.env.get("greeting") == "hello world"
        _, out, _ = sh(sb, 'echo "$greeting"')
        assert out == b"hello world\n"
        everything = sb.env.as_dict()
        assert everything.get("greeting") == "hello world"
        sb.env.delete("greeting")
        assert sb.env.get("greeting") is None
        assert "greeting" not in sb.env.as_dict()
        _, out, _ = sh(sb, 'echo "[${greeting-unset}]"')
        assert out == b"[unset]\n"


async def test_async_env_api(aclient):
    async with aclient.sandbox.create() as sb:
        await sb.env.set("colour", "blue")
        assert await sb.env.get("colour") == "blue"
        assert (await sb.env.as_dict())["colour"] == "blue"
        await sb.env.delete("colour")
        assert await sb.env.get("colour") is None


# --------------------------------------------------------------------------- fs


def test_fs_text_and_bytes(client):
    with client.sandbox.create() as sb:
        sb.fs.mkdir("/tmp/t")
        sb.fs.write_text_file("/tmp/t/a.txt", "hello\nwörld\n")
        assert sb.fs.read_text_file("/tmp/t/a.txt") == "hello\nwörld\n"
        sb.fs.write_text_file("/tmp/t/a.txt", "more\n", append=True)
        assert sb.fs.read_text_file("/tmp/t/a.txt") == "hello\nwörld\nmore\n"
        # The file is really there for processes too.
        assert run(sb, "cat", "/tmp/t/a.txt")[1] == "hello\nwörld\nmore\n".encode()

        data = bytes(range(256)) * 4
        sb.fs.write_file("/tmp/t/b.bin", data)
        assert sb.fs.read_file("/tmp/t/b.bin") == data
        sb.fs.write_file("/tmp/t/b.bin", [b"x" * 100_000, b"y" * 100_000])
        got = sb.fs.read_file("/tmp/t/b.bin")
        assert got == b"x" * 100_000 + b"y" * 100_000


def test_fs_relative_paths_resolve_against_home_app(client):
    with client.sandbox.create() as sb:
        sb.fs.write_text_file("rel.txt", "relative")
        assert run(sb, "cat", "/home/app/rel.txt")[1] == b"relative"
        assert sb.fs.read_text_file("/home/app/rel.txt") == "relative"


def test_fs_dirs_stat_rename_remove(client):
    with client.sandbox.create() as sb:
        sb.fs.mkdir("/tmp/d/sub/deeper", recursive=True)
        sb.fs.write_text_file("/tmp/d/f.txt", "12345")
        sb.fs.symlink("/tmp/d/f.txt", "/tmp/d/link")

        entries = sorted(sb.fs.read_dir("/tmp/d"), key=lambda e: e["name"])
        assert [e["name"] for e in entries] == ["f.txt", "link", "sub"]
        by = {e["name"]: e for e in entries}
        assert (by["f.txt"]["is_file"], by["f.txt"]["is_directory"]) == (True, False)
        assert (by["sub"]["is_file"], by["sub"]["is_directory"]) == (False, True)
        assert by["link"]["is_symlink"] is True

        st = sb.fs.stat("/tmp/d/f.txt")
        assert st["is_file"] is True and st["is_directory"] is False
        assert st["size"] == 5
        assert st["mode"] & 0o777 in (0o644, 0o664, 0o600, 0o666)
        assert isinstance(st["mtime"], str) and datetime.fromisoformat(st["mtime"].replace("Z", "+00:00"))
        st = sb.fs.stat("/tmp/d/sub")
        assert st["is_directory"] is True and st["is_file"] is False
        assert sb.fs.stat("/tmp/d/link")["is_file"] is True  # follows the link
        assert sb.fs.lstat("/tmp/d/link")["is_symlink"] is True
        assert sb.fs.read_link("/tmp/d/link") == "/tmp/d/f.txt"
        assert sb.fs.real_path("/tmp/d/link") == "/tmp/d/f.txt"

        sb.fs.chmod("/tmp/d/f.txt", 0o600)
        assert sb.fs.stat("/tmp/d/f.txt")["mode"] & 0o777 == 0o600

        sb.fs.copy_file("/tmp/d/f.txt", "/tmp/d/copy.txt")
        assert sb.fs.read_text_file("/tmp/d/copy.txt") == "12345"

        sb.fs.rename("/tmp/d/f.txt", "/tmp/d/sub/moved.txt")
        assert sb.fs.read_text_file("/tmp/d/sub/moved.txt") == "12345"
        with pytest.raises(Exception) as excinfo:
            sb.fs.stat("/tmp/d/f.txt")
        assert "NotFound" in app_error(excinfo)

        sb.fs.remove("/tmp/d/copy.txt")
        assert "copy.txt" not in [e["name"] for e in sb.fs.read_dir("/tmp/d")]
        with pytest.raises(Exception):
            sb.fs.remove("/tmp/d/sub")  # not empty, not recursive
        sb.fs.remove("/tmp/d/sub", recursive=True)
        assert "sub" not in [e["name"] for e in sb.fs.read_dir("/tmp/d")]

        tmp = sb.fs.make_temp_dir(prefix="pfx-")
        assert tmp.rsplit("/", 1)[-1].startswith("pfx-")
        assert sb.fs.stat(tmp)["is_directory"] is True
        tmpf = sb.fs.make_temp_file(dir=tmp, suffix=".txt")
        assert tmpf.startswith(tmp + "/") and tmpf.endswith(".txt")
        assert sb.fs.stat(tmpf)["size"] == 0

        sb.fs.write_text_file("/tmp/d/trunc.txt", "abcdefgh")
        sb.fs.truncate("/tmp/d/trunc.txt", 3)
        assert sb.fs.read_text_file("/tmp/d/trunc.txt") == "abc"


def test_fs_file_handles(client):
    with client.sandbox.create() as sb:
        with sb.fs.create("/tmp/h.txt") as f:
            assert f.write(b"hello world") == 11
            assert f.seek(0, 0) == 0
            assert f.read(5) == b"hello"
            assert f.seek(1, 1) == 6
            assert f.read(5) == b"world"
            assert f.seek(-5, 2) == 6
            assert f.stat()["size"] == 11
            f.truncate(5)
            assert f.stat()["size"] == 5
            f.sync()
        assert sb.fs.read_text_file("/tmp/h.txt") == "hello"

        with sb.fs.open("/tmp/h.txt", write=True, append=True) as f:
            assert f.write(b"!!") == 2
        assert sb.fs.read_text_file("/tmp/h.txt") == "hello!!"

        with sb.fs.open("/tmp/h.txt") as f:  # read-only by default
            assert f.read(7) == b"hello!!"
            with pytest.raises(Exception):
                f.write(b"nope")

        with sb.fs.open("/tmp/new.txt", write=True, create_new=True) as f:
            f.write(b"fresh")
        with pytest.raises(Exception) as excinfo:
            sb.fs.open("/tmp/new.txt", write=True, create_new=True)
        assert "AlreadyExists" in app_error(excinfo)


async def test_async_fs(aclient):
    async with aclient.sandbox.create() as sb:
        await sb.fs.mkdir("/tmp/a/b", recursive=True)
        await sb.fs.write_text_file("/tmp/a/b/x.txt", "async text")
        assert await sb.fs.read_text_file("/tmp/a/b/x.txt") == "async text"
        await sb.fs.write_file("/tmp/a/b/y.bin", b"\x00\x01\x02")
        assert await sb.fs.read_file("/tmp/a/b/y.bin") == b"\x00\x01\x02"
        names = sorted(e["name"] for e in await sb.fs.read_dir("/tmp/a/b"))
        assert names == ["x.txt", "y.bin"]
        f = await sb.fs.open("/tmp/a/b/x.txt")
        assert await f.read(5) == b"async"
        await f.close()
        await sb.fs.remove("/tmp/a", recursive=True)
        with pytest.raises(Exception) as excinfo:
            await sb.fs.stat("/tmp/a")
        assert "NotFound" in app_error(excinfo)


def test_fs_errors(client):
    with client.sandbox.create() as sb:
        with pytest.raises(Exception) as excinfo:
            sb.fs.read_text_file("/does/not/exist")
        msg = app_error(excinfo)
        assert "NotFound" in msg
        assert not isinstance(excinfo.value, ProcessAlreadyExited)
        sb.fs.mkdir("/tmp/exists")
        with pytest.raises(Exception) as excinfo:
            sb.fs.mkdir("/tmp/exists")
        assert "AlreadyExists" in app_error(excinfo)
        sb.fs.write_text_file("/tmp/exists/x", "x", create_new=True)
        with pytest.raises(Exception) as excinfo:
            sb.fs.write_text_file("/tmp/exists/x", "y", create_new=True)
        assert "AlreadyExists" in app_error(excinfo)
        assert sb.fs.read_text_file("/tmp/exists/x") == "x"


# --------------------------------------------------------------------------- lifecycle


def test_context_exit_ends_session_sandbox(client):
    with client.sandbox.create() as sb:
        sandbox_id = sb.id
        assert run(sb, "echo", "alive")[1] == b"alive\n"
        item = find(client, sandbox_id)
        assert item is not None and item["status"] == "running", item
    assert_gone(client, sandbox_id)


def test_connect_from_second_client(client):
    other = DenoDeploy()
    with client.sandbox.create() as sb:
        sb.fs.write_text_file("/tmp/shared.txt", "written by the creator")
        with other.sandbox.connect(sb.id) as sb2:
            assert sb2.id == sb.id
            assert sb2.fs.read_text_file("/tmp/shared.txt") == "written by the creator"
            assert run(sb2, "echo", "from the second client")[1] == b"from the second client\n"
            sb2.fs.write_text_file("/tmp/back.txt", "reply")
        # Closing a connect socket does not end a session sandbox.
        assert sb.fs.read_text_file("/tmp/back.txt") == "reply"
        assert run(sb, "echo", "still here")[1] == b"still here\n"


async def test_async_connect(aclient):
    async with aclient.sandbox.create() as sb:
        async with aclient.sandbox.connect(sb.id) as sb2:
            _, out, _ = await arun(sb2, "echo", "connected")
            assert out == b"connected\n"


def test_duration_sandbox_survives_close_and_kill(client):
    with client.sandbox.create(timeout="2m") as sb:
        sandbox_id = sb.id
        sb.fs.write_text_file("/tmp/keep.txt", "kept")
    # A duration sandbox outlives its creating socket.
    item = find(client, sandbox_id)
    assert item is not None and item["status"] == "running", item
    with tolerate_close_after_kill(), client.sandbox.connect(sandbox_id) as sb:
        assert sb.fs.read_text_file("/tmp/keep.txt") == "kept"
        sb.kill()
    assert_gone(client, sandbox_id)


@pytest.mark.timeout(60)
def test_kill_then_exit_is_clean(client):
    """PY's close() after kill() must not raise (server grace period, PROTOCOL.md §7.4)."""
    with client.sandbox.create() as sb:
        sandbox_id = sb.id
        p = sb.spawn("sleep", args=["60"], stdout="null", stderr="null")
        sb.kill()
    assert p.pid
    assert_gone(client, sandbox_id)


def test_extend_timeout(client):
    with tolerate_close_after_kill(), client.sandbox.create(timeout="1m") as sb:
        before = datetime.now(timezone.utc)
        until = sb.extend_timeout(120)
        assert until.tzinfo is not None
        # Granted: later than the original minute, at most 30 minutes ahead.
        assert until > before + timedelta(seconds=65), until
        assert until <= before + timedelta(minutes=31), until
        assert run(sb, "echo", "ok")[1] == b"ok\n"
        sb.kill()


def test_list_and_labels(client):
    tag = uuid.uuid4().hex[:12]
    with client.sandbox.create(labels={"suite": "py", "run": tag}) as sb:
        item = find(client, sb.id)
        assert item is not None, "the new sandbox is not listed"
        assert item["status"] == "running"
        assert item["region"]
        created = datetime.fromisoformat(item["created_at"].replace("Z", "+00:00"))
        assert abs((datetime.now(timezone.utc) - created).total_seconds()) < 300
        assert not item.get("stopped_at")
        assert item.get("labels") == {"suite": "py", "run": tag}


# --------------------------------------------------------------------------- errors


def test_wrong_token(airlock):
    bad = DenoDeploy({"token": "ddo_" + "x" * 40})
    with pytest.raises(AuthenticationError):
        with bad.sandbox.create():
            pass
    with pytest.raises(HTTPStatusError) as excinfo:
        bad.sandbox.list()
    assert excinfo.value.status_code == 401
    assert excinfo.value.code == "INVALID_TOKEN"


async def test_wrong_token_async(airlock):
    bad = AsyncDenoDeploy({"token": "ddo_wrong"})
    with pytest.raises(AuthenticationError):
        async with bad.sandbox.create():
            pass


def test_connect_unknown_sandbox(client):
    with pytest.raises(Exception) as excinfo:
        with client.sandbox.connect(UNKNOWN_ID) as sb:
            sb.spawn("true", stdout="null", stderr="null").wait()
    assert not isinstance(excinfo.value, AuthenticationError)


# --------------------------------------------------------------------------- scale


# gVisor starts cost about 0.3 CPU-seconds each (runsc's three Go
# processes); fifty at once on a 2-core CI machine outlast the SDK's
# 10-second WebSocket open timeout, so that backend runs sixteen.
CONCURRENT = 50 if ISOLATION == "native" else 16


async def test_many_sandboxes_concurrently(aclient):
    async def one(i: int):
        async with aclient.sandbox.create() as sb:
            status, out, err = await arun(sb, "bash", "-c", "echo $N", env={"N": str(i)})
            return sb.id, status, out, err

    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(CONCURRENT))), 170)
    assert len({r[0] for r in results}) == CONCURRENT, "sandbox ids are not unique"
    for i, (_, status, out, err) in enumerate(results):
        assert (status["code"], out, err) == (0, f"{i}\n".encode(), b""), (i, status, out, err)


def test_walk_and_expand_glob_return_lists(client):
    with client.sandbox.create() as sb:
        sb.fs.mkdir("/tmp/w/a/b", recursive=True)
        for path in ("/tmp/w/one.txt", "/tmp/w/a/two.txt", "/tmp/w/a/b/three.md"):
            sb.fs.write_text_file(path, "x")
        entries = sb.fs.walk("/tmp/w")
        assert isinstance(entries, list), entries
        by_path = {e["path"]: e for e in entries}
        assert set(by_path) == {
            "/tmp/w", "/tmp/w/one.txt", "/tmp/w/a", "/tmp/w/a/two.txt",
            "/tmp/w/a/b", "/tmp/w/a/b/three.md",
        }, sorted(by_path)
        assert by_path["/tmp/w/a"]["is_directory"] and by_path["/tmp/w/one.txt"]["is_file"]
        assert by_path["/tmp/w/a/b/three.md"]["name"] == "three.md"
        # Nested options (the SDK's shape) are honoured.
        shallow = {e["path"] for e in sb.fs.walk("/tmp/w", max_depth=1, include_dirs=False)}
        assert shallow == {"/tmp/w/one.txt"}, shallow
        assert sorted(sb.fs.expand_glob("**/*.txt", root="/tmp/w")) == [
            "/tmp/w/a/two.txt", "/tmp/w/one.txt",
        ]
        # A list too big for the SDK's 1 MiB messages is a clear error, and
        # the connection lives on.
        sb.spawn("sh", args=["-c", "mkdir -p /tmp/many && cd /tmp/many && seq 1 20000 | xargs touch"]).wait()
        with pytest.raises(Exception) as e:
            sb.fs.walk("/tmp/many")
        assert "narrow it" in str(e.value), e.value
        assert sb.fs.read_text_file("/tmp/w/one.txt") == "x"
