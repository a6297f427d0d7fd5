//! Where a host pod may run: pinned to the promoted node it was bound to, or anywhere
//! unclaimed for the pool, and never onto another tenant's claimed node.

use k8s_openapi::api::core::v1::{
    Affinity, Container, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use vc_api::constants::{
    CONTROL_PLANE_NODE_LABELS, NODE_CLAIM_TAINT_KEY, NODE_OWNER_NAME_LABEL, POOL_NODE_NAME,
    POOL_PRIORITY_CLASS,
};

/// What a pool container requests when it names neither a request nor a limit for a
/// resource the pool quota bounds. The quota admits only pods that request what it
/// counts, and a tenant pod without requests is BestEffort, which the tenant's scheduler
/// places on the pool freely: without a default, `kubectl run` in the pool would be
/// refused by the host.
pub const POOL_DEFAULT_REQUESTS: [(&str, &str); 2] = [("cpu", "100m"), ("memory", "128Mi")];

/// The host PriorityClass of a pod bound to `node`: the pool's for a pool pod (each
/// tenant's pool ResourceQuota counts only that class), none on a promoted node. The
/// tenant's own class never reaches the host: host priorities are the host's business.
pub(super) fn priority_class(node: &str) -> Option<String> {
    (node == POOL_NODE_NAME).then(|| POOL_PRIORITY_CLASS.to_owned())
}

/// A pool container with [`POOL_DEFAULT_REQUESTS`] filled in where it names neither a
/// request nor a limit (a limit alone already becomes the request on the host).
pub(super) fn with_pool_requests(mut container: Container) -> Container {
    let resources = container
        .resources
        .get_or_insert_with(ResourceRequirements::default);
    for (resource, quantity) in POOL_DEFAULT_REQUESTS {
        let limited = resources
            .limits
            .as_ref()
            .is_some_and(|limits| limits.contains_key(resource));
        let requests = resources.requests.get_or_insert_with(Default::default);
        if !limited && !requests.contains_key(resource) {
            requests.insert(resource.to_owned(), Quantity(quantity.to_owned()));
        }
    }
    container
}

/// Where the host scheduler may put the pod: exactly the promoted node, or (for the
/// pool) any worker no tenant claimed and no control-plane node.
pub(super) fn placement(node: &str) -> Affinity {
    let term = if node == POOL_NODE_NAME {
        let absent = |key: &str| NodeSelectorRequirement {
            key: key.to_owned(),
            operator: "DoesNotExist".to_owned(),
            values: None,
        };
        NodeSelectorTerm {
            match_expressions: Some(
                std::iter::once(NODE_OWNER_NAME_LABEL)
                    .chain(CONTROL_PLANE_NODE_LABELS)
                    .map(absent)
                    .collect(),
            ),
            match_fields: None,
        }
    } else {
        NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".to_owned(),
                operator: "In".to_owned(),
                values: Some(vec![node.to_owned()]),
            }]),
        }
    };
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![term],
            }),
            preferred_during_scheduling_ignored_during_execution: None,
        }),
        pod_affinity: None,
        pod_anti_affinity: None,
    }
}

/// The tenant's tolerations, less any that would let the pod onto a node another tenant
/// claimed, plus, on a promoted node, exactly this tenant's claim.
pub(super) fn tolerations(
    tenant: &[Toleration],
    node: &str,
    virtual_cluster: &str,
) -> Vec<Toleration> {
    let mut kept: Vec<Toleration> = tenant
        .iter()
        .filter(|t| {
            let key = t.key.as_deref().unwrap_or_default();
            let everything = key.is_empty() && t.operator.as_deref() == Some("Exists");
            key != NODE_CLAIM_TAINT_KEY && !everything
        })
        .cloned()
        .collect();
    if node != POOL_NODE_NAME {
        kept.push(Toleration {
            key: Some(NODE_CLAIM_TAINT_KEY.to_owned()),
            operator: Some("Equal".to_owned()),
            value: Some(virtual_cluster.to_owned()),
            effect: Some("NoSchedule".to_owned()),
            toleration_seconds: None,
        });
    }
    kept
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::pods::host_pod;
    use crate::pods::test_support::{pod, tenancy};

    #[test]
    fn a_pod_on_a_promoted_node_is_pinned_there_and_tolerates_only_this_claim() {
        let host = host_pod(&pod("web-1", "u1", "node1"), &tenancy()).unwrap();
        let spec = host.pod.spec.clone().unwrap();
        assert_eq!(
            spec.node_name, None,
            "nodeName would bypass the host's taints"
        );
        let term = &spec
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms[0];
        let fields = term.match_fields.clone().unwrap();
        assert_eq!(fields[0].key, "metadata.name");
        assert_eq!(fields[0].values, Some(vec!["node1".to_owned()]));
        let tolerations = spec.tolerations.unwrap();
        let keys: Vec<(Option<String>, Option<String>)> = tolerations
            .iter()
            .map(|t| (t.key.clone(), t.value.clone()))
            .collect();
        assert_eq!(
            keys,
            [
                (Some("node.kubernetes.io/not-ready".to_owned()), None),
                (
                    Some(NODE_CLAIM_TAINT_KEY.to_owned()),
                    Some("tenant1".to_owned())
                ),
            ]
        );
        assert_eq!(tolerations[1].operator.as_deref(), Some("Equal"));
        assert_eq!(tolerations[1].effect.as_deref(), Some("NoSchedule"));
    }

    #[test]
    fn only_pool_pods_get_the_pool_class_and_default_requests() {
        let mut tenant = pod("web-1", "u1", POOL_NODE_NAME);
        let spec = tenant.spec.as_mut().unwrap();
        spec.priority_class_name = Some("tenant-critical".to_owned());
        spec.containers[0].resources = Some(ResourceRequirements {
            requests: Some([("cpu".to_owned(), Quantity("2".to_owned()))].into()),
            limits: Some([("memory".to_owned(), Quantity("64Mi".to_owned()))].into()),
            ..ResourceRequirements::default()
        });
        let host = host_pod(&tenant, &tenancy()).unwrap().pod.spec.unwrap();
        assert_eq!(
            host.priority_class_name.as_deref(),
            Some(POOL_PRIORITY_CLASS)
        );
        assert_eq!(
            host.priority, None,
            "the host's Priority admission fills it in"
        );
        let resources = host.containers[0].resources.clone().unwrap();
        assert_eq!(
            resources.requests,
            Some([("cpu".to_owned(), Quantity("2".to_owned()))].into()),
            "a named request stays, a limit alone is not given a default request"
        );

        let bare = host_pod(&pod("web-2", "u2", POOL_NODE_NAME), &tenancy()).unwrap();
        let requests = bare.pod.spec.unwrap().containers[0]
            .resources
            .clone()
            .unwrap()
            .requests
            .unwrap();
        assert_eq!(requests["cpu"].0, "100m");
        assert_eq!(requests["memory"].0, "128Mi");

        let mut pinned = pod("web-3", "u3", "node1");
        pinned.spec.as_mut().unwrap().priority_class_name = Some("tenant-critical".to_owned());
        pinned.spec.as_mut().unwrap().containers[0].resources = None;
        let pinned = host_pod(&pinned, &tenancy()).unwrap().pod.spec.unwrap();
        assert_eq!(pinned.priority_class_name, None);
        assert_eq!(
            pinned.containers[0].resources, None,
            "a promoted node's pods are not the pool quota's"
        );
    }

    #[test]
    fn a_pool_pod_avoids_claimed_and_control_plane_nodes_and_has_no_claim_toleration() {
        let host = host_pod(&pod("web-1", "u1", POOL_NODE_NAME), &tenancy()).unwrap();
        let spec = host.pod.spec.unwrap();
        let term = &spec
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms[0];
        let absent: Vec<(String, String)> = term
            .match_expressions
            .clone()
            .unwrap()
            .into_iter()
            .map(|r| (r.key, r.operator))
            .collect();
        assert_eq!(
            absent,
            [
                (NODE_OWNER_NAME_LABEL.to_owned(), "DoesNotExist".to_owned()),
                (
                    CONTROL_PLANE_NODE_LABELS[0].to_owned(),
                    "DoesNotExist".to_owned()
                ),
                (
                    CONTROL_PLANE_NODE_LABELS[1].to_owned(),
                    "DoesNotExist".to_owned()
                ),
            ]
        );
        assert!(term.match_fields.is_none());
        assert!(
            spec.tolerations
                .unwrap()
                .iter()
                .all(|t| t.key.as_deref() != Some(NODE_CLAIM_TAINT_KEY))
        );
    }
}
