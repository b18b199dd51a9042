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
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, c) =
        X509Certificate::from_der(der).map_err(|e| format!("cannot parse a certificate: {e}"))?;
    let (mut dns_sans, mut uri_sans) = (Vec::new(), Vec::new());
    if let Ok(Some(ext)) = c.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns_sans.push((*d).to_owned()),
                GeneralName::URI(u) => uri_sans.push((*u).to_owned()),
                _ => {}
            }
        }
    }
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
