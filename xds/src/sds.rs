//! The client of an SDS source of its own (Istio's agent, `sds-grpc`): Envoy's Secret Discovery
//! Service, state of the world (`SecretDiscoveryService/StreamSecrets`), as a sans-IO state
//! machine — one per source of the bootstrap's `xds.sds_sources`, beside the ADS machine
//! ([`crate::ads::Ads`]), which decides whether the secrets serve.
//!
//! Owns, for its source: the secret names subscribed to (those the clusters' and listeners' TLS
//! contexts name from this source: [`crate::ads::Output::SourceNames`], fed as
//! [`Input::Names`]), the last accepted version, the nonce of the last response, and the
//! responses handed on and not yet answered.
//!
//! States: disconnected → connected (a stream is open) → disconnected. While disconnected the
//! secrets serving stay as they are (they are the ADS machine's); on connecting, the first
//! request carries the node, the last accepted version and every name subscribed to.
//!
//! Rules (the ADS client's discipline):
//! - A response of another type, an undecodable secret, or a name twice, is NACKed at once.
//! - Otherwise its secrets (those subscribed to; the others are dropped and counted,
//!   [`Sds::unsolicited`]) are handed on ([`Output::Secrets`]) and the response is answered
//!   when [`Input::Verdict`] says whether the config using them applied: an ACK (its
//!   `version_info` becomes the accepted version) or a NACK (`version_info` the last accepted
//!   one, `error_detail` why). A verdict answers its response and every earlier one still
//!   waiting (the ADS machine folds them); a verdict for a response of an earlier stream is
//!   dropped (nonces are per stream).
//! - A change of names is a request with the last nonce and the new names (never an empty
//!   list, which would ask for every secret: the runtime closes the stream of a source nothing
//!   needs any more, `runtime/src/xds_sds.rs`).

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status;
use prost::{Message, Name};

pub use crate::ads::Answer;

/// gRPC's INVALID_ARGUMENT, the code of a NACK's `error_detail`.
const INVALID_ARGUMENT: i32 = 3;

/// What happened, as the runtime tells it.
#[derive(Clone, Debug)]
pub enum Input {
    /// A new stream is open: subscribe.
    Connected,
    /// The stream ended (or could not be opened).
    Disconnected,
    /// The secret names needed from this source ([`crate::ads::Output::SourceNames`]).
    Names(BTreeSet<String>),
    /// A response arrived on the stream.
    Response(DiscoveryResponse),
    /// The ADS machine's answer to the secrets of the response `nonce`
    /// ([`crate::ads::Output::SourceVerdict`]).
    Verdict {
        /// The response answered.
        nonce: String,
        /// `None`: its secrets serve; `Some`: refused, why.
        error: Option<String>,
    },
}

/// What the runtime must do.
#[derive(Clone, Debug)]
pub enum Output {
    /// Send this request on the stream; what it says.
    Send(Box<DiscoveryRequest>, Answer),
    /// Hand these secrets to the ADS machine ([`crate::ads::Input::SourceSecrets`]).
    Secrets {
        /// The response's nonce (the verdict names it).
        nonce: String,
        /// Its secrets.
        secrets: Vec<Secret>,
    },
}

/// A response handed on, not yet answered.
#[derive(Clone, Debug)]
struct Awaiting {
    stream: u64,
    nonce: String,
    version: String,
    names: Vec<String>,
}

/// The SDS source client state machine (see the module doc).
#[derive(Debug)]
pub struct Sds {
    node: Node,
    names: BTreeSet<String>,
    connected: bool,
    stream: u64,
    node_sent: bool,
    accepted_version: String,
    /// Each secret's version: that of the last accepted response that carried it.
    secret_versions: BTreeMap<String, String>,
    nonce: String,
    awaiting: Vec<Awaiting>,
    unsolicited: u64,
    outputs: VecDeque<Output>,
}

impl Sds {
    /// A client for `node`.
    #[must_use]
    pub fn new(node: Node) -> Sds {
        Sds {
            node,
            names: BTreeSet::new(),
            connected: false,
            stream: 0,
            node_sent: false,
            accepted_version: String::new(),
            secret_versions: BTreeMap::new(),
            nonce: String::new(),
            awaiting: Vec::new(),
            unsolicited: 0,
            outputs: VecDeque::new(),
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The last accepted version (empty: none yet).
    #[must_use]
    pub fn accepted_version(&self) -> &str {
        &self.accepted_version
    }

    /// The version of each secret accepted (that of the last accepted response carrying it).
    #[must_use]
    pub fn secret_versions(&self) -> &BTreeMap<String, String> {
        &self.secret_versions
    }

    /// The names subscribed to.
    #[must_use]
    pub fn names(&self) -> &BTreeSet<String> {
        &self.names
    }

    /// Whether a stream is open.
    #[must_use]
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Secrets of responses that named nothing subscribed to, dropped on arrival.
    #[must_use]
    pub fn unsolicited(&self) -> u64 {
        self.unsolicited
    }

    /// Feeds one input.
    pub fn handle_input(&mut self, input: Input) {
        match input {
            Input::Connected => {
                self.connected = true;
                self.stream += 1;
                self.node_sent = false;
                self.nonce.clear();
                self.awaiting.clear();
                if !self.names.is_empty() {
                    self.send(None);
                }
            }
            Input::Disconnected => {
                self.connected = false;
                self.awaiting.clear();
            }
            Input::Names(names) => {
                if names == self.names {
                    return;
                }
                self.names = names;
                self.secret_versions.retain(|n, _| self.names.contains(n));
                if !self.names.is_empty() {
                    self.send(None);
                }
            }
            Input::Response(r) => self.on_response(r),
            Input::Verdict { nonce, error } => {
                let Some(at) = self
                    .awaiting
                    .iter()
                    .position(|a| a.stream == self.stream && a.nonce == nonce)
                else {
                    return;
                };
                let answered: Vec<Awaiting> = self.awaiting.drain(..=at).collect();
                let last = answered.last().expect("at least the one found");
                if error.is_none() {
                    self.accepted_version.clone_from(&last.version);
                    for a in &answered {
                        for n in &a.names {
                            self.secret_versions.insert(n.clone(), a.version.clone());
                        }
                    }
                }
                self.send(Some((nonce, error)));
            }
        }
    }

    fn on_response(&mut self, r: DiscoveryResponse) {
        if !self.connected {
            return;
        }
        match decode(&r) {
            Ok(mut secrets) => {
                let before = secrets.len();
                secrets.retain(|s| self.names.contains(&s.name));
                self.unsolicited += (before - secrets.len()) as u64;
                self.awaiting.push(Awaiting {
                    stream: self.stream,
                    nonce: r.nonce.clone(),
                    version: r.version_info,
                    names: secrets.iter().map(|s| s.name.clone()).collect(),
                });
                self.outputs.push_back(Output::Secrets {
                    nonce: r.nonce,
                    secrets,
                });
            }
            Err(e) => self.send(Some((r.nonce, Some(e)))),
        }
    }

    /// Sends a request: a subscription (`None`: the last nonce), an ACK (`Some((nonce,
    /// None))`) or a NACK (`Some((nonce, Some(error)))`).
    fn send(&mut self, answer: Option<(String, Option<String>)>) {
        if !self.connected {
            return;
        }
        let (nonce, error, what) = match answer {
            None => (self.nonce.clone(), None, Answer::Subscription),
            Some((nonce, None)) => (nonce, None, Answer::Ack),
            Some((nonce, Some(e))) => (nonce, Some(e), Answer::Nack),
        };
        self.nonce.clone_from(&nonce);
        let node = (!self.node_sent).then(|| self.node.clone());
        self.node_sent = true;
        self.outputs.push_back(Output::Send(
            Box::new(DiscoveryRequest {
                version_info: self.accepted_version.clone(),
                node,
                resource_names: self.names.iter().cloned().collect(),
                type_url: Secret::type_url(),
                response_nonce: nonce,
                error_detail: error.map(|message| Status {
                    code: INVALID_ARGUMENT,
                    message,
                    details: Vec::new(),
                }),
                ..Default::default()
            }),
            what,
        ));
    }
}

/// A response's secrets, refusing another type, undecodable bytes and a name twice.
fn decode(r: &DiscoveryResponse) -> Result<Vec<Secret>, String> {
    let url = Secret::type_url();
    if r.type_url != url {
        return Err(format!(
            "type_url: expected {url} on an SDS stream, found {:?}",
            r.type_url
        ));
    }
    let mut out = Vec::with_capacity(r.resources.len());
    let mut seen = HashSet::with_capacity(r.resources.len());
    for (i, any) in r.resources.iter().enumerate() {
        if any.type_url != url {
            return Err(format!(
                "resources[{i}]: expected {url}, found {:?}",
                any.type_url
            ));
        }
        let s = Secret::decode(any.value.as_slice())
            .map_err(|e| format!("resources[{i}]: undecodable: {e}"))?;
        if !seen.insert(s.name.clone()) {
            return Err(format!("resources[{i}]: {:?} is listed twice", s.name));
        }
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
