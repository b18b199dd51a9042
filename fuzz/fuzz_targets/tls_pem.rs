//! The TLS files' parsing (`sluice_core::tls::pem`, what the runtime loads certificate chains,
//! keys and CA bundles with) on arbitrary bytes: the input is cut in three at the first two
//! `0xff` bytes (a chain, a key, a CA bundle; a missing part is empty).
//!
//! Properties, whatever the bytes:
//! - nothing panics;
//! - a chain or bundle that parses has at least one certificate; every certificate of it can
//!   be described or refused, and its SANs read or refused, alike (a certificate whose
//!   description parses has readable SANs);
//! - a described certificate's DNS SANs, lowercased, are the SANs the matcher reads;
//! - a certificate's identity for `x-forwarded-client-cert` (`peer_identity`) parses when its
//!   description does, and its RFC 2253 subject is printable ASCII only (control bytes and
//!   non-ASCII escaped as `\XX`), so it can never break the header it is written into.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::tls::pem::{
    San, describe, describe_pem, parse_certificates, parse_chain, parse_key, peer_identity,
    subject_alt_names,
};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0xff);
    let chain = parts.next().unwrap_or_default();
    let key = parts.next().unwrap_or_default();
    let ca = parts.next().unwrap_or_default();

    if let Ok(certs) = parse_chain(chain) {
        assert!(!certs.is_empty());
        for der in &certs {
            check_certificate(der.as_ref());
        }
    }
    let _ = parse_key(key);
    if let Ok(certs) = parse_certificates(ca) {
        assert!(!certs.is_empty());
        for der in &certs {
            check_certificate(der.as_ref());
        }
    }
    let _ = describe_pem(ca);
    // The raw bytes as DER, too (what is inside a PEM block).
    check_certificate(data);
});

fn check_certificate(der: &[u8]) {
    let described = describe(der);
    let identity = peer_identity(der);
    if described.is_ok() {
        assert!(identity.is_ok(), "described but no identity: {identity:?}");
    }
    if let Ok(id) = &identity {
        assert!(
            id.subject.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "subject with unescaped bytes: {:?}",
            id.subject
        );
    }
    let sans = subject_alt_names(der);
    if let Ok(info) = &described {
        let sans = sans.expect("a described certificate has readable SANs");
        let dns: Vec<String> = sans
            .iter()
            .filter_map(|s| match s {
                San::Dns(d) => Some(d.clone()),
                San::Uri(_) => None,
            })
            .collect();
        let lower: Vec<String> = info
            .dns_sans
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        assert_eq!(dns, lower);
    }
}
