//! Shared fixtures of the builder tests.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec, Secret};
use vc_api::VirtualCluster;

use super::{BuildContext, DesiredState, Observed, Tenant, tenant_identity};
use crate::pki::{ExistingPki, PkiMaterial, ensure_pki};

/// A VirtualCluster as the webhook leaves it: namespace, name and uid set.
pub fn virtual_cluster(yaml_spec: &str) -> VirtualCluster {
    let manifest = format!(
        "apiVersion: kosmos.io/v1alpha1\nkind: VirtualCluster\nmetadata:\n  name: prod\n  namespace: team-a\n  uid: 0b6f7c1e-uid\nspec:\n{yaml_spec}"
    );
    serde_yaml::from_str(&manifest).unwrap()
}

/// The default VirtualCluster of most tests.
pub fn default_vc() -> VirtualCluster {
    virtual_cluster(
        "  promoteResources:\n    nodes: [node1, node2]\n    resources: {cpu: 10, memory: 100Gi}\n",
    )
}

pub fn tenant(vc: &VirtualCluster) -> Tenant {
    Tenant::resolve(vc, &BuildContext::default()).unwrap()
}

pub fn observed() -> Observed {
    Observed {
        workload_pod_security: vc_api::pod_security::PodSecurityLevel::Baseline,
        apiserver_cluster_ip: Some("127.100.0.7".parse().unwrap()),
        load_balancer_hosts: Vec::new(),
        claimed_nodes: vec!["node2".to_owned(), "node1".to_owned()],
    }
}

/// PKI of the default tenant, issued once per test binary (key generation is the slow part).
pub fn pki() -> &'static PkiMaterial {
    static PKI: OnceLock<PkiMaterial> = OnceLock::new();
    PKI.get_or_init(|| {
        let tenant = tenant(&default_vc());
        let identity = tenant_identity(&tenant, &BuildContext::default(), &observed()).unwrap();
        ensure_pki(&identity, &ExistingPki::default(), jiff::Timestamp::now())
            .unwrap()
            .1
    })
}

/// Every object of `vc`, built with the default context, observations and PKI.
pub fn build(vc: &VirtualCluster) -> DesiredState {
    DesiredState::build(vc, &BuildContext::default(), &observed(), pki()).unwrap()
}

/// The pod spec of the etcd StatefulSet.
pub fn etcd_pod_spec(state: &DesiredState) -> &PodSpec {
    let spec = state.etcd.stateful_set.spec.as_ref().unwrap();
    spec.template.spec.as_ref().unwrap()
}

pub fn pod_spec(deployment: &Deployment) -> &PodSpec {
    let spec = deployment.spec.as_ref().unwrap();
    spec.template.spec.as_ref().unwrap()
}

/// The hash of the Secrets a Deployment's pods mount, which rolls them when it changes.
pub fn config_hash(deployment: &Deployment) -> String {
    deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[super::meta::CONFIG_HASH_ANNOTATION]
        .clone()
}

pub fn container(spec: &PodSpec) -> &Container {
    &spec.containers[0]
}

pub fn args(container: &Container) -> Vec<&str> {
    container
        .args
        .iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

pub fn flag<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    let prefix = format!("--{name}=");
    container
        .args
        .iter()
        .flatten()
        .find_map(|arg| arg.strip_prefix(&prefix))
}

/// File paths a pod sees, from its projected/secret volumes and mounts.
pub fn mounted_files(spec: &PodSpec, container: &Container) -> BTreeMap<String, (String, String)> {
    let mut files = BTreeMap::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|volume| volume.name == mount.name);
        let Some(volume) = volume else { continue };
        let mut add = |secret: &str, items: &[k8s_openapi::api::core::v1::KeyToPath]| {
            for item in items {
                files.insert(
                    format!("{}/{}", mount.mount_path, item.path),
                    (secret.to_owned(), item.key.clone()),
                );
            }
        };
        if let Some(projected) = &volume.projected {
            for source in projected.sources.iter().flatten() {
                if let Some(secret) = &source.secret {
                    add(&secret.name, secret.items.as_deref().unwrap_or_default());
                }
            }
        }
        if let Some(secret) = &volume.secret {
            add(
                secret.secret_name.as_deref().unwrap(),
                secret.items.as_deref().unwrap_or_default(),
            );
        }
    }
    files
}

/// Every flag whose value is an absolute file path must name a mounted Secret key that
/// the built Secrets actually hold.
pub fn assert_flag_files_are_mounted(state: &DesiredState, spec: &PodSpec) {
    let container = container(spec);
    let files = mounted_files(spec, container);
    let secrets: Vec<&Secret> = state
        .pki_secrets
        .iter()
        .chain(std::iter::once(&state.admin_kubeconfig))
        .collect();
    for arg in args(container) {
        let Some((_, value)) = arg.split_once('=') else {
            continue;
        };
        if !value.starts_with("/etc/") {
            continue;
        }
        let (secret, key) = files
            .get(value)
            .unwrap_or_else(|| panic!("{arg}: {value} is not mounted; mounted: {files:?}"));
        let holder = secrets
            .iter()
            .find(|candidate| candidate.metadata.name.as_deref() == Some(secret.as_str()))
            .unwrap_or_else(|| panic!("{arg}: Secret {secret} is not built"));
        assert!(
            holder.data.as_ref().unwrap().contains_key(key),
            "{arg}: Secret {secret} has no key {key}"
        );
    }
}

pub fn pod_labels_of(pod: &PodSpec, state: &DesiredState) -> BTreeMap<String, String> {
    let templates = [
        &state.etcd.stateful_set.spec.as_ref().unwrap().template,
        &state.apiserver_deployment.spec.as_ref().unwrap().template,
        &state.controller_manager.spec.as_ref().unwrap().template,
        &state.scheduler.spec.as_ref().unwrap().template,
    ];
    templates
        .into_iter()
        .find(|template| template.spec.as_ref() == Some(pod))
        .and_then(|template| template.metadata.as_ref()?.labels.clone())
        .unwrap()
}
