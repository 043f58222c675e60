#!/bin/bash
# The Debian 12 sshd binary, unpacked (never installed) under build/sshd, for
# tests/unit/test_sshd_dropins.py: `sshd -T` parses our drop-ins without
# docker, and nothing of the host's /etc/ssh or /etc/pam.d is touched.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dest="$repo/build/sshd"
[ -x "$dest/usr/sbin/sshd" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -qq openssh-server 2>/dev/null) || {
    apt-get update -qq && (cd "$tmp" && apt-get download -qq openssh-server); }
mkdir -p "$dest"
dpkg-deb -x "$tmp"/openssh-server_*.deb "$dest"
