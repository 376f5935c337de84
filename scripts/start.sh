#!/usr/bin/env bash
# Set-up command 1: installs dependencies, builds airlock, builds the default
# image on first use (with progress), then runs a command in a fresh sandbox:
# an interactive shell when run from a terminal, or the command given.
#   sudo scripts/start.sh                          # bash in a fresh sandbox
#   sudo scripts/start.sh python3 -c 'print(1)'    # one command
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "airlock needs root: run with sudo" >&2; exit 1; }
scripts/deps.sh
scripts/build.sh
target/release/airlock image build default
if [ $# -gt 0 ]; then
  exec target/release/airlock run -- "$@"
elif [ -t 0 ]; then
  exec target/release/airlock run -i -t -- bash
else
  exec target/release/airlock run -- sh -c 'echo "airlock is ready: $(python3 --version), node $(node --version), $(deno --version | head -1)"'
fi
