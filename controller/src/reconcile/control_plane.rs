//! The control plane's NetworkPolicies, then etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler in rollout order.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;

use super::events::Changes;
use super::objects::{ObjectError, apply_object, cached, note_written};
use crate::apply::up_to_date;
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
    let mut policies_written = false;
    for policy in &desired.network_policies.control_plane {
        let store = &ctx.stores.network_policies;
        policies_written |= apply_object(ctx, owner, store, policy, "NetworkPolicy")
            .await?
            .written;
    }
    if policies_written {
        changes.record(
            "NetworkPoliciesApplied",
            Step::ControlPlane,
            "applied the control plane's NetworkPolicies",
        );
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
    let deployment_state =
        |component, desired: &Deployment, existing: &Option<Arc<Deployment>>| ComponentState {
            component,
            up_to_date: up_to_date(desired, existing.as_deref()),
            rolled_out: existing.as_deref().is_some_and(deployment_rolled_out),
        };
    let states = vec![
        ComponentState {
            component: Component::Etcd,
            up_to_date: up_to_date(&desired.etcd.stateful_set, etcd_existing.as_deref()),
            rolled_out: etcd_existing.as_deref().is_some_and(statefulset_rolled_out),
        },
        deployment_state(
            Component::Apiserver,
            &desired.apiserver_deployment,
            &apiserver_existing,
        ),
        deployment_state(
            Component::ControllerManager,
            &desired.controller_manager,
            &controller_manager_existing,
        ),
        deployment_state(
            Component::Scheduler,
            &desired.scheduler,
            &scheduler_existing,
        ),
    ];
    for component in components_to_apply(&states) {
        apply_component(component, desired, owner, ctx, changes).await?;
    }
    Ok(ControlPlaneReport {
        apiserver_rolled_out: apiserver_existing
            .as_deref()
            .is_some_and(deployment_rolled_out),
        states,
    })
}

async fn apply_component(
    component: Component,
    desired: &DesiredState,
    owner: &Owner<'_>,
    ctx: &Context,
    changes: &mut Changes,
) -> Result<(), ObjectError> {
    let deployments = &ctx.stores.deployments;
    match component {
        Component::Etcd => {
            let store = &ctx.stores.stateful_sets;
            let stateful_set = &desired.etcd.stateful_set;
            let applied = apply_object(ctx, owner, store, stateful_set, "StatefulSet").await?;
            let what = "the etcd StatefulSet".to_owned();
            note_written(&applied, changes, "EtcdApplied", Step::ControlPlane, what);
        }
        Component::Apiserver => {
            let object = &desired.apiserver_deployment;
            let applied = apply_object(ctx, owner, deployments, object, "Deployment").await?;
            let what = "the kube-apiserver Deployment".to_owned();
            note_written(
                &applied,
                changes,
                "ApiserverApplied",
                Step::ControlPlane,
                what,
            );
        }
        Component::ControllerManager | Component::Scheduler => {
            let object = if component == Component::ControllerManager {
                &desired.controller_manager
            } else {
                &desired.scheduler
            };
            let applied = apply_object(ctx, owner, deployments, object, "Deployment").await?;
            let what = format!("Deployment {}", object.name_any());
            note_written(
                &applied,
                changes,
                "ControlPlaneApplied",
                Step::ControlPlane,
                what,
            );
        }
    }
    Ok(())
}
