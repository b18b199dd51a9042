//! `listeners[].filter_chains`: each chain's `filter_chain_match`, `tls` and filter (`http` or
//! `tcp_proxy`), and the checks between chains.
//!
//! Invariants of what it returns (which [`crate::filter_chain::select`] relies on): server
//! names are lowercase patterns as `sni_routes` keeps them ([`super::sni_pattern`]); no two
//! chains of a listener have overlapping matches ([`crate::filter_chain::overlap`]); no chain
//! asks for a server name of a connection it says is not TLS, nor for an application protocol
//! a plaintext connection cannot have (only `http/1.0`, `http/1.1` and `h2c`, which the HTTP
//! sniff gives it, [`crate::detect`]).

use serde_json::Value;

use super::decoder::{Decoder, child, index};
use super::{decode_tcp_proxy, http, sni_pattern, tls};
use crate::config::{
    FilterChain, FilterChainMatch, InspectorPorts, ListenerFilter, PortRange, TransportProtocol,
};
use crate::detect::PLAINTEXT_PROTOCOLS;
use crate::filter_chain::overlap;

/// `filter_chains: [ { filter_chain_match, tls, http | tcp_proxy } ]` of listener `path`.
pub(super) fn decode_filter_chains(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    cluster_names: &[&str],
) -> Option<Vec<FilterChain>> {
    let chains = dec.list(path, v, |dec, path, v| {
        decode_chain(dec, path, v, cluster_names)
    })?;
    if chains.is_empty() {
        dec.error(
            path,
            "give at least one filter chain (or leave `filter_chains` out)",
        );
        return None;
    }
    let mut clash = false;
    for (j, b) in chains.iter().enumerate() {
        if let Some(i) = chains[..j]
            .iter()
            .position(|a| overlap(&a.filter_chain_match, &b.filter_chain_match))
        {
            dec.error(
                &child(&index(path, j), "filter_chain_match"),
                format!(
                    "matches the same connections as {}'s (same destination_port and \
                     transport_protocol, and a server name and application protocol in common, \
                     or none on both): which one serves them would be ambiguous",
                    index(path, i)
                ),
            );
            clash = true;
        }
    }
    (!clash).then_some(chains)
}

fn decode_chain(
    dec: &mut Decoder,
    path: &str,
    v: &Value,
    cluster_names: &[&str],
) -> Option<FilterChain> {
    let mut obj = dec.object(path, v)?;
    let m = match obj.opt("filter_chain_match") {
        Some((v, p)) => decode_match(dec, &p, v),
        None => Some(FilterChainMatch::default()),
    };
    let mut filters: Vec<Option<ListenerFilter>> = Vec::new();
    if let Some((v, p)) = obj.opt("tcp_proxy") {
        filters.push(decode_tcp_proxy(dec, &p, v, cluster_names).map(ListenerFilter::TcpProxy));
    }
    if let Some((v, p)) = obj.opt("http") {
        filters.push(
            http::decode_http(dec, &p, v, cluster_names).map(|h| ListenerFilter::Http(Box::new(h))),
        );
    }
    let filter = match filters.len() {
        1 => filters.pop().flatten(),
        n => {
            dec.error(
                path,
                if n == 0 {
                    "no filter: give one of `http`, `tcp_proxy` (a filter chain serves with \
                     either)"
                } else {
                    "more than one filter: give exactly one of `http`, `tcp_proxy`"
                },
            );
            None
        }
    };
    let tls = match obj.opt("tls") {
        Some((v, p)) => {
            let codec = match &filter {
                Some(ListenerFilter::Http(h)) => Some(h.codec),
                _ => None,
            };
            tls::decode_listener_tls(dec, &p, v, codec, false).map(|t| Some(Box::new(t)))
        }
        None => Some(None),
    };
    obj.finish(dec);
    let m = m?;
    let tls = tls?;
    if tls.is_some() && m.transport_protocol == Some(TransportProtocol::RawBuffer) {
        dec.error(
            &child(path, "tls"),
            "a chain for `transport_protocol: raw_buffer` (plaintext) connections cannot \
             terminate TLS",
        );
        return None;
    }
    Some(FilterChain {
        filter_chain_match: m,
        tls,
        filter: filter?,
    })
}

fn decode_match(dec: &mut Decoder, path: &str, v: &Value) -> Option<FilterChainMatch> {
    let mut obj = dec.object(path, v)?;
    let destination_port = match obj.opt("destination_port") {
        Some((v, p)) => dec.u64_in(&p, v, 1..=65535).map(|n| Some(n as u16)),
        None => Some(None),
    };
    let server_names = match obj.opt("server_names") {
        Some((v, p)) => {
            let names = dec.list(&p, v, |dec, path, v| {
                let raw = dec.string(path, v)?;
                match sni_pattern(raw) {
                    Ok(name) => Some(name),
                    Err(why) => {
                        dec.error(path, format!("{raw:?} {why}"));
                        None
                    }
                }
            });
            names.and_then(|names| {
                for (i, n) in names.iter().enumerate() {
                    if names[..i].contains(n) {
                        dec.error(&index(&p, i), format!("{n:?} is listed twice"));
                        return None;
                    }
                }
                Some(names)
            })
        }
        None => Some(Vec::new()),
    };
    let transport_protocol = match obj.opt("transport_protocol") {
        Some((v, p)) => dec.one_of(&p, v, &TransportProtocol::CHOICES).map(Some),
        None => Some(None),
    };
    let application_protocols = match obj.opt("application_protocols") {
        Some((v, p)) => tls::unique_strings(dec, &p, v, "ALPN protocol", 255),
        None => Some(Vec::new()),
    };
    obj.finish(dec);
    let m = FilterChainMatch {
        destination_port: destination_port?,
        server_names: server_names?,
        transport_protocol: transport_protocol?,
        application_protocols: application_protocols?,
    };
    if m.transport_protocol == Some(TransportProtocol::RawBuffer) {
        if !m.server_names.is_empty() {
            dec.error(
                &child(path, "server_names"),
                "can never match with `transport_protocol: raw_buffer`: a plaintext \
                 connection has no ClientHello to name a server",
            );
            return None;
        }
        let p = child(path, "application_protocols");
        for (i, proto) in m.application_protocols.iter().enumerate() {
            if !PLAINTEXT_PROTOCOLS.contains(&proto.as_str()) {
                dec.error(
                    &index(&p, i),
                    format!(
                        "{proto:?} can never match with `transport_protocol: raw_buffer`: a \
                         plaintext connection has no ClientHello to offer it, and the HTTP \
                         sniff of its first bytes only tells {}",
                        PLAINTEXT_PROTOCOLS.join(", ")
                    ),
                );
                return None;
            }
        }
    }
    Some(m)
}

/// `tls_inspector` / `http_inspector` of listener `path`: `{ except_ports: [...] }` or
/// `{ only_ports: [...] }`, each entry a port or an inclusive range `"first-last"`.
pub(super) fn decode_inspector(dec: &mut Decoder, path: &str, v: &Value) -> Option<InspectorPorts> {
    let mut obj = dec.object(path, v)?;
    let except = obj.opt("except_ports");
    let only = obj.opt("only_ports");
    obj.finish(dec);
    let (ports, p, make): (_, _, fn(Vec<PortRange>) -> InspectorPorts) = match (except, only) {
        (Some((v, p)), None) => (v, p, InspectorPorts::ExceptPorts),
        (None, Some((v, p))) => (v, p, InspectorPorts::OnlyPorts),
        (Some(_), Some(_)) | (None, None) => {
            dec.error(path, "give exactly one of `except_ports`, `only_ports`");
            return None;
        }
    };
    let ranges = dec.list(&p, ports, |dec, path, v| match v {
        Value::String(s) => {
            let parsed = s.split_once('-').and_then(|(a, b)| {
                let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
                (a >= 1 && a <= b).then_some(PortRange { first: a, last: b })
            });
            if parsed.is_none() {
                dec.error(
                    path,
                    format!("{s:?} is not a port range (`first-last`, 1 to 65535, first <= last)"),
                );
            }
            parsed
        }
        _ => dec.u64_in(path, v, 1..=65535).map(|n| PortRange {
            first: n as u16,
            last: n as u16,
        }),
    })?;
    Some(make(ranges))
}
