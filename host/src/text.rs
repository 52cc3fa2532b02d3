//! Bounding text that came from outside doctor (plugins, engines, child
//! processes) before it is stored or shown.

/// At most `max` bytes of `text`, cut on a character boundary and marked
/// with `…` where it was cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `text` on one line, every control character shown as an escape (`\n`,
/// `\u{1b}`): what a plugin or its worker wrote to stderr may be shown in
/// a failure message, and must not forge report lines or recolour a
/// terminal.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{one_line, truncate};

    #[test]
    fn one_line_escapes_what_could_forge_a_line_or_a_colour() {
        assert_eq!(
            one_line("a\nexit 0\r\x1b[32mOK"),
            "a\\nexit 0\\u{d}\\u{1b}[32mOK"
        );
        assert_eq!(one_line("plain é"), "plain é");
    }

    #[test]
    fn cuts_on_a_character_boundary_and_marks_the_cut() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdef", 3), "abc…");
        // "é" is two bytes: a cut in its middle steps back before it.
        assert_eq!(truncate("aé", 2), "a…");
    }
}
