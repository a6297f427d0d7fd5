//! Shared fixtures of the PKI tests: identities, clocks, stored PKIs and a TLS verifier.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::*;
use crate::resources::{self, BuildContext, Observed};

pub fn identity(name: &str) -> TenantIdentity {
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

pub fn now() -> jiff::Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

pub fn days(count: i64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_hours(24 * count)
}

pub fn fresh(tenant: &TenantIdentity) -> PkiMaterial {
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
pub fn stored(tenant: &TenantIdentity, material: &PkiMaterial) -> ExistingPki {
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

pub fn facts(pem: &str) -> CertificateFacts {
    inspect_certificate(pem.as_bytes()).unwrap()
}

pub fn verify_server(ca_pem: &str, leaf_pem: &str, server_name: &str) -> Result<(), rustls::Error> {
    verify_server_at(ca_pem, leaf_pem, server_name, now() + days(1))
}

pub fn verify_server_at(
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

/// A CA as the controller issued them before `pathLen 0`: same key and subject as
/// `ca`, no path length limit, valid from `issued_at` for `lifetime`.
pub fn unconstrained_ca(
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
        ca_pem: cert_pem.as_str().into(),
        cert_pem,
        key_pem: ca.key_pem.clone(),
    }
}

/// A tenant's PKI as the controller issued it before leaves were capped and CAs had
/// `pathLen 0`: CAs living `ca_lifetime` without a path length limit, leaves living a
/// full year whatever their CA's end.
pub fn legacy_material(
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
        let leaf =
            issue::issue_leaf(kind, &kind.profile(tenant), &signer, &ca.ca_pem, issued_at).unwrap();
        material.set_leaf(kind, leaf);
    }
    material
}

pub fn leaf_ends(material: &PkiMaterial) -> Vec<(LeafKind, i64)> {
    LeafKind::ALL
        .iter()
        .map(|kind| (*kind, facts(&material.leaf(*kind).cert_pem).not_after))
        .collect()
}
