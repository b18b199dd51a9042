//! The heads the HTTP/1.1 codec benches run on, shared by the criterion bench (`http1.rs`) and
//! the instruction-count driver (`http1_instructions.rs`).

use sluice_core::http1::{HeadEdits, Version};

/// A browser navigation (about 400 bytes of head).
pub const BROWSER: &[u8] = b"GET /catalog/items/4711?view=full&lang=en HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Connection: keep-alive\r\n\
Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark\r\n\
Sec-Fetch-Dest: document\r\n\r\n";

/// What `curl` sends (about 120 bytes).
pub const CURL: &[u8] = b"GET /api/v1/health?verbose=1 HTTP/1.1\r\n\
Host: backend.svc.cluster.local:8080\r\n\
User-Agent: curl/8.5.0\r\n\
Accept: */*\r\n\r\n";

/// What `h2load --h1` sends (the load of the proxy's callgrind profile).
pub const H2LOAD: &[u8] = b"GET / HTTP/1.1\r\n\
Host: 127.0.0.1:10000\r\n\
User-Agent: h2load nghttp2/1.59.0\r\n\r\n";

/// A typical API answer head.
pub const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Server: app/1.4.2\r\n\
Date: Mon, 02 Jun 2025 10:00:00 GMT\r\n\
Content-Type: application/json; charset=utf-8\r\n\
Content-Length: 1432\r\n\
Cache-Control: no-store\r\n\
X-Request-Id: 5f2b7c1e-8d3a-4b6f-9e0d-2a1c3b4d5e6f\r\n\
Vary: Accept-Encoding\r\n\r\n";

/// nginx's answer for a static file (the upstream of the proxy's callgrind profile).
pub const NGINX: &[u8] = b"HTTP/1.1 200 OK\r\n\
Server: nginx/1.24.0\r\n\
Date: Mon, 07 Dec 2026 17:00:00 GMT\r\n\
Content-Type: text/html\r\n\
Content-Length: 615\r\n\
Last-Modified: Tue, 11 Apr 2023 01:45:34 GMT\r\n\
Connection: keep-alive\r\n\
ETag: \"6434bbbe-267\"\r\n\
Accept-Ranges: bytes\r\n\r\n";

/// Edits of a forwarded browser request: a rewritten path, a removed field, two added ones.
pub const BROWSER_EDITS: HeadEdits<'static> = HeadEdits {
    path: Some(b"/items/4711"),
    remove: &["cookie"],
    add: &[
        ("x-forwarded-for", b"10.1.2.3"),
        ("x-request-id", b"5f2b7c1e-8d3a-4b6f-9e0d-2a1c3b4d5e6f"),
    ],
    force_close: false,
    version: None,
};

/// The edits the proxy makes to a forwarded request by default
/// (`l7::edits::request_edits_before_additions`: the fields it sets replace the request's own, a
/// client's `x-forwarded-client-cert` is dropped, an `x-request-id` generated), written as
/// HTTP/1.1.
pub const PROXY_REQUEST_EDITS: HeadEdits<'static> = HeadEdits {
    path: None,
    remove: &[
        "x-forwarded-for",
        "x-forwarded-client-cert",
        "x-forwarded-proto",
    ],
    add: &[
        ("x-forwarded-for", b"10.1.2.3"),
        ("x-request-id", b"5f2b7c1e-8d3a-4b6f-9e0d-2a1c3b4d5e6f"),
        ("x-forwarded-proto", b"http"),
    ],
    force_close: false,
    version: Some(Version::Http11),
};

/// The listener's default `server` overwrite on a forwarded response.
pub const PROXY_RESPONSE_EDITS: HeadEdits<'static> = HeadEdits {
    path: None,
    remove: &["server"],
    add: &[("server", b"envoy")],
    force_close: false,
    version: None,
};
