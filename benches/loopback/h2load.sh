#!/usr/bin/env bash
# HTTP/2 through Sluice vs nginx (issue 11), nginx and Sluice alternating, medians of RUNS:
#
#   h2c   h2load → the proxy's h2c listener (Sluice: an `http` listener, codec auto; nginx:
#         `listen … http2`) → nginx `return 200` over HTTP/1.1 keep-alive;
#   grpc  gRPC unary calls: h2load POSTs one length-prefixed gRPC message (`-d`, content-type
#         application/grpc, te: trailers) → the proxy (Sluice: the same listener kind, route to a
#         `protocol: http2` cluster; nginx: `listen … http2` + `grpc_pass` with upstream keepalive)
#         → grpc-echo (benches/src/bin/grpc-echo.rs, h2 crate): the message echoed, trailers
#         grpc-status: 0. Each proxy is first probed with one call whose whole answer is checked
#         (`grpc-echo probe`: status, content-type, body, trailers);
#   idle  memory per idle HTTP/2 connection: h2_idle.py holds N h2c connections open and idle
#         (preface and SETTINGS exchanged), then, against a fresh proxy, N that each made one
#         request first, and reports (RSS held − RSS before) / N of the proxy (Sluice's process, nginx's worker).
#
# For h2c and grpc each run is: a warm-up (not counted), the measured run at saturation
# (`h2load -n … -c … -m 10`: requests per proxy CPU-second, user/system split, p50/p99 from
# h2load's --log-file), then a run at a fixed rate (`--rps`, the same for both proxies, below
# either's saturation: p50/p99 that are not queueing in the proxy, and the proxy's CPU at that
# rate). Every answer must be a 200 (h2load's 2xx count and the log's status column) and
# succeeded must equal the requests sent, else the run is FAILED (exit status 1).
#
# Backends and h2load are pinned to core 0, the proxy to core 1 with one worker; proxy CPU =
# utime+stime of its process (Sluice: the whole process; nginx: its one worker) around each run.
#
#   benches/loopback/h2load.sh [options] [SLUICE_BINARY [RUNS]]
#     --sluice PATH       (default target/release/sluice)
#     --grpc-echo PATH    (default target/release/grpc-echo: cargo build --release -p sluice-benches)
#     --runs N            (default 3)
#     --tests LIST        comma-separated of h2c,grpc,idle (default all three)
#     --rate R            fixed-rate runs' total requests/s (default 10000; 0 skips them)
#     --idle N            connections held by the idle test (default 2000)
#     --out DIR           keep configs, logs and results there (default: a temporary directory)
#     --ports BASE        six ports from BASE on 127.0.0.1 (default 18080): nginx backend +0,
#                         Sluice h2c +1, nginx h2c +2, grpc-echo +3, Sluice gRPC +4, nginx gRPC +5
#     --smoke             seconds, not minutes: 1 run, small counts; checks the whole script,
#                         measures nothing (without --sluice/--grpc-echo, the debug binaries
#                         when there are no release ones)
#
# Prints one line per run, then a summary table (also in DIR/summary.md with --out).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sluice=target/release/sluice
grpc_echo=target/release/grpc-echo
runs=3 tests=h2c,grpc,idle rate=10000 idle_n=2000 out="" smoke=0 base=18080
pos=()
while (($#)); do
  case $1 in
    --sluice) sluice=$2; shift 2 ;;
    --grpc-echo) grpc_echo=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --tests) tests=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --idle) idle_n=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --ports) base=$2; shift 2 ;;
    --smoke) smoke=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "h2load.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) pos+=("$1"); shift ;;
  esac
done
((${#pos[@]} > 0)) && sluice=${pos[0]}
((${#pos[@]} > 1)) && runs=${pos[1]}
if ((smoke)); then
  [ "$sluice" = target/release/sluice ] && [ ! -x "$sluice" ] && sluice=target/debug/sluice
  [ "$grpc_echo" = target/release/grpc-echo ] && [ ! -x "$grpc_echo" ] && grpc_echo=target/debug/grpc-echo
fi
# Load sizes: requests of the measured run, warm-up, fixed-rate run seconds.
n_h2c=600000 n_grpc=400000 warm=50000 rate_secs=10
if ((smoke)); then
  runs=1 n_h2c=3000 n_grpc=3000 warm=500 rate_secs=1 idle_n=$((idle_n < 100 ? idle_n : 100))
  ((rate > 1000)) && rate=1000
fi
for tool in nginx h2load taskset python3 bc; do
  command -v "$tool" > /dev/null || { echo "h2load.sh: $tool is missing (Debian: apt-get install nginx nghttp2-client util-linux python3 bc)" >&2; exit 2; }
done
[ -x "$sluice" ] || { echo "h2load.sh: no Sluice binary at $sluice (cargo build --release -p sluice-runtime)" >&2; exit 2; }
if [[ ,$tests, == *,grpc,* ]] && [ ! -x "$grpc_echo" ]; then
  echo "h2load.sh: no grpc-echo binary at $grpc_echo (cargo build --release -p sluice-benches)" >&2; exit 2
fi
sluice=$(realpath "$sluice"); [ -x "$grpc_echo" ] && grpc_echo=$(realpath "$grpc_echo")
# The idle test holds thousands of connections: raise this shell's (and its children's) limit.
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
if [ -n "$out" ]; then mkdir -p "$out"; dir=$(realpath "$out"); else
  dir=$(mktemp -d /tmp/sluice-h2load.XXXX); trap 'rm -rf "$dir"' EXIT; fi
results=$dir/results.txt; : > "$results"
tck=$(getconf CLK_TCK)

p_be=$base p_sh=$((base + 1)) p_nh=$((base + 2)) p_ge=$((base + 3)) p_sg=$((base + 4)) p_ng=$((base + 5))
for p in $p_be $p_sh $p_nh $p_ge $p_sg $p_ng; do
  if (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null; then
    echo "h2load.sh: 127.0.0.1:$p is already in use (another run?); pick other ports with --ports BASE" >&2; exit 2
  fi
done
cat > "$dir/backend.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/backend.pid;
error_log $dir/backend.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  server { listen 127.0.0.1:$p_be; location / { return 200 "ok\n"; } }
}
CONF
cat > "$dir/proxy.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $dir/proxy.pid;
error_log $dir/proxy.err warn;
events { worker_connections 10000; }
http {
  access_log off;
  keepalive_requests 100000000;
  # nginx forwards one request per upstream connection (HTTP/1.1, and grpc_pass too): its idle
  # cache must hold as many as the requests in flight (h2c 50 x 10, gRPC 16 x 10), or it opens
  # and closes thousands of connections a run (keepalive 64 did: ~7 % of the requests).
  upstream be { server 127.0.0.1:$p_be; keepalive 1024; keepalive_requests 100000000; }
  upstream grpcbe { server 127.0.0.1:$p_ge; keepalive 1024; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:$p_nh http2;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:$p_ng http2;
    location / { grpc_pass grpc://grpcbe; }
  }
}
CONF
cat > "$dir/sluice.yaml" <<CONF
listeners:
  - name: h2in
    address: 127.0.0.1:$p_sh
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [ { match: { prefix: / }, route: { cluster: be } } ]
  - name: grpcin
    address: 127.0.0.1:$p_sg
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [ { match: { prefix: / }, route: { cluster: grpcbe } } ]
clusters:
  - name: be
    hosts: [ { address: 127.0.0.1:$p_be } ]
  - name: grpcbe
    protocol: http2
    hosts: [ { address: 127.0.0.1:$p_ge } ]
CONF
"$sluice" validate -c "$dir/sluice.yaml" > "$dir/validate.log" 2>&1 || {
  echo "h2load.sh: sluice validate rejected $dir/sluice.yaml:" >&2; cat "$dir/validate.log" >&2; exit 2; }
if [[ ,$tests, == *,grpc,* ]]; then
  "$grpc_echo" frame --payload 64 --out "$dir/grpc-body.bin"
fi

pids=()
cleanup_run() { kill "${pids[@]}" 2> /dev/null || true; wait 2> /dev/null || true; pids=(); }
trap 'cleanup_run; [ -z "$out" ] && rm -rf "$dir"' EXIT
trap 'exit 130' INT TERM
wait_port() { for _ in $(seq 100); do (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null && return 0; sleep 0.1; done
  echo "h2load.sh: nothing listens on 127.0.0.1:$1" >&2; return 1; }
# Starts the backends and the proxy; sets wpid (the process whose CPU and RSS count).
start() {
  local which=$1 px
  taskset -c 0 nginx -c "$dir/backend.conf" -p "$dir" 2> "$dir/backend.stderr" & pids+=($!)
  [ -n "${need_grpc:-}" ] && { taskset -c 0 "$grpc_echo" serve --listen 127.0.0.1:$p_ge 2> "$dir/grpc-echo.log" & pids+=($!); }
  if [ "$which" = sluice ]; then
    taskset -c 1 "$sluice" run -c "$dir/sluice.yaml" --workers 1 --log-level warn >> "$dir/sluice.log" 2>&1 & px=$!
    pids+=("$px"); wait_port $p_sh; wait_port $p_sg; wpid=$px
  else
    taskset -c 1 nginx -c "$dir/proxy.conf" -p "$dir" 2> "$dir/proxy.stderr" & px=$!
    pids+=("$px"); wait_port $p_nh; wait_port $p_ng
    for _ in $(seq 50); do wpid=$(pgrep -P "$px" | head -1) && break; sleep 0.1; done
  fi
  wait_port $p_be
  [ -n "${need_grpc:-}" ] && wait_port $p_ge
  return 0
}
cpu() { awk '{print $14, $15}' "/proc/$wpid/stat"; }
failed=0
# One h2load run: prints key=value fields; $1 label, then h2load's arguments (URL last).
measure() {
  local label=$1; shift
  local u0 s0 u1 s1 text log=$dir/$label.log
  read -r u0 s0 < <(cpu)
  text=$(taskset -c 0 h2load -t 1 --log-file="$log" "$@" 2>&1) || true
  read -r u1 s1 < <(cpu)
  echo "$text" > "$dir/$label.h2load.txt"
  local total succ fail xx2 secs n200 pcts cpus
  total=$(grep -oP 'requests: \K\d+(?= total)' <<< "$text" || echo 0)
  succ=$(grep -oP '\d+(?= succeeded)' <<< "$text" || echo 0)
  fail=$(grep -oP '\d+(?= failed)' <<< "$text" | head -1 || echo 0)
  xx2=$(grep -oP 'status codes: \K\d+(?= 2xx)' <<< "$text" || echo 0)
  # "finished in 5.38s" or "finished in 538.38ms"
  secs=$(grep -oP 'finished in \K[0-9.]+(us|ms|s)' <<< "$text" | awk '
    /us$/ { printf "%.6f", $0 / 1e6; next } /ms$/ { printf "%.6f", $0 / 1e3; next } { printf "%.6f", $0 }' || echo 0)
  [ -n "$secs" ] || secs=0
  n200=$(awk -F'\t' '$2 == 200' "$log" | wc -l)
  pcts=$(cut -f3 "$log" | sort -n | awk '{a[NR] = $1} END {
    if (NR == 0) { print "p50_ms=- p99_ms=-"; exit }
    i50 = int(NR * 0.50 + 0.999999); i99 = int(NR * 0.99 + 0.999999);
    printf "p50_ms=%.3f p99_ms=%.3f", a[i50] / 1000, a[i99] / 1000 }')
  cpus=$(echo "scale=3; ($u1 + $s1 - $u0 - $s0) / $tck" | bc)
  local ok=1
  [[ $total -gt 0 && $succ == "$total" && $xx2 == "$total" && $n200 == "$total" && $fail == 0 ]] || ok=0
  ((ok)) || failed=1
  echo "ok=$ok requests=$total succeeded=$succ failed=$fail 2xx=$xx2 log_200=$n200 secs=$secs" \
    "req_s=$(echo "$succ / ($secs + 0.000001)" | bc) proxy_cpu_s=$cpus" \
    "user_s=$(echo "scale=2; ($u1 - $u0) / $tck" | bc) sys_s=$(echo "scale=2; ($s1 - $s0) / $tck" | bc)" \
    "req_per_cpu_s=$( [ "$cpus" != 0 ] && echo "$succ / $cpus" | bc || echo 0) $pcts"
}
record() { echo "test=$1 proxy=$2 run=$3 $4" | tee -a "$results"; }

run_load() {  # $1 test (h2c|grpc), $2 proxy, $3 run index
  local t=$1 which=$2 i=$3 port url n c args=()
  if [ "$t" = h2c ]; then
    need_grpc=""; n=$n_h2c c=50
    port=$([ "$which" = sluice ] && echo $p_sh || echo $p_nh); url="http://127.0.0.1:$port/"
  else
    need_grpc=1; n=$n_grpc c=16
    port=$([ "$which" = sluice ] && echo $p_sg || echo $p_ng); url="http://127.0.0.1:$port/bench.Echo/Call"
    args=(-d "$dir/grpc-body.bin" -H 'content-type: application/grpc' -H 'te: trailers')
  fi
  start "$which"
  if [ "$t" = grpc ] && ! "$grpc_echo" probe --target "127.0.0.1:$port" > "$dir/probe.txt" 2>&1; then
    record "$t" "$which" "$i" "ok=0 probe_failed=\"$(tr '\n' ' ' < "$dir/probe.txt")\""; failed=1
    cleanup_run; return
  fi
  taskset -c 0 h2load -t 1 -n "$warm" -c "$c" -m 10 "${args[@]}" "$url" > /dev/null 2>&1 || true
  record "$t" "$which" "$i" "mode=saturation c=$c m=10 $(measure "$t-$which-$i" -n "$n" -c "$c" -m 10 "${args[@]}" "$url")"
  if ((rate > 0)); then
    local per=$((rate / c))
    record "$t-rate" "$which" "$i" "mode=rate rate=$((per * c)) c=$c m=10 $(measure "$t-rate-$which-$i" \
      -n $((per * c * rate_secs)) -c "$c" -m 10 --rps "$per" "${args[@]}" "$url")"
  fi
  cleanup_run
}

run_idle() {  # $1 proxy, $2 run index
  local which=$1 i=$2 port line
  need_grpc=""
  port=$([ "$which" = sluice ] && echo $p_sh || echo $p_nh)
  for req in "" --request; do
    start "$which"
    if line=$(taskset -c 0 python3 "$here/h2_idle.py" --port "$port" --pid "$wpid" --connections "$idle_n" $req); then
      record "idle$req" "$which" "$i" "ok=1 ${line#idle }"
    else
      record "idle$req" "$which" "$i" "ok=0 ${line}"; failed=1
    fi
    cleanup_run
  done
}

echo "# $(date -u '+%F %H:%M UTC'), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)," \
  "sluice $sluice, $(nginx -v 2>&1), $(h2load --version | head -1)$( ((smoke)) && echo ', SMOKE (not a measurement)')"
for i in $(seq "$runs"); do
  for t in ${tests//,/ }; do
    for which in nginx sluice; do
      case $t in
        h2c|grpc) run_load "$t" "$which" "$i" ;;
        idle) run_idle "$which" "$i" ;;
        *) echo "h2load.sh: unknown test $t (h2c, grpc, idle)" >&2; exit 2 ;;
      esac
    done
  done
done

python3 - "$results" <<'PY' | tee "$dir/summary.md"
import statistics, sys
rows = []
for line in open(sys.argv[1]):
    kv = dict(f.split("=", 1) for f in line.split() if "=" in f)
    rows.append(kv)
def med(test, proxy, key):
    vals = [float(r[key]) for r in rows if r.get("test") == test and r.get("proxy") == proxy
            and r.get("ok") == "1" and r.get(key, "-") != "-"]
    return statistics.median(vals) if vals else None
def fmt(v, d=0):
    return "—" if v is None else f"{v:,.{d}f}"
print()
for test, title in (("h2c", "h2c → HTTP/1.1 backend"), ("grpc", "gRPC unary (grpc_pass)")):
    if not any(r.get("test") == test for r in rows):
        continue
    rt = test + "-rate"
    rate = next((r["rate"] for r in rows if r.get("test") == rt), None)
    print(f"| {title}, medians | req per proxy CPU-s | vs nginx | req/s | user / sys CPU-s | p50 | p99 |"
          + (f" p50 @ {rate}/s | p99 @ {rate}/s | proxy CPU % @ {rate}/s |" if rate else ""))
    print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if rate else ""))
    base = med(test, "nginx", "req_per_cpu_s")
    for proxy in ("nginx", "sluice"):
        v = med(test, proxy, "req_per_cpu_s")
        ratio = f"×{v / base:.2f}" if v and base else "—"
        line = (f"| {proxy} | {fmt(v)} | {ratio} | {fmt(med(test, proxy, 'req_s'))} | "
                f"{fmt(med(test, proxy, 'user_s'), 2)} / {fmt(med(test, proxy, 'sys_s'), 2)} | "
                f"{fmt(med(test, proxy, 'p50_ms'), 2)} ms | {fmt(med(test, proxy, 'p99_ms'), 2)} ms |")
        if rate:
            cpu = [float(r["proxy_cpu_s"]) / float(r["secs"]) * 100 for r in rows
                   if r.get("test") == rt and r.get("proxy") == proxy and r.get("ok") == "1" and float(r.get("secs", 0)) > 0]
            line += (f" {fmt(med(rt, proxy, 'p50_ms'), 2)} ms | {fmt(med(rt, proxy, 'p99_ms'), 2)} ms |"
                     f" {fmt(statistics.median(cpu) if cpu else None)} |")
        print(line)
    print()
idle = [r for r in rows if r.get("test", "").startswith("idle")]
if idle:
    print("| idle h2c connections, medians | bytes per connection (handshake only) | (after one request) |")
    print("|---|---:|---:|")
    for proxy in ("nginx", "sluice"):
        print(f"| {proxy} | {fmt(med('idle', proxy, 'per_conn_bytes'))} | {fmt(med('idle--request', proxy, 'per_conn_bytes'))} |")
bad = [r for r in rows if r.get("ok") != "1"]
print(f"\n{len(rows) - len(bad)} runs OK, {len(bad)} FAILED" + ("" if not bad else ": " + "; ".join(
    f"{r.get('test')} {r.get('proxy')} run {r.get('run')}" for r in bad)))
PY
exit "$failed"
