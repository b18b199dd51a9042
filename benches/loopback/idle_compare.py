#!/usr/bin/env python3
"""Memory per idle connection, side by side: Sluice, HAProxy and nginx in one run (issue 15).

usage: benches/loopback/idle_compare.py [--sluice BIN] [--tests tcp,http,bolt]
                                        [--only sluice,haproxy,nginx] [--tcp N] [--http N]
                                        [--bolt N] [--bytes B] [--settle S] [--repeat R]

Tests (each proxy a fresh process with one worker/thread: Sluice `--workers 1`, HAProxy
`nbthread 1`, nginx `worker_processes 1`):

- `tcp`: N (`--tcp`, default 3000) proxied TCP pairs — Sluice `tcp_proxy`, HAProxy `mode tcp`,
  nginx `stream` `proxy_pass` — to this script's echo upstream; each pair first relays `--bytes`
  (default 100,000) each way, then all stay open and idle;
- `http`: N (`--http`, default 5000) downstream HTTP/1.1 keep-alive connections — Sluice `http`
  listener, HAProxy `mode http`, nginx `http` `proxy_pass` with upstream keep-alive — each
  makes one `GET /` proxied to this script's HTTP backend (one connection at a time, so each
  proxy's upstream pool holds one connection), reads the answer, then stays open and idle;
- `bolt`: N (`--bolt`, default 3000) downstream Bolt connections to Sluice's `bolt` listener
  (HAProxy and nginx do not speak Bolt), each making one request (proxied to this script's Bolt
  echo upstream, one connection at a time) and reading the answer, then idle.

Figure: RSS held − RSS before, divided by N, where "before" is read after one warm-up
connection made the same way and closed (so pools, upstream connections and lazily made state
exist in both readings), and "held" `--settle` seconds (default 3) after the last connection
went idle. RSS is VmRSS from /proc: Sluice's and HAProxy's one process; nginx's master plus its
worker (the worker holds the connections; the master's delta is ~0). Prints a markdown table
with each figure and Sluice's ratio to each peer; `--repeat R` runs every proxy R times
(interleaved) and reports each run and the median. The script raises its own open-file limit to
the hard one; each proxy is started with `ulimit -n` at that limit too. Exit status 1 if a
connection was refused, closed or answered wrongly.
"""
import argparse, os, resource, selectors, shutil, socket, statistics, struct, subprocess, sys
import tempfile, threading, time

STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"  # Debian's libnginx-mod-stream
RESP = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nhi"


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


# ---- the upstreams (one thread, one selector: echo, HTTP, Bolt echo) ----

def bolt_request(request_id, service=b"bench.Echo"):
    """A Bolt v1 request frame (hessian2 codec, 1 s timeout) with header `service`."""
    header = struct.pack(">I", 7) + b"service" + struct.pack(">I", len(service)) + service
    content = b"x" * 16
    return (struct.pack(">BBHBIBiHHI", 1, 1, 1, 1, request_id, 1, 1000, 0, len(header),
                        len(content)) + header + content)


def bolt_frames(buf):
    """Complete Bolt v1 frames at the start of `buf`: [(kind, request_id, codec, frame)], rest."""
    out = []
    while len(buf) >= 20:
        kind = buf[1]
        fixed = 22 if kind in (1, 2) else 20
        if len(buf) < fixed:
            break
        if kind in (1, 2):
            clen, hlen, blen = struct.unpack(">HHI", buf[14:22])
        else:
            clen, hlen, blen = struct.unpack(">HHI", buf[12:20])
        total = fixed + clen + hlen + blen
        if len(buf) < total:
            break
        out.append((kind, struct.unpack(">I", buf[5:9])[0], buf[9], bytes(buf[:total])))
        del buf[:total]
    return out


class Upstreams:
    """Echo (tcp), HTTP/1.1 keep-alive (`hi` to every request head) and Bolt echo servers."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self.ports = {}
        for kind in ("echo", "http", "bolt"):
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0)); s.listen(4096); s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, ("listen", kind))
            self.ports[kind] = s.getsockname()[1]
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while True:
            for key, _ in self.sel.select():
                role, kind = key.data[0], key.data[1]
                if role == "listen":
                    c, _ = key.fileobj.accept(); c.setblocking(True)
                    self.sel.register(c, selectors.EVENT_READ, ("conn", kind, bytearray()))
                    continue
                c, buf = key.fileobj, key.data[2]
                try:
                    data = c.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.sel.unregister(c); c.close(); continue
                if kind == "echo":
                    c.sendall(data); continue
                buf += data
                if kind == "http":
                    while b"\r\n\r\n" in buf:
                        del buf[:buf.index(b"\r\n\r\n") + 4]
                        c.sendall(RESP)
                else:
                    for k, rid, codec, _ in bolt_frames(buf):
                        if k == 1:
                            body = b"ok"
                            c.sendall(struct.pack(">BBHBIBHHHI", 1, 0, 2, 1, rid, codec, 0, 0, 0,
                                                  len(body)) + body)


# ---- the proxies ----

def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid):
    try:
        return [int(k) for k in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


class Proxy:
    """One proxy process (group) listening on `port`; `pids()` are the processes whose RSS counts."""

    def __init__(self, name, argv, port, workdir):
        self.name, self.port = name, port
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        self.log = open(os.path.join(workdir, f"{name}.log"), "w")
        self.p = subprocess.Popen(["sh", "-c", f'ulimit -n {nofile} && exec "$@"', "sh", *argv],
                                  stdout=self.log, stderr=self.log, start_new_session=True)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port)).close(); break
            except OSError:
                if self.p.poll() is not None:
                    raise SystemExit(f"{name} exited at start; see {self.log.name}")
                time.sleep(0.05)
        else:
            raise SystemExit(f"{name} never listened on {port}; see {self.log.name}")
        time.sleep(0.5)

    def pids(self):
        # nginx: the master and its worker; the others: the one process.
        return [self.p.pid] + (children(self.p.pid) if self.name == "nginx" else [])

    def rss_kb(self):
        return sum(rss_kb(p) for p in self.pids())

    def stop(self):
        try:
            os.killpg(self.p.pid, 15)
        except ProcessLookupError:
            pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, 9); self.p.wait()
        self.log.close()


def sluice_config(test, port, up):
    if test == "tcp":
        return f"""limits: {{ max_connections: 100000 }}
listeners:
  - {{ name: t, address: 127.0.0.1:{port}, tcp_proxy: {{ cluster: up }} }}
clusters:
  - name: up
    circuit_breakers: {{ max_connections: 100000 }}
    hosts: [ {{ address: "127.0.0.1:{up.ports['echo']}" }} ]
"""
    if test == "http":
        return f"""limits: {{ max_connections: 100000 }}
listeners:
  - name: web
    address: 127.0.0.1:{port}
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: be }} }} ]
clusters:
  - {{ name: be, hosts: [ {{ address: "127.0.0.1:{up.ports['http']}" }} ] }}
"""
    return f"""limits: {{ max_connections: 100000 }}
listeners:
  - name: rpc
    address: 127.0.0.1:{port}
    bolt:
      routes:
        - match: {{ service: bench.Echo }}
          route: {{ cluster: echo_rpc }}
clusters:
  - {{ name: echo_rpc, hosts: [ {{ address: "127.0.0.1:{up.ports['bolt']}" }} ] }}
"""


def haproxy_config(test, port, up):
    mode = "tcp" if test == "tcp" else "http"
    target = up.ports["echo" if test == "tcp" else "http"]
    extra = ("    option http-keep-alive\n    http-reuse always\n    timeout http-request 120s\n"
             "    timeout http-keep-alive 120s\n") if mode == "http" else ""
    return f"""global
    nbthread 1
    maxconn 9000

defaults
    mode {mode}
    timeout connect 1s
    timeout client 120s
    timeout server 120s
{extra}
frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    server s1 127.0.0.1:{target}
"""


def nginx_config(test, port, up, d):
    stream = ""
    if test == "tcp" and "--with-stream " not in subprocess.run(
            ["nginx", "-V"], capture_output=True, text=True).stderr + " ":
        stream = f"load_module {STREAM_MODULE};\n"
    head = stream + f"""worker_processes 1;
worker_rlimit_nofile 19000;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 18000; }}
"""
    if test == "tcp":
        return head + f"""stream {{
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        proxy_pass 127.0.0.1:{up.ports['echo']};
        proxy_connect_timeout 1s;
        proxy_timeout 120s;
    }}
}}
"""
    return head + f"""http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    upstream be {{ server 127.0.0.1:{up.ports['http']}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def start(proxy, test, up, sluice, workdir):
    port = free_port()
    d = tempfile.mkdtemp(prefix=f"{proxy}-{test}-", dir=workdir)
    if proxy == "sluice":
        cfg = os.path.join(d, "sluice.yaml")
        open(cfg, "w").write(sluice_config(test, port, up))
        argv = [sluice, "run", "-c", cfg, "--workers", "1", "--log-level", "warn"]
    elif proxy == "haproxy":
        cfg = os.path.join(d, "haproxy.cfg")
        open(cfg, "w").write(haproxy_config(test, port, up))
        argv = ["haproxy", "-f", cfg, "-db"]
    else:
        cfg = os.path.join(d, "nginx.conf")
        open(cfg, "w").write(nginx_config(test, port, up, d))
        argv = ["nginx", "-c", cfg, "-p", d + "/", "-g", "daemon off;"]
    return Proxy(proxy, argv, port, d)


# ---- the clients ----

def recv_exactly(c, n, what):
    got = bytearray()
    while len(got) < n:
        d = c.recv(65536)
        if not d:
            raise SystemExit(f"{what}: closed by the proxy after {len(got)} of {n} bytes")
        got += d
    return bytes(got)


def open_one(test, port, payload, i):
    c = socket.create_connection(("127.0.0.1", port))
    if test == "tcp":
        c.sendall(payload)
        if recv_exactly(c, len(payload), f"pair {i}") != payload:
            raise SystemExit(f"pair {i}: echo differs")
    elif test == "http":
        c.sendall(b"GET / HTTP/1.1\r\nhost: bench.local\r\n\r\n")
        got = b""
        while not (b"\r\n\r\n" in got and got.endswith(b"hi")):
            d = c.recv(4096)
            if not d:
                raise SystemExit(f"connection {i}: closed before its answer ({got[:60]!r})")
            got += d
        if not got.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"connection {i}: {got[:60]!r}")
    else:
        c.sendall(bolt_request(i + 1))
        buf = bytearray()
        while True:
            frames = bolt_frames(buf)
            if frames:
                kind, rid, _, frame = frames[0]
                status = struct.unpack(">H", frame[10:12])[0]
                if kind != 0 or rid != i + 1 or status != 0:
                    raise SystemExit(f"bolt connection {i}: kind {kind} id {rid} status {status}")
                break
            d = c.recv(4096)
            if not d:
                raise SystemExit(f"bolt connection {i}: closed before its answer")
            buf += d
    return c


def measure(proxy, test, n, up, args, workdir):
    p = start(proxy, test, up, args.sluice, workdir)
    try:
        payload = bytes(range(256)) * (args.bytes // 256 + 1)
        payload = payload[:args.bytes]
        open_one(test, p.port, payload, 0).close()
        time.sleep(0.5)
        before = p.rss_kb()
        held = [open_one(test, p.port, payload, i) for i in range(n)]
        time.sleep(args.settle)
        if any(rss_kb(x) == 0 for x in p.pids()) or p.p.poll() is not None:
            raise SystemExit(f"{proxy} exited while holding {test} connections")
        after = p.rss_kb()
        for c in held:
            c.close()
        return before, after, (after - before) * 1024 / n
    finally:
        p.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sluice", default="target/release/sluice")
    ap.add_argument("--tests", default="tcp,http,bolt")
    ap.add_argument("--only", default="sluice,haproxy,nginx")
    ap.add_argument("--tcp", type=int, default=3000)
    ap.add_argument("--http", type=int, default=5000)
    ap.add_argument("--bolt", type=int, default=3000)
    ap.add_argument("--bytes", type=int, default=100_000)
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    proxies = [x for x in args.only.split(",") if x]
    for x in proxies:
        if x not in ("sluice", "haproxy", "nginx"):
            sys.exit(f"--only: unknown proxy {x}")
        if x != "sluice" and shutil.which(x) is None:
            sys.exit(f"{x} is not installed")
    if "sluice" in proxies and not os.access(args.sluice, os.X_OK):
        sys.exit(f"no Sluice binary at {args.sluice} (--sluice PATH)")
    up = Upstreams()
    workdir = tempfile.mkdtemp(prefix="idle-compare-")
    versions = {"haproxy": "haproxy -v", "nginx": "nginx -v"}
    print(f"# Memory per idle connection ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(f"command: `{' '.join(sys.argv)}`; Sluice: `{args.sluice}`; logs and configs: {workdir}")
    for x in proxies:
        if x in versions:
            v = subprocess.run(versions[x], shell=True, capture_output=True, text=True)
            print(f"{x}: {(v.stdout + v.stderr).splitlines()[0]}")
    what = {
        "tcp": f"idle proxied TCP pairs ({args.tcp}, {args.bytes} B each way first)",
        "http": f"idle HTTP/1.1 keep-alive connections ({args.http}, one proxied GET each first)",
        "bolt": f"idle Bolt connections ({args.bolt}, one proxied request each first)",
    }
    for test in [t for t in args.tests.split(",") if t]:
        n = {"tcp": args.tcp, "http": args.http, "bolt": args.bolt}[test]
        runs = {x: [] for x in proxies if test != "bolt" or x == "sluice"}
        for r in range(args.repeat):
            order = list(runs)[r % len(runs):] + list(runs)[:r % len(runs)]
            for x in order:
                runs[x].append(measure(x, test, n, up, args, workdir))
        print(f"\n## {what[test]}\n")
        print("| proxy | RSS before (KB) | RSS held (KB) | per connection (B), each run | median | Sluice / it |")
        print("|---|---:|---:|---|---:|---:|")
        med = {x: statistics.median(r[2] for r in rs) for x, rs in runs.items()}
        for x, rs in runs.items():
            ratio = f"×{med['sluice'] / med[x]:.2f}" if "sluice" in med and med[x] > 0 else "—"
            print(f"| {x} | {' · '.join(str(r[0]) for r in rs)} | {' · '.join(str(r[1]) for r in rs)} "
                  f"| {' · '.join(f'{r[2]:,.0f}' for r in rs)} | {med[x]:,.0f} | {ratio} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
