//! `node` and `xds`: the xDS bootstrap ([`crate::config::xds`]).

use serde_json::Value;

use super::decoder::{Decoder, child};
use super::{cluster_ref, opt_duration};
use crate::config::xds::{
    DEFAULT_INITIAL_FETCH_TIMEOUT, Locality, NodeConfig, SdsSource, SdsTarget, XdsConfig, XdsMode,
};
use crate::config::{ClusterConfig, ClusterKind};

/// `node: { id, cluster, metadata, locality: { region, zone, sub_zone } }`.
pub(super) fn decode_node(dec: &mut Decoder, path: &str, v: &Value) -> Option<NodeConfig> {
    let mut obj = dec.object(path, v)?;
    let id = obj.req(dec, "id").and_then(|(v, p)| non_empty(dec, &p, v));
    let cluster = obj
        .req(dec, "cluster")
        .and_then(|(v, p)| non_empty(dec, &p, v));
    let metadata = match obj.opt("metadata") {
        Some((v, p)) => {
            if v.is_object() {
                Some(Some(v.clone()))
            } else {
                dec.error(
                    &p,
                    "expected a mapping (sent to the server as a protobuf Struct)",
                );
                None
            }
        }
        None => Some(None),
    };
    let locality = match obj.opt("locality") {
        Some((v, p)) => decode_locality(dec, &p, v).map(Some),
        None => Some(None),
    };
    obj.finish(dec);
    Some(NodeConfig {
        id: id?,
        cluster: cluster?,
        metadata: metadata?,
        locality: locality?,
    })
}

fn non_empty(dec: &mut Decoder, path: &str, v: &Value) -> Option<String> {
    let s = dec.string(path, v)?;
    if s.is_empty() {
        dec.error(path, "cannot be empty");
        return None;
    }
    Some(s.to_owned())
}

fn decode_locality(dec: &mut Decoder, path: &str, v: &Value) -> Option<Locality> {
    let mut obj = dec.object(path, v)?;
    let mut field = |dec: &mut Decoder, key: &'static str| match obj.opt(key) {
        Some((v, p)) => dec.string(&p, v).map(str::to_owned),
        None => Some(String::new()),
    };
    let region = field(dec, "region");
    let zone = field(dec, "zone");
    let sub_zone = field(dec, "sub_zone");
    obj.finish(dec);
    Some(Locality {
        region: region?,
        zone: zone?,
        sub_zone: sub_zone?,
    })
}

/// `xds: { cluster, mode, initial_fetch_timeout, sds_sources }`.
pub(super) fn decode_xds(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    cluster_names: &[&str],
) -> Option<XdsConfig> {
    let mut obj = dec.object(path, v)?;
    let cluster = obj
        .req(dec, "cluster")
        .and_then(|(v, p)| cluster_ref(dec, &p, v, cluster_names));
    let mode = match obj.opt("mode") {
        Some((v, p)) => dec.one_of(&p, v, &XdsMode::CHOICES),
        None => Some(XdsMode::default()),
    };
    let timeout = opt_duration(
        dec,
        &mut obj,
        "initial_fetch_timeout",
        DEFAULT_INITIAL_FETCH_TIMEOUT,
    )
    .and_then(|d| {
        if d.is_zero() {
            dec.error(
                &child(path, "initial_fetch_timeout"),
                "must be greater than zero",
            );
            None
        } else {
            Some(d)
        }
    });
    let sds_sources = match obj.opt("sds_sources") {
        Some((v, p)) => decode_sds_sources(dec, &p, v, cluster_names),
        None => Some(Vec::new()),
    };
    obj.finish(dec);
    let (cluster, cluster_index) = cluster?;
    Some(XdsConfig {
        cluster,
        cluster_index,
        mode: mode?,
        initial_fetch_timeout: timeout?,
        sds_sources: sds_sources?,
    })
}

/// `sds_sources: [{ name, path | cluster }]`: names unique, exactly one of `path` (a Unix
/// socket) and `cluster` (a static cluster, checked in [`check_xds_cluster`]).
fn decode_sds_sources(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    cluster_names: &[&str],
) -> Option<Vec<SdsSource>> {
    let sources = dec.list(path, v, |dec, path, v| {
        let mut obj = dec.object(path, v)?;
        let name = obj
            .req(dec, "name")
            .and_then(|(v, p)| non_empty(dec, &p, v));
        let socket = obj.opt("path").map(|(v, p)| (non_empty(dec, &p, v), p));
        let cluster = obj
            .opt("cluster")
            .map(|(v, p)| cluster_ref(dec, &p, v, cluster_names));
        obj.finish(dec);
        let target = match (socket, cluster) {
            (Some((path, p)), None) => {
                let path = path?;
                if path.contains('\0') {
                    dec.error(&p, "a socket path cannot hold a NUL byte");
                    return None;
                }
                SdsTarget::Path(path)
            }
            (None, Some(c)) => {
                let (name, index) = c?;
                SdsTarget::Cluster { name, index }
            }
            (Some(_), Some(_)) => {
                dec.error(path, "give `path` (a Unix socket) or `cluster`, not both");
                return None;
            }
            (None, None) => {
                dec.error(
                    path,
                    "missing `path` (the SDS server's Unix socket) or `cluster` (a static \
                     cluster)",
                );
                return None;
            }
        };
        Some(SdsSource {
            name: name?,
            target,
        })
    })?;
    for (i, s) in sources.iter().enumerate() {
        if sources[..i].iter().any(|o| o.name == s.name) {
            dec.error(
                &child(&format!("{path}[{i}]"), "name"),
                format!("{:?} is declared twice", s.name),
            );
            return None;
        }
    }
    Some(sources)
}

/// The management server's cluster must have hosts to dial: a static one. With `tls`, the
/// client speaks gRPC over TLS to it (its first host, verified with the cluster's `ca`, `sni` /
/// `verify_subject_alt_names`, and its client certificate for mutual TLS), offering ALPN `h2`
/// alone whatever the cluster's `alpn` (the connector sets it on its own connection): only
/// validated here, the cluster left as it is. Its `alpn` is the data path's when routes,
/// health checks or the span exporter use the cluster too (the rules of `check_tls_clusters`:
/// an HTTP/1.1 route over TLS gets `[http/1.1]`, and the xDS connection still offers `h2`);
/// used by xDS alone, an `alpn` given without `h2` is refused, since nothing would offer it.
/// Refused too, because the client would ignore it: `transport_socket_matches` (the client
/// dials the first host with the cluster's own `tls`).
pub(super) fn check_xds_cluster(
    dec: &mut Decoder,
    xds: Option<XdsConfig>,
    clusters: &[ClusterConfig],
    otlp_cluster: Option<usize>,
) -> Option<Option<XdsConfig>> {
    let Some(x) = xds else {
        return Some(None);
    };
    // An SDS source's cluster is dialled as the xDS cluster is: a static cluster with a host.
    for (i, s) in x.sds_sources.iter().enumerate() {
        if let SdsTarget::Cluster { name, index } = &s.target
            && !clusters
                .get(*index)
                .is_some_and(|c| c.kind == ClusterKind::Static && !c.hosts.is_empty())
        {
            dec.error(
                &format!("xds.sds_sources[{i}].cluster"),
                format!(
                    "cluster {name:?} is not a static cluster with hosts: an SDS source's \
                     cluster is dialled at its first host"
                ),
            );
            return None;
        }
        // The source sends private keys: in cleartext only to this host.
        if let SdsTarget::Cluster { name, index } = &s.target
            && let Some(c) = clusters.get(*index)
            && c.tls.is_none()
            && !c.hosts[0].address.ip().is_loopback()
        {
            dec.error(
                &format!("xds.sds_sources[{i}].cluster"),
                format!(
                    "cluster {name:?} has no `tls` and its first host {} is not a loopback \
                     address: an SDS source sends private keys, which must not cross the \
                     network in cleartext (give the cluster `tls`, or use a Unix socket `path`)",
                    c.hosts[0].address
                ),
            );
            return None;
        }
    }
    let ci = x.cluster_index;
    match clusters.get(ci) {
        Some(c) if c.kind == ClusterKind::Static && c.hosts.is_empty() => {
            dec.error(
                "xds.cluster",
                format!(
                    "cluster {:?} has no hosts: the management server's cluster needs one \
                     (its first host is dialled)",
                    x.cluster
                ),
            );
            None
        }
        Some(c) if c.kind == ClusterKind::Static && !c.transport_socket_matches.is_empty() => {
            dec.error(
                &format!("clusters[{ci}].transport_socket_matches"),
                format!(
                    "cluster {:?} is the xDS cluster: its first host is dialled with the \
                     cluster's own `tls` (or in cleartext), so per-host transports would be \
                     ignored: remove `transport_socket_matches`",
                    x.cluster
                ),
            );
            None
        }
        Some(c) if c.kind == ClusterKind::Static => {
            let data_path = c.health_check.is_some()
                || otlp_cluster == Some(ci)
                || dec
                    .cluster_refs
                    .iter()
                    .any(|(i, path)| *i == ci && path != "xds.cluster");
            if let Some(tls) = c.tls.as_deref()
                && !data_path
                && !tls.alpn.is_empty()
                && !tls.alpn.iter().any(|p| p == "h2")
            {
                dec.error(
                    &format!("clusters[{ci}].tls.alpn"),
                    format!(
                        "{:?} lacks \"h2\": cluster {:?} is the xDS cluster, used by nothing \
                         else, and gRPC to the management server is HTTP/2 (the connection \
                         offers `h2` alone): give `alpn: [h2]` or none",
                        tls.alpn, x.cluster
                    ),
                );
                return None;
            }
            Some(Some(x))
        }
        _ => {
            dec.error(
                "xds.cluster",
                format!(
                    "cluster {:?} is of type {}: the management server needs a static \
                     cluster (its first host is dialled)",
                    x.cluster,
                    clusters.get(ci).map_or("?", |c| c.kind.as_str())
                ),
            );
            None
        }
    }
}
