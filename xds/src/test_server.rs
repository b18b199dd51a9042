//! An ADS management server's service for tests and the simulator (feature `test-server`): a
//! tonic service from the `envoy-types` protos, state of the world and delta, that the
//! runtime's end-to-end tests host on a thread of their own (`tests/support/ads.rs`) and the
//! simulator on a turmoil host (`sluice-sim`'s xDS scenario). Hosting it is the caller's.
//!
//! It serves one [`Snapshot`] (a version and the resources of each type URL), the latest of a
//! `watch` channel. A state-of-the-world stream answers a type once the client asked for it,
//! and again whenever the snapshot's version changes (the types of one push in type URL
//! order). A delta stream keeps, per type, the client's subscription (`*` or names) and the
//! version of each resource the client has (from `initial_resource_versions`, then from what
//! it sent); on each request and snapshot change it sends the subscribed resources whose
//! version differs (a resource's version is a hash of its bytes, so it survives a restart)
//! and, in `removed_resources`, those the client has that the snapshot no longer holds. Every
//! request received and every response sent is recorded in an [`AdsLog`] (a delta one with its
//! stream, nonce, version and each resource's version and the names removed, so that the
//! simulator can tell what each ACK or NACK answers). A push sends its types in type URL
//! order, `spacing` apart on both protocols.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
    aggregated_discovery_service_server::AggregatedDiscoveryService,
};
use envoy_types::pb::google::protobuf::Any;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// What the server serves: a version and the resources of each type URL.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The version (`version_info`, `system_version_info`).
    pub version: u64,
    /// The resources of each type URL.
    pub resources: BTreeMap<String, Vec<Any>>,
}

/// A resource's version on a delta stream: a hash of its bytes (`DefaultHasher::new` has
/// fixed keys, so a restarted server gives the same versions).
#[must_use]
pub fn content_version(any: &Any) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    any.value.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// One type's state on a delta stream.
#[derive(Default)]
struct DeltaType {
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the client has: name → version.
    known: HashMap<String, String>,
}

impl DeltaType {
    /// The response that brings the client to `resources`, if anything differs.
    fn diff(&mut self, resources: &[Any]) -> Option<(Vec<Resource>, Vec<String>)> {
        let mut wanted: HashMap<String, (&Any, String)> = HashMap::new();
        for any in resources {
            let name = crate::fixtures::resource_name(any).expect("a named resource");
            if self.wildcard || self.names.contains(&name) {
                wanted.insert(name, (any, content_version(any)));
            }
        }
        let mut changed: Vec<Resource> = wanted
            .iter()
            .filter(|(name, (_, v))| self.known.get(*name) != Some(v))
            .map(|(name, (any, v))| Resource {
                name: name.clone(),
                version: v.clone(),
                resource: Some((*any).clone()),
                ..Default::default()
            })
            .collect();
        changed.sort_by(|a, b| a.name.cmp(&b.name));
        let mut removed: Vec<String> = self
            .known
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        removed.sort();
        if changed.is_empty() && removed.is_empty() {
            return None;
        }
        for r in &changed {
            self.known.insert(r.name.clone(), r.version.clone());
        }
        for n in &removed {
            self.known.remove(n);
        }
        Some((changed, removed))
    }
}

/// What a server saw, with when ([`AdsService`]'s clock).
#[derive(Debug, Default)]
pub struct AdsLog {
    /// Streams opened (both protocols); a stream's number is the count when it opened (from 1).
    pub streams: usize,
    /// Every state-of-the-world request received (ACKs and NACKs included).
    pub requests: Vec<(Duration, DiscoveryRequest)>,
    /// Every delta request received, with its stream's number.
    pub delta_requests: Vec<(Duration, usize, DeltaDiscoveryRequest)>,
    /// Every state-of-the-world response sent: its type URL and version.
    pub sent: Vec<(Duration, String, u64)>,
    /// Every delta response sent.
    pub delta_sent: Vec<DeltaSent>,
}

/// A delta response the server sent.
#[derive(Clone, Debug)]
pub struct DeltaSent {
    /// When ([`AdsService`]'s clock).
    pub at: Duration,
    /// The stream's number ([`AdsLog::streams`] when it opened).
    pub stream: usize,
    /// Its nonce (unique on its stream).
    pub nonce: String,
    /// Its type URL.
    pub type_url: String,
    /// The snapshot's version (`system_version_info`).
    pub version: u64,
    /// The resources it carries: name and version.
    pub resources: Vec<(String, String)>,
    /// `removed_resources`.
    pub removed: Vec<String>,
}

/// The ADS service: serves the latest [`Snapshot`] of a `watch` channel (whoever holds the
/// sender sets it: a test, or the simulation from outside the server's host, so that it
/// survives the server's restart) and records what it sees in an [`AdsLog`].
#[derive(Clone)]
pub struct AdsService {
    snapshot: tokio::sync::watch::Receiver<Snapshot>,
    log: Arc<Mutex<AdsLog>>,
    spacing: Duration,
    clock: fn() -> Duration,
}

impl AdsService {
    /// Serves `snapshot`, records in `log` stamped by `clock` (simulated time in the
    /// simulator), and sends the types of one state-of-the-world push `spacing` apart (zero:
    /// at once; the simulator spaces them so that a crash can land inside a push).
    #[must_use]
    pub fn new(
        snapshot: tokio::sync::watch::Receiver<Snapshot>,
        log: Arc<Mutex<AdsLog>>,
        spacing: Duration,
        clock: fn() -> Duration,
    ) -> Self {
        Self {
            snapshot,
            log,
            spacing,
            clock,
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, AdsLog> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DiscoveryResponse, tonic::Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::StreamAggregatedResourcesStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.log().streams += 1;
        let me = self.clone();
        let mut snapshots = self.snapshot.clone();
        tokio::spawn(async move {
            let mut sent: HashMap<String, u64> = HashMap::new();
            // Ordered: a push sends the types in the same order on every run.
            let mut subscribed: BTreeSet<String> = BTreeSet::new();
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    r = inbound.message() => match r {
                        Ok(Some(r)) => {
                            subscribed.insert(r.type_url.clone());
                            me.log().requests.push(((me.clock)(), r));
                        }
                        _ => return,
                    },
                    changed = snapshots.changed() => if changed.is_err() { return },
                }
                let snap = snapshots.borrow_and_update().clone();
                for type_url in &subscribed {
                    if sent.get(type_url) == Some(&snap.version) {
                        continue;
                    }
                    if nonce > 0 && !me.spacing.is_zero() {
                        tokio::time::sleep(me.spacing).await;
                    }
                    nonce += 1;
                    let response = DiscoveryResponse {
                        version_info: snap.version.to_string(),
                        resources: snap.resources.get(type_url).cloned().unwrap_or_default(),
                        type_url: type_url.clone(),
                        nonce: nonce.to_string(),
                        ..Default::default()
                    };
                    if tx.send(Ok(response)).is_err() {
                        return;
                    }
                    me.log()
                        .sent
                        .push(((me.clock)(), type_url.clone(), snap.version));
                    sent.insert(type_url.clone(), snap.version);
                }
            }
        });
        Ok(tonic::Response::new(UnboundedReceiverStream::new(rx)))
    }

    type DeltaAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DeltaDiscoveryResponse, tonic::Status>>;

    async fn delta_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let stream = {
            let mut log = self.log();
            log.streams += 1;
            log.streams
        };
        let me = self.clone();
        let mut snapshots = self.snapshot.clone();
        tokio::spawn(async move {
            let mut types: BTreeMap<String, DeltaType> = BTreeMap::new();
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    r = inbound.message() => match r {
                        Ok(Some(r)) => {
                            let t = types.entry(r.type_url.clone()).or_insert_with(|| DeltaType {
                                known: r.initial_resource_versions.clone().into_iter().collect(),
                                ..DeltaType::default()
                            });
                            for n in &r.resource_names_subscribe {
                                if n == "*" {
                                    t.wildcard = true;
                                } else {
                                    t.names.insert(n.clone());
                                }
                            }
                            for n in &r.resource_names_unsubscribe {
                                if n == "*" {
                                    t.wildcard = false;
                                } else {
                                    t.names.remove(n);
                                }
                                // Unsubscribed: the client forgets it.
                                t.known.remove(n);
                            }
                            me.log().delta_requests.push(((me.clock)(), stream, r));
                        }
                        _ => return,
                    },
                    changed = snapshots.changed() => if changed.is_err() { return },
                }
                let snap = snapshots.borrow_and_update().clone();
                for (type_url, t) in &mut types {
                    let resources = snap.resources.get(type_url).cloned().unwrap_or_default();
                    let Some((changed, removed)) = t.diff(&resources) else {
                        continue;
                    };
                    if nonce > 0 && !me.spacing.is_zero() {
                        tokio::time::sleep(me.spacing).await;
                    }
                    nonce += 1;
                    let sent = DeltaSent {
                        at: Duration::ZERO,
                        stream,
                        nonce: nonce.to_string(),
                        type_url: type_url.clone(),
                        version: snap.version,
                        resources: changed
                            .iter()
                            .map(|r| (r.name.clone(), r.version.clone()))
                            .collect(),
                        removed: removed.clone(),
                    };
                    let response = DeltaDiscoveryResponse {
                        system_version_info: snap.version.to_string(),
                        resources: changed,
                        type_url: type_url.clone(),
                        removed_resources: removed,
                        nonce: nonce.to_string(),
                        ..Default::default()
                    };
                    if tx.send(Ok(response)).is_err() {
                        return;
                    }
                    me.log().delta_sent.push(DeltaSent {
                        at: (me.clock)(),
                        ..sent
                    });
                }
            }
        });
        Ok(tonic::Response::new(UnboundedReceiverStream::new(rx)))
    }
}
