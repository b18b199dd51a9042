#!/usr/bin/env python3
"""Memory per idle HTTP/2 connection of a proxy: RSS of its process(es) before and while N h2c
client connections are held open and idle (h2load.sh's `idle` test runs it against Sluice and nginx).

usage: h2_idle.py --port PORT --pid PID[,PID...] [--connections N] [--request] [--settle S]

Each connection sends the client preface and an empty SETTINGS frame, waits for the server's
SETTINGS and the ACK of its own, and ACKs the server's (the handshake is complete on both sides);
with --request it then makes one `GET /` (one connection at a time, so the proxy's upstream pool
stays at one connection and the figure is the downstream side's) and reads the answer to its end.
Then every connection stays open and sends nothing; after S seconds (default 2) the RSS (VmRSS,
summed over the PIDs) is read again. Prints one line:
  idle connections=N request=0|1 rss_before_kb=A rss_held_kb=B per_conn_bytes=C
and exits 1 if a connection was refused, reset, or answered other than 200.
Raises its own open-file limit to N + 100 (it needs the hard limit to allow that)."""
import argparse, resource, socket, struct, sys, time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, HEADERS, DATA, RST_STREAM, GOAWAY = 0x4, 0x1, 0x0, 0x3, 0x7
ACK = END_STREAM = 0x1


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def read_frame(sock, buf):
    """(type, flags, stream, payload), reading from sock into the bytearray buf as needed."""
    while True:
        if len(buf) >= 9:
            n = int.from_bytes(buf[0:3], "big")
            if len(buf) >= 9 + n:
                ftype, flags = buf[3], buf[4]
                stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                payload = bytes(buf[9:9 + n])
                del buf[:9 + n]
                return ftype, flags, stream, payload
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the proxy")
        buf += chunk


def handshake(sock):
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
    buf = bytearray()
    got_settings = got_ack = False
    while not (got_settings and got_ack):
        ftype, flags, _, payload = read_frame(sock, buf)
        if ftype == GOAWAY:
            raise ConnectionError(f"GOAWAY {payload.hex()}")
        if ftype == SETTINGS and flags & ACK:
            got_ack = True
        elif ftype == SETTINGS:
            got_settings = True
            sock.sendall(frame(SETTINGS, ACK, 0))
    return buf


def one_request(sock, buf, host):
    # HPACK: :method GET (2), :scheme http (6), :path / (4), :authority literal (name index 1).
    block = bytes([0x82, 0x86, 0x84, 0x41, len(host)]) + host
    sock.sendall(frame(HEADERS, 0x4 | END_STREAM, 1, block))
    status_ok = None
    while True:
        ftype, flags, stream, payload = read_frame(sock, buf)
        if ftype in (GOAWAY, RST_STREAM):
            raise ConnectionError(f"frame type {ftype}: {payload.hex()}")
        if stream != 1:
            continue
        if ftype == HEADERS and status_ok is None:
            # The first field of the block is :status; 200 is HPACK's static entry 8 (0x88).
            block_ = payload
            if flags & 0x8:  # PADDED
                block_ = block_[1:len(block_) - block_[0]]
            if flags & 0x20:  # PRIORITY
                block_ = block_[5:]
            status_ok = block_[:1] == b"\x88"
        if flags & END_STREAM:
            if not status_ok:
                raise ConnectionError("answer is not a 200")
            return


def rss_kb(pids):
    total = 0
    for pid in pids:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", required=True, help="comma-separated PIDs whose VmRSS is summed")
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--request", action="store_true", help="one GET / per connection first")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds before reading the RSS")
    a = ap.parse_args()
    pids = [int(p) for p in a.pid.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.connections + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY else want, hard))
    host = b"127.0.0.1"
    time.sleep(a.settle / 2)
    before = rss_kb(pids)
    conns = []
    try:
        for _ in range(a.connections):
            s = socket.create_connection(("127.0.0.1", a.port), timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = handshake(s)
            if a.request:
                one_request(s, buf, host)
            conns.append(s)
    except (OSError, ConnectionError) as e:
        print(f"idle FAILED after {len(conns)} connections: {e}", flush=True)
        sys.exit(1)
    time.sleep(a.settle)
    held = rss_kb(pids)
    # Every connection is still open: a proxy that closed idle ones would not be measured.
    for s in conns:
        s.setblocking(False)
        try:
            if s.recv(65536) == b"":
                print("idle FAILED: the proxy closed a held connection", flush=True)
                sys.exit(1)
        except BlockingIOError:
            pass
    n = len(conns)
    print(f"idle connections={n} request={int(a.request)} rss_before_kb={before} "
          f"rss_held_kb={held} per_conn_bytes={(held - before) * 1024 // n}", flush=True)
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()
