//! What happens to the pods already running on a node when a VirtualCluster claims it.
//!
//! The claim taints the node `NoSchedule`, which keeps new host pods off it but leaves
//! running ones in place, so a node the tenant believes is its own may still run other
//! people's workloads. The operator chooses (`vc-controller --claimed-node-pods`): keep
//! them, or evict them through the Eviction API. This module holds the pure rules: the
//! mode and which pods an eviction may touch.

use k8s_openapi::api::core::v1::{Pod, Toleration};

use crate::constants::NODE_CLAIM_TAINT_KEY;

/// Annotation the kubelet puts on the API copy (mirror pod) of a static pod; deleting or
/// evicting it does nothing to the pod the kubelet runs from its manifest.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// What the controller does with the pods already running on a node it claims.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClaimedNodePods {
    /// Leave them running: the claim only keeps new host pods off the node. The default,
    /// since evicting stops workloads the tenant's requester may not own and cannot be
    /// undone; an operator turns it on knowingly.
    #[default]
    Keep,
    /// Evict them through the Eviction API (PodDisruptionBudgets respected), except
    /// DaemonSet and mirror pods, pods that tolerate the claim, and the tenant's own.
    Evict,
}

impl ClaimedNodePods {
    /// The flag and chart value spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Evict => "evict",
        }
    }
}

impl std::fmt::Display for ClaimedNodePods {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// `--claimed-node-pods` holds neither `keep` nor `evict`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "--claimed-node-pods: {0:?} is not a mode; write keep (leave running pods) or evict (evict them through the Eviction API)"
)]
pub struct UnknownClaimedNodePods(pub String);

impl std::str::FromStr for ClaimedNodePods {
    type Err = UnknownClaimedNodePods;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "keep" => Ok(Self::Keep),
            "evict" => Ok(Self::Evict),
            other => Err(UnknownClaimedNodePods(other.to_owned())),
        }
    }
}

/// Why a pod on a claimed node is left running in `evict` mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    /// Run by a DaemonSet, whose controller ignores `NoSchedule` taints and would start
    /// it again at once (what `kubectl drain --ignore-daemonsets` leaves too).
    DaemonSet,
    /// The API copy of a static pod; the kubelet runs it from a manifest regardless.
    Mirror,
    /// It tolerates the claim taint, so it was meant to run on claimed nodes.
    ToleratesClaim,
    /// One of the tenant's own host pods, in its workload namespace.
    Tenant,
    /// Already finished or already being deleted: nothing left to evict.
    Done,
}

/// The claim whose node's pods are judged.
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    /// Name of the claiming VirtualCluster: the claim taint's value.
    pub name: &'a str,
    /// Its workload namespace `vc-NS-NAME`, where its own host pods run.
    pub workload_namespace: &'a str,
}

/// Whether `pod`, running on a node `claim` holds, is evicted in `evict` mode (`None`)
/// or kept, and why.
pub fn kept(pod: &Pod, claim: &Claim<'_>) -> Option<Kept> {
    let metadata = &pod.metadata;
    let phase = pod
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref());
    if metadata.deletion_timestamp.is_some() || matches!(phase, Some("Succeeded" | "Failed")) {
        return Some(Kept::Done);
    }
    if metadata.namespace.as_deref() == Some(claim.workload_namespace) {
        return Some(Kept::Tenant);
    }
    if metadata
        .annotations
        .as_ref()
        .is_some_and(|annotations| annotations.contains_key(MIRROR_POD_ANNOTATION))
    {
        return Some(Kept::Mirror);
    }
    if metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.kind == "DaemonSet" && owner.api_version.starts_with("apps/"))
    {
        return Some(Kept::DaemonSet);
    }
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.tolerations.as_deref())
        .unwrap_or_default();
    if tolerations
        .iter()
        .any(|toleration| tolerates_claim(toleration, claim.name))
    {
        return Some(Kept::ToleratesClaim);
    }
    None
}

/// Whether `toleration` tolerates the claim taint `vc.kosmos.io/owner=NAME:NoSchedule`,
/// by the kubelet's and scheduler's rule (an empty key with `Exists` tolerates every
/// taint; an empty effect every effect).
pub fn tolerates_claim(toleration: &Toleration, name: &str) -> bool {
    let effect_matches = matches!(toleration.effect.as_deref(), None | Some("" | "NoSchedule"));
    let key = toleration.key.as_deref().unwrap_or_default();
    let exists = toleration.operator.as_deref() == Some("Exists");
    if !effect_matches {
        return false;
    }
    if key.is_empty() {
        return exists;
    }
    key == NODE_CLAIM_TAINT_KEY
        && (exists || toleration.value.as_deref().unwrap_or_default() == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CLAIM: Claim<'static> = Claim {
        name: "prod",
        workload_namespace: "vc-team-a-prod",
    };

    fn pod(value: serde_json::Value) -> Pod {
        let mut base = json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"nodeName": "node1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running"},
        });
        merge(&mut base, value);
        serde_json::from_value(base).unwrap()
    }

    fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
        match (base, patch) {
            (serde_json::Value::Object(base), serde_json::Value::Object(patch)) => {
                for (key, value) in patch {
                    merge(base.entry(key).or_insert(serde_json::Value::Null), value);
                }
            }
            (base, patch) => *base = patch,
        }
    }

    #[test]
    fn an_ordinary_running_pod_is_evicted() {
        assert_eq!(kept(&pod(json!({})), &CLAIM), None);
        // Owned by a ReplicaSet, still evicted.
        let owned = pod(json!({"metadata": {"ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u", "controller": true}
        ]}}));
        assert_eq!(kept(&owned, &CLAIM), None);
    }

    #[test]
    fn daemon_set_mirror_tenant_and_finished_pods_are_kept() {
        let daemon = pod(json!({"metadata": {"ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "fluentd", "uid": "u", "controller": true}
        ]}}));
        assert_eq!(kept(&daemon, &CLAIM), Some(Kept::DaemonSet));
        let mirror = pod(json!({"metadata": {"annotations": {MIRROR_POD_ANNOTATION: "abc"}}}));
        assert_eq!(kept(&mirror, &CLAIM), Some(Kept::Mirror));
        let tenant = pod(json!({"metadata": {"namespace": "vc-team-a-prod"}}));
        assert_eq!(kept(&tenant, &CLAIM), Some(Kept::Tenant));
        // Another tenant's workload namespace is not this tenant's.
        let other_tenant = pod(json!({"metadata": {"namespace": "vc-team-a-dev"}}));
        assert_eq!(kept(&other_tenant, &CLAIM), None);
        let finished = pod(json!({"status": {"phase": "Succeeded"}}));
        assert_eq!(kept(&finished, &CLAIM), Some(Kept::Done));
        let deleting = pod(json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}));
        assert_eq!(kept(&deleting, &CLAIM), Some(Kept::Done));
    }

    #[test]
    fn pods_tolerating_the_claim_taint_are_kept() {
        let tolerating = |toleration: serde_json::Value| {
            kept(&pod(json!({"spec": {"tolerations": [toleration]}})), &CLAIM)
        };
        for toleration in [
            json!({"key": NODE_CLAIM_TAINT_KEY, "operator": "Exists"}),
            json!({"key": NODE_CLAIM_TAINT_KEY, "operator": "Equal", "value": "prod", "effect": "NoSchedule"}),
            json!({"key": NODE_CLAIM_TAINT_KEY, "value": "prod"}),
            json!({"operator": "Exists"}),
        ] {
            assert_eq!(
                tolerating(toleration.clone()),
                Some(Kept::ToleratesClaim),
                "{toleration}"
            );
        }
        for toleration in [
            // Another tenant's claim.
            json!({"key": NODE_CLAIM_TAINT_KEY, "value": "dev"}),
            // Another effect.
            json!({"key": NODE_CLAIM_TAINT_KEY, "operator": "Exists", "effect": "NoExecute"}),
            // Another key.
            json!({"key": "dedicated", "operator": "Exists"}),
            // An empty key needs Exists.
            json!({"operator": "Equal", "value": "prod"}),
        ] {
            assert_eq!(tolerating(toleration.clone()), None, "{toleration}");
        }
    }

    #[test]
    fn the_mode_reads_its_two_spellings_and_names_them_otherwise() {
        assert_eq!("keep".parse(), Ok(ClaimedNodePods::Keep));
        assert_eq!("evict".parse(), Ok(ClaimedNodePods::Evict));
        assert_eq!(ClaimedNodePods::default(), ClaimedNodePods::Keep);
        let error = "drain".parse::<ClaimedNodePods>().unwrap_err();
        assert!(error.to_string().contains("\"drain\""), "{error}");
        assert!(error.to_string().contains("keep") && error.to_string().contains("evict"));
        for mode in [ClaimedNodePods::Keep, ClaimedNodePods::Evict] {
            assert_eq!(mode.as_str().parse(), Ok(mode));
        }
    }
}
