//! Names of every object of a tenant, exactly as `docs/contracts.md` lists them.
//!
//! The controller names what it builds with these functions and the webhook refuses a
//! VirtualCluster whose names would land on a sibling's, so both read one table: a suffix
//! added here is at once built by the one and guarded by the other.

use crate::constants::ADMIN_KUBECONFIG_SECRET_SUFFIX;

/// An object the controller names `<VirtualCluster name><suffix>` in the VirtualCluster's
/// own namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DerivedObject {
    /// Kind of the object; two names clash only within one kind.
    pub kind: &'static str,
    /// What the tenant uses the object for, as a denial names it ("its etcd CA").
    pub purpose: &'static str,
    /// What follows the VirtualCluster's name.
    pub suffix: &'static str,
}

impl DerivedObject {
    /// The name of this object for VirtualCluster `name`.
    pub fn name(&self, name: &str) -> String {
        format!("{name}{}", self.suffix)
    }
}

const fn derived(kind: &'static str, suffix: &'static str, purpose: &'static str) -> DerivedObject {
    DerivedObject {
        kind,
        purpose,
        suffix,
    }
}

/// Secret of the cluster CA (signs the apiserver, kubelet-client and component certs).
pub const CLUSTER_CA_SECRET: DerivedObject = derived("Secret", "-ca", "cluster CA");
/// Secret of the etcd CA.
pub const ETCD_CA_SECRET: DerivedObject = derived("Secret", "-etcd-ca", "etcd CA");
/// Secret of the front-proxy (aggregation layer) CA.
pub const FRONT_PROXY_CA_SECRET: DerivedObject =
    derived("Secret", "-front-proxy-ca", "front-proxy CA");
/// Secret of the admin client CA (signs the admin kubeconfig alone, so that replacing it
/// revokes every admin kubeconfig and nothing else). Not `-admin-ca`: that is the cluster
/// CA of a sibling named `NAME-admin`, which existing namespaces may hold.
pub const ADMIN_CA_SECRET: DerivedObject = derived("Secret", "-admin-signer", "admin client CA");
/// Secret of the service-account signing key pair.
pub const SERVICE_ACCOUNT_KEY_SECRET: DerivedObject =
    derived("Secret", "-sa", "service-account signing key");
/// Secret of the apiserver serving certificate.
pub const APISERVER_TLS_SECRET: DerivedObject =
    derived("Secret", "-apiserver-tls", "apiserver serving certificate");
/// Secret of the apiserver's etcd client certificate.
pub const APISERVER_ETCD_CLIENT_SECRET: DerivedObject = derived(
    "Secret",
    "-apiserver-etcd-client",
    "apiserver's etcd client certificate",
);
/// Secret of the apiserver's kubelet client certificate.
pub const APISERVER_KUBELET_CLIENT_SECRET: DerivedObject = derived(
    "Secret",
    "-apiserver-kubelet-client",
    "apiserver's kubelet client certificate",
);
/// Secret of the apiserver's admission configuration (how it authenticates to webhooks).
pub const APISERVER_ADMISSION_SECRET: DerivedObject = derived(
    "Secret",
    "-apiserver-admission",
    "apiserver's admission configuration",
);
/// Secret of the apiserver's encryption-at-rest configuration (its secretbox keys).
pub const APISERVER_ENCRYPTION_SECRET: DerivedObject = derived(
    "Secret",
    "-apiserver-encryption",
    "apiserver's encryption-at-rest keys",
);
/// Secret of the front-proxy client certificate.
pub const FRONT_PROXY_CLIENT_SECRET: DerivedObject = derived(
    "Secret",
    "-front-proxy-client",
    "front-proxy client certificate",
);
/// Secret of the etcd serving certificate.
pub const ETCD_SERVER_SECRET: DerivedObject =
    derived("Secret", "-etcd-server", "etcd serving certificate");
/// Secret of the etcd peer certificate.
pub const ETCD_PEER_SECRET: DerivedObject =
    derived("Secret", "-etcd-peer", "etcd peer certificate");
/// Secret of the controller-manager's kubeconfig.
pub const CONTROLLER_MANAGER_KUBECONFIG_SECRET: DerivedObject = derived(
    "Secret",
    "-controller-manager-kubeconfig",
    "controller-manager kubeconfig",
);
/// Secret of the scheduler's kubeconfig.
pub const SCHEDULER_KUBECONFIG_SECRET: DerivedObject =
    derived("Secret", "-scheduler-kubeconfig", "scheduler kubeconfig");
/// Secret of the admin kubeconfig.
pub const ADMIN_KUBECONFIG_SECRET: DerivedObject =
    derived("Secret", ADMIN_KUBECONFIG_SECRET_SUFFIX, "admin kubeconfig");
/// etcd StatefulSet.
pub const ETCD_STATEFUL_SET: DerivedObject = derived("StatefulSet", "-etcd", "etcd");
/// etcd client Service.
pub const ETCD_SERVICE: DerivedObject = derived("Service", "-etcd", "etcd client Service");
/// Headless Service giving each etcd member a stable DNS name.
pub const ETCD_PEER_SERVICE: DerivedObject = derived("Service", "-etcd-peer", "etcd peer Service");
/// kube-apiserver Service.
pub const APISERVER_SERVICE: DerivedObject =
    derived("Service", "-apiserver", "kube-apiserver Service");
/// kube-apiserver Deployment.
pub const APISERVER_DEPLOYMENT: DerivedObject =
    derived("Deployment", "-apiserver", "kube-apiserver");
/// kube-controller-manager Deployment.
pub const CONTROLLER_MANAGER_DEPLOYMENT: DerivedObject = derived(
    "Deployment",
    "-controller-manager",
    "kube-controller-manager",
);
/// kube-scheduler Deployment.
pub const SCHEDULER_DEPLOYMENT: DerivedObject =
    derived("Deployment", "-scheduler", "kube-scheduler");
/// clustertree Deployment.
pub const CLUSTERTREE_DEPLOYMENT: DerivedObject =
    derived("Deployment", "-clustertree", "clustertree");
/// clustertree ServiceAccount.
pub const CLUSTERTREE_SERVICE_ACCOUNT: DerivedObject =
    derived("ServiceAccount", "-clustertree", "clustertree identity");
/// Role letting the clustertree read its VirtualCluster.
pub const CLUSTERTREE_READER_ROLE: DerivedObject = derived(
    "Role",
    "-clustertree",
    "clustertree's VirtualCluster reader role",
);
/// RoleBinding of [`CLUSTERTREE_READER_ROLE`].
pub const CLUSTERTREE_READER_BINDING: DerivedObject = derived(
    "RoleBinding",
    "-clustertree",
    "clustertree's VirtualCluster reader binding",
);
/// NetworkPolicy admitting only this tenant's apiserver (client port) and members (peer
/// port) to its etcd pods.
pub const ETCD_NETWORK_POLICY: DerivedObject =
    derived("NetworkPolicy", "-etcd", "etcd's NetworkPolicy");
/// NetworkPolicy opening the kube-apiserver pods' secure port.
pub const APISERVER_NETWORK_POLICY: DerivedObject = derived(
    "NetworkPolicy",
    "-apiserver",
    "kube-apiserver's NetworkPolicy",
);
/// NetworkPolicy closing the kube-controller-manager pods to the pod network.
pub const CONTROLLER_MANAGER_NETWORK_POLICY: DerivedObject = derived(
    "NetworkPolicy",
    "-controller-manager",
    "kube-controller-manager's NetworkPolicy",
);
/// NetworkPolicy closing the kube-scheduler pods to the pod network.
pub const SCHEDULER_NETWORK_POLICY: DerivedObject = derived(
    "NetworkPolicy",
    "-scheduler",
    "kube-scheduler's NetworkPolicy",
);
/// NetworkPolicy admitting the tenant's apiserver and workloads to the clustertree.
pub const CLUSTERTREE_NETWORK_POLICY: DerivedObject = derived(
    "NetworkPolicy",
    "-clustertree",
    "clustertree's NetworkPolicy",
);

/// Every object named after the VirtualCluster in its own namespace. Objects in the
/// workload namespace and cluster-scoped ones carry the namespace in their name and are
/// guarded by the workload-namespace rule instead.
pub const DERIVED_OBJECTS: [DerivedObject; 32] = [
    CLUSTER_CA_SECRET,
    ETCD_CA_SECRET,
    FRONT_PROXY_CA_SECRET,
    ADMIN_CA_SECRET,
    SERVICE_ACCOUNT_KEY_SECRET,
    APISERVER_TLS_SECRET,
    APISERVER_ETCD_CLIENT_SECRET,
    APISERVER_KUBELET_CLIENT_SECRET,
    APISERVER_ADMISSION_SECRET,
    APISERVER_ENCRYPTION_SECRET,
    FRONT_PROXY_CLIENT_SECRET,
    ETCD_SERVER_SECRET,
    ETCD_PEER_SECRET,
    CONTROLLER_MANAGER_KUBECONFIG_SECRET,
    SCHEDULER_KUBECONFIG_SECRET,
    ADMIN_KUBECONFIG_SECRET,
    ETCD_STATEFUL_SET,
    ETCD_SERVICE,
    ETCD_PEER_SERVICE,
    APISERVER_SERVICE,
    APISERVER_DEPLOYMENT,
    CONTROLLER_MANAGER_DEPLOYMENT,
    SCHEDULER_DEPLOYMENT,
    CLUSTERTREE_DEPLOYMENT,
    CLUSTERTREE_SERVICE_ACCOUNT,
    CLUSTERTREE_READER_ROLE,
    CLUSTERTREE_READER_BINDING,
    ETCD_NETWORK_POLICY,
    APISERVER_NETWORK_POLICY,
    CONTROLLER_MANAGER_NETWORK_POLICY,
    SCHEDULER_NETWORK_POLICY,
    CLUSTERTREE_NETWORK_POLICY,
];

/// Where VirtualCluster `name` and another one of the same namespace would both own an
/// object: the other's name, the object's kind and name, and what each uses it for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameClash {
    /// Name of the other VirtualCluster.
    pub other: String,
    /// Kind of the shared object.
    pub kind: &'static str,
    /// Name of the shared object.
    pub object: String,
    /// What VirtualCluster `name` would use it for.
    pub purpose: &'static str,
    /// What the other VirtualCluster uses it for.
    pub other_purpose: &'static str,
}

/// Every VirtualCluster name that derives one of `name`'s object names, each with the
/// object, for the caller to look up among the existing VirtualClusters. The pairs of
/// suffixes are few (the table squared), so no index of derived names is needed.
pub fn possible_clashes(name: &str) -> Vec<NameClash> {
    let mut clashes = Vec::new();
    for ours in &DERIVED_OBJECTS {
        let object = ours.name(name);
        for theirs in DERIVED_OBJECTS
            .iter()
            .filter(|theirs| theirs.kind == ours.kind)
        {
            let Some(other) = object.strip_suffix(theirs.suffix) else {
                continue;
            };
            if other.is_empty() || other == name {
                continue;
            }
            clashes.push(NameClash {
                other: other.to_owned(),
                kind: ours.kind,
                object: object.clone(),
                purpose: ours.purpose,
                other_purpose: theirs.purpose,
            });
        }
    }
    clashes
}

/// Secret of the cluster CA.
pub fn cluster_ca_secret(name: &str) -> String {
    CLUSTER_CA_SECRET.name(name)
}
/// Secret of the etcd CA.
pub fn etcd_ca_secret(name: &str) -> String {
    ETCD_CA_SECRET.name(name)
}
/// Secret of the front-proxy CA.
pub fn front_proxy_ca_secret(name: &str) -> String {
    FRONT_PROXY_CA_SECRET.name(name)
}
/// Secret of the admin client CA.
pub fn admin_ca_secret(name: &str) -> String {
    ADMIN_CA_SECRET.name(name)
}
/// Secret of the service-account signing key pair.
pub fn service_account_key_secret(name: &str) -> String {
    SERVICE_ACCOUNT_KEY_SECRET.name(name)
}
/// Secret of the apiserver serving certificate.
pub fn apiserver_tls_secret(name: &str) -> String {
    APISERVER_TLS_SECRET.name(name)
}
/// Secret of the apiserver's etcd client certificate.
pub fn apiserver_etcd_client_secret(name: &str) -> String {
    APISERVER_ETCD_CLIENT_SECRET.name(name)
}
/// Secret of the apiserver's kubelet client certificate.
pub fn apiserver_kubelet_client_secret(name: &str) -> String {
    APISERVER_KUBELET_CLIENT_SECRET.name(name)
}
/// Secret of the apiserver's admission configuration.
pub fn apiserver_admission_secret(name: &str) -> String {
    APISERVER_ADMISSION_SECRET.name(name)
}
/// Secret of the apiserver's encryption-at-rest configuration.
pub fn apiserver_encryption_secret(name: &str) -> String {
    APISERVER_ENCRYPTION_SECRET.name(name)
}
/// Secret of the front-proxy client certificate.
pub fn front_proxy_client_secret(name: &str) -> String {
    FRONT_PROXY_CLIENT_SECRET.name(name)
}
/// Secret of the etcd serving certificate.
pub fn etcd_server_secret(name: &str) -> String {
    ETCD_SERVER_SECRET.name(name)
}
/// Secret of the etcd peer certificate.
pub fn etcd_peer_secret(name: &str) -> String {
    ETCD_PEER_SECRET.name(name)
}
/// Secret of the controller-manager's kubeconfig.
pub fn controller_manager_kubeconfig_secret(name: &str) -> String {
    CONTROLLER_MANAGER_KUBECONFIG_SECRET.name(name)
}
/// Secret of the scheduler's kubeconfig.
pub fn scheduler_kubeconfig_secret(name: &str) -> String {
    SCHEDULER_KUBECONFIG_SECRET.name(name)
}
/// etcd StatefulSet and its client Service.
pub fn etcd(name: &str) -> String {
    ETCD_STATEFUL_SET.name(name)
}
/// Headless Service giving each etcd member a stable DNS name.
pub fn etcd_peer_service(name: &str) -> String {
    ETCD_PEER_SERVICE.name(name)
}
/// kube-apiserver Deployment and Service.
pub fn apiserver(name: &str) -> String {
    APISERVER_DEPLOYMENT.name(name)
}
/// kube-controller-manager Deployment.
pub fn controller_manager(name: &str) -> String {
    CONTROLLER_MANAGER_DEPLOYMENT.name(name)
}
/// kube-scheduler Deployment.
pub fn scheduler(name: &str) -> String {
    SCHEDULER_DEPLOYMENT.name(name)
}
/// clustertree Deployment and ServiceAccount, and its VirtualCluster reader
/// Role/RoleBinding.
pub fn clustertree(name: &str) -> String {
    CLUSTERTREE_DEPLOYMENT.name(name)
}
/// RoleBinding in the workload namespace granting the clustertree the chart's fixed
/// clustertree ClusterRole there. Not `NAME-clustertree`: a binding of that name from an
/// older release references a Role, and a roleRef cannot change.
pub fn clustertree_workload_binding(name: &str) -> String {
    format!("{name}-clustertree-workload")
}
/// ClusterRole and ClusterRoleBinding granting read access to the claimed nodes. `:` is
/// in no namespace or VirtualCluster name, so no two tenants share it.
pub fn clustertree_cluster_role(namespace: &str, name: &str) -> String {
    format!("kosmos-vc:{namespace}:{name}:clustertree")
}
/// NetworkPolicy in the workload namespace fencing the tenant's pods from other tenants.
pub fn workload_network_policy(name: &str) -> String {
    format!("{name}-workloads")
}
/// ResourceQuota of the pooled resources in the workload namespace.
pub fn pool_quota(name: &str) -> String {
    format!("{name}-pool")
}
/// Pod name of etcd member `ordinal`.
pub fn etcd_member(name: &str, ordinal: i32) -> String {
    format!("{name}-etcd-{ordinal}")
}
/// Stable in-cluster host name of etcd member `ordinal` (without the cluster domain).
pub fn etcd_member_host(namespace: &str, name: &str, ordinal: i32) -> String {
    format!(
        "{}.{}.{namespace}.svc",
        etcd_member(name, ordinal),
        etcd_peer_service(name)
    )
}
/// In-cluster URL of the tenant apiserver, used by the internal kubeconfigs.
pub fn internal_apiserver_url(namespace: &str, name: &str) -> String {
    format!("https://{}.{namespace}.svc:6443", apiserver(name))
}
/// URL the tenant apiserver reaches etcd through.
pub fn etcd_client_url(namespace: &str, name: &str) -> String {
    format!("https://{}.{namespace}.svc:2379", etcd(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_etcd_and_x_share_the_etcd_ca_secret() {
        let clashes = possible_clashes("x-etcd");
        assert!(clashes.contains(&NameClash {
            other: "x".into(),
            kind: "Secret",
            object: "x-etcd-ca".into(),
            purpose: "cluster CA",
            other_purpose: "etcd CA",
        }));
        let reverse = possible_clashes("x");
        assert!(reverse.contains(&NameClash {
            other: "x-etcd".into(),
            kind: "Secret",
            object: "x-etcd-ca".into(),
            purpose: "etcd CA",
            other_purpose: "cluster CA",
        }));
        assert!(
            reverse
                .iter()
                .any(|clash| clash.other == "x-front-proxy" && clash.object == "x-front-proxy-ca")
        );
    }

    #[test]
    fn a_name_never_clashes_with_itself_and_kinds_stay_apart() {
        for name in ["x", "x-etcd", "prod"] {
            for clash in possible_clashes(name) {
                assert_ne!(clash.other, name);
                assert!(!clash.other.is_empty());
                assert_eq!(
                    format!("{}{}", clash.other, &clash.object[clash.other.len()..]),
                    clash.object
                );
            }
        }
        // "x-etcd" is x's StatefulSet and Service, but VirtualCluster "x-etcd" names no
        // StatefulSet or Service "x-etcd": only Secrets clash.
        assert!(
            possible_clashes("x-etcd")
                .iter()
                .all(|clash| clash.kind == "Secret")
        );
    }

    /// A sibling pair both created before a suffix was added has never been checked
    /// against it; the suffix is safe only if it can land on none of the pair's objects:
    /// neither it nor an older suffix of its kind may end with the other.
    #[test]
    fn suffixes_added_later_land_on_no_older_object() {
        let added = [APISERVER_ENCRYPTION_SECRET, ADMIN_CA_SECRET];
        for new in added {
            for old in DERIVED_OBJECTS
                .iter()
                .filter(|old| old.kind == new.kind && !added.contains(old))
            {
                assert!(
                    !new.suffix.ends_with(old.suffix) && !old.suffix.ends_with(new.suffix),
                    "{} and {} overlap",
                    new.suffix,
                    old.suffix
                );
            }
        }
    }

    #[test]
    fn every_derived_name_is_unique_within_its_kind() {
        let mut seen = std::collections::BTreeSet::new();
        for object in DERIVED_OBJECTS.iter() {
            assert!(
                seen.insert((object.kind, object.suffix)),
                "{object:?} appears twice"
            );
        }
    }
}
