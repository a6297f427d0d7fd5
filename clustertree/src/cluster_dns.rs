//! The tenant's `kube-system/kube-dns` Service, in front of the DNS server vc-clustertree
//! serves ([`crate::dns`]), and the address tenant pods resolve through.
//!
//! A kubeadm cluster has a `kube-dns` Service at its cluster DNS address; the tenant gets
//! the same, selector-less, with an EndpointSlice naming this process. Like any tenant
//! Service it is mirrored to the host with the same cluster IP ([`crate::service_sync`]),
//! so a host pod reaches the tenant's DNS at that address through the host's kube-proxy.
//! The pod loop puts that address into every `ClusterFirst` pod ([`crate::pods::host_dns`]).
//!
//! A `kube-dns` Service the tenant made itself (its own CoreDNS, say) is left alone and
//! its address used: its endpoints are tenant pods, which run on the host like any other.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource as _};
use serde_json::{Value, json};
use vc_api::constants::{
    CLUSTERTREE_FIELD_MANAGER, CLUSTERTREE_MANAGED_BY_VALUE, MANAGED_BY_LABEL,
};

use crate::pods::ClusterDns;
use crate::services::{ENDPOINT_SLICE_MANAGED_BY, SERVICE_NAME_LABEL, contains};

/// Where the tenant's DNS Service lives, as in kubeadm.
pub const NAMESPACE: &str = "kube-system";
pub const SERVICE: &str = "kube-dns";
/// The EndpointSlice naming this process.
pub const ENDPOINT_SLICE: &str = "kube-dns-vc-clustertree";

/// What tenant pods resolve through, as the pod loop sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsState {
    /// No tenant DNS can be reached (no `--kubelet-address` to name in the endpoints):
    /// pods keep the host's resolver.
    Host,
    /// The Service has no cluster IP yet: `ClusterFirst` pods wait rather than start
    /// with the host's resolver.
    Pending,
    /// Resolve through this.
    Tenant(ClusterDns),
}

/// Why one pass could not bring the Service in line; retried next period.
#[derive(Debug, thiserror::Error)]
pub enum ClusterDnsError {
    #[error("reading tenant Service {NAMESPACE}/{SERVICE}: {0}")]
    ReadService(kube::Error),
    #[error("writing tenant Service {NAMESPACE}/{SERVICE}: {0}")]
    WriteService(kube::Error),
    #[error("reading tenant EndpointSlice {NAMESPACE}/{ENDPOINT_SLICE}: {0}")]
    ReadEndpointSlice(kube::Error),
    #[error("writing tenant EndpointSlice {NAMESPACE}/{ENDPOINT_SLICE}: {source}")]
    WriteEndpointSlice {
        /// What pods resolve through all the same.
        state: DnsState,
        source: kube::Error,
    },
}

/// The Service: ports 53 over UDP and TCP to `port` of the endpoints, no selector.
pub fn service(port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": SERVICE, "namespace": NAMESPACE,
            "labels": {"k8s-app": "kube-dns", MANAGED_BY_LABEL: CLUSTERTREE_MANAGED_BY_VALUE},
        },
        "spec": {"type": "ClusterIP", "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": port},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": port},
        ]},
    })
}

/// The EndpointSlice: this process at `address`:`port`, ready once its DNS answers from
/// listed caches (`ready`); a stopped clustertree takes its pod IP with it.
pub fn endpoint_slice(address: IpAddr, port: u16, ready: bool) -> Value {
    let family = if address.is_ipv4() { "IPv4" } else { "IPv6" };
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": ENDPOINT_SLICE, "namespace": NAMESPACE,
            "labels": {
                SERVICE_NAME_LABEL: SERVICE,
                "endpointslice.kubernetes.io/managed-by": ENDPOINT_SLICE_MANAGED_BY,
                MANAGED_BY_LABEL: CLUSTERTREE_MANAGED_BY_VALUE,
            },
        },
        "addressType": family,
        "endpoints": [{"addresses": [address.to_string()], "conditions": {"ready": ready}}],
        "ports": [
            {"name": "dns", "port": port, "protocol": "UDP"},
            {"name": "dns-tcp", "port": port, "protocol": "TCP"},
        ],
    })
}

/// Whether the stored Service is the one this module writes.
fn is_ours(service: &Service) -> bool {
    service
        .meta()
        .labels
        .as_ref()
        .and_then(|labels| labels.get(MANAGED_BY_LABEL))
        .is_some_and(|value| value == CLUSTERTREE_MANAGED_BY_VALUE)
}

/// The address pods resolve through: the Service's cluster IP, once it has one.
pub fn resolver(service: &Service, domain: &str) -> Option<ClusterDns> {
    let address = service.spec.as_ref()?.cluster_ip.as_deref()?;
    Some(ClusterDns {
        nameserver: address.parse().ok()?,
        domain: domain.to_owned(),
    })
}

/// One pass: the Service and EndpointSlice made or mended when ours (the endpoint ready
/// when `answering`), then what pods resolve through.
pub async fn pass(
    tenant: &Client,
    endpoint: (IpAddr, u16),
    domain: &str,
    answering: bool,
) -> Result<DnsState, ClusterDnsError> {
    let services: Api<Service> = Api::namespaced(tenant.clone(), NAMESPACE);
    let apply = PatchParams::apply(CLUSTERTREE_FIELD_MANAGER).force();
    let (address, port) = endpoint;
    let stored = services
        .get_opt(SERVICE)
        .await
        .map_err(ClusterDnsError::ReadService)?;
    let service = match stored {
        Some(stored) if !is_ours(&stored) => {
            return Ok(resolver(&stored, domain).map_or(DnsState::Pending, DnsState::Tenant));
        }
        Some(stored)
            if serde_json::to_value(&stored)
                .is_ok_and(|current| contains(&current, &self::service(port))) =>
        {
            stored
        }
        _ => services
            .patch(SERVICE, &apply, &Patch::Apply(self::service(port)))
            .await
            .map_err(ClusterDnsError::WriteService)?,
    };
    let slices: Api<EndpointSlice> = Api::namespaced(tenant.clone(), NAMESPACE);
    let wanted = endpoint_slice(address, port, answering);
    let current = slices
        .get_opt(ENDPOINT_SLICE)
        .await
        .map_err(ClusterDnsError::ReadEndpointSlice)?;
    let current_ours = current
        .as_ref()
        .and_then(|slice| slice.metadata.labels.as_ref())
        .and_then(|labels| labels.get(MANAGED_BY_LABEL))
        .is_some_and(|value| value == CLUSTERTREE_MANAGED_BY_VALUE);
    let up_to_date = current
        .as_ref()
        .and_then(|slice| serde_json::to_value(slice).ok())
        .is_some_and(|current| contains(&current, &wanted));
    // Pods are pointed at the Service even when its endpoint cannot be written now (a
    // refused address, say): the error is reported, and the next pass tries again.
    let state = resolver(&service, domain).map_or(DnsState::Pending, DnsState::Tenant);
    if (current.is_none() || current_ours) && !up_to_date {
        slices
            .patch(ENDPOINT_SLICE, &apply, &Patch::Apply(wanted))
            .await
            .map_err(|source| ClusterDnsError::WriteEndpointSlice {
                state: state.clone(),
                source,
            })?;
    }
    Ok(state)
}

/// Keeps the tenant's DNS Service in line every `period` until `shutdown`, publishing
/// what pods resolve through; its endpoint is ready while `answering` is true. `endpoint`: where this process serves DNS, as host pods
/// reach it; `None` publishes [`DnsState::Host`] and writes nothing.
pub async fn run(
    tenant: Client,
    endpoint: Option<(IpAddr, u16)>,
    domain: String,
    period: Duration,
    mut answering: tokio::sync::watch::Receiver<bool>,
    publish: tokio::sync::watch::Sender<DnsState>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let Some(endpoint) = endpoint else {
        publish.send_replace(DnsState::Host);
        return;
    };
    loop {
        let ready = *answering.borrow_and_update();
        let outcome = match pass(&tenant, endpoint, &domain, ready).await {
            Err(ClusterDnsError::WriteEndpointSlice { state, source }) => {
                tracing::warn!(error = %source, "writing the tenant DNS EndpointSlice; retrying");
                Ok(state)
            }
            other => other,
        };
        match outcome {
            Ok(state) => {
                publish.send_if_modified(|current| {
                    let changed = *current != state;
                    if changed {
                        tracing::info!(?state, "tenant pods resolve through");
                        *current = state;
                    }
                    changed
                });
            }
            Err(error) => tracing::warn!(%error, "tenant DNS Service; retrying"),
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(period) => {}
            // The endpoint turns ready at once, not a period later.
            Ok(()) = answering.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Service maps port 53 of both protocols to where the server listens, and has no
    /// selector: its only endpoint is this process.
    #[test]
    fn the_service_sends_port_53_to_the_server() {
        let service: Service = serde_json::from_value(service(1053)).unwrap();
        let spec = service.spec.unwrap();
        assert_eq!(spec.selector, None);
        let ports: Vec<(String, i32, String)> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| {
                let target = match p.target_port {
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port)) => {
                        port.to_string()
                    }
                    other => format!("{other:?}"),
                };
                (p.protocol.unwrap_or_default(), p.port, target)
            })
            .collect();
        assert_eq!(
            ports,
            [
                ("UDP".to_owned(), 53, "1053".to_owned()),
                ("TCP".to_owned(), 53, "1053".to_owned())
            ]
        );
    }

    /// The EndpointSlice belongs to the Service, names this process, and is left alone by
    /// the tenant's EndpointSlice controller (another manager).
    #[test]
    fn the_endpoint_slice_names_this_process() {
        let slice: EndpointSlice =
            serde_json::from_value(endpoint_slice("10.244.1.9".parse().unwrap(), 1053, true))
                .unwrap();
        let labels = slice.metadata.labels.clone().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], SERVICE);
        assert_ne!(
            labels["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(slice.endpoints[0].addresses, ["10.244.1.9"]);
        let v6: EndpointSlice =
            serde_json::from_value(endpoint_slice("fd00::9".parse().unwrap(), 1053, false))
                .unwrap();
        assert_eq!(v6.address_type, "IPv6");
        // Ready only while the DNS answers.
        let ready = |slice: &EndpointSlice| slice.endpoints[0].conditions.as_ref()?.ready;
        assert_eq!(ready(&slice), Some(true));
        assert_eq!(ready(&v6), Some(false));
    }

    /// Pods resolve through the cluster IP, once there is one.
    #[test]
    fn pods_resolve_through_the_cluster_ip() {
        let mut service: Service = serde_json::from_value(service(1053)).unwrap();
        assert_eq!(resolver(&service, "cluster.local"), None);
        service.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.10".to_owned());
        assert_eq!(
            resolver(&service, "cluster.local"),
            Some(ClusterDns {
                nameserver: "10.96.0.10".parse().unwrap(),
                domain: "cluster.local".to_owned()
            })
        );
        service.spec.as_mut().unwrap().cluster_ip = Some("None".to_owned());
        assert_eq!(resolver(&service, "cluster.local"), None);
    }

    /// A `kube-dns` the tenant made is not ours to change.
    #[test]
    fn a_tenants_own_kube_dns_is_not_ours() {
        let mut service: Service = serde_json::from_value(service(1053)).unwrap();
        assert!(is_ours(&service));
        service.metadata.labels = None;
        assert!(!is_ours(&service));
    }
}
