#!/usr/bin/env python3
"""RSS of a sluice process before and after N idle downstream HTTP connections (that send nothing).
usage: benches/loopback/idle_rss.py SLUICE_BIN [N] [--old] [--keepalive]
(--old: a binary without `limits`; --keepalive: each connection first makes one keep-alive request,
then idles, and the RSS is read 3 s later)"""
import subprocess, time

from idle_common import free_port, open_idle, parse_args, wait_listening, write_config

def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

binary, n, flags = parse_args()
port = free_port()
cfg = write_config(port, limits="--old" not in flags)
p = subprocess.Popen(["sh", "-c", f"ulimit -n 20000 && exec {binary} run -c {cfg} --workers 1"],
                     stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
wait_listening(port, 100)
time.sleep(0.5)
base = rss_kb(p.pid)
keep = "--keepalive" in flags
conns = open_idle(port, n, keep)
time.sleep(3 if keep else 2)
held = rss_kb(p.pid)
for c in conns: c.close()
time.sleep(2)
after = rss_kb(p.pid)
print(f"{binary}: base {base} KB, with {n} idle connections {held} KB "
      f"(+{held - base} KB, {(held - base) * 1024 // n} B each), after close {after} KB")
p.terminate(); p.wait()
