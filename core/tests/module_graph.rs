//! The modules of `sluice-core` form a layered graph: no import cycle between top-level modules.
//!
//! The check reads every `core/src/**.rs` file, strips comments, and collects each path that
//! starts with `crate::`, `super::` or `self::` (in `use` items, in expressions, and in
//! attribute strings such as `serialize_with = "crate::…"`), grouped imports
//! (`crate::{a, b::c}`) included. A path is resolved against the file's module path (from its
//! place in the tree: `config/yaml/http.rs` is `config::yaml::http`), so a `super::` that
//! climbs out of a top-level module counts like a `crate::` path. Each path that lands in
//! another top-level module is an edge; the graph must have no cycle (every strongly connected
//! component is one module). A failure names each cycle with the file and line of every edge
//! in it.
//!
//! Nodes are the top-level modules of `lib.rs`, except the submodules listed in
//! [`SPLIT_NODES`], which count as nodes of their own: `config::yaml` (the YAML decoder) may
//! read the config model, but the model (the rest of `config`) must not read it back; and each
//! module of `upstream` (`host`, `lb`, `health`, `cluster`), which are layered among
//! themselves. A `pub use` of a module in `lib.rs` (`pub use upstream::{cluster, lb}`) is an
//! alias: `crate::cluster::…` counts as `upstream::cluster`.
//!
//! Exempt: test-only files (`tests.rs`, `*_tests.rs`, `test_support.rs`). They compile only
//! under `cfg(test)` and may exercise a module together with the modules above it (a config
//! test that checks a decoded route table compiles into a `Router`). An inline
//! `#[cfg(test)] mod tests { … }` is not exempt: keep such imports inside the module.
//!
//! Limits (a line-level reader, not a compiler): an inline `mod x { use super::…; }` is read
//! as if its `super` were the file's parent; paths through `pub use` re-exports count where
//! they are written, not where the item is defined.
#![allow(clippy::disallowed_methods)] // this test reads the source tree; the library does not

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Submodules that are nodes of their own (see the module doc).
const SPLIT_NODES: &[&str] = &[
    "config::yaml",
    "upstream::cluster",
    "upstream::health",
    "upstream::host",
    "upstream::lb",
];

/// The crate's top-level modules, and the names `lib.rs` re-exports them or their submodules
/// under (`pub use upstream::{cluster, lb};`: `cluster` → `upstream::cluster`).
struct Modules {
    top: BTreeSet<String>,
    aliases: BTreeMap<String, Vec<String>>,
}

/// Where an edge was seen.
#[derive(Clone, Debug)]
struct Site {
    file: String,
    line: usize,
}

type Graph = BTreeMap<String, BTreeMap<String, Site>>;

#[test]
fn core_modules_have_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    assert!(
        graph.contains_key("config") && graph.contains_key("router"),
        "the graph of {} looks empty: {graph:?}",
        src.display()
    );

    let cycles = cycles(&graph);
    assert!(
        cycles.is_empty(),
        "import cycles between the modules of sluice-core:\n{}",
        cycles.join("\n")
    );
}

/// The config model (all of `config` but its YAML decoder) imports no other module of the
/// crate: it is what every other module reads, and what xDS will decode into. (Its decoder,
/// `config::yaml`, may read modules below it, such as `pattern` to check that a regex compiles.)
#[test]
fn config_model_is_a_leaf() {
    let graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let edges = &graph["config"];
    assert!(
        edges.is_empty(),
        "the config model imports other modules: {}",
        edges
            .iter()
            .map(|(to, site)| format!("{to} ({}:{})", site.file, site.line))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// The checker itself: a cycle through `super::` and a grouped import is found and named;
/// comments, doc links and test files are ignored.
#[test]
fn the_checker_finds_a_cycle_and_ignores_comments_and_tests() {
    let modules = Modules {
        top: ["a", "b", "c", "config", "upstream"]
            .map(String::from)
            .into(),
        aliases: [(
            "cluster".to_owned(),
            vec!["upstream".to_owned(), "cluster".to_owned()],
        )]
        .into(),
    };
    let mut graph = Graph::new();
    let files = [
        (
            "a.rs",
            "use crate::{b::X, c};\n/// see [`crate::config::Y`]\n",
        ),
        (
            "b/mod.rs",
            "mod inner;\nfn f() { let s = \"//\"; crate::c::g(); }\n",
        ),
        (
            "b/inner.rs",
            "use super::super::a::Z; // crate::config::W\n",
        ),
        ("b/tests.rs", "use crate::config::Q;\n"),
        (
            "config/mod.rs",
            "#[serde(with = \"super::c::h\")]\nstruct S;\n",
        ),
        (
            "config/yaml/mod.rs",
            "use super::super::config::S;\nuse crate::c::x;\n",
        ),
        ("c.rs", "use crate::cluster::ClusterState;\n"),
        ("upstream/cluster.rs", "use super::lb::Balancer;\n"),
    ];
    for (path, text) in files {
        add_file(&mut graph, &modules, Path::new(path), text);
    }
    let edges: Vec<(String, String)> = graph
        .iter()
        .flat_map(|(f, e)| e.keys().map(move |t| (f.clone(), t.clone())))
        .collect();
    let expected = [
        ("a", "b"),
        ("a", "c"),
        ("b", "a"),
        ("b", "c"),
        ("c", "upstream::cluster"),
        ("config", "c"),
        ("config::yaml", "c"),
        ("config::yaml", "config"),
        ("upstream::cluster", "upstream::lb"),
    ]
    .map(|(f, t)| (f.to_owned(), t.to_owned()));
    assert_eq!(edges, expected);
    let found = cycles(&graph);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("a -> b -> a"), "{}", found[0]);
    assert!(found[0].contains("b/inner.rs:1"), "{}", found[0]);
}

fn module_graph(src: &Path) -> Graph {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read lib.rs");
    let lib = strip_comments(&lib);
    let top: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let name = l.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.trim().to_owned())
        })
        .collect();
    let mut aliases = BTreeMap::new();
    for line in lib.lines() {
        let Some(used) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let used = used.trim_end_matches(';');
        let Some((module, names)) = used.split_once("::") else {
            continue;
        };
        if !top.contains(module) {
            continue;
        }
        let names = names.trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            aliases.insert(name.to_owned(), vec![module.to_owned(), name.to_owned()]);
        }
    }
    let modules = Modules { top, aliases };
    let mut graph = Graph::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).expect("under src");
        let text = std::fs::read_to_string(&file).expect("read a source file");
        add_file(&mut graph, &modules, rel, &text);
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read a source directory")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

fn is_test_only(rel: &Path) -> bool {
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs" || name.ends_with("_tests.rs") || name == "test_support.rs"
}

/// The module path of a file from its place under `src/` (`lib.rs` is the crate root).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.strip_suffix(".rs").unwrap_or(&last);
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The graph node a resolved module path belongs to, if it names a module of the crate.
fn node_of(modules: &Modules, path: &[String]) -> Option<String> {
    let first = path.first()?;
    if let Some(target) = modules.aliases.get(first) {
        let expanded: Vec<String> = target.iter().chain(&path[1..]).cloned().collect();
        return node_of_module(modules, &expanded);
    }
    node_of_module(modules, path)
}

fn node_of_module(modules: &Modules, path: &[String]) -> Option<String> {
    let first = path.first()?;
    if !modules.top.contains(first) {
        // An item of the crate root (`crate::Duration`) or a module not in lib.rs.
        return None;
    }
    for split in SPLIT_NODES {
        let segments: Vec<&str> = split.split("::").collect();
        if path.len() >= segments.len() && path.iter().zip(&segments).all(|(a, b)| a == b) {
            return Some((*split).to_owned());
        }
    }
    Some(first.clone())
}

fn add_file(graph: &mut Graph, modules: &Modules, rel: &Path, text: &str) {
    let here = module_path(rel);
    let Some(from) = node_of(modules, &here) else {
        return;
    };
    graph.entry(from.clone()).or_default();
    if is_test_only(rel) {
        return;
    }
    let code = strip_comments(text);
    for (offset, path) in paths_in(&code) {
        let Some(resolved) = resolve(&here, &path) else {
            continue;
        };
        let Some(to) = node_of(modules, &resolved) else {
            continue;
        };
        if to != from {
            let line = code[..offset].matches('\n').count() + 1;
            graph
                .get_mut(&from)
                .expect("inserted above")
                .entry(to)
                .or_insert_with(|| Site {
                    file: rel.display().to_string(),
                    line,
                });
        }
    }
}

/// `path` (starting with `crate`, `super` or `self`) as an absolute module path.
fn resolve(here: &[String], path: &[String]) -> Option<Vec<String>> {
    let mut base: Vec<String> = match path.first()?.as_str() {
        "crate" => Vec::new(),
        _ => here.to_vec(),
    };
    let mut rest = &path[1..];
    if path[0] == "super" {
        base.pop()?;
    }
    while rest.first().is_some_and(|s| s == "super") {
        base.pop()?;
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// Every path in `code` that starts with `crate::`, `super::` or `self::`, with the byte offset
/// where it starts; grouped imports are expanded (`crate::{a::B, c}` gives `crate::a::B` and
/// `crate::c`) and may span lines.
fn paths_in(code: &str) -> Vec<(usize, Vec<String>)> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_path = ["crate::", "super::", "self::"]
            .iter()
            .any(|p| bytes[i..].starts_with(p.as_bytes()));
        let at_boundary = i == 0 || !is_ident(bytes[i - 1]);
        if starts_path && at_boundary {
            let (paths, end) = read_path(code, i, Vec::new());
            out.extend(paths.into_iter().map(|p| (i, p)));
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Reads `seg::seg::…` from `start`, expanding `{…}` groups; returns the paths and where
/// reading stopped.
fn read_path(code: &str, start: usize, prefix: Vec<String>) -> (Vec<Vec<String>>, usize) {
    let bytes = code.as_bytes();
    let mut segments = prefix;
    let mut i = start;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            let mut out = Vec::new();
            i += 1;
            loop {
                while i < bytes.len() && bytes[i].is_ascii_whitespace() || bytes[i] == b',' {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] == b'}' {
                    return (out, i + 1);
                }
                let (paths, end) = read_path(code, i, segments.clone());
                out.extend(paths);
                // Skip `as name` and anything else up to the next item.
                i = end;
                while i < bytes.len() && !matches!(bytes[i], b',' | b'}') {
                    i += 1;
                }
            }
        }
        let seg_start = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        if i > seg_start {
            segments.push(code[seg_start..i].to_owned());
        }
        if bytes[i..].starts_with(b"::") && i > seg_start {
            i += 2;
        } else {
            return (vec![segments], i);
        }
    }
}

/// `text` with line and block comments (doc comments too) blanked out, lines kept; string and
/// char literals are kept as they are (a `//` inside one is not a comment).
fn strip_comments(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if chars[i] == '\n' {
                            out.push('\n');
                        }
                        i += 1;
                    }
                }
            }
            '"' => {
                out.push(c);
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        out.push(chars[i]);
                        i += 1;
                    }
                    if let Some(&ch) = chars.get(i) {
                        out.push(ch);
                    }
                    i += 1;
                }
                if i < chars.len() {
                    out.push('"');
                    i += 1;
                }
            }
            '\'' => {
                // A char literal ('x', '\n', '"'); otherwise a lifetime.
                let end = if next == Some('\\') {
                    chars[i + 2..]
                        .iter()
                        .position(|&ch| ch == '\'')
                        .map(|p| i + 2 + p + 1)
                } else if chars.get(i + 2) == Some(&'\'') {
                    Some(i + 3)
                } else {
                    None
                };
                let end = end.unwrap_or(i + 1);
                out.extend(&chars[i..end]);
                i = end;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// One entry per strongly connected component of more than one node: a shortest cycle through
/// its first node with the file and line of each of its edges, then every edge inside the
/// component.
fn cycles(graph: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    for component in components(graph) {
        if component.len() < 2 {
            continue;
        }
        let start = &component[0];
        let cycle = shortest_cycle(graph, start, &component);
        let mut line = cycle.join(" -> ");
        for pair in cycle.windows(2) {
            let site = &graph[&pair[0]][&pair[1]];
            line.push_str(&format!(
                "\n    {} -> {}: {}:{}",
                pair[0], pair[1], site.file, site.line
            ));
        }
        line.push_str(&format!(
            "\n    all edges between {}:",
            component.join(", ")
        ));
        for from in &component {
            for (to, site) in &graph[from] {
                if component.contains(to) {
                    line.push_str(&format!(
                        "\n      {from} -> {to}: {}:{}",
                        site.file, site.line
                    ));
                }
            }
        }
        out.push(line);
    }
    out
}

/// The strongly connected components (Kosaraju), each sorted.
fn components(graph: &Graph) -> Vec<Vec<String>> {
    fn finish_order(
        graph: &Graph,
        node: &str,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(node.to_owned()) {
            return;
        }
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            finish_order(graph, next, seen, order);
        }
        order.push(node.to_owned());
    }
    let mut reversed: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, edges) in graph {
        for to in edges.keys() {
            reversed.entry(to).or_default().push(from);
        }
    }
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for node in graph.keys() {
        finish_order(graph, node, &mut seen, &mut order);
    }
    let mut assigned = BTreeSet::new();
    let mut out = Vec::new();
    for node in order.iter().rev() {
        if assigned.contains(node.as_str()) {
            continue;
        }
        let mut component = Vec::new();
        let mut stack = vec![node.as_str()];
        while let Some(n) = stack.pop() {
            if !assigned.insert(n.to_owned()) {
                continue;
            }
            component.push(n.to_owned());
            stack.extend(reversed.get(n).into_iter().flatten().copied());
        }
        component.sort();
        out.push(component);
    }
    out.sort();
    out
}

/// A shortest path from `start` back to itself inside `component` (breadth first).
fn shortest_cycle(graph: &Graph, start: &str, component: &[String]) -> Vec<String> {
    let mut parent: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.to_owned()]);
    while let Some(node) = queue.pop_front() {
        for next in graph[&node].keys() {
            if !component.contains(next) {
                continue;
            }
            if next == start {
                // Walk back from `node` to `start` (the root of the search has no parent).
                let mut path = vec![node.clone()];
                let mut at = node.clone();
                while let Some(p) = parent.get(&at) {
                    path.push(p.clone());
                    at = p.clone();
                }
                path.reverse();
                path.push(start.to_owned());
                return path;
            }
            if next != start && !parent.contains_key(next) {
                parent.insert(next.clone(), node.clone());
                queue.push_back(next.clone());
            }
        }
    }
    unreachable!("{start} is in a strongly connected component of more than one node")
}
