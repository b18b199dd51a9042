//! Full-match regular expressions (a route's or a Bolt rule's `safe_regex`): compiled so that
//! they must match a whole path or header value, with errors about the pattern as written.
//!
//! A leaf: the YAML decoder calls it to reject a pattern that does not compile (so a validated
//! config always compiles), and the HTTP and Bolt routers call it to build their matchers.

use regex::bytes::Regex;

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
