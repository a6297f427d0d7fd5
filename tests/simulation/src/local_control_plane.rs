//! Each tenant's control plane as local processes, started from the objects the
//! controller wrote on the host.
//!
//! The in-process tenant API server ([`super::tenant_apiserver`]) shows the controller's
//! certificates and kubeconfigs work; only the real binaries show its flags do. Where the
//! binaries exist, this runs them as a kubelet would run the pods: for each tenant
//! (label `vc.kosmos.io/virtualcluster=NAME`) one etcd per StatefulSet replica,
//! kube-apiserver on the apiserver Service's cluster IP and port (so every kubeconfig the
//! controller wrote works unchanged), and kube-controller-manager and kube-scheduler when
//! their binaries are there. Each container becomes a process through
//! [`super::local_pod`]; in-cluster names resolve through a [`ServiceMap`] of the
//! tenant's Services. A changed pod template restarts its process, a deleted or
//! scaled-down workload stops it, an exited one restarts with a back-off like
//! CrashLoopBackOff, and dropping [`LocalControlPlanes`] kills them all.
//!
//! Once a tenant's apiserver answers `/readyz`, what its pods would need runs inside it:
//! simulated kubelets beside the real kube-controller-manager, or the simulated
//! controllers (workloads, Services) the in-process tenant simulator runs when there is
//! no controller-manager binary.
//!
//! Host workload status is not written here: the host's workload simulator still makes
//! the control-plane Deployments and StatefulSet ready.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec, Secret, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;
use vc_api::constants::{
    COMPONENT_LABEL, KUBECONFIG_INTERNAL_SECRET_KEY, KUBECONFIG_SECRET_KEY, TENANT_NAME_LABEL,
    admin_kubeconfig_secret_name,
};

use crate::etcd_gateway;

use super::local_pod::{
    self, LocalPodError, LocalPodPlan, PodPlacement, ServiceMap, VolumeSources,
};
use super::services::ServiceOptions;
use super::workloads::{WorkloadMode, WorkloadOptions};
use super::{SimHandle, wait_for_next_pass, watch_store};

/// Lines of each log the diagnostics show.
const LOG_TAIL_LINES: usize = 15;
/// Longest wait before an exited component is started again.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest wait before a component that could not be started is tried again.
const START_RETRY_CAP: Duration = Duration::from_secs(2);

/// The binaries the control plane runs from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPlaneBinaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: Option<PathBuf>,
    pub kube_scheduler: Option<PathBuf>,
}

impl ControlPlaneBinaries {
    /// kube-apiserver (+ optional kube-controller-manager and kube-scheduler) from
    /// `assets`, etcd from `assets`, `ETCD_BIN`, or the usual system paths. The error says
    /// which of kube-apiserver and etcd is absent, and where it was looked for.
    pub fn discover(assets: &Path) -> Result<Self, LocalControlPlaneError> {
        let in_assets = |name: &str| Some(assets.join(name)).filter(|path| path.is_file());
        let kube_apiserver =
            in_assets("kube-apiserver").ok_or_else(|| LocalControlPlaneError::DiscoverBinary {
                binary: "kube-apiserver",
                looked_in: assets.display().to_string(),
            })?;
        let etcd = in_assets("etcd")
            .or_else(etcd_gateway::etcd_binary)
            .ok_or_else(|| LocalControlPlaneError::DiscoverBinary {
                binary: "etcd",
                looked_in: format!(
                    "{}, ETCD_BIN or {}",
                    assets.display(),
                    etcd_gateway::ETCD_FALLBACKS.join(", ")
                ),
            })?;
        Ok(ControlPlaneBinaries {
            etcd,
            kube_apiserver,
            kube_controller_manager: in_assets("kube-controller-manager"),
            kube_scheduler: in_assets("kube-scheduler"),
        })
    }

    /// The binary for `program` (the basename of a container's `command[0]`).
    fn for_program(&self, program: &str) -> Option<&Path> {
        match program {
            "etcd" => Some(&self.etcd),
            "kube-apiserver" => Some(&self.kube_apiserver),
            "kube-controller-manager" => self.kube_controller_manager.as_deref(),
            "kube-scheduler" => self.kube_scheduler.as_deref(),
            _ => None,
        }
    }
}

/// How the simulator behaves.
#[derive(Clone, Debug)]
pub struct LocalControlPlaneOptions {
    pub binaries: ControlPlaneBinaries,
    /// Volumes, data and logs, one directory per tenant (`NAMESPACE/NAME/`).
    pub work_dir: PathBuf,
    /// Only tenants of this namespace (`None`: all).
    pub namespace: Option<String>,
    /// The host's cluster domain, for in-cluster names such as `X.NS.svc.DOMAIN`.
    pub cluster_domain: String,
    /// Workload simulation inside each tenant: the kubelets beside a real
    /// kube-controller-manager, else its controllers too (`mode` is chosen here).
    pub tenant_workloads: Option<WorkloadOptions>,
    /// Service simulation inside each tenant (endpoints only without a real
    /// kube-controller-manager, whose endpoint controllers do it otherwise).
    pub tenant_services: Option<ServiceOptions>,
    pub resync: Duration,
}

/// A control-plane component, by its `app.kubernetes.io/component` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Etcd,
    ApiServer,
    ControllerManager,
    Scheduler,
}

impl Component {
    pub const ALL: [Component; 4] = [
        Component::Etcd,
        Component::ApiServer,
        Component::ControllerManager,
        Component::Scheduler,
    ];

    /// The `app.kubernetes.io/component` value.
    pub fn label(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "apiserver",
            Component::ControllerManager => "controller-manager",
            Component::Scheduler => "scheduler",
        }
    }

    /// The container that runs it.
    pub fn container(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "kube-apiserver",
            Component::ControllerManager => "kube-controller-manager",
            Component::Scheduler => "kube-scheduler",
        }
    }

    fn from_label(label: &str) -> Option<Self> {
        Component::ALL.into_iter().find(|c| c.label() == label)
    }
}

/// Why a component of a tenant could not be planned or started. Never carries Secret data.
#[derive(Debug, thiserror::Error)]
pub enum LocalControlPlaneError {
    #[error("no {binary} in {looked_in}")]
    DiscoverBinary {
        binary: &'static str,
        looked_in: String,
    },
    #[error("the {component} workload of tenant {tenant} has no pod template spec")]
    ReadTemplate {
        tenant: String,
        component: &'static str,
    },
    #[error("{component} of tenant {tenant}: {source}")]
    PlanPod {
        tenant: String,
        component: &'static str,
        source: Box<LocalPodError>,
    },
    #[error("tenant {tenant} has no apiserver Service with a cluster IP yet")]
    FindClusterIp { tenant: String },
    #[error("finding a free local port: {0}")]
    AllocatePort(std::io::Error),
    #[error("no binary for {program} (binaries given: {given})")]
    FindBinary { program: String, given: String },
    #[error("opening log {path}: {source}")]
    OpenLog {
        path: String,
        source: std::io::Error,
    },
    #[error("binary {path} does not exist")]
    MissingBinary { path: String },
    #[error("starting {binary}: {source}")]
    SpawnProcess {
        binary: String,
        source: std::io::Error,
    },
    #[error("reading the {what} of tenant {tenant}: {reason}")]
    ReadTenant {
        tenant: String,
        what: &'static str,
        reason: String,
    },
}

/// The host objects a tenant's plans are made from.
#[derive(Clone, Debug, Default)]
pub struct TenantObjects {
    pub namespace: String,
    pub name: String,
    pub etcd: Option<StatefulSet>,
    pub apiserver: Option<Deployment>,
    pub controller_manager: Option<Deployment>,
    pub scheduler: Option<Deployment>,
    /// The tenant's Services (etcd client and peer, apiserver).
    pub services: Vec<Service>,
    /// Secrets and ConfigMaps of the namespace (needed only to plan, not to compare).
    pub sources: VolumeSources,
}

impl TenantObjects {
    fn tenant(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn template(&self, component: Component) -> Option<&PodTemplateSpec> {
        match component {
            Component::Etcd => self.etcd.as_ref()?.spec.as_ref().map(|s| &s.template),
            Component::ApiServer => deployment_template(self.apiserver.as_ref()),
            Component::ControllerManager => deployment_template(self.controller_manager.as_ref()),
            Component::Scheduler => deployment_template(self.scheduler.as_ref()),
        }
    }

    fn pod_spec(&self, component: Component) -> Result<&PodSpec, LocalControlPlaneError> {
        self.template(component)
            .and_then(|t| t.spec.as_ref())
            .ok_or_else(|| LocalControlPlaneError::ReadTemplate {
                tenant: self.tenant(),
                component: component.label(),
            })
    }

    /// Replicas that should run: etcd members by ordinal, one process for a Deployment
    /// (its replicas would all bind the same cluster IP and port here).
    fn wanted_ordinals(&self, component: Component) -> Vec<i32> {
        let live = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            meta.deletion_timestamp.is_none()
        };
        match component {
            Component::Etcd => self
                .etcd
                .as_ref()
                .filter(|s| live(&s.metadata))
                .map(|s| (0..s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)).collect())
                .unwrap_or_default(),
            _ => {
                let deployment = match component {
                    Component::ApiServer => self.apiserver.as_ref(),
                    Component::ControllerManager => self.controller_manager.as_ref(),
                    _ => self.scheduler.as_ref(),
                };
                deployment
                    .filter(|d| live(&d.metadata))
                    .filter(|d| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) > 0)
                    .map(|_| vec![0])
                    .unwrap_or_default()
            }
        }
    }

    fn apiserver_service(&self) -> Option<(&Service, IpAddr)> {
        self.services
            .iter()
            .filter(|s| s.labels().get(COMPONENT_LABEL).map(String::as_str) == Some("apiserver"))
            .find_map(|s| {
                let ip = s.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok()?;
                Some((s, ip))
            })
    }
}

fn deployment_template(deployment: Option<&Deployment>) -> Option<&PodTemplateSpec> {
    deployment?.spec.as_ref().map(|s| &s.template)
}

/// A hash of a pod template: a new one means a new pod, so the process restarts.
fn template_hash(template: Option<&PodTemplateSpec>) -> String {
    let bytes = serde_json::to_vec(&template).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..8])
}

fn free_port() -> Result<u16, LocalControlPlaneError> {
    vc_test_apiserver::ports::free_port().map_err(LocalControlPlaneError::AllocatePort)
}

/// Turns a tenant's host objects into process plans, keeping each local port for the
/// simulator's lifetime: an etcd member restarted on other ports would no longer match
/// the peer URLs stored in its data directory.
#[derive(Clone, Debug)]
pub struct TenantPlanner {
    namespace: String,
    name: String,
    root: PathBuf,
    cluster_domain: String,
    ports: BTreeMap<(Component, i32, u16), u16>,
}

impl TenantPlanner {
    pub fn new(work_dir: &Path, cluster_domain: &str, namespace: &str, name: &str) -> Self {
        TenantPlanner {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            root: work_dir.join(namespace).join(name),
            cluster_domain: cluster_domain.to_owned(),
            ports: BTreeMap::new(),
        }
    }

    /// The tenant's directory: one sub-directory per process, logs beside them.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn tenant(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn plan_error(&self, component: Component, source: LocalPodError) -> LocalControlPlaneError {
        LocalControlPlaneError::PlanPod {
            tenant: self.tenant(),
            component: component.label(),
            source: Box::new(source),
        }
    }

    /// Local ports for every port the pod needs; `fixed` ones (rendered -> local) first.
    fn ports_for(
        &mut self,
        objects: &TenantObjects,
        component: Component,
        ordinal: i32,
        fixed: &BTreeMap<u16, u16>,
    ) -> Result<BTreeMap<u16, u16>, LocalControlPlaneError> {
        let spec = objects.pod_spec(component)?;
        let required = local_pod::required_ports(spec, Some(component.container()))
            .map_err(|e| self.plan_error(component, e))?;
        let mut ports = BTreeMap::new();
        for port in required {
            let local = match fixed.get(&port) {
                Some(local) => *local,
                None => match self.ports.get(&(component, ordinal, port)) {
                    Some(local) => *local,
                    None => {
                        let local = free_port()?;
                        self.ports.insert((component, ordinal, port), local);
                        local
                    }
                },
            };
            ports.insert(port, local);
        }
        Ok(ports)
    }

    /// Where each in-cluster name of the tenant's Services is served locally.
    pub fn service_map(
        &mut self,
        objects: &TenantObjects,
    ) -> Result<ServiceMap, LocalControlPlaneError> {
        let mut map = ServiceMap::new(&self.cluster_domain);
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut members: Vec<BTreeMap<u16, u16>> = Vec::new();
        if let Some(set) = &objects.etcd {
            let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            for ordinal in 0..replicas {
                members.push(self.ports_for(
                    objects,
                    Component::Etcd,
                    ordinal,
                    &BTreeMap::new(),
                )?);
            }
        }
        let etcd_set = objects.etcd.as_ref();
        let headless_name = etcd_set
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.service_name.clone());
        for service in &objects.services {
            let Some(service_name) = service.metadata.name.as_deref() else {
                continue;
            };
            let component = service
                .labels()
                .get(COMPONENT_LABEL)
                .and_then(|l| Component::from_label(l));
            let ports = service
                .spec
                .as_ref()
                .and_then(|s| s.ports.clone())
                .unwrap_or_default();
            match component {
                Some(Component::Etcd) => {
                    for port in &ports {
                        let (Ok(service_port), Some(member)) =
                            (u16::try_from(port.port), members.first())
                        else {
                            continue;
                        };
                        let target = match &port.target_port {
                            Some(IntOrString::Int(target)) => u16::try_from(*target).ok(),
                            _ => Some(service_port),
                        };
                        if let Some(local) = target.and_then(|t| member.get(&t)) {
                            map.insert(
                                &objects.namespace,
                                service_name,
                                service_port,
                                SocketAddr::new(loopback, *local),
                            );
                        }
                    }
                    if headless_name.as_deref() == Some(service_name)
                        && let Some(set_name) = etcd_set.and_then(|s| s.metadata.name.as_deref())
                    {
                        // A pod of a headless Service answers on every container port.
                        for (ordinal, member) in members.iter().enumerate() {
                            let host = format!("{set_name}-{ordinal}.{service_name}");
                            for (rendered, local) in member {
                                map.insert(
                                    &objects.namespace,
                                    &host,
                                    *rendered,
                                    SocketAddr::new(loopback, *local),
                                );
                            }
                        }
                    }
                }
                Some(Component::ApiServer) => {
                    let Some(ip) = service
                        .spec
                        .as_ref()
                        .and_then(|s| s.cluster_ip.as_deref())
                        .and_then(|ip| ip.parse::<IpAddr>().ok())
                    else {
                        continue;
                    };
                    for port in &ports {
                        if let Ok(service_port) = u16::try_from(port.port) {
                            map.insert(
                                &objects.namespace,
                                service_name,
                                service_port,
                                SocketAddr::new(ip, service_port),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(map)
    }

    /// The process plan of `component` replica `ordinal`.
    pub fn plan(
        &mut self,
        objects: &TenantObjects,
        component: Component,
        ordinal: i32,
    ) -> Result<LocalPodPlan, LocalControlPlaneError> {
        let services = self.service_map(objects)?;
        let spec = objects.pod_spec(component)?;
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let placement = match component {
            Component::Etcd => {
                let set = objects.etcd.as_ref();
                let set_name = set
                    .and_then(|s| s.metadata.name.clone())
                    .unwrap_or_else(|| format!("{}-etcd", self.name));
                let uid = set.and_then(|s| s.metadata.uid.clone()).unwrap_or_default();
                let claim_templates = set
                    .and_then(|s| s.spec.as_ref())
                    .and_then(|s| s.volume_claim_templates.as_ref())
                    .map(|claims| {
                        claims
                            .iter()
                            .filter_map(|c| c.metadata.name.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                let short_uid: String = uid.chars().filter(|c| *c != '-').take(8).collect();
                PodPlacement {
                    pod_name: format!("{set_name}-{ordinal}"),
                    namespace: self.namespace.clone(),
                    pod_ip: loopback,
                    ports: self.ports_for(objects, component, ordinal, &BTreeMap::new())?,
                    // Keyed by the StatefulSet's uid: a tenant created again under the same
                    // name gets new volumes, as new PersistentVolumeClaims would be.
                    root: self.root.join(format!("etcd-{ordinal}-{short_uid}")),
                    claim_templates,
                    set_flags: Vec::new(),
                }
            }
            Component::ApiServer => {
                let (service, ip) = objects.apiserver_service().ok_or_else(|| {
                    LocalControlPlaneError::FindClusterIp {
                        tenant: self.tenant(),
                    }
                })?;
                // The process listens where the Service sends traffic: its cluster IP and
                // the Service port of each target port. One process listens once per
                // target port: where several Service ports lead to one (6443 and 443), the
                // one equal to the target, which the controller dials.
                let mut fixed: BTreeMap<u16, u16> = BTreeMap::new();
                for port in service
                    .spec
                    .as_ref()
                    .and_then(|s| s.ports.as_ref())
                    .into_iter()
                    .flatten()
                {
                    let Ok(service_port) = u16::try_from(port.port) else {
                        continue;
                    };
                    let target = match &port.target_port {
                        Some(IntOrString::Int(target)) => u16::try_from(*target).ok(),
                        _ => Some(service_port),
                    };
                    let Some(target) = target else { continue };
                    let chosen = fixed.entry(target).or_insert(service_port);
                    if service_port == target {
                        *chosen = service_port;
                    }
                }
                PodPlacement {
                    pod_name: format!("{}-apiserver-local", self.name),
                    namespace: self.namespace.clone(),
                    pod_ip: ip,
                    ports: self.ports_for(objects, component, ordinal, &fixed)?,
                    root: self.root.join("apiserver"),
                    claim_templates: Vec::new(),
                    set_flags: vec![("bind-address".to_owned(), ip.to_string())],
                }
            }
            Component::ControllerManager | Component::Scheduler => PodPlacement {
                pod_name: format!("{}-{}-local", self.name, component.label()),
                namespace: self.namespace.clone(),
                pod_ip: loopback,
                ports: self.ports_for(objects, component, ordinal, &BTreeMap::new())?,
                root: self.root.join(component.label()),
                claim_templates: Vec::new(),
                set_flags: Vec::new(),
            },
        };
        local_pod::plan(
            spec,
            Some(component.container()),
            &placement,
            &services,
            &objects.sources,
        )
        .map_err(|e| self.plan_error(component, e))
    }
}

/// A component's process as the simulator reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningComponent {
    pub namespace: String,
    pub name: String,
    pub component: Component,
    pub ordinal: i32,
    pub pid: u32,
}

/// A started process; killed when dropped.
struct Process {
    child: Child,
    pid: u32,
    started: Instant,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}

/// One replica of one component: what should run, and what happened to it.
struct Slot {
    template_hash: String,
    process: Option<Process>,
    plan: Option<LocalPodPlan>,
    log: PathBuf,
    last_error: Option<String>,
    last_exit: Option<ExitStatus>,
    /// Exits and failed starts since the template last changed.
    failures: u32,
    next_start: Instant,
}

impl Slot {
    fn backoff(&self) -> Duration {
        let exponent = self.failures.saturating_sub(1).min(5);
        Duration::from_millis(500 * 2_u64.pow(exponent)).min(MAX_BACKOFF)
    }
}

/// What runs inside a tenant once its apiserver is ready.
struct Inside {
    client: Client,
    description: String,
    _handle: SimHandle,
}

struct TenantState {
    planner: TenantPlanner,
    slots: BTreeMap<(Component, i32), Slot>,
    inside: Option<Inside>,
    inside_error: Option<String>,
}

impl TenantState {
    fn apiserver_running(&self) -> bool {
        self.slots
            .get(&(Component::ApiServer, 0))
            .is_some_and(|slot| slot.process.is_some())
    }
}

#[derive(Default)]
struct State {
    tenants: BTreeMap<(String, String), TenantState>,
    /// Said once: components that are not run, and why.
    notes: BTreeSet<String>,
    stopped: bool,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The simulator; dropping it kills every process it started.
pub struct LocalControlPlanes {
    state: Shared,
    work_dir: PathBuf,
    handle: SimHandle,
}

impl std::fmt::Debug for LocalControlPlanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalControlPlanes")
            .field("work_dir", &self.work_dir)
            .field("running", &self.running())
            .finish_non_exhaustive()
    }
}

impl LocalControlPlanes {
    /// The processes running now.
    pub fn running(&self) -> Vec<RunningComponent> {
        let state = lock(&self.state);
        state
            .tenants
            .iter()
            .flat_map(|((namespace, name), tenant)| {
                tenant
                    .slots
                    .iter()
                    .filter_map(move |((component, ordinal), slot)| {
                        slot.process.as_ref().map(|process| RunningComponent {
                            namespace: namespace.clone(),
                            name: name.clone(),
                            component: *component,
                            ordinal: *ordinal,
                            pid: process.pid,
                        })
                    })
            })
            .collect()
    }

    /// The plan the process of `component` replica `ordinal` was last started from (its
    /// files are laid out even when the binary was missing).
    pub fn plan(
        &self,
        namespace: &str,
        name: &str,
        component: Component,
        ordinal: i32,
    ) -> Option<LocalPodPlan> {
        let state = lock(&self.state);
        state
            .tenants
            .get(&(namespace.to_owned(), name.to_owned()))?
            .slots
            .get(&(component, ordinal))?
            .plan
            .clone()
    }

    /// An admin client of the tenant, once its apiserver process answered `/readyz`.
    pub fn client(&self, namespace: &str, name: &str) -> Option<Client> {
        let state = lock(&self.state);
        state
            .tenants
            .get(&(namespace.to_owned(), name.to_owned()))?
            .inside
            .as_ref()
            .map(|inside| inside.client.clone())
    }

    /// Per tenant: each component's pid or exit status or why it did not start, its log
    /// and last log lines, and what runs inside the tenant.
    pub fn diagnostics(&self) -> String {
        use std::fmt::Write as _;
        let state = lock(&self.state);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "local control planes (work dir {}):",
            self.work_dir.display()
        );
        for note in &state.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        if state.tenants.is_empty() {
            let _ = writeln!(out, "  no tenant control-plane workloads seen");
        }
        let now = Instant::now();
        for ((namespace, name), tenant) in &state.tenants {
            let _ = writeln!(out, "tenant {namespace}/{name}:");
            for ((component, ordinal), slot) in &tenant.slots {
                let what = match (&slot.process, &slot.last_exit, &slot.last_error) {
                    (Some(process), _, _) => format!(
                        "running, pid {}, for {:.1} s",
                        process.pid,
                        (now - process.started).as_secs_f64()
                    ),
                    (None, Some(status), _) => format!(
                        "exited with {status}; restarting in {:.1} s",
                        slot.next_start.saturating_duration_since(now).as_secs_f64()
                    ),
                    (None, None, Some(error)) => format!("not started: {error}"),
                    (None, None, None) => "starting".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "  {}-{ordinal}: {what} (failures {}, template {})",
                    component.label(),
                    slot.failures,
                    slot.template_hash
                );
                if let (Some(error), Some(_)) = (&slot.last_error, &slot.last_exit) {
                    let _ = writeln!(out, "    last start error: {error}");
                }
                let tail = vc_test_apiserver::work_dir::log_tail(&slot.log, LOG_TAIL_LINES);
                if !tail.is_empty() {
                    let _ = writeln!(out, "    last lines of {}:", slot.log.display());
                    for line in tail {
                        let _ = writeln!(out, "      {line}");
                    }
                }
            }
            match (&tenant.inside, &tenant.inside_error) {
                (Some(inside), _) => {
                    let _ = writeln!(out, "  inside the tenant: {}", inside.description);
                }
                (None, Some(error)) => {
                    let _ = writeln!(out, "  inside the tenant: nothing yet ({error})");
                }
                (None, None) => {
                    let _ = writeln!(out, "  inside the tenant: nothing yet");
                }
            }
        }
        out
    }

    /// Stops the simulator and every process.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for LocalControlPlanes {
    fn drop(&mut self) {
        std::mem::take(&mut self.handle).stop();
        let tenants = {
            let mut state = lock(&self.state);
            state.stopped = true;
            std::mem::take(&mut state.tenants)
        };
        // Killing waits for each process; the inner simulators only abort tasks.
        drop(tenants);
    }
}

/// Starts the simulator.
pub fn spawn(host: Client, options: LocalControlPlaneOptions) -> LocalControlPlanes {
    let notify = Arc::new(Notify::new());
    let (sets_api, deployments_api, services_api) = match &options.namespace {
        Some(ns) => (
            Api::<StatefulSet>::namespaced(host.clone(), ns),
            Api::<Deployment>::namespaced(host.clone(), ns),
            Api::<Service>::namespaced(host.clone(), ns),
        ),
        None => (
            Api::all(host.clone()),
            Api::all(host.clone()),
            Api::all(host.clone()),
        ),
    };
    let config = watcher::Config::default().labels(TENANT_NAME_LABEL);
    let (sets, t1) = watch_store(sets_api, config.clone(), notify.clone());
    let (deployments, t2) = watch_store(deployments_api, config.clone(), notify.clone());
    let (services, t3) = watch_store(services_api, config, notify.clone());
    let state: Shared = Arc::default();
    let work_dir = options.work_dir.clone();
    let sim = LocalSim {
        host,
        options,
        sets,
        deployments,
        services,
        state: state.clone(),
    };
    let resync = sim.options.resync;
    let t4 = tokio::spawn(async move {
        if sim.sets.wait_until_ready().await.is_ok()
            && sim.deployments.wait_until_ready().await.is_ok()
            && sim.services.wait_until_ready().await.is_ok()
        {
            loop {
                let next = sim.pass().await;
                wait_for_next_pass(&notify, next, resync).await;
            }
        }
    });
    LocalControlPlanes {
        state,
        work_dir,
        handle: SimHandle::new(vec![t1, t2, t3, t4]),
    }
}

struct LocalSim {
    host: Client,
    options: LocalControlPlaneOptions,
    sets: Store<StatefulSet>,
    deployments: Store<Deployment>,
    services: Store<Service>,
    state: Shared,
}

fn sooner(next: &mut Option<Instant>, at: Instant) {
    *next = Some(next.map_or(at, |current| current.min(at)));
}

/// What one pass decided to do for a tenant outside the lock.
struct TenantWork {
    objects: TenantObjects,
    to_start: Vec<(Component, i32)>,
    check_inside: Option<ServiceMap>,
}

impl LocalSim {
    /// The tenants' workloads and Services from the watch caches, without Secrets.
    fn observed(&self) -> BTreeMap<(String, String), TenantObjects> {
        let mut tenants: BTreeMap<(String, String), TenantObjects> = BTreeMap::new();
        for set in self.sets.state() {
            if let Some((key, Component::Etcd)) = key_of(&set.metadata) {
                objects_of(&mut tenants, key).etcd = Some((*set).clone());
            }
        }
        for deployment in self.deployments.state() {
            let Some((key, component)) = key_of(&deployment.metadata) else {
                continue;
            };
            let objects = objects_of(&mut tenants, key);
            let slot = match component {
                Component::ApiServer => &mut objects.apiserver,
                Component::ControllerManager => &mut objects.controller_manager,
                Component::Scheduler => &mut objects.scheduler,
                Component::Etcd => continue,
            };
            *slot = Some((*deployment).clone());
        }
        for service in self.services.state() {
            if let Some((key, _)) = key_of(&service.metadata) {
                objects_of(&mut tenants, key)
                    .services
                    .push((*service).clone());
            }
        }
        tenants
    }
}

fn objects_of(
    tenants: &mut BTreeMap<(String, String), TenantObjects>,
    key: (String, String),
) -> &mut TenantObjects {
    tenants.entry(key.clone()).or_insert_with(|| TenantObjects {
        namespace: key.0,
        name: key.1,
        ..TenantObjects::default()
    })
}

/// `(namespace, tenant)` and component of an object carrying both labels.
fn key_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<((String, String), Component)> {
    let labels = meta.labels.as_ref()?;
    let component = Component::from_label(labels.get(COMPONENT_LABEL)?)?;
    Some((
        (
            meta.namespace.clone()?,
            labels.get(TENANT_NAME_LABEL)?.clone(),
        ),
        component,
    ))
}

/// Why a start failed, with the plan when there was one (its files may be laid out).
type StartFailure = (Option<Box<LocalPodPlan>>, LocalControlPlaneError);

impl LocalSim {
    /// One level-triggered pass; returns when the next one is due at the latest.
    async fn pass(&self) -> Option<Instant> {
        let mut next = None;
        let work = self.reconcile_slots(&mut next)?;
        for mut item in work {
            if !item.to_start.is_empty() {
                self.start_components(&mut item, &mut next).await?;
            }
            if let Some(services) = item.check_inside.take() {
                self.connect_inside(&item.objects, &services, &mut next)
                    .await?;
            }
        }
        next
    }

    /// Compares what runs with what the workloads ask for: stops what is no longer
    /// wanted or whose template changed, notices exits, and says what to start. `None`
    /// once the simulator is stopped.
    fn reconcile_slots(&self, next: &mut Option<Instant>) -> Option<Vec<TenantWork>> {
        let observed = self.observed();
        let now = Instant::now();
        let mut state = lock(&self.state);
        if state.stopped {
            return None;
        }
        let mut wanted_by_tenant = BTreeMap::new();
        for (key, objects) in &observed {
            let wanted = self.wanted_slots(objects, &mut state.notes);
            if !wanted.is_empty() {
                wanted_by_tenant.insert(key.clone(), wanted);
            }
        }
        state.tenants.retain(|(namespace, name), _| {
            let keep = wanted_by_tenant.contains_key(&(namespace.clone(), name.clone()));
            if !keep {
                tracing::info!(%namespace, %name, "tenant control plane gone; processes stopped");
            }
            keep
        });
        let mut work = Vec::new();
        for (key, wanted) in wanted_by_tenant {
            let Some(objects) = observed.get(&key) else {
                continue;
            };
            let tenant = state
                .tenants
                .entry(key.clone())
                .or_insert_with(|| TenantState {
                    planner: TenantPlanner::new(
                        &self.options.work_dir,
                        &self.options.cluster_domain,
                        &key.0,
                        &key.1,
                    ),
                    slots: BTreeMap::new(),
                    inside: None,
                    inside_error: None,
                });
            // A changed template is a new pod: the old process goes first.
            tenant.slots.retain(|(component, ordinal), slot| {
                let keep = wanted.get(&(*component, *ordinal)) == Some(&slot.template_hash);
                if !keep && slot.process.is_some() {
                    tracing::info!(namespace = %key.0, name = %key.1, component = component.label(), ordinal, "pod template changed or workload gone; process stopped");
                }
                keep
            });
            for ((component, ordinal), hash) in wanted {
                let log = tenant
                    .planner
                    .root()
                    .join(format!("{}-{ordinal}.log", component.label()));
                tenant
                    .slots
                    .entry((component, ordinal))
                    .or_insert_with(|| Slot {
                        template_hash: hash,
                        process: None,
                        plan: None,
                        log,
                        last_error: None,
                        last_exit: None,
                        failures: 0,
                        next_start: now,
                    });
            }
            let mut to_start = Vec::new();
            for ((component, ordinal), slot) in &mut tenant.slots {
                if let Some(process) = slot.process.as_mut() {
                    match process.child.try_wait() {
                        Ok(Some(status)) => {
                            tracing::warn!(namespace = %key.0, name = %key.1, component = component.label(), ordinal, %status, log = %slot.log.display(), "process exited; restarting after a back-off");
                            slot.last_exit = Some(status);
                            slot.process = None;
                            slot.failures += 1;
                            slot.next_start = now + slot.backoff();
                        }
                        _ => continue,
                    }
                }
                if slot.next_start <= now {
                    to_start.push((*component, *ordinal));
                } else {
                    sooner(next, slot.next_start);
                }
            }
            if !tenant.slots.contains_key(&(Component::ApiServer, 0)) {
                tenant.inside = None;
            }
            let check_inside = if tenant.inside.is_none() && tenant.apiserver_running() {
                tenant.planner.service_map(objects).ok()
            } else {
                None
            };
            if !to_start.is_empty() || check_inside.is_some() {
                work.push(TenantWork {
                    objects: objects.clone(),
                    to_start,
                    check_inside,
                });
            }
        }
        Some(work)
    }

    /// `(component, ordinal) -> template hash` of what should run for one tenant;
    /// components without a binary are noted once and left out.
    fn wanted_slots(
        &self,
        objects: &TenantObjects,
        notes: &mut BTreeSet<String>,
    ) -> BTreeMap<(Component, i32), String> {
        let mut wanted = BTreeMap::new();
        for component in Component::ALL {
            let ordinals = objects.wanted_ordinals(component);
            if ordinals.is_empty() {
                continue;
            }
            if self
                .options
                .binaries
                .for_program(component.container())
                .is_none()
            {
                let note = format!(
                    "no {} binary: tenant {}s are not run",
                    component.container(),
                    component.label()
                );
                if notes.insert(note.clone()) {
                    tracing::info!("{note}");
                }
                continue;
            }
            let hash = template_hash(objects.template(component));
            for ordinal in ordinals {
                wanted.insert((component, ordinal), hash.clone());
            }
        }
        wanted
    }

    /// Reads the namespace's Secrets and ConfigMaps, then starts each pending component
    /// (in component order: etcd first). `None` once the simulator is stopped.
    async fn start_components(
        &self,
        item: &mut TenantWork,
        next: &mut Option<Instant>,
    ) -> Option<()> {
        let key = (item.objects.namespace.clone(), item.objects.name.clone());
        let sources = local_pod::read_volume_sources(&self.host, &key.0).await;
        let mut state = lock(&self.state);
        if state.stopped {
            return None;
        }
        let Some(tenant) = state.tenants.get_mut(&key) else {
            return Some(());
        };
        let sources_error = match sources {
            Ok(sources) => {
                item.objects.sources = sources;
                None
            }
            Err(reason) => Some(reason),
        };
        let TenantState { planner, slots, .. } = tenant;
        for (component, ordinal) in &item.to_start {
            let Some(slot) = slots.get_mut(&(*component, *ordinal)) else {
                continue;
            };
            let result = match &sources_error {
                None => self.start(planner, &item.objects, *component, *ordinal, slot),
                Some(reason) => Err((
                    None,
                    LocalControlPlaneError::ReadTenant {
                        tenant: item.objects.tenant(),
                        what: "Secrets and ConfigMaps",
                        reason: reason.clone(),
                    },
                )),
            };
            match result {
                Ok((process, plan)) => {
                    tracing::info!(namespace = %key.0, name = %key.1, component = component.label(), ordinal, pid = process.pid, log = %slot.log.display(), "control-plane process started");
                    slot.process = Some(process);
                    slot.plan = Some(plan);
                    slot.last_error = None;
                }
                Err((plan, error)) => {
                    let error = error.to_string();
                    if slot.last_error.as_deref() != Some(error.as_str()) {
                        tracing::warn!(%error, "control-plane process not started; retrying after a back-off");
                    }
                    if let Some(plan) = plan {
                        slot.plan = Some(*plan);
                    }
                    slot.last_error = Some(error);
                    slot.failures += 1;
                    // Mostly something not written yet (a Secret, the cluster IP): look
                    // again soon, unlike a process that ran and exited.
                    slot.next_start = Instant::now() + slot.backoff().min(START_RETRY_CAP);
                    sooner(next, slot.next_start);
                }
            }
        }
        Some(())
    }

    /// Starts the simulators inside a tenant whose apiserver became ready, or notes why
    /// not yet. `None` once the simulator is stopped.
    async fn connect_inside(
        &self,
        objects: &TenantObjects,
        services: &ServiceMap,
        next: &mut Option<Instant>,
    ) -> Option<()> {
        let started = self.start_inside(objects, services).await;
        let mut state = lock(&self.state);
        if state.stopped {
            return None;
        }
        let key = (objects.namespace.clone(), objects.name.clone());
        if let Some(tenant) = state.tenants.get_mut(&key) {
            match started {
                Ok(inside) if tenant.apiserver_running() => {
                    tracing::info!(namespace = %key.0, name = %key.1, inside = %inside.description, "tenant apiserver ready");
                    tenant.inside = Some(inside);
                    tenant.inside_error = None;
                }
                Ok(_) => {}
                Err(error) => {
                    tenant.inside_error = Some(error);
                    sooner(next, Instant::now() + Duration::from_millis(500));
                }
            }
        }
        Some(())
    }

    /// Plans, lays out and starts one process. The files are written before the binary
    /// is looked for, so a missing binary still leaves what it would have been given.
    fn start(
        &self,
        planner: &mut TenantPlanner,
        objects: &TenantObjects,
        component: Component,
        ordinal: i32,
        slot: &Slot,
    ) -> Result<(Process, LocalPodPlan), StartFailure> {
        let plan = planner
            .plan(objects, component, ordinal)
            .map_err(|e| (None, e))?;
        let failed = |error| (Some(Box::new(plan.clone())), error);
        plan.materialise().map_err(|source| {
            failed(LocalControlPlaneError::PlanPod {
                tenant: objects.tenant(),
                component: component.label(),
                source: Box::new(source),
            })
        })?;
        let binaries = &self.options.binaries;
        let binary = match binaries.for_program(&plan.program) {
            Some(path) => path.to_path_buf(),
            None => {
                return Err(failed(LocalControlPlaneError::FindBinary {
                    program: plan.program.clone(),
                    given: format!("{binaries:?}"),
                }));
            }
        };
        if !binary.is_file() {
            return Err(failed(LocalControlPlaneError::MissingBinary {
                path: binary.display().to_string(),
            }));
        }
        let open_error = |source| {
            failed(LocalControlPlaneError::OpenLog {
                path: slot.log.display().to_string(),
                source,
            })
        };
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&slot.log)
            .map_err(open_error)?;
        let _header = writeln!(
            log,
            "===== {} starting {} for pod {} (template {}, work dir {})",
            super::now_rfc3339(),
            binary.display(),
            plan.pod_name,
            slot.template_hash,
            plan.root.display()
        );
        let stderr = log.try_clone().map_err(open_error)?;
        let child = plan
            .command(&binary)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|source| {
                failed(LocalControlPlaneError::SpawnProcess {
                    binary: binary.display().to_string(),
                    source,
                })
            })?;
        let process = Process {
            pid: child.id(),
            child,
            started: Instant::now(),
        };
        Ok((process, plan))
    }

    /// Connects to the tenant with its admin kubeconfig, and once `/readyz` answers `ok`
    /// starts what its pods need from inside.
    async fn start_inside(
        &self,
        objects: &TenantObjects,
        services: &ServiceMap,
    ) -> Result<Inside, String> {
        let client = connect_tenant(&self.host, objects, services).await?;
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let answer = tokio::time::timeout(Duration::from_secs(2), client.request_text(request))
            .await
            .map_err(|_| "/readyz did not answer within 2 s".to_owned())?
            .map_err(|e| format!("/readyz: {e}"))?;
        if answer.trim() != "ok" {
            return Err(format!("/readyz answered {answer:?}"));
        }
        let with_controller_manager = self.options.binaries.kube_controller_manager.is_some();
        let mut handle = SimHandle::default();
        let mut parts = Vec::new();
        if let Some(options) = &self.options.tenant_workloads {
            let mode = if with_controller_manager {
                parts.push("simulated kubelets beside the real kube-controller-manager");
                WorkloadMode::KubeletOnly
            } else {
                parts.push("simulated workload controllers and kubelets");
                WorkloadMode::Controllers
            };
            handle = handle.merge(super::workloads::spawn(
                client.clone(),
                WorkloadOptions {
                    mode,
                    ..options.clone()
                },
            ));
        }
        if let Some(options) = &self.options.tenant_services {
            let endpoints = options.endpoints && !with_controller_manager;
            parts.push(if endpoints {
                "simulated Service endpoints"
            } else {
                "simulated load balancers"
            });
            handle = handle.merge(super::services::spawn(
                client.clone(),
                ServiceOptions {
                    endpoints,
                    ..options.clone()
                },
            ));
        }
        if parts.is_empty() {
            parts.push("no simulators");
        }
        Ok(Inside {
            client,
            description: parts.join(", "),
            _handle: handle,
        })
    }
}

/// An admin client of the tenant: its admin kubeconfig (the in-cluster one, made local
/// through `services`, else the external one).
async fn connect_tenant(
    host: &Client,
    objects: &TenantObjects,
    services: &ServiceMap,
) -> Result<Client, String> {
    let secret_name = admin_kubeconfig_secret_name(&objects.name);
    let secret = Api::<Secret>::namespaced(host.clone(), &objects.namespace)
        .get(&secret_name)
        .await
        .map_err(|e| format!("reading Secret {secret_name}: {e}"))?;
    let data = secret.data.unwrap_or_default();
    let bytes = data
        .get(KUBECONFIG_INTERNAL_SECRET_KEY)
        .or_else(|| data.get(KUBECONFIG_SECRET_KEY))
        .map(|b| b.0.clone())
        .ok_or_else(|| format!("Secret {secret_name} has no kubeconfig"))?;
    let bytes =
        local_pod::rewrite_kubeconfig(&bytes, services, &objects.namespace, &[]).unwrap_or(bytes);
    let text =
        String::from_utf8(bytes).map_err(|_| format!("Secret {secret_name} is not UTF-8"))?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text)
        .map_err(|e| format!("parsing the kubeconfig of Secret {secret_name}: {e}"))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| format!("the kubeconfig of Secret {secret_name}: {e}"))?;
    Client::try_from(config).map_err(|e| format!("a client for tenant {}: {e}", objects.tenant()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn touch(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, b"").unwrap();
        path
    }

    #[test]
    fn binaries_come_from_the_assets_first() {
        let assets = tempfile::tempdir().unwrap();
        let error = ControlPlaneBinaries::discover(assets.path()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("no kube-apiserver in {}", assets.path().display())
        );
        let apiserver = touch(assets.path(), "kube-apiserver");
        let etcd = touch(assets.path(), "etcd");
        let found = ControlPlaneBinaries::discover(assets.path()).unwrap();
        assert_eq!(
            found,
            ControlPlaneBinaries {
                etcd: etcd.clone(),
                kube_apiserver: apiserver.clone(),
                kube_controller_manager: None,
                kube_scheduler: None,
            }
        );
        let controller_manager = touch(assets.path(), "kube-controller-manager");
        let found = ControlPlaneBinaries::discover(assets.path()).unwrap();
        assert_eq!(found.kube_controller_manager, Some(controller_manager));
        assert_eq!(
            found.for_program("kube-apiserver"),
            Some(apiserver.as_path())
        );
        assert_eq!(found.for_program("kube-scheduler"), None);
        assert_eq!(found.for_program("clustertree"), None);
    }

    fn deployment(replicas: i32, deleting: bool) -> Deployment {
        let mut value = json!({
            "metadata": {"name": "t-apiserver", "namespace": "team"},
            "spec": {"replicas": replicas, "selector": {}, "template": {"spec": {"containers": []}}}
        });
        if deleting {
            value["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn one_process_per_member_and_per_running_deployment() {
        let etcd: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "t-etcd"},
            "spec": {"replicas": 3, "selector": {}, "serviceName": "t-etcd-peer", "template": {}}
        }))
        .unwrap();
        let objects = TenantObjects {
            etcd: Some(etcd),
            apiserver: Some(deployment(2, false)),
            controller_manager: Some(deployment(0, false)),
            scheduler: Some(deployment(1, true)),
            ..TenantObjects::default()
        };
        assert_eq!(objects.wanted_ordinals(Component::Etcd), [0, 1, 2]);
        assert_eq!(objects.wanted_ordinals(Component::ApiServer), [0]);
        assert!(
            objects
                .wanted_ordinals(Component::ControllerManager)
                .is_empty()
        );
        assert!(objects.wanted_ordinals(Component::Scheduler).is_empty());
    }

    #[test]
    fn a_changed_annotation_changes_the_template_hash() {
        let mut template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"annotations": {"vc.kosmos.io/config-hash": "a"}},
            "spec": {"containers": [{"name": "c"}]}
        }))
        .unwrap();
        let before = template_hash(Some(&template));
        assert_eq!(before, template_hash(Some(&template.clone())));
        template.metadata.as_mut().unwrap().annotations = Some(BTreeMap::from([(
            "vc.kosmos.io/config-hash".to_owned(),
            "b".to_owned(),
        )]));
        assert_ne!(before, template_hash(Some(&template)));
    }

    #[test]
    fn the_simulator_can_live_in_shared_harnesses() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<LocalControlPlanes>();
    }

    #[test]
    fn back_off_doubles_up_to_a_cap() {
        let mut slot = Slot {
            template_hash: String::new(),
            process: None,
            plan: None,
            log: PathBuf::new(),
            last_error: None,
            last_exit: None,
            failures: 1,
            next_start: Instant::now(),
        };
        assert_eq!(slot.backoff(), Duration::from_millis(500));
        slot.failures = 3;
        assert_eq!(slot.backoff(), Duration::from_secs(2));
        slot.failures = 30;
        assert_eq!(slot.backoff(), MAX_BACKOFF);
    }
}
