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
    /// the alternative when it has none), empty when it has neither.
    Req {
        /// Lowercase.
        name: String,
        /// Lowercase.
        alternative: Option<String>,
    },
}

/// The variables [`HeaderFormat::parse`] accepts, for error messages and docs.
pub const SUPPORTED: &str = "DOWNSTREAM_REMOTE_ADDRESS, DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT, \
     DOWNSTREAM_REMOTE_PORT, PROTOCOL, HOSTNAME, REQ(name), REQ(name?alternative)";

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
            let value = (ctx.request_header)(name)
                .or_else(|| alternative.as_deref().and_then(|a| (ctx.request_header)(a)));
            if let Some(v) = value {
                out.extend_from_slice(v);
            }
        }
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
            let valid = |n: &str| {
                !n.is_empty()
                    && !n.starts_with(':')
                    && n.bytes()
                        .all(|b| b.is_ascii_graphic() && !b"\"(),/;<=>?@[\\]{}".contains(&b))
            };
            if !valid(name) || !alternative.is_none_or(valid) {
                return Err(argument(
                    "the argument is a header name, or two separated by ? (name?alternative)",
                ));
            }
            Ok(Var::Req {
                name: name.to_ascii_lowercase(),
                alternative: alternative.map(str::to_ascii_lowercase),
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
        };
        let mut out = Vec::new();
        HeaderFormat::parse("%DOWNSTREAM_REMOTE_ADDRESS%")
            .unwrap()
            .unwrap()
            .render(&v4, &mut out);
        assert_eq!(out, b"10.0.0.1:5000");
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
        for bad in [
            "%REQ()%",
            "%REQ(a b)%",
            "%REQ(:path)%",
            "%REQ(a?)%",
            "%REQ(a?b?c)%",
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
