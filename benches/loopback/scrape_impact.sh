#!/usr/bin/env bash
# Does scraping the admin API stall the data path? Runs the same wrk load through Sluice's HTTP
# listener twice — without scraping, and with `GET /stats/prometheus` every 100 ms — and prints
# p50/p99/req/s of both. Backend (nginx), wrk and the scraper on core 0; Sluice (1 worker) on core 1.
#
#   bash benches/loopback/scrape_impact.sh [SECONDS] [SLUICE_BINARY]
set -euo pipefail
secs=${1:-10}
bin=${2:-target/release/sluice}
[ -x "$bin" ] || { echo "build it first: cargo build --release -p sluice-runtime" >&2; exit 2; }
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/backend.conf" <<CONF
master_process off; worker_processes 1; pid $work/b.pid; error_log $work/b.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 100000000;
  server { listen 127.0.0.1:18901; location / { return 200 "hello"; } } }
CONF
cat > "$work/sluice.yaml" <<CONF
admin: { address: 127.0.0.1:18903 }
listeners:
  - name: http_in
    address: 127.0.0.1:18902
    http:
      virtual_hosts:
        - { name: all, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: backend } } ] }
clusters:
  - { name: backend, hosts: [ { address: 127.0.0.1:18901 } ] }
CONF
taskset -c 0 nginx -c "$work/backend.conf" -p "$work" -g 'daemon off;' &
taskset -c 1 "$bin" run -c "$work/sluice.yaml" --workers 1 --log-level warn &
for _ in $(seq 100); do curl -sf http://127.0.0.1:18903/ready >/dev/null 2>&1 && break; sleep 0.1; done
load() { taskset -c 0 wrk -t1 -c50 -d"${secs}s" --latency -H 'Host: bench.local' http://127.0.0.1:18902/; }
summary() { awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} END {printf "req/s %s  p50 %s  p99 %s", rps, p50, p99}'; }
load >/dev/null  # warm-up
echo "without scraping: $(load | summary)"
( while true; do taskset -c 0 curl -s http://127.0.0.1:18903/stats/prometheus >/dev/null; sleep 0.1; done ) &
scraper=$!
echo "scrape every 100 ms: $(load | summary)"
kill $scraper
lines=$(curl -s http://127.0.0.1:18903/stats/prometheus | wc -l)
echo "(one scrape: $lines lines of Prometheus text)"
