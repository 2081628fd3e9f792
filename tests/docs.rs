//! The repository explains itself: the README and `docs/` link only to files inside the
//! repository (and every link resolves), and the reference pages stay true to the code — every
//! configuration key, every chat command, every route of the coding agents' API and every test
//! the architecture page names.

use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The README and every Markdown page under `docs/`.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("a docs/ folder")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The link targets of a Markdown text.
fn links(markdown: &str) -> Vec<String> {
    Parser::new(markdown)
        .filter_map(|event| match event {
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => Some(dest_url.to_string()),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown page's headings, as GitHub makes them (lower case, spaces to `-`,
/// punctuation other than `-` and `_` dropped).
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut heading: Option<String> = None;
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let text = heading.take().unwrap_or_default();
                let slug: String = text
                    .to_lowercase()
                    .chars()
                    .filter_map(|c| match c {
                        ' ' => Some('-'),
                        c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                        _ => None,
                    })
                    .collect();
                anchors.insert(slug);
            }
            _ => {}
        }
    }
    let _ = HeadingLevel::H1; // (the level does not matter for anchors)
    anchors
}

#[test]
fn every_link_in_the_readme_and_docs_resolves_inside_the_repository() {
    let root = root().canonicalize().unwrap();
    let mut checked = 0;
    for page in pages() {
        let text = read(&page);
        for forbidden in ["../shared", "/work/", "shared/DESIGN.md", "planka-api.md", "chroma-api.md"] {
            assert!(
                !text.contains(forbidden),
                "{} mentions {forbidden:?}, which is outside the repository",
                page.display()
            );
        }
        for link in links(&text) {
            checked += 1;
            assert!(
                !link.contains("://") && !link.starts_with("mailto:"),
                "{} links outside the repository: {link}",
                page.display()
            );
            let (file, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() { page.clone() } else { page.parent().unwrap().join(file) };
            let resolved = target
                .canonicalize()
                .unwrap_or_else(|e| panic!("{}: the link {link:?} does not resolve ({e})", page.display()));
            assert!(resolved.starts_with(&root), "{}: {link:?} leaves the repository", page.display());
            if !anchor.is_empty() {
                let headings = anchors(&read(&resolved));
                assert!(
                    headings.contains(anchor),
                    "{}: {link:?} names no heading of {}",
                    page.display(),
                    resolved.display()
                );
            }
        }
    }
    assert!(checked > 20, "the pages have links to check ({checked})");
}

#[test]
fn the_code_points_to_no_document_outside_the_repository() {
    let mut files = Vec::new();
    let mut dirs: Vec<PathBuf> =
        ["src", "tests", "benches", "scripts", "configs", "skills"].iter().map(|d| root().join(d)).collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path != root().join("tests/docs.rs") {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 100, "the tree was read ({})", files.len());
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        for forbidden in ["shared/DESIGN.md", "planka-api.md", "chroma-api.md", "/work/shared"] {
            assert!(
                !text.contains(forbidden),
                "{} points to {forbidden}, which is outside the repository",
                file.display()
            );
        }
    }
}

#[test]
fn the_configuration_page_names_every_key_of_the_example_config() {
    let example = read(&root().join("configs/conclave.example.toml"));
    let page = read(&root().join("docs/configuration.md"));
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in example.lines() {
        // Commented-out tables (`# [llm.fallback]`) and keys are documented too.
        let line = line.trim().trim_start_matches("# ").trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            // `[agents.pi]` stands for every `[agents.<name>]`.
            section = if name.starts_with("agents.") { "agents.<name>".to_owned() } else { name.to_owned() };
        } else if let Some((key, _)) = line.split_once(" = ")
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            && !section.is_empty()
        {
            keys.push(format!("{section}.{key}"));
        }
    }
    assert!(keys.len() > 60, "the example's keys were read: {keys:?}");
    let missing: Vec<&String> = keys
        .iter()
        .filter(|key| {
            // A row may name several keys of one section: `a.x` / `a.y`, or `a.x`, `.y`.
            let (section, name) = key.rsplit_once('.').unwrap();
            !page.contains(&format!("`{key}`"))
                && !page.contains(&format!("`{section}.{name}`"))
                && !page.contains(&format!("`.{name}`"))
        })
        .collect();
    assert!(missing.is_empty(), "docs/configuration.md does not name {missing:?}");
}

#[test]
fn the_commands_page_has_every_command_of_help() {
    let help = conclave_agent::strings::help();
    let page = read(&root().join("docs/commands.md"));
    let commands: BTreeSet<String> =
        regex::Regex::new(r"`!([a-z]+)").unwrap().captures_iter(&help).map(|c| c[1].to_owned()).collect();
    assert!(commands.len() >= 12, "{commands:?}");
    for command in &commands {
        assert!(page.contains(&format!("`!{command}")), "docs/commands.md does not show !{command}");
    }
}

/// `(METHOD, path)` of each route, as the router's source declares them.
fn agent_api_routes() -> BTreeSet<(String, String)> {
    let source = read(&root().join("src/appservice/agent_api/mod.rs"));
    let routes: BTreeSet<(String, String)> =
        regex::Regex::new(r#"\.route\("(/conclave/v1/[^"]*)",\s*(get|post|put|delete|patch)\("#)
            .unwrap()
            .captures_iter(&source)
            .map(|c| (c[2].to_uppercase(), c[1].to_owned()))
            .collect();
    assert!(routes.len() >= 10, "the routes were read: {routes:?}");
    routes
}

#[test]
fn the_openapi_document_has_exactly_the_routes_of_the_coding_agents_api() {
    let doc: serde_json::Value = serde_json::from_str(&read(&root().join("docs/agent-api.openapi.json"))).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(|m| (m.to_uppercase(), path.clone())))
        .collect();
    assert_eq!(documented, agent_api_routes());
    // Every `$ref` names a schema that exists.
    let text = doc.to_string();
    for r in regex::Regex::new(r##""#/components/schemas/([A-Za-z]+)""##).unwrap().captures_iter(&text) {
        assert!(doc["components"]["schemas"][&r[1]].is_object(), "no schema {}", &r[1]);
    }
}

#[test]
fn every_test_the_architecture_page_names_exists() {
    let page = read(&root().join("docs/architecture.md"));
    // `tests/x.rs` (or `src/…`) followed by the names of its tests, up to the next file.
    let file = regex::Regex::new(r"`((?:tests|src)/[a-z_/]+\.rs)`").unwrap();
    let name = regex::Regex::new(r"`(\*?_?[a-z0-9_]+)`").unwrap();
    let mut checked = 0;
    for row in page.lines().filter(|l| l.starts_with("| ") && l.contains(".rs`")) {
        let mut current: Option<String> = None;
        for token in row.split([',', ';', '|']) {
            if let Some(c) = file.captures(token) {
                current = Some(read(&root().join(&c[1])));
            }
            let Some(source) = &current else { continue };
            let token = file.replace_all(token, "");
            for c in name.captures_iter(&token) {
                let test = &c[1];
                let found = match test.strip_prefix('*') {
                    // `*_x` names the same test on both stores: `sqlite_x` and `postgres_x`.
                    Some(suffix) => source.contains(&format!("fn sqlite{suffix}(")),
                    None => source.contains(&format!("fn {test}(")),
                };
                assert!(found, "docs/architecture.md names `{test}`, which is not a test there");
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "the table's tests were read ({checked})");
}
