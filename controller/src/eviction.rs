//! `--claimed-node-pods=evict`: the pods already running on a node when it is claimed
//! are evicted through the Eviction API, so the tenant's node runs nobody else's
//! workloads. Which pods qualify is `vc_api::eviction::kept`; this is the I/O.
//!
//! Evictions go through the apiserver's PodDisruptionBudget check: a pod its budget
//! protects is refused (429) and tried again on a later reconcile, with backoff, never
//! deleted around the budget.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, EvictParams, ListParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use vc_api::eviction::{Claim, kept};

use crate::error::{is_conflict, is_not_found};

/// Why the pods on a claimed node could not be evicted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Listing the pods running on a claimed Node failed.
    #[error("failed to list the pods on claimed node {node:?}")]
    ListNodePods {
        /// The node.
        node: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// Evicting a pod failed (other than a PodDisruptionBudget refusing it, which is
    /// waited out).
    #[error("failed to evict pod {pod} from claimed node {node:?}")]
    EvictPod {
        /// `NAMESPACE/NAME` of the pod.
        pod: String,
        /// The node.
        node: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
}

/// The host client evictions are sent with: one that does not retry a 429 itself.
///
/// kube's default client retries 429 answers for minutes (15 attempts, server-aware),
/// which is right for API priority and fairness but wrong for an eviction a disruption
/// budget refuses: the reconcile would hang on one pod. The refusal must come back at
/// once, to be reported and retried on the controller's own backoff.
#[derive(Clone)]
pub struct EvictionClient(pub Client);

impl EvictionClient {
    /// A client from `config` without kube's retry layer.
    pub fn from_config(mut config: kube::Config) -> kube::Result<Self> {
        config.default_retry = false;
        Client::try_from(config).map(Self)
    }
}

impl std::fmt::Debug for EvictionClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("EvictionClient")
    }
}

/// What one eviction pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EvictionReport {
    /// `NAMESPACE/NAME` of each pod evicted in this pass → its node.
    pub evicted: BTreeMap<String, String>,
    /// `NAMESPACE/NAME` of each pod an eviction was refused for (a disruption budget) →
    /// the node and the apiserver's reason.
    pub blocked: BTreeMap<String, (String, String)>,
}

impl EvictionReport {
    /// Whether pods that must go are still running on a claimed node.
    pub fn pending(&self) -> bool {
        !self.blocked.is_empty()
    }
}

/// Evicts from each of `nodes` (claimed by `claim`) every pod [`kept`] does not keep.
pub async fn evict_from_claimed(
    client: &EvictionClient,
    claim: &Claim<'_>,
    nodes: &[String],
) -> Result<EvictionReport, Error> {
    let mut report = EvictionReport::default();
    let EvictionClient(client) = client;
    let all: Api<Pod> = Api::all(client.clone());
    for node in nodes {
        let pods = all
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
            .map_err(|source| Error::ListNodePods {
                node: node.clone(),
                source,
            })?;
        for pod in pods.items.iter().filter(|pod| kept(pod, claim).is_none()) {
            let namespace = pod.namespace().unwrap_or_default();
            let name = pod.name_any();
            let key = format!("{namespace}/{name}");
            let params = EvictParams {
                delete_options: Some(DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: pod.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                }),
                ..EvictParams::default()
            };
            let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            match api.evict(&name, &params).await {
                Ok(_) => {
                    tracing::info!(pod = %key, node = %node, "evicted a pod from a claimed node");
                    report.evicted.insert(key, node.clone());
                }
                Err(kube::Error::Api(status)) if status.code == 429 => {
                    report
                        .blocked
                        .insert(key, (node.clone(), budget_reason(&status)));
                }
                // Gone, or replaced by a pod that is not the one judged.
                Err(error) if is_not_found(&error) || is_conflict(&error) => {}
                Err(source) => {
                    return Err(Error::EvictPod {
                        pod: key,
                        node: node.clone(),
                        source,
                    });
                }
            }
        }
    }
    Ok(report)
}

/// The apiserver's reason for a refused eviction: the disruption budget's cause when it
/// names one (`The disruption budget web needs 1 healthy pods and has 1 currently`),
/// else its message.
fn budget_reason(status: &kube::core::Status) -> String {
    status
        .details
        .as_ref()
        .and_then(|details| {
            details
                .causes
                .iter()
                .find(|cause| cause.reason == "DisruptionBudget")
        })
        .map(|cause| cause.message.clone())
        .filter(|message| !message.is_empty())
        .unwrap_or_else(|| status.message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_budgets_cause_when_it_has_one() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 429, "reason": "TooManyRequests",
            "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "details": {"causes": [{"reason": "DisruptionBudget",
                "message": "The disruption budget guarded needs 1 healthy pods and has 0 currently"}]}
        }))
        .unwrap();
        assert_eq!(
            budget_reason(&status),
            "The disruption budget guarded needs 1 healthy pods and has 0 currently"
        );
        let bare: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 429, "message": "too many requests"
        }))
        .unwrap();
        assert_eq!(budget_reason(&bare), "too many requests");
        let report = EvictionReport::default();
        assert!(!report.pending());
    }
}
