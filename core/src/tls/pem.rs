//! The TLS files' contents, parsed: PEM certificate chains, private keys and CA bundles into
//! DER ([`parse_chain`], [`parse_key`], [`parse_certificates`]), and a certificate's names and
//! validity ([`describe`], [`subject_alt_names`]). Bytes in, values or a message out: the
//! runtime reads the files (and names them in errors) and hands the DER to rustls. Never
//! panics on any input (the `tls_pem` fuzz target).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The certificates of a PEM chain, leaf first; at least one.
pub fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in it".to_owned());
    }
    Ok(chain)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no private key in it: {e}"))
}

/// Every certificate of a PEM bundle (CA certificates); at least one.
pub fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in it".to_owned());
    }
    Ok(certs)
}

/// A subject alternative name the proxy matches on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum San {
    /// A DNS name, lowercase.
    Dns(String),
    /// A URI (SPIFFE IDs are URIs), as written.
    Uri(String),
}

/// The DNS and URI SANs of a DER certificate, in order.
pub fn subject_alt_names(der: &[u8]) -> Result<Vec<San>, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, parsed) =
        X509Certificate::from_der(der).map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let Ok(Some(ext)) = parsed.subject_alternative_name() else {
        return Ok(Vec::new());
    };
    Ok(ext
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(San::Dns(d.to_ascii_lowercase())),
            GeneralName::URI(u) => Some(San::Uri((*u).to_owned())),
            _ => None,
        })
        .collect())
}

/// What a hop's `x-forwarded-client-cert` element says of a client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's distinguished name as RFC 2253 writes it (OpenSSL's `XN_FLAG_RFC2253`,
    /// what Envoy writes): last RDN first, `,` between RDNs, `+` inside one, short names
    /// (`CN`, `O`, …), `\\`-escaped specials, bytes outside printable ASCII as `\\XX`.
    pub subject: String,
    /// URI SANs, in order.
    pub uri_sans: Vec<String>,
    /// DNS SANs, in order, as written.
    pub dns_sans: Vec<String>,
}

/// A parsed DER certificate and its DNS and URI SANs (each in order, as written): what
/// [`peer_identity`] and [`describe`] both read, parsed and walked once here.
struct Parsed<'a> {
    cert: x509_parser::certificate::X509Certificate<'a>,
    dns_sans: Vec<String>,
    uri_sans: Vec<String>,
}

/// Parses `der` and walks its SANs (a SAN extension that does not parse is read as none).
fn parse_with_sans(der: &[u8]) -> Result<Parsed<'_>, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("cannot parse a certificate: {e}"))?;
    let (mut dns_sans, mut uri_sans) = (Vec::new(), Vec::new());
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns_sans.push((*d).to_owned()),
                GeneralName::URI(u) => uri_sans.push((*u).to_owned()),
                _ => {}
            }
        }
    }
    Ok(Parsed {
        cert,
        dns_sans,
        uri_sans,
    })
}

/// The subject and SANs of a DER certificate.
pub fn peer_identity(der: &[u8]) -> Result<PeerIdentity, String> {
    let Parsed {
        cert: c,
        dns_sans,
        uri_sans,
    } = parse_with_sans(der)?;
    let mut subject = String::new();
    let rdns: Vec<_> = c.subject().iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            subject.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                subject.push('+');
            }
            let oid = atv.attr_type().to_id_string();
            match short_name(&oid) {
                Some(name) => subject.push_str(name),
                None => subject.push_str(&oid),
            }
            subject.push('=');
            match atv.as_str() {
                Ok(v) => escape_rfc2253(v.as_bytes(), &mut subject),
                Err(_) => {
                    // Not a string: `#` and the value's bytes in hex (RFC 2253 §2.4).
                    subject.push('#');
                    for b in atv.as_slice() {
                        subject.push_str(&format!("{b:02X}"));
                    }
                }
            }
        }
    }
    Ok(PeerIdentity {
        subject,
        uri_sans,
        dns_sans,
    })
}

/// OpenSSL's short names of the usual DN attributes.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.5" => "serialNumber",
        "2.5.4.4" => "SN",
        "2.5.4.42" => "GN",
        "2.5.4.12" => "title",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

/// An attribute value escaped as RFC 2253 §2.4 (and OpenSSL) writes it.
fn escape_rfc2253(v: &[u8], out: &mut String) {
    for (i, &b) in v.iter().enumerate() {
        let special = matches!(b, b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';')
            || (i == 0 && matches!(b, b'#' | b' '))
            || (i + 1 == v.len() && b == b' ');
        if special {
            out.push('\\');
            out.push(char::from(b));
        } else if b.is_ascii_graphic() || b == b' ' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\{b:02X}"));
        }
    }
}

/// What an operator wants to know of a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's distinguished name (`CN=svc.example`).
    pub subject: String,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// The serial number, hex bytes separated by colons.
    pub serial: String,
    /// DNS SANs, as written.
    pub dns_sans: Vec<String>,
    /// URI SANs (SPIFFE IDs).
    pub uri_sans: Vec<String>,
    /// Validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// See `not_before`.
    pub not_after: i64,
}

/// A DER certificate's subject, issuer, serial, SANs and validity.
pub fn describe(der: &[u8]) -> Result<CertInfo, String> {
    let Parsed {
        cert: c,
        dns_sans,
        uri_sans,
    } = parse_with_sans(der)?;
    Ok(CertInfo {
        subject: c.subject().to_string(),
        issuer: c.issuer().to_string(),
        serial: c.raw_serial_as_string(),
        dns_sans,
        uri_sans,
        not_before: c.validity().not_before.timestamp(),
        not_after: c.validity().not_after.timestamp(),
    })
}

/// Every certificate of a PEM file, described.
pub fn describe_pem(pem: &[u8]) -> Result<Vec<CertInfo>, String> {
    parse_certificates(pem)?
        .iter()
        .map(|der| describe(der.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    /// RFC 2253 §2.4 escapes, as OpenSSL's `XN_FLAG_RFC2253` writes them.
    #[test]
    fn rfc2253_values_are_escaped() {
        let esc = |v: &str| {
            let mut out = String::new();
            super::escape_rfc2253(v.as_bytes(), &mut out);
            out
        };
        assert_eq!(esc("client"), "client");
        assert_eq!(esc("a,b+c\"d\\e<f>g;h"), "a\\,b\\+c\\\"d\\\\e\\<f\\>g\\;h");
        assert_eq!(esc("#lead "), "\\#lead\\ ");
        assert_eq!(esc(" x"), "\\ x");
        assert_eq!(esc("caf\u{e9}\n"), "caf\\C3\\A9\\0A");
    }

    use super::*;

    #[test]
    fn broken_pem_is_an_error_not_a_panic() {
        assert_eq!(parse_chain(b"").unwrap_err(), "no certificate in it");
        assert_eq!(
            parse_certificates(b"hello").unwrap_err(),
            "no certificate in it"
        );
        assert!(
            parse_key(b"")
                .unwrap_err()
                .starts_with("no private key in it")
        );
        let not_der = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let chain = parse_chain(not_der).unwrap();
        assert!(describe(chain[0].as_ref()).is_err());
        assert!(subject_alt_names(chain[0].as_ref()).is_err());
        assert!(describe_pem(not_der).is_err());
        assert!(
            parse_chain(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n").is_err()
        );
    }
}
