//! The etcd and kube-apiserver Services, first of the control plane: the apiserver's
//! cluster IP goes into its serving certificate. Returns what the later steps build on.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::ResourceExt;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use vc_api::VirtualCluster;
use vc_api::pod_security::{self, PodSecurityLevel, WORKLOAD_POD_SECURITY_LABEL};

use super::events::{Changes, event};
use super::objects::{ObjectError, apply_object};
use crate::context::Context;
use crate::error::Step;
use crate::resources::{Observed, Tenant, apiserver, etcd};

/// Why the Services could not be applied, or their facts observed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Service could not be applied.
    #[error(transparent)]
    Apply(#[from] ObjectError),
}

impl Error {
    /// The object that was not applied, when this is about one.
    pub(crate) fn object(&self) -> Option<&ObjectError> {
        match self {
            Error::Apply(object) => Some(object),
        }
    }
}

/// Applies the Services and observes the facts the certificates and kubeconfigs depend
/// on; `held` are the claimed nodes.
pub(super) async fn apply_services(
    vc: &VirtualCluster,
    tenant: &Tenant,
    held: &[String],
    ctx: &Context,
    changes: &mut Changes,
) -> Result<Observed, Error> {
    let owner = &tenant.owner();
    let store = &ctx.stores.services;
    let (peer, client) = (etcd::peer_service(tenant), etcd::client_service(tenant));
    let apiserver = apiserver::service(tenant);
    let (peer, client, apiserver) = futures::join!(
        apply_object(ctx, owner, store, &peer, "Service"),
        apply_object(ctx, owner, store, &client, "Service"),
        apply_object(ctx, owner, store, &apiserver, "Service"),
    );
    // Each answered before an error ends the step: no write is cut off in flight.
    let (peer, client, apiserver) = (peer?, client?, apiserver?);
    if peer.written || client.written || apiserver.written {
        changes.record(
            "ServicesApplied",
            Step::Services,
            "applied the etcd and kube-apiserver Services",
        );
    }
    Ok(Observed {
        workload_pod_security: workload_pod_security(vc, ctx).await,
        ..observe_service(apiserver.object.as_ref(), held)
    })
}

/// Facts about the apiserver Service the certificates and kubeconfigs depend on.
fn observe_service(service: Option<&Service>, held_nodes: &[String]) -> Observed {
    let cluster_ip = service
        .and_then(|service| service.spec.as_ref())
        .and_then(|spec| spec.cluster_ip.as_deref())
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    let load_balancer_hosts = service
        .and_then(|service| service.status.as_ref())
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|balancer| balancer.ingress.as_ref())
        .map(|ingress| {
            ingress
                .iter()
                .filter_map(|entry| entry.ip.clone().or_else(|| entry.hostname.clone()))
                .collect()
        })
        .unwrap_or_default();
    Observed {
        apiserver_cluster_ip: cluster_ip,
        load_balancer_hosts,
        claimed_nodes: held_nodes.to_vec(),
        workload_pod_security: PodSecurityLevel::Baseline,
    }
}

/// The Pod Security level the cluster admin gave the VirtualCluster's namespace
/// ([`WORKLOAD_POD_SECURITY_LABEL`]), read from the namespace cache, whose label changes
/// wake the namespace's VirtualClusters; an unknown value keeps `baseline` and says so in
/// a Warning Event naming the label and the values it takes.
async fn workload_pod_security(vc: &VirtualCluster, ctx: &Context) -> PodSecurityLevel {
    let namespace = vc.namespace().unwrap_or_default();
    let label = ctx
        .stores
        .namespaces
        .get(&ObjectRef::<Namespace>::new(&namespace))
        .and_then(|found| found.labels().get(WORKLOAD_POD_SECURITY_LABEL).cloned());
    match pod_security::workload_level(label.as_deref()) {
        Ok(level) => level,
        Err(unknown) => {
            let note = format!(
                "label {WORKLOAD_POD_SECURITY_LABEL} on namespace {namespace}: {unknown}; the workload namespace stays at baseline"
            );
            let warning = event(
                EventType::Warning,
                "InvalidPodSecurityLevel",
                Step::Clustertree,
                &note,
            );
            ctx.publish(vc, warning).await;
            PodSecurityLevel::Baseline
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn observed_service_yields_cluster_ip_and_balancer_hosts() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "t-apiserver"},
            "spec": {"clusterIP": "127.100.0.7"},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}, {"hostname": "lb.example"}]}}
        }))
        .unwrap();
        let observed = observe_service(Some(&service), &["n1".to_owned()]);
        assert_eq!(
            observed.apiserver_cluster_ip,
            Some("127.100.0.7".parse().unwrap())
        );
        assert_eq!(observed.load_balancer_hosts, ["203.0.113.1", "lb.example"]);
        assert_eq!(observed.claimed_nodes, ["n1"]);
        let headless: Service =
            serde_json::from_value(json!({"spec": {"clusterIP": "None"}})).unwrap();
        assert_eq!(
            observe_service(Some(&headless), &[]).apiserver_cluster_ip,
            None
        );
    }
}
