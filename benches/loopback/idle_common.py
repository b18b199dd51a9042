"""What idle_rss.py and idle_heap.py share: their command line, a sluice config serving one HTTP
listener with a direct response, waiting for the listener, and opening the idle connections.

Each script starts the binary its own way (idle_rss.py plainly, idle_heap.py under heaptrack),
then uses these helpers; nothing here starts or stops a process.
"""
import selectors, socket, sys, tempfile, threading, time


def parse_args(default_n=5000):
    """(SLUICE_BIN, N, flags): the positional arguments, and the `--` flags as a set."""
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    binary = args[0]
    n = int(args[1]) if len(args) > 1 else default_n
    return binary, n, {a for a in sys.argv[1:] if a.startswith("--")}


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def write_config(port, limits=True):
    """A config file serving `hi` on 127.0.0.1:PORT (headers timeout 120 s: idle connections that
    send nothing stay); `limits=False` leaves out `limits` (a binary that predates it). Its path."""
    cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    if limits:
        cfg.write("\nlimits: { max_connections: 100000 }")
    cfg.write(f"""
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
    return cfg.name


def wait_listening(port, tries):
    """Connects every 0.1 s, at most `tries` times, until the listener takes a connection."""
    for _ in range(tries):
        try:
            socket.create_connection(("127.0.0.1", port)).close(); return
        except OSError:
            time.sleep(0.1)


def open_idle(port, n, keepalive):
    """N connections to the listener; with `keepalive`, each first makes one keep-alive request
    and reads its answer. The open sockets."""
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    if keepalive:
        for c in conns:
            c.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        for c in conns:
            got = b""
            while not got.endswith(b"hi"):
                got += c.recv(4096)
    return conns


def start_echo():
    """An echo server on one thread (a selector); its port."""
    up = socket.socket(); up.bind(("127.0.0.1", 0)); up.listen(4096); up.setblocking(False)
    sel = selectors.DefaultSelector(); sel.register(up, selectors.EVENT_READ)

    def loop():
        while True:
            for key, _ in sel.select():
                if key.fileobj is up:
                    c, _ = up.accept(); c.setblocking(True); sel.register(c, selectors.EVENT_READ)
                    continue
                c = key.fileobj
                try:
                    data = c.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(c); c.close(); continue
                c.sendall(data)
    threading.Thread(target=loop, daemon=True).start()
    return up.getsockname()[1]


def write_tcp_config(port, upstream_port):
    """A config file with a `tcp_proxy` listener on 127.0.0.1:PORT to 127.0.0.1:UPSTREAM_PORT."""
    cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    cfg.write(f"""limits: {{ max_connections: 100000 }}
listeners:
  - {{ name: t, address: 127.0.0.1:{port}, tcp_proxy: {{ cluster: up }} }}
clusters:
  - name: up
    circuit_breakers: {{ max_connections: 100000 }}
    hosts: [ {{ address: "127.0.0.1:{upstream_port}" }} ]
""")
    cfg.close()
    return cfg.name


def open_idle_pairs(port, n, size=1000):
    """N connections to a `tcp_proxy` listener in front of an echo server, each echoing SIZE
    bytes first. The open sockets."""
    payload = bytes(range(256)) * (size // 256 + 1)
    payload = payload[:size]
    conns = []
    for i in range(n):
        c = socket.create_connection(("127.0.0.1", port)); c.sendall(payload); got = b""
        while len(got) < size:
            d = c.recv(65536)
            if not d:
                raise SystemExit(f"pair {i} closed")
            got += d
        conns.append(c)
    return conns
