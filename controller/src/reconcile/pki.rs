//! The tenant's certificates and keys: read what is stored, issue only what is missing
//! or due, and store it before anything is built on it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PostParams};
use kube::{Api, Resource, ResourceExt};
use vc_api::constants::{
    CONTROLLER_FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE, TENANT_NAME_LABEL,
};

use super::events::Changes;
use super::objects::{ObjectError, all_answered, cached};
use crate::apply::{ApplyError, judge};
use crate::context::{Context, PkiSource};
use crate::error::{Step, is_conflict};
use crate::ownership::{Holder, Owner, holder};
use crate::pki::{CaKind, CaNotices, ExistingPki, LeafKind, PkiError, PkiMaterial, TenantIdentity};
use crate::resources::{Tenant, names};

/// Why the certificates and keys could not be read, issued or stored.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A stored Secret could not be read.
    #[error("failed to read Secret {name:?}")]
    ReadSecret {
        /// The Secret.
        name: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// The tenant's Secrets could not be listed.
    #[error("failed to list the Secrets labelled {selector}")]
    ListSecrets {
        /// The label selector.
        selector: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// A Secret could not be created or applied.
    #[error("failed to write Secret {name:?}")]
    WriteSecret {
        /// The Secret.
        name: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// Certificates or keys could not be generated, or stored ones not parsed.
    #[error("failed to issue the certificates and keys")]
    Issue {
        /// What failed; never key material.
        #[source]
        source: PkiError,
    },

    /// A Secret the PKI is read from or written to is someone else's.
    #[error(transparent)]
    NotOurs(ObjectError),
}

impl Error {
    /// The object that was not written, when this is about one.
    pub(crate) fn object(&self) -> Option<&ObjectError> {
        match self {
            Error::NotOurs(object) => Some(object),
            _ => None,
        }
    }
}

/// The PKI this reconcile builds on.
#[derive(Debug)]
pub(super) struct PkiPlan {
    /// Every certificate and key, stored or freshly issued.
    pub(super) material: PkiMaterial,
    /// How close the CAs are to their end.
    pub(super) ca_notices: CaNotices,
    /// What was issued, for the Event; empty when nothing was.
    issued: Vec<String>,
    /// The PKI Secrets as read: cached copies without their data when the PKI was
    /// remembered, full copies when it was inspected.
    stored: Vec<Arc<Secret>>,
    /// Names of the CA Secrets, stored before anything they sign.
    ca_secrets: Vec<String>,
    /// What the certificates say of the tenant, part of the PKI's fingerprint.
    identity: TenantIdentity,
}

/// Whether the PKI Secrets are stored as planned.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Stored {
    /// They are.
    Done,
    /// A Secret missing from the cache already existed: look again once the cache has
    /// caught up.
    CacheLagging,
}

/// Every Secret name the PKI is read from.
fn pki_secret_names(tenant_name: &str) -> Vec<String> {
    let mut names_list: Vec<String> = CaKind::ALL
        .iter()
        .map(|kind| kind.secret_name(tenant_name))
        .collect();
    names_list.extend(
        LeafKind::ALL
            .iter()
            .map(|kind| kind.secret_name(tenant_name)),
    );
    names_list.push(names::service_account_key_secret(tenant_name));
    // Written with the PKI Secrets, so read back with them: a desired Secret missing
    // from this list looks absent, is created again, conflicts, and stalls the chain.
    names_list.push(names::apiserver_admission_secret(tenant_name));
    names_list.push(names::apiserver_encryption_secret(tenant_name));
    names_list
}

/// Reads the stored PKI and issues only what is missing or due. A PKI remembered for
/// the exact versions of its cached Secrets is reused; any other is read in full (the
/// cache holds Secrets without their data) and inspected. A CA or key missing from a
/// lagging cache is never stored twice: [`store_pki`] creates, and a name that exists
/// already ends the pass before anything is built on what was issued.
pub(super) async fn plan_pki(
    tenant: &Tenant,
    identity: &TenantIdentity,
    ctx: &Context,
) -> Result<PkiPlan, Error> {
    let namespace = tenant.namespace.as_str();
    let cached_copies: Vec<Arc<Secret>> = pki_secret_names(&tenant.name)
        .iter()
        .filter_map(|name| cached(&ctx.stores.secrets, Some(namespace), name))
        .collect();
    refuse_foreign(tenant, &cached_copies)?;
    let source = pki_source(identity, &cached_copies);
    let now = Timestamp::now();
    let (material, issued, stored) = match ctx.cached_pki(&tenant.uid, &source) {
        Some(material) => (material, Vec::new(), cached_copies),
        None => {
            // Nothing cached: a fresh tenant, whose first writes are creates that find
            // any Secret the cache has not shown yet.
            let stored = if cached_copies.is_empty() {
                cached_copies
            } else {
                read_pki_secrets(tenant, ctx).await?
            };
            refuse_foreign(tenant, &stored)?;
            let source = pki_source(identity, &stored);
            let (material, issued) = issue_missing(tenant, identity, &stored, source, ctx, now)?;
            (material, issued, stored)
        }
    };
    Ok(PkiPlan {
        ca_notices: crate::pki::ca_notices(&material, now),
        material,
        issued,
        stored,
        ca_secrets: (CaKind::ALL.iter())
            .map(|kind| kind.secret_name(&tenant.name))
            .collect(),
        identity: identity.clone(),
    })
}

/// A CA or key read from a Secret that is not ours would sign this tenant's
/// certificates with another tenant's CA.
fn refuse_foreign(tenant: &Tenant, stored: &[Arc<Secret>]) -> Result<(), Error> {
    for secret in stored {
        if let Holder::Other(holder) = holder(secret.meta(), &tenant.owner()) {
            return Err(foreign_secret(secret, holder));
        }
    }
    Ok(())
}

/// The tenant's PKI Secrets in full, with one labelled list.
async fn read_pki_secrets(tenant: &Tenant, ctx: &Context) -> Result<Vec<Arc<Secret>>, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &tenant.namespace);
    let selector = format!(
        "{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{TENANT_NAME_LABEL}={}",
        tenant.name
    );
    let listed = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::ListSecrets {
            selector: selector.clone(),
            source,
        })?;
    let names = pki_secret_names(&tenant.name);
    Ok(listed
        .items
        .into_iter()
        .filter(|secret| names.contains(&secret.name_any()))
        .map(Arc::new)
        .collect())
}

/// What a PKI read from `stored` is computed from.
fn pki_source(identity: &TenantIdentity, stored: &[Arc<Secret>]) -> PkiSource {
    PkiSource {
        identity: identity.clone(),
        versions: (stored.iter())
            .map(|secret| {
                let version = secret.resource_version().unwrap_or_default();
                (secret.name_any(), version)
            })
            .collect(),
    }
}

/// Inspects the stored PKI and issues what is missing or due; a PKI that needed nothing
/// is remembered with its `source`. Returns it and what was issued.
fn issue_missing(
    tenant: &Tenant,
    identity: &TenantIdentity,
    stored: &[Arc<Secret>],
    source: PkiSource,
    ctx: &Context,
    now: Timestamp,
) -> Result<(PkiMaterial, Vec<String>), Error> {
    let existing = ExistingPki::from_secrets(&tenant.name, stored.iter().map(Arc::as_ref));
    let (plan, material) = crate::pki::ensure_pki(identity, &existing, now)
        .map_err(|source| Error::Issue { source })?;
    if !plan.issues_anything() {
        ctx.remember_pki(&tenant.uid, source, material.clone());
    }
    let mut issued: Vec<String> = plan
        .cas
        .iter()
        .filter(|(_, decision)| decision.is_issue())
        .map(|(kind, decision)| format!("{} ({decision:?})", kind.as_str()))
        .collect();
    issued.extend(
        plan.leaves
            .iter()
            .filter(|(kind, decision)| decision.is_issue() && **kind != LeafKind::Admin)
            .map(|(kind, decision)| format!("{} ({decision:?})", kind.as_str())),
    );
    if plan.service_account.is_issue() {
        issued.push("service-account key".to_owned());
    }
    if plan.encryption.is_issue() {
        issued.push("encryption-at-rest key".to_owned());
    }
    Ok((material, issued))
}

fn foreign_secret(secret: &Secret, holder: String) -> Error {
    Error::NotOurs(ObjectError::not_ours(secret, "Secret", holder))
}

/// Writes the PKI Secrets `desired`: a Secret that does not exist is created (never
/// applied), so two racing reconciles cannot both mint a CA; an existing one is applied
/// only when its content changed (renewal, new SANs). The CAs go first, all at once, then
/// the rest at once, and only when every CA is stored as planned: a certificate signed by
/// a CA that lost its create to an existing one must never be stored.
pub(super) async fn store_pki(
    plan: &PkiPlan,
    desired: &[Secret],
    owner: &Owner<'_>,
    ctx: &Context,
    changes: &mut Changes,
) -> Result<Stored, Error> {
    let (cas, rest): (Vec<&Secret>, Vec<&Secret>) = desired
        .iter()
        .partition(|secret| plan.ca_secrets.contains(&secret.name_any()));
    let lagging = |outcomes: &[(String, SecretWrite)]| {
        (outcomes.iter()).any(|(_, outcome)| *outcome == SecretWrite::CacheLagging)
    };
    let mut outcomes = store_secrets(plan, &cas, owner, ctx).await?;
    if !lagging(&outcomes) {
        outcomes.extend(store_secrets(plan, &rest, owner, ctx).await?);
    }
    let written = (outcomes.iter()).any(|(_, outcome)| matches!(outcome, SecretWrite::Written(_)));
    if written && !plan.issued.is_empty() {
        changes.record(
            "CertificatesIssued",
            Step::Pki,
            format!("issued {}", plan.issued.join(", ")),
        );
    }
    if lagging(&outcomes) {
        return Ok(Stored::CacheLagging);
    }
    if written {
        // What is stored now is the plan's material, at the versions the writes
        // answered: remembered, the next pass need not read the Secrets to inspect it.
        let source = PkiSource {
            identity: plan.identity.clone(),
            versions: (outcomes.into_iter())
                .filter_map(|(name, outcome)| Some((name, outcome.version()?)))
                .collect(),
        };
        ctx.remember_pki(owner.uid, source, plan.material.clone());
    }
    Ok(Stored::Done)
}

/// Writes `secrets` at once; what was done to each, by name.
async fn store_secrets(
    plan: &PkiPlan,
    secrets: &[&Secret],
    owner: &Owner<'_>,
    ctx: &Context,
) -> Result<Vec<(String, SecretWrite)>, Error> {
    let writes = secrets.iter().map(|secret| async move {
        let name = secret.name_any();
        let existing = plan.stored.iter().find(|stored| stored.name_any() == name);
        let outcome = store_secret(secret, existing.map(Arc::as_ref), owner, ctx).await?;
        Ok((name, outcome))
    });
    all_answered(writes).await
}

/// What [`store_secret`] did, with the resource version the Secret has now.
#[derive(Debug, PartialEq, Eq)]
enum SecretWrite {
    Written(Option<String>),
    Unchanged(Option<String>),
    /// The Secret exists although the cache does not have it.
    CacheLagging,
}

impl SecretWrite {
    fn version(&self) -> Option<String> {
        match self {
            SecretWrite::Written(version) | SecretWrite::Unchanged(version) => version.clone(),
            SecretWrite::CacheLagging => None,
        }
    }
}

async fn store_secret(
    secret: &Secret,
    existing: Option<&Secret>,
    owner: &Owner<'_>,
    ctx: &Context,
) -> Result<SecretWrite, Error> {
    let name = secret.name_any();
    let namespace = secret.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(existing) = existing else {
        let params = PostParams {
            field_manager: Some(CONTROLLER_FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        return match api.create(&params, secret).await {
            Ok(created) => {
                ctx.applied_digests.remember(owner.uid, secret, &created);
                Ok(SecretWrite::Written(created.resource_version()))
            }
            // Exists already: our cache lags behind our own earlier write, or someone
            // else's Secret (never in our cache) holds the name. Keep what is stored and
            // look again once the cache has caught up.
            Err(error) if is_conflict(&error) => {
                let found = api.get_opt(&name).await;
                let found = found.map_err(|source| Error::ReadSecret {
                    name: name.clone(),
                    source,
                })?;
                if let Some(found) = found
                    && let Holder::Other(holder) = holder(found.meta(), owner)
                {
                    return Err(foreign_secret(&found, holder));
                }
                Ok(SecretWrite::CacheLagging)
            }
            Err(source) => Err(Error::WriteSecret { name, source }),
        };
    };
    let current = Some(existing.clone());
    let (in_place, current) = judge(&api, &ctx.applied_digests, secret, owner, current)
        .await
        .map_err(|error| match error {
            ApplyError::NotOurs { holder } => foreign_secret(existing, holder),
            ApplyError::Api(source) => Error::ReadSecret {
                name: name.clone(),
                source,
            },
        })?;
    if in_place {
        let version = current.and_then(|current| current.resource_version());
        return Ok(SecretWrite::Unchanged(version));
    }
    let applied = api
        .patch(&name, &crate::apply::apply_params(), &Patch::Apply(secret))
        .await
        .map_err(|source| Error::WriteSecret { name, source })?;
    ctx.applied_digests.remember(owner.uid, secret, &applied);
    Ok(SecretWrite::Written(applied.resource_version()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::DesiredState;

    /// Every Secret written with the PKI is read back with it; one left out looks
    /// absent on every pass, is created again, conflicts, and stalls the chain there.
    #[test]
    fn every_pki_secret_written_is_read_back() {
        use crate::resources::test_support::{default_vc, observed, pki};
        let desired = DesiredState::build(
            &default_vc(),
            &crate::resources::BuildContext::default(),
            &observed(),
            pki(),
        )
        .unwrap();
        let read = pki_secret_names(&default_vc().name_any());
        for secret in &desired.pki_secrets {
            assert!(
                read.contains(&secret.name_any()),
                "{} is written but never read back",
                secret.name_any()
            );
        }
    }
}
