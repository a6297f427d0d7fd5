//! One pass's decisions: from what the tenant and the host hold now, the host pods to
//! create or delete and the tenant pods to update, fail or finish; and when a host token
//! Secret is due. Level-triggered, so nothing here remembers an earlier pass.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt as _;

use super::naming::{host_pod_name, recorded_uid};
use super::status::{reported, tenant_status, terminal};
use super::translate::{Copy, HostPod, Token, host_pod};
use super::{PodRef, Tenancy};

/// Reason on a tenant pod whose host pod disappeared after it had started.
pub const HOST_POD_LOST_REASON: &str = "HostPodLost";

/// One thing the loop must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Write the copies, then the host pod.
    CreateHostPod { tenant: PodRef, host: Box<HostPod> },
    /// Delete host pod `name`, precondition `uid`.
    DeleteHostPod {
        name: String,
        uid: String,
        grace_period_seconds: Option<i64>,
        why: &'static str,
    },
    UpdateTenantStatus {
        tenant: PodRef,
        status: Box<PodStatus>,
    },
    /// The host pod is gone: remove the tenant pod for good, as a kubelet does.
    FinishTenantDeletion { tenant: PodRef },
    /// Set the tenant pod Failed with this reason and message, and record an Event.
    FailTenantPod {
        tenant: PodRef,
        reason: String,
        message: String,
    },
}

/// What one pass sees; the pods owned or shared (`Arc<Pod>` from a cache).
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a, P = Pod> {
    /// Every tenant pod (those not bound to a mirrored node are ignored).
    pub tenant_pods: &'a [P],
    /// The host pods in the workload namespace (those not ours are ignored).
    pub host_pods: &'a [P],
    /// Names of the tenant Nodes vc-clustertree mirrors.
    pub mirrored_nodes: &'a BTreeSet<String>,
}

/// What one pass does, and which host copies and tokens must exist afterwards (every
/// other copy of ours is removed).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub copies: BTreeSet<Copy>,
    pub tokens: Vec<Token>,
}

/// The actions that bring the host pods and the tenant pods' status in line.
pub fn plan<P: Borrow<Pod>>(observed: Observed<'_, P>, tenancy: &Tenancy) -> Plan {
    let hosts: BTreeMap<String, (&Pod, &str)> = observed
        .host_pods
        .iter()
        .map(Borrow::borrow)
        .filter_map(|pod: &Pod| Some((pod.name_any(), (pod, recorded_uid(&pod.metadata)?))))
        .collect();
    let mut plan = Plan::default();
    let mut wanted_hosts = BTreeSet::new();
    for tenant in observed.tenant_pods.iter().map(Borrow::borrow) {
        let on_mirrored = tenant
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some_and(|node| observed.mirrored_nodes.contains(node));
        let Some(reference) = PodRef::of(tenant).filter(|_| on_mirrored) else {
            continue;
        };
        let host_name = host_pod_name(&reference.namespace, &reference.name);
        wanted_hosts.insert(host_name.clone());
        let host = hosts.get(&host_name).copied();
        plan_one(&mut plan, tenant, reference, host_name, host, tenancy);
    }
    for (name, (pod, _)) in &hosts {
        if !wanted_hosts.contains(name) && pod.metadata.deletion_timestamp.is_none() {
            plan.actions.push(Action::DeleteHostPod {
                name: name.clone(),
                uid: pod.uid().unwrap_or_default(),
                grace_period_seconds: None,
                why: "its tenant pod is gone",
            });
        }
    }
    plan
}

fn plan_one(
    plan: &mut Plan,
    tenant: &Pod,
    reference: PodRef,
    host_name: String,
    host: Option<(&Pod, &str)>,
    tenancy: &Tenancy,
) {
    let host_uid = |host: &Pod| host.uid().unwrap_or_default();
    let (current, stale) = match host {
        Some((pod, uid)) if uid == reference.uid => (Some(pod), None),
        Some((pod, _)) => (None, Some(pod)),
        None => (None, None),
    };
    if let Some(stale) = stale {
        // Of a tenant pod deleted and re-created under this name: never adopted.
        if stale.metadata.deletion_timestamp.is_none() {
            plan.actions.push(Action::DeleteHostPod {
                name: host_name,
                uid: host_uid(stale),
                grace_period_seconds: None,
                why: "it stands for an earlier tenant pod of the same name",
            });
        }
        if tenant.metadata.deletion_timestamp.is_some() {
            plan.actions
                .push(Action::FinishTenantDeletion { tenant: reference });
        }
        return;
    }
    if tenant.metadata.deletion_timestamp.is_some() {
        match current {
            Some(pod) if pod.metadata.deletion_timestamp.is_none() => {
                plan.actions.push(Action::DeleteHostPod {
                    name: host_name,
                    uid: host_uid(pod),
                    grace_period_seconds: tenant.metadata.deletion_grace_period_seconds,
                    why: "its tenant pod is being deleted",
                });
            }
            Some(_) => {}
            None => plan
                .actions
                .push(Action::FinishTenantDeletion { tenant: reference }),
        }
        return;
    }
    if let Some(pod) = current {
        let status = tenant_status(pod);
        let reporting = pod.status.as_ref().is_some_and(|s| s.phase.is_some());
        if reporting && status != reported(tenant.status.as_ref()) && !terminal(tenant) {
            plan.actions.push(Action::UpdateTenantStatus {
                tenant: reference.clone(),
                status: Box::new(status),
            });
        }
        if terminal(tenant) && !terminal(pod) && pod.metadata.deletion_timestamp.is_none() {
            plan.actions.push(Action::DeleteHostPod {
                name: host_name,
                uid: host_uid(pod),
                grace_period_seconds: None,
                why: "its tenant pod has finished",
            });
            return;
        }
        if !terminal(pod)
            && pod.metadata.deletion_timestamp.is_none()
            && let Ok(wanted) = host_pod(tenant, tenancy)
        {
            plan.copies.extend(wanted.copies);
            plan.tokens.extend(wanted.token);
        }
        return;
    }
    if terminal(tenant) {
        return;
    }
    let started = tenant
        .status
        .as_ref()
        .is_some_and(|s| s.start_time.is_some());
    if started {
        plan.actions.push(Action::FailTenantPod {
            tenant: reference,
            reason: HOST_POD_LOST_REASON.to_owned(),
            message: format!(
                "host pod {}/{host_name} disappeared after the pod had started",
                tenancy.workload_namespace
            ),
        });
        return;
    }
    let waits_for_dns = tenancy.dns_pending
        && tenant
            .spec
            .as_ref()
            .is_some_and(super::dns::uses_cluster_dns);
    if waits_for_dns {
        return;
    }
    match host_pod(tenant, tenancy) {
        Ok(wanted) => {
            plan.copies.extend(wanted.copies.iter().cloned());
            plan.tokens.extend(wanted.token.iter().cloned());
            plan.actions.push(Action::CreateHostPod {
                tenant: reference,
                host: Box::new(wanted),
            });
        }
        Err(refusal) => plan.actions.push(Action::FailTenantPod {
            tenant: reference,
            reason: refusal.reason().to_owned(),
            message: refusal.to_string(),
        }),
    }
}

/// Annotation on a host token Secret: when it should be refreshed (RFC 3339).
pub const TOKEN_REFRESH_ANNOTATION: &str = "vc.kosmos.io/token-refresh-after";

/// When a token valid until `expires` should be replaced: half-way through its remaining
/// life, as a kubelet renews well before expiry so a slow pass never serves a dead token.
pub fn token_refresh_after(now: jiff::Timestamp, expires: jiff::Timestamp) -> jiff::Timestamp {
    let remaining = expires.duration_since(now);
    now.checked_add(remaining / 2).unwrap_or(now)
}

/// Whether a host token Secret still serves tenant pod `pod_uid` and is not yet due.
pub fn token_fresh(secret: &ObjectMeta, pod_uid: &str, now: jiff::Timestamp) -> bool {
    let due = secret
        .annotations
        .as_ref()
        .and_then(|a| a.get(TOKEN_REFRESH_ANNOTATION))
        .and_then(|at| at.parse::<jiff::Timestamp>().ok());
    recorded_uid(secret) == Some(pod_uid) && due.is_some_and(|due| now < due)
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;
    use vc_api::constants::{MANAGED_BY_LABEL, TENANT_OBJECT_UID_ANNOTATION};

    use super::*;
    use crate::pods::ownership;
    use crate::pods::test_support::{host_of, nodes, plan_of, pod, tenancy, with};

    #[test]
    fn a_bound_pod_without_host_pod_gets_one_and_a_restart_creates_no_second() {
        let tenant = pod("web-1", "u1", "node1");
        let actions = plan_of(vec![tenant.clone()], vec![]);
        assert!(matches!(&actions[..], [Action::CreateHostPod { tenant: r, .. }] if r.uid == "u1"));
        let host = host_of(&tenant);
        assert_eq!(plan_of(vec![tenant], vec![host]), []);
    }

    /// While the tenant's DNS address is unknown, a `ClusterFirst` pod waits instead of
    /// starting with the host's resolver; a pod that chose its own (`Default`) starts.
    #[test]
    fn cluster_first_pods_wait_for_the_tenants_dns() {
        let pending = Tenancy {
            dns_pending: true,
            ..tenancy()
        };
        let nodes = nodes();
        let cluster_first = pod("web-1", "u1", "node1");
        let own_resolver = with(
            &pod("web-2", "u2", "node1"),
            json!({"spec": {"dnsPolicy": "Default"}}),
        );
        let tenant_pods = vec![cluster_first, own_resolver];
        let actions = plan(
            Observed {
                tenant_pods: &tenant_pods,
                host_pods: &[],
                mirrored_nodes: &nodes,
            },
            &pending,
        )
        .actions;
        assert!(
            matches!(&actions[..], [Action::CreateHostPod { tenant, .. }] if tenant.uid == "u2"),
            "{actions:?}"
        );
    }

    #[test]
    fn pods_not_on_mirrored_nodes_and_host_pods_not_ours_are_left_alone() {
        let elsewhere = pod("own", "u2", "tenant-made");
        let mut unbound = pod("pending", "u3", "node1");
        unbound.spec.as_mut().unwrap().node_name = None;
        let foreign: Pod = serde_json::from_value(json!({
            "metadata": {"name": "someone-else", "uid": "h9", "labels": {MANAGED_BY_LABEL: "helm"},
                         "annotations": {TENANT_OBJECT_UID_ANNOTATION: "x"}}
        }))
        .unwrap();
        assert_eq!(plan_of(vec![elsewhere, unbound], vec![foreign]), []);
    }

    #[test]
    fn a_host_pod_without_tenant_pod_is_deleted_by_uid() {
        let host = host_of(&pod("gone", "u1", "node1"));
        let actions = plan_of(vec![], vec![host.clone()]);
        assert_eq!(
            actions,
            [Action::DeleteHostPod {
                name: host.name_any(),
                uid: "host-u1".to_owned(),
                grace_period_seconds: None,
                why: "its tenant pod is gone",
            }]
        );
        let deleting = with(
            &host,
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
        );
        assert_eq!(plan_of(vec![], vec![deleting]), []);
    }

    #[test]
    fn a_recreated_tenant_pod_replaces_the_stale_host_pod_first() {
        let old = host_of(&pod("web-1", "old", "node1"));
        let tenant = pod("web-1", "new", "node1");
        let actions = plan_of(vec![tenant.clone()], vec![old.clone()]);
        assert!(
            matches!(&actions[..], [Action::DeleteHostPod { uid, .. }] if uid == "host-old"),
            "{actions:?}"
        );
        let actions = plan_of(vec![tenant], vec![]);
        assert!(
            matches!(&actions[..], [Action::CreateHostPod { tenant, .. }] if tenant.uid == "new")
        );
    }

    #[test]
    fn a_deleting_tenant_pod_deletes_its_host_pod_with_its_grace_then_finishes() {
        let tenant = with(
            &pod("web-1", "u1", "node1"),
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 7}}),
        );
        let host = host_of(&tenant);
        let actions = plan_of(vec![tenant.clone()], vec![host.clone()]);
        assert!(matches!(
            &actions[..],
            [Action::DeleteHostPod { grace_period_seconds: Some(7), uid, .. }] if uid == "host-u1"
        ));
        let terminating = with(
            &host,
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
        );
        assert_eq!(plan_of(vec![tenant.clone()], vec![terminating]), []);
        let actions = plan_of(vec![tenant], vec![]);
        assert!(
            matches!(&actions[..], [Action::FinishTenantDeletion { tenant }] if tenant.uid == "u1")
        );
    }

    #[test]
    fn a_started_pod_whose_host_pod_vanished_fails_and_a_pending_one_is_recreated() {
        let started = with(
            &pod("web-1", "u1", "node1"),
            json!({"status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z"}}),
        );
        let actions = plan_of(vec![started.clone()], vec![]);
        assert!(matches!(
            &actions[..],
            [Action::FailTenantPod { reason, .. }] if reason == HOST_POD_LOST_REASON
        ));
        let failed = with(&started, json!({"status": {"phase": "Failed"}}));
        assert_eq!(plan_of(vec![failed], vec![]), []);
    }

    #[test]
    fn an_evicted_host_pod_fails_the_tenant_pod_through_its_status() {
        let tenant = with(
            &pod("web-1", "u1", "node1"),
            json!({"status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z"}}),
        );
        let host = with(
            &host_of(&tenant),
            json!({"status": {"phase": "Failed", "reason": "Evicted", "message": "low on memory"}}),
        );
        let actions = plan_of(vec![tenant], vec![host]);
        assert!(matches!(
            &actions[..],
            [Action::UpdateTenantStatus { status, .. }]
                if status.phase.as_deref() == Some("Failed") && status.reason.as_deref() == Some("Evicted")
        ));
    }

    #[test]
    fn a_refused_pod_is_failed_once_and_never_reaches_the_host() {
        let tenant = with(
            &pod("root", "u1", "node1"),
            json!({"spec": {"containers": [{"name": "c", "securityContext": {"privileged": true}}]}}),
        );
        let actions = plan_of(vec![tenant.clone()], vec![]);
        assert!(matches!(
            &actions[..],
            [Action::FailTenantPod { reason, message, .. }]
                if reason == "HostPolicyRefused" && message.contains("containers[0].securityContext.privileged")
        ));
        let failed = with(
            &tenant,
            json!({"status": {"phase": "Failed", "reason": "HostPolicyRefused"}}),
        );
        assert_eq!(plan_of(vec![failed], vec![]), []);
    }

    #[test]
    fn a_finished_tenant_pod_stops_its_host_pod() {
        let tenant = with(
            &pod("job", "u1", "node1"),
            json!({"status": {"phase": "Failed"}}),
        );
        let host = with(&host_of(&tenant), json!({"status": {"phase": "Running"}}));
        let actions = plan_of(vec![tenant], vec![host]);
        assert!(matches!(
            &actions[..],
            [Action::DeleteHostPod {
                why: "its tenant pod has finished",
                ..
            }]
        ));
    }

    #[test]
    fn the_plan_keeps_the_copies_and_token_of_live_host_pods_only() {
        let tenant = pod("web-1", "u1", "node1");
        let host = host_of(&tenant);
        let nodes = nodes();
        let live = plan(
            Observed {
                tenant_pods: std::slice::from_ref(&tenant),
                host_pods: std::slice::from_ref(&host),
                mirrored_nodes: &nodes,
            },
            &tenancy(),
        );
        assert_eq!(live.copies.len(), 2);
        assert_eq!(live.tokens.len(), 1);
        let gone = plan(
            Observed {
                tenant_pods: &[],
                host_pods: &[host],
                mirrored_nodes: &nodes,
            },
            &tenancy(),
        );
        assert!(gone.copies.is_empty() && gone.tokens.is_empty());
    }

    #[test]
    fn a_token_is_refreshed_half_way_and_when_its_pod_changed() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let expires: jiff::Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let due = token_refresh_after(now, expires);
        assert_eq!(due.to_string(), "2026-01-01T00:30:00Z");
        let (labels, mut annotations) = ownership("shop", "web-1", "u1");
        annotations.insert(TOKEN_REFRESH_ANNOTATION.to_owned(), due.to_string());
        let meta = ObjectMeta {
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        };
        assert!(token_fresh(&meta, "u1", now));
        assert!(!token_fresh(&meta, "u2", now), "another pod's token");
        assert!(!token_fresh(&meta, "u1", due));
        assert!(!token_fresh(&ObjectMeta::default(), "u1", now));
    }
}
