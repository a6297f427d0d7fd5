//! The Cleanup branch of the finalizer: release the claimed nodes, remove the
//! cluster-scoped objects and the etcd volumes. Other namespaced objects go by
//! ownerReference garbage collection.

use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim};
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use vc_api::constants::{NODE_OWNER_NAME_LABEL, NODE_OWNER_NAMESPACE_LABEL};
use vc_api::{Phase, VirtualCluster};

use super::claims::{claimant, release_node};
use super::events::{Changes, object_key};
use super::objects::cached;
use super::status::write_status;
use crate::claims::{Claimant, should_release};
use crate::context::Context;
use crate::error::{Step, is_conflict, is_not_found};
use crate::ownership::{Holder, Owner, holder};
use crate::resources::names;

/// Why the tenant could not be cleaned up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The nodes claimed for the tenant could not be listed.
    #[error("failed to list the nodes labelled {selector}")]
    ListClaimedNodes {
        /// The label selector.
        selector: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// A claimed node could not be released.
    #[error(transparent)]
    Release(#[from] super::claims::Error),

    /// The tenant's etcd claims could not be listed.
    #[error("failed to list the etcd volume claims labelled {selector}")]
    ListVolumeClaims {
        /// The label selector.
        selector: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// One of the tenant's etcd claims could not be deleted.
    #[error("failed to delete etcd volume claim {claim:?}")]
    DeleteVolumeClaim {
        /// Name of the claim.
        claim: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// A cluster-scoped object could not be read or deleted.
    #[error("failed to delete {kind} {name:?}")]
    DeleteClusterScoped {
        /// Kind of the object.
        kind: &'static str,
        /// Name of the object.
        name: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
}

/// Releases, removes and deletes everything of the tenant no ownerReference takes.
pub(super) async fn cleanup(vc: &VirtualCluster, ctx: &Context) -> Result<Action, Error> {
    let claimant = claimant(vc);
    let mut changes = Changes::default();
    if vc.status.as_ref().and_then(|status| status.phase) != Some(Phase::Deleting) {
        let mut status = vc.status.clone().unwrap_or_default();
        status.phase = Some(Phase::Deleting);
        status.message = Some("releasing nodes and removing the tenant".to_owned());
        if let Err(error) = write_status(vc, &status, ctx).await {
            tracing::debug!(%error, "could not mark the VirtualCluster as Deleting");
        }
    }
    // A fresh list, not the cache: a claim written a moment ago must not leak.
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let selector = format!(
        "{NODE_OWNER_NAMESPACE_LABEL}={},{NODE_OWNER_NAME_LABEL}={}",
        claimant.namespace, claimant.name
    );
    let claimed = nodes
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::ListClaimedNodes {
            selector: selector.clone(),
            source,
        })?;
    for node in claimed
        .items
        .iter()
        .filter(|node| should_release(node, &claimant))
    {
        release_node(&nodes, node, &mut changes).await?;
    }
    let owner = &Owner {
        namespace: &claimant.namespace,
        name: &claimant.name,
        uid: &claimant.uid,
    };
    let tenant_namespace =
        vc_api::constants::tenant_workload_namespace(&claimant.namespace, &claimant.name);
    let role_name = names::clustertree_cluster_role(&claimant.namespace, &claimant.name);
    delete_cluster_scoped::<k8s_openapi::api::core::v1::Namespace>(
        ctx,
        owner,
        "Namespace",
        &tenant_namespace,
    )
    .await?;
    delete_cluster_scoped::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(
        ctx,
        owner,
        "ClusterRoleBinding",
        &role_name,
    )
    .await?;
    delete_cluster_scoped::<k8s_openapi::api::rbac::v1::ClusterRole>(
        ctx,
        owner,
        "ClusterRole",
        &role_name,
    )
    .await?;
    delete_etcd_claims(vc, &claimant, ctx).await?;
    ctx.forget_tenant(&object_key(vc), &claimant.uid);
    changes.record(
        "Cleaned",
        Step::Cleanup,
        "released every claimed node and removed the cluster-scoped objects and etcd volumes",
    );
    changes.publish(vc, ctx).await;
    Ok(Action::await_change())
}

/// Asks for the deletion of every etcd claim that is provably this tenant's. It does not
/// wait for them to vanish: the running etcd pods hold them (`pvc-protection`) until
/// garbage collection removes the StatefulSet after the finalizer is gone, and a claim
/// being deleted is never bound by a StatefulSet created later under the same name.
async fn delete_etcd_claims(
    vc: &VirtualCluster,
    claimant: &Claimant,
    ctx: &Context,
) -> Result<(), Error> {
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &claimant.namespace);
    let selector = crate::volumes::etcd_claim_selector(&claimant.name);
    let listed = claims
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::ListVolumeClaims {
            selector: selector.clone(),
            source,
        })?;
    let stateful_set_uid = cached(
        &ctx.stores.stateful_sets,
        Some(&claimant.namespace),
        &names::etcd(&claimant.name),
    )
    .and_then(|set| crate::volumes::owned_stateful_set_uid(&set, &claimant.uid));
    for claim in listed.items.iter().filter(|claim| {
        claim.metadata.deletion_timestamp.is_none()
            && crate::volumes::is_tenant_etcd_claim(
                claim,
                &claimant.name,
                stateful_set_uid.as_deref(),
            )
    }) {
        let name = claim.name_any();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: claim.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match claims.delete(&name, &params).await {
            Ok(_) => {
                tracing::info!(virtualcluster = %object_key(vc), claim = %name, "deleting etcd volume claim")
            }
            // Gone, or replaced by an object that is not the one judged ours.
            Err(error) if is_not_found(&error) || is_conflict(&error) => {}
            Err(source) => {
                return Err(Error::DeleteVolumeClaim {
                    claim: name,
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Deletes a cluster-scoped object of the tenant only when it is ours, and only that
/// very object (a UID precondition): an object of the same name someone else created, or
/// created again after our read, survives the tenant.
async fn delete_cluster_scoped<K>(
    ctx: &Context,
    owner: &Owner<'_>,
    kind: &'static str,
    name: &str,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::all(ctx.client.clone());
    let failed = |source| Error::DeleteClusterScoped {
        kind,
        name: name.to_owned(),
        source,
    };
    let Some(existing) = api.get_opt(name).await.map_err(failed)? else {
        return Ok(());
    };
    if let Holder::Other(holder) = holder(existing.meta(), owner) {
        tracing::warn!(kind, name, %holder, "left in place on cleanup: not this VirtualCluster's");
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: existing.meta().uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(error) if is_not_found(&error) || is_conflict(&error) => Ok(()),
        Err(source) => Err(failed(source)),
    }
}
