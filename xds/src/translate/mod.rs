//! Envoy v3 resources → the config model.
//!
//! Owns the mapping from xDS resources (Listener, RouteConfiguration, Cluster,
//! ClusterLoadAssignment; Secrets are read where a TLS transport socket names them, in the
//! module `tls`) to the **same config tree the YAML file is made of**: each resource becomes the
//! JSON value of a `listeners[]` or `clusters[]` entry, [`assemble`] puts them next to
//! the static entries of the bootstrap file and hands the whole tree to
//! [`Config::from_tree`] — so an xDS config is validated by exactly the code that validates a
//! file (names, addresses, references, ranges), and produces the same model.
//!
//! Two kinds of errors come out, both naming the resource ([`TranslateError`]):
//! - translation: a field, filter or value the model cannot express. Every field of every
//!   message read here is either mapped, listed as telemetry-only (ignored, counted in
//!   [`Notes`]) or refused: a message whose unmapped fields are not all at their defaults is
//!   refused with the first such field's path ([`reject_rest`]). Nothing is silently dropped.
//! - validation: what [`Config::from_tree`] refuses, its tree path (`listeners[3].address`)
//!   mapped back to the resource that produced that entry.
//!
//! Invariant: translation never panics, whatever the input (the `xds_translate` fuzz target).

mod cluster;
mod http_filters;
mod listener;
mod listener_filters;
mod network_filters;
mod route;
mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::Any;
use serde_json::{Map, Value};
use sluice_core::config::{Config, format_duration};

pub use cluster::{eds_service_name, translate_cluster};
pub use listener::translate_listener;
pub use route::translate_route_configuration;
pub use tls::{SecretOrigin, Secrets, TLS_TRANSPORT_SOCKET, sds_names, source_sds_names};

/// The resource types translated, by type URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    /// `envoy.config.cluster.v3.Cluster` (CDS).
    Cluster,
    /// `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS).
    Endpoints,
    /// `envoy.config.listener.v3.Listener` (LDS).
    Listener,
    /// `envoy.config.route.v3.RouteConfiguration` (RDS).
    Route,
    /// `envoy.extensions.transport_sockets.tls.v3.Secret` (SDS over ADS).
    Secret,
}

impl ResourceType {
    /// Every type, in the order an update is applied (make-before-break: CDS, EDS, LDS, RDS;
    /// then SDS, whose secrets the clusters and listeners name).
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Cluster,
        ResourceType::Endpoints,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Secret,
    ];

    /// The type URL on the wire.
    #[must_use]
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoints => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            ResourceType::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
        }
    }

    /// The type a type URL names, if it is one of these.
    #[must_use]
    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// The word used in messages (`listener "x"`).
    #[must_use]
    pub fn noun(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cluster",
            ResourceType::Endpoints => "cluster_load_assignment",
            ResourceType::Listener => "listener",
            ResourceType::Route => "route_configuration",
            ResourceType::Secret => "secret",
        }
    }

    /// Whether a state-of-the-world response carries every resource of the type (LDS, CDS:
    /// absence means removal), as opposed to only the ones it names (RDS, EDS, SDS).
    #[must_use]
    pub fn is_full_state(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }
}

/// A resource or a field the model cannot take, or a value the config validation refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslateError {
    /// The resource's type.
    pub kind: ResourceType,
    /// Its name.
    pub name: String,
    /// Path of the field inside the resource (`filter_chains[0].filters[1]`); empty for the
    /// whole resource.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// For a secret from an SDS source of the bootstrap's `xds.sds_sources`, that source: a
    /// secret is known by its source and name, and one named alike over ADS or from another
    /// source is another secret. `None` for every other resource.
    pub source: Option<String>,
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.kind.noun(), self.name)?;
        if !self.path.is_empty() {
            write!(f, " {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for TranslateError {}

/// What translation ignored on purpose (telemetry-only fields, `is_optional` or disabled HTTP
/// filters), as paths `kind "name" path`, so that they can be counted and shown; and what it
/// merged (an inspector listed again), which ignores nothing and is not counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notes {
    /// One entry per ignored field or filter, each once (a route configuration several
    /// listeners use is translated for each, and noted once).
    pub ignored: Vec<String>,
    /// How many of them are in resources of each type, in [`ResourceType::ALL`] order.
    pub ignored_by_type: [u64; ResourceType::ALL.len()],
    /// What was merged rather than ignored (`kind "name" path: what`), each once.
    pub merged: Vec<String>,
}

impl Notes {
    /// Keeps each note once (the first), and counts the ignored ones by type again.
    fn distinct(&mut self) {
        let mut seen = std::collections::HashSet::with_capacity(self.ignored.len());
        self.ignored.retain(|n| seen.insert(n.clone()));
        let mut seen = std::collections::HashSet::with_capacity(self.merged.len());
        self.merged.retain(|n| seen.insert(n.clone()));
        self.ignored_by_type = [0; ResourceType::ALL.len()];
        for n in &self.ignored {
            if let Some(i) = ResourceType::ALL.iter().position(|k| {
                n.strip_prefix(k.noun())
                    .is_some_and(|rest| rest.starts_with(" \""))
            }) {
                self.ignored_by_type[i] += 1;
            }
        }
    }
}

/// Where translation is inside a resource: its type, name, and a path of fields.
#[derive(Clone, Debug)]
pub(crate) struct At<'a> {
    pub kind: ResourceType,
    pub name: &'a str,
    pub path: String,
    /// The SDS source of a secret ([`TranslateError::source`]).
    pub source: Option<&'a str>,
}

impl<'a> At<'a> {
    pub(crate) fn root(kind: ResourceType, name: &'a str) -> At<'a> {
        At {
            kind,
            name,
            path: String::new(),
            source: None,
        }
    }

    /// The secret `name`, from the SDS source `source` (`None`: over ADS).
    pub(crate) fn secret(name: &'a str, source: Option<&'a str>) -> At<'a> {
        At {
            source,
            ..At::root(ResourceType::Secret, name)
        }
    }

    /// The path of field `key` below this one.
    pub(crate) fn field(&self, key: &str) -> At<'a> {
        let path = if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        };
        At { path, ..*self }
    }

    /// The path of element `i` of this (list) field.
    pub(crate) fn index(&self, i: usize) -> At<'a> {
        At {
            path: format!("{}[{i}]", self.path),
            ..*self
        }
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> TranslateError {
        TranslateError {
            kind: self.kind,
            name: self.name.to_owned(),
            path: self.path.clone(),
            message: message.into(),
            source: self.source.map(str::to_owned),
        }
    }

    pub(crate) fn unsupported(&self) -> TranslateError {
        self.error("unsupported")
    }

    /// Notes `what` as merged here (not ignored, not counted).
    pub(crate) fn merged(&self, notes: &mut Notes, what: &str) {
        notes.merged.push(format!(
            "{} {:?} {}: {what}",
            self.kind.noun(),
            self.name,
            self.path
        ));
    }

    pub(crate) fn note(&self, notes: &mut Notes, what: &str) {
        let place = if self.path.is_empty() {
            what.to_owned()
        } else if what.is_empty() {
            self.path.clone()
        } else {
            format!("{}.{what}", self.path)
        };
        notes
            .ignored
            .push(format!("{} {:?} {place}", self.kind.noun(), self.name));
        if let Some(i) = ResourceType::ALL.iter().position(|k| *k == self.kind) {
            notes.ignored_by_type[i] += 1;
        }
    }
}

/// Refuses `rest` — a message whose mapped and ignored fields were reset to their defaults —
/// when a field is still set, naming the first such field.
pub(crate) fn reject_rest<T: fmt::Debug + Default + PartialEq>(
    rest: &T,
    at: &At<'_>,
) -> Result<(), TranslateError> {
    if *rest == T::default() {
        return Ok(());
    }
    let field = first_set_field(rest).unwrap_or_else(|| "?".to_owned());
    Err(at.field(&field).unsupported())
}

/// The name of the first top-level field of `value` that differs from its default, read from
/// the derived `Debug` output (prost messages have no descriptors here; their `Debug` lists
/// every field, one per line at the first indentation when pretty-printed).
fn first_set_field<T: fmt::Debug + Default>(value: &T) -> Option<String> {
    let fields = |text: String| -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for line in text.lines().skip(1) {
            let field_start = line
                .strip_prefix("    ")
                .filter(|l| !l.starts_with(' '))
                .and_then(|l| l.split_once(": "))
                .filter(|(k, _)| k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            match (field_start, out.last_mut()) {
                (Some((k, v)), _) => {
                    out.push((k.trim_start_matches("r#").to_owned(), v.to_owned()))
                }
                (None, Some((_, v))) => {
                    v.push('\n');
                    v.push_str(line);
                }
                (None, None) => {}
            }
        }
        out
    };
    let set = fields(format!("{value:#?}"));
    let default = fields(format!("{:#?}", T::default()));
    set.into_iter()
        .find(|(k, v)| default.iter().all(|(dk, dv)| dk != k || dv != v))
        .map(|(k, _)| k)
}

/// Moves a field out of a message (for the [`reject_rest`] pattern).
pub(crate) fn take<T: Default>(field: &mut T) -> T {
    std::mem::take(field)
}

/// A protobuf duration as the config writes durations; refused when negative or out of range.
pub(crate) fn duration(
    d: &envoy_types::pb::google::protobuf::Duration,
    at: &At<'_>,
) -> Result<Value, TranslateError> {
    let secs = u64::try_from(d.seconds).ok();
    let nanos = u32::try_from(d.nanos).ok().filter(|n| *n < 1_000_000_000);
    match (secs, nanos) {
        (Some(s), Some(n)) if s < 10 * 365 * 24 * 3600 => {
            Ok(Value::String(format_duration(Duration::new(s, n))))
        }
        _ => Err(at.error(format!(
            "{}s {}ns is not a duration from 0 to 10 years",
            d.seconds, d.nanos
        ))),
    }
}

/// A keepalive's `interval_jitter` (a `type.v3.Percent`) as the config's whole
/// `interval_jitter_percent`, rounded (a non-zero one to at least 1: some jitter was asked for);
/// unset is Envoy's default, 15 %. Refused (with its path) outside 0–100 or when not a number.
pub(crate) fn keepalive_jitter(
    jitter: Option<envoy_types::pb::envoy::r#type::v3::Percent>,
    at: &At<'_>,
) -> Result<u8, TranslateError> {
    let Some(p) = jitter else {
        return Ok(sluice_core::config::DEFAULT_KEEPALIVE_JITTER_PERCENT);
    };
    if (0.0..=100.0).contains(&p.value) {
        // In range (NaN is not): the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        return Ok(if p.value > 0.0 {
            p.value.round().max(1.0) as u8
        } else {
            0
        });
    }
    Err(at
        .field("interval_jitter")
        .error(format!("{} is not a percentage from 0 to 100", p.value)))
}

/// Decodes an `Any` of the expected message type.
pub(crate) fn unpack<T: prost::Message + prost::Name + Default>(
    any: &Any,
    at: &At<'_>,
) -> Result<T, TranslateError> {
    if any.type_url != T::type_url() {
        return Err(at.error(format!(
            "expected {}, found {:?}",
            T::type_url(),
            any.type_url
        )));
    }
    T::decode(any.value.as_slice()).map_err(|e| at.error(format!("undecodable: {e}")))
}

/// Builds a JSON object from pairs, leaving out `None`s.
pub(crate) fn object<const N: usize>(pairs: [(&str, Option<Value>); N]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        if let Some(v) = v {
            m.insert(k.to_owned(), v);
        }
    }
    Value::Object(m)
}

/// The dynamic resources in force, by name (what [`assemble`] builds a config from).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// Listeners (LDS).
    pub listeners: BTreeMap<String, Listener>,
    /// Route configurations (RDS), by `name`.
    pub routes: BTreeMap<String, RouteConfiguration>,
    /// Clusters (CDS).
    pub clusters: BTreeMap<String, Cluster>,
    /// Endpoints (EDS), by `cluster_name` (the EDS service name).
    pub endpoints: BTreeMap<String, ClusterLoadAssignment>,
    /// TLS secrets (SDS over ADS), by name.
    pub secrets: BTreeMap<String, Secret>,
    /// TLS secrets from each SDS source of the bootstrap's `xds.sds_sources` (not ADS), by
    /// source then name.
    pub source_secrets: BTreeMap<String, BTreeMap<String, Secret>>,
}

impl Resources {
    /// Whether a resource of `kind` named `name` is here.
    #[must_use]
    pub fn contains(&self, kind: ResourceType, name: &str) -> bool {
        match kind {
            ResourceType::Cluster => self.clusters.contains_key(name),
            ResourceType::Endpoints => self.endpoints.contains_key(name),
            ResourceType::Listener => self.listeners.contains_key(name),
            ResourceType::Route => self.routes.contains_key(name),
            ResourceType::Secret => self.secrets.contains_key(name),
        }
    }

    /// Removes the resource of `kind` named `name`, if any.
    pub fn remove(&mut self, kind: ResourceType, name: &str) {
        match kind {
            ResourceType::Cluster => drop(self.clusters.remove(name)),
            ResourceType::Endpoints => drop(self.endpoints.remove(name)),
            ResourceType::Listener => drop(self.listeners.remove(name)),
            ResourceType::Route => drop(self.routes.remove(name)),
            ResourceType::Secret => drop(self.secrets.remove(name)),
        }
    }

    /// The names of the resources of `kind`, sorted.
    #[must_use]
    pub fn names(&self, kind: ResourceType) -> Vec<String> {
        match kind {
            ResourceType::Cluster => self.clusters.keys().cloned().collect(),
            ResourceType::Endpoints => self.endpoints.keys().cloned().collect(),
            ResourceType::Listener => self.listeners.keys().cloned().collect(),
            ResourceType::Route => self.routes.keys().cloned().collect(),
            ResourceType::Secret => self.secrets.keys().cloned().collect(),
        }
    }
}

/// A config assembled from the bootstrap and the dynamic resources.
#[derive(Clone, Debug)]
pub struct Assembled {
    /// The validated config.
    pub config: Config,
    /// What was ignored on purpose.
    pub notes: Notes,
}

/// Builds and validates the config made of the bootstrap file's tree (its static listeners and
/// clusters, and every other setting) and the dynamic `resources`, whose entries follow the
/// static ones. Every problem is returned, each naming its resource.
///
/// `bootstrap` is the file's tree as parsed (the YAML data model).
pub fn assemble(
    bootstrap: &Value,
    resources: &Resources,
) -> Result<Assembled, Vec<TranslateError>> {
    let mut notes = Notes::default();
    let mut errors = Vec::new();
    let mut tree = bootstrap.clone();
    let Some(root) = tree.as_object_mut() else {
        return Err(vec![TranslateError {
            kind: ResourceType::Listener,
            name: String::new(),
            path: String::new(),
            message: "the bootstrap config is not a mapping".to_owned(),
            source: None,
        }]);
    };
    // Which resource produced each dynamic entry: (tree index, type, name).
    let mut origins: Vec<(&'static str, usize, ResourceType, String)> = Vec::new();
    let declared = declared_sds_sources(root);
    let secrets = Secrets {
        ads: &resources.secrets,
        declared: &declared,
        sources: &resources.source_secrets,
    };
    let static_clusters = list_len(root, "clusters");
    let static_listeners = list_len(root, "listeners");
    let mut clusters = Vec::new();
    for (name, c) in &resources.clusters {
        let eds_name = cluster::eds_service_name(c);
        let endpoints = eds_name.and_then(|n| resources.endpoints.get(n));
        match translate_cluster(c, endpoints, &secrets, &mut notes) {
            Ok(v) => {
                origins.push((
                    "clusters",
                    static_clusters + clusters.len(),
                    ResourceType::Cluster,
                    name.clone(),
                ));
                clusters.push(v);
            }
            Err(e) => errors.push(e),
        }
    }
    let mut listeners = Vec::new();
    for (name, l) in &resources.listeners {
        match translate_listener(l, &resources.routes, &secrets, &mut notes) {
            Ok(v) => {
                origins.push((
                    "listeners",
                    static_listeners + listeners.len(),
                    ResourceType::Listener,
                    name.clone(),
                ));
                listeners.push(v);
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    append(root, "clusters", clusters);
    append(root, "listeners", listeners);
    match Config::from_tree(&tree) {
        Ok(config) => {
            notes.distinct();
            Ok(Assembled { config, notes })
        }
        Err(errs) => Err(errs
            .0
            .into_iter()
            .map(|e| {
                let origin = origins.iter().find(|(section, i, _, _)| {
                    let prefix = format!("{section}[{i}]");
                    e.path == prefix
                        || e.path.starts_with(&format!("{prefix}."))
                        || e.path.starts_with(&format!("{prefix}["))
                });
                match origin {
                    Some((_, _, kind, name)) => TranslateError {
                        kind: *kind,
                        name: name.clone(),
                        path: String::new(),
                        message: format!("{e} (as the config's {})", e.path),
                        source: None,
                    },
                    None => TranslateError {
                        kind: ResourceType::Listener,
                        name: String::new(),
                        path: String::new(),
                        message: format!("the assembled config: {e}"),
                        source: None,
                    },
                }
            })
            .collect()),
    }
}

/// The names of the bootstrap's SDS sources (`xds.sds_sources[].name`).
#[must_use]
pub fn declared_sds_sources(root: &Map<String, Value>) -> std::collections::BTreeSet<String> {
    root.get("xds")
        .and_then(|x| x.get("sds_sources"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

fn list_len(root: &Map<String, Value>, key: &str) -> usize {
    root.get(key).and_then(Value::as_array).map_or(0, Vec::len)
}

fn append(root: &mut Map<String, Value>, key: &str, items: Vec<Value>) {
    let entry = root
        .entry(key.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = entry {
        list.extend(items);
    } else if !items.is_empty() {
        // Not a list: the validation reports it (the dynamic entries cannot be added).
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod tests_chains;
#[cfg(test)]
mod tests_istiod;
#[cfg(test)]
mod tests_priority;
#[cfg(test)]
pub(crate) mod tests_tls;
