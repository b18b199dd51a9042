//! The SDS sources of the bootstrap's `xds.sds_sources` (Istio's agent, `sds-grpc`): one task
//! per source beside the ADS client ([`crate::xds`]), on the xDS thread's runtime, each
//! driving a sans-IO [`sluice_xds::sds::Sds`] machine over a tonic
//! `SecretDiscoveryService/StreamSecrets` stream (state of the world).
//!
//! A source is reached over a Unix socket (`path`, in cleartext HTTP/2, as Envoy reaches its
//! `pipe` cluster; a relative path is the working directory's, as Envoy's is) or through a
//! static cluster (`cluster`: its first host, with its `tls`, by the same connector as the
//! management server's). Only the operator's bootstrap names where a source is: an xDS
//! resource names a source, never a socket.
//!
//! The wiring (the runtime's, no state of its own): the ADS machine says which secrets each
//! source must provide ([`sluice_xds::ads::Output::SourceNames`] → [`sds::Input::Names`]);
//! the source's secrets go to the ADS machine ([`sds::Output::Secrets`] →
//! [`sluice_xds::ads::Input::SourceSecrets`]), which warms and applies them with the rest
//! (a TLS context waits for its secret; a rotation is a TLS rotation on new handshakes, as
//! for ADS secrets) and answers ([`sluice_xds::ads::Output::SourceVerdict`] →
//! [`sds::Input::Verdict`]), upon which the source's machine ACKs or NACKs.
//!
//! Connection states, per source: idle (no TLS context needs a secret of it: not dialled) →
//! connecting → streaming → (stream ends or fails) → backoff → connecting; a stream whose
//! last secret user is gone is closed, back to idle (as Envoy ends an SDS subscription with no
//! watcher left), without a backoff; the backoff is the ADS client's (250 ms doubling to 30 s, full jitter, reset
//! after a stream that delivered a response and lasted, [`backoff_after_stream`]). A Unix
//! socket's peer must run as this process's user or root ([`trusted_peer`]). While a source
//! is disconnected the secrets
//! serving stay. Each state change, ACK and NACK is recorded in [`SOURCES`] (`/xds`'s
//! `sds_sources`, `/config_dump`'s `xds_resources.source_secret`; never a secret's content).

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use serde_json::Value;
use sluice_xds::ads::Input;
use sluice_xds::sds::{self, Answer, Sds};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tracing::{info, warn};

use crate::xds::{
    BACKOFF_BASE, Jitter, XdsConnector, error_chain, kept_error, next_backoff, unix_now,
};

/// Each SDS source's status, by name (`None` entries never: a source is listed once its task
/// starts). Written by the sources' tasks (never on the data path), read by the admin server.
pub static SOURCES: std::sync::Mutex<BTreeMap<String, SourceStatus>> =
    std::sync::Mutex::new(BTreeMap::new());

/// One SDS source's status.
#[derive(Clone, Debug, Default)]
pub struct SourceStatus {
    /// Where it is: `unix:PATH` or `cluster:NAME`.
    pub target: String,
    /// Whether its stream is open.
    pub connected: bool,
    /// The last failed connection attempt (what failed, Unix seconds), until a stream opens.
    pub last_connect_error: Option<(String, u64)>,
    /// The last accepted version.
    pub version: String,
    /// The secrets subscribed to.
    pub names: Vec<String>,
    /// Each secret accepted and its version.
    pub secret_versions: BTreeMap<String, String>,
    /// When the last ACK went out (Unix seconds).
    pub updated_at: Option<u64>,
    /// The last NACK: nonce, error (kept as ADS NACKs are), when.
    pub last_nack: Option<(String, String, u64)>,
    /// ACKs and NACKs sent.
    pub acked: u64,
    /// NACKs sent.
    pub nacked: u64,
    /// Secrets its responses carried (`sluice_sds_source_secrets_received_total`).
    pub secrets_received: u64,
    /// Of those, the ones of responses ACKed: serving (`…_applied_total`).
    pub secrets_applied: u64,
    /// Of those, the ones of responses NACKed: refused, the secrets serving stay
    /// (`…_refused_total`).
    pub secrets_refused: u64,
    /// Secrets received and not answered yet (an answer covers every response folded into it).
    secrets_pending: u64,
}

impl SourceStatus {
    /// A response carrying `n` secrets went to the ADS client.
    fn received(&mut self, n: usize) {
        self.secrets_received += n as u64;
        self.secrets_pending += n as u64;
    }

    /// The source's machine answered: the secrets received since the last answer were applied
    /// (ACK) or refused (NACK).
    fn answered(&mut self, what: Answer) {
        let pending = std::mem::take(&mut self.secrets_pending);
        match what {
            Answer::Ack => {
                self.acked += 1;
                self.updated_at = Some(unix_now());
                self.secrets_applied += pending;
            }
            Answer::Nack => {
                self.nacked += 1;
                self.secrets_refused += pending;
            }
            Answer::Subscription => self.secrets_pending = pending,
        }
    }
}

/// Every source's status now, by name (for the metrics: one scrape reads one copy).
#[must_use]
pub fn sources_snapshot() -> Vec<(String, SourceStatus)> {
    SOURCES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect()
}

/// Where an SDS source listens, as the runtime dials it.
#[derive(Clone, Debug)]
pub(crate) enum SourceTarget {
    /// A Unix socket.
    Unix(PathBuf),
    /// A static cluster's first host (with its `tls`), and the URI of the channel.
    Cluster {
        name: String,
        connector: XdsConnector,
        uri: String,
    },
}

impl SourceTarget {
    fn describe(&self) -> String {
        match self {
            SourceTarget::Unix(p) => format!("unix:{}", p.display()),
            SourceTarget::Cluster { name, .. } => format!("cluster:{name}"),
        }
    }
}

/// A declared source: its name and where it is.
#[derive(Clone, Debug)]
pub(crate) struct SourceSpec {
    pub name: String,
    pub target: SourceTarget,
}

/// Starts one task per source (on the current runtime); returns each source's control channel
/// (the ADS machine's names and verdicts for it). The sources' secrets go to `to_ads`.
pub(crate) fn spawn_sources(
    specs: &[SourceSpec],
    node: &Node,
    to_ads: &UnboundedSender<Input>,
    jitter_seed: u64,
) -> BTreeMap<String, UnboundedSender<sds::Input>> {
    let mut controls = BTreeMap::new();
    for (i, spec) in specs.iter().enumerate() {
        let (tx, rx) = unbounded_channel();
        controls.insert(spec.name.clone(), tx);
        set_status(&spec.name, |s| {
            *s = SourceStatus {
                target: spec.target.describe(),
                ..SourceStatus::default()
            };
        });
        tokio::spawn(run_source(
            spec.clone(),
            Sds::new(node.clone()),
            to_ads.clone(),
            rx,
            jitter_seed.wrapping_add(i as u64 + 1),
        ));
    }
    controls
}

fn set_status(name: &str, update: impl FnOnce(&mut SourceStatus)) {
    let mut guard = SOURCES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    update(guard.entry(name.to_owned()).or_default());
}

/// One source's loop: streams one after another, with the backoff in between, until the ADS
/// client is gone (`to_ads` closed).
async fn run_source(
    spec: SourceSpec,
    mut machine: Sds,
    to_ads: UnboundedSender<Input>,
    mut control: UnboundedReceiver<sds::Input>,
    jitter_seed: u64,
) {
    let mut jitter = Jitter(jitter_seed | 1);
    let mut backoff = BACKOFF_BASE;
    let mut source = Source {
        name: spec.name.clone(),
        machine: &mut machine,
        to_ads: &to_ads,
    };
    loop {
        if to_ads.is_closed() {
            return;
        }
        // A source no TLS context needs a secret of is not dialled (nor its stream kept, see
        // `stream_until_it_ends`), as Envoy closes an SDS subscription with no watcher left.
        while source.machine.names().is_empty() {
            set_status(&spec.name, |s| s.names.clear());
            match control.recv().await {
                Some(input) => {
                    source.machine.handle_input(input);
                    source.drain(None);
                }
                None => return,
            }
        }
        let (got_response, lasted) = stream_once(&mut source, &spec.target, &mut control).await;
        source.machine.handle_input(sds::Input::Disconnected);
        source.drain(None);
        set_status(&spec.name, |s| s.connected = false);
        if source.machine.names().is_empty() {
            // Closed because nothing needs it any more: no failure to back off from.
            info!(source = %spec.name, "xds: SDS source: no secret of it is needed, stream closed");
            continue;
        }
        let wait = jitter.below(backoff_after_stream(&mut backoff, got_response, lasted));
        let until = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => break,
                input = control.recv() => match input {
                    Some(input) => {
                        source.machine.handle_input(input);
                        source.drain(None);
                    }
                    None => return,
                },
            }
        }
    }
}

/// The bound of the wait after a stream that lasted `lasted` (zero: none opened): the ADS
/// client's backoff, reset by a stream that delivered a response only if it also lasted
/// [`crate::xds::RESYNC_RESET_AFTER`] — a source that answers then closes the stream at once (a broken or
/// hostile agent) is retried ever more slowly (at most every 30 s), not several times a
/// second for ever, while an agent restarted after a long healthy stream is reconnected to at
/// once.
fn backoff_after_stream(backoff: &mut Duration, got_response: bool, lasted: Duration) -> Duration {
    // `next_backoff`'s resync rule: a short stream does not reset.
    next_backoff(backoff, got_response, Some(lasted))
}

/// A source's machine and where its secrets go.
struct Source<'a> {
    name: String,
    machine: &'a mut Sds,
    to_ads: &'a UnboundedSender<Input>,
}

impl Source<'_> {
    /// Drains the machine: requests to the stream (when connected), secrets to the ADS
    /// client; records ACKs and NACKs.
    fn drain(&mut self, stream: Option<&UnboundedSender<DiscoveryRequest>>) {
        while let Some(out) = self.machine.poll_output() {
            match out {
                sds::Output::Send(req, what) => {
                    self.record_request(&req, what);
                    if let Some(s) = stream {
                        let _ = s.send(*req);
                    }
                }
                sds::Output::Secrets { nonce, secrets } => {
                    set_status(&self.name, |s| s.received(secrets.len()));
                    let _ = self.to_ads.send(Input::SourceSecrets {
                        source: self.name.clone(),
                        nonce,
                        secrets,
                    });
                }
            }
        }
    }

    fn record_request(&self, req: &DiscoveryRequest, what: Answer) {
        let names: Vec<String> = self.machine.names().iter().cloned().collect();
        let version = self.machine.accepted_version().to_owned();
        let versions = self.machine.secret_versions().clone();
        let nack = (what == Answer::Nack).then(|| {
            let error = kept_error(req.error_detail.as_ref().map_or("", |e| e.message.as_str()));
            warn!(source = %self.name, nonce = %req.response_nonce, %error, "xds: SDS source: NACK");
            (req.response_nonce.clone(), error, unix_now())
        });
        set_status(&self.name, |s| {
            s.names = names;
            s.version = version;
            s.secret_versions = versions;
            if nack.is_some() {
                s.last_nack = nack;
            }
            s.answered(what);
        });
    }
}

/// A Unix socket connector for tonic's channel (the URI it passes is ignored).
#[derive(Clone, Debug)]
struct UnixConnector(PathBuf);

crate::xds::connector_service!(UnixConnector, tokio::net::UnixStream);

impl UnixConnector {
    /// A connection to the socket, refused unless its peer is this process's user or root.
    async fn connect(self) -> io::Result<tokio::net::UnixStream> {
        let path = self.0;
        let stream = tokio::net::UnixStream::connect(&path)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        // Whoever listens there gives the listeners their certificates and CAs: only this
        // process's user or root is trusted to (another user who could create the socket,
        // in a shared directory, must not choose what the proxy trusts).
        let peer = stream.peer_cred().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{}: peer credentials: {e}", path.display()),
            )
        })?;
        trusted_peer(peer.uid(), nix::unistd::geteuid().as_raw()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{}: {e}", path.display()),
            )
        })?;
        Ok(stream)
    }
}

/// Whether the process at the other end of an SDS source's Unix socket, running as `peer`,
/// may provide secrets to this one, running as `own`: the same user, or root.
fn trusted_peer(peer: u32, own: u32) -> Result<(), String> {
    if peer == own || peer == 0 {
        Ok(())
    } else {
        Err(format!(
            "the process listening runs as uid {peer}, neither this process's ({own}) nor root: \
             not trusted to provide secrets, refused"
        ))
    }
}

/// How long a connection attempt to a Unix socket may take (a local peer answers at once or
/// not at all).
const UNIX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One stream to the source, until it ends; whether it delivered a response, and how long it
/// lasted once open (zero: it never opened).
async fn stream_once(
    source: &mut Source<'_>,
    target: &SourceTarget,
    control: &mut UnboundedReceiver<sds::Input>,
) -> (bool, Duration) {
    let mut opened_at = None;
    let got = stream_until_it_ends(source, target, control, &mut opened_at).await;
    (
        got,
        opened_at.map_or(Duration::ZERO, |at: tokio::time::Instant| at.elapsed()),
    )
}

async fn stream_until_it_ends(
    source: &mut Source<'_>,
    target: &SourceTarget,
    control: &mut UnboundedReceiver<sds::Input>,
    opened_at: &mut Option<tokio::time::Instant>,
) -> bool {
    let described = target.describe();
    let channel = match target {
        SourceTarget::Unix(path) => {
            // The authority is a placeholder: the connector dials the socket.
            let endpoint = tonic::transport::Endpoint::from_static("http://sds.local")
                .connect_timeout(UNIX_CONNECT_TIMEOUT);
            endpoint
                .connect_with_connector(UnixConnector(path.clone()))
                .await
        }
        SourceTarget::Cluster { connector, uri, .. } => {
            match tonic::transport::Endpoint::from_shared(uri.clone()) {
                Ok(e) => e.connect_with_connector(connector.clone()).await,
                Err(e) => {
                    warn!(source = %source.name, error = %e, "xds: SDS source: bad address");
                    return false;
                }
            }
        }
    };
    let channel = match channel {
        Ok(c) => c,
        Err(e) => {
            let error = error_chain(&e);
            warn!(
                source = %source.name,
                target = %described,
                %error,
                "xds: cannot connect to the SDS source"
            );
            set_status(&source.name, |s| {
                s.last_connect_error = Some((error, unix_now()));
            });
            return false;
        }
    };
    let mut client = SecretDiscoveryServiceClient::new(channel);
    let (tx, rx) = unbounded_channel();
    source.machine.handle_input(sds::Input::Connected);
    source.drain(Some(&tx));
    // The stream opens when the server answers with its headers, which a server may hold
    // until it has something to send (grpcio does): until then, the names the ADS machine
    // asks for still go out (the first request is what the server answers).
    let opened = client.stream_secrets(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
    tokio::pin!(opened);
    let opened = loop {
        tokio::select! {
            opened = &mut opened => break opened,
            input = control.recv() => match input {
                Some(input) => {
                    source.machine.handle_input(input);
                    source.drain(Some(&tx));
                    if source.machine.names().is_empty() {
                        return false;
                    }
                }
                None => return false,
            },
        }
    };
    let mut inbound = match opened {
        Ok(r) => r.into_inner(),
        Err(e) => {
            warn!(source = %source.name, error = %e, "xds: the SDS stream was refused");
            set_status(&source.name, |s| {
                s.last_connect_error = Some((format!("stream refused: {e}"), unix_now()));
            });
            return false;
        }
    };
    info!(source = %source.name, target = %described, "xds: SDS source connected");
    set_status(&source.name, |s| {
        s.connected = true;
        // A failure before this one is over (the log keeps it).
        s.last_connect_error = None;
    });
    *opened_at = Some(tokio::time::Instant::now());
    let mut got = false;
    loop {
        tokio::select! {
            m = inbound.message() => match m {
                Ok(Some(response)) => {
                    got = true;
                    source.machine.handle_input(sds::Input::Response(response));
                    source.drain(Some(&tx));
                }
                Ok(None) => {
                    warn!(source = %source.name, "xds: the SDS source closed the stream");
                    return got;
                }
                Err(e) => {
                    warn!(source = %source.name, error = %e, "xds: the SDS stream failed");
                    return got;
                }
            },
            input = control.recv() => match input {
                Some(input) => {
                    source.machine.handle_input(input);
                    source.drain(Some(&tx));
                    // The last secret user of this source is gone: the stream closes
                    // (dropped), and opens again when a secret of it is needed.
                    if source.machine.names().is_empty() {
                        return got;
                    }
                }
                None => return got,
            },
        }
    }
}

/// `/xds`'s `sds_sources`: per source, where it is, whether connected, the last connection
/// error, the accepted version, the secrets and their versions, the last NACK (`null` when
/// none is declared).
#[must_use]
pub fn status_json() -> Value {
    let guard = SOURCES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if guard.is_empty() {
        return Value::Null;
    }
    let mut out = serde_json::Map::new();
    for (name, s) in guard.iter() {
        out.insert(
            name.clone(),
            serde_json::json!({
                "target": s.target,
                "connected": s.connected,
                "last_connect_error": s.last_connect_error.as_ref().map(|(error, at)| {
                    serde_json::json!({ "error": error, "at": at })
                }),
                "version": s.version,
                "updated_at": s.updated_at,
                "subscribed": s.names,
                "secrets": s.secret_versions,
                "acks": s.acked,
                "nacks": s.nacked,
                "last_nack": s.last_nack.as_ref().map(|(nonce, error, at)| {
                    serde_json::json!({ "nonce": nonce, "error": error, "at": at })
                }),
            }),
        );
    }
    Value::Object(out)
}

/// `/config_dump`'s `xds_resources.source_secret`: each secret accepted from a source, with
/// its source and version (never its content).
#[must_use]
pub fn config_dump_entries() -> Vec<Value> {
    let guard = SOURCES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = Vec::new();
    for (source, s) in guard.iter() {
        for (name, version) in &s.secret_versions {
            out.push(serde_json::json!({
                "origin": "dynamic",
                "source": source,
                "name": name,
                "version_info": version,
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::RESYNC_RESET_AFTER;

    /// The secret counters of a source: every secret received counts once, as applied when
    /// the answer covering its response is an ACK, as refused when a NACK (two responses
    /// folded into one answer count together); a subscription change answers nothing.
    #[test]
    fn secrets_count_as_received_then_applied_or_refused_by_the_answer() {
        let mut s = SourceStatus::default();
        s.received(2);
        s.answered(Answer::Subscription);
        assert_eq!((s.secrets_received, s.secrets_applied), (2, 0));
        s.answered(Answer::Ack);
        assert_eq!(
            (s.secrets_received, s.secrets_applied, s.secrets_refused),
            (2, 2, 0)
        );
        // Two responses (1 and 3 secrets) answered by one NACK.
        s.received(1);
        s.received(3);
        s.answered(Answer::Nack);
        assert_eq!(
            (s.secrets_received, s.secrets_applied, s.secrets_refused),
            (6, 2, 4)
        );
        assert_eq!((s.acked, s.nacked), (1, 1));
        // An ACK with nothing pending applies nothing more.
        s.answered(Answer::Ack);
        assert_eq!(s.secrets_applied, 2);
    }

    #[test]
    fn only_this_user_or_root_may_provide_secrets_over_a_socket() {
        assert_eq!(trusted_peer(1000, 1000), Ok(()));
        assert_eq!(trusted_peer(0, 1000), Ok(()));
        let refused = trusted_peer(1001, 1000).expect_err("another user");
        assert!(
            refused.contains("uid 1001") && refused.contains("(1000)"),
            "{refused}"
        );
    }

    /// A source that answers then ends its stream at once does not reset the backoff (it
    /// would be reconnected to several times a second for ever); one whose stream lasted does.
    #[test]
    fn a_short_stream_with_a_response_does_not_reset_the_backoff() {
        let mut backoff = BACKOFF_BASE;
        let bounds: Vec<Duration> = (0..4)
            .map(|_| backoff_after_stream(&mut backoff, true, Duration::from_millis(5)))
            .collect();
        assert_eq!(
            bounds,
            [1, 2, 4, 8].map(|n| BACKOFF_BASE * n),
            "growing, as without a response"
        );
        assert_eq!(
            backoff_after_stream(&mut backoff, true, RESYNC_RESET_AFTER),
            BACKOFF_BASE,
            "a stream that lasted resets"
        );
        assert_eq!(
            backoff_after_stream(&mut backoff, false, RESYNC_RESET_AFTER),
            BACKOFF_BASE * 2,
            "no response: no reset"
        );
    }
}
