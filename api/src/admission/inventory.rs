//! The webhook's view of the host: nodes, who owns them, and the totals quota needs.
//!
//! Every total is kept up to date as watch events arrive, so a request never walks the
//! whole host: at 50,000 nodes and 10,000 VirtualClusters a recomputation per request
//! would cost milliseconds, the incremental update costs microseconds.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::facts::{ClusterFacts, ClusterKey, NodeFacts, ResourceAmounts};

/// A node's facts and whether its allocatable is currently counted in the pool.
#[derive(Clone, Debug)]
struct NodeEntry {
    facts: NodeFacts,
    in_pool: bool,
}

/// Nodes and VirtualClusters with incrementally maintained indexes and totals.
///
/// Invariants, each checked against a from-scratch recomputation by a property test:
/// - `pool_capacity` is the sum of allocatable of nodes that are Ready, schedulable, not
///   control-plane, claimed by no label and listed by no VirtualCluster;
/// - `reserved` is the sum of every VirtualCluster's pooled resources;
/// - `spec_owners[node]` holds every VirtualCluster listing `node`.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    nodes: HashMap<String, NodeEntry>,
    clusters: HashMap<ClusterKey, ClusterFacts>,
    spec_owners: HashMap<String, BTreeSet<ClusterKey>>,
    clusters_per_namespace: HashMap<String, usize>,
    extended_offers: HashMap<String, usize>,
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
        self.remove_node(&facts.name.clone());
        for resource in offered(&facts) {
            *self.extended_offers.entry(resource.to_owned()).or_insert(0) += 1;
        }
        let name = facts.name.clone();
        self.nodes.insert(
            name.clone(),
            NodeEntry {
                facts,
                in_pool: false,
            },
        );
        self.refresh_pool_membership(&name);
    }

    /// Forgets a node that left the host.
    pub fn remove_node(&mut self, name: &str) {
        let Some(entry) = self.nodes.remove(name) else {
            return;
        };
        if entry.in_pool {
            self.pool_capacity.subtract(&entry.facts.allocatable);
        }
        for resource in offered(&entry.facts) {
            if let Some(count) = self.extended_offers.get_mut(resource) {
                *count -= 1;
                if *count == 0 {
                    self.extended_offers.remove(resource);
                }
            }
        }
    }

    /// Records a VirtualCluster as it is now, replacing what was known before. Costs
    /// O(nodes it lists, before and after).
    pub fn upsert_cluster(&mut self, facts: ClusterFacts) {
        let previous = self.clusters.remove(&facts.key);
        let previous_nodes: HashSet<&str> = previous
            .iter()
            .flat_map(|previous| previous.nodes.iter().map(String::as_str))
            .collect();
        let current_nodes: HashSet<&str> = facts.nodes.iter().map(String::as_str).collect();
        let released: Vec<String> = previous_nodes
            .difference(&current_nodes)
            .map(|node| (*node).to_owned())
            .collect();
        let claimed: Vec<String> = current_nodes
            .difference(&previous_nodes)
            .map(|node| (*node).to_owned())
            .collect();
        match &previous {
            Some(previous) => self.reserved.subtract(&previous.pooled),
            None => {
                *self
                    .clusters_per_namespace
                    .entry(facts.key.namespace.clone())
                    .or_insert(0) += 1
            }
        }
        self.reserved.add(&facts.pooled);
        for node in &released {
            self.remove_spec_owner(node, &facts.key);
        }
        for node in &claimed {
            self.add_spec_owner(node, &facts.key);
        }
        self.clusters.insert(facts.key.clone(), facts);
    }

    /// Forgets a deleted VirtualCluster. Costs O(nodes it listed).
    pub fn remove_cluster(&mut self, key: &ClusterKey) {
        let Some(previous) = self.clusters.remove(key) else {
            return;
        };
        self.reserved.subtract(&previous.pooled);
        if let Some(count) = self.clusters_per_namespace.get_mut(&key.namespace) {
            *count -= 1;
            if *count == 0 {
                self.clusters_per_namespace.remove(&key.namespace);
            }
        }
        for node in &previous.nodes {
            self.remove_spec_owner(node, key);
        }
    }

    /// The facts of a node, if the host has it.
    pub fn node(&self, name: &str) -> Option<&NodeFacts> {
        self.nodes.get(name).map(|entry| &entry.facts)
    }

    /// The facts of a VirtualCluster, if known.
    pub fn cluster(&self, key: &ClusterKey) -> Option<&ClusterFacts> {
        self.clusters.get(key)
    }

    /// Who owns `node`: the claim labels on the node, which the controller writes with a
    /// resourceVersion precondition and are therefore the truth, else the first
    /// VirtualCluster (by namespace/name) listing it.
    pub fn owner_of(&self, node: &str) -> Option<&ClusterKey> {
        self.node(node)
            .and_then(|facts| facts.claimed_by.as_ref())
            .or_else(|| self.spec_owners.get(node).and_then(|owners| owners.first()))
    }

    /// Every VirtualCluster other than `requester` with a claim on `node`, by label or by
    /// listing it; the label owner comes first.
    pub fn other_owner_of(&self, node: &str, requester: &ClusterKey) -> Option<&ClusterKey> {
        let label_owner = self.node(node).and_then(|facts| facts.claimed_by.as_ref());
        let listed_by = self.spec_owners.get(node).into_iter().flatten();
        label_owner
            .into_iter()
            .chain(listed_by)
            .find(|owner| *owner != requester)
    }

    /// Whether `node`'s allocatable currently counts toward the shared pool.
    pub fn is_in_pool(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|entry| entry.in_pool)
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
        self.extended_offers.contains_key(name)
    }

    /// Names of every resource some node advertises, for suggestions in denials.
    pub fn offered_resources(&self) -> impl Iterator<Item = &str> {
        self.extended_offers.keys().map(String::as_str)
    }

    /// Number of nodes known.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of VirtualClusters known.
    pub fn cluster_count(&self) -> usize {
        self.clusters.len()
    }

    fn add_spec_owner(&mut self, node: &str, owner: &ClusterKey) {
        self.spec_owners
            .entry(node.to_owned())
            .or_default()
            .insert(owner.clone());
        self.refresh_pool_membership(node);
    }

    fn remove_spec_owner(&mut self, node: &str, owner: &ClusterKey) {
        if let Some(owners) = self.spec_owners.get_mut(node) {
            owners.remove(owner);
            if owners.is_empty() {
                self.spec_owners.remove(node);
            }
        }
        self.refresh_pool_membership(node);
    }

    fn is_pool_eligible(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|entry| {
            entry.facts.can_serve_pool()
                && entry.facts.claimed_by.is_none()
                && !self.spec_owners.contains_key(node)
        })
    }

    /// Adds or removes the node's allocatable from the pool when its eligibility changed.
    fn refresh_pool_membership(&mut self, node: &str) {
        let eligible = self.is_pool_eligible(node);
        let Some(entry) = self.nodes.get_mut(node) else {
            return;
        };
        if entry.in_pool == eligible {
            return;
        }
        entry.in_pool = eligible;
        if eligible {
            self.pool_capacity.add(&entry.facts.allocatable);
        } else {
            self.pool_capacity.subtract(&entry.facts.allocatable);
        }
    }
}

/// Resources a node actually offers: those with a positive allocatable amount.
fn offered(facts: &NodeFacts) -> impl Iterator<Item = &str> {
    facts
        .allocatable
        .iter()
        .filter(|(_, amount)| *amount > 0)
        .map(|(resource, _)| resource)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(name: &str, cpu: i128) -> NodeFacts {
        NodeFacts {
            name: name.to_owned(),
            ready: true,
            unschedulable: false,
            control_plane: false,
            allocatable: ResourceAmounts::from_iter([("cpu", cpu)]),
            claimed_by: None,
        }
    }

    fn cluster(namespace: &str, name: &str, nodes: &[&str], cpu: i128) -> ClusterFacts {
        ClusterFacts {
            key: ClusterKey::new(namespace, name),
            nodes: nodes.iter().map(|node| (*node).to_owned()).collect(),
            pooled: ResourceAmounts::from_iter([("cpu", cpu)]),
        }
    }

    #[test]
    fn listing_a_node_takes_it_out_of_the_pool_and_releasing_puts_it_back() {
        let mut inventory = Inventory::new();
        inventory.upsert_node(node("a", 4_000));
        inventory.upsert_node(node("b", 8_000));
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
        let mut claimed = node("a", 4_000);
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
        let mut gpu = node("a", 4_000);
        gpu.allocatable.add_amount("nvidia.com/gpu", 1_000);
        inventory.upsert_node(gpu);
        inventory.upsert_node(node("b", 1_000));
        assert!(inventory.offers_extended_resource("nvidia.com/gpu"));
        inventory.upsert_node(node("a", 4_000));
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
