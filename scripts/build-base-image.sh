#!/bin/bash
# Make sure an image tagged debian:bookworm-slim exists, so that
# `FROM debian:bookworm-slim` Dockerfiles build without a registry.
#
# Order: a pulled image already there -> keep it; our debootstrapped image
# with the same content hash -> reuse it; `docker pull` works -> use that;
# otherwise debootstrap --variant=minbase from deb.debian.org with every
# package of packaging/docker/packages.txt and `docker import` it.
# The cache key is the sha256 of this script and the package list, kept as
# the tag jctotp-base:<hash> (docker import cannot set labels).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
pkgfile=$here/../packaging/docker/packages.txt
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
target=debian:bookworm-slim

hash=$(cat "$0" "$pkgfile" | sha256sum | cut -c1-16)
cached=jctotp-base:$hash

have() { docker image inspect "$1" >/dev/null 2>&1; }
image_id() { docker image inspect -f '{{.Id}}' "$1"; }

if have "$cached"; then
    docker tag "$cached" "$target"
    echo "base image: $target = $cached (cached)"
    exit 0
fi
# A debian:bookworm-slim that is not one of ours (pulled, or loaded by hand)
# is kept as it is; one of ours with another hash is rebuilt.
if have "$target" && ! docker image ls -q --no-trunc jctotp-base |
        grep -qx "$(image_id "$target")"; then
    echo "base image: $target already present"
    exit 0
fi
if timeout "${PULL_TIMEOUT:-20}" docker pull -q "$target" >/dev/null 2>&1; then
    echo "base image: $target pulled"
    exit 0
fi

echo "base image: no registry; debootstrapping $target ($cached)"
command -v debootstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
}
root=$(mktemp -d /var/tmp/jctotp-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
pkgs=$(grep -v '^#' "$pkgfile" | grep . | paste -sd, -)
debootstrap --variant=minbase --include="$pkgs" bookworm "$root" "$mirror" \
    >"$root.log" 2>&1 || { tail -30 "$root.log"; exit 1; }
rm -f "$root.log"

# Same trimming as the official slim image: no caches, no apt lists, and
# policy-rc.d so that package scripts never try to start daemons.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
       "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log \
       "$root"/etc/ssh/ssh_host_*
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
    "$mirror" "$mirror" >"$root/etc/apt/sources.list"

tar -C "$root" --numeric-owner -c . |
    docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "$cached" >/dev/null
docker tag "$cached" "$target"
echo "base image: $target = $cached (built)"
