//! The documentation stays true to the tree: every relative link in the README and the
//! chapters points at a file that exists and, when it names a heading, at a heading that
//! exists; the README's reading order lists every chapter; every test the README's Patterns
//! table names as a proof exists, and every test (and every other name of the code) the
//! README and the chapters cite is still there.

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

/// The anchors GitHub gives the headings of `markdown` (fenced blocks left out): lower case,
/// punctuation dropped but for `-` and `_`, spaces made `-`, and a repeated heading numbered.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let Some(heading) = line.strip_prefix('#').filter(|_| !fenced) else {
            continue;
        };
        let text = heading.trim_start_matches('#').trim();
        let slug: String = text
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut anchor = slug.clone();
        let mut n = 0;
        while !seen.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{slug}-{n}");
        }
    }
    seen
}

/// Every link into a document at a heading (`chapter.md#heading`, or `#heading` within one)
/// names a heading that document has: renaming a section or moving it to another chapter
/// cannot leave a reader at the top of the wrong page.
#[test]
fn links_to_headings_resolve() {
    let mut broken = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for target in link_targets(&text) {
            let Some((file, anchor)) = target.split_once('#') else {
                continue;
            };
            if target.contains("://") || !(file.is_empty() || file.ends_with(".md")) {
                continue;
            }
            let linked = if file.is_empty() {
                doc.clone()
            } else {
                doc.parent().unwrap().join(file)
            };
            let Ok(linked_text) = std::fs::read_to_string(&linked) else {
                continue; // a missing file is relative_links_resolve's to report
            };
            if !anchors(&linked_text).contains(anchor) {
                broken.push(format!("{}: {target}", doc.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to headings that do not exist:\n{}",
        broken.join("\n")
    );
}

/// A chapter (`01-readiness.md`) or an appendix (`A-measurements.md`) of the course, as
/// opposed to the other documents in `docs/` (`benchmarks.md`).
fn is_course_part(name: &str) -> bool {
    let b = name.as_bytes();
    name.ends_with(".md")
        && (b.first().is_some_and(u8::is_ascii_digit)
            || (b.first().is_some_and(u8::is_ascii_uppercase) && b.get(1) == Some(&b'-')))
}

/// The README's reading order names every chapter and appendix in `docs/`, in the order of
/// their numbers and letters: a part added or renumbered cannot be left out of the course.
#[test]
fn reading_order_lists_every_chapter_in_order() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let order = readme
        .split_once("## Reading order")
        .map(|(_, rest)| rest.split_once("\n## ").map_or(rest, |(o, _)| o))
        .expect("README has a Reading order section");
    let listed: Vec<String> = link_targets(order)
        .into_iter()
        .filter_map(|t| t.strip_prefix("docs/").map(str::to_string))
        .filter(|t| is_course_part(t))
        .collect();
    let mut chapters: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| is_course_part(n))
        .collect();
    chapters.sort();
    assert_eq!(listed, chapters, "the reading order and docs/ disagree");
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

/// Names from outside loopd that the chapters quote: system calls and kernel functions seen
/// in profiles, the kernel's slab caches and sysctls, nginx's directives, the inetds' checks,
/// TLS's alert, the example functions of epoll(7) and tokio-util that the chapters compare
/// with. Everything else a document cites is loopd's own.
const OUTSIDE_NAMES: &[&str] = &[
    "close_notify",
    "do_use_fd",
    "epoll_ctl",
    "io_uring_enter",
    "next_index",
    "anon_vma_chain",
    "ep_head",
    "eventpoll_epi",
    "eventpoll_pwq",
    "proc_inode_cache",
    "tcp_sock",
    "tcp_rmem",
    "tcp_wmem",
    "tcp_syn_retries",
    "bad_port_check",
    "check_loop",
    "_copy_from_iter",
    "_copy_to_iter",
    "_raw_spin_unlock_irqrestore",
    "tcp_sendmsg_locked",
    "client_body_timeout",
    "client_header_timeout",
    "lingering_time",
    "lingering_timeout",
    "proxy_pass",
    "reset_timedout_connection",
    "stub_status",
    "sha512_block_data_order_nohw",
];

/// The tests of a source file: the function after each `#[test]` (property tests included).
fn tests_in(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut expecting = false;
    for line in code.lines().map(str::trim) {
        if line.starts_with("#[test]") {
            expecting = true;
        } else if expecting {
            if let Some(rest) = line.split("fn ").nth(1).filter(|_| line.contains("fn ")) {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                names.push(name);
                expecting = false;
            }
        }
    }
    names
}

/// The code with its comments left out (a renamed test's old name may linger in a comment).
fn without_comments(code: &str) -> String {
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The inline code spans of `markdown`, fenced blocks left out.
fn code_spans(markdown: &str) -> Vec<String> {
    let mut prose = String::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    prose
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn is_identifier(s: &str) -> bool {
    s.contains('_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Every test the README and the chapters cite is a test in the tree, and every other name
/// they cite (a function, a field, a metric, a label) is in the code: a backticked
/// `snake_case` name must occur in some source file outside its comments, or be one of the
/// [`OUTSIDE_NAMES`]; `file.rs::name` must name a test of that file.
#[test]
fn chapters_cite_names_that_exist() {
    let mut files = Vec::new();
    sources(&root(), &mut files);
    let code: Vec<(PathBuf, String)> = files
        .iter()
        .map(|f| (f.clone(), std::fs::read_to_string(f).unwrap()))
        .collect();
    let all_code: String = code.iter().map(|(_, c)| without_comments(c)).collect();
    let mut missing = Vec::new();
    let mut cited_tests = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for span in code_spans(&text) {
            if let Some((file, name)) = span.split_once(".rs::") {
                let path = root().join(format!("{file}.rs"));
                let found = code
                    .iter()
                    .find(|(f, _)| *f == path)
                    .is_some_and(|(_, c)| tests_in(c).iter().any(|t| t == name));
                cited_tests += 1;
                if !found {
                    missing.push(format!("{}: {span}", doc.display()));
                }
            } else if is_identifier(&span) && !OUTSIDE_NAMES.contains(&span.as_str()) {
                let word = |c: char| c.is_alphanumeric() || c == '_';
                let present = all_code.match_indices(span.as_str()).any(|(i, _)| {
                    let before = all_code[..i].chars().next_back();
                    let after = all_code[i + span.len()..].chars().next();
                    !before.is_some_and(word) && !after.is_some_and(word)
                });
                if !present {
                    missing.push(format!("{}: `{span}`", doc.display()));
                }
            }
        }
    }
    assert!(
        cited_tests > 20,
        "found only {cited_tests} file::test citations"
    );
    assert!(
        missing.is_empty(),
        "the documents cite names the code does not have:\n{}",
        missing.join("\n")
    );
}
