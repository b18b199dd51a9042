"""What the Python management servers of the end-to-end tests share (`xds_server.py`, the ADS
server; `sds_server.py`, the SDS server): the snapshot file reloaded when it changes, the request
log, one gRPC stream's loop, and the gRPC server's setup (cleartext, TLS, mutual TLS).

- `Store(path, build)`: the file at `path` is read at start and again whenever its text changes
  (polled every 50 ms; write it elsewhere and rename it over); `build(spec)` turns its JSON into
  `(version, resources)`, kept under `lock`. After a change, every watcher (a stream) is called.
- `Log(path)`: appends one JSON object a line, flushed at once (tests read it while serving).
- `serve_stream(store, requests, context, on_request, on_change)`: runs one bidirectional stream:
  requests are read on a thread and handed to `on_request`, then `on_change(out)` answers by
  putting responses on `out`; a change of the snapshot calls `on_change(out)` too; both under one
  lock per stream, and neither before the file was first read. The stream ends when the
  client's side ends or the RPC is cancelled.
- `start_server(address, register, tls, client_ca)`: a grpcio server on `address`
  (`127.0.0.1:PORT` or `unix:PATH`) with the servicers `register(server)` adds; `tls` is
  `(cert_path, key_path)` or None (cleartext); with `client_ca` too, a client certificate
  issued by that CA is required (mutual TLS).
- `tls_arguments(args, program)`: parses `[--tls CERT KEY [--client-ca CA]]`.
"""

import json
import queue
import sys
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import any_pb2


def pack(message):
    a = any_pb2.Any()
    a.Pack(message)
    return a


def read(path):
    with open(path, "rb") as f:
        return f.read()


class Store:
    """The snapshot, reloaded from its file, and the streams to tell of a change."""

    def __init__(self, path, build):
        self.path = path
        self.build = build
        self.lock = threading.Lock()
        self.version = None
        self.resources = {}
        self.watchers = set()
        self.text = None
        self.nonce = 0
        self.reload()
        threading.Thread(target=self.poll, daemon=True).start()

    def reload(self):
        try:
            with open(self.path) as f:
                text = f.read()
        except FileNotFoundError:
            return False
        if text == self.text:
            return False
        version, resources = self.build(json.loads(text))
        with self.lock:
            self.text = text
            self.version = version
            self.resources = resources
        return True

    def poll(self):
        while True:
            time.sleep(0.05)
            if self.reload():
                with self.lock:
                    watchers = list(self.watchers)
                for w in watchers:
                    w()

    def snapshot(self):
        with self.lock:
            return self.version, self.resources

    def next_nonce(self):
        with self.lock:
            self.nonce += 1
            return str(self.nonce)


class Log:
    def __init__(self, path):
        self.file = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    def write(self, entry):
        with self.lock:
            self.file.write(json.dumps(entry) + "\n")
            self.file.flush()


def error_message(request):
    """A request's `error_detail` message (a NACK), or None (an ACK or a subscription)."""
    return request.error_detail.message if request.HasField("error_detail") else None


def node_id(request):
    """The id of the node a request carries, or None."""
    return request.node.id if request.HasField("node") else None


def serve_stream(store, request_iterator, context, on_request, on_change):
    """Runs a stream: requests read on a thread, responses from `out` yielded."""
    out = queue.Queue()
    lock = threading.Lock()

    def answer():
        # Nothing to answer with before the file was first read.
        if store.text is not None:
            on_change(out)

    def changed():
        with lock:
            answer()

    def read_requests():
        try:
            for request in request_iterator:
                with lock:
                    on_request(request)
                    answer()
        except grpc.RpcError:
            pass
        out.put(None)

    with store.lock:
        store.watchers.add(changed)
    context.add_callback(lambda: out.put(None))
    threading.Thread(target=read_requests, daemon=True).start()
    try:
        while True:
            item = out.get()
            if item is None:
                return
            yield item
    finally:
        with store.lock:
            store.watchers.discard(changed)


def tls_arguments(rest, program):
    """`[--tls CERT KEY [--client-ca CA]]` → `(tls, client_ca)`; exits on anything else."""
    tls = client_ca = None
    while rest:
        if rest[0] == "--tls" and len(rest) >= 3:
            tls, rest = (rest[1], rest[2]), rest[3:]
        elif rest[0] == "--client-ca" and len(rest) >= 2:
            client_ca, rest = rest[1], rest[2:]
        else:
            sys.exit(f"{program}: unknown arguments {rest!r}")
    if client_ca and not tls:
        sys.exit(f"{program}: --client-ca needs --tls")
    return tls, client_ca


def start_server(address, register, tls=None, client_ca=None):
    """Starts a grpcio server on `address` with what `register(server)` adds; returns it and a
    description of its transport."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    register(server)
    if tls:
        credentials = grpc.ssl_server_credentials(
            [(read(tls[1]), read(tls[0]))],
            root_certificates=read(client_ca) if client_ca else None,
            require_client_auth=client_ca is not None,
        )
        server.add_secure_port(address, credentials)
    else:
        server.add_insecure_port(address)
    server.start()
    what = "TLS" + (", client certificates required" if client_ca else "") if tls else "cleartext"
    return server, what
