//! The set-up shared by the tests and the benchmark that run the real `vc-clustertree`
//! binary between two control planes (a host and a tenant, each an [`Envtest`]): starting
//! both, the VirtualCluster the clustertree serves, the claim on its host nodes, the host
//! RBAC the controller grants a clustertree, and the process itself with its flags and
//! log. Each test keeps what is its own (which components run, which objects it adds).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use vc_api::VirtualCluster;
use vc_api::constants::{
    NODE_CLAIM_TAINT_KEY, NODE_OWNER_NAME_LABEL, NODE_OWNER_NAMESPACE_LABEL,
    NODE_OWNER_UID_ANNOTATION,
};

use vc_test_apiserver::ServerError;
use vc_test_apiserver::envtest::{Envtest, EnvtestError, EnvtestOptions};

/// The namespace of the VirtualCluster the tests' clustertree serves.
pub const NAMESPACE: &str = "team-a";
/// The name of that VirtualCluster.
pub const TENANT: &str = "tenant1";
/// The host user the tests' clustertree runs as, when not its ServiceAccount.
pub const USER: &str = "clustertree";

/// How long the host's apiserver may take to serve a CRD it was just given.
const CRD_SERVED: Duration = Duration::from_secs(30);

/// A step of the set-up that failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("starting the host control plane: {0}")]
    StartHost(#[source] EnvtestError),
    #[error("starting the tenant control plane: {0}")]
    StartTenant(#[source] EnvtestError),
    #[error("connecting to {side} as its admin: {source}")]
    Connect {
        side: &'static str,
        source: ServerError,
    },
    #[error("reading the path of this executable: {0}")]
    CurrentExe(#[source] std::io::Error),
    #[error("vc-clustertree is not built beside {executable}; run `cargo build -p vc-clustertree`")]
    FindBinary { executable: PathBuf },
    #[error("reading the CRD {path}: {source}")]
    ReadCrd {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("running kubectl apply: {0}")]
    RunKubectl(#[source] std::io::Error),
    #[error("kubectl apply failed ({status}): {stderr}")]
    KubectlApply { status: String, stderr: String },
    #[error("creating VirtualCluster {NAMESPACE}/{TENANT}: {0}")]
    CreateVirtualCluster(#[source] crate::wait::TimedOut),
    #[error("marking node {node} claimed={claimed}: {source}")]
    Claim {
        node: String,
        claimed: bool,
        source: Box<kube::Error>,
    },
    #[error("opening the vc-clustertree log: {0}")]
    OpenLog(#[source] std::io::Error),
    #[error("starting {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
}

/// A host and a tenant control plane, started side by side, with an admin client of each.
pub struct ControlPlanes {
    pub host: Envtest,
    pub tenant: Envtest,
    pub admin: Client,
    pub tenant_admin: Client,
}

impl std::fmt::Debug for ControlPlanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlanes")
            .field("host", &self.host.kubeconfig_path())
            .field("tenant", &self.tenant.kubeconfig_path())
            .finish_non_exhaustive()
    }
}

impl ControlPlanes {
    /// Starts both at once (each takes seconds), then connects as their admins.
    pub async fn start(
        assets: &Path,
        host: EnvtestOptions,
        tenant: EnvtestOptions,
    ) -> Result<Self, SetupError> {
        let (host, tenant) = tokio::join!(
            Envtest::start_with(assets, host),
            Envtest::start_with(assets, tenant)
        );
        let host = host.map_err(SetupError::StartHost)?;
        let tenant = tenant.map_err(SetupError::StartTenant)?;
        let admin = vc_test_apiserver::client_from_kubeconfig(host.kubeconfig_path())
            .await
            .map_err(|source| SetupError::Connect {
                side: "the host",
                source,
            })?;
        let tenant_admin = vc_test_apiserver::client_from_kubeconfig(tenant.kubeconfig_path())
            .await
            .map_err(|source| SetupError::Connect {
                side: "the tenant",
                source,
            })?;
        Ok(ControlPlanes {
            host,
            tenant,
            admin,
            tenant_admin,
        })
    }
}

/// A child process killed (SIGKILL) and reaped when dropped: a test that fails must not
/// leave its clustertree running.
#[derive(Debug)]
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _killed = self.0.kill();
        let _reaped = self.0.wait();
    }
}

/// `vc-clustertree` built beside the running test or bench executable (the target
/// directory's `debug/` or `release/`, one or two levels up from `deps/`).
pub fn binary() -> Result<PathBuf, SetupError> {
    let executable = std::env::current_exe().map_err(SetupError::CurrentExe)?;
    executable
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("vc-clustertree"))
        .find(|path| path.is_file())
        .ok_or(SetupError::FindBinary { executable })
}

/// `kubectl apply --server-side` of `manifest` (YAML or JSON) with `kubeconfig`.
pub fn kubectl_apply(kubeconfig: &Path, manifest: &str) -> Result<(), SetupError> {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["apply", "--server-side", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(SetupError::RunKubectl)?;
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, manifest.as_bytes())
            .map_err(SetupError::RunKubectl)?;
    }
    let output = child.wait_with_output().map_err(SetupError::RunKubectl)?;
    if !output.status.success() {
        return Err(SetupError::KubectlApply {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(())
}

/// Installs the chart's VirtualCluster CRD and the namespace [`NAMESPACE`] on the host.
pub fn install_crd(host_kubeconfig: &Path) -> Result<(), SetupError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/kosmos-vc/crds/virtualclusters.kosmos.io.yaml");
    let crd = std::fs::read_to_string(&path).map_err(|source| SetupError::ReadCrd {
        path: path.clone(),
        source,
    })?;
    kubectl_apply(host_kubeconfig, &crd)?;
    let namespace =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    kubectl_apply(host_kubeconfig, &namespace.to_string())
}

/// Creates VirtualCluster [`NAMESPACE`]/[`TENANT`] with `spec`, once the host serves the
/// CRD (a CRD just applied takes a moment to be served).
pub async fn create_virtual_cluster(
    admin: &Client,
    spec: serde_json::Value,
) -> Result<VirtualCluster, SetupError> {
    let virtual_clusters: Api<VirtualCluster> = Api::namespaced(admin.clone(), NAMESPACE);
    let object = json!({
        "apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
        "metadata": {"name": TENANT, "namespace": NAMESPACE},
        "spec": spec,
    });
    crate::wait::until("the CRD to serve VirtualClusters", CRD_SERVED, || {
        let virtual_clusters = virtual_clusters.clone();
        let object = object.clone();
        async move {
            let vc: VirtualCluster =
                serde_json::from_value(object).map_err(|error| error.to_string())?;
            virtual_clusters
                .create(&PostParams::default(), &vc)
                .await
                .map_err(|error| error.to_string())
        }
    })
    .await
    .map_err(SetupError::CreateVirtualCluster)
}

/// Marks host node `node` claimed by the VirtualCluster with `uid` (labels, annotation,
/// taint), as the controller does when it promotes it, or returns it (`claimed: false`).
pub async fn claim(host: &Client, node: &str, uid: &str, claimed: bool) -> Result<(), SetupError> {
    let patch = if claimed {
        json!({
            "metadata": {
                "labels": {NODE_OWNER_NAMESPACE_LABEL: NAMESPACE, NODE_OWNER_NAME_LABEL: TENANT},
                "annotations": {NODE_OWNER_UID_ANNOTATION: uid},
            },
            "spec": {"taints": [{"key": NODE_CLAIM_TAINT_KEY, "value": TENANT, "effect": "NoSchedule"}]},
        })
    } else {
        json!({
            "metadata": {
                "labels": {NODE_OWNER_NAMESPACE_LABEL: null, NODE_OWNER_NAME_LABEL: null},
                "annotations": {NODE_OWNER_UID_ANNOTATION: null},
            },
            "spec": {"taints": null},
        })
    };
    Api::<Node>::all(host.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| SetupError::Claim {
            node: node.to_owned(),
            claimed,
            source: Box::new(source),
        })?;
    Ok(())
}

/// What the controller grants a tenant's clustertree on the host, for [`USER`]: its
/// VirtualCluster, and read access to exactly the nodes it claimed.
pub fn host_rbac(nodes: &[&str]) -> Vec<serde_json::Value> {
    vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "clustertree-nodes"},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"], "resourceNames": nodes}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "clustertree-nodes"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "clustertree-nodes"},
            "subjects": [{"kind": "User", "name": USER}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "clustertree", "namespace": NAMESPACE},
            "rules": [{"apiGroups": ["kosmos.io"], "resources": ["virtualclusters"], "verbs": ["get"], "resourceNames": [TENANT]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "clustertree", "namespace": NAMESPACE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "clustertree"},
            "subjects": [{"kind": "User", "name": USER}],
        }),
    ]
}

/// What the chart's clustertree ClusterRole (`clustertree::workload_rules`) grants [`USER`]
/// in the workload namespace: the objects of the tenant's pods and Services, and Events.
pub fn workload_rbac(namespace: &str) -> Vec<serde_json::Value> {
    let rw = [
        "create", "delete", "get", "list", "patch", "update", "watch",
    ];
    vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "tenant1-clustertree", "namespace": namespace},
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps", "endpoints", "persistentvolumeclaims", "pods", "secrets", "services"], "verbs": rw},
                {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get", "patch", "update"]},
                {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "get", "list", "patch", "update", "watch"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "tenant1-clustertree", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant1-clustertree"},
            "subjects": [{"kind": "User", "name": USER}],
        }),
    ]
}

/// How to run `vc-clustertree`: the binary, the two kubeconfigs, the VirtualCluster it
/// serves ([`NAMESPACE`]/[`TENANT`] unless told), and its flags. DNS listens on a port of
/// its own (`127.0.0.1:0`) unless told, since tests run side by side.
#[derive(Debug, Clone)]
pub struct Launch {
    binary: PathBuf,
    host_kubeconfig: PathBuf,
    tenant_kubeconfig: PathBuf,
    name: String,
    period: Option<String>,
    dns_listen: Option<String>,
    args: Vec<OsString>,
}

impl Launch {
    pub fn new(binary: PathBuf, host_kubeconfig: &Path, tenant_kubeconfig: &Path) -> Self {
        Launch {
            binary,
            host_kubeconfig: host_kubeconfig.to_owned(),
            tenant_kubeconfig: tenant_kubeconfig.to_owned(),
            name: TENANT.to_owned(),
            period: None,
            dns_listen: Some("127.0.0.1:0".to_owned()),
            args: Vec::new(),
        }
    }

    /// Serves VirtualCluster [`NAMESPACE`]/`name`.
    pub fn name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }

    /// `--period`: how often it resyncs.
    pub fn period(mut self, period: &str) -> Self {
        self.period = Some(period.to_owned());
        self
    }

    /// `--dns-listen`; `None` leaves it to the caller's own flags.
    pub fn dns_listen(mut self, address: Option<String>) -> Self {
        self.dns_listen = address;
        self
    }

    /// Further flags, after the ones above.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));
        self
    }

    /// The command line, without its output set.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--kubeconfig")
            .arg(&self.host_kubeconfig)
            .arg("--tenant-kubeconfig")
            .arg(&self.tenant_kubeconfig)
            .args(["--namespace", NAMESPACE, "--name", &self.name]);
        if let Some(period) = &self.period {
            command.args(["--period", period]);
        }
        if let Some(address) = &self.dns_listen {
            command.args(["--dns-listen", address]);
        }
        command.args(&self.args);
        command
    }

    /// Starts it with stdout and stderr both written to `log`.
    pub fn spawn(&self, log: std::fs::File) -> Result<Process, SetupError> {
        let stderr = log.try_clone().map_err(SetupError::OpenLog)?;
        let child = self
            .command()
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|source| SetupError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        Ok(Process(child))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags after the kubeconfigs and the namespace, which every launch starts with.
    fn flags(launch: &Launch) -> Vec<String> {
        let args: Vec<String> = launch
            .command()
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        let (common, rest) = args.split_at(6);
        assert_eq!(
            common,
            [
                "--kubeconfig",
                "/h",
                "--tenant-kubeconfig",
                "/t",
                "--namespace",
                NAMESPACE
            ]
        );
        rest.to_vec()
    }

    fn launch() -> Launch {
        Launch::new(
            "/bin/vc-clustertree".into(),
            Path::new("/h"),
            Path::new("/t"),
        )
    }

    #[test]
    fn a_launch_names_its_tenant_period_dns_and_extra_flags_in_order() {
        let launch = launch()
            .period("0.3s")
            .args(["--kubelet-address", "127.0.0.1"]);
        assert_eq!(
            flags(&launch),
            [
                "--name",
                TENANT,
                "--period",
                "0.3s",
                "--dns-listen",
                "127.0.0.1:0",
                "--kubelet-address",
                "127.0.0.1",
            ]
        );
    }

    #[test]
    fn a_launch_without_dns_leaves_the_flag_to_the_caller() {
        let launch = launch().name("dns-one").dns_listen(None);
        assert_eq!(flags(&launch), ["--name", "dns-one"]);
    }
}
