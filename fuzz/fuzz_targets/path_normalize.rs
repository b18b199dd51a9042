//! `normalize_path` on arbitrary paths, under every combination of its knobs.
//!
//! The first input byte picks the knobs (bit 0: `normalize_path`, bit 1: `merge_slashes`,
//! bits 2–3: the escaped-slash action); the rest, after a leading `/`, is the path.
//!
//! Properties, whatever the bytes:
//! - nothing panics; the result is never longer than the input;
//! - idempotent: a normalized path normalizes to itself (and is never rejected);
//! - with `normalize_path`, the result starts with `/` and has no `.` or `..` segment;
//! - with `merge_slashes`, the result has no `//`;
//! - with the default `reject_request`, a path with `%2F`, `%5C` (any case) or `\` is rejected,
//!   and a normalized path has none of them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::path::{EscapedSlashesAction, PathNormalization, normalize_path};

fuzz_target!(|data: &[u8]| {
    let [knobs, rest @ ..] = data else {
        return;
    };
    let opts = PathNormalization {
        normalize_path: knobs & 1 != 0,
        merge_slashes: knobs & 2 != 0,
        escaped_slashes: match (knobs >> 2) & 3 {
            0 | 3 => EscapedSlashesAction::RejectRequest,
            1 => EscapedSlashesAction::KeepUnchanged,
            _ => EscapedSlashesAction::UnescapeAndForward,
        },
    };
    let mut path = Vec::with_capacity(rest.len() + 1);
    path.push(b'/');
    path.extend_from_slice(rest);

    let escaped = has_escaped_slash(&path);
    let mut scratch = Vec::new();
    let once = match normalize_path(&path, &opts, &mut scratch) {
        Ok(p) => p.to_vec(),
        Err(_) => {
            assert!(
                opts.escaped_slashes == EscapedSlashesAction::RejectRequest && escaped,
                "rejected {path:?}"
            );
            return;
        }
    };
    if opts.escaped_slashes == EscapedSlashesAction::RejectRequest {
        assert!(!escaped, "accepted {path:?}");
    }
    assert!(once.len() <= path.len());
    let mut scratch2 = Vec::new();
    let twice = normalize_path(&once, &opts, &mut scratch2).expect("a normalized path passes");
    assert_eq!(once, twice, "not idempotent on {path:?}");
    if opts.normalize_path {
        assert_eq!(once.first(), Some(&b'/'));
        assert!(
            once.split(|&b| b == b'/').all(|s| s != b"." && s != b".."),
            "dot segment in {once:?} from {path:?}"
        );
    }
    if opts.merge_slashes {
        assert!(
            !once.windows(2).any(|w| w == b"//"),
            "{once:?} from {path:?}"
        );
    }
});

fn has_escaped_slash(path: &[u8]) -> bool {
    path.contains(&b'\\')
        || path.windows(3).any(|w| {
            w[0] == b'%'
                && ((w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f'))
                    || (w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c')))
        })
}
