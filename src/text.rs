//! Strings from the wire, shown to people: host names, switch ids, reasons
//! and discovery text reach log lines and tables. [`clean`] escapes every
//! control character (a newline or ESC from a forged host name would
//! otherwise forge a log line or a terminal sequence) and caps the length;
//! JSON output needs nothing more (serde escapes control characters).

use std::borrow::Cow;

/// At most this many characters of one wire string are shown.
pub const SHOWN_MAX: usize = 256;

/// `s` with control characters escaped (`\n`, `\u{1b}`...) and cut to
/// [`SHOWN_MAX`] characters (`...` marks the cut). Borrowed when nothing
/// needs changing.
pub fn clean(s: &str) -> Cow<'_, str> {
    let plain = s.len() <= SHOWN_MAX && !s.chars().any(char::is_control);
    if plain {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(SHOWN_MAX * 2));
    for (i, c) in s.chars().enumerate() {
        if i == SHOWN_MAX {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_text_cut() {
        assert!(matches!(clean("web-01.example"), Cow::Borrowed(_)));
        assert_eq!(
            clean("a\nERROR forged\u{1b}[2J"),
            "a\\nERROR forged\\u{1b}[2J"
        );
        let long = "x".repeat(10_000);
        let c = clean(&long);
        assert_eq!(c.len(), SHOWN_MAX + 3);
        assert!(c.ends_with("..."));
        assert_eq!(clean("é\u{7f}"), "é\\u{7f}");
    }
}
