//! Writing a kubeconfig as YAML that kubectl reads back exactly.
//!
//! kubectl parses kubeconfigs with a YAML 1.1 reader: plain `y`, `n`, `yes`, `off`, `~`,
//! `0x1F`, `1e3`, `010`, `1_000`, `190:20:30` or `2001-12-14` are booleans, nulls, numbers
//! or timestamps there, not strings, and a kubeconfig holding `user: y` fails to load at
//! all. YAML 1.2 emitters (serde_yaml among them) leave exactly those plain. So strings
//! are written plain only when they are obviously strings to any YAML reader, and
//! double-quoted otherwise.
//!
//! The layout is kubectl's own (block mappings, sequences at the indentation of their
//! key), so a diff against a file kubectl wrote stays small.

use std::fmt::Write as _;

use serde_yaml::{Mapping, Value};

/// YAML text of a document whose top level is a mapping.
pub fn document(mapping: &Mapping) -> String {
    let mut out = String::new();
    if mapping.is_empty() {
        out.push_str("{}\n");
    } else {
        block_mapping(&mut out, mapping, 0);
    }
    out
}

fn block_mapping(out: &mut String, mapping: &Mapping, indent: usize) {
    for (key, value) in mapping {
        push_indent(out, indent);
        scalar_key(out, key);
        out.push(':');
        value_after_key(out, value, indent);
    }
}

/// The value of a mapping entry, after `key:`. Non-empty sequences sit at the key's
/// indentation and mappings one level deeper, as kubectl writes them.
fn value_after_key(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Mapping(inner) if !inner.is_empty() => {
            out.push('\n');
            block_mapping(out, inner, indent + 2);
        }
        Value::Sequence(items) if !items.is_empty() => {
            out.push('\n');
            block_sequence(out, items, indent);
        }
        Value::Tagged(tagged) => {
            let _ = write!(out, " {}", tagged.tag);
            value_after_key(out, &tagged.value, indent);
        }
        scalar => {
            out.push(' ');
            inline(out, scalar);
            out.push('\n');
        }
    }
}

fn block_sequence(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        push_indent(out, indent);
        out.push('-');
        item_after_dash(out, item, indent);
    }
}

/// A sequence item after `-`: a mapping starts on the dash's line, as `- name: x`.
fn item_after_dash(out: &mut String, item: &Value, indent: usize) {
    match item {
        Value::Mapping(inner) if !inner.is_empty() => {
            let mut first = true;
            for (key, value) in inner {
                if first {
                    out.push(' ');
                    first = false;
                } else {
                    push_indent(out, indent + 2);
                }
                scalar_key(out, key);
                out.push(':');
                value_after_key(out, value, indent + 2);
            }
        }
        Value::Sequence(inner) if !inner.is_empty() => {
            out.push('\n');
            block_sequence(out, inner, indent + 2);
        }
        Value::Tagged(tagged) => {
            let _ = write!(out, " {}", tagged.tag);
            item_after_dash(out, &tagged.value, indent);
        }
        scalar => {
            out.push(' ');
            inline(out, scalar);
            out.push('\n');
        }
    }
}

/// A value on one line: scalars, and empty collections as `{}` and `[]`. A non-empty
/// collection in a key position (which kubeconfigs never have) is written in flow style.
fn inline(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Number(number) => {
            let _ = write!(out, "{number}");
        }
        Value::String(text) => string(out, text),
        Value::Sequence(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                inline(out, item);
            }
            out.push(']');
        }
        Value::Mapping(mapping) => {
            out.push('{');
            for (index, (key, item)) in mapping.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                inline(out, key);
                out.push_str(": ");
                inline(out, item);
            }
            out.push('}');
        }
        Value::Tagged(tagged) => {
            let _ = write!(out, "{} ", tagged.tag);
            inline(out, &tagged.value);
        }
    }
}

fn scalar_key(out: &mut String, key: &Value) {
    inline(out, key);
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// Writes `text` plain when every YAML 1.1 and 1.2 reader takes it as this very string,
/// else double-quoted.
pub fn string(out: &mut String, text: &str) {
    if is_plain_safe(text) {
        out.push_str(text);
    } else {
        double_quoted(out, text);
    }
}

/// Whether `text` may be written without quotes. Deliberately narrow: a few characters
/// that have no meaning in block context, a letter or `/` first (so no number, date,
/// `.inf`, `-x` or `~` can start it), and none of the YAML 1.1 boolean or null words in
/// any case. Quoting a string that did not need it costs two characters; leaving one
/// plain that needed quotes breaks every kubectl command.
pub fn is_plain_safe(text: &str) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == '/') {
        return false;
    }
    if !text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '@'))
    {
        return false;
    }
    // `a:` ends a key, and `:` before a space or line end is an indicator; `://` is not.
    if text.ends_with(':') {
        return false;
    }
    const RESERVED: [&str; 11] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf",
    ];
    !RESERVED
        .iter()
        .any(|reserved| text.eq_ignore_ascii_case(reserved))
}

/// A YAML double-quoted scalar. Everything outside printable ASCII that a YAML reader could
/// fold, drop or refuse (control characters, DEL, C1, line and paragraph separators, the
/// byte order mark, non-characters) is escaped; other Unicode is written as it is.
fn double_quoted(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                let code = u32::from(c);
                if code <= 0xFFFF {
                    let _ = write!(out, "\\u{code:04X}");
                } else {
                    let _ = write!(out, "\\U{code:08X}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn needs_escape(c: char) -> bool {
    let code = u32::from(c);
    code < 0x20
        || (0x7F..=0x9F).contains(&code)
        || code == 0x2028
        || code == 0x2029
        || code == 0xFEFF
        || (0xFDD0..=0xFDEF).contains(&code)
        || (code & 0xFFFE) == 0xFFFE
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn emit(yaml: &str) -> String {
        let value: Mapping = serde_yaml::from_str(yaml).unwrap();
        document(&value)
    }

    #[test]
    fn layout_is_kubectls() {
        let text = "apiVersion: v1\nclusters:\n- cluster:\n    server: https://127.0.0.1:6443\n  name: kind\ncontexts: []\npreferences: {}\n";
        assert_eq!(emit(text), text);
    }

    #[test]
    fn yaml_11_words_and_numbers_are_quoted() {
        for word in [
            "y",
            "Y",
            "n",
            "yes",
            "No",
            "ON",
            "off",
            "true",
            "False",
            "null",
            "~",
            "",
            "0x1F",
            "1e3",
            "010",
            "1_000",
            "190:20:30",
            "2001-12-14",
            ".inf",
            "-.Inf",
            ".NaN",
            "-1",
            "+1",
            "<<",
            "=",
            "a: b",
            "a #b",
            "key:",
            "- x",
            "[x]",
            "{x}",
            "*x",
            "&x",
            "!x",
            "%x",
            "@x",
            "`x",
            "|",
            ">",
            "'x'",
            "\"x\"",
            " x",
            "x ",
        ] {
            let mut out = String::new();
            string(&mut out, word);
            assert!(out.starts_with('"'), "{word:?} written as {out}");
            let back: String = serde_yaml::from_str(&out).unwrap();
            assert_eq!(back, word);
        }
    }

    #[test]
    fn ordinary_names_stay_plain() {
        for word in [
            "kind-dev",
            "https://127.0.0.1:6443",
            "arn:aws:eks:eu-west-1:123456789012:cluster/prod",
            "gke_project_europe-west1_prod",
            "client.authentication.k8s.io/v1beta1",
            "admin@prod",
            "/home/me/.kube/ca.crt",
            "yesterday",
        ] {
            assert!(is_plain_safe(word), "{word}");
        }
    }

    #[test]
    fn control_characters_and_separators_are_escaped() {
        let mut out = String::new();
        string(&mut out, "a\u{7f}b\u{85}c\u{2028}d\u{feff}e\u{1F600}\n\"\\");
        assert_eq!(
            out,
            "\"a\\u007Fb\\u0085c\\u2028d\\uFEFFe\u{1F600}\\n\\\"\\\\\""
        );
    }
}
