//! The clustertree and its host credential, the tenant's workload namespace with the
//! pool quota, and the Kosmos `Cluster` object written into the tenant.
//!
//! The clustertree's host identity is a ServiceAccount that can only touch the tenant's
//! own workload namespace, plus read exactly the nodes the tenant has claimed: never
//! cluster-admin, never another tenant's namespace or nodes.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Container, KeyToPath, Namespace, PodSpec, ResourceQuota, ResourceQuotaSpec, SecretVolumeSource,
    ServiceAccount, Volume,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use vc_api::constants::{
    CONTROL_PLANE_NODE_LABELS, KUBECONFIG_INTERNAL_SECRET_KEY, NODE_OWNER_NAME_LABEL,
};
use vc_api::kosmos_cluster::{Cluster, ClusterSpec, ClusterTreeOptions, LeafModel, NodeSelector};

use super::kubeconfig::render_token_file_kubeconfig;
use super::meta::{Component, owned_meta, unowned_meta};
use super::pod::{deployment as owned_deployment, env_from_field, read_only_mount};
use super::{BuildError, Tenant, names};

/// Name of the Kosmos `Cluster` object that stands for the host inside a tenant.
pub const HOST_CLUSTER_NAME: &str = "host";
/// Name of the leaf that stands for the shared pool.
pub const POOL_LEAF_NAME: &str = "pool";
/// Where the tenant kubeconfig is mounted in the clustertree pod (Kosmos's path).
pub const TENANT_KUBECONFIG_DIR: &str = "/etc/kube";
/// Service-account mount of every pod, where the host kubeconfig points.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Resources that a ResourceQuota accepts under their plain name; every other (extended)
/// resource is only accepted as `requests.NAME`.
const PLAIN_QUOTA_RESOURCES: [&str; 4] = ["cpu", "memory", "ephemeral-storage", "pods"];

/// Pod Security Admission labels of every workload namespace: tenant pods run on shared
/// host nodes, so the host's own PodSecurity admission refuses what `baseline` forbids
/// (privileged, host namespaces, hostPath, added capabilities ...) whatever the tenant's
/// apiserver accepted, and warns and audits what `restricted` would refuse.
pub const POD_SECURITY_LABELS: [(&str, &str); 6] = [
    ("pod-security.kubernetes.io/enforce", "baseline"),
    ("pod-security.kubernetes.io/enforce-version", "latest"),
    ("pod-security.kubernetes.io/warn", "restricted"),
    ("pod-security.kubernetes.io/warn-version", "latest"),
    ("pod-security.kubernetes.io/audit", "restricted"),
    ("pod-security.kubernetes.io/audit-version", "latest"),
];

/// The cluster-scoped workload Namespace `vc-NS-NAME`, under Pod Security `baseline`.
pub fn workload_namespace(tenant: &Tenant) -> Namespace {
    let mut metadata = unowned_meta(
        tenant,
        tenant.workload_namespace(),
        None,
        Component::ClusterTree,
    );
    metadata.labels.get_or_insert_with(Default::default).extend(
        POD_SECURITY_LABELS
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
    );
    Namespace {
        metadata,
        ..Namespace::default()
    }
}

/// The quota key of a pooled resource.
pub fn quota_resource_name(resource: &str) -> String {
    if PLAIN_QUOTA_RESOURCES.contains(&resource) {
        resource.to_owned()
    } else {
        format!("requests.{resource}")
    }
}

/// ResourceQuota `NAME-pool` in the workload namespace, equal to the pooled resources.
pub fn pool_quota(tenant: &Tenant) -> ResourceQuota {
    let hard: BTreeMap<String, Quantity> = tenant
        .pooled_resources
        .iter()
        .map(|(resource, quantity)| {
            (
                quota_resource_name(resource),
                Quantity(quantity.as_quantity_string()),
            )
        })
        .collect();
    ResourceQuota {
        metadata: unowned_meta(
            tenant,
            names::pool_quota(&tenant.name),
            Some(tenant.workload_namespace()),
            Component::ClusterTree,
        ),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..ResourceQuotaSpec::default()
        }),
        status: None,
    }
}

/// ServiceAccount `NAME-clustertree` beside the VirtualCluster.
pub fn service_account(tenant: &Tenant) -> ServiceAccount {
    ServiceAccount {
        metadata: owned_meta(
            tenant,
            names::clustertree(&tenant.name),
            Component::ClusterTree,
        ),
        ..ServiceAccount::default()
    }
}

fn rule(resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(resources.iter().map(|name| (*name).to_owned()).collect()),
        verbs: verbs.iter().map(|verb| (*verb).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

const READ_WRITE: [&str; 7] = [
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// Role `NAME-clustertree` in the workload namespace: what the clustertree does with the
/// tenant's pods there. Explicit verbs and resources, no wildcard.
pub fn role(tenant: &Tenant) -> Role {
    Role {
        metadata: unowned_meta(
            tenant,
            names::clustertree(&tenant.name),
            Some(tenant.workload_namespace()),
            Component::ClusterTree,
        ),
        rules: Some(vec![
            rule(
                &[
                    "configmaps",
                    "endpoints",
                    "persistentvolumeclaims",
                    "pods",
                    "secrets",
                    "services",
                ],
                &READ_WRITE,
            ),
            rule(&["pods/status"], &["get", "patch", "update"]),
            rule(&["pods/log"], &["get"]),
            rule(
                &["events"],
                &["create", "get", "list", "patch", "update", "watch"],
            ),
        ]),
    }
}

fn clustertree_subject(tenant: &Tenant) -> Subject {
    Subject {
        kind: "ServiceAccount".to_owned(),
        name: names::clustertree(&tenant.name),
        namespace: Some(tenant.namespace.clone()),
        api_group: None,
    }
}

/// RoleBinding `NAME-clustertree` in the workload namespace.
pub fn role_binding(tenant: &Tenant) -> RoleBinding {
    RoleBinding {
        metadata: unowned_meta(
            tenant,
            names::clustertree(&tenant.name),
            Some(tenant.workload_namespace()),
            Component::ClusterTree,
        ),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: names::clustertree(&tenant.name),
        },
        subjects: Some(vec![clustertree_subject(tenant)]),
    }
}

/// ClusterRole `kosmos-vc:NS:NAME:clustertree`: get/list/watch on exactly the claimed
/// nodes. With no claimed node it has no rule at all, since a rule without
/// `resourceNames` would grant every node.
pub fn cluster_role(tenant: &Tenant, claimed_nodes: &[String]) -> ClusterRole {
    let mut nodes: Vec<String> = claimed_nodes.to_vec();
    nodes.sort();
    nodes.dedup();
    let rules = if nodes.is_empty() {
        Vec::new()
    } else {
        vec![PolicyRule {
            resource_names: Some(nodes),
            ..rule(&["nodes"], &["get", "list", "watch"])
        }]
    };
    ClusterRole {
        metadata: unowned_meta(
            tenant,
            names::clustertree_cluster_role(&tenant.namespace, &tenant.name),
            None,
            Component::ClusterTree,
        ),
        rules: Some(rules),
        aggregation_rule: None,
    }
}

/// ClusterRoleBinding `kosmos-vc:NS:NAME:clustertree`.
pub fn cluster_role_binding(tenant: &Tenant) -> ClusterRoleBinding {
    let name = names::clustertree_cluster_role(&tenant.namespace, &tenant.name);
    ClusterRoleBinding {
        metadata: unowned_meta(tenant, name.clone(), None, Component::ClusterTree),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name,
        },
        subjects: Some(vec![clustertree_subject(tenant)]),
    }
}

/// Deployment `NAME-clustertree`: the operator's clustertree image, the tenant's
/// in-cluster admin kubeconfig, and ServiceAccount `NAME-clustertree` for the host.
pub fn deployment(tenant: &Tenant, config_hash: &str) -> Deployment {
    let kubeconfig = Volume {
        name: "tenant-kubeconfig".to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(vc_api::constants::admin_kubeconfig_secret_name(
                &tenant.name,
            )),
            default_mode: Some(0o400),
            items: Some(vec![KeyToPath {
                key: KUBECONFIG_INTERNAL_SECRET_KEY.to_owned(),
                path: "config".to_owned(),
                mode: None,
            }]),
            optional: Some(false),
        }),
        ..Volume::default()
    };
    let container = Container {
        name: "clustertree".to_owned(),
        image: Some(tenant.clustertree_image.clone()),
        command: Some(vec!["clustertree-cluster-manager".to_owned()]),
        args: Some(vec![
            format!("--kubeconfig={TENANT_KUBECONFIG_DIR}/config"),
            "--leader-elect=false".to_owned(),
        ]),
        env: Some(vec![env_from_field("LEAF_NODE_IP", "status.podIP")]),
        volume_mounts: Some(vec![read_only_mount(
            "tenant-kubeconfig",
            TENANT_KUBECONFIG_DIR,
        )]),
        ..Container::default()
    };
    owned_deployment(
        tenant,
        names::clustertree(&tenant.name),
        Component::ClusterTree,
        1,
        config_hash,
        PodSpec {
            service_account_name: Some(names::clustertree(&tenant.name)),
            containers: vec![container],
            volumes: Some(vec![kubeconfig]),
            ..PodSpec::default()
        },
    )
}

/// The kubeconfig the clustertree uses for the host: its own ServiceAccount token and the
/// host CA, read from the pod's ServiceAccount mount. It holds no secret itself.
pub fn host_kubeconfig() -> Result<String, BuildError> {
    render_token_file_kubeconfig(
        HOST_CLUSTER_NAME,
        "https://kubernetes.default.svc",
        &format!("{SERVICE_ACCOUNT_DIR}/ca.crt"),
        "clustertree",
        &format!("{SERVICE_ACCOUNT_DIR}/token"),
    )
    .map_err(|source| BuildError::RenderHostKubeconfig { source })
}

/// The Kosmos `Cluster` written into the tenant: one leaf per promoted node, and a pool
/// leaf over every unclaimed worker when the tenant has pooled resources.
pub fn kosmos_cluster_for(
    tenant: &Tenant,
    promoted_nodes: &[String],
) -> Result<Cluster, BuildError> {
    let mut nodes: Vec<String> = promoted_nodes.to_vec();
    nodes.sort();
    nodes.dedup();
    let mut leaf_models: Vec<LeafModel> = nodes
        .into_iter()
        .map(|node| LeafModel {
            leaf_node_name: Some(node.clone()),
            node_selector: NodeSelector {
                node_name: Some(node),
                label_selector: None,
            },
            ..LeafModel::default()
        })
        .collect();
    if !tenant.pooled_resources.is_empty() {
        leaf_models.push(pool_leaf());
    }
    let pooled_resources = tenant
        .pooled_resources
        .iter()
        .map(|(resource, quantity)| (resource.clone(), quantity.as_quantity_string()))
        .collect();
    Ok(Cluster {
        metadata: ObjectMeta {
            name: Some(HOST_CLUSTER_NAME.to_owned()),
            labels: Some(super::meta::labels(tenant, Component::ClusterTree)),
            ..ObjectMeta::default()
        },
        spec: ClusterSpec {
            kubeconfig: Some(STANDARD.encode(host_kubeconfig()?)),
            namespace: Some(tenant.workload_namespace()),
            image_repository: None,
            cluster_tree_options: Some(ClusterTreeOptions {
                enable: true,
                leaf_models,
                leaf_type: Some("k8s".to_owned()),
                pooled_resources,
            }),
        },
        status: None,
    })
}

/// The pool leaf: every host node that no tenant claimed and that is not a control-plane
/// node.
fn pool_leaf() -> LeafModel {
    let absent = |key: &str| LabelSelectorRequirement {
        key: key.to_owned(),
        operator: "DoesNotExist".to_owned(),
        values: None,
    };
    let mut expressions = vec![absent(NODE_OWNER_NAME_LABEL)];
    expressions.extend(CONTROL_PLANE_NODE_LABELS.iter().map(|label| absent(label)));
    LeafModel {
        leaf_node_name: Some(POOL_LEAF_NAME.to_owned()),
        node_selector: NodeSelector {
            node_name: None,
            label_selector: Some(LabelSelector {
                match_expressions: Some(expressions),
                match_labels: None,
            }),
        },
        ..LeafModel::default()
    }
}
