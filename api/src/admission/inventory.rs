//! The webhook's view of the host: nodes, who owns them, and the totals quota needs.
//!
//! Every total is kept up to date as watch events arrive, so a request never walks the
//! whole host: at 50,000 nodes and 10,000 VirtualClusters a recomputation per request
//! would cost milliseconds, the incremental update costs microseconds.
//!
//! Storage is compact because the webhook holds every node of the host: resource names
//! nodes advertise are interned, a node keeps its allocatable as a few `(id, amount)`
//! pairs, and VirtualCluster keys are shared between the cluster and owner indexes.
//! [`NodeFacts`] and [`ClusterFacts`] are rebuilt on demand by [`Inventory::node`] and
//! [`Inventory::cluster`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::facts::{ClusterFacts, ClusterKey, ClusterName, NodeFacts, ResourceAmounts};

/// A map of the inventory, hashed with aHash keyed per map from the operating system's
/// random source. Node and VirtualCluster names are chosen by operators and tenants, so
/// the hasher must be keyed and seeded at random, lest a tenant pick names that collide
/// and slow every request down (hash flooding); aHash is built for that (keyed, claims
/// resistance to chosen collisions) and hashes a short name several times faster than
/// std's SipHash-1-3, which perf showed as a tenth of the rules' time per request.
/// foldhash, also seeded at random, makes no claim about chosen collisions.
type Index<K, V> = HashMap<K, V, ahash::RandomState>;

/// Resource names nodes advertise, each stored once; kubelets and device plugins report
/// a handful of distinct names, so the table never grows large.
#[derive(Clone, Debug, Default)]
struct ResourceNames {
    names: Vec<Box<str>>,
    ids: Index<Box<str>, u32>,
    /// Number of nodes offering each resource, by id.
    offered_by: Vec<usize>,
}

impl ResourceNames {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.into());
        self.offered_by.push(0);
        self.ids.insert(name.into(), id);
        id
    }

    fn id(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |name| name)
    }

    fn count_offer(&mut self, id: u32, delta: isize) {
        if let Some(count) = self.offered_by.get_mut(id as usize) {
            *count = count.saturating_add_signed(delta);
        }
    }
}

/// A node as the inventory keeps it.
#[derive(Clone, Debug)]
struct StoredNode {
    ready: bool,
    unschedulable: bool,
    control_plane: bool,
    /// Whether `allocatable` currently counts toward the pool.
    in_pool: bool,
    /// Whether some VirtualCluster lists the node (`spec_owners` has it), so that a request
    /// adding a node nobody lists, the common case, skips that index.
    listed: bool,
    /// Positive allocatable amounts by interned resource id.
    allocatable: Box<[(u32, i128)]>,
    /// Shared with the cluster index when that VirtualCluster is known.
    claimed_by: Option<Arc<ClusterKey>>,
}

impl StoredNode {
    fn can_serve_pool(&self) -> bool {
        self.ready && !self.unschedulable && !self.control_plane
    }
}

/// A VirtualCluster as the inventory keeps it.
#[derive(Clone, Debug)]
struct StoredCluster {
    nodes: Box<[Box<str>]>,
    /// Pooled resources; a boxed slice costs a fraction of a map's node.
    pooled: Box<[(Box<str>, i128)]>,
}

impl StoredCluster {
    fn pooled_of(&self, resource: &str) -> i128 {
        self.pooled
            .iter()
            .find(|(candidate, _)| &**candidate == resource)
            .map_or(0, |(_, amount)| *amount)
    }
}

/// Read access to one stored node, for the rules.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NodeView<'a> {
    node: &'a StoredNode,
    resources: &'a ResourceNames,
}

impl<'a> NodeView<'a> {
    /// The Ready condition is `True`.
    pub(crate) fn ready(&self) -> bool {
        self.node.ready
    }

    /// The node is cordoned.
    pub(crate) fn unschedulable(&self) -> bool {
        self.node.unschedulable
    }

    /// The node carries a control-plane role label.
    pub(crate) fn control_plane(&self) -> bool {
        self.node.control_plane
    }

    /// Whether the node's allocatable counts toward the shared pool now.
    pub(crate) fn in_pool(&self) -> bool {
        self.node.in_pool
    }

    /// Allocatable amount of `resource`, zero when absent.
    pub(crate) fn allocatable_of(&self, resource: &str) -> i128 {
        let Some(id) = self.resources.id(resource) else {
            return 0;
        };
        self.node
            .allocatable
            .iter()
            .find(|(candidate, _)| *candidate == id)
            .map_or(0, |(_, amount)| *amount)
    }

    /// The node's positive allocatable amounts, named as the inventory stores the names.
    pub(crate) fn allocatable(&self) -> impl Iterator<Item = (&'a str, i128)> + use<'a> {
        let resources = self.resources;
        self.node
            .allocatable
            .iter()
            .map(move |(id, amount)| (resources.name(*id), *amount))
    }
}

/// A VirtualCluster's namespace and name however they are held, so that the cluster index,
/// keyed by [`ClusterKey`], can be searched with a borrowed [`ClusterName`].
trait ClusterKeyParts {
    fn parts(&self) -> (&str, &str);
}

impl ClusterKeyParts for ClusterKey {
    fn parts(&self) -> (&str, &str) {
        (&self.namespace, &self.name)
    }
}

impl ClusterKeyParts for ClusterName<'_> {
    fn parts(&self) -> (&str, &str) {
        (self.namespace, self.name)
    }
}

impl<'a> std::borrow::Borrow<dyn ClusterKeyParts + 'a> for Arc<ClusterKey> {
    fn borrow(&self) -> &(dyn ClusterKeyParts + 'a) {
        &**self
    }
}

/// Hashes as the derived `Hash` of [`ClusterKey`] does (namespace, then name), as
/// `Borrow` requires.
impl std::hash::Hash for dyn ClusterKeyParts + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let (namespace, name) = self.parts();
        namespace.hash(state);
        name.hash(state);
    }
}

impl PartialEq for dyn ClusterKeyParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn ClusterKeyParts + '_ {}

/// Nodes and VirtualClusters with incrementally maintained indexes and totals.
///
/// Invariants, each checked against a from-scratch recomputation by a property test:
/// - `pool_capacity` is the sum of allocatable of nodes that are Ready, schedulable, not
///   control-plane, claimed by no label and listed by no VirtualCluster;
/// - `reserved` is the sum of every VirtualCluster's pooled resources;
/// - `spec_owners[node]` holds every VirtualCluster listing `node`, sorted.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    resources: ResourceNames,
    nodes: Index<Box<str>, StoredNode>,
    clusters: Index<Arc<ClusterKey>, StoredCluster>,
    spec_owners: Index<Box<str>, Vec<Arc<ClusterKey>>>,
    clusters_per_namespace: Index<String, usize>,
    pool_capacity: ResourceAmounts,
    reserved: ResourceAmounts,
}

impl Inventory {
    /// An empty inventory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a node as it is now, replacing what was known before.
    pub fn upsert_node(&mut self, facts: NodeFacts) {
        self.remove_node(&facts.name);
        let allocatable: Box<[(u32, i128)]> = facts
            .allocatable
            .iter()
            .filter(|(_, amount)| *amount > 0)
            .map(|(resource, amount)| (self.resources.intern(resource), amount))
            .collect();
        for (id, _) in &allocatable {
            self.resources.count_offer(*id, 1);
        }
        let node = StoredNode {
            ready: facts.ready,
            unschedulable: facts.unschedulable,
            control_plane: facts.control_plane,
            in_pool: false,
            listed: self.spec_owners.contains_key(facts.name.as_str()),
            allocatable,
            claimed_by: facts.claimed_by.map(|key| self.shared_key(key)),
        };
        self.nodes.insert(facts.name.as_str().into(), node);
        self.refresh_pool_membership(&facts.name);
    }

    /// Forgets a node that left the host.
    pub fn remove_node(&mut self, name: &str) {
        let Some(node) = self.nodes.remove(name) else {
            return;
        };
        for (id, amount) in &node.allocatable {
            if node.in_pool {
                self.pool_capacity
                    .add_amount(self.resources.name(*id), -*amount);
            }
            self.resources.count_offer(*id, -1);
        }
    }

    /// Records a VirtualCluster as it is now, replacing what was known before. Costs
    /// O(nodes it lists, before and after).
    pub fn upsert_cluster(&mut self, facts: ClusterFacts) {
        let (key, previous) = match self.clusters.remove_entry(&facts.key) {
            Some((key, previous)) => (key, Some(previous)),
            None => (Arc::new(facts.key), None),
        };
        let previous_nodes: HashSet<&str> = previous
            .iter()
            .flat_map(|previous| previous.nodes.iter().map(|node| &**node))
            .collect();
        let current_nodes: HashSet<&str> = facts.nodes.iter().map(String::as_str).collect();
        let released: Vec<Box<str>> = previous_nodes
            .difference(&current_nodes)
            .map(|node| (*node).into())
            .collect();
        let claimed: Vec<Box<str>> = current_nodes
            .difference(&previous_nodes)
            .map(|node| (*node).into())
            .collect();
        match &previous {
            Some(previous) => self.change_reserved(&previous.pooled, -1),
            None => {
                *self
                    .clusters_per_namespace
                    .entry(key.namespace.clone())
                    .or_insert(0) += 1
            }
        }
        let pooled: Box<[(Box<str>, i128)]> = facts
            .pooled
            .iter()
            .map(|(resource, amount)| (resource.into(), amount))
            .collect();
        self.change_reserved(&pooled, 1);
        for node in &released {
            self.remove_spec_owner(node, &key);
        }
        for node in &claimed {
            self.add_spec_owner(node, &key);
        }
        let mut nodes: Vec<Box<str>> = facts
            .nodes
            .iter()
            .map(|node| node.as_str().into())
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        let stored = StoredCluster {
            nodes: nodes.into_boxed_slice(),
            pooled,
        };
        self.clusters.insert(key, stored);
    }

    /// Forgets a deleted VirtualCluster. Costs O(nodes it listed).
    pub fn remove_cluster(&mut self, key: &ClusterKey) {
        let Some((key, previous)) = self.clusters.remove_entry(key) else {
            return;
        };
        self.change_reserved(&previous.pooled, -1);
        if let Some(count) = self.clusters_per_namespace.get_mut(&key.namespace) {
            *count -= 1;
            if *count == 0 {
                self.clusters_per_namespace.remove(&key.namespace);
            }
        }
        for node in &previous.nodes {
            self.remove_spec_owner(node, &key);
        }
    }

    /// The facts of a node as recorded, if the host has it (allocatable keeps positive
    /// amounts only). Built on demand: the inventory stores nodes compactly.
    pub fn node(&self, name: &str) -> Option<NodeFacts> {
        let node = self.nodes.get(name)?;
        Some(NodeFacts {
            name: name.to_owned(),
            ready: node.ready,
            unschedulable: node.unschedulable,
            control_plane: node.control_plane,
            allocatable: node
                .allocatable
                .iter()
                .map(|(id, amount)| (self.resources.name(*id), *amount))
                .collect(),
            claimed_by: node.claimed_by.as_deref().cloned(),
        })
    }

    /// Read access to a stored node without rebuilding its facts.
    pub(crate) fn node_view(&self, name: &str) -> Option<NodeView<'_>> {
        self.nodes.get(name).map(|node| NodeView {
            node,
            resources: &self.resources,
        })
    }

    /// The facts of a VirtualCluster as recorded (nodes sorted, without duplicates).
    pub fn cluster(&self, key: &ClusterKey) -> Option<ClusterFacts> {
        let cluster = self.clusters.get(key)?;
        Some(ClusterFacts {
            key: key.clone(),
            nodes: cluster.nodes.iter().map(|node| node.to_string()).collect(),
            pooled: cluster
                .pooled
                .iter()
                .map(|(resource, amount)| (&**resource, *amount))
                .collect(),
        })
    }

    /// Whether the VirtualCluster is known.
    pub fn contains_cluster(&self, key: &ClusterKey) -> bool {
        self.contains_cluster_named(&key.namespace, &key.name)
    }

    /// Whether the VirtualCluster `namespace/name` is known, without building its key: the
    /// name rules look up several candidate names per admission request.
    pub fn contains_cluster_named(&self, namespace: &str, name: &str) -> bool {
        let parts: &dyn ClusterKeyParts = &ClusterName { namespace, name };
        self.clusters.contains_key(parts)
    }

    /// What the VirtualCluster reserves of `resource` from the pool, zero when unknown.
    pub fn reserved_by(&self, key: &ClusterKey, resource: &str) -> i128 {
        self.reservations_of(key.into())(resource)
    }

    /// [`Inventory::reserved_by`] of one VirtualCluster for any resource, the cluster
    /// looked up once.
    pub(crate) fn reservations_of(&self, key: ClusterName<'_>) -> impl Fn(&str) -> i128 + use<'_> {
        let parts: &dyn ClusterKeyParts = &key;
        let cluster = self.clusters.get(parts);
        move |resource| cluster.map_or(0, |cluster| cluster.pooled_of(resource))
    }

    /// Who owns `node`: the claim labels on the node, which the controller writes with a
    /// resourceVersion precondition and are therefore the truth, else the first
    /// VirtualCluster (by namespace/name) listing it.
    pub fn owner_of(&self, node: &str) -> Option<&ClusterKey> {
        self.label_owner(node).or_else(|| {
            self.spec_owners
                .get(node)
                .and_then(|owners| owners.first())
                .map(|owner| &**owner)
        })
    }

    /// A VirtualCluster other than `requester` with a claim on `node`, by label or by
    /// listing it; the label owner comes first.
    pub fn other_owner_of(&self, node: &str, requester: &ClusterKey) -> Option<&ClusterKey> {
        self.other_owner_beside(node, self.label_owner(node), true, requester.into())
    }

    /// [`Inventory::other_owner_of`] for a node already looked up as `view`.
    pub(crate) fn other_owner_of_viewed<'a>(
        &'a self,
        node: &str,
        view: &NodeView<'a>,
        requester: ClusterName<'_>,
    ) -> Option<&'a ClusterKey> {
        self.other_owner_beside(
            node,
            view.node.claimed_by.as_deref(),
            view.node.listed,
            requester,
        )
    }

    /// The index of listers is searched only when the label owner is absent or the
    /// requester itself, and the node `may_be_listed`.
    fn other_owner_beside<'a>(
        &'a self,
        node: &str,
        label_owner: Option<&'a ClusterKey>,
        may_be_listed: bool,
        requester: ClusterName<'_>,
    ) -> Option<&'a ClusterKey> {
        label_owner
            .filter(|owner| !requester.is(owner))
            .or_else(|| {
                if !may_be_listed {
                    return None;
                }
                self.spec_owners
                    .get(node)?
                    .iter()
                    .map(|owner| &**owner)
                    .find(|owner| !requester.is(owner))
            })
    }

    fn label_owner(&self, node: &str) -> Option<&ClusterKey> {
        self.nodes.get(node)?.claimed_by.as_deref()
    }

    /// Whether `node`'s allocatable currently counts toward the shared pool.
    pub fn is_in_pool(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|node| node.in_pool)
    }

    /// Allocatable of nodes that are Ready, schedulable, not control-plane and claimed by
    /// nobody (neither by label nor by a VirtualCluster listing them).
    pub fn pool_capacity(&self) -> &ResourceAmounts {
        &self.pool_capacity
    }

    /// The sum of every VirtualCluster's pooled requests.
    pub fn reserved(&self) -> &ResourceAmounts {
        &self.reserved
    }

    /// How many VirtualClusters live in `namespace`.
    pub fn clusters_in_namespace(&self, namespace: &str) -> usize {
        self.clusters_per_namespace
            .get(namespace)
            .copied()
            .unwrap_or(0)
    }

    /// Whether some node advertises a positive allocatable amount of `name`.
    pub fn offers_extended_resource(&self, name: &str) -> bool {
        self.resources
            .id(name)
            .and_then(|id| self.resources.offered_by.get(id as usize))
            .is_some_and(|count| *count > 0)
    }

    /// Names of every resource some node advertises, for suggestions in denials.
    pub fn offered_resources(&self) -> impl Iterator<Item = &str> {
        self.resources
            .names
            .iter()
            .zip(&self.resources.offered_by)
            .filter(|(_, count)| **count > 0)
            .map(|(name, _)| &**name)
    }

    /// Number of nodes known.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of VirtualClusters known.
    pub fn cluster_count(&self) -> usize {
        self.clusters.len()
    }

    /// The key as an `Arc`, shared with the cluster index when the cluster is known.
    fn shared_key(&self, key: ClusterKey) -> Arc<ClusterKey> {
        match self.clusters.get_key_value(&key) {
            Some((shared, _)) => Arc::clone(shared),
            None => Arc::new(key),
        }
    }

    fn change_reserved(&mut self, pooled: &[(Box<str>, i128)], sign: i128) {
        for (resource, amount) in pooled {
            self.reserved.add_amount(resource, sign * *amount);
        }
    }

    fn add_spec_owner(&mut self, node: &str, owner: &Arc<ClusterKey>) {
        let owners = self.spec_owners.entry(node.into()).or_default();
        if let Err(position) = owners.binary_search(owner) {
            owners.insert(position, Arc::clone(owner));
        }
        if let Some(stored) = self.nodes.get_mut(node) {
            stored.listed = true;
        }
        self.refresh_pool_membership(node);
    }

    fn remove_spec_owner(&mut self, node: &str, owner: &ClusterKey) {
        if let Some(owners) = self.spec_owners.get_mut(node) {
            owners.retain(|candidate| **candidate != *owner);
            if owners.is_empty() {
                self.spec_owners.remove(node);
                if let Some(stored) = self.nodes.get_mut(node) {
                    stored.listed = false;
                }
            }
        }
        self.refresh_pool_membership(node);
    }

    fn is_pool_eligible(&self, name: &str) -> bool {
        self.nodes
            .get(name)
            .is_some_and(|node| node.can_serve_pool() && node.claimed_by.is_none() && !node.listed)
    }

    /// Adds or removes the node's allocatable from the pool when its eligibility changed.
    fn refresh_pool_membership(&mut self, name: &str) {
        let eligible = self.is_pool_eligible(name);
        let Some(node) = self.nodes.get_mut(name) else {
            return;
        };
        if node.in_pool == eligible {
            return;
        }
        node.in_pool = eligible;
        let sign = if eligible { 1 } else { -1 };
        for (id, amount) in &node.allocatable {
            self.pool_capacity
                .add_amount(self.resources.name(*id), sign * *amount);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::node_facts;
    use proptest::prelude::*;

    fn cluster(namespace: &str, name: &str, nodes: &[&str], cpu: i128) -> ClusterFacts {
        ClusterFacts {
            key: ClusterKey::new(namespace, name),
            nodes: nodes.iter().map(|node| (*node).to_owned()).collect(),
            pooled: ResourceAmounts::from_iter([("cpu", cpu)]),
        }
    }

    #[test]
    fn each_index_hashes_names_under_its_own_random_key() {
        let one: Index<Box<str>, ()> = Index::default();
        let other: Index<Box<str>, ()> = Index::default();
        assert_ne!(
            one.hasher().hash_one("node-00001"),
            other.hasher().hash_one("node-00001"),
            "a name's hash must not be predictable from another map, or from the code"
        );
    }

    #[test]
    fn a_cluster_is_found_by_its_namespace_and_name_only() {
        let mut inventory = Inventory::new();
        inventory.upsert_cluster(cluster("team-a", "prod", &[], 1_000));
        assert!(inventory.contains_cluster_named("team-a", "prod"));
        assert!(inventory.contains_cluster(&ClusterKey::new("team-a", "prod")));
        // The same characters split elsewhere, or either part alone, is another cluster.
        for (namespace, name) in [("team", "a-prod"), ("team-a-prod", ""), ("prod", "team-a")] {
            assert!(
                !inventory.contains_cluster_named(namespace, name),
                "{namespace}/{name}"
            );
        }
        inventory.remove_cluster(&ClusterKey::new("team-a", "prod"));
        assert!(!inventory.contains_cluster_named("team-a", "prod"));
    }

    #[test]
    fn listing_a_node_takes_it_out_of_the_pool_and_releasing_puts_it_back() {
        let mut inventory = Inventory::new();
        inventory.upsert_node(node_facts("a", &[("cpu", 4_000)]));
        inventory.upsert_node(node_facts("b", &[("cpu", 8_000)]));
        assert_eq!(inventory.pool_capacity().get("cpu"), 12_000);

        inventory.upsert_cluster(cluster("team-a", "prod", &["a"], 2_000));
        assert_eq!(inventory.pool_capacity().get("cpu"), 8_000);
        assert_eq!(inventory.reserved().get("cpu"), 2_000);
        assert_eq!(
            inventory.owner_of("a"),
            Some(&ClusterKey::new("team-a", "prod"))
        );
        assert_eq!(inventory.clusters_in_namespace("team-a"), 1);

        inventory.upsert_cluster(cluster("team-a", "prod", &["b"], 3_000));
        assert_eq!(inventory.pool_capacity().get("cpu"), 4_000);
        assert_eq!(inventory.reserved().get("cpu"), 3_000);
        assert_eq!(inventory.owner_of("a"), None);
        assert_eq!(inventory.clusters_in_namespace("team-a"), 1);

        inventory.remove_cluster(&ClusterKey::new("team-a", "prod"));
        assert_eq!(inventory.pool_capacity().get("cpu"), 12_000);
        assert!(inventory.reserved().is_empty());
        assert_eq!(inventory.clusters_in_namespace("team-a"), 0);
    }

    #[test]
    fn a_claim_label_takes_a_node_out_of_the_pool_and_names_its_owner() {
        let mut inventory = Inventory::new();
        let mut claimed = node_facts("a", &[("cpu", 4_000)]);
        claimed.claimed_by = Some(ClusterKey::new("team-b", "dev"));
        inventory.upsert_node(claimed);
        assert!(inventory.pool_capacity().is_empty());
        assert_eq!(
            inventory.owner_of("a"),
            Some(&ClusterKey::new("team-b", "dev"))
        );
        let requester = ClusterKey::new("team-b", "dev");
        assert_eq!(inventory.other_owner_of("a", &requester), None);
        let stranger = ClusterKey::new("team-c", "x");
        assert_eq!(inventory.other_owner_of("a", &stranger), Some(&requester));
    }

    #[test]
    fn extended_resources_are_offered_while_some_node_has_them() {
        let mut inventory = Inventory::new();
        let mut gpu = node_facts("a", &[("cpu", 4_000)]);
        gpu.allocatable.add_amount("nvidia.com/gpu", 1_000);
        inventory.upsert_node(gpu);
        inventory.upsert_node(node_facts("b", &[("cpu", 1_000)]));
        assert!(inventory.offers_extended_resource("nvidia.com/gpu"));
        inventory.upsert_node(node_facts("a", &[("cpu", 4_000)]));
        assert!(!inventory.offers_extended_resource("nvidia.com/gpu"));
    }

    /// One change to the inventory, drawn from a small universe so that operations
    /// collide on the same nodes and clusters.
    #[derive(Clone, Debug)]
    enum Change {
        UpsertNode(NodeFacts),
        RemoveNode(String),
        UpsertCluster(ClusterFacts),
        RemoveCluster(ClusterKey),
    }

    const NODE_NAMES: [&str; 6] = ["n0", "n1", "n2", "n3", "n4", "n5"];

    fn cluster_key() -> impl Strategy<Value = ClusterKey> {
        (0_usize..2, 0_usize..3).prop_map(|(namespace, name)| {
            ClusterKey::new(format!("ns{namespace}"), format!("c{name}"))
        })
    }

    fn amounts() -> impl Strategy<Value = ResourceAmounts> {
        (0_i128..5, 0_i128..3, 0_i128..2).prop_map(|(cpu, memory, gpu)| {
            ResourceAmounts::from_iter([
                ("cpu", cpu * 1_000),
                ("memory", memory * 1_024_000),
                ("example.com/gpu", gpu),
            ])
        })
    }

    fn change() -> impl Strategy<Value = Change> {
        let node_name = prop::sample::select(NODE_NAMES.to_vec()).prop_map(str::to_owned);
        let facts = (
            node_name.clone(),
            any::<bool>(),
            any::<bool>(),
            prop::bool::weighted(0.2),
            amounts(),
            prop::option::weighted(0.3, cluster_key()),
        )
            .prop_map(
                |(name, ready, unschedulable, control_plane, allocatable, claimed_by)| NodeFacts {
                    name,
                    ready,
                    unschedulable,
                    control_plane,
                    allocatable,
                    claimed_by,
                },
            );
        let cluster = (
            cluster_key(),
            prop::collection::vec(node_name.clone(), 0..4),
            amounts(),
        )
            .prop_map(|(key, mut nodes, pooled)| {
                nodes.sort();
                nodes.dedup();
                ClusterFacts { key, nodes, pooled }
            });
        prop_oneof![
            3 => facts.prop_map(Change::UpsertNode),
            1 => node_name.prop_map(Change::RemoveNode),
            3 => cluster.prop_map(Change::UpsertCluster),
            1 => cluster_key().prop_map(Change::RemoveCluster),
        ]
    }

    /// Recomputes every total the slow, obvious way and compares.
    fn assert_matches_recomputation(
        inventory: &Inventory,
        nodes: &HashMap<String, NodeFacts>,
        clusters: &HashMap<ClusterKey, ClusterFacts>,
    ) -> Result<(), TestCaseError> {
        let listed: HashSet<&str> = clusters
            .values()
            .flat_map(|cluster| cluster.nodes.iter().map(String::as_str))
            .collect();
        let mut capacity = ResourceAmounts::new();
        for facts in nodes.values() {
            if facts.can_serve_pool()
                && facts.claimed_by.is_none()
                && !listed.contains(facts.name.as_str())
            {
                capacity.add(&facts.allocatable);
            }
        }
        prop_assert_eq!(inventory.pool_capacity(), &capacity);

        let mut reserved = ResourceAmounts::new();
        for cluster in clusters.values() {
            reserved.add(&cluster.pooled);
        }
        prop_assert_eq!(inventory.reserved(), &reserved);

        for namespace in ["ns0", "ns1"] {
            let count = clusters
                .keys()
                .filter(|key| key.namespace == namespace)
                .count();
            prop_assert_eq!(inventory.clusters_in_namespace(namespace), count);
        }
        for node in NODE_NAMES {
            if let Some(view) = inventory.node_view(node) {
                for requester in clusters.keys().chain([&ClusterKey::new("ns9", "c9")]) {
                    prop_assert_eq!(
                        inventory.other_owner_of_viewed(node, &view, requester.into()),
                        inventory.other_owner_of(node, requester)
                    );
                }
            }
            let label_owner = nodes.get(node).and_then(|facts| facts.claimed_by.clone());
            let first_lister = clusters
                .values()
                .filter(|cluster| cluster.nodes.iter().any(|listed| listed == node))
                .map(|cluster| cluster.key.clone())
                .min();
            prop_assert_eq!(
                inventory.owner_of(node).cloned(),
                label_owner.or(first_lister)
            );
        }
        for (name, facts) in nodes {
            let mut recorded = facts.clone();
            recorded.allocatable.0.retain(|_, amount| *amount > 0);
            prop_assert_eq!(inventory.node(name), Some(recorded));
        }
        for (key, facts) in clusters {
            prop_assert_eq!(inventory.cluster(key), Some(facts.clone()));
            prop_assert!(inventory.contains_cluster(key));
        }
        prop_assert_eq!(inventory.node_count(), nodes.len());
        prop_assert_eq!(inventory.cluster_count(), clusters.len());
        for resource in ["cpu", "memory", "example.com/gpu"] {
            let offered = nodes
                .values()
                .any(|facts| facts.allocatable.get(resource) > 0);
            prop_assert_eq!(inventory.offers_extended_resource(resource), offered);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn incremental_totals_equal_a_recomputation(changes in prop::collection::vec(change(), 1..40)) {
            let mut inventory = Inventory::new();
            let mut nodes = HashMap::new();
            let mut clusters = HashMap::new();
            for change in changes {
                match change {
                    Change::UpsertNode(facts) => {
                        nodes.insert(facts.name.clone(), facts.clone());
                        inventory.upsert_node(facts);
                    }
                    Change::RemoveNode(name) => {
                        nodes.remove(&name);
                        inventory.remove_node(&name);
                    }
                    Change::UpsertCluster(facts) => {
                        clusters.insert(facts.key.clone(), facts.clone());
                        inventory.upsert_cluster(facts);
                    }
                    Change::RemoveCluster(key) => {
                        clusters.remove(&key);
                        inventory.remove_cluster(&key);
                    }
                }
                assert_matches_recomputation(&inventory, &nodes, &clusters)?;
            }
        }
    }
}
