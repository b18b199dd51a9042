//! The input format of the `xds_translate` fuzz target, and the driver it runs: arbitrary
//! bytes become ADS responses fed to the state machine, which decodes, translates, assembles
//! and validates them ([`drive`] must never panic).
//!
//! Input: records `[tag][len: u16 LE][len bytes]`. The tag's low two bits name the resource
//! type (cluster, endpoints, listener, route); the bytes are one encoded resource of it.
//! Consecutive records of one type make one response (version and nonce: the record's index).
//! A tag of `0xff` (no length) fires what the machine waits for: its warming timer, and the
//! outcome of its apply (applied when the next byte is even, failed otherwise). At the end,
//! the timer fires and the apply succeeds once more.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;

use crate::ads::{Ads, Input, Output};
use crate::translate::ResourceType;

/// Encodes resources as an input of the format (for the committed corpus).
#[must_use]
pub fn encode(records: &[(ResourceType, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, bytes) in records {
        let tag = ResourceType::ALL
            .iter()
            .position(|k| k == kind)
            .unwrap_or(0) as u8;
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        out.push(tag);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&bytes[..usize::from(len)]);
    }
    out.push(0xff);
    out.push(0);
    out
}

/// Runs the state machine over an input; returns how many configs it applied.
pub fn drive(data: &[u8]) -> usize {
    let bootstrap = serde_json::json!({
        "xds": { "cluster": "xds" },
        "listeners": [],
        "clusters": [ { "name": "xds", "hosts": [ { "address": "127.0.0.1:18000" } ] } ],
    });
    let mut ads = Ads::new(Node::default(), bootstrap);
    ads.handle_input(Input::Connected);
    let mut state = State::default();
    state.drain(&mut ads);
    let mut batch: Option<(ResourceType, Vec<Any>)> = None;
    let mut rest = data;
    let mut index = 0usize;
    while let Some((&tag, after)) = rest.split_first() {
        index += 1;
        if tag == 0xff {
            flush(&mut ads, &mut batch, index, &mut state);
            let fail = after.first().is_some_and(|b| b % 2 == 1);
            rest = after.get(1..).unwrap_or_default();
            state.fire(&mut ads, fail);
            continue;
        }
        let Some((len, body)) = after.split_first_chunk::<2>() else {
            break;
        };
        let len = usize::from(u16::from_le_bytes(*len)).min(body.len());
        let (bytes, next) = body.split_at(len);
        rest = next;
        let kind = ResourceType::ALL[usize::from(tag & 3)];
        let any = Any {
            type_url: kind.type_url().to_owned(),
            value: bytes.to_vec(),
        };
        match &mut batch {
            Some((k, list)) if *k == kind => list.push(any),
            _ => {
                flush(&mut ads, &mut batch, index, &mut state);
                batch = Some((kind, vec![any]));
            }
        }
    }
    flush(&mut ads, &mut batch, index, &mut state);
    state.fire(&mut ads, false);
    state.applied
}

#[derive(Default)]
struct State {
    timer: Option<u64>,
    apply: Option<u64>,
    applied: usize,
}

impl State {
    fn drain(&mut self, ads: &mut Ads) {
        while let Some(out) = ads.poll_output() {
            match out {
                Output::Send(_) => {}
                Output::Apply { id, .. } => self.apply = Some(id),
                Output::ArmWarmingTimer(id) => self.timer = Some(id),
            }
        }
    }

    fn fire(&mut self, ads: &mut Ads, fail: bool) {
        if let Some(id) = self.timer.take() {
            ads.handle_input(Input::WarmingTimeout(id));
            self.drain(ads);
        }
        if let Some(id) = self.apply.take() {
            if fail {
                ads.handle_input(Input::ApplyFailed(id, "fuzz".to_owned()));
            } else {
                self.applied += 1;
                ads.handle_input(Input::Applied(id));
            }
            self.drain(ads);
        }
    }
}

fn flush(
    ads: &mut Ads,
    batch: &mut Option<(ResourceType, Vec<Any>)>,
    index: usize,
    state: &mut State,
) {
    if let Some((kind, resources)) = batch.take() {
        ads.handle_input(Input::Response(DiscoveryResponse {
            version_info: index.to_string(),
            resources,
            type_url: kind.type_url().to_owned(),
            nonce: index.to_string(),
            ..Default::default()
        }));
        state.drain(ads);
    }
}
