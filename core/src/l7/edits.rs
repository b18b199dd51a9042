//! The header edits a proxy makes to the messages it forwards, as a neutral list that any codec
//! applies (HTTP/1.1's head writer today: [`crate::http1::HeadEdits`] takes
//! [`HeaderEdits::removals`] and [`HeaderEdits::additions`]; HTTP/2 next).
//!
//! What it owns: the request edits of one hop — `x-forwarded-for` (the client's address
//! appended), `x-forwarded-client-cert` as [`super::xfcc`] decides (removed by Envoy's default
//! `SANITIZE`), `x-request-id` (generated when the request has none, as a UUID v4), `host` when
//! the request had none, `x-forwarded-proto: https` (replacing the client's) when the request
//! came over TLS the proxy terminated, then the route's `request_headers_to_remove` / `_to_add` — and the
//! response edits (the route's `response_headers_to_remove` / `_to_add`). A route's field that
//! overwrites (`append_action: overwrite_if_exists_or_add`, the file's default) replaces the
//! fields of its name — the message's and those added before it; one that appends
//! (`append_if_exists_or_add`, Envoy's default) goes out after them, which stay; `add_if_absent`
//! appends only when the message (as the edits before it leave it) has no field of its name,
//! `overwrite_if_exists` replaces only when it has one.
//!
//! What it does not own: hop-by-hop fields (`connection` and the fields it names,
//! `keep-alive`, `te`, `upgrade`, `proxy-connection`) are connection-level, so each
//! codec drops them in the same pass that writes the head (HTTP/1.1's writer does; HTTP/2 has
//! none to drop), and framing fields stay the codec's.
//!
//! ## Invariants
//!
//! - No heap allocation for up to [`INLINE_EDITS`] removals and as many additions (routes
//!   rarely have more); past that the list moves to the heap, in order. The inline slots are
//!   written only when used (a new list is two lengths, not 48 slots filled).
//! - Additions keep their order: the first added, the first written.
//! - A field [`HeaderEdits::set`] goes out once: it replaces the message's fields of its name
//!   and the additions made before it. A field [`HeaderEdits::append`]ed removes nothing.

use crate::config::header_format::FormatContext;
use crate::config::http::{AppendAction, HeaderValue};

/// Edits of each kind kept in fixed slots before spilling to the heap.
pub const INLINE_EDITS: usize = 24;

/// Up to [`INLINE_EDITS`] items inline, the rest on the heap (all of them, in order). The
/// inline slots are not written until used: a `SmallVec`, whose empty list is a length, where
/// an array of empty items cost its fill (~300 instructions per request for the two lists, made
/// twice per request).
#[derive(Debug)]
struct Slots<T: Copy>(smallvec::SmallVec<[T; INLINE_EDITS]>);

impl<T: Copy> Slots<T> {
    fn new() -> Self {
        Slots(smallvec::SmallVec::new())
    }

    fn push(&mut self, item: T) {
        self.0.push(item);
    }

    /// Keeps the items `keep` accepts, in order.
    fn retain(&mut self, keep: impl Fn(&T) -> bool) {
        self.0.retain(|t| keep(t));
    }

    fn as_slice(&self) -> &[T] {
        &self.0
    }
}

/// A list of header edits: names to remove, then fields to add in order.
#[derive(Debug)]
pub struct HeaderEdits<'a> {
    remove: Slots<&'a str>,
    add: Slots<(&'a str, &'a [u8])>,
}

impl Default for HeaderEdits<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> HeaderEdits<'a> {
    /// No edit.
    #[must_use]
    pub fn new() -> Self {
        HeaderEdits {
            remove: Slots::new(),
            add: Slots::new(),
        }
    }

    /// Drops every field named `name` (ASCII case-insensitive; lowercase by convention).
    pub fn remove(&mut self, name: &'a str) {
        self.remove.push(name);
    }

    /// Adds `name: value` after the message's own fields (keeping any of the same name).
    pub fn append(&mut self, name: &'a str, value: &'a [u8]) {
        self.add.push((name, value));
    }

    /// Replaces the fields named `name` with `name: value`: the message's own, and any an
    /// earlier edit added (a route's `x-envoy-attempt-count` or `grpc-timeout` gives way to the
    /// proxy's, which is set last; of two route fields of one name, the last wins).
    pub fn set(&mut self, name: &'a str, value: &'a [u8]) {
        self.remove(name);
        self.add.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.append(name, value);
    }

    /// The names to drop.
    #[must_use]
    pub fn removals(&self) -> &[&'a str] {
        self.remove.as_slice()
    }

    /// The fields to add, in order.
    #[must_use]
    pub fn additions(&self) -> &[(&'a str, &'a [u8])] {
        self.add.as_slice()
    }

    /// Whether the message will carry a field named `name` once the edits so far apply: one
    /// was added, or the message has one (`in_message`) that no edit removes.
    fn will_have(&self, name: &str, in_message: &dyn Fn(&str) -> bool) -> bool {
        self.additions()
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
            || (!self.removals().iter().any(|n| n.eq_ignore_ascii_case(name)) && in_message(name))
    }

    /// The route's edits: its removals, then its additions, each [`set`](Self::set) or
    /// [`append`](Self::append)ed as its `append_action` says. The conditional actions
    /// (`add_if_absent`, `overwrite_if_exists`) look at the message as the edits so far leave
    /// it: `in_message` says whether the message as received has a field of a name (asked
    /// only for those actions, so a route without them never looks).
    ///
    /// An entry with variables takes its value from `rendered` (which must have rendered
    /// this `add` list for this message); one whose value renders empty adds nothing, as
    /// Envoy's does.
    pub fn route(
        &mut self,
        remove: &'a [String],
        add: &'a [HeaderValue],
        in_message: &dyn Fn(&str) -> bool,
        rendered: &'a Rendered,
    ) {
        self.route_removals(remove);
        self.route_additions(add, in_message, rendered);
    }

    /// The first half of [`route`](Self::route): the route's removals.
    pub fn route_removals(&mut self, remove: &'a [String]) {
        for name in remove {
            self.remove(name);
        }
    }

    /// The first field named `name` of the message once the edits so far apply (what a
    /// `%REQ(name)%` sees, as Envoy renders against the request as edited): the message's own
    /// (`in_message`) unless an edit removes the name — the message's fields come first —
    /// else the first one added.
    pub fn value_of<'m>(
        &'m self,
        name: &str,
        in_message: &dyn Fn(&str) -> Option<&'m [u8]>,
    ) -> Option<&'m [u8]>
    where
        'a: 'm,
    {
        if !self.removals().iter().any(|n| n.eq_ignore_ascii_case(name))
            && let Some(v) = in_message(name)
        {
            return Some(v);
        }
        self.additions()
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The second half of [`route`](Self::route): the route's additions (see there).
    pub fn route_additions(
        &mut self,
        add: &'a [HeaderValue],
        in_message: &dyn Fn(&str) -> bool,
        rendered: &'a Rendered,
    ) {
        let mut formatted = 0;
        for h in add {
            let value = if h.format.is_some() {
                let value = rendered.value(formatted);
                formatted += 1;
                debug_assert!(value.is_some(), "the list was rendered");
                match value {
                    Some(v) if !v.is_empty() => v,
                    _ => continue,
                }
            } else {
                h.value.as_bytes()
            };
            let name = h.name.as_str();
            match h.append_action {
                AppendAction::OverwriteIfExistsOrAdd => self.set(name, value),
                AppendAction::AppendIfExistsOrAdd => self.append(name, value),
                AppendAction::AddIfAbsent => {
                    if !self.will_have(name, in_message) {
                        self.append(name, value);
                    }
                }
                AppendAction::OverwriteIfExists => {
                    if self.will_have(name, in_message) {
                        self.set(name, value);
                    }
                }
            }
        }
    }
}

/// The values of a list's entries that have variables, rendered for one message, in the
/// list's order (one buffer and one list of ends, reused across messages: no allocation once
/// warm, none at all for a list without variables).
#[derive(Debug, Default)]
pub struct Rendered {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Rendered {
    /// Renders the entries of `add` that have variables, for the message `ctx` describes
    /// (replacing what was rendered before).
    pub fn render(&mut self, add: &[HeaderValue], ctx: &FormatContext<'_>) {
        self.buf.clear();
        self.ends.clear();
        for f in add.iter().filter_map(|h| h.format.as_ref()) {
            f.render(ctx, &mut self.buf);
            self.ends.push(self.buf.len());
        }
    }

    /// Empties it (for a list known to have no variables, nothing to do).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }

    /// Frees its buffers when they hold more than `kept` bytes (what a rendering of a large
    /// request header left behind), so that a value kept for later requests stays small.
    pub fn shed(&mut self, kept: usize) {
        if self.buf.capacity() > kept {
            self.buf = Vec::new();
        }
        if self.ends.capacity() * std::mem::size_of::<usize>() > kept {
            self.ends = Vec::new();
        }
    }

    /// Bytes its buffers hold (rendered values and their bounds).
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.buf.capacity() + self.ends.capacity() * std::mem::size_of::<usize>()
    }

    /// The `i`-th rendered value.
    fn value(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.buf[start..end])
    }
}

/// Whether any entry of `add` has variables (what needs a [`Rendered::render`]).
#[must_use]
pub fn has_variables(add: &[HeaderValue]) -> bool {
    add.iter().any(|h| h.format.is_some())
}

/// What the request edits of one hop need to know about the request and the connection.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// `x-forwarded-for` as it goes upstream (see [`forwarded_for`]).
    pub forwarded_for: &'a [u8],
    /// A generated request id, when the request had no `x-request-id` (see
    /// [`format_request_id`]).
    pub generated_id: Option<&'a [u8]>,
    /// A `host` for a request that had none (an HTTP/1.0 request going out as HTTP/1.1).
    pub missing_host: Option<&'a [u8]>,
    /// `x-forwarded-proto` set by the proxy (replacing the client's): `https` for a request
    /// that came over TLS the proxy terminated; `None` leaves the request's own.
    pub forwarded_proto: Option<&'a [u8]>,
    /// What becomes of `x-forwarded-client-cert` ([`super::xfcc::edit`]).
    pub client_cert: super::xfcc::Edit<'a>,
}

/// The edits of a request forwarded upstream: `x-forwarded-for`, `x-request-id`, `host` when
/// missing, then the route's (see the module doc).
pub fn request_edits<'a>(
    edits: &mut HeaderEdits<'a>,
    facts: &RequestFacts<'a>,
    route_remove: &'a [String],
    route_add: &'a [HeaderValue],
    in_message: &dyn Fn(&str) -> bool,
    rendered: &'a Rendered,
) {
    request_edits_before_additions(edits, facts, route_remove);
    edits.route_additions(route_add, in_message, rendered);
}

/// The edits of a request up to the route's additions: the proxy's and the route's removals
/// — what the route's values with variables are rendered against ([`HeaderEdits::value_of`]),
/// as Envoy's are. [`HeaderEdits::route_additions`] completes them.
pub fn request_edits_before_additions<'a>(
    edits: &mut HeaderEdits<'a>,
    facts: &RequestFacts<'a>,
    route_remove: &'a [String],
) {
    edits.set("x-forwarded-for", facts.forwarded_for);
    // Envoy's default `forward_client_cert_details: SANITIZE` removes it: a client's own
    // `x-forwarded-client-cert` never reaches the application, which would take it for the
    // identity a proxy verified (a plaintext client could claim any SPIFFE id).
    match facts.client_cert {
        super::xfcc::Edit::Remove => edits.remove(super::xfcc::XFCC),
        super::xfcc::Edit::Keep => {}
        super::xfcc::Edit::Set(v) => edits.set(super::xfcc::XFCC, v),
    }
    if let Some(id) = facts.generated_id {
        edits.append("x-request-id", id);
    }
    if let Some(host) = facts.missing_host {
        edits.append("host", host);
    }
    if let Some(proto) = facts.forwarded_proto {
        edits.set("x-forwarded-proto", proto);
    }
    edits.route_removals(route_remove);
}

/// `x-forwarded-for` with the client's address appended to the request's own (if it had one),
/// built in `buf` (reused across requests) only when there is something to append to.
pub fn forwarded_for<'a>(
    existing: Option<&[u8]>,
    client_ip: &'a [u8],
    buf: &'a mut Vec<u8>,
) -> &'a [u8] {
    match existing {
        Some(old) => {
            buf.clear();
            buf.extend_from_slice(old);
            buf.extend_from_slice(b", ");
            buf.extend_from_slice(client_ip);
            buf
        }
        None => client_ip,
    }
}

/// Formats a UUID v4 (RFC 9562) from two random words into `out`.
pub fn format_request_id(a: u64, b: u64, out: &mut [u8; 36]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x4000;
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let bytes: [u8; 16] = {
        let mut x = [0u8; 16];
        x[..8].copy_from_slice(&a.to_be_bytes());
        x[8..].copy_from_slice(&b.to_be_bytes());
        x
    };
    let mut i = 0;
    for (k, byte) in bytes.iter().enumerate() {
        if matches!(k, 4 | 6 | 8 | 10) {
            out[i] = b'-';
            i += 1;
        }
        out[i] = HEX[usize::from(byte >> 4)];
        out[i + 1] = HEX[usize::from(byte & 0xf)];
        i += 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For lists without variables.
    static NONE_RENDERED: Rendered = Rendered {
        buf: Vec::new(),
        ends: Vec::new(),
    };

    fn hv(name: &str, value: &str) -> HeaderValue {
        HeaderValue {
            name: name.into(),
            value: value.into(),
            format: crate::config::header_format::HeaderFormat::parse(value).unwrap(),
            append_action: AppendAction::OverwriteIfExistsOrAdd,
        }
    }

    fn appended(name: &str, value: &str) -> HeaderValue {
        HeaderValue {
            append_action: AppendAction::AppendIfExistsOrAdd,
            ..hv(name, value)
        }
    }

    /// What a `%REQ(name)%` sees: the request as the edits so far leave it — a field the
    /// proxy set or added gives its new value, a removed one nothing, the rest the message's.
    #[test]
    fn value_of_sees_the_request_as_edited() {
        let msg = |name: &str| -> Option<&'static [u8]> {
            match name {
                "x-forwarded-for" => Some(b"1.1.1.1"),
                "x-user" => Some(b"admin"),
                "x-in" => Some(b"kept"),
                _ => None,
            }
        };
        let facts = RequestFacts {
            forwarded_for: b"1.1.1.1, 10.0.0.1",
            generated_id: Some(b"the-id"),
            missing_host: None,
            forwarded_proto: None,
            client_cert: crate::l7::xfcc::Edit::Keep,
        };
        let remove = vec!["x-user".to_owned()];
        let get = |e: &HeaderEdits<'_>, name: &str| {
            e.value_of(name, &|n: &str| msg(n)).map(<[u8]>::to_vec)
        };
        let mut edits = HeaderEdits::new();
        request_edits_before_additions(&mut edits, &facts, &remove);
        assert_eq!(get(&edits, "x-request-id"), Some(b"the-id".to_vec()));
        assert_eq!(
            get(&edits, "x-forwarded-for"),
            Some(b"1.1.1.1, 10.0.0.1".to_vec())
        );
        assert_eq!(get(&edits, "x-user"), None);
        assert_eq!(get(&edits, "x-in"), Some(b"kept".to_vec()));
        assert_eq!(get(&edits, "x-none"), None);
    }

    /// An appending route field leaves the message's own fields of its name (no removal) and
    /// the ones added before it; several of one name each go out, in order; an overwriting one
    /// removes the name and what was added under it.
    #[test]
    fn route_appends_keep_fields_and_overwrites_replace_them() {
        let add = vec![
            appended("x-a", "2"),
            hv("x-b", "new"),
            appended("X-A", "3"),
            appended("x-forwarded-for", "10.9.9.9"),
        ];
        let mut edits = HeaderEdits::new();
        edits.set("x-forwarded-for", b"10.0.0.1");
        edits.route(&[], &add, &|_| false, &NONE_RENDERED);
        assert_eq!(edits.removals(), ["x-forwarded-for", "x-b"]);
        assert_eq!(
            edits.additions(),
            [
                ("x-forwarded-for", &b"10.0.0.1"[..]),
                ("x-a", b"2"),
                ("x-b", b"new"),
                ("X-A", b"3"),
                ("x-forwarded-for", b"10.9.9.9"),
            ]
        );
        // Appends past the inline slots spill in order, with no removal.
        let many: Vec<HeaderValue> = (0..INLINE_EDITS + 3)
            .map(|i| appended("x-many", &i.to_string()))
            .collect();
        let mut edits = HeaderEdits::new();
        edits.route(&[], &many, &|_| false, &NONE_RENDERED);
        assert!(edits.removals().is_empty());
        let values: Vec<&[u8]> = edits.additions().iter().map(|(_, v)| *v).collect();
        let want: Vec<String> = (0..INLINE_EDITS + 3).map(|i| i.to_string()).collect();
        assert_eq!(
            values,
            want.iter().map(String::as_bytes).collect::<Vec<_>>()
        );
    }

    fn with(name: &str, value: &str, append_action: AppendAction) -> HeaderValue {
        HeaderValue {
            append_action,
            ..hv(name, value)
        }
    }

    /// `add_if_absent` adds only when the message — as received, less removals, plus what
    /// earlier edits added — has no field of its name; `overwrite_if_exists` replaces only
    /// when it has one. The message is asked only about those entries' names.
    #[test]
    fn conditional_actions_look_at_the_message_as_edited_so_far() {
        let add = vec![
            with("x-present", "new", AppendAction::AddIfAbsent),
            with("x-absent", "new", AppendAction::AddIfAbsent),
            with("x-removed", "new", AppendAction::AddIfAbsent),
            with("x-proxy", "new", AppendAction::AddIfAbsent),
            with("X-Present2", "new", AppendAction::OverwriteIfExists),
            with("x-absent2", "new", AppendAction::OverwriteIfExists),
            with("x-removed2", "new", AppendAction::OverwriteIfExists),
            with("x-proxy2", "new", AppendAction::OverwriteIfExists),
        ];
        let remove = vec!["x-removed".to_string(), "x-removed2".to_string()];
        let asked = std::cell::RefCell::new(Vec::new());
        let in_message = |name: &str| {
            asked.borrow_mut().push(name.to_owned());
            ["x-present", "x-present2", "x-removed", "x-removed2"]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name))
        };
        let mut edits = HeaderEdits::new();
        edits.append("x-proxy", b"p");
        edits.set("x-proxy2", b"p");
        edits.route(&remove, &add, &in_message, &NONE_RENDERED);
        assert_eq!(
            edits.removals(),
            [
                "x-proxy2",
                "x-removed",
                "x-removed2",
                "X-Present2",
                "x-proxy2"
            ]
        );
        assert_eq!(
            edits.additions(),
            [
                ("x-proxy", &b"p"[..]),
                ("x-absent", b"new"),
                ("x-removed", b"new"),
                ("X-Present2", b"new"),
                ("x-proxy2", b"new"),
            ]
        );
        // Plain actions never ask.
        asked.borrow_mut().clear();
        let plain = [hv("x-a", "1"), appended("x-b", "2")];
        let mut edits = HeaderEdits::new();
        edits.route(&[], &plain, &in_message, &NONE_RENDERED);
        assert!(asked.borrow().is_empty());
    }

    /// Entries with variables take their rendered values, in order among the plain ones; one
    /// that renders empty (a request header the request lacks) adds nothing, and a plain
    /// entry's value goes out as written.
    #[test]
    fn variables_are_rendered_per_message() {
        let add = vec![
            hv("x-client", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
            hv("x-plain", "as-is"),
            hv("x-missing", "%REQ(x-absent)%"),
            appended("x-proto", "via %PROTOCOL%, 100%%"),
        ];
        let lookup = |_: &str| -> Option<&[u8]> { None };
        let ctx = FormatContext {
            downstream_remote: "10.1.2.3:4444".parse().unwrap(),
            protocol: "HTTP/2",
            hostname: "h",
            request_header: &lookup,
            request_line: Default::default(),
        };
        let mut rendered = Rendered::default();
        rendered.render(&add, &ctx);
        let mut edits = HeaderEdits::new();
        edits.route(&[], &add, &|_| false, &rendered);
        assert_eq!(
            edits.additions(),
            [
                ("x-client", &b"10.1.2.3"[..]),
                ("x-plain", b"as-is"),
                ("x-proto", b"via HTTP/2, 100%"),
            ]
        );
        assert!(has_variables(&add));
        assert!(!has_variables(&[hv("x", "100 percent")]));
    }

    /// A field set replaces what earlier edits added under its name (any case), so it goes out
    /// once; other additions keep their order, inline or spilled.
    #[test]
    fn set_replaces_earlier_additions_of_its_name() {
        let route = vec![
            hv("x-envoy-attempt-count", "9"),
            hv("x-team", "core"),
            hv("Grpc-Timeout", "1S"),
        ];
        let mut edits = HeaderEdits::new();
        edits.route(&[], &route, &|_| false, &NONE_RENDERED);
        edits.set("x-envoy-attempt-count", b"1");
        edits.set("grpc-timeout", b"500m");
        assert_eq!(
            edits.additions(),
            [
                ("x-team", &b"core"[..]),
                ("x-envoy-attempt-count", &b"1"[..]),
                ("grpc-timeout", &b"500m"[..]),
            ]
        );
        // Spilled past the inline slots, and back.
        let names: Vec<String> = (0..INLINE_EDITS + 4).map(|i| format!("x-{i}")).collect();
        let mut edits = HeaderEdits::new();
        for n in &names {
            edits.append(n, b"v");
        }
        edits.set("x-0", b"last");
        assert_eq!(edits.additions().len(), INLINE_EDITS + 4);
        assert_eq!(edits.additions().last(), Some(&("x-0", &b"last"[..])));
        for n in &names[1..6] {
            edits.set(n, b"again");
        }
        assert_eq!(edits.additions().len(), INLINE_EDITS + 4);
        assert_eq!(edits.additions()[0], ("x-6", &b"v"[..]));
        let mut edits = HeaderEdits::new();
        for n in &names {
            edits.append(n, b"v");
            edits.append("x-dup", b"d");
        }
        edits.set("x-dup", b"once");
        assert_eq!(edits.additions().len(), names.len() + 1);
        assert_eq!(
            edits
                .additions()
                .iter()
                .filter(|(n, _)| *n == "x-dup")
                .count(),
            1
        );
        assert_eq!(edits.additions()[0], ("x-0", &b"v"[..]));
        // Spilled, then back within the inline slots.
        let mut edits = HeaderEdits::new();
        edits.append("x-first", b"v");
        for _ in 0..INLINE_EDITS {
            edits.append("x-dup", b"d");
        }
        edits.set("x-dup", b"once");
        assert_eq!(
            edits.additions(),
            [("x-first", &b"v"[..]), ("x-dup", &b"once"[..])]
        );
    }

    #[test]
    fn request_edits_in_order_with_replacements() {
        let remove = vec!["x-debug".to_string()];
        let add = vec![hv("x-env", "prod"), hv("x-team", "core")];
        let mut edits = HeaderEdits::new();
        request_edits(
            &mut edits,
            &RequestFacts {
                forwarded_for: b"10.0.0.1, 10.0.0.2",
                generated_id: Some(b"id"),
                missing_host: Some(b"app"),
                forwarded_proto: Some(b"https"),
                client_cert: super::super::xfcc::Edit::Remove,
            },
            &remove,
            &add,
            &|_| false,
            &NONE_RENDERED,
        );
        assert_eq!(
            edits.removals(),
            [
                "x-forwarded-for",
                "x-forwarded-client-cert",
                "x-forwarded-proto",
                "x-debug",
                "x-env",
                "x-team"
            ]
        );
        assert_eq!(
            edits.additions(),
            [
                ("x-forwarded-for", &b"10.0.0.1, 10.0.0.2"[..]),
                ("x-request-id", b"id"),
                ("host", b"app"),
                ("x-forwarded-proto", b"https"),
                ("x-env", b"prod"),
                ("x-team", b"core"),
            ]
        );
    }

    #[test]
    fn edit_lists_spill_past_the_inline_capacity() {
        let names: Vec<String> = (0..INLINE_EDITS + 5).map(|i| format!("x-{i}")).collect();
        let mut edits = HeaderEdits::new();
        for (i, n) in names.iter().enumerate() {
            edits.remove(n);
            if i < 3 {
                edits.append(n, b"v");
            }
        }
        let removed: Vec<&str> = edits.removals().to_vec();
        assert_eq!(
            removed,
            names.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert_eq!(edits.additions().len(), 3);
    }

    #[test]
    fn forwarded_for_appends_the_client() {
        let mut buf = Vec::new();
        assert_eq!(forwarded_for(None, b"10.0.0.9", &mut buf), b"10.0.0.9");
        assert_eq!(
            forwarded_for(Some(b"1.2.3.4"), b"10.0.0.9", &mut buf),
            b"1.2.3.4, 10.0.0.9"
        );
    }

    #[test]
    fn request_ids_are_uuid_v4_shaped() {
        let mut id = [0u8; 36];
        format_request_id(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210, &mut id);
        let text = std::str::from_utf8(&id).unwrap();
        assert_eq!(text, "01234567-89ab-4def-bedc-ba9876543210");
    }
}

/// Request trailers against the proxy's own fields: kept apart from `tests`, which others edit.
#[cfg(test)]
mod trailer_tests {
    use super::*;
    use crate::http1::{TRAILER_FORBIDDEN, write_trailers};

    /// No field the proxy's edits set or remove on a request (all of them at once here) can
    /// come back through the request's trailer section: the trailer writer drops each, and
    /// keeps a field the proxy does not own.
    #[test]
    fn a_request_trailer_cannot_carry_a_field_the_proxy_sets() {
        let mut edits = HeaderEdits::new();
        request_edits_before_additions(
            &mut edits,
            &RequestFacts {
                forwarded_for: b"10.0.0.1",
                generated_id: Some(b"id"),
                missing_host: Some(b"app"),
                forwarded_proto: Some(b"https"),
                client_cert: crate::l7::xfcc::Edit::Set(b"By=spiffe://x"),
            },
            &[],
        );
        // The retry and tracing fields the runtime sets besides these.
        let others = ["x-envoy-attempt-count", "grpc-timeout", "traceparent", "b3"];
        let owned: Vec<&str> = edits
            .additions()
            .iter()
            .map(|&(name, _)| name)
            .chain(edits.removals().iter().copied())
            .chain(others)
            .collect();
        assert!(owned.contains(&"x-forwarded-for") && owned.contains(&"x-request-id"));
        let mut section = Vec::new();
        for name in &owned {
            assert!(TRAILER_FORBIDDEN.contains(name), "{name}");
            // As a client may write it.
            section.extend_from_slice(name.to_ascii_uppercase().as_bytes());
            section.extend_from_slice(b": forged\r\n");
        }
        section.extend_from_slice(b"x-checksum: abc\r\n\r\n");
        let mut out = Vec::new();
        write_trailers(&mut out, &section);
        assert_eq!(out, b"x-checksum: abc\r\n\r\n");
    }
}
