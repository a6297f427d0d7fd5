//! What a tenant's Nodes should be, from its VirtualCluster and the host Nodes it
//! claimed: pure functions, so every rule is unit-tested without a cluster.
//!
//! A promoted host node appears under its own name with the host's capacity,
//! allocatable, conditions, addresses, node info, labels and taints, except what is the
//! host's business (our claim label, annotation and taint, and the `node.kubernetes.io/`
//! condition taints, which the tenant's own node-lifecycle controller derives from the
//! conditions). The pooled resources appear as one Node, [`POOL_NODE_NAME`].
//!
//! Every Node advertises vc-clustertree's kubelet API ([`KubeletEndpoint`]) as its
//! InternalIP and kubelet port, never the host kubelet's: the tenant apiserver sends
//! `logs` and `exec` there with the tenant's kubelet-client certificate, which the host
//! kubelet must never see and vc-clustertree answers by proxying to the host pod.
//!
//! Only a host node this VirtualCluster really claimed is mirrored: its owner labels name
//! the VirtualCluster and its owner-UID annotation carries this VirtualCluster's UID, so a
//! node listed in the spec but claimed by another tenant (or by a deleted VirtualCluster
//! of the same name) never shows up.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Pod, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::ResourceExt as _;
use vc_api::VirtualCluster;
use vc_api::constants::{
    MIRRORED_NODE_LABEL, NODE_CLAIM_TAINT_KEY, NODE_OWNER_NAME_LABEL, NODE_OWNER_NAMESPACE_LABEL,
    NODE_OWNER_UID_ANNOTATION, POOL_NODE_NAME,
};

/// Label and annotation prefixes that are the host's business, never copied.
const HOST_ONLY_PREFIXES: [&str; 2] = ["vc.kosmos.io/", "node.alpha.kubernetes.io/"];
/// Taint prefix of the conditions' taints, which the tenant derives itself.
const CONDITION_TAINT_PREFIX: &str = "node.kubernetes.io/";
/// Pods the pool node admits when the pool does not say.
const POOL_PODS: &str = "110";

/// Where the tenant apiserver reaches vc-clustertree's kubelet API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeletEndpoint {
    /// The address Nodes advertise as InternalIP (the clustertree pod's IP).
    pub address: String,
    pub port: i32,
}

/// The Node addresses: ours as InternalIP, where the tenant apiserver reaches the
/// kubelet API (it prefers InternalIP); the host node's own IPs as ExternalIP, where a
/// tenant NodePort Service answers (its host twin has the same node port); then the
/// host's Hostname addresses, so `kubectl get nodes -o wide` still tells which machine it
/// is. Without an endpoint (the kubelet API not served) only the Hostname remains: with
/// an IP left, the tenant apiserver would send logs and exec to the host kubelet.
fn advertised_addresses(
    kubelet: Option<&KubeletEndpoint>,
    host: &[NodeAddress],
) -> Vec<NodeAddress> {
    let Some(kubelet) = kubelet else {
        return host
            .iter()
            .filter(|address| address.type_ == "Hostname")
            .cloned()
            .collect();
    };
    let mut addresses = vec![NodeAddress {
        type_: "InternalIP".to_owned(),
        address: kubelet.address.clone(),
    }];
    for address in host
        .iter()
        .filter(|address| matches!(address.type_.as_str(), "InternalIP" | "ExternalIP"))
    {
        if addresses
            .iter()
            .all(|known| known.type_ != "ExternalIP" || known.address != address.address)
        {
            addresses.push(NodeAddress {
                type_: "ExternalIP".to_owned(),
                address: address.address.clone(),
            });
        }
    }
    addresses.extend(
        host.iter()
            .filter(|address| address.type_ == "Hostname")
            .cloned(),
    );
    addresses
}

fn daemon_endpoints(kubelet: Option<&KubeletEndpoint>) -> Option<NodeDaemonEndpoints> {
    kubelet.map(|kubelet| NodeDaemonEndpoints {
        kubelet_endpoint: Some(DaemonEndpoint { port: kubelet.port }),
    })
}

/// Whether `node` is claimed by exactly this VirtualCluster (names and UID).
pub fn claimed_by(node: &Node, virtual_cluster: &VirtualCluster) -> bool {
    let labels = node.labels();
    let (Some(namespace), Some(uid)) = (virtual_cluster.namespace(), virtual_cluster.uid()) else {
        return false;
    };
    labels.get(NODE_OWNER_NAMESPACE_LABEL) == Some(&namespace)
        && labels.get(NODE_OWNER_NAME_LABEL) == Some(&virtual_cluster.name_any())
        && node.annotations().get(NODE_OWNER_UID_ANNOTATION) == Some(&uid)
}

/// The host nodes to mirror: listed in the spec and claimed by this VirtualCluster.
pub fn promoted<'a>(virtual_cluster: &VirtualCluster, host_nodes: &'a [Node]) -> Vec<&'a Node> {
    let wanted = &virtual_cluster.spec.promote_resources.nodes;
    host_nodes
        .iter()
        .filter(|node| wanted.contains(&node.name_any()) && claimed_by(node, virtual_cluster))
        .collect()
}

/// Every Node the tenant should have, by name.
pub fn desired(
    virtual_cluster: &VirtualCluster,
    host_nodes: &[Node],
    kubelet: Option<&KubeletEndpoint>,
) -> BTreeMap<String, Node> {
    let mut nodes: BTreeMap<String, Node> = promoted(virtual_cluster, host_nodes)
        .into_iter()
        .map(|host| (host.name_any(), mirrored(host, kubelet)))
        .collect();
    if let Some(pool) = pool(virtual_cluster, kubelet)
        && !nodes.contains_key(POOL_NODE_NAME)
    {
        nodes.insert(POOL_NODE_NAME.to_owned(), pool);
    }
    nodes
}

fn copied(map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    map.iter()
        .filter(|(key, _)| {
            !HOST_ONLY_PREFIXES
                .iter()
                .any(|prefix| key.starts_with(prefix))
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// A promoted host node as the tenant sees it.
pub fn mirrored(host: &Node, kubelet: Option<&KubeletEndpoint>) -> Node {
    let mut labels = copied(host.labels());
    labels.insert(MIRRORED_NODE_LABEL.to_owned(), "host".to_owned());
    let taints: Vec<Taint> = host
        .spec
        .as_ref()
        .and_then(|spec| spec.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|taint| {
            taint.key != NODE_CLAIM_TAINT_KEY && !taint.key.starts_with(CONDITION_TAINT_PREFIX)
        })
        .collect();
    let status = host.status.clone().unwrap_or_default();
    Node {
        metadata: ObjectMeta {
            name: Some(host.name_any()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: (!taints.is_empty()).then_some(taints),
            unschedulable: host.spec.as_ref().and_then(|spec| spec.unschedulable),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            capacity: status.capacity,
            allocatable: status.allocatable,
            conditions: status.conditions,
            addresses: Some(advertised_addresses(
                kubelet,
                &status.addresses.unwrap_or_default(),
            )),
            daemon_endpoints: daemon_endpoints(kubelet),
            node_info: status.node_info,
            ..NodeStatus::default()
        }),
    }
}

/// The pooled resources as one Node, when the VirtualCluster asks for any.
pub fn pool(virtual_cluster: &VirtualCluster, kubelet: Option<&KubeletEndpoint>) -> Option<Node> {
    let resources = &virtual_cluster.spec.promote_resources.resources;
    if resources.is_empty() {
        return None;
    }
    let mut capacity: BTreeMap<String, Quantity> = resources
        .iter()
        .map(|(name, quantity)| (name.clone(), Quantity(quantity.to_string())))
        .collect();
    capacity
        .entry("pods".to_owned())
        .or_insert_with(|| Quantity(POOL_PODS.to_owned()));
    let labels = BTreeMap::from([
        (MIRRORED_NODE_LABEL.to_owned(), "pool".to_owned()),
        (
            "kubernetes.io/hostname".to_owned(),
            POOL_NODE_NAME.to_owned(),
        ),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("type".to_owned(), "virtual-kubelet".to_owned()),
    ]);
    Some(Node {
        metadata: ObjectMeta {
            name: Some(POOL_NODE_NAME.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            allocatable: Some(capacity.clone()),
            capacity: Some(capacity),
            conditions: Some(vec![ready_condition()]),
            addresses: Some(advertised_addresses(kubelet, &[])),
            daemon_endpoints: daemon_endpoints(kubelet),
            node_info: Some(NodeSystemInfo {
                architecture: "amd64".to_owned(),
                operating_system: "linux".to_owned(),
                kubelet_version: virtual_cluster
                    .spec
                    .kubernetes_version
                    .clone()
                    .unwrap_or_default(),
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        }),
    })
}

/// The pool is as ready as vc-clustertree, which speaks for it.
fn ready_condition() -> NodeCondition {
    NodeCondition {
        type_: "Ready".to_owned(),
        status: "True".to_owned(),
        reason: Some("ClusterTreeReady".to_owned()),
        message: Some("vc-clustertree serves the pooled resources".to_owned()),
        last_heartbeat_time: Some(Time(jiff::Timestamp::now())),
        ..NodeCondition::default()
    }
}

/// Whether a tenant Node was written by vc-clustertree (and may be deleted by it).
pub fn is_mirrored(node: &Node) -> bool {
    node.labels().contains_key(MIRRORED_NODE_LABEL)
}

/// A tenant pod to delete before its Node goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Of the tenant pods bound to a returned node, those still to delete: one already
/// terminating runs its grace period out (the pod loop finishes it after its host pod),
/// and deleting it again changes nothing. The Node itself goes only once the
/// list they came from is empty, so the tenant's pods never outlive their node unseen
/// (the tenant's pod GC would otherwise delete them without grace, much later).
pub fn pods_to_delete(bound: &[Pod]) -> Vec<BoundPod> {
    bound
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| {
            Some(BoundPod {
                namespace: pod.namespace()?,
                name: pod.metadata.name.clone()?,
                uid: pod.metadata.uid.clone()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;

    static KUBELET: KubeletEndpoint = KubeletEndpoint {
        address: String::new(),
        port: 10250,
    };

    fn kubelet() -> Option<&'static KubeletEndpoint> {
        Some(&KUBELET)
    }

    fn virtual_cluster(nodes: &[&str], resources: serde_json::Value) -> VirtualCluster {
        serde_json::from_value(json!({
            "apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
            "metadata": {"name": "tenant1", "namespace": "team-a", "uid": "uid-1"},
            "spec": {"promoteResources": {"nodes": nodes, "resources": resources}, "kubernetesVersion": "v1.33.4"}
        }))
        .unwrap()
    }

    fn host_node(name: &str, owner: Option<(&str, &str, &str)>) -> Node {
        let mut labels =
            json!({"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": "z1"});
        let mut annotations = json!({});
        let mut taints = json!([
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}
        ]);
        if let Some((namespace, tenant, uid)) = owner {
            labels[NODE_OWNER_NAMESPACE_LABEL] = json!(namespace);
            labels[NODE_OWNER_NAME_LABEL] = json!(tenant);
            annotations[NODE_OWNER_UID_ANNOTATION] = json!(uid);
            taints.as_array_mut().unwrap().push(
                json!({"key": NODE_CLAIM_TAINT_KEY, "value": tenant, "effect": "NoSchedule"}),
            );
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": {"taints": taints},
            "status": {
                "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                "allocatable": {"cpu": "7500m", "memory": "31Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.7"}, {"type": "ExternalIP", "address": "203.0.113.7"},
                              {"type": "Hostname", "address": name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {"architecture": "amd64", "bootID": "", "containerRuntimeVersion": "containerd://1.6",
                             "kernelVersion": "6.1", "kubeProxyVersion": "", "kubeletVersion": "v1.36.2",
                             "machineID": "", "operatingSystem": "linux", "osImage": "Debian", "systemUUID": ""}
            }
        }))
        .unwrap()
    }

    #[test]
    fn only_nodes_this_virtual_cluster_claimed_are_mirrored() {
        let vc = virtual_cluster(&["node1", "node2", "node3", "node4"], json!({}));
        let hosts = [
            host_node("node1", Some(("team-a", "tenant1", "uid-1"))),
            // Claimed by another tenant, though listed.
            host_node("node2", Some(("team-b", "tenant1", "uid-9"))),
            // Claimed under this name by a deleted VirtualCluster.
            host_node("node3", Some(("team-a", "tenant1", "uid-old"))),
            // Not claimed at all.
            host_node("node4", None),
            // Claimed, but no longer in the spec.
            host_node("node5", Some(("team-a", "tenant1", "uid-1"))),
        ];
        let names: Vec<String> = desired(&vc, &hosts, kubelet()).into_keys().collect();
        assert_eq!(names, ["node1"]);
    }

    #[test]
    fn a_mirrored_node_keeps_the_hosts_resources_and_drops_what_is_the_hosts_business() {
        let host = host_node("node1", Some(("team-a", "tenant1", "uid-1")));
        let node = mirrored(&host, kubelet());
        let labels = node.labels();
        assert_eq!(
            labels
                .get("topology.kubernetes.io/zone")
                .map(String::as_str),
            Some("z1")
        );
        assert!(!labels.contains_key(NODE_OWNER_NAME_LABEL));
        assert!(node.annotations().is_empty());
        assert_eq!(
            labels.get(MIRRORED_NODE_LABEL).map(String::as_str),
            Some("host")
        );
        let taints: Vec<String> = node
            .spec
            .unwrap()
            .taints
            .unwrap()
            .into_iter()
            .map(|t| t.key)
            .collect();
        assert_eq!(taints, ["dedicated"]);
        let status = node.status.unwrap();
        assert_eq!(
            status.allocatable,
            host.status.as_ref().unwrap().allocatable
        );
        assert_eq!(status.node_info.clone().unwrap().kubelet_version, "v1.36.2");
        assert_eq!(status.daemon_endpoints, daemon_endpoints(kubelet()));
    }

    #[test]
    fn every_node_sends_the_tenant_apiserver_to_us_and_node_ports_to_the_host() {
        let host = host_node("node1", Some(("team-a", "tenant1", "uid-1")));
        let endpoint = KubeletEndpoint {
            address: "10.1.2.3".to_owned(),
            port: 11250,
        };
        let vc = virtual_cluster(&["node1"], json!({"cpu": 1}));
        for node in desired(&vc, std::slice::from_ref(&host), Some(&endpoint)).values() {
            let status = node.status.clone().unwrap();
            let addresses: Vec<(String, String)> = status
                .addresses
                .unwrap()
                .into_iter()
                .map(|a| (a.type_, a.address))
                .collect();
            let host_addresses: Vec<(String, String)> = if node.name_any() == "node1" {
                vec![
                    ("ExternalIP".to_owned(), "10.0.0.7".to_owned()),
                    ("ExternalIP".to_owned(), "203.0.113.7".to_owned()),
                    ("Hostname".to_owned(), "node1".to_owned()),
                ]
            } else {
                vec![]
            };
            let mut expected = vec![("InternalIP".to_owned(), "10.1.2.3".to_owned())];
            expected.extend(host_addresses);
            assert_eq!(addresses, expected, "{}", node.name_any());
            assert_eq!(
                status
                    .daemon_endpoints
                    .unwrap()
                    .kubelet_endpoint
                    .unwrap()
                    .port,
                11250
            );
        }
        let unserved = mirrored(&host, None).status.unwrap();
        let types: Vec<String> = unserved
            .addresses
            .unwrap()
            .into_iter()
            .map(|a| a.type_)
            .collect();
        assert_eq!(types, ["Hostname"], "no API served: no address to reach");
        assert_eq!(unserved.daemon_endpoints, None);
    }

    #[test]
    fn the_pool_is_one_node_sized_by_the_pooled_resources() {
        let vc = virtual_cluster(&[], json!({"cpu": 10, "memory": "100Gi"}));
        let nodes = desired(&vc, &[], kubelet());
        let pool = &nodes[POOL_NODE_NAME];
        let capacity = pool.status.as_ref().unwrap().capacity.clone().unwrap();
        assert_eq!(capacity["cpu"], Quantity("10".to_owned()));
        assert_eq!(capacity["memory"], Quantity("100Gi".to_owned()));
        assert_eq!(capacity["pods"], Quantity(POOL_PODS.to_owned()));
        assert!(is_mirrored(pool));
        assert!(desired(&virtual_cluster(&[], json!({})), &[], kubelet()).is_empty());
    }

    #[test]
    fn a_returned_nodes_pods_are_deleted_once_each_by_uid() {
        let pods: Vec<Pod> = serde_json::from_value(json!([
            {"metadata": {"name": "web", "namespace": "shop", "uid": "u1"}, "spec": {"nodeName": "node2", "containers": []}},
            {"metadata": {"name": "db", "namespace": "shop", "uid": "u2",
                          "deletionTimestamp": "2025-01-01T00:00:00Z"}, "spec": {"nodeName": "node2", "containers": []}},
            {"metadata": {"name": "job", "namespace": "batch", "uid": "u3"}, "spec": {"nodeName": "node2", "containers": []},
             "status": {"phase": "Succeeded"}},
        ]))
        .unwrap();
        assert_eq!(
            pods_to_delete(&pods),
            vec![
                BoundPod {
                    namespace: "shop".into(),
                    name: "web".into(),
                    uid: "u1".into()
                },
                BoundPod {
                    namespace: "batch".into(),
                    name: "job".into(),
                    uid: "u3".into()
                },
            ],
            "a terminating pod is left to finish; a finished one still goes"
        );
        assert_eq!(pods_to_delete(&[]), vec![]);
    }
}
