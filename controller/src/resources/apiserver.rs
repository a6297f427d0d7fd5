//! The tenant's kube-apiserver: a Deployment with kubeadm's flags and a Service of the
//! type the spec asks for, port 6443 named `https`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use vc_api::ServiceType;

use super::meta::{Component, labels, owned_meta};
use super::pod::{
    deployment as owned_deployment, env_from_field, http_probe, projected_secrets, read_only_mount,
    requests,
};
use super::{BuildContext, Tenant, names};
use crate::pki::{CA_CERT_KEY, SA_PRIVATE_KEY, SA_PUBLIC_KEY, TLS_CERT_KEY, TLS_KEY_KEY};

/// Secure port of the apiserver and of its Service.
pub const SECURE_PORT: i32 = 6443;
/// Name of the Service port.
pub const PORT_NAME: &str = "https";
/// Where the certificates are mounted (kubeadm's layout).
pub const PKI_DIR: &str = "/etc/kubernetes/pki";
/// Name of the certificate volume.
pub const PKI_VOLUME: &str = "k8s-certs";

/// Service `NAME-apiserver`.
pub fn service(tenant: &Tenant) -> Service {
    let service_type = match tenant.service_type {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    Service {
        metadata: owned_meta(tenant, names::apiserver(&tenant.name), Component::ApiServer),
        spec: Some(ServiceSpec {
            type_: Some(service_type.to_owned()),
            selector: Some(labels(tenant, Component::ApiServer)),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.to_owned()),
                port: SECURE_PORT,
                target_port: Some(IntOrString::Int(SECURE_PORT)),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// kube-apiserver's flags, as kubeadm sets them, except `--allow-privileged=false`: a
/// tenant's pods run on shared host nodes in a namespace enforcing Pod Security
/// `baseline`, so the tenant refuses a privileged container at once, with its own
/// reason, instead of accepting a pod the host will never run.
pub fn args(tenant: &Tenant, ctx: &BuildContext) -> Vec<String> {
    let pki = |file: &str| format!("{PKI_DIR}/{file}");
    let flags = BTreeMap::from([
        ("advertise-address", "$(POD_IP)".to_owned()),
        ("allow-privileged", "false".to_owned()),
        ("authorization-mode", "Node,RBAC".to_owned()),
        ("client-ca-file", pki("ca.crt")),
        ("enable-admission-plugins", "NodeRestriction".to_owned()),
        ("enable-bootstrap-token-auth", "true".to_owned()),
        ("etcd-cafile", pki("etcd/ca.crt")),
        ("etcd-certfile", pki("apiserver-etcd-client.crt")),
        ("etcd-keyfile", pki("apiserver-etcd-client.key")),
        (
            "etcd-servers",
            names::etcd_client_url(&tenant.namespace, &tenant.name),
        ),
        (
            "kubelet-client-certificate",
            pki("apiserver-kubelet-client.crt"),
        ),
        ("kubelet-client-key", pki("apiserver-kubelet-client.key")),
        (
            "kubelet-preferred-address-types",
            "InternalIP,ExternalIP,Hostname".to_owned(),
        ),
        ("proxy-client-cert-file", pki("front-proxy-client.crt")),
        ("proxy-client-key-file", pki("front-proxy-client.key")),
        (
            "requestheader-allowed-names",
            "front-proxy-client".to_owned(),
        ),
        ("requestheader-client-ca-file", pki("front-proxy-ca.crt")),
        (
            "requestheader-extra-headers-prefix",
            "X-Remote-Extra-".to_owned(),
        ),
        ("requestheader-group-headers", "X-Remote-Group".to_owned()),
        ("requestheader-username-headers", "X-Remote-User".to_owned()),
        ("secure-port", SECURE_PORT.to_string()),
        (
            "service-account-issuer",
            format!("https://kubernetes.default.svc.{}", ctx.cluster_domain),
        ),
        ("service-account-key-file", pki("sa.pub")),
        ("service-account-signing-key-file", pki("sa.key")),
        ("service-cluster-ip-range", ctx.tenant_service_cidr.clone()),
        ("tls-cert-file", pki("apiserver.crt")),
        ("tls-private-key-file", pki("apiserver.key")),
    ]);
    flags
        .into_iter()
        .map(|(flag, value)| format!("--{flag}={value}"))
        .collect()
}

/// Deployment `NAME-apiserver`.
pub fn deployment(tenant: &Tenant, ctx: &BuildContext, config_hash: &str) -> Deployment {
    let name = &tenant.name;
    let certificates = projected_secrets(
        PKI_VOLUME,
        vec![
            (
                names::cluster_ca_secret(name),
                vec![(TLS_CERT_KEY, "ca.crt")],
            ),
            (
                names::apiserver_tls_secret(name),
                vec![
                    (TLS_CERT_KEY, "apiserver.crt"),
                    (TLS_KEY_KEY, "apiserver.key"),
                ],
            ),
            (
                names::apiserver_etcd_client_secret(name),
                vec![
                    (CA_CERT_KEY, "etcd/ca.crt"),
                    (TLS_CERT_KEY, "apiserver-etcd-client.crt"),
                    (TLS_KEY_KEY, "apiserver-etcd-client.key"),
                ],
            ),
            (
                names::apiserver_kubelet_client_secret(name),
                vec![
                    (TLS_CERT_KEY, "apiserver-kubelet-client.crt"),
                    (TLS_KEY_KEY, "apiserver-kubelet-client.key"),
                ],
            ),
            (
                names::front_proxy_ca_secret(name),
                vec![(TLS_CERT_KEY, "front-proxy-ca.crt")],
            ),
            (
                names::front_proxy_client_secret(name),
                vec![
                    (TLS_CERT_KEY, "front-proxy-client.crt"),
                    (TLS_KEY_KEY, "front-proxy-client.key"),
                ],
            ),
            (
                names::service_account_key_secret(name),
                vec![(SA_PRIVATE_KEY, "sa.key"), (SA_PUBLIC_KEY, "sa.pub")],
            ),
        ],
    );
    let container = Container {
        name: "kube-apiserver".to_owned(),
        image: Some(tenant.component_image(ctx, "kube-apiserver")),
        command: Some(vec!["kube-apiserver".to_owned()]),
        args: Some(args(tenant, ctx)),
        env: Some(vec![env_from_field("POD_IP", "status.podIP")]),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.to_owned()),
            container_port: SECURE_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        resources: Some(requests("250m", "256Mi")),
        startup_probe: Some(http_probe("/livez", SECURE_PORT, "HTTPS", 24)),
        liveness_probe: Some(http_probe("/livez", SECURE_PORT, "HTTPS", 8)),
        readiness_probe: Some(http_probe("/readyz", SECURE_PORT, "HTTPS", 3)),
        volume_mounts: Some(vec![read_only_mount(PKI_VOLUME, PKI_DIR)]),
        ..Container::default()
    };
    owned_deployment(
        tenant,
        names::apiserver(name),
        Component::ApiServer,
        tenant.apiserver_replicas,
        config_hash,
        PodSpec {
            automount_service_account_token: Some(false),
            containers: vec![container],
            volumes: Some(vec![certificates]),
            ..PodSpec::default()
        },
    )
}
