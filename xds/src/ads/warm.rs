//! Per-resource warming: which version of each dynamic resource the workers get.
//!
//! Owns the choice, from the **candidate** (what the server has sent and the machine takes as
//! current, warming resources included) and the **applied** resources (what the workers serve),
//! of the resources to serve next ([`select`]). It keeps no state: the machine passes what
//! has waited too long (`filled`: the EDS and RDS names taken as received empty).
//!
//! A resource of the candidate is *usable* when what it waits for is there: a cluster, its
//! ClusterLoadAssignment (or its name in `filled`) and its SDS secrets (over ADS, or from an
//! SDS source the bootstrap declares: [`Resources::source_secrets`]); a route configuration,
//! every cluster of the candidate it routes to being served; a listener, its route
//! configurations (each served at some version, or in `filled`), its SDS secrets and every
//! cluster of the candidate it (TCP proxy, inline routes) routes to being served. Each resource
//! is served at its candidate version when usable, else at its applied version (with what
//! that version used, taken from the candidate when there, else from the applied resources),
//! else not at all — so an updated cluster serves its previous version and endpoints until
//! its new assignment comes, and a listener or route whose new version routes to a cluster not
//! yet served waits at its old version (or out) for it. A listener is bound to its address: a
//! candidate listener whose address a listener kept at its applied version holds waits too (at
//! its applied version, or out), until both can switch together.
//!
//! Invariant: the result is whole whenever the applied resources were — every cluster a
//! served route or listener names is served: an applied version kept may name a cluster the
//! candidate removed, which then stays, at its applied version, until nothing served names it
//! (break after make). References to clusters the candidate does not have at all are left for
//! validation to refuse.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, address, data_source::Specifier, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteConfiguration, RouteMatch, VirtualHost, route::Action,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier as TcpClusterSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use prost::{Message, Name};
use sluice_core::config::yaml::addresses_overlap;

use crate::translate::{self, Resources};

/// The EDS and RDS names taken as received empty (warming timed out; or, to validate the
/// candidate, every one still missing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Filled {
    pub(crate) endpoints: BTreeSet<String>,
    pub(crate) routes: BTreeSet<String>,
}

/// The ClusterLoadAssignment of no endpoints a cluster whose assignment never came serves.
pub(crate) fn empty_assignment(name: &str) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        ..Default::default()
    }
}

/// The route table a listener whose route configuration never came serves: every request
/// answered 404, as Envoy answers a request no route matches (its `NR`).
pub(crate) fn empty_routes(name: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: "route-configuration-not-received".to_owned(),
            domains: vec!["*".to_owned()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".to_owned())),
                    ..Default::default()
                }),
                action: Some(Action::DirectResponse(DirectResponseAction {
                    status: 404,
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A stand-in for a secret not received yet, to validate what uses it: a certificate and key
/// (or, `validation`, a CA) read from files — a path is not read while validating, and this
/// one is never served.
pub(crate) fn placeholder_secret(name: &str, validation: bool) -> Secret {
    let file = || DataSource {
        specifier: Some(Specifier::Filename(format!(
            "/nonexistent/sds-placeholder/{name}"
        ))),
        ..Default::default()
    };
    let r#type = if validation {
        secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: Some(file()),
            ..Default::default()
        })
    } else {
        secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(file()),
            private_key: Some(file()),
            ..Default::default()
        })
    };
    Secret {
        name: name.to_owned(),
        r#type: Some(r#type),
    }
}

/// A secret a TLS context waits for: its SDS source (`None`: ADS) and its name.
pub(crate) type SecretKey = (Option<String>, String);

/// The secrets the TLS contexts of `clusters` and `listeners` wait for: those over ADS and
/// those from the declared SDS sources `sources` (a secret from a source the bootstrap does
/// not declare is not waited for: translation refuses its context by path).
pub(crate) fn secrets_of<'a>(
    clusters: impl IntoIterator<Item = &'a Cluster> + Clone,
    listeners: impl IntoIterator<Item = &'a Listener> + Clone,
    sources: &BTreeSet<String>,
) -> BTreeSet<SecretKey> {
    let mut out: BTreeSet<SecretKey> = translate::sds_names(clusters.clone(), listeners.clone())
        .into_iter()
        .map(|n| (None, n))
        .collect();
    for (source, names) in translate::source_sds_names(clusters, listeners) {
        if sources.contains(&source) {
            out.extend(names.into_iter().map(|n| (Some(source.clone()), n)));
        }
    }
    out
}

/// The secret `key` in `res`, if there.
pub(crate) fn secret<'r>(res: &'r Resources, key: &SecretKey) -> Option<&'r Secret> {
    match &key.0 {
        None => res.secrets.get(&key.1),
        Some(source) => res.source_secrets.get(source)?.get(&key.1),
    }
}

/// Puts `s` in `res` as the secret `key`.
pub(crate) fn insert_secret(res: &mut Resources, key: &SecretKey, s: Secret) {
    match &key.0 {
        None => res.secrets.insert(key.1.clone(), s),
        Some(source) => res
            .source_secrets
            .entry(source.clone())
            .or_default()
            .insert(key.1.clone(), s),
    };
}

/// What to serve (see the module doc). `statics`: the bootstrap's cluster names; `sources`:
/// its SDS sources.
pub(crate) fn select(
    applied: &Resources,
    candidate: &Resources,
    filled: &Filled,
    statics: &BTreeSet<String>,
    sources: &BTreeSet<String>,
) -> Resources {
    let mut out = Resources::default();
    // Clusters first: what routes and listeners may point at.
    for (name, c) in &candidate.clusters {
        let service = translate::eds_service_name(c);
        let endpoints = service.and_then(|s| {
            candidate
                .endpoints
                .get(s)
                .cloned()
                .or_else(|| filled.endpoints.contains(s).then(|| empty_assignment(s)))
        });
        let secrets = secrets_of([c], [], sources);
        let warm = (service.is_none() || endpoints.is_some())
            && secrets.iter().all(|s| secret(candidate, s).is_some());
        if warm {
            out.clusters.insert(name.clone(), c.clone());
            if let (Some(s), Some(e)) = (service, endpoints) {
                out.endpoints.insert(s.to_owned(), e);
            }
            copy_secrets(&secrets, candidate, applied, &mut out);
        } else if let Some(old) = applied.clusters.get(name) {
            keep_applied_cluster(old, applied, candidate, sources, &mut out);
        }
    }
    // Route configurations: each name at one version, the candidate's if its clusters are
    // served, else the applied one (whose clusters are kept below), else none.
    let mut routes_needed = BTreeSet::new();
    for l in candidate
        .listeners
        .values()
        .chain(applied.listeners.values())
    {
        super::rds_of(l, &mut routes_needed);
    }
    let served = |c: &str, out: &Resources| out.clusters.contains_key(c) || statics.contains(c);
    // The route configurations served at their applied version.
    let mut old_routes = BTreeSet::new();
    for r in &routes_needed {
        let new = match candidate.routes.get(r) {
            Some(rc) => route_clusters(rc)
                .iter()
                .all(|c| served(c, &out) || !candidate.clusters.contains_key(c))
                .then(|| rc.clone()),
            None => filled.routes.contains(r).then(|| empty_routes(r)),
        };
        if let Some(rc) = new {
            out.routes.insert(r.clone(), rc);
        } else if let Some(rc) = applied.routes.get(r) {
            out.routes.insert(r.clone(), rc.clone());
            old_routes.insert(r.clone());
        }
    }
    // Listeners.
    let mut chosen = Vec::new();
    for (name, l) in &candidate.listeners {
        let usable = listener_ready(l, &out, candidate, sources, |c| {
            served(c, &out) || !candidate.clusters.contains_key(c)
        });
        if usable {
            chosen.push((name.clone(), l.clone(), false));
        } else if let Some(old) = applied.listeners.get(name)
            && listener_ready(old, &out, applied, sources, |_| true)
        {
            chosen.push((name.clone(), old.clone(), true));
        }
    }
    // A listener is bound to its address: a candidate one whose address a listener kept at
    // its applied version still holds (that one waits to move off it) waits too, at its own
    // applied version or out, until they can switch together — as Envoy's new listener waits
    // for the old one on its address to go. Falling back may put an old version on another
    // candidate's address: again until none clashes (applied versions never clash together).
    loop {
        let held: Vec<SocketAddr> = chosen
            .iter()
            .filter(|(_, _, from_applied)| *from_applied)
            .flat_map(|(_, l, _)| listener_addresses(l))
            .collect();
        let clashes = |l: &Listener| {
            listener_addresses(l)
                .iter()
                .any(|a| held.iter().any(|h| addresses_overlap(*a, *h)))
        };
        let before = chosen.len();
        let mut fell_back = false;
        chosen = chosen
            .into_iter()
            .filter_map(|(name, l, from_applied)| {
                if from_applied || !clashes(&l) {
                    return Some((name, l, from_applied));
                }
                fell_back = true;
                applied
                    .listeners
                    .get(&name)
                    .filter(|old| listener_ready(old, &out, applied, sources, |_| true))
                    .map(|old| (name, old.clone(), true))
            })
            .collect();
        if !fell_back && chosen.len() == before {
            break;
        }
    }
    // The routes no chosen listener names are not served.
    let mut routes_used = BTreeSet::new();
    for (_, l, _) in &chosen {
        super::rds_of(l, &mut routes_used);
    }
    out.routes.retain(|r, _| routes_used.contains(r));
    let mut old_listeners = Vec::new();
    for (name, l, from_applied) in chosen {
        let secrets = secrets_of([], [&l], sources);
        if from_applied {
            old_listeners.push(name.clone());
            copy_secrets(&secrets, candidate, applied, &mut out);
        } else {
            copy_secrets(&secrets, candidate, candidate, &mut out);
        }
        out.listeners.insert(name, l);
    }
    // Break after make: the clusters the applied versions kept name, that the candidate
    // removed (a candidate version naming a cluster the candidate lacks is validation's to
    // refuse).
    let mut named = BTreeSet::new();
    for r in &old_routes {
        if let Some(rc) = out.routes.get(r) {
            named.extend(route_clusters(rc));
        }
    }
    for name in &old_listeners {
        if let Some(l) = out.listeners.get(name) {
            named.extend(listener_clusters(l));
        }
    }
    for c in named {
        if !out.clusters.contains_key(&c)
            && let Some(old) = applied.clusters.get(&c)
        {
            keep_applied_cluster(old, applied, candidate, sources, &mut out);
        }
    }
    out
}

/// Serves the applied version of a cluster, with its assignment (the candidate's, newer, when
/// the candidate has one of that service name) and secrets.
fn keep_applied_cluster(
    old: &Cluster,
    applied: &Resources,
    candidate: &Resources,
    sources: &BTreeSet<String>,
    out: &mut Resources,
) {
    if let Some(s) = translate::eds_service_name(old) {
        let e = candidate
            .endpoints
            .get(s)
            .or_else(|| applied.endpoints.get(s))
            .cloned()
            .unwrap_or_else(|| empty_assignment(s));
        out.endpoints.insert(s.to_owned(), e);
    }
    copy_secrets(&secrets_of([old], [], sources), candidate, applied, out);
    out.clusters.insert(old.name.clone(), old.clone());
}

/// Copies the named secrets, the candidate's when there, else `fallback`'s.
fn copy_secrets(
    names: &BTreeSet<SecretKey>,
    candidate: &Resources,
    fallback: &Resources,
    out: &mut Resources,
) {
    for key in names {
        if let Some(s) = secret(candidate, key).or_else(|| secret(fallback, key)) {
            insert_secret(out, key, s.clone());
        }
    }
}

/// Whether listener `l` can be served: its route configurations chosen (in `out`), its secrets
/// in `from`, and every cluster it routes to directly accepted by `cluster_ok`.
fn listener_ready(
    l: &Listener,
    out: &Resources,
    from: &Resources,
    sources: &BTreeSet<String>,
    cluster_ok: impl Fn(&str) -> bool,
) -> bool {
    let mut rds = BTreeSet::new();
    super::rds_of(l, &mut rds);
    rds.iter().all(|r| out.routes.contains_key(r))
        && secrets_of([], [l], sources)
            .iter()
            .all(|s| secret(from, s).is_some())
        && listener_clusters(l).iter().all(|c| cluster_ok(c))
}

/// The TCP addresses listener `l` binds (its address and additional addresses; a pipe or an
/// address that is not an IP binds none that can clash).
fn listener_addresses(l: &Listener) -> Vec<SocketAddr> {
    l.address
        .iter()
        .chain(
            l.additional_addresses
                .iter()
                .filter_map(|a| a.address.as_ref()),
        )
        .filter_map(|a| match &a.address {
            Some(address::Address::SocketAddress(sa)) => {
                let ip: IpAddr = sa.address.parse().ok()?;
                let port = match sa.port_specifier {
                    Some(socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p).ok()?,
                    _ => return None,
                };
                Some(SocketAddr::new(ip, port))
            }
            _ => None,
        })
        .collect()
}

/// The clusters a route configuration routes to (by name; a `cluster_header` names none).
pub(crate) fn route_clusters(rc: &RouteConfiguration) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for vh in &rc.virtual_hosts {
        for r in &vh.routes {
            if let Some(Action::Route(a)) = &r.action {
                match &a.cluster_specifier {
                    Some(ClusterSpecifier::Cluster(c)) => {
                        out.insert(c.clone());
                    }
                    Some(ClusterSpecifier::WeightedClusters(w)) => {
                        out.extend(w.clusters.iter().map(|c| c.name.clone()));
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// The clusters a listener routes to itself: its TCP proxies' and its inline routes'.
fn listener_clusters(l: &Listener) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let filters = l
        .filter_chains
        .iter()
        .chain(l.default_filter_chain.iter())
        .flat_map(|chain| chain.filters.iter());
    for f in filters {
        collect_filter_clusters(f, &mut out);
    }
    out
}

fn collect_filter_clusters(f: &Filter, out: &mut BTreeSet<String>) {
    let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
        return;
    };
    if any.type_url == TcpProxy::type_url() {
        if let Ok(t) = TcpProxy::decode(any.value.as_slice()) {
            match t.cluster_specifier {
                Some(TcpClusterSpecifier::Cluster(c)) => {
                    out.insert(c);
                }
                Some(TcpClusterSpecifier::WeightedClusters(w)) => {
                    out.extend(w.clusters.into_iter().map(|c| c.name));
                }
                None => {}
            }
        }
    } else if any.type_url == HttpConnectionManager::type_url()
        && let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice())
        && let Some(RouteSpecifier::RouteConfig(rc)) = &hcm.route_specifier
    {
        out.extend(route_clusters(rc));
    }
}
