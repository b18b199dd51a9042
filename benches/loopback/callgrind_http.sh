#!/usr/bin/env bash
# Userspace instructions per HTTP/1.1 request through the whole proxy, under callgrind
# (load-independent, unlike times). Sluice runs the harness's L7 config
# (templates/sluice-http.yaml: one `http` listener, one route, upstream keep-alive) with one
# worker in front of the harness's backend nginx; h2load sends a warm-up, the counters are
# zeroed (`callgrind_control -z`), then the measured load runs and the counters are dumped.
#
# Usage: benches/loopback/callgrind_http.sh SLUICE_BINARY [OUT_DIR]
#   env: REQUESTS (default 20000), WARMUP (default 5000), CONNECTIONS (default 50),
#        BODY_FILE (each request a POST of this file's bytes, with content-length; default: GETs)
# Prints the instructions per request; OUT_DIR keeps callgrind.out.* (the measured dump is the
# newest one) for `benches/loopback/callgrind_groups.py` (the per-group table).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(realpath "$1")
out=${2:-$(mktemp -d /tmp/sluice-callgrind.XXXXXX)}
requests=${REQUESTS:-20000}
warmup=${WARMUP:-5000}
conns=${CONNECTIONS:-50}
mkdir -p "$out/tmp"
rm -f "$out"/callgrind.out*

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
backend=$(free_port); status=$(free_port); l7=$(free_port)
sed -e "s#{{DIR}}#$out#g" -e "s/{{BACKEND_PORT}}/$backend/g" -e "s/{{STATUS_PORT}}/$status/g" \
    "$here/templates/backend-nginx.conf" >"$out/backend.conf"
sed -e "s/{{L7_PORT}}/$l7/g" -e "s/{{BACKEND_PORT}}/$backend/g" \
    "$here/templates/sluice-http.yaml" >"$out/sluice.yaml"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
nginx -c "$out/backend.conf" -p "$out/" -g 'daemon off;' 2>"$out/nginx.log" &
pids+=($!)
valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" \
    "$bin" run -c "$out/sluice.yaml" --workers 1 --log-level warn 2>"$out/valgrind.log" &
vg=$!
pids+=($vg)

for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "http://127.0.0.1:$l7/" 2>/dev/null && break
    kill -0 "$vg" 2>/dev/null || { cat "$out/valgrind.log" >&2; exit 1; }
    sleep 0.2
done
load() { h2load --h1 -t1 -c"$conns" -n"$1" ${BODY_FILE:+-d "$BODY_FILE"} "http://127.0.0.1:$l7/" >"$out/h2load-$2.txt"; }
load "$warmup" warmup
callgrind_control -z "$vg" >/dev/null 2>&1
load "$requests" measured
callgrind_control -d "$vg" >/dev/null 2>&1
grep -q "$requests succeeded, 0 failed, 0 errored, 0 timeout" "$out/h2load-measured.txt" ||
    { echo "h2load saw errors:" >&2; grep requests: "$out/h2load-measured.txt" >&2; exit 1; }
grep -q "status codes: $requests 2xx" "$out/h2load-measured.txt" ||
    { echo "not every answer was a 2xx:" >&2; grep 'status codes' "$out/h2load-measured.txt" >&2; exit 1; }
dump=$(ls -t "$out"/callgrind.out.* | head -1)
total=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p;s/^totals: *\([0-9]*\).*/\1/p' "$dump" | head -1)
echo "dump: $dump"
echo "instructions: $total over $requests requests = $((total / requests)) per request"
