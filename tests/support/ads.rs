//! An in-repo ADS management server for the xDS end-to-end tests: a tonic server from the
//! `envoy-types` protos, state of the world and delta, on its own thread and runtime.
//!
//! It holds one snapshot (a version and the resources of each type URL). A state-of-the-world
//! stream answers a type once the client asked for it, and again whenever the snapshot changes.
//! A delta stream keeps, per type, the client's subscription (`*` or names) and the version of
//! each resource the client has (from `initial_resource_versions`, then from what it sent); on
//! each request and snapshot change it sends the subscribed resources whose version differs
//! (a resource's version is a hash of its bytes, so it survives a restart) and, in
//! `removed_resources`, those the client has that the snapshot no longer holds. Every request
//! received is recorded (ACKs and NACKs included) for the tests to look at. `stop` drops the
//! runtime: every stream breaks at once, like a killed process.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sluice_xds::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
    aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    },
};
use sluice_xds::envoy_types::pb::google::protobuf::Any;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// What the server serves: a version and the resources of each type URL.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub version: u64,
    pub resources: BTreeMap<String, Vec<Any>>,
}

struct Shared {
    snapshot: tokio::sync::watch::Sender<Snapshot>,
    requests: Mutex<Vec<DiscoveryRequest>>,
    delta_requests: Mutex<Vec<DeltaDiscoveryRequest>>,
}

/// A resource's version on a delta stream: a hash of its bytes (`DefaultHasher::new` has
/// fixed keys, so a restarted server gives the same versions).
fn content_version(any: &Any) -> String {
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
            let name = sluice_xds::fixtures::resource_name(any).expect("a named resource");
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

struct Service(Arc<Shared>);

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DiscoveryResponse, tonic::Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::StreamAggregatedResourcesStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = self.0.clone();
        let mut snapshots = shared.snapshot.subscribe();
        tokio::spawn(async move {
            let mut sent: HashMap<String, u64> = HashMap::new();
            let mut subscribed: HashSet<String> = HashSet::new();
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    r = inbound.message() => match r {
                        Ok(Some(r)) => {
                            subscribed.insert(r.type_url.clone());
                            shared.requests.lock().unwrap().push(r);
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
        let shared = self.0.clone();
        let mut snapshots = shared.snapshot.subscribe();
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
                            shared.delta_requests.lock().unwrap().push(r);
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
                    nonce += 1;
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
                }
            }
        });
        Ok(tonic::Response::new(UnboundedReceiverStream::new(rx)))
    }
}

/// A running server.
pub struct AdsServer {
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AdsServer {
    /// Serves `snapshot` on 127.0.0.1:`port`.
    pub fn start(port: u16, snapshot: Snapshot) -> AdsServer {
        let (snapshot_tx, _) = tokio::sync::watch::channel(snapshot);
        let shared = Arc::new(Shared {
            snapshot: snapshot_tx,
            requests: Mutex::new(Vec::new()),
            delta_requests: Mutex::new(Vec::new()),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let service = Service(shared.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
                ready_tx.send(()).unwrap();
                let service = AggregatedDiscoveryServiceServer::new(service);
                let server = async move {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let service =
                            hyper_util::service::TowerToHyperService::new(service.clone());
                        tokio::spawn(async move {
                            let _ = hyper_util::server::conn::auto::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .http2_only()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                        });
                    }
                };
                tokio::select! {
                    () = server => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime cancels every stream's task: the connections close.
            rt.shutdown_background();
        });
        ready_rx.recv().unwrap();
        AdsServer {
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Serves `resources` as the next version.
    pub fn push(&self, resources: BTreeMap<String, Vec<Any>>) {
        self.shared.snapshot.send_modify(|s| {
            s.version += 1;
            s.resources = resources;
        });
    }

    /// The version served.
    pub fn version(&self) -> u64 {
        self.shared.snapshot.borrow().version
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<DiscoveryRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Every delta request received so far.
    pub fn delta_requests(&self) -> Vec<DeltaDiscoveryRequest> {
        self.shared.delta_requests.lock().unwrap().clone()
    }

    /// The version a delta stream gives a resource.
    pub fn resource_version(any: &Any) -> String {
        content_version(any)
    }

    /// Stops at once, breaking every stream.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AdsServer {
    fn drop(&mut self) {
        self.halt();
    }
}
