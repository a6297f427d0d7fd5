//! Errors of the reconcile chain, named after the step that failed.
//!
//! The [`Step`] of an error is the bounded `step` label of the error metric, and
//! [`Error::is_transient`] decides between backing off (the cluster may heal) and waiting
//! for the VirtualCluster to change (retrying cannot help).

use std::fmt;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// A step of the reconcile chain; the only values the `step` metric label can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// Adding or removing the finalizer.
    Finalizer,
    /// Claiming and releasing host nodes.
    ClaimNodes,
    /// Certificates and keys.
    Pki,
    /// The etcd StatefulSet and its Services.
    Etcd,
    /// The kube-apiserver Deployment and Service.
    Apiserver,
    /// kube-controller-manager and kube-scheduler.
    ControlPlane,
    /// Probing the tenant and publishing its admin kubeconfig.
    Kubeconfig,
    /// The clustertree Deployment and its host credential.
    Clustertree,
    /// Reading which promoted nodes the tenant shows.
    Promotion,
    /// Writing the VirtualCluster status.
    Status,
    /// Releasing nodes and removing cluster-scoped objects on delete.
    Cleanup,
}

impl Step {
    /// Every step, in chain order.
    pub const ALL: [Step; 11] = [
        Step::Finalizer,
        Step::ClaimNodes,
        Step::Pki,
        Step::Etcd,
        Step::Apiserver,
        Step::ControlPlane,
        Step::Kubeconfig,
        Step::Clustertree,
        Step::Promotion,
        Step::Status,
        Step::Cleanup,
    ];

    /// The label value, as it appears in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Finalizer => "finalizer",
            Step::ClaimNodes => "claim_nodes",
            Step::Pki => "pki",
            Step::Etcd => "etcd",
            Step::Apiserver => "apiserver",
            Step::ControlPlane => "control_plane",
            Step::Kubeconfig => "kubeconfig",
            Step::Clustertree => "clustertree",
            Step::Promotion => "promotion",
            Step::Status => "status",
            Step::Cleanup => "cleanup",
        }
    }
}

impl EncodeLabelValue for Step {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Why a reconcile of one VirtualCluster failed.
///
/// Messages name objects but never carry Secret contents: a `kube::Error` only holds
/// the apiserver's status message, and builder errors describe fields, not keys.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The finalizer could not be added or removed.
    #[error("failed to update the finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    /// The VirtualCluster cannot be provisioned as written; only an edit can fix it.
    #[error("invalid VirtualCluster: {field}: {reason}")]
    InvalidSpec {
        /// The offending field, as a JSON path such as `spec.controlPlane.etcd.replicas`.
        field: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// The VirtualCluster's own namespace (its Pod Security level label) could not be read.
    #[error("failed to read namespace {namespace:?}: {source}")]
    ReadNamespace {
        /// The namespace.
        namespace: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// A host Node could not be read.
    #[error("failed to read node {node:?}: {source}")]
    ReadNode {
        /// The node.
        node: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// Writing our claim onto a Node failed (a 409 means someone else changed it first).
    #[error("failed to claim node {node:?}: {source}")]
    ClaimNode {
        /// The node.
        node: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// Listing the pods running on a claimed Node, to evict them, failed.
    #[error("failed to list the pods on claimed node {node:?}: {source}")]
    ListNodePods {
        /// The node.
        node: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// Evicting a pod from a claimed Node failed (other than a PodDisruptionBudget
    /// refusing it, which is waited out).
    #[error("failed to evict pod {pod} from claimed node {node:?}: {source}")]
    EvictPod {
        /// `NAMESPACE/NAME` of the pod.
        pod: String,
        /// The node.
        node: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// Removing our claim from a Node failed.
    #[error("failed to release node {node:?}: {source}")]
    ReleaseNode {
        /// The node.
        node: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// Certificates or keys could not be generated or parsed.
    #[error("failed to build certificates: {0}")]
    BuildPki(String),

    /// A desired object could not be rendered from the spec.
    #[error("failed to build the {what}: {reason}")]
    BuildObject {
        /// Which object.
        what: &'static str,
        /// Why.
        reason: String,
    },

    /// A Secret could not be read, created or applied.
    #[error("failed to write Secret {name:?}: {source}")]
    ApplySecret {
        /// The Secret.
        name: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// A host object of the control plane or clustertree could not be applied.
    #[error("failed to apply {kind} {name:?}: {source}")]
    ApplyObject {
        /// The step the object belongs to.
        step: Step,
        /// Kind of the object.
        kind: &'static str,
        /// Name of the object.
        name: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// An object the tenant needs exists under its name but is not this VirtualCluster's;
    /// it is neither adopted nor applied over, and the tenant waits until it is gone.
    #[error(
        "{kind} {name:?} already exists and belongs to {holder}, not to this VirtualCluster; kosmos-vc never takes over an object it did not create, so the tenant waits: remove or rename that {kind}, or recreate this VirtualCluster under another name"
    )]
    ForeignObject {
        /// The step the object belongs to.
        step: Step,
        /// Kind of the object.
        kind: &'static str,
        /// `NAMESPACE/NAME` of a namespaced object, the name of a cluster-scoped one.
        name: String,
        /// Who holds it.
        holder: String,
    },

    /// No client for the tenant apiserver could be built from the admin credential.
    #[error("failed to build a client for the tenant apiserver: {0}")]
    TenantClient(String),

    /// The tenant apiserver did not answer `/readyz` successfully.
    #[error("tenant apiserver at {endpoint} is not ready: {reason}")]
    ProbeTenant {
        /// The URL probed.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },

    /// `spec.kubeconfig` could not be written.
    #[error("failed to write spec.kubeconfig: {0}")]
    WriteKubeconfig(#[source] kube::Error),

    /// Reading the tenant's DNS Service or its EndpointSlices failed.
    #[error("failed to read the tenant's kube-system/kube-dns: {0}")]
    ReadTenantDns(#[source] kube::Error),

    /// Reading the tenant's nodes failed.
    #[error("failed to list nodes in the tenant: {0}")]
    ListTenantNodes(#[source] kube::Error),

    /// The status subresource could not be patched.
    #[error("failed to update status: {0}")]
    PatchStatus(#[source] kube::Error),

    /// The tenant's etcd claims could not be listed during cleanup.
    #[error("failed to list the etcd volume claims labelled {selector}: {source}")]
    ListVolumeClaims {
        /// The label selector.
        selector: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// One of the tenant's etcd claims could not be deleted during cleanup.
    #[error("failed to delete etcd volume claim {claim:?}: {source}")]
    DeleteVolumeClaim {
        /// Name of the claim.
        claim: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// A cluster-scoped object could not be deleted during cleanup.
    #[error("failed to delete {kind} {name:?}: {source}")]
    DeleteClusterScoped {
        /// Kind of the object.
        kind: &'static str,
        /// Name of the object.
        name: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
}

/// Result of a reconcile step.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The step that failed: the `step` label of the error metric.
    pub fn step(&self) -> Step {
        match self {
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(error)
                | kube::runtime::finalizer::Error::CleanupFailed(error) => error.step(),
                _ => Step::Finalizer,
            },
            Error::InvalidSpec { .. } | Error::PatchStatus(_) => Step::Status,
            Error::ReadNode { .. }
            | Error::ClaimNode { .. }
            | Error::ReleaseNode { .. }
            | Error::ListNodePods { .. }
            | Error::EvictPod { .. } => Step::ClaimNodes,
            Error::BuildPki(_) | Error::ApplySecret { .. } => Step::Pki,
            Error::BuildObject { .. } => Step::ControlPlane,
            Error::ReadNamespace { .. } => Step::Clustertree,
            Error::ApplyObject { step, .. } | Error::ForeignObject { step, .. } => *step,
            Error::TenantClient(_) | Error::ProbeTenant { .. } | Error::WriteKubeconfig(_) => {
                Step::Kubeconfig
            }
            Error::ListTenantNodes(_) | Error::ReadTenantDns(_) => Step::Promotion,
            Error::DeleteClusterScoped { .. }
            | Error::ListVolumeClaims { .. }
            | Error::DeleteVolumeClaim { .. } => Step::Cleanup,
        }
    }

    /// Whether retrying later can succeed without anyone editing the VirtualCluster.
    ///
    /// API errors are transient unless the apiserver called the request itself invalid
    /// (400, 422) or forbidden (403, an RBAC problem an operator must fix, but which a
    /// redeploy of the chart fixes without touching the object, so it is retried too,
    /// slowly). Build errors mean the spec cannot be rendered, so they wait for a change.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(error)
                | kube::runtime::finalizer::Error::CleanupFailed(error) => error.is_transient(),
                kube::runtime::finalizer::Error::AddFinalizer(source)
                | kube::runtime::finalizer::Error::RemoveFinalizer(source) => {
                    api_error_is_transient(source)
                }
                _ => false,
            },
            Error::InvalidSpec { .. } | Error::BuildObject { .. } | Error::BuildPki(_) => false,
            Error::ReadNode { source, .. }
            | Error::ReadNamespace { source, .. }
            | Error::ClaimNode { source, .. }
            | Error::ReleaseNode { source, .. }
            | Error::ListNodePods { source, .. }
            | Error::EvictPod { source, .. }
            | Error::ApplySecret { source, .. }
            | Error::ApplyObject { source, .. }
            | Error::DeleteClusterScoped { source, .. }
            | Error::ListVolumeClaims { source, .. }
            | Error::DeleteVolumeClaim { source, .. } => api_error_is_transient(source),
            Error::WriteKubeconfig(source)
            | Error::ListTenantNodes(source)
            | Error::ReadTenantDns(source)
            | Error::PatchStatus(source) => api_error_is_transient(source),
            Error::TenantClient(_) | Error::ProbeTenant { .. } | Error::ForeignObject { .. } => {
                true
            }
        }
    }

    /// The refusal, when an object the tenant needs is someone else's: the status says
    /// so while the controller keeps retrying, since removing that object (not an edit of
    /// the VirtualCluster) is what lets the tenant continue.
    pub fn foreign_object(&self) -> Option<String> {
        match self {
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(error)
                | kube::runtime::finalizer::Error::CleanupFailed(error) => error.foreign_object(),
                _ => None,
            },
            Error::ForeignObject { .. } => Some(self.to_string()),
            _ => None,
        }
    }

    /// The invalid-spec details, when this error means the object must change.
    pub fn invalid_reason(&self) -> Option<String> {
        match self {
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(error)
                | kube::runtime::finalizer::Error::CleanupFailed(error) => error.invalid_reason(),
                _ => None,
            },
            error if !error.is_transient() => Some(error.to_string()),
            _ => None,
        }
    }
}

/// 400 and 422 say the request can never succeed as sent; everything else (conflicts,
/// throttling, server errors, timeouts, connection resets) may heal by itself.
fn api_error_is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => !matches!(status.code, 400 | 422),
        _ => true,
    }
}

/// Whether an API error is a 409 Conflict (stale resourceVersion or AlreadyExists).
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Whether an API error is a 404 Not Found.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("test", "Test").with_code(code),
        ))
    }

    #[test]
    fn api_errors_are_transient_except_bad_requests() {
        for code in [409, 429, 500, 503, 504, 403, 404] {
            let error = Error::ClaimNode {
                node: "n1".into(),
                source: api_error(code),
            };
            assert!(error.is_transient(), "{code} should be retried");
        }
        for code in [400, 422] {
            let error = Error::ApplySecret {
                name: "s".into(),
                source: api_error(code),
            };
            assert!(!error.is_transient(), "{code} should wait for a change");
        }
    }

    #[test]
    fn spec_errors_wait_for_a_change_and_say_why() {
        let error = Error::InvalidSpec {
            field: "spec.controlPlane.etcd.replicas".into(),
            reason: "must be 1, 3 or 5".into(),
        };
        assert!(!error.is_transient());
        assert_eq!(
            error.invalid_reason().as_deref(),
            Some("invalid VirtualCluster: spec.controlPlane.etcd.replicas: must be 1, 3 or 5")
        );
        let transient = Error::ProbeTenant {
            endpoint: "https://127.100.0.1:6443".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(transient.invalid_reason(), None);
    }

    #[test]
    fn steps_come_through_the_finalizer_wrapper() {
        let inner = Error::ReleaseNode {
            node: "n1".into(),
            source: api_error(500),
        };
        let wrapped = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::CleanupFailed(
            inner,
        )));
        assert_eq!(wrapped.step(), Step::ClaimNodes);
        assert!(wrapped.is_transient());
        let add = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::AddFinalizer(
            api_error(409),
        )));
        assert_eq!(add.step(), Step::Finalizer);
        assert!(add.is_transient());
    }

    #[test]
    fn error_classification_picks_the_action() {
        let transient = Error::ApplyObject {
            step: Step::Etcd,
            kind: "StatefulSet",
            name: "t-etcd".into(),
            source: api_error(500),
        };
        assert!(transient.is_transient());
        assert_eq!(transient.step(), Step::Etcd);
        let invalid = Error::InvalidSpec {
            field: "spec".into(),
            reason: "bad".into(),
        };
        assert!(!invalid.is_transient());
    }

    #[test]
    fn step_labels_are_snake_case_and_unique() {
        let labels: std::collections::BTreeSet<&str> =
            Step::ALL.iter().map(|step| step.as_str()).collect();
        assert_eq!(labels.len(), Step::ALL.len());
        assert!(
            labels
                .iter()
                .all(|label| label.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
    }
}
