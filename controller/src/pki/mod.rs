//! Per-tenant PKI: three CAs, the service-account key pair and every leaf certificate a
//! tenant control plane needs, all ECDSA P-256.
//!
//! The module is pure: it reads what the tenant's Secrets hold ([`ExistingPki`]), decides
//! what must be (re)issued ([`plan_certificates`]), and issues it ([`issue`]); the
//! kubeconfigs that carry client certificates are written and read in [`kubeconfig`].
//! `resources::secrets` takes its outputs to build the Secrets, and the reconciler
//! writes them; nothing here reads `resources`.
//!
//! Rules:
//! - a CA is never regenerated while it is valid: every running component of the tenant
//!   trusts it, and a new one would cut them all off at once;
//! - a CA signs leaves only, so it carries `pathLen 0`: a leaked or mis-issued leaf can
//!   then never act as an intermediate that the tenant's components would trust;
//! - a leaf lasts one year but never past its CA's notAfter: a leaf outliving its CA is
//!   unusable from that day on anyway, and a lifetime that looks longer than the chain it
//!   hangs from hides the real deadline from whoever reads it;
//! - a leaf is reissued, signed by the existing CA, when less than a third of its lifetime
//!   is left (unless it already ends with its CA, where a new one could not last longer),
//!   when it outlives its CA, or when its subject, SANs or signer no longer match;
//! - text a tenant controls (its name and namespace, `externalHosts`, its Service's
//!   load-balancer hosts) reaches certificates only as DNS names or IP addresses, checked
//!   by [`TenantIdentity::check_names`] before anything is signed. Subjects are kubeadm's
//!   fixed names, except etcd's, which are its Service names and so carry the checked
//!   tenant name.
//! - [`ca_notices`] tells the reconciler which CAs end within [`CA_EXPIRY_WARNING`] or
//!   lack `pathLen 0`, so it can warn before the tenant's certificates stop working.

mod check;
mod encryption;
mod inspect;
mod issue;
pub mod kubeconfig;
mod notice;
mod profile;
mod stored;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

pub use encryption::{
    ENCRYPTED_RESOURCES, ENCRYPTION_CONFIG_KEY, EncryptionConfig, EncryptionError, EncryptionKey,
};
pub use inspect::{CertificateFacts, inspect_certificate};
pub use issue::{IssuedCertificate, PkiMaterial, ServiceAccountKey, issue};
pub use notice::{CA_EXPIRY_WARNING, CaNotices, approaching_expiry, ca_notices};
pub use profile::{LeafProfile, Usage};
pub use stored::{
    CA_CERT_KEY, CLIENT_CA_BUNDLE_KEY, ExistingPki, PrivateKeyPem, SA_PRIVATE_KEY, SA_PUBLIC_KEY,
    StoredCertificate, TLS_CERT_KEY, TLS_KEY_KEY,
};

use vc_api::names;

/// Lifetime of a CA certificate.
pub const CA_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_hours(24 * 3650);
/// Lifetime of a leaf certificate.
pub const LEAF_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_hours(24 * 365);
/// Certificates start this long before they are issued, so a host clock slightly behind
/// the controller's does not reject a brand-new certificate.
pub const BACKDATE: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

/// The tenant's three certificate authorities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CaKind {
    /// Signs the apiserver serving cert and every client of the apiserver.
    Cluster,
    /// Signs etcd's serving and peer certs and the apiserver's etcd client cert.
    Etcd,
    /// Signs the aggregation layer's front-proxy client cert.
    FrontProxy,
    /// Signs the admin client cert alone. The apiserver trusts it beside the cluster CA,
    /// so replacing it revokes every admin kubeconfig and no component's credential.
    Admin,
}

impl CaKind {
    /// Every CA, in a fixed order.
    pub const ALL: [Self; 4] = [Self::Cluster, Self::Etcd, Self::FrontProxy, Self::Admin];
}

/// The tenant's leaf certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeafKind {
    /// kube-apiserver serving certificate.
    ApiServer,
    /// kube-apiserver → etcd client certificate.
    ApiServerEtcdClient,
    /// kube-apiserver → kubelet client certificate.
    ApiServerKubeletClient,
    /// Aggregation-layer client certificate.
    FrontProxyClient,
    /// etcd serving certificate.
    EtcdServer,
    /// etcd peer certificate.
    EtcdPeer,
    /// kube-controller-manager client certificate (inside its kubeconfig).
    ControllerManager,
    /// kube-scheduler client certificate (inside its kubeconfig).
    Scheduler,
    /// Admin client certificate (inside the admin kubeconfig).
    Admin,
}

impl LeafKind {
    /// Every leaf, in a fixed order.
    pub const ALL: [Self; 9] = [
        Self::ApiServer,
        Self::ApiServerEtcdClient,
        Self::ApiServerKubeletClient,
        Self::FrontProxyClient,
        Self::EtcdServer,
        Self::EtcdPeer,
        Self::ControllerManager,
        Self::Scheduler,
        Self::Admin,
    ];

    /// Short name used in messages, metrics and events (bounded).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiServer => "apiserver",
            Self::ApiServerEtcdClient => "apiserver-etcd-client",
            Self::ApiServerKubeletClient => "apiserver-kubelet-client",
            Self::FrontProxyClient => "front-proxy-client",
            Self::EtcdServer => "etcd-server",
            Self::EtcdPeer => "etcd-peer",
            Self::ControllerManager => "controller-manager",
            Self::Scheduler => "scheduler",
            Self::Admin => "admin",
        }
    }
}

impl CaKind {
    /// Short name used in messages, metrics and events (bounded).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cluster => "ca",
            Self::Etcd => "etcd-ca",
            Self::FrontProxy => "front-proxy-ca",
            Self::Admin => "admin-ca",
        }
    }

    /// Name of the Secret holding this CA.
    pub fn secret_name(self, tenant_name: &str) -> String {
        match self {
            Self::Cluster => names::cluster_ca_secret(tenant_name),
            Self::Etcd => names::etcd_ca_secret(tenant_name),
            Self::FrontProxy => names::front_proxy_ca_secret(tenant_name),
            Self::Admin => names::admin_ca_secret(tenant_name),
        }
    }
}

impl LeafKind {
    /// Name of the Secret holding this leaf (a kubeconfig Secret for the three clients that
    /// use one).
    pub fn secret_name(self, tenant_name: &str) -> String {
        match self {
            Self::ApiServer => names::apiserver_tls_secret(tenant_name),
            Self::ApiServerEtcdClient => names::apiserver_etcd_client_secret(tenant_name),
            Self::ApiServerKubeletClient => names::apiserver_kubelet_client_secret(tenant_name),
            Self::FrontProxyClient => names::front_proxy_client_secret(tenant_name),
            Self::EtcdServer => names::etcd_server_secret(tenant_name),
            Self::EtcdPeer => names::etcd_peer_secret(tenant_name),
            Self::ControllerManager => names::controller_manager_kubeconfig_secret(tenant_name),
            Self::Scheduler => names::scheduler_kubeconfig_secret(tenant_name),
            Self::Admin => vc_api::constants::admin_kubeconfig_secret_name(tenant_name),
        }
    }

    /// Whether the Secret holds a kubeconfig rather than `tls.crt`/`tls.key`/`ca.crt`.
    pub fn stored_in_kubeconfig(self) -> bool {
        matches!(
            self,
            Self::ControllerManager | Self::Scheduler | Self::Admin
        )
    }
}

/// Everything about a tenant that ends up inside its certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantIdentity {
    /// Namespace of the VirtualCluster (where the control plane runs).
    pub namespace: String,
    /// Name of the VirtualCluster.
    pub name: String,
    /// DNS domain of the host cluster (and of the tenant).
    pub cluster_domain: String,
    /// Cluster IP of the apiserver Service, once the host has allocated it. The serving
    /// certificate is reissued when it appears or changes.
    pub apiserver_cluster_ip: Option<IpAddr>,
    /// First IP of the tenant's own service CIDR: the tenant's `kubernetes` Service.
    pub tenant_kubernetes_service_ip: IpAddr,
    /// `spec.controlPlane.apiServer.externalHosts`.
    pub external_hosts: Vec<String>,
    /// Addresses (IP or host name) of the apiserver Service's load-balancer ingress, so the
    /// external kubeconfig that points at them verifies.
    pub load_balancer_hosts: Vec<String>,
    /// Members of the etcd cluster; each gets its own SAN.
    pub etcd_replicas: i32,
    /// The operator's request to rotate the admin kubeconfig
    /// ([`vc_api::constants::ROTATE_ADMIN_KUBECONFIG_ANNOTATION`]): the admin CA is
    /// replaced when this differs from the request it was issued for.
    pub admin_rotation: Option<String>,
}

impl TenantIdentity {
    pub(crate) fn apiserver_service(&self) -> String {
        names::apiserver(&self.name)
    }

    pub(crate) fn etcd_client_service(&self) -> String {
        names::etcd(&self.name)
    }

    pub(crate) fn etcd_peer_service(&self) -> String {
        names::etcd_peer_service(&self.name)
    }

    pub(crate) fn etcd_member_hosts(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.etcd_replicas.max(1))
            .map(|ordinal| names::etcd_member_host(&self.namespace, &self.name, ordinal))
    }
}

/// Why a certificate or key is (re)issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueReason {
    /// No Secret, or the Secret lacks a key.
    Missing,
    /// The stored certificate or key cannot be parsed.
    Unparseable,
    /// The stored key does not belong to the stored certificate.
    KeyMismatch,
    /// The certificate is expired or not yet valid.
    Expired,
    /// Less than a third of the leaf's lifetime is left.
    Renewal,
    /// The subject or usage changed.
    SubjectChanged,
    /// The SANs changed (new cluster IP, external host, etcd member...).
    SansChanged,
    /// The signing CA was reissued or the leaf was not signed by the current CA.
    SignerChanged,
    /// The leaf's notAfter is later than its CA's.
    OutlivesSigner,
    /// The operator asked for a new admin CA (rotation of the admin kubeconfig).
    RotationRequested,
}

impl IssueReason {
    /// Short name used in events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Unparseable => "unparseable",
            Self::KeyMismatch => "key-mismatch",
            Self::Expired => "expired",
            Self::Renewal => "renewal",
            Self::SubjectChanged => "subject-changed",
            Self::SansChanged => "sans-changed",
            Self::SignerChanged => "signer-changed",
            Self::OutlivesSigner => "outlives-ca",
            Self::RotationRequested => "rotation-requested",
        }
    }
}

impl fmt::Display for IssueReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// What to do with one certificate or key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The stored one is valid and matches; keep it byte for byte.
    Keep,
    /// Issue a new one.
    Issue(IssueReason),
}

impl Decision {
    /// Whether something new is issued.
    pub fn is_issue(self) -> bool {
        matches!(self, Self::Issue(_))
    }
}

/// The decision for every CA, the service-account key and every leaf of a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiPlan {
    /// One decision per CA.
    pub cas: BTreeMap<CaKind, Decision>,
    /// The service-account key pair.
    pub service_account: Decision,
    /// One decision per leaf.
    pub leaves: BTreeMap<LeafKind, Decision>,
    /// The encryption-at-rest key: issued only when no configuration is stored.
    pub encryption: Decision,
}

impl PkiPlan {
    /// Whether anything at all is issued.
    pub fn issues_anything(&self) -> bool {
        self.service_account.is_issue()
            || self.encryption.is_issue()
            || self.cas.values().any(|decision| decision.is_issue())
            || self.leaves.values().any(|decision| decision.is_issue())
    }
}

/// Failures of the PKI steps. No variant carries key material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The key generator failed.
    #[error("failed to generate an ECDSA P-256 key for {what}: {source}")]
    GenerateKey {
        /// Which certificate or key.
        what: &'static str,
        /// The underlying error.
        source: rcgen::Error,
    },
    /// A certificate could not be built or signed.
    #[error("failed to sign the {what} certificate: {source}")]
    SignCertificate {
        /// Which certificate.
        what: &'static str,
        /// The underlying error.
        source: rcgen::Error,
    },
    /// A stored CA the plan keeps could not be loaded to sign with.
    #[error("failed to load the stored {what} to sign with: {source}")]
    LoadSigningCa {
        /// Which CA.
        what: &'static str,
        /// The underlying error.
        source: rcgen::Error,
    },
    /// The plan keeps a certificate that the existing PKI does not hold; the plan was made
    /// from other data.
    #[error("the plan keeps the stored {what}, but no such certificate was loaded")]
    PlanMismatch {
        /// Which certificate.
        what: &'static str,
    },
    /// A stored certificate could not be parsed.
    #[error("failed to parse the stored {what} certificate: {reason}")]
    ParseExistingCertificate {
        /// Which certificate.
        what: String,
        /// Why, without any key material.
        reason: String,
    },
    /// A validity period is not representable, or the signing CA ends before the leaf
    /// could start.
    #[error("invalid validity period for the {what} certificate")]
    ValidityPeriod {
        /// Which certificate.
        what: &'static str,
    },
    /// The stored encryption-at-rest configuration cannot be used. A new key is never
    /// minted over it: Secrets sealed with the stored keys would become unreadable.
    #[error(
        "Secret {secret} key {key}: {reason}; restore the configuration the tenant apiserver was using (a new key would leave every Secret sealed with the old one unreadable)"
    )]
    ReadEncryptionConfig {
        /// Name of the Secret.
        secret: String,
        /// Key in the Secret.
        key: &'static str,
        /// What is wrong, without key material.
        reason: String,
    },
    /// The OS random source failed to give a key.
    #[error("failed to draw the encryption-at-rest key: {source}")]
    DrawEncryptionKey {
        /// The underlying error.
        source: EncryptionError,
    },
    /// Tenant-controlled text bound for a certificate is not a DNS name or IP address.
    /// The value is shown escaped (`{:?}`) and cut short, so it cannot forge lines in
    /// the logs, Events or status it ends up in.
    #[error("{field} {value:?} cannot go into a certificate: {rule}")]
    CheckName {
        /// Where the text comes from.
        field: &'static str,
        /// The text, at most [`check::MAX_SHOWN`] characters of it.
        value: String,
        /// What is accepted.
        rule: &'static str,
    },
}

/// Decides what must be (re)issued for `tenant`, given what its Secrets hold at `now`.
pub fn plan_certificates(
    tenant: &TenantIdentity,
    existing: &ExistingPki,
    now: jiff::Timestamp,
) -> PkiPlan {
    let mut cas = BTreeMap::new();
    let mut ca_ends = BTreeMap::new();
    for kind in CaKind::ALL {
        let (decision, end) = match (kind, &tenant.admin_rotation) {
            (CaKind::Admin, Some(requested))
                if existing.admin_rotation() != Some(requested.as_str()) =>
            {
                (Decision::Issue(IssueReason::RotationRequested), None)
            }
            _ => decide_ca(existing.ca(kind), now),
        };
        cas.insert(kind, decision);
        if let Some(end) = end {
            ca_ends.insert(kind, end);
        }
    }
    let service_account = existing.service_account_decision();
    let mut leaves = BTreeMap::new();
    for kind in LeafKind::ALL {
        let signer = kind.signer();
        let decision = if cas.get(&signer).is_some_and(|decision| decision.is_issue()) {
            Decision::Issue(match existing.leaf(kind) {
                None => IssueReason::Missing,
                Some(_) => IssueReason::SignerChanged,
            })
        } else {
            decide_leaf(
                kind.profile(tenant),
                existing.leaf(kind),
                existing.ca(signer).zip(ca_ends.get(&signer).copied()),
                now,
            )
        };
        leaves.insert(kind, decision);
    }
    PkiPlan {
        cas,
        service_account,
        leaves,
        encryption: existing.encryption_decision(),
    }
}

/// Plans and issues in one go: the material the tenant's Secrets must hold from now on.
pub fn ensure_pki(
    tenant: &TenantIdentity,
    existing: &ExistingPki,
    now: jiff::Timestamp,
) -> Result<(PkiPlan, PkiMaterial), PkiError> {
    let plan = plan_certificates(tenant, existing, now);
    let material = issue(tenant, existing, &plan, now)?;
    Ok((plan, material))
}

/// The decision for a stored CA and, when it is kept, its notAfter (Unix seconds).
///
/// A CA without `pathLen 0` is kept: replacing a valid CA cuts off every component and
/// every kubeconfig that trusts it, while the missing limit only matters if the CA's key
/// signs an intermediate, which this controller never does. It gets `pathLen 0` at its
/// next replacement and is reported by [`ca_notices`] until then.
fn decide_ca(stored: Option<&StoredCertificate>, now: jiff::Timestamp) -> (Decision, Option<i64>) {
    let Some(stored) = stored else {
        return (Decision::Issue(IssueReason::Missing), None);
    };
    let facts = match stored.facts() {
        Ok(facts) => facts,
        Err(reason) => return (Decision::Issue(reason), None),
    };
    if !facts.is_ca {
        return (Decision::Issue(IssueReason::SubjectChanged), None);
    }
    // A CA that is not yet valid is kept: that only means this controller's clock is
    // behind the one that issued it, and replacing the CA would cut off the tenant.
    if facts.expired_at(now) {
        return (Decision::Issue(IssueReason::Expired), None);
    }
    (Decision::Keep, Some(facts.not_after))
}

/// `signer` is the kept CA with its notAfter (Unix seconds).
fn decide_leaf(
    profile: LeafProfile,
    stored: Option<&StoredCertificate>,
    signer: Option<(&StoredCertificate, i64)>,
    now: jiff::Timestamp,
) -> Decision {
    let Some(stored) = stored else {
        return Decision::Issue(IssueReason::Missing);
    };
    let facts = match stored.facts() {
        Ok(facts) => facts,
        Err(reason) => return Decision::Issue(reason),
    };
    // Not-yet-valid leaves are kept for the same reason as CAs: clock skew between
    // controller replicas must not make them flap.
    if facts.expired_at(now) {
        return Decision::Issue(IssueReason::Expired);
    }
    let signer_end = signer.map(|(_, end)| end);
    // A leaf that already ends with its CA would be reissued with the same notAfter, on
    // every pass, ever more often as the CA nears its end.
    let ends_with_signer = signer_end.is_some_and(|end| facts.not_after >= end);
    if facts.needs_renewal(now) && !ends_with_signer {
        return Decision::Issue(IssueReason::Renewal);
    }
    if !signer.is_some_and(|(ca, _)| stored.is_signed_by(ca)) {
        return Decision::Issue(IssueReason::SignerChanged);
    }
    if signer_end.is_some_and(|end| facts.not_after > end) {
        return Decision::Issue(IssueReason::OutlivesSigner);
    }
    if facts.common_name != profile.common_name
        || facts.organization != profile.organization
        || facts.usage != Some(profile.usage)
    {
        return Decision::Issue(IssueReason::SubjectChanged);
    }
    if facts.dns_names != profile.dns_names || facts.ip_addresses != profile.ip_addresses {
        return Decision::Issue(IssueReason::SansChanged);
    }
    Decision::Keep
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests;
