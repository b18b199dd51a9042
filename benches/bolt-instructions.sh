#!/usr/bin/env bash
# User-space instructions per Bolt request through the whole proxy, under callgrind
# (load-independent, unlike times; BENCHMARKS.md "Bolt (SOFARPC) through the whole proxy").
# Usage: benches/bolt-instructions.sh SLUICE BOLT_LOAD [SECONDS] [OUT_DIR]
# The echo server (`bolt-load serve`) and the load (`bolt-load load --connections 32
# --pipeline 8`) on core 0, Sluice (`--workers 1`, under callgrind) on core 1; 3 s of warm-up
# load, counters zeroed, SECONDS (default 10) of measured load, counters dumped. Prints the
# instructions collected, the requests the load got answered, and their quotient; the dump is
# left in OUT_DIR (default a temporary directory) for callgrind_annotate.
set -euo pipefail
sluice=$(realpath "$1")
load=$(realpath "$2")
secs=${3:-10}
out=${4:-$(mktemp -d)}
mkdir -p "$out"
echo_port=${BOLT_ECHO_PORT:-27311}
proxy_port=${BOLT_PROXY_PORT:-27312}
cat >"$out/sluice.yaml" <<EOF
listeners:
  - name: bolt_bench
    address: 127.0.0.1:$proxy_port
    bolt:
      routes:
        - match: { service: "com.example.EchoService:1.0" }
          route: { cluster: echo_rpc }
clusters:
  - name: echo_rpc
    connect_timeout: 1s
    hosts:
      - { address: 127.0.0.1:$echo_port }
EOF
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
taskset -c 0 "$load" serve --listen "127.0.0.1:$echo_port" 2>"$out/serve.log" &
pids+=($!)
taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.%p" \
    "$sluice" run -c "$out/sluice.yaml" --workers 1 >"$out/sluice.log" 2>&1 &
vg=$!
pids+=($vg)
for _ in $(seq 1 120); do
    if "$load" load --target "127.0.0.1:$proxy_port" --connections 1 --pipeline 1 --seconds 0 \
        2>/dev/null | grep -q '"requests":1,"errors":0'; then
        break
    fi
    sleep 1
done
lg() {
    taskset -c 0 "$load" load --target "127.0.0.1:$proxy_port" --connections 32 --pipeline 8 \
        --seconds "$1"
}
lg 3 >"$out/warmup.json"
callgrind_control -z "$vg" >/dev/null
lg "$secs" >"$out/load.json"
callgrind_control -d "$vg" >/dev/null
sleep 1
dump=$(ls -t "$out"/callgrind.out.* | head -1)
ir=$(sed -n 's/^summary: \([0-9]*\).*/\1/p' "$dump")
requests=$(sed -n 's/.*"requests":\([0-9]*\).*/\1/p' "$out/load.json")
errors=$(sed -n 's/.*"errors":\([0-9]*\).*/\1/p' "$out/load.json")
echo "instructions $ir requests $requests errors $errors per_request $((ir / requests)) dump $dump"
