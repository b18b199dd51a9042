//! Request path normalization, before routing (sans-IO, no allocation once warm).
//!
//! A route that guards a prefix (`prefix: /admin` → `direct_response: 403`) only guards it if
//! every spelling of that prefix is routed as the prefix: `/x/../admin`, `/%61dmin`, `//admin`,
//! `/./admin` all name `/admin` to the upstream. [`normalize_path`] turns a request path (the
//! query is not part of it, and is never touched) into one canonical spelling, which is then
//! both what is routed and what is forwarded. The steps, in order, follow Envoy's knobs:
//!
//! 1. encoded slashes and backslashes (`%2F`, `%5C`, any case) and raw backslashes (`\`), per
//!    [`EscapedSlashesAction`]: rejected (400, the default), kept as they are (neither decoded
//!    nor treated as separators), or turned into `/` (then merged and dot-resolved like any
//!    other slash);
//! 2. with `normalize_path`: percent-encoded unreserved characters (RFC 3986 §2.3: letters,
//!    digits, `-`, `.`, `_`, `~`) are decoded (`%61` → `a`, `%2e` → `.`); other escapes are
//!    kept as sent (a malformed `%` escape too);
//! 3. with `merge_slashes`: runs of `/` become one (`//a///b` → `/a/b`);
//! 4. with `normalize_path`: dot segments are removed (RFC 3986 §5.2.4): `.` goes, `..` takes
//!    the segment before it (never above the root), and a path ending in `.` or `..` keeps a
//!    trailing `/` (`/a/b/..` → `/a/`).
//!
//! Only a path that starts with `/` is normalized (`*` of `OPTIONS` and a CONNECT authority are
//! left alone).
//!
//! ## Invariants (checked by a proptest and the `path_normalize` fuzz target)
//!
//! - idempotent: normalizing a normalized path changes nothing;
//! - with `normalize_path`, the result has no `.` or `..` segment and starts with `/`;
//! - with `merge_slashes`, the result has no `//`;
//! - the result is never longer than the input; an already-normal path is not copied.

// The settings are part of the config model (a leaf every module reads), re-exported here at
// the paths they had before they moved.
pub use crate::config::http::{EscapedSlashesAction, PathNormalization};

/// Why a path was rejected.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `%2F`, `%5C` or `\` with [`EscapedSlashesAction::RejectRequest`].
    #[error("request path has an encoded slash or a backslash (%2F, %5C or \\)")]
    EscapedSlash,
}

/// Normalizes `path`: the path itself when it is already normal (no copy), else the normalized
/// path, written into `scratch` (cleared first; its capacity is reused).
pub fn normalize_path<'a>(
    path: &'a [u8],
    opts: &PathNormalization,
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], PathError> {
    if normalize_path_into(path, opts, scratch)? {
        Ok(scratch.as_slice())
    } else {
        Ok(path)
    }
}

/// Like [`normalize_path`], for a caller that keeps `path` and `out` apart: `Ok(false)` when
/// `path` is already normal (`out` untouched), `Ok(true)` when the normalized path is in `out`
/// (cleared first).
pub fn normalize_path_into(
    path: &[u8],
    opts: &PathNormalization,
    out: &mut Vec<u8>,
) -> Result<bool, PathError> {
    if path.first() != Some(&b'/') || !needs_work(path, opts)? {
        return Ok(false);
    }
    out.clear();
    out.reserve(path.len());
    // Steps 1 and 2: escapes.
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'%'
            && let Some(decoded) = escape_at(path, i)
        {
            if is_escaped_slash(decoded) {
                match opts.escaped_slashes {
                    EscapedSlashesAction::UnescapeAndForward => out.push(b'/'),
                    // Rejected in needs_work.
                    _ => out.extend_from_slice(&path[i..i + 3]),
                }
            } else if opts.normalize_path
                && is_unreserved(decoded)
                && !(decoded.is_ascii_hexdigit() && ends_in_partial_escape(out))
            {
                out.push(decoded);
            } else {
                out.extend_from_slice(&path[i..i + 3]);
            }
            i += 3;
            continue;
        }
        if b == b'\\' && opts.escaped_slashes == EscapedSlashesAction::UnescapeAndForward {
            out.push(b'/');
        } else {
            out.push(b);
        }
        i += 1;
    }
    // Steps 3 and 4, in place: segment by segment, the write position `w` never passes the
    // slash that starts the segment being read.
    let len = out.len();
    let mut w = 0;
    let mut r = 0; // at a '/'
    while r < len {
        let start = r + 1;
        let end = out[start..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(len, |p| start + p);
        let last = end == len;
        let seg_len = end - start;
        let dot = opts.normalize_path && seg_len <= 2 && out[start..end].iter().all(|&b| b == b'.');
        if dot && seg_len > 0 {
            if seg_len == 2 {
                // `..`: drop the last written segment.
                w = out[..w].iter().rposition(|&b| b == b'/').unwrap_or(0);
            }
            if last {
                out[w] = b'/';
                w += 1;
            }
        } else if seg_len == 0 && opts.merge_slashes && !last {
            // An empty segment inside the path: merged away.
        } else {
            out.copy_within(r..end, w);
            w += end - r;
        }
        r = end;
    }
    if w == 0 {
        out[0] = b'/';
        w = 1;
    }
    out.truncate(w);
    Ok(true)
}

/// Whether anything would change, or `Err` for a rejected path. The common, already-normal path
/// is one pass over its bytes.
fn needs_work(path: &[u8], opts: &PathNormalization) -> Result<bool, PathError> {
    let mut work = false;
    let mut prev_slash = false;
    let mut seg_start = 0;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'/' => {
                if prev_slash && opts.merge_slashes {
                    work = true;
                }
                if i > 0 && opts.normalize_path && is_dot_segment(&path[seg_start..i]) {
                    work = true;
                }
                prev_slash = true;
                seg_start = i + 1;
                continue;
            }
            b'%' => {
                if let Some(decoded) = escape_at(path, i) {
                    if is_escaped_slash(decoded) {
                        match opts.escaped_slashes {
                            EscapedSlashesAction::RejectRequest => {
                                return Err(PathError::EscapedSlash);
                            }
                            EscapedSlashesAction::UnescapeAndForward => work = true,
                            EscapedSlashesAction::KeepUnchanged => {}
                        }
                    } else if opts.normalize_path && is_unreserved(decoded) {
                        work = true;
                    }
                }
            }
            b'\\' => match opts.escaped_slashes {
                EscapedSlashesAction::RejectRequest => return Err(PathError::EscapedSlash),
                EscapedSlashesAction::UnescapeAndForward => work = true,
                EscapedSlashesAction::KeepUnchanged => {}
            },
            _ => {}
        }
        prev_slash = false;
    }
    if opts.normalize_path && is_dot_segment(&path[seg_start..]) {
        work = true;
    }
    Ok(work)
}

/// Whether `out` ends with a `%` or a `%` and one hex digit (a malformed escape kept as sent):
/// decoding a hex digit after it would make a new escape, which a second pass would decode (not
/// idempotent), so that digit stays encoded.
fn ends_in_partial_escape(out: &[u8]) -> bool {
    match out {
        [.., b'%'] => true,
        [.., b'%', h] => h.is_ascii_hexdigit(),
        _ => false,
    }
}

fn is_dot_segment(seg: &[u8]) -> bool {
    seg == b"." || seg == b".."
}

/// The byte a well-formed `%HH` at `i` stands for.
fn escape_at(path: &[u8], i: usize) -> Option<u8> {
    let hi = hex(*path.get(i + 1)?)?;
    let lo = hex(*path.get(i + 2)?)?;
    Some(hi << 4 | lo)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_escaped_slash(decoded: u8) -> bool {
    decoded == b'/' || decoded == b'\\'
}

/// RFC 3986 §2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests;
