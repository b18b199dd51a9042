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

The secrets file, the request log, the stream loop and the gRPC server's setup are
`xds_common.py`'s (shared with `xds_server.py`).
"""

import os
import sys

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from xds_common import Log, Store, error_message, node_id, pack, serve_stream, start_server

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
    return pack(s)


def build(spec):
    """The version and secrets of the file: (V, {name: Any})."""
    return str(spec["version"]), {n: secret(n, s) for n, s in spec["secrets"].items()}


class Sds(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    def __init__(self, store, log):
        self.store = store
        self.log = log

    def StreamSecrets(self, request_iterator, context):
        state = {"names": [], "sent": None}

        def on_request(r):
            self.log.write(
                {
                    "version_info": r.version_info,
                    "nonce": r.response_nonce,
                    "error": error_message(r),
                    "node": node_id(r),
                    "names": list(r.resource_names),
                }
            )
            state["names"] = sorted(r.resource_names)

        def on_change(out):
            version, secrets = self.store.snapshot()
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

        yield from serve_stream(self.store, request_iterator, context, on_request, on_change)


def main():
    socket, secrets, log = sys.argv[1], sys.argv[2], sys.argv[3]
    sds = Sds(Store(secrets, build), Log(log))
    if os.path.exists(socket):
        os.unlink(socket)
    server, _ = start_server(
        f"unix:{socket}",
        lambda s: sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(sds, s),
    )
    print(f"sds_server: serving on unix:{socket} (pid {os.getpid()})", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
