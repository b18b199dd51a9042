// A driver of `BoltProxy` and a shadow model of what every downstream must receive, shared by
// the proptest in `tests.rs` and the fuzz target `fuzz/fuzz_targets/bolt_proxy.rs` (both
// `include!` this file after importing: BTreeMap, Duration, Instant, ClusterState,
// Config, Rng, Resource and the `bolt` items used below).
//
// The world: one Bolt listener with routes to two clusters (`echo`: 2 hosts, least_request,
// `tight`: 1 host, max_requests 3, max_connections 1); `NDOWN` downstream slots that reuse the
// same few request ids; fake upstreams that answer requests in any order (echoing the request's
// content, which carries a unique token), close, or connect.
//
// Checked after every op: every answer a downstream receives is for a request it has
// outstanding, with its original id, version and (for upstream responses) content; no
// request is answered twice; a request whose deadline passed was answered; the upstream ids in
// flight on a connection are unique; the proxy's own invariants. At the end (every upstream
// closed, time advanced past every deadline): every request of an open downstream was
// answered, every host's `active` and every breaker unit are back to zero.

const NDOWN: usize = 3;

const MODEL_YAML: &str = r#"
listeners:
  - name: rpc
    address: 127.0.0.1:12200
    bolt:
      routes:
        - match: { service: "svc.Echo:1.0" }
          route: { cluster: echo, timeout: 300ms }
        - match: { service_regex: "svc\\.Tight.*" }
          route: { cluster: tight }
clusters:
  - name: echo
    lb_policy: least_request
    hosts: [ { address: 10.0.0.1:12220 }, { address: 10.0.0.2:12220 } ]
  - name: tight
    circuit_breakers: { max_requests: 3, max_connections: 1 }
    hosts: [ { address: 10.0.0.3:12220 } ]
"#;

/// One step of a scenario.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    /// A request (or oneway request) from downstream slot `down`.
    Request {
        down: u8,
        id: u8,
        v2: u8,
        /// 0: `svc.Echo:1.0`, 1: `svc.Tight`, 2: unrouted.
        service: u8,
        /// 0: none, 1: 100ms, 2: 1000ms.
        timeout: u8,
        oneway: bool,
    },
    Heartbeat {
        down: u8,
        v2: bool,
    },
    /// The `pick`-th outstanding upstream request gets a response.
    Respond {
        pick: u16,
        status: u8,
    },
    /// An upstream heartbeat on the `pick`-th connection.
    UpstreamHeartbeat {
        pick: u8,
    },
    Connected {
        pick: u8,
    },
    UpstreamClosed {
        pick: u8,
    },
    DownstreamClosed {
        down: u8,
    },
    /// Undecodable bytes from a downstream (closes it).
    Garbage {
        down: u8,
        readable: bool,
    },
    Advance {
        ms: u16,
    },
    SetAvailable {
        host: u8,
        available: bool,
    },
}

#[derive(Clone, Debug)]
struct Expect {
    version: Version,
    token: u64,
    deadline: Option<Instant>,
    oneway: bool,
}

pub(crate) struct Model {
    proxy: BoltProxy,
    clusters: Vec<ClusterState>,
    rng: Rng,
    start: Instant,
    now: Instant,
    /// Slot → open downstream connection.
    downs: [Option<DownstreamId>; NDOWN],
    down_out: BTreeMap<DownstreamId, Vec<u8>>,
    /// Requests sent and not answered, by (downstream, original id).
    outstanding: BTreeMap<(DownstreamId, u32), Expect>,
    heartbeats: BTreeMap<DownstreamId, Vec<u32>>,
    /// What each upstream connection has in flight (upstream id → token), as the fake
    /// upstream sees it (responses may still come for streams the proxy forgot).
    ups: BTreeMap<UpstreamId, BTreeMap<u32, (u64, Version)>>,
    up_out: BTreeMap<UpstreamId, Vec<u8>>,
    next_token: u64,
    pub(crate) answered: u64,
}

fn model_request(
    version: Version,
    id: u32,
    service: &[u8],
    timeout_ms: i32,
    oneway: bool,
    token: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(
        &mut out,
        &RequestSpec {
            version,
            oneway,
            cmd_code: CMD_REQUEST,
            cmd_version: CMD_VERSION,
            request_id: id,
            codec: CODEC_HESSIAN2,
            timeout_ms,
            class: b"com.alipay.sofa.rpc.core.request.SofaRequest",
            header: &[(b"service", Some(service))],
            content: &token.to_be_bytes(),
        },
    )
    .expect("fits");
    out
}

fn model_heartbeat(version: Version, id: u32) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(
        &mut out,
        &RequestSpec {
            version,
            oneway: false,
            cmd_code: CMD_HEARTBEAT,
            cmd_version: CMD_VERSION,
            request_id: id,
            codec: CODEC_HESSIAN2,
            timeout_ms: -1,
            class: b"",
            header: &[],
            content: b"",
        },
    )
    .expect("fits");
    out
}

impl Model {
    /// The model's config (parse once, reuse for many models).
    pub(crate) fn config() -> Config {
        Config::from_yaml(MODEL_YAML).expect("model config")
    }

    pub(crate) fn new(seed: u64, start: Instant) -> Model {
        Self::with_config(seed, start, &Self::config())
    }

    pub(crate) fn with_config(seed: u64, start: Instant, config: &Config) -> Model {
        let mut m = Model {
            proxy: BoltProxy::from_config(config).expect("routers"),
            clusters: config
                .clusters
                .iter()
                .map(ClusterState::from_config)
                .collect(),
            rng: Rng::from_seed(seed),
            start,
            now: start,
            downs: [None; NDOWN],
            down_out: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            heartbeats: BTreeMap::new(),
            ups: BTreeMap::new(),
            up_out: BTreeMap::new(),
            next_token: 0,
            answered: 0,
        };
        for slot in 0..NDOWN {
            m.open(slot);
        }
        m
    }

    fn open(&mut self, slot: usize) -> DownstreamId {
        let peer = format!("192.0.2.{}:40000", slot + 1).parse().ok();
        let d = self.proxy.open_downstream(0, peer);
        self.downs[slot] = Some(d);
        d
    }

    fn slot(&mut self, down: u8) -> DownstreamId {
        let slot = usize::from(down) % NDOWN;
        match self.downs[slot] {
            Some(d) => d,
            None => self.open(slot),
        }
    }

    fn drain_actions(&mut self) {
        while let Some(a) = self.proxy.poll_action() {
            match a {
                Action::Connect {
                    up,
                    cluster,
                    host,
                    address,
                    transport,
                } => {
                    assert_eq!(self.clusters[cluster].host(host.id).address, address);
                    assert_eq!(self.clusters[cluster].transport(host.id), transport);
                    assert!(!self.ups.contains_key(&up), "{up:?} opened twice");
                    self.ups.insert(up, BTreeMap::new());
                }
                Action::Reply(r) => r.encode(self.down_out.entry(r.down).or_default()),
                Action::Close { up } => panic!("{up:?} closed: the model has no original_dst cluster"),
            }
        }
    }

    /// Reads what every downstream received and checks it against the model.
    fn deliver(&mut self) {
        let outs = std::mem::take(&mut self.down_out);
        for (d, buf) in outs {
            assert!(
                self.downs.contains(&Some(d)),
                "bytes written to closed downstream {d:?}"
            );
            let mut at = 0;
            while at < buf.len() {
                let f = decode(&buf[at..], DEFAULT_MAX_FRAME_SIZE)
                    .expect("the proxy writes valid frames")
                    .expect("whole frames");
                at += f.len;
                assert_eq!(f.kind, Kind::Response, "{d:?} got a non-response");
                if f.cmd_code == CMD_HEARTBEAT {
                    let hb = self.heartbeats.entry(d).or_default();
                    let i = hb
                        .iter()
                        .position(|&id| id == f.request_id)
                        .unwrap_or_else(|| {
                            panic!("{d:?}: heartbeat reply {} not asked", f.request_id)
                        });
                    hb.remove(i);
                    assert_eq!(f.status, Some(0));
                    continue;
                }
                let e = self
                    .outstanding
                    .remove(&(d, f.request_id))
                    .unwrap_or_else(|| {
                        panic!(
                            "{d:?}: answer for id {} not outstanding (duplicate or misdirected)",
                            f.request_id
                        )
                    });
                assert!(!e.oneway, "a oneway request was answered");
                assert_eq!(f.version, e.version, "answer in another version");
                if !f.content.is_empty() {
                    assert_eq!(f.content, e.token.to_be_bytes(), "another request's answer");
                } else {
                    assert_ne!(f.status, Some(0), "a proxy reply with status 0");
                }
                self.answered += 1;
            }
        }
    }

    fn check(&mut self) {
        self.drain_actions();
        self.deliver();
        self.proxy.check_invariants();
        for (&(d, id), e) in &self.outstanding {
            if let Some(at) = e.deadline {
                assert!(
                    at > self.now,
                    "{d:?}/{id}: deadline passed without an answer"
                );
            }
        }
        // The upstream ids in flight are unique per connection (map keys in the fake
        // upstream); the proxy's are a subset of them.
        for (&up, ids) in &self.ups {
            for id in self.proxy.upstream_ids_in_flight(up) {
                assert!(ids.contains_key(&id), "{up:?}: proxy id {id} never sent");
            }
        }
    }

    /// The frames written to upstream `up` (forwarded requests): registers their ids.
    fn upstream_received(
        &mut self,
        up: UpstreamId,
        expected_id: u32,
        token: u64,
        version: Version,
        oneway: bool,
    ) {
        let buf = self.up_out.remove(&up).expect("forwarded bytes");
        let f = decode(&buf, DEFAULT_MAX_FRAME_SIZE)
            .expect("valid")
            .expect("whole");
        assert_eq!(f.len, buf.len());
        assert_eq!(f.request_id, expected_id);
        assert_eq!(f.content, token.to_be_bytes());
        let ids = self
            .ups
            .get_mut(&up)
            .expect("forward to an opened upstream");
        if !oneway {
            assert!(
                ids.insert(expected_id, (token, version)).is_none(),
                "{up:?}: upstream id {expected_id} reused while in flight"
            );
        } else {
            assert!(!ids.contains_key(&expected_id), "oneway id collides");
        }
    }

    pub(crate) fn step(&mut self, op: Op) {
        match op {
            Op::Request {
                down,
                id,
                v2,
                service,
                timeout,
                oneway,
            } => {
                let d = self.slot(down);
                let id = u32::from(id % 4);
                if self.outstanding.contains_key(&(d, id)) {
                    return; // a client never reuses an id it is still waiting on
                }
                let version = match v2 % 3 {
                    0 => Version::V1,
                    1 => Version::V2 { ver1: 1, switch: 0 },
                    _ => Version::V2 { ver1: 2, switch: 1 },
                };
                let service: &[u8] = match service % 3 {
                    0 => b"svc.Echo:1.0",
                    1 => b"svc.Tight:1.0",
                    _ => b"svc.Nowhere:1.0",
                };
                let timeout_ms = [0, 100, 1000][usize::from(timeout % 3)];
                let token = self.next_token;
                self.next_token += 1;
                let mut bytes = model_request(version, id, service, timeout_ms, oneway, token);
                let f = decode(&bytes, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
                let verdict = self.proxy.handle_downstream_frame(
                    self.now,
                    d,
                    &f,
                    &mut self.clusters,
                    &mut self.rng,
                );
                self.drain_actions();
                let route_ms = if service.starts_with(b"svc.Echo") {
                    Some(300)
                } else {
                    None
                };
                let deadline_ms = match (timeout_ms, route_ms) {
                    (0, r) => r,
                    (t, Some(r)) => Some(t.min(r)),
                    (t, None) => Some(t),
                };
                match verdict {
                    DownstreamVerdict::Forward { up, request_id } => {
                        set_request_id(&mut bytes, request_id);
                        self.up_out.entry(up).or_default().extend_from_slice(&bytes);
                        self.upstream_received(up, request_id, token, version, oneway);
                        if !oneway {
                            self.outstanding.insert(
                                (d, id),
                                Expect {
                                    version,
                                    token,
                                    deadline: deadline_ms
                                        .map(|ms| self.now + Duration::from_millis(ms as u64)),
                                    oneway,
                                },
                            );
                        }
                    }
                    DownstreamVerdict::Reply(r) => {
                        assert!(!oneway, "a oneway request answered");
                        assert_eq!((r.down, r.request_id, r.version), (d, id, version));
                        self.outstanding.insert(
                            (d, id),
                            Expect {
                                version,
                                token,
                                deadline: None,
                                oneway,
                            },
                        );
                        r.encode(self.down_out.entry(d).or_default());
                    }
                    DownstreamVerdict::Drop(why) => {
                        assert!(oneway, "a request dropped");
                        assert_ne!(why, Dropped::NotARequest, "a oneway request dropped as no request");
                    }
                    DownstreamVerdict::AnswerHeartbeat => {
                        panic!("a request answered as a heartbeat")
                    }
                }
            }
            Op::Heartbeat { down, v2 } => {
                let d = self.slot(down);
                let version = if v2 {
                    Version::V2 { ver1: 2, switch: 1 }
                } else {
                    Version::V1
                };
                let id = 1000 + self.heartbeats.get(&d).map_or(0, Vec::len) as u32;
                let bytes = model_heartbeat(version, id);
                let f = decode(&bytes, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
                let v = self.proxy.handle_downstream_frame(
                    self.now,
                    d,
                    &f,
                    &mut self.clusters,
                    &mut self.rng,
                );
                assert_eq!(v, DownstreamVerdict::AnswerHeartbeat);
                self.heartbeats.entry(d).or_default().push(id);
                encode_heartbeat_reply(self.down_out.entry(d).or_default(), &f);
            }
            Op::Respond { pick, status } => {
                let all: Vec<(UpstreamId, u32)> = self
                    .ups
                    .iter()
                    .flat_map(|(&up, ids)| ids.keys().map(move |&id| (up, id)))
                    .collect();
                if all.is_empty() {
                    return;
                }
                let (up, uid) = all[usize::from(pick) % all.len()];
                let (token, version) = self.ups.get_mut(&up).unwrap().remove(&uid).unwrap();
                let proxy_knows = self.proxy.upstream_ids_in_flight(up).any(|i| i == uid);
                let mut bytes = Vec::new();
                let status = ResponseStatus::ALL[usize::from(status) % ResponseStatus::ALL.len()];
                encode_response(
                    &mut bytes,
                    version,
                    uid,
                    CODEC_HESSIAN2,
                    status,
                    b"r",
                    &[],
                    &token.to_be_bytes(),
                )
                .unwrap();
                let f = decode(&bytes, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
                match self
                    .proxy
                    .handle_upstream_frame(self.now, up, &f, &mut self.clusters)
                {
                    UpstreamVerdict::Forward { down, request_id } => {
                        assert!(proxy_knows);
                        set_request_id(&mut bytes, request_id);
                        self.down_out
                            .entry(down)
                            .or_default()
                            .extend_from_slice(&bytes);
                    }
                    UpstreamVerdict::Drop => {
                        // Only a response the proxy forgot (timed out) or whose downstream
                        // closed is dropped.
                        assert!(
                            !self.outstanding.values().any(|e| e.token == token),
                            "a response for an outstanding request was dropped"
                        );
                    }
                    UpstreamVerdict::AnswerHeartbeat => {
                        panic!("a response answered as a heartbeat")
                    }
                }
            }
            Op::UpstreamHeartbeat { pick } => {
                let Some(&up) = self
                    .ups
                    .keys()
                    .nth(usize::from(pick) % self.ups.len().max(1))
                else {
                    return;
                };
                let bytes = model_heartbeat(Version::V1, 77);
                let f = decode(&bytes, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
                let v = self
                    .proxy
                    .handle_upstream_frame(self.now, up, &f, &mut self.clusters);
                assert_eq!(v, UpstreamVerdict::AnswerHeartbeat);
            }
            Op::Connected { pick } => {
                if let Some(&up) = self
                    .ups
                    .keys()
                    .nth(usize::from(pick) % self.ups.len().max(1))
                {
                    self.proxy.handle_upstream_connected(up);
                }
            }
            Op::UpstreamClosed { pick } => {
                let Some(&up) = self
                    .ups
                    .keys()
                    .nth(usize::from(pick) % self.ups.len().max(1))
                else {
                    return;
                };
                self.ups.remove(&up);
                self.proxy
                    .handle_upstream_closed(self.now, up, &mut self.clusters);
                assert_eq!(self.proxy.upstream(up), None);
            }
            Op::DownstreamClosed { down } => {
                let slot = usize::from(down) % NDOWN;
                if let Some(d) = self.downs[slot].take() {
                    self.proxy.handle_downstream_closed(d);
                    self.forget(d);
                }
            }
            Op::Garbage { down, readable } => {
                let d = self.slot(down);
                // A v1 frame with an unknown type byte (id readable), or an unknown protocol.
                let buf: &[u8] = if readable {
                    &[0x01, 0x09, 0, 1, 1, 0, 0, 0, 42, 1, 0, 0]
                } else {
                    &[0x07, 0, 0]
                };
                assert!(decode(buf, DEFAULT_MAX_FRAME_SIZE).is_err());
                let reply = self.proxy.handle_downstream_codec_error(self.now, d, buf);
                assert_eq!(reply.is_some(), readable);
                if let Some(r) = reply {
                    assert_eq!(
                        (r.down, r.request_id, r.status),
                        (d, 42, ResponseStatus::CodecException)
                    );
                }
                // The connection closes: nothing more reaches it.
                let slot = usize::from(down) % NDOWN;
                self.downs[slot] = None;
                self.forget(d);
            }
            Op::Advance { ms } => {
                self.now += Duration::from_millis(u64::from(ms));
                if self.proxy.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.proxy.handle_timeout(self.now, &mut self.clusters);
                }
            }
            Op::SetAvailable { host, available } => {
                let c = usize::from(host) % 2;
                let n = self.clusters[c].hosts().len();
                self.clusters[c]
                    .set_available(HostId((usize::from(host) / 2 % n) as u32), available);
            }
        }
        self.check();
    }

    fn forget(&mut self, d: DownstreamId) {
        self.outstanding.retain(|&(od, _), _| od != d);
        self.heartbeats.remove(&d);
        self.down_out.remove(&d);
    }

    /// Ends the scenario: every upstream closes, time passes every deadline; then everything
    /// must have been answered and released.
    pub(crate) fn finish(&mut self) {
        let ups: Vec<UpstreamId> = self.ups.keys().copied().collect();
        for up in ups {
            self.ups.remove(&up);
            self.proxy
                .handle_upstream_closed(self.now, up, &mut self.clusters);
            self.check();
        }
        self.now += Duration::from_secs(10);
        self.proxy.handle_timeout(self.now, &mut self.clusters);
        self.check();
        assert!(
            self.outstanding.is_empty(),
            "never answered: {:?}",
            self.outstanding
        );
        assert!(
            self.heartbeats.values().all(Vec::is_empty),
            "heartbeat not answered"
        );
        assert_eq!(self.proxy.in_flight(), 0);
        assert_eq!(self.proxy.upstream_count(), 0);
        assert_eq!(self.proxy.poll_timeout(), None);
        for c in &self.clusters {
            for h in c.hosts() {
                assert_eq!(h.active, 0, "{} active left on {}", h.active, h.address);
            }
            for r in [Resource::Requests, Resource::Connections] {
                assert_eq!(
                    c.breakers().in_use(r),
                    0,
                    "{r:?} units left in {}",
                    c.name()
                );
            }
        }
        let _ = self.start;
    }
}
