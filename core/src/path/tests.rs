use proptest::prelude::*;

use super::*;

fn norm(path: &str) -> Result<String, PathError> {
    norm_with(path, &PathNormalization::DEFAULT)
}

fn norm_with(path: &str, opts: &PathNormalization) -> Result<String, PathError> {
    let mut scratch = Vec::new();
    normalize_path(path.as_bytes(), opts, &mut scratch)
        .map(|p| String::from_utf8(p.to_vec()).unwrap())
}

#[test]
fn attack_spellings_of_a_prefix_become_the_prefix() {
    for p in [
        "/x/../admin",
        "/%61dmin",
        "//admin",
        "/./admin",
        "/%2e/admin",
        "/a/%2E%2E/admin",
    ] {
        assert_eq!(norm(p).unwrap(), "/admin", "{p}");
    }
    assert_eq!(norm("/x/..%2fadmin"), Err(PathError::EscapedSlash));
    assert_eq!(norm("/x/..%5Cadmin"), Err(PathError::EscapedSlash));
    assert_eq!(norm("/x\\admin"), Err(PathError::EscapedSlash));
}

#[test]
fn dot_segments_and_slashes() {
    let cases = [
        ("/", "/"),
        ("/a/./b//c", "/a/b/c"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/..", "/"),
        ("/../../a", "/a"),
        ("/a/", "/a/"),
        ("/a//", "/a/"),
        ("///", "/"),
        ("/a/b/../../..", "/"),
        ("/a/.../b", "/a/.../b"),
        ("/a/.b/c.", "/a/.b/c."),
    ];
    for (input, want) in cases {
        assert_eq!(norm(input).unwrap(), want, "{input}");
    }
}

#[test]
fn only_unreserved_escapes_are_decoded() {
    assert_eq!(norm("/%41%7e%2D%5f%30").unwrap(), "/A~-_0");
    assert_eq!(norm("/a%20b%3F%25").unwrap(), "/a%20b%3F%25");
    // Malformed escapes stay; a hex digit after a lone `%` stays encoded (idempotence).
    assert_eq!(norm("/%zz%4").unwrap(), "/%zz%4");
    assert_eq!(norm("/%4%31").unwrap(), "/%4%31");
    assert_eq!(norm("/%%41").unwrap(), "/%%41");
    assert_eq!(norm("/%%61").unwrap(), "/%%61");
    assert_eq!(norm("/%%67").unwrap(), "/%g");
}

#[test]
fn an_already_normal_path_is_borrowed() {
    let path = b"/api/v1/users?x".split(|&b| b == b'?').next().unwrap();
    let mut scratch = Vec::new();
    let got = normalize_path(path, &PathNormalization::DEFAULT, &mut scratch).unwrap();
    assert!(std::ptr::eq(got, path));
    assert_eq!(scratch.capacity(), 0);
    assert!(!normalize_path_into(b"/a/b/", &PathNormalization::DEFAULT, &mut scratch).unwrap());
}

#[test]
fn knobs() {
    let no_merge = PathNormalization {
        merge_slashes: false,
        ..PathNormalization::DEFAULT
    };
    assert_eq!(norm_with("//a//./b", &no_merge).unwrap(), "//a//b");
    assert_eq!(norm_with("/a//..", &no_merge).unwrap(), "/a/");
    let no_norm = PathNormalization {
        normalize_path: false,
        ..PathNormalization::DEFAULT
    };
    assert_eq!(norm_with("//a/../%61", &no_norm).unwrap(), "/a/../%61");
    let keep = PathNormalization {
        escaped_slashes: EscapedSlashesAction::KeepUnchanged,
        ..PathNormalization::DEFAULT
    };
    assert_eq!(
        norm_with("/x/..%2fadmin\\", &keep).unwrap(),
        "/x/..%2fadmin\\"
    );
    let unescape = PathNormalization {
        escaped_slashes: EscapedSlashesAction::UnescapeAndForward,
        ..PathNormalization::DEFAULT
    };
    assert_eq!(norm_with("/x/..%2fadmin", &unescape).unwrap(), "/admin");
    assert_eq!(norm_with("/a%5C..\\b", &unescape).unwrap(), "/b");
    assert_eq!(
        norm_with("//a/./%2F", &PathNormalization::OFF).unwrap(),
        "//a/./%2F"
    );
    // Not a path: left alone.
    assert_eq!(norm("*").unwrap(), "*");
    assert_eq!(norm("example.com:443").unwrap(), "example.com:443");
}

fn opts() -> impl Strategy<Value = PathNormalization> {
    (
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(EscapedSlashesAction::RejectRequest),
            Just(EscapedSlashesAction::KeepUnchanged),
            Just(EscapedSlashesAction::UnescapeAndForward),
        ],
    )
        .prop_map(
            |(normalize_path, merge_slashes, escaped_slashes)| PathNormalization {
                normalize_path,
                merge_slashes,
                escaped_slashes,
            },
        )
}

/// Paths made of the pieces that matter: slashes, dots, escapes (of dots, slashes, hex digits),
/// lone `%`, backslashes, letters.
fn path() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(&b"/"[..]),
        Just(&b"."[..]),
        Just(&b".."[..]),
        Just(&b"%2e"[..]),
        Just(&b"%2E"[..]),
        Just(&b"%2f"[..]),
        Just(&b"%5C"[..]),
        Just(&b"\\"[..]),
        Just(&b"%"[..]),
        Just(&b"%4"[..]),
        Just(&b"%41"[..]),
        Just(&b"%31"[..]),
        Just(&b"%20"[..]),
        Just(&b"a"[..]),
        Just(&b"4"[..]),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|pieces| {
        let mut p = b"/".to_vec();
        for piece in pieces {
            p.extend_from_slice(piece);
        }
        p
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn normalizing_is_idempotent_and_leaves_no_dot_segments(path in path(), opts in opts()) {
        let mut scratch = Vec::new();
        let Ok(once) = normalize_path(&path, &opts, &mut scratch) else {
            return Ok(());
        };
        let once = once.to_vec();
        prop_assert!(once.len() <= path.len());
        let mut scratch2 = Vec::new();
        let twice = normalize_path(&once, &opts, &mut scratch2).expect("a normalized path passes");
        prop_assert_eq!(&once, &twice.to_vec(), "input {:?}", String::from_utf8_lossy(&path));
        if opts.normalize_path {
            prop_assert_eq!(once[0], b'/');
            prop_assert!(once.split(|&b| b == b'/').all(|s| s != b"." && s != b".."),
                "dot segment in {:?}", String::from_utf8_lossy(&once));
        }
        if opts.merge_slashes {
            prop_assert!(!once.windows(2).any(|w| w == b"//"));
        }
    }
}
