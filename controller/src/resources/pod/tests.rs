//! Tests of what every control-plane pod shares.

use std::collections::BTreeMap;

use pretty_assertions::assert_eq;

use crate::resources::test_support::*;
use crate::resources::*;

#[test]
fn control_plane_pods_spread_request_resources_and_skip_service_links() {
    let state = build(&default_vc());
    let etcd_pod = etcd_pod_spec(&state);
    let pods = [
        etcd_pod,
        pod_spec(&state.apiserver_deployment),
        pod_spec(&state.controller_manager),
        pod_spec(&state.scheduler),
    ];
    for pod in pods {
        assert_eq!(pod.enable_service_links, Some(false));
        let requests = container(pod)
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap();
        assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
        let spread = pod
            .affinity
            .as_ref()
            .unwrap()
            .pod_anti_affinity
            .as_ref()
            .unwrap()
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap();
        let term = &spread[0].pod_affinity_term;
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        let own_labels = &pod_labels_of(pod, &state);
        assert_eq!(
            term.label_selector.as_ref().unwrap().match_labels.as_ref(),
            Some(own_labels)
        );
    }
}

/// An operator who keeps control planes on dedicated host nodes gets every pod that runs
/// with tenant or host credentials there: etcd, apiserver, controller-manager, scheduler
/// and the clustertree; nothing when the flag is empty.
#[test]
fn control_plane_pods_follow_the_operators_node_selector() {
    let selector = BTreeMap::from([("node-role.kubernetes.io/infra".to_owned(), String::new())]);
    let ctx = BuildContext {
        control_plane_node_selector: selector.clone(),
        ..BuildContext::default()
    };
    let state = DesiredState::build(&default_vc(), &ctx, &observed(), pki()).unwrap();
    let etcd = state.etcd.stateful_set.spec.as_ref().unwrap();
    let etcd_pod = etcd.template.spec.as_ref().unwrap();
    let pods = [
        ("etcd", etcd_pod),
        ("apiserver", pod_spec(&state.apiserver_deployment)),
        ("controller-manager", pod_spec(&state.controller_manager)),
        ("scheduler", pod_spec(&state.scheduler)),
        ("clustertree", pod_spec(&state.clustertree.deployment)),
    ];
    for (component, pod) in pods {
        assert_eq!(pod.node_selector.as_ref(), Some(&selector), "{component}");
    }
    let unset = build(&default_vc());
    assert_eq!(pod_spec(&unset.apiserver_deployment).node_selector, None);
}
