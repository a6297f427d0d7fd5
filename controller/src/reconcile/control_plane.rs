//! The control plane's NetworkPolicies, then etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler in rollout order.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;

use super::events::Changes;
use super::objects::{ObjectError, all_answered, apply_object, cached, in_place};
use crate::context::Context;
use crate::error::Step;
use crate::ownership::Owner;
use crate::resources::DesiredState;
use crate::rollout::{
    Component, ComponentState, components_to_apply, deployment_rolled_out, statefulset_rolled_out,
};

/// What the control-plane step found.
#[derive(Debug)]
pub(super) struct ControlPlaneReport {
    /// Each component, in rollout order.
    pub(super) states: Vec<ComponentState>,
    /// Whether kube-apiserver's Deployment is rolled out.
    pub(super) apiserver_rolled_out: bool,
}

impl ControlPlaneReport {
    /// The first component not yet up to date and rolled out.
    pub(super) fn waiting_for(&self) -> Option<&'static str> {
        self.states
            .iter()
            .find(|state| !(state.up_to_date && state.rolled_out))
            .map(|state| match state.component {
                Component::Etcd => "etcd",
                Component::Apiserver => "kube-apiserver",
                Component::ControllerManager => "kube-controller-manager",
                Component::Scheduler => "kube-scheduler",
            })
    }
}

/// Applies the policies, then each component the rollout order lets through.
pub(super) async fn apply_control_plane(
    desired: &DesiredState,
    owner: &Owner<'_>,
    ctx: &Context,
    changes: &mut Changes,
) -> Result<ControlPlaneReport, ObjectError> {
    // Before any control-plane pod exists, so none is ever reachable unfenced.
    let store = &ctx.stores.network_policies;
    let policies = (desired.network_policies.control_plane.iter())
        .map(|policy| apply_object(ctx, owner, store, policy, "NetworkPolicy"));
    let policies_written = (all_answered(policies).await?)
        .iter()
        .any(|applied| applied.written);
    let mut applied: Vec<(&'static str, String)> = Vec::new();
    if policies_written {
        let what = "the control plane's NetworkPolicies".to_owned();
        applied.push(("NetworkPoliciesApplied", what));
    }
    let namespace = desired.etcd.stateful_set.namespace().unwrap_or_default();
    let ns = Some(namespace.as_str());
    let etcd_existing = cached(
        &ctx.stores.stateful_sets,
        ns,
        &desired.etcd.stateful_set.name_any(),
    );
    let deployment =
        |desired: &Deployment| cached(&ctx.stores.deployments, ns, &desired.name_any());
    let apiserver_existing = deployment(&desired.apiserver_deployment);
    let controller_manager_existing = deployment(&desired.controller_manager);
    let scheduler_existing = deployment(&desired.scheduler);
    let (etcd_in_place, apiserver_in_place, controller_manager_in_place, scheduler_in_place) = futures::try_join!(
        in_place(
            ctx,
            owner,
            &desired.etcd.stateful_set,
            etcd_existing.as_deref(),
            "StatefulSet"
        ),
        in_place(
            ctx,
            owner,
            &desired.apiserver_deployment,
            apiserver_existing.as_deref(),
            "Deployment"
        ),
        in_place(
            ctx,
            owner,
            &desired.controller_manager,
            controller_manager_existing.as_deref(),
            "Deployment"
        ),
        in_place(
            ctx,
            owner,
            &desired.scheduler,
            scheduler_existing.as_deref(),
            "Deployment"
        ),
    )?;
    let deployment_state =
        |component, up_to_date, existing: &Option<Arc<Deployment>>| ComponentState {
            component,
            exists: existing.is_some(),
            up_to_date,
            rolled_out: existing.as_deref().is_some_and(deployment_rolled_out),
        };
    let states = vec![
        ComponentState {
            component: Component::Etcd,
            exists: etcd_existing.is_some(),
            up_to_date: etcd_in_place,
            rolled_out: etcd_existing.as_deref().is_some_and(statefulset_rolled_out),
        },
        deployment_state(
            Component::Apiserver,
            apiserver_in_place,
            &apiserver_existing,
        ),
        deployment_state(
            Component::ControllerManager,
            controller_manager_in_place,
            &controller_manager_existing,
        ),
        deployment_state(
            Component::Scheduler,
            scheduler_in_place,
            &scheduler_existing,
        ),
    ];
    let applies = components_to_apply(&states)
        .into_iter()
        .map(|component| apply_component(component, desired, owner, ctx));
    applied.extend(all_answered(applies).await?.into_iter().flatten());
    record_applied(&applied, changes);
    Ok(ControlPlaneReport {
        apiserver_rolled_out: apiserver_existing
            .as_deref()
            .is_some_and(deployment_rolled_out),
        states,
    })
}

/// Applies one component; the reason and note of the Event when it wrote.
async fn apply_component(
    component: Component,
    desired: &DesiredState,
    owner: &Owner<'_>,
    ctx: &Context,
) -> Result<Option<(&'static str, String)>, ObjectError> {
    let deployments = &ctx.stores.deployments;
    let (written, reason, what) = match component {
        Component::Etcd => {
            let store = &ctx.stores.stateful_sets;
            let stateful_set = &desired.etcd.stateful_set;
            let applied = apply_object(ctx, owner, store, stateful_set, "StatefulSet").await?;
            (
                applied.written,
                "EtcdApplied",
                "the etcd StatefulSet".to_owned(),
            )
        }
        Component::Apiserver => {
            let object = &desired.apiserver_deployment;
            let applied = apply_object(ctx, owner, deployments, object, "Deployment").await?;
            let what = "the kube-apiserver Deployment".to_owned();
            (applied.written, "ApiserverApplied", what)
        }
        Component::ControllerManager | Component::Scheduler => {
            let object = if component == Component::ControllerManager {
                &desired.controller_manager
            } else {
                &desired.scheduler
            };
            let applied = apply_object(ctx, owner, deployments, object, "Deployment").await?;
            let what = format!("Deployment {}", object.name_any());
            (applied.written, "ControlPlaneApplied", what)
        }
    };
    Ok(written.then_some((reason, what)))
}

/// One Event for what the step applied: the object's own reason when it is one, else
/// `ControlPlaneApplied` naming each, so a fresh tenant's first pass is one Event, not five.
fn record_applied(applied: &[(&'static str, String)], changes: &mut Changes) {
    let reason = match applied {
        [] => return,
        [(reason, _)] => *reason,
        _ => "ControlPlaneApplied",
    };
    let what: Vec<&str> = applied.iter().map(|(_, what)| what.as_str()).collect();
    let note = format!("applied {}", what.join(", "));
    changes.record(reason, Step::ControlPlane, note);
}
