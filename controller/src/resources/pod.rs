//! Pieces of pod templates shared by the control-plane workloads.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, PodAffinityTerm,
    PodAntiAffinity, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource, ResourceRequirements,
    SecretProjection, Volume, VolumeMount, VolumeProjection, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Tenant;
use super::meta::{Component, hash_annotations, labels, owned_meta, selector};

/// One Secret projected into a volume: `(secret name, [(key, path in the volume)])`.
pub type SecretItems = (String, Vec<(&'static str, &'static str)>);

/// A read-only volume combining keys of several Secrets under kubeadm's file names.
pub fn projected_secrets(volume_name: &str, sources: Vec<SecretItems>) -> Volume {
    Volume {
        name: volume_name.to_owned(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o400),
            sources: Some(
                sources
                    .into_iter()
                    .map(|(secret, items)| VolumeProjection {
                        secret: Some(SecretProjection {
                            name: secret,
                            items: Some(
                                items
                                    .into_iter()
                                    .map(|(key, path)| KeyToPath {
                                        key: key.to_owned(),
                                        path: path.to_owned(),
                                        mode: None,
                                    })
                                    .collect(),
                            ),
                            optional: Some(false),
                        }),
                        ..VolumeProjection::default()
                    })
                    .collect(),
            ),
        }),
        ..Volume::default()
    }
}

/// A read-only mount.
pub fn read_only_mount(volume_name: &str, mount_path: &str) -> VolumeMount {
    VolumeMount {
        name: volume_name.to_owned(),
        mount_path: mount_path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// An environment variable from the pod's own fields (`metadata.name`, `status.podIP`).
pub fn env_from_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: field_path.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// An HTTP(S) GET probe.
pub fn http_probe(path: &str, port: i32, scheme: &str, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(port),
            scheme: Some(scheme.to_owned()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(10),
        period_seconds: Some(10),
        timeout_seconds: Some(15),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

/// A Deployment owned by the tenant, with the config hash on its pod template.
pub fn deployment(
    tenant: &Tenant,
    name: String,
    component: Component,
    replicas: i32,
    config_hash: &str,
    pod_spec: PodSpec,
) -> Deployment {
    Deployment {
        metadata: owned_meta(tenant, name, component),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: selector(tenant, component),
            template: pod_template(tenant, component, config_hash, pod_spec),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// CPU and memory requests, as kubeadm sets them for the control plane.
pub fn requests(cpu: &str, memory: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])),
        ..ResourceRequirements::default()
    }
}

/// Spreads the replicas of one component over host nodes when it can.
fn spread(tenant: &Tenant, component: Component) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(selector(tenant, component)),
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// A pod template labelled for `component`, with the config hash annotation.
///
/// Service links are off: a namespace holding many tenants has thousands of Services,
/// and injecting each as environment variables would bloat every control-plane pod.
pub fn pod_template(
    tenant: &Tenant,
    component: Component,
    config_hash: &str,
    mut pod_spec: PodSpec,
) -> PodTemplateSpec {
    pod_spec.enable_service_links = Some(false);
    if !tenant.control_plane_node_selector.is_empty() {
        pod_spec.node_selector = Some(tenant.control_plane_node_selector.clone());
    }
    if pod_spec.affinity.is_none() {
        pod_spec.affinity = Some(spread(tenant, component));
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(tenant, component)),
            annotations: Some(hash_annotations(config_hash)),
            ..ObjectMeta::default()
        }),
        spec: Some(pod_spec),
    }
}

#[cfg(test)]
mod tests;
