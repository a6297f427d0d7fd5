//! The VirtualCluster status: conditions, phase and the rule that decides both.
//!
//! Everything here is pure. The reconciler computes the whole desired status, compares it
//! with what is stored, and writes only when they differ, so a settled tenant costs no
//! status writes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType};
use vc_api::{Phase, VirtualClusterStatus};

use crate::pki::{CA_EXPIRY_WARNING, CaKind, CaNotices};

/// Condition type saying whether the tenant's CAs are good for longer than
/// [`CA_EXPIRY_WARNING`]. It lives here rather than in `vc_api::condition_types` because
/// only this controller sets it and nothing reads it back.
pub const CERTIFICATE_AUTHORITIES_VALID: &str = "CertificateAuthoritiesValid";
/// Reason of the Warning Event sent when a CA enters [`CA_EXPIRY_WARNING`].
pub const CA_EXPIRING_REASON: &str = "CertificateAuthorityExpiring";

/// One condition as the reconciler wants it; timestamps are filled by [`set_condition`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    /// Condition type, from [`vc_api::condition_types`].
    pub type_: &'static str,
    /// True or False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable detail, escaped and bounded (`vc_api::text::sanitize`): it may
    /// quote a tenant apiserver's answer.
    pub message: String,
}

impl DesiredCondition {
    /// A condition with the given truth, reason and message.
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: vc_api::text::sanitize(&message.into(), vc_api::text::STATUS_MESSAGE_CHARS),
        }
    }
}

fn status_word(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// Upserts `desired` into `conditions`. `lastTransitionTime` moves only when the status
/// flips, as `metav1.Condition` requires; reason, message and observedGeneration follow
/// the latest observation.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    desired: &DesiredCondition,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = status_word(desired.status).to_owned();
    if let Some(existing) = conditions
        .iter_mut()
        .find(|condition| condition.type_ == desired.type_)
    {
        if existing.status != status {
            existing.last_transition_time = Time(now);
        }
        existing.status = status;
        existing.reason = desired.reason.clone();
        existing.message = desired.message.clone();
        existing.observed_generation = generation;
        return;
    }
    conditions.push(Condition {
        type_: desired.type_.to_owned(),
        status,
        reason: desired.reason.clone(),
        message: desired.message.clone(),
        last_transition_time: Time(now),
        observed_generation: generation,
    });
}

/// The [`CERTIFICATE_AUTHORITIES_VALID`] condition for `notices`.
///
/// Only an approaching end makes it False: that one needs the operator. A CA without
/// `pathLen 0` keeps working and is fixed at its next replacement, so it is named in a
/// True condition instead of raising an alarm that could stand for years.
pub fn ca_condition(notices: &CaNotices) -> DesiredCondition {
    if !notices.expiring.is_empty() {
        let cas: Vec<String> = notices
            .expiring
            .iter()
            .map(|(kind, not_after)| format!("{} at {not_after}", kind.as_str()))
            .collect();
        return DesiredCondition::new(
            CERTIFICATE_AUTHORITIES_VALID,
            false,
            "ExpiringSoon",
            format!(
                "CA expiry within {} days: {}. The controller replaces a CA only once it has expired, which reissues every certificate it signed, restarts the control plane and invalidates kubeconfigs handed out; delete the CA's Secret in a maintenance window to do it sooner",
                CA_EXPIRY_WARNING.as_hours() / 24,
                cas.join(", ")
            ),
        );
    }
    if !notices.without_path_len_zero.is_empty() {
        let cas: Vec<&str> = notices
            .without_path_len_zero
            .iter()
            .copied()
            .map(CaKind::as_str)
            .collect();
        return DesiredCondition::new(
            CERTIFICATE_AUTHORITIES_VALID,
            true,
            "NoPathLengthLimit",
            format!(
                "CAs {} carry no pathLen 0 limit; they stay in use and get it when next replaced",
                cas.join(", ")
            ),
        );
    }
    DesiredCondition::new(
        CERTIFICATE_AUTHORITIES_VALID,
        true,
        "Valid",
        format!(
            "every CA is valid for more than {} days",
            CA_EXPIRY_WARNING.as_hours() / 24
        ),
    )
}

/// The Warning Event to send when `desired` reports an expiring CA that `previous` did
/// not, so each approaching expiry is announced once rather than on every pass.
pub fn ca_expiry_event(
    previous: Option<&VirtualClusterStatus>,
    desired: &VirtualClusterStatus,
) -> Option<Event> {
    let find = |status: &VirtualClusterStatus| {
        status
            .conditions
            .iter()
            .find(|condition| condition.type_ == CERTIFICATE_AUTHORITIES_VALID)
            .map(|condition| (condition.status.clone(), condition.message.clone()))
    };
    let (status, message) = find(desired)?;
    if status != status_word(false) || previous.and_then(find) == Some((status, message.clone())) {
        return None;
    }
    Some(Event {
        type_: EventType::Warning,
        reason: CA_EXPIRING_REASON.to_owned(),
        note: Some(vc_api::text::sanitize(
            &message,
            vc_api::text::EVENT_NOTE_CHARS,
        )),
        action: "IssueCertificates".to_owned(),
        secondary: None,
    })
}

/// What the reconcile found, reduced to what the phase depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The spec cannot be provisioned until it changes.
    pub failed: bool,
    /// Anything of the control plane exists.
    pub provisioning_started: bool,
    /// The tenant answered `/readyz` and `spec.kubeconfig` is written.
    pub kubeconfig_published: bool,
    /// Clustertree ready and every promoted node visible in the tenant.
    pub promotion_complete: bool,
    /// A component is being rolled to a new spec (version bump, resizing).
    pub rolling: bool,
}

/// The phase for `progress`, given the phase stored before.
///
/// Once a tenant has been completed, work on it shows as `Updating` rather than falling
/// back to an earlier phase, so users can tell "not yet built" from "changing". A fresh
/// tenant whose components are still rolling out for the first time is not updating:
/// it goes Preparing, Initialized, Completed, as the proposal describes.
pub fn compute_phase(progress: Progress, previous: Option<Phase>) -> Phase {
    let was_completed = matches!(previous, Some(Phase::Completed | Phase::Updating));
    if progress.failed {
        Phase::Failed
    } else if progress.rolling && was_completed {
        Phase::Updating
    } else if progress.kubeconfig_published && progress.promotion_complete {
        Phase::Completed
    } else if progress.kubeconfig_published && was_completed {
        Phase::Updating
    } else if progress.kubeconfig_published {
        Phase::Initialized
    } else if progress.provisioning_started {
        Phase::Preparing
    } else {
        Phase::Pending
    }
}

/// Whether `desired` differs from `current` in anything but condition timestamps that
/// [`set_condition`] preserved; used to skip no-op status writes.
pub fn needs_write(current: Option<&VirtualClusterStatus>, desired: &VirtualClusterStatus) -> bool {
    current != Some(desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vc_api::condition_types::{NODES_PROMOTED, READY};

    /// A condition message quoting a tenant apiserver (an admission webhook the tenant
    /// admin installed answers with anything) is stored escaped and bounded.
    #[test]
    fn condition_messages_are_escaped_and_bounded() {
        let condition = DesiredCondition::new(
            READY,
            false,
            "Provisioning",
            "tenant said \u{1b}]0;owned\u{7}\nforged line",
        );
        assert_eq!(
            condition.message,
            "tenant said \\x1b]0;owned\\x07\\nforged line"
        );
        let long = DesiredCondition::new(READY, false, "Provisioning", "x".repeat(10_000));
        assert_eq!(
            long.message.chars().count(),
            vc_api::text::STATUS_MESSAGE_CHARS
        );
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut conditions = Vec::new();
        let waiting = DesiredCondition::new(READY, false, "Provisioning", "waiting for etcd");
        set_condition(&mut conditions, &waiting, Some(1), at(0));
        assert_eq!(conditions[0].last_transition_time, Time(at(0)));

        let still_waiting =
            DesiredCondition::new(READY, false, "Provisioning", "waiting for the apiserver");
        set_condition(&mut conditions, &still_waiting, Some(2), at(10));
        assert_eq!(conditions[0].last_transition_time, Time(at(0)));
        assert_eq!(conditions[0].message, "waiting for the apiserver");
        assert_eq!(conditions[0].observed_generation, Some(2));

        let ready = DesiredCondition::new(READY, true, "Ready", "tenant is ready");
        set_condition(&mut conditions, &ready, Some(2), at(20));
        assert_eq!(conditions[0].status, "True");
        assert_eq!(conditions[0].last_transition_time, Time(at(20)));
        assert_eq!(conditions.len(), 1);

        set_condition(
            &mut conditions,
            &DesiredCondition::new(NODES_PROMOTED, true, "NodesPromoted", ""),
            Some(2),
            at(30),
        );
        assert_eq!(conditions.len(), 2);
    }

    #[test]
    fn identical_observation_needs_no_write() {
        let mut first = VirtualClusterStatus::default();
        let condition = DesiredCondition::new(READY, true, "Ready", "ok");
        set_condition(&mut first.conditions, &condition, Some(1), at(0));
        let mut second = first.clone();
        set_condition(&mut second.conditions, &condition, Some(1), at(99));
        assert!(!needs_write(Some(&first), &second));
        second.phase = Some(Phase::Completed);
        assert!(needs_write(Some(&first), &second));
        assert!(needs_write(None, &second));
    }

    #[test]
    fn phases_follow_provisioning() {
        let nothing = Progress::default();
        assert_eq!(compute_phase(nothing, None), Phase::Pending);
        let started = Progress {
            provisioning_started: true,
            ..nothing
        };
        assert_eq!(
            compute_phase(started, Some(Phase::Pending)),
            Phase::Preparing
        );
        let initialized = Progress {
            kubeconfig_published: true,
            ..started
        };
        assert_eq!(
            compute_phase(initialized, Some(Phase::Preparing)),
            Phase::Initialized
        );
        let completed = Progress {
            promotion_complete: true,
            ..initialized
        };
        assert_eq!(
            compute_phase(completed, Some(Phase::Initialized)),
            Phase::Completed
        );
    }

    #[test]
    fn changes_after_completion_show_as_updating() {
        let rolling = Progress {
            provisioning_started: true,
            kubeconfig_published: true,
            promotion_complete: true,
            rolling: true,
            ..Progress::default()
        };
        assert_eq!(
            compute_phase(rolling, Some(Phase::Completed)),
            Phase::Updating
        );
        let node_added = Progress {
            provisioning_started: true,
            kubeconfig_published: true,
            ..Progress::default()
        };
        assert_eq!(
            compute_phase(node_added, Some(Phase::Completed)),
            Phase::Updating
        );
        // A fresh tenant still being built is not "updating".
        let fresh_rolling = Progress {
            provisioning_started: true,
            rolling: true,
            ..Progress::default()
        };
        assert_eq!(
            compute_phase(fresh_rolling, Some(Phase::Preparing)),
            Phase::Preparing
        );
        // The kubeconfig published while the scheduler still rolls out for the first
        // time: the tenant is Initialized, on its first and on later passes.
        let first_rollout = Progress {
            kubeconfig_published: true,
            ..fresh_rolling
        };
        assert_eq!(
            compute_phase(first_rollout, Some(Phase::Preparing)),
            Phase::Initialized
        );
        assert_eq!(
            compute_phase(first_rollout, Some(Phase::Initialized)),
            Phase::Initialized
        );
    }

    fn status_with(condition: &DesiredCondition) -> VirtualClusterStatus {
        let mut status = VirtualClusterStatus::default();
        set_condition(&mut status.conditions, condition, Some(1), at(0));
        status
    }

    #[test]
    fn an_expiring_ca_turns_its_condition_false_and_is_announced_once() {
        let end = at(90 * 86_400);
        let valid = ca_condition(&CaNotices::default());
        assert_eq!(valid.type_, CERTIFICATE_AUTHORITIES_VALID);
        assert!(valid.status, "{valid:?}");
        assert_eq!(valid.reason, "Valid");

        let expiring = ca_condition(&CaNotices {
            expiring: vec![(CaKind::Etcd, end)],
            without_path_len_zero: vec![CaKind::Etcd],
        });
        assert!(!expiring.status);
        assert_eq!(expiring.reason, "ExpiringSoon");
        assert!(
            expiring.message.contains(&format!("etcd-ca at {end}")),
            "{}",
            expiring.message
        );

        let before = status_with(&valid);
        let after = status_with(&expiring);
        let event = ca_expiry_event(Some(&before), &after).unwrap();
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, CA_EXPIRING_REASON);
        assert_eq!(event.note.as_deref(), Some(expiring.message.as_str()));
        assert!(ca_expiry_event(None, &after).is_some());
        // Already announced, or nothing to announce: no Event.
        assert!(ca_expiry_event(Some(&after), &after).is_none());
        assert!(ca_expiry_event(Some(&after), &before).is_none());
        assert!(ca_expiry_event(None, &VirtualClusterStatus::default()).is_none());
        // A second CA entering the window is news.
        let both = status_with(&ca_condition(&CaNotices {
            expiring: vec![(CaKind::Etcd, end), (CaKind::Cluster, end)],
            without_path_len_zero: Vec::new(),
        }));
        assert!(ca_expiry_event(Some(&after), &both).is_some());
    }

    #[test]
    fn a_ca_without_path_len_is_named_without_an_alarm() {
        let condition = ca_condition(&CaNotices {
            expiring: Vec::new(),
            without_path_len_zero: vec![CaKind::Cluster, CaKind::FrontProxy],
        });
        assert!(condition.status);
        assert_eq!(condition.reason, "NoPathLengthLimit");
        assert!(
            condition.message.contains("ca, front-proxy-ca"),
            "{}",
            condition.message
        );
        assert!(ca_expiry_event(None, &status_with(&condition)).is_none());
    }

    #[test]
    fn failure_wins_over_everything() {
        let failed = Progress {
            failed: true,
            kubeconfig_published: true,
            promotion_complete: true,
            ..Progress::default()
        };
        assert_eq!(compute_phase(failed, Some(Phase::Completed)), Phase::Failed);
    }
}
