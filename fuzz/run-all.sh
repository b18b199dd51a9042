#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each on stable Rust (--sanitizer none), as many at once as
# there are cores (FUZZ_JOBS=N overrides), starting from the
# committed seed corpus, and exits non-zero if any target crashed (panic, timeout, OOM).
#
#   fuzz/run-all.sh SECONDS [TARGET...]
#
# Each target fuzzes into a temporary copy of corpus/TARGET (new inputs land there), with the
# committed corpus/TARGET passed as a second, read-only corpus dir, so a run never adds files to
# the committed corpus. A crash input is kept in fuzz/artifacts/TARGET/, and the command that
# replays it is printed. Installs cargo-fuzz when it is missing (a fresh CI machine).
set -euo pipefail

usage() {
    echo "usage: $0 SECONDS [TARGET...]" >&2
    exit 2
}
[[ $# -ge 1 && $1 =~ ^[0-9]+$ && $1 -gt 0 ]] || usage
seconds=$1
shift

cd "$(dirname "$0")"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: installing it (about 1.5 min)" >&2
    cargo install cargo-fuzz --version 0.13.2 --locked
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# One build for all targets, so that build errors show once and up front.
cargo fuzz build --sanitizer none

work_root=$(mktemp -d "${TMPDIR:-/tmp}/sluice-fuzz.XXXXXX")
trap 'rm -rf "$work_root"' EXIT

# One target: fuzzes it, writes its summary line to $work_root/$t.line, and keeps its log as an
# artifact when it crashed (exit status non-zero then).
run_target() {
    local t=$1 seeds="corpus/$1" work="$work_root/$1" log="$work_root/$1.log" rc
    mkdir -p "$work" "artifacts/$t"
    local corpora=("$work") from="NO seeds (commit some in fuzz/$seeds)"
    if [[ -d $seeds ]]; then
        cp -r "$seeds/." "$work/"
        corpora+=("$seeds")
        from="$(find "$seeds" -type f | wc -l) seeds"
    fi
    echo "=== $t: ${seconds}s from $from"
    set +e
    cargo fuzz run --sanitizer none "$t" "${corpora[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1
    rc=$?
    set -e
    local runs elapsed eps="?" cov corpus_now line
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    elapsed=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n1)
    if [[ -n ${runs:-} && -n ${elapsed:-} && $elapsed -gt 0 ]]; then
        eps=$((runs / elapsed))
    fi
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 || true)
    corpus_now=$(find "$work" -type f | wc -l)
    if [[ $rc -eq 0 ]]; then
        line="$t: ok, ${runs:-?} runs in ${elapsed:-?}s (${eps} exec/s), ${cov:-cov: ?}, corpus ${corpus_now}"
    else
        line="$t: FAILED (exit $rc)"
        cp "$log" "artifacts/$t/run-all.log"
        {
            echo "--- $t: the failure (whole log: fuzz/artifacts/$t/run-all.log)"
            awk '/panicked at/ {p = 1} /^stack backtrace:/ {p = 0} p' "$log" | head -n 20
            echo "--- $t: last 40 lines of the libFuzzer log"
            tail -n 40 "$log"
        } >&2
    fi
    echo "$line" | tee "$work_root/$t.line"
    return "$rc"
}

# libFuzzer runs one process per target on one core: as many targets at once as there are
# cores (FUZZ_JOBS overrides), so the suite's fuzzing takes SECONDS x targets / cores.
jobs=${FUZZ_JOBS:-$(nproc)}
failed=()
running=0
for t in "${targets[@]}"; do
    if ((running >= jobs)); then
        wait -n || true
        running=$((running - 1))
    fi
    run_target "$t" &
    running=$((running + 1))
done
wait || true
summary=()
for t in "${targets[@]}"; do
    line=$(cat "$work_root/$t.line" 2>/dev/null || echo "$t: FAILED (no result)")
    summary+=("$line")
    [[ $line == "$t: ok,"* ]] || failed+=("$t")
done

echo
echo "=== summary"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzzing FAILED: ${failed[*]} (inputs in fuzz/artifacts/; replay: cd fuzz && cargo fuzz run --sanitizer none TARGET artifacts/TARGET/FILE)" >&2
    exit 1
fi
echo "all ${#targets[@]} targets ran ${seconds}s each without a crash"
