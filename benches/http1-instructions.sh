#!/usr/bin/env bash
# Instructions per HTTP/1.1 codec operation, under callgrind (load-independent, unlike times).
# Usage: benches/http1-instructions.sh [BINARY]   (default: the newest http1_instructions bench
# binary; build it with `cargo bench -p sluice-benches --bench http1_instructions --no-run`).
# Each operation runs 1000 and 11000 times; the difference of the two counts / 10000 is one run.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-$(ls -t target/release/deps/http1_instructions-* | grep -v '\.d$' | head -1)}
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
ops=$("$bin" 2>&1 | sed -n 's/^operations: //p' || true)
for op in $ops; do
    low=$(count "$op" 1000)
    high=$(count "$op" 11000)
    echo "$op $(( (high - low) / 10000 ))"
done
