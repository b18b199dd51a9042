//! Listener hand-off by original destination (Envoy's `use_original_dst`): which listener serves
//! a connection that a capture listener accepted.
//!
//! A transparent sidecar's packet filter redirects every outbound (or inbound) connection to one
//! capture port; the connection's *original destination* (the address the application dialled)
//! says which service it was for. The capture listener hands the connection to the listener
//! whose address matches that destination, so one port serves every service; when none
//! matches, the capture listener serves it with its own filter chain.
//!
//! [`HandoffTable`] owns the choice. It is built once per config from the listeners' addresses
//! and whether each accepts hand-offs (a capture listener itself does not: a hand-off never
//! leads to another hand-off, so no loop is possible), and answers per connection with two map
//! lookups, no allocation.
//!
//! ## The rule, in order
//!
//! 1. a listener bound to exactly the destination (IP and port);
//! 2. a listener on the wildcard address of the destination's family and its port
//!    (`0.0.0.0:port` for IPv4, `[::]:port` for IPv6);
//! 3. for an IPv4 destination, a listener on `[::]:port` (a dual-stack socket takes IPv4 too);
//! 4. none: [`Handoff::OwnChain`].
//!
//! An IPv4-mapped IPv6 destination (`[::ffff:10.0.0.1]:80`, what an IPv6 socket reports for an
//! IPv4 connection) is looked up as the IPv4 address it carries. Listener addresses are unique
//! in a valid config; were two equal, the first in config order wins.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// Who serves a captured connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handoff {
    /// The listener at this index (into the listeners the table was built from).
    Listener(usize),
    /// No listener matches: the capture listener's own filter chain.
    OwnChain,
}

/// The hand-off lookup for one config. See the module doc.
#[derive(Clone, Debug, Default)]
pub struct HandoffTable {
    /// Listeners on a specific address, by that address (IPv4-mapped addresses unmapped).
    exact: BTreeMap<SocketAddr, usize>,
    /// Listeners on a wildcard address, by (is IPv6, port).
    wildcard: BTreeMap<(bool, u16), usize>,
}

impl HandoffTable {
    /// The table for listeners given in config order as (address, accepts hand-offs).
    pub fn new(listeners: impl IntoIterator<Item = (SocketAddr, bool)>) -> Self {
        let mut table = HandoffTable::default();
        for (index, (address, accepts)) in listeners.into_iter().enumerate() {
            if !accepts {
                continue;
            }
            let address = unmapped(address);
            if address.ip().is_unspecified() {
                table
                    .wildcard
                    .entry((address.is_ipv6(), address.port()))
                    .or_insert(index);
            } else {
                table.exact.entry(address).or_insert(index);
            }
        }
        table
    }

    /// Who serves a connection whose original destination is `destination`.
    #[must_use]
    pub fn choose(&self, destination: SocketAddr) -> Handoff {
        let destination = unmapped(destination);
        let port = destination.port();
        let found = self
            .exact
            .get(&destination)
            .or_else(|| self.wildcard.get(&(destination.is_ipv6(), port)))
            .or_else(|| {
                if destination.is_ipv4() {
                    self.wildcard.get(&(true, port))
                } else {
                    None
                }
            });
        found.map_or(Handoff::OwnChain, |&i| Handoff::Listener(i))
    }

    /// Whether no listener accepts hand-offs (every connection stays on its own chain).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }
}

/// `[::ffff:a.b.c.d]:p` as `a.b.c.d:p`; any other address as it is.
fn unmapped(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), address.port()),
            None => address,
        },
        IpAddr::V4(_) => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The rule of the module doc, written as a scan over every listener.
    fn reference(listeners: &[(SocketAddr, bool)], destination: SocketAddr) -> Handoff {
        let destination = unmapped(destination);
        let rank = |address: SocketAddr| -> Option<u8> {
            let address = unmapped(address);
            if address.port() != destination.port() {
                return None;
            }
            if !address.ip().is_unspecified() {
                return (address == destination).then_some(0);
            }
            match (address.is_ipv6(), destination.is_ipv6()) {
                (a6, d6) if a6 == d6 => Some(1),
                (true, false) => Some(2),
                _ => None,
            }
        };
        listeners
            .iter()
            .enumerate()
            .filter(|(_, (_, accepts))| *accepts)
            .filter_map(|(i, (address, _))| rank(*address).map(|r| (r, i)))
            .min()
            .map_or(Handoff::OwnChain, |(_, i)| Handoff::Listener(i))
    }

    #[test]
    fn exact_beats_wildcard_and_a_capture_listener_takes_none() {
        let listeners = [
            (a("0.0.0.0:15001"), false), // the capture listener
            (a("0.0.0.0:80"), true),
            (a("10.0.0.5:80"), true),
            (a("[::]:443"), true),
        ];
        let t = HandoffTable::new(listeners);
        assert_eq!(t.choose(a("10.0.0.5:80")), Handoff::Listener(2));
        assert_eq!(t.choose(a("10.0.0.6:80")), Handoff::Listener(1));
        assert_eq!(t.choose(a("[::ffff:10.0.0.5]:80")), Handoff::Listener(2));
        assert_eq!(t.choose(a("10.0.0.6:443")), Handoff::Listener(3));
        assert_eq!(t.choose(a("[2001:db8::1]:443")), Handoff::Listener(3));
        assert_eq!(t.choose(a("[2001:db8::1]:80")), Handoff::OwnChain);
        assert_eq!(t.choose(a("10.0.0.5:15001")), Handoff::OwnChain);
        assert_eq!(t.choose(a("10.0.0.5:8080")), Handoff::OwnChain);
        assert!(!t.is_empty());
        assert!(HandoffTable::new([(a("0.0.0.0:1"), false)]).is_empty());
    }

    fn addr() -> impl Strategy<Value = SocketAddr> {
        // Few values per part, so that matches and clashes are frequent.
        let v4 = prop_oneof![Just([0, 0, 0, 0]), Just([10, 0, 0, 1]), Just([10, 0, 0, 2])]
            .prop_map(|o| IpAddr::V4(Ipv4Addr::from(o)));
        let v6 = prop_oneof![
            Just(Ipv6Addr::UNSPECIFIED),
            Just("2001:db8::1".parse::<Ipv6Addr>().unwrap()),
            Just(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()),
            Just(Ipv4Addr::UNSPECIFIED.to_ipv6_mapped()),
        ]
        .prop_map(IpAddr::V6);
        (prop_oneof![v4, v6], 79u16..82).prop_map(|(ip, port)| SocketAddr::new(ip, port))
    }

    proptest! {
        #[test]
        fn the_table_agrees_with_the_reference(
            listeners in proptest::collection::vec((addr(), any::<bool>()), 0..8),
            destinations in proptest::collection::vec(addr(), 1..8),
        ) {
            let table = HandoffTable::new(listeners.iter().copied());
            for d in destinations {
                prop_assert_eq!(table.choose(d), reference(&listeners, d), "destination {}", d);
            }
        }

        #[test]
        fn a_hand_off_goes_to_a_listener_that_accepts_on_the_port(
            listeners in proptest::collection::vec((addr(), any::<bool>()), 0..8),
            d in addr(),
        ) {
            if let Handoff::Listener(i) = HandoffTable::new(listeners.iter().copied()).choose(d) {
                prop_assert!(listeners[i].1);
                prop_assert_eq!(listeners[i].0.port(), d.port());
            }
        }
    }
}
