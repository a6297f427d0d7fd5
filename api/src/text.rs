//! Text that others control, made safe to show on one line.
//!
//! Tenant admins control what their apiserver answers (its error bodies carry their
//! admission webhooks' messages and their objects' names), and whoever may write a
//! VirtualCluster's status controls its messages. That text reaches host Events and
//! conditions, logs and `kubectl vc` output, where a terminal escape sequence could
//! rewrite the operator's screen or retitle the terminal, a newline could forge a line
//! of output, and a bidirectional override could make text read differently from what
//! it is. [`sanitize`] is the one function every such place goes through.

/// Longest Event note kube-apiserver keeps readable; events.k8s.io rejects notes over
/// 1 KiB.
pub const EVENT_NOTE_CHARS: usize = 1000;

/// Longest status message or condition message kept: long enough for every message the
/// controller writes, short enough that a tenant's error body cannot bloat the object.
pub const STATUS_MESSAGE_CHARS: usize = 1024;

/// Longest value `kubectl vc` prints in one table cell or describe field.
pub const OUTPUT_CHARS: usize = 1024;

/// Longest apiserver error message `kubectl vc` prints.
pub const ERROR_CHARS: usize = 4096;

/// What ends text cut at its bound.
pub const ELLIPSIS: char = '…';

/// `text` on one line of at most `max_chars` characters: control characters (C0
/// including newline, tab and escape, DEL, C1) and invisible formatting characters
/// (bidirectional overrides and isolates, zero-width characters, the BOM) are written
/// as escapes (`\n`, `\t`, `\x1b`, `\u{202e}`), so they show instead of acting; text
/// longer than the bound is cut, never inside an escape, and ends with [`ELLIPSIS`].
/// Applying it twice changes nothing.
pub fn sanitize(text: &str, max_chars: usize) -> String {
    let pieces: Vec<(char, Option<String>)> = text.chars().map(|c| (c, escape(c))).collect();
    let width = |piece: &(char, Option<String>)| piece.1.as_ref().map_or(1, |e| e.chars().count());
    let total: usize = pieces.iter().map(width).sum();
    let (budget, cut) = if total <= max_chars {
        (total, false)
    } else {
        (max_chars.saturating_sub(1), max_chars > 0)
    };
    let mut out = String::with_capacity(budget);
    let mut length = 0usize;
    for piece in &pieces {
        let piece_width = width(piece);
        if length + piece_width > budget {
            break;
        }
        match &piece.1 {
            Some(escaped) => out.push_str(escaped),
            None => out.push(piece.0),
        }
        length += piece_width;
    }
    if cut {
        out.push(ELLIPSIS);
    }
    out
}

/// The escape of `c`, or `None` when it is shown as itself.
fn escape(c: char) -> Option<String> {
    match c {
        '\n' => Some("\\n".to_owned()),
        '\r' => Some("\\r".to_owned()),
        '\t' => Some("\\t".to_owned()),
        c if c.is_control() => Some(format!("\\x{:02x}", u32::from(c))),
        c if is_invisible_format(c) => Some(format!("\\u{{{:04x}}}", u32::from(c))),
        _ => None,
    }
}

/// Formatting characters that change how surrounding text is shown without showing
/// themselves: bidirectional marks, embeddings, overrides and isolates, zero-width
/// spaces and joiners, invisible operators, and the byte-order mark.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn terminal_escapes_and_newlines_show_instead_of_acting() {
        assert_eq!(
            sanitize("\u{1b}]0;owned\u{7}\u{1b}[2Jready\nfake line\r\tx", 200),
            "\\x1b]0;owned\\x07\\x1b[2Jready\\nfake line\\r\\tx"
        );
        assert_eq!(
            sanitize("DEL\u{7f} C1\u{9b}31m", 200),
            "DEL\\x7f C1\\x9b31m"
        );
        assert_eq!(
            sanitize("user\u{202e}gpj.exe\u{200b}", 200),
            "user\\u{202e}gpj.exe\\u{200b}"
        );
    }

    #[test]
    fn ordinary_text_is_kept_as_written() {
        let text = "node \"node7\" already belongs to VirtualCluster team-a/prod — ünïcode ✓ 日本";
        assert_eq!(sanitize(text, 200), text);
        assert_eq!(sanitize("", 10), "");
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis_never_inside_an_escape() {
        assert_eq!(sanitize("abcdef", 6), "abcdef");
        assert_eq!(sanitize("abcdefg", 6), "abcde…");
        assert_eq!(sanitize("ab\u{1b}cdef", 6), "ab…");
        assert_eq!(sanitize("abc\ndef", 6), "abc\\n…");
        assert_eq!(sanitize("abcdef", 0), "");
        let long = "x".repeat(5000);
        assert_eq!(
            sanitize(&long, EVENT_NOTE_CHARS).chars().count(),
            EVENT_NOTE_CHARS
        );
    }

    proptest! {
        #[test]
        fn output_is_one_bounded_line_without_controls(text in ".{0,300}", max in 0usize..200) {
            let out = sanitize(&text, max);
            prop_assert!(out.chars().count() <= max);
            prop_assert!(!out.chars().any(|c| c.is_control() || is_invisible_format(c)));
            prop_assert_eq!(sanitize(&out, max), out.clone());
        }
    }
}
