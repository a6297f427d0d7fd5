//! What the benchmarks that measure one of our binaries as its own process share: finding
//! the release binary (and refusing one older than its sources, rather than measuring
//! stale code) and reading the process's memory and CPU from `/proc`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Why the binary a benchmark measures cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("reading the path of this executable: {0}")]
    CurrentExe(#[source] std::io::Error),
    #[error(
        "{name} is not built beside {executable}; run `cargo build --release -p {package}` with the same CARGO_TARGET_DIR"
    )]
    Missing {
        name: String,
        package: String,
        executable: PathBuf,
    },
    #[error(
        "{} is older than its sources; run `cargo build --release -p {package}`",
        binary.display()
    )]
    Stale { binary: PathBuf, package: String },
    #[error("reading the modification time of {}: {source}", path.display())]
    Modified {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The binary `name` of package `package` built beside the running benchmark (the target
/// directory's `release/`, one or two levels up from `deps/`): `cargo bench` builds only
/// the libraries of other packages, so it must have been built first. Refused when any
/// file under `sources` (paths relative to the workspace root) is newer.
pub fn release_binary(name: &str, package: &str, sources: &[&str]) -> Result<PathBuf, BinaryError> {
    let executable = std::env::current_exe().map_err(BinaryError::CurrentExe)?;
    let binary = executable
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| BinaryError::Missing {
            name: name.to_owned(),
            package: package.to_owned(),
            executable: executable.clone(),
        })?;
    let built = std::fs::metadata(&binary)
        .and_then(|metadata| metadata.modified())
        .map_err(|source| BinaryError::Modified {
            path: binary.clone(),
            source,
        })?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let newest = sources
        .iter()
        .filter_map(|source| newest_file(&root.join(source)))
        .max();
    if newest.is_some_and(|changed| changed > built) {
        return Err(BinaryError::Stale {
            binary,
            package: package.to_owned(),
        });
    }
    Ok(binary)
}

/// The latest modification time of `path` or of any file under it.
fn newest_file(path: &Path) -> Option<SystemTime> {
    if !path.is_dir() {
        return std::fs::metadata(path).ok()?.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| newest_file(&entry.path()))
        .max()
}

/// A process's memory and CPU as `/proc/PID` shows them; zeros once it is gone.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessFigures {
    /// Peak resident set (`VmHWM`), MiB.
    pub peak_mib: f64,
    /// Resident set now (`VmRSS`), MiB.
    pub rss_mib: f64,
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
}

impl ProcessFigures {
    /// Reads `/proc/PID/status` and `/proc/PID/stat`.
    pub fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        Self::parse(&status, &stat, clock_ticks())
    }

    /// The figures in the texts of `/proc/PID/status` and `/proc/PID/stat`, with
    /// `ticks_per_second` clock ticks (`getconf CLK_TCK`).
    pub fn parse(status: &str, stat: &str, ticks_per_second: f64) -> Self {
        let kib = |key: &str| {
            status
                .lines()
                .find(|line| line.starts_with(key))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|value| value.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // Fields after the parenthesised command name, which may itself hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |index: usize| {
            fields
                .get(index)
                .and_then(|value| value.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are fields 14 and 15 of stat; `fields` starts at field 3.
        ProcessFigures {
            peak_mib: kib("VmHWM:") / 1024.0,
            rss_mib: kib("VmRSS:") / 1024.0,
            cpu_seconds: (ticks(11) + ticks(12)) / ticks_per_second,
        }
    }
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The 1-, 5- and 15-minute load averages of the machine (`/proc/loadavg`), printed beside
/// every figure: on a shared machine they say how much of a time was someone else's.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_come_from_status_and_stat() {
        let status = "Name:\tvc-controller\nVmHWM:\t  102400 kB\nVmRSS:\t   51200 kB\n";
        // A command name with a space and a parenthesis, then fields 3.. of stat.
        let stat = "4242 (vc (ctl) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3";
        let figures = ProcessFigures::parse(status, stat, 100.0);
        assert_eq!(
            figures,
            ProcessFigures {
                peak_mib: 100.0,
                rss_mib: 50.0,
                cpu_seconds: 3.0
            }
        );
        assert_eq!(
            ProcessFigures::parse("", "", 100.0),
            ProcessFigures::default()
        );
    }
}
