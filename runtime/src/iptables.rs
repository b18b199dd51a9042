//! `sluice iptables`: the packet-filter commands that capture a pod's traffic for a config's
//! capture listeners (`original_dst`), printed as a shell script — nothing is run.
//!
//! Which traffic a capture listener takes follows from its config: a listener with
//! `use_original_dst: true` captures **outbound** connections (the application's, to any
//! address: it hands each to the listener for its destination), one without captures
//! **inbound** connections (to the pod, from outside). At most one of each.
//!
//! - `original_dst: redirect`: `-t nat` `REDIRECT` — outbound in `OUTPUT`, inbound in
//!   `PREROUTING`.
//! - `original_dst: tproxy`: `-t mangle` `TPROXY` in `PREROUTING`, with a policy route that
//!   delivers packets carrying the TPROXY mark locally (`ip rule` + `ip route ... local`).
//!   Outbound packets are locally generated and never pass `PREROUTING` by themselves: they are
//!   marked in `mangle OUTPUT`, which reroutes them through `lo`, where `TPROXY` takes them.
//!
//! Exclusions (the loop prevention): the proxy's own upstream sockets are left alone by their
//! mark (`upstream_mark`) and/or by the proxy's user (`--proxy-uid`, `-m owner --uid-owner`);
//! an outbound capture needs at least one of them, or the proxy's connection to the real peer
//! would be captured back into the proxy. Traffic on the loopback interface is never captured
//! (it is the pod talking to itself, the proxy included), nor inbound connections to the
//! proxy's own ports (every bound listener's and the admin server's; a virtual listener,
//! `bind_to_port: false`, has none). With `TPROXY`, whose rules see
//! every packet (not only a connection's first, as `nat` does), replies are left alone
//! (`-m conntrack --ctdir REPLY`): inbound, the replies to the pod's own connections (`TPROXY`
//! would drop them, their socket not being transparent); outbound, the replies of connections
//! made to the pod (they must leave, not be rerouted to the proxy).
//!
//! Rules go into chains of their own (`SLUICE_OUTBOUND`, `SLUICE_INBOUND`, ...) jumped to from
//! the built-in chains, so that they can be listed and flushed together. IPv4 (`iptables`) for
//! an IPv4 or `0.0.0.0` capture listener, IPv6 (`ip6tables`) for an IPv6 one, both for `[::]`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use sluice_core::config::{Config, OriginalDst};

/// Options of `sluice iptables` that the config does not say.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Also exclude the proxy's own traffic by its user id (`-m owner --uid-owner`).
    pub proxy_uid: Option<u32>,
    /// The mark `TPROXY` gives the packets it diverts, which the policy route matches.
    pub tproxy_mark: u32,
    /// The routing table of that policy route.
    pub route_table: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            proxy_uid: None,
            tproxy_mark: DEFAULT_TPROXY_MARK,
            route_table: DEFAULT_ROUTE_TABLE,
        }
    }
}

/// Default [`Options::tproxy_mark`].
pub const DEFAULT_TPROXY_MARK: u32 = 1;
/// Default [`Options::route_table`] (Istio's).
pub const DEFAULT_ROUTE_TABLE: u32 = 133;

/// One capture listener's part in the script.
struct Capture<'a> {
    name: &'a str,
    address: SocketAddr,
    how: OriginalDst,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn iptables(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
    fn ip(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip -6",
        }
    }
    fn any(self) -> &'static str {
        match self {
            Family::V4 => "0.0.0.0/0",
            Family::V6 => "::/0",
        }
    }
}

fn families(address: SocketAddr) -> Vec<Family> {
    match address {
        SocketAddr::V4(_) => vec![Family::V4],
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => vec![Family::V4, Family::V6],
        SocketAddr::V6(_) => vec![Family::V6],
    }
}

/// The script for `config`, or why there is none (no capture listener, no exclusion for the
/// proxy's own traffic, a mark clash, two capture listeners for one direction).
pub fn script(config: &Config, options: &Options) -> Result<String, String> {
    let mut outbound: Option<Capture<'_>> = None;
    let mut inbound: Option<Capture<'_>> = None;
    for l in &config.listeners {
        let Some(how) = l.original_dst else { continue };
        let (slot, direction) = if l.use_original_dst {
            (&mut outbound, "outbound (use_original_dst: true)")
        } else {
            (&mut inbound, "inbound (without use_original_dst)")
        };
        if let Some(other) = slot {
            return Err(format!(
                "listeners {:?} and {:?} both capture {direction} traffic: keep one",
                other.name, l.name
            ));
        }
        *slot = Some(Capture {
            name: &l.name,
            address: l.address,
            how,
        });
    }
    if outbound.is_none() && inbound.is_none() {
        return Err("no listener has original_dst: nothing to capture".to_owned());
    }
    if outbound.is_some() && config.upstream_mark.is_none() && options.proxy_uid.is_none() {
        return Err(
            "outbound capture needs a way to leave the proxy's own connections alone (or they \
             loop back into it): set upstream_mark in the config, or pass --proxy-uid UID"
                .to_owned(),
        );
    }
    let uses_tproxy = [&outbound, &inbound]
        .iter()
        .any(|c| c.as_ref().is_some_and(|c| c.how == OriginalDst::Tproxy));
    if uses_tproxy && config.upstream_mark == Some(options.tproxy_mark) {
        return Err(format!(
            "upstream_mark {} is also the TPROXY mark: the proxy's own packets would be diverted \
             back to it; choose another upstream_mark or pass --tproxy-mark",
            options.tproxy_mark
        ));
    }
    // The proxy's own ports: never captured inbound. A virtual listener (`bind_to_port:
    // false`) listens on no port: its port may be the application's own, captured as any.
    let mut own_ports: Vec<u16> = config
        .listeners
        .iter()
        .filter(|l| l.bind_to_port)
        .map(|l| l.address.port())
        .collect();
    if let Some(admin) = config.admin.as_ref().and_then(|a| a.tcp_address()) {
        own_ports.push(admin.port());
    }
    own_ports.sort_unstable();
    own_ports.dedup();

    let mut out = String::new();
    out.push_str("#!/bin/sh\n");
    out.push_str("# Generated by `sluice iptables`: capture rules for this config. Review, then run as root\n");
    out.push_str("# in the pod's network namespace.\n");
    out.push_str("set -e\n");
    let m = options.tproxy_mark;
    let table = options.route_table;
    if uses_tproxy {
        let mut fams: Vec<Family> = [&outbound, &inbound]
            .iter()
            .filter_map(|c| c.as_ref())
            .filter(|c| c.how == OriginalDst::Tproxy)
            .flat_map(|c| families(c.address))
            .collect();
        fams.dedup();
        if fams.len() == 2 && fams[0] == fams[1] {
            fams.pop();
        }
        let _ = writeln!(
            out,
            "\n# TPROXY: deliver packets marked {m} to local sockets (routing table {table})."
        );
        for f in [Family::V4, Family::V6] {
            if fams.contains(&f) {
                let _ = writeln!(out, "{} rule add fwmark {m} lookup {table}", f.ip());
                let _ = writeln!(
                    out,
                    "{} route add local {} dev lo table {table}",
                    f.ip(),
                    f.any()
                );
            }
        }
    }
    let exclusions = |out: &mut String, ipt: &str, table: &str, chain: &str| {
        if let Some(mark) = config.upstream_mark {
            let _ = writeln!(
                out,
                "{ipt} -t {table} -A {chain} -m mark --mark {mark} -j RETURN  # the proxy's upstream and xDS sockets (upstream_mark)"
            );
        }
        if let Some(uid) = options.proxy_uid {
            let _ = writeln!(
                out,
                "{ipt} -t {table} -A {chain} -m owner --uid-owner {uid} -j RETURN  # the proxy's user"
            );
        }
    };
    if let Some(c) = &outbound {
        let port = c.address.port();
        let _ = writeln!(
            out,
            "\n# Outbound: the pod's connections to any address go to listener {:?} ({}, original_dst: {}).",
            c.name,
            c.address,
            how_name(c.how)
        );
        for f in families(c.address) {
            let ipt = f.iptables();
            match c.how {
                OriginalDst::Redirect => {
                    let chain = "SLUICE_OUTBOUND";
                    let _ = writeln!(out, "{ipt} -t nat -N {chain}");
                    exclusions(&mut out, ipt, "nat", chain);
                    let _ = writeln!(out, "{ipt} -t nat -A {chain} -o lo -j RETURN  # loopback");
                    let _ = writeln!(
                        out,
                        "{ipt} -t nat -A {chain} -p tcp -j REDIRECT --to-ports {port}"
                    );
                    let _ = writeln!(out, "{ipt} -t nat -A OUTPUT -p tcp -j {chain}");
                }
                OriginalDst::Tproxy => {
                    let chain = "SLUICE_OUTBOUND";
                    let _ = writeln!(out, "{ipt} -t mangle -N {chain}");
                    exclusions(&mut out, ipt, "mangle", chain);
                    let _ = writeln!(
                        out,
                        "{ipt} -t mangle -A {chain} -o lo -j RETURN  # loopback"
                    );
                    // Only the pod's own connections: the replies of connections made to
                    // the pod (captured inbound, or not) leave as they are.
                    let _ = writeln!(
                        out,
                        "{ipt} -t mangle -A {chain} -m conntrack --ctdir REPLY -j RETURN  # replies to connections made to the pod"
                    );
                    let _ = writeln!(
                        out,
                        "{ipt} -t mangle -A {chain} -p tcp -j MARK --set-mark {m}  # rerouted through lo"
                    );
                    let _ = writeln!(out, "{ipt} -t mangle -A OUTPUT -p tcp -j {chain}");
                    let divert = "SLUICE_OUTBOUND_TPROXY";
                    let _ = writeln!(out, "{ipt} -t mangle -N {divert}");
                    let _ = writeln!(
                        out,
                        "{ipt} -t mangle -A {divert} -p tcp -m mark --mark {m} -j TPROXY --on-port {port} --tproxy-mark {m}"
                    );
                    let _ = writeln!(
                        out,
                        "{ipt} -t mangle -A PREROUTING -i lo -p tcp -j {divert}"
                    );
                }
            }
        }
    }
    if let Some(c) = &inbound {
        let port = c.address.port();
        let _ = writeln!(
            out,
            "\n# Inbound: connections to the pod go to listener {:?} ({}, original_dst: {}).",
            c.name,
            c.address,
            how_name(c.how)
        );
        let ports = own_ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        for f in families(c.address) {
            let ipt = f.iptables();
            let chain = "SLUICE_INBOUND";
            let table = match c.how {
                OriginalDst::Redirect => "nat",
                OriginalDst::Tproxy => "mangle",
            };
            let _ = writeln!(out, "{ipt} -t {table} -N {chain}");
            let _ = writeln!(
                out,
                "{ipt} -t {table} -A {chain} -i lo -j RETURN  # loopback"
            );
            let _ = writeln!(
                out,
                "{ipt} -t {table} -A {chain} -p tcp -m multiport --dports {ports} -j RETURN  # the proxy's own ports"
            );
            match c.how {
                OriginalDst::Redirect => {
                    let _ = writeln!(
                        out,
                        "{ipt} -t nat -A {chain} -p tcp -j REDIRECT --to-ports {port}"
                    );
                }
                OriginalDst::Tproxy => {
                    // TPROXY drops a packet whose socket is not transparent: the replies to
                    // the proxy's own upstream connections must not reach it.
                    let _ = writeln!(
                        out,
                        "{ipt} -t mangle -A {chain} -p tcp -m conntrack --ctdir REPLY -j RETURN  # replies to the pod's own connections"
                    );
                    let _ = writeln!(
                        out,
                        "{ipt} -t mangle -A {chain} -p tcp -j TPROXY --on-port {port} --tproxy-mark {m}"
                    );
                }
            }
            let _ = writeln!(out, "{ipt} -t {table} -A PREROUTING -p tcp -j {chain}");
        }
    }
    Ok(out)
}

fn how_name(how: OriginalDst) -> &'static str {
    match how {
        OriginalDst::Redirect => "redirect",
        OriginalDst::Tproxy => "tproxy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_yaml(text).unwrap()
    }

    const REDIRECT: &str = "
admin: { address: 127.0.0.1:15000 }
upstream_mark: 1337
listeners:
  - { name: outbound, address: 0.0.0.0:15001, original_dst: redirect, use_original_dst: true, tcp_proxy: { cluster: pass } }
  - { name: inbound, address: 0.0.0.0:15006, original_dst: redirect, tcp_proxy: { cluster: pass } }
clusters:
  - { name: pass, type: original_dst }
";

    #[test]
    fn a_virtual_listener_port_is_not_the_proxys_own() {
        // Port 8080 is bound by nobody in the proxy: inbound traffic to it (the application's
        // own server) is captured like any; the bound listener's 9090 is left alone.
        let text = REDIRECT.replace(
            "clusters:",
            "  - { name: virtual, address: 0.0.0.0:8080, bind_to_port: false, tcp_proxy: { cluster: pass } }
  - { name: bound, address: 0.0.0.0:9090, tcp_proxy: { cluster: pass } }
clusters:",
        );
        let got = script(&config(&text), &Options::default()).unwrap();
        assert!(
            got.contains("--dports 9090,15000,15001,15006 -j RETURN  # the proxy's own ports"),
            "got:\n{got}"
        );
    }

    #[test]
    fn redirect_captures_both_ways_with_the_exclusions() {
        let got = script(
            &config(REDIRECT),
            &Options {
                proxy_uid: Some(1337),
                ..Options::default()
            },
        )
        .unwrap();
        let want = r#"#!/bin/sh
# Generated by `sluice iptables`: capture rules for this config. Review, then run as root
# in the pod's network namespace.
set -e

# Outbound: the pod's connections to any address go to listener "outbound" (0.0.0.0:15001, original_dst: redirect).
iptables -t nat -N SLUICE_OUTBOUND
iptables -t nat -A SLUICE_OUTBOUND -m mark --mark 1337 -j RETURN  # the proxy's upstream and xDS sockets (upstream_mark)
iptables -t nat -A SLUICE_OUTBOUND -m owner --uid-owner 1337 -j RETURN  # the proxy's user
iptables -t nat -A SLUICE_OUTBOUND -o lo -j RETURN  # loopback
iptables -t nat -A SLUICE_OUTBOUND -p tcp -j REDIRECT --to-ports 15001
iptables -t nat -A OUTPUT -p tcp -j SLUICE_OUTBOUND

# Inbound: connections to the pod go to listener "inbound" (0.0.0.0:15006, original_dst: redirect).
iptables -t nat -N SLUICE_INBOUND
iptables -t nat -A SLUICE_INBOUND -i lo -j RETURN  # loopback
iptables -t nat -A SLUICE_INBOUND -p tcp -m multiport --dports 15000,15001,15006 -j RETURN  # the proxy's own ports
iptables -t nat -A SLUICE_INBOUND -p tcp -j REDIRECT --to-ports 15006
iptables -t nat -A PREROUTING -p tcp -j SLUICE_INBOUND
"#;
        assert_eq!(got, want, "got:\n{got}");
    }

    #[test]
    fn tproxy_adds_the_policy_route_and_reroutes_outbound_through_lo() {
        let text = REDIRECT
            .replace("original_dst: redirect", "original_dst: tproxy")
            .replace("0.0.0.0:15001", "\"[::]:15001\"");
        let got = script(&config(&text), &Options::default()).unwrap();
        let want = r#"#!/bin/sh
# Generated by `sluice iptables`: capture rules for this config. Review, then run as root
# in the pod's network namespace.
set -e

# TPROXY: deliver packets marked 1 to local sockets (routing table 133).
ip rule add fwmark 1 lookup 133
ip route add local 0.0.0.0/0 dev lo table 133
ip -6 rule add fwmark 1 lookup 133
ip -6 route add local ::/0 dev lo table 133

# Outbound: the pod's connections to any address go to listener "outbound" ([::]:15001, original_dst: tproxy).
iptables -t mangle -N SLUICE_OUTBOUND
iptables -t mangle -A SLUICE_OUTBOUND -m mark --mark 1337 -j RETURN  # the proxy's upstream and xDS sockets (upstream_mark)
iptables -t mangle -A SLUICE_OUTBOUND -o lo -j RETURN  # loopback
iptables -t mangle -A SLUICE_OUTBOUND -m conntrack --ctdir REPLY -j RETURN  # replies to connections made to the pod
iptables -t mangle -A SLUICE_OUTBOUND -p tcp -j MARK --set-mark 1  # rerouted through lo
iptables -t mangle -A OUTPUT -p tcp -j SLUICE_OUTBOUND
iptables -t mangle -N SLUICE_OUTBOUND_TPROXY
iptables -t mangle -A SLUICE_OUTBOUND_TPROXY -p tcp -m mark --mark 1 -j TPROXY --on-port 15001 --tproxy-mark 1
iptables -t mangle -A PREROUTING -i lo -p tcp -j SLUICE_OUTBOUND_TPROXY
ip6tables -t mangle -N SLUICE_OUTBOUND
ip6tables -t mangle -A SLUICE_OUTBOUND -m mark --mark 1337 -j RETURN  # the proxy's upstream and xDS sockets (upstream_mark)
ip6tables -t mangle -A SLUICE_OUTBOUND -o lo -j RETURN  # loopback
ip6tables -t mangle -A SLUICE_OUTBOUND -m conntrack --ctdir REPLY -j RETURN  # replies to connections made to the pod
ip6tables -t mangle -A SLUICE_OUTBOUND -p tcp -j MARK --set-mark 1  # rerouted through lo
ip6tables -t mangle -A OUTPUT -p tcp -j SLUICE_OUTBOUND
ip6tables -t mangle -N SLUICE_OUTBOUND_TPROXY
ip6tables -t mangle -A SLUICE_OUTBOUND_TPROXY -p tcp -m mark --mark 1 -j TPROXY --on-port 15001 --tproxy-mark 1
ip6tables -t mangle -A PREROUTING -i lo -p tcp -j SLUICE_OUTBOUND_TPROXY

# Inbound: connections to the pod go to listener "inbound" (0.0.0.0:15006, original_dst: tproxy).
iptables -t mangle -N SLUICE_INBOUND
iptables -t mangle -A SLUICE_INBOUND -i lo -j RETURN  # loopback
iptables -t mangle -A SLUICE_INBOUND -p tcp -m multiport --dports 15000,15001,15006 -j RETURN  # the proxy's own ports
iptables -t mangle -A SLUICE_INBOUND -p tcp -m conntrack --ctdir REPLY -j RETURN  # replies to the pod's own connections
iptables -t mangle -A SLUICE_INBOUND -p tcp -j TPROXY --on-port 15006 --tproxy-mark 1
iptables -t mangle -A PREROUTING -p tcp -j SLUICE_INBOUND
"#;
        assert_eq!(got, want, "got:\n{got}");
    }

    #[test]
    fn refuses_what_would_loop_or_capture_nothing() {
        let no_exclusion = REDIRECT.replace("upstream_mark: 1337\n", "");
        let e = script(&config(&no_exclusion), &Options::default()).unwrap_err();
        assert!(
            e.contains("set upstream_mark in the config, or pass --proxy-uid"),
            "{e}"
        );
        // The uid alone is enough.
        let uid = Options {
            proxy_uid: Some(1337),
            ..Options::default()
        };
        assert!(script(&config(&no_exclusion), &uid).is_ok());

        let clash = REDIRECT
            .replace("upstream_mark: 1337", "upstream_mark: 1")
            .replace("original_dst: redirect", "original_dst: tproxy");
        let e = script(&config(&clash), &Options::default()).unwrap_err();
        assert!(e.contains("upstream_mark 1 is also the TPROXY mark"), "{e}");

        let plain = "listeners: [ { name: e, address: 127.0.0.1:1, echo: {} } ]";
        let e = script(&config(plain), &Options::default()).unwrap_err();
        assert_eq!(e, "no listener has original_dst: nothing to capture");

        let two = REDIRECT.replace(
            "original_dst: redirect, tcp_proxy",
            "original_dst: redirect, use_original_dst: true, tcp_proxy",
        );
        let e = script(&config(&two), &Options::default()).unwrap_err();
        assert!(
            e.contains("\"outbound\" and \"inbound\" both capture outbound"),
            "{e}"
        );
    }
}
