//! Tests of the PKI plan: what is kept, renewed, replaced and rotated, and when.

use super::*;
use crate::pki::test_support::*;
use crate::resources::{self, BuildContext};

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
        &cluster.ca_pem,
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
