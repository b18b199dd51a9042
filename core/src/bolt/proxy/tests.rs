use std::collections::BTreeMap;
use std::time::Duration;

use crate::time::Instant;

use proptest::prelude::*;

use super::*;
use crate::bolt::{
    CMD_REQUEST, CMD_VERSION, CODEC_HESSIAN2, DEFAULT_MAX_FRAME_SIZE, RequestSpec, decode,
    encode_heartbeat_reply, encode_request, encode_response, set_request_id,
};
use crate::cluster::{ClusterState, SlotHost};
use crate::config::Config;
use crate::health::Resource;
use crate::rng::Rng;
use crate::test_support::epoch;

mod model {
    #![allow(dead_code)]
    use std::collections::BTreeMap;
    use std::time::Duration;

    use crate::time::Instant;

    use crate::bolt::{
        Action, BoltProxy, CMD_HEARTBEAT, CMD_REQUEST, CMD_VERSION, CODEC_HESSIAN2,
        DEFAULT_MAX_FRAME_SIZE, DownstreamId, DownstreamVerdict, Dropped, Kind, RequestSpec,
        ResponseStatus, UpstreamId, UpstreamVerdict, Version, decode, encode_heartbeat_reply,
        encode_request, encode_response, set_request_id,
    };
    use crate::cluster::{ClusterState, HostId};
    use crate::config::Config;
    use crate::health::Resource;
    use crate::rng::Rng;

    include!("model.rs");
}

const YAML: &str = r#"
listeners:
  - name: rpc
    address: 127.0.0.1:12200
    bolt:
      max_frame_size: 64KiB
      routes:
        - match: { service: "com.example.EchoService:1.0" }
          route: { cluster: echo, timeout: 3s }
        - match: { service_regex: "com\\.example\\..*", headers: [ { name: zone, exact: gz } ] }
          route: { cluster: gz }
        - match: { service: "com.example.Tight:1.0" }
          route: { cluster: tight }
        - match: { service: "com.example.NoConn:1.0" }
          route: { cluster: noconn }
        - match: { service: "com.example.Hashed:1.0" }
          route: { cluster: hashed }
        - match: { service: "com.example.Original:1.0" }
          route: { cluster: original }
clusters:
  - name: echo
    hosts: [ { address: 10.0.0.1:12220 } ]
  - name: gz
    hosts: [ { address: 10.0.0.2:12220 } ]
  - name: tight
    circuit_breakers: { max_requests: 1 }
    hosts: [ { address: 10.0.0.3:12220 } ]
  - name: noconn
    circuit_breakers: { max_connections: 0 }
    hosts: [ { address: 10.0.0.4:12220 } ]
  - name: hashed
    lb_policy: ring_hash
    hash_policy: [ { header: user } ]
    hosts: [ { address: 10.0.1.1:12220 }, { address: 10.0.1.2:12220 }, { address: 10.0.1.3:12220 }, { address: 10.0.1.4:12220 } ]
  - name: original
    type: original_dst
    upstream_idle_timeout: 10s
    circuit_breakers: { max_connections: 4096, max_requests: 4096 }
"#;

const ECHO: &[u8] = b"com.example.EchoService:1.0";
const V2_CRC: Version = Version::V2 { ver1: 2, switch: 1 };

/// A driver with write buffers per connection, as the runtime's.
struct H {
    p: BoltProxy,
    clusters: Vec<ClusterState>,
    rng: Rng,
    now: Instant,
    t0: Instant,
    down_out: BTreeMap<DownstreamId, Vec<u8>>,
    up_out: BTreeMap<UpstreamId, Vec<u8>>,
    connects: Vec<Action>,
    closed: Vec<UpstreamId>,
    /// The proxy's own answers, as made ([`Action::Reply`]).
    replies: Vec<ProxyReply>,
}

fn req(version: Version, id: u32, headers: &[(&[u8], Option<&[u8]>)], timeout_ms: i32) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(
        &mut out,
        &RequestSpec {
            version,
            oneway: false,
            cmd_code: CMD_REQUEST,
            cmd_version: CMD_VERSION,
            request_id: id,
            codec: CODEC_HESSIAN2,
            timeout_ms,
            class: b"com.alipay.sofa.rpc.core.request.SofaRequest",
            header: headers,
            content: &id.to_be_bytes(),
        },
    )
    .unwrap();
    out
}

fn echo_req(version: Version, id: u32) -> Vec<u8> {
    req(version, id, &[(b"service", Some(ECHO))], 0)
}

/// A response as an upstream sends it, with `content`.
fn resp(version: Version, id: u32, status: ResponseStatus, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_response(
        &mut out,
        version,
        id,
        CODEC_HESSIAN2,
        status,
        b"R",
        &[],
        content,
    )
    .unwrap();
    out
}

/// One decoded frame, owned.
#[derive(Debug, PartialEq, Eq)]
struct F {
    version: Version,
    kind: Kind,
    cmd_code: u16,
    id: u32,
    status: Option<u16>,
    content: Vec<u8>,
}

fn frames(buf: &[u8]) -> Vec<F> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let f = decode(&buf[at..], DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
        out.push(F {
            version: f.version,
            kind: f.kind,
            cmd_code: f.cmd_code,
            id: f.request_id,
            status: f.status,
            content: f.content.to_vec(),
        });
        at += f.len;
    }
    out
}

impl H {
    fn new() -> H {
        let config = Config::from_yaml(YAML).unwrap();
        let t0 = epoch();
        H {
            p: BoltProxy::from_config(&config).unwrap(),
            clusters: config
                .clusters
                .iter()
                .map(ClusterState::from_config)
                .collect(),
            rng: Rng::from_seed(7),
            now: t0,
            t0,
            down_out: BTreeMap::new(),
            up_out: BTreeMap::new(),
            connects: Vec::new(),
            closed: Vec::new(),
            replies: Vec::new(),
        }
    }

    fn open(&mut self) -> DownstreamId {
        self.p.open_downstream(0, "192.0.2.1:5000".parse().ok())
    }

    fn drain(&mut self) {
        while let Some(a) = self.p.poll_action() {
            match a {
                Action::Reply(r) => {
                    r.encode(self.down_out.entry(r.down).or_default());
                    self.replies.push(r);
                }
                c @ Action::Connect { .. } => self.connects.push(c),
                Action::Close { up } => self.closed.push(up),
            }
        }
    }

    /// Sends `bytes` (one frame) from `d`, doing what the verdict says.
    fn down(&mut self, d: DownstreamId, mut bytes: Vec<u8>) -> DownstreamVerdict {
        let f = decode(&bytes, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
        let v = self
            .p
            .handle_downstream_frame(self.now, d, &f, &mut self.clusters, &mut self.rng);
        match v {
            DownstreamVerdict::Forward { up, request_id } => {
                set_request_id(&mut bytes, request_id);
                self.up_out.entry(up).or_default().extend_from_slice(&bytes);
            }
            DownstreamVerdict::AnswerHeartbeat => {
                encode_heartbeat_reply(self.down_out.entry(d).or_default(), &f);
            }
            DownstreamVerdict::Reply(r) => r.encode(self.down_out.entry(d).or_default()),
            DownstreamVerdict::Drop(_) => {}
        }
        self.drain();
        v
    }

    fn up(&mut self, up: UpstreamId, mut bytes: Vec<u8>) -> UpstreamVerdict {
        let f = decode(&bytes, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
        let v = self
            .p
            .handle_upstream_frame(self.now, up, &f, &mut self.clusters);
        match v {
            UpstreamVerdict::Forward { down, request_id } => {
                set_request_id(&mut bytes, request_id);
                self.down_out
                    .entry(down)
                    .or_default()
                    .extend_from_slice(&bytes);
            }
            UpstreamVerdict::AnswerHeartbeat => {
                encode_heartbeat_reply(self.up_out.entry(up).or_default(), &f);
            }
            UpstreamVerdict::Drop => {}
        }
        self.drain();
        v
    }

    fn take_down(&mut self, d: DownstreamId) -> Vec<u8> {
        self.down_out.remove(&d).unwrap_or_default()
    }

    fn take_up(&mut self, up: UpstreamId) -> Vec<F> {
        frames(&self.up_out.remove(&up).unwrap_or_default())
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.p.handle_timeout(self.now, &mut self.clusters);
        self.drain();
    }

    fn idle(&self) {
        assert_eq!(self.p.in_flight(), 0);
        for c in &self.clusters {
            assert!(
                c.hosts().iter().all(|h| h.active == 0),
                "{}: active",
                c.name()
            );
            assert_eq!(c.breakers().in_use(Resource::Requests), 0, "{}", c.name());
        }
    }
}

fn forward(v: DownstreamVerdict) -> (UpstreamId, u32) {
    match v {
        DownstreamVerdict::Forward { up, request_id } => (up, request_id),
        other => panic!("not forwarded: {other:?}"),
    }
}

/// The exact bytes of a v1 proxy reply: type 0, cmd 2, cmd version 1, id, codec 1, status,
/// no class, header or content.
fn v1_reply(id: u32, status: u16) -> Vec<u8> {
    let mut b = vec![0x01, 0x00, 0x00, 0x02, 0x01];
    b.extend_from_slice(&id.to_be_bytes());
    b.push(0x01);
    b.extend_from_slice(&status.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    b
}

#[test]
fn an_unvalidated_config_with_a_bad_regex_names_the_listener_and_the_rule() {
    use crate::config::bolt::{BoltHeaderMatcher, BoltHeaderRule, ServiceMatch};
    let mut config = Config::from_yaml(YAML).unwrap();
    let ListenerFilter::Bolt(bolt) = &mut config.listeners[0].filter else {
        panic!("the first listener is bolt");
    };
    bolt.routes[1].matcher.headers[0] = BoltHeaderMatcher {
        name: "zone".into(),
        rule: BoltHeaderRule::Regex("(".into()),
    };
    let err = BoltRouter::new(bolt).unwrap_err();
    assert_eq!(err.path, "routes[1].match.headers[0].regex");
    assert!(err.message.starts_with("regex parse error:"), "{err}");
    bolt.routes[2].matcher.service = Some(ServiceMatch::Regex("[".into()));
    let err = BoltProxy::from_config(&config).unwrap_err();
    assert_eq!(err.listener, "rpc");
    assert_eq!(err.source.path, "routes[1].match.headers[0].regex");
    let text = err.to_string();
    assert!(
        text.starts_with("listener rpc: bolt.routes[1].match.headers[0].regex: regex parse error:"),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
    let ListenerFilter::Bolt(bolt) = &mut config.listeners[0].filter else {
        unreachable!()
    };
    bolt.routes[1].matcher.headers.clear();
    let err = BoltRouter::new(bolt).unwrap_err();
    assert_eq!(err.path, "routes[2].match.service_regex");
}

#[test]
fn heartbeats_are_answered_status_0_in_their_version() {
    let mut h = H::new();
    let d = h.open();
    let mut hb = Vec::new();
    encode_request(
        &mut hb,
        &RequestSpec {
            version: Version::V1,
            oneway: false,
            cmd_code: CMD_HEARTBEAT,
            cmd_version: CMD_VERSION,
            request_id: 0x0102_0304,
            codec: CODEC_HESSIAN2,
            timeout_ms: -1,
            class: b"",
            header: &[],
            content: b"",
        },
    )
    .unwrap();
    assert_eq!(h.down(d, hb.clone()), DownstreamVerdict::AnswerHeartbeat);
    assert_eq!(
        h.take_down(d),
        [1, 0, 0, 0, 1, 1, 2, 3, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    // v2 with CRC: the reply is v2 with a CRC, same ver1/switch.
    let mut hb2 = Vec::new();
    encode_request(
        &mut hb2,
        &RequestSpec {
            version: V2_CRC,
            oneway: false,
            cmd_code: CMD_HEARTBEAT,
            cmd_version: CMD_VERSION,
            request_id: 9,
            codec: CODEC_HESSIAN2,
            timeout_ms: -1,
            class: b"",
            header: &[],
            content: b"",
        },
    )
    .unwrap();
    h.down(d, hb2);
    let out = h.take_down(d);
    assert_eq!(&out[..12], [2, 2, 0, 0, 0, 1, 0, 0, 0, 9, 1, 1]);
    assert_eq!(out.len(), 22 + 4);
    let f = frames(&out);
    assert_eq!(
        (f[0].cmd_code, f[0].status, f[0].version),
        (0, Some(0), V2_CRC)
    );
    // Nothing went upstream.
    assert!(h.up_out.is_empty() && h.connects.is_empty());
    // An upstream heartbeat is answered on the upstream connection.
    let (up, _) = forward(h.down(d, echo_req(Version::V1, 1)));
    h.take_up(up);
    assert_eq!(h.up(up, hb), UpstreamVerdict::AnswerHeartbeat);
    assert_eq!(
        h.up_out[&up],
        [1, 0, 0, 0, 1, 1, 2, 3, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(h.p.stats().heartbeats, 3);
}

#[test]
fn no_route_and_no_host_are_status_6() {
    let mut h = H::new();
    let d = h.open();
    let v = h.down(
        d,
        req(Version::V1, 7, &[(b"service", Some(b"com.other.X:1.0"))], 0),
    );
    assert!(matches!(v, DownstreamVerdict::Reply(r) if r.status == ResponseStatus::NoProcessor));
    assert_eq!(h.take_down(d), v1_reply(7, 6));
    // The regex route needs the zone header.
    h.down(
        d,
        req(
            Version::V1,
            8,
            &[(b"service", Some(b"com.example.Foo:1.0"))],
            0,
        ),
    );
    assert_eq!(h.take_down(d), v1_reply(8, 6));
    // No service at all.
    h.down(d, req(Version::V1, 9, &[], 0));
    assert_eq!(h.take_down(d), v1_reply(9, 6));
    // No available host.
    h.clusters[0].set_available(crate::cluster::HostId(0), false);
    h.down(d, echo_req(Version::V1, 10));
    assert_eq!(h.take_down(d), v1_reply(10, 6));
    assert_eq!((h.p.stats().no_route, h.p.stats().no_host), (3, 1));
    assert!(h.connects.is_empty());
    h.idle();
}

#[test]
fn routes_by_service_regex_and_headers_and_the_fallback_key() {
    let mut h = H::new();
    let d = h.open();
    let (up, _) = forward(h.down(
        d,
        req(
            Version::V1,
            1,
            &[
                (b"service", Some(b"com.example.Foo:1.0")),
                (b"zone", Some(b"gz")),
            ],
            0,
        ),
    ));
    assert_eq!(h.p.upstream(up).map(|u| u.0), Some(1));
    let (up, _) = forward(h.down(
        d,
        req(
            Version::V1,
            2,
            &[(b"sofa_head_target_service", Some(ECHO))],
            0,
        ),
    ));
    assert_eq!(h.p.upstream(up).map(|u| u.0), Some(0));
}

#[test]
fn overflow_is_status_4() {
    let mut h = H::new();
    let d = h.open();
    let tight = req(
        Version::V1,
        1,
        &[(b"service", Some(b"com.example.Tight:1.0"))],
        0,
    );
    let (up, uid) = forward(h.down(d, tight));
    let mut second = req(
        Version::V1,
        2,
        &[(b"service", Some(b"com.example.Tight:1.0"))],
        0,
    );
    h.down(d, second.clone());
    assert_eq!(h.take_down(d), v1_reply(2, 4));
    // Done: room again.
    h.up(up, resp(Version::V1, uid, ResponseStatus::Success, b"ok"));
    assert_eq!(frames(&h.take_down(d))[0].id, 1);
    forward(h.down(d, second.clone()));
    // max_connections 0: no connection can be opened.
    second = req(
        Version::V2 { ver1: 1, switch: 0 },
        3,
        &[(b"service", Some(b"com.example.NoConn:1.0"))],
        0,
    );
    h.down(d, second);
    let out = h.take_down(d);
    let f = frames(&out);
    assert_eq!(
        (f[0].id, f[0].status, f[0].version),
        (3, Some(4), Version::V2 { ver1: 1, switch: 0 })
    );
    assert_eq!(h.clusters[3].breakers().in_use(Resource::Requests), 0);
    assert_eq!(h.p.stats().overflow, 2);
    // A oneway request there is dropped, and the verdict says why (the access log's flag).
    let mut oneway = req(
        Version::V1,
        4,
        &[(b"service", Some(b"com.example.NoConn:1.0"))],
        0,
    );
    oneway[1] = 2;
    assert_eq!(
        h.down(d, oneway),
        DownstreamVerdict::Drop(Dropped::Overflow)
    );
    h.clusters[0].set_available(crate::cluster::HostId(0), false);
    let mut oneway = echo_req(Version::V1, 5);
    oneway[1] = 2;
    assert_eq!(h.down(d, oneway), DownstreamVerdict::Drop(Dropped::NoHost));
    assert!(h.take_down(d).is_empty());
    assert_eq!(h.p.stats().oneway_dropped, 2);
}

#[test]
fn timeout_is_status_7_and_the_late_response_is_dropped() {
    let mut h = H::new();
    let d = h.open();
    // The frame's 100ms beats the route's 3s.
    let (up, uid) = forward(h.down(d, req(Version::V1, 5, &[(b"service", Some(ECHO))], 100)));
    assert_eq!(h.p.poll_timeout(), Some(h.t0 + Duration::from_millis(100)));
    assert_eq!(h.clusters[0].hosts()[0].active, 1);
    h.advance(99);
    assert!(h.take_down(d).is_empty());
    h.advance(1);
    assert_eq!(h.take_down(d), v1_reply(5, 7));
    // The answer names the upstream stream it replaces (the access log's key).
    assert_eq!(h.replies.last().and_then(|r| r.stream), Some((up, uid)));
    assert_eq!(h.clusters[0].hosts()[0].active, 0);
    assert_eq!(
        h.up(up, resp(Version::V1, uid, ResponseStatus::Success, b"late")),
        UpstreamVerdict::Drop
    );
    assert!(h.take_down(d).is_empty());
    // The route's 3s beats the frame's 5s; no frame timeout (0) → the route's.
    forward(h.down(d, req(Version::V1, 6, &[(b"service", Some(ECHO))], 5000)));
    forward(h.down(d, req(Version::V1, 7, &[(b"service", Some(ECHO))], 0)));
    h.advance(2999);
    assert!(h.take_down(d).is_empty());
    h.advance(1);
    let mut out = v1_reply(6, 7);
    out.extend(v1_reply(7, 7));
    assert_eq!(h.take_down(d), out);
    // A new request on the same connection never reuses a timed-out id.
    let (_, uid2) = forward(h.down(d, echo_req(Version::V1, 5)));
    assert!(uid2 > uid + 2);
    assert_eq!(h.p.stats().timeouts, 3);
}

#[test]
fn answered_requests_leave_no_deadline_due_and_a_bounded_heap() {
    let mut h = H::new();
    let d = h.open();
    // A request with 100ms, another with 200ms: once the first is answered, the next deadline
    // is the second's (the answered one's timer is not what wakes the driver).
    let (up, a) = forward(h.down(d, req(Version::V1, 1, &[(b"service", Some(ECHO))], 100)));
    let (_, b) = forward(h.down(d, req(Version::V1, 2, &[(b"service", Some(ECHO))], 200)));
    assert_eq!(h.p.poll_timeout(), Some(h.t0 + Duration::from_millis(100)));
    h.up(up, resp(Version::V1, a, ResponseStatus::Success, b"a"));
    assert_eq!(h.p.poll_timeout(), Some(h.t0 + Duration::from_millis(200)));
    // A thousand more, each answered at once, behind the stuck second one (route timeout 3s):
    // the dead entries stay bounded, the stuck one times out when due, nothing else does.
    for i in 0..1000 {
        let (_, id) = forward(h.down(d, req(Version::V1, 10 + i, &[(b"service", Some(ECHO))], 0)));
        h.up(up, resp(Version::V1, id, ResponseStatus::Success, b"x"));
        assert!(
            h.p.timers.len() <= 2 + TIMER_SLACK,
            "{} timers",
            h.p.timers.len()
        );
    }
    assert_eq!(h.p.poll_timeout(), Some(h.t0 + Duration::from_millis(200)));
    h.take_down(d);
    h.advance(200);
    assert_eq!(h.take_down(d), v1_reply(2, 7));
    assert_eq!(h.p.stats().timeouts, 1);
    assert_eq!(h.replies.last().and_then(|r| r.stream), Some((up, b)));
    assert_eq!(h.p.poll_timeout(), None);
    h.idle();
    // A burst of 1,000 in flight at once, all answered: the emptied collections give their
    // room back.
    let ids: Vec<u32> = (0..1000)
        .map(|i| {
            forward(h.down(
                d,
                req(Version::V1, 5000 + i, &[(b"service", Some(ECHO))], 0),
            ))
            .1
        })
        .collect();
    assert!(h.p.upstreams[&up].streams.capacity() >= 1000);
    for id in ids {
        h.up(up, resp(Version::V1, id, ResponseStatus::Success, b"x"));
    }
    h.idle();
    assert!(h.p.upstreams[&up].streams.capacity() <= SHRINK_ABOVE);
    assert!(
        h.p.timers.capacity() <= SHRINK_ABOVE,
        "{}",
        h.p.timers.capacity()
    );
}

#[test]
fn codec_errors_are_status_9_when_the_id_is_readable() {
    let mut h = H::new();
    let (a, b) = (h.open(), h.open());
    let (up, uid) = forward(h.down(b, echo_req(Version::V1, 1)));
    // A v1 frame with type 9.
    let mut bad = echo_req(Version::V1, 0x55);
    bad[1] = 9;
    assert!(decode(&bad, DEFAULT_MAX_FRAME_SIZE).is_err());
    let r = h.p.handle_downstream_codec_error(h.now, a, &bad).unwrap();
    let mut out = Vec::new();
    r.encode(&mut out);
    assert_eq!(out, v1_reply(0x55, 9));
    assert_eq!(h.p.downstream_count(), 1);
    // Unknown protocol byte: no id, no reply.
    let c = h.open();
    assert_eq!(
        h.p.handle_downstream_codec_error(h.now, c, &[0x47, 0x45, 0x54]),
        None
    );
    // A frame over max_frame_size (64KiB), v2 with CRC: 9 in v2, then closed; `b` unharmed.
    let d = h.open();
    let mut big = Vec::new();
    encode_request(
        &mut big,
        &RequestSpec {
            version: V2_CRC,
            oneway: false,
            cmd_code: CMD_REQUEST,
            cmd_version: CMD_VERSION,
            request_id: 77,
            codec: CODEC_HESSIAN2,
            timeout_ms: 0,
            class: b"",
            header: &[],
            content: &vec![0; 70_000],
        },
    )
    .unwrap();
    let err = decode(&big[..24], h.p.max_frame_size(0)).unwrap_err();
    assert!(matches!(err, crate::bolt::BoltError::FrameTooLarge { .. }));
    let r =
        h.p.handle_downstream_codec_error(h.now, d, &big[..24])
            .unwrap();
    assert_eq!(
        (r.request_id, r.version, r.status),
        (77, V2_CRC, ResponseStatus::CodecException)
    );
    h.up(up, resp(Version::V1, uid, ResponseStatus::Success, b"fine"));
    assert_eq!(frames(&h.take_down(b))[0].content, b"fine");
    assert_eq!(h.p.stats().codec_errors, 3);
}

#[test]
fn upstream_loss_is_status_16_for_every_request_in_flight() {
    let mut h = H::new();
    let (a, b) = (h.open(), h.open());
    let (up, _) = forward(h.down(a, echo_req(Version::V1, 1)));
    let (up2, _) = forward(h.down(b, echo_req(V2_CRC, 1)));
    assert_eq!(up, up2, "one shared upstream connection per host");
    forward(h.down(a, echo_req(Version::V1, 2)));
    assert_eq!(h.connects.len(), 1);
    h.p.handle_upstream_connected(up);
    h.p.handle_upstream_closed(h.now, up, &mut h.clusters);
    h.drain();
    let mut want = v1_reply(1, 16);
    want.extend(v1_reply(2, 16));
    assert_eq!(h.take_down(a), want);
    let f = frames(&h.take_down(b));
    assert_eq!((f[0].id, f[0].status, f[0].version), (1, Some(16), V2_CRC));
    assert_eq!(h.clusters[0].breakers().in_use(Resource::Connections), 0);
    h.idle();
    // The next request opens a new connection; a connect failure is the same loss.
    let (up3, _) = forward(h.down(a, echo_req(Version::V1, 3)));
    assert_ne!(up3, up);
    assert_eq!(h.connects.len(), 2);
    h.p.handle_upstream_closed(h.now, up3, &mut h.clusters);
    h.drain();
    assert_eq!(h.take_down(a), v1_reply(3, 16));
    assert_eq!(h.p.stats().upstream_lost, 4);
    h.idle();
}

#[test]
fn a_slot_given_to_another_address_gets_its_own_connection_and_the_old_one_closes() {
    let mut h = H::new();
    let a = h.open();
    // Two requests in flight on the connection to 10.0.0.1 (slot 0, epoch 0).
    let (old, uid1) = forward(h.down(a, echo_req(Version::V1, 1)));
    let (_, uid2) = forward(h.down(a, echo_req(Version::V1, 2)));
    h.p.handle_upstream_connected(old);
    // A DNS answer gives slot 0 to 10.0.0.9 (epoch 1) while they are in flight.
    let new_address: std::net::SocketAddr = "10.0.0.9:12220".parse().unwrap();
    h.clusters[0].update_hosts(&[Some(SlotHost::plain(new_address, 1))], &[1]);
    assert_eq!(
        h.p.close_stale_upstreams(0, &mut h.clusters),
        0,
        "busy: kept"
    );
    // The slot's new host gets a connection of its own, to its address.
    let (new, _) = forward(h.down(a, echo_req(Version::V1, 3)));
    assert_ne!(new, old);
    match h.connects.last() {
        Some(Action::Connect {
            up, host, address, ..
        }) => {
            assert_eq!(*up, new);
            assert_eq!(*host, h.clusters[0].host_ref(HostId(0)));
            assert_eq!(*address, new_address);
        }
        other => panic!("{other:?}"),
    }
    // The old host's answers still reach their requests; after the last one its connection
    // closes and gives back its max_connections unit.
    h.up(
        old,
        resp(Version::V1, uid1, ResponseStatus::Success, b"one"),
    );
    assert!(h.closed.is_empty());
    h.up(
        old,
        resp(Version::V1, uid2, ResponseStatus::Success, b"two"),
    );
    assert_eq!(h.closed, [old]);
    assert_eq!(h.p.stats().stale_closed, 1);
    assert_eq!(h.clusters[0].breakers().in_use(Resource::Connections), 1);
    let got: Vec<Vec<u8>> = frames(&h.take_down(a))
        .into_iter()
        .map(|f| f.content)
        .collect();
    assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
}

#[test]
fn an_idle_connection_to_a_host_that_left_its_slot_is_closed_when_the_hosts_change() {
    let mut h = H::new();
    let a = h.open();
    let (old, uid) = forward(h.down(a, echo_req(Version::V1, 1)));
    h.p.handle_upstream_connected(old);
    h.up(old, resp(Version::V1, uid, ResponseStatus::Success, b"one"));
    h.clusters[0].update_hosts(
        &[Some(SlotHost::plain("10.0.0.9:12220".parse().unwrap(), 1))],
        &[1],
    );
    assert_eq!(h.p.close_stale_upstreams(0, &mut h.clusters), 1);
    h.drain();
    assert_eq!(h.closed, [old]);
    assert_eq!(h.clusters[0].breakers().in_use(Resource::Connections), 0);
    h.idle();
}

#[test]
fn a_connection_to_a_host_that_left_its_slot_closes_when_its_last_request_times_out() {
    let mut h = H::new();
    let a = h.open();
    // The route's timeout is 3 s.
    let (old, _) = forward(h.down(a, echo_req(Version::V1, 1)));
    h.p.handle_upstream_connected(old);
    h.clusters[0].update_hosts(
        &[Some(SlotHost::plain("10.0.0.9:12220".parse().unwrap(), 1))],
        &[1],
    );
    assert_eq!(h.p.close_stale_upstreams(0, &mut h.clusters), 0);
    h.advance(3_001);
    assert_eq!(h.take_down(a), v1_reply(1, 7), "timed out (status 7)");
    assert_eq!(h.closed, [old]);
    assert_eq!(h.clusters[0].breakers().in_use(Resource::Connections), 0);
    h.idle();
}

#[test]
fn colliding_ids_from_two_downstreams_get_their_own_answers() {
    let mut h = H::new();
    let (a, b) = (h.open(), h.open());
    let (up, ua) = forward(h.down(a, echo_req(Version::V1, 1)));
    let (up_b, ub) = forward(h.down(b, echo_req(Version::V1, 1)));
    assert_eq!(up, up_b);
    assert_ne!(ua, ub);
    let sent = h.take_up(up);
    assert_eq!(sent.iter().map(|f| f.id).collect::<Vec<_>>(), [ua, ub]);
    // Answers in reverse order, each marked.
    assert_eq!(
        h.up(up, resp(Version::V1, ub, ResponseStatus::Success, b"for b")),
        UpstreamVerdict::Forward {
            down: b,
            request_id: 1
        }
    );
    h.up(up, resp(Version::V1, ua, ResponseStatus::Success, b"for a"));
    let fa = frames(&h.take_down(a));
    let fb = frames(&h.take_down(b));
    assert_eq!(
        (fa.len(), fa[0].id, fa[0].content.as_slice()),
        (1, 1, &b"for a"[..])
    );
    assert_eq!(
        (fb.len(), fb[0].id, fb[0].content.as_slice()),
        (1, 1, &b"for b"[..])
    );
    // A duplicate response finds nothing.
    assert_eq!(
        h.up(up, resp(Version::V1, ua, ResponseStatus::Success, b"again")),
        UpstreamVerdict::Drop
    );
    h.idle();
}

#[test]
fn oneway_is_forwarded_with_a_fresh_id_and_expects_nothing() {
    let mut h = H::new();
    let d = h.open();
    let (up, u1) = forward(h.down(d, echo_req(Version::V1, 1)));
    let mut ow = echo_req(Version::V1, 1);
    ow[1] = 2; // type oneway
    let (up2, u2) = forward(h.down(d, ow.clone()));
    assert_eq!(up, up2);
    assert_ne!(u1, u2);
    assert_eq!(h.p.in_flight(), 1);
    assert_eq!(h.p.stats().oneway, 1);
    let sent = h.take_up(up);
    assert_eq!((sent[1].kind, sent[1].id), (Kind::Oneway, u2));
    // Unrouted oneway: dropped, no reply.
    let mut lost = req(Version::V1, 3, &[], 0);
    lost[1] = 2;
    assert_eq!(h.down(d, lost), DownstreamVerdict::Drop(Dropped::NoRoute));
    assert!(h.take_down(d).is_empty());
    let (_, u3) = forward(h.down(d, echo_req(Version::V1, 4)));
    assert!(u3 != u1 && u3 != u2);
}

#[test]
fn v1_and_v2_on_one_connection() {
    let mut h = H::new();
    let d = h.open();
    let v2 = Version::V2 { ver1: 1, switch: 0 };
    let (up, u1) = forward(h.down(d, echo_req(Version::V1, 10)));
    let (_, u2) = forward(h.down(d, echo_req(V2_CRC, 11)));
    let (_, u3) = forward(h.down(d, echo_req(v2, 12)));
    let sent = h.take_up(up);
    assert_eq!(
        sent.iter().map(|f| (f.version, f.id)).collect::<Vec<_>>(),
        [(Version::V1, u1), (V2_CRC, u2), (v2, u3)]
    );
    h.up(up, resp(V2_CRC, u2, ResponseStatus::Success, b"2"));
    h.up(up, resp(v2, u3, ResponseStatus::ServerException, b"3"));
    h.up(up, resp(Version::V1, u1, ResponseStatus::Success, b"1"));
    let got: Vec<(Version, u32, Option<u16>, Vec<u8>)> = frames(&h.take_down(d))
        .into_iter()
        .map(|f| (f.version, f.id, f.status, f.content))
        .collect();
    assert_eq!(
        got,
        [
            (V2_CRC, 11, Some(0), b"2".to_vec()),
            (v2, 12, Some(2), b"3".to_vec()),
            (Version::V1, 10, Some(0), b"1".to_vec()),
        ]
    );
    h.idle();
}

#[test]
fn a_closed_downstream_gets_nothing_and_releases_on_the_answer() {
    let mut h = H::new();
    let (a, b) = (h.open(), h.open());
    let (up, ua) = forward(h.down(a, echo_req(Version::V1, 1)));
    let (_, ub) = forward(h.down(b, req(Version::V1, 1, &[(b"service", Some(ECHO))], 50)));
    h.p.handle_downstream_closed(a);
    h.p.handle_downstream_closed(b);
    h.p.handle_downstream_closed(b); // idempotent
    assert_eq!(h.clusters[0].hosts()[0].active, 2);
    assert_eq!(
        h.up(up, resp(Version::V1, ua, ResponseStatus::Success, b"x")),
        UpstreamVerdict::Drop
    );
    h.advance(50); // b's orphan times out silently
    assert!(h.down_out.is_empty());
    assert_eq!(
        h.up(up, resp(Version::V1, ub, ResponseStatus::Success, b"x")),
        UpstreamVerdict::Drop
    );
    h.idle();
}

#[test]
fn hash_policy_uses_the_bolt_header() {
    let mut h = H::new();
    let d = h.open();
    let hashed = |id, user: &'static [u8]| {
        req(
            Version::V1,
            id,
            &[
                (b"service", Some(b"com.example.Hashed:1.0")),
                (b"user", Some(user)),
            ],
            0,
        )
    };
    let mut hosts = Vec::new();
    for i in 0..8 {
        let (up, _) = forward(h.down(d, hashed(i, b"alice")));
        hosts.push(h.p.upstream(up).unwrap().1);
    }
    assert!(hosts.windows(2).all(|w| w[0] == w[1]), "{hosts:?}");
    let mut others = Vec::new();
    for (i, user) in [&b"bob"[..], b"carol", b"dave", b"erin", b"frank"]
        .iter()
        .enumerate()
    {
        let (up, _) = forward(h.down(d, hashed(100 + i as u32, user)));
        others.push(h.p.upstream(up).unwrap().1);
    }
    others.push(hosts[0]);
    others.sort();
    others.dedup();
    assert!(others.len() > 1, "every user on one host");
}

#[test]
fn upstream_ids_skip_ids_still_in_flight_after_wrapping() {
    let mut h = H::new();
    let d = h.open();
    let (up, first) = forward(h.down(d, echo_req(Version::V1, 1)));
    assert_eq!(first, 1);
    // Wind the counter to just before the stuck id.
    h.p.upstreams.get_mut(&up).unwrap().next_id = 0;
    let (_, zero) = forward(h.down(d, echo_req(Version::V1, 2)));
    let (_, next) = forward(h.down(d, echo_req(Version::V1, 3)));
    assert_eq!((zero, next), (0, 2), "id 1 is still in flight");
}

fn op() -> impl Strategy<Value = model::Op> {
    use model::Op;
    prop_oneof![
        6 => (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), prop::bool::weighted(0.1))
            .prop_map(|(down, id, v2, service, timeout, oneway)| Op::Request { down, id, v2, service, timeout, oneway }),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(down, v2)| Op::Heartbeat { down, v2 }),
        5 => (any::<u16>(), any::<u8>()).prop_map(|(pick, status)| Op::Respond { pick, status }),
        1 => any::<u8>().prop_map(|pick| Op::UpstreamHeartbeat { pick }),
        1 => any::<u8>().prop_map(|pick| Op::Connected { pick }),
        1 => any::<u8>().prop_map(|pick| Op::UpstreamClosed { pick }),
        1 => any::<u8>().prop_map(|down| Op::DownstreamClosed { down }),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(down, readable)| Op::Garbage { down, readable }),
        3 => (0u16..400).prop_map(|ms| Op::Advance { ms }),
        1 => (any::<u8>(), prop::bool::weighted(0.7)).prop_map(|(host, available)| Op::SetAvailable { host, available }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary interleavings against the shadow model (see `model.rs`).
    #[test]
    fn every_request_is_answered_once_to_its_sender(seed in any::<u64>(), ops in prop::collection::vec(op(), 0..120)) {
        let mut m = model::Model::new(seed, epoch());
        for op in ops {
            m.step(op);
        }
        m.finish();
    }
}

#[test]
fn the_model_answers_a_busy_scenario() {
    use model::Op;
    let mut m = model::Model::new(3, epoch());
    for i in 0..200u16 {
        let b = i as u8;
        m.step(Op::Request {
            down: b,
            id: b / 3,
            v2: b,
            service: b % 5 % 2,
            timeout: b / 7,
            oneway: i % 17 == 0,
        });
        if i % 3 == 0 {
            m.step(Op::Respond {
                pick: i * 7,
                status: 0,
            });
        }
        if i % 50 == 49 {
            m.step(Op::UpstreamClosed { pick: b });
        }
        if i % 20 == 0 {
            m.step(Op::Advance { ms: 150 });
        }
    }
    m.finish();
    assert!(m.answered > 100, "only {} answers", m.answered);
}

const ORIGINAL: &[u8] = b"com.example.Original:1.0";

fn original_req(id: u32) -> Vec<u8> {
    req(Version::V1, id, &[(b"service", Some(ORIGINAL))], 0)
}

fn dst(i: u32) -> SocketAddr {
    SocketAddr::from(([10, 9, (i >> 8) as u8, i as u8], 12200))
}

#[test]
fn original_dst_requests_go_to_their_connections_destination_multiplexed_per_destination() {
    let mut h = H::new();
    let peer = "192.0.2.1:5000".parse().ok();
    let a1 = h.p.open_captured_downstream(0, peer, Some(dst(1)));
    let a2 = h.p.open_captured_downstream(0, peer, Some(dst(1)));
    let b = h.p.open_captured_downstream(0, peer, Some(dst(2)));
    let (up_a, id_a1) = forward(h.down(a1, original_req(7)));
    let (up_a2, id_a2) = forward(h.down(a2, original_req(7)));
    let (up_b, _) = forward(h.down(b, original_req(8)));
    // One connection per destination, to that destination; requests multiplexed on it.
    assert_eq!(up_a, up_a2);
    assert_ne!(id_a1, id_a2);
    assert_ne!(up_a, up_b);
    let addresses: Vec<SocketAddr> = h
        .connects
        .iter()
        .map(|c| match c {
            Action::Connect { address, .. } => *address,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(addresses, [dst(1), dst(2)]);
    assert_eq!(h.p.upstream_destination(up_a), Some(dst(1)));
    // Answers go back to their own downstream with its own id.
    h.up(
        up_a,
        resp(Version::V1, id_a2, ResponseStatus::Success, b"a2"),
    );
    h.up(
        up_a,
        resp(Version::V1, id_a1, ResponseStatus::Success, b"a1"),
    );
    let got = frames(&h.take_down(a1));
    assert_eq!((got[0].id, got[0].content.as_slice()), (7, &b"a1"[..]));
    let got = frames(&h.take_down(a2));
    assert_eq!((got[0].id, got[0].content.as_slice()), (7, &b"a2"[..]));

    // A connection that was not captured: status 6, counted, nothing opened.
    let plain = h.open();
    assert_eq!(
        h.down(plain, original_req(9)),
        DownstreamVerdict::Reply(ProxyReply {
            down: plain,
            request_id: 9,
            version: Version::V1,
            codec: CODEC_HESSIAN2,
            status: ResponseStatus::NoProcessor,
            stream: None,
        })
    );
    assert_eq!(h.take_down(plain), v1_reply(9, 6));
    assert_eq!(h.p.stats().no_original_dst, 1);
    assert_eq!(h.connects.len(), 2);
    // A cluster with hosts on a captured connection still goes to its hosts.
    let (up_echo, _) = forward(h.down(a1, echo_req(Version::V1, 10)));
    assert_eq!(h.p.upstream_destination(up_echo), None);

    // Idle cleanup: the idle destination closes after upstream_idle_timeout; the busy one
    // (b's request in flight) stays, and closes once idle that long.
    h.advance(9_999);
    assert!(h.closed.is_empty());
    h.advance(1);
    assert_eq!(h.closed, [up_a]);
    assert_eq!(h.p.upstream(up_a), None);
    h.advance(10_000);
    assert_eq!(h.closed, [up_a]);
    let got = h.take_up(up_b);
    h.up(
        up_b,
        resp(Version::V1, got[0].id, ResponseStatus::Success, b"b"),
    );
    h.advance(9_999);
    assert_eq!(h.closed, [up_a]);
    h.advance(10_001);
    assert_eq!(h.closed, [up_a, up_b]);
    assert_eq!(h.p.stats().destinations_closed, 2);
    // The closed connection answers nobody; a new request opens a new one.
    h.p.handle_upstream_closed(h.now, up_a, &mut h.clusters);
    h.drain();
    let (again, _) = forward(h.down(a1, original_req(11)));
    assert_ne!(again, up_a);
    assert_eq!(h.p.upstream_destination(again), Some(dst(1)));
}

#[test]
fn original_destinations_are_bounded_evicting_the_idle_one_longest() {
    let mut h = H::new();
    let peer = "192.0.2.1:5000".parse().ok();
    let downs: Vec<DownstreamId> = (0..=MAX_DESTINATIONS as u32)
        .map(|i| h.p.open_captured_downstream(0, peer, Some(dst(i))))
        .collect();
    let mut ups = Vec::new();
    for (i, &d) in downs[..MAX_DESTINATIONS].iter().enumerate() {
        h.advance(1);
        ups.push(forward(h.down(d, original_req(i as u32))));
    }
    // Every destination busy: a new one is an overflow (status 4).
    let last = downs[MAX_DESTINATIONS];
    assert!(matches!(
        h.down(last, original_req(1)),
        DownstreamVerdict::Reply(ProxyReply {
            status: ResponseStatus::ServerThreadpoolBusy,
            ..
        })
    ));
    // Answer the second, then the first: the second has been idle the longest, so it makes
    // room.
    let (up1, id1) = ups[1];
    h.up(up1, resp(Version::V1, id1, ResponseStatus::Success, b""));
    h.advance(1);
    let (up0, id0) = ups[0];
    h.up(up0, resp(Version::V1, id0, ResponseStatus::Success, b""));
    let (new, _) = forward(h.down(last, original_req(2)));
    assert_eq!(h.closed, [up1]);
    assert_eq!(
        h.p.upstream_destination(new),
        Some(dst(MAX_DESTINATIONS as u32))
    );
    assert_eq!(h.p.upstream_count(), MAX_DESTINATIONS);
}
