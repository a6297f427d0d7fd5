//! The clustertree, its host credential and the tenant's workload namespace, once the
//! tenant's kubeconfig is out.

use futures::TryFutureExt;

use super::events::Changes;
use super::kubeconfig::KubeconfigReport;
use super::objects::{ObjectError, apply_object};
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
    // Each object has its own type and watch store, so no loop can walk them. The
    // namespace goes first, the roles before their bindings (binding a role the controller
    // does not hold is checked against the role's rules, so the role must exist), each
    // batch at once; every request of a batch is answered before an error ends the step,
    // so no write is cut off in flight.
    macro_rules! apply {
        ($store:expr, $object:expr, $kind:literal) => {
            apply_object(ctx, owner, $store, $object, $kind).map_ok(|applied| applied.written)
        };
    }
    let namespace = apply!(&stores.namespaces, &tree.namespace, "Namespace").await?;
    let (policy, quota, account, reader, role) = futures::join!(
        apply!(&stores.network_policies, policy, "NetworkPolicy"),
        apply!(
            &stores.resource_quotas,
            &tree.resource_quota,
            "ResourceQuota"
        ),
        apply!(
            &stores.service_accounts,
            &tree.service_account,
            "ServiceAccount"
        ),
        apply!(&stores.roles, &tree.virtual_cluster_reader, "Role"),
        apply!(&stores.cluster_roles, &tree.cluster_role, "ClusterRole"),
    );
    let first = [namespace, policy?, quota?, account?, reader?, role?];
    let cluster_binding = &tree.cluster_role_binding;
    let (reader_binding, binding, cluster_binding) = futures::join!(
        apply!(
            &stores.role_bindings,
            &tree.virtual_cluster_reader_binding,
            "RoleBinding"
        ),
        apply!(&stores.role_bindings, &tree.role_binding, "RoleBinding"),
        apply!(
            &stores.cluster_role_bindings,
            cluster_binding,
            "ClusterRoleBinding"
        ),
    );
    let bindings = [reader_binding?, binding?, cluster_binding?];
    let written = first.into_iter().chain(bindings).any(|written| written);
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
    // Not written: the copy it was judged in place by tells whether it rolled out.
    Ok(!deployment.written
        && deployment
            .object
            .as_ref()
            .is_some_and(deployment_rolled_out))
}
