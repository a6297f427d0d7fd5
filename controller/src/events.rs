//! Kubernetes Events (`events.k8s.io/v1`) about VirtualClusters, published the way
//! kube-runtime's `Recorder` publishes them: one Event object per (type, reason, action,
//! regarding, related), and a repeat within [`SERIES_WINDOW`] counted in that Event's
//! `series` instead of creating another.
//!
//! The `Recorder` keeps every Event it sent, whole, for six minutes and walks all of them
//! under one lock on every publish to drop the old ones: with a thousand tenants
//! provisioning at once that is tens of thousands of Events walked per Event sent, and
//! tens of MiB held. Here a publish costs the same however many tenants exist: the
//! remembered Events expire in the order they were sent, and each keeps only what a
//! repeat needs (its name and count).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Api, Client};

/// How long a sent Event takes repeats into its series (kube-runtime's and client-go's).
pub const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// What makes two Events the same one, repeated.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct EventKey {
    warning: bool,
    action: String,
    reason: String,
    regarding: ReferenceKey,
    related: Option<ReferenceKey>,
}

/// The identifying fields of an object reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ReferenceKey {
    api_version: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
}

impl From<&ObjectReference> for ReferenceKey {
    fn from(reference: &ObjectReference) -> Self {
        ReferenceKey {
            api_version: reference.api_version.clone(),
            kind: reference.kind.clone(),
            namespace: reference.namespace.clone(),
            name: reference.name.clone(),
            uid: reference.uid.clone(),
        }
    }
}

/// An Event sent within the window: where it is and how often it happened.
#[derive(Clone, Debug)]
struct Sent {
    namespace: String,
    name: String,
    count: i32,
    last_observed: Timestamp,
}

/// The Events sent within the window, and the order they expire in.
#[derive(Debug, Default)]
struct Recent {
    by_key: HashMap<EventKey, Sent>,
    /// (when an Event was last observed, its key), oldest first. A key repeated later
    /// has a newer entry too; the older one then expires nothing.
    expiries: VecDeque<(Timestamp, EventKey)>,
}

impl Recent {
    /// Forgets the Events last observed before `now - SERIES_WINDOW`.
    fn expire(&mut self, now: Timestamp) {
        while let Some((observed, _)) = self.expiries.front() {
            if *observed + SERIES_WINDOW > now {
                break;
            }
            let Some((observed, key)) = self.expiries.pop_front() else {
                break;
            };
            if self
                .by_key
                .get(&key)
                .is_some_and(|sent| sent.last_observed == observed)
            {
                self.by_key.remove(&key);
            }
        }
    }

    fn remember(&mut self, key: EventKey, sent: Sent) {
        self.expiries.push_back((sent.last_observed, key.clone()));
        self.by_key.insert(key, sent);
    }
}

/// Publishes Events as one reporting controller.
pub struct EventPublisher {
    client: Client,
    reporter: Reporter,
    recent: Mutex<Recent>,
}

impl std::fmt::Debug for EventPublisher {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EventPublisher")
            .field("reporter", &self.reporter)
            .finish_non_exhaustive()
    }
}

impl EventPublisher {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        EventPublisher {
            client,
            reporter,
            recent: Mutex::default(),
        }
    }

    /// Sends `event` about `regarding`: a new Event, or a repeat of one sent within the
    /// window (its series count raised).
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = EventKey {
            warning: event.type_ == EventType::Warning,
            action: event.action.clone(),
            reason: event.reason.clone(),
            regarding: regarding.into(),
            related: event.secondary.as_ref().map(ReferenceKey::from),
        };
        let repeated = match self.recent.lock() {
            Ok(mut recent) => {
                recent.expire(now);
                recent.by_key.get(&key).cloned()
            }
            Err(_) => None,
        };
        let sent = match repeated {
            Some(previous) => {
                let count = previous.count.saturating_add(1);
                let series = serde_json::json!({
                    "series": {"count": count, "lastObservedTime": MicroTime(now)}
                });
                Api::<KubeEvent>::namespaced(self.client.clone(), &previous.namespace)
                    .patch(
                        &previous.name,
                        &PatchParams::default(),
                        &Patch::Merge(&series),
                    )
                    .await?;
                Sent {
                    count,
                    last_observed: now,
                    ..previous
                }
            }
            None => {
                let created = self.new_event(event, regarding, now);
                let namespace = created.metadata.namespace.clone().unwrap_or_default();
                let name = created.metadata.name.clone().unwrap_or_default();
                Api::<KubeEvent>::namespaced(self.client.clone(), &namespace)
                    .create(&PostParams::default(), &created)
                    .await?;
                Sent {
                    namespace,
                    name,
                    count: 1,
                    last_observed: now,
                }
            }
        };
        if let Ok(mut recent) = self.recent.lock() {
            recent.remember(key, sent);
        }
        Ok(())
    }

    /// The Event object a first occurrence creates, named and filled in as kube-runtime's
    /// `Recorder` does.
    fn new_event(&self, event: &Event, regarding: &ObjectReference, now: Timestamp) -> KubeEvent {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        KubeEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            note: event.note.clone(),
            metadata: ObjectMeta {
                namespace: Some(namespace),
                name: Some(format!(
                    "{}.{:x}",
                    regarding
                        .name
                        .as_deref()
                        .unwrap_or(&self.reporter.controller),
                    now.as_nanosecond()
                )),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            ..KubeEvent::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str) -> EventKey {
        EventKey {
            warning: false,
            action: "Promote".into(),
            reason: reason.into(),
            regarding: ReferenceKey {
                api_version: Some("kosmos.io/v1alpha1".into()),
                kind: Some("VirtualCluster".into()),
                namespace: Some("team-a".into()),
                name: Some("tenant1".into()),
                uid: Some("uid-1".into()),
            },
            related: None,
        }
    }

    fn sent(at: Timestamp) -> Sent {
        Sent {
            namespace: "team-a".into(),
            name: "tenant1.1".into(),
            count: 1,
            last_observed: at,
        }
    }

    #[test]
    fn events_are_forgotten_once_their_window_passed_and_not_before() {
        let start = Timestamp::UNIX_EPOCH;
        let minute = SignedDuration::from_mins(1);
        let mut recent = Recent::default();
        recent.remember(key("A"), sent(start));
        recent.remember(key("B"), sent(start + minute));
        recent.expire(start + SERIES_WINDOW - SignedDuration::from_secs(1));
        assert_eq!(recent.by_key.len(), 2);
        recent.expire(start + SERIES_WINDOW);
        assert!(!recent.by_key.contains_key(&key("A")));
        assert!(recent.by_key.contains_key(&key("B")));
        assert_eq!(recent.expiries.len(), 1);
    }

    #[test]
    fn a_repeat_keeps_its_event_for_a_window_from_the_repeat() {
        let start = Timestamp::UNIX_EPOCH;
        let later = start + SignedDuration::from_mins(5);
        let mut recent = Recent::default();
        recent.remember(key("A"), sent(start));
        recent.remember(key("A"), sent(later));
        // The first sending's window is over; the repeat's is not.
        recent.expire(start + SERIES_WINDOW);
        assert!(recent.by_key.contains_key(&key("A")));
        recent.expire(later + SERIES_WINDOW);
        assert!(recent.by_key.is_empty() && recent.expiries.is_empty());
    }
}
