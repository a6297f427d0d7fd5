//! Tests of the etcd builders.

use pretty_assertions::assert_eq;
use vc_api::constants;

use crate::resources::test_support::*;
use crate::resources::*;

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
    let pod = etcd_pod_spec(&state);
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
