//! The xDS client: configs from an Envoy v3 management server over ADS, state of the world
//! (`StreamAggregatedResources`) or delta (`DeltaAggregatedResources`, `xds.mode: delta`).
//!
//! Owns one thread (`xds`) with its own current-thread tokio runtime, which drives the sans-IO
//! [`sluice_xds::ads::Ads`] state machine over a tonic ADS stream: it connects to the first
//! host of the bootstrap's `xds.cluster`, feeds every response to the machine, sends the
//! requests it produces, arms its warming timer, and hands each assembled config to the server
//! loop ([`Update`]), which applies it through the same switch as a file reload
//! (`server::switch_to`: new sockets bound first, every worker switched, nothing changed on an
//! error) — or, when only cluster hosts changed (EDS), in place on every worker (`server`'s
//! `apply_endpoints`, see [`crate::dns`]), or, when only SDS secrets did, by a TLS rotation.
//! The machine ACKs a response only when that succeeded, and NACKs it when it failed.
//!
//! Connection states: connecting → streaming → (stream ends or fails, or, delta, the machine
//! asks for a resync after a NACK: the client ends its requests and lets the server close) →
//! backoff → connecting. The backoff is exponential from 250 ms to 30 s with full jitter, and
//! starts again from the bottom after a stream that delivered a response — but not after a
//! stream shorter than 30 s ended by a resync, so that a resource refused on every resync is
//! retried ever more slowly. While disconnected the config serving stays as it is.
//!
//! The connection to the management server is made by Sluice ([`XdsConnector`]), not by tonic's
//! own connector: with `upstream_mark` it carries the same `SO_MARK` as every other upstream
//! socket of the proxy, so that outbound capture rules, which exclude that mark, do not send the
//! proxy's own control-plane traffic back into the proxy (where, before the first config, no
//! listener would take it). When the xDS cluster has `tls`, the connector then makes a verified
//! TLS handshake (ALPN `h2`, the cluster's CA, name or SANs, and client certificate for mutual
//! TLS), within the same `connect_timeout`; its rustls config comes from the one client config
//! builder of the upstream connectors ([`crate::tls::client_config`]), built afresh for each
//! connection attempt so that rotated files are used at the next reconnect. A failed handshake
//! is a failed connect: logged with its reason, kept in [`LAST_CONNECT_ERROR`] (`/xds`), and
//! retried after the backoff.
//!
//! The client loop itself ([`run`]) takes its connector and the seed of its backoff jitter, so
//! that the simulator (`sluice-sim`'s xDS scenario) runs it as a task on a turmoil host, over
//! turmoil's network (`TurmoilXdsConnector`, feature `turmoil`), with a [`Bootstrap::new`] of
//! its own: the only seam it needs.
//!
//! A file reload (SIGHUP, `POST /reload`) is refused while xDS is in use, and one that would
//! add or remove `xds` too: the bootstrap changes only with a restart.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::{
    ListValue, NullValue, Struct, Value as PbValue, value::Kind,
};
use serde_json::Value;
use sluice_core::config::Config;
use sluice_core::config::xds::SdsTarget;
use sluice_xds::ads::{Ads, Answer, Input, Output, XdsMode};
use sluice_xds::translate::ResourceType;
use tracing::{debug, info, warn};

use crate::admin::ReloadRequest;

/// 1 while the ADS stream is open (`sluice_xds_connected`).
pub static CONNECTED: AtomicU64 = AtomicU64::new(0);
/// How many resource types there are ([`ResourceType::ALL`]).
pub const TYPES: usize = ResourceType::ALL.len();

/// ACKs sent, by type in [`ResourceType::ALL`] order (`sluice_xds_acked_total`).
pub static ACKED: [AtomicU64; TYPES] = [const { AtomicU64::new(0) }; TYPES];
/// NACKs sent, by type (`sluice_xds_nacked_total`).
pub static NACKED: [AtomicU64; TYPES] = [const { AtomicU64::new(0) }; TYPES];
/// Delta resyncs: streams ended after a NACK so that the server sends again what it refused
/// along with (`sluice_xds_resyncs_total`).
pub static RESYNCS: AtomicU64 = AtomicU64::new(0);
/// Resources (and, delta, names in `removed_resources`) of a response that named nothing
/// subscribed to, dropped on arrival, by type (`sluice_xds_unsolicited_resources_total`; only
/// endpoints, routes and secrets are subscribed to by name).
pub static UNSOLICITED: [AtomicU64; TYPES] = [const { AtomicU64::new(0) }; TYPES];
/// Fields and filters ignored on purpose (telemetry only, optional or disabled filters) in the
/// dynamic resources of the config serving, by the type of the resource holding them
/// (`sluice_xds_ignored_fields`): set when a config from xDS is applied. A gauge, not a
/// counter: every update translates the whole config again, so a counter would count the same
/// unchanged field once per push.
pub static IGNORED: [AtomicU64; TYPES] = [const { AtomicU64::new(0) }; TYPES];
/// Resources warming now, by type: clusters, listeners and route configurations received but
/// not served at the version received (`sluice_xds_warming_resources`; `/xds`'s `warming`).
pub static WARMING: [AtomicU64; TYPES] = [const { AtomicU64::new(0) }; TYPES];
/// Resources still missing when their initial fetch timeout expired, by type
/// (`sluice_xds_warming_timeouts_total`; endpoints and route configurations).
pub static WARMING_TIMEOUTS: [AtomicU64; TYPES] = [const { AtomicU64::new(0) }; TYPES];
/// When each type's last ACK went out, in Unix seconds (0: none yet;
/// `sluice_xds_update_timestamp_seconds`).
pub static UPDATED_AT: [AtomicU64; TYPES] = [const { AtomicU64::new(0) }; TYPES];

/// What the admin API's `/xds` shows: per type, in [`ResourceType::ALL`] order, the state of
/// the last ACK and NACK. Written by the client's thread on each ACK or NACK (never on the
/// data path), read by the admin server; `None` without `xds`.
pub static STATUS: std::sync::Mutex<Option<[TypeStatus; TYPES]>> = std::sync::Mutex::new(None);
/// Whether the client speaks delta (for `/xds`'s `mode`).
pub static DELTA: AtomicBool = AtomicBool::new(false);
/// The last failed connection attempt to the management server: what failed (a refused
/// connection, a TLS handshake and why) and when (Unix seconds); `/xds`'s
/// `last_connect_error`. Cleared once a stream opens (the log keeps every failure).
pub static LAST_CONNECT_ERROR: std::sync::Mutex<Option<(String, u64)>> =
    std::sync::Mutex::new(None);

/// One resource type's xDS status.
#[derive(Clone, Debug, Default)]
pub struct TypeStatus {
    /// The last accepted version (empty: none yet); in delta, the `system_version_info` of the
    /// last response accepted.
    pub version: String,
    /// Delta: the version each resource serving serves under (`None` in state of the world):
    /// while an update of it warms, the previous one's.
    pub resource_versions: Option<BTreeMap<String, String>>,
    /// When it was ACKed (Unix seconds).
    pub updated_at: Option<u64>,
    /// The names of this type's resources in the config serving.
    pub resources: Vec<String>,
    /// Clusters, listeners and route configurations: those received that are not served at
    /// the version received, warming (waiting for their endpoints, route configurations,
    /// secrets or the clusters they route to; each serves its previous version meanwhile, if
    /// any) — `/xds`'s `warming` and `/config_dump`'s `xds_warming`.
    pub warming: Vec<String>,
    /// The last response refused, if any.
    pub last_nack: Option<Arc<NackStatus>>,
    /// Per resource serving: the version it serves under (delta: its own; state of the world:
    /// the type's) and when that version was accepted (Unix seconds) — `/config_dump`'s
    /// `version_info` and `last_updated`.
    pub serving: BTreeMap<String, (String, u64)>,
    /// Per resource serving whose last update was refused (the machine's [`Output::Refused`]
    /// names it): that NACK, shared by every resource it refused, until a later version of the
    /// resource is accepted — `/config_dump`'s `error_state`.
    pub refused: BTreeMap<String, Arc<NackStatus>>,
    /// Per resource refused that never served (its every version so far refused): that NACK,
    /// until a version of it is accepted — or, in state of the world, a listeners' or
    /// clusters' response is accepted (the whole set, which no longer has it) —, at most
    /// [`REFUSED_UNSERVED_KEPT`] names — `/config_dump`'s `xds_resources.refused`.
    pub refused_unserved: BTreeMap<String, Arc<NackStatus>>,
}

/// How many never-served refused resources [`TypeStatus::refused_unserved`] keeps per type (a
/// server sending ever new bad names would otherwise grow it without end).
pub const REFUSED_UNSERVED_KEPT: usize = 1024;

/// How much of a NACK's `error_detail` [`NackStatus`] keeps (the NACK itself carries it whole,
/// as Envoy's do): a response of thousands of bad resources makes one of hundreds of KB.
pub const NACK_ERROR_KEPT: usize = 16 * 1024;

/// A refused response: its nonce, why (the `error_detail` sent, cut after
/// [`NACK_ERROR_KEPT`] bytes), when (Unix seconds).
#[derive(Clone, Debug)]
pub struct NackStatus {
    /// The refused response's nonce.
    pub nonce: String,
    /// The NACK's `error_detail` message (its first [`NACK_ERROR_KEPT`] bytes, and then how
    /// many more were sent).
    pub error: String,
    /// When it was sent (Unix seconds).
    pub at: u64,
}

/// The `/xds` view: connection state and each type's [`TypeStatus`] (`null` without `xds`).
#[must_use]
pub fn status_json() -> Value {
    let guard = STATUS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(types) = guard.as_ref() else {
        return Value::Null;
    };
    let mut by_type = serde_json::Map::new();
    for (i, t) in types.iter().enumerate() {
        let mut entry = serde_json::json!({
            "version": t.version,
            "updated_at": t.updated_at,
            "resources": t.resources,
            "warming": t.warming,
            "last_nack": t.last_nack.as_ref().map(|n| serde_json::json!({
                "nonce": n.nonce, "error": n.error, "at": n.at,
            })),
        });
        if let Some(v) = &t.resource_versions {
            entry["resource_versions"] = serde_json::json!(v);
        }
        by_type.insert(TYPE_LABELS[i].to_owned(), entry);
    }
    let delta = DELTA.load(Ordering::Relaxed);
    let mut view = serde_json::json!({
        "mode": if delta { "delta" } else { "sotw" },
        "connected": CONNECTED.load(Ordering::Relaxed) == 1,
        "types": by_type,
    });
    if delta {
        view["resyncs"] = RESYNCS.load(Ordering::Relaxed).into();
    }
    let sources = crate::xds_sds::status_json();
    if !sources.is_null() {
        view["sds_sources"] = sources;
    }
    view["last_connect_error"] = LAST_CONNECT_ERROR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
        .map_or(
            Value::Null,
            |(error, at)| serde_json::json!({ "error": error, "at": at }),
        );
    view
}

/// The xDS view of one resource for `/config_dump`: `origin` (`static`: from the bootstrap
/// file; `dynamic`: from the management server) and, dynamic, `version_info`, `last_updated`
/// (Unix seconds) and the `error_state` of its last update if that was refused (`details`: the
/// NACK's `error_detail`, `last_update_attempt`, `nonce`).
fn resource_status(t: &TypeStatus, name: &str) -> Value {
    let Some((version, at)) = t.serving.get(name) else {
        return serde_json::json!({ "origin": "static" });
    };
    let mut v = serde_json::json!({
        "origin": "dynamic",
        "version_info": version,
        "last_updated": at,
    });
    if let Some(n) = t.refused.get(name) {
        v["error_state"] = error_state(n);
    }
    v
}

/// A refusal as `/config_dump` shows it (`details`: the NACK's `error_detail`).
fn error_state(n: &NackStatus) -> Value {
    serde_json::json!({
        "details": n.error,
        "last_update_attempt": n.at,
        "nonce": n.nonce,
    })
}

/// With the xDS client running, adds to a `/config_dump` (the config serving, from
/// `admin::config_dump`) what xDS knows of each entry: every listener and cluster gets an
/// `xds_status` ([`resource_status`]: static or dynamic, and a dynamic one its version, last
/// update and last refusal), and `xds_resources` lists, by type, the dynamic route
/// configurations, endpoints and secrets — which have no entry of their own in the config
/// (routes are in their listeners, endpoints in their clusters' hosts, secrets inline PEM,
/// redacted) — with the same, and `refused` the resources of any type whose every version was
/// refused (`type`, `name`, `error_state`). Without xDS the dump is left as it is (a config that loads).
pub fn annotate_config_dump(dump: &mut Value) {
    let guard = STATUS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(types) = guard.as_ref() else {
        return;
    };
    let of = |kind: ResourceType| {
        &types[ResourceType::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0)]
    };
    for (key, kind) in [
        ("listeners", ResourceType::Listener),
        ("clusters", ResourceType::Cluster),
    ] {
        let t = of(kind);
        if let Some(entries) = dump.get_mut(key).and_then(Value::as_array_mut) {
            for entry in entries {
                let name = entry.get("name").and_then(Value::as_str).unwrap_or("");
                let status = resource_status(t, name);
                entry["xds_status"] = status;
            }
        }
    }
    let mut others = serde_json::Map::new();
    for (label, kind) in [
        ("route", ResourceType::Route),
        ("endpoints", ResourceType::Endpoints),
        ("secret", ResourceType::Secret),
    ] {
        let t = of(kind);
        let list: Vec<Value> = t
            .serving
            .keys()
            .map(|name| {
                let mut v = resource_status(t, name);
                v["name"] = Value::String(name.clone());
                v
            })
            .collect();
        others.insert(label.to_owned(), Value::Array(list));
    }
    // Resources whose every version was refused have no entry anywhere else (Envoy lists such
    // a listener among its dynamic ones with an `error_state` alone).
    let mut refused = Vec::new();
    for (i, t) in types.iter().enumerate() {
        for (name, n) in &t.refused_unserved {
            refused.push(serde_json::json!({
                "type": TYPE_LABELS[i],
                "name": name,
                "error_state": error_state(n),
            }));
        }
    }
    others.insert("refused".to_owned(), Value::Array(refused));
    let from_sources = crate::xds_sds::config_dump_entries();
    if !from_sources.is_empty() {
        others.insert("source_secret".to_owned(), Value::Array(from_sources));
    }
    dump["xds_resources"] = Value::Object(others);
    // Envoy's `dynamic_warming_clusters` (and listeners'): what was received and waits.
    let mut warming = serde_json::Map::new();
    for (label, kind) in [
        ("cluster", ResourceType::Cluster),
        ("listener", ResourceType::Listener),
        ("route", ResourceType::Route),
    ] {
        warming.insert(label.to_owned(), serde_json::json!(of(kind).warming));
    }
    dump["xds_warming"] = Value::Object(warming);
}

/// What [`NackStatus`] keeps of an `error_detail`: all of it up to [`NACK_ERROR_KEPT`] bytes,
/// else that much (cut at a character boundary) and how many bytes more were sent.
pub(crate) fn kept_error(message: &str) -> String {
    if message.len() <= NACK_ERROR_KEPT {
        return message.to_owned();
    }
    let mut end = NACK_ERROR_KEPT;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} bytes more in the NACK sent)",
        &message[..end],
        message.len() - end
    )
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `type` label of each element of [`ACKED`], [`NACKED`] and [`UNSOLICITED`].
pub const TYPE_LABELS: [&str; TYPES] = ["cluster", "endpoints", "listener", "route", "secret"];

/// A config assembled from xDS for the server loop to apply; `reply` says how it went.
pub struct Update {
    /// The config (the file's static part and the dynamic resources).
    pub config: Box<Config>,
    /// `Ok(summary)` once every worker switched, `Err(why)` when nothing changed.
    pub reply: ReloadRequest,
}

/// What the client needs from the file: the management server's address, the timeout, the
/// node, and the file's tree (the static part of every config).
pub struct Bootstrap {
    server: SocketAddr,
    mode: XdsMode,
    /// The config's `upstream_mark`, set on the connection's socket.
    mark: Option<u32>,
    connect_timeout: Duration,
    /// The xDS cluster's `http2` keepalive: PINGs on the channel, so that a connection gone
    /// silent (a partition, a server host that vanished) is noticed and the client reconnects.
    keepalive: Option<sluice_core::config::Http2Keepalive>,
    initial_fetch_timeout: Duration,
    node: Node,
    tree: Value,
    /// The xDS cluster's `tls` (`None`: cleartext) and where it is in the file.
    tls: Option<Arc<XdsTls>>,
    /// The SDS sources of `xds.sds_sources`.
    sds_sources: Vec<crate::xds_sds::SourceSpec>,
}

/// TLS to the management server: the xDS cluster's `tls`, turned into a rustls client config
/// by [`crate::tls::client_config`] (the upstream connectors' one builder) on every connection
/// attempt, so that its files (CA, client certificate and key) are read afresh at each
/// (re)connect: a rotated file is used from the next connection on.
#[derive(Debug)]
struct XdsTls {
    tls: sluice_core::config::tls::UpstreamTls,
    /// `clusters[i].tls`, for messages.
    path: String,
}

/// The bootstrap of a config with `xds` (`None` without); the file is read again for its
/// tree.
pub fn bootstrap(config: &Config, path: Option<&Path>) -> io::Result<Option<Bootstrap>> {
    if config.xds.is_none() {
        return Ok(None);
    }
    let path = path.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "xds: needs the config from a file (-c PATH), not from stdin",
        )
    })?;
    let text = crate::config_file::read_config_file(path).map_err(io::Error::other)?;
    let tree: Value = serde_saphyr::from_str(&text)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    Bootstrap::new(config, tree).map(Some)
}

impl Bootstrap {
    /// The bootstrap of `config` (which has `xds`), whose file parsed as `tree`; what
    /// [`bootstrap`] builds once it has read the file. The simulator builds its own.
    pub fn new(config: &Config, tree: Value) -> io::Result<Bootstrap> {
        let Some(xds) = &config.xds else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "xds: the config has no `xds`",
            ));
        };
        let cluster = &config.clusters[xds.cluster_index];
        let server = cluster.hosts.first().map(|h| h.address).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "xds: the cluster has no host")
        })?;
        let node = config.node.as_ref().map_or_else(Node::default, |n| Node {
            id: n.id.clone(),
            cluster: n.cluster.clone(),
            metadata: n.metadata.as_ref().and_then(|m| match to_pb(m).kind {
                Some(Kind::StructValue(s)) => Some(s),
                _ => None,
            }),
            locality: n.locality.as_ref().map(|l| Locality {
                region: l.region.clone(),
                zone: l.zone.clone(),
                sub_zone: l.sub_zone.clone(),
            }),
            user_agent_name: "sluice".to_owned(),
            ..Default::default()
        });
        let tls = cluster.tls.as_ref().map(|t| {
            Arc::new(XdsTls {
                tls: (**t).clone(),
                path: format!("clusters[{}].tls", xds.cluster_index),
            })
        });
        let mut sds_sources = Vec::with_capacity(xds.sds_sources.len());
        for source in &xds.sds_sources {
            let target = match &source.target {
                SdsTarget::Path(path) => crate::xds_sds::SourceTarget::Unix(path.into()),
                SdsTarget::Cluster { name, index } => {
                    let c = &config.clusters[*index];
                    let server = c.hosts.first().map(|h| h.address).ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("xds: the SDS source's cluster {name:?} has no host"),
                        )
                    })?;
                    let tls = c.tls.as_ref().map(|t| {
                        Arc::new(XdsTls {
                            tls: (**t).clone(),
                            path: format!("clusters[{index}].tls"),
                        })
                    });
                    let scheme = if tls.is_some() { "https" } else { "http" };
                    crate::xds_sds::SourceTarget::Cluster {
                        name: name.clone(),
                        uri: format!("{scheme}://{server}"),
                        connector: XdsConnector {
                            server,
                            mark: config.upstream_mark,
                            connect_timeout: c.connect_timeout,
                            tls,
                        },
                    }
                }
            };
            sds_sources.push(crate::xds_sds::SourceSpec {
                name: source.name.clone(),
                target,
            });
        }
        Ok(Bootstrap {
            tls,
            sds_sources,
            server,
            mode: xds.mode,
            mark: config.upstream_mark,
            connect_timeout: cluster.connect_timeout,
            keepalive: cluster.http2_keepalive,
            initial_fetch_timeout: xds.initial_fetch_timeout,
            node,
            tree,
        })
    }

    /// The management server's address (the first host of the `xds.cluster`).
    #[must_use]
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The URI of the management server: `https://` with TLS (the `:scheme` of the gRPC
    /// requests), `http://` without.
    fn uri(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.server)
    }

    /// The connector of the channel to the management server.
    fn connector(&self) -> XdsConnector {
        XdsConnector {
            server: self.server,
            mark: self.mark,
            connect_timeout: self.connect_timeout,
            tls: self.tls.clone(),
        }
    }
}

/// Idle time before the first TCP keepalive probe on the connection to the management server.
const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Time between TCP keepalive probes.
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes that end the connection (with the idle time: about a minute).
const TCP_KEEPALIVE_PROBES: u32 = 3;

/// Opens the connection to the management server, from a socket marked with the config's
/// `upstream_mark` (`SO_MARK`) when it has one, then, when the xDS cluster has `tls`, a
/// verified TLS handshake offering ALPN `h2` alone — both within the xDS cluster's
/// `connect_timeout`. tonic's channel calls it for each (re)connection; the URI it passes is
/// ignored: the address is the xDS cluster's host.
///
/// A failed handshake is a failed connect (the client backs off and tries again; the config
/// serving stays), its error saying what failed: `unknown_ca`, `bad_san`, `timeout`… (the
/// labels of [`crate::tls::HandshakeOutcome`]) and rustls' reason.
#[derive(Clone, Debug)]
pub struct XdsConnector {
    server: SocketAddr,
    mark: Option<u32>,
    connect_timeout: Duration,
    tls: Option<Arc<XdsTls>>,
}

/// The connection to the management server: TCP, or TLS over it.
pub type XdsStream = crate::tls::MaybeTls<tokio::net::TcpStream>;

impl XdsConnector {
    /// A connection to the management server: TCP (marked when `upstream_mark` is set), then
    /// TLS when the xDS cluster has `tls`, both within `connect_timeout`.
    async fn connect(self) -> io::Result<XdsStream> {
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        // Built before dialling: a file that cannot be read fails the attempt, named.
        let tls = match &self.tls {
            Some(t) => Some(Self::client_config(t, self.server)?),
            None => None,
        };
        let attempt = async {
            match self.mark {
                Some(mark) => crate::transparent::connect_marked(self.server, mark).await,
                None => tokio::net::TcpStream::connect(self.server).await,
            }
        };
        let stream = connect_within(self.connect_timeout, attempt).await?;
        // gRPC messages are small and latency-bound (tonic's own connector does the same).
        stream.set_nodelay(true)?;
        // The ADS stream is long and often quiet: TCP keepalive notices a peer that vanished
        // without a reset within about a minute (the kernel's default waits two hours), with
        // no PING a server could call abuse (the cluster's `http2.keepalive` adds PINGs).
        socket2::SockRef::from(&stream).set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(TCP_KEEPALIVE_IDLE)
                .with_interval(TCP_KEEPALIVE_INTERVAL)
                .with_retries(TCP_KEEPALIVE_PROBES),
        )?;
        let Some((connector, name)) = tls else {
            return Ok(crate::tls::MaybeTls::Plain(stream));
        };
        let server = self.server;
        match tokio::time::timeout_at(deadline, connector.connect(name, stream)).await {
            Ok(Ok(tls)) => Ok(crate::tls::MaybeTls::Tls(Box::new(tls))),
            Ok(Err(e)) => Err(io::Error::new(
                e.kind(),
                format!(
                    "TLS handshake with the management server {server} failed ({}): {e}",
                    crate::tls::HandshakeOutcome::of_error(&e).as_str()
                ),
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "TLS handshake with the management server {server} failed (timeout): not \
                     done within the connect timeout ({:?})",
                    self.connect_timeout
                ),
            )),
        }
    }

    /// The TLS connector and the name to verify: the xDS cluster's `tls` through the one
    /// client config builder, offering `h2` alone (gRPC; the config refuses an `alpn` without
    /// it), and its `sni` or, without one, the host's address (which rustls sends no SNI for;
    /// `verify_subject_alt_names` decides), as an upstream cluster's connections do.
    fn client_config(
        t: &XdsTls,
        server: SocketAddr,
    ) -> io::Result<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )> {
        let (mut config, sni) = crate::tls::client_config(&t.tls, &t.path).map_err(|errors| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "TLS to the management server: {}",
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            )
        })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok((
            tokio_rustls::TlsConnector::from(Arc::new(config)),
            sni.unwrap_or_else(|| rustls::pki_types::ServerName::IpAddress(server.ip().into())),
        ))
    }
}

/// A connect attempt bounded by the xDS cluster's `connect_timeout` (both connectors).
async fn connect_within<S>(
    timeout: Duration,
    attempt: impl std::future::Future<Output = io::Result<S>>,
) -> io::Result<S> {
    tokio::time::timeout(timeout, attempt).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection within {timeout:?}"),
        )
    })?
}

/// Makes a connector the tower service tonic's `connect_with_connector` takes: each call opens
/// a new connection with the connector's own `async fn connect(self) -> io::Result<Stream>`
/// (on a clone), ignoring the URI tonic passes — a connector knows where it dials. Always
/// ready: a connector holds no connection to wait for.
macro_rules! connector_service {
    ($connector:ty, $stream:ty) => {
        impl tower_service::Service<http::Uri> for $connector {
            type Response = hyper_util::rt::TokioIo<$stream>;
            type Error = io::Error;
            type Future = std::pin::Pin<
                Box<dyn std::future::Future<Output = io::Result<Self::Response>> + Send + 'static>,
            >;

            fn poll_ready(
                &mut self,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Result<(), Self::Error>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn call(&mut self, _uri: http::Uri) -> Self::Future {
                let connect = self.clone().connect();
                Box::pin(async move { connect.await.map(hyper_util::rt::TokioIo::new) })
            }
        }
    };
}
pub(crate) use connector_service;

connector_service!(XdsConnector, XdsStream);

/// The simulator's connector: the connection to the management server over turmoil's
/// network (`turmoil::net::TcpStream`), within the xDS cluster's `connect_timeout`; the seam
/// that lets [`run`] drive the real client in `sluice-sim`. The URI tonic passes is ignored,
/// as [`XdsConnector`] does. It speaks no TLS: a simulated bootstrap whose xDS cluster has
/// `tls` is refused by [`TurmoilXdsConnector::new`]'s debug assertion.
#[cfg(feature = "turmoil")]
#[derive(Clone, Debug)]
pub struct TurmoilXdsConnector {
    server: SocketAddr,
    connect_timeout: Duration,
}

#[cfg(feature = "turmoil")]
impl TurmoilXdsConnector {
    /// The connector to `bootstrap`'s management server.
    #[must_use]
    pub fn new(bootstrap: &Bootstrap) -> Self {
        debug_assert!(
            bootstrap.tls.is_none(),
            "the simulator's connector speaks no TLS to the management server"
        );
        Self {
            server: bootstrap.server,
            connect_timeout: bootstrap.connect_timeout,
        }
    }

    /// A connection over turmoil's network, within `connect_timeout`.
    async fn connect(self) -> io::Result<turmoil::net::TcpStream> {
        connect_within(
            self.connect_timeout,
            turmoil::net::TcpStream::connect(self.server),
        )
        .await
    }
}

#[cfg(feature = "turmoil")]
connector_service!(TurmoilXdsConnector, turmoil::net::TcpStream);

/// A JSON value as a protobuf `Value` (the node's metadata is a `Struct`).
fn to_pb(v: &Value) -> PbValue {
    let kind = match v {
        Value::Null => Kind::NullValue(NullValue::NullValue as i32),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(to_pb).collect(),
        }),
        Value::Object(o) => Kind::StructValue(Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), to_pb(v))).collect(),
        }),
    };
    PbValue { kind: Some(kind) }
}

/// A file reload cannot start, stop or change xDS.
pub fn check_file_reload(current: &Config, next: &Config) -> Result<(), String> {
    if current.xds.is_some() || next.xds.is_some() {
        return Err(
            "xds: this config comes from an xDS management server; changing the \
                    bootstrap file needs a restart"
                .to_owned(),
        );
    }
    Ok(())
}

/// Starts the client thread.
pub fn spawn_client(
    bootstrap: Bootstrap,
    updates: tokio::sync::mpsc::UnboundedSender<Update>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("xds".to_owned())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!(error = %e, "xds: cannot start the client's runtime");
                    return;
                }
            };
            let jitter = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
            let connector = bootstrap.connector();
            rt.block_on(run(bootstrap, updates, connector, jitter));
        })
        .map(|_| ())
}

pub(crate) const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A stream ended for a resync resets the backoff only if it lasted this long.
pub(crate) const RESYNC_RESET_AFTER: Duration = BACKOFF_MAX;

/// The bound of the wait before the next stream (the wait is jittered below it), and the
/// bound after that: doubling from 250 ms to 30 s, back to the bottom after a stream that
/// delivered a response — unless it ended for a resync before [`RESYNC_RESET_AFTER`]: a
/// resource the server keeps sending and the proxy keeps refusing is then retried ever more
/// slowly (at most every 30 s), never in a loop, while the first NACK after a long healthy
/// stream resyncs at once.
pub(crate) fn next_backoff(
    backoff: &mut Duration,
    got_response: bool,
    resync: Option<Duration>,
) -> Duration {
    let short_resync = resync.is_some_and(|lasted| lasted < RESYNC_RESET_AFTER);
    if got_response && !short_resync {
        *backoff = BACKOFF_BASE;
    }
    let bound = *backoff;
    *backoff = (bound * 2).min(BACKOFF_MAX);
    bound
}

/// A small xorshift for the backoff's jitter (no cryptographic need).
pub(crate) struct Jitter(pub(crate) u64);

impl Jitter {
    pub(crate) fn below(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(self.0 % ms)
    }
}

/// The client loop state shared across streams: the machine, the apply in flight, the timer.
struct Client {
    ads: Ads,
    updates: tokio::sync::mpsc::UnboundedSender<Update>,
    applying: Option<(u64, tokio::sync::oneshot::Receiver<Result<String, String>>)>,
    /// The ignored fields by type of the config being applied ([`IGNORED`] once it is).
    applying_ignored: [u64; TYPES],
    /// The warming timers armed (deadline, id), in the order armed — which, all being of the
    /// same duration, is the order they expire in. Only those still guarding a missing
    /// resource ([`Ads::warming_timer_pending`]): one whose resources arrived is dropped after
    /// each input, so a config that churns keeps no stale timer for the initial fetch timeout.
    timers: VecDeque<(tokio::time::Instant, u64)>,
    initial_fetch_timeout: Duration,
    /// Delta: the machine asked to end this stream and open a new one ([`Output::Resync`]).
    resync: bool,
    /// Each SDS source's control channel (its names and the verdicts on its secrets).
    sources: BTreeMap<String, tokio::sync::mpsc::UnboundedSender<sluice_xds::sds::Input>>,
    /// The SDS sources' secrets ([`Input::SourceSecrets`]).
    from_sources: tokio::sync::mpsc::UnboundedReceiver<Input>,
}

impl Client {
    /// Drains the machine's outputs: requests go to `stream` (when connected).
    fn drain(&mut self, stream: Option<&Tx>) {
        while let Some(out) = self.ads.poll_output() {
            match out {
                Output::Send(req, what) => {
                    self.count(
                        &req.type_url,
                        &req.response_nonce,
                        req.error_detail.as_ref(),
                        what,
                    );
                    if let Some(Tx::Sotw(s)) = stream {
                        let _ = s.send(*req);
                    }
                }
                Output::SendDelta(req, what) => {
                    self.count(
                        &req.type_url,
                        &req.response_nonce,
                        req.error_detail.as_ref(),
                        what,
                    );
                    if let Some(Tx::Delta(s)) = stream {
                        let _ = s.send(*req);
                    }
                }
                Output::Apply { id, config, notes } => {
                    for n in &notes.ignored {
                        debug!("xds: ignored (telemetry only, or an optional filter): {n}");
                    }
                    for n in &notes.merged {
                        debug!("xds: merged: {n}");
                    }
                    let (reply, answer) = tokio::sync::oneshot::channel();
                    if self.updates.send(Update { config, reply }).is_ok() {
                        self.applying = Some((id, answer));
                        self.applying_ignored = notes.ignored_by_type;
                    }
                }
                Output::Resync => {
                    if stream.is_some() {
                        RESYNCS.fetch_add(1, Ordering::Relaxed);
                        self.resync = true;
                    }
                }
                Output::ArmWarmingTimer(id) => {
                    self.timers
                        .push_back((tokio::time::Instant::now() + self.initial_fetch_timeout, id));
                }
                Output::SourceNames { source, names } => {
                    if let Some(s) = self.sources.get(&source) {
                        let _ = s.send(sluice_xds::sds::Input::Names(names));
                    }
                }
                Output::SourceVerdict {
                    source,
                    nonce,
                    error,
                } => {
                    if let Some(s) = self.sources.get(&source) {
                        let _ = s.send(sluice_xds::sds::Input::Verdict { nonce, error });
                    }
                }
                Output::Refused { kind, nonce, names } => {
                    let Some(i) = ResourceType::ALL.iter().position(|k| *k == kind) else {
                        continue;
                    };
                    self.record(i, |t| {
                        // The NACK just sent (one shared status, however many it refused),
                        // on the resources serving, or else in the list of those refused
                        // that never served.
                        let Some(nack) = t.last_nack.clone().filter(|n| n.nonce == nonce) else {
                            return;
                        };
                        for name in names {
                            if t.serving.contains_key(&name) {
                                t.refused.insert(name, Arc::clone(&nack));
                            } else if t.refused_unserved.len() < REFUSED_UNSERVED_KEPT
                                || t.refused_unserved.contains_key(&name)
                            {
                                t.refused_unserved.insert(name, Arc::clone(&nack));
                            }
                        }
                    });
                }
            }
        }
    }

    /// Counts a request about to be sent, as the machine says what it is: a NACK, an ACK (a
    /// subscription change is neither, though in state of the world it repeats the last
    /// nonce), and records it in [`STATUS`].
    fn count(
        &mut self,
        type_url: &str,
        nonce: &str,
        error: Option<&envoy_types::pb::google::rpc::Status>,
        what: Answer,
    ) {
        let Some(kind) = ResourceType::ALL
            .iter()
            .position(|t| t.type_url() == type_url)
        else {
            return;
        };
        if what == Answer::Nack {
            let message = error.map_or("", |e| e.message.as_str());
            NACKED[kind].fetch_add(1, Ordering::Relaxed);
            let nack = Arc::new(NackStatus {
                nonce: nonce.to_owned(),
                error: kept_error(message),
                at: unix_now(),
            });
            warn!(type_url, nonce, error = %nack.error, "xds: NACK");
            // The resources it refused follow ([`Output::Refused`]).
            self.record(kind, |t| t.last_nack = Some(nack));
        } else if what == Answer::Ack {
            ACKED[kind].fetch_add(1, Ordering::Relaxed);
            let now = unix_now();
            UPDATED_AT[kind].store(now, Ordering::Relaxed);
            let version = self
                .ads
                .accepted_version(ResourceType::ALL[kind])
                .to_owned();
            // State of the world, listeners and clusters: each response is the whole set, so
            // one accepted has none of those refused before that did not serve.
            let whole_set_accepted =
                self.ads.mode() == XdsMode::Sotw && ResourceType::ALL[kind].is_full_state();
            self.record(kind, |t| {
                t.version = version;
                t.updated_at = Some(now);
                if whole_set_accepted {
                    t.refused_unserved.clear();
                }
            });
            // What serves may have changed for other types too (a cluster removed takes its
            // endpoints along).
            self.record_serving();
        }
    }

    /// Records the names (and, in delta, versions) of the resources serving, for every type,
    /// and per resource the version it serves under and since when: a resource whose version
    /// changed was updated now (and its refusal, if any, is over).
    fn record_serving(&self) {
        let delta = self.ads.mode() == XdsMode::Delta;
        let now = unix_now();
        let mut guard = STATUS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let types = guard.get_or_insert_with(Default::default);
        for (i, kind) in ResourceType::ALL.into_iter().enumerate() {
            let t = &mut types[i];
            t.resources = self.ads.applied().names(kind);
            t.warming = self
                .ads
                .warming()
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, n)| n.clone())
                .collect();
            WARMING[i].store(t.warming.len() as u64, Ordering::Relaxed);
            // The version each serves under: an update still warming is not the one serving.
            let versions = self.ads.serving_versions(kind);
            t.resource_versions = delta.then(|| versions.clone());
            let type_version = self.ads.accepted_version(kind);
            let mut serving = BTreeMap::new();
            for name in &t.resources {
                // Delta: each resource's own version; state of the world: that of the last
                // response that carried it (endpoints, routes, secrets: a response may carry
                // some only), or the type's (clusters, listeners: each response carries all)
                // when it served; a placeholder for what never came: the type's.
                let version = versions.get(name).map_or(type_version, String::as_str);
                t.refused_unserved.remove(name);
                let entry = match t.serving.remove(name) {
                    Some((v, at)) if v == version => (v, at),
                    _ => {
                        t.refused.remove(name);
                        (version.to_owned(), now)
                    }
                };
                serving.insert(name.clone(), entry);
            }
            t.serving = serving;
            t.refused.retain(|name, _| t.serving.contains_key(name));
        }
    }

    /// Waits for the apply in flight or the warming timer, and feeds the outcome.
    async fn next_event(&mut self) -> Input {
        let from_sources = &mut self.from_sources;
        let sources = async {
            match from_sources.recv().await {
                Some(input) => input,
                // No source (or every one gone): nothing comes from there.
                None => std::future::pending().await,
            }
        };
        let applying = async {
            match self.applying.as_mut() {
                Some((id, rx)) => {
                    let id = *id;
                    match rx.await {
                        Ok(Ok(_)) => Input::Applied(id),
                        Ok(Err(why)) => Input::ApplyFailed(id, why),
                        Err(_) => Input::ApplyFailed(id, "the server loop stopped".to_owned()),
                    }
                }
                None => std::future::pending().await,
            }
        };
        let timer = async {
            match self.timers.front().copied() {
                Some((at, id)) => {
                    tokio::time::sleep_until(at).await;
                    Input::WarmingTimeout(id)
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            i = applying => i,
            i = timer => i,
            i = sources => i,
        }
    }

    /// Updates type `kind`'s entry of [`STATUS`].
    fn record(&self, kind: usize, update: impl FnOnce(&mut TypeStatus)) {
        let mut guard = STATUS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        update(&mut guard.get_or_insert_with(Default::default)[kind]);
    }

    fn feed(&mut self, input: Input) {
        match &input {
            Input::Applied(_) => {
                self.applying = None;
                for (gauge, n) in IGNORED.iter().zip(self.applying_ignored) {
                    gauge.store(n, Ordering::Relaxed);
                }
            }
            Input::ApplyFailed(..) => self.applying = None,
            Input::WarmingTimeout(id) => self.timers.retain(|(_, t)| t != id),
            _ => {}
        }
        let type_url = match &input {
            Input::Response(r) => Some(r.type_url.clone()),
            Input::DeltaResponse(r) => Some(r.type_url.clone()),
            _ => None,
        };
        let settles = matches!(input, Input::Applied(_) | Input::WarmingTimeout(_));
        let unsolicited = self.ads.unsolicited();
        let timeouts = self.ads.warming_timeouts();
        self.ads.handle_input(input);
        let ads = &self.ads;
        self.timers.retain(|&(_, id)| ads.warming_timer_pending(id));
        for ((counter, after), before) in WARMING_TIMEOUTS
            .iter()
            .zip(self.ads.warming_timeouts())
            .zip(timeouts)
        {
            counter.fetch_add(after - before, Ordering::Relaxed);
        }
        if settles {
            // What serves and what warms may change without an ACK (an apply after a warming
            // timeout carries no response).
            self.record_serving();
        }
        let ignored = self.ads.unsolicited() - unsolicited;
        if let Some(type_url) = type_url
            && ignored > 0
        {
            // Only a response of a known type drops anything (the machine ignores others).
            if let Some(kind) = ResourceType::ALL
                .iter()
                .position(|t| t.type_url() == type_url)
            {
                UNSOLICITED[kind].fetch_add(ignored, Ordering::Relaxed);
            }
            debug!(
                type_url,
                ignored, "xds: ignored resources not subscribed to"
            );
        }
    }
}

/// The sending half of the stream's requests, of the protocol spoken.
enum Tx {
    Sotw(tokio::sync::mpsc::UnboundedSender<DiscoveryRequest>),
    Delta(tokio::sync::mpsc::UnboundedSender<DeltaDiscoveryRequest>),
}

/// The client loop: streams to the management server one after another, with the backoff in
/// between, until `updates` closes. `connector` opens each connection (the binary's is
/// [`XdsConnector`]; the simulator's, `TurmoilXdsConnector`, goes over turmoil's network);
/// `jitter_seed` seeds the backoff's jitter (the binary's is the clock, the simulator's comes
/// from the seed, so that a run replays). [`spawn_client`] runs it on its own thread; the
/// simulator runs it as a task of the sidecar host.
pub async fn run<C>(
    b: Bootstrap,
    updates: tokio::sync::mpsc::UnboundedSender<Update>,
    connector: C,
    jitter_seed: u64,
) where
    C: tower_service::Service<http::Uri, Error = io::Error> + Clone + Send + 'static,
    C::Future: Send,
    C::Response: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    *STATUS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Default::default());
    DELTA.store(b.mode == XdsMode::Delta, Ordering::Relaxed);
    let (to_ads, from_sources) = tokio::sync::mpsc::unbounded_channel();
    let sources = crate::xds_sds::spawn_sources(&b.sds_sources, &b.node, &to_ads, jitter_seed);
    // The sources' tasks hold the only senders: they end when the client is gone.
    drop(to_ads);
    let mut client = Client {
        sources,
        from_sources,
        ads: Ads::with_mode(b.mode, b.node.clone(), b.tree.clone()),
        updates,
        applying: None,
        applying_ignored: [0; TYPES],
        timers: VecDeque::new(),
        initial_fetch_timeout: b.initial_fetch_timeout,
        resync: false,
    };
    let mut jitter = Jitter(jitter_seed | 1);
    let mut backoff = BACKOFF_BASE;
    let uri = b.uri();
    loop {
        if client.updates.is_closed() {
            return;
        }
        let started = tokio::time::Instant::now();
        let got_response =
            stream_once(&mut client, &uri, b.mode, b.keepalive, connector.clone()).await;
        CONNECTED.store(0, Ordering::Relaxed);
        client.feed(Input::Disconnected);
        client.drain(None);
        // A resync: how long the stream lasted.
        let resync = std::mem::take(&mut client.resync).then(|| started.elapsed());
        let wait = jitter.below(next_backoff(&mut backoff, got_response, resync));
        let until = tokio::time::Instant::now() + wait;
        // Applies and warming go on while disconnected.
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => break,
                input = client.next_event() => {
                    client.feed(input);
                    client.drain(None);
                }
            }
        }
    }
}

/// An error and its sources, `: `-joined (tonic's transport error says only "transport
/// error"; what failed — a refused connection, a TLS handshake and why — is in its sources).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// One ADS stream, until it ends; whether it delivered a response.
async fn stream_once<C>(
    client: &mut Client,
    uri: &str,
    mode: XdsMode,
    keepalive: Option<sluice_core::config::Http2Keepalive>,
    connector: C,
) -> bool
where
    C: tower_service::Service<http::Uri, Error = io::Error> + Send + 'static,
    C::Future: Send,
    C::Response: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let endpoint = match tonic::transport::Endpoint::from_shared(uri.to_owned()) {
        // The connector bounds the connect (TCP and TLS) by `connect_timeout` itself, so that
        // its error says which part timed out (tonic's own timeout would say neither).
        Ok(e) => {
            match keepalive {
                // PINGs while the stream is open (it always is): a silent connection ends
                // after `timeout` without an answer.
                Some(k) => e
                    .http2_keep_alive_interval(k.interval)
                    .keep_alive_timeout(k.timeout)
                    .keep_alive_while_idle(true),
                None => e,
            }
        }
        Err(e) => {
            warn!(error = %e, "xds: bad server address");
            return false;
        }
    };
    let channel = match endpoint.connect_with_connector(connector).await {
        Ok(c) => c,
        Err(e) => {
            let error = error_chain(&e);
            warn!(server = uri, %error, "xds: cannot connect to the management server");
            *LAST_CONNECT_ERROR
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((error, unix_now()));
            return false;
        }
    };
    let mut ads = AggregatedDiscoveryServiceClient::new(channel);
    match mode {
        XdsMode::Sotw => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let tx = Tx::Sotw(tx);
            client.feed(Input::Connected);
            client.drain(Some(&tx));
            let opened = ads
                .stream_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(
                    rx,
                ))
                .await;
            pump(client, uri, opened, tx, Input::Response).await
        }
        XdsMode::Delta => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let tx = Tx::Delta(tx);
            client.feed(Input::Connected);
            client.drain(Some(&tx));
            let opened = ads
                .delta_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(
                    rx,
                ))
                .await;
            pump(client, uri, opened, tx, Input::DeltaResponse).await
        }
    }
}

/// How long a stream ended for a resync waits for the server to close it (after the NACK and
/// the end of the requests), so that the NACK is read before the stream goes.
const RESYNC_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Feeds the responses of an opened stream to the machine until the stream ends, or the
/// machine asks for a resync; whether it delivered a response.
async fn pump<M>(
    client: &mut Client,
    uri: &str,
    opened: Result<tonic::Response<tonic::Streaming<M>>, tonic::Status>,
    tx: Tx,
    input: fn(M) -> Input,
) -> bool {
    let mut inbound = match opened {
        Ok(r) => r.into_inner(),
        Err(e) => {
            warn!(server = uri, error = %e, "xds: the ADS stream was refused");
            return false;
        }
    };
    info!(server = uri, "xds: connected");
    CONNECTED.store(1, Ordering::Relaxed);
    // Connected: a failure before this one is over (the log keeps it).
    *LAST_CONNECT_ERROR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    let mut got = false;
    loop {
        tokio::select! {
            m = inbound.message() => match m {
                Ok(Some(response)) => {
                    got = true;
                    client.feed(input(response));
                    client.drain(Some(&tx));
                }
                Ok(None) => {
                    warn!(server = uri, "xds: the management server closed the stream");
                    return got;
                }
                Err(e) => {
                    warn!(server = uri, error = %e, "xds: the stream failed");
                    return got;
                }
            },
            event = client.next_event() => {
                client.feed(event);
                client.drain(Some(&tx));
            }
        }
        if client.resync {
            info!(
                server = uri,
                "xds: resynchronising after a NACK (a new stream after the backoff)"
            );
            // End the requests (the NACK goes first), then let the server end the stream;
            // what it sends meanwhile is not read: the new stream gets it again.
            drop(tx);
            let _ = tokio::time::timeout(RESYNC_CLOSE_GRACE, async {
                while let Ok(Some(_)) = inbound.message().await {}
            })
            .await;
            return got;
        }
    }
}

/// Held by each test that drives a [`Client`] for its whole run: [`STATUS`] is process-wide,
/// and a plain `cargo test` runs tests as threads of one process (nextest gives each its own).
#[cfg(test)]
static STATUS_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;
    use tower_service::Service as _;

    /// Short streams each ended by a resync (each delivered a response: the refused one)
    /// back off like failed connections, up to 30 s; a stream that ended otherwise after a
    /// response, or a resync after a long stream, starts again from the bottom.
    #[test]
    fn resyncs_back_off_and_never_loop() {
        let short = Some(Duration::from_millis(20));
        let mut backoff = BACKOFF_BASE;
        let bounds: Vec<u64> = (0..10)
            .map(|_| u64::try_from(next_backoff(&mut backoff, true, short).as_millis()).unwrap())
            .collect();
        assert_eq!(
            bounds,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(next_backoff(&mut backoff, true, None), BACKOFF_BASE);
        assert_eq!(next_backoff(&mut backoff, false, None), BACKOFF_BASE * 2);
        assert_eq!(next_backoff(&mut backoff, true, short), BACKOFF_BASE * 4);
        let long = Some(Duration::from_secs(3600));
        assert_eq!(next_backoff(&mut backoff, true, long), BACKOFF_BASE);
    }

    /// Resources a response carries that nothing subscribed to are dropped and counted by type
    /// in `sluice_xds_unsolicited_resources_total`, as `/metrics` shows it: a delta EDS
    /// response with the subscribed assignment, one nothing needs and a removal of a name never
    /// subscribed to counts 2 endpoints; a delta RDS response before any route name is needed
    /// counts 1 route; a state-of-the-world EDS response with one assignment too many counts
    /// 1 more endpoints. The full-state types (clusters, listeners) are never unsolicited.
    #[test]
    fn unsolicited_resources_are_counted_by_type_on_the_metrics_page() {
        use envoy_types::pb::envoy::service::discovery::v3::{
            DeltaDiscoveryResponse, DiscoveryResponse, Resource,
        };
        use sluice_xds::fixtures::{any, assignment, eds_cluster, route_config};

        let _serial = super::STATUS_TESTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let client = |mode| {
            let (updates, _) = tokio::sync::mpsc::unbounded_channel();
            let mut c = Client {
                // A bootstrap as a user's (with `xds`, so that a config of clusters only, as
                // warming per resource makes, is valid).
                ads: Ads::with_mode(
                    mode,
                    Node::default(),
                    serde_json::json!({
                        "node": { "id": "n", "cluster": "c" },
                        "xds": { "cluster": "xds_server" },
                        "listeners": [],
                        "clusters": [{ "name": "xds_server", "hosts": [{ "address": "127.0.0.1:18000" }] }],
                    }),
                ),
                updates,
                applying: None,
                applying_ignored: [0; TYPES],
                timers: VecDeque::new(),
                sources: BTreeMap::new(),
                from_sources: tokio::sync::mpsc::unbounded_channel().1,
                initial_fetch_timeout: Duration::from_secs(15),
                resync: false,
            };
            c.feed(Input::Connected);
            c.drain(None);
            c
        };
        let resource = |name: &str, body| Resource {
            name: name.to_owned(),
            version: "1".to_owned(),
            resource: Some(body),
            ..Default::default()
        };
        let delta = |kind: ResourceType, resources, removed: &[&str]| {
            Input::DeltaResponse(DeltaDiscoveryResponse {
                type_url: kind.type_url().to_owned(),
                resources,
                removed_resources: removed.iter().map(|n| (*n).to_owned()).collect(),
                nonce: "n".to_owned(),
                ..Default::default()
            })
        };
        let hosts = [("127.0.0.1", 8080, 0)];

        let mut c = client(XdsMode::Delta);
        // The cluster `api` subscribes to its endpoints (and only to them).
        c.feed(delta(
            ResourceType::Cluster,
            vec![resource("api", any(&eds_cluster("api")))],
            &[],
        ));
        c.drain(None);
        c.feed(delta(
            ResourceType::Endpoints,
            vec![
                resource("api", any(&assignment("api", &hosts))),
                resource("ghost", any(&assignment("ghost", &hosts))),
            ],
            &["phantom"],
        ));
        c.feed(delta(
            ResourceType::Route,
            vec![resource("stray", any(&route_config("stray", "api")))],
            &[],
        ));
        let mut c = client(XdsMode::Sotw);
        c.feed(Input::Response(DiscoveryResponse {
            version_info: "1".to_owned(),
            type_url: ResourceType::Cluster.type_url().to_owned(),
            resources: vec![any(&eds_cluster("api"))],
            nonce: "1".to_owned(),
            ..Default::default()
        }));
        c.drain(None);
        c.feed(Input::Response(DiscoveryResponse {
            version_info: "1".to_owned(),
            type_url: ResourceType::Endpoints.type_url().to_owned(),
            resources: vec![
                any(&assignment("api", &hosts)),
                any(&assignment("ghost", &hosts)),
            ],
            nonce: "2".to_owned(),
            ..Default::default()
        }));

        let config = std::sync::Arc::new(
            Config::from_yaml("listeners: [ { name: e, address: 127.0.0.1:1, echo: {} } ]")
                .unwrap(),
        );
        let stats = vec![std::sync::Arc::new(crate::stats::WorkerStats::new(&config))];
        let admin = crate::admin::AdminShared::new(config, stats, None);
        let text = crate::admin::prometheus(&admin, &crate::admin::scrape(&admin));
        let counted: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("sluice_xds_unsolicited_resources_total{"))
            .collect();
        assert_eq!(
            counted,
            [
                "sluice_xds_unsolicited_resources_total{type=\"cluster\"} 0",
                "sluice_xds_unsolicited_resources_total{type=\"endpoints\"} 3",
                "sluice_xds_unsolicited_resources_total{type=\"listener\"} 0",
                "sluice_xds_unsolicited_resources_total{type=\"route\"} 1",
                "sluice_xds_unsolicited_resources_total{type=\"secret\"} 0",
            ],
            "{text}"
        );
    }

    /// The TCP stream of a cleartext connection to the management server.
    fn tcp(io: &hyper_util::rt::TokioIo<XdsStream>) -> &tokio::net::TcpStream {
        match io.inner() {
            crate::tls::MaybeTls::Plain(s) => s,
            crate::tls::MaybeTls::Tls(_) => panic!("a cleartext connection"),
        }
    }

    /// The socket of the connection to the management server carries the config's
    /// `upstream_mark`, read back with `getsockopt(SO_MARK)`; without one it is unmarked.
    #[tokio::test]
    async fn the_management_server_connection_carries_the_upstream_mark() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!(
                "SKIPPED the_management_server_connection_carries_the_upstream_mark: setting \
                 SO_MARK needs CAP_NET_ADMIN (run as root)"
            );
            return;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        let config = Config::from_yaml(&format!(
            "upstream_mark: 1337\nlisteners: []\nxds: {{ cluster: xds }}\nclusters:\n  - {{ name: xds, hosts: \
             [ {{ address: \"{server}\" }} ] }}\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let dir = std::env::temp_dir().join(format!("sluice-xds-mark-{}", std::process::id()));
        std::fs::write(&dir, "{}").unwrap();
        let b = bootstrap(&config, Some(&dir)).unwrap().unwrap();
        let _ = std::fs::remove_file(&dir);
        let uri: http::Uri = format!("http://{server}").parse().unwrap();
        let io = b.connector().call(uri.clone()).await.unwrap();
        let (_accepted, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, tcp(&io).local_addr().unwrap());
        assert_eq!(socket2::SockRef::from(tcp(&io)).mark().unwrap(), 1337);
        let unmarked = XdsConnector {
            mark: None,
            ..b.connector()
        };
        let io = unmarked.clone().call(uri).await.unwrap();
        assert_eq!(socket2::SockRef::from(tcp(&io)).mark().unwrap(), 0);
    }

    /// With `tls` on the xDS cluster the connection is a verified TLS handshake offering `h2`:
    /// against a rustls server for `xds.example` (issued by CA `a`), a CA file holding CA `b`
    /// fails the connect naming `unknown_ca`; the same file rewritten with CA `a` is used at the
    /// next connect (the files are read at each attempt), which negotiates `h2`; an `sni` the
    /// certificate does not carry fails naming `bad_san`.
    #[tokio::test]
    async fn the_management_server_is_verified_over_tls_with_the_ca_file_read_at_each_connect() {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
        };
        let (a, b) = (ca("a"), ca("b"));
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["xds.example".to_owned()])
            .unwrap()
            .signed_by(&key, &a)
            .unwrap();
        let mut server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
        server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                if let Ok(tls) = acceptor.accept(stream).await {
                    held.push(tls);
                }
            }
        });
        let dir = std::env::temp_dir().join(format!("sluice-xds-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, b.pem()).unwrap();
        let connector = |sni: &str| {
            let config = Config::from_yaml(&format!(
                "listeners: []\nxds: {{ cluster: xds }}\nclusters:\n  - {{ name: xds, protocol: http2, \
                 tls: {{ ca: {}, sni: {sni} }}, hosts: [ {{ address: \"{server}\" }} ] }}\n",
                ca_file.display()
            ))
            .unwrap_or_else(|e| panic!("{e}"));
            let tree = dir.join("sluice.yaml");
            std::fs::write(&tree, "{}").unwrap();
            bootstrap(&config, Some(&tree))
                .unwrap()
                .unwrap()
                .connector()
        };
        let uri: http::Uri = format!("https://{server}").parse().unwrap();
        let c = connector("xds.example");
        let error = c.clone().call(uri.clone()).await.err().expect("refused");
        assert!(error.to_string().contains("(unknown_ca)"), "{error}");
        std::fs::write(&ca_file, a.pem()).unwrap();
        let io = c.clone().call(uri.clone()).await.expect("verified");
        let crate::tls::MaybeTls::Tls(tls) = io.inner() else {
            panic!("a TLS connection");
        };
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let error = connector("other.example")
            .call(uri)
            .await
            .err()
            .expect("refused");
        assert!(error.to_string().contains("(bad_san)"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The connection to the management server has TCP keepalive (a peer that vanished
    /// without a reset is noticed within about a minute), whatever the config; the xDS
    /// cluster's `http2.keepalive` reaches the bootstrap (PINGs on the channel).
    #[tokio::test]
    async fn the_management_server_connection_is_kept_alive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        let config = Config::from_yaml(&format!(
            "listeners: []\nxds: {{ cluster: xds }}\nclusters:\n  - {{ name: xds, protocol: http2, \
             http2: {{ connection_keepalive: {{ interval: 20s, timeout: 5s }} }}, hosts: \
             [ {{ address: \"{server}\" }} ] }}\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let dir = std::env::temp_dir().join(format!("sluice-xds-keepalive-{}", std::process::id()));
        std::fs::write(&dir, "{}").unwrap();
        let b = bootstrap(&config, Some(&dir)).unwrap().unwrap();
        let _ = std::fs::remove_file(&dir);
        let k = b.keepalive.expect("the cluster's keepalive");
        assert_eq!(
            (k.interval, k.timeout),
            (Duration::from_secs(20), Duration::from_secs(5))
        );
        let uri: http::Uri = format!("http://{server}").parse().unwrap();
        let io = b.connector().call(uri).await.unwrap();
        let sock = socket2::SockRef::from(tcp(&io));
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), TCP_KEEPALIVE_IDLE);
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            TCP_KEEPALIVE_INTERVAL
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), TCP_KEEPALIVE_PROBES);
    }
}

/// `/xds` and `/config_dump` status as the client records it from the machine's outputs.
#[cfg(test)]
mod status_tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use envoy_types::pb::google::protobuf::Any;
    use sluice_xds::fixtures::{
        any, assignment, eds_cluster, http_listener, route_config, static_cluster,
    };

    /// A state-of-the-world client with [`STATUS`] set, and the guard that keeps the other
    /// tests of this module out of [`STATUS`] until it is dropped. (The receiver of its
    /// updates is kept: a client whose server loop is gone applies nothing.)
    fn client() -> (
        Client,
        tokio::sync::mpsc::UnboundedReceiver<Update>,
        std::sync::MutexGuard<'static, ()>,
    ) {
        let serial = super::STATUS_TESTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (updates, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut c = Client {
            ads: Ads::with_mode(
                XdsMode::Sotw,
                Node::default(),
                serde_json::json!({"listeners": [{"name": "e", "address": "127.0.0.1:1", "echo": {}}]}),
            ),
            updates,
            applying: None,
            applying_ignored: [0; TYPES],
            timers: VecDeque::new(),
            sources: BTreeMap::new(),
            from_sources: tokio::sync::mpsc::unbounded_channel().1,
            initial_fetch_timeout: Duration::from_secs(15),
            resync: false,
        };
        *STATUS.lock().unwrap() = Some(Default::default());
        c.feed(Input::Connected);
        c.drain(None);
        // No listeners from the server: the clusters apply alone.
        push(&mut c, ResourceType::Listener, "0", Vec::new());
        (c, rx, serial)
    }

    /// Feeds a response and completes the apply it starts, if any.
    fn push(c: &mut Client, kind: ResourceType, version: &str, resources: Vec<Any>) {
        c.feed(Input::Response(DiscoveryResponse {
            version_info: version.to_owned(),
            type_url: kind.type_url().to_owned(),
            resources,
            nonce: format!("{}{version}", kind.noun()),
            ..Default::default()
        }));
        c.drain(None);
        while let Some((id, _)) = c.applying.take() {
            c.feed(Input::Applied(id));
            c.drain(None);
        }
    }

    fn status(kind: ResourceType) -> TypeStatus {
        let i = ResourceType::ALL.iter().position(|k| *k == kind).unwrap();
        STATUS.lock().unwrap().as_ref().unwrap()[i].clone()
    }

    /// A NACK refusing thousands of serving clusters is kept once, shared by each cluster's
    /// `error_state`, and cut at [`NACK_ERROR_KEPT`] bytes (a clone of a 100 KB error per
    /// cluster was quadratic in memory and time, under the lock `/xds` reads).
    #[test]
    fn a_nack_refusing_many_resources_is_kept_once() {
        let (mut c, _updates, _serial) = client();
        let n = 1500;
        let names: Vec<String> = (0..n)
            .map(|i| format!("outbound|8080||svc-{i}.ns.svc.cluster.local"))
            .collect();
        let cluster = |name: &str| static_cluster(name, &[("127.0.0.1", 8080, 0)]);
        push(
            &mut c,
            ResourceType::Cluster,
            "1",
            names.iter().map(|n| any(&cluster(n))).collect(),
        );
        assert_eq!(status(ResourceType::Cluster).serving.len(), n);
        let bad = names
            .iter()
            .map(|n| {
                let mut c = cluster(n);
                c.lb_policy = 99;
                any(&c)
            })
            .collect();
        push(&mut c, ResourceType::Cluster, "2", bad);
        let t = status(ResourceType::Cluster);
        let last = t.last_nack.clone().expect("refused");
        assert_eq!(last.nonce, "cluster2");
        assert_eq!(t.refused.len(), n, "every cluster's update was refused");
        assert!(
            t.refused.values().all(|r| Arc::ptr_eq(r, &last)),
            "one NACK, kept once"
        );
        assert!(
            last.error.len() < NACK_ERROR_KEPT + 64,
            "{}",
            last.error.len()
        );
        assert!(
            last.error.ends_with("bytes more in the NACK sent)"),
            "{}",
            &last.error[NACK_ERROR_KEPT - 100..]
        );
        assert!(last.error.starts_with("cluster \"outbound|8080||svc-"));
        // Still version 1 serving; version 3 clears every refusal.
        assert!(t.serving.values().all(|(v, _)| v == "1"));
        push(
            &mut c,
            ResourceType::Cluster,
            "3",
            names.iter().map(|n| any(&cluster(n))).collect(),
        );
        assert!(status(ResourceType::Cluster).refused.is_empty());
    }

    /// The common refusals show on the resource refused: an RDS update routing to an unknown
    /// cluster (the error is the listener's) is the route configuration's `error_state`, not
    /// the listener's (whose own update was accepted); an EDS update the cluster refuses is
    /// the endpoints'.
    #[test]
    fn refused_rds_and_eds_updates_are_their_resources_error_state() {
        let (mut c, _updates, _serial) = client();
        let hosts = [("127.0.0.1", 8080, 0)];
        push(
            &mut c,
            ResourceType::Cluster,
            "1",
            vec![any(&eds_cluster("a"))],
        );
        push(
            &mut c,
            ResourceType::Endpoints,
            "1",
            vec![any(&assignment("a", &hosts))],
        );
        push(
            &mut c,
            ResourceType::Listener,
            "1",
            vec![any(&http_listener("in", "127.0.0.1", 19000, "routes"))],
        );
        push(
            &mut c,
            ResourceType::Route,
            "1",
            vec![any(&route_config("routes", "a"))],
        );
        assert_eq!(status(ResourceType::Route).serving.len(), 1);

        push(
            &mut c,
            ResourceType::Route,
            "2",
            vec![any(&route_config("routes", "missing"))],
        );
        let routes = status(ResourceType::Route);
        let refusal = routes
            .refused
            .get("routes")
            .expect("the route configuration's error_state");
        assert_eq!(refusal.nonce, "route_configuration2");
        assert!(refusal.error.contains("missing"), "{}", refusal.error);
        assert_eq!(routes.serving["routes"].0, "1");
        assert!(status(ResourceType::Listener).refused.is_empty());

        let mut dump = serde_json::json!({ "listeners": [{ "name": "in" }] });
        annotate_config_dump(&mut dump);
        assert_eq!(dump["listeners"][0]["xds_status"].get("error_state"), None);
        let route = &dump["xds_resources"]["route"][0];
        assert_eq!(route["name"], "routes");
        assert_eq!(route["error_state"]["nonce"], "route_configuration2");

        let mut bad = assignment("a", &hosts);
        bad.endpoints[0].priority = 1;
        push(&mut c, ResourceType::Endpoints, "2", vec![any(&bad)]);
        let endpoints = status(ResourceType::Endpoints);
        assert_eq!(endpoints.refused["a"].nonce, "cluster_load_assignment2");
        assert!(status(ResourceType::Cluster).refused.is_empty());
    }

    /// A resource refused before it ever served — a new listener on port 99999 — has no
    /// entry in the config, so `/config_dump` lists it under `xds_resources.refused` with its
    /// `error_state` (the NACK's error, naming the listener and field); beside it the
    /// listener that serves has none. A later accepted listeners' response (the whole set, in
    /// state of the world) ends the entry.
    #[test]
    fn a_resource_refused_before_it_ever_served_is_listed_with_its_error() {
        let (mut c, _updates, _serial) = client();
        let hosts = [("127.0.0.1", 8080, 0)];
        push(
            &mut c,
            ResourceType::Cluster,
            "1",
            vec![any(&static_cluster("a", &hosts))],
        );
        let good = http_listener("in", "127.0.0.1", 19000, "routes");
        push(&mut c, ResourceType::Listener, "1", vec![any(&good)]);
        push(
            &mut c,
            ResourceType::Route,
            "1",
            vec![any(&route_config("routes", "a"))],
        );
        let bad = http_listener("bad", "127.0.0.1", 99999, "routes");
        push(
            &mut c,
            ResourceType::Listener,
            "2",
            vec![any(&good), any(&bad)],
        );
        let listeners = status(ResourceType::Listener);
        assert!(listeners.refused.is_empty(), "{:?}", listeners.refused);
        assert_eq!(
            listeners.refused_unserved.keys().collect::<Vec<_>>(),
            ["bad"]
        );
        let mut dump = serde_json::json!({ "listeners": [{ "name": "in" }] });
        annotate_config_dump(&mut dump);
        assert_eq!(dump["listeners"][0]["xds_status"].get("error_state"), None);
        let refused = dump["xds_resources"]["refused"]
            .as_array()
            .expect("a refused list");
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0]["type"], "listener");
        assert_eq!(refused[0]["name"], "bad");
        assert_eq!(refused[0]["error_state"]["nonce"], "listener2");
        let details = refused[0]["error_state"]["details"].as_str().unwrap();
        assert!(
            details.starts_with("listener \"bad\"") && details.contains("99999"),
            "{details}"
        );

        // The next accepted listeners' response ends the listener's entry.
        push(&mut c, ResourceType::Listener, "3", vec![any(&good)]);
        assert!(status(ResourceType::Listener).refused_unserved.is_empty());
        let mut dump = serde_json::json!({});
        annotate_config_dump(&mut dump);
        assert_eq!(dump["xds_resources"]["refused"], serde_json::json!([]));
    }

    /// State of the world: an EDS response carrying only `a` leaves `b` as it was — its
    /// version, and the refusal of its last update, which no accepted update has fixed.
    #[test]
    fn a_partial_sotw_response_relabels_only_what_it_carried() {
        let (mut c, _updates, _serial) = client();
        let hosts = [("127.0.0.1", 8080, 0)];
        push(
            &mut c,
            ResourceType::Cluster,
            "1",
            vec![any(&eds_cluster("a")), any(&eds_cluster("b"))],
        );
        push(
            &mut c,
            ResourceType::Endpoints,
            "1",
            vec![any(&assignment("a", &hosts)), any(&assignment("b", &hosts))],
        );
        let mut bad = assignment("b", &hosts);
        bad.endpoints[0].priority = 1;
        push(&mut c, ResourceType::Endpoints, "2", vec![any(&bad)]);
        assert!(status(ResourceType::Endpoints).refused.contains_key("b"));
        push(
            &mut c,
            ResourceType::Endpoints,
            "3",
            vec![any(&assignment("a", &[("127.0.0.1", 8081, 0)]))],
        );
        let t = status(ResourceType::Endpoints);
        assert_eq!(t.version, "3");
        assert_eq!(t.serving["a"].0, "3");
        assert_eq!(
            t.serving["b"].0, "1",
            "b still serves its version-1 content"
        );
        assert!(
            t.refused.contains_key("b"),
            "b's refused update was never fixed"
        );
        assert!(!t.refused.contains_key("a"));
        push(
            &mut c,
            ResourceType::Endpoints,
            "4",
            vec![any(&assignment("b", &hosts))],
        );
        let t = status(ResourceType::Endpoints);
        assert_eq!(t.serving["b"].0, "4");
        assert!(t.refused.is_empty());
    }
}

/// The warming timers the client keeps.
#[cfg(test)]
mod timer_tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use envoy_types::pb::google::protobuf::Any;
    use sluice_xds::fixtures::{any, assignment, eds_cluster};

    fn push(c: &mut Client, kind: ResourceType, version: &str, resources: Vec<Any>) {
        c.feed(Input::Response(DiscoveryResponse {
            version_info: version.to_owned(),
            type_url: kind.type_url().to_owned(),
            resources,
            nonce: format!("{}{version}", kind.noun()),
            ..Default::default()
        }));
        c.drain(None);
        while let Some((id, _)) = c.applying.take() {
            c.feed(Input::Applied(id));
            c.drain(None);
        }
    }

    /// A warming timer is dropped once the resources it waited for arrived: a cluster whose
    /// endpoints come at once leaves no timer to fire 15 s later for nothing, however many
    /// such clusters come and go; one still missing keeps its timer.
    #[test]
    fn a_warming_timer_is_dropped_once_what_it_waited_for_arrived() {
        let _serial = super::STATUS_TESTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (updates, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut c = Client {
            ads: Ads::with_mode(
                XdsMode::Sotw,
                Node::default(),
                serde_json::json!({"listeners": [{"name": "e", "address": "127.0.0.1:1", "echo": {}}]}),
            ),
            updates,
            applying: None,
            applying_ignored: [0; TYPES],
            timers: VecDeque::new(),
            sources: BTreeMap::new(),
            from_sources: tokio::sync::mpsc::unbounded_channel().1,
            initial_fetch_timeout: Duration::from_secs(15),
            resync: false,
        };
        c.feed(Input::Connected);
        c.drain(None);
        push(&mut c, ResourceType::Listener, "0", Vec::new());
        let hosts = [("127.0.0.1", 8080, 0)];
        for round in 0..5 {
            let name = format!("api-{round}");
            let v = round.to_string();
            push(
                &mut c,
                ResourceType::Cluster,
                &v,
                vec![any(&eds_cluster(&name))],
            );
            assert_eq!(
                c.timers.len(),
                1,
                "round {round}: armed for {name}'s endpoints"
            );
            push(
                &mut c,
                ResourceType::Endpoints,
                &v,
                vec![any(&assignment(&name, &hosts))],
            );
            assert!(c.timers.is_empty(), "round {round}: {:?}", c.timers);
        }
        // Two clusters, the endpoints of one only: the other's timer stays.
        push(
            &mut c,
            ResourceType::Cluster,
            "9",
            vec![any(&eds_cluster("a")), any(&eds_cluster("b"))],
        );
        push(
            &mut c,
            ResourceType::Endpoints,
            "9",
            vec![any(&assignment("a", &hosts))],
        );
        assert_eq!(c.timers.len(), 1, "b still missing: {:?}", c.timers);
    }
}
