//! Where in the policy file a key is: the line finder behind every
//! `FILE:LINE: KEY: message`, for serde's errors and for the checks after.

use super::PolicyError;
use std::path::Path;

/// Best line for a dotted key: the line where its table header or the
/// deepest mentioned part appears.
pub fn line_of(source: &str, key: &str) -> usize {
    let parts: Vec<&str> = key.split('.').collect();
    let mut best = 1;
    let mut start = 0;
    let lines: Vec<&str> = source.lines().collect();
    for part in parts {
        let found = lines
            .iter()
            .enumerate()
            .skip(start)
            .find(|(_, l)| mentions(l, part));
        if let Some((i, _)) = found {
            best = i + 1;
            start = i;
        }
    }
    best
}

fn mentions(line: &str, part: &str) -> bool {
    let code = line.split('#').next().unwrap_or("");
    code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .any(|w| w == part)
}

pub fn toml_error(path: &Path, source: &str, e: &toml::de::Error) -> PolicyError {
    let line = e
        .span()
        .map(|s| source[..s.start.min(source.len())].lines().count().max(1))
        .unwrap_or(0);
    let line = match e.span() {
        // A span starting right after a newline belongs to the next line.
        Some(s) if source[..s.start.min(source.len())].ends_with('\n') => line + 1,
        _ => line,
    };
    PolicyError {
        file: path.display().to_string(),
        line,
        key: key_at(source, e).unwrap_or_default(),
        message: e.message().trim().to_string(),
    }
}

/// The dotted key the error points at: the table header above the line
/// plus the key written on it (e.g. `plugins.x.every`).
fn key_at(source: &str, e: &toml::de::Error) -> Option<String> {
    let span = e.span()?;
    let line_start = source[..span.start.min(source.len())]
        .rfind('\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let line = source[line_start..].lines().next()?;
    if let Some(header) = header_of(line) {
        return Some(header);
    }
    let key = line.split_once('=').map(|(k, _)| k.trim().to_string());
    let table = source[..line_start].lines().rev().find_map(header_of);
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(t), None) => Some(t),
        (None, None) => None,
    }
}

/// `[a.b]` or `[[a.b]]` → `a.b`.
fn header_of(line: &str) -> Option<String> {
    let code = line.split('#').next()?.trim();
    let inner = code.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(inner);
    Some(inner.trim().to_string())
}
