//! What one engine serves connections with, per *serving slot*: each listener, then each
//! filter chain of a listener served as a listener of its own ([`Config::chain_slots`]) — its
//! listener config, compiled router, shared HTTP settings ([`ListenerHttp`]), access log
//! writers, and whose counters it bumps.
//!
//! Built once with the engine from its config and never changed (a new config is a new
//! engine); only the access log writers change inside (buffered lines, reopened files).
//! Invariants: every per-slot vector has one entry per serving slot (the config's listeners,
//! then [`Config::chain_slots`] in order); a listener's chains are consecutive slots from
//! its `chain_base`.

use std::cell::RefCell;
use std::rc::Rc;

use sluice_core::config::{Config, ListenerConfig, ListenerFilter};
use sluice_core::router::Router;

use crate::access_log::AccessLog;
use crate::http::ListenerHttp;

/// See the module doc.
pub(crate) struct Serving {
    /// The listeners as their filter chains serve (`ListenerConfig::chain_as_listener`), in
    /// [`Config::chain_slots`] order: serving slot `config.listeners.len() + n` is
    /// `chain_listeners[n]`.
    chain_listeners: Vec<ListenerConfig>,
    /// Per listener: the serving slot of its first filter chain (its chains follow).
    chain_base: Vec<usize>,
    /// Per serving slot: the listener it belongs to (whose counters it bumps).
    slot_owner: Vec<usize>,
    /// Per serving slot: the compiled router of an `http` listener (or chain).
    routers: Vec<Option<Router>>,
    /// Per serving slot: the HTTP settings of an `http` listener (or chain) its connections
    /// share ([`ListenerHttp`]).
    listener_http: Vec<Option<Rc<ListenerHttp>>>,
    /// Per serving slot: this worker's access log writer, if it has one.
    access_logs: Vec<Option<RefCell<AccessLog>>>,
    /// Per serving slot: this worker's Bolt access log writer, if its `bolt` section has one
    /// (beside an `auto` listener's HTTP log in `access_logs`).
    bolt_access_logs: Vec<Option<RefCell<AccessLog>>>,
}

impl Serving {
    /// The serving slots of `config`: compiles the routers and opens the access log files
    /// (failing when one cannot be opened, or a router does not compile).
    pub(crate) fn new(config: &Config) -> std::io::Result<Self> {
        // Each filter chain is served as a listener of its own (a serving slot), after the
        // listeners.
        let listeners = config.listeners.len();
        let chain_slots = config.chain_slots();
        let chain_listeners: Vec<ListenerConfig> = chain_slots
            .iter()
            .filter_map(|&(l, c)| config.listeners[l].chain_as_listener(c))
            .collect();
        let mut chain_base = vec![0; listeners];
        for (n, &(l, c)) in chain_slots.iter().enumerate() {
            if c == 0 {
                chain_base[l] = listeners + n;
            }
        }
        let slot_owner: Vec<usize> = (0..listeners)
            .chain(chain_slots.iter().map(|&(l, _)| l))
            .collect();
        let mut routers = Vec::with_capacity(slot_owner.len());
        let mut listener_http = Vec::with_capacity(slot_owner.len());
        let mut access_logs = Vec::with_capacity(slot_owner.len());
        let mut bolt_access_logs = Vec::with_capacity(slot_owner.len());
        for l in config.listeners.iter().chain(&chain_listeners) {
            bolt_access_logs.push(match &l.filter {
                ListenerFilter::Bolt(b) | ListenerFilter::Auto { bolt: b, .. } => {
                    match &b.access_log {
                        Some(a) => Some(RefCell::new(AccessLog::open_bolt(a)?)),
                        None => None,
                    }
                }
                _ => None,
            });
            match &l.filter {
                ListenerFilter::Http(hc) | ListenerFilter::Auto { http: hc, .. } => {
                    routers.push(Some(Router::new(hc).map_err(std::io::Error::other)?));
                    listener_http.push(Some(Rc::new(ListenerHttp::new(hc))));
                    access_logs.push(match &hc.access_log {
                        Some(a) => Some(RefCell::new(AccessLog::open(a)?)),
                        None => None,
                    });
                }
                ListenerFilter::TcpProxy(tp) => {
                    routers.push(None);
                    listener_http.push(None);
                    access_logs.push(match &tp.access_log {
                        Some(a) => Some(RefCell::new(AccessLog::open_tcp(a)?)),
                        None => None,
                    });
                }
                _ => {
                    routers.push(None);
                    listener_http.push(None);
                    access_logs.push(None);
                }
            }
        }
        Ok(Serving {
            chain_listeners,
            chain_base,
            slot_owner,
            routers,
            listener_http,
            access_logs,
            bolt_access_logs,
        })
    }

    /// The listener config serving slot `slot` of `config` (this one's config) serves with.
    pub(crate) fn slot_config<'a>(&'a self, config: &'a Config, slot: usize) -> &'a ListenerConfig {
        let listeners = config.listeners.len();
        if slot < listeners {
            &config.listeners[slot]
        } else {
            &self.chain_listeners[slot - listeners]
        }
    }

    /// The listener serving slot `slot` belongs to.
    #[inline]
    pub(crate) fn owner(&self, slot: usize) -> Option<usize> {
        self.slot_owner.get(slot).copied()
    }

    /// The serving slot of filter chain `chain` of listener `listener`.
    pub(crate) fn chain_slot(&self, listener: usize, chain: usize) -> usize {
        self.chain_base[listener] + chain
    }

    /// The compiled router of serving slot `slot` (an `http` or `auto` one).
    #[inline]
    pub(crate) fn router(&self, slot: usize) -> Option<&Router> {
        self.routers[slot].as_ref()
    }

    /// The HTTP settings of serving slot `slot` (an `http` or `auto` one) that its
    /// connections share.
    #[inline]
    pub(crate) fn listener_http(&self, slot: usize) -> Option<&Rc<ListenerHttp>> {
        self.listener_http[slot].as_ref()
    }

    /// The access log writer of serving slot `slot`, if it has one (HTTP or `tcp_proxy`).
    #[inline]
    pub(crate) fn access_log(&self, slot: usize) -> Option<&RefCell<AccessLog>> {
        self.access_logs[slot].as_ref()
    }

    /// The Bolt access log writer of serving slot `slot`, if it has one.
    #[inline]
    pub(crate) fn bolt_access_log(&self, slot: usize) -> Option<&RefCell<AccessLog>> {
        self.bolt_access_logs[slot].as_ref()
    }

    /// Every access log writer (HTTP, `tcp_proxy` and Bolt).
    pub(crate) fn all_access_logs(&self) -> impl Iterator<Item = &RefCell<AccessLog>> {
        self.access_logs
            .iter()
            .chain(&self.bolt_access_logs)
            .flatten()
    }
}
