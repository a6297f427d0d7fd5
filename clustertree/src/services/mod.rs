//! How a tenant Service reaches the tenant's pods on the host: pure functions, so every
//! rule is unit-tested without a cluster; [`crate::service_sync`] only does the I/O.
//!
//! The tenant's pods are host pods, so a tenant Service must be a host Service for the
//! host's kube-proxy to route to them. A tenant Service of type ClusterIP, NodePort or
//! LoadBalancer with a cluster IP becomes one host Service in `vc-NS-NAME`, named by
//! [`host_service_name`], with **no selector** (the host pods carry host labels, not the
//! tenant's) and the same ports, type, cluster IPs and node ports. Its endpoints are the
//! tenant's EndpointSlices mirrored as host EndpointSlices ([`host_endpoint_slice`]): a
//! tenant pod's IP is its host pod's IP, so the addresses carry over unchanged.
//!
//! The cluster IPs are the same on both sides because the host decides them: the tenant
//! apiserver's Service range equals the host's, and the clustertree's mutating webhook
//! creates the host Service before the tenant stores its own, then sets the tenant
//! Service's cluster IPs and node ports to what the host allocated ([`admission_patch`]).
//! A headless or ExternalName Service has no cluster IP to route, so it gets no host
//! Service; the tenant's DNS answers for it. The tenant's `default/kubernetes` Service is
//! the tenant apiserver itself and is never synced.

mod admission;
mod naming;
mod plan;
mod translate;

pub use admission::{
    ADMISSION_PATH, WEBHOOK_CONFIGURATION, admission_patch, generated_name, name_operation,
    refusal_message, webhook_configuration,
};
pub use naming::{ENDPOINT_SLICE_MANAGED_BY, host_endpoint_slice_name, host_service_name};
pub use plan::{Action, GRACE, Observed, plan};
pub use translate::{
    SERVICE_NAME_LABEL, contains, host_endpoint_slice, host_service, is_ours, is_synced,
};
