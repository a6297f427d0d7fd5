//! Capacity: per-tenant ceilings and the shared pool.
//!
//! An update is judged by what it adds: a cluster that is already over a limit (because
//! the pool shrank when nodes failed, or the admin lowered a ceiling) may still be edited
//! as long as the edit does not make things worse.

use std::collections::HashSet;

use super::super::inventory::{Inventory, NodeView};
use super::super::policy::Policy;
use super::super::quantity::format_amount;
use super::{Change, Denial, Pooled};
use crate::VirtualCluster;

/// Refuses a VirtualCluster above the admin's per-tenant and per-namespace limits.
pub(super) fn check_ceilings(
    change: &Change<'_>,
    inventory: &Inventory,
    policy: &Policy,
) -> Result<(), Denial> {
    check_node_count(change, policy)?;
    check_total(
        change,
        inventory,
        "cpu",
        policy.max_cpu_per_cluster,
        "--max-cpu-per-cluster",
    )?;
    check_total(
        change,
        inventory,
        "memory",
        policy.max_memory_per_cluster,
        "--max-memory-per-cluster",
    )?;
    check_namespace_count(change, inventory, policy)
}

fn distinct_nodes(object: &VirtualCluster) -> HashSet<&str> {
    object
        .spec
        .promote_resources
        .nodes
        .iter()
        .map(String::as_str)
        .collect()
}

fn check_node_count(change: &Change<'_>, policy: &Policy) -> Result<(), Denial> {
    let Some(limit) = policy.max_nodes_per_cluster else {
        return Ok(());
    };
    let count = distinct_nodes(change.object).len();
    let grew = change
        .old
        .is_none_or(|old| count > distinct_nodes(old).len());
    if count <= limit || !grew {
        return Ok(());
    }
    Err(Denial::forbidden(format!(
        "VirtualCluster {} lists {count} nodes, above the limit of {limit} per VirtualCluster (--max-nodes-per-cluster)",
        change.key
    )))
}

/// Pooled amount plus the allocatable of every promoted node the host knows.
fn total_of(
    object: &VirtualCluster,
    pooled: &Pooled<'_>,
    inventory: &Inventory,
    resource: &str,
) -> (i128, i128) {
    let from_nodes = distinct_nodes(object)
        .into_iter()
        .filter_map(|node| inventory.node_view(node))
        .map(|facts| facts.allocatable_of(resource))
        .sum();
    (pooled.get(resource), from_nodes)
}

fn check_total(
    change: &Change<'_>,
    inventory: &Inventory,
    resource: &str,
    limit: Option<i128>,
    flag: &str,
) -> Result<(), Denial> {
    let Some(limit) = limit else {
        return Ok(());
    };
    let (pooled, from_nodes) = total_of(change.object, &change.pooled, inventory, resource);
    let total = pooled + from_nodes;
    let grew = change.old.is_none_or(|old| {
        let (old_pooled, old_from_nodes) = total_of(old, &change.old_pooled, inventory, resource);
        total > old_pooled + old_from_nodes
    });
    if total <= limit || !grew {
        return Ok(());
    }
    let show = |amount| format_amount(resource, amount);
    Err(Denial::forbidden(format!(
        "VirtualCluster {} would get {resource} {} (pooled {} + promoted nodes {}), above the limit of {} per VirtualCluster ({flag})",
        change.key,
        show(total),
        show(pooled),
        show(from_nodes),
        show(limit)
    )))
}

fn check_namespace_count(
    change: &Change<'_>,
    inventory: &Inventory,
    policy: &Policy,
) -> Result<(), Denial> {
    let Some(limit) = policy.max_clusters_per_namespace else {
        return Ok(());
    };
    let namespace = change.key.namespace;
    let existing = inventory.clusters_in_namespace(namespace);
    let is_new =
        change.old.is_none() && !inventory.contains_cluster_named(namespace, change.key.name);
    if !is_new || existing < limit {
        return Ok(());
    }
    Err(Denial::forbidden(format!(
        "namespace {namespace:?} already has {existing} VirtualClusters, the limit per namespace (--max-clusters-per-namespace); delete one or use another namespace"
    )))
}

/// Refuses pooled requests the shared pool cannot cover, and promotions of pool nodes
/// that would shrink the pool below what VirtualClusters have reserved.
pub(super) fn check_pool<'a>(
    change: &Change<'a>,
    added_nodes: &[NodeView<'a>],
    inventory: &'a Inventory,
    policy: &Policy,
) -> Result<(), Denial> {
    let taken = TakenFromPool::of(change, added_nodes);
    let reserved_by_this = inventory.reservations_of(change.key);
    // What others reserved matters only where this request shrinks the pool.
    let reserved = (!taken.amounts.is_empty())
        .then(|| inventory.reserved().iter().map(|(resource, _)| resource))
        .into_iter()
        .flatten();
    let requested = change.pooled.iter().map(|(resource, _)| resource);
    for resource in sorted_union(requested, reserved) {
        let others = inventory.reserved().get(resource) - reserved_by_this(resource);
        let request = change.pooled.get(resource);
        let capacity = inventory.pool_capacity().get(resource) - taken.get(resource);
        let ratio = policy.overcommit_of(resource);
        let limit = ratio.apply(capacity);
        if others + request <= limit {
            continue;
        }
        let show = |amount| format_amount(resource, amount);
        let after_promotion = if taken.get(resource) > 0 {
            format!(" (after promoting {})", quoted_nodes(&taken.nodes()))
        } else {
            String::new()
        };
        if request > change.old_pooled.get(resource) {
            return Err(Denial::forbidden(format!(
                "pooled {resource} request {} exceeds what the shared pool can give: capacity {}{after_promotion} × overcommit {ratio} = {}, already reserved by other VirtualClusters {}, available {}",
                show(request),
                show(capacity),
                show(limit),
                show(others),
                show((limit - others).max(0)),
            )));
        }
        if taken.get(resource) > 0 {
            return Err(Denial::forbidden(format!(
                "promoting {} would shrink the shared pool's {resource} from {} to {} (× overcommit {ratio} = {}), below the {} already reserved by VirtualClusters; promote a node outside the pool or lower pooled requests first",
                quoted_nodes(&taken.nodes()),
                show(inventory.pool_capacity().get(resource)),
                show(capacity),
                show(limit),
                show(others + request),
            )));
        }
    }
    Ok(())
}

/// The names of `left` and `right` (each sorted, without repeats) in order and without
/// repeats, merged as they are read instead of collected and sorted.
fn sorted_union<'a>(
    left: impl Iterator<Item = &'a str>,
    right: impl Iterator<Item = &'a str>,
) -> impl Iterator<Item = &'a str> {
    let (mut left, mut right) = (left.peekable(), right.peekable());
    std::iter::from_fn(move || match (left.peek(), right.peek()) {
        (Some(from_left), Some(from_right)) => match from_left.cmp(from_right) {
            std::cmp::Ordering::Less => left.next(),
            std::cmp::Ordering::Greater => right.next(),
            std::cmp::Ordering::Equal => {
                right.next();
                left.next()
            }
        },
        (Some(_), None) => left.next(),
        (None, _) => right.next(),
    })
}

/// Allocatable that the added nodes currently give to the pool. A request names a few
/// nodes offering a few resources, so the sums are a short list keyed by the inventory's
/// own resource names, and nothing is allocated per resource; the nodes are listed only
/// for a refusal.
struct TakenFromPool<'c, 'a> {
    amounts: Vec<(&'a str, i128)>,
    change: &'c Change<'a>,
    added_nodes: &'c [NodeView<'a>],
}

impl<'c, 'a> TakenFromPool<'c, 'a> {
    fn of(change: &'c Change<'a>, added_nodes: &'c [NodeView<'a>]) -> Self {
        let mut amounts: Vec<(&'a str, i128)> = Vec::new();
        for facts in added_nodes.iter().filter(|facts| facts.in_pool()) {
            for (resource, amount) in facts.allocatable() {
                match amounts.iter_mut().find(|(name, _)| *name == resource) {
                    Some((_, total)) => *total = total.saturating_add(amount),
                    None => amounts.push((resource, amount)),
                }
            }
        }
        Self {
            amounts,
            change,
            added_nodes,
        }
    }

    /// The added nodes that are in the pool now, in the order listed.
    fn nodes(&self) -> Vec<&'a str> {
        self.change
            .added_nodes
            .iter()
            .zip(self.added_nodes)
            .filter(|(_, facts)| facts.in_pool())
            .map(|(node, _)| *node)
            .collect()
    }

    fn get(&self, resource: &str) -> i128 {
        self.amounts
            .iter()
            .find(|(name, _)| *name == resource)
            .map_or(0, |(_, amount)| *amount)
    }
}

/// `node "a"` or `nodes "a", "b"`.
fn quoted_nodes(nodes: &[&str]) -> String {
    let quoted: Vec<String> = nodes.iter().map(|node| format!("{node:?}")).collect();
    let noun = if nodes.len() == 1 { "node" } else { "nodes" };
    format!("{noun} {}", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::sorted_union;

    #[test]
    fn a_sorted_union_yields_each_name_of_either_side_once_in_order() {
        let union = |left: &[&'static str], right: &[&'static str]| -> Vec<&'static str> {
            sorted_union(left.iter().copied(), right.iter().copied()).collect()
        };
        assert_eq!(
            union(
                &["cpu", "memory", "pods"],
                &["cpu", "example.com/gpu", "memory"]
            ),
            ["cpu", "example.com/gpu", "memory", "pods"]
        );
        assert_eq!(union(&[], &["cpu"]), ["cpu"]);
        assert_eq!(union(&["memory"], &[]), ["memory"]);
        assert_eq!(union(&["a"], &["b", "c"]), ["a", "b", "c"]);
        assert_eq!(union(&["b", "c"], &["a"]), ["a", "b", "c"]);
    }
}
