//! The clustertree, its host credential and the tenant's workload namespace, once the
//! tenant's kubeconfig is out.

use kube::ResourceExt;

use super::events::Changes;
use super::kubeconfig::KubeconfigReport;
use super::objects::{ObjectError, apply_object, cached};
use crate::apply::up_to_date;
use crate::context::Context;
use crate::error::Step;
use crate::ownership::Owner;
use crate::resources::DesiredState;
use crate::rollout::deployment_rolled_out;

/// Applies every clustertree object; whether its Deployment is rolled out as desired.
pub(super) async fn apply_clustertree(
    desired: &DesiredState,
    kubeconfig: &KubeconfigReport,
    owner: &Owner<'_>,
    ctx: &Context,
    changes: &mut Changes,
) -> Result<bool, ObjectError> {
    if !kubeconfig.published {
        return Ok(false);
    }
    let objects = &desired.clustertree;
    let stores = &ctx.stores;
    let written = [
        apply_object(
            ctx,
            owner,
            &stores.namespaces,
            &objects.namespace,
            "Namespace",
        )
        .await?
        .written,
        apply_object(
            ctx,
            owner,
            &stores.network_policies,
            &desired.network_policies.workloads,
            "NetworkPolicy",
        )
        .await?
        .written,
        apply_object(
            ctx,
            owner,
            &stores.resource_quotas,
            &objects.resource_quota,
            "ResourceQuota",
        )
        .await?
        .written,
        apply_object(
            ctx,
            owner,
            &stores.service_accounts,
            &objects.service_account,
            "ServiceAccount",
        )
        .await?
        .written,
        apply_object(
            ctx,
            owner,
            &stores.roles,
            &objects.virtual_cluster_reader,
            "Role",
        )
        .await?
        .written,
        apply_object(
            ctx,
            owner,
            &stores.role_bindings,
            &objects.virtual_cluster_reader_binding,
            "RoleBinding",
        )
        .await?
        .written,
        apply_object(
            ctx,
            owner,
            &stores.role_bindings,
            &objects.role_binding,
            "RoleBinding",
        )
        .await?
        .written,
        apply_object(
            ctx,
            owner,
            &stores.cluster_roles,
            &objects.cluster_role,
            "ClusterRole",
        )
        .await?
        .written,
        apply_object(
            ctx,
            owner,
            &stores.cluster_role_bindings,
            &objects.cluster_role_binding,
            "ClusterRoleBinding",
        )
        .await?
        .written,
    ];
    let deployment = apply_object(
        ctx,
        owner,
        &stores.deployments,
        &objects.deployment,
        "Deployment",
    )
    .await?;
    if deployment.written || written.iter().any(|written| *written) {
        changes.record(
            "ClustertreeApplied",
            Step::Clustertree,
            "applied the clustertree and its host credential",
        );
    }
    let current = cached(
        &stores.deployments,
        objects.deployment.namespace().as_deref(),
        &objects.deployment.name_any(),
    );
    Ok(!deployment.written
        && current.as_deref().is_some_and(|deployment| {
            up_to_date(&objects.deployment, Some(deployment)) && deployment_rolled_out(deployment)
        }))
}
