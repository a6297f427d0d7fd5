//! Copies the host Events about our host pods onto their tenant pods
//! ([`crate::pods::tenant_event`] for the rules). The host Events of `vc-NS-NAME` come
//! from a watch; what was written is remembered by host Event UID, so a settled Event
//! costs no request on later passes, and after a restart the deterministic name turns a
//! second create into a 409 and a read.
//!
//! Bounded: only Events about a host pod that still exists and last seen after the
//! process started, minus a minute, are copied; older ones were copied by an earlier run
//! or are history the tenant pod no longer needs.

use std::collections::{BTreeMap, HashMap};

use futures::{StreamExt as _, stream};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;

use super::cache::{self, Reflector};
use super::{StepError, is_status};
use crate::pods;

/// How far before the start Events are still copied: those a previous run may have
/// missed while it stopped.
const LOOKBACK: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// Copies written at once: few, so a burst of Events leaves the tenant apiserver to the
/// pods' own writes.
const CONCURRENCY: usize = 4;

/// What was written for one host Event: its count and last time.
type Written = (Option<i32>, Option<Time>);

pub(super) struct EventCopier {
    events: Reflector<Event>,
    written: HashMap<String, Written>,
    since: jiff::Timestamp,
}

impl EventCopier {
    pub(super) fn start(host: &Client, namespace: &str) -> EventCopier {
        let api = Api::<Event>::namespaced(host.clone(), namespace);
        let now = jiff::Timestamp::now();
        EventCopier {
            events: cache::spawn(
                "host Events",
                watcher(api, watcher::Config::default()),
                None,
            ),
            written: HashMap::new(),
            since: now.checked_sub(LOOKBACK).unwrap_or(now),
        }
    }

    /// Writes the tenant copy of every host Event about one of `host_pods` (ours, by
    /// name) that changed since it was last written.
    pub(super) async fn copy(
        &mut self,
        tenant: &Client,
        workload_namespace: &str,
        host_pods: &BTreeMap<String, &Pod>,
    ) -> Vec<Result<(), StepError>> {
        let events = self.events.store.state();
        let mut wanted = Vec::new();
        for event in &events {
            let Some(uid) = event.metadata.uid.clone() else {
                continue;
            };
            if pods::last_seen(event).is_none_or(|at| at < self.since) {
                continue;
            }
            let Some(host_pod) = event
                .involved_object
                .name
                .as_ref()
                .and_then(|name| host_pods.get(name))
            else {
                continue;
            };
            let Some(copy) = pods::tenant_event(event, host_pod, workload_namespace) else {
                continue;
            };
            let written = (copy.count, copy.last_timestamp.clone());
            if self.written.get(&uid) != Some(&written) {
                wanted.push((uid, copy));
            }
        }
        let live: std::collections::HashSet<&str> = events
            .iter()
            .filter_map(|e| e.metadata.uid.as_deref())
            .collect();
        self.written.retain(|uid, _| live.contains(uid.as_str()));
        let results: Vec<(String, Result<Written, StepError>)> = stream::iter(wanted)
            .map(|(uid, copy)| async move { (uid, write(tenant, copy).await) })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut outcomes = Vec::with_capacity(results.len());
        for (uid, result) in results {
            match result {
                Ok(written) => {
                    self.written.insert(uid, written);
                    outcomes.push(Ok(()));
                }
                Err(error) => outcomes.push(Err(error)),
            }
        }
        outcomes
    }
}

/// Creates the tenant copy, or brings the one an earlier pass or run wrote up to date.
async fn write(tenant: &Client, copy: Event) -> Result<Written, StepError> {
    let namespace = copy.metadata.namespace.clone().unwrap_or_default();
    let name = copy.metadata.name.clone().unwrap_or_default();
    let pod = format!(
        "{namespace}/{}",
        copy.involved_object.name.as_deref().unwrap_or_default()
    );
    let error = |source| StepError::CopyEvent {
        pod: pod.clone(),
        reason: copy.reason.clone().unwrap_or_default(),
        source,
    };
    let written = (copy.count, copy.last_timestamp.clone());
    let api = Api::<Event>::namespaced(tenant.clone(), &namespace);
    match api.create(&PostParams::default(), &copy).await {
        Ok(_) => return Ok(written),
        // The tenant pod's namespace is gone, and the pod with it.
        Err(e) if is_status(&e, 404) => return Ok(written),
        Err(e) if is_status(&e, 409) => {}
        Err(e) => return Err(error(e)),
    }
    let Some(current) = api.get_opt(&name).await.map_err(error)? else {
        return Ok(written);
    };
    if pods::event_outdated(&current, &copy) {
        let body = json!({"count": copy.count, "lastTimestamp": copy.last_timestamp});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .map_err(error)?;
    }
    Ok(written)
}
