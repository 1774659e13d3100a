//! Small text rules shared by every layer: digests as hex, and the
//! characters that must never reach a log line unescaped.

/// Hex, as `sha256:` pins and `plugin inspect` write digests.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `c` could break a log line or a terminal's reading of it:
/// control characters (C0 and C1, U+0085 among them), Unicode's line and
/// paragraph separators (U+2028, U+2029), and the bidirectional controls
/// that reorder what is shown (U+061C, U+200E, U+200F, U+202A-U+202E,
/// U+2066-U+2069).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}
