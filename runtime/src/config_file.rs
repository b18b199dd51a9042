//! Reading and validating the config file, with errors a caller can tell apart: the file could
//! not be read ([`ConfigFileError`]: missing, not a regular file, too large, not UTF-8) or it
//! was read and is not a valid config ([`LoadConfigError::Invalid`], every problem with its
//! path, and its line and column in the text: [`problems`] renders them). Their `Display` is the text the CLI prints and a reload answers with; only there do
//! they become strings.

use std::io;
use std::path::{Path, PathBuf};
use std::string::FromUtf8Error;

use sluice_core::config::{Config, ConfigErrors};

/// The largest config file read (a bigger one is refused before it is read).
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024 * 1024;

/// Why a config file's text could not be read ([`read_config_file`]).
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// Opening, `fstat` or reading failed (a missing file, no permission, ...).
    #[error("{}: cannot read the config: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// It is a FIFO, a device, a directory or a socket.
    #[error("{}: cannot read the config: it is {kind}, not a regular file", path.display())]
    NotRegularFile {
        /// The file.
        path: PathBuf,
        /// What it is instead: `a FIFO`, `a directory`, ...
        kind: &'static str,
    },
    /// Its size is over [`MAX_CONFIG_BYTES`].
    #[error(
        "{}: cannot read the config: {len} bytes is over the limit of {MAX_CONFIG_BYTES} bytes \
         (64 MiB)",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// It grew over [`MAX_CONFIG_BYTES`] while it was read.
    #[error(
        "{}: cannot read the config: it grew over the limit of {MAX_CONFIG_BYTES} bytes (64 MiB) \
         while being read",
        path.display()
    )]
    GrewTooLarge {
        /// The file.
        path: PathBuf,
    },
    /// Its bytes are not UTF-8.
    #[error("{}: cannot read the config: not UTF-8 text ({source})", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Where the text stops being UTF-8.
        #[source]
        source: FromUtf8Error,
    },
}

/// Why a config file could not be loaded ([`load_config`]).
#[derive(Debug, thiserror::Error)]
pub enum LoadConfigError {
    /// The file could not be read.
    #[error(transparent)]
    File(#[from] ConfigFileError),
    /// The file was read; the config in it is not valid.
    #[error("{}", problems(&path.display().to_string(), text, errors))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Its text (the lines the problems point at are quoted from it).
        text: String,
        /// Every problem, each with its path in the config.
        errors: ConfigErrors,
    },
}

/// The reload's answer (to the admin API, the control socket, the log) is text: the error's
/// `Display`.
impl From<LoadConfigError> for String {
    fn from(e: LoadConfigError) -> String {
        e.to_string()
    }
}

/// `NAME: N problems in the config:`, then each problem in file order (those with no place in
/// the text first) as `NAME:LINE:COL: path: message` — the form editors and terminals jump to —
/// followed by the offending line and a caret under the column — unless that line holds PEM
/// (inline `{ inline: PEM }`, which may be a private key): then only the place is given.
pub fn problems(name: &str, text: &str, errors: &ConfigErrors) -> String {
    use std::fmt::Write as _;
    let n = errors.0.len();
    let mut out = format!(
        "{name}: {n} problem{} in the config:",
        if n == 1 { "" } else { "s" }
    );
    let mut sorted: Vec<&sluice_core::config::ConfigError> = errors.0.iter().collect();
    // Stable: problems at one place keep the decoder's order.
    sorted.sort_by_key(|e| e.position);
    let lines: Vec<&str> = text.lines().collect();
    let width = sorted
        .iter()
        .filter_map(|e| e.position)
        .map(|p| p.line.to_string().len())
        .max()
        .unwrap_or(1);
    for e in sorted {
        let Some(at) = e.position else {
            let _ = write!(out, "\n{name}: {e}");
            continue;
        };
        let _ = write!(out, "\n{name}:{}:{}: {e}", at.line, at.column);
        if let Some(line) = at.line.checked_sub(1).and_then(|i| lines.get(i))
            && !line.contains("-----BEGIN ")
        {
            // The caret lines up under the column: tabs before it are kept as tabs.
            let pad: String = line
                .chars()
                .take(at.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = write!(
                out,
                "\n{:>width$} | {line}\n{:>width$} | {pad}^",
                at.line, ""
            );
        }
    }
    out
}

/// Reads a config file's text: only a regular file (not a FIFO, a device such as `/dev/zero`, a
/// directory or a socket), of at most [`MAX_CONFIG_BYTES`]. The file is opened non-blocking,
/// so that a FIFO at the path never blocks the caller (the main thread on a reload) waiting for
/// a writer; it is refused once `fstat` shows what it is.
pub fn read_config_file(path: &Path) -> Result<String, ConfigFileError> {
    use std::io::Read as _;
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let read_error = |source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let kind = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(ConfigFileError::NotRegularFile {
            path: path.to_owned(),
            kind,
        });
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigFileError::TooLarge {
            path: path.to_owned(),
            len: meta.len(),
        });
    }
    // The limit holds even if the file grows while it is read.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigFileError::GrewTooLarge {
            path: path.to_owned(),
        });
    }
    String::from_utf8(bytes).map_err(|source| ConfigFileError::NotUtf8 {
        path: path.to_owned(),
        source,
    })
}

/// Reads and validates a config file ([`read_config_file`]); the error lists every problem
/// with its path.
pub fn load_config(path: &Path) -> Result<Config, LoadConfigError> {
    let text = read_config_file(path)?;
    config_from_text(&text).map_err(|errors| LoadConfigError::Invalid {
        path: path.to_owned(),
        text,
        errors,
    })
}

/// A config from its text: the core's decoding and validation, then what only the runtime can
/// check — the files the config names (TLS certificates, keys and CAs), each problem at its
/// config path.
pub fn config_from_text(text: &str) -> Result<Config, ConfigErrors> {
    let config = Config::from_yaml(text)?;
    let mut errors = crate::tls::check_config(&config);
    if errors.is_empty() {
        Ok(config)
    } else {
        let locator = sluice_core::config::yaml::locate::Locator::new(text);
        for e in &mut errors {
            e.position = locator.position(&e.path, &e.message);
        }
        Err(ConfigErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir()
                .join(format!("sluice-config-file-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const VALID: &str = "listeners:\n  - name: l\n    address: 127.0.0.1:1\n    echo: {}\n";

    #[test]
    fn a_valid_file_loads() {
        let dir = TempDir::new("valid");
        let path = dir.0.join("ok.yaml");
        std::fs::write(&path, VALID).unwrap();
        let config = load_config(&path).unwrap();
        assert_eq!(config.listeners[0].name, "l");
    }

    #[test]
    fn a_missing_file_is_a_read_failure_with_the_os_error() {
        let path = Path::new("/nonexistent/sluice.yaml");
        let err = load_config(path).unwrap_err();
        let LoadConfigError::File(ConfigFileError::Read { source, .. }) = &err else {
            panic!("{err:?}");
        };
        assert_eq!(source.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            format!("/nonexistent/sluice.yaml: cannot read the config: {source}")
        );
    }

    #[test]
    fn what_is_not_a_regular_file_says_what_it_is() {
        let dir = TempDir::new("kind");
        let err = read_config_file(&dir.0).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigFileError::NotRegularFile {
                    kind: "a directory",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{}: cannot read the config: it is a directory, not a regular file",
                dir.0.display()
            )
        );
        let err = read_config_file(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/dev/zero: cannot read the config: it is a character device, not a regular file"
        );
    }

    #[test]
    fn a_file_over_the_limit_is_too_large_before_it_is_read() {
        let dir = TempDir::new("large");
        let path = dir.0.join("big.yaml");
        // Sparse: no 64 MiB written.
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(MAX_CONFIG_BYTES + 1).unwrap();
        let err = load_config(&path).unwrap_err();
        assert!(
            matches!(
                err,
                LoadConfigError::File(ConfigFileError::TooLarge { len, .. })
                    if len == MAX_CONFIG_BYTES + 1
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{}: cannot read the config: 67108865 bytes is over the limit of 67108864 bytes \
                 (64 MiB)",
                path.display()
            )
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_named() {
        let dir = TempDir::new("utf8");
        let path = dir.0.join("bin.yaml");
        std::fs::write(&path, b"listeners: \xff\n").unwrap();
        let err = read_config_file(&path).unwrap_err();
        let ConfigFileError::NotUtf8 { source, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(
            err.to_string(),
            format!(
                "{}: cannot read the config: not UTF-8 text ({source})",
                path.display()
            )
        );
    }

    #[test]
    fn an_invalid_config_keeps_every_problem_with_its_path() {
        let dir = TempDir::new("invalid");
        let path = dir.0.join("bad.yaml");
        std::fs::write(
            &path,
            "listeners:\n  - name: l\n    address: nowhere\n    echo: {}\nclusterz: []\n",
        )
        .unwrap();
        let err = load_config(&path).unwrap_err();
        let LoadConfigError::Invalid { errors, .. } = &err else {
            panic!("{err:?}");
        };
        let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["listeners[0].address", "clusterz"]);
        // Each at its place (the unknown field at its key), with the line and a caret.
        let p = path.display();
        let expected = format!(
            "{p}: 2 problems in the config:\n\
             {p}:3:14: {}\n\
             3 |     address: nowhere\n\
             \x20 |              ^\n\
             {p}:5:1: {}\n\
             5 | clusterz: []\n\
             \x20 | ^",
            errors.0[0], errors.0[1]
        );
        assert_eq!(err.to_string(), expected);
        assert_eq!(String::from(err), expected);
    }

    /// A problem on a line holding inline PEM gives its place, never the line: it may hold a
    /// private key (issue 13, H1: `sluice validate` echoed a 1.4 MB key).
    #[test]
    fn a_problem_on_a_line_of_inline_pem_does_not_echo_it() {
        let dir = TempDir::new("pem");
        let path = dir.0.join("pem.yaml");
        let key = format!(
            "-----BEGIN PRIVATE KEY-----\\nSECRETBYTES\\n-----END PRIVATE KEY-----\\n{}",
            "# padding\\n".repeat(120_000)
        );
        std::fs::write(
            &path,
            format!(
                "listeners:\n  - name: t\n    address: 127.0.0.1:8443\n    tls:\n      certificates:\n        - cert_chain: a.pem\n          private_key: {{ inline: \"{key}\", secret: k }}\n    tcp_proxy: {{ cluster: a }}\nclusters:\n  - {{ name: a, hosts: [{{ address: 127.0.0.1:9001 }}] }}\n"
            ),
        )
        .unwrap();
        let text = load_config(&path).unwrap_err().to_string();
        assert!(
            text.contains(":7:") && text.contains("larger than 1048576 bytes"),
            "{}",
            &text[..text.len().min(600)]
        );
        assert!(
            !text.contains("SECRETBYTES") && !text.contains("BEGIN"),
            "{}",
            &text[..text.len().min(600)]
        );
    }
}
