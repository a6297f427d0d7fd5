//! Reading kubeconfig files and replacing them safely.
//!
//! A write must never leave a half-written kubeconfig behind, nor lose another writer's
//! change: the new content goes to a temporary file in the same directory, is flushed to
//! disk and renamed over the old file, all while holding `<file>.lock`. The lock is the one
//! client-go takes (a file created with `O_CREAT|O_EXCL` and removed afterwards), so
//! `kubectl config ...` running at the same moment waits for us or fails instead of racing.
//! (A persistent `flock`ed lock file would make every later kubectl write fail with
//! "file exists", so the client-go protocol is the only compatible one.)

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_yaml::Mapping;

use super::KubeconfigError;
use super::document::{self, DocumentError};

/// How long to wait for another writer's lock before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(10);
const LOCK_POLL: Duration = Duration::from_millis(50);

/// Reads and parses a kubeconfig file; `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Mapping>, KubeconfigError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KubeconfigError::ReadFile {
                path: path.to_owned(),
                source,
            });
        }
    };
    document::parse(&text)
        .map(Some)
        .map_err(|source| KubeconfigError::ParseFile {
            path: path.to_owned(),
            source,
        })
}

/// The file a write really replaces: the target of a symlink (a `~/.kube/config` linked
/// into a dotfiles repository stays a link), else the path itself.
fn write_target(path: &Path) -> PathBuf {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_symlink() => {
            fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
        }
        _ => path.to_owned(),
    }
}

/// Runs `edit` on the current content of `path` (an empty document when the file does not
/// exist) under the lock, and writes the result atomically with mode 0600 when it changed.
/// A file that cannot be parsed is left exactly as it is.
pub fn update<T>(
    path: &Path,
    edit: impl FnOnce(&mut Mapping) -> Result<T, DocumentError>,
) -> Result<T, KubeconfigError> {
    // The lock is named after the path as given, as kubectl names it, so both exclude each
    // other even when the kubeconfig is a symlink.
    let _lock = FileLock::acquire(path)?;
    let target = write_target(path);
    let existing = read_optional(&target)?;
    let mut document = existing.clone().unwrap_or_default();
    let result = edit(&mut document).map_err(|source| KubeconfigError::EditFile {
        path: target.clone(),
        source,
    })?;
    if existing.as_ref() != Some(&document) {
        let text = document::to_yaml(&document);
        write_atomically(&target, text.as_bytes())?;
    }
    Ok(result)
}

/// Replaces `path` with `content`: temporary file in the same directory, mode 0600, fsync,
/// rename, fsync of the directory. Readers see the old file or the new one, never a mix.
pub fn write_atomically(path: &Path, content: &[u8]) -> Result<(), KubeconfigError> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&directory).map_err(|source| KubeconfigError::CreateDirectory {
        path: directory.clone(),
        source,
    })?;
    let mut temporary = tempfile::Builder::new()
        .prefix(".kubeconfig-")
        .tempfile_in(&directory)
        .map_err(|source| KubeconfigError::WriteTemporaryFile {
            directory: directory.clone(),
            source,
        })?;
    let write_error = |source| KubeconfigError::WriteTemporaryFile {
        directory: directory.clone(),
        source,
    };
    temporary
        .as_file()
        .set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(write_error)?;
    temporary.write_all(content).map_err(write_error)?;
    temporary.as_file().sync_all().map_err(write_error)?;
    temporary
        .persist(path)
        .map_err(|error| KubeconfigError::ReplaceFile {
            path: path.to_owned(),
            source: error.error,
        })?;
    // Make the rename itself durable; a directory that cannot be opened for sync is not worth failing over.
    if let Ok(handle) = fs::File::open(&directory) {
        let _ = handle.sync_all();
    }
    Ok(())
}

/// client-go's kubeconfig lock: `<file>.lock`, created exclusively and removed on drop.
#[derive(Debug)]
pub struct FileLock {
    path: PathBuf,
}

impl FileLock {
    /// Takes the lock of `kubeconfig`, waiting up to ten seconds for another writer.
    pub fn acquire(kubeconfig: &Path) -> Result<Self, KubeconfigError> {
        Self::acquire_within(kubeconfig, LOCK_WAIT)
    }

    /// Takes the lock of `kubeconfig`, waiting up to `wait` for another writer.
    pub fn acquire_within(kubeconfig: &Path, wait: Duration) -> Result<Self, KubeconfigError> {
        let mut lock_path = kubeconfig.as_os_str().to_owned();
        lock_path.push(".lock");
        let path = PathBuf::from(lock_path);
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            fs::create_dir_all(parent).map_err(|source| KubeconfigError::CreateDirectory {
                path: parent.to_owned(),
                source,
            })?;
        }
        let deadline = Instant::now() + wait;
        loop {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode_0600()
                .open(&path)
            {
                Ok(_) => return Ok(Self { path }),
                Err(error)
                    if error.kind() == io::ErrorKind::AlreadyExists
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(LOCK_POLL);
                }
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(KubeconfigError::AcquireLock { lock: path });
                }
                Err(source) => return Err(KubeconfigError::CreateLock { lock: path, source }),
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_reads_as_none() {
        let directory = tempfile::tempdir().unwrap();
        assert_eq!(read_optional(&directory.path().join("nope")).unwrap(), None);
    }

    #[test]
    fn a_held_lock_is_reported_with_its_path() {
        let directory = tempfile::tempdir().unwrap();
        let kubeconfig = directory.path().join("config");
        let lock = directory.path().join("config.lock");
        fs::write(&lock, "").unwrap();
        // A stale lock from a crashed writer: the message must say which file to look at.
        let wait = Duration::from_millis(200);
        let started = Instant::now();
        let error = FileLock::acquire_within(&kubeconfig, wait).unwrap_err();
        assert!(started.elapsed() >= wait);
        assert!(
            error.to_string().contains(&lock.display().to_string()),
            "{error}"
        );
        assert!(lock.exists(), "someone else's lock must not be removed");
    }

    #[test]
    fn lock_is_removed_when_released() {
        let directory = tempfile::tempdir().unwrap();
        let kubeconfig = directory.path().join("config");
        {
            let _lock = FileLock::acquire(&kubeconfig).unwrap();
            assert!(directory.path().join("config.lock").exists());
        }
        assert!(!directory.path().join("config.lock").exists());
    }

    #[test]
    fn writes_through_a_symlink_to_its_target() {
        let directory = tempfile::tempdir().unwrap();
        let real = directory.path().join("real-config");
        let link = directory.path().join("config");
        fs::write(&real, "current-context: a\n").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        update(&link, |document| {
            document.insert("current-context".into(), "b".into());
            Ok(())
        })
        .unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(
            fs::read_to_string(&real)
                .unwrap()
                .contains("current-context: b")
        );
    }

    #[test]
    fn unchanged_document_is_not_rewritten() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("config");
        fs::write(
            &path,
            "# a comment survives when nothing changes\ncurrent-context: a\n",
        )
        .unwrap();
        update(&path, |_| Ok(())).unwrap();
        assert!(
            fs::read_to_string(&path)
                .unwrap()
                .starts_with("# a comment")
        );
    }
}
