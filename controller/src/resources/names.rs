//! Names of every object of a tenant, exactly as `docs/contracts.md` lists them.

/// Secret of the cluster CA (signs the apiserver, kubelet-client and component certs).
pub fn cluster_ca_secret(name: &str) -> String {
    format!("{name}-ca")
}
/// Secret of the etcd CA.
pub fn etcd_ca_secret(name: &str) -> String {
    format!("{name}-etcd-ca")
}
/// Secret of the front-proxy (aggregation layer) CA.
pub fn front_proxy_ca_secret(name: &str) -> String {
    format!("{name}-front-proxy-ca")
}
/// Secret of the service-account signing key pair.
pub fn service_account_key_secret(name: &str) -> String {
    format!("{name}-sa")
}
/// Secret of the apiserver serving certificate.
pub fn apiserver_tls_secret(name: &str) -> String {
    format!("{name}-apiserver-tls")
}
/// Secret of the apiserver's etcd client certificate.
pub fn apiserver_etcd_client_secret(name: &str) -> String {
    format!("{name}-apiserver-etcd-client")
}
/// Secret of the apiserver's kubelet client certificate.
pub fn apiserver_kubelet_client_secret(name: &str) -> String {
    format!("{name}-apiserver-kubelet-client")
}
/// Secret of the front-proxy client certificate.
pub fn front_proxy_client_secret(name: &str) -> String {
    format!("{name}-front-proxy-client")
}
/// Secret of the etcd serving certificate.
pub fn etcd_server_secret(name: &str) -> String {
    format!("{name}-etcd-server")
}
/// Secret of the etcd peer certificate.
pub fn etcd_peer_secret(name: &str) -> String {
    format!("{name}-etcd-peer")
}
/// Secret of the controller-manager's kubeconfig.
pub fn controller_manager_kubeconfig_secret(name: &str) -> String {
    format!("{name}-controller-manager-kubeconfig")
}
/// Secret of the scheduler's kubeconfig.
pub fn scheduler_kubeconfig_secret(name: &str) -> String {
    format!("{name}-scheduler-kubeconfig")
}
/// etcd StatefulSet and its client Service.
pub fn etcd(name: &str) -> String {
    format!("{name}-etcd")
}
/// Headless Service giving each etcd member a stable DNS name.
pub fn etcd_peer_service(name: &str) -> String {
    format!("{name}-etcd-peer")
}
/// kube-apiserver Deployment and Service.
pub fn apiserver(name: &str) -> String {
    format!("{name}-apiserver")
}
/// kube-controller-manager Deployment.
pub fn controller_manager(name: &str) -> String {
    format!("{name}-controller-manager")
}
/// kube-scheduler Deployment.
pub fn scheduler(name: &str) -> String {
    format!("{name}-scheduler")
}
/// clustertree Deployment and ServiceAccount, and its Role/RoleBinding in the workload
/// namespace.
pub fn clustertree(name: &str) -> String {
    format!("{name}-clustertree")
}
/// ClusterRole and ClusterRoleBinding granting read access to the claimed nodes.
pub fn clustertree_cluster_role(namespace: &str, name: &str) -> String {
    format!("kosmos-vc:{namespace}:{name}:clustertree")
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
