#!/bin/bash
# Build the test/demo image (default tag jctotp:dev): Docker engine, base
# image, the shim, then `docker build --network host`. Idempotent; installs
# the build tools it needs from Debian when missing.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
image=${JCTOTP_IMAGE:-jctotp:dev}

missing=()
command -v gcc >/dev/null || missing+=(gcc libc6-dev)
command -v make >/dev/null || missing+=(make)
[ -f /usr/include/security/pam_modules.h ] || missing+=(libpam0g-dev)
if [ ${#missing[@]} -gt 0 ]; then
    echo "build-image: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

"$repo/scripts/ensure-docker.sh"
"$repo/scripts/build-base-image.sh"
make -s -C "$repo/native"
# Quiet unless it fails (the legacy builder also warns on every run).
if ! out=$(docker build --network host -f "$repo/packaging/docker/Dockerfile" \
        -t "$image" "$repo" 2>&1); then
    echo "$out" >&2
    exit 1
fi
echo "image: $image"
