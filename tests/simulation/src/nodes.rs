//! Host Nodes as kubelets would register and keep them: capacity, allocatable, labels,
//! taints, addresses, a Ready condition and a heartbeat (Node status and the Lease in
//! `kube-node-lease`, which a real node-lifecycle controller watches).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::{SimError, SimHandle, now_rfc3339};

/// Namespace of node heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// Label marking a control-plane node.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// One simulated host node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpec {
    pub name: String,
    /// Kubernetes quantities, e.g. `8`, `32Gi`, `110`.
    pub cpu: String,
    pub memory: String,
    pub pods: String,
    /// Extra labels; `kubernetes.io/hostname`, `kubernetes.io/os` and
    /// `kubernetes.io/arch` are always set.
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub control_plane: bool,
    /// The InternalIP address reported in status.
    pub internal_ip: String,
}

impl NodeSpec {
    /// A worker with the defaults: 8 CPUs, 32Gi memory, 110 pods.
    pub fn new(name: &str) -> Self {
        NodeSpec {
            name: name.to_owned(),
            cpu: "8".to_owned(),
            memory: "32Gi".to_owned(),
            pods: "110".to_owned(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            control_plane: false,
            internal_ip: "127.0.0.1".to_owned(),
        }
    }

    /// A control-plane node: labelled and tainted the way kubeadm does it.
    pub fn control_plane(name: &str) -> Self {
        NodeSpec {
            control_plane: true,
            taints: vec![Taint {
                key: CONTROL_PLANE_LABEL.to_owned(),
                effect: "NoSchedule".to_owned(),
                ..Taint::default()
            }],
            ..NodeSpec::new(name)
        }
    }

    pub fn with_capacity(mut self, cpu: &str, memory: &str) -> Self {
        cpu.clone_into(&mut self.cpu);
        memory.clone_into(&mut self.memory);
        self
    }

    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn with_taint(mut self, taint: Taint) -> Self {
        self.taints.push(taint);
        self
    }

    fn all_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert("kubernetes.io/hostname".to_owned(), self.name.clone());
        labels.insert("kubernetes.io/os".to_owned(), "linux".to_owned());
        labels.insert("kubernetes.io/arch".to_owned(), "amd64".to_owned());
        if self.control_plane {
            labels.insert(CONTROL_PLANE_LABEL.to_owned(), String::new());
        }
        labels
    }

    /// The Node object a kubelet registers (status is written separately).
    pub fn node(&self) -> Node {
        let value = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": self.all_labels()},
            "spec": {"taints": if self.taints.is_empty() { Value::Null } else { json!(self.taints) }},
        });
        // The JSON above always has Node's shape.
        serde_json::from_value(value).unwrap_or_default()
    }

    /// The status a kubelet reports; `ready` decides the Ready condition.
    pub fn status(&self, ready: bool, now: &str) -> Value {
        let resources = json!({
            "cpu": self.cpu, "memory": self.memory, "pods": self.pods, "ephemeral-storage": "100Gi"
        });
        let condition = |type_: &str, status: &str, reason: &str, message: &str| {
            json!({
                "type": type_, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": now
            })
        };
        let ready_condition = if ready {
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
            )
        } else {
            condition(
                "Ready",
                "Unknown",
                "NodeStatusUnknown",
                "Kubelet stopped posting node status.",
            )
        };
        json!({
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": [
                    condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                    condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                    condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                    ready_condition,
                ],
                "addresses": [
                    {"type": "InternalIP", "address": self.internal_ip},
                    {"type": "Hostname", "address": self.name},
                ],
                "nodeInfo": {
                    "architecture": "amd64", "operatingSystem": "linux", "osImage": "kosmos-vc simulated node",
                    "kernelVersion": "6.1.0", "containerRuntimeVersion": "sim://1.0",
                    "kubeletVersion": "v1.33.4", "kubeProxyVersion": "", "machineID": "", "systemUUID": "",
                    "bootID": ""
                },
            }
        })
    }
}

/// `node1..nodeN` workers with the default capacity.
pub fn default_nodes(count: usize) -> Vec<NodeSpec> {
    (1..=count)
        .map(|i| NodeSpec::new(&format!("node{i}")))
        .collect()
}

/// How the fleet behaves.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// Heartbeat period (Node Ready condition + Lease); `None` writes status once only.
    pub heartbeat: Option<Duration>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            heartbeat: Some(Duration::from_secs(10)),
        }
    }
}

/// The simulated kubelets of a set of nodes. Dropping it stops the heartbeats (the Node
/// objects stay, like nodes whose kubelet died).
pub struct NodeFleet {
    client: Client,
    specs: Vec<NodeSpec>,
    ready: Arc<Mutex<BTreeMap<String, bool>>>,
    handle: SimHandle,
}

impl NodeFleet {
    /// Registers every node (creating it, or taking over an existing one), writes its
    /// status, then keeps heartbeating in the background.
    pub async fn start(
        client: Client,
        specs: Vec<NodeSpec>,
        options: FleetOptions,
    ) -> Result<Self, SimError> {
        let ready: BTreeMap<String, bool> = specs.iter().map(|s| (s.name.clone(), true)).collect();
        let ready = Arc::new(Mutex::new(ready));
        for spec in &specs {
            register(&client, spec).await?;
            write_status(&client, spec, true).await?;
        }
        let mut tasks = Vec::new();
        if let Some(period) = options.heartbeat {
            ensure_lease_namespace(&client).await;
            let (client, specs, ready) = (client.clone(), specs.clone(), ready.clone());
            tasks.push(tokio::spawn(async move {
                let mut ticker = tokio::time::interval(period);
                ticker.tick().await;
                loop {
                    ticker.tick().await;
                    heartbeat_all(&client, &specs, &ready).await;
                }
            }));
        }
        Ok(NodeFleet {
            client,
            specs,
            ready,
            handle: SimHandle::new(tasks),
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.specs.iter().map(|s| s.name.clone()).collect()
    }

    /// Marks a node Ready or NotReady (condition `Unknown`, as when its kubelet stops).
    pub async fn set_ready(&self, name: &str, ready: bool) -> Result<(), SimError> {
        let spec = self.spec(name)?;
        // Held across the write, so a heartbeat in flight cannot overwrite it.
        let mut states = self.ready.lock().await;
        states.insert(name.to_owned(), ready);
        write_status(&self.client, spec, ready).await
    }

    /// Cordons (`unschedulable: true`) or uncordons a node, as `kubectl cordon` does.
    pub async fn cordon(&self, name: &str, unschedulable: bool) -> Result<(), SimError> {
        self.spec(name)?;
        let patch = json!({"spec": {"unschedulable": if unschedulable { json!(true) } else { Value::Null }}});
        Api::<Node>::all(self.client.clone())
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(|source| SimError::CordonNode {
                name: name.to_owned(),
                source: Box::new(source),
            })
    }

    /// Stops the heartbeats.
    pub fn stop(self) {
        self.handle.stop();
    }

    fn spec(&self, name: &str) -> Result<&NodeSpec, SimError> {
        self.specs
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| SimError::UnknownNode {
                name: name.to_owned(),
                known: self.names().join(", "),
            })
    }
}

impl std::fmt::Debug for NodeFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeFleet")
            .field("nodes", &self.names())
            .finish_non_exhaustive()
    }
}

async fn register(client: &Client, spec: &NodeSpec) -> Result<(), SimError> {
    let api = Api::<Node>::all(client.clone());
    match api.create(&PostParams::default(), &spec.node()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(SimError::CreateNode {
            name: spec.name.clone(),
            source: Box::new(source),
        }),
    }
}

pub(super) async fn write_status(
    client: &Client,
    spec: &NodeSpec,
    ready: bool,
) -> Result<(), SimError> {
    let status = spec.status(ready, &now_rfc3339());
    Api::<Node>::all(client.clone())
        .patch_status(&spec.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map(drop)
        .map_err(|source| SimError::WriteNodeStatus {
            name: spec.name.clone(),
            source: Box::new(source),
        })
}

async fn heartbeat_all(client: &Client, specs: &[NodeSpec], ready: &Mutex<BTreeMap<String, bool>>) {
    for spec in specs {
        let states = ready.lock().await;
        if !states.get(&spec.name).copied().unwrap_or(true) {
            continue;
        }
        if let Err(error) = write_status(client, spec, true).await {
            super::report_error("node heartbeat failed", &error);
        }
        drop(states);
        if let Err(error) = renew_lease(client, &spec.name).await {
            super::report_error("node lease renewal failed", &error);
        }
    }
}

/// A real apiserver creates `kube-node-lease` itself; the test API server may not.
async fn ensure_lease_namespace(client: &Client) {
    let namespace: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(json!({
        "metadata": {"name": NODE_LEASE_NAMESPACE}
    }))
    .unwrap_or_default();
    let api = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    if let Err(error) = api.create(&PostParams::default(), &namespace).await {
        tracing::debug!(%error, "creating {NODE_LEASE_NAMESPACE} (usually: it exists)");
    }
}

/// The kubelet's Lease, created on first renewal (server-side apply keeps it idempotent).
pub(super) async fn renew_lease(client: &Client, name: &str) -> Result<(), SimError> {
    let api: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": NODE_LEASE_NAMESPACE},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now}
    });
    api.patch(
        name,
        &PatchParams::apply("kubelet").force(),
        &Patch::Apply(&lease),
    )
    .await
    .map(drop)
    .map_err(|source| SimError::RenewLease {
        name: name.to_owned(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_nodes_are_numbered_workers_with_default_capacity() {
        let nodes = default_nodes(3);
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["node1", "node2", "node3"]);
        assert_eq!(
            (
                nodes[0].cpu.as_str(),
                nodes[0].memory.as_str(),
                nodes[0].pods.as_str()
            ),
            ("8", "32Gi", "110")
        );
    }

    #[test]
    fn node_object_carries_labels_and_taints() {
        let node = NodeSpec::control_plane("cp1")
            .with_label("zone", "a")
            .node();
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "cp1");
        assert_eq!(labels["zone"], "a");
        assert!(labels.contains_key(CONTROL_PLANE_LABEL));
        let taints = node.spec.unwrap().taints.unwrap();
        assert_eq!(
            (taints[0].key.as_str(), taints[0].effect.as_str()),
            (CONTROL_PLANE_LABEL, "NoSchedule")
        );
        assert!(NodeSpec::new("w").node().spec.unwrap().taints.is_none());
    }

    #[test]
    fn status_reports_capacity_and_readiness() {
        let spec = NodeSpec::new("node1").with_capacity("16", "64Gi");
        let status = spec.status(true, "2026-01-01T00:00:00Z");
        assert_eq!(status["status"]["capacity"]["cpu"], "16");
        assert_eq!(status["status"]["allocatable"]["memory"], "64Gi");
        let ready = |s: &Value| {
            s["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Ready")
                .unwrap()["status"]
                .clone()
        };
        assert_eq!(ready(&status), "True");
        assert_eq!(
            ready(&spec.status(false, "2026-01-01T00:00:00Z")),
            "Unknown"
        );
    }
}
