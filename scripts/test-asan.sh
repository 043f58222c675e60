#!/bin/sh
# Runs the real-libpam tests (pytest -m pam) against the shim built with
# AddressSanitizer + UBSan. Fails on a test failure or on any sanitizer report.
# Usage: scripts/test-asan.sh [pytest args...]   (PYTHON=... to pick the interpreter)
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
cc=${CC:-gcc}

make -C "$repo/native" asan

logdir=$(mktemp -d "${TMPDIR:-/tmp}/jctotp-asan.XXXXXX")
asan_rt=$("$cc" -print-file-name=libasan.so)
ubsan_rt=$("$cc" -print-file-name=libubsan.so)
for rt in "$asan_rt" "$ubsan_rt"; do
    [ -e "$rt" ] || { echo "test-asan: sanitizer runtime not found: $rt" >&2; exit 2; }
done

status=0
# The sanitizer runtimes must be loaded before anything else in the process
# (python itself is not instrumented), hence LD_PRELOAD.
env JCTOTP_SHIM="$repo/native/asan/pam_jctotp.so" \
    LD_PRELOAD="$asan_rt $ubsan_rt" \
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:halt_on_error=1:exitcode=86:log_path=$logdir/asan" \
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=87:log_path=$logdir/ubsan" \
    "$python" -m pytest "$repo/tests/pam" -m pam "$@" || status=$?

reports=$(find "$logdir" -type f -size +0 | sort)
if [ -n "$reports" ]; then
    echo "test-asan: sanitizer reports:" >&2
    for f in $reports; do
        echo "==== $f" >&2
        cat "$f" >&2
    done
    [ "$status" -ne 0 ] || status=1
else
    rm -rf "$logdir"
fi
[ "$status" -eq 0 ] && echo "test-asan: OK (no sanitizer reports)"
exit "$status"
