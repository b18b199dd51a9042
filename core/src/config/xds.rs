//! The xDS bootstrap: who this proxy is to a management server (`node`) and where that server
//! is (`xds`). A config with `xds` gets dynamic listeners, routes, clusters and endpoints from
//! the server (the `sluice-xds` crate translates them into this same model); its static
//! listeners and clusters stay, and `listeners: []` is valid.

use std::time::Duration;

use serde::Serialize;

use super::ser_duration;

/// Default for [`XdsConfig::initial_fetch_timeout`] (Envoy's).
pub const DEFAULT_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// `node`: the identity sent to the management server in the first request of a stream.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeConfig {
    /// Unique per proxy instance (Istio: `sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local`).
    pub id: String,
    /// The service cluster this proxy belongs to.
    pub cluster: String,
    /// Opaque metadata for the server (a mapping, sent as a protobuf `Struct`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Where the proxy runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
}

/// `node.locality`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Locality {
    /// Region.
    pub region: String,
    /// Zone within the region.
    pub zone: String,
    /// Sub-zone within the zone.
    pub sub_zone: String,
}

/// Which variant of the xDS protocol the client speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XdsMode {
    /// State of the world over ADS (`StreamAggregatedResources`).
    #[default]
    Sotw,
    /// Incremental over ADS (`DeltaAggregatedResources`): only changed resources and the names
    /// removed are sent, with a version per resource.
    Delta,
}

impl XdsMode {
    /// The names the config accepts.
    pub const CHOICES: [(&'static str, XdsMode); 2] =
        [("sotw", XdsMode::Sotw), ("delta", XdsMode::Delta)];
}

/// `xds`: the management server.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct XdsConfig {
    /// The static cluster the server is reached through (its first host, for now).
    pub cluster: String,
    /// Index of that cluster in `Config::clusters`.
    #[serde(skip)]
    pub cluster_index: usize,
    /// The protocol variant.
    pub mode: XdsMode,
    /// How long a cluster waits for its endpoints, and a listener for its routes, before the
    /// update that needs them is refused (NACKed).
    #[serde(serialize_with = "ser_duration")]
    pub initial_fetch_timeout: Duration,
    /// SDS servers of their own (`xds.sds_sources`), by the name the resources' `sds_config`
    /// uses (`api_config_source.grpc_services[0].envoy_grpc.cluster_name`, Istio's
    /// `sds-grpc`); empty: every secret comes over ADS.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sds_sources: Vec<SdsSource>,
}

/// `xds.sds_sources[]`: a Secret Discovery Service of its own (Istio's agent), which the
/// resources name in an `sds_config` of `api_config_source` type GRPC. Declared by the
/// operator only: an xDS resource names a source, never an address or a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdsSource {
    /// The name the resources use (`sds-grpc`).
    pub name: String,
    /// Where it listens.
    pub target: SdsTarget,
}

/// As the config writes it: `{ name, path }` or `{ name, cluster }`.
impl Serialize for SdsSource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("name", &self.name)?;
        match &self.target {
            SdsTarget::Path(path) => map.serialize_entry("path", path)?,
            SdsTarget::Cluster { name, .. } => map.serialize_entry("cluster", name)?,
        }
        map.end()
    }
}

/// Where an SDS source listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SdsTarget {
    /// A Unix socket (`path`; Istio: `./var/run/secrets/workload-spiffe-uds/socket`, relative
    /// to the working directory), spoken to in cleartext HTTP/2.
    Path(String),
    /// A static cluster (`cluster`), dialled as the xDS cluster is (its first host, its `tls`).
    Cluster {
        /// The cluster's name.
        name: String,
        /// Its index in `Config::clusters`.
        index: usize,
    },
}
