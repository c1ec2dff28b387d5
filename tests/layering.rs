//! The module graph of every crate in the workspace has no cycle: no
//! module uses (directly or through others) a module that uses it back.
//! Layers are what keep a new transport, service or crate pluggable
//! without touching what sits above it (docs/architecture.md, "Layout").
//!
//! The graph is read from the sources: every `crate::`, `super::` and
//! `self::` path outside comments and test modules is an edge from the
//! file's module to the deepest module the path names (a parent module
//! counts when the path names an item in it, e.g. `super::Shard`), and so
//! is every `use` of a child module by a relative path. `SHOW_EDGES=1`
//! prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Crate roots checked: (source directory, root file).
const CRATES: &[(&str, &str)] = &[
    ("src", "lib.rs"),
    ("chatd-proto/src", "lib.rs"),
    ("chatd-client/src", "lib.rs"),
    ("loadgen/src", "main.rs"),
];

/// Every `.rs` file under `dir`, test-only files left out.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            if name != "tests" {
                sources(&p, out);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" && !name.ends_with("_tests.rs") {
            out.push(p);
        }
    }
}

/// The module path of a file (`crate`, `crate::shard`, `crate::shard::conn`).
fn module_of(root: &Path, root_file: &str, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).expect("under root");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    if last != "mod.rs" && !(parts.is_empty() && last == root_file) {
        parts.push(last.trim_end_matches(".rs").to_string());
    }
    parts
}

/// The code of a file without comments and without its test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A path found in a file.
#[derive(Debug, PartialEq)]
struct Found {
    /// The inline modules (`mod name { ... }`) it sits in, within the
    /// file's module.
    inner: Vec<String>,
    /// Its segments, `use` groups expanded.
    path: Vec<String>,
    /// A `use` path relative to the module (`use child::Item`).
    relative: bool,
}

/// Every path starting with `crate`, `super` or `self` in `code`, and
/// every `use` path, with `use` groups (`super::{a, b::c}`) expanded.
fn paths(code: &str) -> Vec<Found> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    // Inline modules: (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut pending_mod: Option<String> = None;
    let mut depth = 0;
    let mut i = 0;
    while i < bytes.len() {
        let boundary = i == 0 || !(is_ident(bytes[i - 1]) || bytes[i - 1] == b':');
        let rest = &code[i..];
        let inner = || inline.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        match bytes[i] {
            b'{' => {
                depth += 1;
                if let Some(name) = pending_mod.take() {
                    inline.push((name, depth));
                }
                i += 1;
                continue;
            }
            b'}' => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth -= 1;
                i += 1;
                continue;
            }
            b';' => pending_mod = None,
            _ => {}
        }
        if boundary && rest.starts_with("mod ") {
            let name: String = rest[4..]
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            pending_mod = Some(name);
            i += 4;
            continue;
        }
        if boundary && rest.starts_with("use ") {
            let start = 4 + (rest[4..].len() - rest[4..].trim_start().len());
            let relative = !["crate::", "super::", "self::"]
                .iter()
                .any(|h| rest[start..].starts_with(h));
            let (found, used) = parse_path(&rest[start..]);
            out.extend(found.into_iter().map(|path| Found {
                inner: inner(),
                path,
                relative,
            }));
            i += start + used.max(1);
            continue;
        }
        if boundary
            && ["crate::", "super::", "self::"]
                .iter()
                .any(|h| rest.starts_with(h))
        {
            let (found, used) = parse_path(rest);
            out.extend(found.into_iter().map(|path| Found {
                inner: inner(),
                path,
                relative: false,
            }));
            i += used.max(1);
            continue;
        }
        i += 1;
    }
    out
}

/// Parses one path (possibly ending in a `{...}` group) at the start of
/// `s`; returns the paths it names and the bytes it took.
fn parse_path(s: &str) -> (Vec<Vec<String>>, usize) {
    let mut segs = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &s[pos..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if len == 0 {
            break;
        }
        segs.push(rest[..len].to_string());
        pos += len;
        if s[pos..].starts_with("::{") {
            let open = pos + 3;
            let mut depth = 1;
            let mut close = open;
            for (k, c) in s[open..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    close = open + k;
                    break;
                }
            }
            let mut out = Vec::new();
            for item in split_top(&s[open..close]) {
                let item = item.trim();
                if item.is_empty() {
                    continue;
                }
                let (inner, _) = parse_path(item);
                for p in inner {
                    let mut full = segs.clone();
                    if p != ["self"] {
                        full.extend(p);
                    }
                    out.push(full);
                }
            }
            return (out, close + 1);
        } else if s[pos..].starts_with("::") {
            pos += 2;
        } else {
            break;
        }
    }
    (vec![segs], pos)
}

/// Splits a `use` group's items at its top-level commas.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// The module a path used in module `from` refers to: the deepest known
/// module it names.
fn resolve(
    from: &[String],
    path: &[String],
    modules: &BTreeSet<Vec<String>>,
) -> Option<Vec<String>> {
    let mut base: Vec<String> = from.to_vec();
    let mut segs = path;
    match segs.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            segs = &segs[1..];
        }
        Some("self") => segs = &segs[1..],
        Some("super") => {
            while segs.first().map(String::as_str) == Some("super") {
                base.pop()?;
                segs = &segs[1..];
            }
        }
        // A relative path names a child module, or nothing of this crate
        // (`std::`, another crate).
        Some(first) => {
            let mut child = base.clone();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return None;
            }
        }
        None => return None,
    }
    let mut best = base.clone();
    for s in segs {
        base.push(s.clone());
        if modules.contains(&base) {
            best = base.clone();
        } else {
            break;
        }
    }
    Some(best)
}

/// A cycle in `edges`, if any (depth-first search).
fn find_cycle(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<Vec<String>>> {
    fn visit(
        n: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, edges, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if !state.contains_key(n) {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, edges, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

/// The import graph of one crate: module -> modules it uses.
fn graph(dir: &str, root_file: &str) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(!files.is_empty(), "no sources under {}", root.display());
    let files: Vec<(Vec<String>, String)> = files
        .iter()
        .filter(|f| {
            // A binary next to the library is a crate of its own.
            !(dir == "src" && f.file_name().is_some_and(|n| n == "main.rs"))
        })
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("read source");
            (module_of(&root, root_file, f), code(&text))
        })
        .collect();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (m, code) in &files {
        let out = edges.entry(m.clone()).or_default();
        for found in paths(code) {
            // Inside an inline module, paths are relative to it; its edges
            // count for the file's module.
            let mut here = m.clone();
            here.extend(found.inner);
            if let Some(to) = resolve(&here, &found.path, &modules) {
                if &to != m {
                    out.insert(to);
                }
            }
        }
    }
    edges
}

fn show(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        format!("crate::{}", m.join("::"))
    }
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    for &(dir, root_file) in CRATES {
        let edges = graph(dir, root_file);
        if std::env::var("SHOW_EDGES").is_ok() {
            for (k, v) in &edges {
                eprintln!(
                    "{} -> {:?}",
                    show(k),
                    v.iter().map(|m| show(m)).collect::<Vec<_>>()
                );
            }
        }
        if let Some(cycle) = find_cycle(&edges) {
            let names: Vec<String> = cycle.iter().map(|m| show(m)).collect();
            panic!("{dir}: import cycle {}", names.join(" -> "));
        }
    }
}

/// The checker itself finds what it must: a parent's item used by a child
/// whose module the parent uses is a cycle, `use` groups expand, and paths
/// in comments do not count.
#[test]
fn the_cycle_checker_sees_group_imports_and_ignores_comments() {
    let found: Vec<(Vec<String>, Vec<String>, bool)> = paths(&code(
        "use super::{route, writer::{self, Replies}, Shard};\n// crate::ignored\nlet x = crate::a::b(1);\nmod inner { use super::X; }\nuse child::Y;",
    ))
    .into_iter()
    .map(|f| (f.inner, f.path, f.relative))
    .collect();
    let v = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let want = vec![
        (v(&[]), v(&["super", "route"]), false),
        (v(&[]), v(&["super", "writer"]), false),
        (v(&[]), v(&["super", "writer", "Replies"]), false),
        (v(&[]), v(&["super", "Shard"]), false),
        (v(&[]), v(&["crate", "a", "b"]), false),
        (v(&["inner"]), v(&["super", "X"]), false),
        (v(&[]), v(&["child", "Y"]), true),
    ];
    assert_eq!(found, want);

    let m = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let modules: BTreeSet<Vec<String>> = [m(&[]), m(&["shard"]), m(&["shard", "conn"])].into();
    let mut edges = BTreeMap::new();
    let parent_uses_child = resolve(&m(&["shard"]), &m(&["self", "conn", "f"]), &modules);
    let child_uses_parent = resolve(&m(&["shard", "conn"]), &m(&["super", "Shard"]), &modules);
    assert_eq!(parent_uses_child, Some(m(&["shard", "conn"])));
    assert_eq!(child_uses_parent, Some(m(&["shard"])));
    edges.insert(m(&["shard"]), BTreeSet::from([m(&["shard", "conn"])]));
    edges.insert(m(&["shard", "conn"]), BTreeSet::from([m(&["shard"])]));
    assert!(find_cycle(&edges).is_some());
}
