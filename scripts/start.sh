#!/usr/bin/env bash
# Set-up command 1: installs dependencies, builds airlock, builds the default
# image on first use (with progress), then runs a command in a sandbox:
# an interactive shell by default, or the arguments given.
#   sudo scripts/start.sh                 # bash in a fresh sandbox
#   sudo scripts/start.sh python3 -c 'print(1)'
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "airlock needs root: run with sudo" >&2; exit 1; }
scripts/deps.sh
scripts/build.sh
target/release/airlock image build default
if [ $# -eq 0 ]; then
  if [ -t 0 ]; then set -- -it bash; else set -- sh -c 'echo "airlock is ready: $(python3 --version), node $(node --version), deno $(deno --version | head -1)"'; fi
fi
flags=(); args=()
for a in "$@"; do if [ ${#args[@]} -eq 0 ] && [ "$a" = -it ]; then flags+=(-i -t); else args+=("$a"); fi; done
exec target/release/airlock run "${flags[@]}" -- "${args[@]}"
