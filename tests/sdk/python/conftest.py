"""Session harness for the deno-sandbox (PyPI) compatibility suite.

Starts one `airlock serve` on a fresh store in a temporary directory, creates
an API token in it, points the SDK's environment variables at it, and stops
the daemon (SIGTERM, then SIGKILL) when the session ends.

Set AIRLOCK_SDK_ENDPOINT (http://host:port) and AIRLOCK_SDK_TOKEN to run the
suite against a daemon that is already running instead (and
AIRLOCK_SDK_SSH_PORT to check the port its expose_ssh() answers); AIRLOCK_BIN
overrides the binary (default: target/debug/airlock in this repository).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
# Generous: the first start may build the default image.
START_TIMEOUT_S = float(os.environ.get("AIRLOCK_SDK_START_TIMEOUT", "600"))
LISTEN_RE = re.compile(r"listening on (http://\S+)")
# The SSH gateway's line; the daemon prints it before "listening on".
SSH_RE = re.compile(r"^ssh on (\S+):(\d+) ", re.M)
# The daemon's isolation backend: `airlock serve` reads AIRLOCK_ISOLATION
# itself (scripts/test.sh runs the suite once per backend).
ISOLATION = os.environ.get("AIRLOCK_ISOLATION", "native")


def _bin() -> Path:
    return Path(os.environ.get("AIRLOCK_BIN") or REPO / "target/debug/airlock")


def _fail(msg: str) -> None:
    # One clear message and a stop, rather than every test erroring the same way.
    pytest.exit(f"airlock SDK suite cannot start: {msg}", returncode=3)


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no output)"


def _set_env(endpoint: str, token: str) -> None:
    os.environ["DENO_DEPLOY_TOKEN"] = token
    os.environ["DENO_SANDBOX_ENDPOINT"] = endpoint
    os.environ["DENO_DEPLOY_ENDPOINT"] = endpoint
    # httpx and websockets honour proxy variables; the daemon is local.
    no_proxy = os.environ.get("NO_PROXY", "")
    extra = "127.0.0.1,localhost"
    os.environ["NO_PROXY"] = f"{no_proxy},{extra}" if no_proxy else extra
    os.environ["no_proxy"] = os.environ["NO_PROXY"]


@pytest.fixture(scope="session")
def upstreams():
    """Local HTTP/HTTPS upstreams (see upstreams.py), named through the
    daemon's resolver override."""
    import upstreams as up

    servers = up.start()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(scope="session")
def airlock(tmp_path_factory, upstreams):
    """Yields {"endpoint", "token", "bin", "store", "ssh_port", ...} for a
    running daemon; "ssh_port" is its SSH gateway's port (None for a daemon
    the suite did not start, unless AIRLOCK_SDK_SSH_PORT names it)."""
    endpoint = os.environ.get("AIRLOCK_SDK_ENDPOINT")
    token = os.environ.get("AIRLOCK_SDK_TOKEN")
    if endpoint and token:
        _set_env(endpoint.rstrip("/"), token)
        yield {
            "endpoint": endpoint.rstrip("/"),
            "token": token,
            "bin": None,
            "store": None,
            "ssh_port": int(os.environ["AIRLOCK_SDK_SSH_PORT"])
            if os.environ.get("AIRLOCK_SDK_SSH_PORT")
            else None,
        }
        return

    binary = _bin()
    if not binary.is_file():
        _fail(f"{binary} not found (build it with `cargo build -p airlock`, or set AIRLOCK_BIN)")
    probe = subprocess.run([str(binary), "serve", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        _fail(
            f"`{binary} serve --help` exited {probe.returncode}: this airlock has no "
            f"`serve` command yet.\n{(probe.stderr or probe.stdout).strip()}"
        )
    if os.geteuid() != 0:
        _fail("`airlock serve` creates real sandboxes and needs root")

    tmp = tmp_path_factory.mktemp("airlock")
    store = tmp / "store.db"
    made = subprocess.run(
        [str(binary), "token", "create", "--store", str(store), "sdk-tests"],
        capture_output=True,
        text=True,
    )
    lines = [l.strip() for l in made.stdout.splitlines() if l.strip()]
    if made.returncode != 0 or not lines:
        _fail(
            f"`airlock token create` exited {made.returncode}:\n{made.stdout}{made.stderr}"
        )
    token = lines[-1]
    if not token.startswith("ddo_"):
        _fail(f"`airlock token create` printed {token!r}, expected a ddo_... secret")

    log = tmp / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(binary), "serve", "--store", str(store), "--listen", "127.0.0.1:0",
             "--expose-listen", "127.0.0.1:0", "--ssh-listen", "127.0.0.1:0"]
            + upstreams.daemon_args(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    endpoint = None
    ssh_port = None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        m = LISTEN_RE.search(text)
        if m:
            endpoint = m.group(1).rstrip("/")
            ssh = SSH_RE.search(text)
            if ssh is None:
                proc.kill()
                _fail(f"`airlock serve` printed no 'ssh on' line:\n{_tail(log)}")
            ssh_port = int(ssh.group(2))
            break
        if proc.poll() is not None:
            _fail(f"`airlock serve` exited {proc.returncode} before listening:\n{_tail(log)}")
        time.sleep(0.05)
    if endpoint is None:
        proc.kill()
        _fail(f"`airlock serve` printed no 'listening on' line in {START_TIMEOUT_S}s:\n{_tail(log)}")

    _set_env(endpoint, token)
    try:
        yield {
            "endpoint": endpoint,
            "token": token,
            "bin": binary,
            "store": store,
            "log": log,
            # The daemon's CA for exposed ports, kept beside its store.
            "expose_ca": tmp / "expose-ca.pem",
            # The SSH gateway (--ssh-listen 127.0.0.1:0) on 127.0.0.1.
            "ssh_port": ssh_port,
        }
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        print(f"\nairlock serve log: {log}")


@pytest.fixture
def client(airlock):
    """A synchronous DenoDeploy client bound to the daemon."""
    from deno_sandbox import DenoDeploy

    return DenoDeploy()


@pytest.fixture
def aclient(airlock):
    """An asynchronous AsyncDenoDeploy client bound to the daemon."""
    from deno_sandbox import AsyncDenoDeploy

    return AsyncDenoDeploy()
