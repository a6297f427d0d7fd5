//! kubectl's kubeconfig rules, and the `use-context` merge that never damages a kubeconfig.
//!
//! Everything that decides is pure ([`loading`], [`merge`], [`document`]); [`file`] does the
//! reading, locking and atomic replacing. YAML comments do not survive a rewrite (no YAML
//! library keeps them through a parse); everything else does: unknown fields, extensions,
//! preferences, the order of entries.

pub mod document;
pub mod emit;
pub mod file;
pub mod loading;
pub mod merge;

use std::path::{Path, PathBuf};

use serde_yaml::Mapping;

use document::DocumentError;
pub use loading::{LoadedFile, LoadingRules, Overrides, Selection};
pub use merge::{MergeOutcome, Origin, RemovalOutcome, TenantCredentials, VirtualClusterRef};

/// A step of reading or writing kubeconfig files that failed. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// The file exists but cannot be read.
    #[error("cannot read kubeconfig {path}: {source}", path = path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a kubeconfig; it is left untouched.
    #[error("kubeconfig {path} cannot be used: {source}; fix the file or point --kubeconfig/KUBECONFIG elsewhere (it was not changed)", path = path.display())]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: DocumentError,
    },
    /// `--kubeconfig FILE` names a file that does not exist.
    #[error("kubeconfig {path} given with --kubeconfig does not exist", path = path.display())]
    FindExplicitFile {
        /// The file.
        path: PathBuf,
    },
    /// Neither `--kubeconfig`, `KUBECONFIG` nor `HOME` says where the kubeconfig is.
    #[error("no kubeconfig file to use: HOME is not set; pass --kubeconfig FILE or set KUBECONFIG")]
    FindDestination,
    /// The change could not be applied to the file's content.
    #[error("cannot update kubeconfig {path}: {source} (it was not changed)", path = path.display())]
    EditFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: DocumentError,
    },
    /// Another writer holds the lock for longer than we wait.
    #[error(
        "kubeconfig lock {lock} is held by another process; retry, or remove the file if no kubectl is running",
        lock = lock.display()
    )]
    AcquireLock {
        /// The lock file.
        lock: PathBuf,
    },
    /// The lock file cannot be created.
    #[error("cannot create kubeconfig lock {lock}: {source}", lock = lock.display())]
    CreateLock {
        /// The lock file.
        lock: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The kubeconfig's directory cannot be created.
    #[error("cannot create directory {path}: {source}", path = path.display())]
    CreateDirectory {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The new content cannot be written beside the kubeconfig.
    #[error("cannot write a temporary kubeconfig in {directory}: {source}", directory = directory.display())]
    WriteTemporaryFile {
        /// The directory.
        directory: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The new content cannot be renamed over the kubeconfig.
    #[error("cannot replace kubeconfig {path}: {source} (it was not changed)", path = path.display())]
    ReplaceFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Reads the files the rules name, in precedence order. Missing `KUBECONFIG` or home files
/// are skipped as kubectl skips them; a missing `--kubeconfig` file is an error.
pub fn load(rules: &LoadingRules) -> Result<Vec<LoadedFile>, KubeconfigError> {
    let mut files = Vec::new();
    for path in rules.precedence() {
        match file::read_optional(&path)? {
            Some(document) => files.push(LoadedFile { path, document }),
            None if rules.explicit_path.is_some() => {
                return Err(KubeconfigError::FindExplicitFile { path });
            }
            None => {}
        }
    }
    Ok(files)
}

/// The file `use-context` writes to under these rules.
pub fn destination(rules: &LoadingRules) -> Result<PathBuf, KubeconfigError> {
    rules
        .destination(Path::exists)
        .ok_or(KubeconfigError::FindDestination)
}

/// Merges the tenant's entries into `path` (see [`merge::merge_tenant`]).
pub fn write_tenant(
    path: &Path,
    credentials: &TenantCredentials,
    entry_name: &str,
    owner: &VirtualClusterRef,
    switch: bool,
    origin: &Origin,
) -> Result<MergeOutcome, KubeconfigError> {
    file::update(path, |document| {
        merge::merge_tenant(document, credentials, entry_name, owner, switch, origin)
    })
}

/// Sets `current-context` to `context` in `path`, the file `kubectl config use-context`
/// would change.
pub fn switch_context(path: &Path, context: &str) -> Result<(), KubeconfigError> {
    file::update(path, |document| {
        if document.is_empty() {
            *document = document::empty_kubeconfig();
        }
        document.insert(document::CURRENT_CONTEXT.into(), context.into());
        Ok(())
    })
}

/// Removes the tenant's marked entries from every file the rules read, so entries written
/// under another `KUBECONFIG` order are found too. Returns what each changed file lost.
pub fn remove_tenant(
    rules: &LoadingRules,
    owner: &VirtualClusterRef,
) -> Result<Vec<(PathBuf, RemovalOutcome)>, KubeconfigError> {
    let mut changed = Vec::new();
    for path in rules.precedence() {
        let holds_entries = file::read_optional(&path)?.is_some_and(|document| {
            let mut probe: Mapping = document;
            !merge::remove_tenant(&mut probe, owner).is_empty()
        });
        if !holds_entries {
            continue;
        }
        let outcome = file::update(&path, |document| Ok(merge::remove_tenant(document, owner)))?;
        if !outcome.is_empty() {
            changed.push((path, outcome));
        }
    }
    Ok(changed)
}
