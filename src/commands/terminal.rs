//! Text for a terminal from data others wrote (job names, commands, errors, shard output,
//! event details): control characters are shown escaped (`\x1b`), so a job cannot move the
//! cursor, rewrite what the operator sees, set the window title or worse. JSON output is
//! escaped by JSON itself; raw bytes go out only where asked (`job logs --raw`).

use std::borrow::Cow;

/// `text` with every control character escaped as `\xNN` (its UTF-8 bytes); with
/// `keep_lines`, newline and tab stay as they are.
pub fn escape(text: &str, keep_lines: bool) -> Cow<'_, str> {
    let kept = |ch: char| keep_lines && (ch == '\n' || ch == '\t');
    if !text.chars().any(|ch| is_unsafe(ch) && !kept(ch)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for ch in text.chars() {
        if is_unsafe(ch) && !kept(ch) {
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            out.push(ch);
        }
    }
    Cow::Owned(out)
}

/// A single line of it: newlines and tabs escaped too (table cells, one-line messages).
pub fn line(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

/// Bytes a shard printed, as text that cannot drive a terminal; lines and tabs kept.
pub fn printable(bytes: &[u8]) -> String {
    escape(&String::from_utf8_lossy(bytes), true).into_owned()
}

/// C0 and C1 controls and DEL, and the bidirectional overrides that reorder what a line
/// seems to say.
fn is_unsafe(ch: char) -> bool {
    ch.is_control() || matches!(ch, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_plain_text_is_untouched() {
        assert!(matches!(line("plain job-1 ünïcode"), Cow::Borrowed(_)));
        assert_eq!(line("\x1b[2Jwiped"), "\\x1b[2Jwiped");
        assert_eq!(line("a\nb\tc"), "a\\x0ab\\x09c");
        assert_eq!(escape("a\nb\tc\r", true), "a\nb\tc\\x0d");
        assert_eq!(line("\u{9b}31m"), "\\xc2\\x9b31m");
        assert_eq!(line("abc\u{202e}def"), "abc\\xe2\\x80\\xaedef");
        assert_eq!(printable(b"ok\n\tdone"), "ok\n\tdone");
        assert_eq!(printable(b"\x1b]0;title\x07"), "\\x1b]0;title\\x07");
        assert_eq!(printable(&[0xff, b'a']), "\u{fffd}a");
    }
}
