#!/usr/bin/env python3
"""A logging TCP relay for capturing Bolt frames between real peers (no tcpdump needed).

    python3 relay.py LISTEN_PORT TARGET_HOST:TARGET_PORT LOGFILE

Accepts connections on 127.0.0.1:LISTEN_PORT, forwards each to the target, and appends every chunk
read to LOGFILE as one line: `<unix-time> <conn#> c2s|s2c <hex>`. Runs until killed.
"""
import socket
import sys
import threading
import time

lock = threading.Lock()


def pipe(src, dst, conn_no, direction, log):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            with lock:
                log.write(f"{time.time():.3f} {conn_no} {direction} {data.hex()}\n")
                log.flush()
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    listen_port = int(sys.argv[1])
    host, port = sys.argv[2].rsplit(":", 1)
    log = open(sys.argv[3], "a")
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen_port))
    srv.listen(16)
    print(f"RELAY {listen_port}", flush=True)
    n = 0
    while True:
        c, _ = srv.accept()
        n += 1
        u = socket.create_connection((host, int(port)))
        for a, b, d in ((c, u, "c2s"), (u, c, "s2c")):
            threading.Thread(target=pipe, args=(a, b, n, d, log), daemon=True).start()


if __name__ == "__main__":
    main()
