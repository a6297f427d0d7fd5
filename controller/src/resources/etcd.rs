//! The tenant's etcd: a StatefulSet of 1, 3 or 5 members with one volume each, a headless
//! Service for stable member names and a client Service. Client and peer traffic both
//! require certificates signed by the tenant's etcd CA.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, Service,
    ServicePort, ServiceSpec, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::meta::{Component, labels, owned_meta, selector};
use super::pod::{
    env_from_field, http_probe, pod_template, projected_secrets, read_only_mount, requests,
};
use super::{BuildContext, Tenant, names};
use crate::pki::{CA_CERT_KEY, TLS_CERT_KEY, TLS_KEY_KEY};

/// Client port.
pub const CLIENT_PORT: i32 = 2379;
/// Peer port.
pub const PEER_PORT: i32 = 2380;
/// Plain-HTTP port serving only `/metrics` and `/health`, for probes. It listens on
/// every address because the kubelet's HTTP probes dial the pod IP: kubeadm binds it to
/// 127.0.0.1 only because its etcd runs in the host network, and a loopback listener here
/// would need exec probes carrying an etcd client certificate. The `NAME-etcd`
/// NetworkPolicy admits no pod to it, so only the node reaches it.
pub const METRICS_PORT: i32 = 2381;
/// Where the etcd certificates are mounted (kubeadm's layout).
pub const PKI_DIR: &str = "/etc/kubernetes/pki/etcd";
/// Where the member's volume is mounted.
pub const DATA_MOUNT: &str = "/var/lib/etcd";
/// etcd's data directory, a sub-directory so a filesystem's `lost+found` never confuses it.
pub const DATA_DIR: &str = "/var/lib/etcd/data";
/// Name of the PVC template (and volume).
pub const DATA_VOLUME: &str = "data";
/// Name of the certificate volume.
pub const PKI_VOLUME: &str = "etcd-pki";

const MI: u64 = 1024 * 1024;
/// What etcd keeps on the volume beside its database: five 64 MiB write-ahead log
/// segments (`--max-wals` default) and room for snapshots.
const WAL_RESERVE: u64 = 320 * MI;
/// etcd's recommended maximum database size.
const MAX_QUOTA_BACKEND: u64 = 8 * 1024 * MI;

/// `--quota-backend-bytes` for a member volume of `storage_size`: 80% of the volume and at
/// least the write-ahead logs' room below it, so the database hits its quota (and etcd
/// raises a NOSPACE alarm the apiserver reports) before the volume fills and etcd
/// crashes; never below a quarter of the volume, never above etcd's 8 GiB. `None` when
/// the size is not a positive quantity.
pub fn quota_backend_bytes(storage_size: &str) -> Option<u64> {
    let milli = vc_api::admission::parse_quantity(storage_size).ok()?;
    let bytes = u64::try_from(milli / vc_api::admission::MILLI).ok()?;
    if bytes == 0 {
        return None;
    }
    let below_logs = bytes.saturating_sub(WAL_RESERVE);
    let quota = (bytes / 5 * 4).min(below_logs).max(bytes / 4);
    Some(quota.min(MAX_QUOTA_BACKEND))
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port)),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// Headless Service `NAME-etcd-peer`. It publishes members before they are ready, since a
/// member only becomes ready once it reaches its peers.
pub fn peer_service(tenant: &Tenant) -> Service {
    Service {
        metadata: owned_meta(
            tenant,
            names::etcd_peer_service(&tenant.name),
            Component::Etcd,
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(labels(tenant, Component::Etcd)),
            ports: Some(vec![
                service_port("client", CLIENT_PORT),
                service_port("peer", PEER_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Client Service `NAME-etcd`, the apiserver's `--etcd-servers`.
pub fn client_service(tenant: &Tenant) -> Service {
    Service {
        metadata: owned_meta(tenant, names::etcd(&tenant.name), Component::Etcd),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(labels(tenant, Component::Etcd)),
            ports: Some(vec![service_port("client", CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The member count `existing` (this tenant's etcd StatefulSet) runs, when the tenant now
/// asks for another. Members start with `--initial-cluster-state=new` and nothing adds or
/// removes them through etcd's API, so scaling would found a second, empty cluster beside
/// the first: the count stays as created, whatever reached the spec past the webhook.
pub fn member_count_change(tenant: &Tenant, existing: &StatefulSet) -> Option<i32> {
    let ours = existing
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.controller == Some(true) && owner.uid == tenant.uid);
    let running = existing.spec.as_ref()?.replicas?;
    (ours && running != tenant.etcd_replicas).then_some(running)
}

/// `--initial-cluster`: every member under its stable peer URL.
pub fn initial_cluster(tenant: &Tenant) -> String {
    (0..tenant.etcd_replicas)
        .map(|ordinal| {
            format!(
                "{}=https://{}:{PEER_PORT}",
                names::etcd_member(&tenant.name, ordinal),
                names::etcd_member_host(&tenant.namespace, &tenant.name, ordinal)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// etcd's flags, as kubeadm sets them, with `$(POD_NAME)` standing for the member.
pub fn args(tenant: &Tenant) -> Vec<String> {
    let member_host = format!(
        "$(POD_NAME).{}.{}.svc",
        names::etcd_peer_service(&tenant.name),
        tenant.namespace
    );
    let pki = |file: &str| format!("{PKI_DIR}/{file}");
    let mut flags = BTreeMap::from([
        (
            "advertise-client-urls",
            format!("https://{member_host}:{CLIENT_PORT}"),
        ),
        ("cert-file", pki("server.crt")),
        ("client-cert-auth", "true".to_owned()),
        ("data-dir", DATA_DIR.to_owned()),
        (
            "initial-advertise-peer-urls",
            format!("https://{member_host}:{PEER_PORT}"),
        ),
        ("initial-cluster", initial_cluster(tenant)),
        ("initial-cluster-state", "new".to_owned()),
        (
            "initial-cluster-token",
            format!("{}.{}", names::etcd(&tenant.name), tenant.namespace),
        ),
        ("key-file", pki("server.key")),
        (
            "listen-client-urls",
            format!("https://0.0.0.0:{CLIENT_PORT}"),
        ),
        (
            "listen-metrics-urls",
            format!("http://0.0.0.0:{METRICS_PORT}"),
        ),
        ("listen-peer-urls", format!("https://0.0.0.0:{PEER_PORT}")),
        ("name", "$(POD_NAME)".to_owned()),
        ("peer-cert-file", pki("peer.crt")),
        ("peer-client-cert-auth", "true".to_owned()),
        ("peer-key-file", pki("peer.key")),
        ("peer-trusted-ca-file", pki("ca.crt")),
        ("snapshot-count", "10000".to_owned()),
        ("trusted-ca-file", pki("ca.crt")),
    ]);
    if let Some(quota) = quota_backend_bytes(&tenant.etcd_storage_size) {
        flags.insert("quota-backend-bytes", quota.to_string());
    }
    flags
        .into_iter()
        .map(|(flag, value)| format!("--{flag}={value}"))
        .collect()
}

/// StatefulSet `NAME-etcd`.
pub fn stateful_set(tenant: &Tenant, ctx: &BuildContext, config_hash: &str) -> StatefulSet {
    let certificates = projected_secrets(
        PKI_VOLUME,
        vec![
            (
                names::etcd_server_secret(&tenant.name),
                vec![
                    (CA_CERT_KEY, "ca.crt"),
                    (TLS_CERT_KEY, "server.crt"),
                    (TLS_KEY_KEY, "server.key"),
                ],
            ),
            (
                names::etcd_peer_secret(&tenant.name),
                vec![(TLS_CERT_KEY, "peer.crt"), (TLS_KEY_KEY, "peer.key")],
            ),
        ],
    );
    let container = Container {
        name: "etcd".to_owned(),
        image: Some(ctx.etcd_image.clone()),
        command: Some(vec!["etcd".to_owned()]),
        args: Some(args(tenant)),
        env: Some(vec![env_from_field("POD_NAME", "metadata.name")]),
        ports: Some(vec![
            container_port("client", CLIENT_PORT),
            container_port("peer", PEER_PORT),
            container_port("metrics", METRICS_PORT),
        ]),
        resources: Some(requests("100m", "100Mi")),
        liveness_probe: Some(http_probe(
            "/health?serializable=true",
            METRICS_PORT,
            "HTTP",
            8,
        )),
        readiness_probe: Some(http_probe("/health", METRICS_PORT, "HTTP", 3)),
        volume_mounts: Some(vec![
            VolumeMount {
                name: DATA_VOLUME.to_owned(),
                mount_path: DATA_MOUNT.to_owned(),
                ..VolumeMount::default()
            },
            read_only_mount(PKI_VOLUME, PKI_DIR),
        ]),
        ..Container::default()
    };
    StatefulSet {
        metadata: owned_meta(tenant, names::etcd(&tenant.name), Component::Etcd),
        spec: Some(StatefulSetSpec {
            replicas: Some(tenant.etcd_replicas),
            service_name: Some(names::etcd_peer_service(&tenant.name)),
            // All members must start together to form the first quorum.
            pod_management_policy: Some("Parallel".to_owned()),
            selector: selector(tenant, Component::Etcd),
            template: pod_template(
                tenant,
                Component::Etcd,
                config_hash,
                PodSpec {
                    automount_service_account_token: Some(false),
                    containers: vec![container],
                    volumes: Some(vec![certificates]),
                    ..PodSpec::default()
                },
            ),
            volume_claim_templates: Some(vec![volume_claim(tenant)]),
            // The StatefulSet controller makes the claims its dependents, so the tenant's
            // data goes with it; a NS/NAME created again must never bind the old volume.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn volume_claim(tenant: &Tenant) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_owned()),
            labels: Some(labels(tenant, Component::Etcd)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: tenant.etcd_storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(tenant.etcd_storage_size.clone()),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests;
