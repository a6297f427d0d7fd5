//! Errors of the reconcile chain: one variant per step, wrapping that step's own error.
//!
//! The variant alone gives the [`Step`]: the bounded `step` label of the error metric
//! and the action of the Warning Event. [`Error::is_transient`] decides between backing
//! off (the cluster may heal) and waiting for the VirtualCluster to change (retrying
//! cannot help). Messages name objects but never carry Secret contents: a `kube::Error`
//! only holds the apiserver's status message, and builder errors describe fields, not
//! keys.

use std::error::Error as _;
use std::fmt;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

use crate::reconcile::{claims, cleanup, kubeconfig, objects, pki, services, validate};

/// A step of the reconcile chain; the only values the `step` metric label can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// Adding or removing the finalizer.
    Finalizer,
    /// Turning the spec into the tenant and its objects.
    Validate,
    /// Claiming and releasing host nodes.
    ClaimNodes,
    /// Evicting what must leave the claimed nodes.
    Eviction,
    /// The etcd and kube-apiserver Services.
    Services,
    /// Certificates and keys.
    Pki,
    /// The control plane's NetworkPolicies, etcd, kube-apiserver,
    /// kube-controller-manager and kube-scheduler.
    ControlPlane,
    /// Reaching the tenant and publishing its admin kubeconfig.
    Kubeconfig,
    /// The clustertree Deployment and its host credential.
    Clustertree,
    /// Reading which promoted nodes the tenant shows, and its DNS.
    Promotion,
    /// Writing the VirtualCluster status.
    Status,
    /// Releasing nodes and removing cluster-scoped objects on delete.
    Cleanup,
}

impl Step {
    /// Every step, in chain order.
    pub const ALL: [Step; 12] = [
        Step::Finalizer,
        Step::Validate,
        Step::ClaimNodes,
        Step::Eviction,
        Step::Services,
        Step::Pki,
        Step::ControlPlane,
        Step::Kubeconfig,
        Step::Clustertree,
        Step::Promotion,
        Step::Status,
        Step::Cleanup,
    ];

    /// The metric label and the Event action of the step.
    const fn names(self) -> (&'static str, &'static str) {
        match self {
            Step::Finalizer => ("finalizer", "Finalize"),
            Step::Validate => ("validate", "Validate"),
            Step::ClaimNodes => ("claim_nodes", "ClaimNodes"),
            Step::Eviction => ("eviction", "EvictPods"),
            Step::Services => ("services", "ApplyServices"),
            Step::Pki => ("pki", "IssueCertificates"),
            Step::ControlPlane => ("control_plane", "ApplyControlPlane"),
            Step::Kubeconfig => ("kubeconfig", "PublishKubeconfig"),
            Step::Clustertree => ("clustertree", "ApplyClustertree"),
            Step::Promotion => ("promotion", "Promote"),
            Step::Status => ("status", "UpdateStatus"),
            Step::Cleanup => ("cleanup", "Cleanup"),
        }
    }

    /// The label value, as it appears in metrics.
    pub const fn as_str(self) -> &'static str {
        self.names().0
    }

    /// The `action` of an Event about this step.
    pub const fn action(self) -> &'static str {
        self.names().1
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

/// Why a reconcile of one VirtualCluster failed: the step, and that step's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The finalizer could not be added.
    #[error("failed to add the finalizer")]
    AddFinalizer {
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// The finalizer could not be removed.
    #[error("failed to remove the finalizer")]
    RemoveFinalizer {
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// The finalizer helper refused the object itself (no name, a bad finalizer path).
    #[error("failed to run the finalizer")]
    Finalizer {
        /// What the helper refused.
        #[source]
        source: Box<kube::runtime::finalizer::Error<Error>>,
    },

    /// The VirtualCluster cannot be provisioned as written; only an edit can fix it.
    #[error(transparent)]
    Validate(#[from] validate::Error),

    /// A listed node could not be claimed, or an unlisted one released.
    #[error("failed to claim the listed nodes")]
    ClaimNodes {
        /// What failed.
        #[from]
        source: claims::Error,
    },

    /// What must leave the claimed nodes could not be evicted.
    #[error("failed to evict pods from the claimed nodes")]
    Evict {
        /// What failed.
        #[from]
        source: crate::eviction::Error,
    },

    /// The etcd or kube-apiserver Services could not be applied.
    #[error("failed to apply the etcd and kube-apiserver Services")]
    ApplyServices {
        /// What failed.
        #[from]
        source: services::Error,
    },

    /// The certificates and keys could not be read, issued or stored.
    #[error("failed to provide the certificates and keys")]
    Pki {
        /// What failed.
        #[from]
        source: pki::Error,
    },

    /// An object of the control plane could not be applied.
    #[error("failed to apply the control plane")]
    ApplyControlPlane {
        /// What failed.
        #[source]
        source: objects::ObjectError,
    },

    /// The tenant could not be reached, or its admin kubeconfig not published.
    #[error("failed to publish the admin kubeconfig")]
    PublishKubeconfig {
        /// What failed.
        #[from]
        source: kubeconfig::Error,
    },

    /// An object of the clustertree could not be applied.
    #[error("failed to apply the clustertree")]
    ApplyClustertree {
        /// What failed.
        #[source]
        source: objects::ObjectError,
    },

    /// What the tenant shows (its nodes, its DNS) could not be read.
    #[error("failed to read what the tenant shows")]
    Promote {
        /// What failed.
        #[source]
        source: crate::tenant::Error,
    },

    /// The status subresource could not be patched.
    #[error("failed to update the status")]
    UpdateStatus {
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// The tenant could not be cleaned up.
    #[error("failed to clean up the tenant")]
    Cleanup {
        /// What failed.
        #[from]
        source: cleanup::Error,
    },
}

/// Result of a reconcile step.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The step that failed: the `step` label of the error metric.
    pub fn step(&self) -> Step {
        match self {
            Error::AddFinalizer { .. }
            | Error::RemoveFinalizer { .. }
            | Error::Finalizer { .. } => Step::Finalizer,
            Error::Validate(_) => Step::Validate,
            Error::ClaimNodes { .. } => Step::ClaimNodes,
            Error::Evict { .. } => Step::Eviction,
            Error::ApplyServices { .. } => Step::Services,
            Error::Pki { .. } => Step::Pki,
            Error::ApplyControlPlane { .. } => Step::ControlPlane,
            Error::PublishKubeconfig { .. } => Step::Kubeconfig,
            Error::ApplyClustertree { .. } => Step::Clustertree,
            Error::Promote { .. } => Step::Promotion,
            Error::UpdateStatus { .. } => Step::Status,
            Error::Cleanup { .. } => Step::Cleanup,
        }
    }

    /// Whether retrying later can succeed without anyone editing the VirtualCluster.
    ///
    /// API errors are transient unless the apiserver called the request itself invalid
    /// (400, 422) or forbidden (403, an RBAC problem an operator must fix, but which a
    /// redeploy of the chart fixes without touching the object, so it is retried too,
    /// slowly). A spec that cannot be built, certificates that cannot be issued and a
    /// kubeconfig that cannot be rendered wait for a change. Anything else (an object
    /// that is not ours, a tenant that does not answer) may heal by itself.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Validate(_) | Error::Finalizer { .. } => false,
            _ => {
                let mut cause = self.source();
                while let Some(error) = cause {
                    if let Some(api) = error.downcast_ref::<kube::Error>() {
                        return api_error_is_transient(api);
                    }
                    if error.is::<crate::pki::PkiError>() || error.is::<serde_yaml::Error>() {
                        return false;
                    }
                    cause = error.source();
                }
                true
            }
        }
    }

    /// The refusal, when an object the tenant needs is someone else's: the status says
    /// so while the controller keeps retrying, since removing that object (not an edit of
    /// the VirtualCluster) is what lets the tenant continue.
    pub fn foreign_object(&self) -> Option<String> {
        let object = match self {
            Error::ApplyServices { source } => source.object(),
            Error::Pki { source } => source.object(),
            Error::ApplyControlPlane { source } | Error::ApplyClustertree { source } => {
                Some(source)
            }
            Error::PublishKubeconfig { source } => source.object(),
            _ => None,
        };
        object
            .filter(|object| object.is_not_ours())
            .map(ToString::to_string)
    }

    /// The invalid-spec details, when this error means the object must change.
    pub fn invalid_reason(&self) -> Option<String> {
        (!self.is_transient()).then(|| self.report())
    }

    /// The error and every cause under it, on one line ([`report`]).
    pub fn report(&self) -> String {
        report(self)
    }
}

/// An error and every cause under it, on one line: what a status message, an Event note
/// or a log line shows. A cause whose text its parent already quotes (kube's own errors
/// repeat their sources) is not repeated.
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let line = error.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = error.source();
    }
    text
}

/// 400 and 422 say the request can never succeed as sent; everything else (conflicts,
/// throttling, server errors, timeouts, connection resets) may heal by itself.
fn api_error_is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => !matches!(status.code, 400 | 422),
        _ => true,
    }
}

/// Whether an API error is a 409: a stale resourceVersion (`Conflict`) or a name taken
/// (`AlreadyExists`), which kube-core tells apart.
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_conflict() || status.is_already_exists())
}

/// Whether an API error is a 404 Not Found.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_not_found())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn api_error(code: u16) -> kube::Error {
        let reason = match code {
            404 => "NotFound",
            409 => "Conflict",
            _ => "Test",
        };
        kube::Error::Api(Box::new(
            kube::core::Status::failure("test", reason).with_code(code),
        ))
    }

    fn claim_failed(code: u16) -> Error {
        Error::ClaimNodes {
            source: claims::Error::Claim {
                node: "n1".into(),
                source: api_error(code),
            },
        }
    }

    #[test]
    fn api_errors_are_transient_except_bad_requests() {
        for code in [409, 429, 500, 503, 504, 403, 404] {
            assert!(
                claim_failed(code).is_transient(),
                "{code} should be retried"
            );
        }
        for code in [400, 422] {
            assert!(!claim_failed(code).is_transient(), "{code} should wait");
        }
    }

    #[test]
    fn spec_errors_wait_for_a_change_and_say_why() {
        let error = Error::from(validate::Error::InvalidSpec {
            field: "spec.controlPlane.etcd.replicas".into(),
            reason: "must be 1, 3 or 5".into(),
        });
        assert!(!error.is_transient());
        assert_eq!(error.step(), Step::Validate);
        assert_eq!(
            error.invalid_reason().as_deref(),
            Some("invalid VirtualCluster: spec.controlPlane.etcd.replicas: must be 1, 3 or 5")
        );
        let transient = Error::PublishKubeconfig {
            source: kubeconfig::Error::Reach {
                source: crate::tenant::Error::NotReady {
                    endpoint: "https://127.100.0.1:6443".into(),
                    answer: "[-]etcd failed".into(),
                },
            },
        };
        assert_eq!(transient.invalid_reason(), None);
    }

    /// The report walks the whole chain once: the step, the object, the apiserver.
    #[test]
    fn the_report_names_the_step_the_object_and_the_answer_once() {
        let error = Error::ApplyControlPlane {
            source: objects::ObjectError::Apply {
                kind: "StatefulSet",
                name: "team-a/t-etcd".into(),
                source: api_error(500),
            },
        };
        assert!(error.is_transient());
        assert_eq!(error.step(), Step::ControlPlane);
        let report = error.report();
        assert!(
            report.starts_with(
                "failed to apply the control plane: failed to apply StatefulSet \"team-a/t-etcd\": "
            ),
            "{report}"
        );
        assert_eq!(report.matches("test: Test").count(), 1, "{report}");
    }

    #[test]
    fn only_objects_of_someone_else_are_reported_as_foreign() {
        let foreign = Error::ApplyClustertree {
            source: objects::ObjectError::NotOurs {
                kind: "Namespace",
                name: "vc-a-b".into(),
                holder: "someone outside kosmos-vc".into(),
            },
        };
        assert!(foreign.is_transient());
        let message = foreign.foreign_object().unwrap_or_default();
        assert!(
            message.starts_with("Namespace \"vc-a-b\" already exists and belongs to someone outside kosmos-vc, not to this VirtualCluster"),
            "{message}"
        );
        assert_eq!(claim_failed(500).foreign_object(), None);
    }

    #[test]
    fn conflicts_and_not_found_follow_the_status_reason() {
        assert!(is_conflict(&api_error(409)));
        assert!(is_not_found(&api_error(404)));
        let taken = kube::Error::Api(Box::new(
            kube::core::Status::failure("exists", "AlreadyExists").with_code(409),
        ));
        assert!(is_conflict(&taken) && !is_not_found(&taken));
        assert!(!is_conflict(&api_error(500)));
    }

    #[test]
    fn step_labels_and_actions_are_unique() {
        let labels: std::collections::BTreeSet<&str> =
            Step::ALL.iter().map(|step| step.as_str()).collect();
        let actions: std::collections::BTreeSet<&str> =
            Step::ALL.iter().map(|step| step.action()).collect();
        assert_eq!(labels.len(), Step::ALL.len());
        assert_eq!(actions.len(), Step::ALL.len());
        assert!(
            labels
                .iter()
                .all(|label| label.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
    }
}
