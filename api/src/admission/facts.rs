//! The few facts about Nodes and VirtualClusters that admission needs.
//!
//! A whole Node object is tens of kilobytes; at 50,000 nodes the webhook would hold
//! gigabytes. These structs keep only what the rules read.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Node;

use super::quantity::{parse_quantity, quantity_milli};
use crate::VirtualCluster;
use crate::constants::{
    CONTROL_PLANE_NODE_LABELS, NODE_OWNER_NAME_LABEL, NODE_OWNER_NAMESPACE_LABEL,
};

/// Identity of a VirtualCluster: its namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterKey {
    /// Namespace of the VirtualCluster.
    pub namespace: String,
    /// Name of the VirtualCluster.
    pub name: String,
}

impl ClusterKey {
    /// The key of `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ClusterKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        ClusterName::from(self).fmt(formatter)
    }
}

/// A VirtualCluster's namespace and name, borrowed: the rules look up and compare the
/// reviewed VirtualCluster on every request, and a [`ClusterKey`] would copy both names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClusterName<'a> {
    /// Namespace of the VirtualCluster.
    pub(crate) namespace: &'a str,
    /// Name of the VirtualCluster.
    pub(crate) name: &'a str,
}

impl ClusterName<'_> {
    /// Whether `key` names this VirtualCluster.
    pub(crate) fn is(&self, key: &ClusterKey) -> bool {
        key.namespace == self.namespace && key.name == self.name
    }
}

impl<'a> From<&'a ClusterKey> for ClusterName<'a> {
    fn from(key: &'a ClusterKey) -> Self {
        Self {
            namespace: &key.namespace,
            name: &key.name,
        }
    }
}

impl fmt::Display for ClusterName<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.namespace, self.name)
    }
}

/// Resource amounts by resource name, in milli-units (cpu `"1"` is 1000).
///
/// Zero amounts are never stored, so two equal totals compare equal however they were
/// reached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceAmounts(pub BTreeMap<String, i128>);

impl ResourceAmounts {
    /// No resources at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// The amount of `resource`, zero when absent.
    pub fn get(&self, resource: &str) -> i128 {
        self.0.get(resource).copied().unwrap_or(0)
    }

    /// Adds `amount` of `resource`; an entry that reaches zero disappears. Saturates
    /// rather than overflow, though parsed quantities are bounded far below that.
    pub fn add_amount(&mut self, resource: &str, amount: i128) {
        if amount == 0 {
            return;
        }
        match self.0.get_mut(resource) {
            Some(current) => {
                *current = current.saturating_add(amount);
                if *current == 0 {
                    self.0.remove(resource);
                }
            }
            None => {
                self.0.insert(resource.to_owned(), amount);
            }
        }
    }

    /// Adds every amount of `other`.
    pub fn add(&mut self, other: &ResourceAmounts) {
        for (resource, amount) in &other.0 {
            self.add_amount(resource, *amount);
        }
    }

    /// Subtracts every amount of `other`.
    pub fn subtract(&mut self, other: &ResourceAmounts) {
        for (resource, amount) in &other.0 {
            self.add_amount(resource, -*amount);
        }
    }

    /// Whether no resource has a non-zero amount.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(resource, amount)` pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i128)> {
        self.0
            .iter()
            .map(|(resource, amount)| (resource.as_str(), *amount))
    }
}

impl<Name: Into<String>> FromIterator<(Name, i128)> for ResourceAmounts {
    fn from_iter<Items: IntoIterator<Item = (Name, i128)>>(items: Items) -> Self {
        let mut amounts = Self::new();
        for (resource, amount) in items {
            amounts.add_amount(&resource.into(), amount);
        }
        amounts
    }
}

/// What admission needs to know about one host Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    /// Node name.
    pub name: String,
    /// The Ready condition is `True`.
    pub ready: bool,
    /// The node is cordoned (`spec.unschedulable`).
    pub unschedulable: bool,
    /// The node carries a control-plane role label; such nodes are never promoted.
    pub control_plane: bool,
    /// `status.allocatable`, positive amounts only.
    pub allocatable: ResourceAmounts,
    /// The VirtualCluster whose claim labels the node carries.
    pub claimed_by: Option<ClusterKey>,
}

impl NodeFacts {
    /// Extracts the facts from a Node as the apiserver serves it. Allocatable amounts
    /// that do not parse are left out: no kubelet reports them, and counting them as zero
    /// is the safe side for quota.
    pub fn from_node(node: &Node) -> Self {
        let labels = node.metadata.labels.as_ref();
        let label = |key: &str| {
            labels
                .and_then(|labels| labels.get(key))
                .filter(|value| !value.is_empty())
        };
        let claimed_by = match (
            label(NODE_OWNER_NAMESPACE_LABEL),
            label(NODE_OWNER_NAME_LABEL),
        ) {
            (Some(namespace), Some(name)) => Some(ClusterKey::new(namespace, name)),
            _ => None,
        };
        let control_plane = labels.is_some_and(|labels| {
            CONTROL_PLANE_NODE_LABELS
                .iter()
                .any(|role| labels.contains_key(*role))
        });
        let status = node.status.as_ref();
        let ready = status
            .and_then(|status| status.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|condition| condition.type_ == "Ready" && condition.status == "True")
            });
        let allocatable = status
            .and_then(|status| status.allocatable.as_ref())
            .map(|allocatable| {
                allocatable
                    .iter()
                    .filter_map(|(resource, quantity)| {
                        let amount = parse_quantity(&quantity.0)
                            .ok()
                            .filter(|amount| *amount > 0)?;
                        Some((resource.as_str(), amount))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            ready,
            unschedulable: node
                .spec
                .as_ref()
                .and_then(|spec| spec.unschedulable)
                .unwrap_or(false),
            control_plane,
            allocatable,
            claimed_by,
        }
    }

    /// Whether the node can give capacity to the shared pool, ownership aside.
    pub fn can_serve_pool(&self) -> bool {
        self.ready && !self.unschedulable && !self.control_plane
    }
}

/// What admission needs to know about one VirtualCluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterFacts {
    /// Namespace and name.
    pub key: ClusterKey,
    /// `spec.promoteResources.nodes`, sorted and without duplicates.
    pub nodes: Vec<String>,
    /// `spec.promoteResources.resources`, positive amounts only.
    pub pooled: ResourceAmounts,
}

impl ClusterFacts {
    /// Extracts the facts from a stored VirtualCluster; `None` without name and namespace.
    /// Quantities that do not parse or are not positive are skipped: admission refuses
    /// them, so they can only come from objects stored before the webhook ran.
    pub fn from_virtual_cluster(virtual_cluster: &VirtualCluster) -> Option<Self> {
        let key = ClusterKey::new(
            virtual_cluster.metadata.namespace.clone()?,
            virtual_cluster.metadata.name.clone()?,
        );
        let promote = &virtual_cluster.spec.promote_resources;
        let mut nodes = promote.nodes.clone();
        nodes.sort_unstable();
        nodes.dedup();
        let pooled = promote
            .resources
            .iter()
            .filter_map(|(resource, quantity)| {
                let amount = quantity_milli(quantity).ok().filter(|amount| *amount > 0)?;
                Some((resource.as_str(), amount))
            })
            .collect();
        Some(Self { key, nodes, pooled })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    /// `node7` with `labels`, its Ready condition at `ready`, four allocatable resources
    /// (one unparsable) and `unschedulable` as given.
    fn reporting_node(labels: &[(&str, &str)], ready: &str, unschedulable: Option<bool>) -> Node {
        Node {
            spec: Some(NodeSpec {
                unschedulable,
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                allocatable: Some(BTreeMap::from([
                    ("cpu".to_owned(), Quantity("3920m".into())),
                    ("memory".to_owned(), Quantity("16Gi".into())),
                    ("nvidia.com/gpu".to_owned(), Quantity("0".into())),
                    ("broken".to_owned(), Quantity("lots".into())),
                ])),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..NodeCondition::default()
                }]),
                ..NodeStatus::default()
            }),
            ..crate::testing::node("node7", labels)
        }
    }

    #[test]
    fn node_facts_read_readiness_roles_capacity_and_claim() {
        let facts = NodeFacts::from_node(&reporting_node(
            &[
                (NODE_OWNER_NAMESPACE_LABEL, "team-a"),
                (NODE_OWNER_NAME_LABEL, "prod"),
            ],
            "True",
            None,
        ));
        assert_eq!(facts.name, "node7");
        assert!(facts.ready);
        assert!(!facts.unschedulable);
        assert!(!facts.control_plane);
        assert_eq!(
            facts.allocatable,
            ResourceAmounts::from_iter([("cpu", 3_920), ("memory", 16 * (1_i128 << 30) * 1_000)])
        );
        assert_eq!(facts.claimed_by, Some(ClusterKey::new("team-a", "prod")));
        assert!(facts.can_serve_pool());
    }

    #[test]
    fn node_facts_see_not_ready_cordoned_control_plane_and_half_claims() {
        let facts = NodeFacts::from_node(&reporting_node(
            &[
                ("node-role.kubernetes.io/control-plane", ""),
                (NODE_OWNER_NAME_LABEL, "prod"),
            ],
            "Unknown",
            Some(true),
        ));
        assert!(!facts.ready);
        assert!(facts.unschedulable);
        assert!(facts.control_plane);
        assert_eq!(facts.claimed_by, None);
        assert!(!facts.can_serve_pool());
    }

    #[test]
    fn cluster_facts_need_a_name_and_skip_what_cannot_be_admitted() {
        let mut cluster = VirtualCluster::new("prod", Default::default());
        assert_eq!(ClusterFacts::from_virtual_cluster(&cluster), None);
        cluster.metadata.namespace = Some("team-a".into());
        cluster.spec.promote_resources.nodes = vec!["b".into(), "a".into(), "b".into()];
        cluster.spec.promote_resources.resources = BTreeMap::from([
            ("cpu".to_owned(), 10.into()),
            ("memory".to_owned(), "1Gi".into()),
            ("pods".to_owned(), "many".into()),
            ("ephemeral-storage".to_owned(), "-1".into()),
        ]);
        let facts = ClusterFacts::from_virtual_cluster(&cluster).unwrap();
        assert_eq!(facts.key.to_string(), "team-a/prod");
        assert_eq!(facts.nodes, ["a", "b"]);
        assert_eq!(
            facts.pooled,
            ResourceAmounts::from_iter([("cpu", 10_000), ("memory", (1_i128 << 30) * 1_000)])
        );
    }

    #[test]
    fn amounts_drop_entries_that_reach_zero() {
        let mut amounts = ResourceAmounts::from_iter([("cpu", 2_000)]);
        amounts.subtract(&ResourceAmounts::from_iter([("cpu", 2_000), ("memory", 5)]));
        assert_eq!(amounts, ResourceAmounts::from_iter([("memory", -5)]));
        amounts.add_amount("memory", 5);
        assert!(amounts.is_empty());
    }
}
