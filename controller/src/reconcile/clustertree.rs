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
    let (tree, stores) = (&desired.clustertree, &ctx.stores);
    let policy = &desired.network_policies.workloads;
    let mut written = false;
    written |= apply_object(ctx, owner, &stores.namespaces, &tree.namespace, "Namespace")
        .await?
        .written;
    written |= apply_object(
        ctx,
        owner,
        &stores.network_policies,
        policy,
        "NetworkPolicy",
    )
    .await?
    .written;
    let quota = &tree.resource_quota;
    written |= apply_object(ctx, owner, &stores.resource_quotas, quota, "ResourceQuota")
        .await?
        .written;
    let account = &tree.service_account;
    written |= apply_object(
        ctx,
        owner,
        &stores.service_accounts,
        account,
        "ServiceAccount",
    )
    .await?
    .written;
    let reader = &tree.virtual_cluster_reader;
    written |= apply_object(ctx, owner, &stores.roles, reader, "Role")
        .await?
        .written;
    for binding in [&tree.virtual_cluster_reader_binding, &tree.role_binding] {
        let store = &stores.role_bindings;
        written |= apply_object(ctx, owner, store, binding, "RoleBinding")
            .await?
            .written;
    }
    let role = &tree.cluster_role;
    written |= apply_object(ctx, owner, &stores.cluster_roles, role, "ClusterRole")
        .await?
        .written;
    let role_binding = &tree.cluster_role_binding;
    let store = &stores.cluster_role_bindings;
    written |= apply_object(ctx, owner, store, role_binding, "ClusterRoleBinding")
        .await?
        .written;
    let deployment = apply_object(
        ctx,
        owner,
        &stores.deployments,
        &tree.deployment,
        "Deployment",
    )
    .await?;
    if deployment.written || written {
        changes.record(
            "ClustertreeApplied",
            Step::Clustertree,
            "applied the clustertree and its host credential",
        );
    }
    let current = cached(
        &stores.deployments,
        tree.deployment.namespace().as_deref(),
        &tree.deployment.name_any(),
    );
    Ok(!deployment.written
        && current.as_deref().is_some_and(|deployment| {
            up_to_date(&tree.deployment, Some(deployment)) && deployment_rolled_out(deployment)
        }))
}
