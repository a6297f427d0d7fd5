//! How a tenant pod runs on the host, and how its status comes back: pure functions, so
//! every rule is unit-tested without a cluster; [`crate::pod_sync`] only does the I/O.
//!
//! vc-clustertree is the kubelet of the tenant's mirrored Nodes. A tenant pod the tenant
//! scheduler bound to one of them becomes one host pod in the tenant's workload namespace
//! (`vc-NS-NAME`), named by [`host_pod_name`], recording the tenant pod's namespace, name
//! and UID. On a promoted node the host pod is pinned there by node affinity and tolerates
//! exactly the claim taint; on the pool node the host scheduler picks any unclaimed worker.
//! Nothing of the host's identity reaches the container: no host ServiceAccount token, no
//! host Service environment; the tenant's own token, CA and namespace are mounted instead.
//!
//! A tenant pod the host's Pod Security `baseline` level would refuse, or one needing a
//! volume type not carried over yet, is refused here ([`refusal()`]), before the host sees
//! it, so the tenant gets a reason naming the field rather than a pod stuck Pending.

mod dns;
mod events;
pub(crate) mod naming;
mod placement;
mod plan;
mod refusal;
mod status;
mod translate;

#[cfg(test)]
mod test_support;

use std::fmt;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;

pub use dns::{ClusterDns, host_dns, uses_cluster_dns};
pub use events::{EVENT_COMPONENT, copied_event_name, event_outdated, last_seen, tenant_event};
pub use naming::{
    config_map_copy_name, event_name, host_pod_name, ownership, recorded_uid, secret_copy_name,
    token_secret_name,
};
pub use placement::POOL_DEFAULT_REQUESTS;
pub use plan::{
    Action, HOST_POD_LOST_REASON, Observed, Plan, TOKEN_REFRESH_ANNOTATION, plan, token_fresh,
    token_refresh_after,
};
pub use refusal::{Policy, Refusal, refusal};
pub use status::tenant_status;
pub use translate::{
    COPY_DIGEST_ANNOTATION, Copy, CopyKind, HostPod, TENANT_ROOT_CA_CONFIG_MAP, Token, copy_digest,
    host_pod,
};

/// Which tenant, on which host namespace.
#[derive(Clone, Debug)]
pub struct Tenancy {
    /// `vc-NS-NAME`, where every host object of the tenant's pods lives.
    pub workload_namespace: String,
    /// The VirtualCluster's name: the value of its claim taint.
    pub virtual_cluster: String,
    /// Where in-cluster clients in a host pod reach the tenant apiserver (host, port):
    /// what the tenant kubeconfig names. `None` leaves the kubelet's own values.
    pub apiserver: Option<(String, u16)>,
    /// The tenant's cluster DNS for `ClusterFirst` pods; `None`: the host's resolver.
    pub dns: Option<ClusterDns>,
    /// The tenant's DNS is coming but its address is not known yet: `ClusterFirst` pods
    /// are not started until it is, rather than started resolving the host's names.
    pub dns_pending: bool,
    /// The Pod Security level the tenant's pods are held to (`--pod-security`).
    pub pod_security: vc_api::pod_security::PodSecurityLevel,
}

/// Host and port of the tenant apiserver for in-cluster clients of host pods: the tenant
/// kubeconfig's server (in a pod, `NAME-apiserver.NS.svc:6443`, resolved by the host's
/// DNS). client-go and kube-rs build their in-cluster address from
/// `KUBERNETES_SERVICE_HOST`/`_PORT`, which the kubelet would otherwise set to the host's
/// apiserver; the mounted token and CA are the tenant's, so only the tenant's answers.
pub fn apiserver_address(url: &http::Uri) -> Option<(String, u16)> {
    let host = url.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(443);
    Some((host.to_owned(), port))
}

/// A tenant pod, by identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodRef {
    pub(super) fn of(pod: &Pod) -> Option<PodRef> {
        Some(PodRef {
            namespace: pod.namespace()?,
            name: pod.name_any(),
            uid: pod.uid()?,
        })
    }
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
