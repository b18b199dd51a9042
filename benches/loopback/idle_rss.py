#!/usr/bin/env python3
"""RSS of a sluice process before and after N idle downstream HTTP connections (that send nothing).
usage: benches/loopback/idle_rss.py SLUICE_BIN [N] [--old] [--keepalive]
(--old: a binary without `limits`; --keepalive: each connection first makes one keep-alive request,
then idles, and the RSS is read 3 s later)"""
import os, socket, subprocess, sys, tempfile, time

def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

args = [a for a in sys.argv[1:] if not a.startswith("--")]
binary = args[0]; n = int(args[1]) if len(args) > 1 else 5000
port = free_port()
cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
cfg.write(f"""
limits: {{ max_connections: 100000 }}
listeners:
  - name: web
    address: 127.0.0.1:{port}
    http:
      request_headers_timeout: 120s
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              direct_response: {{ status: 200, body: "hi" }}
""")
cfg.close()
if "--old" in sys.argv:  # a binary without `limits`
    text = open(cfg.name).read().replace("limits: { max_connections: 100000 }\n", "")
    open(cfg.name, "w").write(text)
p = subprocess.Popen(["sh", "-c", f"ulimit -n 20000 && exec {binary} run -c {cfg.name} --workers 1"],
                     stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", port)).close(); break
    except OSError:
        time.sleep(0.1)
time.sleep(0.5)
base = rss_kb(p.pid)
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
if "--keepalive" in sys.argv:
    for c in conns:
        c.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    for c in conns:
        got = b""
        while not got.endswith(b"hi"):
            got += c.recv(4096)
    time.sleep(3)
else:
    time.sleep(2)
held = rss_kb(p.pid)
for c in conns: c.close()
time.sleep(2)
after = rss_kb(p.pid)
print(f"{binary}: base {base} KB, with {n} idle connections {held} KB "
      f"(+{held - base} KB, {(held - base) * 1024 // n} B each), after close {after} KB")
p.terminate(); p.wait()
