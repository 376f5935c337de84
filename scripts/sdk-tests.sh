#!/usr/bin/env bash
# SDK compatibility suites: runs the official Deno Sandbox SDKs, unchanged,
# against airlock. Installs them (pinned) into target/sdk/ on first use:
#   Python: deno-sandbox (PyPI) in a venv, run by pytest (tests/sdk/python)
#   JS:     @deno/sandbox (npm) run by deno's test runner (tests/sdk/js/*_test.ts,
#           each file with its own daemon, harness.ts); the
#           deno binary comes from the npm package @deno/linux-x64-glibc, as
#           Debian 12 only has Node 18.
# Each suite starts its own `airlock serve` on a temporary store (needs root,
# the default image, and target/debug/airlock or $AIRLOCK_BIN). To use a
# daemon that is already running, set AIRLOCK_SDK_ENDPOINT and AIRLOCK_SDK_TOKEN.
# The SSH tests (test_ssh.py, ssh_test.ts) drive the OpenSSH client (ssh, scp),
# which scripts/deps.sh installs.
#
# Usage: scripts/sdk-tests.sh [py|js|all] [extra args for the runner]
#   e.g. scripts/sdk-tests.sh py -k fs      scripts/sdk-tests.sh js --filter env
set -euo pipefail
cd "$(dirname "$0")/.."

PY_SDK=deno-sandbox==0.16.0
PY_TOOLS=(pytest==9.2.0 pytest-asyncio==1.5.0 pytest-timeout==2.4.0 prometheus-client==0.26.0 trustme==1.2.1 brotli==1.2.1 zstandard==0.25.0)
JS_SDK=@deno/sandbox@0.13.2
JS_DENO=@deno/linux-x64-glibc@2.9.6

SDK=target/sdk
VENV=$SDK/venv
JS=$SDK/js
DENO=$JS/node_modules/@deno/linux-x64-glibc/deno
# Each install records what it installed; a change of pins reinstalls.
PY_PINS="$PY_SDK ${PY_TOOLS[*]}"
JS_PINS="$JS_SDK $JS_DENO"

which=${1:-all}
[ $# -gt 0 ] && shift
case $which in py | js | all) ;; *) echo "usage: $0 [py|js|all] [runner args]" >&2; exit 2 ;; esac
if [ "$which" = all ] && [ $# -gt 0 ]; then
  echo "runner arguments need a suite: $0 py ARGS... or $0 js ARGS..." >&2
  exit 2
fi

install_py() {
  [ "$(cat "$VENV/.pins" 2>/dev/null)" = "$PY_PINS" ] && return
  echo "==> installing $PY_SDK ${PY_TOOLS[*]} into $VENV"
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    echo "python3-venv is missing (apt-get install python3-venv; scripts/deps.sh does it)" >&2
    exit 1
  fi
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "$PY_SDK" "${PY_TOOLS[@]}"
  echo "$PY_PINS" >"$VENV/.pins"
}

install_js() {
  if [ "$(cat "$JS/.pins" 2>/dev/null)" != "$JS_PINS" ]; then
    echo "==> installing $JS_SDK $JS_DENO into $JS"
    rm -rf "$JS"
    mkdir -p "$JS"
    # --prefix keeps the repository free of package.json/node_modules.
    npm install --prefix "$JS" --no-audit --no-fund --save-exact "$JS_SDK" "$JS_DENO" >/dev/null
    echo "$JS_PINS" >"$JS/.pins"
  fi
  # Deno resolves the SDK from the npm-installed node_modules ("manual"
  # nodeModulesDir), so it never fetches from a registry itself.
  cat >"$JS/deno.json" <<'EOF'
{
  "nodeModulesDir": "manual",
  "imports": {
    "@deno/sandbox": "./node_modules/@deno/sandbox/esm/mod.js",
    "@deno/shim-deno": "./node_modules/@deno/shim-deno/dist/index.js"
  }
}
EOF
}

export NO_PROXY="${NO_PROXY:+$NO_PROXY,}127.0.0.1,localhost"
export no_proxy="$NO_PROXY"

failed=()
if [ "$which" != js ]; then
  install_py
  echo "==> Python SDK suite ($PY_SDK)"
  "$VENV/bin/python" -m pytest tests/sdk/python -q "$@" || failed+=(python)
fi
if [ "$which" != py ]; then
  install_js
  echo "==> JS SDK suite ($JS_SDK on deno $("$DENO" --version | head -1 | cut -d' ' -f2))"
  DENO_DIR="$PWD/$SDK/deno-dir" DENO_NO_UPDATE_CHECK=1 \
    "$DENO" test -A --config "$JS/deno.json" tests/sdk/js/*_test.ts "$@" || failed+=(js)
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "==> SDK suites FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "==> SDK suites passed"
