#!/usr/bin/env bash
# Installs gVisor's runsc (the `--isolation gvisor` backend) from Debian's
# archive, through apt, so the package's signature is checked.
#
# Debian 12 (bookworm) ships runsc 20221219, which cannot stat with
# AT_NO_AUTOMOUNT (so `ls` and `stat` fail in every sandbox). Debian 13
# (trixie) ships 20240729, a static binary with no dependencies. On
# bookworm this adds trixie's archive pinned so that apt takes runsc, and
# only runsc, from it (priority 1 for everything else: never installed or
# upgraded from trixie unless asked). Remove the two files named below to
# undo it.
set -euo pipefail
release_of() { "$1" --version 2>/dev/null | grep -oE '[0-9]{8}' | head -1; }
if command -v runsc >/dev/null 2>&1 && [ "$(release_of runsc || echo 0)" -ge 20230101 ]; then
  exit 0
fi
. /etc/os-release
export DEBIAN_FRONTEND=noninteractive
if [ "${VERSION_CODENAME:-}" = bookworm ]; then
  echo "==> installing runsc from Debian 13 (pinned: runsc only)"
  cat > /etc/apt/sources.list.d/airlock-runsc-trixie.sources <<'SRC'
# Added by airlock's scripts/install-runsc.sh: gVisor's runsc from Debian 13.
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  cat > /etc/apt/preferences.d/airlock-runsc <<'PIN'
# Added by airlock's scripts/install-runsc.sh: take only runsc from trixie.
Package: *
Pin: release n=trixie
Pin-Priority: 1

Package: runsc
Pin: release n=trixie
Pin-Priority: 990
PIN
  apt-get update -q
  apt-get install -y -q --no-install-recommends runsc
else
  echo "==> installing runsc"
  apt-get update -q
  apt-get install -y -q --no-install-recommends runsc
fi
release=$(release_of runsc || echo 0)
if [ "$release" -lt 20230101 ]; then
  echo "runsc $release is too old for airlock's gvisor backend (needs 2023 or later)" >&2
  exit 1
fi
