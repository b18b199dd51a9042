//! The input format of the `xds_translate` fuzz target, and the driver it runs: arbitrary
//! bytes become ADS responses fed to the state machine, which decodes, translates, assembles
//! and validates them ([`drive`] and [`drive_delta`] must never panic).
//!
//! Input: records `[tag][len: u16 LE][len bytes]`. The tag's low two bits name the resource
//! type (cluster, endpoints, listener, route), or bit 3 ([`SECRET`]) an SDS secret, or bit 4
//! ([`SOURCE_SECRET`]) a secret of the SDS source `sds-grpc` (its own stream: an
//! [`crate::sds::Sds`] machine wired to the ADS one as the runtime wires them); the bytes are
//! one encoded resource of it.
//! Consecutive records of one type make one response (version and nonce: the record's index).
//! A tag of `0xff` (no length) fires what the machine waits for: its oldest warming timer
//! (they expire in the order armed), and the outcome of its apply (applied when the next byte
//! is even, failed otherwise). At the end, every timer fires and the apply succeeds once more.
//!
//! [`drive_delta`] reads the same records as delta responses: each resource is wrapped in a
//! `Resource` named after what it decodes to (empty when it does not) at the record's index as
//! version, and a record whose tag has bit 2 set ([`REMOVE`]) is a name (its bytes, as UTF-8
//! with replacements) in the response's `removed_resources`.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;

use crate::ads::{Ads, Input, Output, XdsMode};
use crate::sds::{self, Sds};
use crate::translate::ResourceType;

/// The tag bit of a delta removal record.
pub const REMOVE: u8 = 4;

/// The tag bit of a secret (SDS) record (over the low two bits).
pub const SECRET: u8 = 8;

/// The tag bit of a record holding a secret of the SDS source `sds-grpc` (over the others).
pub const SOURCE_SECRET: u8 = 16;

/// The SDS source the fuzz bootstrap declares.
const SOURCE: &str = "sds-grpc";

/// Encodes resources as an input of the format (for the committed corpus).
#[must_use]
pub fn encode(records: &[(ResourceType, Vec<u8>)]) -> Vec<u8> {
    let tagged: Vec<(u8, Vec<u8>)> = records
        .iter()
        .map(|(kind, bytes)| (tag(*kind), bytes.clone()))
        .collect();
    encode_tagged(&tagged)
}

/// The tag of a resource record of `kind` (add [`REMOVE`] for a delta removal).
#[must_use]
pub fn tag(kind: ResourceType) -> u8 {
    if kind == ResourceType::Secret {
        return SECRET;
    }
    ResourceType::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(0) as u8
}

/// Encodes records with their tags (`0xff` entries fire the timer and apply, see the module
/// doc) as an input of the format.
#[must_use]
pub fn encode_tagged(records: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, bytes) in records {
        let tag = *tag;
        if tag == 0xff {
            out.push(0xff);
            out.push(bytes.first().copied().unwrap_or(0));
            continue;
        }
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        out.push(tag);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&bytes[..usize::from(len)]);
    }
    out.push(0xff);
    out.push(0);
    out
}

/// Runs the state machine (state of the world) over an input; returns how many configs it
/// applied.
pub fn drive(data: &[u8]) -> usize {
    run(XdsMode::Sotw, data)
}

/// Runs the state machine (delta) over an input; returns how many configs it applied.
pub fn drive_delta(data: &[u8]) -> usize {
    run(XdsMode::Delta, data)
}

/// A response being gathered: its type, resources and (delta) removed names; whether it is for
/// the SDS source's stream.
type Batch = Option<(ResourceType, Vec<Any>, Vec<String>, bool)>;

fn run(mode: XdsMode, data: &[u8]) -> usize {
    let bootstrap = serde_json::json!({
        "xds": {
            "cluster": "xds",
            "sds_sources": [ { "name": SOURCE, "path": "/nonexistent/sds.sock" } ],
        },
        "listeners": [],
        "clusters": [ { "name": "xds", "hosts": [ { "address": "127.0.0.1:18000" } ] } ],
    });
    let mut ads = Ads::with_mode(mode, Node::default(), bootstrap);
    ads.handle_input(Input::Connected);
    let mut state = State {
        sds: Sds::new(Node::default()),
        timers: std::collections::VecDeque::new(),
        apply: None,
        applied: 0,
    };
    state.sds.handle_input(sds::Input::Connected);
    state.drain(&mut ads);
    let mut batch: Batch = None;
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
        let from_source = tag & SOURCE_SECRET != 0;
        let kind = if from_source || tag & SECRET != 0 {
            ResourceType::Secret
        } else {
            ResourceType::ALL[usize::from(tag & 3)]
        };
        if !matches!(&batch, Some((k, _, _, s)) if *k == kind && *s == from_source) {
            flush(&mut ads, &mut batch, index, &mut state);
            batch = Some((kind, Vec::new(), Vec::new(), from_source));
        }
        let Some((_, list, removed, _)) = &mut batch else {
            continue;
        };
        if mode == XdsMode::Delta && tag & REMOVE != 0 {
            removed.push(String::from_utf8_lossy(bytes).into_owned());
        } else {
            list.push(Any {
                type_url: kind.type_url().to_owned(),
                value: bytes.to_vec(),
            });
        }
    }
    flush(&mut ads, &mut batch, index, &mut state);
    state.finish(&mut ads);
    state.applied
}

struct State {
    sds: Sds,
    timers: std::collections::VecDeque<u64>,
    apply: Option<u64>,
    applied: usize,
}

impl State {
    /// Drains both machines, carrying each one's outputs to the other.
    fn drain(&mut self, ads: &mut Ads) {
        loop {
            let mut idle = true;
            while let Some(out) = ads.poll_output() {
                idle = false;
                match out {
                    Output::Send(..)
                    | Output::SendDelta(..)
                    | Output::Resync
                    | Output::Refused { .. } => {}
                    Output::Apply { id, .. } => self.apply = Some(id),
                    Output::ArmWarmingTimer(id) => self.timers.push_back(id),
                    Output::SourceNames { names, .. } => {
                        self.sds.handle_input(sds::Input::Names(names));
                    }
                    Output::SourceVerdict { nonce, error, .. } => {
                        self.sds.handle_input(sds::Input::Verdict { nonce, error });
                    }
                }
            }
            while let Some(out) = self.sds.poll_output() {
                if let sds::Output::Secrets { nonce, secrets } = out {
                    idle = false;
                    ads.handle_input(Input::SourceSecrets {
                        source: SOURCE.to_owned(),
                        nonce,
                        secrets,
                    });
                }
            }
            if idle {
                return;
            }
        }
    }

    /// Fires every timer armed and lets every apply succeed (a bounded number of rounds: each
    /// may arm more).
    fn finish(&mut self, ads: &mut Ads) {
        for _ in 0..8 {
            if self.timers.is_empty() && self.apply.is_none() {
                break;
            }
            self.fire(ads, false);
        }
    }

    fn fire(&mut self, ads: &mut Ads, fail: bool) {
        if let Some(id) = self.timers.pop_front() {
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

fn flush(ads: &mut Ads, batch: &mut Batch, index: usize, state: &mut State) {
    let Some((kind, resources, removed, from_source)) = batch.take() else {
        return;
    };
    if from_source {
        state
            .sds
            .handle_input(sds::Input::Response(DiscoveryResponse {
                version_info: index.to_string(),
                resources,
                type_url: kind.type_url().to_owned(),
                nonce: index.to_string(),
                ..Default::default()
            }));
        state.drain(ads);
        return;
    }
    let input = match ads.mode() {
        XdsMode::Sotw => Input::Response(DiscoveryResponse {
            version_info: index.to_string(),
            resources,
            type_url: kind.type_url().to_owned(),
            nonce: index.to_string(),
            ..Default::default()
        }),
        XdsMode::Delta => Input::DeltaResponse(DeltaDiscoveryResponse {
            system_version_info: index.to_string(),
            resources: resources
                .into_iter()
                .map(|any| Resource {
                    name: crate::fixtures::resource_name(&any).unwrap_or_default(),
                    version: index.to_string(),
                    resource: Some(any),
                    ..Default::default()
                })
                .collect(),
            type_url: kind.type_url().to_owned(),
            removed_resources: removed,
            nonce: index.to_string(),
            ..Default::default()
        }),
    };
    ads.handle_input(input);
    state.drain(ads);
}
