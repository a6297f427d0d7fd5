//! Each tenant's `vc-clustertree` as a local process, started from the clustertree
//! Deployment the controller rendered on the host.
//!
//! This is the real binary, not a stand-in: the container's command and args go through
//! [`super::local_pod`] as a kubelet would make them concrete (the mounted tenant
//! kubeconfig written to a file, its in-cluster `server:` pointed at the tenant
//! apiserver's cluster IP, which is where tenant apiservers listen on this machine). What
//! a pod gets from its ServiceAccount a process must be told: `--kubeconfig` names a
//! kubeconfig of the pod's ServiceAccount identity, issued by the host
//! ([`LocalClustertreeOptions::identity`]), so the process runs under exactly the host
//! RBAC the controller granted. A changed pod template restarts the process, a deleted or
//! scaled-down Deployment stops it, an exited one restarts after a back-off, and
//! dropping [`LocalClustertrees`] kills them all.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt as _};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;
use vc_api::constants::{COMPONENT_LABEL, TENANT_NAME_LABEL};

use super::local_pod::{self, PodPlacement, ServiceMap};

/// Where the tenant's `kube-dns` EndpointSlice says the DNS is: TEST-NET-1 (RFC 5737),
/// documentation only, so it is never some real server's address.
pub const NOMINAL_DNS_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
/// Component label value of the clustertree Deployment.
pub const CLUSTERTREE_COMPONENT: &str = "clustertree";
/// Container name of the clustertree in its Deployment.
const CONTAINER: &str = "clustertree";
/// Longest wait before an exited clustertree is started again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Lines of each log the diagnostics show.
const LOG_TAIL_LINES: usize = 15;

/// Issues a kubeconfig for ServiceAccount `name` in `namespace` on the host.
pub type IdentityIssuer = Arc<dyn Fn(&str, &str) -> Result<PathBuf, String> + Send + Sync>;

/// How the clustertrees run.
#[derive(Clone)]
pub struct LocalClustertreeOptions {
    /// The `vc-clustertree` binary.
    pub binary: PathBuf,
    /// Logs, kubeconfigs and laid-out volumes, one directory per tenant.
    pub work_dir: PathBuf,
    /// The host kubeconfig of a pod's ServiceAccount.
    pub identity: IdentityIssuer,
    /// Host cluster DNS domain, as the controller's `--cluster-domain`.
    pub cluster_domain: String,
    /// Flags added after the rendered ones (such as a shorter `--period` for tests).
    pub extra_args: Vec<String>,
    /// How often Deployments are looked at.
    pub resync: Duration,
}

impl std::fmt::Debug for LocalClustertreeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalClustertreeOptions")
            .field("binary", &self.binary)
            .field("work_dir", &self.work_dir)
            .field("extra_args", &self.extra_args)
            .finish_non_exhaustive()
    }
}

/// One tenant's clustertree process.
struct Slot {
    template_hash: String,
    child: Option<Child>,
    log: PathBuf,
    restarts: u32,
    not_before: Instant,
    last_error: Option<String>,
}

impl Slot {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _killed = child.kill();
            let _reaped = child.wait();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.kill();
    }
}

type Shared = Arc<Mutex<BTreeMap<(String, String), Slot>>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Slot>> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running clustertrees; dropping this kills them.
pub struct LocalClustertrees {
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for LocalClustertrees {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalClustertrees")
            .field("tenants", &lock(&self.state).len())
            .finish()
    }
}

impl LocalClustertrees {
    /// `(namespace, tenant, pid)` of each running clustertree.
    pub fn running(&self) -> Vec<(String, String, u32)> {
        lock(&self.state)
            .iter()
            .filter_map(|((namespace, name), slot)| {
                Some((namespace.clone(), name.clone(), slot.child.as_ref()?.id()))
            })
            .collect()
    }

    /// Kills tenant `namespace/name`'s process now, as a crashed or evicted pod; it is
    /// started again after its back-off, as the Deployment's next pod would be.
    pub fn kill(&self, namespace: &str, name: &str) -> bool {
        let mut state = lock(&self.state);
        let Some(slot) = state.get_mut(&(namespace.to_owned(), name.to_owned())) else {
            return false;
        };
        let killed = slot.child.is_some();
        slot.kill();
        killed
    }

    /// Per tenant: pid or why it is not running, restarts, and its log's last lines.
    pub fn diagnostics(&self) -> String {
        let state = lock(&self.state);
        let mut out = String::new();
        for ((namespace, name), slot) in state.iter() {
            let status = match (&slot.child, &slot.last_error) {
                (Some(child), _) => format!("pid {}", child.id()),
                (None, Some(error)) => format!("not running: {error}"),
                (None, None) => "not running".to_owned(),
            };
            out.push_str(&format!(
                "vc-clustertree of {namespace}/{name}: {status}, {} restart(s), log {}\n",
                slot.restarts,
                slot.log.display()
            ));
            for line in vc_test_apiserver::work_dir::log_tail(&slot.log, LOG_TAIL_LINES) {
                out.push_str(&format!("    {line}\n"));
            }
        }
        out
    }
}

impl Drop for LocalClustertrees {
    fn drop(&mut self) {
        self.task.abort();
        let slots = std::mem::take(&mut *lock(&self.state));
        drop(slots);
    }
}

/// Starts watching the host for clustertree Deployments.
pub fn spawn(host: Client, options: LocalClustertreeOptions) -> LocalClustertrees {
    let state: Shared = Arc::default();
    let runner = Runner {
        host,
        options,
        state: state.clone(),
    };
    let task = tokio::spawn(async move {
        loop {
            if let Err(error) = runner.pass().await {
                super::report_error("local clustertree", &error);
            }
            tokio::time::sleep(runner.options.resync).await;
        }
    });
    LocalClustertrees { state, task }
}

struct Runner {
    host: Client,
    options: LocalClustertreeOptions,
    state: Shared,
}

/// Whether a Deployment should have a running pod.
fn wants_pod(deployment: &Deployment) -> bool {
    deployment.metadata.deletion_timestamp.is_none()
        && deployment
            .spec
            .as_ref()
            .is_some_and(|spec| spec.replicas.unwrap_or(1) > 0)
}

fn template_hash(deployment: &Deployment) -> String {
    let template = deployment.spec.as_ref().map(|spec| &spec.template);
    let bytes = serde_json::to_vec(&template).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

impl Runner {
    async fn pass(&self) -> Result<(), String> {
        let deployments = Api::<Deployment>::all(self.host.clone())
            .list(&ListParams::default().labels(&format!(
                "{COMPONENT_LABEL}={CLUSTERTREE_COMPONENT},{TENANT_NAME_LABEL}"
            )))
            .await
            .map_err(|e| format!("listing clustertree Deployments: {e}"))?;
        let wanted: BTreeMap<(String, String), &Deployment> = deployments
            .items
            .iter()
            .filter(|deployment| wants_pod(deployment))
            .filter_map(|deployment| {
                let namespace = deployment.namespace()?;
                let tenant = deployment.labels().get(TENANT_NAME_LABEL)?.clone();
                Some(((namespace, tenant), deployment))
            })
            .collect();
        let mut to_start = Vec::new();
        {
            let mut state = lock(&self.state);
            state.retain(|key, slot| {
                let keep = wanted
                    .get(key)
                    .is_some_and(|deployment| template_hash(deployment) == slot.template_hash);
                if !keep {
                    tracing::info!(namespace = %key.0, name = %key.1, "clustertree Deployment changed or gone; process stopped");
                }
                keep
            });
            let now = Instant::now();
            for (key, deployment) in &wanted {
                let slot = state.entry(key.clone()).or_insert_with(|| Slot {
                    template_hash: template_hash(deployment),
                    child: None,
                    log: self
                        .options
                        .work_dir
                        .join(format!("{}-{}", key.0, key.1))
                        .join("vc-clustertree.log"),
                    restarts: 0,
                    not_before: now,
                    last_error: None,
                });
                if let Some(child) = &mut slot.child
                    && let Ok(Some(status)) = child.try_wait()
                {
                    tracing::warn!(namespace = %key.0, name = %key.1, %status, log = %slot.log.display(), "vc-clustertree exited; restarting after a back-off");
                    slot.child = None;
                    slot.restarts += 1;
                    slot.last_error = Some(format!("exited with {status}"));
                    let backoff = Duration::from_millis(250)
                        .saturating_mul(1 << slot.restarts.min(5))
                        .min(MAX_BACKOFF);
                    slot.not_before = now + backoff;
                }
                if slot.child.is_none() && slot.not_before <= now {
                    to_start.push(((*deployment).clone(), key.clone()));
                }
            }
        }
        for (deployment, key) in to_start {
            let started = self.start(&deployment, &key.0).await;
            let mut state = lock(&self.state);
            let Some(slot) = state.get_mut(&key) else {
                continue;
            };
            match started {
                Ok(child) => {
                    tracing::info!(namespace = %key.0, name = %key.1, pid = child.id(), "vc-clustertree started");
                    slot.child = Some(child);
                    slot.last_error = None;
                }
                Err(error) => {
                    super::report_error("local clustertree", &error);
                    slot.last_error = Some(error);
                    slot.not_before = Instant::now() + Duration::from_secs(1);
                }
            }
        }
        Ok(())
    }

    /// Plans the clustertree container as a kubelet would, lays out its files and starts
    /// the binary.
    async fn start(&self, deployment: &Deployment, namespace: &str) -> Result<Child, String> {
        let name = deployment.name_any();
        let spec = deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.template.spec.as_ref())
            .ok_or_else(|| format!("Deployment {namespace}/{name} has no pod template spec"))?;
        let service_account = spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let identity = (self.options.identity)(namespace, &service_account)?;
        let services = self.service_map(namespace).await?;
        let sources = local_pod::read_volume_sources(&self.host, namespace).await?;
        let root = self.options.work_dir.join(format!(
            "{namespace}-{}",
            deployment
                .labels()
                .get(TENANT_NAME_LABEL)
                .cloned()
                .unwrap_or_else(|| name.clone())
        ));
        let placement = PodPlacement {
            pod_name: format!("{name}-local"),
            namespace: namespace.to_owned(),
            pod_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: BTreeMap::new(),
            root: root.join("pod"),
            claim_templates: Vec::new(),
            // A pod has port 10250 to itself; processes here share the machine (and
            // perhaps a real kubelet), so each kubelet API gets a free port.
            set_flags: vec![
                ("kubeconfig".to_owned(), identity.display().to_string()),
                (
                    "kubelet-listen".to_owned(),
                    format!("127.0.0.1:{}", free_port()?),
                ),
                // Likewise the DNS server, which no test here asks.
                ("dns-listen".to_owned(), "127.0.0.1:0".to_owned()),
                // Its endpoint in the tenant, which the controller waits for before
                // `Completed`: ready once the server answers, at an address that means
                // nothing here (no pod runs where it would resolve) but that a real
                // tenant apiserver accepts in an EndpointSlice, unlike loopback.
                ("dns-address".to_owned(), NOMINAL_DNS_ADDRESS.to_string()),
            ],
        };
        let mut plan = local_pod::plan(spec, Some(CONTAINER), &placement, &services, &sources)
            .map_err(|e| format!("planning {namespace}/{name}: {e}"))?;
        // The simulated tenant API servers cannot authenticate to the Service webhook
        // (the kubelet-client certificate of a real apiserver's admission configuration):
        // without a kubelet address the clustertree serves none, and mirrors and syncs
        // the rest; its DNS endpoint is named by `--dns-address` instead.
        plan.args
            .retain(|arg| !arg.starts_with("--kubelet-address"));
        plan.env.remove("POD_IP");
        plan.materialise()
            .map_err(|e| format!("laying out {namespace}/{name}: {e}"))?;
        let log = root.join("vc-clustertree.log");
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| format!("opening {}: {e}", log.display()))
        };
        plan.command(&self.options.binary)
            .args(&self.options.extra_args)
            .stdout(open()?)
            .stderr(open()?)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.options.binary.display()))
    }

    /// Every Service of the namespace, by cluster IP: where this machine's tenant
    /// apiservers listen.
    async fn service_map(&self, namespace: &str) -> Result<ServiceMap, String> {
        let services = Api::<Service>::namespaced(self.host.clone(), namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing Services in {namespace}: {e}"))?;
        let mut map = ServiceMap::new(&self.options.cluster_domain);
        for service in &services.items {
            let Some(spec) = &service.spec else { continue };
            let Some(ip) = spec
                .cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
            else {
                continue;
            };
            for port in spec.ports.iter().flatten() {
                let Ok(number) = u16::try_from(port.port) else {
                    continue;
                };
                map.insert(
                    namespace,
                    &service.name_any(),
                    number,
                    SocketAddr::new(ip, number),
                );
            }
        }
        Ok(map)
    }
}

/// A local port nothing listens on now.
fn free_port() -> Result<u16, String> {
    vc_test_apiserver::ports::free_port()
        .map_err(|e| format!("finding a free port for the kubelet API: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: Option<i32>, deleting: bool) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "prod-clustertree", "namespace": "team-a",
                "deletionTimestamp": deleting.then_some("2026-01-01T00:00:00Z"),
            },
            "spec": {"replicas": replicas, "selector": {}, "template": {"spec": {"containers": []}}},
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_is_wanted_unless_scaled_to_zero_or_deleting() {
        assert!(wants_pod(&deployment(None, false)));
        assert!(wants_pod(&deployment(Some(1), false)));
        assert!(!wants_pod(&deployment(Some(0), false)));
        assert!(!wants_pod(&deployment(Some(1), true)));
    }

    #[test]
    fn the_template_hash_follows_the_template_only() {
        let mut changed = deployment(Some(1), false);
        assert_eq!(
            template_hash(&changed),
            template_hash(&deployment(Some(3), false))
        );
        changed.spec.as_mut().unwrap().template.metadata = Some(Default::default());
        changed
            .spec
            .as_mut()
            .unwrap()
            .template
            .metadata
            .as_mut()
            .unwrap()
            .annotations = Some([("a".to_owned(), "b".to_owned())].into());
        assert_ne!(
            template_hash(&changed),
            template_hash(&deployment(Some(1), false))
        );
    }
}
