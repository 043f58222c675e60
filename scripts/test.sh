#!/bin/bash
# Install what the tests need and run them all (the README's second command;
# .ci/run calls exactly this).
#
#   bash scripts/test.sh          everything: lint, unit, real libpam, the shim
#                                 under ASan/UBSan, its frame parser fuzzed (60 s),
#                                 private PostgreSQL and slapd,
#                                 then real sshd in Docker
#   bash scripts/test.sh --fast   lint + the fast tier (unit + real libpam), < 2 min
#                                 (6 workers; the `slow` load and timing tests are
#                                 left to the full run)
#
# Needs root on a Debian 12 machine (apt-get, dockerd, setuid tests).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
fast=no
[ "${1:-}" = "--fast" ] && fast=yes

step() { printf '\n=== %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: run as root (it installs packages and tests root-only sockets)" >&2
    exit 1
fi

# --- system packages (Debian 12) ---------------------------------------------
# libpq5: psycopg (the fleet store's driver) loads it at import.
pkgs=(gcc make libc6-dev libpam0g-dev libpam-modules oathtool python3 python3-venv libpq5)
# docker.io comes from scripts/ensure-docker.sh: it keeps the package from starting a bridged dockerd.
[ "$fast" = no ] && pkgs+=(debootstrap openssh-client dpkg-dev clang libclang-rt-14-dev
                           chromium chromium-driver)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    step "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
# PostgreSQL and OpenLDAP for tests/fleet and tests/ldap, without starting system servers.
[ "$fast" = no ] && scripts/install-test-servers.sh

# --- Python environment ---------------------------------------------------------
venv=${JCTOTP_VENV:-$repo/.venv}
if [ ! -x "$venv/bin/python" ]; then
    step "creating $venv"
    python3 -m venv "$venv"
fi
stamp="$venv/.jctotp-deps"
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    step "installing Python dependencies"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e ".[test]"
    echo "$want" >"$stamp"
fi
export PATH="$venv/bin:$PATH"
export PYTHON="$venv/bin/python"
# Bytecode is cached, out of the tree: with PYTHONDONTWRITEBYTECODE=1 (set in many CI
# images) every pytest worker rewrote the asserts of all test modules again (~2 s of
# CPU each) and every jctotpd and jctotp the tests start compiled its modules again.
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX="$repo/build/pycache"

# sshd unpacked under build/sshd (never installed): tests/unit/test_sshd_dropins.py
# parses the shipped drop-ins with it, without docker.
scripts/fetch-sshd.sh

# --- build and lint ---------------------------------------------------------------
step "building the shim (native/)"
make -s -C native
step "lint: ruff"
ruff check .
step "types: mypy"
mypy pam_jctotp

# Tests mostly wait (daemon start-up, PAM timeouts, fail delays), so they are spread
# over more pytest-xdist workers than cores; those marked `serial` (tight timing
# bounds) then run alone. JCTOTP_TEST_WORKERS=0 runs everything in one process.
workers=${JCTOTP_TEST_WORKERS:-4}
only=""
if [ "$fast" = yes ]; then
    workers=${JCTOTP_TEST_WORKERS:-6}
    only=" and not slow"
fi
pytest_split() {
    local rc=0
    "$PYTHON" -m pytest -q -n "$workers" -m "not serial$only" "$@"
    "$PYTHON" -m pytest -q -m "serial$only" "$@" || rc=$?
    [ "$rc" -eq 0 ] || [ "$rc" -eq 5 ]  # 5: no serial test among these
}

# --- fast tier ----------------------------------------------------------------------
step "unit + real libpam + the portal over HTTP (fast tier)"
pytest_split tests/unit tests/pam tests/portal
[ "$fast" = yes ] && { step "fast tier passed"; exit 0; }

step "the shim under AddressSanitizer + UBSan"
scripts/test-asan.sh -q -n "$workers" -m "pam and not serial"
scripts/test-asan.sh -q -m "pam and serial"
step "fuzzing the shim's frame parser (libFuzzer, ASan + UBSan)"
scripts/fuzz.sh 60

step "the User Portal in headless chromium (Selenium), screenshots in ${JCTOTP_PORTAL_SHOTS:=$repo/build/portal-shots}"
JCTOTP_PORTAL_SHOTS=$JCTOTP_PORTAL_SHOTS "$PYTHON" -m pytest -q tests/browser

step "real PostgreSQL and slapd, private on 127.0.0.1 (fleet + directory)"
# tests/fleet names its Linux accounts per test (conftest: scratch_accounts) and
# each worker has its own PostgreSQL, so it runs on the workers too
JCTOTP_TEST_POSTGRES=1 pytest_split tests/fleet tests/unit/test_store_contract.py
JCTOTP_TEST_POSTGRES=1 "$PYTHON" -m pytest -q tests/ldap
step "real libpam again, every daemon's state on PostgreSQL"
JCTOTP_TEST_DATABASE=postgres pytest_split tests/pam tests/portal  # a PostgreSQL per worker

# --- containers: real sshd and OpenSSH client -----------------------------------------
step "Docker engine and images"
scripts/ensure-docker.sh
scripts/build-image.sh
step "real sshd + OpenSSH client in containers"
CI=true "$PYTHON" -m pytest -q tests/ssh
step "the .deb: build, contents, install/use/purge in containers, the unit under systemd"
CI=true "$PYTHON" -m pytest -q tests/packaging
step "all tests passed"
