//! What each certificate of a tenant must say: subject, SANs, usages, signer, lifetime.
//!
//! Subjects follow kubeadm so tenant components behave exactly as in a kubeadm cluster
//! (RBAC binds `system:kube-controller-manager`, `system:kube-scheduler`, ...).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use super::{CaKind, LeafKind, TenantIdentity};

/// A leaf certificate is trusted by TLS clients, by TLS servers, or by both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// Serving certificate (`serverAuth`).
    Server,
    /// Client certificate (`clientAuth`).
    Client,
    /// Both, as etcd needs for its server and peer certificates: etcd's gRPC gateway dials
    /// its own server presenting the server certificate as a client certificate.
    ServerAndClient,
}

/// The identity a leaf certificate must carry. Two profiles that compare equal describe
/// certificates that are interchangeable; any difference makes the controller reissue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafProfile {
    /// Subject common name.
    pub common_name: String,
    /// Subject organization (Kubernetes group), if any.
    pub organization: Option<String>,
    /// DNS subject alternative names.
    pub dns_names: BTreeSet<String>,
    /// IP subject alternative names.
    pub ip_addresses: BTreeSet<IpAddr>,
    /// Extended key usage.
    pub usage: Usage,
}

impl CaKind {
    /// Common name of the CA, as kubeadm names it.
    pub fn common_name(self) -> &'static str {
        match self {
            Self::Cluster => "kubernetes",
            Self::Etcd => "etcd-ca",
            Self::FrontProxy => "front-proxy-ca",
            Self::Admin => "kubernetes-admin-ca",
        }
    }
}

impl LeafKind {
    /// The CA that signs this leaf.
    pub fn signer(self) -> CaKind {
        match self {
            Self::ApiServer
            | Self::ApiServerKubeletClient
            | Self::ControllerManager
            | Self::Scheduler => CaKind::Cluster,
            Self::Admin => CaKind::Admin,
            Self::ApiServerEtcdClient | Self::EtcdServer | Self::EtcdPeer => CaKind::Etcd,
            Self::FrontProxyClient => CaKind::FrontProxy,
        }
    }

    /// The subject, SANs and usage this leaf must carry for `tenant`.
    pub fn profile(self, tenant: &TenantIdentity) -> LeafProfile {
        let client = |common_name: &str, organization: Option<&str>| LeafProfile {
            common_name: common_name.to_owned(),
            organization: organization.map(str::to_owned),
            dns_names: BTreeSet::new(),
            ip_addresses: BTreeSet::new(),
            usage: Usage::Client,
        };
        match self {
            Self::ApiServer => apiserver_profile(tenant),
            Self::ApiServerEtcdClient => client("kube-apiserver-etcd-client", None),
            Self::ApiServerKubeletClient => client(
                "kube-apiserver-kubelet-client",
                Some("kubeadm:cluster-admins"),
            ),
            Self::FrontProxyClient => client("front-proxy-client", None),
            Self::ControllerManager => client("system:kube-controller-manager", None),
            Self::Scheduler => client("system:kube-scheduler", None),
            // kubeadm's super-admin identity: the controller must be able to install CRDs
            // into a tenant before any RBAC binding exists there.
            Self::Admin => client("kubernetes-admin", Some("system:masters")),
            Self::EtcdServer => etcd_profile(tenant, tenant.etcd_client_service()),
            Self::EtcdPeer => etcd_profile(tenant, tenant.etcd_peer_service()),
        }
    }
}

fn loopback() -> (String, IpAddr) {
    ("localhost".to_owned(), IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn apiserver_profile(tenant: &TenantIdentity) -> LeafProfile {
    let (localhost, loopback_ip) = loopback();
    let domain = &tenant.cluster_domain;
    let mut dns_names: BTreeSet<String> =
        service_dns_names(&tenant.apiserver_service(), &tenant.namespace, domain);
    dns_names.insert(localhost);
    for name in [
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
        format!("kubernetes.default.svc.{domain}"),
    ] {
        dns_names.insert(name);
    }
    let mut ip_addresses = BTreeSet::from([loopback_ip, tenant.tenant_kubernetes_service_ip]);
    ip_addresses.extend(tenant.apiserver_cluster_ip);
    for host in tenant
        .external_hosts
        .iter()
        .chain(&tenant.load_balancer_hosts)
    {
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                ip_addresses.insert(ip);
            }
            Err(_) => {
                dns_names.insert(host.clone());
            }
        }
    }
    LeafProfile {
        common_name: "kube-apiserver".to_owned(),
        organization: None,
        dns_names,
        ip_addresses,
        usage: Usage::Server,
    }
}

fn etcd_profile(tenant: &TenantIdentity, common_name: String) -> LeafProfile {
    let (localhost, loopback_ip) = loopback();
    let domain = &tenant.cluster_domain;
    let mut dns_names = service_dns_names(&tenant.etcd_client_service(), &tenant.namespace, domain);
    dns_names.insert(localhost);
    for member in tenant.etcd_member_hosts() {
        dns_names.insert(format!("{member}.{domain}"));
        dns_names.insert(member);
    }
    LeafProfile {
        common_name,
        organization: None,
        dns_names,
        ip_addresses: BTreeSet::from([loopback_ip]),
        usage: Usage::ServerAndClient,
    }
}

/// `SVC`, `SVC.NS`, `SVC.NS.svc` and `SVC.NS.svc.DOMAIN`.
fn service_dns_names(service: &str, namespace: &str, domain: &str) -> BTreeSet<String> {
    BTreeSet::from([
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.{domain}"),
    ])
}
