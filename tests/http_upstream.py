#!/usr/bin/env python3
"""An HTTP/1.1 upstream for the end-to-end tests, on Python's standard http.server.

It answers every request with a JSON description of what it received (method, path, headers,
body length and SHA-256, the trailer field lines of a chunked body), and appends one line per
*complete* request to a log file, so tests can count exactly what reached an upstream. Special paths:

  /status/NNN      answer with status NNN
  /fields          the description also lists every field line as received, in order, as
                   `fields`: [[name (lowercase), value], ...]
  /sleep/MS        wait MS milliseconds before answering
  /split/MS        wait MS milliseconds, send the head, wait MS again, then send the body
  /close           close the connection without answering (after reading the request)
  /head-then-close send a head announcing a 100-byte body, wait 50 ms, close without the body
  /switch          answer 101 Switching Protocols whatever the request asked for
  /ambiguous       answer with both Content-Length and Transfer-Encoding (a smuggling vector)
  /trailers        answer chunked, with an `x-checksum` trailer (the body's SHA-256)
  /grpc-status/N   answer as an HTTP/1.1 gRPC bridge does: `content-type: application/grpc`,
                   chunked, one empty gRPC message, then a trailer section with `grpc-status: N`
                   (sent in two pieces 50 ms apart, so that it arrives split)

Usage: http_upstream.py PORT LOGFILE [NAME]
"""
import hashlib
import json
import socketserver
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "upstream"

    def log_message(self, *args):
        pass

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while True:
                        line = self.rfile.readline()
                        if line in (b"\r\n", b"\n", b""):
                            return body
                        self.trailers.append(line.decode("latin-1").rstrip("\r\n"))
                body += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length", "0") or 0)
        return self.rfile.read(n) if n else b""

    def handle_any(self):
        self.trailers = []
        body = self.read_body()
        with open(self.server.log_path, "a") as log:
            log.write(f"{self.command} {self.path} {len(body)}\n")
        if self.path == "/close":
            self.close_connection = True
            return
        if self.path == "/switch":
            self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
                             b"Connection: upgrade\r\n\r\n")
            self.close_connection = True
            return
        if self.path == "/head-then-close":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            self.wfile.flush()
            time.sleep(0.05)
            self.close_connection = True
            return
        if self.path == "/ambiguous":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            self.close_connection = True
            return
        if self.path.startswith("/bytes/"):
            # A large body of N bytes ("x"), for slow-reader tests.
            size = int(self.path.split("/")[2])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(b"x" * size)
            return
        if self.path.startswith("/drip/"):
            # COUNT chunks of 100 bytes, one every MS milliseconds: a trickling stream.
            count, pause = int(self.path.split("/")[2]), int(self.path.split("/")[3]) / 1000
            self.send_response(200)
            self.send_header("Content-Length", str(100 * count))
            self.end_headers()
            self.wfile.flush()
            try:
                for _ in range(count):
                    self.wfile.write(b"d" * 100)
                    self.wfile.flush()
                    time.sleep(pause)
            except OSError:
                pass
            return
        status = 200
        if self.path.startswith("/status/"):
            status = int(self.path.split("/")[2])
        if self.path.startswith("/sleep/"):
            time.sleep(int(self.path.split("/")[2]) / 1000)
        description = {
            "upstream": self.server.name,
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            # Field names that came more than once (`headers` keeps the last of each).
            "repeated": sorted({k.lower() for k in self.headers.keys()
                                if len(self.headers.get_all(k)) > 1}),
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "trailers": self.trailers,
        }
        if self.path.startswith("/fields"):
            description["fields"] = [[k.lower(), v] for k, v in self.headers.items()]
        payload = json.dumps(description).encode()
        if self.path.startswith("/grpc-status/"):
            code = self.path.split("/")[2]
            self.send_response(200)
            self.send_header("Content-Type", "application/grpc")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "grpc-status, grpc-message")
            self.end_headers()
            self.wfile.write(b"5\r\n\x00\x00\x00\x00\x00\r\n0\r\nx-before: 1\r\ngrpc-")
            self.wfile.flush()
            time.sleep(0.05)
            self.wfile.write(b"status: %s\r\ngrpc-message: from-upstream\r\n\r\n" % code.encode())
            return
        if self.path.startswith("/trailers"):
            # A chunked answer with a trailer section.
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "x-checksum")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n0\r\nx-checksum: %s\r\n\r\n" % (
                len(payload), payload, hashlib.sha256(payload).hexdigest().encode()))
            return
        split = self.path.startswith("/split/")
        if split:
            pause = int(self.path.split("/")[2]) / 1000
            time.sleep(pause)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Upstream", self.server.name)
        self.end_headers()
        if split:
            time.sleep(pause)
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = handle_any


class Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    port, log_path = int(sys.argv[1]), sys.argv[2]
    server = Server(("127.0.0.1", port), Handler)
    server.log_path = log_path
    server.name = sys.argv[3] if len(sys.argv) > 3 else f"up{port}"
    open(log_path, "w").close()
    server.serve_forever()
