//! One tenant as vc-controller renders it, without a host cluster: the VirtualCluster,
//! its PKI and every object the controller would write, and those objects as the local
//! control-plane planner takes them. Shared by the tests that feed rendered objects to
//! the planner, so that they all plan the very tenant the controller builds.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::ResourceExt as _;
use vc_api::VirtualCluster;
use vc_controller::pki::{ExistingPki, ensure_pki};
use vc_controller::resources::{BuildContext, DesiredState, Observed, Tenant, tenant_identity};
use vc_simulation::local_control_plane::TenantObjects;
use vc_simulation::local_pod::VolumeSources;

pub const NAMESPACE: &str = "team";
pub const TENANT: &str = "t1";

fn virtual_cluster(apiserver_replicas: i32, etcd_replicas: i32) -> VirtualCluster {
    serde_yaml::from_str(&format!(
        "apiVersion: kosmos.io/v1alpha1\nkind: VirtualCluster\nmetadata:\n  name: {TENANT}\n  namespace: {NAMESPACE}\n  uid: 5e1f00d2-aaaa-bbbb-cccc-000000000001\nspec:\n  controlPlane:\n    apiServer:\n      replicas: {apiserver_replicas}\n    etcd:\n      replicas: {etcd_replicas}\n  promoteResources:\n    nodes: [node1]\n    resources: {{cpu: 2, memory: 4Gi}}\n"
    ))
    .unwrap()
}

/// Everything the controller would write for a tenant with `apiserver_replicas`
/// apiservers (controller-manager and scheduler replicas and leader election follow) and
/// `etcd_replicas` members, its apiserver Service holding `cluster_ip` (the certificates
/// name it).
pub fn desired_state(
    cluster_ip: IpAddr,
    apiserver_replicas: i32,
    etcd_replicas: i32,
) -> DesiredState {
    let vc = virtual_cluster(apiserver_replicas, etcd_replicas);
    let ctx = BuildContext::default();
    let observed = Observed {
        apiserver_cluster_ip: Some(cluster_ip),
        load_balancer_hosts: Vec::new(),
        claimed_nodes: vec!["node1".to_owned()],
        workload_pod_security: Default::default(),
    };
    let tenant = Tenant::resolve(&vc, &ctx).unwrap();
    assert_eq!(tenant.apiserver_replicas, apiserver_replicas);
    let identity = tenant_identity(&tenant, &ctx, &observed).unwrap();
    let (_, pki) = ensure_pki(&identity, &ExistingPki::default(), jiff::Timestamp::now()).unwrap();
    DesiredState::build(&vc, &ctx, &observed, &pki).unwrap()
}

/// The PKI Secrets and the admin kubeconfig, by name, as the pods mount them.
pub fn secrets_of(desired: &DesiredState) -> BTreeMap<String, Secret> {
    desired
        .pki_secrets
        .iter()
        .chain(std::iter::once(&desired.admin_kubeconfig))
        .map(|s| (s.name_any(), s.clone()))
        .collect()
}

fn with_cluster_ip(mut service: Service, ip: IpAddr) -> Service {
    if let Some(spec) = service.spec.as_mut() {
        spec.cluster_ip = Some(ip.to_string());
    }
    service
}

/// All four components' workloads as the planner reads them from a host, the Services
/// with the cluster IPs a host would have assigned (`apiserver_ip`, `etcd_client_ip`;
/// distinct per test binary so that binaries running at once do not share addresses).
pub fn tenant_objects(
    desired: &DesiredState,
    apiserver_ip: IpAddr,
    etcd_client_ip: IpAddr,
) -> TenantObjects {
    let mut etcd = desired.etcd.stateful_set.clone();
    // A host would have set it; the planner names the members' claim volumes after it.
    etcd.metadata.uid = Some("0d1c2b3a-0000-0000-0000-000000000000".to_owned());
    TenantObjects {
        namespace: NAMESPACE.to_owned(),
        name: TENANT.to_owned(),
        etcd: Some(etcd),
        apiserver: Some(desired.apiserver_deployment.clone()),
        controller_manager: Some(desired.controller_manager.clone()),
        scheduler: Some(desired.scheduler.clone()),
        services: vec![
            with_cluster_ip(desired.apiserver_service.clone(), apiserver_ip),
            with_cluster_ip(desired.etcd.client_service.clone(), etcd_client_ip),
            desired.etcd.peer_service.clone(),
        ],
        sources: VolumeSources {
            secrets: secrets_of(desired),
            config_maps: BTreeMap::new(),
        },
    }
}
