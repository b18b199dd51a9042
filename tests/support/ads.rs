//! An in-repo ADS management server for the xDS end-to-end tests: the service of
//! `sluice_xds::test_server` (state of the world and delta; the simulator serves the same one)
//! hosted over hyper on its own thread and runtime.
//!
//! It holds one snapshot (a version and the resources of each type URL); see the service's
//! docs for what each protocol sends. Every request received is recorded (ACKs and NACKs
//! included) for the tests to look at. `stop` drops the runtime: every stream breaks at once,
//! like a killed process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_xds::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest,
    aggregated_discovery_service_server::AggregatedDiscoveryServiceServer,
};
use sluice_xds::envoy_types::pb::google::protobuf::Any;
pub use sluice_xds::test_server::Snapshot;
use sluice_xds::test_server::{AdsLog, AdsService, content_version};

struct Shared {
    snapshot: tokio::sync::watch::Sender<Snapshot>,
    log: Arc<Mutex<AdsLog>>,
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
        let (snapshot_tx, snapshot_rx) = tokio::sync::watch::channel(snapshot);
        let log = Arc::new(Mutex::new(AdsLog::default()));
        let service = AdsService::new(snapshot_rx, log.clone(), Duration::ZERO, || Duration::ZERO);
        let shared = Arc::new(Shared {
            snapshot: snapshot_tx,
            log,
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
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
        let log = self.shared.log.lock().unwrap();
        log.requests.iter().map(|(_, r)| r.clone()).collect()
    }

    /// Every delta request received so far.
    pub fn delta_requests(&self) -> Vec<DeltaDiscoveryRequest> {
        let log = self.shared.log.lock().unwrap();
        log.delta_requests
            .iter()
            .map(|(_, _, r)| r.clone())
            .collect()
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
