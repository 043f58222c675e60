#!/bin/sh
# Fuzzes the shim's frame parser (native/wire.c: frame receive, length,
# NUL and UTF-8 checks, tags, verdicts, text sanitising) with libFuzzer under
# ASan + UBSan for a bounded time. Fails on any crash or sanitizer report.
# Usage: scripts/fuzz.sh [seconds]     (default 60; needs clang and libclang-rt-14-dev)
#
# The seed corpus is native/fuzz/corpus/ (kept in the tree, never written
# to); inputs the run discovers go to a temp dir, removed on success. A crash
# leaves its input there: add it to the corpus once fixed.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
case $seconds in
'' | *[!0-9]*) echo "fuzz.sh: seconds must be a number, not '$seconds'" >&2; exit 2 ;;
esac

make -s -C "$repo/native" fuzz

work=$(mktemp -d "${TMPDIR:-/tmp}/jctotp-fuzz.XXXXXX")
mkdir "$work/corpus"
status=0
# -max_len: a full frame (4 + 16384) plus room for the frames after it; the
# whole input must fit one socketpair buffer (about 200 KB).
"$repo/native/fuzz/fuzz_wire" -max_total_time="$seconds" -max_len=20000 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$work/" \
    "$work/corpus" "$repo/native/fuzz/corpus" 2>"$work/log" || status=$?
grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$work/log" || true
if [ "$status" -ne 0 ]; then
    tail -n 60 "$work/log" >&2
    echo "fuzz.sh: FAILED (exit $status); log and crash input kept in $work" >&2
    exit "$status"
fi
echo "fuzz.sh: OK ($seconds s, no crash)"
rm -rf "$work"
