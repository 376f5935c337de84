"""Typed helpers for airlock's protocol extensions, used beside the official
`deno-sandbox` SDK. They ride the sandbox's own SDK connection (no second
WebSocket): pass the `Sandbox` / `AsyncSandbox` the SDK gave you.

    from deno_sandbox import DenoDeploy
    from airlock_ext import python_run

    with DenoDeploy().sandbox.create() as sb:
        python_run(sb, "x = 10")
        r = python_run(sb, "print(x * 2); x")
        assert r.stdout == "20\\n" and r.value == "10"

Copy this file next to your code (it has no dependencies beyond the SDK).
It reaches into the SDK's `_rpc` and `_bridge` attributes, which
deno-sandbox 0.16 has; a later SDK may move them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["PythonError", "PythonResult", "python_run", "python_run_async"]


@dataclass(frozen=True)
class PythonError:
    """An exception the snippet raised (the session keeps its state), or a
    timeout (`type == "TimeoutError"`)."""

    type: str
    message: str
    traceback: str


@dataclass(frozen=True)
class PythonResult:
    stdout: str
    stderr: str
    #: repr() of the snippet's final expression, as the REPL shows it; None
    #: when there is none or it is None.
    value: Optional[str]
    error: Optional[PythonError]
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.error is None


def _params(code: str, session: str, timeout_ms: Optional[int]) -> dict[str, Any]:
    if not isinstance(code, str):
        raise TypeError("code must be a str")
    params: dict[str, Any] = {"code": code, "session": session}
    if timeout_ms is not None:
        # The SDK camel-cases keys: this goes out as timeoutMs.
        params["timeout_ms"] = int(timeout_ms)
    return params


def _result(raw: Any) -> PythonResult:
    err = raw.get("error")
    return PythonResult(
        stdout=raw.get("stdout", ""),
        stderr=raw.get("stderr", ""),
        value=raw.get("value"),
        error=PythonError(err["type"], err["message"], err.get("traceback", "")) if err else None,
        duration_ms=int(raw.get("durationMs", 0)),
    )


async def python_run_async(
    sandbox: Any, code: str, *, session: str = "default", timeout_ms: Optional[int] = None
) -> PythonResult:
    """Runs `code` in the sandbox's long-lived interpreter for `session`
    (airlock's `pythonRun`), with an `AsyncSandbox`."""
    raw = await sandbox._rpc.call("pythonRun", _params(code, session, timeout_ms))
    return _result(raw)


def python_run(
    sandbox: Any, code: str, *, session: str = "default", timeout_ms: Optional[int] = None
) -> PythonResult:
    """As `python_run_async`, with the SDK's synchronous `Sandbox`."""
    raw = sandbox._bridge.run(sandbox._rpc.call("pythonRun", _params(code, session, timeout_ms)))
    return _result(raw)
