use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use pretty_assertions::assert_eq;
use vc_api::constants;

use super::test_support::{default_vc, observed, pki, tenant, virtual_cluster};
use super::*;
use crate::pki::{LeafKind, inspect_certificate};

fn build(vc: &VirtualCluster) -> DesiredState {
    DesiredState::build(vc, &BuildContext::default(), &observed(), pki()).unwrap()
}

fn owned_objects(state: &DesiredState) -> Vec<(&'static str, &ObjectMeta)> {
    let mut objects: Vec<(&'static str, &ObjectMeta)> = state
        .pki_secrets
        .iter()
        .map(|secret| ("Secret", &secret.metadata))
        .collect();
    objects.extend([
        ("Secret", &state.admin_kubeconfig.metadata),
        ("Service", &state.etcd.peer_service.metadata),
        ("Service", &state.etcd.client_service.metadata),
        ("StatefulSet", &state.etcd.stateful_set.metadata),
        ("Service", &state.apiserver_service.metadata),
        ("Deployment", &state.apiserver_deployment.metadata),
        ("Deployment", &state.controller_manager.metadata),
        ("Deployment", &state.scheduler.metadata),
        (
            "ServiceAccount",
            &state.clustertree.service_account.metadata,
        ),
        ("Role", &state.clustertree.virtual_cluster_reader.metadata),
        (
            "RoleBinding",
            &state.clustertree.virtual_cluster_reader_binding.metadata,
        ),
        ("Deployment", &state.clustertree.deployment.metadata),
    ]);
    objects.extend(
        state
            .network_policies
            .control_plane
            .iter()
            .map(|policy| ("NetworkPolicy", &policy.metadata)),
    );
    objects
}

fn unowned_objects(state: &DesiredState) -> Vec<(&'static str, &ObjectMeta)> {
    let tree = &state.clustertree;
    vec![
        ("Namespace", &tree.namespace.metadata),
        ("ResourceQuota", &tree.resource_quota.metadata),
        ("RoleBinding", &tree.role_binding.metadata),
        ("ClusterRole", &tree.cluster_role.metadata),
        ("ClusterRoleBinding", &tree.cluster_role_binding.metadata),
        ("NetworkPolicy", &state.network_policies.workloads.metadata),
    ]
}

fn pod_spec(deployment: &k8s_openapi::api::apps::v1::Deployment) -> &PodSpec {
    deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

fn container(spec: &PodSpec) -> &Container {
    &spec.containers[0]
}

fn args(container: &Container) -> Vec<&str> {
    container
        .args
        .iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

fn flag<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    let prefix = format!("--{name}=");
    container
        .args
        .iter()
        .flatten()
        .find_map(|arg| arg.strip_prefix(&prefix))
}

/// File paths a pod sees, from its projected/secret volumes and mounts.
fn mounted_files(spec: &PodSpec, container: &Container) -> BTreeMap<String, (String, String)> {
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
fn assert_flag_files_are_mounted(state: &DesiredState, spec: &PodSpec) {
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

#[test]
fn every_namespaced_object_is_owned_and_labelled() {
    let vc = default_vc();
    let state = build(&vc);
    for (kind, meta) in owned_objects(&state) {
        let name = meta.name.as_deref().unwrap();
        assert_eq!(meta.namespace.as_deref(), Some("team-a"), "{kind} {name}");
        let owners = meta.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1, "{kind} {name}");
        let owner = &owners[0];
        assert_eq!(owner.api_version, "kosmos.io/v1alpha1");
        assert_eq!(owner.kind, "VirtualCluster");
        assert_eq!(owner.name, "prod");
        assert_eq!(owner.uid, "0b6f7c1e-uid");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels[constants::MANAGED_BY_LABEL], "kosmos-vc");
        assert_eq!(labels[constants::TENANT_NAME_LABEL], "prod");
        assert!(
            [
                "etcd",
                "apiserver",
                "controller-manager",
                "scheduler",
                "clustertree",
                "pki",
                "kubeconfig"
            ]
            .contains(&labels[constants::COMPONENT_LABEL].as_str()),
            "{kind} {name}"
        );
    }
    for (kind, meta) in unowned_objects(&state) {
        assert!(meta.owner_references.is_none(), "{kind}");
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels[constants::TENANT_NAME_LABEL], "prod", "{kind}");
        assert_eq!(labels[constants::COMPONENT_LABEL], "clustertree", "{kind}");
    }
}

#[test]
fn objects_carry_the_contract_names() {
    let state = build(&default_vc());
    let mut secret_names: Vec<&str> = state
        .pki_secrets
        .iter()
        .map(|secret| secret.metadata.name.as_deref().unwrap())
        .collect();
    secret_names.sort();
    assert_eq!(
        secret_names,
        [
            "prod-admin-signer",
            "prod-apiserver-admission",
            "prod-apiserver-encryption",
            "prod-apiserver-etcd-client",
            "prod-apiserver-kubelet-client",
            "prod-apiserver-tls",
            "prod-ca",
            "prod-controller-manager-kubeconfig",
            "prod-etcd-ca",
            "prod-etcd-peer",
            "prod-etcd-server",
            "prod-front-proxy-ca",
            "prod-front-proxy-client",
            "prod-sa",
            "prod-scheduler-kubeconfig",
        ]
    );
    let name = |meta: &ObjectMeta| meta.name.clone().unwrap();
    assert_eq!(
        name(&state.admin_kubeconfig.metadata),
        "prod-admin-kubeconfig"
    );
    assert_eq!(name(&state.etcd.stateful_set.metadata), "prod-etcd");
    assert_eq!(name(&state.etcd.peer_service.metadata), "prod-etcd-peer");
    assert_eq!(name(&state.etcd.client_service.metadata), "prod-etcd");
    assert_eq!(name(&state.apiserver_service.metadata), "prod-apiserver");
    assert_eq!(name(&state.apiserver_deployment.metadata), "prod-apiserver");
    assert_eq!(
        name(&state.controller_manager.metadata),
        "prod-controller-manager"
    );
    assert_eq!(name(&state.scheduler.metadata), "prod-scheduler");
    assert_eq!(
        name(&state.clustertree.deployment.metadata),
        "prod-clustertree"
    );
    assert_eq!(
        name(&state.clustertree.service_account.metadata),
        "prod-clustertree"
    );
    assert_eq!(
        name(&state.clustertree.namespace.metadata),
        "vc-team-a-prod"
    );
    assert_eq!(
        name(&state.clustertree.resource_quota.metadata),
        "prod-pool"
    );
    assert_eq!(
        state
            .clustertree
            .resource_quota
            .metadata
            .namespace
            .as_deref(),
        Some("vc-team-a-prod")
    );
    assert_eq!(
        name(&state.clustertree.cluster_role.metadata),
        "kosmos-vc:team-a:prod:clustertree"
    );
    assert_eq!(
        name(&state.clustertree.cluster_role_binding.metadata),
        "kosmos-vc:team-a:prod:clustertree"
    );
    assert_eq!(
        state.clustertree.role_binding.metadata.namespace.as_deref(),
        Some("vc-team-a-prod")
    );
}

#[test]
fn the_apiserver_authenticates_to_webhooks_with_its_kubelet_client_certificate() {
    let state = build(&default_vc());
    let secret = state
        .pki_secrets
        .iter()
        .find(|secret| secret.metadata.name.as_deref() == Some("prod-apiserver-admission"))
        .unwrap();
    let data = secret.data.as_ref().unwrap();
    let file = |key: &str| -> serde_json::Value { serde_yaml::from_slice(&data[key].0).unwrap() };
    assert_eq!(
        file("admission.yaml")["plugins"][0]["configuration"]["kubeConfigFile"],
        "/etc/kubernetes/admission/webhook-kubeconfig.yaml"
    );
    assert_eq!(
        file("webhook-kubeconfig.yaml")["users"],
        serde_json::json!([{"name": "*", "user": {
            "client-certificate": "/etc/kubernetes/pki/apiserver-kubelet-client.crt",
            "client-key": "/etc/kubernetes/pki/apiserver-kubelet-client.key"}}])
    );
    let pod = state
        .apiserver_deployment
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let args = pod.containers[0].args.clone().unwrap();
    assert!(args.contains(
        &"--admission-control-config-file=/etc/kubernetes/admission/admission.yaml".to_owned()
    ));
    let mounts = pod.containers[0].volume_mounts.clone().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m.mount_path == "/etc/kubernetes/admission")
    );
}

#[test]
fn the_apiserver_seals_secrets_with_the_stored_key() {
    let state = build(&default_vc());
    let secret = state
        .pki_secrets
        .iter()
        .find(|secret| secret.metadata.name.as_deref() == Some("prod-apiserver-encryption"))
        .unwrap();
    let file = &secret.data.as_ref().unwrap()["encryption-config.yaml"].0;
    let config = crate::pki::EncryptionConfig::parse(file).unwrap();
    assert_eq!(&config, test_support::pki().encryption());
    assert_eq!(
        secret.metadata.labels.as_ref().unwrap()[constants::COMPONENT_LABEL],
        "apiserver"
    );
    assert_eq!(
        secret.metadata.owner_references.as_ref().unwrap()[0].uid,
        default_vc().metadata.uid.unwrap(),
        "stamped as this VirtualCluster's"
    );
    let pod = pod_spec(&state.apiserver_deployment);
    let args = pod.containers[0].args.clone().unwrap();
    assert!(
        args.contains(
            &"--encryption-provider-config=/etc/kubernetes/encryption/encryption-config.yaml"
                .to_owned()
        ),
        "{args:?}"
    );
    let mounts = pod.containers[0].volume_mounts.clone().unwrap();
    let mount = mounts
        .iter()
        .find(|m| m.mount_path == "/etc/kubernetes/encryption")
        .unwrap();
    assert_eq!(mount.read_only, Some(true));
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    let sources = volume.projected.clone().unwrap().sources.unwrap();
    assert_eq!(
        sources[0].secret.as_ref().unwrap().name,
        "prod-apiserver-encryption"
    );
}

#[test]
fn tls_secrets_use_the_contract_keys() {
    let state = build(&default_vc());
    for secret in &state.pki_secrets {
        let name = secret.metadata.name.as_deref().unwrap();
        let keys: Vec<&str> = secret
            .data
            .as_ref()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let expected: &[&str] = match name {
            "prod-ca" | "prod-etcd-ca" | "prod-front-proxy-ca" => &["tls.crt", "tls.key"],
            "prod-admin-signer" => &["client-ca.crt", "tls.crt", "tls.key"],
            "prod-sa" => &["sa.key", "sa.pub"],
            "prod-controller-manager-kubeconfig" | "prod-scheduler-kubeconfig" => &["kubeconfig"],
            "prod-apiserver-admission" => &["admission.yaml", "webhook-kubeconfig.yaml"],
            "prod-apiserver-encryption" => &["encryption-config.yaml"],
            _ => &["ca.crt", "tls.crt", "tls.key"],
        };
        assert_eq!(keys, expected, "{name}");
    }
    let admin = state.admin_kubeconfig.data.as_ref().unwrap();
    let keys: Vec<&str> = admin.keys().map(String::as_str).collect();
    assert_eq!(keys, ["kubeconfig", "kubeconfig-internal"]);
}

#[test]
fn etcd_runs_the_spec_member_count_with_mtls_everywhere() {
    for replicas in [1, 3, 5] {
        let vc = virtual_cluster(&format!(
            "  controlPlane:\n    etcd:\n      replicas: {replicas}\n      storageSize: 5Gi\n      storageClassName: fast\n"
        ));
        let state = build(&vc);
        let set = state.etcd.stateful_set.spec.as_ref().unwrap();
        assert_eq!(set.replicas, Some(replicas));
        assert_eq!(set.service_name.as_deref(), Some("prod-etcd-peer"));
        assert_eq!(set.pod_management_policy.as_deref(), Some("Parallel"));
        let claims = set.volume_claim_templates.as_ref().unwrap();
        assert_eq!(claims.len(), 1);
        let claim = claims[0].spec.as_ref().unwrap();
        assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
            "5Gi"
        );
        let pod = set.template.spec.as_ref().unwrap();
        let etcd = container(pod);
        for required in [
            "--client-cert-auth=true",
            "--peer-client-cert-auth=true",
            "--trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt",
            "--peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt",
            "--cert-file=/etc/kubernetes/pki/etcd/server.crt",
            "--key-file=/etc/kubernetes/pki/etcd/server.key",
            "--peer-cert-file=/etc/kubernetes/pki/etcd/peer.crt",
            "--peer-key-file=/etc/kubernetes/pki/etcd/peer.key",
            "--listen-client-urls=https://0.0.0.0:2379",
            "--listen-peer-urls=https://0.0.0.0:2380",
            "--name=$(POD_NAME)",
        ] {
            assert!(
                args(etcd).contains(&required),
                "missing {required}: {:?}",
                args(etcd)
            );
        }
        let members: Vec<String> = (0..replicas)
            .map(|n| format!("prod-etcd-{n}=https://prod-etcd-{n}.prod-etcd-peer.team-a.svc:2380"))
            .collect();
        assert_eq!(
            flag(etcd, "initial-cluster"),
            Some(members.join(",").as_str())
        );
        assert!(
            flag(etcd, "advertise-client-urls")
                .unwrap()
                .starts_with("https://")
        );
        assert!(
            flag(etcd, "initial-advertise-peer-urls")
                .unwrap()
                .starts_with("https://")
        );
        assert_eq!(etcd.image.as_deref(), Some("registry.k8s.io/etcd:3.5.21-0"));
        // 80% of 5Gi: the database reaches its quota before the volume is full.
        assert_eq!(flag(etcd, "quota-backend-bytes"), Some("4294967296"));
    }
}

/// etcd's default 2 GiB quota on the default 1Gi volume would fill the disk first, and a
/// full disk crashes etcd instead of raising its NOSPACE alarm.
#[test]
fn etcd_quota_stays_below_its_volume() {
    use crate::resources::etcd::quota_backend_bytes;
    const MI: u64 = 1024 * 1024;
    assert_eq!(quota_backend_bytes("1Gi"), Some(704 * MI));
    assert_eq!(quota_backend_bytes("2Gi"), Some(2048 * MI / 5 * 4));
    assert_eq!(quota_backend_bytes("5Gi"), Some(4096 * MI));
    assert_eq!(quota_backend_bytes("100Gi"), Some(8192 * MI));
    assert_eq!(quota_backend_bytes("256Mi"), Some(64 * MI));
    for size in ["0", "-1Gi", "lots", "", "1m"] {
        assert_eq!(quota_backend_bytes(size), None, "{size}");
    }
    for size in ["512Mi", "1Gi", "1500M", "3Gi", "20Gi"] {
        let bytes = u64::try_from(
            vc_api::admission::parse_quantity(size).unwrap() / vc_api::admission::MILLI,
        )
        .unwrap();
        let quota = quota_backend_bytes(size).unwrap();
        assert!(quota <= bytes / 5 * 4, "{size}: {quota}");
    }
    let set = build(&default_vc()).etcd.stateful_set;
    let etcd = container(set.spec.as_ref().unwrap().template.spec.as_ref().unwrap());
    assert_eq!(
        flag(etcd, "quota-backend-bytes"),
        Some((704 * MI).to_string().as_str())
    );
}

/// A member count that reached the spec past the webhook is never applied.
#[test]
fn etcd_member_count_is_never_changed_by_the_controller() {
    let running = build(&default_vc()).etcd.stateful_set;
    let scaled = virtual_cluster("  controlPlane:\n    etcd:\n      replicas: 3\n");
    let tenant = Tenant::resolve(&scaled, &BuildContext::default()).unwrap();
    assert_eq!(
        crate::resources::etcd::member_count_change(&tenant, &running),
        Some(1)
    );
    let same = Tenant::resolve(&default_vc(), &BuildContext::default()).unwrap();
    assert_eq!(
        crate::resources::etcd::member_count_change(&same, &running),
        None
    );
    let mut foreign = running.clone();
    foreign.metadata.owner_references = None;
    assert_eq!(
        crate::resources::etcd::member_count_change(&tenant, &foreign),
        None
    );
}

/// With `whenDeleted: Delete` the StatefulSet controller makes every claim a dependent of
/// the StatefulSet, so garbage collection takes the tenant's data with it; scaling keeps
/// the claims, since members are never removed.
#[test]
fn etcd_claims_go_with_the_stateful_set() {
    let set = build(&default_vc()).etcd.stateful_set;
    let policy = set
        .spec
        .unwrap()
        .persistent_volume_claim_retention_policy
        .unwrap();
    assert_eq!(policy.when_deleted.as_deref(), Some("Delete"));
    assert_eq!(policy.when_scaled.as_deref(), Some("Retain"));
}

#[test]
fn etcd_flags_only_name_mounted_files() {
    let state = build(&default_vc());
    let pod = state
        .etcd
        .stateful_set
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_flag_files_are_mounted(&state, pod);
}

#[test]
fn etcd_services_publish_members_and_clients() {
    let state = build(&default_vc());
    let peer = state.etcd.peer_service.spec.as_ref().unwrap();
    assert_eq!(peer.cluster_ip.as_deref(), Some("None"));
    assert_eq!(peer.publish_not_ready_addresses, Some(true));
    let client = state.etcd.client_service.spec.as_ref().unwrap();
    let ports: Vec<i32> = client
        .ports
        .iter()
        .flatten()
        .map(|port| port.port)
        .collect();
    assert_eq!(ports, [2379]);
    assert_eq!(
        client.selector.as_ref().unwrap()[constants::COMPONENT_LABEL],
        "etcd"
    );
}

#[test]
fn apiserver_runs_kubeadm_flags_against_the_tenant_etcd() {
    let state = build(&default_vc());
    let pod = pod_spec(&state.apiserver_deployment);
    let apiserver = container(pod);
    assert_eq!(
        apiserver.image.as_deref(),
        Some("registry.k8s.io/kube-apiserver:v1.33.4")
    );
    let expected = [
        ("etcd-servers", "https://prod-etcd.team-a.svc:2379"),
        ("etcd-cafile", "/etc/kubernetes/pki/etcd/ca.crt"),
        (
            "etcd-certfile",
            "/etc/kubernetes/pki/apiserver-etcd-client.crt",
        ),
        (
            "etcd-keyfile",
            "/etc/kubernetes/pki/apiserver-etcd-client.key",
        ),
        ("client-ca-file", "/etc/kubernetes/pki/client-ca.crt"),
        ("tls-cert-file", "/etc/kubernetes/pki/apiserver.crt"),
        ("tls-private-key-file", "/etc/kubernetes/pki/apiserver.key"),
        ("service-account-key-file", "/etc/kubernetes/pki/sa.pub"),
        (
            "service-account-signing-key-file",
            "/etc/kubernetes/pki/sa.key",
        ),
        (
            "service-account-issuer",
            "https://kubernetes.default.svc.cluster.local",
        ),
        ("service-cluster-ip-range", "10.96.0.0/12"),
        (
            "requestheader-client-ca-file",
            "/etc/kubernetes/pki/front-proxy-ca.crt",
        ),
        ("requestheader-allowed-names", "front-proxy-client"),
        (
            "proxy-client-cert-file",
            "/etc/kubernetes/pki/front-proxy-client.crt",
        ),
        (
            "kubelet-client-certificate",
            "/etc/kubernetes/pki/apiserver-kubelet-client.crt",
        ),
        (
            "kubelet-client-key",
            "/etc/kubernetes/pki/apiserver-kubelet-client.key",
        ),
        ("authorization-mode", "Node,RBAC"),
        ("enable-admission-plugins", "NodeRestriction"),
        ("secure-port", "6443"),
    ];
    for (name, value) in expected {
        assert_eq!(flag(apiserver, name), Some(value), "--{name}");
    }
    let probe_path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        (get.path.clone().unwrap(), get.scheme.clone().unwrap())
    };
    assert_eq!(
        probe_path(&apiserver.liveness_probe),
        ("/livez".to_owned(), "HTTPS".to_owned())
    );
    assert_eq!(
        probe_path(&apiserver.readiness_probe),
        ("/readyz".to_owned(), "HTTPS".to_owned())
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_flag_files_are_mounted(&state, pod);
}

#[test]
fn apiserver_replicas_and_service_follow_the_spec() {
    let vc = virtual_cluster(
        "  kubernetesVersion: v1.34.1\n  controlPlane:\n    apiServer:\n      replicas: 3\n      serviceType: LoadBalancer\n",
    );
    let state = build(&vc);
    assert_eq!(
        state.apiserver_deployment.spec.as_ref().unwrap().replicas,
        Some(3)
    );
    assert_eq!(
        container(pod_spec(&state.apiserver_deployment))
            .image
            .as_deref(),
        Some("registry.k8s.io/kube-apiserver:v1.34.1")
    );
    let service = state.apiserver_service.spec.as_ref().unwrap();
    assert_eq!(service.type_.as_deref(), Some("LoadBalancer"));
    let port = &service.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("https"), 6443));
}

#[test]
fn leader_election_is_on_only_with_several_replicas() {
    for (replicas, elect) in [(1, "false"), (2, "true"), (3, "true")] {
        let vc = virtual_cluster(&format!(
            "  controlPlane:\n    apiServer:\n      replicas: {replicas}\n"
        ));
        let state = build(&vc);
        for deployment in [&state.controller_manager, &state.scheduler] {
            assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(replicas));
            assert_eq!(
                flag(container(pod_spec(deployment)), "leader-elect"),
                Some(elect)
            );
        }
    }
}

#[test]
fn controller_manager_and_scheduler_use_their_own_kubeconfig() {
    let state = build(&default_vc());
    for (deployment, secret, common_name) in [
        (
            &state.controller_manager,
            "prod-controller-manager-kubeconfig",
            "system:kube-controller-manager",
        ),
        (
            &state.scheduler,
            "prod-scheduler-kubeconfig",
            "system:kube-scheduler",
        ),
    ] {
        let pod = pod_spec(deployment);
        assert_flag_files_are_mounted(&state, pod);
        let files = mounted_files(pod, container(pod));
        let kubeconfig_path = flag(container(pod), "kubeconfig").unwrap();
        assert_eq!(files[kubeconfig_path].0, secret);
        let stored = state
            .pki_secrets
            .iter()
            .find(|candidate| candidate.metadata.name.as_deref() == Some(secret))
            .unwrap();
        let yaml =
            String::from_utf8(stored.data.as_ref().unwrap()["kubeconfig"].0.clone()).unwrap();
        let config: kubeconfig::Kubeconfig = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(
            config.clusters[0].cluster.server,
            "https://prod-apiserver.team-a.svc:6443"
        );
        let credentials = kubeconfig::client_credentials(&yaml).unwrap();
        let facts = inspect_certificate(credentials.cert_pem.as_bytes()).unwrap();
        assert_eq!(facts.common_name, common_name);
    }
    let manager = container(pod_spec(&state.controller_manager));
    assert_eq!(
        flag(manager, "cluster-signing-key-file"),
        Some("/etc/kubernetes/pki/ca.key")
    );
    assert_eq!(
        flag(manager, "service-account-private-key-file"),
        Some("/etc/kubernetes/pki/sa.key")
    );
    assert_eq!(
        manager.image.as_deref(),
        Some("registry.k8s.io/kube-controller-manager:v1.33.4")
    );
}

#[test]
fn admin_kubeconfig_prefers_external_hosts_then_load_balancer_then_cluster_ip() {
    let server_of = |secret: &Secret, key: &str| {
        let yaml = String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap();
        let config: kubeconfig::Kubeconfig = serde_yaml::from_str(&yaml).unwrap();
        config.clusters[0].cluster.server.clone()
    };
    let with_hosts = virtual_cluster(
        "  controlPlane:\n    apiServer:\n      externalHosts: [prod.example.com, 203.0.113.9]\n",
    );
    let mut seen = observed();
    seen.load_balancer_hosts = vec!["198.51.100.4".to_owned()];
    let secret = |vc: &VirtualCluster, observed: &Observed| {
        secrets::admin_kubeconfig_secret(&tenant(vc), observed, pki()).unwrap()
    };
    let admin = secret(&with_hosts, &seen);
    assert_eq!(
        server_of(&admin, "kubeconfig"),
        "https://prod.example.com:6443"
    );
    assert_eq!(
        server_of(&admin, "kubeconfig-internal"),
        "https://prod-apiserver.team-a.svc:6443"
    );
    let plain = default_vc();
    assert_eq!(
        server_of(&secret(&plain, &seen), "kubeconfig"),
        "https://198.51.100.4:6443"
    );
    assert_eq!(
        server_of(&secret(&plain, &observed()), "kubeconfig"),
        "https://127.100.0.7:6443"
    );
    let mut v6 = observed();
    v6.apiserver_cluster_ip = Some("fd00::7".parse().unwrap());
    assert_eq!(
        server_of(&secret(&plain, &v6), "kubeconfig"),
        "https://[fd00::7]:6443"
    );
}

#[test]
fn clustertree_runs_the_operator_image_with_tenant_kubeconfig_and_own_account() {
    let state = build(&default_vc());
    let pod = pod_spec(&state.clustertree.deployment);
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("prod-clustertree")
    );
    let tree = container(pod);
    assert_eq!(
        tree.image.as_deref(),
        Some(constants::DEFAULT_CLUSTERTREE_IMAGE)
    );
    assert_eq!(
        tree.command.as_deref(),
        Some(&["/usr/local/bin/vc-clustertree".to_owned()][..])
    );
    assert_eq!(flag(tree, "namespace"), Some("team-a"));
    assert_eq!(flag(tree, "name"), Some("prod"));
    // The tenant's Nodes send the tenant apiserver to the pod IP for logs and exec.
    assert_eq!(flag(tree, "kubelet-address"), Some("$(POD_IP)"));
    assert_eq!(flag(tree, "kubelet-listen"), Some("0.0.0.0:10250"));
    let pod_ip = tree
        .env
        .iter()
        .flatten()
        .find(|env| env.name == "POD_IP")
        .and_then(|env| env.value_from.as_ref()?.field_ref.as_ref())
        .map(|field| field.field_path.as_str());
    assert_eq!(pod_ip, Some("status.podIP"));
    // The tenant's DNS on an unprivileged port, both transports.
    assert_eq!(flag(tree, "dns-listen"), Some("0.0.0.0:1053"));
    let ports: Vec<(Option<&str>, i32, Option<&str>)> = tree
        .ports
        .iter()
        .flatten()
        .map(|port| {
            (
                port.name.as_deref(),
                port.container_port,
                port.protocol.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            (Some("kubelet"), 10250, Some("TCP")),
            (Some("dns"), 1053, Some("UDP")),
            (Some("dns-tcp"), 1053, Some("TCP")),
        ]
    );
    assert_eq!(
        flag(tree, "kubeconfig"),
        None,
        "the host credential is the pod's own ServiceAccount"
    );
    let files = mounted_files(pod, tree);
    let path = flag(tree, "tenant-kubeconfig").unwrap();
    assert_eq!(
        files[path],
        (
            "prod-admin-kubeconfig".to_owned(),
            "kubeconfig-internal".to_owned()
        )
    );
}

/// The clustertree holds host credentials: what it runs is the operator's flag, never
/// what a VirtualCluster author wrote.
#[test]
fn cluster_tree_image_comes_only_from_the_operator() {
    let vc = virtual_cluster("  clusterTree:\n    image: attacker.example/miner:latest\n");
    let ctx = BuildContext {
        clustertree_image: "registry.example/clustertree:v1".to_owned(),
        ..BuildContext::default()
    };
    let state = DesiredState::build(&vc, &ctx, &observed(), pki()).unwrap();
    assert_eq!(
        container(pod_spec(&state.clustertree.deployment))
            .image
            .as_deref(),
        Some("registry.example/clustertree:v1")
    );
}

/// The clustertree reads what it serves from its VirtualCluster: `get` on that one
/// object, bound to its own ServiceAccount, owned by the VirtualCluster.
#[test]
fn clustertree_reads_only_its_own_virtual_cluster() {
    let state = build(&default_vc());
    let role = &state.clustertree.virtual_cluster_reader;
    assert_eq!(role.metadata.namespace.as_deref(), Some("team-a"));
    let rules = role.rules.as_deref().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].api_groups.as_deref(),
        Some(&["kosmos.io".to_owned()][..])
    );
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["virtualclusters".to_owned()][..])
    );
    assert_eq!(
        rules[0].resource_names.as_deref(),
        Some(&["prod".to_owned()][..])
    );
    assert_eq!(rules[0].verbs, ["get"]);
    let binding = &state.clustertree.virtual_cluster_reader_binding;
    assert_eq!(binding.role_ref.name, "prod-clustertree");
    let subject = &binding.subjects.as_deref().unwrap()[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            subject.name.as_str(),
            subject.namespace.as_deref()
        ),
        ("ServiceAccount", "prod-clustertree", Some("team-a"))
    );
    assert!(role.metadata.owner_references.is_some());
    assert!(binding.metadata.owner_references.is_some());
}

#[test]
fn clustertree_rbac_is_scoped_to_its_namespace_and_claimed_nodes() {
    let state = build(&default_vc());
    let role = clustertree::workload_cluster_role(clustertree::DEFAULT_WORKLOAD_CLUSTER_ROLE);
    for rule in role.rules.iter().flatten() {
        assert!(!rule.verbs.iter().any(|verb| verb == "*"), "{rule:?}");
        assert!(
            !rule
                .resources
                .iter()
                .flatten()
                .any(|resource| resource.contains('*'))
        );
        let group = if rule
            .resources
            .iter()
            .flatten()
            .any(|r| r == "endpointslices")
        {
            "discovery.k8s.io"
        } else {
            ""
        };
        assert_eq!(rule.api_groups.as_deref(), Some(&[group.to_owned()][..]));
    }
    let resources: Vec<&str> = role
        .rules
        .iter()
        .flatten()
        .flat_map(|rule| rule.resources.iter().flatten().map(String::as_str))
        .collect();
    for needed in [
        "pods",
        "services",
        "configmaps",
        "secrets",
        "endpoints",
        "events",
        "persistentvolumeclaims",
        "endpointslices",
    ] {
        assert!(resources.contains(&needed), "Role lacks {needed}");
    }
    let exec = role
        .rules
        .iter()
        .flatten()
        .find(|rule| rule.resources.iter().flatten().any(|r| r == "pods/exec"))
        .map(|rule| rule.verbs.clone());
    assert_eq!(
        exec,
        Some(vec!["create".to_owned()]),
        "kubectl exec in the tenant is proxied to the host pod's exec"
    );
    let subjects = state.clustertree.role_binding.subjects.as_ref().unwrap();
    assert_eq!(subjects[0].name, "prod-clustertree");
    assert_eq!(subjects[0].namespace.as_deref(), Some("team-a"));
    // The workload rules reach the clustertree through the chart's fixed ClusterRole,
    // bound in the workload namespace alone: the controller may bind it, not hold it.
    let role_ref = &state.clustertree.role_binding.role_ref;
    assert_eq!(
        (role_ref.kind.as_str(), role_ref.name.as_str()),
        ("ClusterRole", clustertree::DEFAULT_WORKLOAD_CLUSTER_ROLE)
    );
    assert_eq!(
        state.clustertree.role_binding.metadata.name.as_deref(),
        Some("prod-clustertree-workload")
    );

    let cluster_rules = state.clustertree.cluster_role.rules.as_ref().unwrap();
    assert_eq!(cluster_rules.len(), 1);
    assert_eq!(
        cluster_rules[0].resources.as_deref(),
        Some(&["nodes".to_owned()][..])
    );
    assert_eq!(cluster_rules[0].verbs, ["get", "list", "watch"]);
    assert_eq!(
        cluster_rules[0].resource_names.as_deref(),
        Some(&["node1".to_owned(), "node2".to_owned()][..])
    );
    let binding = &state.clustertree.cluster_role_binding;
    assert_eq!(binding.role_ref.name, "kosmos-vc:team-a:prod:clustertree");
    assert_eq!(
        binding.subjects.as_ref().unwrap()[0].name,
        "prod-clustertree"
    );

    // No claimed node: no rule at all (a rule without resourceNames would grant every node).
    let none = clustertree::cluster_role(&tenant(&default_vc()), &[]);
    assert_eq!(none.rules, Some(Vec::new()));
}

/// Pods on the tenant's own promoted nodes are not the pool's: the quota counts only the
/// pool's PriorityClass, so a pod on a promoted node needs no requests.
#[test]
fn pool_quota_counts_only_pool_pods() {
    let state = build(&default_vc());
    let spec = state.clustertree.resource_quota.spec.as_ref().unwrap();
    let expressions = spec
        .scope_selector
        .as_ref()
        .and_then(|selector| selector.match_expressions.as_deref())
        .unwrap();
    assert_eq!(expressions.len(), 1);
    assert_eq!(expressions[0].scope_name, "PriorityClass");
    assert_eq!(expressions[0].operator, "In");
    assert_eq!(
        expressions[0].values.as_deref(),
        Some(&[constants::POOL_PRIORITY_CLASS.to_owned()][..])
    );
    assert_eq!(spec.scopes, None);
}

#[test]
fn pool_quota_equals_the_pooled_resources() {
    let vc = virtual_cluster(
        "  promoteResources:\n    resources: {cpu: 10, memory: 100Gi, pods: 110, nvidia.com/gpu: 2}\n",
    );
    let state = build(&vc);
    let hard = state
        .clustertree
        .resource_quota
        .spec
        .as_ref()
        .unwrap()
        .hard
        .as_ref()
        .unwrap();
    let hard: BTreeMap<&str, &str> = hard
        .iter()
        .map(|(k, v)| (k.as_str(), v.0.as_str()))
        .collect();
    assert_eq!(
        hard,
        BTreeMap::from([
            ("cpu", "10"),
            ("memory", "100Gi"),
            ("pods", "110"),
            ("requests.nvidia.com/gpu", "2"),
        ])
    );
}

#[test]
fn builds_are_deterministic() {
    let vc = default_vc();
    let first =
        serde_json::to_string(&serde_json::to_value(build(&vc).apiserver_deployment).unwrap())
            .unwrap();
    let second =
        serde_json::to_string(&serde_json::to_value(build(&vc).apiserver_deployment).unwrap())
            .unwrap();
    assert_eq!(first, second);
    assert!(build(&vc) == build(&vc));
}

#[test]
fn a_certificate_change_rolls_only_the_pods_that_mount_it() {
    let vc = default_vc();
    let before = build(&vc);
    let hash = |deployment: &k8s_openapi::api::apps::v1::Deployment| {
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
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    };
    // Reissue only the scheduler's certificate.
    let resolved = tenant(&vc);
    let identity = tenant_identity(&resolved, &BuildContext::default(), &observed()).unwrap();
    let mut secrets = before.pki_secrets.clone();
    secrets.push(before.admin_kubeconfig.clone());
    let existing = crate::pki::ExistingPki::from_secrets("prod", &secrets);
    let mut plan = crate::pki::plan_certificates(&identity, &existing, jiff::Timestamp::now());
    assert!(!plan.issues_anything());
    plan.leaves.insert(
        LeafKind::Scheduler,
        crate::pki::Decision::Issue(crate::pki::IssueReason::Renewal),
    );
    let renewed = crate::pki::issue(&identity, &existing, &plan, jiff::Timestamp::now()).unwrap();
    let after = DesiredState::build(&vc, &BuildContext::default(), &observed(), &renewed).unwrap();
    assert_ne!(hash(&before.scheduler), hash(&after.scheduler));
    assert_eq!(
        hash(&before.apiserver_deployment),
        hash(&after.apiserver_deployment)
    );
    assert_eq!(
        hash(&before.controller_manager),
        hash(&after.controller_manager)
    );
}

#[test]
fn first_service_ip_is_the_network_address_plus_one() {
    assert_eq!(
        first_service_ip("10.96.0.0/12").unwrap().to_string(),
        "10.96.0.1"
    );
    assert_eq!(
        first_service_ip("10.96.5.7/16").unwrap().to_string(),
        "10.96.0.1"
    );
    assert_eq!(
        first_service_ip("fd00:10:96::/112").unwrap().to_string(),
        "fd00:10:96::1"
    );
    let error = first_service_ip("10.96.0.0").unwrap_err();
    assert!(error.to_string().contains("10.96.0.0/12"), "{error}");
    assert!(first_service_ip("10.96.0.0/33").is_err());
}

#[test]
fn unresolvable_clusters_are_refused_with_the_field_named() {
    let mut vc = default_vc();
    vc.metadata.uid = None;
    let error = Tenant::resolve(&vc, &BuildContext::default()).unwrap_err();
    assert!(error.to_string().contains("metadata.uid"), "{error}");
    let vc = virtual_cluster("  controlPlane:\n    etcd:\n      replicas: 2\n");
    let error = Tenant::resolve(&vc, &BuildContext::default()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("spec.controlPlane.etcd.replicas"),
        "{error}"
    );
    assert!(error.to_string().contains("1, 3 or 5"), "{error}");
}

#[test]
fn defaults_fill_what_the_webhook_would() {
    let resolved = tenant(&virtual_cluster("  promoteResources: {}\n"));
    assert_eq!(resolved.kubernetes_version, "v1.33.4");
    assert_eq!(resolved.apiserver_replicas, 1);
    assert_eq!(resolved.service_type, ServiceType::ClusterIP);
    assert_eq!(resolved.etcd_replicas, 1);
    assert_eq!(resolved.etcd_storage_size, "1Gi");
    assert_eq!(resolved.etcd_storage_class, None);
}

#[test]
fn control_plane_pods_spread_request_resources_and_skip_service_links() {
    let state = build(&default_vc());
    let etcd_pod = state
        .etcd
        .stateful_set
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let pods = [
        etcd_pod,
        pod_spec(&state.apiserver_deployment),
        pod_spec(&state.controller_manager),
        pod_spec(&state.scheduler),
    ];
    for pod in pods {
        assert_eq!(pod.enable_service_links, Some(false));
        let requests = container(pod)
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap();
        assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
        let spread = pod
            .affinity
            .as_ref()
            .unwrap()
            .pod_anti_affinity
            .as_ref()
            .unwrap()
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap();
        let term = &spread[0].pod_affinity_term;
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        let own_labels = &pod_labels_of(pod, &state);
        assert_eq!(
            term.label_selector.as_ref().unwrap().match_labels.as_ref(),
            Some(own_labels)
        );
    }
}

fn pod_labels_of(pod: &PodSpec, state: &DesiredState) -> BTreeMap<String, String> {
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

#[test]
fn only_mounted_keys_roll_pods() {
    let vc = virtual_cluster("  controlPlane:\n    apiServer:\n      serviceType: LoadBalancer\n");
    let hash = |state: &DesiredState| {
        state
            .clustertree
            .deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    };
    let before = build(&vc);
    let mut with_ingress = observed();
    with_ingress.load_balancer_hosts = vec!["198.51.100.4".to_owned()];
    let after = DesiredState::build(&vc, &BuildContext::default(), &with_ingress, pki()).unwrap();
    // The external kubeconfig changed; the clustertree mounts only the internal one.
    assert_ne!(before.admin_kubeconfig, after.admin_kubeconfig);
    assert_eq!(hash(&before), hash(&after));
    assert_eq!(hash(&before).len(), 64);

    let pod = pod_spec(&before.clustertree.deployment);
    let mut changed = before.admin_kubeconfig.clone();
    changed.data.as_mut().unwrap().insert(
        "kubeconfig-internal".to_owned(),
        k8s_openapi::ByteString(b"other".to_vec()),
    );
    let original = meta::mounted_config_hash(pod, &[&before.admin_kubeconfig]);
    assert_ne!(original, meta::mounted_config_hash(pod, &[&changed]));
}

#[test]
fn workload_namespace_enforces_pod_security_baseline() {
    let namespace = clustertree::workload_namespace(&tenant(&default_vc()));
    let labels = namespace.metadata.labels.unwrap();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("baseline")
    );
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/warn")
            .map(String::as_str),
        Some("restricted")
    );
    // Still ours: the managed-by and tenant labels stay.
    assert_eq!(
        labels.get(constants::MANAGED_BY_LABEL).map(String::as_str),
        Some(constants::MANAGED_BY_VALUE)
    );
}

#[test]
fn tenant_apiserver_refuses_privileged_containers() {
    let args = apiserver::args(&tenant(&default_vc()), &BuildContext::default());
    assert!(
        args.contains(&"--allow-privileged=false".to_owned()),
        "{args:?}"
    );
}

/// An operator who keeps control planes on dedicated host nodes gets every pod that runs
/// with tenant or host credentials there: etcd, apiserver, controller-manager, scheduler
/// and the clustertree; nothing when the flag is empty.
#[test]
fn control_plane_pods_follow_the_operators_node_selector() {
    let selector = BTreeMap::from([("node-role.kubernetes.io/infra".to_owned(), String::new())]);
    let ctx = BuildContext {
        control_plane_node_selector: selector.clone(),
        ..BuildContext::default()
    };
    let state = DesiredState::build(&default_vc(), &ctx, &observed(), pki()).unwrap();
    let etcd = state.etcd.stateful_set.spec.as_ref().unwrap();
    let etcd_pod = etcd.template.spec.as_ref().unwrap();
    let pods = [
        ("etcd", etcd_pod),
        ("apiserver", pod_spec(&state.apiserver_deployment)),
        ("controller-manager", pod_spec(&state.controller_manager)),
        ("scheduler", pod_spec(&state.scheduler)),
        ("clustertree", pod_spec(&state.clustertree.deployment)),
    ];
    for (component, pod) in pods {
        assert_eq!(pod.node_selector.as_ref(), Some(&selector), "{component}");
    }
    let unset = build(&default_vc());
    assert_eq!(pod_spec(&unset.apiserver_deployment).node_selector, None);
}

/// The level the cluster admin chose for the VirtualCluster's namespace is what the host
/// enforces on the workload namespace and what the clustertree refuses by; `baseline`
/// otherwise, with `restricted` still warned and audited.
#[test]
fn the_workload_namespace_and_the_clustertree_follow_the_chosen_pod_security_level() {
    use vc_api::pod_security::PodSecurityLevel;
    for (level, expected) in [
        (PodSecurityLevel::Baseline, "baseline"),
        (PodSecurityLevel::Restricted, "restricted"),
        (PodSecurityLevel::Privileged, "privileged"),
    ] {
        let observed = Observed {
            workload_pod_security: level,
            ..observed()
        };
        let state =
            DesiredState::build(&default_vc(), &BuildContext::default(), &observed, pki()).unwrap();
        let labels = state.clustertree.namespace.metadata.labels.clone().unwrap();
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], expected);
        assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
        let args = pod_spec(&state.clustertree.deployment).containers[0]
            .args
            .clone()
            .unwrap();
        assert!(
            args.contains(&format!("--pod-security={expected}")),
            "{args:?}"
        );
    }
}

/// `kubernetes.default.svc` in the tenant's DNS is the apiserver Service's cluster IP,
/// so that Service answers on 443 too and the serving certificate names it.
#[test]
fn kubernetes_default_svc_reaches_the_tenant_apiserver_on_443() {
    let state = build(&default_vc());
    let ports: Vec<(Option<&str>, i32, Option<String>)> = state
        .apiserver_service
        .spec
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .flatten()
        .map(|port| {
            (
                port.name.as_deref(),
                port.port,
                port.target_port
                    .as_ref()
                    .map(|target| format!("{target:?}")),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            (Some("https"), 6443, Some("Int(6443)".to_owned())),
            (Some("kubernetes"), 443, Some("Int(6443)".to_owned())),
        ]
    );
    // The clustertree pins the name to the cluster IP the builders observed.
    let tree = container(pod_spec(&state.clustertree.deployment));
    assert_eq!(flag(tree, "apiserver-cluster-ip"), Some("127.100.0.7"));
    let serving = state
        .pki_secrets
        .iter()
        .find(|secret| secret.metadata.name.as_deref() == Some("prod-apiserver-tls"))
        .unwrap();
    let facts =
        inspect_certificate(&serving.data.as_ref().unwrap()[crate::pki::TLS_CERT_KEY].0).unwrap();
    for name in [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ] {
        assert!(
            facts.dns_names.contains(name),
            "{name}: {:?}",
            facts.dns_names
        );
    }
    assert!(
        facts
            .ip_addresses
            .contains(&"127.100.0.7".parse::<std::net::IpAddr>().unwrap()),
        "{:?}",
        facts.ip_addresses
    );
    // Before the cluster IP is known there is nothing to pin.
    let unknown = DesiredState::build(
        &default_vc(),
        &BuildContext::default(),
        &Observed {
            apiserver_cluster_ip: None,
            ..observed()
        },
        pki(),
    )
    .unwrap();
    assert_eq!(
        flag(
            container(pod_spec(&unknown.clustertree.deployment)),
            "apiserver-cluster-ip"
        ),
        None
    );
}
