//! Network namespaces for end-to-end tests that need their own network (transparent capture,
//! a DNS server on port 53): created by name, deleted on drop — with every veth end, address,
//! rule and the namespace's `/etc/netns/NAME` files — so that a failing test leaves nothing.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::{Proc, REQUIRE_PEERS_VAR, TempDir, require_peers, spawn};

/// A network namespace, deleted on drop (with the veth ends and the rules in it).
pub struct Netns(pub String);

impl Netns {
    /// Creates namespace `name` (removing a leftover of a killed earlier run first).
    pub fn new(name: String) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = std::fs::remove_dir_all(Self::etc_dir(&name));
        ip(&["netns", "add", &name]);
        Netns(name)
    }

    fn etc_dir(name: &str) -> PathBuf {
        PathBuf::from("/etc/netns").join(name)
    }

    /// Gives the namespace its own `/etc/FILE` (`ip netns exec` bind-mounts
    /// `/etc/netns/NAME/FILE` over it for the programs it runs), e.g. `resolv.conf`.
    pub fn etc_file(&self, file: &str, contents: &str) {
        let dir = Self::etc_dir(&self.0);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NAME");
        std::fs::write(dir.join(file), contents).expect("write /etc/netns/NAME/FILE");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
        let _ = std::fs::remove_dir_all(Self::etc_dir(&self.0));
    }
}

/// Runs `ip args`, which must succeed.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `program args` in namespace `ns`.
pub fn in_ns(ns: &Netns, program: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &ns.0, program])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip netns exec {} {program}: {e}", ns.0))
}

/// Starts `program args` in namespace `ns` (`ip netns exec` execs it: the pid is the program's).
pub fn spawn_in(dir: &TempDir, ns: &Netns, name: &str, program: &str, args: &[&str]) -> Proc {
    let mut all = vec!["netns", "exec", &ns.0, program];
    all.extend_from_slice(args);
    spawn(dir, name, "ip", &all)
}

/// Waits until something accepts on `ip:port` as seen from namespace `ns`.
pub fn wait_listening_in(ns: &Netns, ip: &str, port: u16, proc: &mut Proc) {
    let end = Instant::now() + Duration::from_secs(20);
    let probe = format!("import socket; socket.create_connection(({ip:?}, {port}), 1).close()");
    while Instant::now() < end {
        if in_ns(ns, "python3", &["-c", &probe]).status.success() {
            return;
        }
        if let Some(status) = proc.child.try_wait().unwrap() {
            panic!("{} exited ({status}):\n{}", proc.name, proc.log_text());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{} not listening on {ip}:{port}:\n{}",
        proc.name,
        proc.log_text()
    );
}

/// Whether this machine can run namespace tests (root and `peers`); says why not when it
/// cannot, naming the test as `binary::test` (a failure when [`REQUIRE_PEERS_VAR`] is set).
pub fn can_run(binary: &str, peers: &[&str]) -> bool {
    if !require_peers(peers) {
        return false;
    }
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        let test = std::thread::current().name().unwrap_or("?").to_owned();
        if std::env::var_os(REQUIRE_PEERS_VAR).is_some_and(|v| !v.is_empty() && v != "0") {
            panic!("{binary}::{test}: needs root (network namespaces)");
        }
        eprintln!("SKIPPED {binary}::{test}: needs root (network namespaces)");
        return false;
    }
    true
}
