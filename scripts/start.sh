#!/usr/bin/env bash
# Set-up command 1: installs dependencies, builds airlock, builds the default
# image on first use (with progress), then starts the daemon, which prints the
# `export` lines for the Deno Sandbox SDKs.
#   sudo scripts/start.sh                          # the daemon on 127.0.0.1:7070
#   sudo scripts/start.sh run -it bash             # or: a shell in a fresh sandbox
#   sudo scripts/start.sh run python3 -c 'print(1)'
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "airlock needs root: run with sudo" >&2; exit 1; }
scripts/deps.sh
scripts/build.sh
target/release/airlock image build default
if [ "${1:-}" = run ]; then
  shift
  flags=()
  if [ "${1:-}" = -it ]; then flags=(-i -t); shift; fi
  exec target/release/airlock run "${flags[@]}" -- "$@"
fi
exec target/release/airlock serve "$@"
