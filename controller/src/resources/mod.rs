//! Pure builders of every object a tenant needs, from its VirtualCluster.
//!
//! Nothing here performs I/O: each builder maps `(&VirtualCluster, &BuildContext, ...)` to
//! a k8s-openapi object, so the reconciler only has to server-side apply what it gets.
//! Output is deterministic (sorted maps, fixed orders): applying an unchanged tenant
//! produces byte-identical bodies, which the apiserver turns into no-ops.
//!
//! Entry points:
//! - [`Tenant::resolve`]: the VirtualCluster with every default filled in;
//! - [`tenant_identity`]: what goes into the certificates (feed it to `pki`);
//! - [`DesiredState::build`]: every object, grouped by the step of the chain that
//!   applies it, or the individual builders in the sub-modules.

pub mod apiserver;
pub mod clustertree;
pub mod components;
pub mod etcd;
pub mod meta;
pub mod names;
pub mod network_policy;
pub mod pod;
pub mod secrets;

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use vc_api::{ResourceQuantity, ServiceType, VirtualCluster};

use crate::pki::{PkiMaterial, TenantIdentity};

pub use meta::CONFIG_HASH_ANNOTATION;

/// Operator-wide settings every builder needs (from the controller's flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildContext {
    /// Registry of kube-apiserver, kube-controller-manager and kube-scheduler images.
    pub image_registry: String,
    /// Image of the etcd members.
    pub etcd_image: String,
    /// Image of the clustertree, which runs with host credentials: the operator's alone.
    pub clustertree_image: String,
    /// The chart's fixed ClusterRole each clustertree is bound to in its workload
    /// namespace (`--clustertree-cluster-role`).
    pub clustertree_cluster_role: String,
    /// DNS domain of the host cluster.
    pub cluster_domain: String,
    /// Node labels the control plane and clustertree pods are placed by; any node when
    /// empty.
    pub control_plane_node_selector: BTreeMap<String, String>,
    /// Service CIDR of every tenant (`--service-cluster-ip-range`); its first address is
    /// the tenant's `kubernetes` Service and is in the serving certificate.
    pub tenant_service_cidr: String,
    /// The host's pod networks (`--host-pod-cidrs`): a workload namespace admits
    /// addresses outside them (NodePort and LoadBalancer traffic), never inside. Empty:
    /// it admits only its own pods and its tenant's apiserver.
    pub host_pod_cidrs: Vec<vc_api::cidr::Cidr>,
    /// Defaults for fields a VirtualCluster created without the webhook may lack.
    pub defaults: Defaults,
}

/// Registry of the Kubernetes images (`vc-controller --image-registry`).
pub const DEFAULT_IMAGE_REGISTRY: &str = "registry.k8s.io";
/// The etcd image (`vc-controller --etcd-image`).
pub const DEFAULT_ETCD_IMAGE: &str = "registry.k8s.io/etcd:3.5.21-0";
/// The tenants' cluster domain (`vc-controller --cluster-domain`).
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// What `vc-controller` builds with when no flag says otherwise.
impl Default for BuildContext {
    fn default() -> Self {
        Self {
            image_registry: DEFAULT_IMAGE_REGISTRY.to_owned(),
            etcd_image: DEFAULT_ETCD_IMAGE.to_owned(),
            clustertree_image: vc_api::constants::DEFAULT_CLUSTERTREE_IMAGE.to_owned(),
            clustertree_cluster_role: clustertree::DEFAULT_WORKLOAD_CLUSTER_ROLE.to_owned(),
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
            control_plane_node_selector: BTreeMap::new(),
            tenant_service_cidr: "10.96.0.0/12".to_owned(),
            host_pod_cidrs: Vec::new(),
            defaults: Defaults::default(),
        }
    }
}

/// The webhook's defaults, applied again here so a VirtualCluster that bypassed the
/// webhook still provisions the same way; one type, so the two can never disagree.
pub use vc_api::admission::Defaults;

/// Facts about the host the builders cannot know from the spec alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Cluster IP of the apiserver Service, once allocated.
    pub apiserver_cluster_ip: Option<IpAddr>,
    /// Load-balancer ingress addresses (IP or host name) of the apiserver Service.
    pub load_balancer_hosts: Vec<String>,
    /// Nodes this tenant currently holds a claim on (sorted or not; builders sort).
    pub claimed_nodes: Vec<String>,
    /// The Pod Security level of the workload namespace, from the VirtualCluster's
    /// namespace ([`vc_api::pod_security::WORKLOAD_POD_SECURITY_LABEL`]).
    pub workload_pod_security: vc_api::pod_security::PodSecurityLevel,
}

/// Why an object could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The VirtualCluster lacks a field the builders need.
    #[error("VirtualCluster has no {field}; it must be read from the apiserver, not built locally")]
    MissingField {
        /// JSON path of the field.
        field: &'static str,
    },
    /// A spec value is out of range.
    #[error("{field} is {value}; {fix}")]
    InvalidField {
        /// JSON path of the field.
        field: &'static str,
        /// The offending value.
        value: String,
        /// What is accepted.
        fix: &'static str,
    },
    /// The tenant service CIDR flag is not an IP network.
    #[error("tenant service CIDR {cidr:?} is not an IP network such as 10.96.0.0/12")]
    ParseServiceCidr {
        /// The configured value.
        cidr: String,
    },
    /// A kubeconfig could not be rendered.
    #[error("failed to render the {which} kubeconfig: {source}")]
    RenderKubeconfig {
        /// Which kubeconfig.
        which: &'static str,
        /// The underlying error.
        source: serde_yaml::Error,
    },
    /// The encryption-at-rest configuration could not be rendered.
    #[error("failed to render the apiserver's encryption-at-rest configuration: {source}")]
    RenderEncryptionConfig {
        /// The underlying error.
        source: crate::pki::EncryptionError,
    },
}

/// A VirtualCluster with every default resolved: what the builders read.
#[derive(Clone, Debug, PartialEq)]
pub struct Tenant {
    /// Namespace of the VirtualCluster and of the control plane.
    pub namespace: String,
    /// Name of the VirtualCluster.
    pub name: String,
    /// UID of the VirtualCluster, for ownerReferences.
    pub uid: String,
    /// Kubernetes version of the control plane, such as `v1.33.4`.
    pub kubernetes_version: String,
    /// kube-apiserver replicas (also used for controller-manager and scheduler).
    pub apiserver_replicas: i32,
    /// Type of the apiserver Service.
    pub service_type: ServiceType,
    /// Extra names of the apiserver.
    pub external_hosts: Vec<String>,
    /// etcd members: 1, 3 or 5.
    pub etcd_replicas: i32,
    /// Size of each etcd volume.
    pub etcd_storage_size: String,
    /// StorageClass of each etcd volume.
    pub etcd_storage_class: Option<String>,
    /// clustertree image, from [`BuildContext::clustertree_image`] whatever the spec says.
    pub clustertree_image: String,
    /// From [`BuildContext::clustertree_cluster_role`].
    pub clustertree_cluster_role: String,
    /// From [`BuildContext::control_plane_node_selector`].
    pub control_plane_node_selector: BTreeMap<String, String>,
    /// Pod Security level of the workload namespace and of the clustertree's refusals
    /// ([`Observed::workload_pod_security`]; `baseline` from [`Tenant::resolve`]).
    pub pod_security: vc_api::pod_security::PodSecurityLevel,
    /// Pooled resources, by resource name.
    pub pooled_resources: BTreeMap<String, ResourceQuantity>,
    /// The annotation [`vc_api::constants::ROTATE_ADMIN_KUBECONFIG_ANNOTATION`].
    pub admin_rotation: Option<String>,
}

impl Tenant {
    /// Resolves `vc` against the defaults of `ctx`.
    pub fn resolve(vc: &VirtualCluster, ctx: &BuildContext) -> Result<Self, BuildError> {
        let metadata = &vc.metadata;
        let namespace = metadata.namespace.clone().ok_or(BuildError::MissingField {
            field: "metadata.namespace",
        })?;
        let name = metadata.name.clone().ok_or(BuildError::MissingField {
            field: "metadata.name",
        })?;
        let uid = metadata.uid.clone().ok_or(BuildError::MissingField {
            field: "metadata.uid",
        })?;
        let defaults = &ctx.defaults;
        let control_plane = vc.spec.control_plane.clone().unwrap_or_default();
        let api_server = control_plane.api_server.unwrap_or_default();
        let etcd = control_plane.etcd.unwrap_or_default();
        let etcd_replicas = etcd.replicas.unwrap_or(defaults.etcd_replicas);
        if ![1, 3, 5].contains(&etcd_replicas) {
            return Err(BuildError::InvalidField {
                field: "spec.controlPlane.etcd.replicas",
                value: etcd_replicas.to_string(),
                fix: "set 1, 3 or 5 so etcd always has a well-defined quorum",
            });
        }
        let etcd_storage_size = etcd
            .storage_size
            .map(|size| size.as_quantity_string())
            .unwrap_or_else(|| defaults.etcd_storage_size.clone());
        if etcd::quota_backend_bytes(&etcd_storage_size).is_none() {
            return Err(BuildError::InvalidField {
                field: "spec.controlPlane.etcd.storageSize",
                value: etcd_storage_size,
                fix: "set a positive quantity such as 1Gi",
            });
        }
        let apiserver_replicas = api_server.replicas.unwrap_or(defaults.apiserver_replicas);
        if apiserver_replicas < 1 {
            return Err(BuildError::InvalidField {
                field: "spec.controlPlane.apiServer.replicas",
                value: apiserver_replicas.to_string(),
                fix: "set at least 1",
            });
        }
        Ok(Self {
            namespace,
            name,
            uid,
            kubernetes_version: vc
                .spec
                .kubernetes_version
                .clone()
                .unwrap_or_else(|| defaults.kubernetes_version.clone()),
            apiserver_replicas,
            service_type: api_server
                .service_type
                .unwrap_or(defaults.apiserver_service_type),
            external_hosts: api_server.external_hosts,
            etcd_replicas,
            etcd_storage_size,
            etcd_storage_class: etcd.storage_class_name.filter(|class| !class.is_empty()),
            clustertree_image: ctx.clustertree_image.clone(),
            clustertree_cluster_role: ctx.clustertree_cluster_role.clone(),
            control_plane_node_selector: ctx.control_plane_node_selector.clone(),
            pod_security: vc_api::pod_security::PodSecurityLevel::Baseline,
            pooled_resources: vc.spec.promote_resources.resources.clone(),
            admin_rotation: metadata
                .annotations
                .as_ref()
                .and_then(|annotations| {
                    annotations.get(vc_api::constants::ROTATE_ADMIN_KUBECONFIG_ANNOTATION)
                })
                .cloned(),
        })
    }

    /// Image of a Kubernetes component at the tenant's version.
    pub fn component_image(&self, ctx: &BuildContext, component: &str) -> String {
        let registry = ctx.image_registry.trim_end_matches('/');
        format!("{registry}/{component}:{}", self.kubernetes_version)
    }

    /// Host namespace of the tenant's workloads.
    pub fn workload_namespace(&self) -> String {
        vc_api::constants::tenant_workload_namespace(&self.namespace, &self.name)
    }

    /// The VirtualCluster every existing object is judged against before it is touched.
    pub fn owner(&self) -> crate::ownership::Owner<'_> {
        crate::ownership::Owner {
            namespace: &self.namespace,
            name: &self.name,
            uid: &self.uid,
        }
    }
}

/// The first address of `cidr`, such as `10.96.0.1` for `10.96.0.0/12`.
pub fn first_service_ip(cidr: &str) -> Result<IpAddr, BuildError> {
    let error = || BuildError::ParseServiceCidr {
        cidr: cidr.to_owned(),
    };
    let (address, prefix) = cidr.split_once('/').ok_or_else(error)?;
    let prefix: u32 = prefix.parse().map_err(|_| error())?;
    match address.parse::<IpAddr>().map_err(|_| error())? {
        IpAddr::V4(v4) if prefix <= 31 => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            Ok(IpAddr::V4(std::net::Ipv4Addr::from(
                (u32::from(v4) & mask) + 1,
            )))
        }
        IpAddr::V6(v6) if prefix <= 127 => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            Ok(IpAddr::V6(std::net::Ipv6Addr::from(
                (u128::from(v6) & mask) + 1,
            )))
        }
        _ => Err(error()),
    }
}

/// Everything that goes into the tenant's certificates.
pub fn tenant_identity(
    tenant: &Tenant,
    ctx: &BuildContext,
    observed: &Observed,
) -> Result<TenantIdentity, BuildError> {
    Ok(TenantIdentity {
        namespace: tenant.namespace.clone(),
        name: tenant.name.clone(),
        cluster_domain: ctx.cluster_domain.clone(),
        apiserver_cluster_ip: observed.apiserver_cluster_ip,
        tenant_kubernetes_service_ip: first_service_ip(&ctx.tenant_service_cidr)?,
        external_hosts: tenant.external_hosts.clone(),
        load_balancer_hosts: observed.load_balancer_hosts.clone(),
        etcd_replicas: tenant.etcd_replicas,
        admin_rotation: tenant.admin_rotation.clone(),
    })
}

/// etcd's objects.
#[derive(Clone, Debug, PartialEq)]
pub struct EtcdObjects {
    /// Headless Service giving members stable names (apply before the StatefulSet).
    pub peer_service: Service,
    /// Service the apiserver reaches etcd through.
    pub client_service: Service,
    /// The members.
    pub stateful_set: StatefulSet,
}

/// The clustertree and what it needs on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterTreeObjects {
    /// Cluster-scoped: the tenant's workload namespace.
    pub namespace: Namespace,
    /// In the workload namespace: quota equal to the pooled resources.
    pub resource_quota: ResourceQuota,
    /// Beside the VirtualCluster: the clustertree's host identity.
    pub service_account: ServiceAccount,
    /// Beside the VirtualCluster: `get` on that VirtualCluster alone.
    pub virtual_cluster_reader: Role,
    /// Beside the VirtualCluster.
    pub virtual_cluster_reader_binding: RoleBinding,
    /// In the workload namespace: the chart's fixed clustertree ClusterRole, there alone.
    pub role_binding: RoleBinding,
    /// Cluster-scoped: read access to the claimed nodes.
    pub cluster_role: ClusterRole,
    /// Cluster-scoped.
    pub cluster_role_binding: ClusterRoleBinding,
    /// Beside the VirtualCluster.
    pub deployment: Deployment,
}

/// Every object of a tenant, grouped by the step of the chain that applies it, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredState {
    /// CA, service-account, leaf and component-kubeconfig Secrets.
    pub pki_secrets: Vec<Secret>,
    /// etcd.
    pub etcd: EtcdObjects,
    /// kube-apiserver Service (its cluster IP feeds the PKI, so it may be applied first).
    pub apiserver_service: Service,
    /// kube-apiserver Deployment.
    pub apiserver_deployment: Deployment,
    /// kube-controller-manager Deployment.
    pub controller_manager: Deployment,
    /// kube-scheduler Deployment.
    pub scheduler: Deployment,
    /// `NAME-admin-kubeconfig`.
    pub admin_kubeconfig: Secret,
    /// clustertree and its host credential.
    pub clustertree: ClusterTreeObjects,
    /// The NetworkPolicies fencing the control plane and the workload namespace.
    pub network_policies: network_policy::NetworkPolicies,
}

impl DesiredState {
    /// Builds every object of the tenant from `vc` and its PKI.
    pub fn build(
        vc: &VirtualCluster,
        ctx: &BuildContext,
        observed: &Observed,
        pki: &PkiMaterial,
    ) -> Result<Self, BuildError> {
        let tenant = Tenant {
            pod_security: observed.workload_pod_security,
            ..Tenant::resolve(vc, ctx)?
        };
        let pki_secrets = secrets::pki_secrets(&tenant, pki)?;
        let admin_kubeconfig = secrets::admin_kubeconfig_secret(&tenant, observed, pki)?;
        let mounted: Vec<&Secret> = pki_secrets
            .iter()
            .chain(std::iter::once(&admin_kubeconfig))
            .collect();
        let stamped = |mut deployment: Deployment| {
            if let Some(spec) = deployment.spec.as_mut() {
                meta::stamp_config_hash(&mut spec.template, &mounted);
            }
            deployment
        };
        let mut stateful_set = etcd::stateful_set(&tenant, ctx, "");
        if let Some(spec) = stateful_set.spec.as_mut() {
            meta::stamp_config_hash(&mut spec.template, &mounted);
        }
        Ok(Self {
            etcd: EtcdObjects {
                peer_service: etcd::peer_service(&tenant),
                client_service: etcd::client_service(&tenant),
                stateful_set,
            },
            apiserver_service: apiserver::service(&tenant),
            apiserver_deployment: stamped(apiserver::deployment(&tenant, ctx, "")),
            controller_manager: stamped(components::controller_manager_deployment(
                &tenant, ctx, "",
            )),
            scheduler: stamped(components::scheduler_deployment(&tenant, ctx, "")),
            clustertree: ClusterTreeObjects {
                namespace: clustertree::workload_namespace(&tenant),
                resource_quota: clustertree::pool_quota(&tenant),
                service_account: clustertree::service_account(&tenant),
                virtual_cluster_reader: clustertree::virtual_cluster_reader_role(&tenant),
                virtual_cluster_reader_binding: clustertree::virtual_cluster_reader_binding(
                    &tenant,
                ),
                role_binding: clustertree::role_binding(&tenant),
                cluster_role: clustertree::cluster_role(&tenant, &observed.claimed_nodes),
                cluster_role_binding: clustertree::cluster_role_binding(&tenant),
                deployment: stamped(clustertree::deployment(
                    &tenant,
                    observed.apiserver_cluster_ip,
                    "",
                )),
            },
            network_policies: network_policy::network_policies(&tenant, ctx),
            pki_secrets,
            admin_kubeconfig,
        })
    }
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod kubectl_tests;
