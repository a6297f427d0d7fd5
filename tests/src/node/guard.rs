//! One run of real nodes on the machine at a time, and nothing left behind by a run that
//! was killed.
//!
//! A run holds an exclusive lock ([`LOCK`]) while its nodes live, and keeps a record
//! ([`RECORD`]) of what it changed on the machine: the machine as it found it, the
//! directories its programs were started from, its bridges, `lo` addresses and cgroups.
//! The owners undo all of it when they stop, and the record goes with the lock. A run
//! killed before that (SIGKILL, a lost terminal, a restarted tool) leaves the record: the
//! next run finds it once the lock is free and sweeps what it names before it starts.
//! Another run still alive holds the lock, and the next one waits for it.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{MachineState, NodeError};

/// The lock a run holds while its real nodes live.
pub const LOCK: &str = "/run/kosmos-vc-real-node/lock";
/// What the run holding [`LOCK`] changed on the machine.
pub const RECORD: &str = "/run/kosmos-vc-real-node/record.json";
/// How long a run waits for another to finish.
const WAIT_FOR_OTHER_RUN: Duration = Duration::from_secs(20 * 60);

/// What a run changed on the machine, enough to undo it without the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Record {
    /// The process holding the lock.
    pub pid: u32,
    /// The machine before the run changed anything.
    pub before: Option<MachineState>,
    /// `iptables-save` and `ip6tables-save` before the run.
    pub iptables_before: (String, String),
    /// Directories whose paths appear in the command lines of the run's processes
    /// (the nodes' work directories, the host control plane's), and under which they mount.
    pub directories: Vec<PathBuf>,
    /// Bridges the nodes' CNI plugin creates.
    pub bridges: Vec<String>,
    /// Addresses the run added to `lo` (`ADDRESS/32`).
    pub loopback_addresses: Vec<String>,
    /// Top-level cgroups of the kubelets (`kubepods`, `kvc-node2`), in every hierarchy.
    pub cgroups: Vec<String>,
    /// The entries of the hostpath provisioner's directory before the run (`None`: it did
    /// not exist).
    pub hostpath_before: Option<BTreeSet<String>>,
}

/// The machine held for this process's real nodes; released when the last holder drops.
#[derive(Debug)]
pub struct MachineGuard {
    lock: File,
    record: Mutex<Record>,
    /// Set when an owner could not undo everything: the record then stays for the next
    /// run to sweep.
    keep_record: std::sync::atomic::AtomicBool,
}

static CURRENT: Mutex<Weak<MachineGuard>> = Mutex::new(Weak::new());

impl MachineGuard {
    /// The machine for this process: the guard its other nodes already hold, or a new one
    /// once no other run holds it, after sweeping what a killed run left (said on
    /// stderr). Waits up to 20 minutes for another run.
    pub async fn acquire() -> Result<Arc<Self>, NodeError> {
        if let Some(current) = CURRENT.lock().ok().and_then(|current| current.upgrade()) {
            return Ok(current);
        }
        let lock = open_lock()?;
        let started = Instant::now();
        let mut said = false;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    if started.elapsed() > WAIT_FOR_OTHER_RUN {
                        return Err(NodeError::Run {
                            command: format!("locking {LOCK}"),
                            reason: format!(
                                "another run of real nodes (pid {}) held the machine for {WAIT_FOR_OTHER_RUN:?}",
                                read_record().map(|r| r.pid).unwrap_or_default()
                            ),
                        });
                    }
                    if !said {
                        eprintln!(
                            "[real node] waiting for another run of real nodes (pid {}) to finish",
                            read_record().map(|r| r.pid).unwrap_or_default()
                        );
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(NodeError::WriteFile {
                        path: LOCK.to_owned(),
                        source,
                    });
                }
            }
        }
        if let Some(left) = read_record() {
            let problems = sweep(&left);
            eprintln!(
                "[real node] swept what a killed run (pid {}) left on the machine{}",
                left.pid,
                if problems.is_empty() {
                    String::new()
                } else {
                    format!("; could not undo: {problems:#?}")
                }
            );
        }
        let record = Record {
            pid: std::process::id(),
            before: Some(MachineState::read()),
            iptables_before: (
                super::output_of("iptables-save", &[]),
                super::output_of("ip6tables-save", &[]),
            ),
            hostpath_before: super::host::hostpath_entries(),
            ..Record::default()
        };
        write_record(&record)?;
        let guard = Arc::new(MachineGuard {
            lock,
            record: Mutex::new(record),
            keep_record: std::sync::atomic::AtomicBool::new(false),
        });
        if let Ok(mut current) = CURRENT.lock() {
            *current = Arc::downgrade(&guard);
        }
        Ok(guard)
    }

    /// What the run changed so far, and the machine as it found it; `None` when the
    /// record's lock is poisoned.
    pub fn record(&self) -> Option<Record> {
        self.record.lock().ok().map(|record| record.clone())
    }

    /// Adds to the record what the run is about to change (write it before changing).
    pub fn note(&self, change: impl FnOnce(&mut Record)) -> Result<(), NodeError> {
        let mut record = self.record.lock().map_err(|_| NodeError::Run {
            command: "recording a change of the machine".to_owned(),
            reason: "the record's lock is poisoned".to_owned(),
        })?;
        change(&mut record);
        write_record(&record)
    }
}

impl MachineGuard {
    /// Keeps the record past the lock: something was not undone, so the next run sweeps.
    pub fn keep_record(&self) {
        self.keep_record
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for MachineGuard {
    /// The owners undid what the record names (unless one said otherwise); the record
    /// goes before the lock.
    fn drop(&mut self) {
        if !self.keep_record.load(std::sync::atomic::Ordering::SeqCst) {
            let _removed = std::fs::remove_file(RECORD);
        }
        let _unlocked = self.lock.unlock();
    }
}

fn open_lock() -> Result<File, NodeError> {
    let path = Path::new(LOCK);
    if let Some(parent) = path.parent() {
        super::create_dir(parent)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| NodeError::WriteFile {
            path: LOCK.to_owned(),
            source,
        })
}

fn read_record() -> Option<Record> {
    let text = std::fs::read_to_string(RECORD).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_record(record: &Record) -> Result<(), NodeError> {
    let text = serde_json::to_string_pretty(record).map_err(|error| NodeError::Run {
        command: format!("writing {RECORD}"),
        reason: error.to_string(),
    })?;
    let partial = format!("{RECORD}.partial");
    super::write(Path::new(&partial), &text)?;
    std::fs::rename(&partial, RECORD).map_err(|source| NodeError::WriteFile {
        path: RECORD.to_owned(),
        source,
    })
}

/// Undoes what `record` names, as the run's own stop would have: its processes and their
/// containers killed, mounts, network namespaces, bridges, `lo` addresses, iptables,
/// sysctls, cgroups and directories as they were. Returns what could not be undone.
pub fn sweep(record: &Record) -> Vec<String> {
    let mut problems = Vec::new();
    let mut note = |what: &str, result: Result<(), NodeError>| {
        if let Err(error) = result {
            problems.push(format!("{what}: {error}"));
        }
    };
    kill_processes_of(&record.directories);
    for cgroup in &record.cgroups {
        kill_processes_in_cgroup(cgroup);
    }
    let Some(before) = &record.before else {
        return vec!["the record names no machine state to restore".to_owned()];
    };
    note(
        "unmounting",
        super::unmount_under(&record.directories, &before.netns),
    );
    note(
        "removing network namespaces",
        super::remove_netns(&before.netns),
    );
    for bridge in &record.bridges {
        if !before.interfaces.contains(bridge) {
            let _deleted = super::run("ip", &["link", "delete", bridge]);
        }
    }
    for address in &record.loopback_addresses {
        let present = before
            .loopback_addresses
            .iter()
            .any(|existing| existing == address);
        if !present {
            let _deleted = super::run("ip", &["addr", "del", address, "dev", "lo"]);
        }
    }
    note(
        "restoring iptables",
        super::restore_iptables(&record.iptables_before),
    );
    note("restoring sysctls", super::restore_sysctls(&before.sysctls));
    for cgroup in &record.cgroups {
        note("removing cgroups", super::remove_cgroups(cgroup));
    }
    note(
        "removing directories",
        super::remove_outside_directories(&before.outside_directories),
    );
    problems.extend(super::host::remove_hostpath_since(
        record.hostpath_before.as_ref(),
    ));
    problems
}

/// SIGKILL to every process whose command line names one of `directories` (containerd,
/// its shims, the kubelet, kube-proxy, the host's control plane).
fn kill_processes_of(directories: &[PathBuf]) {
    if directories.is_empty() {
        return;
    }
    let own = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid == own || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if directories
            .iter()
            .any(|directory| cmdline.contains(&directory.display().to_string()))
        {
            let _killed = super::run("kill", &["-9", &pid]);
        }
    }
}

/// SIGKILL to every process in `cgroup` (a top-level name) and below, in every hierarchy:
/// the containers, which outlive their shims.
fn kill_processes_in_cgroup(cgroup: &str) {
    for hierarchy in super::cgroup_hierarchies() {
        let mut directories = Vec::new();
        let root = hierarchy.join(cgroup);
        if !root.is_dir() {
            continue;
        }
        super::collect_directories(&root, &mut directories);
        for directory in directories {
            let procs = std::fs::read_to_string(directory.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace() {
                let _killed = super::run("kill", &["-9", pid]);
            }
        }
    }
    // SIGKILLed processes leave their cgroups as the kernel reaps them, with nothing to
    // wait on from here; the cgroups are removed right after.
    std::thread::sleep(Duration::from_millis(300));
}
