//! `Config::from_yaml` and the scalar grammars on arbitrary text.
//!
//! Properties:
//! - nothing panics, whatever the bytes;
//! - an `Ok` config keeps its documented invariants (every `tcp_proxy` cluster reference resolves
//!   by index and by name, names are unique, every cluster has a host) and dumps as JSON;
//! - an `Err` is never empty, every message is non-empty, and every path is either the root
//!   (empty) or starts at a top-level section, unless it names an unknown top-level field;
//! - the dump of an `Ok` config (nulls left out, as `/config_dump` does) loads back into it;
//! - `parse_duration(format_duration(d)) == Ok(d)` for every `d` that `parse_duration` returns;
//! - `parse_socket_addr(a.to_string()) == Ok(a)` for every `a` that `parse_socket_addr` returns;
//!
//! (the last two on the whole input and on each of its words).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::config::yaml::{parse_duration, parse_socket_addr};
use sluice_core::config::{Config, ConfigErrors, ListenerFilter, format_duration};

const SECTIONS: [&str; 10] = [
    "admin",
    "node",
    "xds",
    "listeners",
    "clusters",
    "drain_timeout",
    "limits",
    "upstream_mark",
    "tls_file_check_interval",
    "tracing",
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_config(&text);
    // The scalar grammars on the whole text, and on every word of it: the words of a YAML
    // config are where durations and addresses are, so mutations of the corpus reach them.
    check_duration(&text);
    check_socket_addr(&text);
    for word in text
        .split(|c: char| c.is_whitespace() || "{}[],'\"".contains(c))
        .filter(|w| !w.is_empty())
        .take(64)
    {
        check_duration(word);
        check_socket_addr(word);
    }
});

fn drop_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|_, c| !c.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

fn check_config(text: &str) {
    match Config::from_yaml(text) {
        Ok(config) => check_ok(&config),
        Err(errors) => check_errors(&errors),
    }
}

fn check_ok(config: &Config) {
    let json = serde_json::to_string(config).expect("a valid Config serializes to JSON");
    assert!(json.starts_with('{'), "{json}");
    // The dump (nulls left out, as the admin API does) is a config: it loads back into this one.
    let mut dump: serde_json::Value = serde_json::from_str(&json).unwrap();
    drop_nulls(&mut dump);
    match Config::from_tree(&dump) {
        Ok(back) => assert!(
            back == *config,
            "the dump loads back into another config: {dump}"
        ),
        Err(e) => panic!("the dump does not load back: {e}\n{dump}"),
    }
    assert!(!config.listeners.is_empty(), "Ok with no listener");
    for cluster in &config.clusters {
        // A static cluster has hosts; an original_dst one has none (it connects to each
        // connection's original destination); a DNS one has names instead (resolved).
        assert_eq!(
            cluster.hosts.is_empty(),
            cluster.kind != sluice_core::config::ClusterKind::Static,
            "cluster {} has hosts that do not fit its type",
            cluster.name
        );
        assert_eq!(
            cluster.dns.as_ref().is_some_and(|d| !d.names.is_empty()),
            cluster.kind.is_dns(),
            "cluster {} has DNS names that do not fit its type",
            cluster.name
        );
        assert!(
            cluster.hosts.iter().all(|h| (1..=1000).contains(&h.weight)),
            "cluster {} has a weight out of range",
            cluster.name
        );
        assert!(
            !cluster.connect_timeout.is_zero(),
            "zero connect timeout in {}",
            cluster.name
        );
    }
    for listener in &config.listeners {
        if let Some(tls) = &listener.tls {
            assert!(!tls.certificates.is_empty() && !tls.handshake_timeout.is_zero());
            assert!(tls.client_ca.is_some() || tls.verify_subject_alt_names.is_empty());
        }
        if let ListenerFilter::TcpProxy(tp) = &listener.filter {
            let cluster = config.clusters.get(tp.cluster_index).unwrap_or_else(|| {
                panic!(
                    "listener {} refers to cluster index {} of {}",
                    listener.name,
                    tp.cluster_index,
                    config.clusters.len()
                )
            });
            assert_eq!(
                cluster.name, tp.cluster,
                "cluster_index names another cluster"
            );
            assert!((1..=10).contains(&tp.max_connect_attempts));
            assert_ne!(tp.idle_timeout, Some(std::time::Duration::ZERO));
            assert!(!tp.client_hello_timeout.is_zero());
            let mut names = Vec::new();
            for route in &tp.sni_routes {
                let target = config.clusters.get(route.cluster_index);
                assert_eq!(
                    target.map(|c| c.name.as_str()),
                    Some(route.cluster.as_str()),
                    "an sni route's cluster_index names another cluster"
                );
                assert!(!route.server_names.is_empty());
                for name in &route.server_names {
                    let dns = name.strip_prefix("*.").unwrap_or(name);
                    assert!(
                        !dns.is_empty()
                            && !dns.ends_with('.')
                            && dns.split('.').all(|l| !l.is_empty()
                                && l.bytes().all(|b| b.is_ascii_lowercase()
                                    || b.is_ascii_digit()
                                    || b == b'-'
                                    || b == b'_')),
                        "server name {name:?} kept as is"
                    );
                    names.push(name.as_str());
                }
                // What a route matches picks a route's cluster.
                for name in &route.server_names {
                    let probe = name.replace('*', "x");
                    let (picked, matched) = tp.cluster_for_server_name(Some(&probe));
                    assert!(matched && picked < config.clusters.len());
                }
            }
            let count = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), count, "a server name routed twice");
        }
    }
    let unique = |names: Vec<&str>| {
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.len() == names.len()
    };
    assert!(unique(
        config.clusters.iter().map(|c| c.name.as_str()).collect()
    ));
    assert!(unique(
        config.listeners.iter().map(|l| l.name.as_str()).collect()
    ));
}

fn check_errors(errors: &ConfigErrors) {
    assert!(!errors.0.is_empty(), "Err(ConfigErrors) with no error");
    for e in &errors.0 {
        assert!(
            !e.message.trim().is_empty(),
            "empty message at {:?}",
            e.path
        );
        if e.path.is_empty() {
            continue;
        }
        let top_level = SECTIONS.iter().any(|s| {
            e.path
                .strip_prefix(s)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        });
        let unknown_root_field = e.message.starts_with("unknown field");
        assert!(
            top_level || unknown_root_field,
            "error path {:?} is neither the root nor under a section: {}",
            e.path,
            e.message
        );
        assert_eq!(e.to_string(), format!("{}: {}", e.path, e.message));
    }
    let shown = errors.to_string();
    assert!(shown.lines().count() >= errors.0.len(), "{shown}");
}

fn check_duration(text: &str) {
    match parse_duration(text) {
        Ok(d) => {
            let written = format_duration(d);
            assert_eq!(
                parse_duration(&written),
                Ok(d),
                "{text:?} parsed as {d:?}, written back as {written:?}"
            );
        }
        Err(message) => assert!(!message.is_empty(), "empty duration error for {text:?}"),
    }
}

fn check_socket_addr(text: &str) {
    match parse_socket_addr(text) {
        Ok(a) => {
            let written = a.to_string();
            assert_eq!(
                parse_socket_addr(&written),
                Ok(a),
                "{text:?} parsed as {a:?}, written back as {written:?}"
            );
        }
        Err(message) => assert!(!message.is_empty(), "empty address error for {text:?}"),
    }
}
