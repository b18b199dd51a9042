//! End-to-end tests of TLS operations: certificate rotation when the files change on disk (a
//! Kubernetes secret volume's symlink swap) and the admin API's `/certs` and expiry gauge, with
//! a test PKI made here (rcgen), openssl s_client as the client that looks at the served
//! certificate, and a rustls client holding a connection open across the rotation.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use support::{admin_stat as stat, *};

/// A CA that issues the test certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem: PathBuf,
}

fn make_ca(dir: &TempDir, name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let pem = dir.write(&format!("{name}.pem"), &issuer.pem());
    Ca { issuer, pem }
}

/// A leaf for `svc.example` with common name `cn`: its chain and key PEM.
fn leaf(ca: &Ca, cn: &str) -> (String, String) {
    let mut params = CertificateParams::new(vec!["svc.example".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A secret volume the way the kubelet writes one: `tls.crt` and `tls.key` are symlinks
/// through `..data`, itself a symlink to a timestamped directory; an update writes a new
/// directory and renames a new `..data` over the old one (both files change at once).
struct SecretVolume {
    root: PathBuf,
    version: u32,
}

impl SecretVolume {
    fn new(dir: &TempDir, cert: &str, key: &str) -> Self {
        let root = dir.path().join("secret");
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink("..data/tls.crt", root.join("tls.crt")).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", root.join("tls.key")).unwrap();
        let mut v = SecretVolume { root, version: 0 };
        v.update(cert, key);
        v
    }
    fn update(&mut self, cert: &str, key: &str) {
        self.version += 1;
        let data = format!("..2026_12_06_{}", self.version);
        std::fs::create_dir(self.root.join(&data)).unwrap();
        std::fs::write(self.root.join(&data).join("tls.crt"), cert).unwrap();
        std::fs::write(self.root.join(&data).join("tls.key"), key).unwrap();
        std::os::unix::fs::symlink(&data, self.root.join("..data_tmp")).unwrap();
        std::fs::rename(self.root.join("..data_tmp"), self.root.join("..data")).unwrap();
    }
    fn cert(&self) -> PathBuf {
        self.root.join("tls.crt")
    }
    fn key(&self) -> PathBuf {
        self.root.join("tls.key")
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The common name of the certificate the proxy at `port` serves for `svc.example`.
fn served_cn(port: u16) -> String {
    let target = format!("127.0.0.1:{port}");
    let out = run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &target,
            "-brief",
            "-servername",
            "svc.example",
        ],
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("CONNECTION ESTABLISHED"), "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("Peer certificate: CN = "))
        .unwrap_or_else(|| panic!("no peer certificate in:\n{text}"))
        .trim()
        .to_owned()
}

/// Waits (up to 30 s: the default check interval is 5 s) until `done`.
fn eventually(what: &str, sluice: &Proc, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen:\n{}",
            sluice.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A TLS connection through the proxy to the echo upstream, held open by the test.
fn tls_client(
    port: u16,
    ca: &Path,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "svc.example".try_into().unwrap()).unwrap();
    let tcp = std::net::TcpStream::connect(addr(port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

fn echo(s: &mut impl ReadWrite, line: &str) -> String {
    s.write_all(line.as_bytes()).unwrap();
    s.flush().unwrap();
    let mut got = vec![0; line.len()];
    s.read_exact(&mut got).unwrap();
    String::from_utf8(got).unwrap()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A line-echo upstream (Python) on `port`.
fn start_echo(dir: &TempDir, port: u16) -> Proc {
    let mut echo = spawn(
        dir,
        "echo",
        &python(),
        &[
            "-c",
            &format!(
                "import socket,threading\n\
                 s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                 s.bind(('127.0.0.1',{port}));s.listen(64)\n\
                 def serve(c):\n\
                 \x20while True:\n\
                 \x20\x20d=c.recv(65536)\n\
                 \x20\x20if not d: break\n\
                 \x20\x20c.sendall(d)\n\
                 \x20c.close()\n\
                 while True:\n\
                 \x20c,_=s.accept();threading.Thread(target=serve,args=(c,),daemon=True).start()"
            ),
        ],
    );
    wait_listening(addr(port), &mut echo);
    echo
}

/// With the defaults (files looked at every 5 s), a secret-volume update of the certificate
/// and key is served to new handshakes without a reload, while a connection opened before
/// keeps working; a new pair whose key does not match is refused, logged with the file and
/// the reason and counted, and the previous certificate serves on.
#[test]
fn certificate_files_rotate_when_they_change_on_disk() {
    if !require_peers(&["openssl", "python3"]) {
        return;
    }
    let dir = TempDir::new("tls-watch");
    let ca = make_ca(&dir, "ca");
    let (one_cert, one_key) = leaf(&ca, "one");
    let (two_cert, two_key) = leaf(&ca, "two");
    let (three_cert, _) = leaf(&ca, "three");
    let mut secret = SecretVolume::new(&dir, &one_cert, &one_key);
    let upstream = free_port();
    let _echo = start_echo(&dir, upstream);
    let (listen, admin) = (free_port(), free_port());
    let config = format!(
        r#"
admin: {{ address: 127.0.0.1:{admin} }}
listeners:
  - name: tls_in
    address: 127.0.0.1:{listen}
    tls: {{ certificates: [ {{ cert_chain: {c}, private_key: {k} }} ] }}
    tcp_proxy: {{ cluster: app }}
clusters:
  - {{ name: app, hosts: [ {{ address: 127.0.0.1:{upstream} }} ] }}
"#,
        c = p(&secret.cert()),
        k = p(&secret.key()),
    );
    let sluice = start_sluice(&dir, &config, 2, addr(listen));
    assert_eq!(served_cn(listen), "one");
    let mut open = tls_client(listen, &ca.pem);
    assert_eq!(echo(&mut open, "before\n"), "before\n");
    assert_eq!(stat(admin, "server.tls_rotations_succeeded"), 0);

    secret.update(&two_cert, &two_key);
    eventually("the rotation to the new certificate", &sluice, || {
        served_cn(listen) == "two"
    });
    assert!(stat(admin, "server.tls_rotations_succeeded") >= 1);
    assert_eq!(stat(admin, "server.tls_rotations_failed"), 0);
    assert!(
        sluice.log_text().contains("new handshakes use them"),
        "{}",
        sluice.log_text()
    );
    // /certs and the expiry gauge show the certificate in use now.
    let (status, body) = http_request(addr(admin), "GET", "/certs");
    assert_eq!(status, 200, "{body}");
    let certs: serde_json::Value = serde_json::from_str(&body).unwrap();
    let file = &certs["certificates"][0];
    assert_eq!(file["listener"], "tls_in", "{body}");
    assert_eq!(file["file"], p(&secret.cert()), "{body}");
    assert_eq!(file["certificates"][0]["subject"], "CN=two", "{body}");
    assert_eq!(file["certificates"][0]["issuer"], "CN=ca", "{body}");
    assert_eq!(
        file["certificates"][0]["dns_sans"][0], "svc.example",
        "{body}"
    );
    assert!(
        file["certificates"][0]["seconds_until_expiry"]
            .as_i64()
            .unwrap()
            > 0
    );
    let (_, metrics) = http_request(addr(admin), "GET", "/stats/prometheus");
    let series = format!(
        "sluice_tls_certificate_expiry_seconds{{listener=\"tls_in\",file=\"{}\"}} ",
        p(&secret.cert())
    );
    assert!(metrics.contains(&series), "{metrics}");
    // The connection opened before the rotation carries on, on its session.
    assert_eq!(echo(&mut open, "after\n"), "after\n");
    assert_eq!(
        stat(admin, "listener.tls_in.downstream_cx_active"),
        1,
        "only the held connection is open"
    );

    // A certificate with the previous key: refused, logged, counted; "two" serves on.
    secret.update(&three_cert, &two_key);
    eventually("the failed rotation being counted", &sluice, || {
        stat(admin, "server.tls_rotations_failed") >= 1
    });
    let log = sluice.log_text();
    assert!(
        log.contains("listeners[0].tls.certificates[0].private_key")
            && log.contains("does not go with the certificate")
            && log.contains(p(&secret.key())),
        "{log}"
    );
    assert_eq!(served_cn(listen), "two", "the last good pair serves on");
    let (_, body) = http_request(addr(admin), "GET", "/certs");
    assert!(
        body.contains("\"CN=two\"") && !body.contains("CN=three"),
        "{body}"
    );
    assert_eq!(echo(&mut open, "still\n"), "still\n");
}
