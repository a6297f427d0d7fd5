//! Issuing what a [`PkiPlan`] asks for, keeping everything else byte for byte.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::check::check_san;
use super::encryption::{ENCRYPTION_CONFIG_KEY, EncryptionConfig};
use super::inspect::inspect_certificate;
use super::profile::{LeafProfile, Usage};
use super::stored::{PrivateKeyPem, StoredCertificate};
use super::{
    BACKDATE, CA_LIFETIME, CaKind, Decision, ExistingPki, LEAF_LIFETIME, LeafKind, PkiError,
    PkiPlan, TenantIdentity,
};

/// A certificate, its private key and the CA certificate that verifies it (for a CA,
/// the CA itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM private key (PKCS#8).
    pub key_pem: PrivateKeyPem,
    /// PEM certificate of the signing CA, shared by every certificate it signed: a
    /// tenant's PKI is kept in memory for every tenant.
    pub ca_pem: Arc<str>,
}

/// The service-account signing key pair (ES256).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountKey {
    /// PEM private key (PKCS#8), for `--service-account-signing-key-file` and the
    /// controller-manager's `--service-account-private-key-file`.
    pub private_pem: PrivateKeyPem,
    /// PEM public key, for `--service-account-key-file`.
    pub public_pem: String,
}

/// The complete PKI of a tenant, as its Secrets must hold it.
#[derive(Clone, PartialEq, Eq)]
pub struct PkiMaterial {
    cas: [IssuedCertificate; 4],
    leaves: [IssuedCertificate; 9],
    service_account: ServiceAccountKey,
    encryption: EncryptionConfig,
    admin_rotation: Option<String>,
}

impl PkiMaterial {
    /// The CA of `kind`.
    pub fn ca(&self, kind: CaKind) -> &IssuedCertificate {
        &self.cas[kind as usize]
    }

    /// The leaf of `kind`.
    pub fn leaf(&self, kind: LeafKind) -> &IssuedCertificate {
        &self.leaves[kind as usize]
    }

    /// The service-account key pair.
    pub fn service_account(&self) -> &ServiceAccountKey {
        &self.service_account
    }

    /// The rotation request the admin CA was issued for, recorded on its Secret.
    pub fn admin_rotation(&self) -> Option<&str> {
        self.admin_rotation.as_deref()
    }

    /// The tenant apiserver's encryption-at-rest keys.
    pub fn encryption(&self) -> &EncryptionConfig {
        &self.encryption
    }
}

#[cfg(test)]
impl PkiMaterial {
    /// Puts a CA in place, to build material as other code once issued it.
    pub(super) fn set_ca(&mut self, kind: CaKind, certificate: IssuedCertificate) {
        self.cas[kind as usize] = certificate;
    }

    /// Puts a leaf in place, to build material as other code once issued it.
    pub(super) fn set_leaf(&mut self, kind: LeafKind, certificate: IssuedCertificate) {
        self.leaves[kind as usize] = certificate;
    }
}

/// Lists what the material holds without showing any key.
impl fmt::Debug for PkiMaterial {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PkiMaterial")
            .field("cas", &CaKind::ALL.map(CaKind::as_str))
            .field("leaves", &LeafKind::ALL.map(LeafKind::as_str))
            .field("service_account", &"<redacted>")
            .field("encryption", &"<redacted>")
            .finish()
    }
}

/// Issues every certificate and key `plan` asks for; keeps the rest from `existing`.
///
/// Reissued leaves are signed by the CA the material ends up with: the stored one when
/// the plan keeps it, the new one otherwise, and end no later than that CA. Tenant names
/// are checked only when a leaf is signed, so a tenant that needs nothing new keeps
/// running whatever its names are.
pub fn issue(
    tenant: &TenantIdentity,
    existing: &ExistingPki,
    plan: &PkiPlan,
    now: jiff::Timestamp,
) -> Result<PkiMaterial, PkiError> {
    let mut cas = Vec::with_capacity(CaKind::ALL.len());
    for kind in CaKind::ALL {
        cas.push(ensure_ca(kind, existing, decision(&plan.cas, kind), now)?);
    }
    let cas: [IssuedCertificate; 4] = cas
        .try_into()
        .map_err(|_| PkiError::PlanMismatch { what: "CA list" })?;

    if LeafKind::ALL
        .iter()
        .any(|kind| decision(&plan.leaves, *kind).is_issue())
    {
        tenant.check_names()?;
    }
    let mut signers: BTreeMap<CaKind, Signer> = BTreeMap::new();
    let mut leaves = Vec::with_capacity(LeafKind::ALL.len());
    for kind in LeafKind::ALL {
        let ca = &cas[kind.signer() as usize];
        let leaf = match decision(&plan.leaves, kind) {
            Decision::Keep => kept(existing.leaf(kind), kind.as_str(), &ca.ca_pem)?,
            Decision::Issue(_) => {
                let signer = match signers.entry(kind.signer()) {
                    std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::btree_map::Entry::Vacant(entry) => {
                        entry.insert(load_signer(kind.signer(), ca)?)
                    }
                };
                issue_leaf(kind, &kind.profile(tenant), signer, &ca.ca_pem, now)?
            }
        };
        leaves.push(leaf);
    }
    let leaves: [IssuedCertificate; 9] = leaves
        .try_into()
        .map_err(|_| PkiError::PlanMismatch { what: "leaf list" })?;

    let service_account = match (plan.service_account, existing.service_account()) {
        (Decision::Keep, Some(stored)) => ServiceAccountKey {
            private_pem: stored.private_pem.clone(),
            public_pem: stored.public_pem.clone(),
        },
        (Decision::Keep, None) => {
            return Err(PkiError::PlanMismatch {
                what: "service-account key",
            });
        }
        (Decision::Issue(_), _) => {
            let key = generate_key("service-account key")?;
            ServiceAccountKey {
                private_pem: PrivateKeyPem::new(key.serialize_pem()),
                public_pem: key.public_key_pem(),
            }
        }
    };
    let encryption = match (plan.encryption, existing.encryption()) {
        (Decision::Keep, Some(Ok(stored))) => stored.clone(),
        (Decision::Keep, Some(Err(reason))) => {
            return Err(PkiError::ReadEncryptionConfig {
                secret: vc_api::names::apiserver_encryption_secret(&tenant.name),
                key: ENCRYPTION_CONFIG_KEY,
                reason: reason.clone(),
            });
        }
        (Decision::Keep, None) => {
            return Err(PkiError::PlanMismatch {
                what: "encryption-at-rest key",
            });
        }
        (Decision::Issue(_), _) => EncryptionConfig::generate(now)
            .map_err(|source| PkiError::DrawEncryptionKey { source })?,
    };
    // A new admin CA answers the request in force; a kept one keeps the request it
    // answered.
    let admin_rotation = if decision(&plan.cas, CaKind::Admin).is_issue() {
        tenant.admin_rotation.clone()
    } else {
        existing.admin_rotation().map(str::to_owned)
    };
    Ok(PkiMaterial {
        cas,
        leaves,
        service_account,
        encryption,
        admin_rotation,
    })
}

fn decision<K: Ord>(decisions: &BTreeMap<K, Decision>, kind: K) -> Decision {
    decisions
        .get(&kind)
        .copied()
        .unwrap_or(Decision::Issue(super::IssueReason::Missing))
}

fn kept(
    stored: Option<&StoredCertificate>,
    what: &'static str,
    ca_pem: &Arc<str>,
) -> Result<IssuedCertificate, PkiError> {
    let stored = stored.ok_or(PkiError::PlanMismatch { what })?;
    Ok(IssuedCertificate {
        cert_pem: stored.cert_pem.clone(),
        key_pem: stored.key_pem.clone(),
        ca_pem: Arc::clone(ca_pem),
    })
}

fn ensure_ca(
    kind: CaKind,
    existing: &ExistingPki,
    decision: Decision,
    now: jiff::Timestamp,
) -> Result<IssuedCertificate, PkiError> {
    if decision == Decision::Keep {
        let stored = existing.ca(kind).ok_or(PkiError::PlanMismatch {
            what: kind.as_str(),
        })?;
        return Ok(IssuedCertificate {
            cert_pem: stored.cert_pem.clone(),
            key_pem: stored.key_pem.clone(),
            ca_pem: Arc::from(stored.cert_pem.as_str()),
        });
    }
    let what = kind.as_str();
    let key = generate_key(what)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(kind.common_name(), None);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    set_validity(&mut params, now, CA_LIFETIME, None, what)?;
    let certificate = params
        .self_signed(&key)
        .map_err(|source| PkiError::SignCertificate { what, source })?;
    let cert_pem = certificate.pem();
    Ok(IssuedCertificate {
        ca_pem: Arc::from(cert_pem.as_str()),
        cert_pem,
        key_pem: PrivateKeyPem::new(key.serialize_pem()),
    })
}

/// A CA loaded to sign with, and its notAfter (Unix seconds), which caps its leaves.
pub(super) struct Signer {
    pub(super) issuer: Issuer<'static, KeyPair>,
    pub(super) not_after: i64,
}

pub(super) fn load_signer(kind: CaKind, ca: &IssuedCertificate) -> Result<Signer, PkiError> {
    let what = kind.as_str();
    let not_after = inspect_certificate(ca.cert_pem.as_bytes())
        .map_err(|error| match error {
            PkiError::ParseExistingCertificate { reason, .. } => {
                PkiError::ParseExistingCertificate {
                    what: what.to_owned(),
                    reason,
                }
            }
            other => other,
        })?
        .not_after;
    let key = KeyPair::from_pem(ca.key_pem.expose())
        .map_err(|source| PkiError::LoadSigningCa { what, source })?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, key)
        .map_err(|source| PkiError::LoadSigningCa { what, source })?;
    Ok(Signer { issuer, not_after })
}

pub(super) fn issue_leaf(
    kind: LeafKind,
    profile: &LeafProfile,
    signer: &Signer,
    ca_pem: &Arc<str>,
    now: jiff::Timestamp,
) -> Result<IssuedCertificate, PkiError> {
    let what = kind.as_str();
    let key = generate_key(what)?;
    let mut params = CertificateParams::default();
    params.distinguished_name =
        distinguished_name(&profile.common_name, profile.organization.as_deref());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match profile.usage {
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::ServerAndClient => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    params.use_authority_key_identifier_extension = true;
    let mut sans = Vec::with_capacity(profile.dns_names.len() + profile.ip_addresses.len());
    for dns in &profile.dns_names {
        check_san(what, dns)?;
        let name = dns
            .as_str()
            .try_into()
            .map_err(|source| PkiError::SignCertificate { what, source })?;
        sans.push(SanType::DnsName(name));
    }
    sans.extend(profile.ip_addresses.iter().copied().map(SanType::IpAddress));
    params.subject_alt_names = sans;
    set_validity(
        &mut params,
        now,
        LEAF_LIFETIME,
        Some(signer.not_after),
        what,
    )?;
    let certificate = params
        .signed_by(&key, &signer.issuer)
        .map_err(|source| PkiError::SignCertificate { what, source })?;
    Ok(IssuedCertificate {
        cert_pem: certificate.pem(),
        key_pem: PrivateKeyPem::new(key.serialize_pem()),
        ca_pem: Arc::clone(ca_pem),
    })
}

pub(super) fn generate_key(what: &'static str) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|source| PkiError::GenerateKey { what, source })
}

fn distinguished_name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    if let Some(organization) = organization {
        name.push(DnType::OrganizationName, organization);
    }
    name.push(DnType::CommonName, common_name);
    name
}

/// Validity from [`BACKDATE`] before `now` for `lifetime`, ending no later than `cap`
/// (Unix seconds).
fn set_validity(
    params: &mut CertificateParams,
    now: jiff::Timestamp,
    lifetime: jiff::SignedDuration,
    cap: Option<i64>,
    what: &'static str,
) -> Result<(), PkiError> {
    let invalid = || PkiError::ValidityPeriod { what };
    let at = |offset: jiff::SignedDuration| now.as_second().checked_add(offset.as_secs());
    let not_before = at(-BACKDATE).ok_or_else(invalid)?;
    let mut not_after = at(lifetime).ok_or_else(invalid)?;
    if let Some(cap) = cap {
        not_after = not_after.min(cap);
    }
    if not_after <= not_before {
        return Err(invalid());
    }
    let time = |seconds: i64| time::OffsetDateTime::from_unix_timestamp(seconds).ok();
    params.not_before = time(not_before).ok_or_else(invalid)?;
    params.not_after = time(not_after).ok_or_else(invalid)?;
    Ok(())
}

#[cfg(test)]
mod tests;
