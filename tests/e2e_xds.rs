//! xDS end to end: the `sluice` binary takes its listener, routes, cluster and endpoints from
//! an ADS management server (the in-repo one of `support/ads.rs`), with nginx upstreams.
//! Checked: the first config serves; an EDS change is applied; an invalid listener is NACKed
//! with a useful `error_detail` while traffic goes on; the management server killed and
//! restarted — traffic never stops, and the client resubscribes and takes the next version.
//! The same over delta xDS (plus a resource removed with `removed_resources`, the
//! resubscription's `initial_resource_versions`, and the resync after a NACK: a listener whose
//! switch failed, its port held, comes back once the port is free). And against a management server not written
//! in this project (`tests/xds_server.py`: Python, grpcio and the `xds-protos` package), run as
//! a separate process, once per protocol, with slow upstreams and a client whose requests
//! never fail throughout: the first config and an update; a listener on port 99999 NACKed by
//! its xDS field path, the ACKed version unmoved, the next good snapshot served; the server
//! killed (SIGKILL) and started again, the client resubscribing with its node and the version
//! (SotW) or the `initial_resource_versions` (delta) of what it serves. And an EDS update
//! applied in place: a kept-alive client connection carries on across pushes that add and
//! remove endpoints. And an assignment nothing subscribed to, dropped and counted by type. And
//! istiod's HTTP connection manager: its metadata exchange filter's peer metadata headers
//! removed from requests and responses. And the fields ignored on purpose (a `stat_prefix`)
//! counted by type in `sluice_xds_ignored_fields`. And TLS and mutual TLS to the Python server,
//! and a server of an untrusted CA never used. And warming per resource: a cluster whose
//! endpoints never come holds back only what routes to it, then serves 503 after the initial
//! fetch timeout.

#[path = "support/ads.rs"]
mod ads;
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ads::{AdsServer, Snapshot};
use sluice_xds::envoy_types::pb::google::protobuf::Any;
use sluice_xds::fixtures::{any, assignment, eds_cluster, http_listener, route_config};
use sluice_xds::translate::ResourceType;
use support::*;

/// The dynamic resources: listener `in` on `listen` routing everything to cluster `web`, whose
/// one endpoint is 127.0.0.1:`upstream`.
fn resources(listen: u32, upstream: u32) -> BTreeMap<String, Vec<Any>> {
    BTreeMap::from([
        (
            ResourceType::Cluster.type_url().to_owned(),
            vec![any(&eds_cluster("web"))],
        ),
        (
            ResourceType::Endpoints.type_url().to_owned(),
            vec![any(&assignment("web", &[("127.0.0.1", upstream, 0)]))],
        ),
        (
            ResourceType::Listener.type_url().to_owned(),
            vec![any(&http_listener("in", "127.0.0.1", listen, "routes"))],
        ),
        (
            ResourceType::Route.type_url().to_owned(),
            vec![any(&route_config("routes", "web"))],
        ),
    ])
}

/// `GET /` with `connection: close`: `(status, body)`, or `(0, "")` when nothing listens yet.
fn get(to: SocketAddr) -> (u16, String) {
    get_if_listening(to, "/")
}

/// A config with nothing but the admin API on `admin` and its xDS from the ADS server on
/// `ads_port`, as node `sidecar-1`; `xds_settings` adds to the `xds` section (`mode: delta`).
fn ads_bootstrap(admin: u16, ads_port: u16, xds_settings: &str) -> String {
    let xds_settings = if xds_settings.is_empty() {
        String::new()
    } else {
        format!(", {xds_settings}")
    };
    format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
node: {{ id: sidecar-1, cluster: e2e }}
xds: {{ cluster: xds_server{xds_settings} }}
listeners: []
clusters:
  - name: xds_server
    hosts: [ {{ address: 127.0.0.1:{ads_port} }} ]
"#
    )
}

/// Polls until `check` holds (a convergence bound, not a speed assertion).
fn eventually(what: &str, sluice: &Proc, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not reached\n--- sluice log ---\n{}",
            sluice.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn config_from_xds_serves_updates_refuses_bad_listeners_and_survives_a_restart() {
    if !require_peers(&["nginx"]) {
        return;
    }
    let dir = TempDir::new("xds");
    let (up_a, up_b, listen, admin, ads_port) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let _a = start_nginx(&dir, "a", up_a, "a");
    let _b = start_nginx(&dir, "b", up_b, "b");
    let server = AdsServer::start(ads_port, Snapshot::default());
    server.push(resources(u32::from(listen), u32::from(up_a)));
    let config = ads_bootstrap(admin, ads_port, "");
    let sluice = start_sluice(&dir, &config, 2, addr(admin));
    let to = addr(listen);

    // The first config: a listener that exists only in xDS answers from upstream a.
    eventually("the first config serves", &sluice, || {
        get(to) == (200, "a".into())
    });
    // Every type was ACKed with the version served: an empty error, the version, the nonce.
    let acked = |version: u64| {
        let version = version.to_string();
        let requests = server.requests();
        ResourceType::ALL
            .iter()
            .filter(|t| **t != ResourceType::Secret)
            .all(|t| {
                requests.iter().any(|r| {
                    r.type_url == t.type_url()
                        && r.version_info == version
                        && r.error_detail.is_none()
                        && !r.response_nonce.is_empty()
                })
            })
    };
    eventually("every type ACKed", &sluice, || acked(server.version()));
    assert_eq!(
        server.requests()[0].node.as_ref().map(|n| n.id.as_str()),
        Some("sidecar-1")
    );

    // An EDS change: the endpoint moves to upstream b.
    server.push(resources(u32::from(listen), u32::from(up_b)));
    eventually("the new endpoint is used", &sluice, || {
        get(to) == (200, "b".into())
    });
    // Its ACK sent (the workers serve b a moment before the client acknowledges it: a bad
    // push folded into the update still in flight would be NACKed with the version before).
    eventually("the EDS change ACKed", &sluice, || acked(server.version()));

    // An invalid listener (port 99999) is NACKed with a useful error; b still answers.
    let good = server.version();
    let mut bad = resources(u32::from(listen), u32::from(up_b));
    bad.insert(
        ResourceType::Listener.type_url().to_owned(),
        vec![any(&http_listener("in", "127.0.0.1", 99999, "routes"))],
    );
    server.push(bad);
    eventually("the bad listener NACKed", &sluice, || {
        server.requests().iter().any(|r| {
            r.type_url == ResourceType::Listener.type_url()
                && r.version_info == good.to_string()
                && r.error_detail.as_ref().is_some_and(|e| {
                    e.message.contains("listener \"in\"") && e.message.contains("99999")
                })
        })
    });
    for _ in 0..20 {
        assert_eq!(get(to), (200, "b".into()), "the last good config serves");
    }
    // The metrics say so.
    let metrics = || http_request(addr(admin), "GET", "/stats/prometheus").1;
    let text = metrics();
    assert!(
        text.lines()
            .any(|l| l == "sluice_xds_nacked_total{type=\"listener\"} 1")
            && text.lines().any(|l| l == "sluice_xds_connected 1")
            && text
                .lines()
                .any(|l| l == "sluice_xds_nacked_total{type=\"cluster\"} 0"),
        "{text}"
    );
    // The listener's HTTP connection manager has a `stat_prefix` (telemetry only): ignored,
    // and counted in the config serving — the refused listener changed nothing.
    let ignored: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("sluice_xds_ignored_fields{"))
        .collect();
    assert_eq!(
        ignored,
        [
            "sluice_xds_ignored_fields{type=\"cluster\"} 0",
            "sluice_xds_ignored_fields{type=\"endpoints\"} 0",
            "sluice_xds_ignored_fields{type=\"listener\"} 1",
            "sluice_xds_ignored_fields{type=\"route\"} 0",
            "sluice_xds_ignored_fields{type=\"secret\"} 0",
        ],
        "{text}"
    );

    // `/xds` shows each type's accepted version, its resources and the listener's NACK.
    let (status, body) = http_request(addr(admin), "GET", "/xds");
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(view["connected"], true, "{view}");
    let listener = &view["types"]["listener"];
    assert_eq!(listener["version"], good.to_string(), "{view}");
    assert_eq!(listener["resources"], serde_json::json!(["in"]), "{view}");
    assert!(
        listener["updated_at"].as_u64().is_some_and(|t| t > 0),
        "{view}"
    );
    let nack = listener["last_nack"]["error"].as_str().unwrap_or("");
    assert!(
        nack.contains("listener \"in\"") && nack.contains("99999"),
        "{view}"
    );
    assert_eq!(
        view["types"]["cluster"]["last_nack"],
        serde_json::Value::Null,
        "{view}"
    );
    // `/config_dump` marks each entry static or dynamic; the listener serves version `good`
    // and its refused update is its `error_state`; the cluster `web` (accepted at the bad
    // push's version) has none; the route configuration and the endpoints are listed too.
    let (status, dump) = http_request(addr(admin), "GET", "/config_dump");
    assert_eq!(status, 200, "{dump}");
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("json");
    let entry = |key: &str, name: &str| {
        dump[key]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["name"] == name))
            .map(|e| e["xds_status"].clone())
            .unwrap_or_else(|| panic!("{key} {name}: {dump}"))
    };
    assert_eq!(
        entry("clusters", "xds_server"),
        serde_json::json!({ "origin": "static" })
    );
    let l = entry("listeners", "in");
    assert_eq!(l["origin"], "dynamic", "{dump}");
    assert_eq!(l["version_info"], good.to_string(), "{dump}");
    assert!(l["last_updated"].as_u64().is_some_and(|t| t > 0), "{dump}");
    assert!(
        l["error_state"]["details"]
            .as_str()
            .is_some_and(|e| e.contains("listener \"in\"") && e.contains("99999")),
        "{dump}"
    );
    assert!(
        l["error_state"]["last_update_attempt"]
            .as_u64()
            .is_some_and(|t| t >= l["last_updated"].as_u64().unwrap()),
        "{dump}"
    );
    let web = entry("clusters", "web");
    assert_eq!(web["origin"], "dynamic", "{dump}");
    assert_eq!(web["version_info"], server.version().to_string(), "{dump}");
    assert!(web.get("error_state").is_none(), "{dump}");
    for (kind, name) in [("route", "routes"), ("endpoints", "web")] {
        assert!(
            dump["xds_resources"][kind].as_array().is_some_and(|a| a
                .iter()
                .any(|r| r["name"] == name
                    && r["origin"] == "dynamic"
                    && r.get("error_state").is_none())),
            "{kind} {name}: {dump}"
        );
    }
    // The same clusters came with the refused listener: ACKed at that version.
    assert_eq!(
        view["types"]["cluster"]["version"],
        server.version().to_string(),
        "{view}"
    );
    assert!(
        text.lines().any(
            |l| l.starts_with("sluice_xds_update_timestamp_seconds{type=\"route\"} ")
                && !l.ends_with(" 0")
        ),
        "{text}"
    );

    // The management server dies: traffic goes on.
    server.stop();
    for _ in 0..20 {
        assert_eq!(get(to), (200, "b".into()), "serving while disconnected");
    }
    eventually("the connection gauge drops", &sluice, || {
        metrics().lines().any(|l| l == "sluice_xds_connected 0")
    });
    // It comes back with a later version: the client resubscribes and takes it.
    let server = AdsServer::start(
        ads_port,
        Snapshot {
            version: 100,
            ..Snapshot::default()
        },
    );
    server.push(resources(u32::from(listen), u32::from(up_a)));
    eventually("the restarted server's version applies", &sluice, || {
        let (status, body) = get(to);
        assert_eq!(status, 200, "traffic never stops: {body}");
        body == "a"
    });
    let requests = || server.requests();
    eventually("ACKed after the restart", &sluice, || {
        ResourceType::ALL
            .iter()
            .filter(|t| **t != ResourceType::Secret)
            .all(|t| {
                requests().iter().any(|r| {
                    r.type_url == t.type_url()
                        && r.version_info == "101"
                        && r.error_detail.is_none()
                })
            })
    });
    // It resubscribed with the node and the versions it had accepted: for listeners, the
    // last good one (the NACKed version was never accepted).
    let again = server.requests();
    assert!(again[0].node.is_some());
    let first_lds = again
        .iter()
        .find(|r| r.type_url == ResourceType::Listener.type_url())
        .expect("an LDS request");
    assert_eq!(first_lds.version_info, good.to_string());
    assert!(first_lds.response_nonce.is_empty());
}

/// Requests `GET /` on `to` every 5 ms until stopped, keeping every answer that was not a 200
/// from one of `bodies` (traffic must never stop).
struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    done: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: std::thread::JoinHandle<(usize, Vec<(u16, String)>)>,
}

impl Traffic {
    fn start(to: SocketAddr, bodies: &'static [&'static str]) -> Traffic {
        Traffic::start_with(
            move || get(to),
            move |status, body| status == 200 && bodies.contains(&body),
        )
    }

    /// Makes `request` again and again until stopped, keeping every answer that is not `ok`.
    fn start_with(
        request: impl Fn() -> (u16, String) + Send + 'static,
        ok: impl Fn(u16, &str) -> bool + Send + 'static,
    ) -> Traffic {
        use std::sync::atomic::Ordering::Relaxed;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (flag, counter) = (stop.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let mut bad = Vec::new();
            while !flag.load(Relaxed) {
                let (status, body) = request();
                if !ok(status, &body) {
                    bad.push((status, body));
                }
                counter.fetch_add(1, Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
            (counter.load(Relaxed), bad)
        });
        Traffic { stop, done, thread }
    }

    /// Waits until `n` more requests completed: traffic was checked in the current phase.
    fn during(&self, phase: &str, sluice: &Proc, n: usize) {
        let until = self.done.load(std::sync::atomic::Ordering::Relaxed) + n;
        eventually(phase, sluice, || {
            self.done.load(std::sync::atomic::Ordering::Relaxed) >= until
        });
    }

    /// How many requests were made, and the failures.
    fn finish(self) -> (usize, Vec<(u16, String)>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the traffic thread")
    }
}

/// Delta xDS against the in-repo server: the first config, an EDS change, a listener removed
/// by `removed_resources`, a bad listener NACKed, and a server restart after which the client
/// resubscribes with `initial_resource_versions` — so that the server resends only what
/// changed — while requests never fail.
/// A state-of-the-world EDS response carries every assignment the server has, including one
/// for a cluster nothing here has (`ghost`): it is dropped on arrival (the config serves with
/// `web`'s alone, `/xds` lists `web` only) and counted, once per response, in
/// `sluice_xds_unsolicited_resources_total{type="endpoints"}`; the other types count nothing.
#[test]
fn resources_nothing_subscribed_to_are_dropped_and_counted_by_type() {
    if !require_peers(&["nginx"]) {
        return;
    }
    let dir = TempDir::new("xds-unsolicited");
    let (up, listen, admin, ads_port) = (free_port(), free_port(), free_port(), free_port());
    let _up = start_nginx(&dir, "up", up, "web");
    let server = AdsServer::start(ads_port, Snapshot::default());
    let mut snapshot = resources(u32::from(listen), u32::from(up));
    snapshot
        .get_mut(ResourceType::Endpoints.type_url())
        .unwrap()
        .push(any(&assignment("ghost", &[("127.0.0.1", 9, 0)])));
    server.push(snapshot);
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
xds: {{ cluster: xds_server }}
listeners: []
clusters:
  - name: xds_server
    hosts: [ {{ address: 127.0.0.1:{ads_port} }} ]
"#
    );
    let sluice = start_sluice(&dir, &config, 1, addr(admin));
    eventually("the config serves", &sluice, || {
        get(addr(listen)) == (200, "web".into())
    });
    let unsolicited = || {
        let text = http_request(addr(admin), "GET", "/stats/prometheus").1;
        text.lines()
            .filter(|l| l.starts_with("sluice_xds_unsolicited_resources_total{"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // Counted as it arrived, before the response that carried `web`'s endpoints was applied.
    assert_eq!(
        unsolicited(),
        [
            "sluice_xds_unsolicited_resources_total{type=\"cluster\"} 0",
            "sluice_xds_unsolicited_resources_total{type=\"endpoints\"} 1",
            "sluice_xds_unsolicited_resources_total{type=\"listener\"} 0",
            "sluice_xds_unsolicited_resources_total{type=\"route\"} 0",
            "sluice_xds_unsolicited_resources_total{type=\"secret\"} 0",
        ]
    );
    let (status, body) = http_request(addr(admin), "GET", "/xds");
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        view["types"]["endpoints"]["resources"],
        serde_json::json!(["web"]),
        "{view}"
    );
}

/// Warming per resource: a cluster whose endpoints never come holds back only what routes to
/// it — listener `in` serves while cluster `api` warms (listed in `/xds`), and once the
/// bootstrap's `initial_fetch_timeout` (the setting under test, shortened) expires `api`
/// serves with no endpoints: the listener routing to it answers 503, nothing is NACKed.
#[test]
fn a_cluster_whose_endpoints_never_come_holds_back_nothing_else_then_answers_503() {
    if !require_peers(&["nginx"]) {
        return;
    }
    let dir = TempDir::new("xds-warming");
    let (up, listen, listen_api, admin, ads_port) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let _up = start_nginx(&dir, "up", up, "web");
    let server = AdsServer::start(ads_port, Snapshot::default());
    let mut snapshot = resources(u32::from(listen), u32::from(up));
    let mut api = eds_cluster("api");
    api.name = "api".into();
    snapshot
        .get_mut(ResourceType::Cluster.type_url())
        .unwrap()
        .push(any(&api));
    snapshot
        .get_mut(ResourceType::Listener.type_url())
        .unwrap()
        .push(any(&http_listener(
            "api-in",
            "127.0.0.1",
            u32::from(listen_api),
            "api-routes",
        )));
    snapshot
        .get_mut(ResourceType::Route.type_url())
        .unwrap()
        .push(any(&route_config("api-routes", "api")));
    server.push(snapshot);
    let config = ads_bootstrap(admin, ads_port, "initial_fetch_timeout: 8s");
    let sluice = start_sluice(&dir, &config, 1, addr(admin));
    let xds = || -> serde_json::Value {
        serde_json::from_str(&http_request(addr(admin), "GET", "/xds").1).expect("json")
    };
    eventually("listener `in` serves", &sluice, || {
        get(addr(listen)) == (200, "web".into())
    });
    // `api` still waits for its endpoints (the timeout is 8 s from when it was received), and
    // so do the route and listener to it.
    let view = xds();
    assert_eq!(
        view["types"]["cluster"]["warming"],
        serde_json::json!(["api"]),
        "{view}"
    );
    assert_eq!(
        view["types"]["listener"]["warming"],
        serde_json::json!(["api-in"]),
        "{view}"
    );
    assert_eq!(
        get(addr(listen_api)).0,
        0,
        "nothing listens for `api-in` yet"
    );
    // The same in the metrics: one cluster and one listener warming, no timeout yet.
    let metric = |sample: &str| -> String {
        let (_, text) = http_request(addr(admin), "GET", "/stats/prometheus");
        text.lines()
            .find(|l| l.starts_with(&format!("{sample} ")))
            .unwrap_or_else(|| panic!("no {sample} in:\n{text}"))
            .to_owned()
    };
    for sample in [
        "sluice_xds_warming_resources{type=\"cluster\"} 1",
        "sluice_xds_warming_resources{type=\"listener\"} 1",
        "sluice_xds_warming_timeouts_total{type=\"endpoints\"} 0",
    ] {
        let (name, _) = sample.rsplit_once(' ').unwrap();
        assert_eq!(metric(name), sample);
    }
    // The timeout: `api` serves with no endpoints.
    eventually("`api-in` answers 503", &sluice, || {
        get(addr(listen_api)).0 == 503
    });
    assert_eq!(get(addr(listen)), (200, "web".into()));
    for sample in [
        "sluice_xds_warming_resources{type=\"cluster\"} 0",
        "sluice_xds_warming_resources{type=\"listener\"} 0",
        "sluice_xds_warming_timeouts_total{type=\"endpoints\"} 1",
        "sluice_xds_warming_timeouts_total{type=\"route\"} 0",
    ] {
        let (name, _) = sample.rsplit_once(' ').unwrap();
        assert_eq!(metric(name), sample);
    }
    let view = xds();
    assert_eq!(
        view["types"]["cluster"]["warming"],
        serde_json::json!([]),
        "{view}"
    );
    for t in ["cluster", "endpoints", "listener", "route"] {
        assert!(view["types"][t]["last_nack"].is_null(), "{view}");
    }
    assert_eq!(
        view["types"]["cluster"]["resources"],
        serde_json::json!(["api", "web"]),
        "{view}"
    );
}

#[test]
fn delta_xds_serves_updates_removals_refuses_bad_listeners_and_resumes_with_resource_versions() {
    if !require_peers(&["nginx"]) {
        return;
    }
    let dir = TempDir::new("xds-delta");
    let (up_a, up_b, listen, extra, admin, ads_port) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let _a = start_nginx(&dir, "a", up_a, "a");
    let _b = start_nginx(&dir, "b", up_b, "b");
    let lds = ResourceType::Listener.type_url().to_owned();
    // Two listeners: `in`, and `extra` on another port with the same routes.
    let with_extra = |upstream: u16| {
        let mut r = resources(u32::from(listen), u32::from(upstream));
        r.get_mut(&lds).expect("listeners").push(any(&http_listener(
            "extra",
            "127.0.0.1",
            u32::from(extra),
            "routes",
        )));
        r
    };
    let server = AdsServer::start(ads_port, Snapshot::default());
    server.push(with_extra(up_a));
    let config = ads_bootstrap(admin, ads_port, "mode: delta");
    let sluice = start_sluice(&dir, &config, 2, addr(admin));
    let to = addr(listen);

    // The first config, over the delta stream only.
    eventually("the first config serves", &sluice, || {
        get(to) == (200, "a".into()) && get(addr(extra)) == (200, "a".into())
    });
    let traffic = Traffic::start(to, &["a", "b"]);
    eventually("every type ACKed", &sluice, || {
        let requests = server.delta_requests();
        ResourceType::ALL
            .iter()
            .filter(|t| **t != ResourceType::Secret)
            .all(|t| {
                requests.iter().any(|r| {
                    r.type_url == t.type_url()
                        && !r.response_nonce.is_empty()
                        && r.error_detail.is_none()
                })
            })
    });
    assert!(server.requests().is_empty(), "no state-of-the-world stream");
    let first = &server.delta_requests()[0];
    assert_eq!(
        first.node.as_ref().map(|n| n.id.as_str()),
        Some("sidecar-1")
    );
    assert_eq!(first.type_url, ResourceType::Cluster.type_url());
    assert_eq!(first.resource_names_subscribe, ["*"]);
    assert!(first.initial_resource_versions.is_empty());
    let xds = || {
        let (status, body) = http_request(addr(admin), "GET", "/xds");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).expect("json")
    };
    assert_eq!(xds()["mode"], "delta");

    // An EDS change: only the assignment is sent; the endpoint moves to upstream b.
    server.push(with_extra(up_b));
    eventually("the new endpoint is used", &sluice, || {
        get(to) == (200, "b".into())
    });
    traffic.during("traffic after the EDS change", &sluice, 5);
    let b_assignment = any(&assignment("web", &[("127.0.0.1", u32::from(up_b), 0)]));
    eventually("the assignment's version shown", &sluice, || {
        xds()["types"]["endpoints"]["resource_versions"]
            == serde_json::json!({ "web": AdsServer::resource_version(&b_assignment) })
    });

    // Resync after a NACK. `extra` removed, then added back while its port is held by another
    // socket: the switch fails (NACK "applying failed"), the config serving stays. The server
    // never resends what it sent, so the client ends the stream and opens a new one whose
    // `initial_resource_versions` lack `extra`: the server sends it again (NACKed again while
    // the port is held); once the port is free, `extra` serves.
    server.push(resources(u32::from(listen), u32::from(up_b)));
    eventually("extra removed", &sluice, || get(addr(extra)).0 == 0);
    let holder = std::net::TcpListener::bind(addr(extra)).expect("hold extra's port");
    let streams = |server: &AdsServer| {
        server
            .delta_requests()
            .iter()
            .filter(|r| r.node.is_some())
            .count()
    };
    let apply_nacks = |server: &AdsServer| {
        server
            .delta_requests()
            .iter()
            .filter(|r| {
                r.type_url == lds
                    && r.error_detail
                        .as_ref()
                        .is_some_and(|e| e.message.starts_with("applying failed"))
            })
            .count()
    };
    let streams_before = streams(&server);
    server.push(with_extra(up_b));
    eventually("the failed switch NACKed on two streams", &sluice, || {
        apply_nacks(&server) >= 2 && streams(&server) >= streams_before + 2
    });
    // The new stream's listener subscription names only what serves.
    let resubscribed = server
        .delta_requests()
        .into_iter()
        .rfind(|r| r.type_url == lds && r.resource_names_subscribe == ["*"])
        .expect("a listener subscription");
    assert_eq!(
        resubscribed
            .initial_resource_versions
            .keys()
            .collect::<Vec<_>>(),
        ["in"]
    );
    assert_eq!(get(to), (200, "b".into()), "the config serving stays");
    let metrics = http_request(addr(admin), "GET", "/stats/prometheus").1;
    let resyncs: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_xds_resyncs_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("sluice_xds_resyncs_total: {metrics}"));
    assert!(resyncs >= 1, "{metrics}");
    assert!(
        xds()["resyncs"].as_u64().is_some_and(|n| n >= resyncs),
        "{}",
        xds()
    );
    drop(holder);
    eventually("extra serves after a resync", &sluice, || {
        get(addr(extra)) == (200, "b".into())
    });
    traffic.during("traffic after the resync", &sluice, 5);

    // `extra` removed (`removed_resources`): its port closes, `in` serves on.
    server.push(resources(u32::from(listen), u32::from(up_b)));
    eventually("the removed listener is gone", &sluice, || {
        get(addr(extra)).0 == 0
            && xds()["types"]["listener"]["resources"] == serde_json::json!(["in"])
    });
    traffic.during("traffic after the removal", &sluice, 5);
    let good = server.version();
    let good_listener = any(&http_listener(
        "in",
        "127.0.0.1",
        u32::from(listen),
        "routes",
    ));
    let view = xds();
    assert_eq!(
        view["types"]["listener"]["resource_versions"],
        serde_json::json!({ "in": AdsServer::resource_version(&good_listener) }),
        "{view}"
    );
    assert_eq!(
        view["types"]["listener"]["version"],
        good.to_string(),
        "{view}"
    );

    // An invalid listener is NACKed with a useful error; the last good config serves.
    let mut bad = resources(u32::from(listen), u32::from(up_b));
    bad.insert(
        lds.clone(),
        vec![any(&http_listener("in", "127.0.0.1", 99999, "routes"))],
    );
    server.push(bad);
    eventually("the bad listener NACKed", &sluice, || {
        server.delta_requests().iter().any(|r| {
            r.type_url == lds
                && !r.response_nonce.is_empty()
                && r.error_detail.as_ref().is_some_and(|e| {
                    e.message.contains("listener \"in\"") && e.message.contains("99999")
                })
        })
    });
    for _ in 0..20 {
        assert_eq!(get(to), (200, "b".into()), "the last good config serves");
    }
    traffic.during("traffic after the NACK", &sluice, 5);
    let view = xds();
    assert_eq!(
        view["types"]["listener"]["version"],
        good.to_string(),
        "{view}"
    );
    assert!(
        view["types"]["listener"]["last_nack"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("99999")),
        "{view}"
    );
    // Each resync brings the bad listener again, and it is NACKed again (not a hot loop: the
    // backoff between resyncs is not reset by them).
    let bad_nacks = |server: &AdsServer| {
        server
            .delta_requests()
            .iter()
            .filter(|r| {
                r.type_url == lds
                    && r.error_detail
                        .as_ref()
                        .is_some_and(|e| e.message.contains("99999"))
            })
            .count()
    };
    eventually(
        "the bad listener NACKed again after a resync",
        &sluice,
        || bad_nacks(&server) >= 2,
    );
    // Every NACK counted: the client counts each before sending it, so the counter is never
    // behind what the server received.
    let received = apply_nacks(&server) + bad_nacks(&server);
    let metrics = http_request(addr(admin), "GET", "/stats/prometheus").1;
    let nacked: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_xds_nacked_total{type=\"listener\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("sluice_xds_nacked_total: {metrics}"));
    assert!(nacked >= received && received >= 4, "{nacked} {received}");

    // The management server dies and comes back with the endpoint on a again.
    server.stop();
    eventually("the connection gauge drops", &sluice, || {
        http_request(addr(admin), "GET", "/stats/prometheus")
            .1
            .lines()
            .any(|l| l == "sluice_xds_connected 0")
    });
    traffic.during("traffic while the server is down", &sluice, 5);
    let server = AdsServer::start(
        ads_port,
        Snapshot {
            version: 100,
            ..Snapshot::default()
        },
    );
    server.push(resources(u32::from(listen), u32::from(up_a)));
    eventually("the restarted server's endpoint applies", &sluice, || {
        get(to) == (200, "a".into())
    });
    traffic.during("traffic after the restart", &sluice, 5);
    // It resubscribed with the versions of what serves (the NACKed listener never was).
    let again = server.delta_requests();
    let first_of = |t: ResourceType| {
        again
            .iter()
            .find(|r| r.type_url == t.type_url())
            .unwrap_or_else(|| panic!("a {t:?} request: {again:?}"))
    };
    let version_of =
        |r: &sluice_xds::envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest| {
            let mut v: Vec<(String, String)> =
                r.initial_resource_versions.clone().into_iter().collect();
            v.sort();
            v
        };
    let expect =
        |name: &str, body: &Any| vec![(name.to_owned(), AdsServer::resource_version(body))];
    assert_eq!(
        version_of(first_of(ResourceType::Cluster)),
        expect("web", &any(&eds_cluster("web")))
    );
    assert_eq!(
        version_of(first_of(ResourceType::Endpoints)),
        expect("web", &b_assignment)
    );
    assert_eq!(
        version_of(first_of(ResourceType::Listener)),
        expect("in", &good_listener)
    );
    assert_eq!(
        version_of(first_of(ResourceType::Route)),
        expect("routes", &any(&route_config("routes", "web")))
    );
    assert_eq!(
        first_of(ResourceType::Endpoints).resource_names_subscribe,
        ["web"]
    );
    assert_eq!(
        first_of(ResourceType::Listener).resource_names_subscribe,
        ["*"]
    );
    assert!(again[0].node.is_some());
    // So the server resent only the assignment: the one ACK after the restart is EDS's.
    eventually("the EDS ACK", &sluice, || {
        server.delta_requests().iter().any(|r| {
            r.type_url == ResourceType::Endpoints.type_url() && !r.response_nonce.is_empty()
        })
    });
    let acked: Vec<String> = server
        .delta_requests()
        .iter()
        .filter(|r| !r.response_nonce.is_empty())
        .map(|r| r.type_url.clone())
        .collect();
    assert_eq!(acked, [ResourceType::Endpoints.type_url()], "{again:?}");

    let (count, failures) = traffic.finish();
    assert!(
        failures.is_empty(),
        "traffic stopped ({} of {count} requests failed): {failures:?}",
        failures.len()
    );
}

/// The Python management server of `tests/xds_server.py` (grpcio and the `xds-protos`
/// package's Envoy protos — not this project's code), as a separate process, serving the
/// snapshot `{"version", "listen", "upstream"}` written to a file it watches.
struct PyServer {
    proc: Proc,
    snapshot: std::path::PathBuf,
    log: std::path::PathBuf,
    /// Its command line (the script and its arguments), to start it again.
    args: Vec<String>,
}

impl PyServer {
    fn start(dir: &TempDir, port: u16, version: u64, listen: u16, upstream: u16) -> PyServer {
        PyServer::start_with(dir, port, version, listen, upstream, &[])
    }

    /// [`PyServer::start`] with more arguments (`--tls CERT KEY`, `--client-ca CA`).
    fn start_with(
        dir: &TempDir,
        port: u16,
        version: u64,
        listen: u16,
        upstream: u16,
        more: &[&str],
    ) -> PyServer {
        let snapshot = dir.path().join("xds-snapshot.json");
        let log = dir.path().join("xds-requests.jsonl");
        let script = repo().join("tests/xds_server.py");
        let (port_arg, snapshot_arg, log_arg) = (
            port.to_string(),
            snapshot.to_str().unwrap().to_owned(),
            log.to_str().unwrap().to_owned(),
        );
        let mut args = vec![script.to_str().unwrap(), &port_arg, &snapshot_arg, &log_arg];
        args.extend_from_slice(more);
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = PyServer {
            proc: spawn(dir, "xds_server", &python(), &argv),
            snapshot,
            log,
            args,
        };
        server.serve(version, listen, upstream);
        server
    }

    /// Kills it (SIGKILL: a crashed management server, no stream closed cleanly) and waits
    /// for it.
    fn kill(&mut self) {
        self.proc.signal("KILL");
        let _ = self.proc.child.wait();
    }

    /// Starts it again, on the same port, snapshot file and request log (appended to), and
    /// waits until it listens.
    fn restart(&mut self, dir: &TempDir, port: u16) {
        let argv: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.proc = spawn(dir, "xds_server-restarted", &python(), &argv);
        wait_listening(addr(port), &mut self.proc);
    }

    /// Serves the next snapshot (written beside, then renamed over the watched file).
    fn serve(&self, version: u64, listen: u16, upstream: u16) {
        self.serve_spec(
            serde_json::json!({ "version": version, "listen": listen, "upstream": upstream }),
        );
    }

    /// Serves the snapshot `spec` (see `tests/xds_server.py`).
    fn serve_spec(&self, spec: serde_json::Value) {
        let tmp = self.snapshot.with_extension("tmp");
        std::fs::write(&tmp, spec.to_string()).unwrap();
        std::fs::rename(&tmp, &self.snapshot).unwrap();
    }

    /// The requests it received (one JSON object each).
    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Whether a request ACKs `type_url` (a nonce, no error; in state of the world, at
    /// `version`).
    fn acked(&self, type_url: &str, version: Option<u64>) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                r["type_url"] == type_url
                    && r["nonce"].as_str().is_some_and(|n| !n.is_empty())
                    && r["error"].is_null()
                    && version.is_none_or(|v| r["version_info"].as_str() == Some(&*v.to_string()))
            })
            .count()
    }
}

/// `GET /sleep/40` (the Python upstream answers after 40 ms: a slow upstream, so that requests
/// are in flight whenever the config changes) with `connection: close`: `(status, body)`, or
/// `(0, "")` when nothing listens yet.
fn slow_get(to: SocketAddr) -> (u16, String) {
    get_if_listening(to, "/sleep/40")
}

/// Which Python upstream answered (its JSON's `upstream`), if one did.
fn upstream_of((status, body): (u16, String)) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    (status == 200).then(|| v["upstream"].as_str().map(str::to_owned))?
}

/// Against the Python management server, in `mode`, with slow upstreams (40 ms an answer) and a
/// client making requests the whole time (none may fail): the first config serves and every
/// type is ACKed; an EDS update (the endpoint moves from upstream a to b) is applied and ACKed.
/// A snapshot whose listener is on port 99999 is NACKed — the `error_detail` the server logs
/// names the listener and the xDS field's path —, the last good config serves on and the ACKed
/// version does not move; the next good snapshot (endpoint c) is ACKed and served. The server
/// killed (SIGKILL): traffic goes on; started again on the same port with the same snapshot,
/// the client reconnects with its node and what it serves (state of the world: the last
/// ACKed version; delta: `initial_resource_versions` naming its resources, so nothing
/// unchanged is sent again), and the next snapshot (endpoint a again) applies.
fn against_the_python_server(mode: &str) {
    let dir = TempDir::new(&format!("xds-py-{mode}"));
    let (up_a, up_b, up_c, listen, admin, ads_port) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let _a = start_py_upstream(&dir, "a", up_a);
    let _b = start_py_upstream(&dir, "b", up_b);
    let _c = start_py_upstream(&dir, "c", up_c);
    let mut server = PyServer::start(&dir, ads_port, 1, listen, up_a);
    wait_listening(addr(ads_port), &mut server.proc);
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
node: {{ id: sidecar-py, cluster: e2e }}
xds: {{ cluster: xds_server, mode: {mode} }}
listeners: []
clusters:
  - name: xds_server
    protocol: http2
    hosts: [ {{ address: 127.0.0.1:{ads_port} }} ]
"#
    );
    let sluice = start_sluice(&dir, &config, 2, addr(admin));
    let to = addr(listen);
    let sotw = mode == "sotw";
    let served_by = || upstream_of(slow_get(to));
    eventually("the first config serves", &sluice, || {
        served_by().as_deref() == Some("a")
    });
    eventually("every type ACKed", &sluice, || {
        ResourceType::ALL
            .iter()
            .filter(|t| **t != ResourceType::Secret)
            .all(|t| server.acked(t.type_url(), sotw.then_some(1)) >= 1)
    });
    let requests = server.requests();
    assert!(requests.iter().all(|r| r["mode"] == mode), "{requests:?}");
    assert_eq!(requests[0]["node"], "sidecar-py", "{requests:?}");
    if !sotw {
        assert_eq!(
            requests[0]["subscribe"],
            serde_json::json!(["*"]),
            "{requests:?}"
        );
    }
    // From here on, a client makes requests the whole time; every one must be answered by an
    // upstream.
    let traffic = Traffic::start_with(
        move || slow_get(to),
        |status, body| {
            upstream_of((status, body.to_owned())).is_some_and(|u| ["a", "b", "c"].contains(&&*u))
        },
    );

    server.serve(2, listen, up_b);
    eventually("the EDS update applies", &sluice, || {
        served_by().as_deref() == Some("b")
    });
    eventually("the EDS update ACKed", &sluice, || {
        if sotw {
            server.acked(ResourceType::Endpoints.type_url(), Some(2)) == 1
        } else {
            server.acked(ResourceType::Endpoints.type_url(), None) == 2
        }
    });
    if !sotw {
        // Delta: only the assignment changed, so only it was sent (and ACKed) again.
        for t in [
            ResourceType::Cluster,
            ResourceType::Listener,
            ResourceType::Route,
        ] {
            assert_eq!(server.acked(t.type_url(), None), 1, "{t:?}");
        }
    }
    traffic.during("serving b", &sluice, 10);

    // A listener on port 99999: NACKed, by its name and the xDS field's path.
    let xds_view = || {
        let (status, body) = http_request(addr(admin), "GET", "/xds");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).expect("json")
    };
    // The listener's ACKed version: state of the world resends every type at each version;
    // delta sent the listener once, at 1.
    let listener_version = if sotw { "2" } else { "1" };
    eventually("the listener's version ACKed", &sluice, || {
        xds_view()["types"]["listener"]["version"] == listener_version
    });
    server.serve_spec(serde_json::json!({
        "version": 3, "listen": listen, "upstream": up_b, "listener_port": 99999,
    }));
    let nack =
        "listener \"in\" address.socket_address.port_value: 99999 is not a port (0 to 65535)";
    eventually("the listener on port 99999 NACKed", &sluice, || {
        server.requests().iter().any(|r| {
            r["type_url"] == ResourceType::Listener.type_url()
                && r["error"].as_str() == Some(nack)
                // State of the world: the NACK carries the last version ACKed.
                && (!sotw || r["version_info"] == "2")
        })
    });
    traffic.during("after the NACK", &sluice, 10);
    assert_eq!(
        served_by().as_deref(),
        Some("b"),
        "the last good config serves"
    );
    let view = xds_view();
    assert_eq!(
        view["types"]["listener"]["version"], listener_version,
        "the NACK moves no version: {view}"
    );
    assert_eq!(
        view["types"]["listener"]["last_nack"]["error"], nack,
        "{view}"
    );
    // The next good snapshot is ACKed and served. (Delta: its listener is the one serving —
    // the client named it in `initial_resource_versions` when it resynchronised after the
    // NACK —, so only the assignment is sent.)
    let eds_acks = server.acked(ResourceType::Endpoints.type_url(), None);
    server.serve(4, listen, up_c);
    eventually("the next good snapshot serves", &sluice, || {
        served_by().as_deref() == Some("c")
    });
    eventually("the next good snapshot ACKed", &sluice, || {
        if sotw {
            xds_view()["types"]["listener"]["version"] == "4"
                && server.acked(ResourceType::Listener.type_url(), Some(4)) == 1
        } else {
            server.acked(ResourceType::Endpoints.type_url(), None) > eds_acks
        }
    });
    traffic.during("serving c", &sluice, 10);

    // The management server crashes: traffic goes on.
    server.kill();
    eventually("the connection gauge drops", &sluice, || {
        http_request(addr(admin), "GET", "/stats/prometheus")
            .1
            .lines()
            .any(|l| l == "sluice_xds_connected 0")
    });
    traffic.during("while the server is down", &sluice, 10);
    // Started again with the same snapshot: the client reconnects (jittered backoff, the
    // defaults) and resubscribes with what it serves.
    let before = server.requests().len();
    server.restart(&dir, ads_port);
    let after = || server.requests().split_off(before);
    eventually("every type resubscribed after the restart", &sluice, || {
        let again = after();
        ResourceType::ALL
            .iter()
            .filter(|t| **t != ResourceType::Secret)
            .all(|t| {
                again.iter().any(|r| {
                    r["type_url"] == t.type_url()
                        && r["error"].is_null()
                        && (sotw
                            && r["nonce"].as_str().is_some_and(|n| !n.is_empty())
                            && r["version_info"] == "4"
                            || !sotw && r["nonce"] == "")
                })
            })
    });
    let again = after();
    assert_eq!(again[0]["node"], "sidecar-py", "{again:?}");
    for (t, name) in [
        (ResourceType::Cluster, "web"),
        (ResourceType::Endpoints, "web"),
        (ResourceType::Listener, "in"),
        (ResourceType::Route, "routes"),
    ] {
        let first = again
            .iter()
            .find(|r| r["type_url"] == t.type_url())
            .unwrap_or_else(|| panic!("no {t:?} request after the restart: {again:?}"));
        assert_eq!(first["nonce"], "", "{t:?}: {first}");
        if sotw {
            // The version it had ACKed, not the NACKed one.
            assert_eq!(first["version_info"], "4", "{t:?}: {first}");
        } else {
            let initial = first["initial"].as_object().expect("initial");
            assert_eq!(initial.keys().collect::<Vec<_>>(), [name], "{t:?}: {first}");
            assert!(
                initial[name].as_str().is_some_and(|v| !v.is_empty()),
                "{t:?}: {first}"
            );
        }
    }
    traffic.during("after the restart", &sluice, 10);
    // The next snapshot applies.
    server.serve(5, listen, up_a);
    eventually("the snapshot after the restart serves", &sluice, || {
        served_by().as_deref() == Some("a")
    });
    eventually("the snapshot after the restart ACKed", &sluice, || {
        if sotw {
            server.acked(ResourceType::Endpoints.type_url(), Some(5)) >= 1
        } else {
            after().iter().any(|r| {
                r["type_url"] == ResourceType::Endpoints.type_url()
                    && r["error"].is_null()
                    && r["nonce"].as_str().is_some_and(|n| !n.is_empty())
            })
        }
    });
    if !sotw {
        // The versions it named matched the server's: nothing unchanged was sent again after
        // the restart, only the assignment that changed.
        let again = after();
        for t in [
            ResourceType::Cluster,
            ResourceType::Listener,
            ResourceType::Route,
        ] {
            assert!(
                !again.iter().any(|r| r["type_url"] == t.type_url()
                    && r["nonce"].as_str().is_some_and(|n| !n.is_empty())),
                "{t:?} sent again after the restart: {again:?}"
            );
        }
    }
    traffic.during("serving a again", &sluice, 10);
    let (count, failures) = traffic.finish();
    assert!(
        failures.is_empty(),
        "traffic stopped ({} of {count} requests failed): {failures:?}",
        failures.len()
    );
}

#[test]
fn a_python_management_server_configures_sluice_over_sotw() {
    if !require_peers(&["xds-protos"]) {
        return;
    }
    against_the_python_server("sotw");
}

#[test]
fn a_python_management_server_configures_sluice_over_delta() {
    if !require_peers(&["xds-protos"]) {
        return;
    }
    against_the_python_server("delta");
}

/// [`resources`] with the cluster's endpoints on these upstream ports.
fn resources_to(listen: u32, upstreams: &[u32]) -> BTreeMap<String, Vec<Any>> {
    let hosts: Vec<(&str, u32, i32)> = upstreams.iter().map(|&p| ("127.0.0.1", p, 0)).collect();
    let mut r = resources(listen, upstreams[0]);
    r.insert(
        ResourceType::Endpoints.type_url().to_owned(),
        vec![any(&assignment("web", &hosts))],
    );
    r
}

/// Issue 13: an EDS update changes the host set in place. One HTTP/1.1 client connection is
/// kept alive across EDS pushes that add, remove and re-add endpoints: it is never closed nor
/// answered `connection: close` (a generation switch would recycle it), each push is ACKed
/// only once every worker uses it (the next request never reaches a removed host and reaches
/// the new ones), `/clusters` lists the new hosts, and a host that stays keeps its counters.
/// The cluster then grows from 2 to 6 hosts, a push at a time, still in place (its spare
/// ids: 2 hosts + 16), counted in `xds.endpoint_updates_in_place` and not as reloads. A push
/// with more hosts than the generation has ids (19 > 18) switches generations (the fallback).
#[test]
fn an_eds_update_changes_hosts_in_place_without_cutting_client_connections() {
    if !require_peers(&["nginx"]) {
        return;
    }
    let dir = TempDir::new("xds-eds-in-place");
    let (up_a, up_b, up_c, listen, admin, ads_port) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let (up_d, up_e, up_f) = (free_port(), free_port(), free_port());
    let _a = start_nginx(&dir, "a", up_a, "a");
    let _b = start_nginx(&dir, "b", up_b, "b");
    let _c = start_nginx(&dir, "c", up_c, "c");
    let _d = start_nginx(&dir, "d", up_d, "d");
    let _e = start_nginx(&dir, "e", up_e, "e");
    let _f = start_nginx(&dir, "f", up_f, "f");
    let (a, b, c) = (u32::from(up_a), u32::from(up_b), u32::from(up_c));
    let (d, e, f) = (u32::from(up_d), u32::from(up_e), u32::from(up_f));
    let l = u32::from(listen);
    let server = AdsServer::start(ads_port, Snapshot::default());
    server.push(resources_to(l, &[a, b]));
    let config = ads_bootstrap(admin, ads_port, "");
    let sluice = start_sluice(&dir, &config, 2, addr(admin));
    eventually("the first config serves", &sluice, || {
        get(addr(listen)).0 == 200
    });
    let eds_acked = |version: u64| {
        server.requests().iter().any(|r| {
            r.type_url == ResourceType::Endpoints.type_url()
                && r.version_info == version.to_string()
                && r.error_detail.is_none()
        })
    };
    // `/clusters`: cluster web's hosts, as (address, rq_total summed over workers).
    let hosts = || -> Vec<(String, u64)> {
        let (_, json) = http_request(addr(admin), "GET", "/clusters?format=json");
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        let web = v["clusters"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "web"))
            .cloned()
            .unwrap_or_default();
        web["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| {
                (
                    h["address"].as_str().unwrap_or("").to_owned(),
                    h["rq_total"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    let host = |port: u32| format!("127.0.0.1:{port}");
    // A line of `/stats`, e.g. `server.reloads_ok: 1`.
    let stat = |name: &str| -> String {
        let (_, text) = http_request(addr(admin), "GET", "/stats");
        text.lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_default()
            .to_owned()
    };

    let mut client = TcpStream::connect(addr(listen)).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // 20 requests on the one connection: each a 200 from one of `allowed`, never with
    // `connection: close`; the bodies seen.
    let mut requests = |phase: &str, allowed: &[&str]| -> Vec<String> {
        let mut seen = Vec::new();
        for i in 0..20 {
            let answer = keep_alive_get(&mut client);
            let Some((status, close, body)) = answer else {
                panic!(
                    "{phase}: request {i}: the client connection was closed\n{}",
                    sluice.log_text()
                );
            };
            assert_eq!(status, 200, "{phase}: request {i}: {body}");
            assert!(
                !close,
                "{phase}: request {i}: answered `connection: close` (the connection is recycled)"
            );
            assert!(
                allowed.contains(&body.as_str()),
                "{phase}: request {i} reached {body:?}, not one of {allowed:?}"
            );
            if !seen.contains(&body) {
                seen.push(body);
            }
        }
        seen.sort();
        seen
    };
    assert_eq!(requests("first", &["a", "b"]), ["a", "b"]);
    // The first config may take two switches, as per-resource warming applies what is warm
    // (Envoy's CDS → EDS → LDS → RDS order): cluster `web` once its endpoints come, then
    // listener `in` once its routes come — one when the routes happen to come first. What
    // follows is counted from here.
    let switches_first = sluice.log_text().matches("added listeners").count();
    let reloads_first = stat("server.reloads_ok");
    assert!(
        ["server.reloads_ok: 1", "server.reloads_ok: 2"].contains(&reloads_first.as_str()),
        "{reloads_first}"
    );
    assert_eq!(
        reloads_first,
        format!("server.reloads_ok: {switches_first}"),
        "each switch logged"
    );
    let a_before = hosts()
        .iter()
        .find(|(h, _)| *h == host(a))
        .map(|h| h.1)
        .expect("host a listed");
    assert!(a_before >= 1, "{:?}", hosts());

    // b removed, c added: applied in place, ACKed once every worker has it.
    server.push(resources_to(l, &[a, c]));
    eventually("the EDS update ACKed", &sluice, || {
        eds_acked(server.version())
    });
    assert_eq!(requests("b replaced by c", &["a", "c"]), ["a", "c"]);
    let listed = hosts();
    let mut addresses: Vec<&str> = listed.iter().map(|h| h.0.as_str()).collect();
    addresses.sort_unstable();
    let mut expected = [host(a), host(c)];
    expected.sort();
    assert_eq!(addresses, expected, "/clusters lists the new hosts");
    let a_after = listed
        .iter()
        .find(|(h, _)| *h == host(a))
        .map_or(0, |h| h.1);
    assert!(
        a_after > a_before,
        "host a kept its counters and went on counting: {a_before} then {a_after}"
    );

    // c removed: only a; then b back (into a free slot): a and b, never c.
    server.push(resources_to(l, &[a]));
    eventually("the removal ACKed", &sluice, || eds_acked(server.version()));
    assert_eq!(requests("only a", &["a"]), ["a"]);
    server.push(resources_to(l, &[a, b]));
    eventually("the re-addition ACKed", &sluice, || {
        eds_acked(server.version())
    });
    assert_eq!(requests("b back", &["a", "b"]), ["a", "b"]);

    // Growth past the two hosts the generation started with: 3, 4, 5, then 6 hosts, each push
    // in place (spare ids), the kept-alive connection never recycled.
    let all = ["a", "b", "c", "d", "e", "f"];
    for n in 3..=6 {
        server.push(resources_to(l, &[a, b, c, d, e, f][..n]));
        eventually(&format!("the push of {n} hosts ACKed"), &sluice, || {
            eds_acked(server.version())
        });
        assert_eq!(requests(&format!("{n} hosts"), &all[..n]), all[..n]);
    }
    let mut listed: Vec<String> = hosts().into_iter().map(|h| h.0).collect();
    listed.sort_unstable();
    let mut expected: Vec<String> = [a, b, c, d, e, f].map(host).to_vec();
    expected.sort_unstable();
    assert_eq!(listed, expected, "/clusters lists the six hosts");
    let log = sluice.log_text();
    assert_eq!(
        log.matches("added listeners").count(),
        switches_first,
        "no generation switch after the first config:\n{log}"
    );
    assert_eq!(
        stat("xds.endpoint_updates_in_place"),
        "xds.endpoint_updates_in_place: 7",
        "seven updates in place"
    );
    assert_eq!(
        stat("server.reloads_ok"),
        reloads_first,
        "an update in place is not a reload"
    );

    // 19 hosts: more than the generation's 18 ids (2 + 16 spare), so a generation switch (the
    // fallback, logged): the kept-alive connection is told to close.
    let mut many = vec![a, b, c, d, e, f];
    many.extend((0..13).map(|_| u32::from(free_port())));
    server.push(resources_to(l, &many));
    eventually("the larger update ACKed", &sluice, || {
        eds_acked(server.version())
    });
    let (status, close, _) = keep_alive_get(&mut client).expect("an answer");
    assert_eq!(
        (status, close),
        (200, true),
        "a switch recycles the connection"
    );
    let log = sluice.log_text();
    assert_eq!(
        log.matches("more hosts than the cluster's ids").count(),
        1,
        "the fallback says why:\n{log}"
    );
    assert_eq!(
        stat("server.reloads_ok"),
        format!("server.reloads_ok: {}", switches_first + 1)
    );
}

/// [`resources`] whose cluster has one endpoint at priority 0, 127.0.0.1:`p0` with
/// `health_status` `status`, and one at priority 1, 127.0.0.1:`p1`, healthy.
fn resources_p0_p1(listen: u32, p0: u32, status: i32, p1: u32) -> BTreeMap<String, Vec<Any>> {
    let mut cla = assignment("web", &[("127.0.0.1", p0, status)]);
    let mut backup = assignment("web", &[("127.0.0.1", p1, 0)])
        .endpoints
        .remove(0);
    backup.priority = 1;
    cla.endpoints.push(backup);
    let mut r = resources(listen, p0);
    r.insert(
        ResourceType::Endpoints.type_url().to_owned(),
        vec![any(&cla)],
    );
    r
}

/// EDS health status as Envoy counts it: a priority-0 endpoint that EDS marks UNHEALTHY (its
/// upstream up and answering) is never picked — its level has no health, so every request
/// spills to the priority-1 endpoint — and `/clusters` shows it `eds_health: unhealthy`,
/// unavailable. EDS marking it HEALTHY takes the requests back to it, DRAINING sends them to
/// priority 1 again: each push ACKed once applied, in place (no generation switch).
#[test]
fn an_eds_unhealthy_endpoint_spills_its_levels_load_to_priority_1_and_back() {
    use sluice_xds::envoy_types::pb::envoy::config::core::v3::HealthStatus;
    if !require_peers(&["nginx"]) {
        return;
    }
    let dir = TempDir::new("xds-eds-health");
    let (up_a, up_b, listen, admin, ads_port) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let _a = start_nginx(&dir, "a", up_a, "a");
    let _b = start_nginx(&dir, "b", up_b, "b");
    let (a, b, l) = (u32::from(up_a), u32::from(up_b), u32::from(listen));
    let server = AdsServer::start(ads_port, Snapshot::default());
    server.push(resources_p0_p1(l, a, HealthStatus::Unhealthy as i32, b));
    let config = ads_bootstrap(admin, ads_port, "");
    let sluice = start_sluice(&dir, &config, 2, addr(admin));
    eventually("the first config serves", &sluice, || {
        get(addr(listen)).0 == 200
    });
    let eds_acked = |version: u64| {
        server.requests().iter().any(|r| {
            r.type_url == ResourceType::Endpoints.type_url()
                && r.version_info == version.to_string()
                && r.error_detail.is_none()
        })
    };
    // Host 127.0.0.1:`port` of cluster web in `/clusters?format=json`.
    let listed = |port: u32| -> serde_json::Value {
        let (_, json) = http_request(addr(admin), "GET", "/clusters?format=json");
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        v["clusters"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "web"))
            .and_then(|c| c["hosts"].as_array())
            .and_then(|hs| {
                hs.iter()
                    .find(|h| h["address"] == format!("127.0.0.1:{port}"))
                    .cloned()
            })
            .unwrap_or_default()
    };
    // 20 requests: the bodies that answered, each a 200.
    let bodies = |phase: &str| -> Vec<String> {
        let mut seen: Vec<String> = (0..20)
            .map(|i| {
                let (status, body) = get(addr(listen));
                assert_eq!(status, 200, "{phase}: request {i}: {body}");
                body
            })
            .collect();
        seen.sort();
        seen.dedup();
        seen
    };
    assert_eq!(bodies("P0 declared unhealthy"), ["b"]);
    let host_a = listed(a);
    assert_eq!(host_a["eds_health"], "unhealthy", "{host_a}");
    assert_eq!(host_a["available"], false, "{host_a}");
    assert_eq!(
        host_a["health"], "healthy",
        "no check: healthy as far as it goes"
    );
    let switches = sluice.log_text().matches("added listeners").count();

    for (status, expected, eds_health) in [
        (HealthStatus::Healthy, "a", "healthy"),
        (HealthStatus::Draining, "b", "draining"),
        (HealthStatus::Unknown, "a", "healthy"),
    ] {
        server.push(resources_p0_p1(l, a, status as i32, b));
        eventually(&format!("the {status:?} push ACKed"), &sluice, || {
            eds_acked(server.version())
        });
        assert_eq!(bodies(&format!("P0 {status:?}")), [expected]);
        assert_eq!(listed(a)["eds_health"], eds_health);
    }
    let log = sluice.log_text();
    assert_eq!(
        log.matches("added listeners").count(),
        switches,
        "health status changes apply in place:\n{log}"
    );
    let (_, text) = http_request(addr(admin), "GET", "/stats");
    assert!(
        text.lines()
            .any(|l| l == "xds.endpoint_updates_in_place: 3"),
        "{text}"
    );
}

/// istiod's HTTP connection manager (its outbound one, over RDS) carries Istio's HTTP
/// metadata exchange filter, which removes the peer metadata headers: a client's
/// `x-envoy-peer-metadata` and `x-envoy-peer-metadata-id` never reach the upstream (nginx
/// echoes what it got), and the upstream's never reach the client; another header passes
/// both ways.
#[test]
fn istios_peer_metadata_headers_are_removed_both_ways() {
    use sluice_xds::envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    if !require_peers(&["nginx"]) {
        return;
    }
    let dir = TempDir::new("xds-peer-metadata");
    let (up, listen, admin, ads_port) = (free_port(), free_port(), free_port(), free_port());
    let _up = start_nginx_with(
        &dir,
        "up",
        up,
        r#"location / {
            add_header x-envoy-peer-metadata "upstream-node";
            add_header x-envoy-peer-metadata-id "sidecar~10.0.0.2~up";
            add_header x-other "kept";
            return 200 "md=$http_x_envoy_peer_metadata id=$http_x_envoy_peer_metadata_id other=$http_x_other";
        }"#,
    );
    let server = AdsServer::start(ads_port, Snapshot::default());
    let mut snapshot = resources(u32::from(listen), u32::from(up));
    let mut l = http_listener("in", "127.0.0.1", u32::from(listen), "routes");
    l.filter_chains[0].filters[0].config_type = Some(ConfigType::TypedConfig(any(
        &sluice_xds::fixtures::istiod::outbound_hcm("routes"),
    )));
    snapshot.insert(ResourceType::Listener.type_url().to_owned(), vec![any(&l)]);
    server.push(snapshot);
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
xds: {{ cluster: xds_server }}
listeners: []
clusters:
  - name: xds_server
    hosts: [ {{ address: 127.0.0.1:{ads_port} }} ]
"#
    );
    let sluice = start_sluice(&dir, &config, 1, addr(admin));
    eventually("the config serves", &sluice, || get(addr(listen)).0 == 200);
    let mut s = TcpStream::connect(addr(listen)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
          x-envoy-peer-metadata: forged-node\r\n\
          x-envoy-peer-metadata-id: sidecar~10.0.0.9~forged\r\nx-other: mine\r\n\r\n",
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200 "), "{out}");
    assert_eq!(body, "md= id= other=mine", "{out}");
    let head = head.to_ascii_lowercase();
    assert!(!head.contains("x-envoy-peer-metadata"), "{out}");
    assert!(head.contains("\r\nx-other: kept"), "{out}");
}

/// A route configuration as istiod writes a VirtualService's `headers.request.add` /
/// `headers.response.add` (APPEND_IF_EXISTS_OR_ADD) and `headers.request.set`
/// (OVERWRITE_IF_EXISTS_OR_ADD) is accepted, and the appends keep the message's own fields:
/// the upstream receives its client's `x-a: 1` and the route's `x-a: 2`, `x-set` only as the
/// route sets it; the client gets the upstream's `x-upstream: up` and the route's
/// `x-upstream: mesh`. The conditional actions decide on the message as received:
/// `ADD_IF_ABSENT` adds to a request without the field and leaves the client's (and the
/// upstream's `date`) alone, `OVERWRITE_IF_EXISTS` replaces the client's field (and the
/// upstream's `content-type`) and adds nothing where there is none.
#[test]
fn istios_virtual_service_header_additions_append_over_xds() {
    use sluice_xds::envoy_types::pb::envoy::config::core::v3::{
        HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
    };
    if !require_peers(&["python3"]) {
        return;
    }
    let dir = TempDir::new("xds-header-append");
    let (up, listen, admin, ads_port) = (free_port(), free_port(), free_port(), free_port());
    let _up = start_py_upstream(&dir, "up", up);
    let option = |name: &str, value: &str, action: HeaderAppendAction| HeaderValueOption {
        header: Some(HeaderValue {
            key: name.into(),
            value: value.into(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    };
    let server = AdsServer::start(ads_port, Snapshot::default());
    let mut snapshot = resources(u32::from(listen), u32::from(up));
    let mut rc = route_config("routes", "web");
    let route = &mut rc.virtual_hosts[0].routes[0];
    route.request_headers_to_add = vec![
        option("x-a", "2", HeaderAppendAction::AppendIfExistsOrAdd),
        option("x-set", "s", HeaderAppendAction::OverwriteIfExistsOrAdd),
        option("x-if-absent", "route", HeaderAppendAction::AddIfAbsent),
        option("x-new-if-absent", "route", HeaderAppendAction::AddIfAbsent),
        option(
            "x-if-exists",
            "route",
            HeaderAppendAction::OverwriteIfExists,
        ),
        option(
            "x-none-if-exists",
            "route",
            HeaderAppendAction::OverwriteIfExists,
        ),
    ];
    route.response_headers_to_add = vec![
        option(
            "x-upstream",
            "mesh",
            HeaderAppendAction::AppendIfExistsOrAdd,
        ),
        option("date", "mesh", HeaderAppendAction::AddIfAbsent),
        option("x-mesh-if-absent", "mesh", HeaderAppendAction::AddIfAbsent),
        option(
            "content-type",
            "application/mesh",
            HeaderAppendAction::OverwriteIfExists,
        ),
        option(
            "x-none-if-exists",
            "mesh",
            HeaderAppendAction::OverwriteIfExists,
        ),
    ];
    snapshot.insert(ResourceType::Route.type_url().to_owned(), vec![any(&rc)]);
    server.push(snapshot);
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
xds: {{ cluster: xds_server }}
listeners: []
clusters:
  - name: xds_server
    hosts: [ {{ address: 127.0.0.1:{ads_port} }} ]
"#
    );
    let sluice = start_sluice(&dir, &config, 1, addr(admin));
    eventually("the config serves", &sluice, || get(addr(listen)).0 == 200);
    let mut s = TcpStream::connect(addr(listen)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /fields HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-a: 1\r\nx-set: old\r\n\
          x-if-absent: client\r\nx-if-exists: client\r\nx-if-exists: client2\r\n\r\n",
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200 "), "{out}");
    let head = head.to_ascii_lowercase();
    let upstream: Vec<&str> = head
        .lines()
        .filter(|l| l.starts_with("x-upstream:"))
        .collect();
    assert_eq!(upstream, ["x-upstream: up", "x-upstream: mesh"], "{out}");
    let response = |name: &str| -> Vec<&str> {
        head.lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .collect()
    };
    assert_eq!(response("date").len(), 1, "{out}");
    assert_ne!(response("date"), ["mesh"], "{out}");
    assert_eq!(response("x-mesh-if-absent"), ["mesh"], "{out}");
    assert_eq!(response("content-type"), ["application/mesh"], "{out}");
    assert!(response("x-none-if-exists").is_empty(), "{out}");
    let v: serde_json::Value = serde_json::from_str(body).expect("json");
    let named = |name: &str| -> Vec<String> {
        v["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .filter(|f| f[0] == name)
            .map(|f| f[1].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(named("x-a"), ["1", "2"], "{body}");
    assert_eq!(named("x-set"), ["s"], "{body}");
    assert_eq!(named("x-if-absent"), ["client"], "{body}");
    assert_eq!(named("x-new-if-absent"), ["route"], "{body}");
    assert_eq!(named("x-if-exists"), ["route"], "{body}");
    assert!(named("x-none-if-exists").is_empty(), "{body}");
}

/// How the TLS management server and Sluice's xDS cluster are set up.
#[derive(Clone, Copy, PartialEq, Debug)]
enum XdsTls {
    /// Server TLS; Sluice verifies it with the CA that issued its certificate.
    Verified,
    /// The server requires a client certificate (mutual TLS); Sluice has one.
    Mutual,
    /// Sluice trusts another CA than the server certificate's.
    WrongCa,
}

/// The Python management server over TLS (its certificate for `xds.example`, issued by a CA of
/// the test), and Sluice's xDS cluster with `tls: { ca, sni: xds.example }` — otherwise
/// defaults —, beside a static listener (`static` on its own port, to nginx `s`). Verified or
/// mutual: the first config comes over TLS and serves, every type is ACKed, and the static
/// listener serves too. A wrong CA: no request ever reaches the server, nothing dynamic
/// serves, `/xds` says the stream is down and why (`unknown_ca`), the log too, and the static
/// listener serves on.
fn xds_over_tls(case: XdsTls) {
    use support::pki::{leaf, make_ca, p};
    let dir = TempDir::new(&format!("xds-tls-{case:?}"));
    let (up_a, up_s, listen, static_port, admin, ads_port) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let _a = start_nginx(&dir, "a", up_a, "a");
    let _s = start_nginx(&dir, "s", up_s, "s");
    let ca = make_ca(&dir, "xds-ca");
    let other = make_ca(&dir, "other-ca");
    let (cert, key) = leaf(&dir, &ca, "xds-server", &["xds.example"], None);
    let (client_cert, client_key) = leaf(&dir, &ca, "sidecar", &["sidecar.example"], None);
    let mut args = vec!["--tls", p(&cert), p(&key)];
    if case == XdsTls::Mutual {
        args.extend_from_slice(&["--client-ca", p(&ca.pem)]);
    }
    let mut server = PyServer::start_with(&dir, ads_port, 1, listen, up_a, &args);
    wait_listening(addr(ads_port), &mut server.proc);
    let trusted = if case == XdsTls::WrongCa {
        &other.pem
    } else {
        &ca.pem
    };
    let client = if case == XdsTls::Mutual {
        format!(
            ", cert_chain: {}, private_key: {}",
            p(&client_cert),
            p(&client_key)
        )
    } else {
        String::new()
    };
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
node: {{ id: sidecar-tls, cluster: e2e }}
xds: {{ cluster: xds_server }}
listeners:
  - name: static
    address: 127.0.0.1:{static_port}
    http:
      virtual_hosts: [ {{ name: v, domains: ["*"], routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: local }} }} ] }} ]
clusters:
  - name: xds_server
    protocol: http2
    tls: {{ ca: {}, sni: xds.example{client} }}
    hosts: [ {{ address: 127.0.0.1:{ads_port} }} ]
  - name: local
    hosts: [ {{ address: 127.0.0.1:{up_s} }} ]
"#,
        p(trusted)
    );
    let sluice = start_sluice(&dir, &config, 2, addr(admin));
    // `/xds` (404 until the client's thread has started).
    let xds = || {
        let (status, body) = http_request(addr(admin), "GET", "/xds");
        if status == 404 {
            return serde_json::Value::Null;
        }
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).expect("json")
    };
    if case == XdsTls::WrongCa {
        eventually("the failed handshake is shown", &sluice, || {
            xds()["last_connect_error"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("TLS handshake") && e.contains("(unknown_ca)"))
        });
        let view = xds();
        eprintln!("/xds last_connect_error: {}", view["last_connect_error"]);
        assert_eq!(view["connected"], false, "{view}");
        assert_eq!(view["types"]["listener"]["version"], "", "{view}");
        assert!(
            sluice.log_text().contains("unknown_ca"),
            "{}",
            sluice.log_text()
        );
        assert!(server.requests().is_empty(), "{:?}", server.requests());
        assert_eq!(
            get(addr(listen)),
            (0, String::new()),
            "nothing dynamic serves"
        );
        for _ in 0..10 {
            assert_eq!(get(addr(static_port)), (200, "s".into()));
        }
        return;
    }
    eventually("the first config serves over TLS", &sluice, || {
        get(addr(listen)) == (200, "a".into())
    });
    eventually("every type ACKed", &sluice, || {
        ResourceType::ALL
            .iter()
            .filter(|t| **t != ResourceType::Secret)
            .all(|t| server.acked(t.type_url(), Some(1)) >= 1)
    });
    assert_eq!(server.requests()[0]["node"], "sidecar-tls");
    let view = xds();
    assert_eq!(view["connected"], true, "{view}");
    assert_eq!(
        view["last_connect_error"],
        serde_json::Value::Null,
        "{view}"
    );
    assert_eq!(get(addr(static_port)), (200, "s".into()));
    // An update comes over the same TLS stream.
    server.serve(2, listen, up_s);
    eventually("the EDS update applies", &sluice, || {
        get(addr(listen)) == (200, "s".into())
    });
}

#[test]
fn a_tls_management_server_configures_sluice() {
    if !require_peers(&["nginx", "xds-protos"]) {
        return;
    }
    xds_over_tls(XdsTls::Verified);
}

#[test]
fn a_management_server_requiring_mutual_tls_configures_sluice_with_its_client_certificate() {
    if !require_peers(&["nginx", "xds-protos"]) {
        return;
    }
    xds_over_tls(XdsTls::Mutual);
}

#[test]
fn a_management_server_of_an_untrusted_ca_is_not_used_and_static_listeners_serve() {
    if !require_peers(&["nginx", "xds-protos"]) {
        return;
    }
    xds_over_tls(XdsTls::WrongCa);
}
