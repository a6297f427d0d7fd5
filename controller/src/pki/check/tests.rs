//! Tests of the gate between tenant text and a signed certificate.

use super::is_dns_name;
use crate::pki::test_support::*;
use crate::pki::*;

#[test]
fn dns_names_allow_a_wildcard_only_where_asked() {
    for good in ["vc.example.com", "localhost", "A-1.b2", "x.cluster.local"] {
        assert!(is_dns_name(good, false), "{good}");
    }
    assert!(is_dns_name("*.example.com", true));
    assert!(!is_dns_name("*.example.com", false));
    let long_label = "a".repeat(64);
    let long_name = ["abcdefghij"; 24].join(".") + ".example";
    for bad in [
        "",
        "a..b",
        "-a.com",
        "a-.com",
        "*",
        "*.*.com",
        "a_b.com",
        "a b.com",
        "a,CN=evil",
        "https://vc.example.com",
        "vc.example.com\nforged: line",
        "vc.example.com/",
        "caf\u{e9}.example.com",
        long_label.as_str(),
        long_name.as_str(),
    ] {
        assert!(!is_dns_name(bad, true), "{bad:?}");
    }
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
