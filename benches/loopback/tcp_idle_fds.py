#!/usr/bin/env python3
"""Descriptors, pipes and RSS of a sluice process holding N idle `tcp_proxy` sessions.
usage: benches/loopback/tcp_idle_fds.py SLUICE_BIN [N] [--copy]
Each session first relays 100 KB each way through an echo upstream (this script's, one epoll
thread), then stays open and idle; one worker. --copy: `splice: false` (the copying relay).
Prints the process's descriptors (all, and pipe ends) and RSS before and with the sessions
held, and the relay counters from /stats."""
import os, selectors, socket, subprocess, sys, tempfile, threading, time, urllib.request

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

args = [a for a in sys.argv[1:] if not a.startswith("--")]
binary = args[0]; n = int(args[1]) if len(args) > 1 else 3000
splice = "false" if "--copy" in sys.argv else "true"

up = socket.socket(); up.bind(("127.0.0.1", 0)); up.listen(4096); up.setblocking(False)
sel = selectors.DefaultSelector(); sel.register(up, selectors.EVENT_READ)
def echo_loop():
    while True:
        for key, _ in sel.select():
            if key.fileobj is up:
                c, _ = up.accept(); c.setblocking(True); sel.register(c, selectors.EVENT_READ)
                continue
            c = key.fileobj
            try: data = c.recv(65536)
            except OSError: data = b""
            if not data:
                sel.unregister(c); c.close(); continue
            c.sendall(data)
threading.Thread(target=echo_loop, daemon=True).start()

tcp, admin = free_port(), free_port()
cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
cfg.write(f"""admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - {{ name: t, address: 127.0.0.1:{tcp}, tcp_proxy: {{ cluster: up, splice: {splice} }} }}
clusters:
  - name: up
    circuit_breakers: {{ max_connections: 100000 }}
    hosts: [ {{ address: "127.0.0.1:{up.getsockname()[1]}" }} ]
""")
cfg.close()
p = subprocess.Popen(["sh", "-c", f"ulimit -n 20000 && exec {binary} run -c {cfg.name} --workers 1"],
                     stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
for _ in range(100):
    try: socket.create_connection(("127.0.0.1", admin)).close(); break
    except OSError: time.sleep(0.1)
time.sleep(1)

def fds():
    names = os.listdir(f"/proc/{p.pid}/fd")
    pipes = sum(1 for f in names if os.readlink(f"/proc/{p.pid}/fd/{f}").startswith("pipe:"))
    return len(names), pipes
def rss_kb():
    for line in open(f"/proc/{p.pid}/status"):
        if line.startswith("VmRSS:"): return int(line.split()[1])

before, rss0 = fds(), rss_kb()
payload = bytes(range(256)) * 400
held = []
for i in range(n):
    c = socket.create_connection(("127.0.0.1", tcp)); c.sendall(payload); got = b""
    while len(got) < len(payload):
        d = c.recv(65536)
        assert d, f"session {i} closed"
        got += d
    assert got == payload
    held.append(c)
time.sleep(1)
after, rss1 = fds(), rss_kb()
stats = urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats").read().decode()
print(f"splice: {splice}, {n} idle sessions")
print(f"descriptors (all, pipe ends): before {before}, held {after}; "
      f"{(after[0] - before[0]) / n:.2f} per session")
print(f"RSS: before {rss0} kB, held {rss1} kB; {(rss1 - rss0) * 1024 / n:.0f} B per session")
print("\n".join(l for l in stats.splitlines()
                if "tcp_relay" in l or "splice_pipes" in l or l.startswith("server.max_connections")))
p.terminate(); p.wait()
