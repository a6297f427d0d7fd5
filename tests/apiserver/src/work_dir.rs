//! Where a test server or harness keeps its files. A directory the caller names is kept
//! afterwards so that its logs and kubeconfigs can be read; otherwise a temporary one is
//! removed on drop.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum WorkDir {
    Temp(tempfile::TempDir),
    Given(PathBuf),
}

impl WorkDir {
    /// `given` (created if missing), else a new temporary directory named `prefix...`.
    pub fn create(given: Option<&Path>, prefix: &str) -> std::io::Result<WorkDir> {
        match given {
            Some(path) => {
                std::fs::create_dir_all(path)?;
                Ok(WorkDir::Given(path.to_owned()))
            }
            None => Ok(WorkDir::Temp(
                tempfile::Builder::new().prefix(prefix).tempdir()?,
            )),
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            WorkDir::Temp(dir) => dir.path(),
            WorkDir::Given(path) => path,
        }
    }
}

/// Starts `program` with `args`, no standard input, and its stdout and stderr appended to
/// `log`, where a failing test's diagnostics find them.
pub fn spawn_logged(
    program: &Path,
    args: &[String],
    log: &Path,
) -> std::io::Result<std::process::Child> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
    };
    std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .spawn()
}

/// The last `lines` lines of a log (at most its last 64 KiB).
pub fn log_tail(path: &Path, lines: usize) -> Vec<String> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(64 * 1024)));
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|line| (*line).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::WorkDir;

    #[test]
    fn a_given_directory_is_created_and_kept_a_temporary_one_is_removed() {
        let parent = tempfile::tempdir().unwrap();
        let given = parent.path().join("a/b");
        let work = WorkDir::create(Some(&given), "unused-").unwrap();
        assert_eq!(work.path(), given);
        drop(work);
        assert!(given.is_dir(), "a named directory outlives the harness");

        let work = WorkDir::create(None, "vc-work-dir-test-").unwrap();
        let path = work.path().to_owned();
        assert!(path.is_dir());
        assert!(
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vc-work-dir-test-")),
            "{path:?}"
        );
        drop(work);
        assert!(!path.exists(), "a temporary directory is removed on drop");
    }
}
