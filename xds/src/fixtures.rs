//! Builders of Envoy v3 resources for tests (unit tests here, the runtime's e2e tests, the
//! fuzz corpus): the shapes a go-control-plane server sends.

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig},
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ConfigSource, SocketAddress, address,
    config_source::ConfigSourceSpecifier, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source::Specifier, transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier as TcpClusterSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    TlsCertificate, UpstreamTlsContext, common_tls_context::ValidationContextType, secret,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

pub mod istiod;

/// A delta response's entry: `name` at `version`, with its body.
#[must_use]
pub fn resource(
    name: &str,
    version: &str,
    body: Any,
) -> envoy_types::pb::envoy::service::discovery::v3::Resource {
    envoy_types::pb::envoy::service::discovery::v3::Resource {
        name: name.to_owned(),
        version: version.to_owned(),
        resource: Some(body),
        ..Default::default()
    }
}

/// Packs a message into an `Any`.
pub fn any<T: Message + Name>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

/// A STATIC cluster with these hosts (ip, port, health status).
#[must_use]
pub fn static_cluster(name: &str, hosts: &[(&str, u32, i32)]) -> Cluster {
    Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        load_assignment: Some(assignment(name, hosts)),
        ..Default::default()
    }
}

/// A socket address.
#[must_use]
pub fn address(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_owned(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// `ads: {}`.
#[must_use]
pub fn ads_source() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: 2, // V3
        ..Default::default()
    }
}

/// An SDS source of its own, as istiod names its agent's: `api_config_source { api_type: GRPC,
/// grpc_services: [{ envoy_grpc: { cluster_name } }], transport_api_version: V3,
/// set_node_on_first_message_only: true }` (`cluster_name`: `sds-grpc`).
#[must_use]
pub fn grpc_sds_source(cluster_name: &str) -> ConfigSource {
    use envoy_types::pb::envoy::config::core::v3::{
        ApiConfigSource, ApiVersion, GrpcService,
        api_config_source::ApiType,
        grpc_service::{EnvoyGrpc, TargetSpecifier},
    };
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(ApiConfigSource {
            api_type: ApiType::Grpc as i32,
            transport_api_version: ApiVersion::V3 as i32,
            set_node_on_first_message_only: true,
            grpc_services: vec![GrpcService {
                target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                    cluster_name: cluster_name.to_owned(),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        })),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

/// A reference to the SDS secret `name` of the SDS source `source` (Istio: `sds-grpc`).
#[must_use]
pub fn source_sds(source: &str, name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_owned(),
        sds_config: Some(grpc_sds_source(source)),
    }
}

/// An EDS cluster whose endpoints come over ADS under its own name.
#[must_use]
pub fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads_source()),
            service_name: String::new(),
        }),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    }
}

/// An assignment of `hosts` (`ip:port`, health status) to `cluster`.
#[must_use]
pub fn assignment(cluster: &str, hosts: &[(&str, u32, i32)]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.to_owned(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: hosts
                .iter()
                .map(|(ip, port, status)| LbEndpoint {
                    health_status: *status,
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(address(ip, *port)),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The router HTTP filter.
#[must_use]
pub fn router_filter() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(
            any(&Router::default()),
        )),
        ..Default::default()
    }
}

/// A listener on `ip:port` whose HTTP connection manager takes route configuration `routes`
/// over RDS.
#[must_use]
pub fn http_listener(name: &str, ip: &str, port: u32, routes: &str) -> Listener {
    http_listener_with(
        name,
        ip,
        port,
        RouteSpecifier::Rds(Rds {
            config_source: Some(ads_source()),
            route_config_name: routes.to_owned(),
        }),
    )
}

/// A listener on `ip:port` with an HTTP connection manager routing by `routes`.
#[must_use]
pub fn http_listener_with(name: &str, ip: &str, port: u32, routes: RouteSpecifier) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: name.to_owned(),
        http_filters: vec![router_filter()],
        route_specifier: Some(routes),
        ..Default::default()
    };
    Listener {
        name: name.to_owned(),
        address: Some(address(ip, port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A listener on `ip:port` proxying TCP to `cluster`.
#[must_use]
pub fn tcp_listener(name: &str, ip: &str, port: u32, cluster: &str) -> Listener {
    let tcp = TcpProxy {
        stat_prefix: name.to_owned(),
        cluster_specifier: Some(TcpClusterSpecifier::Cluster(cluster.to_owned())),
        ..Default::default()
    };
    Listener {
        name: name.to_owned(),
        address: Some(address(ip, port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.tcp_proxy".to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&tcp))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A route configuration with one virtual host (`*`) sending every path under `/` to
/// `cluster`.
#[must_use]
pub fn route_config(name: &str, cluster: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: "all".to_owned(),
            domains: vec!["*".to_owned()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".to_owned())),
                    ..Default::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_owned())),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The name of a packed resource of one of the four types (a cluster's or listener's `name`,
/// an assignment's `cluster_name`), or `None` when it is none of them or does not decode: what
/// a test server or the fuzz driver names a delta response's entry with.
#[must_use]
pub fn resource_name(any: &Any) -> Option<String> {
    fn named<T: Message + Name + Default>(any: &Any, name: impl Fn(T) -> String) -> Option<String> {
        (any.type_url == T::type_url())
            .then(|| T::decode(any.value.as_slice()).ok().map(name))
            .flatten()
    }
    named(any, |c: Cluster| c.name)
        .or_else(|| named(any, |c: ClusterLoadAssignment| c.cluster_name))
        .or_else(|| named(any, |l: Listener| l.name))
        .or_else(|| named(any, |r: RouteConfiguration| r.name))
        .or_else(|| named(any, |s: Secret| s.name))
}

/// PEM given inline (`inline_string`).
#[must_use]
pub fn inline_pem(pem: &str) -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineString(pem.to_owned())),
        ..Default::default()
    }
}

/// A reference to the SDS secret `name`, over ADS.
#[must_use]
pub fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_owned(),
        sds_config: Some(ads_source()),
    }
}

/// A `tls_certificate` secret.
#[must_use]
pub fn certificate_secret(name: &str, chain: &str, key: &str) -> Secret {
    Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline_pem(chain)),
            private_key: Some(inline_pem(key)),
            ..Default::default()
        })),
    }
}

/// A `validation_context` secret: trust `ca`.
#[must_use]
pub fn ca_secret(name: &str, ca: &str) -> Secret {
    Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(inline_pem(ca)),
                ..Default::default()
            },
        )),
    }
}

/// An `envoy.transport_sockets.tls` socket of `context` (an `UpstreamTlsContext` or a
/// `DownstreamTlsContext`).
pub fn tls_socket<T: Message + Name>(context: &T) -> TransportSocket {
    TransportSocket {
        name: crate::translate::TLS_TRANSPORT_SOCKET.to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(context))),
    }
}

/// An upstream TLS context: `sni`, the CA from the SDS secret `ca_secret`.
#[must_use]
pub fn upstream_tls_sds(sni: &str, ca_secret: &str) -> UpstreamTlsContext {
    UpstreamTlsContext {
        sni: sni.to_owned(),
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: Some(ValidationContextType::ValidationContextSdsSecretConfig(
                sds(ca_secret),
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A downstream TLS context serving the certificate of the SDS secret `cert_secret`.
#[must_use]
pub fn downstream_tls_sds(cert_secret: &str) -> DownstreamTlsContext {
    DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds(cert_secret)],
            ..Default::default()
        }),
        ..Default::default()
    }
}
