//! The objects the tests of every part start from, each built one way: a Node, the facts
//! the admission rules keep of a node, and a VirtualCluster. Behind the `testing` feature
//! (and in this crate's own tests), so the products never carry them.

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::admission::{NodeFacts, ResourceAmounts};
use crate::{ResourceQuantity, VirtualCluster, VirtualClusterSpec};

/// A Node called `name` with `labels` and nothing else: tests add the spec, status or
/// annotations their rule reads.
pub fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                labels
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: None,
        status: None,
    }
}

/// A node that can serve the shared pool: Ready, schedulable, no control-plane role,
/// claimed by nobody, with `allocatable` in milli-units (`("cpu", 4_000)` is 4 CPUs).
pub fn node_facts(name: &str, allocatable: &[(&str, i128)]) -> NodeFacts {
    NodeFacts {
        name: name.to_owned(),
        ready: true,
        unschedulable: false,
        control_plane: false,
        allocatable: ResourceAmounts::from_iter(allocatable.iter().copied()),
        claimed_by: None,
    }
}

/// A VirtualCluster `namespace/name` that promotes `nodes` and pools `resources`, with
/// every other field left for the defaults.
pub fn virtual_cluster(
    namespace: &str,
    name: &str,
    nodes: &[&str],
    resources: &[(&str, ResourceQuantity)],
) -> VirtualCluster {
    let mut cluster = VirtualCluster::new(name, VirtualClusterSpec::default());
    cluster.metadata.namespace = Some(namespace.to_owned());
    cluster.spec.promote_resources.nodes = nodes.iter().map(|node| (*node).to_owned()).collect();
    cluster.spec.promote_resources.resources = resources
        .iter()
        .map(|(resource, quantity)| ((*resource).to_owned(), quantity.clone()))
        .collect();
    cluster
}
