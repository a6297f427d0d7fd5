//! kubectl's rules for which kubeconfig files count and how they combine.
//!
//! The rules are client-go's `ClientConfigLoadingRules`:
//! - `--kubeconfig FILE` alone, when given; the file must exist;
//! - otherwise every file of `KUBECONFIG` (split like `PATH`, empty parts and duplicates
//!   dropped, missing files skipped), merged so that the first file to set a value or to
//!   name an entry wins;
//! - otherwise `~/.kube/config`.
//!
//! Writes go to one file, chosen like `kubectl config set-context` chooses it.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use super::document::{self, NamedList};

/// Where kubeconfig files come from for one invocation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadingRules {
    /// `--kubeconfig FILE`.
    pub explicit_path: Option<PathBuf>,
    /// Files of `KUBECONFIG`, in order, without empty parts or duplicates.
    pub env_paths: Vec<PathBuf>,
    /// `~/.kube/config`, when the home directory is known.
    pub home_path: Option<PathBuf>,
}

impl LoadingRules {
    /// Rules from the flag, the value of `KUBECONFIG` and the home directory.
    pub fn new(
        explicit: Option<PathBuf>,
        kubeconfig_env: Option<&OsStr>,
        home: Option<&Path>,
    ) -> Self {
        let mut seen = HashSet::new();
        let env_paths = kubeconfig_env
            .map(|value| {
                std::env::split_paths(value)
                    .filter(|path| !path.as_os_str().is_empty())
                    .filter(|path| seen.insert(path.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            explicit_path: explicit,
            env_paths,
            home_path: home.map(|home| home.join(".kube").join("config")),
        }
    }

    /// Rules of this process: `KUBECONFIG` and `HOME` from the environment.
    pub fn from_environment(explicit: Option<PathBuf>) -> Self {
        let env = std::env::var_os("KUBECONFIG");
        let home = std::env::var_os("HOME").filter(|home| !home.is_empty());
        Self::new(explicit, env.as_deref(), home.as_deref().map(Path::new))
    }

    /// Files to read, highest precedence first. Only the explicit file must exist.
    pub fn precedence(&self) -> Vec<PathBuf> {
        if let Some(explicit) = &self.explicit_path {
            return vec![explicit.clone()];
        }
        if !self.env_paths.is_empty() {
            return self.env_paths.clone();
        }
        self.home_path.iter().cloned().collect()
    }

    /// The file a new entry is written to, as `kubectl config set-context` picks it:
    /// the explicit file; else the only `KUBECONFIG` file, else the first existing one,
    /// else the last one; else `~/.kube/config`.
    ///
    /// The first existing file of `KUBECONFIG` has the highest precedence of all files that
    /// exist, so the entries and the `current-context` written there always win the merge.
    pub fn destination(&self, exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
        if let Some(explicit) = &self.explicit_path {
            return Some(explicit.clone());
        }
        if let Some(first_existing) = self.env_paths.iter().find(|path| exists(path)) {
            return Some(first_existing.clone());
        }
        if let Some(last) = self.env_paths.last() {
            return Some(last.clone());
        }
        self.home_path.clone()
    }
}

/// One kubeconfig file as read from disk.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its content.
    pub document: Mapping,
}

/// Merges files in precedence order: the first file to name an entry or to set a value wins,
/// and later files never change it (client-go's merge rules). Relative file references are
/// resolved against the directory of the file that holds them, before merging.
pub fn merge_first_wins(files: &[LoadedFile]) -> Mapping {
    let mut merged = Mapping::new();
    let mut seen: [HashSet<String>; 3] = Default::default();
    for file in files {
        let mut document = file.document.clone();
        if let Some(directory) = file.path.parent() {
            resolve_relative_paths(&mut document, directory);
        }
        for (key, value) in document {
            let list = NamedList::ALL
                .into_iter()
                .position(|list| key.as_str() == Some(list.key()));
            match list {
                Some(index) => {
                    merge_named_entries(&mut merged, NamedList::ALL[index], value, &mut seen[index])
                }
                None if is_unset(merged.get(&key)) && !is_unset(Some(&value)) => {
                    merged.insert(key, value);
                }
                None => {}
            }
        }
    }
    merged
}

fn merge_named_entries(
    merged: &mut Mapping,
    list: NamedList,
    value: Value,
    seen: &mut HashSet<String>,
) {
    let Value::Sequence(entries) = value else {
        return;
    };
    let target = merged
        .entry(list.key().into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    let Some(target) = target.as_sequence_mut() else {
        return;
    };
    for entry in entries {
        if let Some(name) = document::entry_name(&entry)
            && seen.insert(name.to_owned())
        {
            target.push(entry);
        }
    }
}

fn is_unset(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(text)) => text.is_empty(),
        Some(_) => false,
    }
}

/// Makes `certificate-authority`, `client-certificate`, `client-key`, `tokenFile` and an
/// exec command containing a path separator absolute, as client-go's `ResolvePaths` does:
/// they are relative to the file that names them, not to the working directory.
pub fn resolve_relative_paths(document: &mut Mapping, directory: &Path) {
    for (list, fields) in [
        (NamedList::Clusters, &["certificate-authority"][..]),
        (
            NamedList::Users,
            &["client-certificate", "client-key", "tokenFile"][..],
        ),
    ] {
        let Some(Value::Sequence(entries)) = document.get_mut(list.key()) else {
            continue;
        };
        for entry in entries.iter_mut() {
            let Some(body) = entry
                .get_mut(list.body_key())
                .and_then(Value::as_mapping_mut)
            else {
                continue;
            };
            for field in fields {
                absolutize(body.get_mut(*field), directory, false);
            }
            if let Some(exec) = body.get_mut("exec").and_then(Value::as_mapping_mut) {
                absolutize(exec.get_mut("command"), directory, true);
            }
        }
    }
}

fn absolutize(value: Option<&mut Value>, directory: &Path, only_with_separator: bool) {
    let Some(Value::String(path)) = value else {
        return;
    };
    if path.is_empty() || Path::new(path.as_str()).is_absolute() {
        return;
    }
    if only_with_separator && !path.contains(std::path::MAIN_SEPARATOR) {
        return;
    }
    *path = directory.join(path.as_str()).to_string_lossy().into_owned();
}

/// `--context` and `-n`, the two per-invocation overrides of what a kubeconfig selects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--context`.
    pub context: Option<String>,
    /// `-n/--namespace`.
    pub namespace: Option<String>,
}

/// What one invocation talks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Name of the context in use.
    pub context: String,
    /// Name of its cluster entry.
    pub cluster: String,
    /// Name of its user entry.
    pub user: String,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
}

/// Why no context could be selected.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// Neither `--context` nor `current-context` names a context.
    #[error(
        "no context is selected: current-context is not set; pass --context NAME or run `kubectl config use-context NAME` (contexts: {available})"
    )]
    FindCurrentContext {
        /// Names of the contexts that exist, for the message.
        available: String,
    },
    /// The named context does not exist in any file.
    #[error("context \"{name}\" does not exist in the kubeconfig (contexts: {available})")]
    FindContext {
        /// The context asked for.
        name: String,
        /// Names of the contexts that exist.
        available: String,
    },
    /// The context names a cluster or user entry that does not exist.
    #[error(
        "context \"{context}\" refers to {list} entry \"{name}\", which does not exist in the kubeconfig"
    )]
    FindContextReference {
        /// The context being resolved.
        context: String,
        /// `cluster` or `user`.
        list: &'static str,
        /// The missing entry's name.
        name: String,
    },
}

/// Resolves the context, cluster, user and namespace of one invocation from merged files.
pub fn select(merged: &Mapping, overrides: &Overrides) -> Result<Selection, SelectError> {
    let available = || {
        let names = document::entry_names(merged, NamedList::Contexts);
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    let context = match overrides.context.as_deref().filter(|name| !name.is_empty()) {
        Some(name) => name.to_owned(),
        None => document::current_context(merged)
            .ok_or_else(|| SelectError::FindCurrentContext {
                available: available(),
            })?
            .to_owned(),
    };
    let body = document::find_body(merged, NamedList::Contexts, &context).ok_or_else(|| {
        SelectError::FindContext {
            name: context.clone(),
            available: available(),
        }
    })?;
    let reference = |list: NamedList| -> Result<String, SelectError> {
        let name = document::string_field(body, list.body_key()).unwrap_or_default();
        if document::find_entry(merged, list, name).is_none() {
            return Err(SelectError::FindContextReference {
                context: context.clone(),
                list: list.body_key(),
                name: name.to_owned(),
            });
        }
        Ok(name.to_owned())
    };
    let cluster = reference(NamedList::Clusters)?;
    let user = reference(NamedList::Users)?;
    let namespace = overrides
        .namespace
        .clone()
        .filter(|namespace| !namespace.is_empty())
        .or_else(|| document::string_field(body, "namespace").map(str::to_owned))
        .unwrap_or_else(|| "default".to_owned());
    Ok(Selection {
        context,
        cluster,
        user,
        namespace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn file(path: &str, text: &str) -> LoadedFile {
        LoadedFile {
            path: PathBuf::from(path),
            document: document::parse(text).unwrap(),
        }
    }

    const FIRST: &str = r#"
current-context: a
clusters:
- name: shared
  cluster: {server: "https://first"}
users:
- name: shared
  user: {token: one}
contexts:
- name: a
  context: {cluster: shared, user: shared, namespace: team-a}
"#;

    const SECOND: &str = r#"
current-context: b
preferences: {colors: true}
clusters:
- name: shared
  cluster: {server: "https://second"}
- name: only-second
  cluster: {server: "https://only-second", certificate-authority: ca.crt}
users:
- name: shared
  user: {token: two}
- name: only-second
  user: {client-certificate: certs/user.crt, client-key: /abs/user.key, exec: {command: ./bin/login}}
contexts:
- name: b
  context: {cluster: only-second, user: only-second}
"#;

    #[test]
    fn explicit_file_beats_kubeconfig_variable_and_home() {
        let rules = LoadingRules::new(
            Some("/x".into()),
            Some(OsStr::new("/a:/b")),
            Some(Path::new("/home/u")),
        );
        assert_eq!(rules.precedence(), [PathBuf::from("/x")]);
        assert_eq!(rules.destination(|_| false), Some(PathBuf::from("/x")));
    }

    #[test]
    fn kubeconfig_variable_drops_empty_parts_and_duplicates() {
        let rules = LoadingRules::new(
            None,
            Some(OsStr::new(":/a::/b:/a")),
            Some(Path::new("/home/u")),
        );
        assert_eq!(
            rules.precedence(),
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
    }

    #[test]
    fn home_config_is_used_without_kubeconfig_variable() {
        let rules = LoadingRules::new(None, Some(OsStr::new("")), Some(Path::new("/home/u")));
        assert_eq!(rules.precedence(), [PathBuf::from("/home/u/.kube/config")]);
        assert_eq!(
            rules.destination(|_| false),
            Some(PathBuf::from("/home/u/.kube/config"))
        );
    }

    #[test]
    fn destination_is_the_first_existing_file_of_the_variable_else_the_last() {
        let rules = LoadingRules::new(None, Some(OsStr::new("/a:/b:/c")), None);
        assert_eq!(
            rules.destination(|path| path != Path::new("/a")),
            Some(PathBuf::from("/b"))
        );
        assert_eq!(rules.destination(|_| true), Some(PathBuf::from("/a")));
        assert_eq!(rules.destination(|_| false), Some(PathBuf::from("/c")));
    }

    #[test]
    fn first_file_wins_for_entries_and_current_context() {
        let merged = merge_first_wins(&[file("/k/first", FIRST), file("/k/second", SECOND)]);
        assert_eq!(document::current_context(&merged), Some("a"));
        assert_eq!(
            document::find_body(&merged, NamedList::Clusters, "shared").unwrap()["server"],
            "https://first"
        );
        assert_eq!(
            document::find_body(&merged, NamedList::Users, "shared").unwrap()["token"],
            "one"
        );
        assert_eq!(
            document::entry_names(&merged, NamedList::Contexts),
            ["a", "b"]
        );
        assert_eq!(merged["preferences"]["colors"], true);
    }

    #[test]
    fn empty_current_context_in_a_first_file_does_not_win() {
        let merged = merge_first_wins(&[
            file("/k/first", "current-context: \"\"\n"),
            file("/k/second", SECOND),
        ]);
        assert_eq!(document::current_context(&merged), Some("b"));
    }

    #[test]
    fn relative_references_resolve_against_their_own_file() {
        let merged = merge_first_wins(&[file("/k/first", FIRST), file("/other/second", SECOND)]);
        let cluster = document::find_body(&merged, NamedList::Clusters, "only-second").unwrap();
        assert_eq!(cluster["certificate-authority"], "/other/ca.crt");
        let user = document::find_body(&merged, NamedList::Users, "only-second").unwrap();
        assert_eq!(user["client-certificate"], "/other/certs/user.crt");
        assert_eq!(user["client-key"], "/abs/user.key");
        assert_eq!(user["exec"]["command"], "/other/./bin/login");
    }

    #[test]
    fn exec_command_found_on_path_stays_as_it_is() {
        let mut document =
            document::parse("users: [{name: u, user: {exec: {command: aws}}}]").unwrap();
        resolve_relative_paths(&mut document, Path::new("/k"));
        assert_eq!(
            document::find_body(&document, NamedList::Users, "u").unwrap()["exec"]["command"],
            "aws"
        );
    }

    #[test]
    fn selection_follows_current_context_and_its_namespace() {
        let merged = merge_first_wins(&[file("/k/first", FIRST), file("/k/second", SECOND)]);
        let selection = select(&merged, &Overrides::default()).unwrap();
        assert_eq!(
            selection,
            Selection {
                context: "a".into(),
                cluster: "shared".into(),
                user: "shared".into(),
                namespace: "team-a".into()
            }
        );
    }

    #[test]
    fn context_and_namespace_flags_override_the_file() {
        let merged = merge_first_wins(&[file("/k/first", FIRST), file("/k/second", SECOND)]);
        let overrides = Overrides {
            context: Some("b".into()),
            namespace: None,
        };
        assert_eq!(select(&merged, &overrides).unwrap().namespace, "default");
        let overrides = Overrides {
            context: Some("a".into()),
            namespace: Some("ops".into()),
        };
        assert_eq!(select(&merged, &overrides).unwrap().namespace, "ops");
    }

    #[test]
    fn unknown_context_lists_the_ones_that_exist() {
        let merged = merge_first_wins(&[file("/k/first", FIRST), file("/k/second", SECOND)]);
        let overrides = Overrides {
            context: Some("nope".into()),
            namespace: None,
        };
        let error = select(&merged, &overrides).unwrap_err();
        assert_eq!(
            error.to_string(),
            "context \"nope\" does not exist in the kubeconfig (contexts: a, b)"
        );
    }

    #[test]
    fn missing_current_context_says_how_to_pick_one() {
        let merged = merge_first_wins(&[file("/k/x", "contexts: []\n")]);
        let error = select(&merged, &Overrides::default()).unwrap_err();
        assert!(error.to_string().contains("pass --context NAME"), "{error}");
    }

    #[test]
    fn context_pointing_at_a_missing_cluster_is_named() {
        let merged = merge_first_wins(&[file(
            "/k/x",
            "current-context: c\ncontexts: [{name: c, context: {cluster: gone, user: u}}]\n",
        )]);
        let error = select(&merged, &Overrides::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "context \"c\" refers to cluster entry \"gone\", which does not exist in the kubeconfig"
        );
    }
}
