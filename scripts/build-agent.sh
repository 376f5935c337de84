#!/usr/bin/env bash
# Builds the static agent (PID 1 of every sandbox) into target/static.
# Static so it runs in any root filesystem; its own target dir because its
# RUSTFLAGS differ from the rest of the build.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=target/static \
  cargo build --release -p airlock-agent --target x86_64-unknown-linux-gnu
file target/static/x86_64-unknown-linux-gnu/release/airlock-agent | grep -qE "static-pie linked|statically linked" \
  || { echo "airlock-agent is not statically linked" >&2; exit 1; }
