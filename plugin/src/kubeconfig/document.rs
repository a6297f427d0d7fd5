//! A kubeconfig file as a generic YAML document.
//!
//! Kubeconfigs carry fields no Rust type knows: `extensions` of cloud CLIs, `preferences`,
//! fields added by newer kubectl versions. Typed structs would drop them on a round trip,
//! so every edit here works on the whole document as a [`Mapping`] and touches only the
//! entries it means to. Comments are the one thing a YAML round trip cannot keep.

use serde_yaml::{Mapping, Value};

/// The three lists of named entries a kubeconfig holds, with the field inside each entry
/// that carries its body (`clusters[].cluster`, `users[].user`, `contexts[].context`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamedList {
    /// `clusters[]`: server URL and CA.
    Clusters,
    /// `users[]`: credentials.
    Users,
    /// `contexts[]`: a (cluster, user, namespace) triple.
    Contexts,
}

impl NamedList {
    /// Every list, in the order kubectl writes them.
    pub const ALL: [NamedList; 3] = [NamedList::Clusters, NamedList::Users, NamedList::Contexts];

    /// Key of the list in the document.
    pub fn key(self) -> &'static str {
        match self {
            Self::Clusters => "clusters",
            Self::Users => "users",
            Self::Contexts => "contexts",
        }
    }

    /// Key of the body inside one entry.
    pub fn body_key(self) -> &'static str {
        match self {
            Self::Clusters => "cluster",
            Self::Users => "user",
            Self::Contexts => "context",
        }
    }
}

/// Key of the context kubectl uses when no `--context` is given.
pub const CURRENT_CONTEXT: &str = "current-context";

/// Why a kubeconfig's text is not a usable document.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// The text is not YAML (or JSON).
    #[error("it is not valid YAML: {0}")]
    ParseYaml(#[source] serde_yaml::Error),
    /// The top level is a list or a scalar.
    #[error("its top level is not a mapping of apiVersion, kind, clusters, users and contexts")]
    CheckTopLevel,
    /// `clusters`, `users` or `contexts` is present but is not a list, so entries cannot be
    /// added or removed without destroying it.
    #[error("its `{0}` field is not a list")]
    CheckList(&'static str),
}

/// Parses kubeconfig text. Empty text (or a lone `null`) is an empty kubeconfig, as kubectl
/// treats an empty file.
pub fn parse(text: &str) -> Result<Mapping, DocumentError> {
    if text.trim().is_empty() {
        return Ok(Mapping::new());
    }
    match serde_yaml::from_str::<Value>(text).map_err(DocumentError::ParseYaml)? {
        Value::Mapping(mapping) => {
            for list in NamedList::ALL {
                match mapping.get(list.key()) {
                    None | Some(Value::Null) | Some(Value::Sequence(_)) => {}
                    Some(_) => return Err(DocumentError::CheckList(list.key())),
                }
            }
            Ok(mapping)
        }
        Value::Null => Ok(Mapping::new()),
        _ => Err(DocumentError::CheckTopLevel),
    }
}

/// Writes a document back as YAML text that kubectl's YAML 1.1 reader takes exactly as
/// it is (see [`super::emit`]).
pub fn to_yaml(document: &Mapping) -> String {
    super::emit::document(document)
}

/// A fresh kubeconfig with the header kubectl writes.
pub fn empty_kubeconfig() -> Mapping {
    let mut document = Mapping::new();
    document.insert("apiVersion".into(), "v1".into());
    document.insert("kind".into(), "Config".into());
    document.insert("preferences".into(), Value::Mapping(Mapping::new()));
    for list in NamedList::ALL {
        document.insert(list.key().into(), Value::Sequence(Vec::new()));
    }
    document.insert(CURRENT_CONTEXT.into(), "".into());
    document
}

/// Entries of one list; a missing or `null` list is empty.
pub fn entries(document: &Mapping, list: NamedList) -> &[Value] {
    match document.get(list.key()) {
        Some(Value::Sequence(items)) => items,
        _ => &[],
    }
}

/// Entries of one list for editing, creating the list when absent or `null`.
pub fn entries_mut(
    document: &mut Mapping,
    list: NamedList,
) -> Result<&mut Vec<Value>, DocumentError> {
    let slot = document
        .entry(list.key().into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if slot.is_null() {
        *slot = Value::Sequence(Vec::new());
    }
    slot.as_sequence_mut()
        .ok_or(DocumentError::CheckList(list.key()))
}

/// The `name` of an entry, when it has a string one.
pub fn entry_name(entry: &Value) -> Option<&str> {
    entry.get("name").and_then(Value::as_str)
}

/// The entry called `name`, with its body.
pub fn find_entry<'a>(document: &'a Mapping, list: NamedList, name: &str) -> Option<&'a Value> {
    entries(document, list)
        .iter()
        .find(|entry| entry_name(entry) == Some(name))
}

/// The body (`cluster`, `user` or `context`) of the entry called `name`.
pub fn find_body<'a>(document: &'a Mapping, list: NamedList, name: &str) -> Option<&'a Value> {
    find_entry(document, list, name).and_then(|entry| entry.get(list.body_key()))
}

/// Names of every entry of a list, in file order.
pub fn entry_names(document: &Mapping, list: NamedList) -> Vec<String> {
    entries(document, list)
        .iter()
        .filter_map(entry_name)
        .map(str::to_owned)
        .collect()
}

/// `current-context` when it is set to a non-empty string.
pub fn current_context(document: &Mapping) -> Option<&str> {
    document
        .get(CURRENT_CONTEXT)
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
}

/// A string field of a mapping value, when present and non-empty.
pub fn string_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value
        .get(key)
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_is_an_empty_kubeconfig() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("  \n").unwrap().is_empty());
        assert!(parse("null\n").unwrap().is_empty());
    }

    #[test]
    fn json_kubeconfig_is_accepted() {
        let document = parse(r#"{"contexts":[{"name":"a","context":{"cluster":"c"}}]}"#).unwrap();
        assert_eq!(entry_names(&document, NamedList::Contexts), ["a"]);
    }

    #[test]
    fn a_list_at_the_top_level_is_refused() {
        assert!(matches!(
            parse("- a\n- b\n"),
            Err(DocumentError::CheckTopLevel)
        ));
    }

    #[test]
    fn a_scalar_where_a_list_belongs_is_refused_with_its_name() {
        let error = parse("clusters: oops\n").unwrap_err();
        assert_eq!(error.to_string(), "its `clusters` field is not a list");
    }

    #[test]
    fn null_lists_become_empty_lists_when_edited() {
        let mut document = parse("users: null\n").unwrap();
        assert!(entries(&document, NamedList::Users).is_empty());
        entries_mut(&mut document, NamedList::Users)
            .unwrap()
            .push("x".into());
        assert_eq!(entries(&document, NamedList::Users).len(), 1);
    }

    #[test]
    fn empty_current_context_counts_as_unset() {
        assert_eq!(
            current_context(&parse("current-context: \"\"\n").unwrap()),
            None
        );
        assert_eq!(
            current_context(&parse("current-context: a\n").unwrap()),
            Some("a")
        );
    }
}
