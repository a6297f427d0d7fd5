use std::net::IpAddr;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::*;
use crate::resources::{self, BuildContext, Observed};

fn identity(name: &str) -> TenantIdentity {
    TenantIdentity {
        namespace: "team-a".to_owned(),
        name: name.to_owned(),
        cluster_domain: "cluster.local".to_owned(),
        apiserver_cluster_ip: Some("127.100.0.7".parse().unwrap()),
        tenant_kubernetes_service_ip: "10.96.0.1".parse().unwrap(),
        external_hosts: vec!["prod.example.com".to_owned(), "203.0.113.9".to_owned()],
        load_balancer_hosts: Vec::new(),
        etcd_replicas: 3,
    }
}

fn now() -> jiff::Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn days(count: i64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_hours(24 * count)
}

fn fresh(tenant: &TenantIdentity) -> PkiMaterial {
    let (plan, material) = ensure_pki(tenant, &ExistingPki::default(), now()).unwrap();
    assert!(
        plan.cas
            .values()
            .all(|d| *d == Decision::Issue(IssueReason::Missing))
    );
    assert!(
        plan.leaves
            .values()
            .all(|d| *d == Decision::Issue(IssueReason::Missing))
    );
    material
}

/// Reads the material back the way the reconciler does: through the Secrets it writes.
fn stored(tenant: &TenantIdentity, material: &PkiMaterial) -> ExistingPki {
    let vc = resources::test_support::virtual_cluster("  kubernetesVersion: v1.33.4\n");
    let mut resolved = resources::Tenant::resolve(&vc, &BuildContext::default()).unwrap();
    resolved.name = tenant.name.clone();
    let mut secrets = resources::secrets::pki_secrets(&resolved, material).unwrap();
    secrets.push(
        resources::secrets::admin_kubeconfig_secret(&resolved, &Observed::default(), material)
            .unwrap(),
    );
    ExistingPki::from_secrets(&tenant.name, &secrets)
}

fn facts(pem: &str) -> CertificateFacts {
    inspect_certificate(pem.as_bytes()).unwrap()
}

fn verify_server(ca_pem: &str, leaf_pem: &str, server_name: &str) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    let leaf = CertificateDer::from_pem_slice(leaf_pem.as_bytes()).unwrap();
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        (now() + days(1)).as_second() as u64,
    ));
    verifier
        .verify_server_cert(&leaf, &[], &name, &[], at)
        .map(|_| ())
}

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
            material.leaf(kind).ca_pem,
            material.ca(kind.signer()).cert_pem
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
fn a_settled_tenant_keeps_everything_byte_for_byte() {
    let tenant = identity("prod");
    let material = fresh(&tenant);
    let existing = stored(&tenant, &material);
    let (plan, again) = ensure_pki(&tenant, &existing, now() + days(30)).unwrap();
    assert!(!plan.issues_anything(), "{plan:?}");
    assert!(again == material, "kept material must be identical");
}

#[test]
fn leaves_renew_at_one_third_of_their_life_signed_by_the_kept_ca() {
    let tenant = identity("prod");
    let material = fresh(&tenant);
    let existing = stored(&tenant, &material);
    // A leaf lives 365 days and 5 minutes; renewal starts when less than a third is left.
    let lifetime = days(365) + BACKDATE;
    let threshold = now() + days(365) - lifetime / 3;
    let before = plan_certificates(
        &tenant,
        &existing,
        threshold - jiff::SignedDuration::from_secs(60),
    );
    assert!(!before.issues_anything(), "{before:?}");

    let after_at = threshold + jiff::SignedDuration::from_secs(60);
    let (after, renewed) = ensure_pki(&tenant, &existing, after_at).unwrap();
    assert!(after.cas.values().all(|d| *d == Decision::Keep));
    assert_eq!(after.service_account, Decision::Keep);
    assert!(
        after
            .leaves
            .values()
            .all(|d| *d == Decision::Issue(IssueReason::Renewal))
    );
    for kind in CaKind::ALL {
        assert_eq!(
            renewed.ca(kind),
            material.ca(kind),
            "CA {kind:?} must be kept"
        );
    }
    for kind in LeafKind::ALL {
        let leaf = renewed.leaf(kind);
        assert_ne!(leaf.cert_pem, material.leaf(kind).cert_pem);
        assert!(inspect::verify_signed_by(
            leaf.cert_pem.as_bytes(),
            material.ca(kind.signer()).cert_pem.as_bytes()
        ));
        assert_eq!(
            facts(&leaf.cert_pem).not_after,
            (after_at + days(365)).as_second()
        );
    }
    assert_eq!(renewed.service_account(), material.service_account());
}

#[test]
fn a_new_cluster_ip_reissues_only_the_serving_certificate() {
    let tenant = identity("prod");
    let material = fresh(&tenant);
    let existing = stored(&tenant, &material);
    let moved = TenantIdentity {
        apiserver_cluster_ip: Some("127.100.0.99".parse().unwrap()),
        ..tenant
    };
    let plan = plan_certificates(&moved, &existing, now());
    for (kind, decision) in &plan.leaves {
        let expected = if *kind == LeafKind::ApiServer {
            Decision::Issue(IssueReason::SansChanged)
        } else {
            Decision::Keep
        };
        assert_eq!(*decision, expected, "{kind:?}");
    }
    let renewed = issue(&moved, &existing, &plan, now()).unwrap();
    verify_server(
        &material.ca(CaKind::Cluster).cert_pem,
        &renewed.leaf(LeafKind::ApiServer).cert_pem,
        "127.100.0.99",
    )
    .unwrap();
}

#[test]
fn adding_etcd_members_reissues_only_etcd_serving_and_peer_certificates() {
    let tenant = TenantIdentity {
        etcd_replicas: 1,
        ..identity("prod")
    };
    let material = fresh(&tenant);
    let existing = stored(&tenant, &material);
    let grown = TenantIdentity {
        etcd_replicas: 5,
        ..tenant
    };
    let plan = plan_certificates(&grown, &existing, now());
    let reissued: Vec<LeafKind> = plan
        .leaves
        .iter()
        .filter(|(_, decision)| decision.is_issue())
        .map(|(kind, _)| *kind)
        .collect();
    assert_eq!(reissued, [LeafKind::EtcdServer, LeafKind::EtcdPeer]);
}

#[test]
fn an_expired_ca_is_replaced_with_every_leaf_it_signed() {
    let tenant = identity("prod");
    let material = fresh(&tenant);
    let existing = stored(&tenant, &material);
    // Past the CAs' ten years, every CA is expired.
    let plan = plan_certificates(&tenant, &existing, now() + days(3651));
    assert!(
        plan.cas
            .values()
            .all(|d| *d == Decision::Issue(IssueReason::Expired))
    );

    // Only the front-proxy CA broken: only its leaf follows.
    let mut partial = existing.clone();
    let mut broken = existing.ca(CaKind::FrontProxy).unwrap().clone();
    broken.cert_pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned();
    partial.insert_ca(CaKind::FrontProxy, broken);
    let plan = plan_certificates(&tenant, &partial, now());
    assert_eq!(
        plan.cas[&CaKind::FrontProxy],
        Decision::Issue(IssueReason::Unparseable)
    );
    assert_eq!(plan.cas[&CaKind::Cluster], Decision::Keep);
    for (kind, decision) in &plan.leaves {
        if *kind == LeafKind::FrontProxyClient {
            assert_eq!(*decision, Decision::Issue(IssueReason::SignerChanged));
        } else {
            assert_eq!(*decision, Decision::Keep, "{kind:?}");
        }
    }
    let renewed = issue(&tenant, &partial, &plan, now()).unwrap();
    assert!(inspect::verify_signed_by(
        renewed.leaf(LeafKind::FrontProxyClient).cert_pem.as_bytes(),
        renewed.ca(CaKind::FrontProxy).cert_pem.as_bytes()
    ));
    assert_eq!(renewed.ca(CaKind::Cluster), material.ca(CaKind::Cluster));
}

#[test]
fn broken_or_foreign_leaves_are_reissued() {
    let tenant = identity("prod");
    let material = fresh(&tenant);
    let other = fresh(&identity("prod"));
    let mut existing = stored(&tenant, &material);
    let mut mismatched = existing.leaf(LeafKind::Scheduler).unwrap().clone();
    mismatched.key_pem = other.leaf(LeafKind::Scheduler).key_pem.clone();
    existing.insert_leaf(LeafKind::Scheduler, mismatched);
    let foreign = other.leaf(LeafKind::Admin);
    existing.insert_leaf(
        LeafKind::Admin,
        StoredCertificate {
            cert_pem: foreign.cert_pem.clone(),
            key_pem: foreign.key_pem.clone(),
            ca_pem: Some(material.ca(CaKind::Cluster).cert_pem.clone()),
        },
    );
    let plan = plan_certificates(&tenant, &existing, now());
    assert_eq!(
        plan.leaves[&LeafKind::Scheduler],
        Decision::Issue(IssueReason::KeyMismatch)
    );
    assert_eq!(
        plan.leaves[&LeafKind::Admin],
        Decision::Issue(IssueReason::SignerChanged)
    );
    assert_eq!(plan.leaves[&LeafKind::ApiServer], Decision::Keep);
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
fn a_controller_with_a_slow_clock_keeps_everything() {
    let tenant = identity("prod");
    let material = fresh(&tenant);
    let existing = stored(&tenant, &material);
    // An hour before issuance every certificate is "not yet valid": skew, not a reason
    // to replace a CA.
    let plan = plan_certificates(
        &tenant,
        &existing,
        now() - jiff::SignedDuration::from_hours(1),
    );
    assert!(!plan.issues_anything(), "{plan:?}");
}

#[test]
fn a_ca_secret_holding_a_leaf_is_replaced() {
    let tenant = identity("prod");
    let material = fresh(&tenant);
    let mut existing = stored(&tenant, &material);
    let leaf = existing.leaf(LeafKind::Admin).unwrap().clone();
    existing.insert_ca(
        CaKind::Cluster,
        StoredCertificate {
            ca_pem: None,
            ..leaf
        },
    );
    let plan = plan_certificates(&tenant, &existing, now());
    assert_eq!(
        plan.cas[&CaKind::Cluster],
        Decision::Issue(IssueReason::SubjectChanged)
    );
    assert_eq!(plan.cas[&CaKind::Etcd], Decision::Keep);
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
