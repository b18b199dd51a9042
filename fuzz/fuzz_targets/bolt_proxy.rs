//! `BoltProxy` (the Bolt stream layer) driven by arbitrary interleavings of requests from
//! several downstreams reusing the same ids, upstream responses in any order, heartbeats from
//! both sides, upstream and downstream disconnects, codec errors, host availability changes
//! and time advancing — the proptest `every_request_is_answered_once_to_its_sender` of
//! core/src/bolt/proxy/tests.rs, with the same driver and shadow model
//! (core/src/bolt/proxy/model.rs).
//!
//! Properties, whatever the events:
//! - every answer a downstream receives is for a request it has outstanding, with its original
//!   id and version (and, for an upstream response, that request's content): no duplicate, no
//!   answer to another client;
//! - a request whose deadline passed has been answered (status 7);
//! - upstream ids in flight are unique per upstream connection; the proxy's own invariants hold
//!   (`check_invariants`, run after every step);
//! - at the end (every upstream closed, time past every deadline) every request of a still-open
//!   downstream was answered exactly once, and every host's `active` and breaker units are 0.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

mod model {
    #![allow(dead_code)]
    use sluice_core::Instant;
    use std::collections::BTreeMap;
    use std::time::Duration;

    use sluice_core::bolt::{
        Action, BoltProxy, CMD_HEARTBEAT, CMD_REQUEST, CMD_VERSION, CODEC_HESSIAN2,
        DEFAULT_MAX_FRAME_SIZE, DownstreamId, DownstreamVerdict, Dropped, Kind, RequestSpec,
        ResponseStatus, UpstreamId, UpstreamVerdict, Version, decode, encode_heartbeat_reply,
        encode_request, encode_response, set_request_id,
    };
    use sluice_core::cluster::{ClusterState, HostId};
    use sluice_core::config::Config;
    use sluice_core::health::Resource;
    use sluice_core::rng::Rng;

    include!("../../core/src/bolt/proxy/model.rs");
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Event {
    Request {
        down: u8,
        id: u8,
        v2: u8,
        service: u8,
        timeout: u8,
        oneway: bool,
    },
    Heartbeat {
        down: u8,
        v2: bool,
    },
    Respond {
        pick: u16,
        status: u8,
    },
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
    Garbage {
        down: u8,
        readable: bool,
    },
    Advance(u16),
    SetAvailable {
        host: u8,
        available: bool,
    },
}

impl From<Event> for model::Op {
    fn from(e: Event) -> Self {
        use model::Op;
        match e {
            Event::Request {
                down,
                id,
                v2,
                service,
                timeout,
                oneway,
            } => Op::Request {
                down,
                id,
                v2,
                service,
                timeout,
                oneway,
            },
            Event::Heartbeat { down, v2 } => Op::Heartbeat { down, v2 },
            Event::Respond { pick, status } => Op::Respond { pick, status },
            Event::UpstreamHeartbeat { pick } => Op::UpstreamHeartbeat { pick },
            Event::Connected { pick } => Op::Connected { pick },
            Event::UpstreamClosed { pick } => Op::UpstreamClosed { pick },
            Event::DownstreamClosed { down } => Op::DownstreamClosed { down },
            Event::Garbage { down, readable } => Op::Garbage { down, readable },
            Event::Advance(ms) => Op::Advance { ms: ms % 2000 },
            Event::SetAvailable { host, available } => Op::SetAvailable { host, available },
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    seed: u64,
    events: Vec<Event>,
}

static CONFIG: std::sync::OnceLock<sluice_core::config::Config> = std::sync::OnceLock::new();

fuzz_target!(|input: Input| {
    let config = CONFIG.get_or_init(model::Model::config);
    let mut m = model::Model::with_config(input.seed, sluice_core::Instant::ORIGIN, config);
    for e in input.events.into_iter().take(512) {
        m.step(e.into());
    }
    m.finish();
});
