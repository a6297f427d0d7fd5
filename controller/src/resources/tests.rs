//! Tests of the whole desired state: ownership, names, determinism and what rolls.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use pretty_assertions::assert_eq;
use vc_api::constants;

use crate::pki::LeafKind;
use crate::resources::test_support::*;
use crate::resources::*;

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
    let hash = config_hash;
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
fn only_mounted_keys_roll_pods() {
    let vc = virtual_cluster("  controlPlane:\n    apiServer:\n      serviceType: LoadBalancer\n");
    let hash = |state: &DesiredState| config_hash(&state.clustertree.deployment);
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
