#!/usr/bin/env bash
# HTTP/2 (h2c) requests through Sluice vs nginx, per proxy CPU-second (issue 11's benchmark):
# h2load → proxy (an `http` listener, h2c by prior knowledge) → nginx backend (`return 200`,
# HTTP/1.1 keep-alive). Backend and h2load pinned to core 0, the proxy to core 1 with one
# worker; proxy CPU = utime+stime of its (worker) process around the measured run.
#
#   benches/loopback/h2load.sh [SLUICE_BINARY] [RUNS]    (default target/release/sluice, 3)
#
# Prints one line per run, alternating nginx and Sluice: requests, failures, seconds, req/s,
# proxy CPU-s, requests per proxy CPU-second, and h2load's request-time line.
set -euo pipefail
sluice=$(realpath "${1:-target/release/sluice}")
runs=${2:-3}
dir=$(mktemp -d /tmp/sluice-h2load.XXXX)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/backend.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/backend.pid;
error_log $dir/backend.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:18080; location / { return 200 "ok\n"; } }
}
CONF
cat > "$dir/proxy.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/proxy.pid;
error_log $dir/proxy.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream be { server 127.0.0.1:18080; keepalive 64; }
  server {
    listen 127.0.0.1:18082 http2;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
cat > "$dir/sluice.yaml" <<CONF
listeners:
  - name: h2in
    address: 127.0.0.1:18081
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [ { match: { prefix: / }, route: { cluster: be } } ]
clusters:
  - name: be
    hosts: [ { address: 127.0.0.1:18080 } ]
CONF
run() {
  local which=$1 be px wpid port
  taskset -c 0 nginx -c "$dir/backend.conf" -p "$dir" & be=$!
  sleep 0.5
  if [ "$which" = sluice ]; then
    taskset -c 1 "$sluice" run -c "$dir/sluice.yaml" --workers 1 --log-level warn > "$dir/sluice.log" 2>&1 & px=$!
    sleep 1; wpid=$px; port=18081
  else
    taskset -c 1 nginx -c "$dir/proxy.conf" -p "$dir" & px=$!
    sleep 1; wpid=$(pgrep -P "$px" | head -1); port=18082
  fi
  cpu() { awk '{print $14+$15}' "/proc/$wpid/stat"; }
  # Warm-up (not counted), then the measured run.
  taskset -c 0 h2load -n 50000 -c 50 -m 10 -t 1 "http://127.0.0.1:$port/" > /dev/null 2>&1 || true
  local c0 c1 out
  c0=$(cpu)
  out=$(taskset -c 0 h2load -n 600000 -c 50 -m 10 -t 1 "http://127.0.0.1:$port/" 2>&1)
  c1=$(cpu)
  kill "$px" "$be"; wait 2>/dev/null || true
  local tck secs succ fail cpus
  tck=$(getconf CLK_TCK)
  secs=$(grep -oP 'finished in \K[0-9.]+' <<< "$out")
  succ=$(grep -oP '\d+(?= succeeded)' <<< "$out")
  fail=$(grep -oP '\d+(?= failed)' <<< "$out" | head -1)
  cpus=$(echo "scale=2; ($c1-$c0)/$tck" | bc)
  echo "$which ok=$succ failed=$fail secs=$secs req/s=$(echo "$succ/$secs" | bc) proxyCPU=$cpus req/CPUs=$(echo "$succ/$cpus" | bc) | $(grep 'time for request' <<< "$out")"
}
for _ in $(seq "$runs"); do
  run nginx
  run sluice
done
