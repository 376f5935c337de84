#!/usr/bin/env bash
# Builds airlock (release) and its static agent.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p airlock
scripts/build-agent.sh
