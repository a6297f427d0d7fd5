//! The clustertree's visible effect inside a tenant: one virtual Node per leaf of the
//! Kosmos `Cluster` objects there, while the tenant's clustertree Deployment is ready.
//!
//! For a ready Deployment labelled `app.kubernetes.io/component=clustertree` and
//! `vc.kosmos.io/virtualcluster=NAME`, this reads the tenant admin kubeconfig from Secret
//! `NAME-admin-kubeconfig` (key `kubeconfig-internal`, else `kubeconfig`), points it at
//! the cluster IP of Service `NAME-apiserver` (cluster DNS does not resolve here), and
//! keeps the tenant's virtual Nodes equal to the leaves of every enabled `Cluster`
//! (`kosmos.io/v1alpha1`, read as `DynamicObject`): a leaf for host node `X` gets X's
//! allocatable resources; a leaf selecting nodes by label gets the Cluster's
//! `pooledResources`, or else the sum over the matching host nodes. Leaves that
//! disappear lose their Node. When the clustertree stops, its Nodes stay (as real leaf
//! nodes would, until someone removes them).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Secret, Service, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use serde_json::{Value, json};
use tokio::sync::Notify;
use vc_api::constants::{
    COMPONENT_LABEL, KUBECONFIG_INTERNAL_SECRET_KEY, KUBECONFIG_SECRET_KEY, TENANT_NAME_LABEL,
    admin_kubeconfig_secret_name,
};

use super::nodes::NodeSpec;
use super::tenant_apiserver::{APISERVER_COMPONENT, service_socket};
use super::workloads::deployment_is_ready;
use super::{SimError, SimHandle, now_rfc3339, wait_for_next_pass, watch_store};
use crate::rbac::label_selector_matches;

/// Component label value of the clustertree Deployment.
pub const CLUSTERTREE_COMPONENT: &str = "clustertree";
/// Label Kosmos puts on leaf nodes; virtual nodes without it are never touched.
pub const LEAF_NODE_LABEL: &str = "kosmos.io/node";

/// How the simulator behaves.
#[derive(Clone, Debug)]
pub struct ClusterTreeOptions {
    /// Only this namespace (`None`: all).
    pub namespace: Option<String>,
    /// How often each running clustertree re-reads the tenant's Cluster objects.
    pub poll: Duration,
    pub resync: Duration,
}

impl Default for ClusterTreeOptions {
    fn default() -> Self {
        ClusterTreeOptions {
            namespace: None,
            poll: Duration::from_millis(500),
            resync: Duration::from_secs(2),
        }
    }
}

/// One leaf node to register in the tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct Leaf {
    pub name: String,
    pub cpu: String,
    pub memory: String,
    pub pods: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
}

/// The leaves the Cluster objects ask for, sized from the host nodes.
pub fn desired_leaves(clusters: &[Value], host_nodes: &[Arc<Node>]) -> Vec<Leaf> {
    let mut leaves = Vec::new();
    for cluster in clusters {
        let Some(options) = cluster.pointer("/spec/clusterTreeOptions") else {
            continue;
        };
        if options.get("enable").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let pooled = options.get("pooledResources");
        for model in options
            .get("leafModels")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(leaf) = leaf_of(model, pooled, host_nodes) {
                leaves.push(leaf);
            }
        }
    }
    leaves.sort_by(|a, b| a.name.cmp(&b.name));
    leaves.dedup_by(|a, b| a.name == b.name);
    leaves
}

fn leaf_of(model: &Value, pooled: Option<&Value>, host_nodes: &[Arc<Node>]) -> Option<Leaf> {
    let node_name = model
        .pointer("/nodeSelector/nodeName")
        .and_then(Value::as_str);
    let name = model
        .get("leafNodeName")
        .and_then(Value::as_str)
        .or(node_name)?
        .to_owned();
    let (cpu, memory, pods) = match node_name {
        Some(host) => {
            let node = host_nodes.iter().find(|n| n.name_any() == host)?;
            (
                allocatable(node, "cpu")?,
                allocatable(node, "memory")?,
                allocatable(node, "pods").unwrap_or_else(|| "110".to_owned()),
            )
        }
        None => {
            let selector: LabelSelector = model
                .pointer("/nodeSelector/labelSelector")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default();
            let matching: Vec<&Arc<Node>> = host_nodes
                .iter()
                .filter(|n| label_selector_matches(&selector, n.labels()).unwrap_or(false))
                .collect();
            let pooled_value = |key: &str| pooled.and_then(|p| p.get(key)).map(quantity_text);
            let sum = |key: &str, cpu: bool| {
                let total: f64 = matching
                    .iter()
                    .filter_map(|n| allocatable(n, key))
                    .filter_map(|q| parse_quantity(&q))
                    .sum();
                format_quantity(total, cpu)
            };
            (
                pooled_value("cpu").unwrap_or_else(|| sum("cpu", true)),
                pooled_value("memory").unwrap_or_else(|| sum("memory", false)),
                format_quantity(
                    matching
                        .iter()
                        .filter_map(|n| allocatable(n, "pods"))
                        .filter_map(|q| parse_quantity(&q))
                        .sum(),
                    false,
                ),
            )
        }
    };
    let labels: BTreeMap<String, String> = model
        .get("labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    // Only the taints the leaf model declares: a tenant's real scheduler places nothing
    // on a node tainted by default (as upstream Kosmos taints leaves), and a tenant's
    // pods must schedule as in any cluster.
    let taints: Vec<Taint> = model
        .get("taints")
        .and_then(|t| serde_json::from_value(t.clone()).ok())
        .unwrap_or_default();
    Some(Leaf {
        name,
        cpu,
        memory,
        pods,
        labels,
        taints,
    })
}

fn allocatable(node: &Node, resource: &str) -> Option<String> {
    let status = node.status.as_ref()?;
    status
        .allocatable
        .as_ref()
        .or(status.capacity.as_ref())?
        .get(resource)
        .map(|q| q.0.clone())
}

fn quantity_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A Kubernetes quantity in base units (cores, bytes, count).
pub fn parse_quantity(text: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("m", 0.001),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("", 1.0),
    ];
    SUFFIXES.iter().find_map(|(suffix, factor)| {
        let number = text.strip_suffix(suffix)?;
        number.parse::<f64>().ok().map(|n| n * factor)
    })
}

/// Formats a sum: CPU in whole cores or millicores, everything else as an integer.
pub fn format_quantity(value: f64, cpu: bool) -> String {
    if cpu && value.fract() != 0.0 {
        return format!("{}m", (value * 1000.0).round());
    }
    format!("{}", value.round())
}

/// The virtual Node for a leaf (status written separately).
fn leaf_node_spec(leaf: &Leaf) -> NodeSpec {
    let mut labels = leaf.labels.clone();
    labels.insert(LEAF_NODE_LABEL.to_owned(), "true".to_owned());
    labels.insert("type".to_owned(), "virtual-kubelet".to_owned());
    labels.insert("kubernetes.io/role".to_owned(), "agent".to_owned());
    NodeSpec {
        name: leaf.name.clone(),
        cpu: leaf.cpu.clone(),
        memory: leaf.memory.clone(),
        pods: leaf.pods.clone(),
        labels,
        taints: leaf.taints.clone(),
        control_plane: false,
        internal_ip: "127.0.0.1".to_owned(),
    }
}

/// Starts the simulator.
pub fn spawn(host: Client, options: ClusterTreeOptions) -> SimHandle {
    let notify = Arc::new(Notify::new());
    let (deployments_api, services_api) = match &options.namespace {
        Some(ns) => (
            Api::<Deployment>::namespaced(host.clone(), ns),
            Api::<Service>::namespaced(host.clone(), ns),
        ),
        None => (Api::all(host.clone()), Api::all(host.clone())),
    };
    let tree_config =
        watcher::Config::default().labels(&format!("{COMPONENT_LABEL}={CLUSTERTREE_COMPONENT}"));
    let service_config =
        watcher::Config::default().labels(&format!("{COMPONENT_LABEL}={APISERVER_COMPONENT}"));
    let (deployments, t1) = watch_store(deployments_api, tree_config, notify.clone());
    let (services, t2) = watch_store(services_api, service_config, notify.clone());
    let (nodes, t3) = watch_store(
        Api::<Node>::all(host.clone()),
        watcher::Config::default(),
        notify.clone(),
    );
    let resync = options.resync;
    let t4 = tokio::spawn(async move {
        if deployments.wait_until_ready().await.is_err()
            || services.wait_until_ready().await.is_err()
            || nodes.wait_until_ready().await.is_err()
        {
            return;
        }
        let mut running: HashMap<(String, String), SimHandle> = HashMap::new();
        loop {
            let ready: Vec<(String, String)> = deployments
                .state()
                .iter()
                .filter(|d| deployment_is_ready(d))
                .filter_map(|d| Some((d.namespace()?, d.labels().get(TENANT_NAME_LABEL)?.clone())))
                .collect();
            running.retain(|key, _| ready.contains(key));
            for key in ready {
                running.entry(key.clone()).or_insert_with(|| {
                    let tree = TenantTree {
                        host: host.clone(),
                        namespace: key.0.clone(),
                        name: key.1.clone(),
                        services: services.clone(),
                        nodes: nodes.clone(),
                    };
                    let poll = options.poll;
                    SimHandle::new(vec![tokio::spawn(async move { tree.run(poll).await })])
                });
            }
            wait_for_next_pass(&notify, None, resync).await;
        }
    });
    SimHandle::new(vec![t1, t2, t3, t4])
}

/// The simulated clustertree of one tenant.
struct TenantTree {
    host: Client,
    namespace: String,
    name: String,
    services: Store<Service>,
    nodes: Store<Node>,
}

/// How often the virtual Nodes' Leases and Ready condition are renewed: a tenant's real
/// node-lifecycle controller marks a node silent for 40 s NotReady and taints it, after
/// which its scheduler places nothing there.
const HEARTBEAT: Duration = Duration::from_secs(10);

impl TenantTree {
    async fn run(self, poll: Duration) {
        let mut tenant: Option<Client> = None;
        let mut last_heartbeat: Option<tokio::time::Instant> = None;
        loop {
            if tenant.is_none() {
                match self.connect().await {
                    Ok(client) => tenant = Some(client),
                    Err(error) => {
                        super::report_error("clustertree cannot reach its tenant yet", &error)
                    }
                }
            }
            if let Some(client) = &tenant {
                if let Err(error) = self.sync(client).await {
                    super::report_error("clustertree sync failed; retrying", &error);
                } else if last_heartbeat.is_none_or(|at| at.elapsed() >= HEARTBEAT) {
                    self.heartbeat(client).await;
                    last_heartbeat = Some(tokio::time::Instant::now());
                }
            }
            tokio::time::sleep(poll).await;
        }
    }

    fn error(&self, what: &'static str, reason: String) -> SimError {
        SimError::ReadTenant {
            what,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            reason,
        }
    }

    /// A client for the tenant from its admin kubeconfig, aimed at the cluster IP.
    async fn connect(&self) -> Result<Client, SimError> {
        let secret_name = admin_kubeconfig_secret_name(&self.name);
        let secret = Api::<Secret>::namespaced(self.host.clone(), &self.namespace)
            .get(&secret_name)
            .await
            .map_err(|e| self.error("the admin kubeconfig Secret", e.to_string()))?;
        let data = secret.data.unwrap_or_default();
        let text = data
            .get(KUBECONFIG_INTERNAL_SECRET_KEY)
            .or_else(|| data.get(KUBECONFIG_SECRET_KEY))
            .ok_or_else(|| {
                self.error(
                    "the admin kubeconfig Secret",
                    format!("{secret_name} has no key {KUBECONFIG_INTERNAL_SECRET_KEY}"),
                )
            })?;
        let text = String::from_utf8(text.0.clone())
            .map_err(|_| self.error("the admin kubeconfig", "not UTF-8".to_owned()))?;
        let service_name = format!("{}-apiserver", self.name);
        let address = self
            .services
            .state()
            .iter()
            .find(|s| {
                s.namespace().as_deref() == Some(self.namespace.as_str())
                    && s.name_any() == service_name
            })
            .and_then(|s| service_socket(s))
            .ok_or_else(|| {
                self.error(
                    "the cluster IP of Service NAME-apiserver",
                    "no such Service".to_owned(),
                )
            })?;
        let mut kubeconfig = Kubeconfig::from_yaml(&text)
            .map_err(|e| self.error("the admin kubeconfig", e.to_string()))?;
        for cluster in kubeconfig
            .clusters
            .iter_mut()
            .filter_map(|c| c.cluster.as_mut())
        {
            cluster.server = Some(format!("https://{address}"));
        }
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| self.error("the admin kubeconfig", e.to_string()))?;
        Client::try_from(config).map_err(|e| SimError::ConnectTenant {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            reason: e.to_string(),
        })
    }

    async fn sync(&self, tenant: &Client) -> Result<(), SimError> {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("kosmos.io", "v1alpha1", "Cluster"),
            "clusters",
        );
        let clusters = Api::<DynamicObject>::all_with(tenant.clone(), &resource)
            .list(&ListParams::default())
            .await
            .map_err(|source| SimError::ListTenantClusters {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source: Box::new(source),
            })?;
        let clusters: Vec<Value> = clusters
            .items
            .iter()
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect();
        let leaves = desired_leaves(&clusters, &self.nodes.state());
        let api = Api::<Node>::all(tenant.clone());
        let existing = api
            .list(&ListParams::default().labels(&format!("{LEAF_NODE_LABEL}=true")))
            .await
            .map_err(|e| self.write_error("(list)", e))?;
        for leaf in &leaves {
            let current = existing.items.iter().find(|n| n.name_any() == leaf.name);
            self.apply_leaf(&api, leaf, current).await?;
        }
        for stale in existing
            .items
            .iter()
            .filter(|n| !leaves.iter().any(|l| l.name == n.name_any()))
        {
            api.delete(&stale.name_any(), &DeleteParams::default())
                .await
                .map(drop)
                .or_else(|e| match e {
                    kube::Error::Api(status) if status.code == 404 => Ok(()),
                    other => Err(other),
                })
                .map_err(|e| self.write_error(&stale.name_any(), e))?;
        }
        Ok(())
    }

    /// Renews each virtual Node's Lease and Ready condition, as a kubelet would.
    async fn heartbeat(&self, tenant: &Client) {
        let api = Api::<Node>::all(tenant.clone());
        let leaves = match api
            .list(&ListParams::default().labels(&format!("{LEAF_NODE_LABEL}=true")))
            .await
        {
            Ok(list) => list.items,
            Err(error) => {
                super::report_error(
                    "clustertree heartbeat failed",
                    &self.write_error("(list)", error),
                );
                return;
            }
        };
        for node in leaves {
            let name = node.name_any();
            let ready = json!({"status": {"conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": now_rfc3339(),
            }]}});
            if let Err(error) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&ready))
                .await
            {
                super::report_error(
                    "clustertree heartbeat failed",
                    &self.write_error(&name, error),
                );
            }
            if let Err(error) = super::nodes::renew_lease(tenant, &name).await {
                super::report_error("clustertree lease renewal failed", &error);
            }
        }
    }

    async fn apply_leaf(
        &self,
        api: &Api<Node>,
        leaf: &Leaf,
        current: Option<&Node>,
    ) -> Result<(), SimError> {
        let spec = leaf_node_spec(leaf);
        let node = spec.node();
        let Some(current) = current else {
            api.create(&PostParams::default(), &node)
                .await
                .map_err(|e| self.write_error(&leaf.name, e))?;
            let status = spec.status(true, &now_rfc3339());
            api.patch_status(&leaf.name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .map_err(|e| self.write_error(&leaf.name, e))?;
            return Ok(());
        };
        let wanted_labels = node.metadata.labels.clone().unwrap_or_default();
        if current.metadata.labels.clone().unwrap_or_default() != wanted_labels
            || current.spec.as_ref().and_then(|s| s.taints.clone())
                != node.spec.as_ref().and_then(|s| s.taints.clone())
        {
            let patch = json!({"metadata": {"labels": wanted_labels}, "spec": {"taints": node.spec.and_then(|s| s.taints)}});
            api.patch(&leaf.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| self.write_error(&leaf.name, e))?;
        }
        let resources = |n: &Node| {
            let status = n.status.clone().unwrap_or_default();
            let pick = |map: Option<
                BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
            >| {
                map.unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect::<BTreeMap<_, _>>()
            };
            (pick(status.capacity), pick(status.allocatable))
        };
        let desired_status = spec.status(true, &now_rfc3339());
        let desired: (BTreeMap<String, String>, BTreeMap<String, String>) = (
            serde_json::from_value(desired_status["status"]["capacity"].clone())
                .unwrap_or_default(),
            serde_json::from_value(desired_status["status"]["allocatable"].clone())
                .unwrap_or_default(),
        );
        if resources(current) != desired {
            api.patch_status(
                &leaf.name,
                &PatchParams::default(),
                &Patch::Merge(&desired_status),
            )
            .await
            .map_err(|e| self.write_error(&leaf.name, e))?;
        }
        Ok(())
    }

    fn write_error(&self, node: &str, source: kube::Error) -> SimError {
        SimError::WriteVirtualNode {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            node: node.to_owned(),
            source: Box::new(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, cpu: &str, memory: &str, labels: Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"}}
            }))
            .unwrap(),
        )
    }

    fn cluster(leaf_models: Value, pooled: Value) -> Value {
        json!({"spec": {"clusterTreeOptions": {"enable": true, "leafModels": leaf_models, "pooledResources": pooled}}})
    }

    #[test]
    fn node_leaves_take_the_host_node_resources() {
        let hosts = [
            host("node1", "8", "32Gi", json!({})),
            host("node2", "16", "64Gi", json!({})),
        ];
        let clusters = [cluster(
            json!([
                {"leafNodeName": "node2", "nodeSelector": {"nodeName": "node2"}},
                {"leafNodeName": "node1", "nodeSelector": {"nodeName": "node1"}, "labels": {"team": "a"}},
                {"leafNodeName": "ghost", "nodeSelector": {"nodeName": "missing"}}
            ]),
            Value::Null,
        )];
        let leaves = desired_leaves(&clusters, &hosts);
        let summary: Vec<(&str, &str, &str)> = leaves
            .iter()
            .map(|l| (l.name.as_str(), l.cpu.as_str(), l.memory.as_str()))
            .collect();
        assert_eq!(summary, [("node1", "8", "32Gi"), ("node2", "16", "64Gi")]);
        assert_eq!(leaves[0].labels["team"], "a");
        assert!(leaves[0].taints.is_empty(), "{:?}", leaves[0].taints);
    }

    #[test]
    fn pool_leaf_uses_pooled_resources_or_the_sum_of_matching_nodes() {
        let hosts = [
            host("node1", "8", "32Gi", json!({})),
            host("node2", "500m", "1Gi", json!({})),
            host(
                "cp",
                "4",
                "8Gi",
                json!({"node-role.kubernetes.io/control-plane": ""}),
            ),
        ];
        let pool = json!([{"leafNodeName": "pool", "nodeSelector": {"labelSelector": {"matchExpressions": [
            {"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}
        ]}}}]);
        let pooled = desired_leaves(
            &[cluster(pool.clone(), json!({"cpu": 10, "memory": "100Gi"}))],
            &hosts,
        );
        assert_eq!(
            (pooled[0].cpu.as_str(), pooled[0].memory.as_str()),
            ("10", "100Gi")
        );
        let summed = desired_leaves(&[cluster(pool, Value::Null)], &hosts);
        assert_eq!(
            (
                summed[0].cpu.as_str(),
                summed[0].memory.as_str(),
                summed[0].pods.as_str()
            ),
            ("8500m", "35433480192", "220")
        );
    }

    #[test]
    fn disabled_clusters_have_no_leaves() {
        let hosts = [host("node1", "8", "32Gi", json!({}))];
        let mut disabled = cluster(
            json!([{"leafNodeName": "node1", "nodeSelector": {"nodeName": "node1"}}]),
            Value::Null,
        );
        disabled["spec"]["clusterTreeOptions"]["enable"] = json!(false);
        assert!(desired_leaves(&[disabled], &hosts).is_empty());
    }

    #[test]
    fn quantities_parse_and_format() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2Gi"), Some(2_147_483_648.0));
        assert_eq!(parse_quantity("3"), Some(3.0));
        assert_eq!(parse_quantity("1k"), Some(1000.0));
        assert_eq!(parse_quantity("x"), None);
        assert_eq!(format_quantity(1.5, true), "1500m");
        assert_eq!(format_quantity(2.0, true), "2");
    }
}
