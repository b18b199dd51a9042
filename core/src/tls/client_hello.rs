//! Peeking at a TLS ClientHello without terminating TLS: the server name (SNI) and ALPN
//! protocols a client asks for, so a `tcp_proxy` listener can route a TLS connection by name and
//! pass its bytes through untouched (nginx's `ssl_preread`, Envoy's `tls_inspector`).
//!
//! [`peek_client_hello`] is a pure function of the bytes read so far: the driver reads into its
//! buffer, calls it, and either reads more ([`Peek::NeedMore`]), routes ([`Peek::ClientHello`]),
//! or gives up ([`Peek::NotTls`], [`Peek::Invalid`]). It never consumes anything — the driver
//! forwards every byte it read to the chosen upstream afterwards — and a verdict other than
//! `NeedMore` never changes as more bytes arrive (the fuzz target checks it on every prefix).
//!
//! ## What is accepted (RFC 8446 §4.1.2, §5.1; RFC 6066 §3; RFC 7301 §3.1)
//!
//! - Records of type handshake (22), version 3.x, length 1..=2^14. The ClientHello may span
//!   up to 32 records (reassembled up to `max_hello_bytes`; a longer one is
//!   [`ClientHelloError::TooLarge`]).
//! - Handshake type 1 (ClientHello); every length field must fit the one around it exactly.
//! - Extensions: at most one of each type. `server_name` holds one `host_name` at most (unknown
//!   name types are skipped), which must be a DNS name — ASCII letters, digits, `-`, `_`, labels
//!   of 1..=63 bytes, 253 bytes in all, one trailing dot allowed — and is returned lowercased
//!   without the trailing dot. `application_layer_protocol_negotiation` is a non-empty list of
//!   non-empty names. `supported_versions` says whether TLS 1.3 is offered.
//!
//! Everything else in the hello (cipher suites, key shares, unknown extensions) is skipped, not
//! judged: the upstream that terminates TLS decides about those.
//!
//! The function allocates only for what it returns (the name, the ALPN list) and, for the rare
//! ClientHello split over several records, a reassembly buffer bounded by `max_hello_bytes`.

/// The largest ClientHello [`peek_client_hello`] reassembles by default. Real ones are well
/// under 2 KiB (a post-quantum key share included); 16 KiB leaves room for many extensions.
pub const DEFAULT_MAX_HELLO_BYTES: usize = 16 * 1024;

/// The most bytes on the wire a ClientHello of at most `max_hello_bytes` (the handshake
/// message, what the limit counts) can take before [`peek_client_hello`] decides: the message
/// and the header of each record it may be split over (at most 32). A peek bounded by the
/// message limit alone would refuse a hello the parser accepts, split over records.
#[must_use]
pub const fn max_hello_wire_bytes(max_hello_bytes: usize) -> usize {
    max_hello_bytes + RECORD_HEADER * MAX_RECORDS
}

/// The TLS record header: type, version, length.
const RECORD_HEADER: usize = 5;
/// Record content type `handshake`.
const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake message type `client_hello`.
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// The most records a ClientHello may span. Real clients send one (a large post-quantum hello
/// two); a hello in hundreds of tiny records only makes the peek work harder.
const MAX_RECORDS: usize = 32;
/// The largest plaintext record fragment (RFC 8446 §5.1).
const MAX_FRAGMENT: usize = 1 << 14;

const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const TLS13: u16 = 0x0304;

/// What the bytes read so far say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peek {
    /// Not enough bytes to decide: read until the buffer holds at least `at_least` bytes.
    NeedMore {
        /// The buffer length at which the next decision can be made.
        at_least: usize,
    },
    /// A well-formed ClientHello.
    ClientHello(ClientHello),
    /// The connection does not start with a TLS handshake record (plaintext, or another
    /// protocol): the first byte is not 22 or the record version is not 3.x.
    NotTls,
    /// It starts as TLS but the ClientHello is not acceptable.
    Invalid(ClientHelloError),
}

/// What a ClientHello asks for.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// The requested server name: a DNS name, lowercase, without a trailing dot.
    pub server_name: Option<String>,
    /// The ALPN protocol names in the client's order (empty when the extension is absent).
    pub alpn: Vec<Vec<u8>>,
    /// Whether `supported_versions` offers TLS 1.3.
    pub offers_tls13: bool,
    /// Bytes of the buffer the ClientHello's records took (where the client's next record
    /// starts).
    pub records_len: usize,
}

/// Why a connection that started as TLS was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientHelloError {
    /// The ClientHello is longer than the configured limit.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The first handshake message is not a ClientHello.
    NotClientHello {
        /// Its handshake type.
        handshake_type: u8,
    },
    /// A record or field is malformed; the text names which.
    Malformed(&'static str),
}

impl std::fmt::Display for ClientHelloError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientHelloError::TooLarge { limit } => {
                write!(f, "ClientHello longer than {limit} bytes")
            }
            ClientHelloError::NotClientHello { handshake_type } => write!(
                f,
                "first handshake message is type {handshake_type}, not a ClientHello"
            ),
            ClientHelloError::Malformed(what) => write!(f, "malformed ClientHello: {what}"),
        }
    }
}

impl std::error::Error for ClientHelloError {}

/// Decides what `buf` (every byte the client sent so far) holds; see the module docs.
#[must_use]
pub fn peek_client_hello(buf: &[u8], max_hello_bytes: usize) -> Peek {
    // The first record header decides TLS or not.
    if buf.is_empty() {
        return Peek::NeedMore {
            at_least: RECORD_HEADER,
        };
    }
    if buf[0] != CONTENT_HANDSHAKE {
        return Peek::NotTls;
    }
    if buf.len() >= 2 && buf[1] != 3 {
        return Peek::NotTls;
    }
    // Walk the records, gathering the handshake message. `first` is the first record's fragment;
    // the message is parsed in place when it fits there (nearly always).
    let mut at = 0;
    let mut gathered: Option<Vec<u8>> = None;
    let mut first: &[u8] = &[];
    let mut records = 0;
    loop {
        if records == MAX_RECORDS {
            return invalid("ClientHello split into more than 32 records");
        }
        records += 1;
        let Some(header) = buf.get(at..at + RECORD_HEADER) else {
            return Peek::NeedMore {
                at_least: at + RECORD_HEADER,
            };
        };
        if header[0] != CONTENT_HANDSHAKE {
            return invalid("a record inside the ClientHello is not a handshake record");
        }
        if header[1] != 3 {
            return if at == 0 {
                Peek::NotTls
            } else {
                invalid("record version is not 3.x")
            };
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return invalid("empty handshake record");
        }
        if len > MAX_FRAGMENT {
            return invalid("record longer than 2^14 bytes");
        }
        let end = at + RECORD_HEADER + len;
        let Some(fragment) = buf.get(at + RECORD_HEADER..end) else {
            // The first record's handshake header already says whether this is a ClientHello
            // and how long it is: refuse early rather than read a message we will not take.
            if at == 0
                && len >= 4
                && buf.len() > RECORD_HEADER
                && let Some(early) = check_handshake_header(&buf[RECORD_HEADER..], max_hello_bytes)
            {
                return early;
            }
            return Peek::NeedMore { at_least: end };
        };
        at = end;
        let message: &[u8] = match gathered.as_mut() {
            None if first.is_empty() => {
                first = fragment;
                first
            }
            None => {
                let mut g = Vec::with_capacity((first.len() + fragment.len()).min(max_hello_bytes));
                g.extend_from_slice(first);
                g.extend_from_slice(fragment);
                gathered.insert(g)
            }
            Some(g) => {
                g.extend_from_slice(fragment);
                g
            }
        };
        if let Some(verdict) = check_handshake_header(message, max_hello_bytes) {
            return verdict;
        }
        if message.len() < 4 {
            continue;
        }
        let body_len = handshake_body_len(message);
        if message.len() < 4 + body_len {
            continue;
        }
        return match parse_body(&message[4..4 + body_len]) {
            Ok(mut hello) => {
                hello.records_len = at;
                Peek::ClientHello(hello)
            }
            Err(what) => invalid(what),
        };
    }
}

/// The verdict the start of the handshake message (`message`, at least one byte) already gives:
/// not a ClientHello, or longer than the limit. `None`: read on.
fn check_handshake_header(message: &[u8], max_hello_bytes: usize) -> Option<Peek> {
    if message[0] != HANDSHAKE_CLIENT_HELLO {
        return Some(Peek::Invalid(ClientHelloError::NotClientHello {
            handshake_type: message[0],
        }));
    }
    let too_large = Peek::Invalid(ClientHelloError::TooLarge {
        limit: max_hello_bytes,
    });
    if message.len() < 4 {
        return (message.len() > max_hello_bytes).then_some(too_large);
    }
    (4 + handshake_body_len(message) > max_hello_bytes).then_some(too_large)
}

/// The 24-bit length in a handshake header (`message` has at least 4 bytes).
fn handshake_body_len(message: &[u8]) -> usize {
    (usize::from(message[1]) << 16) | (usize::from(message[2]) << 8) | usize::from(message[3])
}

fn invalid(what: &'static str) -> Peek {
    Peek::Invalid(ClientHelloError::Malformed(what))
}

/// A cursor over a length-delimited field; every read names what it reads for the error.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], &'static str> {
        if self.bytes.len() < n {
            return Err(what);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, &'static str> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, &'static str> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a 1-byte length.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], &'static str> {
        let n = usize::from(self.u8(what)?);
        self.take(n, what)
    }
    /// A vector with a 2-byte length.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], &'static str> {
        let n = usize::from(self.u16(what)?);
        self.take(n, what)
    }
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

fn parse_body(body: &[u8]) -> Result<ClientHello, &'static str> {
    let mut r = Reader { bytes: body };
    r.take(2, "legacy_version is cut short")?;
    r.take(32, "random is cut short")?;
    let session_id = r.vec8("legacy_session_id is cut short")?;
    if session_id.len() > 32 {
        return Err("legacy_session_id longer than 32 bytes");
    }
    let suites = r.vec16("cipher_suites is cut short")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("cipher_suites is empty or of odd length");
    }
    if r.vec8("legacy_compression_methods is cut short")?
        .is_empty()
    {
        return Err("legacy_compression_methods is empty");
    }
    let mut hello = ClientHello::default();
    if r.is_empty() {
        // A TLS 1.2 hello may end here: no extensions.
        return Ok(hello);
    }
    let mut extensions = Reader {
        bytes: r.vec16("extensions are cut short")?,
    };
    if !r.is_empty() {
        return Err("bytes after the extensions");
    }
    // Types seen so far: duplicates are refused (RFC 8446 §4.2). A ClientHello carries a few
    // dozen extensions at most; a small linear list keeps this allocation-free.
    let mut seen = [0u16; 64];
    let mut seen_len = 0;
    while !extensions.is_empty() {
        let kind = extensions.u16("extension type is cut short")?;
        let data = extensions.vec16("extension data is cut short")?;
        if seen[..seen_len].contains(&kind) {
            return Err("an extension appears twice");
        }
        if seen_len == seen.len() {
            return Err("more than 64 extensions");
        }
        seen[seen_len] = kind;
        seen_len += 1;
        match kind {
            EXT_SERVER_NAME => hello.server_name = parse_server_name(data)?,
            EXT_ALPN => hello.alpn = parse_alpn(data)?,
            EXT_SUPPORTED_VERSIONS => hello.offers_tls13 = parse_supported_versions(data)?,
            _ => {}
        }
    }
    Ok(hello)
}

fn parse_server_name(data: &[u8]) -> Result<Option<String>, &'static str> {
    let mut outer = Reader { bytes: data };
    let mut list = Reader {
        bytes: outer.vec16("server_name list is cut short")?,
    };
    if !outer.is_empty() {
        return Err("bytes after the server_name list");
    }
    let mut host_name = None;
    while !list.is_empty() {
        let name_type = list.u8("server_name entry is cut short")?;
        let name = list.vec16("server_name entry is cut short")?;
        if name_type != 0 {
            continue; // not host_name: unknown types are skipped
        }
        if host_name.is_some() {
            return Err("two host_name entries in server_name");
        }
        host_name = Some(dns_name(name)?);
    }
    Ok(host_name)
}

/// `name` as a lowercase DNS name without its trailing dot, or why it is not one.
fn dns_name(name: &[u8]) -> Result<String, &'static str> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err("server_name host_name is empty or longer than 253 bytes");
    }
    for label in name.split(|&b| b == b'.') {
        if label.is_empty() || label.len() > 63 {
            return Err("server_name host_name has an empty label or one over 63 bytes");
        }
        if !label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("server_name host_name is not a DNS name");
        }
    }
    // Checked ASCII above, so this is valid UTF-8 as is.
    Ok(name
        .iter()
        .map(|&b| char::from(b.to_ascii_lowercase()))
        .collect())
}

fn parse_alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    let mut outer = Reader { bytes: data };
    let mut list = Reader {
        bytes: outer.vec16("ALPN list is cut short")?,
    };
    if !outer.is_empty() {
        return Err("bytes after the ALPN list");
    }
    if list.is_empty() {
        return Err("ALPN list is empty");
    }
    let mut names = Vec::new();
    while !list.is_empty() {
        let name = list.vec8("ALPN name is cut short")?;
        if name.is_empty() {
            return Err("an ALPN name is empty");
        }
        names.push(name.to_vec());
    }
    Ok(names)
}

fn parse_supported_versions(data: &[u8]) -> Result<bool, &'static str> {
    let mut outer = Reader { bytes: data };
    let versions = outer.vec8("supported_versions is cut short")?;
    if !outer.is_empty() {
        return Err("bytes after supported_versions");
    }
    if versions.is_empty() || versions.len() % 2 != 0 {
        return Err("supported_versions is empty or of odd length");
    }
    Ok(versions
        .chunks_exact(2)
        .any(|v| u16::from_be_bytes([v[0], v[1]]) == TLS13))
}

/// Building ClientHellos, for tests and the fuzz target's seeds: the message as a client sends
/// it, split into records of at most `fragment` bytes.
pub mod build {
    /// The parts of a ClientHello the peek reads; everything else is filled plausibly.
    #[derive(Clone, Debug, Default)]
    pub struct Hello<'a> {
        /// The `host_name`, written as given (not validated).
        pub server_name: Option<&'a [u8]>,
        /// ALPN names, written as given (`Some(&[])` writes an empty list).
        pub alpn: Option<&'a [&'a [u8]]>,
        /// Whether `supported_versions` lists TLS 1.3 (and 1.2).
        pub tls13: bool,
        /// Bytes of an unknown extension (type 0xfafa, GREASE) written first.
        pub padding: usize,
    }

    /// The ClientHello `hello` as records of at most `fragment` (≥ 1) bytes each.
    #[must_use]
    pub fn client_hello_records(hello: &Hello<'_>, fragment: usize) -> Vec<u8> {
        let mut ext = Vec::new();
        if hello.padding > 0 {
            push_ext(&mut ext, 0xfafa, &vec![0; hello.padding]);
        }
        if let Some(name) = hello.server_name {
            let mut d = Vec::new();
            push_u16(&mut d, (name.len() + 3) as u16);
            d.push(0);
            push_u16(&mut d, name.len() as u16);
            d.extend_from_slice(name);
            push_ext(&mut ext, super::EXT_SERVER_NAME, &d);
        }
        if let Some(names) = hello.alpn {
            let mut list = Vec::new();
            for n in names {
                list.push(n.len() as u8);
                list.extend_from_slice(n);
            }
            let mut d = Vec::new();
            push_u16(&mut d, list.len() as u16);
            d.extend_from_slice(&list);
            push_ext(&mut ext, super::EXT_ALPN, &d);
        }
        if hello.tls13 {
            push_ext(&mut ext, super::EXT_SUPPORTED_VERSIONS, &[4, 3, 4, 3, 3]);
        }
        let mut body = Vec::new();
        body.extend_from_slice(&[3, 3]);
        body.extend_from_slice(&[7; 32]);
        body.push(32);
        body.extend_from_slice(&[9; 32]);
        push_u16(&mut body, 4);
        body.extend_from_slice(&[0x13, 0x01, 0xc0, 0x2f]);
        body.extend_from_slice(&[1, 0]);
        push_u16(&mut body, ext.len() as u16);
        body.extend_from_slice(&ext);
        let mut message = vec![super::HANDSHAKE_CLIENT_HELLO];
        message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend_from_slice(&body);
        let mut out = Vec::new();
        for chunk in message.chunks(fragment.clamp(1, super::MAX_FRAGMENT)) {
            out.extend_from_slice(&[super::CONTENT_HANDSHAKE, 3, 1]);
            push_u16(&mut out, chunk.len() as u16);
            out.extend_from_slice(chunk);
        }
        out
    }

    fn push_u16(out: &mut Vec<u8>, v: u16) {
        out.extend_from_slice(&v.to_be_bytes());
    }

    fn push_ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        push_u16(out, kind);
        push_u16(out, data.len() as u16);
        out.extend_from_slice(data);
    }
}

#[cfg(test)]
mod tests {
    use super::build::{Hello, client_hello_records};
    use super::*;
    use proptest::prelude::*;

    fn peek(buf: &[u8]) -> Peek {
        peek_client_hello(buf, DEFAULT_MAX_HELLO_BYTES)
    }

    fn hello(server_name: &[u8]) -> Vec<u8> {
        client_hello_records(
            &Hello {
                server_name: Some(server_name),
                alpn: Some(&[b"h2", b"http/1.1"]),
                tls13: true,
                padding: 0,
            },
            MAX_FRAGMENT,
        )
    }

    #[test]
    fn reads_the_server_name_alpn_and_version() {
        let bytes = hello(b"Api.Example.COM.");
        let Peek::ClientHello(h) = peek(&bytes) else {
            panic!("{:?}", peek(&bytes));
        };
        assert_eq!(h.server_name.as_deref(), Some("api.example.com"));
        assert_eq!(h.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(h.offers_tls13);
        assert_eq!(h.records_len, bytes.len());
    }

    #[test]
    fn every_proper_prefix_needs_more_and_says_how_much() {
        let bytes = hello(b"a.example");
        for k in 0..bytes.len() {
            match peek(&bytes[..k]) {
                Peek::NeedMore { at_least } => assert!(at_least > k && at_least <= bytes.len()),
                other => panic!("prefix {k}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_hello_split_over_many_records_is_reassembled() {
        let h = Hello {
            server_name: Some(b"split.example"),
            alpn: None,
            tls13: false,
            padding: 3000,
        };
        for fragment in [100, 500, 1000, 16_384] {
            let bytes = client_hello_records(&h, fragment);
            let Peek::ClientHello(got) = peek(&bytes) else {
                panic!("fragment {fragment}: {:?}", peek(&bytes));
            };
            assert_eq!(got.server_name.as_deref(), Some("split.example"));
            assert!(got.alpn.is_empty() && !got.offers_tls13);
        }
    }

    #[test]
    fn a_hello_in_more_than_32_records_is_refused() {
        let h = Hello {
            server_name: Some(b"tiny.example"),
            padding: 200,
            ..Hello::default()
        };
        let bytes = client_hello_records(&h, 2);
        assert_eq!(
            peek(&bytes),
            Peek::Invalid(ClientHelloError::Malformed(
                "ClientHello split into more than 32 records"
            ))
        );
    }

    #[test]
    fn plaintext_and_other_protocols_are_not_tls() {
        assert_eq!(peek(b"GET / HTTP/1.1\r\n"), Peek::NotTls);
        assert_eq!(peek(b"PRI * HTTP/2.0"), Peek::NotTls);
        assert_eq!(peek(&[0x16, 0x02]), Peek::NotTls); // SSLv2-ish version
        assert_eq!(peek(&[0x17]), Peek::NotTls); // application data first
    }

    #[test]
    fn a_longer_hello_than_the_limit_is_refused_before_it_is_all_read() {
        let bytes = client_hello_records(
            &Hello {
                server_name: Some(b"x.example"),
                padding: 5000,
                ..Hello::default()
            },
            MAX_FRAGMENT,
        );
        // The 9-byte headers are enough to know.
        assert_eq!(
            peek_client_hello(&bytes[..9], 4096),
            Peek::Invalid(ClientHelloError::TooLarge { limit: 4096 })
        );
    }

    #[test]
    fn bad_names_and_lists_are_malformed() {
        for name in [
            &b""[..],
            b".",
            b"a..b",
            b"sp ace.example",
            b"caf\xc3\xa9.example",
            b"1.2.3.4:443",
            &[b'a'; 64],
        ] {
            assert!(
                matches!(
                    peek(&hello(name)),
                    Peek::Invalid(ClientHelloError::Malformed(_))
                ),
                "{name:?}"
            );
        }
        let empty_alpn = client_hello_records(
            &Hello {
                alpn: Some(&[]),
                ..Hello::default()
            },
            MAX_FRAGMENT,
        );
        assert_eq!(
            peek(&empty_alpn),
            Peek::Invalid(ClientHelloError::Malformed("ALPN list is empty"))
        );
    }

    #[test]
    fn a_duplicate_extension_and_another_handshake_type_are_refused() {
        let mut bytes = hello(b"d.example");
        // Turn the ALPN extension's type (16) into server_name's (0): a second server_name.
        let at = bytes
            .windows(4)
            .position(|w| w == [0, 16, 0, 14])
            .expect("the ALPN extension header");
        bytes[at + 1] = 0;
        assert_eq!(
            peek(&bytes),
            Peek::Invalid(ClientHelloError::Malformed("an extension appears twice"))
        );
        let mut server_hello = hello(b"d.example");
        server_hello[5] = 2;
        assert_eq!(
            peek(&server_hello),
            Peek::Invalid(ClientHelloError::NotClientHello { handshake_type: 2 })
        );
    }

    #[test]
    fn a_hello_without_extensions_has_no_name() {
        // A minimal TLS 1.2 hello: version, random, empty session id, one suite, null compression.
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x00, 0x2f, 1, 0]);
        let mut bytes = vec![
            22,
            3,
            1,
            0,
            (body.len() + 4) as u8,
            1,
            0,
            0,
            body.len() as u8,
        ];
        bytes.extend_from_slice(&body);
        assert_eq!(
            peek(&bytes),
            Peek::ClientHello(ClientHello {
                records_len: bytes.len(),
                ..ClientHello::default()
            })
        );
    }

    proptest! {
        /// Any valid name, any ALPN list and any fragmentation read back exactly, and the bytes
        /// after the hello (the client's next record) do not change the verdict.
        #[test]
        fn round_trip(
            labels in proptest::collection::vec("[a-zA-Z0-9_-]{1,20}", 1..5),
            alpn in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..12), 0..4),
            tls13 in any::<bool>(),
            padding in 0usize..600,
            fragment in 64usize..700,
            trailing in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let name = labels.join(".");
            let alpn_refs: Vec<&[u8]> = alpn.iter().map(Vec::as_slice).collect();
            let mut bytes = client_hello_records(
                &Hello {
                    server_name: Some(name.as_bytes()),
                    alpn: (!alpn.is_empty()).then_some(alpn_refs.as_slice()),
                    tls13,
                    padding,
                },
                fragment,
            );
            let records_len = bytes.len();
            bytes.extend_from_slice(&trailing);
            prop_assert_eq!(
                peek(&bytes),
                Peek::ClientHello(ClientHello {
                    server_name: Some(name.to_ascii_lowercase()),
                    alpn,
                    offers_tls13: tls13,
                    records_len,
                })
            );
        }

        /// Once decided, a verdict holds for every longer buffer, and each shorter one needs
        /// more or says the same.
        #[test]
        fn a_verdict_is_stable_on_prefixes(
            tls_start in any::<bool>(),
            random in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            // Half the inputs start like a handshake record, so the walk gets past byte 2.
            let mut bytes = if tls_start { vec![22, 3, 1] } else { Vec::new() };
            bytes.extend_from_slice(&random);
            let whole = peek(&bytes);
            for k in 0..bytes.len() {
                let part = peek(&bytes[..k]);
                if let Peek::NeedMore { at_least } = part {
                    prop_assert!(at_least > k);
                } else {
                    prop_assert_eq!(&part, &whole, "prefix {}", k);
                }
            }
        }
    }
}
