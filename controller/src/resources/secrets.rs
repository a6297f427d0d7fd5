//! The Secrets holding a tenant's PKI and kubeconfigs, named and keyed as
//! `docs/contracts.md` says (`tls.crt`, `tls.key`, `ca.crt`; `kubeconfig`,
//! `kubeconfig-internal`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use vc_api::constants::{
    KUBECONFIG_INTERNAL_SECRET_KEY, KUBECONFIG_SECRET_KEY, ROTATE_ADMIN_KUBECONFIG_ANNOTATION,
};

use super::meta::{Component, owned_meta};
use super::{BuildError, Observed, Tenant, names};
use crate::pki::kubeconfig::render_client_certificate_kubeconfig;
use crate::pki::{
    CA_CERT_KEY, CLIENT_CA_BUNDLE_KEY, CaKind, ENCRYPTION_CONFIG_KEY, IssuedCertificate, LeafKind,
    PkiMaterial, SA_PRIVATE_KEY, SA_PUBLIC_KEY, TLS_CERT_KEY, TLS_KEY_KEY,
};

/// `type` of the certificate Secrets.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// `type` of the key-pair and kubeconfig Secrets.
pub const OPAQUE_SECRET_TYPE: &str = "Opaque";

fn secret(
    tenant: &Tenant,
    name: String,
    component: Component,
    secret_type: &str,
    data: BTreeMap<String, String>,
) -> Secret {
    Secret {
        metadata: owned_meta(tenant, name, component),
        type_: Some(secret_type.to_owned()),
        data: Some(
            data.into_iter()
                .map(|(key, value)| (key, ByteString(value.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

fn tls_data(certificate: &IssuedCertificate, with_ca: bool) -> BTreeMap<String, String> {
    let mut data = BTreeMap::from([
        (TLS_CERT_KEY.to_owned(), certificate.cert_pem.clone()),
        (
            TLS_KEY_KEY.to_owned(),
            certificate.key_pem.expose().to_owned(),
        ),
    ]);
    if with_ca {
        data.insert(CA_CERT_KEY.to_owned(), certificate.ca_pem.to_string());
    }
    data
}

/// The CA, service-account, leaf certificate and component kubeconfig Secrets.
pub fn pki_secrets(tenant: &Tenant, pki: &PkiMaterial) -> Result<Vec<Secret>, BuildError> {
    let mut secrets = Vec::new();
    for kind in CaKind::ALL {
        let mut data = tls_data(pki.ca(kind), false);
        if kind == CaKind::Admin {
            data.insert(CLIENT_CA_BUNDLE_KEY.to_owned(), client_ca_bundle(pki));
        }
        let mut ca = secret(
            tenant,
            kind.secret_name(&tenant.name),
            Component::Pki,
            TLS_SECRET_TYPE,
            data,
        );
        if let (CaKind::Admin, Some(request)) = (kind, pki.admin_rotation()) {
            ca.metadata.annotations = Some(BTreeMap::from([(
                ROTATE_ADMIN_KUBECONFIG_ANNOTATION.to_owned(),
                request.to_owned(),
            )]));
        }
        secrets.push(ca);
    }
    let service_account = pki.service_account();
    secrets.push(secret(
        tenant,
        names::service_account_key_secret(&tenant.name),
        Component::Pki,
        OPAQUE_SECRET_TYPE,
        BTreeMap::from([
            (
                SA_PRIVATE_KEY.to_owned(),
                service_account.private_pem.expose().to_owned(),
            ),
            (SA_PUBLIC_KEY.to_owned(), service_account.public_pem.clone()),
        ]),
    ));
    for kind in LeafKind::ALL {
        if kind.stored_in_kubeconfig() {
            continue;
        }
        secrets.push(secret(
            tenant,
            kind.secret_name(&tenant.name),
            Component::Pki,
            TLS_SECRET_TYPE,
            tls_data(pki.leaf(kind), true),
        ));
    }
    let internal = names::internal_apiserver_url(&tenant.namespace, &tenant.name);
    for (kind, user, which) in [
        (
            LeafKind::ControllerManager,
            "system:kube-controller-manager",
            "controller-manager",
        ),
        (LeafKind::Scheduler, "system:kube-scheduler", "scheduler"),
    ] {
        let kubeconfig = client_kubeconfig(tenant, pki, kind, user, &internal, which)?;
        secrets.push(secret(
            tenant,
            kind.secret_name(&tenant.name),
            Component::Kubeconfig,
            OPAQUE_SECRET_TYPE,
            BTreeMap::from([(KUBECONFIG_SECRET_KEY.to_owned(), kubeconfig)]),
        ));
    }
    secrets.push(secret(
        tenant,
        names::apiserver_admission_secret(&tenant.name),
        Component::ApiServer,
        OPAQUE_SECRET_TYPE,
        super::apiserver::deployed_admission_files(),
    ));
    let encryption = pki
        .encryption()
        .render()
        .map_err(|source| BuildError::RenderEncryptionConfig { source })?;
    secrets.push(secret(
        tenant,
        names::apiserver_encryption_secret(&tenant.name),
        Component::ApiServer,
        OPAQUE_SECRET_TYPE,
        BTreeMap::from([(ENCRYPTION_CONFIG_KEY.to_owned(), encryption)]),
    ));
    Ok(secrets)
}

/// The CAs whose client certificates the tenant apiserver accepts: the cluster CA
/// (components, and kubeconfigs an older controller signed with it) and the admin CA.
pub fn client_ca_bundle(pki: &PkiMaterial) -> String {
    let mut bundle = String::new();
    for kind in [CaKind::Cluster, CaKind::Admin] {
        bundle.push_str(pki.ca(kind).cert_pem.trim_end());
        bundle.push('\n');
    }
    bundle
}

fn client_kubeconfig(
    tenant: &Tenant,
    pki: &PkiMaterial,
    kind: LeafKind,
    user: &str,
    server: &str,
    which: &'static str,
) -> Result<String, BuildError> {
    let leaf = pki.leaf(kind);
    // The CA that verifies the server, whichever CA signed the client.
    render_client_certificate_kubeconfig(
        &tenant.name,
        server,
        &pki.ca(CaKind::Cluster).cert_pem,
        user,
        &leaf.cert_pem,
        &leaf.key_pem,
    )
    .map_err(|source| BuildError::RenderKubeconfig { which, source })
}

/// `https://HOST:6443`, with IPv6 addresses in brackets.
pub fn https_url(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("https://[{v6}]:6443"),
        _ => format!("https://{host}:6443"),
    }
}

/// The endpoint of the external kubeconfig, in the order `docs/contracts.md` gives: the
/// first external host, the load-balancer ingress, the cluster IP. Before the cluster IP
/// is known, the in-cluster URL stands in.
pub fn external_apiserver_url(tenant: &Tenant, observed: &Observed) -> String {
    if let Some(host) = tenant.external_hosts.first() {
        return https_url(host);
    }
    if let Some(host) = observed.load_balancer_hosts.first() {
        return https_url(host);
    }
    match observed.apiserver_cluster_ip {
        Some(ip) => https_url(&ip.to_string()),
        None => names::internal_apiserver_url(&tenant.namespace, &tenant.name),
    }
}

/// `NAME-admin-kubeconfig`: `kubeconfig` (external endpoint) and `kubeconfig-internal`.
pub fn admin_kubeconfig_secret(
    tenant: &Tenant,
    observed: &Observed,
    pki: &PkiMaterial,
) -> Result<Secret, BuildError> {
    let user = "kubernetes-admin";
    let external = client_kubeconfig(
        tenant,
        pki,
        LeafKind::Admin,
        user,
        &external_apiserver_url(tenant, observed),
        "admin",
    )?;
    let internal = client_kubeconfig(
        tenant,
        pki,
        LeafKind::Admin,
        user,
        &names::internal_apiserver_url(&tenant.namespace, &tenant.name),
        "admin (internal)",
    )?;
    Ok(secret(
        tenant,
        LeafKind::Admin.secret_name(&tenant.name),
        Component::Kubeconfig,
        OPAQUE_SECRET_TYPE,
        BTreeMap::from([
            (KUBECONFIG_SECRET_KEY.to_owned(), external),
            (KUBECONFIG_INTERNAL_SECRET_KEY.to_owned(), internal),
        ]),
    ))
}

#[cfg(test)]
mod tests;
