//! `bolt::decode`, header lookups and `set_request_id` never allocate; `encode_response` into a
//! `Vec` with room does not either. Counted with a per-thread counting global allocator (an
//! integration test, as the library forbids `unsafe`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting only touches a
// const-initialized thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

use sluice_core::bolt::{
    CMD_REQUEST, CMD_VERSION, DEFAULT_MAX_FRAME_SIZE, RequestSpec, ResponseStatus, Version, decode,
    encode_heartbeat_reply, encode_request, encode_response, header_value, set_request_id,
};

#[test]
fn bolt_decode_and_patch_do_not_allocate() {
    for version in [Version::V1, Version::V2 { ver1: 2, switch: 1 }] {
        let mut buf = Vec::new();
        encode_request(
            &mut buf,
            &RequestSpec {
                version,
                oneway: false,
                cmd_code: CMD_REQUEST,
                cmd_version: CMD_VERSION,
                request_id: 1,
                codec: 1,
                timeout_ms: 3000,
                class: b"com.alipay.sofa.rpc.core.request.SofaRequest",
                header: &[
                    (b"service", Some(b"com.nodejs.test.TestService:1.0")),
                    (b"z", None),
                ],
                content: &[7; 239],
            },
        )
        .unwrap();
        let mut out = Vec::with_capacity(1024);
        let n = allocations_in(|| {
            for cut in 0..=buf.len() {
                let _ = std::hint::black_box(decode(&buf[..cut], DEFAULT_MAX_FRAME_SIZE));
            }
            let f = decode(&buf, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
            assert!(header_value(&f, b"service").is_some());
            assert_eq!(f.header.iter().count(), 2);
            encode_heartbeat_reply(&mut out, &f);
            out.clear();
            encode_response(
                &mut out,
                version,
                1,
                1,
                ResponseStatus::NoProcessor,
                b"",
                &[(b"k", b"v")],
                b"",
            )
            .unwrap();
            let len = f.len;
            set_request_id(&mut buf[..len], 99);
        });
        assert_eq!(n, 0, "{version:?}: {n} allocations");
    }
}
