//! The Kosmos `Cluster` resource (`kosmos.io/v1alpha1`, cluster-scoped), reduced to what
//! the clustertree reads.
//!
//! Field names follow Kosmos's published API (`pkg/apis/kosmos/v1alpha1/cluster_types.go`
//! in kosmos-io/kosmos), so the upstream clustertree understands the objects kosmos-vc
//! writes into a tenant. One field is ours: `spec.clusterTreeOptions.pooledResources`,
//! because Kosmos has no way to say "this much of the shared pool"; upstream Kosmos
//! ignores it (its CRD prunes it), and the capacity limit itself is enforced on the host
//! by the tenant's ResourceQuota.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Name of the Kosmos Cluster CRD.
pub const KOSMOS_CLUSTER_CRD_NAME: &str = "clusters.kosmos.io";

/// A member cluster whose capacity the clustertree presents as leaf nodes.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "kosmos.io",
    version = "v1alpha1",
    kind = "Cluster",
    plural = "clusters",
    singular = "cluster",
    status = "ClusterStatus",
    doc = "A member cluster whose nodes the Kosmos clustertree presents as leaf nodes."
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Base64 kubeconfig of the member cluster (Go `[]byte`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,

    /// Namespace in the member cluster that Kosmos works in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,

    /// Image registry of Kosmos components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_repository: Option<String>,

    /// What the clustertree does with this member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_tree_options: Option<ClusterTreeOptions>,
}

/// Options of the clustertree for one member cluster.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTreeOptions {
    /// Whether the clustertree serves this member.
    #[serde(default)]
    pub enable: bool,

    /// How member nodes become leaf nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaf_models: Vec<LeafModel>,

    /// Kind of leaf (`k8s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_type: Option<String>,

    /// kosmos-vc addition, not in Kosmos: resources of the shared pool handed to the
    /// tenant, by resource name (`cpu: "10"`, `memory: 100Gi`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pooled_resources: BTreeMap<String, String>,
}

/// One leaf node of the tenant and the member nodes behind it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeafModel {
    /// Name of the leaf node in the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_node_name: Option<String>,

    /// Labels of the leaf node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Taints of the leaf node. Kosmos adds a NoSchedule taint when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,

    /// The member nodes behind the leaf.
    #[serde(default)]
    pub node_selector: NodeSelector,
}

/// Which member nodes a leaf stands for.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector {
    /// Exactly this member node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,

    /// Every member node matching these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
}

/// What the clustertree reports.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Leaf nodes of this member.
    #[serde(default)]
    pub cluster_tree_status: ClusterTreeStatus,
}

/// Leaf nodes the clustertree created.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTreeStatus {
    /// One item per leaf node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaf_node_items: Vec<LeafNodeItem>,
}

/// A leaf node of the tenant.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeafNodeItem {
    /// Its name.
    pub leaf_node_name: String,
}

/// The CRD the controller installs into each tenant before creating a `Cluster` there.
pub fn kosmos_cluster_crd() -> CustomResourceDefinition {
    Cluster::crd()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crd_is_cluster_scoped_with_status_under_kosmos_name() {
        let crd = kosmos_cluster_crd();
        assert_eq!(crd.metadata.name.as_deref(), Some(KOSMOS_CLUSTER_CRD_NAME));
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.group, "kosmos.io");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
    }

    #[test]
    fn crd_schema_has_the_fields_clustertree_reads_without_refs() {
        let crd = serde_json::to_value(kosmos_cluster_crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let options = &spec["properties"]["clusterTreeOptions"]["properties"];
        let leaf = &options["leafModels"]["items"]["properties"];
        assert_eq!(spec["properties"]["kubeconfig"]["type"], "string");
        assert_eq!(options["enable"]["type"], "boolean");
        assert_eq!(
            leaf["nodeSelector"]["properties"]["nodeName"]["type"],
            "string"
        );
        assert_eq!(
            leaf["taints"]["items"]["properties"]["effect"]["type"],
            "string"
        );
        assert_eq!(options["pooledResources"]["type"], "object");
        let text = crd.to_string();
        assert!(!text.contains("$ref"), "schema must be inlined: {text}");
    }

    #[test]
    fn kosmos_manifest_parses_with_upstream_field_names() {
        let cluster: Cluster = serde_json::from_value(json!({
            "apiVersion": "kosmos.io/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": "member"},
            "spec": {
                "kubeconfig": "YWJj",
                "clusterTreeOptions": {
                    "enable": true,
                    "leafModels": [{
                        "leafNodeName": "node1",
                        "labels": {"a": "b"},
                        "taints": [{"key": "k", "effect": "NoSchedule"}],
                        "nodeSelector": {"nodeName": "node1"}
                    }]
                }
            }
        }))
        .unwrap();
        let options = cluster.spec.cluster_tree_options.unwrap();
        assert!(options.enable);
        assert_eq!(
            options.leaf_models[0].leaf_node_name.as_deref(),
            Some("node1")
        );
        assert_eq!(
            options.leaf_models[0].node_selector.node_name.as_deref(),
            Some("node1")
        );
        assert_eq!(options.leaf_models[0].taints[0].effect, "NoSchedule");
    }
}
