//! The architecture, enforced. Data flows policy → runtime → facts →
//! capabilities → worker → findings → plan → actions → journal → report, and a module
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
    ("worker", 5),
    ("findings", 6),
    ("plan", 7),
    ("actions", 8),
    ("journal", 9),
    ("report", 10),
    // The edges: commands that drive the stages.
    ("scaffold", 11),
    ("logging", 11),
    ("recording", 12),
    ("pipeline", 13),
    ("inspect", 14),
    ("systemd", 14),
    ("daemon", 14),
    ("demo", 15),
    ("manpage", 15),
    ("cli", 16),
    ("main", 17),
];

/// `text` with comments, string and char literals blanked (newlines kept)
/// and every `#[cfg(test)]` item removed: only code that ships is judged.
fn shipped_code(text: &str) -> String {
    let mut code = blank_literals_and_comments(text);
    for (at, end) in test_items(&code) {
        code.replace_range(at..end, &" ".repeat(end - at));
    }
    code
}

/// Byte ranges of the `#[cfg(test)]` items of blanked code.
fn test_items(blanked: &str) -> Vec<(usize, usize)> {
    let (mut items, mut from) = (Vec::new(), 0);
    while let Some(at) = blanked[from..].find("#[cfg(test)]").map(|i| i + from) {
        let end = item_end(blanked, at + "#[cfg(test)]".len());
        items.push((at, end));
        from = end;
    }
    items
}

/// The spans of `config! { ... }` invocations: declarations, not logic.
fn config_declarations(blanked: &str) -> Vec<(usize, usize)> {
    let (mut spans, mut from) = (Vec::new(), 0);
    while let Some(at) = blanked[from..].find("config! {").map(|i| i + from) {
        let end = item_end(blanked, at + "config!".len());
        spans.push((at, end));
        from = end;
    }
    spans
}

/// Where the item starting at `from` ends: after its `;`, or after the `}`
/// matching its first `{`.
fn item_end(code: &str, from: usize) -> usize {
    let mut depth = 0usize;
    for (i, c) in code[from..].char_indices() {
        match c {
            ';' if depth == 0 => return from + i + 1,
            '{' => depth += 1,
            '}' if depth <= 1 => return from + i + 1,
            '}' => depth -= 1,
            _ => {}
        }
    }
    code.len()
}

fn blank_literals_and_comments(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let after_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    if depth == 0 {
                        out.push_str("  ");
                        i += 2;
                        break;
                    }
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == 'r'
            && !after_ident
            && matches!(next, Some('#') | Some('"'))
            && raw_string_hashes(&chars[i + 1..]).is_some()
        {
            let hashes = raw_string_hashes(&chars[i + 1..]).unwrap_or(0);
            let closing: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let start = i;
            i += 2 + hashes;
            while i < chars.len() && !chars[i..].starts_with(&closing) {
                i += 1;
            }
            i = (i + closing.len()).min(chars.len());
            out.extend(chars[start..i].iter().map(|&c| blank(c)));
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                let step = if chars[i] == '\\' { 2 } else { 1 };
                out.extend(
                    chars[i..(i + step).min(chars.len())]
                        .iter()
                        .map(|&c| blank(c)),
                );
                i += step;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && (chars.get(i + 2) == Some(&'\'') || next == Some('\\')) {
            // A char literal ('x', '\n', '\u{..}'), not a lifetime.
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i = (i + 1).min(chars.len());
            out.extend(chars[start..i].iter().map(|&c| blank(c)));
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `#`s of a raw string opening (`r"`, `r#"` …) at `rest` (after the `r`).
fn raw_string_hashes(rest: &[char]) -> Option<usize> {
    let hashes = rest.iter().take_while(|c| **c == '#').count();
    (rest.get(hashes) == Some(&'"')).then_some(hashes)
}

/// The top-level modules the shipped code of a file at `depth` (1 for
/// `x.rs` and `x/mod.rs`, 2 for `x/y.rs` …) uses: `crate::x`, grouped
/// `crate::{a::X, b}`, and `super::` chains that climb to the crate root.
fn imported_modules(text: &str, depth: usize) -> Vec<String> {
    let code = shipped_code(text);
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => found.extend(top_level_names(group)),
            None => found.extend(leading_ident(rest)),
        }
    }
    for (at, _) in code.match_indices("super::") {
        if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut rest = &code[at..];
        let mut climbed = 0;
        while let Some(after) = rest.strip_prefix("super::") {
            climbed += 1;
            rest = after;
        }
        if climbed >= depth {
            match rest.strip_prefix('{') {
                Some(group) => found.extend(
                    top_level_names(group)
                        .into_iter()
                        .map(|m| format!("super:{m}")),
                ),
                None => found.extend(leading_ident(rest).map(|m| format!("super:{m}"))),
            }
        }
    }
    found
}

/// Macros defined by a stage, usable by later ones only.
const MACROS: &[(&str, &str)] = &[
    ("out!", "report"),
    ("outln!", "report"),
    ("errln!", "report"),
];

fn macros_used(text: &str) -> Vec<&'static str> {
    let code = shipped_code(text);
    MACROS
        .iter()
        .filter(|(name, _)| {
            code.match_indices(name)
                .any(|(at, _)| !code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
        })
        .map(|(_, owner)| *owner)
        .collect()
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
    let name: String = text
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

/// Every source file under `src/`, by the top-level module it belongs to.
fn sources() -> BTreeMap<String, Vec<(String, String)>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut by_module: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for path in rust_files(&src) {
        let relative = path
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .to_string();
        let module = relative
            .split(['/', '.'])
            .next()
            .unwrap_or_default()
            .to_string();
        if matches!(module.as_str(), "lib" | "layers") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source is readable");
        by_module.entry(module).or_default().push((relative, text));
    }
    by_module
}

/// Every `.rs` file under `dir`, however deep.
fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let (mut files, mut stack) = (Vec::new(), vec![dir.to_path_buf()]);
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("source dir is readable")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// How deep a file's module is: 1 for `x.rs` and `x/mod.rs`, 2 for `x/y.rs`.
fn module_depth(relative: &str) -> usize {
    let parts = relative.split('/').count();
    if relative.ends_with("/mod.rs") {
        parts - 1
    } else {
        parts
    }
}

#[test]
fn every_module_imports_only_from_earlier_stages() {
    let stage: BTreeMap<&str, u8> = STAGES.iter().copied().collect();
    let mut wrong = Vec::new();
    for (module, files) in sources() {
        let Some(&own) = stage.get(module.as_str()) else {
            wrong.push(format!(
                "{module}: not placed in a stage (add it to STAGES in layers.rs)"
            ));
            continue;
        };
        for (file, text) in files {
            if shipped_code(&text).contains("#[path") {
                wrong.push(format!(
                    "{file}: a #[path] module hides where its code sits in the flow"
                ));
            }
            let used = imported_modules(&text, module_depth(&file));
            // `super::` that climbs to the root names a module only if it is one.
            let used = used.iter().filter_map(|u| match u.strip_prefix("super:") {
                Some(name) => stage.contains_key(name).then_some(name),
                None => Some(u.as_str()),
            });
            let by_macro = macros_used(&text)
                .into_iter()
                .map(|owner| (owner, " (through its macros)"));
            for (used, how) in used.map(|u| (u, "")).chain(by_macro) {
                if used == module {
                    continue;
                }
                match stage.get(used) {
                    Some(&theirs) if theirs < own => {}
                    Some(&theirs) => wrong.push(format!(
                        "{file} (stage {own}) uses crate::{used}{how} (stage {theirs})"
                    )),
                    None => wrong.push(format!("{file} uses crate::{used}, which has no stage")),
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the flow:\n{}",
        wrong.join("\n")
    );
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
    assert!(
        silent.is_empty(),
        "files without a `//!` header saying their job: {silent:?}"
    );
}

#[test]
fn the_architecture_doc_lists_every_module() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/architecture.md"),
    )
    .expect("docs/architecture.md");
    let unlisted: Vec<String> = sources()
        .into_keys()
        .filter(|m| {
            ![format!("`{m}.rs`"), format!("`{m}/`")]
                .iter()
                .any(|name| doc.contains(&format!("| {name} |")))
        })
        .collect();
    assert!(
        unlisted.is_empty(),
        "modules without a row in docs/architecture.md: {unlisted:?}"
    );
}

/// Each built-in plugin's logic lines (see `plugin_lines`), at most: a
/// plugin reads like its incident, and what plugins share lives in the SDK
/// or db-common. Set from the honest rustfmt count when formatting became
/// the rule; the architecture aims at 150 for the small plugins and 250 for
/// the database plugins. A ratchet: these bounds only ever go down.
const PLUGIN_LINE_BUDGETS: &[(&str, usize)] = &[
    ("pid-file-stop", 153),
    ("port-9403-freer", 165),
    ("container-caps-checker", 150),
    ("sqlite-chunk-reset", 342),
    ("job-health", 504),
];

/// A plugin's logic lines as rustfmt writes them (`.ci/test` fails on
/// unformatted code): the lines of its `src/` that hold code, leaving out
/// blank and comment-only lines (a comment saying why is never a cost),
/// `src/tests.rs`, `#[cfg(test)]` items and the `config!` declaration (keys
/// with their descriptions, one per line).
fn plugin_lines(plugin: &str) -> usize {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins")
        .join(plugin)
        .join("src");
    let mut total = 0;
    for path in rust_files(&src)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "tests.rs"))
    {
        let text = std::fs::read_to_string(&path).expect("plugin source is readable");
        let blanked = blank_literals_and_comments(&text);
        let line_of = |at: usize| blanked[..at].matches('\n').count();
        let left_out: Vec<(usize, usize)> = test_items(&blanked)
            .into_iter()
            .chain(config_declarations(&blanked))
            .map(|(at, end)| (line_of(at), line_of(end)))
            .collect();
        total += text
            .lines()
            .enumerate()
            .filter(|(n, _)| !left_out.iter().any(|&(from, to)| (from..=to).contains(n)))
            .filter(|(_, line)| holds_code(line))
            .count();
    }
    total
}

fn holds_code(line: &str) -> bool {
    let line = line.trim();
    !line.is_empty() && !line.starts_with("//")
}

#[test]
fn every_built_in_plugin_stays_within_its_line_budget() {
    let sizes: Vec<(&str, usize, usize)> = PLUGIN_LINE_BUDGETS
        .iter()
        .map(|&(p, budget)| (p, plugin_lines(p), budget))
        .collect();
    // `cargo test -p doctor --lib line_budget -- --nocapture` prints the figures.
    for (plugin, lines, budget) in &sizes {
        println!("{plugin}: {lines} lines (budget {budget})");
    }
    let over: Vec<String> = sizes
        .iter()
        .filter(|(_, lines, budget)| lines > budget)
        .map(|(p, l, b)| format!("{p}: {l} > {b}"))
        .collect();
    assert!(
        over.is_empty(),
        "built-in plugins over their line budget: {over:?}"
    );
}

#[test]
fn the_scanner_sees_imports_and_ignores_tests_strings_and_comments() {
    let text = r##"use crate::plan::X;
use crate::{report::{a, b}, cli};
// crate::daemon in a comment
const T: &str = "crate::demo in a string #[cfg(test)]";
const R: &str = r#"crate::systemd in a raw string"#;
fn f<'a>(c: char) -> bool { c == '"' || crate::journal::open() }
#[cfg(test)]
fn helper() { crate::manpage::x(); }
fn after() { super::inspect::y(); outln!("x"); }
#[cfg(test)]
mod t { use crate::cli; }
"##;
    assert_eq!(
        imported_modules(text, 1),
        ["plan", "report", "cli", "journal", "super:inspect"]
    );
    assert_eq!(
        imported_modules(text, 2),
        ["plan", "report", "cli", "journal"],
        "from x/y.rs one super:: stays inside x"
    );
    assert_eq!(macros_used(text), ["report"]);
}
