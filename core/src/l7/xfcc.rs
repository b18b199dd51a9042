//! The `x-forwarded-client-cert` (XFCC) header: this hop's element and what becomes of the
//! client's header, as Envoy's `forward_client_cert_details` and
//! `set_current_client_cert_details` say (see `docs/configuration/http.md`).
//!
//! What it owns: the element's text ([`element`]: `By`, `Hash`, then `Subject`, `URI`, `DNS`
//! in Envoy's order, `;` between pairs), built once per connection by the runtime from what the
//! TLS session knows; and the per-request decision ([`edit`]) — remove, keep, or set a value
//! (the element alone, or the client's header with the element appended after a `,`).
//!
//! Invariants: [`edit`] allocates nothing (an appended value is built in the caller's reused
//! buffer); without mTLS (no element) only `always_forward_only` lets a client's header
//! through.

use crate::config::http::{ClientCertDetails, ForwardClientCert};

/// The name of the header.
pub const XFCC: &str = "x-forwarded-client-cert";

/// What one hop knows of the client certificate of an mTLS connection.
#[derive(Clone, Copy, Debug)]
pub struct PeerCert<'a> {
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub hash_hex: &'a str,
    /// The subject's distinguished name (RFC 2253).
    pub subject: &'a str,
    /// URI SANs.
    pub uri_sans: &'a [String],
    /// DNS SANs.
    pub dns_sans: &'a [String],
}

/// This hop's element: `By=` each URI SAN of the certificate the proxy served (`by`),
/// `Hash=`, then what `details` asks for — `Subject="…"` (there even when empty), `URI=` each
/// URI SAN (`URI=` alone when none), `DNS=` each DNS SAN (nothing when none).
#[must_use]
pub fn element(by: &[String], peer: &PeerCert<'_>, details: ClientCertDetails) -> Vec<u8> {
    let mut parts: Vec<String> = by.iter().map(|u| format!("By={u}")).collect();
    if !peer.hash_hex.is_empty() {
        parts.push(format!("Hash={}", peer.hash_hex));
    }
    if details.subject {
        parts.push(format!("Subject=\"{}\"", peer.subject));
    }
    if details.uri {
        if peer.uri_sans.is_empty() {
            parts.push("URI=".to_owned());
        }
        parts.extend(peer.uri_sans.iter().map(|u| format!("URI={u}")));
    }
    if details.dns {
        parts.extend(peer.dns_sans.iter().map(|d| format!("DNS={d}")));
    }
    parts.join(";").into_bytes()
}

/// What the request's XFCC becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit<'a> {
    /// Removed.
    Remove,
    /// Forwarded as the client sent it (or absent if it sent none).
    Keep,
    /// Replaced by this value.
    Set(&'a [u8]),
}

/// The edit for a request: `mode`, the connection's element when it is mTLS (`None`
/// otherwise; empty when the mode writes none), the values of every XFCC field the client
/// sent (`existing`, in order), and `buf` (reused) for an appended value. With
/// `append_forward` the client's fields are joined with `,` (as Envoy joins repeated fields)
/// and the element appended: one field replaces them all, none of their elements lost.
pub fn edit<'a, 'b>(
    mode: ForwardClientCert,
    mtls_element: Option<&'a [u8]>,
    existing: impl IntoIterator<Item = &'b [u8]>,
    buf: &'a mut Vec<u8>,
) -> Edit<'a> {
    match (mode, mtls_element) {
        (ForwardClientCert::AlwaysForwardOnly, _) => Edit::Keep,
        (ForwardClientCert::Sanitize, _) | (_, None) => Edit::Remove,
        (ForwardClientCert::ForwardOnly, Some(_)) => Edit::Keep,
        (ForwardClientCert::SanitizeSet, Some(e)) => Edit::Set(e),
        (ForwardClientCert::AppendForward, Some(e)) => {
            buf.clear();
            for old in existing.into_iter().map(<[u8]>::trim_ascii) {
                if old.is_empty() {
                    continue;
                }
                if !buf.is_empty() {
                    buf.push(b',');
                }
                buf.extend_from_slice(old);
            }
            if buf.is_empty() {
                return Edit::Set(e);
            }
            buf.push(b',');
            buf.extend_from_slice(e);
            Edit::Set(buf)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn the_element_is_in_envoys_order() {
        let uris = s(&["spiffe://cluster.local/ns/default/sa/client"]);
        let dns = s(&["client.default.svc", "client"]);
        let peer = PeerCert {
            hash_hex: "ab12",
            subject: "CN=client,O=example",
            uri_sans: &uris,
            dns_sans: &dns,
        };
        let all = ClientCertDetails {
            subject: true,
            uri: true,
            dns: true,
        };
        let by = s(&["spiffe://cluster.local/ns/default/sa/app"]);
        assert_eq!(
            String::from_utf8(element(&by, &peer, all)).unwrap(),
            "By=spiffe://cluster.local/ns/default/sa/app;Hash=ab12;\
             Subject=\"CN=client,O=example\";URI=spiffe://cluster.local/ns/default/sa/client;\
             DNS=client.default.svc;DNS=client"
        );
        // Nothing asked: By and Hash; no URI SAN with `uri`: `URI=`.
        assert_eq!(
            element(&[], &peer, ClientCertDetails::default()),
            b"Hash=ab12"
        );
        let bare = PeerCert {
            uri_sans: &[],
            dns_sans: &[],
            subject: "",
            ..peer
        };
        assert_eq!(
            element(&[], &bare, all),
            b"Hash=ab12;Subject=\"\";URI=".as_slice()
        );
    }

    #[test]
    fn each_mode_edits_as_envoy() {
        use ForwardClientCert::*;
        let mut buf = Vec::new();
        let e = Some(b"By=a;Hash=b".as_slice());
        let old = Some(b"Hash=x".as_slice());
        let none: Option<&[u8]> = None;
        assert_eq!(edit(Sanitize, e, old, &mut buf), Edit::Remove);
        assert_eq!(edit(ForwardOnly, e, old, &mut buf), Edit::Keep);
        assert_eq!(edit(ForwardOnly, None, old, &mut buf), Edit::Remove);
        assert_eq!(edit(AlwaysForwardOnly, None, old, &mut buf), Edit::Keep);
        assert_eq!(
            edit(SanitizeSet, e, old, &mut buf),
            Edit::Set(b"By=a;Hash=b")
        );
        assert_eq!(edit(SanitizeSet, None, old, &mut buf), Edit::Remove);
        assert_eq!(
            edit(AppendForward, e, none, &mut buf),
            Edit::Set(b"By=a;Hash=b")
        );
        assert_eq!(edit(AppendForward, None, old, &mut buf), Edit::Remove);
        assert_eq!(
            edit(AppendForward, e, old, &mut buf),
            Edit::Set(b"Hash=x,By=a;Hash=b")
        );
        // Every field the client sent, joined with `,` in order (Envoy joins repeated
        // fields); empty ones add nothing.
        let two = [b"Hash=x".as_slice(), b"", b" By=y;Hash=z "];
        assert_eq!(
            edit(AppendForward, e, two, &mut buf),
            Edit::Set(b"Hash=x,By=y;Hash=z,By=a;Hash=b")
        );
        assert_eq!(
            edit(AppendForward, e, [b"".as_slice()], &mut buf),
            Edit::Set(b"By=a;Hash=b")
        );
    }
}
