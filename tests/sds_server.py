#!/usr/bin/env python3
"""An Envoy v3 Secret Discovery Service in Python, as Istio's agent serves it to its proxy: grpcio
serving the `xds-protos` package's `SecretDiscoveryService/StreamSecrets` (state of the world) on
a Unix socket, for the end-to-end tests of `xds.sds_sources` (not this project's Rust).

    sds_server.py SOCKET SECRETS_JSON REQUEST_LOG

SECRETS_JSON is read again whenever it changes (write it elsewhere and rename it over):
`{"version": "V", "secrets": {NAME: {"chain": PEM, "key": PEM} | {"ca": PEM}}}` — a
`tls_certificate` secret or a `validation_context` one (its `trusted_ca`), PEM given inline.

Each stream is answered, after every request and every change of the file, with the secrets it
asked for (`resource_names`) that the file holds, at the file's version, unless that version and
those names were sent already on the stream. Every request is appended to REQUEST_LOG as one JSON
object a line: `version_info`, `nonce`, `error` (the `error_detail` message or null), `node` (its
id when the request carries one, else null), `names`.
"""

import json
import os
import queue
import sys
import threading
import time
from concurrent import futures

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2

SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def secret(name, spec):
    if "ca" in spec:
        s = secret_pb2.Secret(
            name=name,
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(inline_string=spec["ca"])
            ),
        )
    else:
        s = secret_pb2.Secret(
            name=name,
            tls_certificate=common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(inline_string=spec["chain"]),
                private_key=base_pb2.DataSource(inline_string=spec["key"]),
            ),
        )
    a = any_pb2.Any()
    a.Pack(s)
    return a


class Store:
    """The secrets file, re-read when it changes; watchers are called after a change."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.version = ""
        self.secrets = {}
        self.text = None
        self.watchers = set()
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
        spec = json.loads(text)
        with self.lock:
            self.text = text
            self.version = str(spec["version"])
            self.secrets = {n: secret(n, s) for n, s in spec["secrets"].items()}
        return True

    def poll(self):
        while True:
            time.sleep(0.05)
            if self.reload():
                with self.lock:
                    watchers = list(self.watchers)
                for w in watchers:
                    w()

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


class Sds(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    def __init__(self, store, log):
        self.store = store
        self.log = log

    def StreamSecrets(self, request_iterator, context):
        out = queue.Queue()
        lock = threading.Lock()
        state = {"names": [], "sent": None}

        def answer():
            with self.store.lock:
                version, secrets = self.store.version, dict(self.store.secrets)
            names = state["names"]
            key = (version, tuple(names))
            if not names or state["sent"] == key:
                return
            state["sent"] = key
            out.put(
                discovery_pb2.DiscoveryResponse(
                    version_info=version,
                    resources=[secrets[n] for n in names if n in secrets],
                    type_url=SECRET,
                    nonce=self.store.next_nonce(),
                )
            )

        def changed():
            with lock:
                answer()

        def read():
            try:
                for r in request_iterator:
                    self.log.write(
                        {
                            "version_info": r.version_info,
                            "nonce": r.response_nonce,
                            "error": r.error_detail.message
                            if r.HasField("error_detail")
                            else None,
                            "node": r.node.id if r.HasField("node") else None,
                            "names": list(r.resource_names),
                        }
                    )
                    with lock:
                        state["names"] = sorted(r.resource_names)
                        answer()
            except grpc.RpcError:
                pass
            out.put(None)

        with self.store.lock:
            self.store.watchers.add(changed)
        context.add_callback(lambda: out.put(None))
        threading.Thread(target=read, daemon=True).start()
        try:
            while True:
                item = out.get()
                if item is None:
                    return
                yield item
        finally:
            with self.store.lock:
                self.store.watchers.discard(changed)


def main():
    socket, secrets, log = sys.argv[1], sys.argv[2], sys.argv[3]
    store = Store(secrets)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(Sds(store, Log(log)), server)
    if os.path.exists(socket):
        os.unlink(socket)
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    print(f"sds_server: serving on unix:{socket} (pid {os.getpid()})", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
