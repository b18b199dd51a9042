//! `node` and `xds`: the xDS bootstrap ([`crate::config::xds`]).

use serde_json::Value;

use super::decoder::{Decoder, child};
use super::{cluster_ref, opt_duration};
use crate::config::xds::{DEFAULT_INITIAL_FETCH_TIMEOUT, Locality, NodeConfig, XdsConfig, XdsMode};
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

/// `xds: { cluster, mode, initial_fetch_timeout }`.
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
    obj.finish(dec);
    let (cluster, cluster_index) = cluster?;
    Some(XdsConfig {
        cluster,
        cluster_index,
        mode: mode?,
        initial_fetch_timeout: timeout?,
    })
}

/// The management server's cluster must have hosts to dial: a static one.
pub(super) fn check_xds_cluster(
    dec: &mut Decoder,
    xds: Option<XdsConfig>,
    clusters: &[ClusterConfig],
) -> Option<Option<XdsConfig>> {
    let Some(x) = xds else {
        return Some(None);
    };
    match clusters.get(x.cluster_index) {
        // The client dials the management server in cleartext (TLS to it is not built yet):
        // a `tls` there would be silently ignored.
        Some(c) if c.kind == ClusterKind::Static && c.tls.is_some() => {
            dec.error(
                "xds.cluster",
                format!(
                    "cluster {:?} has `tls`, but the xDS client does not speak TLS to the \
                     management server yet (it would connect in cleartext): remove `tls`",
                    x.cluster
                ),
            );
            None
        }
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
        Some(c) if c.kind == ClusterKind::Static => Some(Some(x)),
        _ => {
            dec.error(
                "xds.cluster",
                format!(
                    "cluster {:?} is of type {}: the management server needs a static \
                     cluster (its first host is dialled)",
                    x.cluster,
                    clusters
                        .get(x.cluster_index)
                        .map_or("?", |c| c.kind.as_str())
                ),
            );
            None
        }
    }
}
