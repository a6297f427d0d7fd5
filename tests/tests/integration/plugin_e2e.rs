//! kubectl-vc end to end: the real controller provisions the tenant on the test API server,
//! the kubelet stand-in serves the tenant's apiserver on its Service's cluster IP, and the
//! operator's commands run as `kubectl vc ...` through kubectl's plugin discovery.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Output;

use crate::controller_common::Harness;

/// The operator's side: a private kubeconfig copy, HOME, and a PATH where kubectl finds the
/// built plugin.
struct Operator {
    home: tempfile::TempDir,
    kubeconfig: PathBuf,
    path: OsString,
    kubectl: PathBuf,
}

impl Operator {
    fn new(harness: &Harness, kubectl: PathBuf, plugin: PathBuf) -> Self {
        let home = tempfile::tempdir().unwrap();
        let bin = home.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(plugin, bin.join("kubectl-vc")).unwrap();
        let kubeconfig = home.path().join("config");
        std::fs::copy(harness.server.kubeconfig_path(), &kubeconfig).unwrap();
        let mut path = OsString::from(&bin);
        if let Some(rest) = std::env::var_os("PATH") {
            path.push(":");
            path.push(rest);
        }
        Self {
            home,
            kubeconfig,
            path,
            kubectl,
        }
    }

    async fn kubectl(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(&self.kubectl)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .env("PATH", &self.path)
            .output()
            .await
            .unwrap()
    }

    async fn succeed(&self, args: &[&str]) -> (String, String) {
        let output = self.kubectl(args).await;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "kubectl {args:?} failed:\n{stderr}\n{stdout}"
        );
        (stdout, stderr)
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
}

fn built_plugin() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("KUBECTL_VC") {
        return Some(PathBuf::from(explicit));
    }
    let executable = std::env::current_exe().ok()?;
    Some(executable.parent()?.parent()?.join("kubectl-vc")).filter(|candidate| candidate.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_wait_use_context_reaches_the_tenant_and_delete_cleans_up() {
    let Some(kubectl) = find_on_path("kubectl") else {
        eprintln!("skipped: kubectl is not on PATH");
        return;
    };
    let Some(plugin) = built_plugin() else {
        eprintln!("skipped: kubectl-vc is not built; run `cargo build -p kubectl-vc` first");
        return;
    };
    let harness = Harness::start(2, true).await;
    let operator = Operator::new(&harness, kubectl, plugin);
    let host_context = operator
        .succeed(&["config", "current-context"])
        .await
        .0
        .trim()
        .to_owned();

    let (created, progress) = operator
        .succeed(&[
            "vc",
            "create",
            "prod",
            "--nodes",
            "node-0",
            "--cpu",
            "1",
            "--memory",
            "1Gi",
            "--wait",
            "--timeout",
            "120s",
        ])
        .await;
    assert_eq!(created, "virtualcluster.kosmos.io/prod created\n");
    assert!(
        progress.lines().any(
            |line| line.starts_with("prod: Initialized") || line.starts_with("prod: Completed")
        ),
        "{progress}"
    );

    let (listed, _) = operator.succeed(&["vc", "list", "-o", "wide"]).await;
    assert!(
        listed
            .lines()
            .nth(1)
            .is_some_and(|row| row.starts_with("prod ")),
        "{listed}"
    );

    let (switched, _) = operator.succeed(&["vc", "use-context", "prod"]).await;
    assert_eq!(switched, "Switched to context \"vc-prod\".\n");
    // Plain kubectl now talks to the tenant's own apiserver, with the tenant's credentials.
    let (ready, _) = operator.succeed(&["get", "--raw", "/readyz"]).await;
    assert_eq!(ready, "ok");
    let (server, _) = operator
        .succeed(&[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ])
        .await;
    assert_ne!(
        server,
        harness.server.url(),
        "the context must point at the tenant, not the host"
    );

    operator
        .succeed(&["config", "use-context", &host_context])
        .await;
    let (page, _) = operator.succeed(&["vc", "describe", "prod"]).await;
    assert!(page.contains("ControlPlaneReady"), "{page}");

    let (deleted, _) = operator
        .succeed(&["vc", "delete", "prod", "--wait", "--timeout", "120s"])
        .await;
    assert!(
        deleted.starts_with("virtualcluster.kosmos.io \"prod\" deleted\n"),
        "{deleted}"
    );
    assert!(deleted.contains("Removed context \"vc-prod\""), "{deleted}");
    let (contexts, _) = operator
        .succeed(&["config", "get-contexts", "-o", "name"])
        .await;
    assert_eq!(contexts.trim(), host_context);

    // create --use-context waits for the kubeconfig and switches in one step.
    let (created, _) = operator
        .succeed(&[
            "vc",
            "create",
            "dev",
            "--cpu",
            "1",
            "--use-context",
            "--context-name",
            "dev-admin",
            "--timeout",
            "120s",
        ])
        .await;
    assert_eq!(
        created,
        "virtualcluster.kosmos.io/dev created\nSwitched to context \"dev-admin\".\n"
    );
    let (ready, _) = operator.succeed(&["get", "--raw", "/readyz"]).await;
    assert_eq!(ready, "ok");
    operator
        .succeed(&["config", "use-context", &host_context])
        .await;
    let (deleted, _) = operator.succeed(&["vc", "delete", "dev"]).await;
    assert!(
        deleted.contains("Removed context \"dev-admin\""),
        "{deleted}"
    );
    harness.shutdown().await;
}
