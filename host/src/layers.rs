//! The architecture, enforced. Data flows policy → runtime → facts →
//! capabilities → findings → plan → actions → journal → report, and a module
//! may use only modules of an earlier stage (or the foundation every stage
//! shares). The commands at the edges (pipeline, cli, …) come last. A new
//! module must be placed in `STAGES` before this test passes; tests inside
//! a module (`#[cfg(test)]` and below) may use anything. Every module also
//! says its job in a `//!` header and has its row in docs/architecture.md,
//! and every built-in plugin stays within its line budget.

use std::collections::BTreeMap;
use std::path::Path;

/// Each top-level module with its stage; a module may import stages below
/// its own only.
const STAGES: &[(&str, u8)] = &[
    // Foundation: no stage of its own, used by all.
    ("text", 0),
    ("clock", 0),
    ("paths", 0),
    ("safe_fs", 0),
    // The stages of a run, in the order data flows.
    ("policy", 1),
    ("catalog", 1),
    ("runtime", 2),
    ("facts", 3),
    ("capabilities", 4),
    ("findings", 5),
    ("plan", 6),
    ("actions", 7),
    ("journal", 8),
    ("report", 9),
    // The edges: commands that drive the stages.
    ("scaffold", 10),
    ("logging", 10),
    ("recording", 11),
    ("pipeline", 12),
    ("inspect", 13),
    ("systemd", 13),
    ("daemon", 13),
    ("demo", 14),
    ("manpage", 14),
    ("cli", 15),
    ("main", 16),
];

/// `crate::x` paths used by the non-test code of `text`, grouped imports
/// (`crate::{a::X, b}`) and `super::`-free paths alike.
fn imported_modules(text: &str) -> Vec<String> {
    let code = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => found.extend(top_level_names(group)),
            None => found.extend(leading_ident(rest)),
        }
    }
    found
}

/// The first path segment of each item of a `{…}` group, up to its `}`.
fn top_level_names(group: &str) -> Vec<String> {
    let (mut depth, mut item_start, mut names) = (0usize, true, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && !c.is_whitespace() => {
                names.extend(leading_ident(&group[i..]));
                item_start = false;
            }
            _ => {}
        }
    }
    names
}

fn leading_ident(text: &str) -> Option<String> {
    let name: String = text.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    (!name.is_empty() && name != "self").then_some(name)
}

/// Every source file under `src/`, by the top-level module it belongs to.
fn sources() -> BTreeMap<String, Vec<(String, String)>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut by_module: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path.strip_prefix(&src).expect("under src").to_string_lossy().to_string();
            let module = relative.split(['/', '.']).next().unwrap_or_default().to_string();
            if matches!(module.as_str(), "lib" | "layers") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source is readable");
            by_module.entry(module).or_default().push((relative, text));
        }
    }
    by_module
}

#[test]
fn every_module_imports_only_from_earlier_stages() {
    let stage: BTreeMap<&str, u8> = STAGES.iter().copied().collect();
    let mut wrong = Vec::new();
    for (module, files) in sources() {
        let Some(&own) = stage.get(module.as_str()) else {
            wrong.push(format!("{module}: not placed in a stage (add it to STAGES in layers.rs)"));
            continue;
        };
        for (file, text) in files {
            for used in imported_modules(&text) {
                if used == module {
                    continue;
                }
                match stage.get(used.as_str()) {
                    Some(&theirs) if theirs < own => {}
                    Some(&theirs) => wrong.push(format!("{file} (stage {own}) uses crate::{used} (stage {theirs})")),
                    None => wrong.push(format!("{file} uses crate::{used}, which has no stage")),
                }
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the flow:\n{}", wrong.join("\n"));
}

#[test]
fn every_module_says_its_one_job_first() {
    let mut silent = Vec::new();
    for (_, files) in sources() {
        for (file, text) in files {
            if !text.trim_start().starts_with("//!") {
                silent.push(file);
            }
        }
    }
    assert!(silent.is_empty(), "files without a `//!` header saying their job: {silent:?}");
}

#[test]
fn the_architecture_doc_lists_every_module() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/architecture.md")).expect("docs/architecture.md");
    let unlisted: Vec<String> = sources()
        .into_keys()
        .filter(|m| ![format!("`{m}.rs`"), format!("`{m}/`")].iter().any(|name| doc.contains(&format!("| {name} |"))))
        .collect();
    assert!(unlisted.is_empty(), "modules without a row in docs/architecture.md: {unlisted:?}");
}

/// Each built-in plugin's lines outside its tests, at most: a plugin reads
/// like its incident, and what plugins share lives in the SDK or db-common.
/// The database plugins are over the 150 the architecture aims at: their
/// findings must stay byte for byte what operators already see, and their
/// config is wide (25 and 32 keys); these bounds only ever go down.
const PLUGIN_LINE_BUDGETS: &[(&str, usize)] = &[
    ("pid-file-stop", 150),
    ("port-9403-freer", 150),
    ("container-caps-checker", 150),
    ("sqlite-chunk-reset", 262),
    ("job-health", 380),
];

/// Lines of a plugin's `src/`, leaving out `src/tests.rs` and everything
/// from a file's first `#[cfg(test)]` on.
fn plugin_lines(plugin: &str) -> usize {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins").join(plugin).join("src");
    let mut total = 0;
    for entry in std::fs::read_dir(&src).expect("plugin src is readable").flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == "tests.rs") || path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("plugin source is readable");
        total += text.lines().take_while(|l| !l.starts_with("#[cfg(test)]")).count();
    }
    total
}

#[test]
fn every_built_in_plugin_stays_within_its_line_budget() {
    let sizes: Vec<(&str, usize, usize)> = PLUGIN_LINE_BUDGETS.iter().map(|&(p, budget)| (p, plugin_lines(p), budget)).collect();
    // `cargo test -p doctor --lib line_budget -- --nocapture` prints the figures.
    for (plugin, lines, budget) in &sizes {
        println!("{plugin}: {lines} lines (budget {budget})");
    }
    let over: Vec<String> = sizes.iter().filter(|(_, lines, budget)| lines > budget).map(|(p, l, b)| format!("{p}: {l} > {b}")).collect();
    assert!(over.is_empty(), "built-in plugins over their line budget: {over:?}");
}

#[test]
fn the_scanner_sees_imports_and_ignores_tests() {
    let text = "use crate::plan::X;\nuse crate::{report::{a, b}, cli};\nfn f() { crate::journal::open(); }\n#[cfg(test)]\nmod t { use crate::cli; }";
    assert_eq!(imported_modules(text), ["plan", "report", "cli", "journal"]);
}
