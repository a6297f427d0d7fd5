//! What a reconcile tells about itself: Normal Events for what it changed, and the
//! bounded, escaped text every Event note and status message goes out as.

use kube::ResourceExt;
use kube::runtime::events::{Event as KubeEvent, EventType};
use vc_api::VirtualCluster;

use crate::context::Context;
use crate::error::Step;

/// Things this reconcile changed, published as Normal Events at the end.
#[derive(Debug, Default)]
pub(super) struct Changes(Vec<(&'static str, Step, String)>);

impl Changes {
    pub(super) fn record(&mut self, reason: &'static str, step: Step, note: impl Into<String>) {
        self.0.push((reason, step, note.into()));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) async fn publish(self, vc: &VirtualCluster, ctx: &Context) {
        for (reason, step, note) in self.0 {
            ctx.publish(vc, event(EventType::Normal, reason, step, &note))
                .await;
        }
    }
}

/// An Event about `step`, its note escaped and bounded.
pub(super) fn event(type_: EventType, reason: &str, step: Step, note: &str) -> KubeEvent {
    KubeEvent {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate_note(note)),
        action: step.action().to_owned(),
        secondary: None,
    }
}

/// `NAMESPACE/NAME` of the VirtualCluster: the key of its backoff and waits.
pub(super) fn object_key(vc: &VirtualCluster) -> String {
    format!("{}/{}", vc.namespace().unwrap_or_default(), vc.name_any())
}

/// An Event note: its text may carry a tenant apiserver's answer or a VirtualCluster
/// author's words, so it goes out escaped and bounded (`vc_api::text`).
pub(super) fn truncate_note(note: &str) -> String {
    vc_api::text::sanitize(note, vc_api::text::EVENT_NOTE_CHARS)
}

/// A status message, escaped and bounded like every condition message.
pub(super) fn status_message(message: &str) -> Option<String> {
    Some(vc_api::text::sanitize(
        message,
        vc_api::text::STATUS_MESSAGE_CHARS,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Event notes and status messages may quote a tenant apiserver's answer: both go
    /// out escaped and bounded.
    #[test]
    fn event_notes_and_status_messages_are_escaped_and_bounded() {
        let hostile = "denied: \u{1b}[2J\u{1b}]0;owned\u{7}\nWarning  Forged";
        let escaped = "denied: \\x1b[2J\\x1b]0;owned\\x07\\nWarning  Forged";
        assert_eq!(truncate_note(hostile), escaped);
        assert_eq!(status_message(hostile).as_deref(), Some(escaped));
        assert_eq!(
            truncate_note(&"y".repeat(5000)).chars().count(),
            vc_api::text::EVENT_NOTE_CHARS
        );
    }
}
