//! The crate's top-level modules depend on each other one way only (lib.rs's layout map): no
//! module reaches, through `crate::…` paths, a module that reaches it back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its code names through `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top = rel.components().next().unwrap().as_os_str().to_str().unwrap().trim_end_matches(".rs");
            if top == "lib" || top == "main" {
                continue;
            }
            let deps = graph.entry(top.to_owned()).or_default();
            for name in crate_paths(&std::fs::read_to_string(&path).unwrap()) {
                if name != top {
                    deps.insert(name);
                }
            }
        }
    }
    graph
}

/// The first segment after every `crate::` outside comments, including `crate::{a, b::c}`.
fn crate_paths(source: &str) -> Vec<String> {
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
    let mut names = Vec::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or_default();
                names.extend(inner.split(',').map(|part| ident(part.trim())).filter(|n| !n.is_empty()));
            } else {
                names.push(ident(rest));
            }
        }
    }
    names
}

/// A path `from` → … → `to` in the graph, if there is one.
fn path(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> Option<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![vec![from.to_owned()]];
    while let Some(trail) = stack.pop() {
        let last = trail.last().unwrap();
        if last == to && trail.len() > 1 {
            return Some(trail);
        }
        for next in graph.get(last).into_iter().flatten() {
            if seen.insert(next.clone()) {
                let mut longer = trail.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn top_level_modules_form_no_cycle() {
    let graph = graph();
    assert!(graph.len() > 10, "found only {graph:?}: is src/ where it was?");
    let cycles: Vec<String> = graph.keys().filter_map(|m| path(&graph, m, m)).map(|trail| trail.join(" → ")).collect();
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_reader_finds_grouped_and_plain_paths() {
    let names = crate_paths("use crate::{store::Store, matrix};\nlet x = crate::llm::x(); // crate::not_this");
    assert_eq!(names, ["store", "matrix", "llm"]);
}
