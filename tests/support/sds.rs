//! The Python SDS server of `tests/sds_server.py` (grpcio and the `xds-protos` package's
//! `SecretDiscoveryService`, as Istio's agent serves it — not this project's code) on a Unix
//! socket, as a separate process, serving the secrets written to a file it watches.

use std::path::{Path, PathBuf};

use super::{Proc, TempDir, python, repo, spawn};

/// A secret the server holds: a certificate (chain and key PEM) or a CA (PEM).
pub enum Held<'a> {
    Certificate(&'a Path, &'a Path),
    Ca(&'a Path),
}

pub struct SdsServer {
    pub proc: Proc,
    pub socket: PathBuf,
    secrets: PathBuf,
    log: PathBuf,
}

impl SdsServer {
    /// Starts the server on `socket`, serving `secrets` at `version`; waits until the socket
    /// exists.
    pub fn start(
        dir: &TempDir,
        socket: &Path,
        version: &str,
        secrets: &[(&str, Held<'_>)],
    ) -> Self {
        let file = dir.path().join("sds-secrets.json");
        let log = dir.path().join("sds-requests.jsonl");
        let server = SdsServer {
            proc: spawn_server(dir, socket, &file, &log),
            socket: socket.to_owned(),
            secrets: file,
            log,
        };
        server.serve(version, secrets);
        server.wait_socket();
        server
    }

    /// Starts the server again (after [`SdsServer::kill`]), on the same socket and files.
    pub fn restart(&mut self, dir: &TempDir) {
        self.proc = spawn_server(dir, &self.socket, &self.secrets, &self.log);
        self.wait_socket();
    }

    /// Kills the server (SIGKILL, as a crashed agent) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }

    fn wait_socket(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "sds_server did not listen on {}: {}",
                self.socket.display(),
                self.proc.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Serves the next secrets (written beside, then renamed over the watched file).
    pub fn serve(&self, version: &str, secrets: &[(&str, Held<'_>)]) {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let mut map = serde_json::Map::new();
        for (name, held) in secrets {
            let v = match held {
                Held::Certificate(chain, key) => {
                    serde_json::json!({ "chain": read(chain), "key": read(key) })
                }
                Held::Ca(ca) => serde_json::json!({ "ca": read(ca) }),
            };
            map.insert((*name).to_owned(), v);
        }
        let tmp = self.secrets.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::json!({ "version": version, "secrets": map }).to_string(),
        )
        .unwrap();
        std::fs::rename(&tmp, &self.secrets).unwrap();
    }

    /// The requests it received (one JSON object each: `version_info`, `nonce`, `error`,
    /// `node`, `names`).
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// How many requests ACK a response at `version` (a nonce, no error).
    pub fn acked(&self, version: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                r["nonce"].as_str().is_some_and(|n| !n.is_empty())
                    && r["error"].is_null()
                    && r["version_info"] == version
            })
            .count()
    }
}

fn spawn_server(dir: &TempDir, socket: &Path, secrets: &Path, log: &Path) -> Proc {
    let script = repo().join("tests/sds_server.py");
    spawn(
        dir,
        "sds_server",
        &python(),
        &[
            script.to_str().unwrap(),
            socket.to_str().unwrap(),
            secrets.to_str().unwrap(),
            log.to_str().unwrap(),
        ],
    )
}
