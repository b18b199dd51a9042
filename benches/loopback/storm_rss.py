#!/usr/bin/env python3
"""RSS of a Sluice process after a storm of connections has closed (issue 15: "back within 20 %
of idle RSS").

usage: benches/loopback/storm_rss.py SLUICE_BIN [--connections N] [--workers W] [--settle S]

N is bounded by the open-file limit this script may set (each held tcp_proxy pair costs the
proxy 6 descriptors with splice: two sockets and two pipes); at 20,000 descriptors, 5,000.

One process, W workers (default 1), an HTTP listener that proxies to a local backend (a small
Python server in this script, HTTP/1.1 keep-alive, answers 2 KiB) and a tcp_proxy listener to the
same backend. The storm: N client connections opened at once, half to each listener, each
sends one request and reads its answer, all held open together, then all closed. Prints the RSS
(VmRSS) idle before the storm, with the storm's connections open, and S seconds after they all
closed (default 25 s: two of the heap trimmer's 10-s looks, and the buffer pools' sweeps between them), and the ratio after/idle.
"""
import argparse
import asyncio
import resource
import socket
import subprocess
import sys
import tempfile
import time

BODY = b"x" * 2048


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(BODY) + BODY)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def one(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET / HTTP/1.1\r\nhost: storm\r\n\r\n")
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:80]
    await r.readexactly(len(BODY))
    return r, w


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sluice")
    ap.add_argument("--connections", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--settle", type=float, default=25.0)
    a = ap.parse_args()
    # Client, backend and proxy sockets: ~2 per held connection here, ~1.5 in the proxy.
    want = 4 * a.connections + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))  # root may raise
        hard = max(want, hard)
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    be_port, http_port, tcp_port = free_port(), free_port(), free_port()
    server = await asyncio.start_server(backend, "127.0.0.1", be_port, backlog=4096)
    cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    cfg.write(f"""
limits: {{ max_connections: 200000 }}
listeners:
  - name: web
    address: 127.0.0.1:{http_port}
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: {{ prefix: / }}
              route: {{ cluster: backend }}
  - name: tcp
    address: 127.0.0.1:{tcp_port}
    tcp_proxy: {{ cluster: backend }}
clusters:
  - name: backend
    hosts: [ {{ address: 127.0.0.1:{be_port} }} ]
    # Every held tcp_proxy pair holds an upstream connection: above the default 1024.
    circuit_breakers: {{ max_connections: 100000 }}
    connect_timeout: 10s  # the script's one-thread backend accepts slowly under the storm
""")
    cfg.close()
    p = subprocess.Popen(["sh", "-c", f"ulimit -n {hard} && exec {a.sluice} run -c {cfg.name} "
                          f"--workers {a.workers} --log-level error"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", http_port)).close()
                socket.create_connection(("127.0.0.1", tcp_port)).close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        # Warm: a few requests on each path, then idle.
        for port in (http_port, tcp_port):
            _, w = await one(port)
            w.close()
        await asyncio.sleep(3)
        idle = rss_kb(p.pid)
        # At most 500 requests under way at once (below the clusters' default circuit breakers: the
        # storm is the connections held, not a request burst).
        sem = asyncio.Semaphore(200)

        async def held(port: int):
            async with sem:
                return await one(port)

        t0 = time.monotonic()
        conns = await asyncio.gather(*(held(http_port if i % 2 else tcp_port)
                                       for i in range(a.connections)))
        opened = time.monotonic() - t0
        storm = rss_kb(p.pid)
        for _, w in conns:
            w.close()
        await asyncio.sleep(a.settle)
        after = rss_kb(p.pid)
        print(f"{a.sluice}: idle {idle} KB; {a.connections} connections held "
              f"(opened in {opened:.1f} s) {storm} KB; {a.settle:.0f} s after they closed "
              f"{after} KB = x{after / idle:.2f} idle")
        return 0
    finally:
        p.terminate()
        p.wait()
        server.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
