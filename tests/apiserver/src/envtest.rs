//! Runs the same tests against a real kube-apiserver + etcd, started the way
//! controller-runtime's envtest does, when `KUBEBUILDER_ASSETS` holds both binaries.
//! [`TestCluster`] hides which one a test talks to.
//!
//! The end-to-end harness also asks for a loopback Service range (so tenant apiservers can
//! be bound on their cluster IPs on this machine) and, when the assets hold it, a
//! kube-controller-manager running only the controllers a bare kube-apiserver lacks for
//! deletion to finish ([`CONTROLLER_MANAGER_CONTROLLERS`]).
//!
//! The argument lists are pure functions of [`EnvtestOptions`], [`EnvtestPaths`] and
//! [`EnvtestPorts`], so they are unit-tested here although no kube-apiserver binary exists
//! on the machines these tests usually run on.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::pki::{self, KubeconfigCredential, TestCa};
use super::{ServerError, StartError, TestApiServer, TestApiServerOptions, client_from_kubeconfig};

/// The message a real-apiserver variant prints when it cannot run.
pub const SKIP_MESSAGE: &str =
    "skipped: KUBEBUILDER_ASSETS not set (needs kube-apiserver and etcd)";

/// The Service range envtest has always used: fine when nothing needs to reach a Service.
pub const DEFAULT_SERVICE_CIDR: &str = "10.0.0.0/24";

/// The kube-controller-manager controllers started: what a kubeadm cluster runs, less
/// those that need a cloud, node CIDRs, CSR signing keys or aggregated metrics. Named one
/// by one (canonical names of v1.28+) rather than `*`, because `*` also starts this
/// build's OpenShift-only `service-ca-certificate-publisher-controller`.
///
/// Every workload, endpoint and volume controller the tenants' control planes rely on is
/// the real one: only the kubelets are simulated (see `vc_simulation::workloads`,
/// kubelet mode). `persistentvolume-binder-controller` with `--enable-hostpath-provisioner`
/// provisions the etcd StatefulSet's claims for StorageClass [`HOSTPATH_STORAGE_CLASS`].
pub const CONTROLLER_MANAGER_CONTROLLERS: [&str; 26] = [
    "clusterrole-aggregation-controller",
    "cronjob-controller",
    "daemonset-controller",
    "deployment-controller",
    "disruption-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "ephemeral-volume-controller",
    "garbage-collector-controller",
    "job-controller",
    "namespace-controller",
    "node-lifecycle-controller",
    "persistentvolume-binder-controller",
    "persistentvolume-expander-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
    "pod-garbage-collector-controller",
    "replicaset-controller",
    "replicationcontroller-controller",
    "resourcequota-controller",
    "root-ca-certificate-publisher-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "statefulset-controller",
    "taint-eviction-controller",
];

/// The default StorageClass of a real host, served by kube-controller-manager's hostpath
/// provisioner (volumes under `/tmp/hostpath_pv/`, deleted with their claim).
pub const HOSTPATH_STORAGE_CLASS: &str = "standard";

/// Identity of kube-scheduler: the bootstrap ClusterRoleBindings `system:kube-scheduler`
/// and `system:volume-scheduler` name this user, so it runs with what a kubeadm
/// scheduler holds.
const SCHEDULER_USER: &str = "system:kube-scheduler";

/// Identity of kube-controller-manager. `system:masters` because, with
/// `--use-service-account-credentials=false`, every controller uses this one identity,
/// and the bootstrap `system:kube-controller-manager` role only grants what the
/// per-controller ServiceAccount mode needs (list/watch everything, no deletes).
const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";
const CONTROLLER_MANAGER_GROUP: &str = "system:masters";

/// Bound of the readiness waits of kube-apiserver and kube-controller-manager.
const READY_WAIT: Duration = Duration::from_secs(60);

/// Why the real control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum EnvtestError {
    #[error(
        "CI is set, so the real twins must run, but KUBEBUILDER_ASSETS does not name a directory holding kube-apiserver and etcd; run `export KUBEBUILDER_ASSETS=$(../shared/k8s/install.sh ~/.cache/kosmos-vc/k8s-v1.36.2)`"
    )]
    AssetsMissing,
    #[error("creating certificates: {0}")]
    Pki(#[from] pki::PkiError),
    #[error("creating the work directory: {0}")]
    WorkDir(std::io::Error),
    #[error("finding a free port: {0}")]
    FreePort(std::io::Error),
    #[error("starting {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("kube-apiserver did not become ready within {0:?} (logs in {1})")]
    NotReady(Duration, String),
    #[error("{binary} did not answer 200 on /healthz within {limit:?} (log: {log})")]
    ComponentNotReady {
        binary: &'static str,
        limit: Duration,
        log: String,
    },
    #[error("creating the default StorageClass {HOSTPATH_STORAGE_CLASS}: {0}")]
    CreateStorageClass(#[source] kube::Error),
    #[error("{binary} exited with {status} while starting (log: {log}); it said last:\n{tail}")]
    Exited {
        binary: String,
        status: std::process::ExitStatus,
        log: String,
        /// The end of the log: the work directory goes with the failed start.
        tail: String,
    },
    #[error("writing {path}: {source}")]
    WriteFile {
        path: String,
        source: std::io::Error,
    },
}

impl EnvtestError {
    /// Whether a component exited because the address it was to listen on was in use.
    fn port_was_taken(&self) -> bool {
        matches!(self, EnvtestError::Exited { tail, .. } if tail.contains("address already in use"))
    }
}

/// Starts before a taken port fails the start.
const START_ATTEMPTS: u32 = 3;

/// How the real control plane is started. `Default` is what envtest always did: Service
/// range [`DEFAULT_SERVICE_CIDR`], no kube-controller-manager.
#[derive(Clone, Debug)]
pub struct EnvtestOptions {
    /// `--service-cluster-ip-range`. A loopback range (see [`private_service_cidr`]) makes
    /// every cluster IP a local address; kube-apiserver validates the range only as a CIDR
    /// whose IPv4 mask is at least /12.
    pub service_cidr: String,
    /// Also start kube-controller-manager with [`CONTROLLER_MANAGER_CONTROLLERS`] and the
    /// default StorageClass its hostpath provisioner serves, when the assets hold the
    /// binary (silently not started otherwise; see [`Envtest::has_controller_manager`]).
    pub controller_manager: bool,
    /// Also start kube-scheduler when the assets hold it (see [`Envtest::has_scheduler`]).
    pub scheduler: bool,
    /// Where kube-apiserver listens and what it advertises as the `kubernetes` Service's
    /// endpoint. 127.0.0.1 reaches it from this machine only; a real node's pods need an
    /// address of this machine outside loopback, which the caller adds to `lo` first.
    pub address: std::net::Ipv4Addr,
    /// Give kube-apiserver an admission configuration: the file name of the
    /// `--admission-control-config-file` among the files the renderer makes (as
    /// `vc_controller::resources::apiserver::admission_files` does for a tenant), written
    /// under the work directory.
    pub admission: Option<(&'static str, AdmissionRenderer)>,
    /// Users whose every request kube-apiserver writes to its audit log
    /// ([`Envtest::audit_log_path`], level Metadata, JSON lines): what a benchmark
    /// counts one client's requests by. None: no audit log.
    pub audit_users: Vec<String>,
    /// kube-controller-manager's and kube-scheduler's `--kube-api-qps` (burst twice it),
    /// as large hosts raise them; None keeps upstream's defaults (20 and 50).
    pub component_api_qps: Option<u32>,
}

/// Renders admission configuration files by name from (their directory, the kubelet
/// client certificate path, its key path).
pub type AdmissionRenderer = fn(&str, &str, &str) -> std::collections::BTreeMap<String, String>;

impl Default for EnvtestOptions {
    fn default() -> Self {
        EnvtestOptions {
            service_cidr: DEFAULT_SERVICE_CIDR.to_owned(),
            controller_manager: false,
            scheduler: false,
            address: std::net::Ipv4Addr::LOCALHOST,
            admission: None,
            audit_users: Vec::new(),
            component_api_qps: None,
        }
    }
}

/// Every file the control plane reads or writes, under one work directory.
#[derive(Clone, Debug)]
pub struct EnvtestPaths {
    pub dir: PathBuf,
    pub etcd_data: PathBuf,
    pub ca_cert: PathBuf,
    pub apiserver_cert: PathBuf,
    pub apiserver_key: PathBuf,
    /// Signs ServiceAccount tokens (`--service-account-signing-key-file`).
    pub service_account_key: PathBuf,
    /// Verifies them: kube-apiserver's `--service-account-key-file` refuses a private key
    /// alone, so this holds the certificate of [`Self::service_account_key`].
    pub service_account_certificate: PathBuf,
    pub admin_kubeconfig: PathBuf,
    pub controller_manager_kubeconfig: PathBuf,
    pub controller_manager_cert: PathBuf,
    pub controller_manager_key: PathBuf,
    /// kube-controller-manager's `--flex-volume-plugin-dir`, which it creates (under
    /// `/usr/libexec` by default).
    pub flex_volume_dir: PathBuf,
    pub scheduler_kubeconfig: PathBuf,
    pub scheduler_cert: PathBuf,
    pub scheduler_key: PathBuf,
    /// kube-apiserver's client certificate towards kubelets (logs, exec, port-forward).
    pub kubelet_client_cert: PathBuf,
    pub kubelet_client_key: PathBuf,
    /// kube-apiserver's `--audit-policy-file`, when [`EnvtestOptions::audit_users`] asks.
    pub audit_policy: PathBuf,
    /// kube-apiserver's `--audit-log-path`.
    pub audit_log: PathBuf,
}

impl EnvtestPaths {
    pub fn under(dir: &Path) -> Self {
        EnvtestPaths {
            dir: dir.to_owned(),
            etcd_data: dir.join("etcd"),
            ca_cert: dir.join("ca.crt"),
            apiserver_cert: dir.join("apiserver.crt"),
            apiserver_key: dir.join("apiserver.key"),
            service_account_key: dir.join("sa.key"),
            service_account_certificate: dir.join("sa.crt"),
            admin_kubeconfig: dir.join("admin.kubeconfig"),
            controller_manager_kubeconfig: dir.join("controller-manager.kubeconfig"),
            controller_manager_cert: dir.join("controller-manager.crt"),
            controller_manager_key: dir.join("controller-manager.key"),
            flex_volume_dir: dir.join("flexvolume"),
            scheduler_kubeconfig: dir.join("scheduler.kubeconfig"),
            scheduler_cert: dir.join("scheduler.crt"),
            scheduler_key: dir.join("scheduler.key"),
            kubelet_client_cert: dir.join("kubelet-client.crt"),
            kubelet_client_key: dir.join("kubelet-client.key"),
            audit_policy: dir.join("audit-policy.yaml"),
            audit_log: dir.join("audit.log"),
        }
    }

    /// The log file of `binary`'s stdout and stderr.
    pub fn log(&self, binary: &str) -> PathBuf {
        self.dir.join(format!("{binary}.log"))
    }
}

/// The ports of the control plane: kube-apiserver's on [`EnvtestOptions::address`],
/// the others on 127.0.0.1.
#[derive(Clone, Copy, Debug)]
pub struct EnvtestPorts {
    pub apiserver_address: std::net::Ipv4Addr,
    pub etcd_client: u16,
    pub etcd_peer: u16,
    pub apiserver: u16,
    pub controller_manager: u16,
    pub scheduler: u16,
}

impl EnvtestPorts {
    fn free(apiserver_address: std::net::Ipv4Addr) -> Result<Self, EnvtestError> {
        Ok(EnvtestPorts {
            apiserver_address,
            etcd_client: free_port()?,
            etcd_peer: free_port()?,
            apiserver: free_port()?,
            controller_manager: free_port()?,
            scheduler: free_port()?,
        })
    }

    pub fn apiserver_url(&self) -> String {
        format!("https://{}:{}", self.apiserver_address, self.apiserver)
    }

    fn controller_manager_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.controller_manager)
    }

    fn scheduler_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.scheduler)
    }
}

/// Whether a real twin must run rather than skip: in CI (`CI` set, as `.ci/run` is run),
/// a twin that skipped would count as passed while proving nothing.
pub fn must_run_real() -> bool {
    std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false")
}

/// The directory named by `KUBEBUILDER_ASSETS`, if it holds kube-apiserver and etcd.
pub fn assets() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("KUBEBUILDER_ASSETS")?);
    (dir.join("kube-apiserver").is_file() && dir.join("etcd").is_file()).then_some(dir)
}

/// `kube-controller-manager` in `assets`, when it is there.
pub fn controller_manager_binary(assets: &Path) -> Option<PathBuf> {
    Some(assets.join("kube-controller-manager")).filter(|path| path.is_file())
}

/// `kube-scheduler` in `assets`, when it is there.
pub fn scheduler_binary(assets: &Path) -> Option<PathBuf> {
    Some(assets.join("kube-scheduler")).filter(|path| path.is_file())
}

/// The second octets [`private_service_cidr`] picks from: clear of 127.0/16 (loopback in
/// daily use) and the simulators' ranges (test API server Services 127.100, tenant
/// Services 127.101, pod IPs 127.200 and 127.201).
const PRIVATE_SECOND_OCTETS: std::ops::RangeInclusive<u32> = 110..=199;

/// A loopback /24 for a host's Service cluster IPs. Harnesses running at the same time
/// (parallel tests, a sandbox) must not hand out the same IPs, since a tenant apiserver is
/// bound on `CLUSTER_IP:6443` of its Service: calls in one process walk the ranges from a
/// random start (no repeat before all 23,040 are used), and other processes start
/// elsewhere at random.
pub fn private_service_cidr() -> String {
    static START: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static TAKEN: AtomicU32 = AtomicU32::new(0);
    let count = (PRIVATE_SECOND_OCTETS.end() - PRIVATE_SECOND_OCTETS.start() + 1) * 256;
    let start = *START.get_or_init(|| rand::random_range(0..count));
    let index = (start + TAKEN.fetch_add(1, Ordering::Relaxed) % count) % count;
    let second = PRIVATE_SECOND_OCTETS.start() + index / 256;
    let third = index % 256;
    format!("127.{second}.{third}.0/24")
}

/// The first address of an IPv4 `A.B.C.D/N` range: kube-apiserver's `kubernetes`
/// Service.
fn first_service_ip(cidr: &str) -> Option<String> {
    let (network, _) = cidr.split_once('/')?;
    let network: std::net::Ipv4Addr = network.parse().ok()?;
    Some(std::net::Ipv4Addr::from(u32::from(network).checked_add(1)?).to_string())
}

fn free_port() -> Result<u16, EnvtestError> {
    crate::ports::free_port().map_err(EnvtestError::FreePort)
}

fn write(path: &Path, text: &str) -> Result<(), EnvtestError> {
    std::fs::write(path, text).map_err(|source| EnvtestError::WriteFile {
        path: path.display().to_string(),
        source,
    })
}

fn flag(name: &str, value: impl std::fmt::Display) -> String {
    format!("--{name}={value}")
}

/// etcd on 127.0.0.1, plain HTTP (only kube-apiserver talks to it).
pub fn etcd_args(paths: &EnvtestPaths, ports: &EnvtestPorts) -> Vec<String> {
    let client = format!("http://127.0.0.1:{}", ports.etcd_client);
    let peer = format!("http://127.0.0.1:{}", ports.etcd_peer);
    vec![
        flag("data-dir", paths.etcd_data.display()),
        flag("listen-client-urls", &client),
        flag("advertise-client-urls", &client),
        flag("listen-peer-urls", &peer),
        flag("initial-advertise-peer-urls", &peer),
        flag("initial-cluster", format!("default={peer}")),
    ]
}

/// kube-apiserver as envtest starts it: own CA for serving and client certificates,
/// RBAC, the default admission plugins (ServiceAccount among them, so pods get their
/// tokens as on any cluster), and the Service range of `options`.
pub fn apiserver_args(
    options: &EnvtestOptions,
    paths: &EnvtestPaths,
    ports: &EnvtestPorts,
) -> Vec<String> {
    vec![
        flag("bind-address", ports.apiserver_address),
        flag("advertise-address", ports.apiserver_address),
        flag("secure-port", ports.apiserver),
        flag(
            "etcd-servers",
            format!("http://127.0.0.1:{}", ports.etcd_client),
        ),
        flag("cert-dir", paths.dir.display()),
        flag("tls-cert-file", paths.apiserver_cert.display()),
        flag("tls-private-key-file", paths.apiserver_key.display()),
        flag("client-ca-file", paths.ca_cert.display()),
        flag(
            "service-account-issuer",
            "https://kubernetes.default.svc.cluster.local",
        ),
        flag(
            "service-account-key-file",
            paths.service_account_certificate.display(),
        ),
        flag(
            "service-account-signing-key-file",
            paths.service_account_key.display(),
        ),
        flag("service-cluster-ip-range", &options.service_cidr),
        flag("authorization-mode", "Node,RBAC"),
        flag("enable-admission-plugins", "NodeRestriction"),
        flag("allow-privileged", "true"),
        flag(
            "kubelet-client-certificate",
            paths.kubelet_client_cert.display(),
        ),
        flag("kubelet-client-key", paths.kubelet_client_key.display()),
        flag("kubelet-certificate-authority", paths.ca_cert.display()),
        flag("kubelet-preferred-address-types", "InternalIP,Hostname"),
    ]
    .into_iter()
    .chain(options.admission.map(|(config, _)| {
        flag(
            "admission-control-config-file",
            paths.dir.join("admission").join(config).display(),
        )
    }))
    .chain(
        (!options.audit_users.is_empty())
            .then(|| {
                [
                    flag("audit-policy-file", paths.audit_policy.display()),
                    flag("audit-log-path", paths.audit_log.display()),
                    flag("audit-log-format", "json"),
                    flag("audit-log-maxbackup", 0),
                ]
            })
            .into_iter()
            .flatten(),
    )
    .collect()
}

/// The audit policy of [`EnvtestOptions::audit_users`]: their requests at level Metadata,
/// each logged when received and when answered (long-running watches are counted at
/// their start), nobody else's.
pub fn audit_policy(users: &[String]) -> String {
    serde_json::json!({
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["ResponseStarted"],
        "rules": [
            {"level": "Metadata", "users": users},
            {"level": "None"},
        ],
    })
    .to_string()
}

/// kube-controller-manager against the envtest apiserver, serving its `/healthz` on
/// 127.0.0.1 with a certificate of the envtest CA, without leader election (one
/// instance), every controller under its own client-certificate identity
/// (`--use-service-account-credentials=false`), and [`CONTROLLER_MANAGER_CONTROLLERS`]:
/// ServiceAccount tokens signed with the apiserver's key, `kube-root-ca.crt` from the
/// envtest CA, claims provisioned by the hostpath provisioner.
/// `--authentication-skip-lookup` keeps it from reading the client CA from
/// `kube-system/extension-apiserver-authentication`: it is given as a file.
pub fn controller_manager_args(paths: &EnvtestPaths, ports: &EnvtestPorts) -> Vec<String> {
    let mut args = component_args(
        paths,
        &paths.controller_manager_kubeconfig,
        ports.controller_manager,
        (
            &paths.controller_manager_cert,
            &paths.controller_manager_key,
        ),
    );
    args.extend([
        flag("controllers", CONTROLLER_MANAGER_CONTROLLERS.join(",")),
        flag("use-service-account-credentials", "false"),
        flag(
            "service-account-private-key-file",
            paths.service_account_key.display(),
        ),
        flag("root-ca-file", paths.ca_cert.display()),
        flag("enable-hostpath-provisioner", "true"),
        flag("flex-volume-plugin-dir", paths.flex_volume_dir.display()),
    ]);
    args
}

impl EnvtestOptions {
    /// kube-controller-manager's and kube-scheduler's client rate limit flags:
    /// [`EnvtestOptions::component_api_qps`] requests a second, bursts of twice that.
    fn client_rate_args(&self) -> Vec<String> {
        self.component_api_qps
            .map(|qps| {
                vec![
                    flag("kube-api-qps", qps),
                    flag("kube-api-burst", qps.saturating_mul(2)),
                ]
            })
            .unwrap_or_default()
    }
}

/// kube-scheduler against the envtest apiserver with the default profile, as
/// `system:kube-scheduler`, serving `/healthz` on 127.0.0.1, without leader election.
pub fn scheduler_args(paths: &EnvtestPaths, ports: &EnvtestPorts) -> Vec<String> {
    component_args(
        paths,
        &paths.scheduler_kubeconfig,
        ports.scheduler,
        (&paths.scheduler_cert, &paths.scheduler_key),
    )
}

/// What kube-controller-manager and kube-scheduler share: one client-certificate
/// kubeconfig for the apiserver and for delegated authentication and authorization,
/// `/healthz` on 127.0.0.1 with a certificate of the envtest CA, no leader election (one
/// instance).
fn component_args(
    paths: &EnvtestPaths,
    kubeconfig: &Path,
    port: u16,
    (cert, key): (&Path, &Path),
) -> Vec<String> {
    let kubeconfig = kubeconfig.display();
    vec![
        flag("kubeconfig", &kubeconfig),
        flag("authentication-kubeconfig", &kubeconfig),
        flag("authorization-kubeconfig", &kubeconfig),
        flag("authentication-skip-lookup", "true"),
        flag("client-ca-file", paths.ca_cert.display()),
        flag("bind-address", "127.0.0.1"),
        flag("secure-port", port),
        flag("tls-cert-file", cert.display()),
        flag("tls-private-key-file", key.display()),
        flag("leader-elect", "false"),
    ]
}

/// The certificates and kubeconfigs of the control plane.
struct EnvtestFiles {
    ca: TestCa,
}

/// Writes every file the arguments name (the etcd data directory is etcd's own): the
/// CA, the apiserver's serving certificate and ServiceAccount key, the admin kubeconfig,
/// and kube-controller-manager's kubeconfig and serving certificate.
fn write_files(
    paths: &EnvtestPaths,
    ports: &EnvtestPorts,
    service_cidr: &str,
) -> Result<EnvtestFiles, EnvtestError> {
    let ca = TestCa::generate("envtest-ca")?;
    // What in-cluster clients of a real node's pods dial: the `kubernetes` Service's
    // cluster IP (the range's first address) and its names, besides the address itself.
    let mut names = vec![
        ports.apiserver_address.to_string(),
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
        "kubernetes.default.svc.cluster.local".to_owned(),
    ];
    names.extend(first_service_ip(service_cidr));
    let serving = ca.issue_server(&names)?;
    let service_accounts = ca.issue_client("service-accounts", &[])?;
    write(&paths.ca_cert, ca.cert_pem())?;
    write(&paths.apiserver_cert, &serving.cert_pem)?;
    pki::write_private_file(&paths.apiserver_key, &serving.key_pem)?;
    pki::write_private_file(&paths.service_account_key, &service_accounts.key_pem)?;
    write(
        &paths.service_account_certificate,
        &service_accounts.cert_pem,
    )?;
    let url = ports.apiserver_url();
    let admin = ca.issue_client("admin", &["system:masters".to_owned()])?;
    pki::write_private_file(
        &paths.admin_kubeconfig,
        &pki::render_kubeconfig(
            &url,
            ca.cert_pem(),
            "envtest",
            &KubeconfigCredential::ClientCert(admin),
        )?,
    )?;
    let controller_manager = ca.issue_client(
        CONTROLLER_MANAGER_USER,
        &[CONTROLLER_MANAGER_GROUP.to_owned()],
    )?;
    pki::write_private_file(
        &paths.controller_manager_kubeconfig,
        &pki::render_kubeconfig(
            &url,
            ca.cert_pem(),
            "envtest",
            &KubeconfigCredential::ClientCert(controller_manager),
        )?,
    )?;
    let controller_manager_serving = ca.issue_server(&[])?;
    write(
        &paths.controller_manager_cert,
        &controller_manager_serving.cert_pem,
    )?;
    pki::write_private_file(
        &paths.controller_manager_key,
        &controller_manager_serving.key_pem,
    )?;
    // kube-apiserver's identity towards kubelets, which authorise it through a
    // SubjectAccessReview.
    let kubelet_client = ca.issue_client(
        "kube-apiserver-kubelet-client",
        &["system:masters".to_owned()],
    )?;
    write(&paths.kubelet_client_cert, &kubelet_client.cert_pem)?;
    pki::write_private_file(&paths.kubelet_client_key, &kubelet_client.key_pem)?;
    let scheduler = ca.issue_client(SCHEDULER_USER, &[])?;
    pki::write_private_file(
        &paths.scheduler_kubeconfig,
        &pki::render_kubeconfig(
            &url,
            ca.cert_pem(),
            "envtest",
            &KubeconfigCredential::ClientCert(scheduler),
        )?,
    )?;
    let scheduler_serving = ca.issue_server(&[])?;
    write(&paths.scheduler_cert, &scheduler_serving.cert_pem)?;
    pki::write_private_file(&paths.scheduler_key, &scheduler_serving.key_pem)?;
    Ok(EnvtestFiles { ca })
}

/// Starts `binary` with stdout and stderr in `log`.
fn spawn(binary: &Path, args: &[String], log: &Path) -> Result<Child, EnvtestError> {
    crate::work_dir::spawn_logged(binary, args, log).map_err(|source| EnvtestError::Spawn {
        binary: binary.file_name().map_or_else(
            || binary.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        source,
    })
}

/// A real etcd + kube-apiserver pair (and optionally kube-controller-manager and
/// kube-scheduler); all are killed on drop.
#[derive(Debug)]
pub struct Envtest {
    dir: tempfile::TempDir,
    paths: EnvtestPaths,
    etcd: Child,
    apiserver: Child,
    controller_manager: Option<Child>,
    scheduler: Option<Child>,
    kubeconfig: PathBuf,
    ca: TestCa,
    url: String,
    options: EnvtestOptions,
}

impl Envtest {
    /// Starts etcd and kube-apiserver from `assets` with the default options and waits
    /// until the apiserver is ready.
    pub async fn start(assets: &Path) -> Result<Self, EnvtestError> {
        Self::start_with(assets, EnvtestOptions::default()).await
    }

    /// Starts etcd, kube-apiserver and (when `options` ask and `assets` hold them)
    /// kube-controller-manager and kube-scheduler, and waits until each is ready.
    ///
    /// A component that exits because its port was taken after it was chosen (by a
    /// process that does not reserve its ports) is started again on fresh ports.
    pub async fn start_with(assets: &Path, options: EnvtestOptions) -> Result<Self, EnvtestError> {
        let mut attempt = 1;
        loop {
            match Self::start_once(assets, options.clone()).await {
                Err(error) if error.port_was_taken() && attempt < START_ATTEMPTS => {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(assets: &Path, options: EnvtestOptions) -> Result<Self, EnvtestError> {
        let dir = tempfile::Builder::new()
            .prefix("vc-envtest")
            .tempdir()
            .map_err(EnvtestError::WorkDir)?;
        let paths = EnvtestPaths::under(dir.path());
        let ports = EnvtestPorts::free(options.address)?;
        let files = write_files(&paths, &ports, &options.service_cidr)?;
        if !options.audit_users.is_empty() {
            write(&paths.audit_policy, &audit_policy(&options.audit_users))?;
        }
        if let Some((_, render)) = options.admission {
            let dir = paths.dir.join("admission");
            std::fs::create_dir_all(&dir).map_err(|source| EnvtestError::WriteFile {
                path: dir.display().to_string(),
                source,
            })?;
            let rendered = render(
                &dir.display().to_string(),
                &paths.kubelet_client_cert.display().to_string(),
                &paths.kubelet_client_key.display().to_string(),
            );
            for (name, contents) in rendered {
                write(&dir.join(name), &contents)?;
            }
        }
        let etcd = spawn(
            &assets.join("etcd"),
            &etcd_args(&paths, &ports),
            &paths.log("etcd"),
        )?;
        let apiserver = match spawn(
            &assets.join("kube-apiserver"),
            &apiserver_args(&options, &paths, &ports),
            &paths.log("kube-apiserver"),
        ) {
            Ok(child) => child,
            Err(error) => {
                kill(etcd);
                return Err(error);
            }
        };
        let mut env = Self {
            kubeconfig: paths.admin_kubeconfig.clone(),
            paths,
            dir,
            etcd,
            apiserver,
            controller_manager: None,
            scheduler: None,
            ca: files.ca,
            url: ports.apiserver_url(),
            options,
        };
        env.wait_ready(READY_WAIT).await?;
        if env.options.controller_manager
            && let Some(binary) = controller_manager_binary(assets)
        {
            env.create_default_storage_class().await?;
            let mut args = controller_manager_args(&env.paths, &ports);
            args.extend(env.options.client_rate_args());
            let child = spawn(&binary, &args, &env.paths.log("kube-controller-manager"))?;
            env.controller_manager = Some(child);
            env.wait_healthy(
                "kube-controller-manager",
                &ports.controller_manager_url(),
                READY_WAIT,
            )
            .await?;
        }
        if env.options.scheduler
            && let Some(binary) = scheduler_binary(assets)
        {
            let mut args = scheduler_args(&env.paths, &ports);
            args.extend(env.options.client_rate_args());
            let child = spawn(&binary, &args, &env.paths.log("kube-scheduler"))?;
            env.scheduler = Some(child);
            env.wait_healthy("kube-scheduler", &ports.scheduler_url(), READY_WAIT)
                .await?;
        }
        Ok(env)
    }

    /// The default StorageClass a provisioned claim needs; the etcd StatefulSet's claims
    /// name no class.
    async fn create_default_storage_class(&self) -> Result<(), EnvtestError> {
        let client = client_from_kubeconfig(&self.kubeconfig)
            .await
            .map_err(|error| EnvtestError::NotReady(READY_WAIT, error.to_string()))?;
        let class: k8s_openapi::api::storage::v1::StorageClass =
            serde_json::from_value(serde_json::json!({
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": HOSTPATH_STORAGE_CLASS,
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                "provisioner": "kubernetes.io/host-path",
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
            }))
            .map_err(|error| EnvtestError::CreateStorageClass(kube::Error::SerdeError(error)))?;
        kube::Api::<k8s_openapi::api::storage::v1::StorageClass>::all(client)
            .create(&kube::api::PostParams::default(), &class)
            .await
            .map_err(EnvtestError::CreateStorageClass)?;
        Ok(())
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), EnvtestError> {
        let start = Instant::now();
        while start.elapsed() < limit {
            exited("kube-apiserver", &mut self.apiserver, &self.paths)?;
            exited("etcd", &mut self.etcd, &self.paths)?;
            if let Ok(client) = client_from_kubeconfig(&self.kubeconfig).await {
                let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
                if ns.get("default").await.is_ok() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(EnvtestError::NotReady(
            limit,
            self.dir.path().display().to_string(),
        ))
    }

    /// Polls `/healthz` of `binary` (always allowed) over TLS trusting the envtest CA,
    /// failing early when the process exits.
    async fn wait_healthy(
        &mut self,
        binary: &'static str,
        url: &str,
        limit: Duration,
    ) -> Result<(), EnvtestError> {
        // The certificate only spares an anonymous request.
        let prober = self.ca.issue_client("envtest-probe", &[])?;
        let probe = pki::render_kubeconfig(
            url,
            self.ca.cert_pem(),
            binary,
            &KubeconfigCredential::ClientCert(prober),
        )?;
        let start = Instant::now();
        while start.elapsed() < limit {
            let child = match binary {
                "kube-scheduler" => self.scheduler.as_mut(),
                _ => self.controller_manager.as_mut(),
            };
            if let Some(child) = child {
                exited(binary, child, &self.paths)?;
            }
            if healthz(&probe).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(EnvtestError::ComponentNotReady {
            binary,
            limit,
            log: self.paths.log(binary).display().to_string(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA every certificate of this control plane chains to: a real node's kubelet
    /// and kube-proxy get their identities from it.
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The audit log, written when [`EnvtestOptions::audit_users`] named someone.
    pub fn audit_log_path(&self) -> &Path {
        &self.paths.audit_log
    }

    /// The `--service-cluster-ip-range` kube-apiserver runs with.
    pub fn service_cidr(&self) -> &str {
        &self.options.service_cidr
    }

    /// Whether kube-controller-manager runs: only then do owned objects get garbage
    /// collected and deleted namespaces disappear.
    pub fn has_controller_manager(&self) -> bool {
        self.controller_manager.is_some()
    }

    /// Whether kube-scheduler runs: only then are pods bound to nodes.
    pub fn has_scheduler(&self) -> bool {
        self.scheduler.is_some()
    }

    /// The log file of each process started, for diagnostics.
    pub fn logs(&self) -> Vec<(&'static str, PathBuf)> {
        let mut logs = vec![
            ("etcd", self.paths.log("etcd")),
            ("kube-apiserver", self.paths.log("kube-apiserver")),
        ];
        if self.controller_manager.is_some() {
            logs.push((
                "kube-controller-manager",
                self.paths.log("kube-controller-manager"),
            ));
        }
        if self.scheduler.is_some() {
            logs.push(("kube-scheduler", self.paths.log("kube-scheduler")));
        }
        logs
    }

    /// A kubeconfig for `user` in `groups` (client certificate from the envtest CA).
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> Result<PathBuf, ServerError> {
        let groups: Vec<String> = groups.iter().map(|g| (*g).to_string()).collect();
        let cert = self.ca.issue_client(user, &groups)?;
        let text = pki::render_kubeconfig(
            &self.url,
            self.ca.cert_pem(),
            "envtest",
            &KubeconfigCredential::ClientCert(cert),
        )?;
        let path = self
            .dir
            .path()
            .join(format!("{}.kubeconfig", user.replace(':', "_")));
        pki::write_private_file(&path, &text)?;
        Ok(path)
    }
}

/// Fails when `child` has already exited, naming its log.
fn exited(binary: &str, child: &mut Child, paths: &EnvtestPaths) -> Result<(), EnvtestError> {
    match child.try_wait() {
        Ok(Some(status)) => {
            let log = paths.log(binary);
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            Err(EnvtestError::Exited {
                binary: binary.to_owned(),
                status,
                log: log.display().to_string(),
                tail,
            })
        }
        _ => Ok(()),
    }
}

/// Whether GET /healthz through `kubeconfig` answers `ok`.
async fn healthz(kubeconfig: &str) -> bool {
    let Ok(parsed) = kube::config::Kubeconfig::from_yaml(kubeconfig) else {
        return false;
    };
    let Ok(config) =
        kube::Config::from_custom_kubeconfig(parsed, &kube::config::KubeConfigOptions::default())
            .await
    else {
        return false;
    };
    let Ok(client) = kube::Client::try_from(config) else {
        return false;
    };
    let Ok(request) = http::Request::get("/healthz").body(Vec::new()) else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), client.request_text(request)).await,
        Ok(Ok(body)) if body.trim() == "ok"
    )
}

fn kill(mut child: Child) {
    let _killed = child.kill();
    let _reaped = child.wait();
}

impl Drop for Envtest {
    fn drop(&mut self) {
        // The hostpath provisioner's volumes live outside the work directory and outlive
        // the control plane that would have deleted them: read their paths while the
        // apiserver still answers, remove them once everything is stopped.
        let volumes = if self.controller_manager.is_some() {
            provisioned_volumes(&self.kubeconfig)
        } else {
            Vec::new()
        };
        // The controller manager first: it would log every refused request otherwise.
        let children = self
            .controller_manager
            .iter_mut()
            .chain(self.scheduler.iter_mut())
            .chain([&mut self.apiserver, &mut self.etcd]);
        for child in children {
            let _killed = child.kill();
            let _reaped = child.wait();
        }
        for volume in volumes {
            let _removed = std::fs::remove_dir_all(volume);
        }
    }
}

/// Where kube-controller-manager's hostpath provisioner keeps its volumes.
const HOSTPATH_VOLUME_ROOT: &str = "/tmp/hostpath_pv/";

/// The hostPath directories of this cluster's PersistentVolumes that the hostpath
/// provisioner made (under [`HOSTPATH_VOLUME_ROOT`], nothing else), read with kubectl
/// within 5 s; none when kubectl is missing or the apiserver does not answer.
fn provisioned_volumes(kubeconfig: &Path) -> Vec<PathBuf> {
    let Ok(output) = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "get",
            "persistentvolumes",
            "--request-timeout=5s",
            "-o",
            "jsonpath={range .items[*]}{.spec.hostPath.path}{\"\\n\"}{end}",
        ])
        .output()
    else {
        return Vec::new();
    };
    hostpath_volumes(&String::from_utf8_lossy(&output.stdout))
}

/// The paths of `listing` (one a line) that are provisioner volumes, never the root
/// itself nor anything outside it.
fn hostpath_volumes(listing: &str) -> Vec<PathBuf> {
    listing
        .lines()
        .map(str::trim)
        .filter(|path| {
            path.strip_prefix(HOSTPATH_VOLUME_ROOT)
                .is_some_and(|rest| !rest.is_empty() && !rest.contains(".."))
        })
        .map(PathBuf::from)
        .collect()
}

/// Either the in-process test API server or a real envtest control plane.
#[derive(Debug)]
pub enum TestCluster {
    InProcess(Box<TestApiServer>),
    Real(Box<Envtest>),
}

impl TestCluster {
    /// A fresh in-process server with default options.
    pub fn in_process() -> Result<Self, StartError> {
        Ok(Self::InProcess(Box::new(TestApiServer::start(
            TestApiServerOptions::default(),
        )?)))
    }

    /// A real control plane, or None (after printing [`SKIP_MESSAGE`]) without assets.
    pub async fn real_or_skip() -> Result<Option<Self>, EnvtestError> {
        Self::real_or_skip_with(EnvtestOptions::default()).await
    }

    /// [`Self::real_or_skip`] with `options`. In CI a missing asset is an error, not a skip
    /// ([`must_run_real`]).
    pub async fn real_or_skip_with(options: EnvtestOptions) -> Result<Option<Self>, EnvtestError> {
        let Some(assets) = assets() else {
            if must_run_real() {
                return Err(EnvtestError::AssetsMissing);
            }
            eprintln!("{SKIP_MESSAGE}");
            return Ok(None);
        };
        Ok(Some(Self::Real(Box::new(
            Envtest::start_with(&assets, options).await?,
        ))))
    }

    pub fn kubeconfig_path(&self) -> &Path {
        match self {
            Self::InProcess(s) => s.kubeconfig_path(),
            Self::Real(e) => e.kubeconfig_path(),
        }
    }

    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> Result<PathBuf, ServerError> {
        match self {
            Self::InProcess(s) => s.kubeconfig_for(user, groups),
            Self::Real(e) => e.kubeconfig_for(user, groups),
        }
    }

    /// An admin client.
    pub async fn client(&self) -> Result<kube::Client, ServerError> {
        client_from_kubeconfig(self.kubeconfig_path()).await
    }

    /// True for a real kube-apiserver (garbage collection there needs
    /// kube-controller-manager, which this variant does not start).
    pub fn is_real(&self) -> bool {
        matches!(self, Self::Real(_))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn only_a_component_that_lost_its_port_is_started_again() {
        let exited = |tail: &str| EnvtestError::Exited {
            binary: "etcd".to_owned(),
            status: std::os::unix::process::ExitStatusExt::from_raw(256),
            log: "etcd.log".to_owned(),
            tail: tail.to_owned(),
        };
        assert!(
            exited("listen tcp 127.0.0.1:21325: bind: address already in use").port_was_taken()
        );
        assert!(!exited("open /var/lib/etcd: permission denied").port_was_taken());
        assert!(!EnvtestError::NotReady(READY_WAIT, "dir".to_owned()).port_was_taken());
    }

    fn ports() -> EnvtestPorts {
        EnvtestPorts {
            apiserver_address: std::net::Ipv4Addr::LOCALHOST,
            etcd_client: 2379,
            etcd_peer: 2380,
            apiserver: 6443,
            controller_manager: 10257,
            scheduler: 10259,
        }
    }

    fn value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
        let prefix = format!("--{name}=");
        args.iter().find_map(|arg| arg.strip_prefix(&prefix))
    }

    /// (network, prefix length) of an IPv4 CIDR.
    fn parse_cidr(cidr: &str) -> (Ipv4Addr, u8) {
        let (ip, bits) = cidr.split_once('/').unwrap();
        (ip.parse().unwrap(), bits.parse().unwrap())
    }

    #[test]
    fn the_default_options_keep_what_envtest_always_ran() {
        let paths = EnvtestPaths::under(Path::new("/work"));
        let args = apiserver_args(&EnvtestOptions::default(), &paths, &ports());
        assert_eq!(
            value(&args, "service-cluster-ip-range"),
            Some("10.0.0.0/24")
        );
        assert!(!EnvtestOptions::default().controller_manager);
        assert_eq!(value(&args, "secure-port"), Some("6443"));
        assert_eq!(value(&args, "bind-address"), Some("127.0.0.1"));
        assert_eq!(value(&args, "etcd-servers"), Some("http://127.0.0.1:2379"));
    }

    #[test]
    fn audited_users_get_an_audit_log_of_their_requests_only() {
        let paths = EnvtestPaths::under(Path::new("/work"));
        let quiet = apiserver_args(&EnvtestOptions::default(), &paths, &ports());
        assert!(
            !quiet.iter().any(|arg| arg.starts_with("--audit-")),
            "{quiet:?}"
        );
        let options = EnvtestOptions {
            audit_users: vec!["system:serviceaccount:kosmos-system:kosmos-vc-controller".into()],
            ..EnvtestOptions::default()
        };
        let args = apiserver_args(&options, &paths, &ports());
        assert_eq!(value(&args, "audit-log-path"), Some("/work/audit.log"));
        assert_eq!(
            value(&args, "audit-policy-file"),
            Some("/work/audit-policy.yaml")
        );
        assert_eq!(value(&args, "audit-log-format"), Some("json"));
        let policy: serde_json::Value =
            serde_json::from_str(&audit_policy(&options.audit_users)).unwrap();
        assert_eq!(
            policy["rules"],
            serde_json::json!([
                {"level": "Metadata", "users": options.audit_users},
                {"level": "None"}
            ])
        );
        assert_eq!(policy["omitStages"], serde_json::json!(["ResponseStarted"]));
    }

    #[test]
    fn the_private_service_cidr_is_a_loopback_slash_24_clear_of_the_simulators() {
        for _ in 0..2000 {
            let cidr = private_service_cidr();
            let (network, bits) = parse_cidr(&cidr);
            assert_eq!(bits, 24, "{cidr}");
            // kube-apiserver: an IPv4 Service range must be no wider than /12.
            assert!(bits >= 12, "{cidr}");
            assert!(network.is_loopback(), "{cidr}");
            assert_eq!(network.octets()[3], 0, "{cidr}");
            let second = network.octets()[1];
            assert!(
                ![0, 100, 101, 200, 201].contains(&second),
                "{cidr} overlaps loopback in use or a simulator range"
            );
        }
    }

    #[test]
    fn two_harnesses_pick_different_service_cidrs() {
        let picked: BTreeSet<String> = (0..500).map(|_| private_service_cidr()).collect();
        assert_eq!(picked.len(), 500, "a range was handed out twice");
    }

    #[test]
    fn the_apiserver_gets_the_loopback_service_cidr_asked_for() {
        let options = EnvtestOptions {
            service_cidr: private_service_cidr(),
            controller_manager: true,
            scheduler: true,
            ..EnvtestOptions::default()
        };
        let paths = EnvtestPaths::under(Path::new("/work"));
        let args = apiserver_args(&options, &paths, &ports());
        let range = value(&args, "service-cluster-ip-range").unwrap();
        assert_eq!(range, options.service_cidr);
        assert!(parse_cidr(range).0.is_loopback(), "{range}");
        assert_eq!(
            args.iter()
                .filter(|arg| arg.starts_with("--service-cluster-ip-range="))
                .count(),
            1
        );
    }

    #[test]
    fn the_controller_manager_runs_the_workload_endpoint_and_volume_controllers() {
        let paths = EnvtestPaths::under(Path::new("/work"));
        let args = controller_manager_args(&paths, &ports());
        let controllers: BTreeSet<&str> = value(&args, "controllers").unwrap().split(',').collect();
        for wanted in [
            "deployment-controller",
            "replicaset-controller",
            "statefulset-controller",
            "endpoints-controller",
            "endpointslice-controller",
            "serviceaccount-controller",
            "serviceaccount-token-controller",
            "garbage-collector-controller",
            "namespace-controller",
            "resourcequota-controller",
            "persistentvolume-binder-controller",
        ] {
            assert!(
                controllers.contains(wanted),
                "{wanted} missing: {controllers:?}"
            );
        }
        // `*` would also start the OpenShift-only service CA publisher of this build.
        assert!(!controllers.contains("*"));
        assert!(
            !controllers
                .iter()
                .any(|c| c.starts_with("service-ca-certificate-publisher"))
        );
        assert_eq!(value(&args, "enable-hostpath-provisioner"), Some("true"));
        assert_eq!(
            value(&args, "service-account-private-key-file"),
            Some("/work/sa.key")
        );
        assert_eq!(
            value(&args, "flex-volume-plugin-dir"),
            Some("/work/flexvolume")
        );
        assert_eq!(
            value(&args, "use-service-account-credentials"),
            Some("false")
        );
        assert_eq!(value(&args, "leader-elect"), Some("false"));
        assert_eq!(value(&args, "bind-address"), Some("127.0.0.1"));
        assert_eq!(value(&args, "secure-port"), Some("10257"));
        assert_eq!(value(&args, "authentication-skip-lookup"), Some("true"));
        assert_eq!(
            value(&args, "kubeconfig"),
            Some("/work/controller-manager.kubeconfig")
        );
    }

    #[test]
    fn the_scheduler_runs_as_the_bootstrap_scheduler_identity() {
        let paths = EnvtestPaths::under(Path::new("/work"));
        let args = scheduler_args(&paths, &ports());
        assert_eq!(
            value(&args, "kubeconfig"),
            Some("/work/scheduler.kubeconfig")
        );
        assert_eq!(value(&args, "secure-port"), Some("10259"));
        assert_eq!(value(&args, "leader-elect"), Some("false"));
        let dir = tempfile::tempdir().unwrap();
        let paths = EnvtestPaths::under(dir.path());
        write_files(&paths, &ports(), DEFAULT_SERVICE_CIDR).unwrap();
        let kubeconfig: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&paths.scheduler_kubeconfig).unwrap())
                .unwrap();
        let der = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            kubeconfig["users"][0]["user"]["client-certificate-data"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        let (_, parsed) = x509_parser::pem::parse_x509_pem(&der).unwrap();
        let certificate = parsed.parse_x509().unwrap();
        assert_eq!(
            certificate.subject().to_string(),
            "CN=system:kube-scheduler"
        );
    }

    #[test]
    fn the_apiserver_verifies_service_account_tokens_with_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let paths = EnvtestPaths::under(dir.path());
        write_files(&paths, &ports(), DEFAULT_SERVICE_CIDR).unwrap();
        let args = apiserver_args(&EnvtestOptions::default(), &paths, &ports());
        let verifying = value(&args, "service-account-key-file").unwrap();
        // kube-apiserver refuses a private key alone here ("data does not contain any
        // valid RSA or ECDSA public keys").
        let text = std::fs::read_to_string(verifying).unwrap();
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
        assert!(
            !args
                .iter()
                .any(|a| a.starts_with("--disable-admission-plugins="))
        );
    }

    #[test]
    fn only_provisioner_volumes_are_removed() {
        let listing =
            "/tmp/hostpath_pv/4f1c\n\n/var/lib/data\n/tmp/hostpath_pv/\n/tmp/hostpath_pv/../etc\n";
        assert_eq!(
            hostpath_volumes(listing),
            [PathBuf::from("/tmp/hostpath_pv/4f1c")]
        );
    }

    #[test]
    fn every_argument_is_a_flag_with_a_value() {
        let paths = EnvtestPaths::under(Path::new("/work"));
        let options = EnvtestOptions::default();
        for args in [
            etcd_args(&paths, &ports()),
            apiserver_args(&options, &paths, &ports()),
            controller_manager_args(&paths, &ports()),
            scheduler_args(&paths, &ports()),
        ] {
            for arg in &args {
                let (name, value) = arg.split_once('=').unwrap();
                assert!(name.starts_with("--") && !value.is_empty(), "{arg}");
            }
            let names: BTreeSet<&str> = args.iter().map(|a| a.split('=').next().unwrap()).collect();
            assert_eq!(names.len(), args.len(), "a flag is repeated: {args:?}");
        }
    }

    #[test]
    fn every_file_flag_names_a_file_that_start_writes() {
        let dir = tempfile::tempdir().unwrap();
        let paths = EnvtestPaths::under(dir.path());
        let ports = ports();
        write_files(&paths, &ports, DEFAULT_SERVICE_CIDR).unwrap();
        let options = EnvtestOptions::default();
        let mut checked = 0;
        for args in [
            apiserver_args(&options, &paths, &ports),
            controller_manager_args(&paths, &ports),
            scheduler_args(&paths, &ports),
        ] {
            for arg in &args {
                let (name, value) = arg.split_once('=').unwrap();
                if name.ends_with("-file")
                    || name.ends_with("kubeconfig")
                    || name.starts_with("--kubelet-c")
                {
                    assert!(
                        Path::new(value).is_file(),
                        "{name} names {value}, not written"
                    );
                    checked += 1;
                }
            }
        }
        // apiserver: tls cert/key, client CA, 2 ServiceAccount keys, kubelet client
        // cert/key and the kubelets' CA; controller manager: 3 kubeconfigs, client CA, tls cert/key,
        // ServiceAccount key, root CA; scheduler: 3 kubeconfigs, client CA, tls cert/key.
        assert_eq!(checked, 22);
        for file in [&paths.ca_cert, &paths.admin_kubeconfig] {
            assert!(file.is_file(), "{}", file.display());
        }
    }

    #[test]
    fn the_controller_manager_kubeconfig_is_its_own_identity_on_the_apiserver() {
        let dir = tempfile::tempdir().unwrap();
        let paths = EnvtestPaths::under(dir.path());
        write_files(&paths, &ports(), DEFAULT_SERVICE_CIDR).unwrap();
        let read = |path: &Path| -> serde_yaml::Value {
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
        };
        let kubeconfig = read(&paths.controller_manager_kubeconfig);
        let admin = read(&paths.admin_kubeconfig);
        assert_eq!(
            kubeconfig["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://127.0.0.1:6443")
        );
        let cert = |config: &serde_yaml::Value| {
            config["users"][0]["user"]["client-certificate-data"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_ne!(cert(&kubeconfig), cert(&admin));
        let der = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            cert(&kubeconfig),
        )
        .unwrap();
        let pem = String::from_utf8(der).unwrap();
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let certificate = parsed.parse_x509().unwrap();
        let subject = certificate.subject().to_string();
        assert!(
            subject.contains("CN=system:kube-controller-manager")
                && subject.contains("O=system:masters"),
            "{subject}"
        );
    }
}
