//! The validating rules, one module per concern, run in the order a user would fix them:
//! names, reserved fields, syntax of the spec, update transitions, nodes, ceilings, pool.
//!
//! Each rule costs O(nodes in the request) with O(1) or O(log n) inventory look-ups.

mod names;
mod nodes;
mod quota;
mod reserved;
mod spec;

pub use spec::is_dns1123_label;
mod updates;

#[cfg(test)]
mod tests;

use std::collections::HashSet;

use super::facts::ClusterName;
use super::inventory::Inventory;
use super::policy::Policy;
use crate::VirtualCluster;

/// HTTP status of a denial by policy: exclusivity, quota, reserved fields.
pub const FORBIDDEN: u16 = 403;
/// HTTP status of a denial of invalid input.
pub const INVALID: u16 = 422;

/// What the request does to the VirtualCluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A new VirtualCluster.
    Create,
    /// A change to an existing VirtualCluster.
    Update,
    /// Removal; always allowed, the finalizer releases what the cluster held.
    Delete,
}

/// One admission request, reduced to what the rules read.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// CREATE, UPDATE or DELETE.
    pub operation: Operation,
    /// `userInfo.username` of the requester.
    pub username: &'a str,
    /// The object as it would be stored (after mutation); absent on DELETE.
    pub object: Option<&'a VirtualCluster>,
    /// The stored object before the change; present on UPDATE and DELETE.
    pub old_object: Option<&'a VirtualCluster>,
}

/// Why a request is refused, for a human to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// [`FORBIDDEN`] for policy, [`INVALID`] for invalid input.
    pub code: u16,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Denial {
    /// A refusal by policy (403).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            code: FORBIDDEN,
            message: message.into(),
        }
    }

    /// A refusal of invalid input (422).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: INVALID,
            message: message.into(),
        }
    }
}

/// The answer to a request: allowed unless `denial` is set; warnings either way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The first rule that refused the request.
    pub denial: Option<Denial>,
    /// Things the requester should know even though the request is allowed.
    pub warnings: Vec<String>,
}

impl Verdict {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        self.denial.is_none()
    }
}

/// Decides whether `request` may proceed, given the host as `inventory` sees it.
///
/// The inventory is a cache: two creations admitted at the same instant can both pass.
/// The controller's node claim, written with a resourceVersion precondition, decides.
pub fn validate(request: &Request<'_>, inventory: &Inventory, policy: &Policy) -> Verdict {
    let mut warnings = Vec::new();
    let denial = match request.operation {
        Operation::Delete => None,
        Operation::Create | Operation::Update => {
            check(request, inventory, policy, &mut warnings).err()
        }
    };
    Verdict { denial, warnings }
}

/// The VirtualCluster before and after the request, with what the rules compare.
pub(crate) struct Change<'a> {
    pub(crate) key: ClusterName<'a>,
    pub(crate) object: &'a VirtualCluster,
    /// `None` on CREATE.
    pub(crate) old: Option<&'a VirtualCluster>,
    /// Pooled resources after the change, parsed (the spec rule guarantees they parse).
    pub(crate) pooled: Pooled<'a>,
    /// Pooled resources before the change (empty on CREATE).
    pub(crate) old_pooled: Pooled<'a>,
    /// Nodes listed now but not before, in the order listed, without duplicates.
    pub(crate) added_nodes: Vec<&'a str>,
}

/// Non-zero pooled amounts of one VirtualCluster, named as its spec names them and in
/// that (sorted) order. A spec pools a few resources: a short list borrowing the names is
/// searched as fast as a map and costs one allocation, where a map copying the names cost
/// one per name besides its own.
#[derive(Debug, Default)]
pub(crate) struct Pooled<'a>(Vec<(&'a str, i128)>);

impl<'a> Pooled<'a> {
    /// Room for `count` resources.
    pub(crate) fn with_capacity(count: usize) -> Self {
        Self(Vec::with_capacity(count))
    }

    /// Records the amount of a resource the spec names once; zero is not stored.
    pub(crate) fn push(&mut self, resource: &'a str, amount: i128) {
        if amount != 0 {
            self.0.push((resource, amount));
        }
    }

    /// The amount of `resource`, zero when absent.
    pub(crate) fn get(&self, resource: &str) -> i128 {
        self.0
            .iter()
            .find(|(name, _)| *name == resource)
            .map_or(0, |(_, amount)| *amount)
    }

    /// `(resource, amount)` pairs in the spec's order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&'a str, i128)> + '_ {
        self.0.iter().copied()
    }
}

fn check(
    request: &Request<'_>,
    inventory: &Inventory,
    policy: &Policy,
    warnings: &mut Vec<String>,
) -> Result<(), Denial> {
    let object = request
        .object
        .ok_or_else(|| Denial::invalid("the admission request carries no VirtualCluster object"))?;
    let key = names::cluster_name(object)?;
    let old = match request.operation {
        Operation::Update => request.old_object,
        Operation::Create | Operation::Delete => None,
    };
    if old.is_none() {
        names::check_derived_names(key, inventory)?;
    }
    reserved::check(request.username, object, old, policy, warnings)?;
    let pooled = spec::check(object, old, inventory)?;
    if let Some(old) = old {
        updates::check(old, object)?;
    }
    let change = Change {
        added_nodes: added_nodes(object, old),
        old_pooled: old.map(spec::parsed_pooled).unwrap_or_default(),
        key,
        object,
        old,
        pooled,
    };
    let added_nodes = nodes::check(&change, inventory, warnings)?;
    quota::check_ceilings(&change, inventory, policy)?;
    quota::check_pool(&change, &added_nodes, inventory, policy)
}

fn added_nodes<'a>(object: &'a VirtualCluster, old: Option<&VirtualCluster>) -> Vec<&'a str> {
    let before: &[String] = old.map_or(&[], |old| &old.spec.promote_resources.nodes);
    let nodes = &object.spec.promote_resources.nodes;
    let mut added: Vec<&str> = Vec::with_capacity(nodes.len());
    if nodes.len() + before.len() <= FEW_NODES {
        for node in nodes {
            if !before.contains(node) && !added.contains(&node.as_str()) {
                added.push(node);
            }
        }
        return added;
    }
    let before: HashSet<&str> = before.iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    added.extend(
        nodes
            .iter()
            .map(String::as_str)
            .filter(|node| !before.contains(node) && seen.insert(*node)),
    );
    added
}

/// Up to this many nodes in a request, a linear scan finds repeats faster than hashing,
/// and without allocating a set: a request names a few nodes, rarely more.
const FEW_NODES: usize = 16;

/// The first item seen a second time, in order.
fn first_repeat(items: &[String]) -> Option<&str> {
    if items.len() <= FEW_NODES {
        return items
            .iter()
            .enumerate()
            .find(|(index, item)| items[..*index].contains(item))
            .map(|(_, item)| item.as_str());
    }
    let mut seen = HashSet::new();
    items
        .iter()
        .map(String::as_str)
        .find(|item| !seen.insert(*item))
}
