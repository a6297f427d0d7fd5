//! The end-to-end harness: a host cluster with kosmos-vc installed the way an operator
//! installs it, driven only through the real binaries and the real kubectl.
//!
//! Three kinds of host ([`HostKind`]):
//! - the in-process test API server (default), RBAC enforced, with simulated kubelets
//!   (node1..node6, 8 CPUs / 32Gi each), controllers and tenant API servers;
//! - a real kube-apiserver + etcd from `KUBEBUILDER_ASSETS`, with a loopback Service range,
//!   and kube-controller-manager (garbage collector and namespace controller only) when the
//!   assets hold it. The simulated kubelets and host controllers stay outside it, as
//!   clients; each tenant's control plane runs as local etcd / kube-apiserver /
//!   kube-controller-manager / kube-scheduler processes from the flags the controller
//!   rendered (`vc_simulation::local_control_plane`), bound on the tenant Service's
//!   cluster IP;
//! - an existing cluster with the chart already installed (`KOSMOS_VC_E2E_KUBECONFIG`,
//!   used by `.github/workflows/e2e.yml` on kind): nothing is started, real nodes are used.
//!
//! On the simulated hosts the CRD, ServiceAccounts, RBAC, webhook Service and webhook
//! configurations come from the chart rendered by Helm's engine (`webhook.tls.mode=secret`
//! with a CA made here), and `vc-webhook` / `vc-controller` run as separate processes with
//! the arguments of the rendered Deployments, only in-cluster things replaced (kubeconfig,
//! listen addresses, certificate paths), each as its chart ServiceAccount. The webhook
//! Service is pointed at the webhook process by an EndpointSlice holding 127.0.0.1:PORT,
//! which the test API server's admission dispatcher resolves like kube-apiserver does; a
//! real kube-apiserver refuses loopback endpoints, so there the webhook configurations'
//! `clientConfig.service` is replaced by `url: https://127.0.0.1:PORT/PATH` (the serving
//! certificate carries both names).
//!
//! Shared with the `vc-sandbox` binary, so nothing here panics: every step returns an
//! error that says what it was doing.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::node::host::NodeHost;
use crate::node::image;
use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use kube::Client;
use serde_json::{Value, json};
use vc_simulation::local_clustertree::{self, LocalClustertreeOptions, LocalClustertrees};
use vc_simulation::local_control_plane::{
    self, ControlPlaneBinaries, LocalControlPlaneOptions, LocalControlPlanes,
};
use vc_simulation::nodes::{FleetOptions, NodeSpec};
use vc_simulation::services::ServiceOptions;
use vc_simulation::tenant_apiserver::TenantOptions;
use vc_simulation::workloads::{WorkloadMode, WorkloadOptions};
use vc_simulation::{Simulation, SimulationOptions};
use vc_test_apiserver::envtest::{self, Envtest, EnvtestOptions, private_service_cidr};
use vc_test_apiserver::pki::TestCa;
use vc_test_apiserver::work_dir::WorkDir;
use vc_test_apiserver::{TestApiServer, TestApiServerOptions, client_from_kubeconfig};

pub use crate::find_on_path;
use crate::helm;

/// Release namespace of the chart.
pub const RELEASE_NAMESPACE: &str = "kosmos-system";
/// Names of the chart's Deployments (and ServiceAccounts).
pub const WEBHOOK: &str = "kosmos-vc-webhook";
pub const CONTROLLER: &str = "kosmos-vc-controller";
/// Namespace the scenarios create VirtualClusters in.
pub const TENANT_NAMESPACE: &str = "default";
/// Environment variable naming an existing cluster with the chart installed.
pub const EXTERNAL_KUBECONFIG_ENV: &str = "KOSMOS_VC_E2E_KUBECONFIG";
/// Environment variable naming the directory of the built binaries.
pub const BIN_DIR_ENV: &str = "KOSMOS_VC_BIN_DIR";
/// Host nodes the scenarios may promote: all simulated, or the real [`REAL_WORKER`] and
/// simulated ones.
pub const SIMULATED_NODES: usize = 6;
/// The real node, with [`Options::real_node`].
pub const REAL_NODE: &str = "node1";
/// The real worker beside [`REAL_NODE`] (with [`Options::real_node`], not
/// [`Options::real_node_only`]): the first node the scenarios promote, so tenant pods
/// placed there are real containers.
pub const REAL_WORKER: &str = "node2";
/// [`REAL_WORKER`]'s index, as `crate::node::NodeOptions::worker` takes it.
const REAL_WORKER_INDEX: u8 = 2;
/// A busybox image on the real node when tenants run there ([`Options::real_node_only`]).
pub const BUSYBOX_IMAGE: &str = "kosmos-vc.local/busybox:1";
/// Secret holding the webhook serving certificate (`webhook.tls.mode=secret`).
const WEBHOOK_TLS_SECRET: &str = "kosmos-vc-webhook-e2e-tls";
/// The EndpointSlice standing in for the webhook pods.
const WEBHOOK_SLICE: &str = "kosmos-vc-webhook-local";
const LOG_TAIL_LINES: usize = 60;
/// `--cluster-domain` of vc-controller when the chart does not pass it.
const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// Bound of one kubectl run: above the longest `--timeout` a scenario gives the plugin's
/// waits (300 s on an existing cluster), so the plugin reports its own timeout.
const KUBECTL_LIMIT: Duration = Duration::from_secs(330);
/// How long a kubectl run refused a connection is tried again ([`Operator::kubectl_with`]).
const REFUSED_RETRY: Duration = Duration::from_secs(90);
/// Bound of every start-up wait: generous, since CI runs many scenarios on 2 cores.
const STARTUP_WAIT: Duration = Duration::from_secs(60);

/// Which host cluster the harness drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// The in-process test API server.
    TestApiServer,
    /// kube-apiserver + etcd from `KUBEBUILDER_ASSETS`.
    RealApiServer,
    /// An existing cluster with the chart installed (`KOSMOS_VC_E2E_KUBECONFIG`).
    External,
}

/// How to start.
#[derive(Clone, Debug)]
pub struct Options {
    /// Label of the scenario, for messages.
    pub scenario: String,
    pub host: HostKind,
    /// Delay before simulated workloads become ready (longer gives a window in which a
    /// tenant is provisioning).
    pub workload_delay: Duration,
    /// Where the work directory goes (default: a temporary directory removed at the end).
    pub work_dir: Option<PathBuf>,
    /// On a real apiserver: the real node `node1` runs the tenants' control planes and
    /// clustertrees as real pods (`crate::node::host`), instead of local processes;
    /// the real worker `node2` is the first node scenarios promote, and the simulated
    /// nodes are `node3` and up.
    pub real_node: bool,
    /// With [`Options::real_node`]: no simulated node at all, and `node1` is a worker
    /// (not a control-plane node), so tenants' pool pods run there too, as real
    /// containers (the sandbox).
    pub real_node_only: bool,
}

impl Options {
    /// The host the environment asks for: `KOSMOS_VC_E2E_KUBECONFIG`, else the test API
    /// server.
    pub fn new(scenario: &str) -> Self {
        let host = if std::env::var_os(EXTERNAL_KUBECONFIG_ENV).is_some() {
            HostKind::External
        } else {
            HostKind::TestApiServer
        };
        Options {
            scenario: scenario.to_owned(),
            host,
            workload_delay: Duration::from_millis(200),
            work_dir: None,
            real_node: false,
            real_node_only: false,
        }
    }
}

/// The host API server, whichever it is.
enum Host {
    InProcess(Box<TestApiServer>),
    Real(Box<Envtest>),
    External(PathBuf),
}

impl Host {
    fn kubeconfig_path(&self) -> &Path {
        match self {
            Host::InProcess(server) => server.kubeconfig_path(),
            Host::Real(envtest) => envtest.kubeconfig_path(),
            Host::External(path) => path,
        }
    }

    fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> anyhow::Result<PathBuf> {
        match self {
            Host::InProcess(server) => Ok(server.kubeconfig_for(user, groups)?),
            Host::Real(envtest) => Ok(envtest.kubeconfig_for(user, groups)?),
            Host::External(_) => bail!(
                "cannot issue credentials for {user} on an existing cluster ({EXTERNAL_KUBECONFIG_ENV})"
            ),
        }
    }
}

/// A child process whose output goes to a log file; killed when dropped.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl Process {
    fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening the log {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Process {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    /// Fails when the process has exited, with the tail of its log.
    fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => bail!(
                "{} exited with {status}; last log lines:\n{}",
                self.name,
                log_tail(&self.log, LOG_TAIL_LINES)
            ),
            Ok(None) => Ok(()),
            Err(error) => bail!("checking on {}: {error}", self.name),
        }
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a log file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let length = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _seeked = file.seek(SeekFrom::Start(length.saturating_sub(256 * 1024)));
        let _read = file.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The directory of the built `vc-webhook`, `vc-controller`, `vc-clustertree` and
/// `kubectl-vc`.
pub fn binary_dir() -> anyhow::Result<PathBuf> {
    const NAMES: [&str; 4] = [
        "vc-webhook",
        "vc-controller",
        "vc-clustertree",
        "kubectl-vc",
    ];
    let candidates: Vec<PathBuf> = match std::env::var_os(BIN_DIR_ENV) {
        Some(dir) => vec![PathBuf::from(dir)],
        None => {
            let executable = std::env::current_exe().context("locating this executable")?;
            // target/debug/deps/e2e-HASH for tests, target/debug/vc-sandbox for the sandbox.
            executable
                .ancestors()
                .skip(1)
                .take(2)
                .map(Path::to_path_buf)
                .collect()
        }
    };
    for dir in &candidates {
        if NAMES.iter().all(|name| dir.join(name).is_file()) {
            return Ok(dir.clone());
        }
    }
    let searched: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "the binaries {NAMES:?} are not all built (looked in {searched:?}); run `cargo build --workspace --bins` first, or set {BIN_DIR_ENV}"
    )
}

fn free_port() -> anyhow::Result<u16> {
    vc_test_apiserver::ports::free_port().context("finding a free port")
}

/// An operator's shell: a private HOME and kubeconfig, and a PATH where kubectl finds
/// the built `kubectl-vc` plugin.
#[derive(Debug)]
pub struct Operator {
    pub home: PathBuf,
    pub kubeconfig: PathBuf,
    path: OsString,
    kubectl: PathBuf,
}

/// What a command did.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from_output(args: &[&str], output: &Output) -> Self {
        Run {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The output, for messages.
    pub fn describe(&self) -> String {
        format!(
            "kubectl {}\n--- exit: {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.args.join(" "),
            if self.success { "success" } else { "failure" },
            self.stdout,
            self.stderr
        )
    }

    /// Ok(stdout) when the command succeeded, else an error with its output.
    pub fn ok(self) -> anyhow::Result<String> {
        if self.success {
            Ok(self.stdout)
        } else {
            Err(anyhow!("command failed: {}", self.describe()))
        }
    }
}

impl Operator {
    fn new(
        home: &Path,
        admin_kubeconfig: &Path,
        plugin_dir: &Path,
        kubectl: PathBuf,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
        let kubeconfig = home.join("kubeconfig");
        std::fs::copy(admin_kubeconfig, &kubeconfig).context("copying the admin kubeconfig")?;
        let mut path = OsString::from(plugin_dir);
        if let Some(rest) = std::env::var_os("PATH") {
            path.push(":");
            path.push(rest);
        }
        Ok(Operator {
            home: home.to_owned(),
            kubeconfig,
            path,
            kubectl,
        })
    }

    /// `kubectl ARGS` with the operator's kubeconfig (or `kubeconfig`), HOME and PATH.
    ///
    /// A refused connection is tried again for up to [`REFUSED_RETRY`], saying so on
    /// stderr. The refusals seen once came with the simulated kubelet writing statuses of
    /// pods on the real node (it plays only simulated nodes now); none has been seen
    /// since, and each retry printed here is a lead to follow. A refused connection
    /// carried no request, so any command may be sent again.
    pub async fn kubectl_with(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<Run> {
        let started = Instant::now();
        loop {
            let run = self.kubectl_once(kubeconfig, args, stdin).await?;
            let refused = !run.success
                && (run.stderr.contains("connection refused")
                    || run.stderr.contains("was refused"));
            if !refused || started.elapsed() > REFUSED_RETRY {
                return Ok(run);
            }
            eprintln!(
                "kubectl {}: the server refused the connection; trying again",
                args.join(" ")
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn kubectl_once(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<Run> {
        use tokio::io::AsyncWriteExt as _;
        let mut child = tokio::process::Command::new(&self.kubectl)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", &self.home)
            .env("PATH", &self.path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("running kubectl {}", args.join(" ")))?;
        if let Some(mut input) = child.stdin.take()
            && let Some(text) = stdin
        {
            input.write_all(text.as_bytes()).await?;
        }
        let output = tokio::time::timeout(KUBECTL_LIMIT, child.wait_with_output())
            .await
            .map_err(|_| {
                anyhow!(
                    "kubectl {} did not finish within {KUBECTL_LIMIT:?}",
                    args.join(" ")
                )
            })??;
        Ok(Run::from_output(args, &output))
    }

    /// `kubectl ARGS` as the operator.
    pub async fn kubectl(&self, args: &[&str]) -> anyhow::Result<Run> {
        self.kubectl_with(&self.kubeconfig, args, None).await
    }

    /// `kubectl ARGS` that must succeed; its stdout.
    pub async fn succeed(&self, args: &[&str]) -> anyhow::Result<String> {
        self.kubectl(args).await?.ok()
    }

    /// `kubectl apply -f -` of `manifest` with `kubeconfig`, validated by the server
    /// (`--validate=false` turns off kubectl's client-side OpenAPI check only, which
    /// `helm install` does not make either).
    pub async fn apply(&self, kubeconfig: &Path, manifest: &str) -> anyhow::Result<String> {
        self.kubectl_with(
            kubeconfig,
            &["apply", "--validate=false", "-f", "-"],
            Some(manifest),
        )
        .await?
        .ok()
    }

    /// Synchronous `kubectl`, for diagnostics printed from `Drop`.
    fn kubectl_blocking(&self, kubeconfig: &Path, args: &[&str]) -> String {
        match Command::new(&self.kubectl)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", &self.home)
            .stdin(Stdio::null())
            .output()
        {
            Ok(output) => format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => format!("(kubectl could not run: {error})"),
        }
    }
}

/// How the controller is started, kept to restart it.
#[derive(Debug)]
struct ControllerLaunch {
    binary: PathBuf,
    args: Vec<String>,
    probe: SocketAddr,
    log: PathBuf,
}

/// Options of the simulators, shared by the host and the tenants.
struct SimulatorOptions {
    host_workloads: WorkloadOptions,
    tenant_workloads: WorkloadOptions,
    services: ServiceOptions,
}

/// A running host with kosmos-vc installed.
pub struct Harness {
    pub kind: HostKind,
    scenario: String,
    started: Instant,
    host: std::sync::Arc<Host>,
    pub admin: Client,
    pub operator: Operator,
    pub simulation: Option<Simulation>,
    webhook: Option<Process>,
    webhook_log: Option<PathBuf>,
    controller: Option<Process>,
    controller_launch: Option<ControllerLaunch>,
    /// Host node names the scenarios may promote, in order.
    pub nodes: Vec<String>,
    /// The tenants' control planes as local processes (real apiserver only).
    local_control_planes: Option<LocalControlPlanes>,
    /// Each tenant's `vc-clustertree`, as a local process from its rendered Deployment.
    clustertrees: Option<LocalClustertrees>,
    /// `kubectl port-forward`s to tenant apiservers (existing clusters only).
    port_forwards: std::sync::Mutex<Vec<Process>>,
    /// The real node and what its pods need of the host ([`Options::real_node`]).
    node_host: Option<NodeHost>,
    /// The webhook's `--default-kubernetes-version`: the tag of the tenants' images.
    default_kubernetes_version: Option<String>,
    work: WorkDir,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("kind", &self.kind)
            .field("scenario", &self.scenario)
            .finish_non_exhaustive()
    }
}

/// Why the harness did not start.
#[derive(Debug)]
pub enum NotStarted {
    /// Something optional is absent (kubectl, Helm engine, KUBEBUILDER_ASSETS): skip.
    Skip(String),
    /// Something that must work did not.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for NotStarted {
    fn from(error: anyhow::Error) -> Self {
        NotStarted::Failed(error)
    }
}

impl Harness {
    /// Starts the host and installs kosmos-vc on it.
    pub async fn start(options: Options) -> Result<Self, NotStarted> {
        let started = Instant::now();
        // What a scenario cannot run without is checked before anything starts, so a
        // skipped scenario costs nothing.
        let assets = match options.host {
            HostKind::RealApiServer => Some(real_host_assets(
                envtest::assets(),
                std::env::var_os("KUBEBUILDER_ASSETS"),
                envtest::must_run_real(),
            )?),
            HostKind::TestApiServer | HostKind::External => None,
        };
        let Some(kubectl) = find_on_path("kubectl") else {
            return Err(NotStarted::Skip("kubectl is not on PATH".to_owned()));
        };
        let engine = match options.host {
            HostKind::External => None,
            HostKind::TestApiServer | HostKind::RealApiServer => {
                Some(helm::HelmEngine::find().map_err(NotStarted::Skip)?)
            }
        };
        let bin = binary_dir()?;
        let work = WorkDir::create(options.work_dir.as_deref(), "kosmos-vc-e2e-")
            .context("creating the work directory")?;
        let plugin_dir = work.path().join("bin");
        std::fs::create_dir_all(&plugin_dir).context("creating the plugin directory")?;
        let link = plugin_dir.join("kubectl-vc");
        if !link.exists() {
            std::os::unix::fs::symlink(bin.join("kubectl-vc"), &link)
                .context("linking kubectl-vc onto the operator's PATH")?;
        }

        let mut node_host = match (&assets, options.real_node) {
            (Some(_), true) => {
                let missing = crate::node::missing_programs();
                if !missing.is_empty() {
                    let why = format!("the real node needs {missing:?} (.ci/run installs them)");
                    return Err(if envtest::must_run_real() {
                        NotStarted::Failed(anyhow!("{why}; CI is set, so it must run"))
                    } else {
                        NotStarted::Skip(why)
                    });
                }
                Some(
                    NodeHost::prepare()
                        .await
                        .context("preparing the machine for the real node")?,
                )
            }
            _ => None,
        };
        // `assets` is there exactly when a real apiserver was asked for.
        let host = match (&assets, options.host) {
            (Some(assets), _) => {
                // Loopback cluster IPs, so each tenant's kube-apiserver can be bound on
                // its Service's cluster IP here, as the controller expects to reach it;
                // with the real node, a range its kube-proxy routes for pods instead.
                let base = EnvtestOptions {
                    service_cidr: private_service_cidr(),
                    controller_manager: true,
                    scheduler: true,
                    ..EnvtestOptions::default()
                };
                let envtest_options = match &node_host {
                    Some(node_host) => node_host.envtest_options(base),
                    None => base,
                };
                Host::Real(Box::new(Envtest::start_with(assets, envtest_options).await.context(
                    "starting etcd, kube-apiserver (and kube-controller-manager) from KUBEBUILDER_ASSETS",
                )?))
            }
            (None, HostKind::External) => {
                let path = std::env::var_os(EXTERNAL_KUBECONFIG_ENV)
                    .map(PathBuf::from)
                    .ok_or_else(|| anyhow!("{EXTERNAL_KUBECONFIG_ENV} is not set"))?;
                Host::External(path)
            }
            (None, HostKind::RealApiServer) => {
                return Err(
                    anyhow!("a real apiserver was asked for without KUBEBUILDER_ASSETS").into(),
                );
            }
            (None, HostKind::TestApiServer) => Host::InProcess(Box::new(
                TestApiServer::start(TestApiServerOptions {
                    enforce_rbac: true,
                    service_cidr: private_service_cidr(),
                    ..TestApiServerOptions::default()
                })
                .context("starting the test API server")?,
            )),
        };
        let admin = client_from_kubeconfig(host.kubeconfig_path())
            .await
            .context("connecting to the host as admin")?;
        let operator = Operator::new(
            &work.path().join("home"),
            host.kubeconfig_path(),
            &plugin_dir,
            kubectl,
        )?;
        let mut harness = Harness {
            kind: options.host,
            scenario: options.scenario.clone(),
            started,
            host: std::sync::Arc::new(host),
            admin,
            operator,
            simulation: None,
            webhook: None,
            webhook_log: None,
            controller: None,
            controller_launch: None,
            nodes: Vec::new(),
            local_control_planes: None,
            clustertrees: None,
            port_forwards: std::sync::Mutex::default(),
            node_host: None,
            default_kubernetes_version: None,
            work,
        };
        let Some(engine) = engine else {
            harness.nodes = harness.external_worker_nodes().await?;
            return Ok(harness);
        };
        harness.install(&engine, &bin, &options).await?;
        match (&assets, node_host.take()) {
            (Some(assets), Some(node_host)) => {
                harness
                    .start_real_node(node_host, assets, &bin, !options.real_node_only)
                    .await?;
            }
            (Some(assets), None) => {
                harness.start_local_control_planes(assets, &options)?;
                harness.start_clustertrees(&bin);
            }
            (None, _) => harness.start_clustertrees(&bin),
        }
        let real_worker = harness.real_worker().map(str::to_owned);
        let simulated: Vec<&str> = harness
            .nodes
            .iter()
            .map(String::as_str)
            .filter(|node| Some(*node) != real_worker.as_deref())
            .collect();
        eprintln!(
            "[{}] host ready in {:.1?}: {}; chart installed, vc-webhook and vc-controller running, {} simulated nodes ({}){}{}",
            harness.scenario,
            harness.started.elapsed(),
            harness.describe_host(),
            simulated.len(),
            simulated.join(", "),
            if harness.node_host.is_some() {
                "; the real node node1 runs the tenants' control planes and clustertrees as pods"
            } else {
                ""
            },
            real_worker
                .map(|worker| format!(
                    "; the real worker {worker} (promoted first) runs tenant pods as real containers"
                ))
                .unwrap_or_default()
        );
        Ok(harness)
    }

    /// Runs each tenant's control plane as local processes (etcd, kube-apiserver on the
    /// apiserver Service's cluster IP, and kube-controller-manager and kube-scheduler when
    /// the assets hold them) from the flags the controller rendered: a real host
    /// apiserver has no kubelet to run them, and the in-process tenant API server would
    /// not show whether those flags work.
    fn start_local_control_planes(
        &mut self,
        assets: &Path,
        options: &Options,
    ) -> anyhow::Result<()> {
        let binaries = ControlPlaneBinaries::discover(assets)
            .context("finding the tenants' control-plane binaries")?;
        let SimulatorOptions { services, .. } = simulator_options(self.kind, options);
        let cluster_domain = self.cluster_domain();
        self.local_control_planes = Some(local_control_plane::spawn(
            self.admin.clone(),
            LocalControlPlaneOptions {
                binaries,
                work_dir: self.work.path().join("tenants"),
                namespace: Some(TENANT_NAMESPACE.to_owned()),
                cluster_domain,
                // vc-clustertree is the kubelet of the tenant's Nodes: it runs their
                // pods as host pods, which the host's (simulated) kubelets run.
                tenant_workloads: None,
                tenant_services: Some(services),
                resync: Duration::from_millis(500),
            },
        ));
        Ok(())
    }

    /// Starts the real node `node1` (with the host's DNS), and loads into it, under the
    /// exact names the controller renders, every image a tenant's control plane and
    /// clustertree pods ask for: built here from `KUBEBUILDER_ASSETS` and the workspace's
    /// `vc-clustertree`, since no registry is reachable.
    async fn start_real_node(
        &mut self,
        mut node_host: NodeHost,
        assets: &Path,
        bin: &Path,
        control_plane: bool,
    ) -> anyhow::Result<()> {
        let Host::Real(envtest) = self.host.as_ref() else {
            bail!("the real node needs a real apiserver");
        };
        let started = Instant::now();
        let node = node_host
            .start_node(
                envtest,
                &self.admin,
                assets,
                &self.work.path().join(REAL_NODE),
                &[TENANT_NAMESPACE],
                control_plane,
            )
            .await
            .context("starting the real node node1")?;
        if !control_plane {
            load_workload_images(node, self.work.path())?;
        }
        let launch = self
            .controller_launch
            .as_ref()
            .ok_or_else(|| anyhow!("the controller's flags are not known"))?;
        let flag = |name: &str| {
            let prefix = format!("--{name}=");
            launch
                .args
                .iter()
                .find_map(|arg| arg.strip_prefix(&prefix).map(str::to_owned))
        };
        let registry = flag("image-registry").unwrap_or_else(|| "registry.k8s.io".to_owned());
        let version = self
            .default_kubernetes_version
            .clone()
            .ok_or_else(|| anyhow!("the webhook renders no --default-kubernetes-version"))?;
        let mut references: Vec<String> = [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ]
        .iter()
        .map(|component| format!("{}/{component}:{version}", registry.trim_end_matches('/')))
        .collect();
        references.extend(flag("etcd-image"));
        for reference in &references {
            let spec = image::control_plane_image(reference, assets)
                .with_context(|| format!("building image {reference}"))?
                .ok_or_else(|| anyhow!("{reference} runs no control-plane program"))?;
            node.load_image(&spec)
                .with_context(|| format!("loading image {reference}"))?;
        }
        let clustertree = flag("clustertree-image")
            .ok_or_else(|| anyhow!("the controller renders no --clustertree-image"))?;
        let spec = image::ImageSpec::busybox(&clustertree, &["/usr/local/bin/vc-clustertree"])
            .binary("/usr/local/bin/vc-clustertree", &bin.join("vc-clustertree"))
            .with_context(|| format!("building image {clustertree}"))?;
        node.load_image(&spec)
            .with_context(|| format!("loading image {clustertree}"))?;
        eprintln!(
            "[{}] real node node1 Ready, {} images built and loaded, in {:.1?}",
            self.scenario,
            references.len() + 1,
            started.elapsed()
        );
        if control_plane {
            let started = Instant::now();
            let worker = node_host
                .start_worker(
                    envtest,
                    assets,
                    &self.work.path().join(REAL_WORKER),
                    REAL_WORKER_INDEX,
                )
                .await
                .with_context(|| format!("starting the real worker {REAL_WORKER}"))?;
            load_workload_images(worker, self.work.path())?;
            self.nodes.insert(0, REAL_WORKER.to_owned());
            eprintln!(
                "[{}] real worker {REAL_WORKER} Ready, busybox and echo images loaded, in {:.1?}",
                self.scenario,
                started.elapsed()
            );
        }
        self.node_host = Some(node_host);
        Ok(())
    }

    /// Stops the real node and says what the machine kept compared to before the
    /// harness started (nothing, when all is well); nothing to say without a real node.
    pub fn stop_real_node(&mut self) -> Vec<String> {
        self.node_host
            .as_mut()
            .map(NodeHost::stop)
            .unwrap_or_default()
    }

    /// The real node's name, when the harness runs one.
    pub fn real_node(&self) -> Option<&str> {
        self.node_host
            .as_ref()
            .and_then(|host| host.nodes.first())
            .map(|node| node.options.name.as_str())
    }

    /// The tasks (running containers, pause containers included) of the real worker's
    /// containerd.
    pub fn real_worker_tasks(&self) -> anyhow::Result<Vec<String>> {
        let worker = self
            .node_host
            .as_ref()
            .and_then(|host| host.node(REAL_WORKER))
            .ok_or_else(|| anyhow!("no real worker runs"))?;
        Ok(worker.running_tasks()?)
    }

    /// The real worker's name ([`REAL_WORKER`]), when the harness runs one: tenant pods
    /// placed there run as real containers.
    pub fn real_worker(&self) -> Option<&str> {
        self.node_host
            .as_ref()
            .and_then(|host| host.node(REAL_WORKER))
            .map(|node| node.options.name.as_str())
    }

    /// One line on what runs as the host, for the start-up message.
    fn describe_host(&self) -> String {
        match self.host.as_ref() {
            Host::InProcess(_) => "the in-process test API server".to_owned(),
            Host::Real(envtest) => format!(
                "kube-apiserver + etcd from KUBEBUILDER_ASSETS (Services in {}){}",
                envtest.service_cidr(),
                match (envtest.has_controller_manager(), envtest.has_scheduler()) {
                    (true, true) =>
                        ", kube-controller-manager (workload, endpoint, volume, garbage-collector and namespace controllers) and kube-scheduler; simulated nodes have simulated kubelets",
                    (true, false) =>
                        ", kube-controller-manager, no kube-scheduler (pods stay unbound)",
                    (false, _) =>
                        ", no kube-controller-manager (no garbage collection, namespaces stay Terminating)",
                }
            ),
            Host::External(path) => format!("the existing cluster of {}", path.display()),
        }
    }

    /// Whether deleted owners take their dependents along and deleted namespaces go away:
    /// the test API server does both itself, an existing cluster runs
    /// kube-controller-manager, a bare kube-apiserver only when `KUBEBUILDER_ASSETS` also
    /// held kube-controller-manager.
    pub fn collects_garbage(&self) -> bool {
        match self.host.as_ref() {
            Host::Real(envtest) => envtest.has_controller_manager(),
            Host::InProcess(_) | Host::External(_) => true,
        }
    }

    /// Whether ResourceQuota usage is computed on the host. A real apiserver's quota
    /// admission refuses every pod a quota covers until kube-controller-manager's
    /// resourcequota controller has counted it; the test API server enforces no quota.
    pub fn computes_quota_usage(&self) -> bool {
        self.collects_garbage()
    }

    /// The work directory (logs, kubeconfigs, the operator's HOME).
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// The directory holding `kubectl-vc`, to put on PATH.
    pub fn plugin_dir(&self) -> PathBuf {
        self.work.path().join("bin")
    }

    /// A kubeconfig for `user` in `groups` on the host.
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> anyhow::Result<PathBuf> {
        self.host.kubeconfig_for(user, groups)
    }

    async fn install(
        &mut self,
        engine: &helm::HelmEngine,
        bin: &Path,
        options: &Options,
    ) -> anyhow::Result<()> {
        let dir = self.work.path().to_owned();
        // The webhook's CA and serving certificate: valid for the Service's DNS names
        // (what kube-apiserver verifies when it calls through the Service) and 127.0.0.1
        // (the url form used on a real kube-apiserver).
        let ca = TestCa::generate("kosmos-vc e2e webhook CA").context("creating the webhook CA")?;
        let serving = ca
            .issue_server(&[
                format!("{WEBHOOK}.{RELEASE_NAMESPACE}.svc"),
                format!("{WEBHOOK}.{RELEASE_NAMESPACE}.svc.cluster.local"),
            ])
            .context("issuing the webhook serving certificate")?;
        let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca.cert_pem());
        let manifests = helm::Render::new()
            .set("webhook.replicas=1")
            .set("webhook.tls.mode=secret")
            .set(&format!("webhook.tls.secret.name={WEBHOOK_TLS_SECRET}"))
            .set(&format!("webhook.tls.secret.caBundle={ca_bundle}"))
            .set("logFormat=json")
            .run(engine)
            .map_err(|failure| anyhow!("rendering the chart: {failure}"))?;

        let kubeconfig = self.host.kubeconfig_path().to_owned();
        self.operator
            .apply(
                &kubeconfig,
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RELEASE_NAMESPACE}}).to_string(),
            )
            .await
            .context("creating the release namespace")?;
        let tls_secret = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": WEBHOOK_TLS_SECRET, "namespace": RELEASE_NAMESPACE},
            "stringData": {"tls.crt": serving.cert_pem, "tls.key": serving.key_pem, "ca.crt": ca.cert_pem()}
        });
        self.operator
            .apply(&kubeconfig, &tls_secret.to_string())
            .await
            .context("creating the webhook TLS Secret")?;
        // What `helm install` creates, minus the pods (the binaries run as processes here)
        // and the webhook configurations (registered once the webhook answers).
        const LATER_OR_NEVER: [&str; 4] = [
            "Deployment",
            "PodDisruptionBudget",
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ];
        let installed: Vec<&Value> = manifests
            .objects
            .iter()
            .filter(|object| !LATER_OR_NEVER.iter().any(|kind| object["kind"] == *kind))
            .collect();
        self.operator
            .apply(&kubeconfig, &as_list(&installed))
            .await
            .context("applying the rendered chart")?;
        self.operator
            .kubectl_with(
                &kubeconfig,
                &[
                    "wait",
                    "--for=condition=Established",
                    "--timeout=60s",
                    "crd/virtualclusters.kosmos.io",
                ],
                None,
            )
            .await?
            .ok()
            .context("waiting for the VirtualCluster CRD to be established")?;

        self.simulation = Some(self.start_simulation(options).await?);
        self.nodes = simulated_nodes(options)
            .into_iter()
            .map(|node| node.name)
            .collect();

        // vc-webhook, as the Deployment runs it.
        let webhook_deployment = manifests
            .get("Deployment", WEBHOOK)
            .ok_or_else(|| anyhow!("the chart rendered no Deployment {WEBHOOK}"))?;
        let tls_dir = dir.join("webhook-tls");
        std::fs::create_dir_all(&tls_dir)?;
        std::fs::write(tls_dir.join("tls.crt"), &serving.cert_pem)?;
        std::fs::write(tls_dir.join("tls.key"), &serving.key_pem)?;
        let webhook_port = free_port()?;
        let mut args = container_args(webhook_deployment)?;
        self.default_kubernetes_version = args
            .iter()
            .find_map(|arg| arg.strip_prefix("--default-kubernetes-version="))
            .map(str::to_owned);
        replace_flag(&mut args, "--listen", &format!("127.0.0.1:{webhook_port}"))?;
        replace_flag(
            &mut args,
            "--tls-cert",
            &tls_dir.join("tls.crt").display().to_string(),
        )?;
        replace_flag(
            &mut args,
            "--tls-key",
            &tls_dir.join("tls.key").display().to_string(),
        )?;
        let webhook_identity = manifests
            .service_account_identity(WEBHOOK)
            .ok_or_else(|| anyhow!("the chart's Deployment {WEBHOOK} names no ServiceAccount"))?;
        let webhook_kubeconfig = self.identity_kubeconfig(&webhook_identity)?;
        args.push(format!("--kubeconfig={}", webhook_kubeconfig.display()));
        let log = dir.join("vc-webhook.log");
        let mut command = Command::new(bin.join("vc-webhook"));
        command.args(&args);
        self.webhook = Some(Process::spawn("vc-webhook", command, &log)?);
        self.webhook_log = Some(log);
        self.wait_webhook_ready(webhook_port, ca.cert_pem()).await?;

        // Point the chart's webhook Service (or, on a real apiserver, the configurations)
        // at the process, then register the rendered webhook configurations.
        let mut configurations: Vec<Value> = manifests
            .of_kind("MutatingWebhookConfiguration")
            .chain(manifests.of_kind("ValidatingWebhookConfiguration"))
            .cloned()
            .collect();
        if self.kind == HostKind::RealApiServer {
            for configuration in &mut configurations {
                point_at_url(configuration, webhook_port);
            }
        } else {
            self.operator
                .apply(
                    &kubeconfig,
                    &webhook_endpoint_slice(webhook_port).to_string(),
                )
                .await
                .context("creating the EndpointSlice of the webhook Service")?;
        }
        self.operator
            .apply(
                &kubeconfig,
                &as_list(&configurations.iter().collect::<Vec<_>>()),
            )
            .await
            .context("registering the webhook configurations")?;

        // vc-controller, as the Deployment runs it.
        let controller_deployment = manifests
            .get("Deployment", CONTROLLER)
            .ok_or_else(|| anyhow!("the chart rendered no Deployment {CONTROLLER}"))?;
        let probe = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let mut args = container_args(controller_deployment)?;
        replace_flag(&mut args, "--probe-listen", &probe.to_string())?;
        if options.real_node && options.real_node_only {
            args.push(format!(
                "--control-plane-node-selector=kubernetes.io/hostname={REAL_NODE}"
            ));
        } else if options.real_node {
            // What an operator with dedicated control-plane nodes passes.
            args.push(format!(
                "--control-plane-node-selector={}=",
                crate::node::host::CONTROL_PLANE_ROLE_LABEL
            ));
        }
        let controller_identity =
            manifests
                .service_account_identity(CONTROLLER)
                .ok_or_else(|| {
                    anyhow!("the chart's Deployment {CONTROLLER} names no ServiceAccount")
                })?;
        let controller_kubeconfig = self.identity_kubeconfig(&controller_identity)?;
        args.push(format!("--kubeconfig={}", controller_kubeconfig.display()));
        self.controller_launch = Some(ControllerLaunch {
            binary: bin.join("vc-controller"),
            args,
            probe,
            log: dir.join("vc-controller.log"),
        });
        self.start_controller().await?;
        self.wait_webhook_admits().await
    }

    /// Runs each tenant's `vc-clustertree` binary from the clustertree Deployment the
    /// controller rendered, under that pod's ServiceAccount identity on the host.
    fn start_clustertrees(&mut self, bin: &Path) {
        let host = std::sync::Arc::downgrade(&self.host);
        let identity: local_clustertree::IdentityIssuer =
            std::sync::Arc::new(move |namespace: &str, service_account: &str| {
                let host = host
                    .upgrade()
                    .ok_or_else(|| "the host has stopped".to_owned())?;
                let user = format!("system:serviceaccount:{namespace}:{service_account}");
                let namespace_group = format!("system:serviceaccounts:{namespace}");
                host.kubeconfig_for(&user, &["system:serviceaccounts", &namespace_group])
                    .map_err(|error| format!("issuing a kubeconfig for {user}: {error:#}"))
            });
        self.clustertrees = Some(local_clustertree::spawn(
            self.admin.clone(),
            LocalClustertreeOptions {
                binary: bin.join("vc-clustertree"),
                work_dir: self.work.path().join("clustertrees"),
                identity,
                cluster_domain: self.cluster_domain(),
                extra_args: vec!["--period=0.5s".to_owned()],
                resync: Duration::from_millis(300),
            },
        ));
    }

    /// The controller's `--cluster-domain`.
    fn cluster_domain(&self) -> String {
        self.controller_launch
            .as_ref()
            .and_then(|launch| {
                launch
                    .args
                    .iter()
                    .find_map(|arg| arg.strip_prefix("--cluster-domain="))
            })
            .unwrap_or(DEFAULT_CLUSTER_DOMAIN)
            .to_owned()
    }

    fn identity_kubeconfig(
        &self,
        (user, groups): &(String, Vec<String>),
    ) -> anyhow::Result<PathBuf> {
        let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
        self.host
            .kubeconfig_for(user, &groups)
            .with_context(|| format!("issuing a kubeconfig for {user}"))
    }

    /// The simulated kubelets and host controllers (deployments, statefulsets, Service
    /// endpoints). On the test API server also each tenant's API
    /// server; on a real one the tenants' control planes are real processes instead
    /// ([`Harness::start_local_control_planes`]).
    async fn start_simulation(&self, options: &Options) -> anyhow::Result<Simulation> {
        let SimulatorOptions {
            host_workloads,
            tenant_workloads,
            services,
        } = simulator_options(self.kind, options);
        let tenants = match self.kind {
            HostKind::RealApiServer => None,
            HostKind::TestApiServer | HostKind::External => Some(TenantOptions {
                tenant_workloads: Some(tenant_workloads),
                tenant_services: Some(services.clone()),
                resync: Duration::from_millis(500),
                ..TenantOptions::default()
            }),
        };
        // On a real host, kube-controller-manager's own controllers run the workloads and
        // fill the endpoints, and kube-scheduler binds the pods: only the kubelets are
        // simulated.
        let (host_workloads, host_services) = match self.kind {
            HostKind::RealApiServer => (
                WorkloadOptions {
                    mode: WorkloadMode::KubeletOnly,
                    // Pods on the real nodes are their kubelets' alone.
                    nodes: options.real_node.then(|| {
                        simulated_nodes(options)
                            .into_iter()
                            .map(|node| node.name)
                            .collect()
                    }),
                    ..host_workloads
                },
                ServiceOptions {
                    endpoints: false,
                    // With the real node, kube-proxy routes load-balancer addresses:
                    // scenarios give them to Services themselves, as a cloud's
                    // controller would, instead of the simulated one's cluster IPs.
                    load_balancers: !options.real_node,
                    ..services
                },
            ),
            HostKind::TestApiServer | HostKind::External => (host_workloads, services),
        };
        let simulation_options = SimulationOptions {
            nodes: simulated_nodes(options),
            fleet: FleetOptions::default(),
            workloads: Some(host_workloads),
            services: Some(host_services),
            tenants,
        };
        Simulation::start(self.admin.clone(), simulation_options)
            .await
            .context("starting the simulated kubelets, controllers and tenant API servers")
    }

    async fn wait_webhook_ready(&mut self, port: u16, ca_pem: &str) -> anyhow::Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let webhook = &mut self.webhook;
        // A process that exited ends the wait at once, its error as the value.
        let ready = crate::wait::until("vc-webhook to answer 200 on /readyz", STARTUP_WAIT, || {
            let running = webhook.as_mut().map_or(Ok(()), |w| w.check_running());
            async move {
                match running {
                    Err(exited) => Ok(Err(exited)),
                    Ok(()) => match https_status(addr, ca_pem, "/readyz").await {
                        Some(200) => Ok(Ok(())),
                        status => Err(format!("https://{addr}/readyz answered {status:?}")),
                    },
                }
            }
        })
        .await;
        match ready {
            Ok(result) => result,
            Err(timed_out) => bail!(
                "{timed_out}; log:\n{}",
                self.webhook_log
                    .as_deref()
                    .map(|l| log_tail(l, LOG_TAIL_LINES))
                    .unwrap_or_default()
            ),
        }
    }

    /// Waits until a server-side dry run of a VirtualCluster passes both webhooks: the
    /// configurations are registered and the webhook's caches have listed the nodes.
    async fn wait_webhook_admits(&self) -> anyhow::Result<()> {
        // Without simulated nodes (the real node starts after this) the probe promotes none.
        let probe = format!(
            "apiVersion: kosmos.io/v1alpha1\nkind: VirtualCluster\nmetadata:\n  name: admission-probe\n  namespace: {TENANT_NAMESPACE}\nspec:\n  promoteResources:\n    nodes: [{}]\n",
            self.nodes.first().map_or("", String::as_str)
        );
        let kubeconfig = self.host.kubeconfig_path().to_owned();
        self.eventually(
            "the webhooks to admit a dry-run VirtualCluster",
            STARTUP_WAIT,
            || async {
                let run = self
                    .operator
                    .kubectl_with(
                        &kubeconfig,
                        &["apply", "--dry-run=server", "-o", "json", "-f", "-"],
                        Some(&probe),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                if !run.success {
                    return Err(run.describe());
                }
                // Defaulted by the mutating webhook: it was really called.
                let object: Value = serde_json::from_str(&run.stdout).map_err(|e| e.to_string())?;
                if object["spec"]["kubernetesVersion"].is_string() {
                    Ok(())
                } else {
                    Err(format!(
                        "the mutating webhook did not fill defaults: {}",
                        run.stdout
                    ))
                }
            },
        )
        .await
    }

    /// Starts (or restarts) vc-controller and waits for its /readyz.
    pub async fn start_controller(&mut self) -> anyhow::Result<()> {
        let launch = self.controller_launch.as_ref().ok_or_else(|| {
            anyhow!("the controller is not run by this harness (existing cluster)")
        })?;
        let mut command = Command::new(&launch.binary);
        command
            .args(&launch.args)
            .env("POD_NAMESPACE", RELEASE_NAMESPACE)
            .env("POD_NAME", "vc-controller-e2e");
        let mut process = Process::spawn("vc-controller", command, &launch.log)?;
        let probe = launch.probe;
        // A process that exited ends the wait at once, its error as the value.
        let ready = crate::wait::until(
            "vc-controller to answer 200 on /readyz",
            STARTUP_WAIT,
            || {
                let running = process.check_running();
                async move {
                    match running {
                        Err(exited) => Ok(Err(exited)),
                        Ok(()) => match http_status(probe, "/readyz").await {
                            Some(200) => Ok(Ok(())),
                            status => Err(format!("http://{probe}/readyz answered {status:?}")),
                        },
                    }
                }
            },
        )
        .await;
        match ready {
            Ok(result) => result?,
            Err(timed_out) => bail!(
                "{timed_out}; log:\n{}",
                log_tail(&launch.log, LOG_TAIL_LINES)
            ),
        }
        self.controller = Some(process);
        Ok(())
    }

    /// SIGKILLs vc-controller (no graceful shutdown), as a crashed pod.
    pub fn kill_controller(&mut self) -> anyhow::Result<()> {
        let mut process = self
            .controller
            .take()
            .ok_or_else(|| anyhow!("vc-controller is not running"))?;
        process.kill();
        Ok(())
    }

    /// Polls `check` until it returns Ok, at most `limit` (5× on an existing cluster, 3× on
    /// a real apiserver); the error names `what` and the last thing `check` saw.
    pub async fn eventually<T, F, Fut>(
        &self,
        what: &str,
        limit: Duration,
        check: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        // Real images on an existing cluster are pulled and started, not simulated; on a
        // real apiserver each tenant's etcd, kube-apiserver, kube-controller-manager and
        // kube-scheduler are real processes.
        let limit = match self.kind {
            HostKind::External => limit * 5,
            HostKind::RealApiServer => limit * 3,
            HostKind::TestApiServer => limit,
        };
        Ok(crate::wait::until(what, limit, check).await?)
    }

    /// Worker nodes of an existing cluster (not control-plane), by name.
    async fn external_worker_nodes(&self) -> anyhow::Result<Vec<String>> {
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(self.admin.clone());
        let list = nodes
            .list(&kube::api::ListParams::default())
            .await
            .context("listing the nodes of the existing cluster")?;
        Ok(list
            .items
            .into_iter()
            .filter(|node| {
                node.metadata.labels.as_ref().is_none_or(|labels| {
                    !vc_api::constants::CONTROL_PLANE_NODE_LABELS
                        .iter()
                        .any(|label| labels.contains_key(*label))
                })
            })
            .filter_map(|node| node.metadata.name)
            .collect())
    }

    /// The URL the operator reaches tenant `name`'s apiserver at, when the kubeconfig's
    /// own endpoint does not work from here: `None` on the simulated hosts (cluster IPs
    /// are loopback addresses on this machine); on an existing cluster a
    /// `kubectl port-forward` to Service `NAME-apiserver` (its certificate names
    /// 127.0.0.1).
    pub async fn tenant_server(&self, name: &str) -> anyhow::Result<Option<String>> {
        if self.kind != HostKind::External {
            return Ok(None);
        }
        let port = free_port()?;
        let mut command = Command::new(&self.operator.kubectl);
        command
            .args([
                "port-forward",
                "-n",
                TENANT_NAMESPACE,
                &format!("service/{name}-apiserver"),
                &format!("{port}:6443"),
            ])
            .env("KUBECONFIG", self.host.kubeconfig_path());
        let log = self.work.path().join(format!("port-forward-{name}.log"));
        let process = Process::spawn("kubectl port-forward", command, &log)?;
        self.port_forwards
            .lock()
            .map_err(|_| anyhow!("the port-forward list is poisoned"))?
            .push(process);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        self.eventually(
            &format!("kubectl port-forward to {name}-apiserver on {addr}"),
            STARTUP_WAIT,
            || async {
                tokio::net::TcpStream::connect(addr)
                    .await
                    .map(drop)
                    .map_err(|e| format!("{e}; {}", log_tail(&log, 5)))
            },
        )
        .await?;
        Ok(Some(format!("https://{addr}")))
    }

    /// Writes the admin kubeconfig of tenant `name` (from its Secret, through
    /// `kubectl vc kubeconfig`) and returns its path; its server is the one
    /// [`Harness::tenant_server`] gives, when it gives one.
    pub async fn tenant_kubeconfig(&self, name: &str) -> anyhow::Result<PathBuf> {
        let text = self
            .operator
            .succeed(&["vc", "kubeconfig", name, "-n", TENANT_NAMESPACE])
            .await
            .with_context(|| format!("reading the kubeconfig of tenant {name}"))?;
        let text = match self.tenant_server(name).await? {
            None => text,
            Some(server) => {
                let mut config: serde_yaml::Value =
                    serde_yaml::from_str(&text).context("parsing the tenant kubeconfig")?;
                config["clusters"][0]["cluster"]["server"] = serde_yaml::Value::from(server);
                serde_yaml::to_string(&config)?
            }
        };
        let path = self.work.path().join(format!("{name}.kubeconfig"));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Everything a reader needs to see why a scenario failed.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        let host = self.host.kubeconfig_path();
        let kubectl = |args: &[&str]| self.operator.kubectl_blocking(host, args);
        let _ = writeln!(
            out,
            "===== VirtualClusters (with status; spec.kubeconfig, the tenant admin credential, left out)"
        );
        out.push_str(&without_kubeconfigs(&kubectl(&[
            "get",
            "virtualclusters",
            "-A",
            "-o",
            "json",
        ])));
        let _ = writeln!(out, "\n===== Nodes and their claim labels");
        out.push_str(&kubectl(&[
            "get",
            "nodes",
            "-L",
            "vc.kosmos.io/owner-namespace,vc.kosmos.io/owner-name",
        ]));
        let _ = writeln!(out, "\n===== Control-plane workloads on the host");
        out.push_str(&kubectl(&[
            "get",
            "deployments,statefulsets,services,secrets",
            "-n",
            TENANT_NAMESPACE,
            "-l",
            "app.kubernetes.io/managed-by=kosmos-vc",
        ]));
        if self.node_host.is_some() {
            let _ = writeln!(
                out,
                "\n===== Pods on the real node, and the last events of the namespace"
            );
            out.push_str(&kubectl(&[
                "get",
                "pods",
                "-A",
                "-o",
                "wide",
                "--field-selector",
                &format!("spec.nodeName={REAL_NODE}"),
            ]));
            out.push_str(&kubectl(&[
                "get",
                "events",
                "-n",
                TENANT_NAMESPACE,
                "--sort-by=.lastTimestamp",
            ]));
        }
        let names = kubectl(&[
            "get",
            "virtualclusters",
            "-n",
            TENANT_NAMESPACE,
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ]);
        for name in names.split_whitespace() {
            let _ = writeln!(
                out,
                "\n===== Deployments, pods, nodes and events inside tenant {name}"
            );
            let secret = vc_api::constants::admin_kubeconfig_secret_name(name);
            let encoded = kubectl(&[
                "get",
                "secret",
                &secret,
                "-n",
                TENANT_NAMESPACE,
                "-o",
                "jsonpath={.data.kubeconfig}",
            ]);
            match base64::engine::general_purpose::STANDARD.decode(encoded.trim()) {
                Ok(text) => {
                    let path = self.work.path().join(format!("diag-{name}.kubeconfig"));
                    if std::fs::write(&path, text).is_ok() {
                        out.push_str(&self.operator.kubectl_blocking(
                            &path,
                            &[
                                "get",
                                "deployments,pods,nodes",
                                "-A",
                                "-o",
                                "wide",
                                "--request-timeout=5s",
                            ],
                        ));
                        out.push_str(&self.operator.kubectl_blocking(
                            &path,
                            &[
                                "get",
                                "events",
                                "-A",
                                "--sort-by=.lastTimestamp",
                                "--request-timeout=5s",
                            ],
                        ));
                    }
                }
                Err(_) => {
                    // What kubectl printed may be part of the credential: never echo it.
                    let _ = writeln!(out, "(Secret {secret} is missing or not base64)");
                }
            }
        }
        for (name, log) in [
            ("vc-webhook", self.webhook_log.clone()),
            (
                "vc-controller",
                self.controller_launch.as_ref().map(|l| l.log.clone()),
            ),
        ] {
            if let Some(log) = log {
                let _ = writeln!(
                    out,
                    "\n===== last {LOG_TAIL_LINES} lines of the {name} log ({})",
                    log.display()
                );
                out.push_str(&log_tail(&log, LOG_TAIL_LINES));
            }
        }
        if let Some(planes) = &self.local_control_planes {
            let _ = writeln!(out, "\n===== tenant control planes (local processes)");
            out.push_str(&planes.diagnostics());
        }
        if let Some(trees) = &self.clustertrees {
            let _ = writeln!(
                out,
                "\n===== vc-clustertree of each tenant (local processes)"
            );
            out.push_str(&trees.diagnostics());
        }
        if let Host::Real(envtest) = self.host.as_ref() {
            for (name, log) in envtest.logs() {
                let _ = writeln!(
                    out,
                    "\n===== last {LOG_TAIL_LINES} lines of the host {name} log ({})",
                    log.display()
                );
                out.push_str(&log_tail(&log, LOG_TAIL_LINES));
            }
        }
        out
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "\n[{}] FAILED after {:.1?}; what the host looked like:\n{}",
                self.scenario,
                self.started.elapsed(),
                self.diagnostics()
            );
        }
        if self.kind == HostKind::External {
            // The next scenario reuses the cluster and the names: leave it empty.
            eprintln!(
                "[{}] deleting this scenario's VirtualClusters: {}",
                self.scenario,
                self.operator.kubectl_blocking(
                    self.host.kubeconfig_path(),
                    &[
                        "delete",
                        "virtualclusters",
                        "--all",
                        "-n",
                        TENANT_NAMESPACE,
                        "--wait",
                        "--timeout=180s"
                    ],
                )
            );
        }
        // Processes first, so nothing writes while the host goes away.
        if let Ok(mut forwards) = self.port_forwards.lock() {
            forwards.clear();
        }
        drop(self.clustertrees.take());
        drop(self.local_control_planes.take());
        drop(self.controller.take());
        drop(self.webhook.take());
        let problems = self.stop_real_node();
        if !problems.is_empty() {
            eprintln!(
                "[{}] the real node left something behind: {problems:#?}",
                self.scenario
            );
        }
        if let Some(simulation) = self.simulation.take() {
            simulation.stop();
        }
    }
}

/// Prints the wall time of a scenario when it ends, passing or failing.
#[derive(Debug)]
pub struct WallTime {
    scenario: String,
    started: Instant,
    skipped: bool,
}

impl WallTime {
    pub fn start(scenario: String) -> Self {
        WallTime {
            scenario,
            started: Instant::now(),
            skipped: false,
        }
    }

    /// The scenario did not run (it printed `skipped: ...`).
    pub fn skipped(&mut self) {
        self.skipped = true;
    }
}

impl Drop for WallTime {
    fn drop(&mut self) {
        let outcome = if std::thread::panicking() {
            "failed"
        } else if self.skipped {
            "skipped"
        } else {
            "done"
        };
        eprintln!(
            "e2e scenario {:?} {outcome}: wall time {:.1} s",
            self.scenario,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// The simulated host nodes: `node1..node6`, or `node3..node7` beside the real `node1`
/// and [`REAL_WORKER`].
fn simulated_nodes(options: &Options) -> Vec<NodeSpec> {
    if options.real_node && options.real_node_only {
        return Vec::new();
    }
    let (first, count) = if options.real_node {
        (3, SIMULATED_NODES - 1)
    } else {
        (1, SIMULATED_NODES)
    };
    (first..first + count)
        .map(|i| NodeSpec::new(&format!("node{i}")))
        .collect()
}

/// What tenants run on a real node: busybox (whose shell prints and sleeps) and the echo
/// server.
fn load_workload_images(node: &crate::node::RealNode, dir: &Path) -> anyhow::Result<()> {
    node.load_image(&image::ImageSpec::busybox(BUSYBOX_IMAGE, &["/bin/sh"]))
        .context("loading the busybox image")?;
    let echo = image::echo_image(dir).context("building the echo image")?;
    node.load_image(&echo).context("loading the echo image")
}

/// The assets of a real host, or why there is none: a skip, except in CI, where a
/// skipped real twin would pass while proving nothing.
fn real_host_assets(
    found: Option<PathBuf>,
    named: Option<std::ffi::OsString>,
    must_run: bool,
) -> Result<PathBuf, NotStarted> {
    if let Some(assets) = found {
        return Ok(assets);
    }
    let why = match named {
        None => "KUBEBUILDER_ASSETS is not set (needs kube-apiserver and etcd)".to_owned(),
        Some(dir) => format!(
            "KUBEBUILDER_ASSETS={} does not hold kube-apiserver and etcd",
            PathBuf::from(dir).display()
        ),
    };
    if must_run {
        Err(NotStarted::Failed(anyhow!(
            "{why}; CI is set, so the real twins must run: export KUBEBUILDER_ASSETS=$(../shared/k8s/install.sh ~/.cache/kosmos-vc/k8s-v1.36.2)"
        )))
    } else {
        Err(NotStarted::Skip(why))
    }
}

/// What the simulated kubelets and controllers do on the host and in each tenant.
fn simulator_options(kind: HostKind, options: &Options) -> SimulatorOptions {
    // The test API server takes any pod IP, and loopback ones reach nothing by accident. A
    // real kube-apiserver refuses loopback addresses in Endpoints and EndpointSlices, so
    // there pods get addresses of 198.18.0.0/15 (RFC 2544, benchmarking: routed nowhere):
    // only the Services' endpoints list them.
    let (host_pods, tenant_pods) = match kind {
        HostKind::RealApiServer => (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 19, 0, 1)),
        HostKind::TestApiServer | HostKind::External => (
            WorkloadOptions::default().pod_ip_start,
            Ipv4Addr::new(127, 201, 0, 1),
        ),
    };
    let host_workloads = WorkloadOptions {
        default_delay: options.workload_delay,
        pod_ip_start: host_pods,
        resync: Duration::from_millis(500),
        ..WorkloadOptions::default()
    };
    SimulatorOptions {
        tenant_workloads: WorkloadOptions {
            pod_ip_start: tenant_pods,
            ..host_workloads.clone()
        },
        host_workloads,
        services: ServiceOptions {
            resync: Duration::from_millis(500),
            ..ServiceOptions::default()
        },
    }
}

/// A VirtualCluster list as YAML without `spec.kubeconfig`: failure output ends up in CI
/// logs, and that field is the tenant's admin credential. Unparseable output is not shown.
fn without_kubeconfigs(list_json: &str) -> String {
    // kubectl's stderr (warnings) follows the JSON document in what kubectl_blocking gives.
    let first = serde_json::Deserializer::from_str(list_json)
        .into_iter::<Value>()
        .next();
    let Some(Ok(mut list)) = first else {
        // kubectl's own error line says why (no CRD, no server); anything else may be a
        // cut-off object.
        if let Some(error) = list_json.lines().next().filter(|l| l.starts_with("error:")) {
            return format!("{error}\n");
        }
        return format!(
            "(kubectl did not print a VirtualCluster list; {} bytes not shown)\n",
            list_json.len()
        );
    };
    for item in list["items"].as_array_mut().into_iter().flatten() {
        if let Some(spec) = item["spec"].as_object_mut()
            && spec.remove("kubeconfig").is_some()
        {
            spec.insert("kubeconfig".to_owned(), Value::from("(redacted)"));
        }
    }
    serde_yaml::to_string(&list["items"]).unwrap_or_default()
}

/// `v1 List` of objects, for one `kubectl apply`.
fn as_list(objects: &[&Value]) -> String {
    json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string()
}

/// The args of the single container of a rendered Deployment.
fn container_args(deployment: &Value) -> anyhow::Result<Vec<String>> {
    let args = deployment
        .pointer("/spec/template/spec/containers/0/args")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("the rendered Deployment has no container args"))?;
    Ok(args
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect())
}

/// Replaces `--flag=VALUE` (or `--flag VALUE`); fails when the rendered args lack it, so
/// a renamed flag in the chart cannot go unnoticed.
fn replace_flag(args: &mut Vec<String>, flag: &str, value: &str) -> anyhow::Result<()> {
    let prefix = format!("{flag}=");
    if let Some(arg) = args.iter_mut().find(|arg| arg.starts_with(&prefix)) {
        *arg = format!("{flag}={value}");
        return Ok(());
    }
    if let Some(index) = args.iter().position(|arg| arg == flag)
        && let Some(next) = args.get_mut(index + 1)
    {
        value.clone_into(next);
        return Ok(());
    }
    bail!("the rendered Deployment does not pass {flag} (args: {args:?})")
}

/// The EndpointSlice a Service controller would write for one ready webhook pod.
fn webhook_endpoint_slice(port: u16) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": WEBHOOK_SLICE, "namespace": RELEASE_NAMESPACE,
            "labels": {"kubernetes.io/service-name": WEBHOOK}
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]
    })
}

/// Replaces every webhook's `clientConfig.service` by a `url` on 127.0.0.1.
fn point_at_url(configuration: &mut Value, port: u16) {
    if let Some(webhooks) = configuration["webhooks"].as_array_mut() {
        for webhook in webhooks {
            let client = &mut webhook["clientConfig"];
            let path = client["service"]["path"].as_str().unwrap_or("/").to_owned();
            if let Some(map) = client.as_object_mut() {
                map.remove("service");
                map.insert(
                    "url".to_owned(),
                    json!(format!("https://127.0.0.1:{port}{path}")),
                );
            }
        }
    }
}

/// The status of an HTTPS GET trusting only `ca_pem`; `None` when nothing answers.
async fn https_status(addr: SocketAddr, ca_pem: &str, path: &str) -> Option<u16> {
    let (status, _) = crate::probe::https_get(addr, ca_pem, path).await?;
    Some(status)
}

/// The status of a plain HTTP GET; `None` when nothing answers.
async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let (status, _) = crate::probe::http_get(addr, path).await?;
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What kube-apiserver's `ValidateNonSpecialIP` refuses in Endpoints and EndpointSlices.
    fn special(ip: Ipv4Addr) -> bool {
        ip.is_unspecified() || ip.is_loopback() || ip.is_link_local() || ip.is_multicast()
    }

    #[test]
    fn failure_output_never_shows_a_tenant_kubeconfig() {
        let list = json!({"items": [
            {"metadata": {"name": "tenant1"}, "spec": {"kubeconfig": "YXBpVmVyc2lvbjogdjEK", "promoteResources": {"nodes": ["node1"]}}, "status": {"phase": "Completed"}},
            {"metadata": {"name": "tenant2"}, "spec": {}}
        ]});
        let shown = without_kubeconfigs(&format!("{list}\nWarning: a kubectl warning on stderr\n"));
        assert!(!shown.contains("YXBpVmVyc2lvbjogdjEK"), "{shown}");
        assert!(
            shown.contains("(redacted)") && shown.contains("node1") && shown.contains("Completed"),
            "{shown}"
        );
        let cut = without_kubeconfigs(r#"{"items": [{"spec": {"kubeconfig": "YXBp"#);
        assert!(cut.contains("not shown") && !cut.contains("YXBp"), "{cut}");
        let error = without_kubeconfigs(
            "error: the server doesn't have a resource type \"virtualclusters\"\n",
        );
        assert!(error.contains("doesn't have a resource type"), "{error}");
    }

    #[test]
    fn on_a_real_apiserver_pods_get_addresses_it_accepts_in_endpoints() {
        let options = simulator_options(HostKind::RealApiServer, &Options::new("unit"));
        let (host, tenant) = (
            options.host_workloads.pod_ip_start,
            options.tenant_workloads.pod_ip_start,
        );
        assert!(!special(host) && !special(tenant), "{host} {tenant}");
        assert!(
            !host.is_private() && !tenant.is_private(),
            "{host} {tenant}"
        );
        assert_ne!(host.octets()[..2], tenant.octets()[..2]);
    }

    #[test]
    fn on_the_test_api_server_pods_keep_loopback_addresses() {
        let options = simulator_options(HostKind::TestApiServer, &Options::new("unit"));
        assert!(options.host_workloads.pod_ip_start.is_loopback());
        assert!(options.tenant_workloads.pod_ip_start.is_loopback());
        assert_ne!(
            options.host_workloads.pod_ip_start.octets()[..2],
            options.tenant_workloads.pod_ip_start.octets()[..2]
        );
    }

    #[test]
    fn the_workload_delay_reaches_host_and_tenant_workloads() {
        let mut given = Options::new("unit");
        given.workload_delay = Duration::from_secs(3);
        let options = simulator_options(HostKind::RealApiServer, &given);
        assert_eq!(options.host_workloads.default_delay, Duration::from_secs(3));
        assert_eq!(
            options.tenant_workloads.default_delay,
            Duration::from_secs(3)
        );
    }

    #[test]
    fn a_real_host_without_assets_is_skipped_outside_ci_and_fails_in_ci() {
        match real_host_assets(None, None, false) {
            Err(NotStarted::Skip(why)) => {
                assert!(why.contains("KUBEBUILDER_ASSETS is not set"), "{why}");
            }
            other => panic!("expected a skip, got {other:?}"),
        }
        match real_host_assets(None, Some("/nowhere".into()), false) {
            Err(NotStarted::Skip(why)) => {
                assert!(why.contains("/nowhere does not hold"), "{why}");
            }
            other => panic!("expected a skip, got {other:?}"),
        }
        match real_host_assets(None, None, true) {
            Err(NotStarted::Failed(error)) => {
                let text = format!("{error:#}");
                assert!(
                    text.contains("CI is set") && text.contains("install.sh"),
                    "{text}"
                );
            }
            other => panic!("expected a failure in CI, got {other:?}"),
        }
        assert_eq!(
            real_host_assets(Some("/assets".into()), None, true).unwrap(),
            PathBuf::from("/assets")
        );
    }
}
