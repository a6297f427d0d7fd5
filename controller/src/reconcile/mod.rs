//! The reconcile chain of one VirtualCluster, a module per step in chain order:
//! dereference and validate the tenant, claim its nodes (and evict what must leave
//! them), apply its Services, plan its PKI, build every object, store the PKI, apply the
//! control plane, reach the tenant and publish its kubeconfig, apply the clustertree,
//! read what the tenant shows, update the status. [`cleanup`] undoes it on delete.
//!
//! Every step reads what exists (watch caches first), applies only what differs, and
//! returns a report the next step takes instead of waiting: a component that is not
//! ready yet makes the reconcile requeue, it never holds a worker.

pub mod claims;
pub mod cleanup;
mod clustertree;
mod control_plane;
mod events;
mod eviction;
mod failure;
mod finalizer;
pub mod kubeconfig;
pub mod objects;
pub mod pki;
mod promotion;
pub mod services;
mod status;
pub mod validate;

use kube::runtime::controller::Action;
use vc_api::VirtualCluster;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::resources::secrets::external_apiserver_url;

pub use failure::error_policy;
pub use finalizer::reconcile;

/// The Apply branch of the finalizer: every step in chain order, then the status.
async fn apply(vc: &VirtualCluster, ctx: &Context) -> Result<Action> {
    let tenant = validate::tenant(vc, ctx)?;
    let owner = &tenant.owner();
    let mut changes = events::Changes::default();
    let claims = claims::claim_nodes(vc, ctx, &mut changes).await?;
    let held = &claims.held;
    let eviction = eviction::evict_claimed_pods(&tenant, held, ctx, &mut changes).await?;
    let observed = services::apply_services(vc, &tenant, held, ctx, &mut changes).await?;
    let identity = validate::identity(&tenant, &observed, ctx)?;
    let pki = pki::plan_pki(&tenant, &identity, ctx).await?;
    let desired = validate::build(vc, &observed, &pki.material, ctx)?;
    let stored = pki::store_pki(&pki, &desired.pki_secrets, owner, ctx, &mut changes).await?;
    if stored == pki::Stored::CacheLagging {
        // Building on certificates that were not stored would roll every component.
        changes.publish(vc, ctx).await;
        return Ok(Action::requeue(ctx.timing.backoff_base));
    }
    let control_plane = control_plane::apply_control_plane(&desired, owner, ctx, &mut changes)
        .await
        .map_err(|source| Error::ApplyControlPlane { source })?;
    let reach = kubeconfig::reach_tenant(&tenant, &observed, &pki.material, &control_plane, ctx);
    let reach = reach.await?;
    let material = &pki.material;
    let kubeconfig =
        kubeconfig::publish_kubeconfig(vc, &tenant, material, &desired, &reach, ctx, &mut changes)
            .await?;
    let clustertree =
        clustertree::apply_clustertree(&desired, &kubeconfig, owner, ctx, &mut changes)
            .await
            .map_err(|source| Error::ApplyClustertree { source });
    let failed = clustertree.is_err();
    let promotion = promotion::read_tenant(vc, &kubeconfig, &reach, held, failed).await;
    let outcome = status::Outcome {
        claims: &claims,
        eviction: eviction.as_ref(),
        control_plane: &control_plane,
        kubeconfig: &kubeconfig,
        clustertree: &clustertree,
        promotion: &promotion,
        ca_notices: &pki.ca_notices,
        endpoint: (observed.apiserver_cluster_ip)
            .map(|_| external_apiserver_url(&tenant, &observed)),
    };
    // Only the tenant's answers are not watched: its readiness, then its nodes and DNS
    // once the clustertree runs.
    let waits_on_watches = match &reach {
        kubeconfig::Reach::NoClusterIp | kubeconfig::Reach::Rolling => true,
        kubeconfig::Reach::NotReady(_) => false,
        kubeconfig::Reach::Ready { .. } => matches!(clustertree, Ok(false)),
    };
    let phase = status::update_status(vc, &outcome, changes, ctx).await?;
    if phase == Some(vc_api::Phase::Completed) {
        // Next looked at on resync, long after its connection would idle out: its TLS
        // buffers are freed now, not held for every settled tenant.
        ctx.tenants.forget(&tenant.uid);
    }
    // Once the kubeconfig is out, the status says so even when a later step failed;
    // that failure ends the reconcile after it.
    clustertree?;
    promotion.into_result()?;
    let requeue = status::requeue(vc, phase, waits_on_watches, &claims, eviction.as_ref(), ctx);
    Ok(requeue)
}
