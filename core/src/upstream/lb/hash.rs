//! A request's hash for the consistent-hashing balancers (`ring_hash`, `maglev`), from the
//! cluster's `hash_policy` (Envoy's route `hash_policy`).
//!
//! Each policy that applies to the request contributes one xxHash64 (seed 0, as Envoy); they
//! are combined in order the way Envoy does, `hash = hash.rotate_left(1) ^ h` (the rotation
//! keeps two identical inputs from cancelling out and makes the order matter). A header policy
//! whose header is absent does not apply; when no policy applies the request has no hash and the
//! balancer picks at random.
//!
//! Nothing here allocates.

use std::net::IpAddr;

use xxhash_rust::xxh64::xxh64;

use crate::config::HashPolicy;

/// xxHash64 of `bytes` with seed 0: the hash of one input, and of a host's virtual node key.
#[must_use]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    xxh64(bytes, 0)
}

/// The hash of a request under `policies`, or `None` when none applies.
///
/// - `header(name)` gives the value of a request header (`name` is lowercase, as configured);
///   a [`HashPolicy::Header`] applies when it gives `Some`, and hashes the value's bytes.
/// - [`HashPolicy::SourceIp`] applies when `source_ip` is `Some`, and hashes the IP's bytes (4
///   or 16; the port never counts). An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
///   dual-stack listener reports for an IPv4 peer) counts as the IPv4 address, so that a client
///   hashes the same whichever listener it came through.
pub fn request_hash<'a>(
    policies: &[HashPolicy],
    mut header: impl FnMut(&str) -> Option<&'a [u8]>,
    source_ip: Option<IpAddr>,
) -> Option<u64> {
    let mut hash: Option<u64> = None;
    for policy in policies {
        let h = match policy {
            HashPolicy::Header(name) => header(name).map(hash_bytes),
            HashPolicy::SourceIp => source_ip.map(|ip| match ip.to_canonical() {
                IpAddr::V4(a) => hash_bytes(&a.octets()),
                IpAddr::V6(a) => hash_bytes(&a.octets()),
            }),
        };
        if let Some(h) = h {
            hash = Some(hash.map_or(h, |old| old.rotate_left(1) ^ h));
        }
    }
    hash
}
