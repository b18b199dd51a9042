use super::*;
use proptest::prelude::*;

const MAX: usize = DEFAULT_MAX_FRAME_SIZE;
const SERVICE: &[u8] = b"com.nodejs.test.TestService:1.0";
const REQ_CLASS: &[u8] = b"com.alipay.sofa.rpc.core.request.SofaRequest";
const RES_CLASS: &[u8] = b"com.alipay.sofa.rpc.core.response.SofaResponse";
const V2_CRC: Version = Version::V2 { ver1: 2, switch: 1 };
const V2_PLAIN: Version = Version::V2 { ver1: 1, switch: 0 };

fn one(buf: &[u8]) -> Frame<'_> {
    let f = decode(buf, MAX).expect("decode").expect("complete");
    assert_eq!(f.len, buf.len());
    f
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The `plus(1,2)` request of sofa-rpc-node 2.10.0 (toolchain.md §5.1): the documented fixed
/// header, class and header bytes, and a 239-byte placeholder for the Hessian2 content.
fn sofa_plus_request() -> Vec<u8> {
    let mut b = hex("01 01 0001 01 00000001 01 00000bb8 002c 002e 000000ef");
    assert_eq!(b.len(), 22);
    b.extend_from_slice(REQ_CLASS);
    b.extend_from_slice(&hex("00000007"));
    b.extend_from_slice(b"service");
    b.extend_from_slice(&hex("0000001f"));
    b.extend_from_slice(SERVICE);
    b.extend((0..239u32).map(|i| (i * 7) as u8));
    assert_eq!(b.len(), 351);
    b
}

fn request(
    version: Version,
    id: u32,
    header: &[(&[u8], Option<&[u8]>)],
    content: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(
        &mut out,
        &RequestSpec {
            version,
            oneway: false,
            cmd_code: CMD_REQUEST,
            cmd_version: CMD_VERSION,
            request_id: id,
            codec: CODEC_HESSIAN2,
            timeout_ms: 3000,
            class: REQ_CLASS,
            header,
            content,
        },
    )
    .unwrap();
    out
}

#[test]
fn sofa_rpc_node_plus_request() {
    let buf = sofa_plus_request();
    let f = one(&buf);
    assert_eq!(f.version, Version::V1);
    assert_eq!(f.kind, Kind::Request);
    assert_eq!(f.cmd_code, CMD_REQUEST);
    assert!(!f.is_heartbeat());
    assert_eq!(f.cmd_version, 1);
    assert_eq!(f.request_id, 1);
    assert_eq!(f.codec, CODEC_HESSIAN2);
    assert_eq!(f.timeout_ms, Some(3000));
    assert_eq!(f.status, None);
    assert_eq!(f.response_status(), None);
    assert_eq!(f.class, REQ_CLASS);
    assert_eq!(f.header.as_bytes().len(), 46);
    let pairs: Vec<_> = f.header.iter().collect();
    assert_eq!(pairs, vec![(&b"service"[..], Some(SERVICE))]);
    assert_eq!(header_value(&f, b"service"), Some(SERVICE));
    assert_eq!(header_value(&f, b"sofa_head_method_name"), None);
    assert_eq!(f.content.len(), 239);
    assert_eq!(f.content, &buf[112..]);
    assert_eq!(f.crc, None);
    assert_eq!(f.len, 351);

    // Our encoder writes the same bytes.
    let again = request(Version::V1, 1, &[(b"service", Some(SERVICE))], f.content);
    assert_eq!(again, buf);
}

#[test]
fn sofa_rpc_node_plus_response_header() {
    let mut b = hex("01 00 0002 01 00000001 01 0000 002e 0000 00000062");
    b.extend_from_slice(RES_CLASS);
    b.extend(std::iter::repeat_n(0x4f, 98));
    let f = one(&b);
    assert_eq!(f.kind, Kind::Response);
    assert_eq!(f.cmd_code, CMD_RESPONSE);
    assert_eq!(f.status, Some(0));
    assert_eq!(f.response_status(), Some(ResponseStatus::Success));
    assert_eq!(f.timeout_ms, None);
    assert_eq!(f.class, RES_CLASS);
    assert!(f.header.is_empty());
    assert_eq!(f.content.len(), 98);
    let mut out = Vec::new();
    encode_response(
        &mut out,
        Version::V1,
        1,
        1,
        ResponseStatus::Success,
        RES_CLASS,
        &[],
        f.content,
    )
    .unwrap();
    assert_eq!(out, b);
}

#[test]
fn v2_without_and_with_crc() {
    for version in [V2_PLAIN, V2_CRC, Version::V2 { ver1: 1, switch: 1 }] {
        let buf = request(version, 77, &[(b"service", Some(SERVICE))], b"payload");
        let f = one(&buf);
        assert_eq!(f.version, version);
        assert_eq!(f.request_id, 77);
        assert_eq!(f.timeout_ms, Some(3000));
        assert_eq!(f.class, REQ_CLASS);
        assert_eq!(header_value(&f, b"service"), Some(SERVICE));
        assert_eq!(f.content, b"payload");
        let fixed = 24 + REQ_CLASS.len() + f.header.as_bytes().len() + 7;
        if version == V2_CRC {
            assert_eq!(f.len, fixed + 4);
            assert_eq!(f.crc, Some(crc32(&buf[..fixed])));
        } else {
            // ver1 1 carries no CRC even with the switch bit set.
            assert_eq!(f.len, fixed);
            assert_eq!(f.crc, None);
        }
    }
}

#[test]
fn crc32_known_value() {
    assert_eq!(crc32(b""), 0);
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    let long: Vec<u8> = (0..1000u32).map(|i| (i * 31) as u8).collect();
    // Slicing by 8 agrees with bytewise over every split.
    let bytewise = long.iter().fold(!0u32, |c, &b| {
        let mut c = c ^ u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        c
    });
    assert_eq!(crc32(&long), !bytewise);
}

#[test]
fn crc_mismatch() {
    let mut buf = request(V2_CRC, 5, &[], b"abc");
    let n = buf.len();
    buf[n - 5] ^= 0x01; // last content byte
    match decode(&buf, MAX) {
        Err(BoltError::CrcMismatch { offset, .. }) => assert_eq!(offset, n - 4),
        other => panic!("{other:?}"),
    }
    let e = decode(&buf, MAX).unwrap_err().to_string();
    assert!(e.contains("CRC mismatch at offset"), "{e}");
}

#[test]
fn partial_input_byte_by_byte() {
    for buf in [
        sofa_plus_request(),
        request(V2_CRC, 9, &[(b"k", None)], b"xyz"),
        request(V2_PLAIN, 9, &[], b""),
    ] {
        for n in 0..buf.len() {
            assert_eq!(decode(&buf[..n], MAX), Ok(None), "prefix of {n} bytes");
        }
        assert_eq!(one(&buf).len, buf.len());
    }
}

#[test]
fn two_frames_back_to_back() {
    let a = sofa_plus_request();
    let mut b = Vec::new();
    encode_response(
        &mut b,
        V2_CRC,
        8,
        1,
        ResponseStatus::NoProcessor,
        b"",
        &[],
        b"no route",
    )
    .unwrap();
    let mut buf = a.clone();
    buf.extend_from_slice(&b);
    let f1 = decode(&buf, MAX).unwrap().unwrap();
    assert_eq!(f1.len, a.len());
    assert_eq!(f1.request_id, 1);
    let f2 = decode(&buf[f1.len..], MAX).unwrap().unwrap();
    assert_eq!(f2.len, b.len());
    assert_eq!(f2.response_status(), Some(ResponseStatus::NoProcessor));
    assert_eq!(f2.content, b"no route");
    assert_eq!(f2.request_id, 8);
    assert_eq!(decode(&buf[f1.len + f2.len..], MAX), Ok(None));
}

#[test]
fn oversize_rejected_from_fixed_header_alone() {
    let buf = sofa_plus_request();
    // The 22-byte fixed header declares 351 bytes.
    for limit in [0, 100, 350] {
        match decode(&buf[..22], limit) {
            Err(BoltError::FrameTooLarge {
                declared,
                limit: l,
                class_len,
                header_len,
                content_len,
            }) => {
                assert_eq!((declared, l), (351, limit));
                assert_eq!((class_len, header_len, content_len), (44, 46, 239));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(decode(&buf[..22], 351), Ok(None));
    assert_eq!(decode(&buf, 351).unwrap().unwrap().len, 351);
    // A v2 response declaring 4 GiB of content, without a byte of it.
    let mut huge = hex("02 02 00 0002 01 00000001 01 01 0000 0000 0000 ffffffff");
    assert_eq!(huge.len(), 22);
    let e = decode(&huge, MAX).unwrap_err();
    assert!(
        matches!(e, BoltError::FrameTooLarge { declared, .. } if declared == 22 + 0xffff_ffff + 4),
        "{e}"
    );
    assert!(e.to_string().contains("more than max_frame_size"), "{e}");
    // One byte less of the fixed header: still waiting.
    huge.pop();
    assert_eq!(decode(&huge, MAX), Ok(None));
}

#[test]
fn unknown_protocol_and_type() {
    assert_eq!(
        decode(b"G", MAX),
        Err(BoltError::UnknownProtocol { byte: b'G' })
    );
    assert_eq!(
        decode(b"GET / HTTP/1.1\r\n", MAX),
        Err(BoltError::UnknownProtocol { byte: b'G' })
    );
    assert_eq!(
        decode(&[0x01, 0x03], MAX),
        Err(BoltError::UnknownType { byte: 3, offset: 1 })
    );
    assert_eq!(
        decode(&[0x02, 0x01, 0x07], MAX),
        Err(BoltError::UnknownType { byte: 7, offset: 2 })
    );
    assert_eq!(decode(&[0x02, 0x01], MAX), Ok(None));
    assert_eq!(decode(&[0x01], MAX), Ok(None));
    assert_eq!(decode(&[], MAX), Ok(None));
    let e = decode(&[0x05], MAX).unwrap_err().to_string();
    assert!(e.contains("0x05") && e.contains("offset 0"), "{e}");
}

#[test]
fn malformed_header_map() {
    // A valid frame, then the header's value length bumped past the section.
    let mut buf = sofa_plus_request();
    let value_len_at = 22 + 44 + 4 + 7;
    buf[value_len_at + 3] = 0x20; // 31 → 32
    match decode(&buf, MAX) {
        Err(BoltError::MalformedHeaderMap {
            what,
            offset,
            declared,
            section_end,
        }) => {
            assert_eq!(
                (what, offset, declared, section_end),
                ("value", value_len_at, 32, 66 + 46)
            );
        }
        other => panic!("{other:?}"),
    }
    // A dangling key with no value length.
    let mut frame = hex("01 01 0001 01 00000002 01 00000064 0000 0006 00000000");
    frame.extend_from_slice(&hex("00000001 41 00"));
    match decode(&frame, MAX) {
        Err(BoltError::MalformedHeaderMap {
            what: "value",
            offset: 27,
            declared: 0,
            section_end: 28,
        }) => {}
        other => panic!("{other:?}"),
    }
    // A key length of 3 bytes only.
    let mut frame = hex("01 01 0001 01 00000002 01 00000064 0000 0003 00000000");
    frame.extend_from_slice(&hex("000000"));
    let e = decode(&frame, MAX).unwrap_err();
    assert_eq!(
        e,
        BoltError::MalformedHeaderMap {
            what: "key",
            offset: 22,
            declared: 0,
            section_end: 25
        }
    );
    assert!(e.to_string().contains("header map"), "{e}");
}

#[test]
fn null_values_and_keys() {
    let header: &[(&[u8], Option<&[u8]>)] = &[
        (b"service", Some(SERVICE)),
        (b"zone", None),
        (b"", Some(b"empty key")),
        (b"e", Some(b"")),
    ];
    let buf = request(Version::V1, 3, header, b"");
    let f = one(&buf);
    let pairs: Vec<_> = f.header.into_iter().collect();
    assert_eq!(pairs, header);
    assert_eq!(header_value(&f, b"zone"), None);
    assert_eq!(header_value(&f, b"e"), Some(&b""[..]));
    // A raw null key (0xFFFFFFFF) reads as an empty key.
    let mut raw = hex("01 01 0001 01 00000002 01 00000064 0000 000a 00000000");
    raw.extend_from_slice(&hex("ffffffff 00000002 6869"));
    let f = one(&raw);
    assert_eq!(
        f.header.iter().collect::<Vec<_>>(),
        vec![(&b""[..], Some(&b"hi"[..]))]
    );
}

#[test]
fn set_request_id_round_trip() {
    let mut resp = Vec::new();
    encode_response(
        &mut resp,
        V2_CRC,
        4,
        1,
        ResponseStatus::Timeout,
        RES_CLASS,
        &[(b"a", b"b")],
        b"c",
    )
    .unwrap();
    for mut buf in [
        sofa_plus_request(),
        request(V2_CRC, 1, &[(b"service", Some(SERVICE))], b"content"),
        request(V2_PLAIN, 1, &[], b"content"),
        resp,
    ] {
        let before = buf.clone();
        let f = one(&before);
        let at = request_id_offset(f.version);
        assert_eq!(&before[at..at + 4], &f.request_id.to_be_bytes());
        set_request_id(&mut buf, 0xDEAD_BEEF);
        let g = one(&buf);
        assert_eq!(g.request_id, 0xDEAD_BEEF);
        let crc = g.crc;
        assert_eq!(
            Frame {
                request_id: f.request_id,
                crc: f.crc,
                ..g
            },
            f
        );
        assert_eq!(crc.is_some(), f.crc.is_some());
        // Only the id (and the CRC) changed.
        let differ: Vec<usize> = (0..buf.len()).filter(|&i| buf[i] != before[i]).collect();
        assert!(
            differ
                .iter()
                .all(|&i| (at..at + 4).contains(&i) || i >= buf.len() - 4 && crc.is_some())
        );
        set_request_id(&mut buf, f.request_id);
        assert_eq!(buf, before);
    }
}

#[test]
fn heartbeats_and_replies() {
    for version in [Version::V1, V2_PLAIN, V2_CRC] {
        let mut hb = Vec::new();
        encode_request(
            &mut hb,
            &RequestSpec {
                version,
                oneway: false,
                cmd_code: CMD_HEARTBEAT,
                cmd_version: CMD_VERSION,
                request_id: 42,
                codec: CODEC_HESSIAN2,
                timeout_ms: -1,
                class: b"",
                header: &[],
                content: b"",
            },
        )
        .unwrap();
        let f = one(&hb);
        assert!(f.is_heartbeat());
        assert_eq!(f.timeout_ms, Some(-1));
        let mut reply = Vec::new();
        encode_heartbeat_reply(&mut reply, &f);
        let r = one(&reply);
        assert_eq!(r.version, version);
        assert_eq!(
            (r.kind, r.cmd_code, r.request_id, r.status),
            (Kind::Response, 0, 42, Some(0))
        );
        assert!(r.is_heartbeat());
        assert_eq!(
            r.len,
            version.fixed_header_len(Kind::Response) + version.trailer_len()
        );
    }
}

#[test]
fn response_status_codes() {
    for s in ResponseStatus::ALL {
        assert_eq!(ResponseStatus::from_u16(s.code()), Some(s));
    }
    let codes: Vec<u16> = ResponseStatus::ALL.iter().map(|s| s.code()).collect();
    assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 18]);
    assert_eq!(ResponseStatus::from_u16(10), None);
    assert_eq!(ResponseStatus::from_u16(0xFFFF), None);
}

#[test]
fn encoder_rejects_too_long_class() {
    let mut out = vec![1, 2, 3];
    let class = vec![b'c'; 70_000];
    let e = encode_response(
        &mut out,
        Version::V1,
        1,
        1,
        ResponseStatus::Error,
        &class,
        &[],
        b"",
    )
    .unwrap_err();
    assert_eq!(
        e,
        BoltError::TooLong {
            field: "class",
            len: 70_000,
            max: 65_535
        }
    );
    assert_eq!(out, [1, 2, 3]);
}

fn any_version() -> impl Strategy<Value = Version> {
    prop_oneof![
        Just(Version::V1),
        (any::<u8>(), any::<u8>()).prop_map(|(ver1, switch)| Version::V2 { ver1, switch }),
        Just(V2_CRC),
    ]
}

type Pairs = Vec<(Vec<u8>, Option<Vec<u8>>)>;

fn any_header() -> impl Strategy<Value = Pairs> {
    prop::collection::vec(
        (
            prop::collection::vec(any::<u8>(), 0..12),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..24)),
        ),
        0..6,
    )
}

proptest! {
    #[test]
    fn request_round_trip(
        version in any_version(),
        oneway in any::<bool>(),
        heartbeat in any::<bool>(),
        id in any::<u32>(),
        codec in any::<u8>(),
        timeout_ms in any::<i32>(),
        class in prop::collection::vec(any::<u8>(), 0..64),
        header in any_header(),
        content in prop::collection::vec(any::<u8>(), 0..300),
        trailing in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let pairs: Vec<(&[u8], Option<&[u8]>)> =
            header.iter().map(|(k, v)| (&k[..], v.as_deref())).collect();
        let cmd_code = if heartbeat { CMD_HEARTBEAT } else { CMD_REQUEST };
        let mut buf = Vec::new();
        encode_request(&mut buf, &RequestSpec {
            version, oneway, cmd_code, cmd_version: CMD_VERSION, request_id: id, codec, timeout_ms,
            class: &class, header: &pairs, content: &content,
        }).unwrap();
        let len = buf.len();
        buf.extend_from_slice(&trailing);
        let f = decode(&buf, MAX).unwrap().unwrap();
        prop_assert_eq!(f.len, len);
        prop_assert_eq!(f.version, version);
        prop_assert_eq!(f.kind, if oneway { Kind::Oneway } else { Kind::Request });
        prop_assert_eq!(f.cmd_code, cmd_code);
        prop_assert_eq!(f.is_heartbeat(), heartbeat);
        prop_assert_eq!(f.request_id, id);
        prop_assert_eq!(f.codec, codec);
        prop_assert_eq!(f.timeout_ms, Some(timeout_ms));
        prop_assert_eq!(f.class, &class[..]);
        prop_assert_eq!(f.header.iter().collect::<Vec<_>>(), pairs);
        prop_assert_eq!(f.content, &content[..]);
        prop_assert_eq!(f.crc.is_some(), version.has_crc());
        prop_assert_eq!(decode(&buf[..len - 1], MAX), Ok(None));
    }

    #[test]
    fn response_round_trip(
        version in any_version(),
        id in any::<u32>(),
        codec in any::<u8>(),
        status in prop::sample::select(ResponseStatus::ALL.to_vec()),
        class in prop::collection::vec(any::<u8>(), 0..64),
        header in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..12), prop::collection::vec(any::<u8>(), 0..24)),
            0..6,
        ),
        content in prop::collection::vec(any::<u8>(), 0..300),
        new_id in any::<u32>(),
    ) {
        let pairs: Vec<(&[u8], &[u8])> = header.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        let mut buf = Vec::new();
        encode_response(&mut buf, version, id, codec, status, &class, &pairs, &content).unwrap();
        let f = decode(&buf, MAX).unwrap().unwrap();
        prop_assert_eq!(f.len, buf.len());
        prop_assert_eq!(f.version, version);
        prop_assert_eq!(f.kind, Kind::Response);
        prop_assert_eq!(f.cmd_code, CMD_RESPONSE);
        prop_assert_eq!(f.request_id, id);
        prop_assert_eq!(f.codec, codec);
        prop_assert_eq!(f.response_status(), Some(status));
        prop_assert_eq!(f.class, &class[..]);
        let got: Vec<(&[u8], Option<&[u8]>)> = f.header.iter().collect();
        let want: Vec<(&[u8], Option<&[u8]>)> = pairs.iter().map(|&(k, v)| (k, Some(v))).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(f.content, &content[..]);

        // Patching the id keeps everything else (and a CRC valid).
        let mut patched = buf.clone();
        set_request_id(&mut patched, new_id);
        let g = decode(&patched, MAX).unwrap().unwrap();
        prop_assert_eq!(g.request_id, new_id);
        prop_assert_eq!(Frame { request_id: id, crc: f.crc, ..g }, f);
    }
}
