//! Scalar value grammars of the config file: durations (`250ms`, `1s`, `5m`, `1h`) and socket
//! addresses (`127.0.0.1:8080`, `[::1]:8080`), each failing with a message that says what is
//! wrong with the text, not just that it is wrong. The inverse of [`parse_duration`] is the
//! model's [`format_duration`](crate::config::format_duration) (how a config dump writes a duration).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Parses a duration: a non-negative integer or decimal number followed by a unit (`us`, `ms`,
/// `s`, `m`, `h`), or a bare `0`. Precision is one microsecond.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a number and a unit: 250ms, 1s, 5m, 1h";
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit ({EXPECTED})"))?;
    let (number, unit) = t.split_at(split);
    if number.is_empty() {
        return Err(format!("{text:?} is not a duration ({EXPECTED})"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration ({EXPECTED})"))?;
    let millis_per_unit = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit {unit:?} ({EXPECTED})"
            ));
        }
    };
    let millis = value * millis_per_unit;
    // 100 days is far past any timeout a proxy needs; larger values are typos.
    if !millis.is_finite() || millis > 100.0 * 24.0 * 3_600_000.0 {
        return Err(format!("{text:?} is too long (at most 100 days)"));
    }
    Ok(Duration::from_micros((millis * 1000.0).round() as u64))
}

/// Checks a name (of a listener, cluster, virtual host, ...): 1 to 128 letters, digits and
/// `_ - . : |` — `|` because Istio names its clusters `outbound|80||svc.ns.svc.cluster.local`;
/// none of these needs quoting or escaping in a metric label, a log line, a YAML plain scalar
/// after its first character or HTML. The xDS translation checks the names it maps with this
/// too, to refuse a bad one by its xDS field path.
pub fn check_name(text: &str) -> Result<(), String> {
    let ok = !text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:|".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{text:?} is not a valid name (1 to 128 characters: letters, digits, '_', '-', '.', ':', '|')"
        ))
    }
}

/// Parses `IP:PORT` (IPv6 in brackets), naming the part that is wrong.
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    let bad = |why: &str| format!("{text:?} is not a socket address ({why})");
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| bad("expected IP:PORT, e.g. 127.0.0.1:8080"))?;
    let ip_text = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = ip_text.parse().map_err(|_| {
        if host.contains(':') && !host.starts_with('[') {
            bad("write an IPv6 address in brackets, e.g. [::1]:8080")
        } else {
            bad(&format!("{ip_text:?} is not an IP address"))
        }
    })?;
    if ip.is_ipv6() && !host.starts_with('[') {
        return Err(bad("write an IPv6 address in brackets, e.g. [::1]:8080"));
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(&format!("{port:?} is not a port number")));
    }
    let port: u16 = port.parse().map_err(|_| bad("port out of range"))?;
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::format_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1500us"), Ok(Duration::from_micros(1500)));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(
            parse_duration("5 seconds")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration("ms").unwrap_err().contains("not a duration"));
        assert!(
            parse_duration("-1s")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(
            parse_duration("1.2.3s")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(parse_duration("9999999h").unwrap_err().contains("too long"));
    }

    #[test]
    fn duration_format_round_trips() {
        for text in ["250ms", "1s", "5m", "2h", "0s", "1500ms", "22500us"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
        // Found by the config_yaml fuzz target: sub-millisecond values must format back into
        // something the parser accepts.
        let d = parse_duration("22.5ms").unwrap();
        assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }

    #[test]
    fn socket_addresses() {
        assert_eq!(
            parse_socket_addr("127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            parse_socket_addr("[::1]:80").unwrap(),
            "[::1]:80".parse().unwrap()
        );
        assert_eq!(
            parse_socket_addr("127.0.0.1:99999").unwrap_err(),
            r#""127.0.0.1:99999" is not a socket address (port out of range)"#
        );
        assert!(
            parse_socket_addr("localhost:80")
                .unwrap_err()
                .contains("not an IP address")
        );
        assert!(
            parse_socket_addr("127.0.0.1")
                .unwrap_err()
                .contains("expected IP:PORT")
        );
        assert!(
            parse_socket_addr("127.0.0.1:")
                .unwrap_err()
                .contains("not a port number")
        );
        assert!(
            parse_socket_addr("::1:80")
                .unwrap_err()
                .contains("brackets")
        );
    }
}
