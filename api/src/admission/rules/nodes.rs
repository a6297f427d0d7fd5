//! Promoted nodes: each exists, is no control-plane node, is listed once and belongs to
//! no other VirtualCluster.
//!
//! Only nodes the request adds are checked: a node admitted earlier that has since gone
//! NotReady must not block an unrelated update (or the controller's own writes).

use super::super::inventory::{Inventory, NodeView};
use super::{Change, Denial};

/// Refuses unsuitable or already owned nodes; warns about NotReady or cordoned ones.
/// Returns the added nodes as looked up, in order, for the pool rule to read again.
pub(super) fn check<'i>(
    change: &Change<'_>,
    inventory: &'i Inventory,
    warnings: &mut Vec<String>,
) -> Result<Vec<NodeView<'i>>, Denial> {
    check_listed_once(change)?;
    let mut added = Vec::with_capacity(change.added_nodes.len());
    for node in &change.added_nodes {
        let Some(facts) = inventory.node_view(node) else {
            return Err(Denial::invalid(format!(
                "node {node:?} does not exist in the host cluster; check the name with `kubectl get nodes`"
            )));
        };
        if facts.control_plane() {
            return Err(Denial::forbidden(format!(
                "node {node:?} is a control-plane node of the host and cannot be promoted into a VirtualCluster"
            )));
        }
        if let Some(owner) = inventory.other_owner_of_viewed(node, &facts, change.key) {
            return Err(Denial::forbidden(format!(
                "node {node:?} already belongs to VirtualCluster {owner}"
            )));
        }
        let mut problems = Vec::new();
        if !facts.ready() {
            problems.push("NotReady");
        }
        if facts.unschedulable() {
            problems.push("cordoned");
        }
        if !problems.is_empty() {
            warnings.push(format!(
                "node {node:?} is {}; it is promoted, but tenant workloads will not run on it until it is Ready and uncordoned",
                problems.join(" and ")
            ));
        }
        added.push(facts);
    }
    Ok(added)
}

/// The CRD declares the list a set, so the apiserver already refuses duplicates; this
/// keeps the rule true on servers that do not enforce list types.
fn check_listed_once(change: &Change<'_>) -> Result<(), Denial> {
    let nodes = &change.object.spec.promote_resources.nodes;
    match super::first_repeat(nodes) {
        Some(node) => Err(Denial::invalid(format!(
            "spec.promoteResources.nodes lists node {node:?} twice; list each node once"
        ))),
        None => Ok(()),
    }
}
