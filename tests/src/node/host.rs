//! A real host whose pods run: the envtest control plane, made reachable from pods, with
//! the real node `node1` and the cluster DNS pods resolve Service names through.
//!
//! What a real cluster gives its pods and envtest alone does not:
//! - kube-apiserver on an address of this machine outside loopback ([`HOST_ADDRESS`],
//!   added to `lo`), advertised as the `kubernetes` Service's endpoint, so in-cluster
//!   clients in pods reach it through the Service's cluster IP;
//! - a Service range outside loopback ([`SERVICE_CIDR`]), which kube-proxy on the node
//!   routes for pods and for this machine;
//! - cluster DNS at [`CLUSTER_DNS`] (Service `kube-system/kube-dns`), served by the DNS
//!   server vc-clustertree gives every tenant, here answering from the host's Services:
//!   no CoreDNS image or binary can be had on this machine, so the same server that
//!   tenants get stands in for the host's;
//! - the ConfigMap this build's ServiceAccount admission adds to every token volume
//!   (`openshift-service-ca.crt`, see `../shared/k8s/README.md`), in the namespaces asked.
//!
//! `node1` is labelled as the host's control-plane node ([`CONTROL_PLANE_ROLE_LABEL`]):
//! the tenants' control planes run there, and it is neither promotable nor in the pool.
//! Workers beside it ([`NodeHost::start_worker`], `node2` and up) share the machine and
//! node1's kube-proxy, and run what tenants run on the nodes they claim.
//!
//! Everything is undone by [`NodeHost::stop`], which also reports what the machine
//! kept compared to before [`NodeHost::prepare`].

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::{MachineState, NodeError, NodeOptions, RealNode};
use vc_test_apiserver::envtest::{Envtest, EnvtestOptions};

/// Where the host's kube-apiserver listens; added to `lo` by [`NodeHost::prepare`].
pub const HOST_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 244, 254, 1);
/// The host's Service range: the controller's default tenant range too, as vc-clustertree
/// expects (tenant Services take their host twins' cluster IPs).
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// The host's cluster DNS Service address, which the kubelet gives `ClusterFirst` pods.
pub const CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The label that makes `node1` the host's control-plane node.
pub const CONTROL_PLANE_ROLE_LABEL: &str = "node-role.kubernetes.io/control-plane";
/// The field manager of what this module writes on the host.
const MANAGER: &str = "vc-tests-node-host";
/// The ConfigMap this apiserver build's ServiceAccount admission projects into tokens.
const SERVICE_CA_CONFIG_MAP: &str = "openshift-service-ca.crt";
/// The hostpath provisioner's directory (kube-controller-manager's
/// `--enable-hostpath-provisioner` provisions under `/tmp/hostpath_pv`).
const HOSTPATH_PROVISIONER_DIR: &str = "/tmp/hostpath_pv";

/// Why the host could not be made ready for real pods.
#[derive(Debug, thiserror::Error)]
pub enum NodeHostError {
    #[error("adding {address} to lo: {reason}")]
    AddAddress { address: Ipv4Addr, reason: String },
    #[error("starting the real node: {0}")]
    Node(#[from] NodeError),
    #[error("writing {what} on the host: {source}")]
    Write {
        what: &'static str,
        source: kube::Error,
    },
    #[error("serving the host's cluster DNS on {address}: {reason}")]
    Dns { address: SocketAddr, reason: String },
}

/// The real node and what surrounds it. Made in two steps: [`NodeHost::prepare`] before
/// envtest starts (with [`NodeHost::envtest_options`]), [`NodeHost::start_node`] after.
/// Dropping it at any point undoes what was done.
pub struct NodeHost {
    /// `node1` first, then the workers in the order they started.
    pub nodes: Vec<RealNode>,
    /// Released once everything is undone; its record holds the machine as the run found
    /// it.
    guard: Option<std::sync::Arc<super::guard::MachineGuard>>,
    dns: Option<tokio::task::JoinHandle<()>>,
    stop_dns: Option<tokio::sync::oneshot::Sender<()>>,
    stopped: bool,
}

impl std::fmt::Debug for NodeHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHost")
            .field(
                "nodes",
                &self
                    .nodes
                    .iter()
                    .map(|node| node.options.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl NodeHost {
    /// Holds the machine for this run ([`super::guard`]), reads it and adds
    /// [`HOST_ADDRESS`] to `lo`.
    pub async fn prepare() -> Result<Self, NodeHostError> {
        let guard = super::guard::MachineGuard::acquire().await?;
        guard.note(|record| {
            record.loopback_addresses.push(format!("{HOST_ADDRESS}/32"));
        })?;
        let output = std::process::Command::new("ip")
            .args(["addr", "add", &format!("{HOST_ADDRESS}/32"), "dev", "lo"])
            .output()
            .map_err(|error| NodeHostError::AddAddress {
                address: HOST_ADDRESS,
                reason: error.to_string(),
            })?;
        if !output.status.success() {
            return Err(NodeHostError::AddAddress {
                address: HOST_ADDRESS,
                reason: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(NodeHost {
            guard: Some(guard),
            nodes: Vec::new(),
            dns: None,
            stop_dns: None,
            stopped: false,
        })
    }

    /// The envtest options that make the host's apiserver and Services reachable from
    /// the node's pods.
    pub fn envtest_options(&self, base: EnvtestOptions) -> EnvtestOptions {
        EnvtestOptions {
            service_cidr: SERVICE_CIDR.to_owned(),
            address: HOST_ADDRESS,
            ..base
        }
    }

    /// Starts the host's DNS, `node1` against `host` (cluster DNS [`CLUSTER_DNS`]), and
    /// the service-CA ConfigMap in `token_namespaces`. `control_plane`: label `node1` the
    /// host's control-plane node (never promoted, outside the pool); otherwise it runs
    /// tenants' pool pods too.
    pub async fn start_node(
        &mut self,
        host: &Envtest,
        admin: &Client,
        assets: &Path,
        dir: &Path,
        token_namespaces: &[&str],
        control_plane: bool,
    ) -> Result<&RealNode, NodeHostError> {
        let (stop_dns, stopped) = tokio::sync::oneshot::channel::<()>();
        self.stop_dns = Some(stop_dns);
        self.dns = Some(
            host_dns(admin.clone(), async move {
                let _stopped_or_dropped = stopped.await;
            })
            .await?,
        );
        self.publish(admin, token_namespaces).await?;
        let options = NodeOptions {
            cluster_dns: Some(CLUSTER_DNS),
            ..NodeOptions::default()
        };
        let node = self.push(RealNode::start(host, assets, dir, options).await?);
        if !control_plane {
            return Ok(node);
        }
        // The host's control-plane node, as a kubeadm control-plane node is labelled (the
        // kubelet may not set node-role labels itself): what runs the tenants' control
        // planes, never promoted and outside the shared pool.
        let labels = json!({"metadata": {"labels": {CONTROL_PLANE_ROLE_LABEL: ""}}});
        Api::<k8s_openapi::api::core::v1::Node>::all(admin.clone())
            .patch(
                &node.options.name,
                &PatchParams::default(),
                &Patch::Merge(labels),
            )
            .await
            .map_err(|source| NodeHostError::Write {
                what: "the control-plane role label of node1",
                source,
            })?;
        Ok(node)
    }

    /// Starts worker `node{index}` beside node1 ([`NodeOptions::worker`]) against `host`,
    /// with the host's cluster DNS. Start node1 first: the workers use its kube-proxy.
    pub async fn start_worker(
        &mut self,
        host: &Envtest,
        assets: &Path,
        dir: &Path,
        index: u8,
    ) -> Result<&RealNode, NodeHostError> {
        let options = NodeOptions {
            cluster_dns: Some(CLUSTER_DNS),
            ..NodeOptions::worker(index)
        };
        let node = RealNode::start(host, assets, dir, options).await?;
        Ok(self.push(node))
    }

    fn push(&mut self, node: RealNode) -> &RealNode {
        self.nodes.push(node);
        let last = self.nodes.len() - 1;
        &self.nodes[last]
    }

    /// The real node named `name`.
    pub fn node(&self, name: &str) -> Option<&RealNode> {
        self.nodes.iter().find(|node| node.options.name == name)
    }

    /// The `kube-dns` Service and its endpoint (this machine), and the service-CA
    /// ConfigMaps.
    async fn publish(
        &self,
        admin: &Client,
        token_namespaces: &[&str],
    ) -> Result<(), NodeHostError> {
        let apply = PatchParams::apply(MANAGER).force();
        let service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {"clusterIP": CLUSTER_DNS.to_string(), "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": HOST_DNS_PORT},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": HOST_DNS_PORT},
            ]},
        });
        Api::<Service>::namespaced(admin.clone(), "kube-system")
            .patch("kube-dns", &apply, &Patch::Apply(service))
            .await
            .map_err(|source| NodeHostError::Write {
                what: "Service kube-system/kube-dns",
                source,
            })?;
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kube-dns-host", "namespace": "kube-system", "labels": {
                "kubernetes.io/service-name": "kube-dns",
                "endpointslice.kubernetes.io/managed-by": MANAGER,
            }},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [HOST_ADDRESS.to_string()], "conditions": {"ready": true}}],
            "ports": [
                {"name": "dns", "port": HOST_DNS_PORT, "protocol": "UDP"},
                {"name": "dns-tcp", "port": HOST_DNS_PORT, "protocol": "TCP"},
            ],
        });
        Api::<EndpointSlice>::namespaced(admin.clone(), "kube-system")
            .patch("kube-dns-host", &apply, &Patch::Apply(slice))
            .await
            .map_err(|source| NodeHostError::Write {
                what: "EndpointSlice kube-system/kube-dns-host",
                source,
            })?;
        for namespace in token_namespaces {
            let config_map = json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": SERVICE_CA_CONFIG_MAP, "namespace": namespace},
                "data": {"service-ca.crt": ""},
            });
            Api::<ConfigMap>::namespaced(admin.clone(), namespace)
                .patch(SERVICE_CA_CONFIG_MAP, &apply, &Patch::Apply(config_map))
                .await
                .map_err(|source| NodeHostError::Write {
                    what: "the service-CA ConfigMap",
                    source,
                })?;
        }
        Ok(())
    }

    /// Stops the node and the DNS, removes [`HOST_ADDRESS`] and what the hostpath
    /// provisioner left, and says what the machine kept compared to before. Stop the
    /// host's control plane after this, so nothing waits on a vanished apiserver.
    pub fn stop(&mut self) -> Vec<String> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        // Every node's programs first, then each node undoes its part of the machine,
        // the last started first: each restores what the machine was when it started.
        let mut problems: Vec<String> = self
            .nodes
            .iter_mut()
            .rev()
            .flat_map(RealNode::stop_programs)
            .collect();
        problems.extend(self.nodes.iter_mut().rev().flat_map(RealNode::stop));
        if let Some(stop) = self.stop_dns.take() {
            let _already_stopped = stop.send(());
        }
        if let Some(task) = self.dns.take() {
            task.abort();
        }
        let output = std::process::Command::new("ip")
            .args(["addr", "del", &format!("{HOST_ADDRESS}/32"), "dev", "lo"])
            .output();
        match output {
            Ok(output) if output.status.success() => {}
            Ok(output) => problems.push(format!(
                "removing {HOST_ADDRESS} from lo: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )),
            Err(error) => problems.push(format!("removing {HOST_ADDRESS} from lo: {error}")),
        }
        let record = self
            .guard
            .as_ref()
            .and_then(|guard| guard.record())
            .unwrap_or_default();
        // The volumes provisioned meanwhile: their claims die with the host, so the
        // provisioner never deletes them.
        problems.extend(remove_hostpath_since(record.hostpath_before.as_ref()));
        let after = MachineState::read();
        if record.before.as_ref() != Some(&after) {
            problems.push(format!(
                "the machine changed: before {:?}, after {after:?}",
                record.before
            ));
        }
        if let Some(guard) = self.guard.take()
            && !problems.is_empty()
        {
            guard.keep_record();
        }
        problems
    }
}

impl Drop for NodeHost {
    fn drop(&mut self) {
        let problems = self.stop();
        if !problems.is_empty() {
            eprintln!("stopping the real node host: {problems:#?}");
        }
    }
}

/// Removes what the hostpath provisioner's directory holds beyond `before` (all of it
/// when it did not exist before); says what could not be removed.
pub(crate) fn remove_hostpath_since(
    before: Option<&std::collections::BTreeSet<String>>,
) -> Vec<String> {
    let dir = Path::new(HOSTPATH_PROVISIONER_DIR);
    let Some(before) = before else {
        return remove_all(dir).into_iter().collect();
    };
    hostpath_entries()
        .unwrap_or_default()
        .difference(before)
        .filter_map(|entry| remove_all(&dir.join(entry)))
        .collect()
}

fn remove_all(path: &Path) -> Option<String> {
    match std::fs::remove_dir_all(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Some(format!("removing {}: {error}", path.display()))
        }
        _ => None,
    }
}

/// The entries of the hostpath provisioner's directory, `None` when it does not exist.
pub(crate) fn hostpath_entries() -> Option<std::collections::BTreeSet<String>> {
    let entries = std::fs::read_dir(HOSTPATH_PROVISIONER_DIR).ok()?;
    Some(
        entries
            .filter_map(|entry| Some(entry.ok()?.file_name().to_string_lossy().into_owned()))
            .collect(),
    )
}

/// The port the host's DNS listens on at [`HOST_ADDRESS`] (kube-proxy maps port 53 of
/// [`CLUSTER_DNS`] to it).
pub const HOST_DNS_PORT: u16 = 10053;

/// The host's cluster DNS: vc-clustertree's DNS server over the host's Services and
/// EndpointSlices, on [`HOST_ADDRESS`]:[`HOST_DNS_PORT`], until `stop`; names outside
/// `cluster.local` go to this machine's resolver.
async fn host_dns(
    client: Client,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, NodeHostError> {
    use vc_clustertree::dns;
    let address = SocketAddr::from((HOST_ADDRESS, HOST_DNS_PORT));
    let failed = |reason: String| NodeHostError::Dns { address, reason };
    let zone = dns::Zone::new("cluster.local", 5).map_err(|error| failed(error.to_string()))?;
    let listeners = dns::serve::Listeners::bind(address)
        .await
        .map_err(|error| failed(error.to_string()))?;
    let stopping = tokio_util::sync::CancellationToken::new();
    let server = dns::run(
        client,
        listeners,
        zone,
        None,
        dns::upstream::system_servers(),
        tokio::sync::watch::channel(false).0,
        stopping.clone(),
    );
    Ok(tokio::spawn(async move {
        let stop = async move {
            stop.await;
            stopping.cancel();
        };
        tokio::join!(server, stop);
    }))
}
