//! Every name kosmos-vc writes into a cluster, defined once.
//!
//! The webhook, controller, plugin, chart and tests must agree on these strings exactly;
//! a typo in one place would silently break node exclusivity or cleanup.

/// API group of the VirtualCluster resource, from the proposal.
pub const GROUP: &str = "kosmos.io";
/// API version of the VirtualCluster resource.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as it appears in manifests.
pub const API_VERSION: &str = "kosmos.io/v1alpha1";
/// Kind of the custom resource.
pub const KIND: &str = "VirtualCluster";
/// Plural resource name used in URLs and RBAC rules.
pub const PLURAL: &str = "virtualclusters";
/// Name of the CustomResourceDefinition object.
pub const CRD_NAME: &str = "virtualclusters.kosmos.io";

/// Finalizer that guarantees node release and cleanup before a VirtualCluster disappears.
/// Kept identical to Kosmos's, so clusters migrated from Kosmos keep their protection.
pub const FINALIZER: &str = "kosmos.io/finalizer";

/// The clustertree image an install runs unless its operator names another
/// (`vc-controller --clustertree-image`, `vc-webhook --clustertree-image`, chart value
/// `controller.clustertreeImage`): kosmos-vc's own image of the same release, which holds
/// `vc-clustertree` beside the controller and the webhook, so the three move together.
pub const DEFAULT_CLUSTERTREE_IMAGE: &str =
    concat!("ghcr.io/kosmos-io/kosmos-vc:", env!("CARGO_PKG_VERSION"));

/// Field manager of every server-side apply the controller makes; one manager means
/// the controller never fights itself over field ownership.
pub const CONTROLLER_FIELD_MANAGER: &str = "kosmos-vc-controller";
/// Field manager of the plugin's writes, so `managedFields` shows who changed what.
pub const PLUGIN_FIELD_MANAGER: &str = "kubectl-vc";
/// Field manager of vc-clustertree's writes in a tenant.
pub const CLUSTERTREE_FIELD_MANAGER: &str = "vc-clustertree";
/// Label on every tenant Node vc-clustertree writes, valued `host` for a promoted host
/// node and `pool` for the pooled-resources node: it deletes only Nodes carrying it.
pub const MIRRORED_NODE_LABEL: &str = "vc.kosmos.io/mirrored-from";
/// Name of the tenant Node standing for the pooled resources.
pub const POOL_NODE_NAME: &str = "pool";
/// PriorityClass (installed by the chart) of the host pods vc-clustertree runs for pool
/// pods: each tenant's pool ResourceQuota is scoped to it, so the pool quota bounds what
/// runs on the shared pool and never the pods on a tenant's own promoted nodes, which
/// those nodes' capacity bounds.
pub const POOL_PRIORITY_CLASS: &str = "kosmos-vc-pool";

/// [`MANAGED_BY_LABEL`] value on every host object vc-clustertree writes for a tenant's
/// pod (the host pod and its ConfigMap, Secret and token copies): it deletes only those.
pub const CLUSTERTREE_MANAGED_BY_VALUE: &str = "vc-clustertree";
/// Label on a host object naming the tenant namespace of what it stands for (when a valid
/// label value), so an operator can select one tenant namespace's pods on the host.
pub const TENANT_OBJECT_NAMESPACE_LABEL: &str = "vc.kosmos.io/tenant-namespace";
/// Label on a host object naming the tenant object it stands for (when a valid label value).
pub const TENANT_OBJECT_NAME_LABEL: &str = "vc.kosmos.io/tenant-name";
/// Annotation on a host object holding `NAMESPACE/NAME` of the tenant object it stands for,
/// always, since a tenant name can be longer than a label value may be.
pub const TENANT_OBJECT_ANNOTATION: &str = "vc.kosmos.io/tenant-object";
/// Annotation on a host object holding the UID of the tenant object it stands for: a
/// tenant pod deleted and re-created under the same name must not adopt the old host pod.
pub const TENANT_OBJECT_UID_ANNOTATION: &str = "vc.kosmos.io/tenant-uid";

/// Node label naming the namespace of the VirtualCluster that claimed the node.
pub const NODE_OWNER_NAMESPACE_LABEL: &str = "vc.kosmos.io/owner-namespace";
/// Node label naming the VirtualCluster that claimed the node.
pub const NODE_OWNER_NAME_LABEL: &str = "vc.kosmos.io/owner-name";
/// Annotation holding the UID of the VirtualCluster a host object belongs to, on every
/// object no ownerReference can tie to it (claimed Nodes, the workload namespace and what
/// is in it, the clustertree's ClusterRole and binding). The controller adopts, applies
/// and deletes such an object only when it names this VirtualCluster's UID: a name alone
/// can be taken by anyone, and a VirtualCluster deleted and recreated under the same name
/// must not inherit what the old one left.
pub const OWNER_UID_ANNOTATION: &str = "vc.kosmos.io/owner-uid";
/// Annotation holding `NAMESPACE/NAME` of the VirtualCluster beside [`OWNER_UID_ANNOTATION`],
/// so a refusal can say who holds the object.
pub const OWNER_ANNOTATION: &str = "vc.kosmos.io/owner-virtualcluster";
/// The claiming VirtualCluster's UID on a claimed Node: [`OWNER_UID_ANNOTATION`].
pub const NODE_OWNER_UID_ANNOTATION: &str = OWNER_UID_ANNOTATION;
/// Taint key that keeps host workloads off a claimed node; its value is the tenant's name.
pub const NODE_CLAIM_TAINT_KEY: &str = "vc.kosmos.io/owner";

/// Labels the host uses to mark its own control-plane nodes, which are never promoted.
pub const CONTROL_PLANE_NODE_LABELS: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

/// Label on every object the controller creates for a tenant, valued with the tenant's name.
pub const TENANT_NAME_LABEL: &str = "vc.kosmos.io/virtualcluster";
/// Label naming which part of the tenant an object belongs to (etcd, apiserver, ...).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Standard label saying kosmos-vc manages the object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "kosmos-vc";

/// Pod-template annotation holding a hash of every Secret the pod mounts, so a
/// certificate renewal rolls the pods that use it and no others.
pub const CONFIG_HASH_ANNOTATION: &str = "vc.kosmos.io/config-hash";

/// Annotation an operator sets on a VirtualCluster, to any new value, to rotate the
/// tenant's admin kubeconfig: the admin client CA is replaced, so every admin kubeconfig
/// handed out before stops working. The value acted on is recorded on Secret
/// `NAME-admin-signer` under the same key, and in `status.adminKubeconfigRotation` once the
/// new kubeconfig is served.
pub const ROTATE_ADMIN_KUBECONFIG_ANNOTATION: &str = "vc.kosmos.io/rotate-admin-kubeconfig";

/// Name of the kubeconfig extension that marks the cluster, user and context entries
/// `kubectl vc use-context` wrote, so `kubectl vc delete` never removes a hand-made entry.
pub const KUBECONFIG_MARKER_EXTENSION: &str = "kosmos.io/virtualcluster";

/// Secret key holding the tenant's admin kubeconfig with the externally reachable endpoint.
pub const KUBECONFIG_SECRET_KEY: &str = "kubeconfig";
/// Secret key holding the tenant's admin kubeconfig with the in-cluster Service endpoint.
pub const KUBECONFIG_INTERNAL_SECRET_KEY: &str = "kubeconfig-internal";

/// Suffix of the Secret that holds a tenant's admin kubeconfig (`<name>-admin-kubeconfig`).
pub const ADMIN_KUBECONFIG_SECRET_SUFFIX: &str = "-admin-kubeconfig";

/// Name of the Secret holding the tenant's admin kubeconfig.
pub fn admin_kubeconfig_secret_name(virtual_cluster_name: &str) -> String {
    format!("{virtual_cluster_name}{ADMIN_KUBECONFIG_SECRET_SUFFIX}")
}

/// Prefix of the host namespace where a tenant's workloads land through the clustertree.
pub const TENANT_WORKLOAD_NAMESPACE_PREFIX: &str = "vc-";

/// Host namespace that receives the tenant's workloads through the clustertree, and whose
/// ResourceQuota equals the tenant's pooled resources: `vc-<namespace>-<name>`.
///
/// The control plane itself lives beside the VirtualCluster (so ownerReferences can tie
/// it to its owner); this namespace is cluster-scoped and therefore removed by the
/// finalizer. Callers must keep `namespace` and `name` short enough (the webhook checks
/// that the result is a valid 63-character DNS label).
///
/// Joined without the formatter: the webhook builds it on every admission request.
pub fn tenant_workload_namespace(namespace: &str, name: &str) -> String {
    let mut joined = String::with_capacity(
        TENANT_WORKLOAD_NAMESPACE_PREFIX.len() + namespace.len() + 1 + name.len(),
    );
    joined.push_str(TENANT_WORKLOAD_NAMESPACE_PREFIX);
    joined.push_str(namespace);
    joined.push('-');
    joined.push_str(name);
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_namespace_names_both_namespace_and_name() {
        assert_eq!(
            tenant_workload_namespace("team-a", "prod"),
            "vc-team-a-prod"
        );
    }

    #[test]
    fn admin_secret_name_is_derived_from_the_cluster_name() {
        assert_eq!(
            admin_kubeconfig_secret_name("tenant1"),
            "tenant1-admin-kubeconfig"
        );
    }

    #[test]
    fn api_version_matches_group_and_version() {
        assert_eq!(API_VERSION, format!("{GROUP}/{VERSION}"));
        assert_eq!(CRD_NAME, format!("{PLURAL}.{GROUP}"));
    }
}
