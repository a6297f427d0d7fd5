//! When a tenant's cluster DNS counts as answering: its `kube-system/kube-dns` Service
//! has a cluster IP and an EndpointSlice of it names a ready endpoint. vc-clustertree
//! marks its endpoint ready only while its DNS server answers from listed caches, so a
//! tenant whose pods would get SERVFAIL or no answer is not yet `Completed`.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Namespace of the tenant's DNS Service, as in kubeadm.
pub const NAMESPACE: &str = "kube-system";
/// Name of the tenant's DNS Service, as in kubeadm.
pub const SERVICE: &str = "kube-dns";
/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What the tenant's DNS still lacks; the message says it for the status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsMissing {
    /// No `kube-system/kube-dns` Service in the tenant.
    #[error("the tenant has no Service kube-system/kube-dns yet (vc-clustertree writes it)")]
    Service,
    /// The Service has no cluster IP for pods to resolve through.
    #[error("Service kube-system/kube-dns in the tenant has no cluster IP")]
    ClusterIp,
    /// No EndpointSlice of the Service names a ready endpoint.
    #[error(
        "Service kube-system/kube-dns in the tenant has no ready endpoint (vc-clustertree marks it ready once its DNS answers)"
    )]
    ReadyEndpoint,
}

/// Whether the tenant's DNS answers, from its `kube-dns` Service (if any) and the
/// EndpointSlices of `kube-system` (others are ignored). An endpoint without a `ready`
/// condition counts as ready, as the EndpointSlice API defines an unknown state.
pub fn readiness(service: Option<&Service>, slices: &[EndpointSlice]) -> Result<(), DnsMissing> {
    let service = service.ok_or(DnsMissing::Service)?;
    let has_ip = service
        .spec
        .as_ref()
        .and_then(|spec| spec.cluster_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty() && ip != "None");
    if !has_ip {
        return Err(DnsMissing::ClusterIp);
    }
    let ready = slices
        .iter()
        .filter(|slice| {
            slice
                .metadata
                .namespace
                .as_deref()
                .is_none_or(|ns| ns == NAMESPACE)
                && slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
                    .is_some_and(|name| name == SERVICE)
        })
        .flat_map(|slice| slice.endpoints.iter())
        .any(|endpoint| {
            !endpoint.addresses.is_empty()
                && endpoint
                    .conditions
                    .as_ref()
                    .and_then(|conditions| conditions.ready)
                    .unwrap_or(true)
        });
    if ready {
        Ok(())
    } else {
        Err(DnsMissing::ReadyEndpoint)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn service(cluster_ip: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": SERVICE, "namespace": NAMESPACE},
            "spec": {"clusterIP": cluster_ip, "ports": [{"port": 53}]},
        }))
        .unwrap()
    }

    fn slice(service: &str, ready: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-x"), "namespace": NAMESPACE,
                         "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.9"], "conditions": {"ready": ready}}],
        }))
        .unwrap()
    }

    #[test]
    fn dns_answers_with_a_cluster_ip_and_a_ready_endpoint() {
        let dns = service("10.96.0.10");
        assert_eq!(
            readiness(Some(&dns), &[slice(SERVICE, json!(true))]),
            Ok(())
        );
        // An unknown readiness is ready, as the EndpointSlice API says.
        assert_eq!(
            readiness(Some(&dns), &[slice(SERVICE, json!(null))]),
            Ok(())
        );
    }

    #[test]
    fn each_missing_part_is_named() {
        let dns = service("10.96.0.10");
        assert_eq!(
            readiness(None, &[slice(SERVICE, json!(true))]),
            Err(DnsMissing::Service)
        );
        assert_eq!(
            readiness(Some(&service("")), &[slice(SERVICE, json!(true))]),
            Err(DnsMissing::ClusterIp)
        );
        assert_eq!(
            readiness(Some(&dns), &[slice(SERVICE, json!(false))]),
            Err(DnsMissing::ReadyEndpoint)
        );
        assert_eq!(
            readiness(Some(&dns), &[slice("web", json!(true))]),
            Err(DnsMissing::ReadyEndpoint)
        );
        assert!(
            DnsMissing::ReadyEndpoint
                .to_string()
                .contains("no ready endpoint")
        );
    }
}
