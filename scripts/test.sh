#!/usr/bin/env bash
# Set-up command 2: installs dependencies, builds, builds the default image if
# missing, and runs the whole test suite (unit and integration tests with
# real sandboxes). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "the tests create real sandboxes and need root: run with sudo" >&2; exit 1; }
scripts/deps.sh
scripts/build-agent.sh
cargo build -p airlock
target/debug/airlock image build default
cargo test --workspace -- --test-threads="${AIRLOCK_TEST_THREADS:-4}"
# The official SDKs (npm @deno/sandbox, PyPI deno-sandbox), unchanged, against a real daemon.
scripts/sdk-tests.sh all
# The same on the gvisor backend: the attack suite (airlock reads
# AIRLOCK_ISOLATION) and both SDK suites.
echo "==> the attack suite and the SDK suites on --isolation gvisor"
AIRLOCK_ISOLATION=gvisor cargo test -p airlock --test isolation --test cleanup --test daemon \
  --test egress_ssrf --test audit --test volumes --test ssh --test snapshot_sandbox -- --test-threads="${AIRLOCK_TEST_THREADS:-4}"
AIRLOCK_ISOLATION=gvisor scripts/sdk-tests.sh all
