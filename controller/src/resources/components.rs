//! kube-controller-manager and kube-scheduler: Deployments with kubeadm's flags, each
//! with its own kubeconfig. They run as many replicas as the apiserver, and elect a
//! leader only when there is more than one.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec, SecretVolumeSource, Volume};
use vc_api::constants::KUBECONFIG_SECRET_KEY;

use super::meta::Component;
use super::pod::{deployment, http_probe, projected_secrets, read_only_mount, requests};
use super::{BuildContext, Tenant, names};
use crate::pki::{SA_PRIVATE_KEY, TLS_CERT_KEY, TLS_KEY_KEY};

/// Where the component's kubeconfig Secret is mounted.
pub const KUBECONFIG_DIR: &str = "/etc/kubernetes/kubeconfig";
/// Where the controller-manager's certificates are mounted.
pub const PKI_DIR: &str = "/etc/kubernetes/pki";
/// kube-controller-manager's secure port.
pub const CONTROLLER_MANAGER_PORT: i32 = 10257;
/// kube-scheduler's secure port.
pub const SCHEDULER_PORT: i32 = 10259;

/// Replicas of the controller-manager and scheduler: the apiserver's.
pub fn replicas(tenant: &Tenant) -> i32 {
    tenant.apiserver_replicas
}

/// Whether leader election is on: only when replicas > 1.
pub fn leader_elect(tenant: &Tenant) -> bool {
    replicas(tenant) > 1
}

fn kubeconfig_volume(secret: String, file: &str) -> Volume {
    Volume {
        name: "kubeconfig".to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            default_mode: Some(0o400),
            items: Some(vec![k8s_openapi::api::core::v1::KeyToPath {
                key: KUBECONFIG_SECRET_KEY.to_owned(),
                path: file.to_owned(),
                mode: None,
            }]),
            optional: Some(false),
        }),
        ..Volume::default()
    }
}

fn render(flags: BTreeMap<&str, String>) -> Vec<String> {
    flags
        .into_iter()
        .map(|(flag, value)| format!("--{flag}={value}"))
        .collect()
}

/// kube-controller-manager's flags.
pub fn controller_manager_args(tenant: &Tenant, ctx: &BuildContext) -> Vec<String> {
    let kubeconfig = format!("{KUBECONFIG_DIR}/controller-manager.conf");
    let pki = |file: &str| format!("{PKI_DIR}/{file}");
    render(BTreeMap::from([
        ("authentication-kubeconfig", kubeconfig.clone()),
        ("authorization-kubeconfig", kubeconfig.clone()),
        ("bind-address", "0.0.0.0".to_owned()),
        ("client-ca-file", pki("ca.crt")),
        ("cluster-name", tenant.name.clone()),
        ("cluster-signing-cert-file", pki("ca.crt")),
        ("cluster-signing-key-file", pki("ca.key")),
        ("controllers", "*,bootstrapsigner,tokencleaner".to_owned()),
        ("kubeconfig", kubeconfig),
        ("leader-elect", leader_elect(tenant).to_string()),
        ("requestheader-client-ca-file", pki("front-proxy-ca.crt")),
        ("root-ca-file", pki("ca.crt")),
        ("secure-port", CONTROLLER_MANAGER_PORT.to_string()),
        ("service-account-private-key-file", pki("sa.key")),
        ("service-cluster-ip-range", ctx.tenant_service_cidr.clone()),
        ("use-service-account-credentials", "true".to_owned()),
    ]))
}

/// kube-scheduler's flags.
pub fn scheduler_args(tenant: &Tenant) -> Vec<String> {
    let kubeconfig = format!("{KUBECONFIG_DIR}/scheduler.conf");
    render(BTreeMap::from([
        ("authentication-kubeconfig", kubeconfig.clone()),
        ("authorization-kubeconfig", kubeconfig.clone()),
        ("bind-address", "0.0.0.0".to_owned()),
        ("kubeconfig", kubeconfig),
        ("leader-elect", leader_elect(tenant).to_string()),
        ("secure-port", SCHEDULER_PORT.to_string()),
    ]))
}

fn container(
    name: &str,
    image: String,
    args: Vec<String>,
    cpu: &str,
    port: i32,
    mounts: Vec<k8s_openapi::api::core::v1::VolumeMount>,
) -> Container {
    Container {
        name: name.to_owned(),
        image: Some(image),
        command: Some(vec![name.to_owned()]),
        args: Some(args),
        resources: Some(requests(cpu, "128Mi")),
        startup_probe: Some(http_probe("/healthz", port, "HTTPS", 24)),
        liveness_probe: Some(http_probe("/healthz", port, "HTTPS", 8)),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

/// Deployment `NAME-controller-manager`.
pub fn controller_manager_deployment(
    tenant: &Tenant,
    ctx: &BuildContext,
    config_hash: &str,
) -> Deployment {
    let name = &tenant.name;
    let certificates = projected_secrets(
        "k8s-certs",
        vec![
            (
                names::cluster_ca_secret(name),
                vec![(TLS_CERT_KEY, "ca.crt"), (TLS_KEY_KEY, "ca.key")],
            ),
            (
                names::front_proxy_ca_secret(name),
                vec![(TLS_CERT_KEY, "front-proxy-ca.crt")],
            ),
            (
                names::service_account_key_secret(name),
                vec![(SA_PRIVATE_KEY, "sa.key")],
            ),
        ],
    );
    let container = container(
        "kube-controller-manager",
        tenant.component_image(ctx, "kube-controller-manager"),
        controller_manager_args(tenant, ctx),
        "200m",
        CONTROLLER_MANAGER_PORT,
        vec![
            read_only_mount("kubeconfig", KUBECONFIG_DIR),
            read_only_mount("k8s-certs", PKI_DIR),
        ],
    );
    deployment(
        tenant,
        names::controller_manager(name),
        Component::ControllerManager,
        replicas(tenant),
        config_hash,
        PodSpec {
            automount_service_account_token: Some(false),
            containers: vec![container],
            volumes: Some(vec![
                kubeconfig_volume(
                    names::controller_manager_kubeconfig_secret(name),
                    "controller-manager.conf",
                ),
                certificates,
            ]),
            ..PodSpec::default()
        },
    )
}

/// Deployment `NAME-scheduler`.
pub fn scheduler_deployment(tenant: &Tenant, ctx: &BuildContext, config_hash: &str) -> Deployment {
    let name = &tenant.name;
    let container = container(
        "kube-scheduler",
        tenant.component_image(ctx, "kube-scheduler"),
        scheduler_args(tenant),
        "100m",
        SCHEDULER_PORT,
        vec![read_only_mount("kubeconfig", KUBECONFIG_DIR)],
    );
    deployment(
        tenant,
        names::scheduler(name),
        Component::Scheduler,
        replicas(tenant),
        config_hash,
        PodSpec {
            automount_service_account_token: Some(false),
            containers: vec![container],
            volumes: Some(vec![kubeconfig_volume(
                names::scheduler_kubeconfig_secret(name),
                "scheduler.conf",
            )]),
            ..PodSpec::default()
        },
    )
}

#[cfg(test)]
mod tests;
