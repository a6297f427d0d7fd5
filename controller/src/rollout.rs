//! Ordering of control-plane rollouts: etcd first, then the apiserver, then
//! controller-manager and scheduler. A tier is applied only when every earlier tier runs
//! the desired spec and has finished rolling out, so a version bump never runs a newer
//! apiserver against an etcd still restarting, nor a newer controller-manager against an
//! older apiserver. A control plane of which nothing exists yet is applied whole: nothing
//! runs that a newer tier could meet at an older version, and each component retries its
//! upstream until it answers, as kubeadm's static pods start together.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};

/// Components of the tenant control plane, in rollout order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// The etcd StatefulSet.
    Etcd,
    /// The kube-apiserver Deployment.
    Apiserver,
    /// kube-controller-manager.
    ControllerManager,
    /// kube-scheduler.
    Scheduler,
}

impl Component {
    /// Position in the rollout: components of one tier roll together.
    pub fn tier(self) -> u8 {
        match self {
            Component::Etcd => 0,
            Component::Apiserver => 1,
            Component::ControllerManager | Component::Scheduler => 2,
        }
    }
}

/// What the reconciler knows about one component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComponentState {
    /// Which component.
    pub component: Component,
    /// Its object exists.
    pub exists: bool,
    /// The existing object already carries the desired spec.
    pub up_to_date: bool,
    /// The existing object's controller has observed it and all replicas are updated and ready.
    pub rolled_out: bool,
}

impl ComponentState {
    fn settled(&self) -> bool {
        self.up_to_date && self.rolled_out
    }
}

/// Which components may be applied now: those whose earlier tiers are all settled, or
/// every one when none exists yet. A component that is itself up to date needs no apply
/// and is left out.
pub fn components_to_apply(states: &[ComponentState]) -> Vec<Component> {
    if states.iter().all(|state| !state.exists) {
        return states.iter().map(|state| state.component).collect();
    }
    let blocking_tier = states
        .iter()
        .filter(|state| !state.settled())
        .map(|state| state.component.tier())
        .min();
    states
        .iter()
        .filter(|state| !state.up_to_date)
        .filter(|state| blocking_tier.is_none_or(|tier| state.component.tier() <= tier))
        .map(|state| state.component)
        .collect()
}

/// Whether any component is not settled: the control plane is changing.
pub fn is_rolling(states: &[ComponentState]) -> bool {
    states.iter().any(|state| !state.settled())
}

/// Whether a StatefulSet's controller has caught up and every replica is updated and ready.
pub fn statefulset_rolled_out(set: &StatefulSet) -> bool {
    let desired = set
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1);
    let Some(status) = set.status.as_ref() else {
        return false;
    };
    let observed = status.observed_generation.unwrap_or_default();
    let revision_current = match (&status.current_revision, &status.update_revision) {
        (Some(current), Some(update)) => current == update,
        _ => true,
    };
    observed >= set.metadata.generation.unwrap_or_default()
        && status.updated_replicas.unwrap_or_default() >= desired
        && status.ready_replicas.unwrap_or_default() >= desired
        && revision_current
}

/// Whether a Deployment's controller has caught up and every replica is updated and available.
pub fn deployment_rolled_out(deployment: &Deployment) -> bool {
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1);
    let Some(status) = deployment.status.as_ref() else {
        return false;
    };
    status.observed_generation.unwrap_or_default()
        >= deployment.metadata.generation.unwrap_or_default()
        && status.updated_replicas.unwrap_or_default() >= desired
        && status.ready_replicas.unwrap_or_default() >= desired
        && status.replicas.unwrap_or_default() <= desired
}

#[cfg(test)]
mod tests {
    use super::*;
    use Component::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use kube::api::ObjectMeta;

    fn state(component: Component, up_to_date: bool, rolled_out: bool) -> ComponentState {
        ComponentState {
            component,
            exists: up_to_date || rolled_out,
            up_to_date,
            rolled_out,
        }
    }

    #[test]
    fn fresh_control_plane_is_applied_whole() {
        let states = [
            state(Etcd, false, false),
            state(Apiserver, false, false),
            state(ControllerManager, false, false),
            state(Scheduler, false, false),
        ];
        assert_eq!(
            components_to_apply(&states),
            [Etcd, Apiserver, ControllerManager, Scheduler]
        );
        assert!(is_rolling(&states));
    }

    /// Once one component exists, the rest wait for its tier: an etcd recreated after
    /// its deletion holds back an apiserver that would otherwise be rolled with it.
    #[test]
    fn a_partly_existing_control_plane_keeps_the_order() {
        let mut etcd_only = [
            state(Etcd, true, false),
            state(Apiserver, false, false),
            state(ControllerManager, false, false),
            state(Scheduler, false, false),
        ];
        assert_eq!(components_to_apply(&etcd_only), Vec::<Component>::new());
        etcd_only[0] = ComponentState {
            exists: true,
            ..state(Etcd, false, false)
        };
        assert_eq!(components_to_apply(&etcd_only), [Etcd]);
    }

    #[test]
    fn version_bump_rolls_etcd_then_apiserver_then_the_rest() {
        // Bump: etcd's image follows its own flag and is already current; apiserver next.
        let bumped = [
            state(Etcd, true, true),
            state(Apiserver, false, true),
            state(ControllerManager, false, true),
            state(Scheduler, false, true),
        ];
        assert_eq!(components_to_apply(&bumped), [Apiserver]);
        // Apiserver applied but still rolling: controller-manager and scheduler wait.
        let apiserver_rolling = [
            state(Etcd, true, true),
            state(Apiserver, true, false),
            state(ControllerManager, false, true),
            state(Scheduler, false, true),
        ];
        assert_eq!(
            components_to_apply(&apiserver_rolling),
            Vec::<Component>::new()
        );
        let apiserver_done = [
            state(Etcd, true, true),
            state(Apiserver, true, true),
            state(ControllerManager, false, true),
            state(Scheduler, false, true),
        ];
        assert_eq!(
            components_to_apply(&apiserver_done),
            [ControllerManager, Scheduler]
        );
    }

    #[test]
    fn etcd_change_holds_the_apiserver_back() {
        let states = [
            state(Etcd, false, true),
            state(Apiserver, false, true),
            state(ControllerManager, true, true),
            state(Scheduler, true, true),
        ];
        assert_eq!(components_to_apply(&states), [Etcd]);
    }

    #[test]
    fn settled_control_plane_applies_nothing() {
        let states = [
            state(Etcd, true, true),
            state(Apiserver, true, true),
            state(ControllerManager, true, true),
            state(Scheduler, true, true),
        ];
        assert!(components_to_apply(&states).is_empty());
        assert!(!is_rolling(&states));
    }

    fn deployment(generation: i64, status: DeploymentStatus) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                ..DeploymentSpec::default()
            }),
            status: Some(status),
        }
    }

    #[test]
    fn deployment_rollout_needs_observed_generation_and_ready_replicas() {
        let done = DeploymentStatus {
            observed_generation: Some(3),
            replicas: Some(2),
            updated_replicas: Some(2),
            ready_replicas: Some(2),
            ..DeploymentStatus::default()
        };
        assert!(deployment_rolled_out(&deployment(3, done.clone())));
        assert!(!deployment_rolled_out(&deployment(4, done.clone())));
        let surging = DeploymentStatus {
            replicas: Some(3),
            ..done.clone()
        };
        assert!(!deployment_rolled_out(&deployment(3, surging)));
        let not_ready = DeploymentStatus {
            ready_replicas: Some(1),
            ..done
        };
        assert!(!deployment_rolled_out(&deployment(3, not_ready)));
        let no_status = Deployment {
            status: None,
            ..deployment(1, DeploymentStatus::default())
        };
        assert!(!deployment_rolled_out(&no_status));
    }
}
