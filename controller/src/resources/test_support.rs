//! Shared fixtures of the builder tests.

use std::sync::OnceLock;

use vc_api::VirtualCluster;

use super::{BuildContext, Observed, Tenant, tenant_identity};
use crate::pki::{ExistingPki, PkiMaterial, ensure_pki};

/// A VirtualCluster as the webhook leaves it: namespace, name and uid set.
pub fn virtual_cluster(yaml_spec: &str) -> VirtualCluster {
    let manifest = format!(
        "apiVersion: kosmos.io/v1alpha1\nkind: VirtualCluster\nmetadata:\n  name: prod\n  namespace: team-a\n  uid: 0b6f7c1e-uid\nspec:\n{yaml_spec}"
    );
    serde_yaml::from_str(&manifest).unwrap()
}

/// The default VirtualCluster of most tests.
pub fn default_vc() -> VirtualCluster {
    virtual_cluster(
        "  promoteResources:\n    nodes: [node1, node2]\n    resources: {cpu: 10, memory: 100Gi}\n",
    )
}

pub fn tenant(vc: &VirtualCluster) -> Tenant {
    Tenant::resolve(vc, &BuildContext::default()).unwrap()
}

pub fn observed() -> Observed {
    Observed {
        workload_pod_security: vc_api::pod_security::PodSecurityLevel::Baseline,
        apiserver_cluster_ip: Some("127.100.0.7".parse().unwrap()),
        load_balancer_hosts: Vec::new(),
        claimed_nodes: vec!["node2".to_owned(), "node1".to_owned()],
    }
}

/// PKI of the default tenant, issued once per test binary (key generation is the slow part).
pub fn pki() -> &'static PkiMaterial {
    static PKI: OnceLock<PkiMaterial> = OnceLock::new();
    PKI.get_or_init(|| {
        let tenant = tenant(&default_vc());
        let identity = tenant_identity(&tenant, &BuildContext::default(), &observed()).unwrap();
        ensure_pki(&identity, &ExistingPki::default(), jiff::Timestamp::now())
            .unwrap()
            .1
    })
}
