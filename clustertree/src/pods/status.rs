//! The status a tenant pod reports: what its host pod's kubelet reported, less what only
//! makes sense on the host, and less `qosClass`: the tenant's apiserver set it from the
//! tenant pod at creation and refuses any change (the host pod's class may differ, as a
//! pool pod gets default requests on the host).

use k8s_openapi::api::core::v1::{Pod, PodStatus};

/// What the tenant should see of its pod, from the host pod running it.
pub fn tenant_status(host: &Pod) -> PodStatus {
    reported(host.status.as_ref())
}

/// The part of a pod status vc-clustertree reports, as a kubelet would.
pub(super) fn reported(status: Option<&PodStatus>) -> PodStatus {
    let Some(status) = status else {
        return PodStatus::default();
    };
    PodStatus {
        phase: status.phase.clone(),
        conditions: status.conditions.clone(),
        pod_ip: status.pod_ip.clone(),
        pod_ips: status.pod_ips.clone(),
        host_ip: status.host_ip.clone(),
        host_ips: status.host_ips.clone(),
        start_time: status.start_time.clone(),
        container_statuses: status.container_statuses.clone(),
        init_container_statuses: status.init_container_statuses.clone(),
        reason: status.reason.clone(),
        message: status.message.clone(),
        ..PodStatus::default()
    }
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

pub(super) fn terminal(pod: &Pod) -> bool {
    matches!(phase(pod), Some("Succeeded" | "Failed"))
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;
    use crate::pods::Action;
    use crate::pods::test_support::{host_of, plan_of, pod, with};

    #[test]
    fn status_comes_up_from_the_host_pod() {
        let tenant = pod("web-1", "u1", "node1");
        let host = with(
            &host_of(&tenant),
            json!({"status": {
                "phase": "Running", "podIP": "127.200.0.1", "podIPs": [{"ip": "127.200.0.1"}],
                "hostIP": "10.0.0.7", "startTime": "2026-01-01T00:00:00Z", "qosClass": "Burstable",
                "nominatedNodeName": "host-business",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "app", "image": "nginx:1.27", "imageID": "", "ready": true, "restartCount": 0}]
            }}),
        );
        let status = tenant_status(&host);
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("127.200.0.1"));
        assert_eq!(status.host_ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(status.qos_class, None, "immutable in the tenant");
        assert_eq!(status.nominated_node_name, None);
        assert_eq!(status.container_statuses.unwrap()[0].ready, true);
        let actions = plan_of(vec![tenant.clone()], vec![host.clone()]);
        assert!(
            matches!(&actions[..], [Action::UpdateTenantStatus { status, .. }] if status.phase.as_deref() == Some("Running"))
        );
        let synced = with(
            &tenant,
            json!({"status": serde_json::to_value(tenant_status(&host)).unwrap()}),
        );
        assert_eq!(plan_of(vec![synced], vec![host]), []);
    }
}
