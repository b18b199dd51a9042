//! `%VAR%` substitution in the values of added headers (Envoy's custom request / response
//! header variables), parsed once when the config loads (`HeaderValue::format`; here, in the
//! config model, so that the model stays a leaf of the crate)
//! and rendered per message (`l7::edits::Rendered`).
//!
//! What it owns: the grammar — as Envoy's substitution formatter reads it: text, `%%` for a
//! literal `%`, and commands `%NAME%`, `%NAME(ARG)%`, either followed by `:N` before the
//! closing `%` to keep the first N bytes (`NAME` of `A`–`Z`, `0`–`9`, `_`; `ARG` without `)`)
//! —, the variables Sluice knows ([`Var`]), and their rendering from a [`FormatContext`] the
//! runtime fills per message.
//!
//! Invariants:
//! - A value with no `%` has no format ([`HeaderFormat::parse`] gives `None`): it goes out as
//!   written, with no rendering and no buffer.
//! - Parsing never panics on any input; a `%` that starts no valid command, an unknown
//!   variable, or one Sluice does not render is an error naming it (the caller adds the path).
//! - `%REQ()%` reads header fields by name and the pseudo-headers `:authority`, `:path`,
//!   `:method` and `:scheme` from the [`RequestLine`] the runtime gives (an HTTP/1.1 request
//!   has no pseudo-header fields: its request line, `Host` and connection stand for them, as
//!   Envoy's codec makes them); any other `:` name is refused when parsed.
//! - Rendering appends to a caller's buffer (reused across messages) and allocates nothing
//!   else; a variable with no value (a request header the request lacks) renders empty, as
//!   Envoy's header formatter does (it omits empty values rather than writing `-`).

use std::fmt::Write as _;
use std::net::SocketAddr;

/// A parsed header value: literal text and variables, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderFormat {
    segments: Box<[Segment]>,
}

/// One piece of a [`HeaderFormat`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Text as it goes out (`%%` already made `%`).
    Literal(String),
    /// A variable, cut to `max_len` bytes when given (`%VAR:N%`).
    Var {
        /// Which.
        var: Var,
        /// The `:N` suffix.
        max_len: Option<usize>,
    },
}

/// The variables rendered (Envoy's names and formats).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Var {
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`: the client's address and port (`10.0.0.1:5000`,
    /// `[2001:db8::1]:5000`).
    DownstreamRemoteAddress,
    /// `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`: the client's address (`2001:db8::1`).
    DownstreamRemoteAddressWithoutPort,
    /// `%DOWNSTREAM_REMOTE_PORT%`: the client's port.
    DownstreamRemotePort,
    /// `%PROTOCOL%`: `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`, as the request came.
    Protocol,
    /// `%HOSTNAME%`: the host name of the machine Sluice runs on.
    Hostname,
    /// `%REQ(name)%`, `%REQ(name?alternative)%`: the request's first field of the name (or of
    /// the alternative when it has none), empty when it has neither; a name may be one of the
    /// request's pseudo-headers ([`Pseudo`]).
    Req {
        /// What to read.
        name: ReqField,
        /// What to read when `name` has no value.
        alternative: Option<ReqField>,
    },
}

/// What a `%REQ(...)%` reads: a header field or a pseudo-header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReqField {
    /// A field, by its lowercase name.
    Header(String),
    /// A pseudo-header.
    Pseudo(Pseudo),
}

/// The request pseudo-headers `%REQ()%` reads (Envoy's names; for an HTTP/1.1 request, what
/// its request line and `Host` say — see [`RequestLine`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pseudo {
    /// `:authority`.
    Authority,
    /// `:path` (with the query).
    Path,
    /// `:method`.
    Method,
    /// `:scheme`.
    Scheme,
}

impl Pseudo {
    /// Every pseudo-header with its name.
    const ALL: [(&'static str, Pseudo); 4] = [
        (":authority", Pseudo::Authority),
        (":path", Pseudo::Path),
        (":method", Pseudo::Method),
        (":scheme", Pseudo::Scheme),
    ];
}

/// The variables [`HeaderFormat::parse`] accepts, for error messages and docs.
pub const SUPPORTED: &str = "DOWNSTREAM_REMOTE_ADDRESS, DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT, \
     DOWNSTREAM_REMOTE_PORT, PROTOCOL, HOSTNAME, REQ(name), REQ(name?alternative) (a name may be \
     :authority, :path, :method or :scheme)";

/// Envoy's commands that Sluice does not render (refused as unsupported rather than unknown).
const ENVOY_ONLY: &[&str] = &[
    "START_TIME",
    "UPSTREAM_REMOTE_ADDRESS",
    "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "UPSTREAM_REMOTE_PORT",
    "UPSTREAM_LOCAL_ADDRESS",
    "UPSTREAM_HOST",
    "UPSTREAM_CLUSTER",
    "UPSTREAM_METADATA",
    "DOWNSTREAM_LOCAL_ADDRESS",
    "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_LOCAL_PORT",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_PEER_URI_SAN",
    "DOWNSTREAM_LOCAL_URI_SAN",
    "DOWNSTREAM_PEER_SUBJECT",
    "DOWNSTREAM_TLS_VERSION",
    "REQUESTED_SERVER_NAME",
    "RESP",
    "TRAILER",
    "DYNAMIC_METADATA",
    "FILTER_STATE",
    "PER_REQUEST_STATE",
    "ENVIRONMENT",
    "VIRTUAL_CLUSTER_NAME",
    "ROUTE_NAME",
    "REQUEST_ID",
    "CEL",
];

/// What is wrong with a header value's `%` syntax or variable (`at`: the byte offset).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// A `%` that neither doubles nor starts `%NAME...%`.
    #[error(
        "no valid variable at byte {at} (a variable is %NAME%, %NAME(ARG)% or either with :N \
         before the closing %; write %% for a literal %)"
    )]
    Syntax {
        /// Where the `%` is.
        at: usize,
    },
    /// A well-formed command nobody knows.
    #[error("unknown variable %{name}% at byte {at} (supported: {SUPPORTED})")]
    Unknown {
        /// The command.
        name: String,
        /// Where it starts.
        at: usize,
    },
    /// One of Envoy's commands that Sluice does not render.
    #[error("%{name}% at byte {at} is unsupported (supported: {SUPPORTED})")]
    Unsupported {
        /// The command.
        name: String,
        /// Where it starts.
        at: usize,
    },
    /// A command given an argument it does not take, or missing one it needs.
    #[error("%{name}% at byte {at}: {why}")]
    Argument {
        /// The command.
        name: String,
        /// Where it starts.
        at: usize,
        /// What is wrong.
        why: &'static str,
    },
}

impl HeaderFormat {
    /// Parses `text`; `None` when it has no `%` (a plain value).
    ///
    /// # Errors
    ///
    /// See [`FormatError`].
    pub fn parse(text: &str) -> Result<Option<HeaderFormat>, FormatError> {
        if !text.contains('%') {
            return Ok(None);
        }
        let bytes = text.as_bytes();
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let Some(off) = text[pos..].find('%') else {
                literal.push_str(&text[pos..]);
                break;
            };
            literal.push_str(&text[pos..pos + off]);
            pos += off;
            if bytes.get(pos + 1) == Some(&b'%') {
                literal.push('%');
                pos += 2;
                continue;
            }
            let (command, end) = command_at(text, pos).ok_or(FormatError::Syntax { at: pos })?;
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut literal)));
            }
            segments.push(Segment::Var {
                var: var(&command, pos)?,
                max_len: command.max_len,
            });
            pos = end;
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Some(HeaderFormat {
            segments: segments.into_boxed_slice(),
        }))
    }

    /// The pieces, in order.
    #[must_use]
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Appends the value for the message `ctx` describes to `out`.
    pub fn render(&self, ctx: &FormatContext<'_>, out: &mut Vec<u8>) {
        let last = self.segments.len().saturating_sub(1);
        for (i, s) in self.segments.iter().enumerate() {
            match s {
                Segment::Literal(t) => out.extend_from_slice(t.as_bytes()),
                Segment::Var { var, max_len } => {
                    let start = out.len();
                    render_var(var, ctx, out);
                    if let Some(n) = max_len
                        && out.len() - start > *n
                    {
                        out.truncate(start + n);
                        // A cut inside a header's value can end on its inner spaces: a field
                        // value does not end in whitespace.
                        while i == last
                            && out.len() > start
                            && matches!(out.last(), Some(b' ' | b'\t'))
                        {
                            out.pop();
                        }
                    }
                }
            }
        }
    }
}

/// What rendering needs to know about one message and its connection.
pub struct FormatContext<'a> {
    /// The client's address.
    pub downstream_remote: SocketAddr,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'a str,
    /// The machine's host name.
    pub hostname: &'a str,
    /// The request's first field of a (lowercase) name.
    pub request_header: &'a dyn Fn(&str) -> Option<&'a [u8]>,
    /// The request's pseudo-headers.
    pub request_line: RequestLine<'a>,
}

/// What the request's pseudo-headers read, as the request is edited so far (an HTTP/1.1
/// request has none: its request line and `Host` stand for them, as Envoy's codec makes them).
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestLine<'a> {
    /// `:authority`: the request's host (its `Host`, or its target's authority), as edited
    /// (`None`: it has none).
    pub authority: Option<&'a [u8]>,
    /// `:method`: the method token.
    pub method: &'a [u8],
    /// `:path`: the target's path (normalized when the listener normalizes paths; before a
    /// route's `prefix_rewrite`, which Envoy applies after the header edits), `None` for a
    /// CONNECT (which has no `:path`).
    pub path: Option<&'a [u8]>,
    /// The target's query, without its `?`: `:path` renders `path?query`.
    pub query: Option<&'a [u8]>,
    /// `:scheme`: `https` when the downstream connection is TLS, else `http`.
    pub scheme: &'a str,
}

fn render_var(var: &Var, ctx: &FormatContext<'_>, out: &mut Vec<u8>) {
    /// Writes through `fmt` into the byte buffer (addresses and ports; no allocation).
    struct Bytes<'b>(&'b mut Vec<u8>);
    impl std::fmt::Write for Bytes<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.extend_from_slice(s.as_bytes());
            Ok(())
        }
    }
    match var {
        Var::DownstreamRemoteAddress => {
            let _ = write!(Bytes(out), "{}", ctx.downstream_remote);
        }
        Var::DownstreamRemoteAddressWithoutPort => {
            let _ = write!(Bytes(out), "{}", ctx.downstream_remote.ip());
        }
        Var::DownstreamRemotePort => {
            let _ = write!(Bytes(out), "{}", ctx.downstream_remote.port());
        }
        Var::Protocol => out.extend_from_slice(ctx.protocol.as_bytes()),
        Var::Hostname => out.extend_from_slice(ctx.hostname.as_bytes()),
        Var::Req { name, alternative } => {
            if !render_req(name, ctx, out)
                && let Some(a) = alternative
            {
                render_req(a, ctx, out);
            }
        }
    }
}

/// Appends what `field` reads; whether it has a value.
fn render_req(field: &ReqField, ctx: &FormatContext<'_>, out: &mut Vec<u8>) -> bool {
    let line = &ctx.request_line;
    let value = match field {
        ReqField::Header(name) => (ctx.request_header)(name),
        ReqField::Pseudo(Pseudo::Authority) => line.authority,
        ReqField::Pseudo(Pseudo::Method) => Some(line.method).filter(|m| !m.is_empty()),
        ReqField::Pseudo(Pseudo::Scheme) => Some(line.scheme.as_bytes()),
        ReqField::Pseudo(Pseudo::Path) => {
            let Some(path) = line.path else {
                return false;
            };
            out.extend_from_slice(path);
            if let Some(q) = line.query {
                out.push(b'?');
                out.extend_from_slice(q);
            }
            return true;
        }
    };
    match value {
        Some(v) => {
            out.extend_from_slice(v);
            true
        }
        None => false,
    }
}

/// A command as written: `%NAME(ARG):N%`.
struct Command<'t> {
    name: &'t str,
    arg: Option<&'t str>,
    max_len: Option<usize>,
}

/// Reads the command whose `%` is at `start`: `(command, the offset after its closing %)`,
/// or `None` when what follows is not `NAME`, an optional `(ARG)`, an optional `:N`, and `%`.
fn command_at(text: &str, start: usize) -> Option<(Command<'_>, usize)> {
    let bytes = text.as_bytes();
    let mut pos = start + 1;
    let name_start = pos;
    while bytes
        .get(pos)
        .is_some_and(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
    {
        pos += 1;
    }
    if pos == name_start {
        return None;
    }
    let name = &text[name_start..pos];
    let mut arg = None;
    if bytes.get(pos) == Some(&b'(') {
        let close = text[pos + 1..].find(')')? + pos + 1;
        arg = Some(&text[pos + 1..close]);
        pos = close + 1;
    }
    let mut max_len = None;
    if bytes.get(pos) == Some(&b':') {
        let digits_start = pos + 1;
        pos = digits_start;
        while bytes.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        if pos == digits_start {
            return None;
        }
        // Past usize: keep everything (no value is that long).
        max_len = Some(text[digits_start..pos].parse().unwrap_or(usize::MAX));
    }
    if bytes.get(pos) != Some(&b'%') {
        return None;
    }
    Some((Command { name, arg, max_len }, pos + 1))
}

fn var(c: &Command<'_>, at: usize) -> Result<Var, FormatError> {
    let no_arg = |v: Var| match c.arg {
        None => Ok(v),
        Some(_) => Err(FormatError::Argument {
            name: c.name.to_owned(),
            at,
            why: "takes no argument",
        }),
    };
    match c.name {
        "DOWNSTREAM_REMOTE_ADDRESS" => no_arg(Var::DownstreamRemoteAddress),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => no_arg(Var::DownstreamRemoteAddressWithoutPort),
        "DOWNSTREAM_REMOTE_PORT" => no_arg(Var::DownstreamRemotePort),
        "PROTOCOL" => no_arg(Var::Protocol),
        "HOSTNAME" => no_arg(Var::Hostname),
        "REQ" => {
            let argument = |why| FormatError::Argument {
                name: c.name.to_owned(),
                at,
                why,
            };
            let arg = c.arg.ok_or(argument("needs a header name: %REQ(name)%"))?;
            let (name, alternative) = match arg.split_once('?') {
                Some((n, a)) => (n, Some(a)),
                None => (arg, None),
            };
            let field = |n: &str| -> Result<ReqField, FormatError> {
                if n.starts_with(':') {
                    return Pseudo::ALL
                        .iter()
                        .find(|(p, _)| p.eq_ignore_ascii_case(n))
                        .map(|(_, p)| ReqField::Pseudo(*p))
                        .ok_or(argument(
                            "the pseudo-headers are :authority, :path, :method and :scheme",
                        ));
                }
                let valid = !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_graphic() && !b"\"(),/;<=>?@[\\]{}".contains(&b));
                if !valid {
                    return Err(argument(
                        "the argument is a header name, or two separated by ? (name?alternative)",
                    ));
                }
                Ok(ReqField::Header(n.to_ascii_lowercase()))
            };
            Ok(Var::Req {
                name: field(name)?,
                alternative: alternative.map(field).transpose()?,
            })
        }
        other if ENVOY_ONLY.contains(&other) => Err(FormatError::Unsupported {
            name: other.to_owned(),
            at,
        }),
        other => Err(FormatError::Unknown {
            name: other.to_owned(),
            at,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `:N` cut that ends a value on the header's inner spaces drops them (a field value
    /// does not end in whitespace); spaces inside the value stay.
    #[test]
    fn a_cut_ending_on_spaces_drops_them() {
        assert_eq!(render("%REQ(x-a):3%", &[("x-a", "ab  cd")]), "kept:ab");
        assert_eq!(render("%REQ(x-a):4%", &[("x-a", "ab \tcd")]), "kept:ab");
        assert_eq!(render("%REQ(x-a):5%", &[("x-a", "ab cde")]), "kept:ab cd");
    }

    fn render(text: &str, headers: &[(&str, &str)]) -> String {
        render_line(text, headers, RequestLine::default())
    }

    fn render_line(text: &str, headers: &[(&str, &str)], request_line: RequestLine<'_>) -> String {
        let lookup = |n: &str| -> Option<&[u8]> {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.as_bytes())
        };
        let ctx = FormatContext {
            downstream_remote: "[2001:db8::7]:40123".parse().unwrap(),
            protocol: "HTTP/1.1",
            hostname: "node-1",
            request_header: &lookup,
            request_line,
        };
        let mut out = b"kept:".to_vec();
        HeaderFormat::parse(text)
            .unwrap()
            .expect("a format")
            .render(&ctx, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn plain_values_have_no_format() {
        assert_eq!(HeaderFormat::parse("plain value"), Ok(None));
        assert_eq!(HeaderFormat::parse(""), Ok(None));
    }

    /// Each variable in Envoy's format; `%%` is a literal `%`; `:N` keeps N bytes; a missing
    /// request header renders empty, the alternative when there is one; the buffer is
    /// appended to.
    #[test]
    fn variables_render_in_envoys_formats() {
        assert_eq!(
            render("%DOWNSTREAM_REMOTE_ADDRESS%", &[]),
            "kept:[2001:db8::7]:40123"
        );
        assert_eq!(
            render(
                "ip=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%;port=%DOWNSTREAM_REMOTE_PORT%",
                &[]
            ),
            "kept:ip=2001:db8::7;port=40123"
        );
        assert_eq!(
            render("%PROTOCOL% on %HOSTNAME%", &[]),
            "kept:HTTP/1.1 on node-1"
        );
        assert_eq!(render("100%%", &[]), "kept:100%");
        assert_eq!(render("%%%PROTOCOL%%%", &[]), "kept:%HTTP/1.1%");
        assert_eq!(render("<%REQ(X-Foo)%>", &[("x-foo", "bar")]), "kept:<bar>");
        assert_eq!(render("<%REQ(x-missing)%>", &[]), "kept:<>");
        assert_eq!(
            render("%REQ(x-a?x-b)%", &[("x-b", "second")]),
            "kept:second"
        );
        assert_eq!(
            render("%REQ(x-a?x-b)%", &[("x-a", "first"), ("x-b", "second")]),
            "kept:first"
        );
        assert_eq!(
            render(
                "%REQ(x-foo):3%|%PROTOCOL:4%|%HOSTNAME:99%",
                &[("x-foo", "abcdef")]
            ),
            "kept:abc|HTTP|node-1"
        );
        let v4 = FormatContext {
            downstream_remote: "10.0.0.1:5000".parse().unwrap(),
            protocol: "HTTP/2",
            hostname: "",
            request_header: &|_| None,
            request_line: RequestLine::default(),
        };
        let mut out = Vec::new();
        HeaderFormat::parse("%DOWNSTREAM_REMOTE_ADDRESS%")
            .unwrap()
            .unwrap()
            .render(&v4, &mut out);
        assert_eq!(out, b"10.0.0.1:5000");
    }

    /// `%REQ(:authority)%`, `%REQ(:path)%` (with the query), `%REQ(:method)%` and
    /// `%REQ(:scheme)%` read the request line the runtime gives (any case, as Envoy lowercases
    /// header names); a pseudo-header with no value (a CONNECT's `:path`, a request without a
    /// host) renders empty or its alternative; `:N` cuts them as any value; a field whose name
    /// looks alike is not read for them.
    #[test]
    fn pseudo_headers_read_the_request_line() {
        let line = RequestLine {
            authority: Some(b"api.example:8080"),
            method: b"POST",
            path: Some(b"/a/b"),
            query: Some(b"x=1&y"),
            scheme: "https",
        };
        let headers = [("host", "from-the-field"), ("authority", "no")];
        assert_eq!(
            render_line(
                "%REQ(:authority)% %REQ(:METHOD)% %REQ(:scheme)%://%REQ(:authority)%%REQ(:path)%",
                &headers,
                line
            ),
            "kept:api.example:8080 POST https://api.example:8080/a/b?x=1&y"
        );
        assert_eq!(render_line("%REQ(:Path):4%", &[], line), "kept:/a/b");
        assert_eq!(render_line("%REQ(:path):6%", &[], line), "kept:/a/b?x");
        let bare = RequestLine {
            authority: None,
            method: b"CONNECT",
            path: None,
            query: None,
            scheme: "http",
        };
        assert_eq!(render_line("<%REQ(:path)%>", &[], bare), "kept:<>");
        assert_eq!(
            render_line(
                "%REQ(:authority?x-fallback)%",
                &[("x-fallback", "fb")],
                bare
            ),
            "kept:fb"
        );
        assert_eq!(
            render_line("%REQ(:path?:method)%|%REQ(x-none?:scheme)%", &[], bare),
            "kept:CONNECT|http"
        );
        assert_eq!(
            render_line(
                "%REQ(:path)%",
                &[],
                RequestLine {
                    query: None,
                    ..line
                }
            ),
            "kept:/a/b"
        );
    }

    /// Hostile and mistaken input is an error naming what and where, never a panic.
    #[test]
    fn bad_values_are_refused_with_their_place() {
        let err = |t: &str| HeaderFormat::parse(t).unwrap_err().to_string();
        let syntax = |at: usize| FormatError::Syntax { at }.to_string();
        assert_eq!(err("50%"), syntax(2));
        assert_eq!(err("%"), syntax(0));
        assert_eq!(err("a %PROTOCOL"), syntax(2));
        assert_eq!(err("%REQ("), syntax(0));
        assert_eq!(err("%REQ(x-foo%"), syntax(0));
        assert_eq!(err("%REQ(x-foo)"), syntax(0));
        assert_eq!(err("%REQ(x-foo):%"), syntax(0));
        assert_eq!(err("%REQ(x-foo):1x%"), syntax(0));
        assert_eq!(err("%protocol%"), syntax(0));
        assert_eq!(err("%%%"), syntax(2));
        assert_eq!(err("é%"), syntax(2));
        assert_eq!(
            err("x %NOPE%"),
            format!("unknown variable %NOPE% at byte 2 (supported: {SUPPORTED})")
        );
        assert_eq!(
            err("%START_TIME%"),
            format!("%START_TIME% at byte 0 is unsupported (supported: {SUPPORTED})")
        );
        assert_eq!(
            err("%UPSTREAM_REMOTE_ADDRESS%"),
            format!("%UPSTREAM_REMOTE_ADDRESS% at byte 0 is unsupported (supported: {SUPPORTED})")
        );
        assert_eq!(
            err("%PROTOCOL(x)%"),
            "%PROTOCOL% at byte 0: takes no argument"
        );
        assert_eq!(
            err("%REQ%"),
            "%REQ% at byte 0: needs a header name: %REQ(name)%"
        );
        for bad in [":status", ":protocol", ":", "a?:x"] {
            assert_eq!(
                err(&format!("%REQ({bad})%")),
                "%REQ% at byte 0: the pseudo-headers are :authority, :path, :method and :scheme",
                "{bad}"
            );
        }
        for bad in [
            "%REQ()%",
            "%REQ(a b)%",
            "%REQ(a?)%",
            "%REQ(a?b?c)%",
            "%REQ(:path?)%",
        ] {
            assert!(
                err(bad).contains("the argument is a header name"),
                "{bad}: {}",
                err(bad)
            );
        }
        // Lengths past usize keep everything rather than failing.
        assert!(HeaderFormat::parse("%PROTOCOL:99999999999999999999999%").is_ok());
    }
}
