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
use crate::pki::{
    CA_CERT_KEY, CLIENT_CA_BUNDLE_KEY, ENCRYPTION_CONFIG_KEY, SA_PRIVATE_KEY, SA_PUBLIC_KEY,
    TLS_CERT_KEY, TLS_KEY_KEY,
};

/// Secure port of the apiserver and of its Service.
pub const SECURE_PORT: i32 = 6443;
/// Name of the Service port.
pub const PORT_NAME: &str = "https";
/// The port `kubernetes.default.svc` has in every cluster: the tenant's DNS answers
/// that name with this Service's cluster IP, so tenant pods reach their apiserver at
/// `https://kubernetes.default.svc` (its serving certificate names it).
pub const KUBERNETES_PORT: i32 = 443;
/// Name of the [`KUBERNETES_PORT`] Service port.
pub const KUBERNETES_PORT_NAME: &str = "kubernetes";
/// Where the certificates are mounted (kubeadm's layout).
pub const PKI_DIR: &str = "/etc/kubernetes/pki";
/// Name of the certificate volume.
pub const PKI_VOLUME: &str = "k8s-certs";
/// Where the admission configuration is mounted.
pub const ADMISSION_DIR: &str = "/etc/kubernetes/admission";
/// Name of the admission configuration volume.
pub const ADMISSION_VOLUME: &str = "admission";
/// The `--admission-control-config-file`, in [`ADMISSION_DIR`].
pub const ADMISSION_CONFIG_FILE: &str = "admission.yaml";
/// Where the encryption-at-rest configuration is mounted.
pub const ENCRYPTION_DIR: &str = "/etc/kubernetes/encryption";
/// Name of the encryption-at-rest configuration volume.
pub const ENCRYPTION_VOLUME: &str = "encryption";
/// The kubeconfig the apiserver authenticates to webhooks with, in [`ADMISSION_DIR`].
pub const WEBHOOK_KUBECONFIG_FILE: &str = "webhook-kubeconfig.yaml";

/// The admission configuration files, by name, for an apiserver reading them from
/// `config_dir`: the mutating webhooks get the apiserver's kubelet-client certificate
/// (`client_cert`, `client_key` are paths), which vc-clustertree's Service webhook, served
/// on its kubelet API listener, requires. Every webhook gets it (`users: - name: "*"`),
/// as the clustertree's address is its pod IP; presenting a client certificate proves
/// the key without revealing it, so another webhook learns nothing it could reuse.
pub fn admission_files(
    config_dir: &str,
    client_cert: &str,
    client_key: &str,
) -> BTreeMap<String, String> {
    let configuration = serde_json::json!({
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [{
            "name": "MutatingAdmissionWebhook",
            "configuration": {
                "apiVersion": "apiserver.config.k8s.io/v1",
                "kind": "WebhookAdmissionConfiguration",
                "kubeConfigFile": format!("{config_dir}/{WEBHOOK_KUBECONFIG_FILE}"),
            },
        }],
    });
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "users": [{
            "name": "*",
            "user": {"client-certificate": client_cert, "client-key": client_key},
        }],
    });
    BTreeMap::from([
        (ADMISSION_CONFIG_FILE.to_owned(), configuration.to_string()),
        (WEBHOOK_KUBECONFIG_FILE.to_owned(), kubeconfig.to_string()),
    ])
}

/// [`admission_files`] for the apiserver Deployment's own paths.
pub fn deployed_admission_files() -> BTreeMap<String, String> {
    admission_files(
        ADMISSION_DIR,
        &format!("{PKI_DIR}/apiserver-kubelet-client.crt"),
        &format!("{PKI_DIR}/apiserver-kubelet-client.key"),
    )
}

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
            ports: Some(vec![
                ServicePort {
                    name: Some(PORT_NAME.to_owned()),
                    port: SECURE_PORT,
                    target_port: Some(IntOrString::Int(SECURE_PORT)),
                    protocol: Some("TCP".to_owned()),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some(KUBERNETES_PORT_NAME.to_owned()),
                    port: KUBERNETES_PORT,
                    target_port: Some(IntOrString::Int(SECURE_PORT)),
                    protocol: Some("TCP".to_owned()),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// kube-apiserver's flags, as kubeadm sets them, except `--allow-privileged=false`: a
/// tenant's pods run on shared host nodes in a namespace enforcing Pod Security
/// `baseline`, so the tenant refuses a privileged container at once, with its own
/// reason, instead of accepting a pod the host will never run. And
/// `--encryption-provider-config`: the tenant's etcd volume is the host's, and whoever
/// reads it (a backup, a node's disk) must not read the tenant's Secrets. And
/// `--client-ca-file` is the cluster CA plus the admin CA, so that the admin kubeconfig
/// can be revoked by replacing its CA without touching any component's certificate.
pub fn args(tenant: &Tenant, ctx: &BuildContext) -> Vec<String> {
    let pki = |file: &str| format!("{PKI_DIR}/{file}");
    let flags = BTreeMap::from([
        (
            "admission-control-config-file",
            format!("{ADMISSION_DIR}/{ADMISSION_CONFIG_FILE}"),
        ),
        ("advertise-address", "$(POD_IP)".to_owned()),
        ("allow-privileged", "false".to_owned()),
        ("authorization-mode", "Node,RBAC".to_owned()),
        ("client-ca-file", pki(CLIENT_CA_BUNDLE_KEY)),
        ("enable-admission-plugins", "NodeRestriction".to_owned()),
        ("enable-bootstrap-token-auth", "true".to_owned()),
        (
            "encryption-provider-config",
            format!("{ENCRYPTION_DIR}/{ENCRYPTION_CONFIG_KEY}"),
        ),
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
                names::admin_ca_secret(name),
                vec![(CLIENT_CA_BUNDLE_KEY, CLIENT_CA_BUNDLE_KEY)],
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
    let admission = projected_secrets(
        ADMISSION_VOLUME,
        vec![(
            names::apiserver_admission_secret(name),
            vec![
                (ADMISSION_CONFIG_FILE, ADMISSION_CONFIG_FILE),
                (WEBHOOK_KUBECONFIG_FILE, WEBHOOK_KUBECONFIG_FILE),
            ],
        )],
    );
    let encryption = projected_secrets(
        ENCRYPTION_VOLUME,
        vec![(
            names::apiserver_encryption_secret(name),
            vec![(ENCRYPTION_CONFIG_KEY, ENCRYPTION_CONFIG_KEY)],
        )],
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
        volume_mounts: Some(vec![
            read_only_mount(PKI_VOLUME, PKI_DIR),
            read_only_mount(ADMISSION_VOLUME, ADMISSION_DIR),
            read_only_mount(ENCRYPTION_VOLUME, ENCRYPTION_DIR),
        ]),
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
            volumes: Some(vec![certificates, admission, encryption]),
            ..PodSpec::default()
        },
    )
}

#[cfg(test)]
mod tests;
