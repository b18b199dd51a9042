#!/usr/bin/env python3
"""WebSocket peers for the end-to-end tests, on the `websockets` library.

  ws_echo.py server PORT            an echo server on 127.0.0.1:PORT
  ws_echo.py client URL N           sends N messages of growing size, checks each echo, prints "ok N"
"""
import sys


def server(port):
    from websockets.sync.server import serve

    def echo(ws):
        for message in ws:
            ws.send(message)

    with serve(echo, "127.0.0.1", port) as s:
        s.serve_forever()


def client(url, n):
    from websockets.sync.client import connect

    with connect(url, open_timeout=5, close_timeout=2) as ws:
        for i in range(n):
            msg = ("x" * (i * 997 % 70000)) + f"#{i}"
            ws.send(msg)
            got = ws.recv(timeout=5)
            if got != msg:
                print(f"mismatch at message {i}: {len(got)} vs {len(msg)}")
                sys.exit(1)
    print(f"ok {n}")


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]))
    else:
        client(sys.argv[2], int(sys.argv[3]))
