//! The test PKI of the TLS end-to-end tests (rcgen): a CA, leaf certificates issued by it,
//! and the openssl `s_client` and `/stats` readers those tests share.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

use super::{TempDir, run};

/// A `/stats` value ([`super::admin_stat`]), for the TLS tests that glob-import this module.
#[allow(unused_imports)] // (not every test crate that has this module reads stats)
pub use super::admin_stat as stat;

/// A CA that issues the test certificates.
pub struct Ca {
    pub issuer: CertifiedIssuer<'static, KeyPair>,
    pub pem: PathBuf,
}

pub fn make_ca(dir: &TempDir, name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let pem = dir.write(&format!("{name}.pem"), &issuer.pem());
    Ca { issuer, pem }
}

/// A leaf certificate with common name `cn` and these DNS (and URI) SANs, issued by `ca`:
/// the paths of its chain and key.
pub fn leaf(
    dir: &TempDir,
    ca: &Ca,
    cn: &str,
    dns: &[&str],
    uri: Option<&str>,
) -> (PathBuf, PathBuf) {
    let mut params =
        CertificateParams::new(dns.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(uri) = uri {
        params
            .subject_alt_names
            .push(SanType::URI(uri.try_into().unwrap()));
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (
        dir.write(&format!("{cn}.pem"), &cert.pem()),
        dir.write(&format!("{cn}.key"), &key.serialize_pem()),
    )
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `openssl s_client` to the proxy with `args`: (handshake completed, all its output).
pub fn s_client(port: u16, args: &[&str]) -> (bool, String) {
    let target = format!("127.0.0.1:{port}");
    let mut all = vec!["s_client", "-connect", &target];
    all.extend_from_slice(args);
    let out = run("openssl", &all);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // `-brief` says CONNECTION ESTABLISHED; the long form `New, TLSv1.x, Cipher is X` (or
    // `Reused, …`), with `(NONE)` for a failed handshake.
    let established = text.contains("CONNECTION ESTABLISHED")
        || text.lines().any(|l| {
            (l.starts_with("New, ") || l.starts_with("Reused, "))
                && l.contains("Cipher is ")
                && !l.contains("(NONE)")
        });
    (established, text)
}

pub fn peer_cn(text: &str) -> &str {
    text.lines()
        .find_map(|l| l.strip_prefix("Peer certificate: CN = "))
        .unwrap_or_else(|| panic!("no peer certificate in:\n{text}"))
        .trim()
}

/// `openssl s_client` that sends one HTTP/1.1 request with `Connection: close` and reads until
/// the proxy closes (`-ign_eof`): unlike [`s_client`], it is still reading when the server sends
/// its TLS 1.3 session tickets (after the handshake), so `-sess_out` has one to write.
pub fn s_client_request(port: u16, args: &[&str]) -> (bool, String) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let target = format!("127.0.0.1:{port}");
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &target, "-ign_eof"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run openssl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.1\r\nHost: svc.example\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let established = text.lines().any(|l| {
        (l.starts_with("New, ") || l.starts_with("Reused, "))
            && l.contains("Cipher is ")
            && !l.contains("(NONE)")
    });
    (established, text)
}
