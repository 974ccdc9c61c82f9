#!/usr/bin/env bash
# run-fuzzer.sh FUZZER CORPUS SECONDS: run a libFuzzer target for a bounded
# time on a scratch copy of its checked-in seed corpus (the checked-in corpus
# stays as it is). Prints "1 passed, 0 failed" or "0 passed, 1 failed".
set -u
fuzzer=$1 corpus=$2 seconds=$3
if [ ! -d "$corpus" ]; then
	echo "error: seed corpus $corpus is missing" >&2
	echo "0 passed, 1 failed"; exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$corpus"/. "$work"/
if "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
	-print_final_stats=1 -artifact_prefix="$work/" "$work" 2>&1 | tail -n 25; then
	[ "${PIPESTATUS[0]}" -eq 0 ] && { echo "1 passed, 0 failed"; exit 0; }
fi
for a in "$work"/crash-* "$work"/leak-* "$work"/timeout-*; do
	[ -e "$a" ] && { echo "reproducer: $(basename "$a")"; od -An -tx1 "$a" | head -n 8; }
done
echo "0 passed, 1 failed"
exit 1
