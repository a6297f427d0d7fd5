//! The `VirtualCluster` resource (`kosmos.io/v1alpha1`).
//!
//! Field names and meanings of `spec.kubeconfig`, `spec.promoteResources` and
//! `status.phase` come unchanged from the Kubernetes-in-Kubernetes proposal, so manifests
//! written for Kosmos keep working. Everything else is optional: the mutating webhook
//! fills defaults, and the controller never has to guess.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::quantity::ResourceQuantity;

/// Desired state of a tenant cluster: the capacity it gets and how its control plane runs.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "kosmos.io",
    version = "v1alpha1",
    kind = "VirtualCluster",
    plural = "virtualclusters",
    singular = "virtualcluster",
    shortname = "vc",
    namespaced,
    doc = "A tenant cluster with its own control plane, running as workloads in the host cluster.",
    status = "VirtualClusterStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase","description":"Where provisioning stands"}"#,
    printcolumn = r#"{"name":"Nodes","type":"string","jsonPath":".spec.promoteResources.nodes","description":"Host nodes promoted exclusively into the tenant"}"#,
    printcolumn = r#"{"name":"CPU","type":"string","jsonPath":".spec.promoteResources.resources.cpu","description":"CPU taken from the shared pool"}"#,
    printcolumn = r#"{"name":"Memory","type":"string","jsonPath":".spec.promoteResources.resources.memory","description":"Memory taken from the shared pool"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.kubernetesVersion","description":"Kubernetes version of the tenant control plane"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualClusterSpec {
    /// Base64-encoded admin kubeconfig of the tenant cluster. Written by the controller once
    /// the tenant control plane answers; the webhook refuses it from anyone else. The same
    /// kubeconfig is kept in the Secret `<name>-admin-kubeconfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,

    /// Host capacity handed to the tenant: whole nodes, exclusively, and a share of the
    /// pool of unclaimed nodes.
    #[serde(default)]
    pub promote_resources: PromoteResources,

    /// Kubernetes version of the tenant control plane, such as `v1.33.4`. Defaulted by the
    /// webhook; may only move forward one minor version at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,

    /// Sizing of the tenant control plane. Defaulted by the webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlaneSpec>,

    /// The clustertree that registers promoted host capacity as nodes of the tenant.
    /// Kept so manifests that name it still apply; its image is the operator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_tree: Option<ClusterTreeSpec>,
}

/// Capacity of the host promoted into the tenant.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PromoteResources {
    /// Host nodes handed to this tenant alone. A node belongs to at most one VirtualCluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub nodes: Vec<String>,

    /// Resources taken from the shared pool of unclaimed nodes, such as `cpu: 10` and
    /// `memory: 100Gi`. Allowed names are `cpu`, `memory`, `ephemeral-storage`, `pods` and
    /// extended resources some host node offers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, ResourceQuantity>,
}

/// Sizing of the tenant control plane.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneSpec {
    /// The tenant's kube-apiserver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<ApiServerSpec>,

    /// The tenant's own etcd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdSpec>,
}

/// How the tenant's kube-apiserver runs and how clients reach it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerSpec {
    /// Number of kube-apiserver replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub replicas: Option<i32>,

    /// Type of the Service in front of the kube-apiserver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<ServiceType>,

    /// Extra DNS names or IP addresses clients use to reach the apiserver; they go into
    /// the serving certificate and the external kubeconfig uses the first one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub external_hosts: Vec<String>,
}

/// Service types the tenant apiserver can be exposed with.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ServiceType {
    /// Reachable inside the host cluster only.
    #[default]
    ClusterIP,
    /// Reachable on every host node's address.
    NodePort,
    /// Reachable through the host's load balancer.
    LoadBalancer,
}

/// The tenant's own etcd cluster.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EtcdSpec {
    /// Members of the etcd cluster: 1, 3 or 5, so quorum is always well defined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [1, 3, 5]))]
    pub replicas: Option<i32>,

    /// Size of each member's volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_size: Option<ResourceQuantity>,

    /// StorageClass of each member's volume; the host's default class when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// The clustertree deployment of a tenant.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTreeSpec {
    /// Ignored: the clustertree runs with host credentials, so its image is the operator's
    /// (`vc-controller --clustertree-image`). The webhook refuses any other value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// What the controller has observed and done.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualClusterStatus {
    /// Where provisioning stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Human-readable detail about the phase, such as what the controller waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// ControlPlaneReady, NodesPromoted, ClusterTreeReady and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// URL clients use to reach the tenant's kube-apiserver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server_endpoint: Option<String>,

    /// Host nodes currently claimed by this tenant and registered in it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub promoted_nodes: Vec<String>,

    /// The value of the annotation `vc.kosmos.io/rotate-admin-kubeconfig` whose rotation
    /// is done: the admin kubeconfig served (`spec.kubeconfig`, Secret
    /// `NAME-admin-kubeconfig`) is signed by the admin CA issued for it, and every admin
    /// kubeconfig issued before is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_kubeconfig_rotation: Option<String>,
}

/// Provisioning phase of a VirtualCluster, as named in the proposal.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Accepted, nothing provisioned yet.
    Pending,
    /// Control plane being provisioned.
    Preparing,
    /// Control plane answers and `spec.kubeconfig` is written.
    Initialized,
    /// Clustertree runs and promoted capacity is visible in the tenant.
    Completed,
    /// A change (nodes, resources, version) is being rolled out.
    Updating,
    /// The finalizer is releasing nodes and removing the tenant.
    Deleting,
    /// Provisioning cannot go on until the object changes; see the conditions.
    Failed,
}

impl Phase {
    /// The name used on the wire and in printer columns.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Preparing => "Preparing",
            Self::Initialized => "Initialized",
            Self::Completed => "Completed",
            Self::Updating => "Updating",
            Self::Deleting => "Deleting",
            Self::Failed => "Failed",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Condition types the controller maintains.
pub mod condition_types {
    /// etcd, kube-apiserver, controller-manager and scheduler are ready.
    pub const CONTROL_PLANE_READY: &str = "ControlPlaneReady";
    /// Every listed node is claimed and registered in the tenant.
    pub const NODES_PROMOTED: &str = "NodesPromoted";
    /// The clustertree Deployment is ready.
    pub const CLUSTER_TREE_READY: &str = "ClusterTreeReady";
    /// The tenant's `kube-system/kube-dns` Service has a cluster IP and a ready endpoint.
    pub const DNS_READY: &str = "DNSReady";
    /// The tenant is fully usable.
    pub const READY: &str = "Ready";
    /// With `vc-controller --claimed-node-pods=evict`: no pod that must leave is still
    /// running on a claimed node (False while a disruption budget holds one back).
    pub const CLAIMED_NODES_DRAINED: &str = "ClaimedNodesDrained";
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    /// The manifest under "CRD Design" in the proposal, byte for byte.
    const PROPOSAL_MANIFEST: &str = r#"apiVersion: kosmos.io/v1alpha1
kind: VirtualCluster
metadata:
  name: tenant1-cluster
spec:
  kubeconfig: XXXXXX
  promoteResources:
    nodes:
    - node1
    - node2
    resources:
      cpu: 10
      memory: 100Gi
status:
  phase: Initialized
"#;

    #[test]
    fn proposal_manifest_parses_with_every_field() {
        let cluster: VirtualCluster = serde_yaml::from_str(PROPOSAL_MANIFEST).unwrap();
        assert_eq!(cluster.metadata.name.as_deref(), Some("tenant1-cluster"));
        assert_eq!(cluster.spec.kubeconfig.as_deref(), Some("XXXXXX"));
        assert_eq!(cluster.spec.promote_resources.nodes, ["node1", "node2"]);
        assert_eq!(
            cluster.spec.promote_resources.resources.get("cpu"),
            Some(&ResourceQuantity::Int(10))
        );
        assert_eq!(
            cluster.spec.promote_resources.resources.get("memory"),
            Some(&ResourceQuantity::String("100Gi".into()))
        );
        assert_eq!(
            cluster.status.and_then(|status| status.phase),
            Some(Phase::Initialized)
        );
    }

    #[test]
    fn proposal_manifest_round_trips_without_losing_or_renaming_a_field() {
        let original: serde_json::Value = serde_yaml::from_str(PROPOSAL_MANIFEST).unwrap();
        let cluster: VirtualCluster = serde_json::from_value(original.clone()).unwrap();
        let written = serde_json::to_value(&cluster).unwrap();
        assert_eq!(written, original);
    }

    #[test]
    fn phases_serialize_under_their_proposal_names() {
        for phase in [
            Phase::Pending,
            Phase::Preparing,
            Phase::Initialized,
            Phase::Completed,
            Phase::Updating,
            Phase::Deleting,
            Phase::Failed,
        ] {
            assert_eq!(serde_json::to_value(phase).unwrap(), phase.as_str());
        }
    }

    #[test]
    fn unknown_phase_is_refused() {
        let error = serde_json::from_str::<Phase>("\"Running\"").unwrap_err();
        assert!(error.to_string().contains("Running"), "{error}");
    }
}
