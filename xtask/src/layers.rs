//! The layering check of `cargo xtask lint`: the gateway's modules import
//! one way. `gateway/src/lib.rs` declares the layers, bottom first, as a
//! numbered list under `## Layers` whose items name modules in backticks
//! before a colon:
//!
//! ```text
//! //! 1. `sync`, `text`: small rules every layer shares.
//! ```
//!
//! Every `crate::` and `super::` path in every file (and, in a `mod.rs`,
//! every path through a child module) is resolved to the file that
//! defines the module it names. The check fails when
//! - a module imports from a module of a higher layer;
//! - a module of the crate is missing from the layers;
//! - files import each other in a circle, whether across modules or within
//!   one folder. A file's use of what its own folder's `mod.rs` declares
//!   is Rust's usual shape and not counted; a `mod.rs` declaring a child is
//!   not an import of it, one that uses a child's items is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// A module path relative to the crate root (`["plugin", "host"]`).
type ModPath = Vec<String>;

pub fn check(src: &Path) -> anyhow::Result<()> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).context("reading lib.rs")?;
    let layers = declared_layers(&lib)?;
    let files = module_files(src)?;
    let mut problems = Vec::new();

    let top_modules: BTreeSet<&str> = files.keys().filter_map(|m| m.first()).map(String::as_str).collect();
    for module in &top_modules {
        if !layers.contains_key(*module) {
            problems.push(format!(
                "module `{module}` is in no layer: add it to the `## Layers` list of gateway/src/lib.rs"
            ));
        }
    }

    let mut edges: BTreeMap<&ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (module, file) in &files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let children: BTreeSet<String> = files
            .keys()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
            .map(|m| m[module.len()].clone())
            .collect();
        for path in paths(&strip_comments(&text), &children) {
            let absolute = match path.first().map(String::as_str) {
                Some("crate") => path[1..].to_vec(),
                Some("super") => {
                    let ups = path.iter().take_while(|s| *s == "super").count();
                    let base = module.len().saturating_sub(ups);
                    [&module[..base], &path[ups..]].concat()
                }
                _ => [&module[..], &path[..]].concat(),
            };
            let target = resolve(&files, &absolute);
            if target.is_empty() || target == *module {
                continue;
            }
            let (from, to) = (&module[0], &target[0]);
            if let (Some(&a), Some(&b)) = (layers.get(from.as_str()), layers.get(to.as_str()))
                && b > a
            {
                problems.push(format!(
                    "{}: imports `{}` (layer {}) from `{from}` (layer {}): imports point down the layers of lib.rs",
                    file.strip_prefix(src.ancestors().nth(2).unwrap_or(src))
                        .unwrap_or(file)
                        .display(),
                    absolute.join("::"),
                    b + 1,
                    a + 1
                ));
            }
            edges.entry(module).or_default().insert(target);
        }
    }

    // Files in a circle: between top-level modules, and within each one.
    let top_edges: BTreeMap<ModPath, BTreeSet<ModPath>> = edges.iter().fold(BTreeMap::new(), |mut all, (from, to)| {
        let from = vec![from[0].clone()];
        for t in to {
            let t = vec![t[0].clone()];
            if t != from {
                all.entry(from.clone()).or_default().insert(t);
            }
        }
        all
    });
    problems.extend(
        cycles(&top_edges)
            .into_iter()
            .map(|c| format!("modules import each other in a circle: {c}")),
    );
    let file_edges: BTreeMap<ModPath, BTreeSet<ModPath>> = edges
        .iter()
        .map(|(from, to)| {
            // A file may use what the folders it sits in declare (their
            // `mod.rs`): Rust's usual shape, not a circle.
            let within = to
                .iter()
                .filter(|t| t[0] == from[0] && !(t.len() < from.len() && from.starts_with(t)))
                .cloned()
                .collect();
            ((*from).clone(), within)
        })
        .collect();
    problems.extend(
        cycles(&file_edges)
            .into_iter()
            .map(|c| format!("files import each other in a circle: {c}")),
    );

    if problems.is_empty() {
        println!(
            "layers: {} modules in {} layers import one way, {} files without a circle",
            top_modules.len(),
            layers.values().collect::<BTreeSet<_>>().len(),
            files.len()
        );
        return Ok(());
    }
    for p in &problems {
        eprintln!("layers: {p}");
    }
    bail!("{} layering problem(s) in gateway/src", problems.len())
}

/// Module name -> layer index (0 at the bottom), from lib.rs's list.
fn declared_layers(lib: &str) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut layers = BTreeMap::new();
    let mut inside = false;
    let mut index = 0;
    for line in lib.lines() {
        let Some(doc) = line.strip_prefix("//!") else { continue };
        let doc = doc.trim();
        if doc.starts_with("## ") {
            inside = doc == "## Layers";
            continue;
        }
        if !inside {
            continue;
        }
        let Some((number, item)) = doc.split_once(". ") else {
            continue;
        };
        if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let names = item.split_once(": ").map_or(item, |(names, _)| names);
        for name in names.split('`').skip(1).step_by(2) {
            if layers.insert(name.to_owned(), index).is_some() {
                bail!("lib.rs names `{name}` in two layers");
            }
        }
        index += 1;
    }
    if layers.is_empty() {
        bail!("gateway/src/lib.rs declares no layers (a numbered list under `//! ## Layers`)");
    }
    Ok(layers)
}

/// Every module of the crate and the file that holds it (lib.rs and
/// main.rs are the root, not modules).
fn module_files(src: &Path) -> anyhow::Result<BTreeMap<ModPath, PathBuf>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src)?.with_extension("");
            let mut module: ModPath = relative.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            if module.last().is_some_and(|s| s == "mod") {
                module.pop();
            }
            if module.len() == 1 && (module[0] == "lib" || module[0] == "main") {
                continue;
            }
            files.insert(module, path);
        }
    }
    Ok(files)
}

/// The deepest module of the crate that `path` goes through.
fn resolve(files: &BTreeMap<ModPath, PathBuf>, path: &[String]) -> ModPath {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| files.contains_key(m))
        .unwrap_or_default()
}

fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |i| &after[i + 2..]);
        } else {
            let c = rest.chars().next().unwrap_or_default();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The paths through the crate in `text`: each `crate::...` and
/// `super::...`, and each path through one of `children`, with `{...}`
/// groups expanded.
fn paths(text: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':');
        if starts_word && (bytes[i].is_ascii_alphabetic() || bytes[i] == b'_') {
            let end = i + bytes[i..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                .count();
            let word = &text[i..end];
            if text[end..].starts_with("::") && (word == "crate" || word == "super" || children.contains(word)) {
                let mut at = i;
                out.extend(tree(text, &mut at, Vec::new()));
                i = at.max(end);
                continue;
            }
            i = end;
            continue;
        }
        i += 1;
    }
    out
}

/// Parses one use tree at `at` (`a::b::{c, d::e}`), prefixed by `prefix`.
fn tree(text: &str, at: &mut usize, mut prefix: Vec<String>) -> Vec<Vec<String>> {
    let bytes = text.as_bytes();
    loop {
        while *at < bytes.len() && bytes[*at].is_ascii_whitespace() {
            *at += 1;
        }
        if *at < bytes.len() && bytes[*at] == b'{' {
            *at += 1;
            let mut all = Vec::new();
            loop {
                all.extend(tree(text, at, prefix.clone()));
                while *at < bytes.len() && bytes[*at].is_ascii_whitespace() {
                    *at += 1;
                }
                match bytes.get(*at) {
                    Some(b',') => *at += 1,
                    Some(b'}') => {
                        *at += 1;
                        break;
                    }
                    _ => break,
                }
                while *at < bytes.len() && bytes[*at].is_ascii_whitespace() {
                    *at += 1;
                }
                if bytes.get(*at) == Some(&b'}') {
                    *at += 1;
                    break;
                }
            }
            return all;
        }
        let start = *at;
        while *at < bytes.len() && (bytes[*at].is_ascii_alphanumeric() || bytes[*at] == b'_') {
            *at += 1;
        }
        if *at == start {
            return vec![prefix];
        }
        prefix.push(text[start..*at].to_owned());
        if text[*at..].starts_with("::") {
            *at += 2;
        } else {
            return vec![prefix];
        }
    }
}

/// One circle per strongly connected component of more than one node, as
/// `a -> b -> a`.
fn cycles(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<String> {
    let nodes: BTreeSet<&ModPath> = edges.keys().chain(edges.values().flatten()).collect();
    let mut found = Vec::new();
    let mut reported: BTreeSet<&ModPath> = BTreeSet::new();
    for start in nodes {
        if reported.contains(start) {
            continue;
        }
        // Shortest way back to `start`, breadth first.
        let mut previous: BTreeMap<&ModPath, &ModPath> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut closed = None;
        while let Some(node) = queue.pop_front() {
            for next in edges.get(node).into_iter().flatten() {
                if next == start {
                    closed = Some(node);
                    break;
                }
                if !previous.contains_key(next) {
                    previous.insert(next, node);
                    queue.push_back(next);
                }
            }
            if closed.is_some() {
                break;
            }
        }
        let Some(mut node) = closed else { continue };
        let mut circle = vec![start];
        while node != start {
            circle.push(node);
            node = previous[node];
        }
        circle.push(start);
        let last = circle.len() - 1;
        circle[1..last].reverse();
        reported.extend(circle.iter().copied());
        found.push(circle.iter().map(|m| m.join("/")).collect::<Vec<_>>().join(" -> "));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn expands_groups_and_ignores_comments() {
        let text = strip_comments(
            "use crate::{a::{b, c::D}, e};\n// use crate::hidden;\nfn f() { super::g::h(); child::x(); other::y() }",
        );
        let found: Vec<String> = paths(&text, &set(&["child"])).iter().map(|p| p.join("::")).collect();
        assert_eq!(
            found,
            ["crate::a::b", "crate::a::c::D", "crate::e", "super::g::h", "child::x"]
        );
    }

    #[test]
    fn finds_a_circle_and_only_real_ones() {
        let m = |s: &str| vec![s.to_owned()];
        let mut edges = BTreeMap::new();
        edges.insert(m("a"), BTreeSet::from([m("b")]));
        edges.insert(m("b"), BTreeSet::from([m("c")]));
        edges.insert(m("c"), BTreeSet::from([m("a")]));
        edges.insert(m("d"), BTreeSet::from([m("a")]));
        assert_eq!(cycles(&edges), ["a -> b -> c -> a"]);
        edges.remove(&m("c"));
        assert!(cycles(&edges).is_empty());
    }

    #[test]
    fn reads_the_declared_layers() {
        let lib = "//! intro `x`\n//! ## Layers\n//!\n//! 1. `sync`, `text`: helpers, `not_this`\n//! 2. `config`: data\n//! ## Other\n//! 3. `nope`: no\n";
        let layers = declared_layers(lib).expect("layers");
        assert_eq!(layers.get("sync"), Some(&0));
        assert_eq!(layers.get("text"), Some(&0));
        assert_eq!(layers.get("config"), Some(&1));
        assert_eq!(layers.get("not_this"), None);
        assert_eq!(layers.get("nope"), None);
    }
}
