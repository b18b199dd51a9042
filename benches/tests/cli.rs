//! The command lines of this crate's tools (`grpc-echo`, `bolt-load`, `xds-load`): every
//! invocation the benchmark scripts make still parses and does what they expect
//! (benches/loopback/h2load.sh: `grpc-echo frame --payload 64 --out PATH`, `serve --listen`,
//! `probe --target`; benches/loopback/harness.py: `bolt-load serve --listen`, `load --target
//! --connections --pipeline --seconds --payload --service`), the defaults are the documented
//! ones, `--help` describes every flag, and a bad argument is an error naming it with exit
//! status 2. Everything on loopback, in a few seconds; no proxy involved.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const GRPC_ECHO: &str = env!("CARGO_BIN_EXE_grpc-echo");
const BOLT_LOAD: &str = env!("CARGO_BIN_EXE_bolt-load");
const XDS_LOAD: &str = env!("CARGO_BIN_EXE_xds-load");

/// A child process killed when dropped (a failed assertion must not leave a server running).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{bin}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(addr: SocketAddr, server: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Some(status) = server.try_wait().unwrap() {
            panic!("the server exited ({status}) before listening on {addr}");
        }
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The one JSON line `bolt-load load` prints (it must have exited 0).
fn bolt_report(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "bolt-load load: {}\n{}",
        out.status,
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn grpc_echo_parses_what_h2load_sh_runs() {
    // `"$grpc_echo" frame --payload 64 --out "$dir/grpc-body.bin"`
    let dir = std::env::temp_dir().join(format!("sluice-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body = dir.join("grpc-body.bin");
    let out = run(
        GRPC_ECHO,
        &["frame", "--payload", "64", "--out", body.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bytes = std::fs::read(&body).unwrap();
    assert_eq!(bytes[..5], [0, 0, 0, 0, 64]);
    assert_eq!(&bytes[5..31], b"abcdefghijklmnopqrstuvwxyz");
    assert_eq!(bytes.len(), 5 + 64);
    // The default payload is 64 bytes too.
    let out = run(GRPC_ECHO, &["frame", "--out", body.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&body).unwrap(), bytes);
    let _ = std::fs::remove_dir_all(&dir);

    // `"$grpc_echo" serve --listen 127.0.0.1:$p_ge`, then
    // `"$grpc_echo" probe --target "127.0.0.1:$port"` (against it directly here).
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Killed(
        Command::new(GRPC_ECHO)
            .args(["serve", "--listen", &listen])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(listen.parse().unwrap(), &mut server.0);
    let out = run(GRPC_ECHO, &["probe", "--target", &listen]);
    assert!(out.status.success(), "probe: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok\n");
    let out = run(
        GRPC_ECHO,
        &["probe", "--target", &listen, "--payload", "1000"],
    );
    assert!(out.status.success(), "probe: {}", text(&out.stderr));
    drop(server);
    // Nothing listening any more: the probe says so and exits 1 (not 2: the arguments parsed).
    let out = run(GRPC_ECHO, &["probe", "--target", &listen]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).starts_with(&format!("grpc-echo probe {listen}: connect:")),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bolt_load_parses_what_harness_py_runs_with_the_documented_defaults() {
    // `bolt-load serve --listen 127.0.0.1:PORT` (port 0 here: it prints the one it got).
    let mut server = Killed(
        Command::new(BOLT_LOAD)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(server.0.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("bolt-load serving on ")
        .unwrap_or_else(|| panic!("bolt-load serve printed {line:?}"))
        .to_owned();

    // harness.py's bolt_load_argv, as its probe runs it (1 connection, pipeline 1, 0 s).
    let r = bolt_report(&run(
        BOLT_LOAD,
        &[
            "load",
            "--target",
            &addr,
            "--connections",
            "1",
            "--pipeline",
            "1",
            "--seconds",
            "0",
            "--payload",
            "64",
            "--service",
            "com.example.EchoService:1.0",
        ],
    ));
    assert_eq!(r["requests"], 1, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(
        (&r["connections"], &r["pipeline"], &r["payload"]),
        (&1.into(), &1.into(), &64.into()),
        "{r}"
    );

    // The defaults: 32 connections × pipeline 8 of 64 bytes (with --seconds 0 each connection
    // sends its pipeline once: 256 requests, all answered).
    let r = bolt_report(&run(
        BOLT_LOAD,
        &["load", "--target", &addr, "--seconds", "0"],
    ));
    assert_eq!(
        (&r["connections"], &r["pipeline"], &r["payload"]),
        (&32.into(), &8.into(), &64.into()),
        "{r}"
    );
    assert_eq!(r["requests"], 32 * 8, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    drop(server);
}

/// Each of these argument lists is refused by clap: exit status 2, nothing on stdout, and an
/// error on stderr that names `what`.
#[test]
fn bad_arguments_are_errors_naming_them_with_exit_status_2() {
    let cases: &[(&str, &[&str], &str)] = &[
        (GRPC_ECHO, &[], "Usage: grpc-echo <COMMAND>"),
        (GRPC_ECHO, &["echo"], "unrecognized subcommand 'echo'"),
        (GRPC_ECHO, &["serve"], "--listen <ADDR>"),
        (
            GRPC_ECHO,
            &["serve", "--listen", "localhost"],
            "invalid value 'localhost' for '--listen <ADDR>'",
        ),
        (
            GRPC_ECHO,
            &["probe", "--target", "127.0.0.1:1", "--payload=-1"],
            "invalid value '-1' for '--payload <N>'",
        ),
        (
            GRPC_ECHO,
            &["frame", "--out", "/dev/null", "--payload", "4294967296"],
            "invalid value '4294967296' for '--payload <N>'",
        ),
        (GRPC_ECHO, &["frame", "--payload", "64"], "--out <PATH>"),
        (BOLT_LOAD, &[], "Usage: bolt-load <COMMAND>"),
        (BOLT_LOAD, &["load"], "--target <ADDR>"),
        (
            BOLT_LOAD,
            &["load", "--target", "127.0.0.1:1", "--pipeline", "eight"],
            "invalid value 'eight' for '--pipeline <P>'",
        ),
        (
            BOLT_LOAD,
            &["load", "--target", "127.0.0.1:1", "--seconds"],
            "a value is required for '--seconds <S>'",
        ),
        (
            BOLT_LOAD,
            &["load", "--target", "127.0.0.1:1", "--duration", "5"],
            "unexpected argument '--duration'",
        ),
        (XDS_LOAD, &[], "--sluice <PATH>"),
        (
            XDS_LOAD,
            &["--sluice", "sluice", "--workers", "two"],
            "invalid value 'two' for '--workers <N>'",
        ),
        (
            XDS_LOAD,
            &["--sluice", "sluice", "--smoke", "yes"],
            "unexpected argument 'yes'",
        ),
    ];
    for (bin, args, what) in cases {
        let name = Path::new(bin).file_name().unwrap().to_string_lossy();
        let out = run(bin, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{name} {args:?}");
        assert!(
            stderr.contains(what),
            "{name} {args:?}: want {what:?} in\n{stderr}"
        );
    }
}

#[test]
fn help_describes_every_flag_with_its_default() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (GRPC_ECHO, &["--help"], &["serve", "probe", "frame"]),
        (
            GRPC_ECHO,
            &["serve", "-h"],
            &["--listen <ADDR>  The address to listen on"],
        ),
        (
            GRPC_ECHO,
            &["probe", "--help"],
            &["--target <ADDR>", "--payload <N>", "[default: 64]"],
        ),
        (
            GRPC_ECHO,
            &["frame", "--help"],
            &["--out <PATH>", "--payload <N>", "[default: 64]"],
        ),
        (BOLT_LOAD, &["--help"], &["serve", "load"]),
        (
            BOLT_LOAD,
            &["load", "-h"],
            &[
                "--target <ADDR>",
                "[default: 32]",
                "[default: 8]",
                "[default: 10]",
                "[default: 64]",
                "[default: com.example.EchoService:1.0]",
            ],
        ),
        (
            XDS_LOAD,
            &["--help"],
            &[
                "--sluice <PATH>",
                "--smoke",
                "--json",
                "--workers <N>              Workers of each `sluice run` process [default: 2]",
                "--endpoints <N>            Endpoints of the EDS cluster of the push-latency scenario [default: 1000; with --smoke: 20]",
                "--pushes <N>               Measured EDS pushes of that cluster's endpoints [default: 20; with --smoke: 3]",
                "--clusters <N>             EDS clusters of the memory scenario [default: 1000; with --smoke: 10]",
                "--cluster-endpoints <N>    Endpoints of each of those clusters [default: 3; with --smoke: 2]",
                "--cluster-pushes <N>       Measured pushes of all those clusters [default: 5; with --smoke: 2]",
                "--traffic-connections <N>  Keep-alive connections of the traffic scenario (requests during pushes) [default: 4]",
                "--traffic-secs <SECS>      Seconds of each of the traffic scenario's three phases (no push, pushes, pushes built but not sent) [default: 5; with --smoke: 1]",
            ],
        ),
    ];
    for (bin, args, wanted) in cases {
        let name = Path::new(bin).file_name().unwrap().to_string_lossy();
        let out = run(bin, args);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{name} {args:?}: {}", out.status);
        for want in *wanted {
            assert!(
                stdout.contains(want),
                "{name} {args:?}: want {want:?} in\n{stdout}"
            );
        }
    }
}

/// `xds-load` with every flag parses and reaches the run: a `--sluice` that does not exist is
/// the run's error (exit status 1, naming the path), not an argument error.
#[test]
fn xds_load_parses_every_flag_and_runs_the_given_sluice() {
    let missing = "/nonexistent/sluice-for-the-cli-test";
    let out = run(
        XDS_LOAD,
        &[
            "--sluice",
            missing,
            "--smoke",
            "--workers",
            "1",
            "--endpoints",
            "5",
            "--pushes",
            "1",
            "--clusters",
            "2",
            "--cluster-endpoints",
            "1",
            "--cluster-pushes",
            "1",
            "--json",
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("xds-load: {missing}: ")),
        "{stderr}"
    );
    // Its work directory, left for the logs on an error.
    if let Some(dir) = stderr
        .lines()
        .find_map(|l| l.strip_prefix("(logs under ")?.strip_suffix(')'))
    {
        let _ = std::fs::remove_dir_all(dir);
    }
}
