//! What changed between two configs: the pure half of a reload (and, later, of an xDS update).
//!
//! [`diff`] compares a `previous` [`Config`] with the `next` one and says, without touching a
//! socket:
//!
//! - per listener of `next`, where its listening socket comes from ([`ListenerSocket`]): a
//!   listener whose **address** the previous config already had keeps that socket (with the
//!   connections queued on it — no connection is refused during a reload, even when the listener
//!   was renamed or its filter changed), unless the socket must be bound another way (with
//!   `IP_TRANSPARENT` for `original_dst: tproxy`, or without it; or a virtual listener,
//!   `bind_to_port: false`, becomes a bound one or the reverse); any other is bound afresh
//!   (next to the old socket, through `SO_REUSEPORT`);
//! - which listeners of `previous` close (no listener of `next` keeps their socket);
//! - which listeners and clusters were added, removed or changed, matched by **name**
//!   ([`Change`]), for the reload's summary and for whoever must rebuild per-name state;
//! - whether the admin API's listening address changed (a reload cannot move it).
//!
//! [`only_inline_pem_differs`] says whether two configs differ only in the content of inline
//! PEM (an SDS secret rotated): then the runtime swaps TLS contexts (a rotation) instead of
//! switching generations, and no connection is drained.
//!
//! [`only_endpoints_differ`] says whether two configs differ only in the `hosts` of some
//! `static` clusters (an EDS update: endpoints added, removed, re-weighted, or their health
//! status changed, which the translation turns into a host left out, or their
//! `transport_socket_match` labels changed): then the runtime changes those clusters' host sets
//! in place on every worker (as DNS answers do), and no connection is drained. A host whose
//! labels now pick another `transport_socket_matches` entry is a removed host and an added one
//! (another id, another pool: [`crate::host::merge_answer`]).
//!
//! Everything is given as indices into `previous.listeners` / `next.listeners` (or the
//! `clusters`), in config order, so the result borrows nothing and iterates deterministically.
//! Invariant (configs are validated: names and addresses are unique within one config): every
//! index of `next.listeners` has exactly one [`ListenerSocket`], each previous listener is
//! either kept by exactly one next listener or listed in [`ConfigDiff::closed_listeners`].

use super::Config;
use super::tls::Pem;

/// Where a listener of the next config gets its listening socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerSocket {
    /// The previous config had this address: its socket (and backlog) carries over, from the
    /// previous listener at this index.
    Keep {
        /// Index in `previous.listeners`.
        previous: usize,
    },
    /// A new address: a socket must be bound before the switch.
    Bind,
}

/// One named entry (listener or cluster) that differs between two configs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Only the next config has this name (index in `next`).
    Added(usize),
    /// Only the previous config has this name (index in `previous`).
    Removed(usize),
    /// Both have the name, with different settings.
    Changed {
        /// Index in `previous`.
        previous: usize,
        /// Index in `next`.
        next: usize,
    },
}

/// What a switch from one config to another changes (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Per listener of `next`, in order: where its socket comes from.
    pub sockets: Vec<ListenerSocket>,
    /// Listeners of `previous` (indices) whose address `next` does not have: their sockets
    /// close at the switch.
    pub closed_listeners: Vec<usize>,
    /// Listeners added, removed or changed, by name: removals in `previous` order first, then
    /// additions and changes in `next` order.
    pub listeners: Vec<Change>,
    /// Clusters added, removed or changed, by name, ordered as `listeners`.
    pub clusters: Vec<Change>,
    /// The admin API listens somewhere else (or is added or removed).
    pub admin_listen_changed: bool,
}

impl ConfigDiff {
    /// Whether nothing that a reload acts on differs (the `limits` and `drain_timeout` are
    /// not compared).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
            && self.clusters.is_empty()
            && !self.admin_listen_changed
            && self
                .sockets
                .iter()
                .enumerate()
                .all(|(i, s)| *s == ListenerSocket::Keep { previous: i })
            && self.closed_listeners.is_empty()
    }

    /// Indices in `next.listeners` of the listeners that need a freshly bound socket.
    pub fn to_bind(&self) -> impl Iterator<Item = usize> + '_ {
        self.sockets
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == ListenerSocket::Bind)
            .map(|(i, _)| i)
    }
}

/// Compares `previous` with `next` (see the module doc).
#[must_use]
pub fn diff(previous: &Config, next: &Config) -> ConfigDiff {
    let sockets = next
        .listeners
        .iter()
        .map(|l| {
            previous
                .listeners
                .iter()
                .position(|p| {
                    p.address == l.address
                        && binds_transparent(p) == binds_transparent(l)
                        && p.bind_to_port == l.bind_to_port
                })
                .map_or(ListenerSocket::Bind, |previous| ListenerSocket::Keep {
                    previous,
                })
        })
        .collect::<Vec<_>>();
    let closed_listeners = (0..previous.listeners.len())
        .filter(|&i| !sockets.contains(&ListenerSocket::Keep { previous: i }))
        .collect();
    ConfigDiff {
        sockets,
        closed_listeners,
        listeners: by_name(&previous.listeners, &next.listeners, |l| &l.name),
        clusters: by_name(&previous.clusters, &next.clusters, |c| &c.name),
        admin_listen_changed: previous.admin.as_ref().map(|a| &a.listen)
            != next.admin.as_ref().map(|a| &a.listen),
    }
}

/// Whether a listener's socket is bound with `IP_TRANSPARENT` (`original_dst: tproxy`): a
/// socket bound the other way cannot be kept.
fn binds_transparent(l: &super::ListenerConfig) -> bool {
    l.original_dst == Some(super::OriginalDst::Tproxy)
}

/// Added, removed and changed entries of two lists of uniquely named items.
fn by_name<T: PartialEq>(previous: &[T], next: &[T], name: impl Fn(&T) -> &String) -> Vec<Change> {
    let mut changes: Vec<Change> = previous
        .iter()
        .enumerate()
        .filter(|(_, p)| !next.iter().any(|n| name(n) == name(p)))
        .map(|(i, _)| Change::Removed(i))
        .collect();
    for (i, n) in next.iter().enumerate() {
        match previous.iter().position(|p| name(p) == name(n)) {
            None => changes.push(Change::Added(i)),
            Some(p) if previous[p] != *n => changes.push(Change::Changed {
                previous: p,
                next: i,
            }),
            Some(_) => {}
        }
    }
    changes
}

/// Whether `next` differs from `previous` only in the bytes of inline PEM (certificates, keys
/// and CAs from xDS, SDS secrets rotated): same secret names, same files, everything else
/// equal. `false` when they are equal.
#[must_use]
pub fn only_inline_pem_differs(previous: &Config, next: &Config) -> bool {
    /// The config with every inline PEM's text emptied (its secret name kept).
    fn blanked(c: &Config) -> Config {
        let mut c = c.clone();
        let blank = |p: &mut Pem| {
            if let Pem::Inline { pem, .. } = p {
                *pem = "".into();
            }
        };
        for l in &mut c.listeners {
            let chains = l.filter_chains.iter_mut().map(|c| &mut c.tls);
            for tls in std::iter::once(&mut l.tls).chain(chains).flatten() {
                for cert in &mut tls.certificates {
                    blank(&mut cert.cert_chain);
                    blank(&mut cert.private_key);
                }
                if let Some(ca) = &mut tls.client_ca {
                    blank(ca);
                }
            }
        }
        for cl in &mut c.clusters {
            let matched = cl.transport_socket_matches.iter_mut().map(|m| &mut m.tls);
            for tls in std::iter::once(&mut cl.tls).chain(matched).flatten() {
                blank(&mut tls.ca);
                if let Some(cert) = &mut tls.client_certificate {
                    blank(&mut cert.cert_chain);
                    blank(&mut cert.private_key);
                }
            }
        }
        c
    }
    previous != next && blanked(previous) == blanked(next)
}

/// The clusters (indices, the same in both configs) whose `hosts` differ, when `next` differs
/// from `previous` only there: same clusters in the same order, every one of them `static`
/// (where a host list comes from the config, or from EDS) where hosts differ, everything else
/// equal. `None` when anything else differs, or nothing does.
#[must_use]
pub fn only_endpoints_differ(previous: &Config, next: &Config) -> Option<Vec<usize>> {
    // Every field named (no `..`): a field added to `Config` must be considered here.
    let Config {
        admin,
        listeners,
        clusters,
        drain_timeout,
        limits,
        upstream_mark,
        tls_file_check_interval,
        tracing,
        node,
        xds,
    } = previous;
    let rest_equal = *admin == next.admin
        && *listeners == next.listeners
        && *drain_timeout == next.drain_timeout
        && *limits == next.limits
        && *upstream_mark == next.upstream_mark
        && *tls_file_check_interval == next.tls_file_check_interval
        && *tracing == next.tracing
        && *node == next.node
        && *xds == next.xds;
    if !rest_equal || clusters.len() != next.clusters.len() {
        return None;
    }
    let mut changed = Vec::new();
    for (i, (p, n)) in clusters.iter().zip(&next.clusters).enumerate() {
        if p.hosts == n.hosts {
            if p != n {
                return None;
            }
            continue;
        }
        // A cluster whose hosts pick their transport (`transport_socket_matches`) too: a host's
        // pick is part of which host it is in the merge (`crate::host::SlotHost::key`), so a
        // host whose labels pick another transport takes another id — a new pool — and no
        // connection of one transport is ever reused for a host that picked the other.
        if p.kind != super::ClusterKind::Static || !same_but_hosts(p, n) {
            return None;
        }
        changed.push(i);
    }
    (!changed.is_empty()).then_some(changed)
}

/// Whether two clusters are equal but for their `hosts`.
fn same_but_hosts(p: &super::ClusterConfig, n: &super::ClusterConfig) -> bool {
    let super::ClusterConfig {
        name,
        connect_timeout,
        upstream_idle_timeout,
        lb_policy,
        hash_policy,
        minimum_ring_size,
        health_check,
        outlier_detection,
        circuit_breakers,
        panic_threshold_percent,
        overprovisioning_factor,
        kind,
        hosts: _,
        dns,
        use_http_header,
        tls,
        transport_socket_matches,
        protocol,
        http2_keepalive,
        hosts_change_in_place,
    } = p;
    *name == n.name
        && *connect_timeout == n.connect_timeout
        && *upstream_idle_timeout == n.upstream_idle_timeout
        && *lb_policy == n.lb_policy
        && *hash_policy == n.hash_policy
        && *minimum_ring_size == n.minimum_ring_size
        && *health_check == n.health_check
        && *outlier_detection == n.outlier_detection
        && *circuit_breakers == n.circuit_breakers
        && *panic_threshold_percent == n.panic_threshold_percent
        && *overprovisioning_factor == n.overprovisioning_factor
        && *kind == n.kind
        && *dns == n.dns
        && *use_http_header == n.use_http_header
        && *tls == n.tls
        && *transport_socket_matches == n.transport_socket_matches
        && *protocol == n.protocol
        && *http2_keepalive == n.http2_keepalive
        && *hosts_change_in_place == n.hosts_change_in_place
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listeners: &[(&str, u16, &str)], clusters: &[(&str, u16)]) -> Config {
        use std::fmt::Write as _;
        let mut yaml = String::from("listeners:\n");
        for (name, port, cluster) in listeners {
            let _ = write!(
                yaml,
                "  - name: \"{name}\"\n    address: 127.0.0.1:{port}\n    tcp_proxy: {{ cluster: \"{cluster}\" }}\n"
            );
        }
        yaml.push_str("clusters:\n");
        for (name, port) in clusters {
            let _ = write!(
                yaml,
                "  - name: \"{name}\"\n    hosts: [{{ address: 127.0.0.1:{port} }}]\n"
            );
        }
        Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }

    /// New inline PEM under the same secret names is a rotation; a new secret name, a file,
    /// or any other change is not (issue 13, M2).
    #[test]
    fn a_config_differing_only_in_inline_pem_content_is_a_rotation() {
        let yaml = |cert: &str, secret: &str, port: u16| {
            Config::from_yaml(&format!(
                "listeners:\n  - name: t\n    address: 127.0.0.1:{port}\n    tls:\n      certificates:\n        - cert_chain: {{ inline: \"-----BEGIN CERTIFICATE-----\\n{cert}\\n-----END CERTIFICATE-----\\n\", secret: {secret} }}\n          private_key: {{ inline: \"-----BEGIN PRIVATE KEY-----\\n{cert}\\n-----END PRIVATE KEY-----\\n\", secret: {secret} }}\n    tcp_proxy: {{ cluster: a }}\nclusters:\n  - {{ name: a, hosts: [{{ address: 127.0.0.1:9001 }}] }}\n"
            ))
            .unwrap()
        };
        let a = yaml("AAAA", "web", 8443);
        assert!(only_inline_pem_differs(&a, &yaml("BBBB", "web", 8443)));
        assert!(!only_inline_pem_differs(&a, &a.clone()));
        assert!(!only_inline_pem_differs(&a, &yaml("BBBB", "web2", 8443)));
        assert!(!only_inline_pem_differs(&a, &yaml("BBBB", "web", 8444)));
        // The same on a filter chain's `tls` (an SDS secret of Istio's inbound mTLS chain).
        let chained = |cert: &str| {
            let plain = yaml(cert, "web", 8443);
            let mut c = plain.clone();
            let l = &mut c.listeners[0];
            l.filter_chains = vec![crate::config::FilterChain {
                filter_chain_match: crate::config::FilterChainMatch {
                    server_names: vec!["a.example".into()],
                    ..Default::default()
                },
                tls: l.tls.take(),
                filter: l.filter.clone(),
            }];
            c
        };
        assert!(only_inline_pem_differs(&chained("AAAA"), &chained("BBBB")));
        assert!(!only_inline_pem_differs(&chained("AAAA"), &a));
    }

    /// Issue 13: the hosts of a cluster with `transport_socket_matches` (every Istio outbound
    /// cluster) change in place like any other's — hosts added, re-weighted, or their labels
    /// changed (a pick change is a new host in the merge, not a new generation); an entry
    /// changed is not an endpoints update.
    #[test]
    fn hosts_of_a_cluster_with_transport_socket_matches_change_in_place() {
        let yaml = |label: &str, extra_host: &str, entry: &str| {
            Config::from_yaml(&format!(
                "listeners:\n  - {{ name: t, address: 127.0.0.1:8000, tcp_proxy: {{ cluster: a }} }}\n\
                 clusters:\n  - {{ name: a, hosts: [{{ address: 127.0.0.1:1, transport_socket_match: {{ tlsMode: {label} }} }}{extra_host}], \
                 transport_socket_matches: [ {{ name: {entry}, match: {{ tlsMode: istio }}, tls: null }} ] }}\n"
            ))
            .unwrap()
        };
        let base = yaml("istio", "", "m");
        assert_eq!(
            only_endpoints_differ(&base, &yaml("disabled", "", "m")),
            Some(vec![0]),
            "a label changed"
        );
        assert_eq!(
            only_endpoints_differ(&base, &yaml("istio", ", { address: 127.0.0.1:2 }", "m")),
            Some(vec![0]),
            "a host added"
        );
        assert_eq!(
            only_endpoints_differ(
                &base,
                &yaml("istio", ", { address: 127.0.0.1:2, weight: 4 }", "m2")
            ),
            None,
            "an entry renamed"
        );
    }

    /// Hosts added, removed or re-weighted in `static` clusters are an endpoints-only change
    /// (issue 13: applied in place); any other difference, or none, is not.
    #[test]
    fn a_config_differing_only_in_static_hosts_is_an_endpoints_update() {
        let yaml = |hosts_a: &str, hosts_b: &str, extra: &str| {
            Config::from_yaml(&format!(
                "listeners:\n  - {{ name: t, address: 127.0.0.1:8000, tcp_proxy: {{ cluster: a }} }}\n\
                 clusters:\n  - {{ name: a, hosts: [{hosts_a}] }}\n  - {{ name: b, hosts: [{hosts_b}]{extra} }}\n"
            ))
            .unwrap()
        };
        let h = |ports: &[u16]| {
            ports
                .iter()
                .map(|p| format!("{{ address: 127.0.0.1:{p} }}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let base = yaml(&h(&[1, 2]), &h(&[3]), "");
        assert_eq!(only_endpoints_differ(&base, &base.clone()), None, "equal");
        // Added, removed, replaced hosts; one cluster or both.
        assert_eq!(
            only_endpoints_differ(&base, &yaml(&h(&[1, 2, 4]), &h(&[3]), "")),
            Some(vec![0])
        );
        assert_eq!(
            only_endpoints_differ(&base, &yaml(&h(&[2]), &h(&[5]), "")),
            Some(vec![0, 1])
        );
        // A weight.
        let weighted = yaml(&h(&[1, 2]), "{ address: 127.0.0.1:3, weight: 7 }", "");
        assert_eq!(only_endpoints_differ(&base, &weighted), Some(vec![1]));
        // Hosts and a cluster setting: a full switch.
        assert_eq!(
            only_endpoints_differ(&base, &yaml(&h(&[1]), &h(&[3]), ", connect_timeout: 3s")),
            None
        );
        assert_eq!(
            only_endpoints_differ(&base, &yaml(&h(&[1, 2]), &h(&[3]), ", connect_timeout: 3s")),
            None
        );
        // Hosts and a listener.
        let mut moved = yaml(&h(&[1]), &h(&[3]), "");
        moved.listeners[0].address = "127.0.0.1:8001".parse().unwrap();
        assert_eq!(only_endpoints_differ(&base, &moved), None);
        // A cluster added or removed.
        let mut fewer = yaml(&h(&[1]), &h(&[3]), "");
        fewer.clusters.pop();
        assert_eq!(only_endpoints_differ(&base, &fewer), None);
        // A drain timeout.
        let mut slower = yaml(&h(&[1]), &h(&[3]), "");
        slower.drain_timeout *= 2;
        assert_eq!(only_endpoints_differ(&base, &slower), None);
    }

    #[test]
    fn turning_tproxy_on_or_off_binds_a_new_socket() {
        let yaml = |how: &str| {
            format!(
                "listeners:\n  - {{ name: in, address: 0.0.0.0:15006, {how} tcp_proxy: {{ cluster: p }} }}\n\
                 clusters:\n  - {{ name: p, type: original_dst }}\n"
            )
        };
        let plain = Config::from_yaml(&yaml("")).unwrap();
        let redirect = Config::from_yaml(&yaml("original_dst: redirect,")).unwrap();
        let tproxy = Config::from_yaml(&yaml("original_dst: tproxy,")).unwrap();
        // The same socket serves an uncaptured and a REDIRECT listener.
        assert_eq!(
            diff(&plain, &redirect).sockets,
            [ListenerSocket::Keep { previous: 0 }]
        );
        for (a, b) in [(&redirect, &tproxy), (&tproxy, &plain)] {
            let d = diff(a, b);
            assert_eq!(d.sockets, [ListenerSocket::Bind]);
            assert_eq!(d.closed_listeners, [0]);
        }
    }

    #[test]
    fn turning_bind_to_port_on_or_off_binds_or_releases_the_address() {
        let yaml = |bind: &str| {
            format!(
                "listeners:\n  - {{ name: out, address: 0.0.0.0:15001, original_dst: redirect, use_original_dst: true, tcp_proxy: {{ cluster: p }} }}\n\
                 \x20 - {{ name: web, address: 0.0.0.0:80, {bind} tcp_proxy: {{ cluster: p }} }}\n\
                 clusters:\n  - {{ name: p, type: original_dst }}\n"
            )
        };
        let bound = Config::from_yaml(&yaml("")).unwrap();
        let virtual_ = Config::from_yaml(&yaml("bind_to_port: false,")).unwrap();
        for (a, b) in [(&bound, &virtual_), (&virtual_, &bound)] {
            let d = diff(a, b);
            assert_eq!(
                d.sockets,
                [ListenerSocket::Keep { previous: 0 }, ListenerSocket::Bind]
            );
            assert_eq!(d.closed_listeners, [1]);
        }
        assert!(diff(&virtual_, &virtual_).is_empty());
    }

    #[test]
    fn the_same_config_changes_nothing_and_keeps_every_socket() {
        let c = config(&[("a", 1000, "x"), ("b", 1001, "x")], &[("x", 80)]);
        let d = diff(&c, &c);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(
            d.sockets,
            [
                ListenerSocket::Keep { previous: 0 },
                ListenerSocket::Keep { previous: 1 }
            ]
        );
        assert_eq!(d.to_bind().count(), 0);
    }

    #[test]
    fn sockets_follow_addresses_whatever_the_names_and_order() {
        let previous = config(&[("a", 1000, "x"), ("b", 1001, "x")], &[("x", 80)]);
        // `b` moved to 1002, `a` was renamed `c` and moved second; a new listener on 1001.
        let next = config(
            &[("b", 1002, "x"), ("c", 1000, "x"), ("d", 1001, "x")],
            &[("x", 80)],
        );
        let d = diff(&previous, &next);
        assert_eq!(
            d.sockets,
            [
                ListenerSocket::Bind,
                ListenerSocket::Keep { previous: 0 },
                ListenerSocket::Keep { previous: 1 },
            ]
        );
        assert_eq!(d.to_bind().collect::<Vec<_>>(), [0]);
        assert!(d.closed_listeners.is_empty());
        assert_eq!(
            d.listeners,
            [
                Change::Removed(0),
                Change::Changed {
                    previous: 1,
                    next: 0
                },
                Change::Added(1),
                Change::Added(2),
            ]
        );
        assert!(d.clusters.is_empty());
        assert!(!d.is_empty());
    }

    #[test]
    fn a_removed_address_closes_its_socket() {
        let previous = config(&[("a", 1000, "x"), ("b", 1001, "x")], &[("x", 80)]);
        let next = config(&[("b", 1001, "x")], &[("x", 80)]);
        let d = diff(&previous, &next);
        assert_eq!(d.sockets, [ListenerSocket::Keep { previous: 1 }]);
        assert_eq!(d.closed_listeners, [0]);
        assert_eq!(d.listeners, [Change::Removed(0)]);
    }

    #[test]
    fn clusters_are_matched_by_name() {
        let previous = config(&[("a", 1000, "x")], &[("x", 80), ("y", 81), ("z", 82)]);
        let next = config(&[("a", 1000, "x")], &[("x", 80), ("z", 90), ("w", 83)]);
        let d = diff(&previous, &next);
        assert_eq!(
            d.clusters,
            [
                Change::Removed(1),
                Change::Changed {
                    previous: 2,
                    next: 1
                },
                Change::Added(2),
            ]
        );
        assert!(d.listeners.is_empty(), "{:?}", d.listeners);
        assert_eq!(d.sockets, [ListenerSocket::Keep { previous: 0 }]);
    }

    #[test]
    fn a_listener_whose_cluster_index_moves_is_changed() {
        let previous = config(&[("a", 1000, "y")], &[("x", 80), ("y", 81)]);
        let next = config(&[("a", 1000, "y")], &[("y", 81)]);
        let d = diff(&previous, &next);
        assert_eq!(
            d.listeners,
            [Change::Changed {
                previous: 0,
                next: 0
            }]
        );
        assert_eq!(d.clusters, [Change::Removed(0)]);
    }

    #[test]
    fn moving_the_admin_api_is_reported() {
        let base = config(&[("a", 1000, "x")], &[("x", 80)]);
        let mut with_admin = base.clone();
        with_admin.admin = Config::from_yaml(
            "admin: { address: 127.0.0.1:9901 }\n\
             listeners: [{ name: a, address: 127.0.0.1:1000, tcp_proxy: { cluster: x } }]\n\
             clusters: [{ name: x, hosts: [{ address: 127.0.0.1:80 }] }]\n",
        )
        .expect("admin config")
        .admin;
        assert!(with_admin.admin.is_some());
        assert!(diff(&base, &with_admin).admin_listen_changed);
        assert!(diff(&with_admin, &base).admin_listen_changed);
        assert!(!diff(&with_admin, &with_admin).admin_listen_changed);
    }
}
