//! Labels, ownerReferences and the pod-template hash shared by every builder.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use sha2::{Digest, Sha256};
use vc_api::constants::{COMPONENT_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, TENANT_NAME_LABEL};

use super::Tenant;

/// Pod-template annotation holding a hash of every Secret the pod mounts, so a certificate
/// renewal rolls the pods. Only the controller reads it.
// Belongs in vc_api::constants; kept here until that file's owner moves it.
pub const CONFIG_HASH_ANNOTATION: &str = "vc.kosmos.io/config-hash";

/// The `app.kubernetes.io/component` values of `docs/contracts.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// etcd members and Services.
    Etcd,
    /// kube-apiserver.
    ApiServer,
    /// kube-controller-manager.
    ControllerManager,
    /// kube-scheduler.
    Scheduler,
    /// clustertree and its host credential.
    ClusterTree,
    /// certificate Secrets.
    Pki,
    /// kubeconfig Secrets.
    Kubeconfig,
}

impl Component {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Etcd => "etcd",
            Self::ApiServer => "apiserver",
            Self::ControllerManager => "controller-manager",
            Self::Scheduler => "scheduler",
            Self::ClusterTree => "clustertree",
            Self::Pki => "pki",
            Self::Kubeconfig => "kubeconfig",
        }
    }
}

/// The three standard labels of every tenant object.
pub fn labels(tenant: &Tenant, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (TENANT_NAME_LABEL.to_owned(), tenant.name.clone()),
        (COMPONENT_LABEL.to_owned(), component.as_str().to_owned()),
    ])
}

/// Selector matching the pods of one component of one tenant. Built from the labels, so
/// it never changes (selectors are immutable).
pub fn selector(tenant: &Tenant, component: Component) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(tenant, component)),
        match_expressions: None,
    }
}

/// The ownerReference tying an object to its VirtualCluster.
pub fn owner_reference(tenant: &Tenant) -> OwnerReference {
    OwnerReference {
        api_version: vc_api::constants::API_VERSION.to_owned(),
        kind: vc_api::constants::KIND.to_owned(),
        name: tenant.name.clone(),
        uid: tenant.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Metadata of an object in the VirtualCluster's namespace, owned by it.
pub fn owned_meta(tenant: &Tenant, name: String, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(tenant.namespace.clone()),
        labels: Some(labels(tenant, component)),
        owner_references: Some(vec![owner_reference(tenant)]),
        ..ObjectMeta::default()
    }
}

/// Metadata of a cluster-scoped object (or one in the workload namespace, which the
/// VirtualCluster cannot own across namespaces): labels only, removed by the finalizer.
pub fn unowned_meta(
    tenant: &Tenant,
    name: String,
    namespace: Option<String>,
    component: Component,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace,
        labels: Some(labels(tenant, component)),
        ..ObjectMeta::default()
    }
}

/// SHA-256 over the names and data of `secrets`, in name order.
pub fn config_hash<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> String {
    let mut sorted: Vec<&Secret> = secrets.into_iter().collect();
    sorted.sort_by(|left, right| left.metadata.name.cmp(&right.metadata.name));
    let mut hasher = Sha256::new();
    for secret in sorted {
        let name = secret.metadata.name.as_deref().unwrap_or_default();
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        for (key, value) in secret.data.iter().flatten() {
            hasher.update((key.len() as u64).to_be_bytes());
            hasher.update(key.as_bytes());
            hasher.update((value.0.len() as u64).to_be_bytes());
            hasher.update(&value.0);
        }
    }
    hex::encode(hasher.finalize())
}

/// Pod-template annotations carrying `hash`.
pub fn hash_annotations(hash: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), hash.to_owned())])
}
