//! The real SOFARPC peers (npm `sofa-rpc-node`, Bolt v1 + Hessian2) used by the Bolt proxy's
//! end-to-end tests, run directly against each other (no proxy): proves the harness works in the
//! suite, so a failure in the proxied tests is the proxy's.

mod support;

use std::time::{Duration, Instant};

use support::*;

#[test]
fn sofa_peers_talk_directly() {
    if !require_peers(&["sofa-rpc-node"]) {
        return;
    }
    let dir = TempDir::new("bolt-peers");
    let (pa, pb) = (free_port(), free_port());
    let _a = start_sofa_server(&dir, "a", pa);
    let b = start_sofa_server(&dir, "b", pb);
    let (ta, tb) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));

    // 300 echoes, 50 at a time, every answer right and from the server asked.
    let v = sofa_client(&ta, "echo", &["--count", "300", "--concurrency", "50"]);
    assert_eq!(v["ok"], 300, "{v}");
    assert_eq!(v["mismatches"], 0, "{v}");
    assert_eq!(v["errors"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["servers"]["a"], 300, "{v}");

    // The client's own balancing over both servers: the `servers` count sees both.
    let v = sofa_client(
        &format!("{ta},{tb}"),
        "echo",
        &["--count", "300", "--concurrency", "50"],
    );
    assert_eq!(v["ok"], 300, "{v}");
    assert!(v["servers"]["a"].as_u64().unwrap() > 0, "{v}");
    assert!(v["servers"]["b"].as_u64().unwrap() > 0, "{v}");

    let v = sofa_client(&tb, "plus", &["--count", "300", "--concurrency", "50"]);
    assert_eq!(v["ok"], 300, "{v}");
    assert_eq!(v["mismatches"], 0, "{v}");

    // A server-side exception reaches the client as an exception carrying the message.
    let v = sofa_client(&ta, "fail", &["--timeout", "3000"]);
    assert_eq!(v["threw"], true, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("boom"),
        "{v}"
    );
    assert!(v["elapsed_ms"].as_u64().unwrap() < 2000, "{v}");

    // A short sleep answers with the server's name; one longer than the timeout times out.
    let v = sofa_client(&ta, "sleep", &["--ms", "200", "--timeout", "3000"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["result"], "a", "{v}");
    let v = sofa_client(&ta, "sleep", &["--ms", "2000", "--timeout", "500"]);
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"]["name"], "RpcResponseTimeoutError", "{v}");

    // Killing the server mid-sleep gives the client an error at once, not at its timeout.
    let client = {
        let tb = tb.clone();
        std::thread::spawn(move || {
            sofa_client(&tb, "sleep", &["--ms", "10000", "--timeout", "20000"])
        })
    };
    // Killed while the call is in flight: once the server has started the sleep.
    assert!(
        eventually(Duration::from_secs(20), || b
            .log_text()
            .lines()
            .any(|l| l.trim() == "SLEEPING 10000")),
        "the server never started the sleep:\n{}",
        b.log_text()
    );
    // From the kill, not from the client's start (node's start-up is no part of it).
    let started = Instant::now();
    b.signal("KILL");
    let v = client.join().unwrap();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"]["name"], "RpcSocketCloseError", "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}: {v}",
        started.elapsed()
    );
}
