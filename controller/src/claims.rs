//! Node claims: who owns a host Node, and the patches that claim and release it.
//!
//! The label pair `owner-namespace`/`owner-name` is the truth for "who owns this node";
//! the UID annotation tells our claim apart from one left by a deleted VirtualCluster of
//! the same name. Every patch carries the Node's resourceVersion, so two controllers (or
//! two workers) racing for one node cannot both win: the loser gets a 409.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Taint};
use serde_json::{Value, json};
use vc_api::constants::{
    CONTROL_PLANE_NODE_LABELS, NODE_CLAIM_TAINT_KEY, NODE_OWNER_NAME_LABEL,
    NODE_OWNER_NAMESPACE_LABEL, NODE_OWNER_UID_ANNOTATION,
};

/// The VirtualCluster that claims nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimant {
    /// Namespace of the VirtualCluster.
    pub namespace: String,
    /// Name of the VirtualCluster.
    pub name: String,
    /// UID of the VirtualCluster.
    pub uid: String,
}

/// Who holds a Node, as its labels and annotation say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// No owner labels.
    Nobody,
    /// Our labels and our UID.
    Us,
    /// Our labels with another (or no) UID: left by a deleted VirtualCluster of our name.
    /// Names are unique while an object exists, so that claim cannot be live.
    StaleNamesake,
    /// Another VirtualCluster.
    Other {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// Reads the owner of `node` relative to `claimant`.
pub fn holder(node: &Node, claimant: &Claimant) -> Holder {
    let labels = node.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|labels| labels.get(key)).cloned();
    let (namespace, name) = (
        label(NODE_OWNER_NAMESPACE_LABEL),
        label(NODE_OWNER_NAME_LABEL),
    );
    if namespace.is_none() && name.is_none() {
        return Holder::Nobody;
    }
    let namespace = namespace.unwrap_or_default();
    let name = name.unwrap_or_default();
    if namespace != claimant.namespace || name != claimant.name {
        return Holder::Other { namespace, name };
    }
    let uid = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(NODE_OWNER_UID_ANNOTATION));
    if uid.map(String::as_str) == Some(claimant.uid.as_str()) {
        Holder::Us
    } else {
        Holder::StaleNamesake
    }
}

/// What to do with a Node listed in `spec.promoteResources.nodes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimDecision {
    /// Write our claim (free node, stale namesake claim, or our claim missing its taint).
    Claim,
    /// Already fully ours: nothing to write.
    Keep,
    /// Held by another VirtualCluster: never taken.
    Conflict {
        /// Owner's namespace.
        namespace: String,
        /// Owner's name.
        name: String,
    },
    /// A host control-plane node: never promoted.
    ControlPlane,
}

/// Decides how to treat a listed node.
pub fn decide_claim(node: &Node, claimant: &Claimant) -> ClaimDecision {
    if is_control_plane(node) {
        return ClaimDecision::ControlPlane;
    }
    match holder(node, claimant) {
        Holder::Nobody | Holder::StaleNamesake => ClaimDecision::Claim,
        Holder::Us if has_our_taint(node, claimant) => ClaimDecision::Keep,
        Holder::Us => ClaimDecision::Claim,
        Holder::Other { namespace, name } => ClaimDecision::Conflict { namespace, name },
    }
}

/// Whether a node we are not (or no longer) asked for must be released: only when the
/// claim is still ours, so we never strip another tenant's (or a namesake's) claim.
pub fn should_release(node: &Node, claimant: &Claimant) -> bool {
    holder(node, claimant) == Holder::Us
}

fn is_control_plane(node: &Node) -> bool {
    node.metadata.labels.as_ref().is_some_and(|labels| {
        CONTROL_PLANE_NODE_LABELS
            .iter()
            .any(|label| labels.contains_key(*label))
    })
}

fn has_our_taint(node: &Node, claimant: &Claimant) -> bool {
    taints(node).iter().any(|taint| {
        taint.key == NODE_CLAIM_TAINT_KEY
            && taint.effect == "NoSchedule"
            && taint.value.as_deref() == Some(claimant.name.as_str())
    })
}

fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|spec| spec.taints.as_deref())
        .unwrap_or_default()
}

/// The node's taints without any claim taint.
fn foreign_taints(node: &Node) -> Vec<Taint> {
    taints(node)
        .iter()
        .filter(|taint| taint.key != NODE_CLAIM_TAINT_KEY)
        .cloned()
        .collect()
}

fn resource_version(node: &Node) -> Value {
    node.metadata
        .resource_version
        .clone()
        .map_or(Value::Null, Value::String)
}

/// JSON merge patch that claims `node`: labels, UID annotation and `NoSchedule` taint,
/// with the node's resourceVersion as precondition.
pub fn claim_patch(node: &Node, claimant: &Claimant) -> Value {
    let mut taints = foreign_taints(node);
    taints.push(Taint {
        key: NODE_CLAIM_TAINT_KEY.to_owned(),
        value: Some(claimant.name.clone()),
        effect: "NoSchedule".to_owned(),
        time_added: None,
    });
    json!({
        "metadata": {
            "resourceVersion": resource_version(node),
            "labels": {
                NODE_OWNER_NAMESPACE_LABEL: claimant.namespace,
                NODE_OWNER_NAME_LABEL: claimant.name,
            },
            "annotations": { NODE_OWNER_UID_ANNOTATION: claimant.uid },
        },
        "spec": { "taints": taints },
    })
}

/// JSON merge patch that removes our claim from `node`, with the node's resourceVersion
/// as precondition; other taints, labels and annotations stay.
pub fn release_patch(node: &Node) -> Value {
    let taints = foreign_taints(node);
    let taints = if taints.is_empty() {
        Value::Null
    } else {
        json!(taints)
    };
    json!({
        "metadata": {
            "resourceVersion": resource_version(node),
            "labels": { NODE_OWNER_NAMESPACE_LABEL: null, NODE_OWNER_NAME_LABEL: null },
            "annotations": { NODE_OWNER_UID_ANNOTATION: null },
        },
        "spec": { "taints": taints },
    })
}

/// The outcome of the claim step for one VirtualCluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimReport {
    /// Listed nodes that are ours after this step, sorted.
    pub held: Vec<String>,
    /// Listed nodes owned by someone else: node → `NS/NAME` of the owner.
    pub conflicts: BTreeMap<String, String>,
    /// Listed nodes that do not exist (yet).
    pub missing: Vec<String>,
    /// Listed nodes that are host control-plane nodes.
    pub control_plane: Vec<String>,
    /// Nodes whose write lost a race (409); re-read and retried on the next reconcile.
    pub raced: Vec<String>,
}

impl ClaimReport {
    /// Whether every listed node is ours.
    pub fn all_held(&self) -> bool {
        self.conflicts.is_empty()
            && self.missing.is_empty()
            && self.control_plane.is_empty()
            && self.raced.is_empty()
    }

    /// Reason and message for the `NodesPromoted=False` condition, when not all are held.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if let Some((node, owner)) = self.conflicts.iter().next() {
            let mut message = format!("node {node:?} already belongs to VirtualCluster {owner}");
            for (node, owner) in self.conflicts.iter().skip(1) {
                message.push_str(&format!(
                    "; node {node:?} already belongs to VirtualCluster {owner}"
                ));
            }
            return Some(("NodeConflict", message));
        }
        if !self.control_plane.is_empty() {
            return Some((
                "ControlPlaneNode",
                format!(
                    "nodes {:?} are host control-plane nodes and are never promoted; remove them from spec.promoteResources.nodes",
                    self.control_plane
                ),
            ));
        }
        if !self.missing.is_empty() {
            return Some((
                "NodeNotFound",
                format!(
                    "nodes {:?} do not exist in the host cluster; waiting for them to join",
                    self.missing
                ),
            ));
        }
        if !self.raced.is_empty() {
            return Some((
                "ClaimRetrying",
                format!(
                    "nodes {:?} changed while being claimed; retrying",
                    self.raced
                ),
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn claimant() -> Claimant {
        Claimant {
            namespace: "team-a".into(),
            name: "prod".into(),
            uid: "uid-1".into(),
        }
    }

    /// `node1` as read back from the host: a resourceVersion, the owner's uid when
    /// `uid` is given, and `taints`.
    fn claimable_node(labels: &[(&str, &str)], uid: Option<&str>, taints: Vec<Taint>) -> Node {
        let mut node = vc_api::testing::node("node1", labels);
        node.metadata.resource_version = Some("42".into());
        node.metadata.annotations =
            uid.map(|uid| [(NODE_OWNER_UID_ANNOTATION.to_string(), uid.to_string())].into());
        node.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            taints: Some(taints),
            ..Default::default()
        });
        node
    }

    fn our_taint(value: &str) -> Taint {
        Taint {
            key: NODE_CLAIM_TAINT_KEY.into(),
            value: Some(value.into()),
            effect: "NoSchedule".into(),
            time_added: None,
        }
    }

    fn other_taint() -> Taint {
        Taint {
            key: "gpu".into(),
            value: None,
            effect: "NoExecute".into(),
            time_added: None,
        }
    }

    const OURS: [(&str, &str); 2] = [
        (NODE_OWNER_NAMESPACE_LABEL, "team-a"),
        (NODE_OWNER_NAME_LABEL, "prod"),
    ];

    #[test]
    fn unclaimed_node_is_claimed() {
        let free = claimable_node(&[("zone", "a")], None, vec![]);
        assert_eq!(decide_claim(&free, &claimant()), ClaimDecision::Claim);
        assert!(!should_release(&free, &claimant()));
    }

    #[test]
    fn our_complete_claim_is_kept_and_an_untainted_one_repaired() {
        let ours = claimable_node(&OURS, Some("uid-1"), vec![our_taint("prod")]);
        assert_eq!(decide_claim(&ours, &claimant()), ClaimDecision::Keep);
        assert!(should_release(&ours, &claimant()));
        let untainted = claimable_node(&OURS, Some("uid-1"), vec![]);
        assert_eq!(decide_claim(&untainted, &claimant()), ClaimDecision::Claim);
    }

    #[test]
    fn another_owner_is_a_conflict_and_never_released() {
        let theirs = claimable_node(
            &[
                (NODE_OWNER_NAMESPACE_LABEL, "team-b"),
                (NODE_OWNER_NAME_LABEL, "dev"),
            ],
            Some("uid-2"),
            vec![our_taint("dev")],
        );
        assert_eq!(
            decide_claim(&theirs, &claimant()),
            ClaimDecision::Conflict {
                namespace: "team-b".into(),
                name: "dev".into()
            }
        );
        assert!(!should_release(&theirs, &claimant()));
        let same_name_other_namespace = claimable_node(
            &[
                (NODE_OWNER_NAMESPACE_LABEL, "team-b"),
                (NODE_OWNER_NAME_LABEL, "prod"),
            ],
            Some("uid-1"),
            vec![],
        );
        assert!(matches!(
            decide_claim(&same_name_other_namespace, &claimant()),
            ClaimDecision::Conflict { .. }
        ));
    }

    #[test]
    fn stale_namesake_claim_is_taken_over_but_not_released() {
        let stale = claimable_node(&OURS, Some("uid-old"), vec![our_taint("prod")]);
        assert_eq!(holder(&stale, &claimant()), Holder::StaleNamesake);
        assert_eq!(decide_claim(&stale, &claimant()), ClaimDecision::Claim);
        assert!(!should_release(&stale, &claimant()));
    }

    #[test]
    fn control_plane_nodes_are_never_claimed() {
        let master = claimable_node(
            &[("node-role.kubernetes.io/control-plane", "")],
            None,
            vec![],
        );
        assert_eq!(
            decide_claim(&master, &claimant()),
            ClaimDecision::ControlPlane
        );
    }

    #[test]
    fn claim_patch_carries_resource_version_labels_uid_and_keeps_other_taints() {
        let free = claimable_node(&[], None, vec![other_taint(), our_taint("old")]);
        let patch = claim_patch(&free, &claimant());
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(
            patch["metadata"]["labels"][NODE_OWNER_NAMESPACE_LABEL],
            "team-a"
        );
        assert_eq!(patch["metadata"]["labels"][NODE_OWNER_NAME_LABEL], "prod");
        assert_eq!(
            patch["metadata"]["annotations"][NODE_OWNER_UID_ANNOTATION],
            "uid-1"
        );
        assert_eq!(
            patch["spec"]["taints"],
            json!([
                {"key": "gpu", "effect": "NoExecute"},
                {"key": NODE_CLAIM_TAINT_KEY, "value": "prod", "effect": "NoSchedule"}
            ])
        );
    }

    #[test]
    fn release_patch_removes_only_our_claim() {
        let ours = claimable_node(&OURS, Some("uid-1"), vec![other_taint(), our_taint("prod")]);
        let patch = release_patch(&ours);
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(
            patch["metadata"]["labels"],
            json!({NODE_OWNER_NAMESPACE_LABEL: null, NODE_OWNER_NAME_LABEL: null})
        );
        assert_eq!(
            patch["spec"]["taints"],
            json!([{"key": "gpu", "effect": "NoExecute"}])
        );
        let only_ours = claimable_node(&OURS, Some("uid-1"), vec![our_taint("prod")]);
        assert_eq!(release_patch(&only_ours)["spec"]["taints"], Value::Null);
    }

    #[test]
    fn conflict_message_names_node_and_owner() {
        let report = ClaimReport {
            conflicts: [("node7".to_string(), "team-b/dev".to_string())].into(),
            ..ClaimReport::default()
        };
        assert!(!report.all_held());
        assert_eq!(
            report.problem(),
            Some((
                "NodeConflict",
                "node \"node7\" already belongs to VirtualCluster team-b/dev".to_string()
            ))
        );
        assert_eq!(ClaimReport::default().problem(), None);
    }
}
