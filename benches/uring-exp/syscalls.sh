#!/usr/bin/env bash
# System calls per request of one proxy, counted with `strace -c -f` over a short wrk load:
# backend nginx (`return 200 "hello\n"`, keep-alive) and wrk on core 0, the proxy on core 1.
# strace slows the proxy down a lot: read the counts per request, not the throughput.
#
# With TOOL=perf instead: a `perf record -e cpu-clock` profile of the proxy over the same load
# (no strace, so the proxy runs at full speed), reported as the top symbols and the share of
# samples per symbol group (perf.data is left in the printed directory).
#
# With TOOL=wrk: no tracing at all, only wrk's own summary (latency, requests, socket errors).
#
# usage: [TOOL=perf|wrk] benches/uring-exp/syscalls.sh NAME 'CMD with {port} and {upstream}' [SECONDS]
#   e.g. benches/uring-exp/syscalls.sh uring \
#          'benches/uring-exp/target/release/uring-exp --driver uring --listen 127.0.0.1:{port} --upstream {upstream}'
#   NAME sluice: CMD is the Sluice binary; it gets a config with one http listener on {port}
#   routing to {upstream} (the harness's sluice-http.yaml):
#        benches/uring-exp/syscalls.sh sluice target/release/sluice
set -euo pipefail
name=$1 cmd=$2 secs=${3:-3}
here=$(cd "$(dirname "$0")" && pwd)
tpl=$here/../loopback/templates
work=$(mktemp -d /tmp/uring-exp-strace.XXXXXX)
backend=18631 status=18632 port=18633
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
pids=(); trap cleanup EXIT
mkdir -p "$work/backend/tmp"
sed -e "s#{{DIR}}#$work/backend#g" -e "s#{{BACKEND_PORT}}#$backend#g" \
    -e "s#{{STATUS_PORT}}#$status#g" "$tpl/backend-nginx.conf" > "$work/backend/nginx.conf"
taskset -c 0 nginx -c "$work/backend/nginx.conf" -p "$work/backend/" -g 'daemon off;' &
pids+=($!)
if [ "$name" = sluice ]; then
  bin=$cmd
  sed -e "s#{{L7_PORT}}#$port#g" -e "s#{{BACKEND_PORT}}#$backend#g" \
      "$tpl/sluice-http.yaml" > "$work/sluice.yaml"
  argv=("$bin" run -c "$work/sluice.yaml" --workers 1 --log-level warn)
else
  read -r -a argv <<< "${cmd//\{port\}/$port}"
  argv=("${argv[@]//\{upstream\}/127.0.0.1:$backend}")
fi
taskset -c 1 "${argv[@]}" > "$work/proxy.log" 2>&1 &
pids+=($!)
proxy=${pids[1]}
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$port/" -H "Host: bench.local" 2>/dev/null && break; sleep 0.1; done
taskset -c 0 wrk -t1 -c50 -d1s "http://127.0.0.1:$port/" -H 'Host: bench.local' > /dev/null  # warm-up
if [ "${TOOL:-strace}" = wrk ]; then
  sleep 0
elif [ "${TOOL:-strace}" = perf ]; then
  perf record -q -e cpu-clock -F 4999 -g -p "$proxy" -o "$work/perf.data" 2>/dev/null &
else
  strace -c -f -p "$proxy" -o "$work/strace.txt" &
fi
spid=$!
sleep 0.5
out=$(taskset -c 0 wrk -t1 -c50 -d"${secs}s" "http://127.0.0.1:$port/" -H 'Host: bench.local')
sleep 0.3
if [ "${TOOL:-strace}" = wrk ]; then
  echo "$out"; rm -rf "$work"; exit 0
fi
kill -INT $spid; wait $spid 2>/dev/null || true
reqs=$(awk '/requests in/ {print $1}' <<< "$out")
echo "$name: $reqs requests (wrk: $(grep -E 'Socket errors|Non-2xx' <<< "$out" | tr '\n' ' ' || true))"
if [ "${TOOL:-strace}" = perf ]; then
  perf report -i "$work/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -8 || true
  perf report -i "$work/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null \
    | grep -E "^ +[0-9]" | head -${TOP:-40} || true
  echo "profile kept in $work"
  trap - EXIT; cleanup; exit 0
fi
awk -v r="$reqs" -v n="$name" 'NR>2 && $1 ~ /^[0-9.]+$/ && $NF != "total" {
  e = (NF == 6) ? $5 : 0
  printf "  %-16s %10d calls  %6.3f per request  (%d errors)\n", $NF, $4, $4 / r, e }' "$work/strace.txt"
rm -rf "$work"
