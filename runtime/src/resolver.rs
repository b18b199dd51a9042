//! The DNS client of DNS clusters with `respect_dns_ttl` (`hickory-resolver`).
//!
//! The system's resolver (`getaddrinfo`, [`crate::net::getaddrinfo`]) reports no TTL, so a
//! cluster that asks to follow its names' TTLs is resolved by a DNS client of its own, as
//! Envoy's (c-ares) is: it reads `/etc/resolv.conf` (name servers, search domains, `ndots`,
//! timeouts) and `/etc/hosts` itself, asks for A and AAAA records over UDP (TCP on a truncated
//! answer) and reports how long the answer may be kept: the lowest TTL of its records. It does
//! not go through nsswitch (neither does Envoy's).
//!
//! One client per process, built on first use and shared by every name's resolution task (all
//! on worker 0, see [`crate::dns`]); it caches answers for their TTL, so a refresh that comes
//! at the TTL's end asks again.
//!
//! A name that does not exist (NXDOMAIN) or has no address record is an **answer with no
//! address**, not a failure (the caller decides what an empty answer does); a timeout or a
//! server failure is an error. When `/etc/resolv.conf` cannot be read, the lookup fails with
//! that error (logged by the caller like any failed resolution) and the next one tries again.
//!
//! Limits: the configuration and `/etc/hosts` are read once, when the client is built (a later
//! edit needs a restart); its sockets do not carry `upstream_mark` (nor do `getaddrinfo`'s), so
//! with outbound capture DNS must be excluded by the rules (as Istio's are).

use std::io;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::LookupIpStrategy;

use crate::net::Resolved;

/// The process's client, once one could be built.
static CLIENT: OnceLock<TokioResolver> = OnceLock::new();

/// The client; built on first use, and tried again at the next lookup when that failed (a
/// `resolv.conf` that appears after the start is read then).
fn client() -> io::Result<&'static TokioResolver> {
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let mut builder = TokioResolver::builder_tokio().map_err(|e| {
        io::Error::other(format!(
            "the system's DNS configuration (/etc/resolv.conf): {e}"
        ))
    })?;
    // Both families: the cluster's `dns_lookup_family` filters the answer.
    builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    let built = builder
        .build()
        .map_err(|e| io::Error::other(format!("the DNS client: {e}")))?;
    // Only worker 0's resolution tasks call this: a lost race keeps the first client.
    Ok(CLIENT.get_or_init(|| built))
}

/// Resolves `name` to its addresses with `port`, and how long the answer may be kept.
pub async fn resolve(name: &str, port: u16) -> io::Result<Resolved> {
    let client = client()?;
    match client.lookup_ip(name).await {
        Ok(lookup) => {
            let ttl = lookup
                .valid_until()
                .saturating_duration_since(Instant::now());
            Ok(Resolved {
                addresses: lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect(),
                ttl: Some(ttl),
            })
        }
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(Resolved {
            addresses: Vec::new(),
            ttl: negative_ttl(&e),
        }),
        Err(e) => Err(io::Error::other(format!("{name}: {e}"))),
    }
}

/// The negative-caching TTL of an answer without records (from its SOA), when it has one.
fn negative_ttl(e: &hickory_resolver::net::NetError) -> Option<Duration> {
    use hickory_resolver::net::{DnsError, NetError};
    match e {
        NetError::Dns(DnsError::NoRecordsFound(no)) => {
            no.negative_ttl.map(|s| Duration::from_secs(u64::from(s)))
        }
        _ => None,
    }
}
