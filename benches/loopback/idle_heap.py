#!/usr/bin/env python3
"""What a sluice process holds on its heap per idle downstream HTTP/1.1 connection, by allocation
size, under heaptrack (issue 15). RSS (idle_rss.py) also counts what the allocator keeps after a
free; this counts only live allocations.

usage: benches/loopback/idle_heap.py SLUICE_BIN [N] [--keepalive | --tcp]
  N connections (default 5000) are opened and held (--keepalive: each makes one keep-alive
  request first, then idles); 4 s later the process is killed and heaptrack's "leaked" figure
  is what was live then. Prints that total and the allocation sizes made about N times (once
  per connection, over the whole run) with their counts. Run it with N = 0 too: the live heap
  per connection is (live(N) - live(0)) / N. Needs heaptrack (Debian: apt-get install heaptrack).
  --tcp: N proxied TCP pairs instead (a `tcp_proxy` listener to an echo upstream in this
  script; each pair echoes 1,000 bytes, then idles).
"""
import os, re, resource, signal, subprocess, tempfile, time

from idle_common import (free_port, open_idle, open_idle_pairs, parse_args, start_echo,
                         wait_listening, write_config, write_tcp_config)

binary, n, flags = parse_args()
keep = "--keepalive" in flags and n > 0
port = free_port()
tcp = "--tcp" in flags
cfg = write_tcp_config(port, start_echo()) if tcp else write_config(port)
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
out = tempfile.mkdtemp() + "/ht"
p = subprocess.Popen(["heaptrack", "-o", out, binary, "run", "-c", cfg, "--workers", "1"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
wait_listening(port, 300)
time.sleep(1)
conns = open_idle_pairs(port, n) if tcp else open_idle(port, n, keep)
time.sleep(4)
# Kill the traced process itself (heaptrack's interpreter then writes what was live).
for k in open(f"/proc/{p.pid}/task/{p.pid}/children").read().split():
    try:
        if os.path.samefile(os.readlink(f"/proc/{k}/exe"), binary):
            os.kill(int(k), signal.SIGKILL)
    except OSError:
        pass
p.wait()
for c in conns:
    c.close()
data = out + ".zst"
text = subprocess.run(["heaptrack_print", "-f", data, "-p", "0", "-a", "0", "-T", "0", "-l", "0",
                       "-H", out + ".hist"], capture_output=True, text=True).stdout
leaked = re.search(r"total memory leaked: (\S+)", text).group(1)
what = ("proxied TCP pairs after 1,000 B each way" if tcp else
        "connections" + (" after one keep-alive request" if keep else " that sent nothing"))
print(f"{binary}: {n} {what}; "
      f"live heap at the end: {leaked} (heaptrack)")
print("allocations made once per connection (size B: count):")
for line in open(out + ".hist"):
    size, count = map(int, line.split())
    if n and n <= count < n + n // 50:
        print(f"  {size}: {count}")
