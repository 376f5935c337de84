#!/usr/bin/env bash
# Installs what airlock needs on a Debian 12 host (run as root). Only
# packages whose command is missing are installed, so an existing Node.js
# or Python is left alone.
set -euo pipefail
need=()
want() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
want mmdebstrap mmdebstrap      # builds the default image
want npm npm                    # fetches deno (npm package @deno/linux-x64-glibc) into the image
want file file                  # checks that the agent is static
want bwrap bubblewrap           # the reference in bench/startup.py
want python3 python3            # benchmarks
want cc gcc                     # linker for cargo
# A compiler alone cannot link: Rust binaries need crt1.o and libc from
# libc6-dev, which `gcc` only recommends (and recommends are not installed
# below). So check that a program actually links, not that `cc` exists.
can_link() {
  command -v cc >/dev/null 2>&1 || return 1
  local out
  out=$(mktemp)
  printf 'int main(void) { return 0; }\n' | cc -x c - -o "$out" >/dev/null 2>&1
  local rc=$?
  rm -f "$out"
  return $rc
}
can_link || need+=(libc6-dev)
want git git                    # the network tests serve a repository to clone
want openssl openssl            # the JS suite makes its test CA with it
want curl curl                  # crates/expose tests verify the ingress with a real curl
want ip iproute2                # the SSRF tests put upstreams in network namespaces they make
want mkfs.xfs xfsprogs          # crates/volumes: the volume pool is an XFS filesystem (reflink=1)
want mkfs.ext4 e2fsprogs        # crates/volumes: each volume is an ext4 image
want ssh openssh-client         # the SSH gateway's tests drive the real OpenSSH client (ssh, scp, sftp)
# scripts/sdk-tests.sh puts the Python SDK in a venv (Debian splits ensurepip out)
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}" ca-certificates
fi
can_link || { echo "cc cannot link a C program even after installing libc6-dev; cargo builds will fail" >&2; exit 1; }
# gVisor's runsc, for `--isolation gvisor` (and its tests)
"$(dirname "$0")/install-runsc.sh"
