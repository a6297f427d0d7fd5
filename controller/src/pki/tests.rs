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
        admin_rotation: None,
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
    verify_server_at(ca_pem, leaf_pem, server_name, now() + days(1))
}

fn verify_server_at(
    ca_pem: &str,
    leaf_pem: &str,
    server_name: &str,
    at: jiff::Timestamp,
) -> Result<(), rustls::Error> {
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
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at.as_second() as u64));
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

/// A CA as the controller issued them before `pathLen 0`: same key and subject as
/// `ca`, no path length limit, valid from `issued_at` for `lifetime`.
fn unconstrained_ca(
    kind: CaKind,
    ca: &IssuedCertificate,
    issued_at: jiff::Timestamp,
    lifetime: jiff::SignedDuration,
) -> IssuedCertificate {
    let key = rcgen::KeyPair::from_pem(ca.key_pem.expose()).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, kind.common_name());
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let at = |instant: jiff::Timestamp| {
        time::OffsetDateTime::from_unix_timestamp(instant.as_second()).unwrap()
    };
    params.not_before = at(issued_at - BACKDATE);
    params.not_after = at(issued_at + lifetime);
    let cert_pem = params.self_signed(&key).unwrap().pem();
    IssuedCertificate {
        ca_pem: cert_pem.clone(),
        cert_pem,
        key_pem: ca.key_pem.clone(),
    }
}

/// A tenant's PKI as the controller issued it before leaves were capped and CAs had
/// `pathLen 0`: CAs living `ca_lifetime` without a path length limit, leaves living a
/// full year whatever their CA's end.
fn legacy_material(
    tenant: &TenantIdentity,
    issued_at: jiff::Timestamp,
    ca_lifetime: jiff::SignedDuration,
) -> PkiMaterial {
    let (_, mut material) = ensure_pki(tenant, &ExistingPki::default(), issued_at).unwrap();
    for kind in CaKind::ALL {
        let legacy = unconstrained_ca(kind, material.ca(kind), issued_at, ca_lifetime);
        material.set_ca(kind, legacy);
    }
    for kind in LeafKind::ALL {
        let ca = material.ca(kind.signer()).clone();
        let key = rcgen::KeyPair::from_pem(ca.key_pem.expose()).unwrap();
        let signer = issue::Signer {
            issuer: rcgen::Issuer::from_ca_cert_pem(&ca.cert_pem, key).unwrap(),
            not_after: i64::MAX,
        };
        let leaf = issue::issue_leaf(
            kind,
            &kind.profile(tenant),
            &signer,
            &ca.cert_pem,
            issued_at,
        )
        .unwrap();
        material.set_leaf(kind, leaf);
    }
    material
}

fn leaf_ends(material: &PkiMaterial) -> Vec<(LeafKind, i64)> {
    LeafKind::ALL
        .iter()
        .map(|kind| (*kind, facts(&material.leaf(*kind).cert_pem).not_after))
        .collect()
}

#[test]
fn leaves_reissued_in_the_cas_last_year_end_with_it() {
    let tenant = identity("prod");
    let material = fresh(&tenant);
    let existing = stored(&tenant, &material);
    // 200 days before the CAs end, every one-year leaf has long expired.
    let late = now() + days(3650 - 200);
    let (plan, renewed) = ensure_pki(&tenant, &existing, late).unwrap();
    assert!(plan.cas.values().all(|d| *d == Decision::Keep), "{plan:?}");
    assert!(
        plan.leaves
            .values()
            .all(|d| *d == Decision::Issue(IssueReason::Expired))
    );
    for (kind, end) in leaf_ends(&renewed) {
        let ca_end = facts(&renewed.ca(kind.signer()).cert_pem).not_after;
        assert_eq!(end, ca_end, "{kind:?} must end with its CA");
        assert_eq!(ca_end, (now() + days(3650)).as_second());
    }
    verify_server_at(
        &renewed.ca(CaKind::Cluster).cert_pem,
        &renewed.leaf(LeafKind::ApiServer).cert_pem,
        "prod.example.com",
        late + days(1),
    )
    .unwrap();
}

#[test]
fn a_stored_leaf_that_outlives_its_ca_is_reissued_to_end_with_it() {
    let tenant = identity("prod");
    // CAs of 100 days under year-long leaves: every leaf outlives its CA.
    let legacy = legacy_material(&tenant, now(), days(100));
    let existing = stored(&tenant, &legacy);
    let at = now() + days(1);
    let (plan, renewed) = ensure_pki(&tenant, &existing, at).unwrap();
    assert!(plan.cas.values().all(|d| *d == Decision::Keep), "{plan:?}");
    assert!(
        plan.leaves
            .values()
            .all(|d| *d == Decision::Issue(IssueReason::OutlivesSigner)),
        "{plan:?}"
    );
    for (kind, end) in leaf_ends(&renewed) {
        assert_eq!(renewed.ca(kind.signer()), legacy.ca(kind.signer()));
        assert_eq!(end, (now() + days(100)).as_second(), "{kind:?}");
        assert!(inspect::verify_signed_by(
            renewed.leaf(kind).cert_pem.as_bytes(),
            legacy.ca(kind.signer()).cert_pem.as_bytes()
        ));
    }
    assert_eq!(IssueReason::OutlivesSigner.as_str(), "outlives-ca");

    // Settled: ending with the CA is not "outliving" it.
    let settled = stored(&tenant, &renewed);
    assert!(!plan_certificates(&tenant, &settled, at).issues_anything());
}

#[test]
fn a_leaf_that_ends_with_its_ca_is_not_renewed_over_and_over() {
    let tenant = identity("prod");
    let material = fresh(&tenant);
    let (_, capped) = ensure_pki(
        &tenant,
        &stored(&tenant, &material),
        now() + days(3650 - 90),
    )
    .unwrap();
    let existing = stored(&tenant, &capped);
    // Ten days before the end, far less than a third of every leaf's life is left, but a
    // new leaf could not end any later.
    let plan = plan_certificates(&tenant, &existing, now() + days(3650 - 10));
    assert!(!plan.issues_anything(), "{plan:?}");
    // Once the CA has expired, it and everything it signed are replaced as before.
    let plan = plan_certificates(&tenant, &existing, now() + days(3650) + BACKDATE);
    assert!(
        plan.cas
            .values()
            .all(|d| *d == Decision::Issue(IssueReason::Expired))
    );
    assert!(plan.leaves.values().all(|d| d.is_issue()));
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

#[test]
fn an_old_pki_is_read_and_kept_and_its_missing_path_len_only_reported() {
    let tenant = identity("prod");
    let legacy = legacy_material(&tenant, now(), days(3650));
    let existing = stored(&tenant, &legacy);
    // Replacing a valid CA would cut off every component and kubeconfig that trusts it.
    let (plan, kept) = ensure_pki(&tenant, &existing, now() + days(30)).unwrap();
    assert!(!plan.issues_anything(), "{plan:?}");
    assert!(kept == legacy, "an old PKI must be kept byte for byte");
    let notices = ca_notices(&kept, now() + days(30));
    assert_eq!(notices.without_path_len_zero, CaKind::ALL);
    assert!(notices.expiring.is_empty());

    // Its leaves renew as before, under the kept CA.
    let (plan, renewed) = ensure_pki(&tenant, &existing, now() + days(300)).unwrap();
    assert!(plan.cas.values().all(|d| *d == Decision::Keep));
    assert!(
        plan.leaves
            .values()
            .all(|d| *d == Decision::Issue(IssueReason::Renewal))
    );
    assert_eq!(renewed.ca(CaKind::Etcd), legacy.ca(CaKind::Etcd));

    // The replacement of an expired old CA carries the limit, and nothing is reported.
    let after = now() + days(3651);
    let (_, replaced) = ensure_pki(&tenant, &existing, after).unwrap();
    for kind in CaKind::ALL {
        assert_eq!(facts(&replaced.ca(kind).cert_pem).path_len, Some(0));
    }
    assert!(ca_notices(&replaced, after).is_empty());
}

#[test]
fn a_ca_is_announced_ninety_days_before_it_ends() {
    let tenant = identity("prod");
    let material = fresh(&tenant);
    let end = now() + days(3650);
    let ca = &material.ca(CaKind::Etcd).cert_pem;
    assert_eq!(CA_EXPIRY_WARNING, days(90));
    assert_eq!(approaching_expiry(ca, end - days(91)).unwrap(), None);
    assert_eq!(approaching_expiry(ca, end - days(90)).unwrap(), Some(end));
    assert_eq!(approaching_expiry(ca, end + days(1)).unwrap(), Some(end));
    assert!(ca_notices(&material, end - days(91)).is_empty());

    // Only the front-proxy CA is old and short-lived: it alone is announced.
    let mut mixed = material.clone();
    let short = unconstrained_ca(
        CaKind::FrontProxy,
        material.ca(CaKind::FrontProxy),
        now(),
        days(60),
    );
    mixed.set_ca(CaKind::FrontProxy, short);
    let notices = ca_notices(&mixed, now());
    assert_eq!(notices.expiring, [(CaKind::FrontProxy, now() + days(60))]);
    assert_eq!(notices.without_path_len_zero, [CaKind::FrontProxy]);

    let error = approaching_expiry("not a certificate", now()).unwrap_err();
    assert!(matches!(error, PkiError::ParseExistingCertificate { .. }));
}

#[test]
fn tenant_text_reaches_certificates_only_as_dns_names_or_ip_addresses() {
    let tenant = identity("prod");
    let refused = |identity: TenantIdentity, field: &str| {
        let error = ensure_pki(&identity, &ExistingPki::default(), now()).unwrap_err();
        let PkiError::CheckName { field: named, .. } = &error else {
            panic!("expected CheckName, got {error}");
        };
        assert_eq!(*named, field, "{error}");
        error.to_string()
    };
    for host in [
        "https://vc.example.com",
        "vc.example.com,CN=kubernetes-admin",
        "vc example.com",
        "vc.example.com\nforged: line",
        "caf\u{e9}.example.com",
        "",
    ] {
        let message = refused(
            TenantIdentity {
                external_hosts: vec![host.to_owned()],
                ..tenant.clone()
            },
            "spec.controlPlane.apiServer.externalHosts",
        );
        assert!(!message.contains('\n'), "{message}");
    }
    let message = refused(
        TenantIdentity {
            external_hosts: vec![format!("{}.example.com", "x".repeat(5000))],
            ..tenant.clone()
        },
        "spec.controlPlane.apiServer.externalHosts",
    );
    assert!(message.len() < 400, "{message}");
    refused(
        TenantIdentity {
            load_balancer_hosts: vec!["*.elb.example.com".to_owned()],
            ..tenant.clone()
        },
        "the apiserver Service's load-balancer ingress",
    );
    for name in ["Prod", "prod.evil.com", "9prod", "prod_1", ""] {
        refused(identity(name), "metadata.name");
    }
    refused(
        TenantIdentity {
            namespace: "team-a.svc".to_owned(),
            ..tenant.clone()
        },
        "metadata.namespace",
    );
    // Each part fits, the SAN built from them does not: "NAME-apiserver" is a 64-byte label.
    refused(identity(&"p".repeat(54)), "apiserver");

    // What the webhook accepts is accepted here too.
    let accepted = TenantIdentity {
        external_hosts: vec![
            "*.vc.example.com".to_owned(),
            "2001:db8::7".to_owned(),
            "VC.Example.com".to_owned(),
        ],
        load_balancer_hosts: vec!["a1b2.elb.example.com".to_owned(), "198.51.100.4".to_owned()],
        ..tenant.clone()
    };
    let material = fresh(&accepted);
    let apiserver = facts(&material.leaf(LeafKind::ApiServer).cert_pem);
    assert!(apiserver.dns_names.contains("*.vc.example.com"));
    assert!(apiserver.dns_names.contains("a1b2.elb.example.com"));
    // The only tenant text in a subject is etcd's Service name, made of the checked name.
    for kind in LeafKind::ALL {
        let leaf = facts(&material.leaf(kind).cert_pem);
        if leaf.common_name.contains("prod") {
            assert!(
                ["prod-etcd", "prod-etcd-peer"].contains(&leaf.common_name.as_str()),
                "{leaf:?}"
            );
        }
        assert!(!leaf.organization.unwrap_or_default().contains("prod"));
    }
}

#[test]
fn a_settled_tenant_with_a_name_refused_today_keeps_running() {
    let tenant = identity("prod");
    let material = fresh(&tenant);
    let existing = stored(&tenant, &material);
    // The hosts changed to something that cannot be signed: the apiserver certificate
    // cannot be reissued, and nothing else is touched.
    let bad = TenantIdentity {
        external_hosts: vec!["https://prod.example.com".to_owned()],
        ..tenant.clone()
    };
    let error = ensure_pki(&bad, &existing, now()).unwrap_err();
    assert!(matches!(error, PkiError::CheckName { .. }), "{error}");
    // With nothing to sign, names are not in the way.
    let keep_all = PkiPlan {
        leaves: LeafKind::ALL
            .iter()
            .map(|kind| (*kind, Decision::Keep))
            .collect(),
        ..plan_certificates(&tenant, &existing, now())
    };
    assert!(issue(&bad, &existing, &keep_all, now()).unwrap() == material);
}

#[test]
fn the_encryption_key_is_drawn_once_and_then_kept() {
    let tenant = identity("prod");
    let material = fresh(&tenant);
    let existing = stored(&tenant, &material);
    let (plan, again) = ensure_pki(&tenant, &existing, now() + days(30)).unwrap();
    assert_eq!(plan.encryption, Decision::Keep);
    assert_eq!(again.encryption(), material.encryption());
    let (plan, _) = ensure_pki(&tenant, &ExistingPki::default(), now()).unwrap();
    assert_eq!(plan.encryption, Decision::Issue(IssueReason::Missing));
}

#[test]
fn a_broken_encryption_configuration_is_refused_not_replaced() {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    let tenant = identity("prod");
    let material = fresh(&tenant);
    let vc = resources::test_support::virtual_cluster("  kubernetesVersion: v1.33.4\n");
    let resolved = resources::Tenant::resolve(&vc, &BuildContext::default()).unwrap();
    let mut secrets = resources::secrets::pki_secrets(&resolved, &material).unwrap();
    let sealed = secrets
        .iter_mut()
        .find(|secret| secret.metadata.name.as_deref() == Some("prod-apiserver-encryption"))
        .unwrap();
    sealed.data = Some(
        [(
            ENCRYPTION_CONFIG_KEY.to_owned(),
            ByteString(b"kind: EncryptionConfiguration\n".to_vec()),
        )]
        .into(),
    );
    let existing = ExistingPki::from_secrets("prod", secrets.iter().collect::<Vec<&Secret>>());
    let error = ensure_pki(&tenant, &existing, now()).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, PkiError::ReadEncryptionConfig { .. }),
        "{message}"
    );
    assert!(
        message.starts_with("Secret prod-apiserver-encryption key encryption-config.yaml:"),
        "{message}"
    );
    assert!(message.contains("restore the configuration"), "{message}");
}

#[test]
fn a_rotation_request_replaces_the_admin_ca_and_only_what_it_signs() {
    let tenant = identity("prod");
    let material = fresh(&tenant);
    assert!(material.admin_rotation().is_none());
    let existing = stored(&tenant, &material);
    let admin = material.leaf(LeafKind::Admin);
    assert!(inspect::verify_signed_by(
        admin.cert_pem.as_bytes(),
        material.ca(CaKind::Admin).cert_pem.as_bytes()
    ));
    assert!(
        !inspect::verify_signed_by(
            admin.cert_pem.as_bytes(),
            material.ca(CaKind::Cluster).cert_pem.as_bytes()
        ),
        "the cluster CA must not vouch for the admin kubeconfig, or replacing the admin CA revokes nothing"
    );

    let requested = TenantIdentity {
        admin_rotation: Some("2026-12-07T10:00:00Z".to_owned()),
        ..tenant.clone()
    };
    let (plan, rotated) = ensure_pki(&requested, &existing, now()).unwrap();
    assert_eq!(
        plan.cas[&CaKind::Admin],
        Decision::Issue(IssueReason::RotationRequested)
    );
    assert_eq!(
        plan.leaves[&LeafKind::Admin],
        Decision::Issue(IssueReason::SignerChanged)
    );
    for kind in [CaKind::Cluster, CaKind::Etcd, CaKind::FrontProxy] {
        assert_eq!(plan.cas[&kind], Decision::Keep, "{kind:?}");
        assert_eq!(rotated.ca(kind), material.ca(kind), "{kind:?}");
    }
    for kind in LeafKind::ALL
        .into_iter()
        .filter(|kind| *kind != LeafKind::Admin)
    {
        assert_eq!(plan.leaves[&kind], Decision::Keep, "{kind:?}");
    }
    assert_eq!(rotated.admin_rotation(), Some("2026-12-07T10:00:00Z"));
    assert!(!inspect::verify_signed_by(
        admin.cert_pem.as_bytes(),
        rotated.ca(CaKind::Admin).cert_pem.as_bytes()
    ));

    // Read back with the request recorded on the admin CA's Secret: nothing more to do,
    // so a pass that sees the same annotation again does not rotate again.
    let settled = stored(&requested, &rotated);
    assert_eq!(settled.admin_rotation(), Some("2026-12-07T10:00:00Z"));
    let (plan, again) = ensure_pki(&requested, &settled, now() + days(1)).unwrap();
    assert!(!plan.issues_anything(), "{plan:?}");
    assert!(again == rotated);
    // Removing the annotation keeps the admin CA.
    let (plan, _) = ensure_pki(&tenant, &settled, now() + days(1)).unwrap();
    assert!(!plan.issues_anything(), "{plan:?}");
}

#[test]
fn an_admin_certificate_of_the_cluster_ca_moves_to_the_admin_ca() {
    let tenant = identity("prod");
    let material = fresh(&tenant);
    let mut older = stored(&tenant, &material);
    // As an older controller stored it: no admin CA, the admin leaf signed by the
    // cluster CA.
    let cluster = material.ca(CaKind::Cluster);
    let signer = issue::load_signer(CaKind::Cluster, cluster).unwrap();
    let leaf = issue::issue_leaf(
        LeafKind::Admin,
        &LeafKind::Admin.profile(&tenant),
        &signer,
        &cluster.cert_pem,
        now(),
    )
    .unwrap();
    older.insert_leaf(
        LeafKind::Admin,
        StoredCertificate {
            cert_pem: leaf.cert_pem,
            key_pem: leaf.key_pem,
            ca_pem: None,
        },
    );
    let mut without_admin_ca = ExistingPki::default();
    for kind in [CaKind::Cluster, CaKind::Etcd, CaKind::FrontProxy] {
        without_admin_ca.insert_ca(kind, older.ca(kind).unwrap().clone());
    }
    for kind in LeafKind::ALL {
        without_admin_ca.insert_leaf(kind, older.leaf(kind).unwrap().clone());
    }
    let (plan, _) = ensure_pki(&tenant, &without_admin_ca, now()).unwrap();
    assert_eq!(
        plan.cas[&CaKind::Admin],
        Decision::Issue(IssueReason::Missing)
    );
    assert_eq!(
        plan.leaves[&LeafKind::Admin],
        Decision::Issue(IssueReason::SignerChanged)
    );
    assert_eq!(
        plan.leaves[&LeafKind::ControllerManager],
        Decision::Keep,
        "components keep their certificates"
    );
}
