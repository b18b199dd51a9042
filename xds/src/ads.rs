//! The Aggregated Discovery Service client, state-of-the-world and delta (incremental), as a
//! sans-IO state machine.
//!
//! Owns, per resource type (CDS, EDS, LDS, RDS, SDS): the last **accepted** version (that of
//! the last response whose resources went into a config the workers switched to), the last
//! nonce seen on the current stream, and the subscribed names (CDS and LDS: wildcard; RDS: the
//! route configurations the listeners name; EDS: the service names of the EDS clusters; SDS:
//! the TLS secrets the clusters' and listeners' transport sockets name). It keeps
//! the **applied** resources (those of the config serving) and the responses received since,
//! not yet applied (**pending**: at most one per type — a response folded into the pending
//! one of its type as it arrives, with the later nonce and version, so that a server flooding
//! responses during an apply costs neither memory nor a fold per response); the candidate
//! state is the applied resources with the pending responses folded over them, in arrival
//! order (a CDS or LDS response replaces every resource of its type: a cluster it no longer
//! lists is removed; an RDS, EDS or SDS response replaces the ones it carries; route
//! configurations, assignments and secrets nothing refers to any more are dropped; in both
//! protocols, those not subscribed to are dropped on arrival and counted, [`Ads::unsolicited`]).
//!
//! Inputs ([`Input`]): the stream connected or lost, a response, the outcome of applying a
//! config, the expiry of a warming timer. Outputs ([`Output`]), drained with
//! [`Ads::poll_output`] after every input: requests to send (each saying what it is: an ACK, a
//! NACK or a subscription, [`Answer`]), after each NACK the resources it refused
//! ([`Output::Refused`]), a config to apply, a timer to arm, (delta) a resync.
//!
//! Rules:
//! - **Warming, per resource** (as Envoy's cluster and listener warming): the candidate is
//!   the **accepted** resources (those ACKed, warming ones included; not necessarily serving)
//!   with the pending responses folded over them. A cluster waits for its ClusterLoadAssignment
//!   and its SDS secrets, a listener for its route configurations and secrets, a route
//!   configuration or listener for the clusters it routes to (make-before-break in CDS → EDS →
//!   LDS → RDS order). What the workers get ([`warm::select`]) takes each resource at its
//!   candidate version when what it waits for is there, else at its applied version (an
//!   updated cluster keeps serving its old version and endpoints until the new assignment
//!   comes), else leaves it out — the others go ahead: one cluster waiting for its endpoints
//!   does not hold back an unrelated listener or route update. The config is always whole: a
//!   route never points at a cluster the workers lack (a cluster the candidate removed stays
//!   while an applied version kept names it); a listener ready for an address that a listener
//!   kept at its applied version holds waits for it to move (they switch together). The mix
//!   of versions is assembled before it is applied; should it still not assemble, the
//!   resources its errors name are held back too (at their applied version, or out) — never
//!   refused, the candidate being valid. [`Ads::warming`] lists what waits.
//! - **Initial fetch timeout**: an assignment or route configuration the candidate starts
//!   missing arms a warming timer ([`Output::ArmWarmingTimer`], the bootstrap's
//!   `initial_fetch_timeout`; one timer for all that start missing at once, each resource
//!   keeping the timer of when it started, so that a resource waits that long from its own
//!   start, not from an earlier one's). At expiry, what still misses is taken as received
//!   empty: the cluster serves with no endpoints (503), the listener with no routes (404) —
//!   not an error. It arriving later applies as any update. A **secret** has no timeout: a
//!   TLS context without its certificate cannot handshake, so what waits for a secret stays
//!   at its applied version (or out) until it comes (Envoy would activate the listener and
//!   fail every handshake; Sluice keeps serving what works).
//! - **What is ACKed**: a response is ACKed once what it brought is accepted — applied, or
//!   waiting (a CDS response whose new clusters all wait for endpoints is ACKed at once, as
//!   Envoy ACKs CDS once the clusters are added, warming ones included). So that nothing ACKed
//!   is refused later, the candidate is validated whole before anything is accepted: every
//!   missing assignment and route configuration taken as empty, every missing secret as a
//!   placeholder (of the kind its use needs), what waits for a cluster taken at its candidate
//!   version. What an assignment, route configuration or secret arriving later brings
//!   is then the only new thing to refuse, and the refusal is charged to its response.
//! - A response that changes nothing the workers serve (the same resources, or only resources
//!   that wait) is ACKed at once, without an apply — unless an apply failed since that config
//!   last applied (the workers may serve part of the refused one: endpoints updated in place
//!   on some workers only), in which case it is applied again.
//! - **One apply at a time**; the responses folded into a config are ACKed (version and nonce of
//!   the latest response of each type in it) only when [`Input::Applied`] says the workers
//!   switched; [`Input::ApplyFailed`] NACKs them.
//! - **NACK**: `version_info` is the type's last accepted version, `response_nonce` the
//!   refused response's, `error_detail` the errors (each naming resource and field). A refused
//!   response is dropped from the pending list (the config serving stays as it was). An error
//!   naming a resource is charged to the pending response that carries that resource; one
//!   that names none (or a resource already applied) to every pending response. The NACK is
//!   followed by the names of the resources it refused (those of the response's type it
//!   carried that the errors concern: named by one, or used by a listener or cluster one
//!   names; else all it carried), for the runtime's per-resource `error_state`.
//! - **Per-resource versions**: delta, each resource's own; state of the world, endpoints,
//!   route configurations and secrets keep the version of the last accepted response that
//!   carried them (a response carries only some; the others stay as they were), clusters and
//!   listeners have their type's.
//! - A response that cannot even be decoded (a resource of another type, undecodable bytes,
//!   a name twice) is NACKed at once.
//! - **Reconnect**: nonces are per stream and forgotten; the pending responses are dropped (the
//!   server resends); the first request of each type carries its last accepted version and the
//!   node. The config serving is untouched while disconnected.
//!
//! **Delta** ([`XdsMode::Delta`], `DeltaAggregatedResources`) changes only the wire, not the
//! rules above: warming, the fold, one apply at a time, when to ACK and whom a NACK is charged
//! to are the same code.
//! - A delta response carries only the resources that changed (each with its own version) and
//!   the names of those removed (`removed_resources`): folded over the candidate as upserts and
//!   removals, for every type (a CDS delta response does not replace the set). A response is
//!   refused at once (NACK) when a resource is missing its body, its name differs from the
//!   name inside, a name is listed twice or both changed and removed, or it uses xdstp
//!   `removed_resource_names`. An SDS response removing a secret the candidate config still
//!   uses is refused at once too, charged to it alone (the secret serves on; no warming wait
//!   holding the other types back).
//! - Subscriptions are sent as changes: the first request of CDS and LDS on a stream subscribes
//!   to `*` (wildcard); RDS, EDS and SDS subscribe to the names the listeners and clusters need and
//!   unsubscribe from the names no longer needed, in a request without a nonce, as soon as the
//!   candidate changes them.
//! - ACK: a request with the response's nonce and no `error_detail`; NACK: the nonce and
//!   `error_detail`. An ACK or NACK that would be the type's first request on the stream (an
//!   unsolicited RDS, EDS or SDS response before any name is needed) carries the whole subscription,
//!   or is not sent when there is none: a first request naming nothing would subscribe to
//!   everything (legacy wildcard). There is no `version_info`: the type's accepted version is
//!   the response's `system_version_info` (shown in status, for debugging), and each accepted
//!   resource's own version is kept (those of the resources in the config serving).
//! - Reconnect: the first request of each type resends the whole subscription (`*` for CDS and
//!   LDS, the needed names for RDS, EDS and SDS) and carries `initial_resource_versions`: the
//!   accepted version of each resource of that type, serving or warming (for RDS, EDS and SDS,
//!   of the names subscribed to), so that the server sends only what changed and the removals
//!   — a warming resource it deleted meanwhile is removed, one it still has keeps warming.
//! - **Resync after a NACK**: a delta server records what it sent and does not send it again
//!   until it changes, so the responses a NACK drops (a good update refused along with a bad
//!   one, a listener whose apply failed) would be lost for the stream's life. After the first
//!   NACK on a stream the machine emits [`Output::Resync`]: the runtime ends the stream and
//!   opens a new one after its backoff (not reset by such a stream unless it lasted long, so
//!   a resource refused on every resync is retried ever more slowly); the new stream's
//!   `initial_resource_versions` name only what was accepted, so the server sends the rest again.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use prost::{Message, Name};
use serde_json::Value;
use sluice_core::config::Config;
pub use sluice_core::config::xds::XdsMode;

use crate::translate::{self, Notes, ResourceType, Resources, TranslateError};

/// gRPC's INVALID_ARGUMENT, the code of a NACK's `error_detail`.
const INVALID_ARGUMENT: i32 = 3;

/// What happened, as the runtime tells it.
#[derive(Clone, Debug)]
pub enum Input {
    /// A new ADS stream is open: (re)subscribe.
    Connected,
    /// The stream ended (or could not be opened); the config serving stays.
    Disconnected,
    /// A response arrived on the stream (state of the world).
    Response(DiscoveryResponse),
    /// A response arrived on the stream (delta).
    DeltaResponse(DeltaDiscoveryResponse),
    /// The workers switched to the config of [`Output::Apply`] with this id.
    Applied(u64),
    /// Applying the config with this id failed (the previous one serves); why.
    ApplyFailed(u64, String),
    /// The warming timer of [`Output::ArmWarmingTimer`] with this id expired: the resources
    /// that started warming when it was armed and still wait are taken as received empty.
    WarmingTimeout(u64),
    /// Secrets from an SDS source of the bootstrap's `xds.sds_sources` (not ADS: its own
    /// stream, [`crate::sds::Sds`]), in the response `nonce` of that stream: they replace the
    /// ones of the same names from that source. Warmed, applied and answered as ADS responses
    /// are; the answer is [`Output::SourceVerdict`].
    SourceSecrets {
        /// The source's name (`sds-grpc`).
        source: String,
        /// The response's nonce on the source's stream.
        nonce: String,
        /// The secrets it carries.
        secrets: Vec<Secret>,
    },
}

/// What a request says, for the runtime's counters and status (an ACK and a subscription change
/// may look alike on the wire: a state-of-the-world subscription change repeats the last nonce).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Accepts the response of its nonce.
    Ack,
    /// Refuses the response of its nonce (`error_detail`).
    Nack,
    /// A subscription (first request of a type on a stream, or a change of names): answers no
    /// response.
    Subscription,
}

/// What the runtime must do.
#[derive(Clone, Debug)]
pub enum Output {
    /// Send this request on the stream (state of the world); what it says.
    Send(Box<DiscoveryRequest>, Answer),
    /// Send this request on the stream (delta); what it says.
    SendDelta(Box<DeltaDiscoveryRequest>, Answer),
    /// Delta: end the stream and open a new one after the usual backoff (which a short stream
    /// ended so does not reset).
    /// Emitted (once per stream) after a NACK: the refused responses are dropped, and a delta
    /// server never resends what it sent until it changes; on the new stream
    /// `initial_resource_versions` names only what was accepted, so the server sends the rest again.
    Resync,
    /// Apply this config (the file's static part and the dynamic resources) through the
    /// reload path, then report [`Input::Applied`] or [`Input::ApplyFailed`] with `id`.
    Apply {
        /// Names this apply in the answer.
        id: u64,
        /// The validated config.
        config: Box<Config>,
        /// What translation ignored on purpose.
        notes: Notes,
    },
    /// Deliver [`Input::WarmingTimeout`] with this id after the initial fetch timeout. Several
    /// may be armed at once (one per start of warming, each for the resources that started
    /// then); all have the same duration, so they expire in the order armed.
    ArmWarmingTimer(u64),
    /// The secrets the clusters and listeners need from the SDS source `source` changed:
    /// subscribe to `names` on its stream (empty: none any more).
    SourceNames {
        /// The source's name.
        source: String,
        /// Every secret name needed from it.
        names: BTreeSet<String>,
    },
    /// The answer to [`Input::SourceSecrets`] `nonce` of `source` (and to any earlier one of
    /// that source folded into it): `None`, its secrets serve (ACK); `Some`, refused, why
    /// (NACK; the secrets serving stay).
    SourceVerdict {
        /// The source's name.
        source: String,
        /// The nonce answered.
        nonce: String,
        /// Why it was refused.
        error: Option<String>,
    },
    /// Follows the NACK of the response `nonce` of type `kind`: the resources of that type the
    /// refused response carried that its errors concern (an error naming one of them, or
    /// naming a listener or cluster that uses one of them: a route configuration, endpoints or
    /// secret; for a failed apply, whose error is the server's text, those it names as
    /// `noun "name"`), or, when the errors concern none of them in particular, all it carried
    /// — the resources whose update was refused (`/config_dump`'s `error_state`). Empty when
    /// the response could not be decoded.
    Refused {
        /// The refused response's type.
        kind: ResourceType,
        /// Its nonce (that of the NACK just sent).
        nonce: String,
        /// The resource names, each once.
        names: Vec<String>,
    },
}

/// A response's resources, decoded.
#[derive(Clone, Debug)]
enum Decoded {
    Clusters(Vec<Cluster>),
    Endpoints(Vec<ClusterLoadAssignment>),
    Listeners(Vec<Listener>),
    Routes(Vec<RouteConfiguration>),
    Secrets(Vec<Secret>),
}

/// What a delta response changes besides its resources: the names it removes, and the version
/// of each resource it carries.
#[derive(Clone, Debug)]
struct DeltaChange {
    removed: Vec<String>,
    versions: Vec<(String, String)>,
}

impl Decoded {
    /// Keeps only the resources whose name `keep` accepts.
    fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        match self {
            Decoded::Clusters(v) => v.retain(|c| keep(&c.name)),
            Decoded::Endpoints(v) => v.retain(|c| keep(&c.cluster_name)),
            Decoded::Listeners(v) => v.retain(|c| keep(&c.name)),
            Decoded::Routes(v) => v.retain(|c| keep(&c.name)),
            Decoded::Secrets(v) => v.retain(|c| keep(&c.name)),
        }
    }

    /// Appends `other`'s resources (of the same type; another type is ignored).
    fn extend(&mut self, other: Decoded) {
        match (self, other) {
            (Decoded::Clusters(a), Decoded::Clusters(b)) => a.extend(b),
            (Decoded::Endpoints(a), Decoded::Endpoints(b)) => a.extend(b),
            (Decoded::Listeners(a), Decoded::Listeners(b)) => a.extend(b),
            (Decoded::Routes(a), Decoded::Routes(b)) => a.extend(b),
            (Decoded::Secrets(a), Decoded::Secrets(b)) => a.extend(b),
            _ => {}
        }
    }

    /// The resources' names, in order.
    fn names(&self) -> Vec<&str> {
        match self {
            Decoded::Clusters(v) => v.iter().map(|c| c.name.as_str()).collect(),
            Decoded::Endpoints(v) => v.iter().map(|c| c.cluster_name.as_str()).collect(),
            Decoded::Listeners(v) => v.iter().map(|c| c.name.as_str()).collect(),
            Decoded::Routes(v) => v.iter().map(|c| c.name.as_str()).collect(),
            Decoded::Secrets(v) => v.iter().map(|c| c.name.as_str()).collect(),
        }
    }
}

#[derive(Clone, Debug)]
struct Pending {
    kind: ResourceType,
    /// `version_info` (state of the world) or `system_version_info` (delta).
    version: String,
    nonce: String,
    decoded: Decoded,
    /// `None`: a state-of-the-world response.
    delta: Option<DeltaChange>,
}

impl Pending {
    /// Folds `newer`, a later response of the same type, into this one, so that folding the
    /// result gives what folding both in turn gave: state of the world, a CDS or LDS response
    /// replaces the set, an RDS, EDS or SDS one replaces the resources it carries; delta, the later
    /// upserts and removals win over the earlier ones of the same names. The version and nonce
    /// become `newer`'s (the one an ACK or NACK answers).
    fn absorb(&mut self, newer: Pending) {
        match (&mut self.delta, newer.delta) {
            (None, None) if self.kind.is_full_state() => self.decoded = newer.decoded,
            (None, None) => {
                let touched: HashSet<&str> = newer.decoded.names().into_iter().collect();
                self.decoded.retain(|n| !touched.contains(n));
                drop(touched);
                self.decoded.extend(newer.decoded);
            }
            (Some(old), Some(new)) => {
                let upserted: HashSet<&str> = newer.decoded.names().into_iter().collect();
                let removed: HashSet<&str> = new.removed.iter().map(String::as_str).collect();
                let touched = |n: &str| upserted.contains(n) || removed.contains(n);
                self.decoded.retain(|n| !touched(n));
                old.versions.retain(|(n, _)| !touched(n));
                old.removed.retain(|n| !touched(n));
                drop((upserted, removed));
                old.removed.extend(new.removed);
                old.versions.extend(new.versions);
                self.decoded.extend(newer.decoded);
            }
            // The protocol is fixed for a client: not reached.
            (_, delta) => {
                self.decoded = newer.decoded;
                self.delta = delta;
            }
        }
        self.version = newer.version;
        self.nonce = newer.nonce;
    }

    /// The names the response carries, and (delta) those it removes.
    fn names(&self) -> Vec<&str> {
        let mut names = self.decoded.names();
        if let Some(d) = &self.delta {
            names.extend(d.removed.iter().map(String::as_str));
        }
        names
    }
}

/// Per type: accepted version, last nonce, subscription.
#[derive(Clone, Debug, Default)]
struct TypeState {
    accepted_version: String,
    nonce: String,
    /// Names subscribed to (RDS, EDS, SDS); CDS and LDS are wildcard.
    names: BTreeSet<String>,
    /// The accepted version of each resource, serving or warming: delta, its own; state of
    /// the world, endpoints, route configurations and secrets only (see
    /// [`Ads::resource_versions`]).
    resource_versions: BTreeMap<String, String>,
    /// The version each resource the workers serve serves under (see
    /// [`Ads::serving_versions`]).
    serving_versions: BTreeMap<String, String>,
    /// A request of this type was sent on the current stream.
    requested: bool,
}

/// An apply in flight: which pending responses (by index in arrival order) it includes.
#[derive(Clone, Debug)]
struct InFlight {
    id: u64,
    stream: u64,
    /// What the workers will serve.
    resources: Resources,
    /// The candidate it was chosen from (the accepted state once it applies).
    base: Resources,
    responses: Vec<Pending>,
    /// The SDS sources' updates it includes: source → nonce.
    sources: BTreeMap<String, String>,
}

/// The secrets of an SDS source received since the last apply (the responses folded: later
/// secrets replace earlier ones of the same name), and the nonce of the latest.
#[derive(Clone, Debug, Default)]
struct SourceUpdate {
    nonce: String,
    secrets: BTreeMap<String, Secret>,
}

/// A resource still missing (an assignment, a route configuration, a secret) since the
/// warming timer `timer` was armed; `expired` once that timer fired.
#[derive(Clone, Copy, Debug)]
struct Warming {
    timer: u64,
    expired: bool,
}

/// The ADS client state machine (see the module doc).
#[derive(Debug)]
pub struct Ads {
    mode: XdsMode,
    node: Node,
    bootstrap: Value,
    types: BTreeMap<ResourceType, TypeState>,
    /// The bootstrap's static cluster names (a route may name them whatever warms).
    statics: BTreeSet<String>,
    /// What the workers serve.
    applied: Resources,
    /// The accepted resources: the candidate of the last config applied (or of the responses
    /// ACKed without an apply), warming resources included, which `applied` may hold at an
    /// older version or not at all. The pending responses fold over it.
    base: Resources,
    /// An apply failed since `applied` last served: what the workers serve may be part of
    /// the refused config (an update in place that some workers took before another failed),
    /// so a response that brings back `applied` exactly is applied again, not ACKed at once.
    applied_unsure: bool,
    pending: Vec<Pending>,
    in_flight: Option<InFlight>,
    connected: bool,
    /// Counts streams, so that an apply that completes after a reconnect is not ACKed on the
    /// new stream with an old nonce.
    stream: u64,
    node_sent: bool,
    /// Delta: [`Output::Resync`] was emitted on the current stream.
    resync: bool,
    next_id: u64,
    /// What the candidate misses (endpoints, route configurations, secrets, by type and
    /// name), since which timer.
    missing: BTreeMap<(ResourceType, String), Warming>,
    /// A warming timer expired since the last config was chosen: choose again.
    rewarm: bool,
    /// The clusters, route configurations and listeners of the candidate not served at their
    /// candidate version (see [`Ads::warming`]).
    warming: BTreeSet<(ResourceType, String)>,
    /// Resources (and, delta, removals) of types subscribed to by name that named nothing
    /// subscribed to, dropped on arrival (see [`Ads::unsolicited`]).
    unsolicited: u64,
    /// Per type ([`ResourceType::ALL`] order): resources whose initial fetch timeout expired
    /// while they were still missing (see [`Ads::warming_timeouts`]).
    warming_timeouts: [u64; ResourceType::ALL.len()],
    /// The SDS sources the bootstrap declares (`xds.sds_sources`).
    declared_sources: BTreeSet<String>,
    /// Per SDS source: its secrets received, not yet applied.
    source_pending: BTreeMap<String, SourceUpdate>,
    /// Per SDS source: the secret names subscribed to ([`Output::SourceNames`]).
    source_names: BTreeMap<String, BTreeSet<String>>,
    outputs: VecDeque<Output>,
}

impl Ads {
    /// A state-of-the-world client for `node`, whose configs are `bootstrap` (the config
    /// file's tree: its static listeners and clusters and every other setting) plus the dynamic
    /// resources.
    #[must_use]
    pub fn new(node: Node, bootstrap: Value) -> Ads {
        Ads::with_mode(XdsMode::Sotw, node, bootstrap)
    }

    /// A client speaking `mode` (see [`Ads::new`]).
    #[must_use]
    pub fn with_mode(mode: XdsMode, node: Node, bootstrap: Value) -> Ads {
        let declared_sources = bootstrap
            .as_object()
            .map(translate::declared_sds_sources)
            .unwrap_or_default();
        Ads {
            mode,
            node,
            types: ResourceType::ALL
                .into_iter()
                .map(|t| (t, TypeState::default()))
                .collect(),
            statics: bootstrap
                .get("clusters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect(),
            applied: Resources::default(),
            base: Resources::default(),
            applied_unsure: false,
            pending: Vec::new(),
            in_flight: None,
            connected: false,
            stream: 0,
            node_sent: false,
            resync: false,
            next_id: 1,
            missing: BTreeMap::new(),
            rewarm: false,
            warming: BTreeSet::new(),
            unsolicited: 0,
            warming_timeouts: [0; ResourceType::ALL.len()],
            declared_sources,
            source_pending: BTreeMap::new(),
            source_names: BTreeMap::new(),
            bootstrap,
            outputs: VecDeque::new(),
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The resources of the config serving.
    #[must_use]
    pub fn applied(&self) -> &Resources {
        &self.applied
    }

    /// The clusters, route configurations and listeners the server sent that are not served
    /// at the version sent: waiting for their endpoints, route configurations, secrets or the
    /// clusters they route to (each serves its previous version meanwhile, if it had one). A
    /// cluster whose endpoints timed out is served (with no endpoints), so it is not here.
    #[must_use]
    pub fn warming(&self) -> &BTreeSet<(ResourceType, String)> {
        &self.warming
    }

    /// The last accepted version of a type (empty: none yet); in delta, the
    /// `system_version_info` of the last response accepted.
    #[must_use]
    pub fn accepted_version(&self, kind: ResourceType) -> &str {
        &self.types[&kind].accepted_version
    }

    /// The accepted version of each resource of a type in the config serving: in delta, its
    /// own; in state of the world, for endpoints, route configurations and secrets only (whose
    /// responses may carry some of them), that of the last accepted response that carried it
    /// (clusters and listeners: empty, each has the type's version).
    #[must_use]
    pub fn resource_versions(&self, kind: ResourceType) -> &BTreeMap<String, String> {
        &self.types[&kind].resource_versions
    }

    /// The version each resource of the config serving serves under: its accepted version
    /// ([`Ads::resource_versions`], or in state of the world for clusters and listeners the
    /// type's) when it serves the version accepted; while an update of it warms, the version
    /// of the one still serving. A placeholder served for what never came (an assignment or
    /// route configuration whose warming timed out) has none. For `/xds` and `/config_dump`.
    #[must_use]
    pub fn serving_versions(&self, kind: ResourceType) -> &BTreeMap<String, String> {
        &self.types[&kind].serving_versions
    }

    /// How many resources of RDS, EDS and SDS responses (and, delta, names in their
    /// `removed_resources`) named nothing subscribed to and were dropped on arrival, since
    /// the machine started (both protocols).
    #[must_use]
    pub fn unsolicited(&self) -> u64 {
        self.unsolicited
    }

    /// Per type, in [`ResourceType::ALL`] order: how many resources (endpoints, route
    /// configurations; secrets have no timeout) were still missing when their initial fetch
    /// timeout expired — each taken as received empty, what waited for it served without it —
    /// since the machine started.
    #[must_use]
    pub fn warming_timeouts(&self) -> [u64; ResourceType::ALL.len()] {
        self.warming_timeouts
    }

    /// Whether the warming timer `id` ([`Output::ArmWarmingTimer`]) still guards a resource
    /// missing and not yet timed out: once what it waited for arrived (or left the config),
    /// its [`Input::WarmingTimeout`] would change nothing, and the runtime may drop it.
    #[must_use]
    pub fn warming_timer_pending(&self, id: u64) -> bool {
        self.missing.values().any(|w| w.timer == id && !w.expired)
    }

    /// The protocol spoken.
    #[must_use]
    pub fn mode(&self) -> XdsMode {
        self.mode
    }

    /// Feeds one input.
    pub fn handle_input(&mut self, input: Input) {
        match input {
            Input::Connected => {
                self.connected = true;
                self.stream += 1;
                self.node_sent = false;
                self.resync = false;
                for t in self.types.values_mut() {
                    t.nonce.clear();
                    t.requested = false;
                }
                self.pending.clear();
                for kind in ResourceType::ALL {
                    if kind.is_full_state() || !self.types[&kind].names.is_empty() {
                        match self.mode {
                            XdsMode::Sotw => self.request(kind, None),
                            XdsMode::Delta => self.resubscribe_delta(kind, None),
                        }
                    }
                }
            }
            Input::Disconnected => {
                self.connected = false;
                self.pending.clear();
            }
            Input::Response(r) => self.on_response(r),
            Input::DeltaResponse(r) => self.on_delta_response(r),
            Input::Applied(id) => {
                let Some(done) = self.in_flight.take_if(|f| f.id == id) else {
                    return;
                };
                self.applied = done.resources;
                self.base = done.base;
                self.applied_unsure = false;
                self.source_verdicts(done.sources, None);
                if done.stream == self.stream {
                    self.accept(&done.responses);
                } else {
                    // Not ACKed on a stream that never sent them; the versions still count.
                    self.record_accepted(&done.responses);
                }
                self.evaluate();
            }
            Input::ApplyFailed(id, why) => {
                let Some(failed) = self.in_flight.take_if(|f| f.id == id) else {
                    return;
                };
                self.applied_unsure = true;
                self.source_verdicts(failed.sources, Some(&format!("applying failed: {why}")));
                if failed.stream == self.stream && self.connected {
                    for p in &failed.responses {
                        let names = named_in(&why, p.kind, &p.decoded.names());
                        self.nack(
                            p.kind,
                            p.nonce.clone(),
                            format!("applying failed: {why}"),
                            names,
                        );
                    }
                }
                self.evaluate();
            }
            Input::WarmingTimeout(id) => {
                let mut any = false;
                for ((kind, _), w) in &mut self.missing {
                    if w.timer == id && !w.expired {
                        w.expired = true;
                        any = true;
                        if let Some(i) = ResourceType::ALL.iter().position(|k| k == kind) {
                            self.warming_timeouts[i] += 1;
                        }
                    }
                }
                if any {
                    self.rewarm = true;
                    self.evaluate();
                }
            }
            Input::SourceSecrets {
                source,
                nonce,
                secrets,
            } => {
                let update = self.source_pending.entry(source).or_default();
                update.nonce = nonce;
                for s in secrets {
                    update.secrets.insert(s.name.clone(), s);
                }
                self.evaluate();
            }
        }
    }

    /// Answers the SDS sources' updates `sources` (source → nonce): accepted, or refused with
    /// `error`.
    fn source_verdicts(&mut self, sources: BTreeMap<String, String>, error: Option<&str>) {
        for (source, nonce) in sources {
            self.outputs.push_back(Output::SourceVerdict {
                source,
                nonce,
                error: error.map(str::to_owned),
            });
        }
    }

    /// The secrets each declared SDS source must provide to the clusters and listeners of
    /// `res` (an undeclared source is translation's error, refused at once, not waited for).
    fn source_names(&self, res: &Resources) -> BTreeMap<String, BTreeSet<String>> {
        let mut by_source =
            translate::source_sds_names(res.clusters.values(), res.listeners.values());
        by_source.retain(|source, _| self.declared_sources.contains(source));
        by_source
    }

    /// Sends a request of `kind`: an ACK (`Some((nonce, None))`), a NACK (`Some((nonce,
    /// Some(error)))`), or a subscription change (`None`: the last nonce seen).
    fn request(&mut self, kind: ResourceType, answer: Option<(String, Option<String>)>) {
        if !self.connected {
            return;
        }
        if self.mode == XdsMode::Delta {
            // Delta subscription changes are sent by `subscribe` and on connecting.
            if let Some((nonce, error)) = answer {
                let state = self.types.get_mut(&kind).expect("every type");
                state.nonce.clone_from(&nonce);
                if !state.requested {
                    // The type's first request on this stream: an ACK or NACK without names
                    // would be a (legacy) wildcard subscription, so it is the whole
                    // subscription (or nothing, when there is none).
                    self.resubscribe_delta(kind, Some((nonce, error)));
                    return;
                }
                let nack = error.is_some();
                self.send_delta(
                    DeltaDiscoveryRequest {
                        type_url: kind.type_url().to_owned(),
                        response_nonce: nonce,
                        error_detail: error.map(error_status),
                        ..Default::default()
                    },
                    if nack { Answer::Nack } else { Answer::Ack },
                );
            }
            return;
        }
        let state = self.types.get_mut(&kind).expect("every type");
        let (nonce, error, what) = match answer {
            Some((nonce, error)) => {
                state.nonce.clone_from(&nonce);
                let what = if error.is_some() {
                    Answer::Nack
                } else {
                    Answer::Ack
                };
                (nonce, error, what)
            }
            None => (state.nonce.clone(), None, Answer::Subscription),
        };
        state.requested = true;
        let node = (!self.node_sent).then(|| self.node.clone());
        self.node_sent = true;
        self.outputs.push_back(Output::Send(
            Box::new(DiscoveryRequest {
                version_info: state.accepted_version.clone(),
                node,
                resource_names: state.names.iter().cloned().collect(),
                type_url: kind.type_url().to_owned(),
                response_nonce: nonce,
                error_detail: error.map(error_status),
                ..Default::default()
            }),
            what,
        ));
    }

    /// Sends a delta request, with the node when it is the stream's first; after a NACK, asks
    /// for a resync (once per stream).
    fn send_delta(&mut self, mut req: DeltaDiscoveryRequest, what: Answer) {
        if !self.connected {
            return;
        }
        if let Some(kind) = ResourceType::from_type_url(&req.type_url) {
            self.types.get_mut(&kind).expect("every type").requested = true;
        }
        if !self.node_sent {
            req.node = Some(self.node.clone());
            self.node_sent = true;
        }
        self.outputs
            .push_back(Output::SendDelta(Box::new(req), what));
        if what == Answer::Nack && !self.resync {
            self.resync = true;
            self.outputs.push_back(Output::Resync);
        }
    }

    /// Delta, the first request of `kind` on a stream: the whole subscription (`*` for CDS and
    /// LDS) and the versions of the resources of it serving; with `answer`, it also ACKs or
    /// NACKs that nonce. Nothing when RDS, EDS or SDS has no names.
    fn resubscribe_delta(&mut self, kind: ResourceType, answer: Option<(String, Option<String>)>) {
        let state = &self.types[&kind];
        let subscribe: Vec<String> = if kind.is_full_state() {
            vec!["*".to_owned()]
        } else if state.names.is_empty() {
            // A first request naming nothing would be a (legacy) wildcard subscription.
            return;
        } else {
            state.names.iter().cloned().collect()
        };
        // Every resource accepted, at its accepted version, warming ones included (as Envoy's
        // subscription state lists them): a server only removes what the client says it has,
        // so one left out that the server deleted meanwhile would stay for ever (and serve at
        // the initial fetch timeout). One the server still has keeps warming: what it waits
        // for is subscribed to again on this stream. What a NACK refused was never accepted,
        // so it is not named and the server sends it again.
        let initial_resource_versions = state
            .resource_versions
            .iter()
            .filter(|(name, _)| kind.is_full_state() || state.names.contains(*name))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let (response_nonce, error, what) = match answer {
            None => (String::new(), None, Answer::Subscription),
            Some((nonce, None)) => (nonce, None, Answer::Ack),
            Some((nonce, Some(e))) => (nonce, Some(error_status(e)), Answer::Nack),
        };
        self.send_delta(
            DeltaDiscoveryRequest {
                type_url: kind.type_url().to_owned(),
                resource_names_subscribe: subscribe,
                initial_resource_versions,
                response_nonce,
                error_detail: error,
                ..Default::default()
            },
            what,
        );
    }

    /// The responses are in the serving config: their versions are accepted, and the latest of
    /// each type is ACKed.
    fn accept(&mut self, responses: &[Pending]) {
        self.record_accepted(responses);
        let mut latest: BTreeMap<ResourceType, String> = BTreeMap::new();
        for p in responses {
            latest.insert(p.kind, p.nonce.clone());
        }
        for (kind, nonce) in latest {
            self.request(kind, Some((nonce, None)));
        }
    }

    /// The versions of responses now in the serving config (`self.applied`): each type's, and
    /// (delta) each resource's, kept only for the resources serving.
    fn record_accepted(&mut self, responses: &[Pending]) {
        for p in responses {
            let state = self.types.get_mut(&p.kind).expect("every type");
            state.accepted_version.clone_from(&p.version);
            if p.delta.is_none() && !p.kind.is_full_state() {
                // State of the world, endpoints, routes and secrets: a response may carry only
                // some of them (the others stay as they were), so each keeps the version of the
                // last accepted response that carried it.
                for name in p.decoded.names() {
                    state
                        .resource_versions
                        .insert(name.to_owned(), p.version.clone());
                }
            }
            if let Some(d) = &p.delta {
                for name in &d.removed {
                    state.resource_versions.remove(name);
                }
                for (name, version) in &d.versions {
                    state
                        .resource_versions
                        .insert(name.clone(), version.clone());
                }
            }
        }
        for kind in ResourceType::ALL {
            let (applied, base) = (&self.applied, &self.base);
            self.types
                .get_mut(&kind)
                .expect("every type")
                .resource_versions
                .retain(|name, _| base.contains(kind, name) || applied.contains(kind, name));
        }
        self.note_serving_versions();
    }

    /// Updates [`Ads::serving_versions`] from what serves: a resource served as accepted takes
    /// its accepted version; one served at another (an earlier version kept while its update
    /// warms) keeps the version it served under.
    fn note_serving_versions(&mut self) {
        for kind in ResourceType::ALL {
            let state = self.types.get_mut(&kind).expect("every type");
            let mut serving = BTreeMap::new();
            for name in self.applied.names(kind) {
                let accepted = same_resource(&self.applied, &self.base, kind, &name)
                    .then(|| {
                        state
                            .resource_versions
                            .get(&name)
                            .or((kind.is_full_state() && self.mode == XdsMode::Sotw)
                                .then_some(&state.accepted_version))
                    })
                    .flatten();
                if let Some(v) = accepted.or_else(|| state.serving_versions.get(&name)) {
                    serving.insert(name, v.clone());
                }
            }
            state.serving_versions = serving;
        }
    }

    /// NACKs the response `nonce` of `kind` with `error`, then says which of its resources
    /// were refused ([`Output::Refused`]).
    fn nack(&mut self, kind: ResourceType, nonce: String, error: String, names: Vec<String>) {
        if !self.connected {
            return;
        }
        self.request(kind, Some((nonce.clone(), Some(error))));
        self.outputs
            .push_back(Output::Refused { kind, nonce, names });
    }

    fn on_response(&mut self, r: DiscoveryResponse) {
        let Some(kind) = ResourceType::from_type_url(&r.type_url) else {
            // A type never subscribed to: nothing to ACK it with but an error.
            return;
        };
        match decode(kind, &r.resources) {
            Ok(mut decoded) => {
                // Endpoints, routes and secrets nothing subscribed to are dropped on arrival
                // (a server sending more than asked must not pile them up in the pending
                // response); a later subscription to one gets it sent again.
                if !kind.is_full_state() {
                    let names = &self.types[&kind].names;
                    let before = decoded.names().len();
                    decoded.retain(|n| names.contains(n));
                    self.unsolicited += (before - decoded.names().len()) as u64;
                }
                self.push_pending(Pending {
                    kind,
                    version: r.version_info,
                    nonce: r.nonce,
                    decoded,
                    delta: None,
                });
                self.evaluate();
            }
            Err(e) => self.nack(kind, r.nonce, e, Vec::new()),
        }
    }

    fn on_delta_response(&mut self, mut r: DeltaDiscoveryResponse) {
        let Some(kind) = ResourceType::from_type_url(&r.type_url) else {
            return;
        };
        let decoded = decode_delta(kind, &mut r).map(|(mut decoded, mut change)| {
            // As in state of the world: endpoints, routes and secrets not subscribed to (a
            // server sending more than asked, or what was sent before it saw an unsubscribe)
            // are dropped on arrival, their upserts, versions and removals alike — never
            // applied (a cluster added later waits for its endpoints and subscribes to them),
            // never piled up in the pending response during an apply (Envoy's watch map
            // likewise hands a resource only to the watches interested in it).
            if !kind.is_full_state() {
                let names = &self.types[&kind].names;
                let before = decoded.names().len() + change.removed.len();
                decoded.retain(|n| names.contains(n));
                change.versions.retain(|(n, _)| names.contains(n));
                change.removed.retain(|n| names.contains(n));
                self.unsolicited += (before - decoded.names().len() - change.removed.len()) as u64;
            }
            (decoded, change)
        });
        match decoded {
            Ok((_, change))
                if kind == ResourceType::Secret && self.removes_used_secret(&change) =>
            {
                // A secret a listener or cluster still uses cannot be removed: refused at once
                // and charged to this response alone (waiting for warming would hold every
                // other type back, then charge the error to all of them). The last one
                // received serves on.
                let used = sds_names(&self.candidate());
                let still: Vec<&String> = change
                    .removed
                    .iter()
                    .filter(|n| used.contains(*n))
                    .collect();
                let error = format!(
                    "removed_resources: {still:?} still used by a listener's or a cluster's TLS \
                     context (remove or change that first); the last secret received serves on"
                );
                let names = still.into_iter().cloned().collect();
                self.nack(kind, r.nonce, error, names);
            }
            Ok((decoded, change)) => {
                self.push_pending(Pending {
                    kind,
                    version: r.system_version_info,
                    nonce: r.nonce,
                    decoded,
                    delta: Some(change),
                });
                self.evaluate();
            }
            Err(e) => self.nack(kind, r.nonce, e, Vec::new()),
        }
    }

    /// Whether a delta SDS change removes a secret the candidate (serving, in flight or
    /// pending) config still uses.
    fn removes_used_secret(&self, change: &DeltaChange) -> bool {
        if change.removed.is_empty() {
            return false;
        }
        let used = sds_names(&self.candidate());
        change.removed.iter().any(|n| used.contains(n))
    }

    /// Adds a response to the pending ones: folded into the pending response of its type, if
    /// any (then moved last, where the latest arrival goes), so that there is at most one per
    /// type however many arrive during an apply.
    fn push_pending(&mut self, p: Pending) {
        match self.pending.iter().position(|q| q.kind == p.kind) {
            Some(i) => {
                let mut earlier = self.pending.remove(i);
                earlier.absorb(p);
                self.pending.push(earlier);
            }
            None => self.pending.push(p),
        }
    }

    /// The candidate resources: the accepted ones (or the in-flight apply's), with the pending
    /// responses folded over them, unreferenced RDS/EDS/SDS resources dropped.
    fn candidate(&self) -> Resources {
        let mut res = self
            .in_flight
            .as_ref()
            .map_or_else(|| self.base.clone(), |f| f.base.clone());
        for p in &self.pending {
            match (&p.delta, &p.decoded) {
                (None, Decoded::Clusters(v)) => {
                    res.clusters = v.iter().map(|c| (c.name.clone(), c.clone())).collect();
                }
                (None, Decoded::Listeners(v)) => {
                    res.listeners = v.iter().map(|l| (l.name.clone(), l.clone())).collect();
                }
                (None, decoded) => upsert(&mut res, decoded),
                (Some(d), decoded) => {
                    for name in &d.removed {
                        res.remove(p.kind, name);
                    }
                    upsert(&mut res, decoded);
                }
            }
        }
        for (source, update) in &self.source_pending {
            let secrets = res.source_secrets.entry(source.clone()).or_default();
            for (name, s) in &update.secrets {
                secrets.insert(name.clone(), s.clone());
            }
        }
        let eds = eds_names(&res);
        let rds = rds_names(&res);
        let sds = sds_names(&res);
        let by_source = self.source_names(&res);
        res.endpoints.retain(|k, _| eds.contains(k));
        res.routes.retain(|k, _| rds.contains(k));
        res.secrets.retain(|k, _| sds.contains(k));
        res.source_secrets.retain(|source, secrets| {
            let Some(names) = by_source.get(source) else {
                return false;
            };
            secrets.retain(|k, _| names.contains(k));
            !secrets.is_empty()
        });
        res
    }

    /// After any change (and nothing in flight): validate the candidate, every assignment and
    /// route configuration still missing taken as empty, refusing what does not assemble;
    /// choose what to serve of it ([`warm::select`]); apply that, or, when it is what serves
    /// already, ACK at once (a CDS response whose new clusters all wait for their endpoints
    /// is ACKed so). Then subscribe to what the candidate left standing needs.
    fn evaluate(&mut self) {
        loop {
            if self.in_flight.is_some() && !self.pending.iter().any(|p| p.kind.is_full_state()) {
                // Only clusters and listeners decide the subscriptions, and none is pending:
                // those of the apply in flight stand (no copy of every resource per response
                // while a server floods endpoints or routes during an apply).
                return;
            }
            let candidate = self.candidate();
            if self.in_flight.is_some()
                || (self.pending.is_empty() && self.source_pending.is_empty() && !self.rewarm)
            {
                self.follow(&candidate);
                return;
            }
            // Once per expiry: an apply it leads to that fails is not retried until something
            // new comes.
            self.rewarm = false;
            let (all_missing, expired) = self.track_missing(&candidate);
            // ADS secrets and those of the declared SDS sources alike.
            let secrets_missing: Vec<warm::SecretKey> = warm::secrets_of(
                candidate.clusters.values(),
                candidate.listeners.values(),
                &self.declared_sources,
            )
            .into_iter()
            .filter(|k| warm::secret(&candidate, k).is_none())
            .collect();
            let checked = if secrets_missing.is_empty() {
                self.check(&candidate, &all_missing, &[], &[])
            } else {
                self.check_with_placeholders(&candidate, &all_missing, &secrets_missing)
            };
            let check = match checked {
                Ok(check) => check,
                Err(errors) => {
                    if self.pending.is_empty() && self.source_pending.is_empty() {
                        // Not reached: what was accepted assembled with its missing parts empty.
                        self.follow(&candidate);
                        return;
                    }
                    self.refuse(&errors, &candidate);
                    continue;
                }
            };
            let mut serve = if expired == all_missing && secrets_missing.is_empty() {
                check
            } else {
                warm::select(
                    &self.applied,
                    &candidate,
                    &expired,
                    &self.statics,
                    &self.declared_sources,
                )
            };
            let unchanged =
                |serve: &Resources, ads: &Ads| *serve == ads.applied && !ads.applied_unsure;
            let assembled = if unchanged(&serve, self) {
                None
            } else {
                let (held, assembled) = self.assemble_mix(serve);
                serve = held;
                Some(assembled)
            };
            self.follow(&candidate);
            // After the outcome: what the mix held back waits too.
            self.warming = held_back(&candidate, &serve);
            if unchanged(&serve, self) {
                // Nothing the workers serve changes (a server resending what serves, or
                // resources that all wait): accepted as they are.
                self.base = candidate;
                let done = std::mem::take(&mut self.pending);
                self.accept(&done);
                let sources = self.take_source_pending();
                self.source_verdicts(sources, None);
                return;
            }
            match assembled.expect("assembled unless unchanged") {
                Ok(assembled) => {
                    let id = self.next_id();
                    self.in_flight = Some(InFlight {
                        id,
                        stream: self.stream,
                        resources: serve,
                        base: candidate,
                        responses: std::mem::take(&mut self.pending),
                        sources: self.take_source_pending(),
                    });
                    self.outputs.push_back(Output::Apply {
                        id,
                        config: Box::new(assembled.config),
                        notes: assembled.notes,
                    });
                    return;
                }
                // Not reached: the applied resources assembled when they were applied, and
                // the bootstrap does not change.
                Err(errors) if !self.pending.is_empty() || !self.source_pending.is_empty() => {
                    self.refuse(&errors, &candidate);
                }
                Err(_) => return,
            }
        }
    }

    /// Assembles `serve`, what [`warm::select`] took — a mix of candidate and applied versions,
    /// which the validation of the candidate (every version the candidate's) did not check. When
    /// the mix does not assemble, the resources the errors name are held back (served at their
    /// applied version, or left out) and it is tried again; when an error names nothing that
    /// can be held back, the applied resources serve on. Nothing is refused for it: the
    /// candidate is valid, the resources held back wait ([`Ads::warming`]) for the next choice.
    /// Returns what to serve and its assembly (an error only if even the applied resources do
    /// not assemble).
    fn assemble_mix(
        &self,
        mut serve: Resources,
    ) -> (Resources, Result<translate::Assembled, Vec<TranslateError>>) {
        loop {
            match translate::assemble(&self.bootstrap, &serve) {
                Ok(assembled) => return (serve, Ok(assembled)),
                Err(errors) if serve == self.applied => return (serve, Err(errors)),
                Err(errors) => {
                    // Each round holds back at least one resource, or ends at the applied ones.
                    if !hold_back(&mut serve, &self.applied, &errors) {
                        serve = self.applied.clone();
                    }
                }
            }
        }
    }

    /// Validates the candidate: what [`warm::select`] takes of it when every missing assignment
    /// and route configuration in `filled` is received empty and the `certificates` and
    /// `validations` secrets are placeholders. Returns what it assembled from.
    fn check(
        &self,
        candidate: &Resources,
        filled: &warm::Filled,
        certificates: &[warm::SecretKey],
        validations: &[warm::SecretKey],
    ) -> Result<Resources, Vec<TranslateError>> {
        let with;
        let candidate = if certificates.is_empty() && validations.is_empty() {
            candidate
        } else {
            with = {
                let mut c = candidate.clone();
                for k in certificates {
                    warm::insert_secret(&mut c, k, warm::placeholder_secret(&k.1, false));
                }
                for k in validations {
                    warm::insert_secret(&mut c, k, warm::placeholder_secret(&k.1, true));
                }
                c
            };
            &with
        };
        let check = warm::select(
            &self.applied,
            candidate,
            filled,
            &self.statics,
            &self.declared_sources,
        );
        translate::assemble(&self.bootstrap, &check).map(|_| check)
    }

    /// [`Ads::check`] with the secrets not received yet as placeholders, so that a listener or
    /// cluster waiting for its secret is validated (and its response ACKed) before it comes,
    /// as what waits for endpoints or routes is. A placeholder is a certificate, or, where the
    /// check says it is used as a validation context, one of those.
    fn check_with_placeholders(
        &self,
        candidate: &Resources,
        filled: &warm::Filled,
        missing: &[warm::SecretKey],
    ) -> Result<Resources, Vec<TranslateError>> {
        match self.check(candidate, filled, missing, &[]) {
            Ok(check) => Ok(check),
            Err(errors) => {
                // A secret is known by its source and name: `x` from one source is not `x`
                // over ADS or from another.
                let (validations, certificates): (Vec<_>, Vec<_>) =
                    missing.iter().cloned().partition(|(source, n)| {
                        errors.iter().any(|e| {
                            e.kind == ResourceType::Secret && &e.name == n && &e.source == source
                        })
                    });
                if validations.is_empty() {
                    return Err(errors);
                }
                self.check(candidate, filled, &certificates, &validations)
            }
        }
    }

    /// Updates what the candidate misses (assignments and route configurations; a secret has
    /// no timeout, see the module doc): what no longer misses is forgotten, what starts missing
    /// gets a warming timer (one for all that start at once). Returns every name missing, and
    /// those whose timer expired.
    fn track_missing(&mut self, candidate: &Resources) -> (warm::Filled, warm::Filled) {
        let mut now: BTreeSet<(ResourceType, String)> = BTreeSet::new();
        for n in eds_names(candidate) {
            if !candidate.endpoints.contains_key(&n) {
                now.insert((ResourceType::Endpoints, n));
            }
        }
        for n in rds_names(candidate) {
            if !candidate.routes.contains_key(&n) {
                now.insert((ResourceType::Route, n));
            }
        }
        self.missing.retain(|k, _| now.contains(k));
        let mut timer = None;
        for k in now {
            if !self.missing.contains_key(&k) {
                let id = *timer.get_or_insert_with(|| {
                    let id = self.next_id;
                    self.next_id += 1;
                    id
                });
                self.missing.insert(
                    k,
                    Warming {
                        timer: id,
                        expired: false,
                    },
                );
            }
        }
        if let Some(id) = timer {
            self.outputs.push_back(Output::ArmWarmingTimer(id));
        }
        let (mut all, mut expired) = (warm::Filled::default(), warm::Filled::default());
        for ((kind, name), w) in &self.missing {
            for f in [Some(&mut all), w.expired.then_some(&mut expired)]
                .into_iter()
                .flatten()
            {
                match kind {
                    ResourceType::Endpoints => f.endpoints.insert(name.clone()),
                    _ => f.routes.insert(name.clone()),
                };
            }
        }
        (all, expired)
    }

    /// NACKs the pending responses the errors are charged to and drops them; with each NACK,
    /// which of the response's resources the errors concern ([`Output::Refused`]).
    fn refuse(&mut self, errors: &[TranslateError], candidate: &Resources) {
        let mut charged: BTreeMap<usize, Vec<&TranslateError>> = BTreeMap::new();
        // Each pending response's names, once (errors × names would be quadratic).
        let names: Vec<HashSet<&str>> = self
            .pending
            .iter()
            .map(|p| p.names().into_iter().collect())
            .collect();
        // Errors charged to SDS sources' updates, by source.
        let mut source_charged: BTreeMap<String, Vec<&TranslateError>> = BTreeMap::new();
        for e in errors {
            // A secret of an SDS source is charged to that source's update only, never to an
            // ADS response or another source's that carries a secret of the same name.
            let owner = self.pending.iter().zip(&names).rposition(|(p, names)| {
                p.kind == e.kind && e.source.is_none() && names.contains(e.name.as_str())
            });
            let source_owner = (e.kind == ResourceType::Secret)
                .then_some(e.source.as_ref())
                .flatten()
                .filter(|source| {
                    self.source_pending
                        .get(*source)
                        .is_some_and(|u| u.secrets.contains_key(&e.name))
                })
                .cloned();
            match (owner, source_owner) {
                (Some(i), _) => charged.entry(i).or_default().push(e),
                (None, Some(source)) => source_charged.entry(source).or_default().push(e),
                (None, None) => {
                    for i in 0..self.pending.len() {
                        charged.entry(i).or_default().push(e);
                    }
                    for source in self.source_pending.keys() {
                        source_charged.entry(source.clone()).or_default().push(e);
                    }
                }
            }
        }
        for (source, errors) in source_charged {
            let message = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            if let Some(update) = self.source_pending.remove(&source) {
                self.outputs.push_back(Output::SourceVerdict {
                    source,
                    nonce: update.nonce,
                    error: Some(message),
                });
            }
        }
        let mut refusals = Vec::with_capacity(charged.len());
        for (i, errors) in charged {
            let p = &self.pending[i];
            let carried = &names[i];
            let mut concerned: BTreeSet<String> = BTreeSet::new();
            for e in &errors {
                if e.kind == p.kind {
                    if carried.contains(e.name.as_str()) {
                        concerned.insert(e.name.clone());
                    }
                } else if !p.kind.is_full_state() {
                    // A listener or cluster refused for what it uses: the route configuration,
                    // endpoints or secrets of this response it uses.
                    for n in uses(candidate, e.kind, &e.name, p.kind) {
                        if carried.contains(n.as_str()) {
                            concerned.insert(n);
                        }
                    }
                }
            }
            if concerned.is_empty() {
                concerned = carried.iter().map(|n| (*n).to_owned()).collect();
            }
            let message = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            refusals.push((i, message, concerned.into_iter().collect()));
        }
        drop(names);
        for (i, message, concerned) in refusals.into_iter().rev() {
            let p = self.pending.remove(i);
            self.nack(p.kind, p.nonce, message, concerned);
        }
    }

    /// Subscribes to the endpoints, route configurations and secrets `candidate` needs (and
    /// only those). Called with the candidate that stands, not one a refusal is about to undo, so
    /// that a refused update does not unsubscribe and resubscribe.
    fn follow(&mut self, candidate: &Resources) {
        self.subscribe(ResourceType::Endpoints, eds_names(candidate));
        self.subscribe(ResourceType::Route, rds_names(candidate));
        self.subscribe(ResourceType::Secret, sds_names(candidate));
        let by_source = self.source_names(candidate);
        let gone: Vec<String> = self
            .source_names
            .keys()
            .filter(|s| !by_source.contains_key(*s))
            .cloned()
            .collect();
        for source in gone {
            self.source_names.remove(&source);
            self.outputs.push_back(Output::SourceNames {
                source,
                names: BTreeSet::new(),
            });
        }
        for (source, names) in by_source {
            if self.source_names.get(&source) != Some(&names) {
                self.source_names.insert(source.clone(), names.clone());
                self.outputs
                    .push_back(Output::SourceNames { source, names });
            }
        }
    }

    /// The SDS sources' updates received since the last apply, now folded into a config:
    /// source → the nonce to answer.
    fn take_source_pending(&mut self) -> BTreeMap<String, String> {
        std::mem::take(&mut self.source_pending)
            .into_iter()
            .map(|(source, u)| (source, u.nonce))
            .collect()
    }

    fn subscribe(&mut self, kind: ResourceType, names: BTreeSet<String>) {
        let state = self.types.get_mut(&kind).expect("every type");
        if state.names == names {
            return;
        }
        let subscribe: Vec<String> = names.difference(&state.names).cloned().collect();
        let unsubscribe: Vec<String> = state.names.difference(&names).cloned().collect();
        state.names = names;
        match self.mode {
            XdsMode::Sotw => self.request(kind, None),
            XdsMode::Delta => {
                // The first request of a type on a stream is the whole subscription.
                if !self.types[&kind].requested {
                    self.resubscribe_delta(kind, None);
                } else {
                    self.send_delta(
                        DeltaDiscoveryRequest {
                            type_url: kind.type_url().to_owned(),
                            resource_names_subscribe: subscribe,
                            resource_names_unsubscribe: unsubscribe,
                            ..Default::default()
                        },
                        Answer::Subscription,
                    );
                }
            }
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

/// Decodes a response's resources, refusing another type, undecodable bytes and a name twice.
fn decode(kind: ResourceType, resources: &[Any]) -> Result<Decoded, String> {
    fn all<T: Message + Name + Default>(
        resources: &[Any],
        name: impl Fn(&T) -> &str,
    ) -> Result<Vec<T>, String> {
        let mut out: Vec<T> = Vec::with_capacity(resources.len());
        for (i, any) in resources.iter().enumerate() {
            if any.type_url != T::type_url() {
                return Err(format!(
                    "resources[{i}]: expected {}, found {:?}",
                    T::type_url(),
                    any.type_url
                ));
            }
            let r = T::decode(any.value.as_slice())
                .map_err(|e| format!("resources[{i}]: undecodable: {e}"))?;
            out.push(r);
        }
        // A set, not a scan per resource: a response may carry hundreds of thousands.
        let mut seen = HashSet::with_capacity(out.len());
        for (i, r) in out.iter().enumerate() {
            if !seen.insert(name(r)) {
                return Err(format!("resources[{i}]: {:?} is listed twice", name(r)));
            }
        }
        Ok(out)
    }
    Ok(match kind {
        ResourceType::Cluster => Decoded::Clusters(all(resources, |c: &Cluster| &c.name)?),
        ResourceType::Endpoints => {
            Decoded::Endpoints(all(resources, |c: &ClusterLoadAssignment| &c.cluster_name)?)
        }
        ResourceType::Listener => Decoded::Listeners(all(resources, |l: &Listener| &l.name)?),
        ResourceType::Route => Decoded::Routes(all(resources, |r: &RouteConfiguration| &r.name)?),
        ResourceType::Secret => Decoded::Secrets(all(resources, |s: &Secret| &s.name)?),
    })
}

/// A NACK's `error_detail`.
fn error_status(message: String) -> Status {
    Status {
        code: INVALID_ARGUMENT,
        message,
        details: Vec::new(),
    }
}

/// Puts the resources of a response into `res` (replacing those of the same name).
fn upsert(res: &mut Resources, decoded: &Decoded) {
    match decoded {
        Decoded::Clusters(v) => {
            for c in v {
                res.clusters.insert(c.name.clone(), c.clone());
            }
        }
        Decoded::Listeners(v) => {
            for l in v {
                res.listeners.insert(l.name.clone(), l.clone());
            }
        }
        Decoded::Endpoints(v) => {
            for e in v {
                res.endpoints.insert(e.cluster_name.clone(), e.clone());
            }
        }
        Decoded::Routes(v) => {
            for rc in v {
                res.routes.insert(rc.name.clone(), rc.clone());
            }
        }
        Decoded::Secrets(v) => {
            for s in v {
                res.secrets.insert(s.name.clone(), s.clone());
            }
        }
    }
}

/// Decodes a delta response: its resources (as [`decode`] does, each also named by its
/// wrapper, which must agree), the names removed and each resource's version.
/// (Takes the resources' bodies out of `r`.)
fn decode_delta(
    kind: ResourceType,
    r: &mut DeltaDiscoveryResponse,
) -> Result<(Decoded, DeltaChange), String> {
    if !r.removed_resource_names.is_empty() {
        return Err("removed_resource_names: xdstp resource names are not supported".to_owned());
    }
    let mut anys = Vec::with_capacity(r.resources.len());
    let mut versions = Vec::with_capacity(r.resources.len());
    for (i, res) in r.resources.iter_mut().enumerate() {
        let Some(any) = res.resource.take() else {
            return Err(format!(
                "resources[{i}] ({:?}): no resource (TTL heartbeats are not supported)",
                res.name
            ));
        };
        anys.push(any);
        versions.push((
            std::mem::take(&mut res.name),
            std::mem::take(&mut res.version),
        ));
    }
    let decoded = decode(kind, &anys)?;
    let inner = decoded.names();
    for (i, ((outer, _), inner)) in versions.iter().zip(&inner).enumerate() {
        if outer != inner {
            return Err(format!(
                "resources[{i}]: named {outer:?} but the {} inside is {inner:?}",
                kind.noun()
            ));
        }
    }
    // Sets, not scans: a hostile server's response may name hundreds of thousands.
    let changed: HashSet<&str> = inner.iter().copied().collect();
    let mut removed_seen: HashSet<&str> = HashSet::with_capacity(r.removed_resources.len());
    for (j, name) in r.removed_resources.iter().enumerate() {
        if changed.contains(name.as_str()) {
            return Err(format!(
                "removed_resources[{j}]: {name:?} is also in resources"
            ));
        }
        if !removed_seen.insert(name.as_str()) {
            return Err(format!("removed_resources[{j}]: {name:?} is listed twice"));
        }
    }
    let removed = std::mem::take(&mut r.removed_resources);
    Ok((decoded, DeltaChange { removed, versions }))
}

/// The EDS service names the clusters need.
fn eds_names(res: &Resources) -> BTreeSet<String> {
    res.clusters
        .values()
        .filter_map(|c| translate::eds_service_name(c).map(str::to_owned))
        .collect()
}

/// The TLS secrets the clusters and listeners name (SDS).
fn sds_names(res: &Resources) -> BTreeSet<String> {
    translate::sds_names(res.clusters.values(), res.listeners.values())
}

/// The route configurations the listeners name (RDS).
fn rds_names(res: &Resources) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in res.listeners.values() {
        rds_of(l, &mut out);
    }
    out
}

/// Adds the route configurations listener `l` names to `out`.
fn rds_of(l: &Listener, out: &mut BTreeSet<String>) {
    for chain in &l.filter_chains {
        for f in &chain.filters {
            if let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type
                && any.type_url == HttpConnectionManager::type_url()
                && let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice())
                && let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier
            {
                out.insert(rds.route_config_name);
            }
        }
    }
}

/// Which of `carried` (the names a refused response of type `kind` carried) an apply failure's
/// text names as `noun "name"` (`sds secret "server-cert"`: the server's errors name the
/// resources they come from, not by structure); all of them when it names none. One pass over
/// the text, whatever the number of names.
fn named_in(why: &str, kind: ResourceType, carried: &[&str]) -> Vec<String> {
    let carried_set: HashSet<&str> = carried.iter().copied().collect();
    let marker = format!("{} \"", kind.noun());
    let mut named = BTreeSet::new();
    let mut rest = why;
    while let Some(at) = rest.find(&marker) {
        rest = &rest[at + marker.len()..];
        // The name as `{:?}` wrote it: up to the first quote not escaped.
        let mut name = String::new();
        let mut chars = rest.char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        name.push(e);
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => name.push(c),
            }
        }
        rest = &rest[end..];
        if carried_set.contains(name.as_str()) {
            named.insert(name);
        }
    }
    if named.is_empty() {
        carried.iter().map(|n| (*n).to_owned()).collect()
    } else {
        named.into_iter().collect()
    }
}

/// The resources of type `of` (route configurations, endpoints, secrets) that the listener or
/// cluster `kind` `name` of `res` uses (none for another type, or a name not in `res`).
fn uses(res: &Resources, kind: ResourceType, name: &str, of: ResourceType) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    match (kind, of) {
        (ResourceType::Listener, ResourceType::Route) => {
            if let Some(l) = res.listeners.get(name) {
                rds_of(l, &mut out);
            }
        }
        (ResourceType::Listener, ResourceType::Secret) => {
            if let Some(l) = res.listeners.get(name) {
                out = translate::sds_names([], [l]);
            }
        }
        (ResourceType::Cluster, ResourceType::Endpoints) => {
            if let Some(c) = res.clusters.get(name).and_then(translate::eds_service_name) {
                out.insert(c.to_owned());
            }
        }
        (ResourceType::Cluster, ResourceType::Secret) => {
            if let Some(c) = res.clusters.get(name) {
                out = translate::sds_names([c], []);
            }
        }
        _ => {}
    }
    out
}

/// Whether `a` and `b` have the resource of `kind` named `name`, the same.
fn same_resource(a: &Resources, b: &Resources, kind: ResourceType, name: &str) -> bool {
    fn same<T: PartialEq>(a: &BTreeMap<String, T>, b: &BTreeMap<String, T>, name: &str) -> bool {
        matches!((a.get(name), b.get(name)), (Some(x), Some(y)) if x == y)
    }
    match kind {
        ResourceType::Cluster => same(&a.clusters, &b.clusters, name),
        ResourceType::Endpoints => same(&a.endpoints, &b.endpoints, name),
        ResourceType::Listener => same(&a.listeners, &b.listeners, name),
        ResourceType::Route => same(&a.routes, &b.routes, name),
        ResourceType::Secret => same(&a.secrets, &b.secrets, name),
    }
}

/// Puts back in `serve` the applied version (or nothing, when none serves) of each resource
/// `errors` name that `serve` has at another version. Whether anything changed.
fn hold_back(serve: &mut Resources, applied: &Resources, errors: &[TranslateError]) -> bool {
    fn revert<T: Clone + PartialEq>(
        serve: &mut BTreeMap<String, T>,
        applied: &BTreeMap<String, T>,
        name: &str,
    ) -> bool {
        let old = applied.get(name);
        if serve.get(name) == old {
            return false;
        }
        match old {
            Some(old) => serve.insert(name.to_owned(), old.clone()),
            None => serve.remove(name),
        };
        true
    }
    let mut changed = false;
    for e in errors {
        let name = e.name.as_str();
        changed |= match e.kind {
            ResourceType::Cluster => revert(&mut serve.clusters, &applied.clusters, name),
            ResourceType::Endpoints => revert(&mut serve.endpoints, &applied.endpoints, name),
            ResourceType::Listener => revert(&mut serve.listeners, &applied.listeners, name),
            ResourceType::Route => revert(&mut serve.routes, &applied.routes, name),
            ResourceType::Secret => {
                // An error names a secret by name alone, whatever its source.
                let mut any = revert(&mut serve.secrets, &applied.secrets, name);
                let sources: Vec<String> = serve
                    .source_secrets
                    .keys()
                    .chain(applied.source_secrets.keys())
                    .cloned()
                    .collect();
                let none = BTreeMap::new();
                for source in sources {
                    let old = applied.source_secrets.get(&source).unwrap_or(&none);
                    let new = serve.source_secrets.entry(source.clone()).or_default();
                    any |= revert(new, old, name);
                    if new.is_empty() {
                        serve.source_secrets.remove(&source);
                    }
                }
                any
            }
        };
    }
    changed
}

/// The clusters, route configurations and listeners of `candidate` that `serve` does not have
/// at their candidate version.
fn held_back(candidate: &Resources, serve: &Resources) -> BTreeSet<(ResourceType, String)> {
    let mut out = BTreeSet::new();
    for (n, c) in &candidate.clusters {
        if serve.clusters.get(n) != Some(c) {
            out.insert((ResourceType::Cluster, n.clone()));
        }
    }
    for (n, r) in &candidate.routes {
        if serve.routes.get(n) != Some(r) {
            out.insert((ResourceType::Route, n.clone()));
        }
    }
    for (n, l) in &candidate.listeners {
        if serve.listeners.get(n) != Some(l) {
            out.insert((ResourceType::Listener, n.clone()));
        }
    }
    out
}

mod warm;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_delta;
#[cfg(test)]
mod tests_sources;
