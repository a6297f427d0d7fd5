//! Labels, ownerReferences and the pod-template hash shared by every builder.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{KeyToPath, PodSpec, PodTemplateSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use sha2::{Digest, Sha256};
use vc_api::constants::{
    COMPONENT_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, OWNER_ANNOTATION, OWNER_UID_ANNOTATION,
    TENANT_NAME_LABEL,
};

use super::Tenant;

pub use vc_api::constants::CONFIG_HASH_ANNOTATION;

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
/// VirtualCluster cannot own across namespaces), removed by the finalizer. With no
/// ownerReference to carry the VirtualCluster's UID, the owner annotations do: the
/// controller touches such an object only when they name this VirtualCluster.
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
        annotations: Some(BTreeMap::from([
            (OWNER_UID_ANNOTATION.to_owned(), tenant.uid.clone()),
            (
                OWNER_ANNOTATION.to_owned(),
                format!("{}/{}", tenant.namespace, tenant.name),
            ),
        ])),
        ..ObjectMeta::default()
    }
}

/// SHA-256 over exactly the Secret keys `pod` mounts (projected or plain Secret volumes;
/// every key when a volume lists no items), in a fixed order. A change to any other key,
/// such as the external endpoint in the admin kubeconfig, does not roll the pod.
pub fn mounted_config_hash(pod: &PodSpec, secrets: &[&Secret]) -> String {
    let mut mounted: BTreeSet<(String, Option<String>)> = BTreeSet::new();
    let mut add = |secret: &str, items: Option<&Vec<KeyToPath>>| match items {
        Some(items) => mounted.extend(
            items
                .iter()
                .map(|item| (secret.to_owned(), Some(item.key.clone()))),
        ),
        None => {
            mounted.insert((secret.to_owned(), None));
        }
    };
    for volume in pod.volumes.iter().flatten() {
        if let Some(secret) = &volume.secret
            && let Some(name) = &secret.secret_name
        {
            add(name, secret.items.as_ref());
        }
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(secret) = &source.secret {
                add(&secret.name, secret.items.as_ref());
            }
        }
    }
    let mut hasher = Sha256::new();
    let mut write = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    for (name, key) in mounted {
        let data = secrets
            .iter()
            .find(|secret| secret.metadata.name.as_deref() == Some(name.as_str()))
            .and_then(|secret| secret.data.as_ref());
        write(name.as_bytes());
        for (stored_key, value) in data.into_iter().flatten() {
            if key.as_ref().is_none_or(|key| key == stored_key) {
                write(stored_key.as_bytes());
                write(&value.0);
            }
        }
    }
    hex::encode(hasher.finalize())
}

/// Sets the config-hash annotation of `template` from the Secret keys it mounts.
pub fn stamp_config_hash(template: &mut PodTemplateSpec, secrets: &[&Secret]) {
    let hash = template
        .spec
        .as_ref()
        .map(|pod| mounted_config_hash(pod, secrets))
        .unwrap_or_default();
    template
        .metadata
        .get_or_insert_with(ObjectMeta::default)
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CONFIG_HASH_ANNOTATION.to_owned(), hash);
}

/// Pod-template annotations carrying `hash`.
pub fn hash_annotations(hash: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), hash.to_owned())])
}
