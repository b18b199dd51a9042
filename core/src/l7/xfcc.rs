//! The `x-forwarded-client-cert` (XFCC) header: this hop's element and what becomes of the
//! client's header, as Envoy's `forward_client_cert_details` and
//! `set_current_client_cert_details` say (see `docs/configuration/http.md`).
//!
//! What it owns: the element's text ([`element`]: `By`, `Hash`, then `Cert`, `Chain`,
//! `Subject`, `URI`, `DNS` in Envoy's order, `;` between pairs), built once per connection by the runtime from what the
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
    /// The chain the client sent, DER, its own certificate first (`Cert` and `Chain`).
    pub chain: &'a [&'a [u8]],
}

/// This hop's element: `By=` each URI SAN of the certificate the proxy served (`by`),
/// `Hash=`, then what `details` asks for — `Cert="…"` (the client's certificate) and
/// `Chain="…"` (every certificate it sent, its own first), each as PEM and URL-encoded as
/// Envoy does ([`url_encoded_pem`]; nothing when there is no certificate), `Subject="…"`
/// (there even when empty), `URI=` each URI SAN (`URI=` alone when none), `DNS=` each DNS SAN
/// (nothing when none).
#[must_use]
pub fn element(by: &[String], peer: &PeerCert<'_>, details: ClientCertDetails) -> Vec<u8> {
    let mut parts: Vec<String> = by.iter().map(|u| format!("By={u}")).collect();
    if !peer.hash_hex.is_empty() {
        parts.push(format!("Hash={}", peer.hash_hex));
    }
    if details.cert
        && let Some(leaf) = peer.chain.first()
    {
        let mut v = String::from("Cert=\"");
        url_encoded_pem(leaf, &mut v);
        v.push('"');
        parts.push(v);
    }
    if details.chain && !peer.chain.is_empty() {
        let mut v = String::from("Chain=\"");
        for der in peer.chain {
            url_encoded_pem(der, &mut v);
        }
        v.push('"');
        parts.push(v);
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

/// Appends `der` as a PEM certificate (`-----BEGIN CERTIFICATE-----`, base64 in lines of 64,
/// `-----END CERTIFICATE-----`, each line ending in LF, as OpenSSL writes it), URL-encoded as
/// Envoy encodes it for XFCC: every byte but ASCII letters, digits, `-`, `.`, `_` and `*` as
/// `%XX` (uppercase) — in a PEM, the spaces, line feeds, `+`, `/` and `=`.
pub fn url_encoded_pem(der: &[u8], out: &mut String) {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    fn push_encoded(out: &mut String, c: u8) {
        match c {
            b'+' => out.push_str("%2B"),
            b'/' => out.push_str("%2F"),
            b'=' => out.push_str("%3D"),
            c => out.push(char::from(c)),
        }
    }
    out.push_str("-----BEGIN%20CERTIFICATE-----%0A");
    let mut line = 0;
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            let c = if i <= chunk.len() {
                B64[((n >> (18 - 6 * i)) & 63) as usize]
            } else {
                b'='
            };
            push_encoded(out, c);
            line += 1;
            if line == 64 {
                out.push_str("%0A");
                line = 0;
            }
        }
    }
    if line != 0 {
        out.push_str("%0A");
    }
    out.push_str("-----END%20CERTIFICATE-----%0A");
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
            chain: &[],
        };
        let all = ClientCertDetails {
            subject: true,
            uri: true,
            dns: true,
            ..ClientCertDetails::default()
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

    /// `Cert` and `Chain`: PEM (64-column base64, padding, LF line ends) URL-encoded as Envoy
    /// writes them, after `Hash` and before `Subject`; nothing without a certificate.
    #[test]
    fn cert_and_chain_are_url_encoded_pem_in_envoys_order() {
        let leaf: Vec<u8> = (0..100u8).chain([0xfb, 0xff, 0xfe]).collect();
        let leaf_pem = "-----BEGIN%20CERTIFICATE-----%0A\
            AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v%0A\
            MDEyMzQ1Njc4OTo7PD0%2BP0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5f%0A\
            YGFiY%2Fv%2F%2Fg%3D%3D%0A-----END%20CERTIFICATE-----%0A";
        let mut one = String::new();
        url_encoded_pem(&leaf, &mut one);
        assert_eq!(one, leaf_pem);
        // A whole last line (48 bytes: 64 characters) ends once.
        let mut whole = String::new();
        url_encoded_pem(&[0; 48], &mut whole);
        assert_eq!(
            whole,
            format!(
                "-----BEGIN%20CERTIFICATE-----%0A{}%0A-----END%20CERTIFICATE-----%0A",
                "A".repeat(64)
            )
        );
        let ca = [1u8, 2];
        let mut ca_pem = String::new();
        url_encoded_pem(&ca, &mut ca_pem);
        assert!(ca_pem.contains("%0AAQI%3D%0A"), "{ca_pem}");
        let chain: [&[u8]; 2] = [&leaf, &ca];
        let peer = PeerCert {
            hash_hex: "ab12",
            subject: "CN=c",
            uri_sans: &[],
            dns_sans: &[],
            chain: &chain,
        };
        let details = ClientCertDetails {
            cert: true,
            chain: true,
            subject: true,
            ..ClientCertDetails::default()
        };
        assert_eq!(
            String::from_utf8(element(&[], &peer, details)).unwrap(),
            format!("Hash=ab12;Cert=\"{leaf_pem}\";Chain=\"{leaf_pem}{ca_pem}\";Subject=\"CN=c\"")
        );
        let none = PeerCert { chain: &[], ..peer };
        assert_eq!(
            String::from_utf8(element(&[], &none, details)).unwrap(),
            "Hash=ab12;Subject=\"CN=c\""
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
