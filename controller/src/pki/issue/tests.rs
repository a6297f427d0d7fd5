//! Tests of what the issued certificates and keys hold.

use std::net::IpAddr;

use crate::pki::test_support::*;
use crate::pki::*;

#[test]
fn cas_last_ten_years_and_leaves_one_year() {
    let material = fresh(&identity("prod"));
    for kind in CaKind::ALL {
        let ca = facts(&material.ca(kind).cert_pem);
        assert!(ca.is_ca, "{kind:?}");
        assert_eq!(ca.not_before, (now() - BACKDATE).as_second());
        assert_eq!(ca.not_after, (now() + days(3650)).as_second(), "{kind:?}");
        assert_eq!(ca.common_name, kind.common_name());
    }
    for kind in LeafKind::ALL {
        let leaf = facts(&material.leaf(kind).cert_pem);
        assert!(!leaf.is_ca, "{kind:?}");
        assert_eq!(leaf.not_after, (now() + days(365)).as_second(), "{kind:?}");
        // Uncompressed P-256 point: 0x04 || X (32) || Y (32).
        assert_eq!(leaf.public_key.len(), 65, "{kind:?}");
        assert_eq!(leaf.public_key[0], 4);
        assert!(inspect::verify_signed_by(
            material.leaf(kind).cert_pem.as_bytes(),
            material.ca(kind.signer()).cert_pem.as_bytes()
        ));
        assert_eq!(
            &*material.leaf(kind).ca_pem,
            material.ca(kind.signer()).cert_pem
        );
        assert!(
            std::sync::Arc::ptr_eq(
                &material.leaf(kind).ca_pem,
                &material.ca(kind.signer()).ca_pem
            ),
            "{kind:?} holds a copy of its CA instead of sharing it"
        );
    }
}

#[test]
fn apiserver_certificate_carries_every_contract_san() {
    let material = fresh(&identity("prod"));
    let apiserver = facts(&material.leaf(LeafKind::ApiServer).cert_pem);
    for dns in [
        "prod-apiserver",
        "prod-apiserver.team-a",
        "prod-apiserver.team-a.svc",
        "prod-apiserver.team-a.svc.cluster.local",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "prod.example.com",
    ] {
        assert!(
            apiserver.dns_names.contains(dns),
            "missing {dns}: {apiserver:?}"
        );
    }
    let ips: Vec<IpAddr> = ["127.100.0.7", "127.0.0.1", "10.96.0.1", "203.0.113.9"]
        .iter()
        .map(|ip| ip.parse().unwrap())
        .collect();
    for ip in &ips {
        assert!(apiserver.ip_addresses.contains(ip), "missing {ip}");
    }
    assert_eq!(apiserver.ip_addresses.len(), ips.len());
    assert_eq!(apiserver.usage, Some(Usage::Server));
}

#[test]
fn etcd_certificates_name_every_member() {
    let material = fresh(&identity("prod"));
    for kind in [LeafKind::EtcdServer, LeafKind::EtcdPeer] {
        let etcd = facts(&material.leaf(kind).cert_pem);
        for ordinal in 0..3 {
            let member = format!("prod-etcd-{ordinal}.prod-etcd-peer.team-a.svc");
            assert!(etcd.dns_names.contains(&member), "{kind:?} lacks {member}");
            assert!(etcd.dns_names.contains(&format!("{member}.cluster.local")));
        }
        assert!(
            !etcd
                .dns_names
                .contains("prod-etcd-3.prod-etcd-peer.team-a.svc")
        );
        for dns in ["prod-etcd", "prod-etcd.team-a.svc", "localhost"] {
            assert!(etcd.dns_names.contains(dns), "{kind:?} lacks {dns}");
        }
        assert!(
            etcd.ip_addresses
                .contains(&"127.0.0.1".parse::<IpAddr>().unwrap())
        );
        assert_eq!(etcd.usage, Some(Usage::ServerAndClient));
    }
}

#[test]
fn client_certificates_carry_kubeadm_identities() {
    let material = fresh(&identity("prod"));
    let expect = [
        (LeafKind::Admin, "kubernetes-admin", Some("system:masters")),
        (
            LeafKind::ControllerManager,
            "system:kube-controller-manager",
            None,
        ),
        (LeafKind::Scheduler, "system:kube-scheduler", None),
        (
            LeafKind::ApiServerEtcdClient,
            "kube-apiserver-etcd-client",
            None,
        ),
        (
            LeafKind::ApiServerKubeletClient,
            "kube-apiserver-kubelet-client",
            Some("kubeadm:cluster-admins"),
        ),
        (LeafKind::FrontProxyClient, "front-proxy-client", None),
    ];
    for (kind, common_name, organization) in expect {
        let leaf = facts(&material.leaf(kind).cert_pem);
        assert_eq!(leaf.common_name, common_name);
        assert_eq!(leaf.organization.as_deref(), organization);
        assert_eq!(leaf.usage, Some(Usage::Client), "{kind:?}");
        assert!(leaf.dns_names.is_empty() && leaf.ip_addresses.is_empty());
    }
}

#[test]
fn serving_certificates_verify_against_their_own_ca_only() {
    let tenant = identity("prod");
    let material = fresh(&tenant);
    let other = fresh(&identity("other"));
    let cluster_ca = &material.ca(CaKind::Cluster).cert_pem;
    let apiserver = &material.leaf(LeafKind::ApiServer).cert_pem;
    for name in [
        "127.100.0.7",
        "prod-apiserver.team-a.svc",
        "kubernetes.default",
        "prod.example.com",
    ] {
        verify_server(cluster_ca, apiserver, name).unwrap();
    }
    assert!(verify_server(cluster_ca, apiserver, "prod-apiserver.team-b.svc").is_err());
    assert!(
        verify_server(
            &other.ca(CaKind::Cluster).cert_pem,
            apiserver,
            "127.100.0.7"
        )
        .is_err()
    );
    verify_server(
        &material.ca(CaKind::Etcd).cert_pem,
        &material.leaf(LeafKind::EtcdServer).cert_pem,
        "prod-etcd.team-a.svc",
    )
    .unwrap();
    // The etcd CA must not vouch for the apiserver, nor the cluster CA for etcd.
    assert!(
        verify_server(
            &material.ca(CaKind::Etcd).cert_pem,
            apiserver,
            "127.100.0.7"
        )
        .is_err()
    );
}

#[test]
fn two_tenants_never_share_a_ca_or_key() {
    let first = fresh(&identity("prod"));
    let second = fresh(&identity("prod"));
    for kind in CaKind::ALL {
        assert_ne!(
            facts(&first.ca(kind).cert_pem).public_key,
            facts(&second.ca(kind).cert_pem).public_key
        );
    }
    assert_ne!(
        first.service_account().public_pem,
        second.service_account().public_pem
    );
    assert!(!inspect::verify_signed_by(
        second
            .leaf(LeafKind::ApiServerEtcdClient)
            .cert_pem
            .as_bytes(),
        first.ca(CaKind::Etcd).cert_pem.as_bytes()
    ));
}

#[test]
fn key_material_never_shows_in_debug_output() {
    let tenant = identity("prod");
    let material = fresh(&tenant);
    let existing = stored(&tenant, &material);
    let text = format!(
        "{material:?} {existing:?} {:?}",
        material.leaf(LeafKind::Admin)
    );
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    let key_body: String = material
        .leaf(LeafKind::Admin)
        .key_pem
        .expose()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(!text.contains(&key_body));
    assert!(text.contains("<redacted>"));
}

#[test]
fn errors_name_the_step_and_never_the_key() {
    let tenant = identity("prod");
    let material = fresh(&tenant);
    let existing = stored(&tenant, &material);
    let plan = plan_certificates(&tenant, &existing, now());
    // A plan that keeps what was never loaded is refused, not papered over.
    let error = issue(&tenant, &ExistingPki::default(), &plan, now()).unwrap_err();
    assert!(
        matches!(error, PkiError::PlanMismatch { what: "ca" }),
        "{error}"
    );
    assert!(error.to_string().contains("keeps the stored ca"), "{error}");

    let mut corrupt = existing.clone();
    let mut ca = corrupt.ca(CaKind::Etcd).unwrap().clone();
    ca.key_pem = PrivateKeyPem::new(
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n".to_owned(),
    );
    corrupt.insert_ca(CaKind::Etcd, ca);
    let keep_ca = PkiPlan {
        leaves: plan
            .leaves
            .keys()
            .map(|kind| (*kind, Decision::Issue(IssueReason::Renewal)))
            .collect(),
        ..plan_certificates(&tenant, &existing, now())
    };
    let error = issue(&tenant, &corrupt, &keep_ca, now()).unwrap_err();
    assert!(matches!(error, PkiError::LoadSigningCa { .. }), "{error}");
    assert!(!error.to_string().contains("not a key"), "{error}");
}

#[test]
fn unparseable_certificates_are_reported_without_their_content() {
    let error =
        inspect_certificate(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap_err();
    assert!(
        matches!(error, PkiError::ParseExistingCertificate { .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .starts_with("failed to parse the stored PEM certificate"),
        "{error}"
    );
    let error =
        inspect_certificate(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .unwrap_err();
    assert!(
        error.to_string().contains("expected a CERTIFICATE"),
        "{error}"
    );
    assert!(!error.to_string().contains("AAAA"), "{error}");
}

#[test]
fn cas_carry_path_len_zero_and_leaves_no_ca_flag() {
    let tenant = identity("prod");
    let material = fresh(&tenant);
    for kind in CaKind::ALL {
        assert_eq!(
            facts(&material.ca(kind).cert_pem).path_len,
            Some(0),
            "{kind:?}"
        );
    }
    for kind in LeafKind::ALL {
        assert_eq!(facts(&material.leaf(kind).cert_pem).path_len, None);
    }
    // Kubernetes components verify with Go's crypto/x509, which enforces a root's
    // MaxPathLen: with 0, no chain through an intermediate under this CA verifies.
}
