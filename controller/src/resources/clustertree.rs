//! The clustertree (`vc-clustertree`) and its host credential, and the tenant's workload
//! namespace with the pool quota.
//!
//! The clustertree's host identity is a ServiceAccount that can only touch the tenant's
//! own workload namespace, read its own VirtualCluster, and read exactly the nodes the
//! tenant has claimed: never cluster-admin, never another tenant's namespace or nodes.
//! Everything it acts on comes from the host (its flags and its VirtualCluster), so
//! nothing a tenant admin can edit inside the tenant changes what it does on the host.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, KeyToPath, Namespace, PodSpec, ResourceQuota, ResourceQuotaSpec,
    ScopeSelector, ScopedResourceSelectorRequirement, SecretVolumeSource, ServiceAccount, Volume,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use vc_api::constants::{GROUP, KUBECONFIG_INTERNAL_SECRET_KEY, PLURAL, POOL_PRIORITY_CLASS};

use super::meta::{Component, owned_meta, unowned_meta};
use super::pod::{deployment as owned_deployment, env_from_field, read_only_mount};
use super::{Tenant, names};

/// Where the tenant kubeconfig is mounted in the clustertree pod.
pub const TENANT_KUBECONFIG_DIR: &str = "/etc/kube";
/// The clustertree's program in its image, where the root Dockerfile installs it.
pub const CLUSTERTREE_COMMAND: &str = "/usr/local/bin/vc-clustertree";
/// Where the clustertree serves the kubelet API of the tenant's Nodes (logs, exec): the
/// kubelet's own port, which the tenant apiserver dials at the pod IP the Nodes advertise.
pub const KUBELET_PORT: i32 = 10250;
/// Where the clustertree serves the tenant's cluster DNS, UDP and TCP: unprivileged, so
/// the container needs no capability; the tenant's `kube-dns` Service maps 53 to it.
pub const DNS_PORT: i32 = 1053;

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

/// The cluster-scoped workload Namespace `vc-NS-NAME`, under [`POD_SECURITY_LABELS`]
/// with `enforce` at the tenant's level (`baseline` unless the cluster admin chose
/// another on the VirtualCluster's namespace).
pub fn workload_namespace(tenant: &Tenant) -> Namespace {
    let mut metadata = unowned_meta(
        tenant,
        tenant.workload_namespace(),
        None,
        Component::ClusterTree,
    );
    let labels = metadata.labels.get_or_insert_with(Default::default);
    labels.extend(
        POD_SECURITY_LABELS
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
    );
    labels.insert(
        POD_SECURITY_LABELS[0].0.to_owned(),
        tenant.pod_security.as_str().to_owned(),
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

/// ResourceQuota `NAME-pool` in the workload namespace, equal to the pooled resources,
/// counting only the pool's host pods (PriorityClass [`POOL_PRIORITY_CLASS`]): pods on
/// the tenant's promoted nodes are bounded by those nodes and need no requests.
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
            scope_selector: Some(ScopeSelector {
                match_expressions: Some(vec![ScopedResourceSelectorRequirement {
                    scope_name: "PriorityClass".to_owned(),
                    operator: "In".to_owned(),
                    values: Some(vec![POOL_PRIORITY_CLASS.to_owned()]),
                }]),
            }),
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

/// Name of the chart's fixed clustertree ClusterRole when `--clustertree-cluster-role`
/// is not given: the chart's own name for a release called `kosmos-vc`.
pub const DEFAULT_WORKLOAD_CLUSTER_ROLE: &str = "kosmos-vc-clustertree";

/// What every clustertree does with its tenant's pods in its workload namespace, and
/// nothing more: the rules of the chart's fixed ClusterRole
/// (`templates/clustertree-rbac.yaml`, checked equal by the chart tests). Granted only
/// through a RoleBinding in `vc-NS-NAME`, so they never reach another namespace, and the
/// controller needs only `bind` on that one ClusterRole instead of holding them all
/// cluster-wide. Explicit verbs and resources, no wildcard.
pub fn workload_rules() -> Vec<PolicyRule> {
    vec![
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
        PolicyRule {
            api_groups: Some(vec!["discovery.k8s.io".to_owned()]),
            resources: Some(vec!["endpointslices".to_owned()]),
            verbs: READ_WRITE.iter().map(|verb| (*verb).to_owned()).collect(),
            ..PolicyRule::default()
        },
        rule(&["pods/log"], &["get"]),
        rule(&["pods/exec"], &["create"]),
        rule(
            &["events"],
            &["create", "get", "list", "patch", "update", "watch"],
        ),
    ]
}

/// The chart's fixed clustertree ClusterRole named `name`, as the chart installs it; for
/// hosts the chart does not install (tests).
pub fn workload_cluster_role(name: &str) -> ClusterRole {
    ClusterRole {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        rules: Some(workload_rules()),
        aggregation_rule: None,
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

/// RoleBinding `NAME-clustertree-workload` in the workload namespace: the chart's fixed
/// ClusterRole ([`workload_rules`]), which the controller may `bind` but does not hold,
/// for the clustertree in that namespace alone.
pub fn role_binding(tenant: &Tenant) -> RoleBinding {
    RoleBinding {
        metadata: unowned_meta(
            tenant,
            names::clustertree_workload_binding(&tenant.name),
            Some(tenant.workload_namespace()),
            Component::ClusterTree,
        ),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: tenant.clustertree_cluster_role.clone(),
        },
        subjects: Some(vec![clustertree_subject(tenant)]),
    }
}

/// Role `NAME-clustertree` beside the VirtualCluster: `get` on that one VirtualCluster,
/// where the clustertree reads the promoted nodes and pooled resources it serves.
pub fn virtual_cluster_reader_role(tenant: &Tenant) -> Role {
    Role {
        metadata: owned_meta(
            tenant,
            names::clustertree(&tenant.name),
            Component::ClusterTree,
        ),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![GROUP.to_owned()]),
            resources: Some(vec![PLURAL.to_owned()]),
            resource_names: Some(vec![tenant.name.clone()]),
            verbs: vec!["get".to_owned()],
            ..PolicyRule::default()
        }]),
    }
}

/// RoleBinding `NAME-clustertree` beside the VirtualCluster.
pub fn virtual_cluster_reader_binding(tenant: &Tenant) -> RoleBinding {
    RoleBinding {
        metadata: owned_meta(
            tenant,
            names::clustertree(&tenant.name),
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

/// Deployment `NAME-clustertree`: `vc-clustertree` from the operator's clustertree image,
/// told which VirtualCluster it serves by flags, with the tenant's in-cluster admin
/// kubeconfig, and ServiceAccount `NAME-clustertree` (in-cluster config) for the host. The
/// tenant's Nodes advertise the pod IP, where it serves their kubelet API.
///
/// With the apiserver Service's cluster IP known, the tenant's DNS answers
/// `kubernetes.default.svc` with it (`--apiserver-cluster-ip`).
pub fn deployment(
    tenant: &Tenant,
    apiserver_cluster_ip: Option<std::net::IpAddr>,
    config_hash: &str,
) -> Deployment {
    let mut args = vec![
        format!("--tenant-kubeconfig={TENANT_KUBECONFIG_DIR}/config"),
        format!("--namespace={}", tenant.namespace),
        format!("--name={}", tenant.name),
        "--kubelet-address=$(POD_IP)".to_owned(),
        format!("--kubelet-listen=0.0.0.0:{KUBELET_PORT}"),
        format!("--pod-security={}", tenant.pod_security),
        format!("--dns-listen=0.0.0.0:{DNS_PORT}"),
    ];
    if let Some(ip) = apiserver_cluster_ip {
        args.push(format!("--apiserver-cluster-ip={ip}"));
    }
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
        command: Some(vec![CLUSTERTREE_COMMAND.to_owned()]),
        args: Some(args),
        env: Some(vec![env_from_field("POD_IP", "status.podIP")]),
        ports: Some(vec![
            ContainerPort {
                name: Some("kubelet".to_owned()),
                container_port: KUBELET_PORT,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("dns".to_owned()),
                container_port: DNS_PORT,
                protocol: Some("UDP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("dns-tcp".to_owned()),
                container_port: DNS_PORT,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
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

#[cfg(test)]
mod tests;
