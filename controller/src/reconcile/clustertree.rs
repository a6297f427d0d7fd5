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
    // Each object has its own type and watch store, so no loop can walk them.
    macro_rules! apply {
        ($store:expr, $object:expr, $kind:literal) => {
            apply_object(ctx, owner, $store, $object, $kind)
                .await?
                .written
        };
    }
    let mut written = false;
    written |= apply!(&stores.namespaces, &tree.namespace, "Namespace");
    written |= apply!(&stores.network_policies, policy, "NetworkPolicy");
    written |= apply!(
        &stores.resource_quotas,
        &tree.resource_quota,
        "ResourceQuota"
    );
    written |= apply!(
        &stores.service_accounts,
        &tree.service_account,
        "ServiceAccount"
    );
    written |= apply!(&stores.roles, &tree.virtual_cluster_reader, "Role");
    for binding in [&tree.virtual_cluster_reader_binding, &tree.role_binding] {
        written |= apply!(&stores.role_bindings, binding, "RoleBinding");
    }
    written |= apply!(&stores.cluster_roles, &tree.cluster_role, "ClusterRole");
    let role_binding = &tree.cluster_role_binding;
    written |= apply!(
        &stores.cluster_role_bindings,
        role_binding,
        "ClusterRoleBinding"
    );
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
