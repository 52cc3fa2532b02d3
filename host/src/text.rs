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

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn cuts_on_a_character_boundary_and_marks_the_cut() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdef", 3), "abc…");
        // "é" is two bytes: a cut in its middle steps back before it.
        assert_eq!(truncate("aé", 2), "a…");
    }
}
