//! Host Events about a host pod, told to the tenant as Events on its tenant pod: the
//! tenant's users see `Scheduled`, `Pulling`, `BackOff`... as they would from their own
//! kubelet and scheduler.
//!
//! A copy is named after the host Event's UID, so a second pass or a restart finds the
//! copy it wrote instead of writing another. The host pod's `namespace/name` in the
//! message becomes the tenant pod's; a bare host pod name elsewhere in a message is left
//! as is (it names nothing of the host's layout beyond the pod's derived name).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::ResourceExt as _;
use sha2::{Digest as _, Sha256};
use vc_api::constants::TENANT_OBJECT_ANNOTATION;

use super::naming::recorded_uid;

/// Reporting component of every Event vc-clustertree writes; such an Event is never
/// copied back.
pub const EVENT_COMPONENT: &str = "vc-clustertree";

/// Name of the tenant copy of the host Event `host_uid` about tenant pod `pod`.
pub fn copied_event_name(pod: &str, host_uid: &str) -> String {
    let digest = Sha256::digest(format!("host-event\n{host_uid}").as_bytes());
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let name: String = pod.chars().take(200).collect();
    format!("{name}.{hash}")
}

/// When the host Event last happened: its series, its `lastTimestamp`, or when it was
/// first seen (an `events.k8s.io` Event read as core/v1 has only `eventTime`).
pub fn last_seen(event: &Event) -> Option<Timestamp> {
    let series = event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0);
    series
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| first_seen(event))
}

fn first_seen(event: &Event) -> Option<Timestamp> {
    event
        .first_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn count(event: &Event) -> i32 {
    event
        .series
        .as_ref()
        .and_then(|s| s.count)
        .or(event.count)
        .unwrap_or(1)
        .max(1)
}

/// The tenant Event standing for `host` when it is about `host_pod`, one of ours in
/// `workload_namespace` (kind, name and UID all match), and was not written by
/// vc-clustertree; `None` otherwise.
pub fn tenant_event(host: &Event, host_pod: &Pod, workload_namespace: &str) -> Option<Event> {
    let about = &host.involved_object;
    let ours_wrote_it = host.reporting_component.as_deref() == Some(EVENT_COMPONENT)
        || host
            .source
            .as_ref()
            .and_then(|s| s.component.as_deref())
            .is_some_and(|c| c == EVENT_COMPONENT);
    let about_host_pod = about.kind.as_deref() == Some("Pod")
        && about.api_version.as_deref().is_none_or(|v| v == "v1")
        && about.namespace.as_deref() == Some(workload_namespace)
        && host_pod.namespace().as_deref() == Some(workload_namespace)
        && about.name.is_some()
        && about.name == host_pod.metadata.name
        && about.uid.is_some()
        && about.uid == host_pod.metadata.uid;
    if ours_wrote_it || !about_host_pod {
        return None;
    }
    let tenant_uid = recorded_uid(&host_pod.metadata)?;
    let (namespace, name) = host_pod
        .annotations()
        .get(TENANT_OBJECT_ANNOTATION)?
        .split_once('/')?;
    let host_uid = host.metadata.uid.as_deref()?;
    let host_pod_name = host_pod.metadata.name.as_deref()?;
    let message = host.message.as_ref().map(|message| {
        message.replace(
            &format!("{workload_namespace}/{host_pod_name}"),
            &format!("{namespace}/{name}"),
        )
    });
    let first = first_seen(host)?;
    let last = last_seen(host).unwrap_or(first);
    Some(Event {
        metadata: ObjectMeta {
            name: Some(copied_event_name(name, host_uid)),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            uid: Some(tenant_uid.to_owned()),
            field_path: about.field_path.clone(),
            ..ObjectReference::default()
        },
        type_: host.type_.clone(),
        reason: host.reason.clone(),
        message,
        count: Some(count(host)),
        first_timestamp: Some(Time(first)),
        last_timestamp: Some(Time(last)),
        reporting_component: Some(EVENT_COMPONENT.to_owned()),
        reporting_instance: Some(EVENT_COMPONENT.to_owned()),
        source: Some(EventSource {
            component: Some(EVENT_COMPONENT.to_owned()),
            host: None,
        }),
        ..Event::default()
    })
}

/// Whether the tenant copy `current` lags `wanted`: only the count and the last time
/// move once an Event is written.
pub fn event_outdated(current: &Event, wanted: &Event) -> bool {
    current.count != wanted.count || current.last_timestamp != wanted.last_timestamp
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;
    use crate::pods::test_support::{host_of, pod, tenancy};

    fn scheduled(host_pod: &Pod) -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": "x.1", "namespace": "vc-team-a-tenant1", "uid": "e1",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": "vc-team-a-tenant1",
                               "name": host_pod.name_any(), "uid": host_pod.uid()},
            "reason": "Scheduled", "type": "Normal",
            "message": format!("Successfully assigned vc-team-a-tenant1/{} to node1", host_pod.name_any()),
            "eventTime": "2026-01-01T00:00:00.000001Z",
            "reportingComponent": "default-scheduler", "reportingInstance": "default-scheduler-x",
            "source": {},
        }))
        .unwrap()
    }

    fn host_pod() -> Pod {
        let mut host = host_of(&pod("web-1", "u1", "node1"));
        host.metadata.uid = Some("h1".to_owned());
        host
    }

    #[test]
    fn a_scheduler_event_lands_on_the_tenant_pod_without_the_host_namespace() {
        let host = host_pod();
        let copy = tenant_event(&scheduled(&host), &host, &tenancy().workload_namespace).unwrap();
        assert_eq!(copy.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(copy.metadata.name, Some(copied_event_name("web-1", "e1")));
        assert_eq!(
            (
                copy.involved_object.kind.as_deref(),
                copy.involved_object.name.as_deref(),
                copy.involved_object.namespace.as_deref(),
                copy.involved_object.uid.as_deref()
            ),
            (Some("Pod"), Some("web-1"), Some("shop"), Some("u1"))
        );
        assert_eq!(
            copy.message.as_deref(),
            Some("Successfully assigned shop/web-1 to node1")
        );
        assert_eq!(
            (copy.reason.as_deref(), copy.type_.as_deref()),
            (Some("Scheduled"), Some("Normal"))
        );
        assert_eq!(copy.reporting_component.as_deref(), Some(EVENT_COMPONENT));
        assert_eq!(copy.count, Some(1));
        let at: Timestamp = "2026-01-01T00:00:00.000001Z".parse().unwrap();
        assert_eq!(copy.first_timestamp, Some(Time(at)));
        assert_eq!(copy.last_timestamp, Some(Time(at)));
    }

    #[test]
    fn the_copy_name_is_stable_and_follows_the_host_event() {
        let host = host_pod();
        let namespace = tenancy().workload_namespace;
        let event = scheduled(&host);
        assert_eq!(
            tenant_event(&event, &host, &namespace),
            tenant_event(&event, &host, &namespace)
        );
        assert_ne!(
            copied_event_name("web-1", "e1"),
            copied_event_name("web-1", "e2")
        );
        assert!(copied_event_name(&"x".repeat(253), "e1").len() <= 253);
    }

    #[test]
    fn events_about_other_objects_or_written_by_us_are_not_copied() {
        let host = host_pod();
        let namespace = tenancy().workload_namespace;
        let mut other_uid = scheduled(&host);
        other_uid.involved_object.uid = Some("h0".to_owned());
        let mut other_kind = scheduled(&host);
        other_kind.involved_object.kind = Some("ConfigMap".to_owned());
        let mut other_namespace = scheduled(&host);
        other_namespace.involved_object.namespace = Some("default".to_owned());
        let mut ours = scheduled(&host);
        ours.reporting_component = Some(EVENT_COMPONENT.to_owned());
        let mut ours_by_source = scheduled(&host);
        ours_by_source.reporting_component = None;
        ours_by_source.source = Some(EventSource {
            component: Some(EVENT_COMPONENT.to_owned()),
            host: None,
        });
        for event in [other_uid, other_kind, other_namespace, ours, ours_by_source] {
            assert_eq!(tenant_event(&event, &host, &namespace), None, "{event:?}");
        }
        let mut not_ours = host.clone();
        not_ours.metadata.labels = None;
        assert_eq!(
            tenant_event(&scheduled(&not_ours), &not_ours, &namespace),
            None
        );
    }

    #[test]
    fn a_repeated_event_carries_its_count_and_last_time_and_is_then_outdated() {
        let host = host_pod();
        let namespace = tenancy().workload_namespace;
        let mut event = scheduled(&host);
        event.event_time = None;
        event.first_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
        event.last_timestamp = Some(Time("2026-01-01T00:01:00Z".parse().unwrap()));
        event.count = Some(3);
        let first = tenant_event(&event, &host, &namespace).unwrap();
        assert_eq!(first.count, Some(3));
        assert_eq!(first.last_timestamp, event.last_timestamp);
        assert!(!event_outdated(&first, &first));
        event.count = Some(4);
        event.last_timestamp = Some(Time("2026-01-01T00:02:00Z".parse().unwrap()));
        let again = tenant_event(&event, &host, &namespace).unwrap();
        assert!(event_outdated(&first, &again));
        assert_eq!(again.metadata.name, first.metadata.name);
    }
}
