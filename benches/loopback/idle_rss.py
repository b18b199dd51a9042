#!/usr/bin/env python3
"""RSS of a sluice process before and after N idle downstream HTTP connections (that send nothing).
usage: benches/loopback/idle_rss.py SLUICE_BIN [N] [--old]  (--old: a binary without `limits`)"""
import os, socket, subprocess, sys, tempfile, time

def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

binary = sys.argv[1]; n = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
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
time.sleep(2)
held = rss_kb(p.pid)
for c in conns: c.close()
time.sleep(2)
after = rss_kb(p.pid)
print(f"{binary}: base {base} KB, with {n} idle connections {held} KB "
      f"(+{held - base} KB, {(held - base) * 1024 // n} B each), after close {after} KB")
p.terminate(); p.wait()
