#!/usr/bin/env python3
"""An Envoy v3 ADS management server in Python, for the xDS end-to-end tests: grpcio serving the
`xds-protos` package's generated service (not this project's Rust), state of the world and delta.

    xds_server.py PORT SNAPSHOT_JSON REQUEST_LOG [--tls CERT KEY [--client-ca CA]]

With `--tls`, the server speaks gRPC over TLS (grpcio's `ssl_server_credentials`) with the
certificate chain CERT and key KEY (PEM files); with `--client-ca` too, it requires a client
certificate issued by CA (mutual TLS) and refuses a client without one.

SNAPSHOT_JSON is read again whenever it changes (write it elsewhere and rename it over):
`{"version": N, "listen": PORT, "upstream": PORT}` makes the resources of one sidecar built here
from the protos: cluster `web` (EDS over ADS), its assignment with the one endpoint
127.0.0.1:upstream, listener `in` on 127.0.0.1:listen whose HTTP connection manager takes route
configuration `routes` over RDS, and `routes` sending everything to `web`. With
`"listener_port": P` too, listener `in` is declared on port P instead of `listen`, sent as given
(a `uint32`: 99999 stages a listener the client must refuse, NACK).

Killed and started again on the same files, it serves the same snapshot; it keeps no other state
(nonces start again from 1; a delta stream's knowledge of what the client has starts from the
client's `initial_resource_versions`).

State of the world: each type the client asked for is answered with every resource of it, at
the snapshot's version, once per version. Delta: per type, the subscription (`*` or names) and
what the client has (from `initial_resource_versions`, then what was sent) are kept; the
resources that differ (a resource's version is a hash of its bytes) and the names removed are
sent. Every request received is appended to REQUEST_LOG as one JSON object a line: `mode`,
`type_url`, `version_info`, `nonce`, `error` (the `error_detail` message or null), `node`,
`subscribe`, `unsubscribe`, `initial` (delta's `initial_resource_versions`).

The snapshot file, the request log, the stream loop and the gRPC server's setup are
`xds_common.py`'s (shared with `sds_server.py`).
"""

import hashlib
import os
import sys

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import duration_pb2
from xds_common import (
    Log,
    Store,
    error_message,
    node_id,
    pack,
    serve_stream,
    start_server,
    tls_arguments,
)

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


def ads_source():
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def socket_address(port):
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
    )


def build(spec):
    """The version and resources of a snapshot spec: (N, {type_url: [(name, Any)]})."""
    cluster = cluster_pb2.Cluster(
        name="web",
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration_pb2.Duration(seconds=1),
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads_source()),
    )
    assignment = endpoint_pb2.ClusterLoadAssignment(
        cluster_name="web",
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(
                            address=socket_address(spec["upstream"])
                        )
                    )
                ]
            )
        ],
    )
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix="in",
        rds=hcm_pb2.Rds(route_config_name="routes", config_source=ads_source()),
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=pack(router_pb2.Router())
            )
        ],
    )
    listener = listener_pb2.Listener(
        name="in",
        address=socket_address(spec.get("listener_port", spec["listen"])),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager",
                        typed_config=pack(hcm),
                    )
                ]
            )
        ],
    )
    routes = route_pb2.RouteConfiguration(
        name="routes",
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name="all",
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix="/"),
                        route=route_components_pb2.RouteAction(cluster="web"),
                    )
                ],
            )
        ],
    )
    return spec["version"], {
        CDS: [("web", pack(cluster))],
        EDS: [("web", pack(assignment))],
        LDS: [("in", pack(listener))],
        RDS: [("routes", pack(routes))],
    }


def resource_version(any_message):
    return hashlib.sha256(any_message.value).hexdigest()[:16]


class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, store, log):
        self.store = store
        self.log = log

    def StreamAggregatedResources(self, request_iterator, context):
        subscribed = set()
        sent = {}

        def on_request(r):
            self.log.write(
                {
                    "mode": "sotw",
                    "type_url": r.type_url,
                    "version_info": r.version_info,
                    "nonce": r.response_nonce,
                    "error": error_message(r),
                    "node": node_id(r),
                    "subscribe": list(r.resource_names),
                    "unsubscribe": [],
                    "initial": {},
                }
            )
            subscribed.add(r.type_url)

        def on_change(out):
            version, resources = self.store.snapshot()
            for type_url in sorted(subscribed):
                if sent.get(type_url) == version:
                    continue
                sent[type_url] = version
                out.put(
                    discovery_pb2.DiscoveryResponse(
                        version_info=str(version),
                        resources=[a for _, a in resources.get(type_url, [])],
                        type_url=type_url,
                        nonce=self.store.next_nonce(),
                    )
                )

        yield from serve_stream(self.store, request_iterator, context, on_request, on_change)

    def DeltaAggregatedResources(self, request_iterator, context):
        types = {}

        def on_request(r):
            self.log.write(
                {
                    "mode": "delta",
                    "type_url": r.type_url,
                    "version_info": "",
                    "nonce": r.response_nonce,
                    "error": error_message(r),
                    "node": node_id(r),
                    "subscribe": list(r.resource_names_subscribe),
                    "unsubscribe": list(r.resource_names_unsubscribe),
                    "initial": dict(r.initial_resource_versions),
                }
            )
            t = types.get(r.type_url)
            if t is None:
                t = {"wildcard": False, "names": set(), "known": dict(r.initial_resource_versions)}
                types[r.type_url] = t
            for n in r.resource_names_subscribe:
                if n == "*":
                    t["wildcard"] = True
                else:
                    t["names"].add(n)
            for n in r.resource_names_unsubscribe:
                if n == "*":
                    t["wildcard"] = False
                else:
                    t["names"].discard(n)
                t["known"].pop(n, None)

        def on_change(out):
            version, resources = self.store.snapshot()
            for type_url, t in sorted(types.items()):
                wanted = {
                    name: a
                    for name, a in resources.get(type_url, [])
                    if t["wildcard"] or name in t["names"]
                }
                changed = [
                    discovery_pb2.Resource(name=name, version=resource_version(a), resource=a)
                    for name, a in sorted(wanted.items())
                    if t["known"].get(name) != resource_version(a)
                ]
                removed = sorted(n for n in t["known"] if n not in wanted)
                if not changed and not removed:
                    continue
                for r in changed:
                    t["known"][r.name] = r.version
                for n in removed:
                    del t["known"][n]
                out.put(
                    discovery_pb2.DeltaDiscoveryResponse(
                        system_version_info=str(version),
                        resources=changed,
                        type_url=type_url,
                        removed_resources=removed,
                        nonce=self.store.next_nonce(),
                    )
                )

        yield from serve_stream(self.store, request_iterator, context, on_request, on_change)


def main():
    port, snapshot, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    tls, client_ca = tls_arguments(sys.argv[4:], "xds_server")
    ads = Ads(Store(snapshot, build), Log(log))
    server, what = start_server(
        f"127.0.0.1:{port}",
        lambda s: ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, s),
        tls,
        client_ca,
    )
    print(f"xds_server: serving on 127.0.0.1:{port} ({what}; pid {os.getpid()})", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
