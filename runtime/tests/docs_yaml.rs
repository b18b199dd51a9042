//! Every YAML block of `README.md` and `docs/**/*.md` goes through the config loader that
//! `sluice validate` uses ([`sluice_runtime::server::load_config`]), so the documentation never
//! shows a config the code refuses (or accepts one it says is refused).
//!
//! The same file checks the book itself: `book.toml` points mdBook at `docs/`, `docs/SUMMARY.md`
//! lists every page once, and every relative link of the README and the book leads to a file
//! (and, for a `#fragment`, a heading) that exists.
//!
//! A fenced block's info string says what it is:
//!
//! - ```` ```yaml ````: a whole config; it must load;
//! - ```` ```yaml fragment ````: a part of a config (a section shown alone, with `...`
//!   placeholders); skipped, and counted in the report with where it is;
//! - ```` ```yaml invalid ````: a config that must be refused; the fenced block right after it
//!   (```` ```text ````) holds the problems, and each of its lines must be in the error;
//! - ```` ```yaml kubernetes ````: Kubernetes manifests, not a Sluice config: each document must
//!   parse and have `apiVersion` and `kind`, and every `*.yaml` entry of a ConfigMap's `data`
//!   (a Sluice config mounted into the pod) must load. The manifests under `configs/deploy/`
//!   are checked the same way.
//!
//! TLS files named under `/etc/sluice/certs/` in a block are made for it by the test (a test CA
//! signs each `NAME.pem` + `NAME.key` pair; a `NAME.pem` with `ca` in its name and no key is a
//! CA certificate), and the block is loaded with those paths pointing at them: examples show
//! realistic paths and are still checked whole, files included.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A fenced block: the file and line of its opening fence, its info string, its text.
struct Block {
    file: PathBuf,
    line: usize,
    info: String,
    text: String,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `README.md` and every `.md` under `docs/`, sorted.
fn documents() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "md") {
                out.push(p);
            }
        }
    }
    let mut out = vec![repo().join("README.md")];
    walk(&repo().join("docs"), &mut out);
    out
}

/// The fenced blocks of a Markdown text (fences may be indented, as in a list item; the
/// indent is removed from the block's lines).
fn blocks(file: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = Vec::new();
    let mut open: Option<(usize, usize, String, String)> = None; // line, indent, info, text
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None => {
                // CommonMark: the info string of a backtick fence has no backtick (a line that
                // starts with an inline code span is not a fence).
                if let Some(info) = trimmed.strip_prefix("```")
                    && !info.contains('`')
                {
                    open = Some((i + 1, indent, info.trim().to_owned(), String::new()));
                }
            }
            Some((start, ind, info, body)) => {
                if trimmed.starts_with("```") {
                    out.push(Block {
                        file: file.to_path_buf(),
                        line: *start,
                        info: std::mem::take(info),
                        text: std::mem::take(body),
                    });
                    open = None;
                } else {
                    body.push_str(line.get(*ind..).unwrap_or(line.trim_start()));
                    body.push('\n');
                }
            }
        }
    }
    assert!(
        open.is_none(),
        "{}: a fenced block is not closed",
        file.display()
    );
    out
}

#[test]
fn every_yaml_block_in_the_docs_loads_or_is_refused_as_documented() {
    let dir = std::env::temp_dir().join(format!("sluice-docs-yaml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let all: Vec<Block> = documents().iter().flat_map(|f| blocks(f)).collect();
    let (mut loaded, mut refused, mut fragments) = (0, 0, Vec::new());
    let mut failures = Vec::new();
    for (n, b) in all.iter().enumerate() {
        let mut words = b.info.split_whitespace();
        if words.next() != Some("yaml") {
            continue;
        }
        let at = format!(
            "{}:{}",
            b.file.strip_prefix(repo()).unwrap().display(),
            b.line
        );
        let path = dir.join(format!("block-{n}.yaml"));
        let text = with_test_certificates(&b.text, &dir.join(format!("certs-{n}")));
        std::fs::write(&path, text).unwrap();
        let outcome = sluice_runtime::server::load_config(&path).map_err(|e| e.to_string());
        match words.next() {
            None => match outcome {
                Ok(config) => {
                    loaded += 1;
                    if let Err(e) = dump_loads_back(&config) {
                        failures.push(format!("{at}: {e}"));
                    }
                }
                Err(e) => failures.push(format!("{at}: refused:\n{e}")),
            },
            Some("fragment") => fragments.push(at),
            Some("invalid") => {
                let expected = all
                    .get(n + 1)
                    .filter(|next| next.info == "text")
                    .map(|next| next.text.clone());
                match (outcome, expected) {
                    (Ok(_), _) => failures.push(format!("{at}: marked invalid, but it loads")),
                    (Err(_), None) => failures.push(format!(
                        "{at}: an invalid example needs a ```text block after it with its errors"
                    )),
                    (Err(e), Some(expected)) => {
                        let missing: Vec<&str> = expected
                            .lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !e.contains(l))
                            .collect();
                        if missing.is_empty() {
                            refused += 1;
                        } else {
                            failures.push(format!(
                                "{at}: refused, but without {missing:?}; the error is:\n{e}"
                            ));
                        }
                    }
                }
            }
            Some("kubernetes") => match check_manifests(&b.text, &dir.join(format!("cm-{n}"))) {
                Ok(configs) => loaded += configs,
                Err(e) => failures.push(format!("{at}: {e}")),
            },
            Some(other) => failures.push(format!(
                "{at}: unknown marker `{other}` (use `yaml`, `yaml fragment`, `yaml invalid` or \
                 `yaml kubernetes`)"
            )),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    // Written past the test harness's capture, so that a plain `cargo test` shows what was
    // skipped.
    let _ = writeln!(
        std::io::stderr(),
        "docs YAML: {loaded} whole configs loaded, {refused} invalid examples refused as \
         documented, {} fragments skipped (parts of a config, not whole ones): {}",
        fragments.len(),
        fragments.join(", ")
    );
    assert!(
        failures.is_empty(),
        "{} YAML block(s) of the docs do not match the config loader:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(loaded > 0, "no YAML block found: is the docs walk broken?");
}

/// The admin API's `/config_dump` of `config` is a config: it loads back into the same one.
fn dump_loads_back(config: &sluice_core::config::Config) -> Result<(), String> {
    let dump = sluice_runtime::admin::config_dump(config);
    match sluice_core::config::Config::from_tree(&dump) {
        Ok(back) if back == *config => Ok(()),
        Ok(back) => Err(format!(
            "its config dump loads back into another config:\n{config:?}\n{back:?}"
        )),
        Err(e) => Err(format!(
            "its config dump does not load back:\n{e}\n{dump:#}"
        )),
    }
}

/// Every config of `configs/` dumps into a config that loads back into it.
#[test]
fn the_example_configs_dump_into_configs_that_load_back() {
    let mut n = 0;
    for entry in std::fs::read_dir(repo().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let config = sluice_runtime::server::load_config(&path).unwrap();
        dump_loads_back(&config).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        n += 1;
    }
    assert!(n >= 8, "only {n} configs in configs/");
}

/// The Istio-shaped filter chains example of `listeners.md` does what its comments say: mutual
/// TLS with Istio's ALPN and plaintext to port 8080 get 8080's chains, a public name its own
/// chain, any other port the passthrough chain — and TLS to 8080 without the mesh's ALPN, which
/// neither 8080 chain takes, is closed: no listener filter (default chain) passes it through.
#[test]
fn the_filter_chains_example_passes_through_other_ports_only() {
    use sluice_core::config::ListenerFilter;
    use sluice_core::filter_chain::{ConnectionFacts, select};
    let file = repo().join("docs/configuration/listeners.md");
    let block = blocks(&file)
        .into_iter()
        .find(|b| b.info == "yaml" && b.text.contains("filter_chains:"))
        .expect("the filter chains example");
    let dir = std::env::temp_dir().join(format!("sluice-docs-chains-{}", std::process::id()));
    let path = dir.join("chains.yaml");
    let text = with_test_certificates(&block.text, &dir.join("certs"));
    std::fs::write(&path, text).unwrap();
    let config = sluice_runtime::server::load_config(&path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let l = &config.listeners[0];
    let pick = |port: u16, tls: bool, server_name: Option<&str>, alpn: &[Vec<u8>]| {
        select(
            &l.filter_chains,
            &ConnectionFacts {
                destination_port: port,
                tls,
                server_name,
                alpn,
                plaintext_protocol: None,
            },
        )
    };
    let istio = [b"istio-peer-exchange".to_vec(), b"istio".to_vec()];
    let h2 = [b"h2".to_vec()];
    assert_eq!(pick(8080, true, Some("app"), &istio), Some(0));
    assert_eq!(pick(8080, false, None, &[]), Some(1));
    assert_eq!(pick(443, true, Some("api.example.com"), &h2), Some(2));
    assert_eq!(pick(5432, false, None, &[]), Some(3));
    assert_eq!(pick(443, true, Some("other.example"), &h2), Some(3));
    // TLS to 8080 without Istio's ALPN: no chain is left, and the listener has no filter of
    // its own to take it — closed, not passed through around the mutual TLS.
    assert_eq!(pick(8080, true, Some("app"), &h2), None);
    assert!(
        matches!(l.filter, ListenerFilter::Close),
        "the listener's own filter would take what 8080's chains refuse: {:?}",
        l.filter
    );
}

/// The sniffed-HTTP example of `listeners.md` does what its comments say: plaintext HTTP/1.1
/// and h2c to another port get the HTTP chain (sniffed from real first bytes), other
/// plaintext the TCP chain, port 8080 its own chain without a sniff, 15006 the blackhole.
#[test]
fn the_sniffed_http_example_splits_plaintext_by_its_first_bytes() {
    use sluice_core::detect::sniff_http;
    use sluice_core::filter_chain::{ConnectionFacts, needs_http_sniff, select};
    let file = repo().join("docs/configuration/listeners.md");
    let block = blocks(&file)
        .into_iter()
        .find(|b| b.info == "yaml" && b.text.contains("application_protocols: [http/1.1, h2c]"))
        .expect("the sniffed HTTP example");
    let dir = std::env::temp_dir().join(format!("sluice-docs-sniff-{}", std::process::id()));
    let path = dir.join("sniff.yaml");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&path, &block.text).unwrap();
    let config = sluice_runtime::server::load_config(&path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let l = &config.listeners[0];
    assert!(l.listener_filters_timeout.is_zero(), "0s: no limit");
    let pick = |port: u16, first: &[u8]| {
        let sniffed = (l.http_inspector.runs_on(port) && needs_http_sniff(&l.filter_chains, port))
            .then(|| sniff_http(first).application_protocol())
            .flatten();
        select(
            &l.filter_chains,
            &ConnectionFacts {
                destination_port: port,
                plaintext_protocol: sniffed,
                ..ConnectionFacts::default()
            },
        )
    };
    let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(pick(9090, get), Some(2));
    assert_eq!(pick(9090, sluice_core::http2::PREFACE), Some(2));
    assert_eq!(pick(9090, b"\x00\x00\x00\x0apostgres"), Some(3));
    assert_eq!(pick(8080, get), Some(1));
    assert!(!l.http_inspector.runs_on(8080) && !l.tls_inspector.runs_on(15006));
    assert_eq!(pick(15006, get), Some(0));
}

/// Checks Kubernetes manifests (one or more YAML documents): each parses and has `apiVersion`
/// and `kind`; each `*.yaml` entry of a ConfigMap's `data` loads as a Sluice config. Returns how
/// many Sluice configs it loaded.
fn check_manifests(text: &str, scratch: &Path) -> Result<usize, String> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| format!("not YAML: {e}"))?;
    if docs.is_empty() {
        return Err("no manifest".into());
    }
    let mut configs = 0;
    for (i, doc) in docs.iter().enumerate() {
        let (Some(_), Some(kind)) = (doc["apiVersion"].as_str(), doc["kind"].as_str()) else {
            return Err(format!("document {i}: no apiVersion or kind"));
        };
        if kind != "ConfigMap" {
            continue;
        }
        for (key, value) in doc["data"].as_object().into_iter().flatten() {
            if !key.ends_with(".yaml") {
                continue;
            }
            let text = value
                .as_str()
                .ok_or_else(|| format!("ConfigMap data {key} is not a string"))?;
            let path = scratch.with_extension(format!("{i}.{key}"));
            std::fs::write(&path, text).unwrap();
            sluice_runtime::server::load_config(&path)
                .map_err(|e| format!("ConfigMap data {key}: refused:\n{e}"))?;
            configs += 1;
        }
    }
    Ok(configs)
}

#[test]
fn the_deployment_manifests_are_valid_and_their_sluice_configs_load() {
    let dir = std::env::temp_dir().join(format!("sluice-deploy-yaml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut checked = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(repo().join("configs/deploy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).unwrap();
        let configs = check_manifests(&text, &dir.join("manifest"))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            configs > 0,
            "{}: no Sluice config in a ConfigMap",
            path.display()
        );
        checked += 1;
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(checked > 0, "no manifest under configs/deploy");
}

/// `text` with each `/etc/sluice/certs/FILE` it names made under `dir` and the path rewritten
/// to it (see the module docs); `text` as is when it names none.
fn with_test_certificates(text: &str, dir: &Path) -> String {
    const PREFIX: &str = "/etc/sluice/certs/";
    let mut names: Vec<&str> = text
        .match_indices(PREFIX)
        .map(|(i, _)| {
            let rest = &text[i + PREFIX.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    if names.is_empty() {
        return text.to_owned();
    }
    names.sort_unstable();
    names.dedup();
    std::fs::create_dir_all(dir).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca =
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
    for name in &names {
        let Some(stem) = name.strip_suffix(".pem") else {
            continue;
        };
        let key_name = format!("{stem}.key");
        if !names.contains(&key_name.as_str()) {
            // A CA bundle (client_ca).
            std::fs::write(dir.join(name), ca.pem()).unwrap();
            continue;
        }
        let params = rcgen::CertificateParams::new(vec![format!("{stem}.example")]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(name), cert.pem()).unwrap();
        std::fs::write(dir.join(&key_name), key.serialize_pem()).unwrap();
    }
    text.replace(PREFIX, &format!("{}/", dir.display()))
}

// The book: `book.toml` points mdBook at `docs/`, `docs/SUMMARY.md` lists every page, and every
// relative link of the README and the book leads to a file (and heading) that exists.

/// The lines of a Markdown text outside its fenced blocks, with their line numbers (from 1).
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") && (fenced || !trimmed[3..].contains('`')) {
            fenced = !fenced;
        } else if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// The targets of the inline links of a line: `[text](target)`, up to the first space or `)`.
fn link_targets(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let end = after.find([')', ' ']).unwrap_or(after.len());
        out.push(&after[..end]);
        rest = &after[end..];
    }
    out
}

/// A heading's anchor as mdBook and the forge make it: lower case, letters, digits, `-` and `_`
/// kept, spaces made `-`, anything else dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's headings.
fn anchors(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    prose(&text)
        .into_iter()
        .filter_map(|(_, l)| {
            let h = l.trim_start_matches('#');
            (h.len() < l.len() && h.starts_with(' ')).then(|| anchor(h))
        })
        .collect()
}

/// `book.toml`'s value of `key` in `[table]` (a plain `key = value` line; quotes removed).
fn book_setting(toml: &str, table: &str, key: &str) -> Option<String> {
    let mut current = "";
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            current = line;
        } else if current == format!("[{table}]")
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            return Some(v.trim().trim_matches('"').to_owned());
        }
    }
    None
}

#[test]
fn the_book_builds_from_docs_and_summary_lists_every_page() {
    let toml = std::fs::read_to_string(repo().join("book.toml")).expect(
        "book.toml at the repository root (mdBook's config; without it mdBook looks in src/)",
    );
    assert_eq!(
        book_setting(&toml, "book", "src").as_deref(),
        Some("docs"),
        "book.toml: [book] src must be \"docs\" (mdBook's default is src/)"
    );
    assert_eq!(
        book_setting(&toml, "build", "create-missing").as_deref(),
        Some("false"),
        "book.toml: [build] create-missing must be false (a page SUMMARY.md lists but the \
         repository lacks must fail the build, not be made up empty)"
    );
    let docs = repo().join("docs");
    let summary = std::fs::read_to_string(docs.join("SUMMARY.md")).unwrap();
    let mut listed: Vec<PathBuf> = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in prose(&summary) {
        for t in link_targets(line) {
            let page = docs.join(t);
            if !page.is_file() {
                problems.push(format!("docs/SUMMARY.md:{n}: {t} does not exist"));
            } else if listed.contains(&page) {
                problems.push(format!("docs/SUMMARY.md:{n}: {t} is listed twice"));
            }
            listed.push(page);
        }
    }
    for page in documents().into_iter().filter(|p| p.starts_with(&docs)) {
        if !page.ends_with("SUMMARY.md") && !listed.contains(&page) {
            let name = page.strip_prefix(&docs).unwrap().display();
            problems.push(format!(
                "docs/{name} is not in docs/SUMMARY.md (mdBook would leave it out of the book)"
            ));
        }
    }
    assert!(problems.is_empty(), "the book:\n{}", problems.join("\n"));
}

#[test]
fn every_relative_link_in_the_readme_and_the_book_resolves() {
    let mut checked = 0;
    let mut broken = Vec::new();
    for file in documents() {
        let text = std::fs::read_to_string(&file).unwrap();
        let at = file.strip_prefix(repo()).unwrap().display().to_string();
        for (n, line) in prose(&text) {
            for t in link_targets(line) {
                if t.is_empty() || t.contains("://") || t.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, fragment) = t.split_once('#').unwrap_or((t, ""));
                let target = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().unwrap().join(path)
                };
                if !target.exists() {
                    broken.push(format!("{at}:{n}: {t}: no such file"));
                } else if !fragment.is_empty()
                    && target.extension().is_some_and(|e| e == "md")
                    && !anchors(&target).iter().any(|a| a == fragment)
                {
                    broken.push(format!("{at}:{n}: {t}: no heading with that anchor"));
                }
            }
        }
    }
    eprintln!("{checked} relative links checked");
    assert!(
        checked > 100,
        "only {checked} links found: the link scan is broken"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// No table of the README, the book or BENCHMARKS.md is cut in two by a blank line: rows after
/// it would render as a paragraph of pipes (a table starts with a header row and a `|---`
/// separator row; a row that follows a blank line without them is a broken table's).
#[test]
fn no_table_is_broken_by_a_blank_line() {
    let mut files = documents();
    files.push(repo().join("BENCHMARKS.md"));
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let lines = prose(&text);
        for w in lines.windows(3) {
            let [(_, before), (_, blank), (n, row)] = w else {
                continue;
            };
            let next_is_separator =
                lines
                    .iter()
                    .find(|(m, _)| *m == n + 1)
                    .is_some_and(|(_, l)| {
                        l.trim_start().starts_with("|-") || l.trim_start().starts_with("| -")
                    });
            if before.trim_start().starts_with('|')
                && blank.trim().is_empty()
                && row.trim_start().starts_with('|')
                && !next_is_separator
            {
                broken.push(format!("{}:{n}: {row}", file.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "table rows after a blank line:\n{}",
        broken.join("\n")
    );
}
