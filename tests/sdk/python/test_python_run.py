"""airlock's `pythonRun` extension through the official SDK's own connection,
with the typed helper in clients/python/airlock_ext.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "clients/python"))

from airlock_ext import python_run, python_run_async  # noqa: E402


def test_state_values_errors_and_timeouts_sync(client):
    with client.sandbox.create() as sb:
        assert python_run(sb, "x = 10").ok
        r = python_run(sb, "print(x * 2)\nx + 1")
        assert (r.stdout, r.value, r.error) == ("20\n", "11", None)
        r = python_run(sb, "import sys; sys.stderr.write('warn\\n'); 1 / 0")
        assert r.stderr == "warn\n"
        assert r.error is not None and r.error.type == "ZeroDivisionError"
        assert "1 / 0" in r.error.traceback
        # The exception did not lose the state; a runaway is interrupted.
        r = python_run(sb, "while True: pass", timeout_ms=300)
        assert r.error is not None and r.error.type == "TimeoutError", r
        assert python_run(sb, "x").value == "10"
        # Sessions are separate interpreters.
        assert python_run(sb, "x", session="other").error.type == "NameError"
        # The SDK's own calls still work on the same connection.
        assert sb.fs.read_text_file("/etc/hostname").strip() == "sandbox"


async def test_async_helper(aclient):
    async with aclient.sandbox.create() as sb:
        await python_run_async(sb, "import math")
        r = await python_run_async(sb, "math.sqrt(81)")
        assert r.value == "9.0" and r.duration_ms >= 0
