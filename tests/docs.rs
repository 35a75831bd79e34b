//! The documentation stays true to the tree: every relative link in the README and the
//! chapters points at a file that exists, and every test the README's Patterns table names
//! as a proof exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The markdown files a reader follows: the README and every chapter.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md")];
    let mut chapters: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    chapters.sort();
    docs.extend(chapters);
    docs
}

/// The targets of the inline links `[text](target)` in `markdown`.
fn link_targets(markdown: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = markdown;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            targets.push(rest[..end].to_string());
        }
    }
    targets
}

/// Every `.rs` file of the workspace (not `target/`).
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// Relative links in the README and `docs/` point at files that exist.
#[test]
fn relative_links_resolve() {
    let mut broken = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let file = target.split('#').next().unwrap();
            let path = doc.parent().unwrap().join(file);
            if !path.exists() {
                broken.push(format!("{}: {target}", doc.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to missing files:\n{}",
        broken.join("\n")
    );
}

/// Every test the README's Patterns table names as a proof is a function in the tree.
#[test]
fn patterns_table_names_real_tests() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let table = readme
        .split_once("## Patterns")
        .and_then(|(_, rest)| rest.split_once("\n## "))
        .map(|(t, _)| t)
        .expect("README has a Patterns section");
    let mut named = BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with('|')) {
        let Some(proof) = row.trim_end_matches('|').rsplit('|').next() else {
            continue;
        };
        for (k, piece) in proof.split('`').enumerate() {
            let is_test_name = k % 2 == 1
                && piece.contains('_')
                && piece
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if is_test_name {
                named.insert(piece.to_string());
            }
        }
    }
    assert!(named.len() > 20, "found only {named:?}");
    let mut files = Vec::new();
    sources(&root(), &mut files);
    let code: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let missing: Vec<&String> = named
        .iter()
        .filter(|name| !code.contains(&format!("fn {name}(")))
        .collect();
    assert!(
        missing.is_empty(),
        "the Patterns table names tests that do not exist: {missing:?}"
    );
}

/// Nothing in the repository's code or docs points outside the repository by path.
#[test]
fn no_references_outside_the_repository() {
    let mut files = Vec::new();
    sources(&root(), &mut files);
    files.extend(documents());
    // Spelled in pieces so that this file does not match itself.
    let needles = [
        ["](", "../../"].concat(),
        ["DESIGN", ".md"].concat(),
        ["STYLE", ".md"].concat(),
    ];
    let outside: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            needles.iter().any(|n| text.contains(n.as_str()))
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        outside.is_empty(),
        "files citing paths outside the repository: {outside:?}"
    );
}
