//! Full-match regular expressions (a route's or a Bolt rule's `safe_regex`): compiled so that
//! they must match a whole path or header value, with errors about the pattern as written.
//!
//! A leaf: the YAML decoder calls it to reject a pattern that does not compile (so a validated
//! config always compiles), and the HTTP and Bolt routers call it to build their matchers.

use regex::bytes::Regex;

/// A `safe_regex` that does not compile, and where it is: what a router built from an
/// unvalidated config reports (a validated config always compiles).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RegexError {
    /// Where the pattern is, relative to the section the router was built from
    /// (`virtual_hosts[0].routes[4].match.headers[0].safe_regex`).
    pub path: String,
    /// The regex crate's message, on one line.
    pub message: String,
}

impl RegexError {
    /// The same error, its path under `prefix` (which ends with a `.`).
    #[must_use]
    pub(crate) fn under(self, prefix: &str) -> RegexError {
        RegexError {
            path: format!("{prefix}{}", self.path),
            message: self.message,
        }
    }
}

/// [`compile_full_match`], an error naming the pattern's `path`.
pub(crate) fn compile_at(
    pattern: &str,
    path: impl FnOnce() -> String,
) -> Result<Regex, RegexError> {
    compile_full_match(pattern).map_err(|message| RegexError {
        path: path(),
        message,
    })
}

/// Compiles a `safe_regex` so that it must match a whole path or value: `^(?:REGEX)$`.
///
/// The error is the regex crate's message on one line, about the pattern as written.
pub(crate) fn compile_full_match(pattern: &str) -> Result<Regex, String> {
    // Checked as written first, so that an error points into the user's text, and so that the
    // wrapper below cannot be unbalanced by it.
    Regex::new(pattern).map_err(|e| one_line(&e.to_string()))?;
    // In verbose mode (`(?x)`) a trailing `# comment` would swallow the closing `)$`: then a
    // newline ends the comment (and is ignored, as whitespace is in that mode).
    Regex::new(&format!("^(?:{pattern})$"))
        .or_else(|_| Regex::new(&format!("^(?:{pattern}\n)$")))
        .map_err(|e| one_line(&e.to_string()))
}

/// `s` with every run of whitespace (newlines included) replaced by one space (the regex
/// crate's messages draw the pattern over several lines; a config error is one line).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
