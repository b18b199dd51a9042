//! What the TLS files of a config hold, for operators: each certificate's subject, SANs,
//! serial and validity, per listener and cluster ([`describe`]); the admin API's `/certs`
//! ([`to_json`]) and the gauge of seconds until expiry ([`EXPIRY_METRIC`], [`expiry_samples`]).
//!
//! Described when the TLS contexts are built (startup, reload, rotation: see
//! [`crate::tls::certificates`]), so `/certs` shows what new handshakes use; the seconds until
//! expiry are computed when asked (the admin thread's clock, never the data path).

use serde_json::{Value, json};
use sluice_core::config::Config;
use sluice_core::config::tls::Pem;
pub use sluice_core::tls::pem::CertInfo;

/// The Prometheus family of seconds until the certificate of each TLS file that expires first
/// does (negative once expired): its name and `# HELP`.
pub const EXPIRY_METRIC: (&str, &str) = (
    "sluice_tls_certificate_expiry_seconds",
    "Seconds until the certificate of a TLS file that expires first does (negative: expired), \
     by listener or cluster and file.",
);

/// One TLS file of a listener or cluster.
#[derive(Clone, Debug)]
pub struct CertFile {
    /// `listener` or `cluster`: the label of `name`.
    pub scope: &'static str,
    /// The listener's or cluster's name.
    pub name: String,
    /// The config field (`listeners[0].tls.certificates[1].cert_chain`, `clusters[0].tls.ca`).
    pub field: String,
    /// The file as configured (inline PEM: `sds secret "NAME"` or `inline PEM`).
    pub file: String,
    /// Its certificates in file order, or why they could not be read.
    pub certificates: Result<Vec<CertInfo>, String>,
}

/// Every certificate chain and CA file of `config`'s listeners and clusters, read now.
#[must_use]
pub fn describe(config: &Config) -> Vec<CertFile> {
    let mut files = Vec::new();
    let mut add = |scope, name: &str, field: String, file: &Pem| {
        files.push(CertFile {
            scope,
            name: name.to_owned(),
            field,
            file: file.to_string(),
            certificates: read(file),
        });
    };
    // Each listener's `tls`, then each filter chain's (named `LISTENER#filter_chains[N]`).
    for (tls, path, name) in config.tls_slots() {
        let Some(tls) = tls else { continue };
        for (j, c) in tls.certificates.iter().enumerate() {
            let field = format!("{path}.certificates[{j}].cert_chain");
            add("listener", &name, field, &c.cert_chain);
        }
        if let Some(ca) = &tls.client_ca {
            add("listener", &name, format!("{path}.client_ca"), ca);
        }
    }
    for (i, c) in config.clusters.iter().enumerate() {
        let own = c.tls.as_deref().map(|t| (format!("clusters[{i}].tls"), t));
        let matched = c
            .transport_socket_matches
            .iter()
            .enumerate()
            .filter_map(|(m, e)| {
                let path = format!("clusters[{i}].transport_socket_matches[{m}].tls");
                e.tls.as_deref().map(|t| (path, t))
            });
        for (path, tls) in own.into_iter().chain(matched) {
            add("cluster", &c.name, format!("{path}.ca"), &tls.ca);
            if let Some(files) = &tls.client_certificate {
                add(
                    "cluster",
                    &c.name,
                    format!("{path}.cert_chain"),
                    &files.cert_chain,
                );
            }
        }
    }
    files
}

pub(crate) fn read(file: &Pem) -> Result<Vec<CertInfo>, String> {
    let pem = crate::tls::read_pem(file)?;
    parse(&pem).map_err(|e| format!("{file}: {e}"))
}

/// The certificates of a PEM file, described (the parsing is the core's, fuzzed).
pub fn parse(pem: &[u8]) -> Result<Vec<CertInfo>, String> {
    sluice_core::tls::pem::describe_pem(pem)
}

/// Seconds since the Unix epoch, now.
#[must_use]
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `/certs`: every file with its certificates, at `now` (Unix seconds).
#[must_use]
pub fn to_json(files: &[CertFile], now: i64) -> Value {
    let files: Vec<Value> = files
        .iter()
        .map(|f| {
            let mut v = json!({
                f.scope: f.name,
                "field": f.field,
                "file": f.file,
            });
            match &f.certificates {
                Ok(certs) => {
                    v["certificates"] = certs
                        .iter()
                        .map(|c| {
                            json!({
                                "subject": c.subject,
                                "issuer": c.issuer,
                                "serial": c.serial,
                                "dns_sans": c.dns_sans,
                                "uri_sans": c.uri_sans,
                                "not_before": rfc3339(c.not_before),
                                "not_after": rfc3339(c.not_after),
                                "seconds_until_expiry": c.not_after - now,
                            })
                        })
                        .collect();
                }
                Err(e) => v["error"] = Value::String(e.clone()),
            }
            v
        })
        .collect();
    json!({ "certificates": files })
}

/// Per file with certificates: (scope, name, file, seconds until its certificate that expires
/// first does) at `now`.
#[must_use]
pub fn expiry_samples(files: &[CertFile], now: i64) -> Vec<(&'static str, &str, &str, i64)> {
    files
        .iter()
        .filter_map(|f| {
            let first = f
                .certificates
                .as_ref()
                .ok()?
                .iter()
                .map(|c| c.not_after)
                .min()?;
            Some((f.scope, f.name.as_str(), f.file.as_str(), first - now))
        })
        .collect()
}

/// `2026-12-06T03:00:00Z` for Unix seconds (the proleptic Gregorian calendar, UTC).
#[must_use]
pub fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_526_000), "2026-12-06T03:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn a_certificate_is_described() {
        let mut params = rcgen::CertificateParams::new(vec!["svc.example".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "svc");
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from("spiffe://cluster.local/ns/a/sa/b").unwrap(),
        ));
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2027, 1, 1);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0a, 0xbc]));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = cert.pem() + &cert.pem();
        let certs = parse(pem.as_bytes()).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].subject, "CN=svc");
        assert_eq!(certs[0].serial, "0a:bc");
        assert_eq!(certs[0].dns_sans, ["svc.example"]);
        assert_eq!(certs[0].uri_sans, ["spiffe://cluster.local/ns/a/sa/b"]);
        assert_eq!(rfc3339(certs[0].not_before), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(certs[0].not_after), "2027-01-01T00:00:00Z");
        assert!(parse(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
    }
}
