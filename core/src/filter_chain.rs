//! Filter chain selection (Envoy's `FilterChainMatch` rules): which of a listener's
//! `filter_chains` serves a connection, from what its first bytes and its socket say.
//!
//! [`select`] owns the choice. It is a pure function of the chains and a [`ConnectionFacts`]
//! (the destination port, what a ClientHello peek saw: TLS or not, the server name, the
//! offered ALPN protocols; and, plaintext, what an HTTP sniff saw), allocates nothing, and is
//! called once per connection of a listener with chains. [`needs_client_hello`] and
//! [`needs_http_sniff`] say, from the destination port alone, whether the first bytes need
//! to be looked at at all.
//!
//! ## The rule (Envoy's, for the criteria Sluice supports)
//!
//! The chains are pruned level by level, in this order; at each level only the chains that
//! match **most specifically** go on to the next, and the others are dropped for good (no
//! backtracking: a more specific chain that fails a later level does not let a less specific
//! one back in):
//!
//! 1. `destination_port`: a chain naming the port, over one without a port;
//! 2. `server_names`: an exact name, over the longest matching `*.suffix` wildcard, over a
//!    chain without names;
//! 3. `transport_protocol`: a chain naming the connection's (`tls` / `raw_buffer`), over one
//!    without;
//! 4. `application_protocols`: Envoy walks the client's offered ALPN list *in the client's
//!    order* and takes the chains listing the first offered protocol any chain lists (two
//!    chains may both list an offered protocol — Istio's `[istio-peer-exchange, istio]` and
//!    `[istio-http/1.1, …]` for a client offering `istio-http/1.1, istio` — the client's
//!    preference decides, not the config order); a chain listing none of them, over one
//!    without protocols. A plaintext connection's one application protocol is what the HTTP
//!    sniff of its first bytes said (`http/1.0`, `http/1.1`, `h2c`: [`crate::detect`],
//!    Envoy's `http_inspector`), or none.
//!
//! A chain whose criterion the connection does not meet never matches. When no chain is left,
//! [`select`] says `None`: the listener's own filter serves the connection (its default chain),
//! or, when it has none, the connection is closed and counted.
//!
//! Invariant (checked by the config decoder): no two chains of a listener can match one
//! connection at the same specificity (their matches do not overlap), so at most one chain is
//! left after the last level; were two left, the first in config order wins.

use crate::config::{FilterChain, FilterChainMatch, TransportProtocol};
use crate::detect::PLAINTEXT_PROTOCOLS;

/// What is known of a connection when its chain is picked.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectionFacts<'a> {
    /// Its destination port (the original destination's on a capture listener).
    pub destination_port: u16,
    /// Whether it starts with a TLS ClientHello.
    pub tls: bool,
    /// The ClientHello's server name (lowercase, no trailing dot).
    pub server_name: Option<&'a str>,
    /// The ClientHello's ALPN protocols, in the client's order.
    pub alpn: &'a [Vec<u8>],
    /// Plaintext: the application protocol the HTTP sniff of its first bytes gave
    /// ([`crate::detect::HttpSniff::application_protocol`]); `None` when it is not HTTP or
    /// was not sniffed. Ignored for a TLS connection (its ALPN list counts).
    pub plaintext_protocol: Option<&'static str>,
}

impl ConnectionFacts<'_> {
    /// The position, in the connection's order of preference, of the first application
    /// protocol `listed` holds: the ALPN list of a TLS connection, the sniffed protocol of a
    /// plaintext one.
    fn first_offered_in(&self, listed: &[String]) -> Option<usize> {
        let has = |offered: &[u8]| listed.iter().any(|p| p.as_bytes() == offered);
        if self.tls {
            self.alpn.iter().position(|offered| has(offered))
        } else {
            self.plaintext_protocol
                .filter(|p| has(p.as_bytes()))
                .map(|_| 0)
        }
    }
}

/// The chains the `destination_port` level keeps for a connection to `port`, with their
/// indexes: those naming the port when any does, else those naming none. It is the first level,
/// and the only one that needs no byte from the client: [`needs_client_hello`] asks it whether
/// the rest need the ClientHello, and [`select`] prunes what it leaves. Empty: no chain
/// matches the port.
fn port_survivors(
    chains: &[FilterChain],
    port: u16,
) -> impl Iterator<Item = (usize, &FilterChain)> + Clone {
    let named = chains
        .iter()
        .any(|c| c.filter_chain_match.destination_port == Some(port));
    chains
        .iter()
        .enumerate()
        .filter(move |(_, c)| match c.filter_chain_match.destination_port {
            None => !named,
            Some(p) => p == port,
        })
}

/// How specifically `m` matches at `level`, the levels after the port (0: server names,
/// 1: transport protocol, 2: application protocols); higher is more specific; `None`: it does
/// not match.
fn specificity(m: &FilterChainMatch, level: usize, c: &ConnectionFacts<'_>) -> Option<usize> {
    match level {
        0 => {
            if m.server_names.is_empty() {
                return Some(0);
            }
            let name = c.server_name?;
            let mut best = None;
            for pattern in &m.server_names {
                if let Some(suffix) = pattern.strip_prefix('*') {
                    // `suffix` is `.example.com`: at least one label before it.
                    if name.len() > suffix.len() && name.ends_with(suffix) {
                        best = best.max(Some(suffix.len()));
                    }
                } else if pattern == name {
                    // An exact name beats any wildcard (a suffix is shorter than 254).
                    return Some(usize::MAX);
                }
            }
            best
        }
        1 => match m.transport_protocol {
            None => Some(0),
            Some(TransportProtocol::Tls) if c.tls => Some(1),
            Some(TransportProtocol::RawBuffer) if !c.tls => Some(1),
            Some(_) => None,
        },
        _ => {
            if m.application_protocols.is_empty() {
                return Some(0);
            }
            // Envoy walks the client's list in its order and takes the chain of the first
            // offered protocol a chain lists: the earlier the offered protocol, the more
            // specific (`usize::MAX - position`, above the 0 of a chain without protocols).
            c.first_offered_in(&m.application_protocols)
                .map(|at| usize::MAX - at)
        }
    }
}

/// The levels after the port's.
const LEVELS: usize = 3;

/// Whether the chains left after the `destination_port` level (the first one, which needs no
/// byte from the client) ask about the ClientHello — server names, transport protocol or
/// ALPN. When none does, the connection's chain is known without waiting for its first bytes:
/// a server-first protocol (the upstream speaks first: postgres, SMTP) on a port of its own
/// must not wait for a client that waits for it. `false` when no chain is left.
#[must_use]
pub fn needs_client_hello(chains: &[FilterChain], destination_port: u16) -> bool {
    port_survivors(chains, destination_port).any(|(_, c)| c.filter_chain_match.needs_client_hello())
}

/// Whether a plaintext connection to `destination_port` is to be sniffed for HTTP: a chain
/// left after the `destination_port` level, not only for TLS, lists an application protocol
/// the sniff can give (`http/1.0`, `http/1.1`, `h2c`). `false` when no chain is left.
#[must_use]
pub fn needs_http_sniff(chains: &[FilterChain], destination_port: u16) -> bool {
    port_survivors(chains, destination_port).any(|(_, c)| {
        let m = &c.filter_chain_match;
        m.transport_protocol != Some(TransportProtocol::Tls)
            && m.application_protocols
                .iter()
                .any(|p| PLAINTEXT_PROTOCOLS.contains(&p.as_str()))
    })
}

/// The index of the chain that serves a connection with these facts, or `None` (the
/// listener's default chain, or close). See the module doc.
#[must_use]
pub fn select(chains: &[FilterChain], facts: &ConnectionFacts<'_>) -> Option<usize> {
    let on_port = port_survivors(chains, facts.destination_port);
    // The best specificity at each level among the chains that survived the levels before.
    let mut best = [0usize; LEVELS];
    let survives = |m: &FilterChainMatch, upto: usize, best: &[usize; LEVELS]| {
        (0..upto).all(|l| specificity(m, l, facts) == Some(best[l]))
    };
    for level in 0..LEVELS {
        let mut found = None;
        for (_, c) in on_port.clone() {
            let m = &c.filter_chain_match;
            if survives(m, level, &best)
                && let Some(s) = specificity(m, level, facts)
            {
                found = found.max(Some(s));
            }
        }
        best[level] = found?;
    }
    on_port
        .clone()
        .find(|(_, c)| survives(&c.filter_chain_match, LEVELS, &best))
        .map(|(i, _)| i)
}

/// Whether two matches can take the same connection at the same specificity (what the config
/// refuses between two chains of a listener): same port, same transport protocol, and
/// overlapping server names and application protocols (both empty, or sharing an entry).
#[must_use]
pub fn overlap(a: &FilterChainMatch, b: &FilterChainMatch) -> bool {
    fn shared(x: &[String], y: &[String]) -> bool {
        (x.is_empty() && y.is_empty()) || x.iter().any(|n| y.contains(n))
    }
    a.destination_port == b.destination_port
        && a.transport_protocol == b.transport_protocol
        && shared(&a.server_names, &b.server_names)
        && shared(&a.application_protocols, &b.application_protocols)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenerFilter;

    fn chain(m: FilterChainMatch) -> FilterChain {
        FilterChain {
            filter_chain_match: m,
            tls: None,
            filter: ListenerFilter::Echo,
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    fn facts<'a>(port: u16, sni: Option<&'a str>, alpn: &'a [Vec<u8>]) -> ConnectionFacts<'a> {
        ConnectionFacts {
            destination_port: port,
            tls: sni.is_some() || !alpn.is_empty(),
            server_name: sni,
            alpn,
            plaintext_protocol: None,
        }
    }

    fn plain(port: u16, sniffed: Option<&'static str>) -> ConnectionFacts<'static> {
        ConnectionFacts {
            destination_port: port,
            plaintext_protocol: sniffed,
            ..ConnectionFacts::default()
        }
    }

    /// Istio's plaintext chains of a port without a declared protocol: HTTP (sniffed
    /// `http/1.1` or `h2c`) to an HTTP connection manager, anything else to a TCP proxy.
    #[test]
    fn a_plaintext_connection_matches_by_its_sniffed_protocol() {
        let chains = [
            chain(FilterChainMatch {
                transport_protocol: Some(TransportProtocol::RawBuffer),
                ..Default::default()
            }),
            chain(FilterChainMatch {
                transport_protocol: Some(TransportProtocol::RawBuffer),
                application_protocols: names(&["http/1.1", "h2c"]),
                ..Default::default()
            }),
            chain(FilterChainMatch {
                transport_protocol: Some(TransportProtocol::Tls),
                application_protocols: names(&["h2c"]),
                ..Default::default()
            }),
        ];
        assert_eq!(select(&chains, &plain(80, Some("http/1.1"))), Some(1));
        assert_eq!(select(&chains, &plain(80, Some("h2c"))), Some(1));
        // HTTP/1.0 is not listed (Istio lists it only with its HTTP10 feature): TCP.
        assert_eq!(select(&chains, &plain(80, Some("http/1.0"))), Some(0));
        assert_eq!(select(&chains, &plain(80, None)), Some(0));
        // A TLS connection's ALPN is its own: a ClientHello offering "h2c" is no sniff.
        let h2c = [b"h2c".to_vec()];
        assert_eq!(select(&chains, &facts(80, Some("x"), &h2c)), Some(2));
        // The sniffed protocol of a plaintext connection does not reach a TLS chain.
        assert_eq!(
            select(&chains[2..], &plain(80, Some("h2c"))),
            None,
            "a TLS chain takes no plaintext connection"
        );
    }

    #[test]
    fn the_http_sniff_is_needed_only_when_a_chain_left_by_the_port_lists_an_http_protocol() {
        let chains = [
            chain(FilterChainMatch {
                transport_protocol: Some(TransportProtocol::RawBuffer),
                application_protocols: names(&["http/1.1", "h2c"]),
                ..Default::default()
            }),
            chain(FilterChainMatch {
                destination_port: Some(8080),
                transport_protocol: Some(TransportProtocol::RawBuffer),
                ..Default::default()
            }),
            chain(FilterChainMatch {
                destination_port: Some(8443),
                transport_protocol: Some(TransportProtocol::Tls),
                application_protocols: names(&["h2c"]),
                ..Default::default()
            }),
        ];
        assert!(needs_http_sniff(&chains, 9090));
        assert!(
            !needs_http_sniff(&chains, 8080),
            "port 8080 has its own chain"
        );
        assert!(!needs_http_sniff(&chains, 8443), "only a TLS chain is left");
        assert!(!needs_http_sniff(&[], 80));
    }

    #[test]
    fn a_chain_naming_the_destination_port_wins_over_one_without() {
        let chains = [
            chain(FilterChainMatch::default()),
            chain(FilterChainMatch {
                destination_port: Some(8080),
                ..Default::default()
            }),
        ];
        assert_eq!(select(&chains, &facts(8080, None, &[])), Some(1));
        assert_eq!(select(&chains, &facts(9090, None, &[])), Some(0));
    }

    #[test]
    fn the_port_level_prunes_for_good_no_backtracking() {
        // Port 8080 has only a TLS chain: a plaintext connection to 8080 does not fall back
        // to the portless raw_buffer chain (Envoy's rule): no chain.
        let chains = [
            chain(FilterChainMatch {
                transport_protocol: Some(TransportProtocol::RawBuffer),
                ..Default::default()
            }),
            chain(FilterChainMatch {
                destination_port: Some(8080),
                transport_protocol: Some(TransportProtocol::Tls),
                ..Default::default()
            }),
        ];
        assert_eq!(select(&chains, &facts(8080, None, &[])), None);
        assert_eq!(
            select(&chains, &facts(8080, Some("a.example"), &[])),
            Some(1)
        );
        assert_eq!(select(&chains, &facts(9090, None, &[])), Some(0));
    }

    #[test]
    fn server_names_exact_over_longest_wildcard_over_none() {
        let chains = [
            chain(FilterChainMatch::default()),
            chain(FilterChainMatch {
                server_names: names(&["*.com"]),
                ..Default::default()
            }),
            chain(FilterChainMatch {
                server_names: names(&["*.example.com"]),
                ..Default::default()
            }),
            chain(FilterChainMatch {
                server_names: names(&["www.example.com"]),
                ..Default::default()
            }),
        ];
        assert_eq!(
            select(&chains, &facts(1, Some("www.example.com"), &[])),
            Some(3)
        );
        assert_eq!(
            select(&chains, &facts(1, Some("a.b.example.com"), &[])),
            Some(2)
        );
        assert_eq!(select(&chains, &facts(1, Some("other.com"), &[])), Some(1));
        assert_eq!(
            select(&chains, &facts(1, Some("example.org"), &[])),
            Some(0)
        );
        assert_eq!(select(&chains, &facts(1, None, &[])), Some(0));
        // `*.example.com` needs a label before the suffix.
        assert_eq!(
            select(&chains, &facts(1, Some("example.com"), &[])),
            Some(1)
        );
    }

    #[test]
    fn the_port_comes_before_the_server_name() {
        let chains = [
            chain(FilterChainMatch {
                server_names: names(&["www.example.com"]),
                ..Default::default()
            }),
            chain(FilterChainMatch {
                destination_port: Some(443),
                ..Default::default()
            }),
        ];
        assert_eq!(
            select(&chains, &facts(443, Some("www.example.com"), &[])),
            Some(1)
        );
        assert_eq!(
            select(&chains, &facts(80, Some("www.example.com"), &[])),
            Some(0)
        );
    }

    #[test]
    fn transport_protocol_tls_and_raw_buffer_share_a_port() {
        let chains = [
            chain(FilterChainMatch {
                destination_port: Some(8080),
                transport_protocol: Some(TransportProtocol::RawBuffer),
                ..Default::default()
            }),
            chain(FilterChainMatch {
                destination_port: Some(8080),
                transport_protocol: Some(TransportProtocol::Tls),
                ..Default::default()
            }),
            chain(FilterChainMatch {
                destination_port: Some(8080),
                ..Default::default()
            }),
        ];
        let tls = ConnectionFacts {
            destination_port: 8080,
            tls: true,
            ..Default::default()
        };
        let plain = ConnectionFacts {
            destination_port: 8080,
            ..Default::default()
        };
        assert_eq!(select(&chains, &tls), Some(1));
        assert_eq!(select(&chains, &plain), Some(0));
    }

    #[test]
    fn the_server_name_comes_before_the_transport_protocol() {
        let chains = [
            chain(FilterChainMatch {
                transport_protocol: Some(TransportProtocol::Tls),
                ..Default::default()
            }),
            chain(FilterChainMatch {
                server_names: names(&["a.example"]),
                ..Default::default()
            }),
        ];
        assert_eq!(select(&chains, &facts(1, Some("a.example"), &[])), Some(1));
        assert_eq!(select(&chains, &facts(1, Some("b.example"), &[])), Some(0));
    }

    #[test]
    fn application_protocols_listing_an_offered_one_win_over_none() {
        let chains = [
            chain(FilterChainMatch {
                transport_protocol: Some(TransportProtocol::Tls),
                ..Default::default()
            }),
            chain(FilterChainMatch {
                transport_protocol: Some(TransportProtocol::Tls),
                application_protocols: names(&["istio-peer-exchange", "istio"]),
                ..Default::default()
            }),
        ];
        let istio = [b"istio-peer-exchange".to_vec(), b"h2".to_vec()];
        let h2 = [b"h2".to_vec()];
        assert_eq!(select(&chains, &facts(1, Some("x"), &istio)), Some(1));
        assert_eq!(select(&chains, &facts(1, Some("x"), &h2)), Some(0));
        assert_eq!(select(&chains, &facts(1, Some("x"), &[])), Some(0));
    }

    /// Istio's inbound TLS chains of one port: the mesh's TCP ALPNs and its HTTP ones. A
    /// client offering both kinds gets the chain of the protocol it lists first, whatever the
    /// order of the chains in the config.
    #[test]
    fn the_first_offered_protocol_some_chain_lists_picks_the_chain_in_either_config_order() {
        let tcp = chain(FilterChainMatch {
            transport_protocol: Some(TransportProtocol::Tls),
            application_protocols: names(&["istio-peer-exchange", "istio"]),
            ..Default::default()
        });
        let http = chain(FilterChainMatch {
            transport_protocol: Some(TransportProtocol::Tls),
            application_protocols: names(&["istio-http/1.0", "istio-http/1.1", "istio-h2"]),
            ..Default::default()
        });
        let http_first = [b"istio-http/1.1".to_vec(), b"istio".to_vec()];
        let tcp_first = [b"istio".to_vec(), b"istio-http/1.1".to_vec()];
        // An unlisted protocol first does not count: the next offered one decides.
        let unknown_first = [b"h2".to_vec(), b"istio-h2".to_vec(), b"istio".to_vec()];
        for (chains, tcp_at, http_at) in [
            ([tcp.clone(), http.clone()], 0, 1),
            ([http.clone(), tcp.clone()], 1, 0),
        ] {
            assert_eq!(
                select(&chains, &facts(1, Some("x"), &http_first)),
                Some(http_at)
            );
            assert_eq!(
                select(&chains, &facts(1, Some("x"), &tcp_first)),
                Some(tcp_at)
            );
            assert_eq!(
                select(&chains, &facts(1, Some("x"), &unknown_first)),
                Some(http_at)
            );
        }
    }

    #[test]
    fn the_client_hello_is_needed_only_when_a_chain_left_by_the_port_asks_about_it() {
        let chains = [
            chain(FilterChainMatch {
                server_names: names(&["a.example"]),
                ..Default::default()
            }),
            chain(FilterChainMatch {
                destination_port: Some(5432),
                ..Default::default()
            }),
            chain(FilterChainMatch {
                destination_port: Some(8443),
                transport_protocol: Some(TransportProtocol::Tls),
                ..Default::default()
            }),
        ];
        // Port 5432's own chain needs no byte: a server-first protocol is served at once.
        assert!(!needs_client_hello(&chains, 5432));
        assert!(needs_client_hello(&chains, 8443));
        // Other ports keep the portless SNI chain, which needs the hello.
        assert!(needs_client_hello(&chains, 80));
        assert!(!needs_client_hello(&chains[1..2], 80), "no chain left");
        assert!(!needs_client_hello(&[], 80));
    }

    #[test]
    fn the_transport_protocol_comes_before_application_protocols() {
        let chains = [
            chain(FilterChainMatch {
                application_protocols: names(&["h2"]),
                ..Default::default()
            }),
            chain(FilterChainMatch {
                transport_protocol: Some(TransportProtocol::Tls),
                ..Default::default()
            }),
        ];
        let h2 = [b"h2".to_vec()];
        assert_eq!(select(&chains, &facts(1, Some("x"), &h2)), Some(1));
    }

    #[test]
    fn no_chain_matching_is_none() {
        let chains = [chain(FilterChainMatch {
            server_names: names(&["a.example"]),
            ..Default::default()
        })];
        assert_eq!(select(&chains, &facts(1, Some("b.example"), &[])), None);
        assert_eq!(select(&chains, &facts(1, None, &[])), None);
        assert_eq!(select(&[], &facts(1, None, &[])), None);
    }

    #[test]
    fn overlapping_matches_are_told() {
        let a = FilterChainMatch {
            server_names: names(&["a", "b"]),
            ..Default::default()
        };
        let b = FilterChainMatch {
            server_names: names(&["b"]),
            ..Default::default()
        };
        let c = FilterChainMatch {
            server_names: names(&["c"]),
            ..Default::default()
        };
        assert!(overlap(&a, &b));
        assert!(!overlap(&a, &c));
        assert!(overlap(
            &FilterChainMatch::default(),
            &FilterChainMatch::default()
        ));
        let tls = FilterChainMatch {
            transport_protocol: Some(TransportProtocol::Tls),
            ..Default::default()
        };
        assert!(!overlap(&tls, &FilterChainMatch::default()));
    }
}
