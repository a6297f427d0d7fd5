//! The status the chain's reports add up to: written only when it changed, with the
//! Events its changes call for, and when to look again.

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use vc_api::condition_types::{
    CLAIMED_NODES_DRAINED, CLUSTER_TREE_READY, CONTROL_PLANE_READY, DNS_READY, NODES_PROMOTED,
    READY,
};
use vc_api::{Phase, VirtualCluster, VirtualClusterStatus};

use super::control_plane::ControlPlaneReport;
use super::events::{Changes, event, object_key, status_message};
use super::eviction::blocked_message;
use super::kubeconfig::KubeconfigReport;
use super::promotion::Promotion;
use crate::claims::ClaimReport;
use crate::context::Context;
use crate::error::{Error, Result, Step};
use crate::eviction::EvictionReport;
use crate::pki::CaNotices;
use crate::rollout::is_rolling;
use crate::status::{DesiredCondition, Progress, compute_phase, needs_write, set_condition};

/// Reason of the Ready condition while an object the tenant needs is someone else's.
pub(super) const FOREIGN_OBJECT_REASON: &str = "ObjectNotOurs";

/// The reports of the chain the status is computed from.
#[derive(Debug)]
pub(super) struct Outcome<'a> {
    pub(super) claims: &'a ClaimReport,
    /// With `--claimed-node-pods=evict`, this pass's evictions.
    pub(super) eviction: Option<&'a EvictionReport>,
    pub(super) control_plane: &'a ControlPlaneReport,
    pub(super) kubeconfig: &'a KubeconfigReport,
    /// Whether the clustertree is rolled out, or why applying it failed.
    pub(super) clustertree: &'a Result<bool>,
    pub(super) promotion: &'a Promotion,
    pub(super) ca_notices: &'a CaNotices,
    /// The tenant apiserver's external endpoint, once it has a cluster IP.
    pub(super) endpoint: Option<String>,
}

impl Outcome<'_> {
    /// The error a step after the kubeconfig ended with: the status still says how far
    /// the tenant got, and the reconcile fails after writing it.
    fn failure(&self) -> Option<&Error> {
        self.clustertree
            .as_ref()
            .err()
            .or_else(|| self.promotion.failure())
    }

    /// What the tenant waits for, when it waits after its control plane.
    fn waiting(&self) -> Option<String> {
        self.failure()
            .map(Error::report)
            .or_else(|| self.kubeconfig.waiting.clone())
    }
}

/// Writes the status when it changed, with the Warning Events that change calls for, then
/// publishes `changes`; returns the phase.
pub(super) async fn update_status(
    vc: &VirtualCluster,
    outcome: &Outcome<'_>,
    mut changes: Changes,
    ctx: &Context,
) -> Result<Option<Phase>> {
    let status = desired_status(vc, outcome, Timestamp::now());
    let phase = status.phase;
    let status_written = needs_write(vc.status.as_ref(), &status);
    if status_written {
        write_status(vc, &status, ctx).await?;
        if let Some(event) = crate::status::ca_expiry_event(vc.status.as_ref(), &status) {
            ctx.publish(vc, event).await;
        }
        if let Some((reason, message)) = outcome.claims.problem()
            && reason == "NodeConflict"
            && condition_changed(vc, NODES_PROMOTED, &status)
        {
            let warning = event(EventType::Warning, reason, Step::ClaimNodes, &message);
            ctx.publish(vc, warning).await;
        }
        if let Some(eviction) = outcome.eviction.filter(|report| report.pending())
            && condition_changed(vc, CLAIMED_NODES_DRAINED, &status)
        {
            let note = blocked_message(eviction);
            let warning = event(
                EventType::Warning,
                "EvictionBlocked",
                Step::ClaimNodes,
                &note,
            );
            ctx.publish(vc, warning).await;
        }
        if vc.status.as_ref().and_then(|status| status.phase) != phase {
            changes.record(
                "PhaseChanged",
                Step::Status,
                format!(
                    "phase is now {}",
                    phase.map(Phase::as_str).unwrap_or("unknown")
                ),
            );
        }
    }
    if status_written || !changes.is_empty() {
        ctx.reset_wait(&object_key(vc));
    }
    changes.publish(vc, ctx).await;
    Ok(phase)
}

/// When to reconcile again after a pass that reached `phase`. A tenant waiting only for
/// what the owned objects' watches report (a rollout, a cluster IP) is woken by them and
/// polled no sooner than a settled one; polling is for what only a look at the tenant shows.
pub(super) fn requeue(
    vc: &VirtualCluster,
    phase: Option<Phase>,
    waits_on_watches: bool,
    claims: &ClaimReport,
    eviction: Option<&EvictionReport>,
    ctx: &Context,
) -> Action {
    let key = object_key(vc);
    let next = if phase == Some(Phase::Completed) {
        ctx.reset_wait(&key);
        ctx.timing.resync
    } else if !claims.raced.is_empty() {
        ctx.timing.backoff_base
    } else if waits_on_watches {
        ctx.reset_wait(&key);
        ctx.timing.resync
    } else {
        ctx.next_wait(&key)
    };
    // A pod a disruption budget holds back is tried again with backoff, sooner than a
    // settled tenant's resync.
    let eviction_key = format!("{key}#eviction");
    let next = if eviction.is_some_and(EvictionReport::pending) {
        next.min(ctx.next_backoff(&eviction_key))
    } else {
        ctx.reset_backoff(&eviction_key);
        next
    };
    Action::requeue(next)
}

/// Writes the whole status with a merge patch; absent fields are written as null so a
/// stale message or endpoint never lingers.
pub(super) async fn write_status(
    vc: &VirtualCluster,
    status: &VirtualClusterStatus,
    ctx: &Context,
) -> Result<()> {
    let api: Api<VirtualCluster> =
        Api::namespaced(ctx.client.clone(), &vc.namespace().unwrap_or_default());
    let patch = json!({
        "status": {
            "phase": status.phase,
            "message": status.message,
            "conditions": status.conditions,
            "observedGeneration": status.observed_generation,
            "apiServerEndpoint": status.api_server_endpoint,
            "promotedNodes": if status.promoted_nodes.is_empty() { Value::Null } else { json!(status.promoted_nodes) },
            "adminKubeconfigRotation": status.admin_kubeconfig_rotation,
        }
    });
    api.patch_status(
        &vc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|source| Error::UpdateStatus { source })?;
    Ok(())
}

fn condition_changed(vc: &VirtualCluster, type_: &str, status: &VirtualClusterStatus) -> bool {
    let find = |status: Option<&VirtualClusterStatus>| {
        status
            .and_then(|status| {
                status
                    .conditions
                    .iter()
                    .find(|condition| condition.type_ == type_)
            })
            .map(|condition| {
                (
                    condition.status.clone(),
                    condition.reason.clone(),
                    condition.message.clone(),
                )
            })
    };
    find(vc.status.as_ref()) != find(Some(status))
}

/// The status for `outcome`, keeping condition timestamps that did not change.
fn desired_status(
    vc: &VirtualCluster,
    outcome: &Outcome<'_>,
    now: Timestamp,
) -> VirtualClusterStatus {
    let generation = vc.metadata.generation;
    let previous = vc.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    let (visible, dns) = outcome.promotion.shown();
    let held = &outcome.claims.held;
    let clustertree_ready = matches!(outcome.clustertree, Ok(true));
    let published = outcome.kubeconfig.published;
    let blocked = outcome.failure().and_then(Error::foreign_object);
    let nodes_visible = visible.len() == held.len();
    let dns_answers = matches!(dns, Some(Ok(())));
    let promotion_complete =
        outcome.claims.all_held() && clustertree_ready && nodes_visible && dns_answers;
    let progress = Progress {
        failed: false,
        provisioning_started: true,
        kubeconfig_published: published,
        promotion_complete,
        rolling: is_rolling(&outcome.control_plane.states),
    };
    let phase = compute_phase(progress, previous.phase);

    let control_plane = match outcome.control_plane.waiting_for() {
        None => DesiredCondition::new(
            CONTROL_PLANE_READY,
            true,
            "ControlPlaneReady",
            "etcd, kube-apiserver, kube-controller-manager and kube-scheduler are rolled out",
        ),
        Some(component) => DesiredCondition::new(
            CONTROL_PLANE_READY,
            false,
            "RollingOut",
            format!("waiting for {component} to roll out"),
        ),
    };
    let nodes = match outcome.claims.problem() {
        Some((reason, message)) => DesiredCondition::new(NODES_PROMOTED, false, reason, message),
        None if held.is_empty() => DesiredCondition::new(
            NODES_PROMOTED,
            true,
            "NoNodesRequested",
            "spec.promoteResources.nodes is empty",
        ),
        None if nodes_visible && published => DesiredCondition::new(
            NODES_PROMOTED,
            true,
            "NodesPromoted",
            format!("nodes {:?} are claimed and registered in the tenant", held),
        ),
        None => {
            let missing: Vec<&String> =
                held.iter().filter(|node| !visible.contains(node)).collect();
            DesiredCondition::new(
                NODES_PROMOTED,
                false,
                "Registering",
                format!("nodes {missing:?} are claimed; waiting for them to appear in the tenant"),
            )
        }
    };
    let clustertree = if clustertree_ready {
        DesiredCondition::new(
            CLUSTER_TREE_READY,
            true,
            "ClusterTreeReady",
            "the clustertree Deployment is rolled out",
        )
    } else if published {
        DesiredCondition::new(
            CLUSTER_TREE_READY,
            false,
            "RollingOut",
            "waiting for the clustertree Deployment to roll out",
        )
    } else {
        DesiredCondition::new(
            CLUSTER_TREE_READY,
            false,
            "WaitingForControlPlane",
            "the clustertree starts once the tenant apiserver answers",
        )
    };
    let dns_condition = match dns {
        Some(Ok(())) => DesiredCondition::new(
            DNS_READY,
            true,
            "DNSAnswering",
            "kube-system/kube-dns in the tenant has a ready endpoint",
        ),
        Some(Err(missing)) => {
            DesiredCondition::new(DNS_READY, false, "DNSNotReady", missing.to_string())
        }
        None => DesiredCondition::new(
            DNS_READY,
            false,
            "WaitingForControlPlane",
            "the tenant's DNS is checked once the tenant apiserver answers",
        ),
    };
    let message = if let Some(blocked) = &blocked {
        blocked.clone()
    } else if phase == Phase::Completed {
        "the tenant is ready".to_owned()
    } else if let Some((_, message)) = outcome.claims.problem() {
        message
    } else if let Some(component) = outcome.control_plane.waiting_for() {
        format!("waiting for {component} to roll out")
    } else if let Some(waiting) = outcome.waiting() {
        waiting
    } else if !clustertree_ready {
        "waiting for the clustertree to roll out".to_owned()
    } else if let Some(Err(missing)) = dns {
        format!("waiting for the tenant's DNS: {missing}")
    } else {
        nodes.message.clone()
    };
    let ready = if blocked.is_some() {
        DesiredCondition::new(READY, false, FOREIGN_OBJECT_REASON, message.clone())
    } else if phase == Phase::Completed {
        DesiredCondition::new(READY, true, "Ready", "the tenant is ready")
    } else {
        DesiredCondition::new(READY, false, phase.as_str(), message.clone())
    };
    let cas = crate::status::ca_condition(outcome.ca_notices);
    for condition in [control_plane, nodes, clustertree, dns_condition, ready, cas] {
        set_condition(&mut status.conditions, &condition, generation, now);
    }
    if let Some(eviction) = outcome.eviction {
        let drained = if eviction.pending() {
            DesiredCondition::new(
                CLAIMED_NODES_DRAINED,
                false,
                "EvictionBlocked",
                blocked_message(eviction),
            )
        } else {
            DesiredCondition::new(
                CLAIMED_NODES_DRAINED,
                true,
                "Drained",
                "no pod that must leave runs on a claimed node",
            )
        };
        set_condition(&mut status.conditions, &drained, generation, now);
    }
    status.phase = Some(phase);
    status.message = status_message(&message);
    status.observed_generation = generation;
    status.api_server_endpoint = outcome.endpoint.clone();
    status.promoted_nodes = visible.to_vec();
    status.admin_kubeconfig_rotation = outcome.kubeconfig.admin_rotation.clone();
    status
}
