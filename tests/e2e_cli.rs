//! End-to-end tests of the `sluice` command line itself: what it prints when it cannot start
//! (once, without colour escapes in a file), and how it takes its config path.

mod support;

use std::io::Write as _;
use std::net::TcpListener;
use std::process::{Command, Stdio};

use support::*;

fn config(admin_port: u16, listen_port: u16) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:{admin_port} }}\n\
         listeners:\n  - {{ name: echo_in, address: 127.0.0.1:{listen_port}, echo: {{}} }}\n"
    )
}

/// A fatal startup error (the admin address is taken) is printed once, and a log going to a
/// file (not a terminal) carries no ANSI colour escapes.
#[test]
fn a_fatal_error_is_printed_once_without_colour_in_a_file() {
    if !require_peers(&[]) {
        return;
    }
    let dir = TempDir::new("cli-fatal");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_port = taken.local_addr().unwrap().port();
    let path = dir.write("sluice.yaml", &config(admin_port, free_port()));
    let out = Command::new(sluice_bin())
        .args(["run", "-c", path.to_str().unwrap(), "--workers", "1"])
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let needle = format!("cannot listen on 127.0.0.1:{admin_port}");
    assert_eq!(
        stderr.matches(&needle).count(),
        1,
        "the fatal error once:\n{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour escapes when stderr is not a terminal:\n{stderr}"
    );
}

/// `sluice validate FILE` without `-c`, and `-c -` reading the config from standard input.
#[test]
fn validate_takes_the_path_alone_or_the_config_on_stdin() {
    if !require_peers(&[]) {
        return;
    }
    let http = repo().join("configs/http.yaml");
    let out = Command::new(sluice_bin())
        .args(["validate", http.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("http.yaml: ok ("));

    let on_stdin = |text: &str| {
        let mut child = Command::new(sluice_bin())
            .args(["validate", "-c", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = on_stdin(&std::fs::read_to_string(&http).unwrap());
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("<stdin>: ok ("));
    let out = on_stdin("listeners: [ { name: x, address: nowhere } ]\n");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("<stdin>: "),
        "{out:?}"
    );
}

/// A second instance (another config, so another control socket) whose listener address the
/// first one serves refuses to start, naming the listener and the address, instead of sharing
/// the port through `SO_REUSEPORT` (the kernel would split the connections between the two);
/// the first instance keeps every connection.
#[test]
fn a_second_instance_on_a_listener_address_refuses_to_start() {
    if !require_peers(&[]) {
        return;
    }
    let (first_dir, second_dir) = (TempDir::new("cli-first"), TempDir::new("cli-second"));
    let listen = free_port();
    let first_admin = free_port();
    let mut first = start_sluice(&first_dir, &config(first_admin, listen), 2, addr(listen));
    wait_listening(addr(first_admin), &mut first);

    let second_admin = free_port();
    let text = format!(
        "admin: {{ address: 127.0.0.1:{second_admin} }}\n\
         listeners:\n  - {{ name: intruder, address: 127.0.0.1:{listen}, echo: {{}} }}\n"
    );
    let path = second_dir.write("other.yaml", &text);
    let mut second = spawn(
        &second_dir,
        "second",
        sluice_bin(),
        &["run", "-c", path.to_str().unwrap(), "--workers", "2"],
    );
    let status = second.wait_exit(std::time::Duration::from_secs(20));
    let stderr = second.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "listeners[0] (intruder): cannot listen on 127.0.0.1:{listen}: address already in use"
        )),
        "{stderr}"
    );
    // Every connection still reaches the first instance.
    for i in 0..20u8 {
        let got = echo_once(addr(listen), &[b'a' + i]).expect("the first instance answers");
        assert_eq!(got, [b'a' + i]);
    }
    // ... and is counted there: the 20 echoes, plus the start-up check's connection.
    let (status, stats) = http_request(
        addr(first_admin),
        "GET",
        "/stats?filter=listener.echo_in.downstream_cx_total",
    );
    assert_eq!(status, 200);
    let counted: u64 = stats
        .split(": ")
        .nth(1)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(counted >= 20, "{stats}");
}

/// `validate` points at the place: a YAML syntax error as `FILE:LINE:COL: message` with the
/// offending line and a caret under the column (it came out on one line naming `<input>`), and
/// an unknown field the same way, at its key, with the known field it is a typo of.
#[test]
fn validate_points_at_the_line_and_column_of_each_mistake() {
    if !require_peers(&[]) {
        return;
    }
    let dir = TempDir::new("cli-positions");
    let syntax = dir.write(
        "syntax.yaml",
        "listeners:\n  - name: a\n    address: 127.0.0.1:1000\n    echo: {}\n  bad: [\n",
    );
    let out = Command::new(sluice_bin())
        .args(["validate", syntax.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = syntax.display();
    assert!(
        stderr.contains(&format!(
            "{file}:5:3: not valid YAML: while parsing a block collection, did not find expected '-' indicator"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("\n5 |   bad: [\n  |   ^\n"),
        "the line and a caret under the column:\n{stderr}"
    );
    assert!(!stderr.contains("<input>"), "{stderr}");

    let typo = dir.write(
        "typo.yaml",
        "listeners:\n  - { name: a, address: 127.0.0.1:1000, tcp_proxy: { cluster: c } }\n\
         clusters:\n  - name: c\n    conect_timeout: 1s\n    hosts: [ { address: 127.0.0.1:1 } ]\n",
    );
    let out = Command::new(sluice_bin())
        .args(["validate", typo.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = typo.display();
    assert!(
        stderr.contains(&format!(
            "{file}:5:5: clusters[0].conect_timeout: unknown field ("
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("; did you mean 'connect_timeout'?\n5 |     conect_timeout: 1s\n  |     ^"),
        "{stderr}"
    );
}
