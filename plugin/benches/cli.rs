//! Wall time of the plugin as operators feel it, next to kubectl on the same machine.
//!
//! `cargo bench -p kubectl-vc --bench cli` prints, for each command, the median and the
//! minimum of several runs, and the ratio to `kubectl version --client`:
//! - `kubectl-vc --help` and `kubectl-vc version` (no cluster);
//! - with `vc-test-apiserver` built (`cargo build -p vc-simulation --bin vc-test-apiserver`, or
//!   `VC_TEST_APISERVER=PATH`): `kubectl vc list` through kubectl's plugin discovery,
//!   `kubectl-vc list` directly and `kubectl get virtualclusters`, with 100 VirtualClusters.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 15;
const CLUSTERS: usize = 100;

fn main() {
    let plugin = PathBuf::from(env!("CARGO_BIN_EXE_kubectl-vc"));
    let Some(kubectl) = find_on_path("kubectl") else {
        println!("skipped: kubectl is not on PATH; nothing to compare with");
        return;
    };
    let baseline = measure("kubectl version --client", &mut || {
        run(Command::new(&kubectl).args(["version", "--client"]))
    });
    report(&baseline, None);
    report(
        &measure("kubectl-vc --help", &mut || {
            run(Command::new(&plugin).arg("--help"))
        }),
        Some(&baseline),
    );
    report(
        &measure("kubectl-vc version", &mut || {
            run(Command::new(&plugin).arg("version"))
        }),
        Some(&baseline),
    );

    match list_bench(&plugin, &kubectl) {
        Ok(results) => {
            for result in results {
                report(&result, Some(&baseline));
            }
        }
        Err(reason) => println!("skipped list with {CLUSTERS} VirtualClusters: {reason}"),
    }
}

struct Measurement {
    label: String,
    median: Duration,
    min: Duration,
}

fn measure(label: &str, command: &mut dyn FnMut() -> Result<(), String>) -> Measurement {
    let mut samples = Vec::with_capacity(RUNS);
    // One warm-up run so the page cache holds the binaries.
    let _ = command();
    for _ in 0..RUNS {
        let started = Instant::now();
        if let Err(error) = command() {
            println!("{label}: failed: {error}");
            break;
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    Measurement {
        label: label.to_owned(),
        median: samples.get(samples.len() / 2).copied().unwrap_or_default(),
        min: samples.first().copied().unwrap_or_default(),
    }
}

fn report(measurement: &Measurement, baseline: Option<&Measurement>) {
    let ratio = baseline
        .filter(|baseline| !baseline.median.is_zero())
        .map(|baseline| {
            format!(
                "  ratio to kubectl version --client: {:.2}",
                measurement.median.as_secs_f64() / baseline.median.as_secs_f64()
            )
        })
        .unwrap_or_default();
    println!(
        "{:<48} median {:>8.2} ms  min {:>8.2} ms  ({RUNS} runs){ratio}",
        measurement.label,
        measurement.median.as_secs_f64() * 1000.0,
        measurement.min.as_secs_f64() * 1000.0
    );
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|error| error.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
}

/// The test API server binary: `VC_TEST_APISERVER`, else beside this bench's binary in the
/// release or the debug target directory.
fn test_apiserver(plugin: &Path) -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("VC_TEST_APISERVER") {
        return Some(PathBuf::from(explicit));
    }
    let profile_directory = plugin.parent()?;
    let target = profile_directory.parent()?;
    [
        profile_directory.join("vc-test-apiserver"),
        target.join("debug").join("vc-test-apiserver"),
    ]
    .into_iter()
    .find(|candidate| candidate.is_file())
}

/// Kills the server when the bench ends, however it ends.
struct ServerGuard(Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn list_bench(plugin: &Path, kubectl: &Path) -> Result<Vec<Measurement>, String> {
    let server_binary = test_apiserver(plugin).ok_or(
        "vc-test-apiserver is not built (cargo build -p vc-simulation --bin vc-test-apiserver)",
    )?;
    let directory = tempfile::tempdir().map_err(|error| error.to_string())?;
    let kubeconfig = directory.path().join("config");
    let child = Command::new(&server_binary)
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", server_binary.display()))?;
    let _guard = ServerGuard(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubeconfig.is_file() {
        if Instant::now() > deadline {
            return Err("the test API server wrote no kubeconfig within 30s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let bin = directory.path().join("bin");
    std::fs::create_dir(&bin).map_err(|error| error.to_string())?;
    std::os::unix::fs::symlink(plugin, bin.join("kubectl-vc"))
        .map_err(|error| error.to_string())?;
    let mut path = OsString::from(&bin);
    if let Some(rest) = std::env::var_os("PATH") {
        path.push(":");
        path.push(rest);
    }
    let with_env = |command: &mut Command| {
        command
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", directory.path())
            .env("PATH", &path);
    };

    let crd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/kosmos-vc/crds/virtualclusters.kosmos.io.yaml"
    );
    let mut apply_crd = Command::new(kubectl);
    apply_crd.args(["apply", "-f", crd]);
    with_env(&mut apply_crd);
    run(&mut apply_crd)?;
    let manifests = directory.path().join("clusters.yaml");
    let documents: Vec<String> = (0..CLUSTERS)
        .map(|index| {
            format!(
                "apiVersion: kosmos.io/v1alpha1\nkind: VirtualCluster\nmetadata:\n  name: tenant-{index:03}\nspec:\n  kubernetesVersion: v1.33.4\n  promoteResources:\n    nodes: [node-{index}]\n    resources: {{cpu: 4, memory: 16Gi}}\n"
            )
        })
        .collect();
    std::fs::write(&manifests, documents.join("---\n")).map_err(|error| error.to_string())?;
    let mut create = Command::new(kubectl);
    create.arg("create").arg("-f").arg(&manifests);
    with_env(&mut create);
    run(&mut create)?;

    let mut check = Command::new(plugin);
    check.args(["list", "--no-headers"]);
    with_env(&mut check);
    let listed = check.output().map_err(|error| error.to_string())?;
    let rows = String::from_utf8_lossy(&listed.stdout).lines().count();
    if rows != CLUSTERS {
        return Err(format!(
            "kubectl-vc list printed {rows} rows, expected {CLUSTERS}"
        ));
    }

    let mut results = Vec::new();
    for (label, program, args) in [
        (
            "kubectl vc list (plugin discovery, 100 VCs)",
            kubectl,
            &["vc", "list"][..],
        ),
        ("kubectl-vc list (direct, 100 VCs)", plugin, &["list"][..]),
        (
            "kubectl get virtualclusters (100 VCs)",
            kubectl,
            &["get", "virtualclusters"][..],
        ),
    ] {
        results.push(measure(label, &mut || {
            let mut command = Command::new(program);
            command.args(args);
            with_env(&mut command);
            run(&mut command)
        }));
    }
    Ok(results)
}
