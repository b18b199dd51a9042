//! Log levels as operators spell them, and whether log lines get colour.
//!
//! `tracing`'s `EnvFilter` reads a bare word it does not know as a *target*: `warning` or
//! `garbage` would enable only the (nonexistent) target of that name and so turn logging off
//! without a word. [`level_filter`] accepts the usual spellings of a level (Envoy's and
//! syslog's among them) and `TARGET=LEVEL` directives, and refuses the rest with the list of
//! accepted values; the command line and the admin API's `/logging` both use it.
//!
//! rustls logs at `warn` what a peer did wrong in a handshake it still completes (an IP
//! address as the server name — wrk and some load balancers send one on every connection —,
//! an unsolicited extension): a line per connection that any client can trigger, not rate
//! limited, which floods the log and costs CPU under load. Sluice counts and logs handshake
//! failures itself (rate-limited), so unless the filter names `rustls` or asks for `debug` or
//! `trace`, rustls is held to `error` ([`QUIET_TLS_LIBRARY`]).

use std::ffi::OsStr;

/// The accepted level names, as error messages list them.
pub const ACCEPTED_LEVELS: &str =
    "trace, debug, info, warn (or warning), error (or err, critical), off";

/// The `EnvFilter` level for one spelling of a level (case-insensitive), if it is one.
fn canonical_level(word: &str) -> Option<&'static str> {
    Some(match word.trim().to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "err" | "critical" => "error",
        "off" => "off",
        _ => return None,
    })
}

/// The directive added to a filter that neither names `rustls` nor asks for `debug`/`trace`.
pub const QUIET_TLS_LIBRARY: &str = "rustls=error";

/// A log level (`warning`, `debug`…) or a filter of comma-separated directives, each `LEVEL`
/// or `TARGET=LEVEL` (`sluice_runtime=debug,info`), as the `EnvFilter` directive string it
/// means. `Err` says what is wrong and lists the accepted levels.
pub fn level_filter(spec: &str) -> Result<String, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(format!("give a log level: one of {ACCEPTED_LEVELS}"));
    }
    let mut out = Vec::new();
    for directive in spec.split(',') {
        let directive = directive.trim();
        let normalized = match directive.rsplit_once('=') {
            Some((target, level)) if !target.trim().is_empty() => {
                let level = canonical_level(level).ok_or_else(|| {
                    format!(
                        "{level:?} (in {directive:?}) is not a log level: use one of {ACCEPTED_LEVELS}"
                    )
                })?;
                format!("{}={level}", target.trim())
            }
            _ => canonical_level(directive)
                .ok_or_else(|| {
                    format!(
                        "{directive:?} is not a log level: use one of {ACCEPTED_LEVELS} \
                         (or TARGET=LEVEL, e.g. sluice_runtime=debug)"
                    )
                })?
                .to_owned(),
        };
        out.push(normalized);
    }
    let names_rustls = out.iter().any(|d| {
        d.split_once('=')
            .is_some_and(|(t, _)| t == "rustls" || t.starts_with("rustls::"))
    });
    // Only a default of `info` or `warn` lets those warnings through (`error` and `off` hold
    // them anyway; `debug` and `trace` are asked for).
    let default_lets_warnings_through = out
        .iter()
        .rev()
        .find(|d| !d.contains('='))
        .is_some_and(|d| d == "info" || d == "warn");
    if default_lets_warnings_through && !names_rustls {
        out.push(QUIET_TLS_LIBRARY.to_owned());
    }
    Ok(out.join(","))
}

/// Whether log lines on stderr get ANSI colour: only when stderr is a terminal, and not when
/// `NO_COLOR` is set to a non-empty value (<https://no-color.org>).
#[must_use]
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usual_spellings_are_levels() {
        for (given, want) in [
            ("trace", "trace"),
            ("DEBUG", "debug"),
            ("info", "info"),
            ("warn", "warn"),
            ("warning", "warn"),
            ("Warning", "warn"),
            ("error", "error"),
            ("err", "error"),
            ("critical", "error"),
            ("off", "off"),
            (" info ", "info"),
        ] {
            let want = match want {
                "info" | "warn" => format!("{want},{QUIET_TLS_LIBRARY}"),
                _ => want.to_owned(),
            };
            assert_eq!(level_filter(given), Ok(want), "{given}");
        }
    }

    /// rustls' per-connection warnings (a peer's IP-address SNI…) are held to `error` unless
    /// the operator names rustls or asks for debug output.
    #[test]
    fn the_tls_library_is_quiet_unless_asked() {
        for (given, want) in [
            ("info", "info,rustls=error"),
            ("warning", "warn,rustls=error"),
            ("debug", "debug"),
            ("trace", "trace"),
            ("error", "error"),
            ("off", "off"),
            ("rustls=warn,info", "rustls=warn,info"),
            ("rustls::msgs=debug,warn", "rustls::msgs=debug,warn"),
            ("sluice_runtime=debug", "sluice_runtime=debug"),
            (
                "sluice_runtime=debug,info",
                "sluice_runtime=debug,info,rustls=error",
            ),
        ] {
            assert_eq!(level_filter(given).as_deref(), Ok(want), "{given}");
        }
    }

    #[test]
    fn target_directives_keep_their_target_and_normalize_the_level() {
        assert_eq!(
            level_filter("sluice_runtime=warning,info").as_deref(),
            Ok("sluice_runtime=warn,info,rustls=error")
        );
        assert_eq!(
            level_filter("sluice_runtime::http=debug").as_deref(),
            Ok("sluice_runtime::http=debug")
        );
    }

    #[test]
    fn anything_else_is_refused_with_the_list() {
        for bad in [
            "garbage",
            "",
            "sluice_runtime=loud",
            "info,verbose",
            "=debug",
        ] {
            let e = level_filter(bad).unwrap_err();
            assert!(e.contains(ACCEPTED_LEVELS), "{bad}: {e}");
        }
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
    }
}
