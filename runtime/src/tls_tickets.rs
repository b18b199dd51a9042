//! Session-ticket keys that outlive a process: TLS listeners' stateless resumption tickets
//! sealed with keys Sluice holds itself (not rustls' `Ticketer`, whose keys cannot be read), so
//! that a binary upgrade can hand them to the new process and a reload can keep them.
//!
//! What this module owns:
//! - **[`TicketKeys`]**, a `rustls::server::ProducesTickets` over aws-lc-rs AES-256-GCM, with
//!   rotation like rustls' `TicketRotator`: a current key that seals new tickets and the
//!   previous one that still opens the tickets it sealed; the current key is replaced every
//!   [`ROTATION`] (6 h), so a ticket resumes for at most twice that ([`TICKET_LIFETIME`]), and a
//!   key is forgotten after 12 h (forward secrecy of the tickets beyond that).
//! - **The process-wide registry** ([`for_listener`]): one [`TicketKeys`] per listener
//!   *identity* — its name and the settings that decide who is admitted (client CA,
//!   `require_client_certificate`, `verify_subject_alt_names`, `min_version`). A reload that
//!   keeps a listener's identity keeps its keys (clients keep resuming); a changed identity gets
//!   new keys, so a ticket issued under the old admission rules never resumes under the new
//!   ones; and two listeners never share keys (a ticket from a listener without mTLS cannot
//!   resume on one that requires a client certificate).
//! - **Handover** ([`export`], [`adopt`]): the keys of every listener, exported for the control
//!   socket's offer and adopted by the new process before it builds its TLS contexts.
//!
//! Invariants: key bytes are never logged (`Debug` shows the key name only) nor written to a
//! file; they travel only over the control socket, whose file is `0600` in a directory
//! writable by this user alone and whose peers are checked by uid at both ends
//! ([`crate::control`]). A ticket is `key name (16) ‖ nonce (12) ‖ AES-256-GCM(state) ‖ tag (16)`
//! with the key name as associated data; nonces are random (a key seals far fewer than 2³²
//! tickets in 6 h at any handshake rate a host can sustain).
//!
//! Sealing and opening take a read lock on the listener's key pair (a write lock once per
//! rotation) — once per handshake, never per request, as rustls' own rotator does.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use sluice_core::config::tls::{ListenerTls, Pem, TlsVersion};

/// How long a key seals new tickets before the next one takes over.
pub const ROTATION: u64 = 6 * 60 * 60;
/// How long a client may keep a ticket (the key that sealed it opens for two rotations).
pub const TICKET_LIFETIME: u32 = 2 * ROTATION as u32;

const NAME_LEN: usize = 16;
const SECRET_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Tickets longer than this are refused unopened (rustls' session state with a client's
/// certificate chain is a few KiB).
const MAX_TICKET: usize = 1 << 16;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One ticket key as it is handed over: its name, its secret and when it was made (Unix
/// seconds). `Debug` does not show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ExportedKey {
    /// The name written in front of every ticket it seals.
    pub name: [u8; NAME_LEN],
    /// The AES-256-GCM key.
    pub secret: [u8; SECRET_LEN],
    /// When it started sealing tickets (Unix seconds).
    pub created: u64,
}

impl std::fmt::Debug for ExportedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportedKey")
            .field("name", &hex(&self.name))
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// A listener's keys as they are handed over: its identity ([`identity`]) and its keys, the
/// current one first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedKeys {
    /// The listener's identity.
    pub listener: String,
    /// Current, then previous (if any).
    pub keys: Vec<ExportedKey>,
}

/// Lower-case hex of `bytes` (the wire form of names and secrets).
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The bytes of `text` in hex, exactly `N` of them.
#[must_use]
pub fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        *o = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// One key: what seals and opens with it.
struct Key {
    exported: ExportedKey,
    aead: LessSafeKey,
}

impl Key {
    fn generate(created: u64) -> Option<Key> {
        let rng = SystemRandom::new();
        let mut name = [0u8; NAME_LEN];
        let mut secret = [0u8; SECRET_LEN];
        rng.fill(&mut name).ok()?;
        rng.fill(&mut secret).ok()?;
        Key::from_exported(ExportedKey {
            name,
            secret,
            created,
        })
    }

    fn from_exported(exported: ExportedKey) -> Option<Key> {
        let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &exported.secret).ok()?);
        Some(Key { exported, aead })
    }

    fn seal(&self, state: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut ticket = Vec::with_capacity(NAME_LEN + NONCE_LEN + state.len() + TAG_LEN);
        ticket.extend_from_slice(&self.exported.name);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(state);
        let tag = self
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&self.exported.name),
                &mut ticket[NAME_LEN + NONCE_LEN..],
            )
            .ok()?;
        ticket.extend_from_slice(tag.as_ref());
        Some(ticket)
    }

    /// The state in `ticket` when this key sealed it; `None` for another key's ticket or one
    /// that was changed.
    fn open(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let (name, rest) = ticket.split_at_checked(NAME_LEN)?;
        if name != self.exported.name || rest.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain_len = self
            .aead
            .open_in_place(nonce, Aad::from(name), &mut buf)
            .ok()?
            .len();
        buf.truncate(plain_len);
        Some(buf)
    }
}

struct State {
    current: Key,
    previous: Option<Key>,
}

impl State {
    fn due(&self, now: u64) -> bool {
        now >= self.current.exported.created.saturating_add(ROTATION)
    }
}

/// One listener's ticket keys: the current key and the previous one, rotated every
/// [`ROTATION`]. Shared by every worker and every config generation that keeps the listener.
pub struct TicketKeys {
    state: RwLock<State>,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKeys").finish_non_exhaustive()
    }
}

impl TicketKeys {
    /// A fresh key, made now. `None` when the system's random source fails.
    #[must_use]
    pub fn generate() -> Option<TicketKeys> {
        Some(TicketKeys {
            state: RwLock::new(State {
                current: Key::generate(unix_now())?,
                previous: None,
            }),
        })
    }

    /// The keys another process exported (current first). `None` when there is none or one
    /// cannot be used.
    #[must_use]
    pub fn from_exported(keys: &[ExportedKey]) -> Option<TicketKeys> {
        let mut keys = keys.iter().cloned().map(Key::from_exported);
        let current = keys.next()??;
        let previous = match keys.next() {
            Some(k) => Some(k?),
            None => None,
        };
        Some(TicketKeys {
            state: RwLock::new(State { current, previous }),
        })
    }

    /// The keys, current first, for a new process.
    #[must_use]
    pub fn export(&self) -> Vec<ExportedKey> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        std::iter::once(&state.current)
            .chain(state.previous.as_ref())
            .map(|k| k.exported.clone())
            .collect()
    }

    /// The state, rotated first when the current key is older than [`ROTATION`] at `now`.
    fn at(&self, now: u64) -> std::sync::RwLockReadGuard<'_, State> {
        {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            if !state.due(now) {
                return state;
            }
        }
        if let Some(next) = Key::generate(now) {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            if state.due(now) {
                let old = std::mem::replace(&mut state.current, next);
                // After a long quiet spell the old key is past its own rotation too: gone.
                state.previous =
                    (now < old.exported.created.saturating_add(2 * ROTATION)).then_some(old);
            }
        }
        // Without randomness the current key seals on (a ticket nobody can forge, just older).
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn seal_at(&self, now: u64, state: &[u8]) -> Option<Vec<u8>> {
        self.at(now).current.seal(state)
    }

    fn open_at(&self, now: u64, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() > MAX_TICKET {
            return None;
        }
        let state = self.at(now);
        state
            .current
            .open(ticket)
            .or_else(|| state.previous.as_ref()?.open(ticket))
    }
}

impl rustls::server::ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal_at(unix_now(), plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open_at(unix_now(), cipher)
    }
}

/// Every listener's keys, by identity: what [`for_listener`] hands out and [`export`] sends.
static REGISTRY: Mutex<Vec<(String, Arc<TicketKeys>)>> = Mutex::new(Vec::new());

fn registry() -> std::sync::MutexGuard<'static, Vec<(String, Arc<TicketKeys>)>> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A listener's identity for its ticket keys: its name and the settings that decide which
/// clients it admits. Plain text (not a hash), so that two builds agree on it.
#[must_use]
pub fn identity(listener: &str, tls: &ListenerTls) -> String {
    let version = match tls.min_version {
        TlsVersion::Tls12 => "1.2",
        TlsVersion::Tls13 => "1.3",
    };
    let mut identity = format!(
        "{listener}\nclient_ca={:?}\nrequire_client_certificate={}\nverify_subject_alt_names={:?}\nmin_version={version}",
        tls.client_ca.as_ref().map(Pem::identity),
        tls.require_client_certificate,
        tls.verify_subject_alt_names
    );
    // A TLS 1.2 resumption makes no new key exchange: a session from before a narrower group
    // list must not resume under it. Only when set, so that identities of listeners without
    // the field stay what earlier builds hand over in an upgrade.
    if !tls.ecdh_curves.is_empty() {
        identity.push_str(&format!("\necdh_curves={:?}", tls.ecdh_curves));
    }
    identity
}

/// The ticket keys of the listener with `identity`: the ones it had (in this process or, after
/// an upgrade, in the previous one), else new ones. Called while building contexts, never
/// per handshake.
pub fn for_listener(identity: &str) -> Result<Arc<TicketKeys>, String> {
    let mut all = registry();
    if let Some((_, keys)) = all.iter().find(|(id, _)| id == identity) {
        return Ok(keys.clone());
    }
    let keys = Arc::new(
        TicketKeys::generate().ok_or("cannot make a session ticket key (no random source)")?,
    );
    all.push((identity.to_owned(), keys.clone()));
    Ok(keys)
}

/// Forgets the keys of listeners whose identity is not in `keep` (a reload removed or changed
/// them): they are not handed over, and connections of the draining generation keep theirs.
pub fn retain(keep: &[String]) {
    registry().retain(|(id, _)| keep.contains(id));
}

/// Every listener's keys, for the control socket's offer.
#[must_use]
pub fn export() -> Vec<ExportedKeys> {
    registry()
        .iter()
        .map(|(id, keys)| ExportedKeys {
            listener: id.clone(),
            keys: keys.export(),
        })
        .collect()
}

/// Takes the previous process's keys (before any TLS context is built): its listeners resume
/// the tickets it issued. Keys that cannot be used are skipped; their listeners start new
/// ones. Returns how many listeners' keys were adopted.
pub fn adopt(exported: &[ExportedKeys]) -> usize {
    let mut all = registry();
    let mut adopted = 0;
    for e in exported {
        let Some(keys) = TicketKeys::from_exported(&e.keys) else {
            continue;
        };
        all.retain(|(id, _)| *id != e.listener);
        all.push((e.listener.clone(), Arc::new(keys)));
        adopted += 1;
    }
    adopted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_with_the_key_that_sealed_it_and_nothing_else() {
        let keys = TicketKeys::generate().unwrap();
        let other = TicketKeys::generate().unwrap();
        let now = unix_now();
        let ticket = keys.seal_at(now, b"session state").unwrap();
        assert_eq!(keys.open_at(now, &ticket).unwrap(), b"session state");
        assert_eq!(other.open_at(now, &ticket), None);
        // Any changed byte (name, nonce, sealed state, tag) is refused.
        for i in 0..ticket.len() {
            let mut bad = ticket.clone();
            bad[i] ^= 1;
            assert_eq!(keys.open_at(now, &bad), None, "byte {i}");
        }
        assert_eq!(keys.open_at(now, &ticket[..NAME_LEN + 3]), None);
        assert_eq!(keys.open_at(now, &[]), None);
    }

    #[test]
    fn exported_keys_open_the_exporters_tickets() {
        let keys = TicketKeys::generate().unwrap();
        let now = unix_now();
        let ticket = keys.seal_at(now, b"state").unwrap();
        let exported = keys.export();
        // Through the wire form (hex), as the control socket carries it.
        let wire: Vec<ExportedKey> = exported
            .iter()
            .map(|k| ExportedKey {
                name: unhex(&hex(&k.name)).unwrap(),
                secret: unhex(&hex(&k.secret)).unwrap(),
                created: k.created,
            })
            .collect();
        assert_eq!(wire, exported);
        let adopted = TicketKeys::from_exported(&wire).unwrap();
        assert_eq!(adopted.open_at(now, &ticket).unwrap(), b"state");
        // And the other way round: a ticket of the new process opens in the old one.
        let back = adopted.seal_at(now, b"back").unwrap();
        assert_eq!(keys.open_at(now, &back).unwrap(), b"back");
        assert!(!format!("{:?}", exported[0]).contains(&hex(&exported[0].secret)));
    }

    #[test]
    fn rotation_keeps_one_previous_key() {
        let keys = TicketKeys::generate().unwrap();
        let t0 = keys.export()[0].created;
        let first = keys.seal_at(t0, b"first").unwrap();
        // Rotated after 6 h: new tickets under a new key, the first still opens.
        let t1 = t0 + ROTATION;
        let second = keys.seal_at(t1, b"second").unwrap();
        assert_ne!(first[..NAME_LEN], second[..NAME_LEN]);
        assert_eq!(keys.export().len(), 2);
        assert_eq!(keys.open_at(t1, &first).unwrap(), b"first");
        // Another 6 h: the first key is gone, the second still opens.
        let t2 = t1 + ROTATION;
        assert_eq!(keys.open_at(t2, &first), None);
        assert_eq!(keys.open_at(t2, &second).unwrap(), b"second");
        // The handed-over keys rotate from their creation time, not from the adoption.
        let adopted = TicketKeys::from_exported(&keys.export()).unwrap();
        assert_eq!(adopted.open_at(t2, &second).unwrap(), b"second");
        assert_eq!(adopted.open_at(t2 + 2 * ROTATION, &second), None);
    }

    /// New client CA content under the same SDS secret name is a new identity: the listener
    /// gets new ticket keys, so a client of a removed CA cannot resume (issue 13, M1).
    #[test]
    fn a_client_ca_rotated_under_the_same_secret_name_is_a_new_identity() {
        use sluice_core::config::tls::{CertificateFiles, DEFAULT_HANDSHAKE_TIMEOUT};
        let tls = |ca: &str| ListenerTls {
            certificates: vec![CertificateFiles {
                cert_chain: Pem::File("a.pem".into()),
                private_key: Pem::File("a.key".into()),
            }],
            alpn: Vec::new(),
            client_ca: Some(Pem::Inline {
                secret: Some("root-ca".into()),
                pem: ca.into(),
            }),
            require_client_certificate: true,
            verify_subject_alt_names: Vec::new(),
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
            ecdh_curves: Vec::new(),
            cipher_suites: Vec::new(),
            prefer_client_ciphers: false,
            session_tickets: true,
            session_cache: true,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        };
        let old = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let new = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n";
        assert_eq!(identity("in", &tls(old)), identity("in", &tls(old)));
        assert_ne!(identity("in", &tls(old)), identity("in", &tls(new)));
        assert!(identity("in", &tls(old)).contains("root-ca"));
    }

    #[test]
    fn hex_round_trips_and_refuses_bad_text() {
        assert_eq!(unhex::<2>("0aff"), Some([0x0a, 0xff]));
        assert_eq!(unhex::<2>("0aFF"), Some([0x0a, 0xff]));
        assert_eq!(unhex::<2>("0af"), None);
        assert_eq!(unhex::<2>("0afg"), None);
        assert_eq!(unhex::<1>("+1"), None);
        assert_eq!(hex(&[0, 1, 0xab]), "0001ab");
    }
}
