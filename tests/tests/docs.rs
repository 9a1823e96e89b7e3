//! The documentation stays true to the repository: files it cites exist, and the migration guide
//! and the configuration reference answer every key Plexus knows.

use plexus_engine::config_keys::{KEYS, Origin};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn doc_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    v.push(repo().join("README.md"));
    v.sort();
    v
}

/// Every `code span` in `text`.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Paths the docs name as repository files: code spans and link targets that start with a
/// top-level directory of the workspace (`crates/`, `tests/`, `hack/`, `deploy/`, `docs/`,
/// `target/`). `target/` is build output, never in the repository, so citing it is an error too.
fn cited_paths(text: &str) -> Vec<String> {
    const ROOTS: &[&str] = &["crates/", "tests/", "hack/", "deploy/", "docs/", "target/"];
    let mut out = Vec::new();
    let links = text.split("](").skip(1).filter_map(|s| s.split(')').next());
    for candidate in code_spans(text).into_iter().chain(links) {
        // `path` or `path (name)` or `path:line` or `cmd path`: take each word.
        for word in candidate.split_whitespace() {
            let word = word.trim_end_matches([',', '.', ':', ';']);
            let word = word.split(['#', ':']).next().unwrap_or_default();
            if ROOTS.iter().any(|r| word.starts_with(r))
                && !word.contains('*')
                && !word.contains('<')
            {
                out.push(word.to_owned());
            }
        }
    }
    out
}

#[test]
fn docs_cite_only_files_that_exist() {
    let mut missing = Vec::new();
    for doc in doc_files() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for p in cited_paths(&text) {
            let exists = !p.starts_with("target/") && repo().join(&p).exists();
            if !exists {
                missing.push(format!("{}: {p}", doc.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs cite files that are not in the repository: {missing:#?}"
    );
}

#[test]
fn the_citation_check_sees_code_spans_and_links() {
    let found = cited_paths(
        "see `tests/tests/x.rs` and [b](docs/b.md#top), `cargo run -p a`, `target/bench/out.json`.",
    );
    assert_eq!(
        found,
        vec!["tests/tests/x.rs", "target/bench/out.json", "docs/b.md"]
    );
}

#[test]
fn the_migration_guide_answers_every_multus_key() {
    let text = read("docs/migration.md");
    let spans = code_spans(&text);
    let missing: Vec<&str> = KEYS
        .iter()
        .filter(|k| matches!(k.origin, Origin::Multus | Origin::MultusDaemon))
        .map(|k| k.key)
        .filter(|k| !spans.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/migration.md does not mention: {missing:?}"
    );
}

#[test]
fn the_configuration_reference_lists_every_key() {
    let text = read("docs/configuration.md");
    let spans = code_spans(&text);
    let missing: Vec<&str> = KEYS
        .iter()
        .map(|k| k.key)
        .filter(|k| !spans.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not mention: {missing:?}"
    );
}
