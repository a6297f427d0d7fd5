//! The real `vc-clustertree` process turning tenant Services into host Services, between
//! two real kube-apiservers: a host, and a tenant started with the admission
//! configuration the controller renders, so it calls the clustertree's Service webhook
//! with its kubelet-client certificate. Under nothing but the host Role the controller
//! grants a clustertree, a tenant Service gets the host's cluster IP and node ports, its
//! EndpointSlices are mirrored, load-balancer ingress comes back, a cluster IP the host
//! holds is refused with a reason, and deleting the tenant Service deletes the host's.

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;
use vc_api::VirtualCluster;
use vc_api::constants::{CLUSTERTREE_MANAGED_BY_VALUE, MANAGED_BY_LABEL};
use vc_clustertree::services::{WEBHOOK_CONFIGURATION, host_service_name};
use vc_controller::resources::{BuildContext, Tenant, apiserver, clustertree as rendered};
use vc_test_apiserver::envtest::{self, Envtest, EnvtestOptions, SKIP_MESSAGE};
use vc_tests::clustertree::{ControlPlanes, Launch};

use crate::clustertree_nodes::{
    NAMESPACE, Process, TENANT, clustertree_binary, clustertree_rbac, kubectl_apply,
};

const WAIT: Duration = Duration::from_secs(30);
/// The tenant namespace the test's Services live in.
const SHOP: &str = "shop";

/// One host, one tenant and the clustertree between them; the clustertree stops first.
struct World {
    _clustertree: Process,
    admin: Client,
    tenant_admin: Client,
    workload_namespace: String,
    log: tempfile::NamedTempFile,
    began: Instant,
    _tenant: Envtest,
    _host: Envtest,
}

impl World {
    /// The world once the tenant's Service webhook is configured, or `None` when the
    /// Kubernetes binaries are missing outside CI.
    async fn start() -> Option<World> {
        let Some(assets) = envtest::assets() else {
            assert!(!envtest::must_run_real(), "CI is set: {SKIP_MESSAGE}");
            eprintln!("{SKIP_MESSAGE}");
            return None;
        };
        let began = Instant::now();
        let tenant_options = EnvtestOptions {
            admission: Some((apiserver::ADMISSION_CONFIG_FILE, apiserver::admission_files)),
            ..EnvtestOptions::default()
        };
        let ControlPlanes {
            host,
            tenant,
            admin,
            tenant_admin,
        } = ControlPlanes::start(&assets, EnvtestOptions::default(), tenant_options)
            .await
            .unwrap();
        // The host side as the controller renders it: the workload namespace and the
        // clustertree's ClusterRole bound there to the identity the clustertree runs as.
        let virtual_cluster: VirtualCluster = serde_json::from_value(json!({
            "apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
            "metadata": {"name": TENANT, "namespace": NAMESPACE, "uid": "vc-uid"},
            "spec": {"promoteResources": {"nodes": []}},
        }))
        .unwrap();
        let resolved = Tenant::resolve(&virtual_cluster, &BuildContext::default()).unwrap();
        let workload_namespace = resolved.workload_namespace();
        for namespace in [NAMESPACE.to_owned(), workload_namespace.clone()] {
            let namespace: Namespace =
                serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
            Api::<Namespace>::all(admin.clone())
                .create(&PostParams::default(), &namespace)
                .await
                .unwrap();
        }
        let mut role = serde_json::to_value(rendered::workload_cluster_role(
            &resolved.clustertree_cluster_role,
        ))
        .unwrap();
        role["apiVersion"] = json!("rbac.authorization.k8s.io/v1");
        role["kind"] = json!("ClusterRole");
        let mut binding = serde_json::to_value(rendered::role_binding(&resolved)).unwrap();
        binding["apiVersion"] = json!("rbac.authorization.k8s.io/v1");
        binding["kind"] = json!("RoleBinding");
        binding["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("ownerReferences");
        binding["subjects"] = json!([{"kind": "User", "name": "clustertree"}]);
        for object in clustertree_rbac(&[]).into_iter().chain([role, binding]) {
            kubectl_apply(host.kubeconfig_path(), &object.to_string());
        }
        let identity = host
            .kubeconfig_for(vc_tests::clustertree::USER, &[])
            .unwrap();
        let shop: Namespace = serde_json::from_value(json!({"metadata": {"name": SHOP}})).unwrap();
        Api::<Namespace>::all(tenant_admin.clone())
            .create(&PostParams::default(), &shop)
            .await
            .unwrap();
        let log = tempfile::NamedTempFile::new().unwrap();
        let port = vc_test_apiserver::ports::free_port().unwrap();
        let clustertree = Launch::new(clustertree_binary(), &identity, tenant.kubeconfig_path())
            .period("0.3s")
            .args(["--kubelet-address", "127.0.0.1"])
            .args([format!("--kubelet-listen=127.0.0.1:{port}")])
            // A real apiserver refuses a loopback endpoint in the kube-dns EndpointSlice.
            .args(["--dns-address", "192.0.2.53"])
            .spawn(log.reopen().unwrap())
            .unwrap();
        let world = World {
            _clustertree: clustertree,
            admin,
            tenant_admin,
            workload_namespace,
            log,
            began,
            _tenant: tenant,
            _host: host,
        };
        world.webhook_configuration().await;
        Some(world)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Polls `check` until it returns `Some`, failing with the clustertree's log.
    async fn within<T, F, Fut>(&self, what: &str, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        match vc_tests::wait::until(what, WAIT, check).await {
            Ok(value) => value,
            Err(timed_out) => panic!("{timed_out}; vc-clustertree said:\n{}", self.log_text()),
        }
    }

    async fn webhook_configuration(&self) -> MutatingWebhookConfiguration {
        let api = Api::<MutatingWebhookConfiguration>::all(self.tenant_admin.clone());
        self.within("the tenant's Service webhook configuration", || async {
            api.get_opt(WEBHOOK_CONFIGURATION).await.ok().flatten()
        })
        .await
    }

    fn tenant_services(&self) -> Api<Service> {
        Api::namespaced(self.tenant_admin.clone(), SHOP)
    }

    fn host_services(&self) -> Api<Service> {
        Api::namespaced(self.admin.clone(), &self.workload_namespace)
    }

    /// Creates tenant Service `name` with `spec`, the tenant apiserver calling the
    /// webhook; retried while the webhook is not serving yet (the configuration can be
    /// in place a moment before the clustertree answers).
    async fn create_tenant_service(&self, name: &str, spec: serde_json::Value) -> Service {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": SHOP}, "spec": spec,
        }))
        .unwrap();
        self.within(&format!("tenant Service {name} created"), || async {
            match self
                .tenant_services()
                .create(&PostParams::default(), &service)
                .await
            {
                Ok(created) => Some(created),
                Err(error) => {
                    eprintln!("creating tenant Service {name}: {error}");
                    None
                }
            }
        })
        .await
    }

    async fn host_twin(&self, name: &str) -> Service {
        let host = host_service_name(SHOP, name);
        self.within(&format!("host Service {host}"), || async {
            self.host_services().get_opt(&host).await.ok().flatten()
        })
        .await
    }

    /// A host Service of the host's own (`default/holder`) takes cluster IP `ip`.
    async fn hold_cluster_ip(&self, ip: &str) {
        let holder: Service = serde_json::from_value(json!({
            "metadata": {"name": "holder", "namespace": "default"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]},
        }))
        .unwrap();
        Api::<Service>::namespaced(self.admin.clone(), "default")
            .create(&PostParams::default(), &holder)
            .await
            .unwrap();
    }

    fn finish(self, test: &str) {
        eprintln!("{test} took {:?}", self.began.elapsed());
    }
}

fn spec(service: &Service) -> &k8s_openapi::api::core::v1::ServiceSpec {
    service.spec.as_ref().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tenant_service_gets_the_hosts_cluster_ip_and_node_port() {
    let Some(world) = World::start().await else {
        return;
    };
    let created = world
        .create_tenant_service(
            "web",
            json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}),
        )
        .await;
    let host = world.host_twin("web").await;
    assert_eq!(spec(&created).cluster_ip, spec(&host).cluster_ip);
    assert_eq!(spec(&created).cluster_ips, spec(&host).cluster_ips);
    let node_port = |service: &Service| spec(service).ports.as_ref().unwrap()[0].node_port;
    assert!(node_port(&host).is_some());
    assert_eq!(node_port(&created), node_port(&host));
    assert_eq!(spec(&host).type_.as_deref(), Some("NodePort"));
    assert_eq!(
        spec(&host).selector,
        None,
        "the host pods carry no tenant labels"
    );
    assert_eq!(
        host.labels().get(MANAGED_BY_LABEL).map(String::as_str),
        Some(CLUSTERTREE_MANAGED_BY_VALUE)
    );
    let host_name = host.name_any();
    world
        .within(
            "the host Service recording the tenant Service's UID",
            || async {
                let host = world.host_services().get(&host_name).await.ok()?;
                (host
                    .annotations()
                    .get(vc_api::constants::TENANT_OBJECT_UID_ANNOTATION)
                    == created.uid().as_ref())
                .then_some(())
            },
        )
        .await;

    // A tenant EndpointSlice of the Service: its addresses, the host pods' IPs, come over.
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-manual", "namespace": SHOP,
                     "labels": {"kubernetes.io/service-name": "web",
                                "endpointslice.kubernetes.io/managed-by": "test"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": true}},
                      {"addresses": ["10.244.2.9"], "conditions": {"ready": false}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .unwrap();
    Api::<EndpointSlice>::namespaced(world.tenant_admin.clone(), SHOP)
        .create(&PostParams::default(), &slice)
        .await
        .unwrap();
    let host_slices =
        Api::<EndpointSlice>::namespaced(world.admin.clone(), &world.workload_namespace);
    let selector = format!("kubernetes.io/service-name={}", host.name_any());
    let mirrored = world
        .within("the host EndpointSlice of the Service", || async {
            host_slices
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?
                .items
                .into_iter()
                .next()
        })
        .await;
    let addresses = |slice: &EndpointSlice| -> Vec<Vec<String>> {
        slice
            .endpoints
            .iter()
            .map(|e| e.addresses.clone())
            .collect()
    };
    assert_eq!(addresses(&mirrored), addresses(&slice));
    assert_eq!(
        mirrored.labels()["endpointslice.kubernetes.io/managed-by"],
        vc_clustertree::services::ENDPOINT_SLICE_MANAGED_BY
    );
    assert_eq!(mirrored.ports, slice.ports);
    world.finish("real_tenant_service_gets_the_hosts_cluster_ip_and_node_port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_load_balancer_ingress_is_reflected_into_the_tenant() {
    let Some(world) = World::start().await else {
        return;
    };
    world
        .create_tenant_service(
            "edge",
            json!({"type": "LoadBalancer", "ports": [{"port": 443}]}),
        )
        .await;
    let host = world.host_twin("edge").await;
    assert_eq!(spec(&host).type_.as_deref(), Some("LoadBalancer"));
    // The host's load-balancer controller, as a cloud provider's would, sets the ingress.
    world
        .host_services()
        .patch_status(
            &host.name_any(),
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}),
            ),
        )
        .await
        .unwrap();
    let ingress = world
        .within(
            "the host's ingress in the tenant Service's status",
            || async {
                let service = world.tenant_services().get("edge").await.ok()?;
                let ingress = service.status?.load_balancer?.ingress?;
                (!ingress.is_empty()).then_some(ingress)
            },
        )
        .await;
    assert_eq!(ingress[0].ip.as_deref(), Some("203.0.113.7"));
    world.finish("real_load_balancer_ingress_is_reflected_into_the_tenant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_taken_cluster_ip_is_refused_with_a_reason() {
    let Some(world) = World::start().await else {
        return;
    };
    // Another host Service (of the host, outside the tenant's namespace) holds the address.
    let taken = "10.0.0.77";
    world.hold_cluster_ip(taken).await;
    let asked: Service = serde_json::from_value(json!({
        "metadata": {"name": "fixed", "namespace": SHOP},
        "spec": {"clusterIP": taken, "ports": [{"port": 80}]},
    }))
    .unwrap();
    let message = world
        .within("the tenant's create refused by the webhook", || async {
            match world
                .tenant_services()
                .create(&PostParams::default(), &asked)
                .await
            {
                Err(kube::Error::Api(status)) if status.message.contains("spec.clusterIP") => {
                    Some(status.message)
                }
                Err(error) => {
                    eprintln!("not the refusal yet: {error}");
                    None
                }
                Ok(created) => panic!(
                    "the tenant stored {taken}, which the host holds: {:?}",
                    created.spec
                ),
            }
        })
        .await;
    assert!(message.contains(taken), "{message}");
    assert!(message.contains("already in use on the host"), "{message}");
    assert!(message.contains("leave spec.clusterIP empty"), "{message}");
    assert_eq!(
        world.tenant_services().get_opt("fixed").await.unwrap(),
        None
    );
    assert_eq!(
        world
            .host_services()
            .get_opt(&host_service_name(SHOP, "fixed"))
            .await
            .unwrap(),
        None
    );
    world.finish("real_taken_cluster_ip_is_refused_with_a_reason");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_deleting_the_tenant_service_removes_the_host_service() {
    let Some(world) = World::start().await else {
        return;
    };
    let created = world
        .create_tenant_service("web", json!({"ports": [{"port": 80}]}))
        .await;
    let host = world.host_twin("web").await;
    // Once the host Service records the tenant UID, it goes with its tenant Service at
    // once (one the webhook made and no tenant Service claimed waits out a grace).
    world
        .within("the host Service recording the tenant UID", || async {
            let host = world.host_services().get(&host.name_any()).await.ok()?;
            (host
                .annotations()
                .get(vc_api::constants::TENANT_OBJECT_UID_ANNOTATION)
                == created.uid().as_ref())
            .then_some(())
        })
        .await;
    world
        .tenant_services()
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    world
        .within("the host Service deleted", || async {
            match world.host_services().get_opt(&host.name_any()).await {
                Ok(None) => Some(()),
                _ => None,
            }
        })
        .await;
    world.finish("real_deleting_the_tenant_service_removes_the_host_service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_the_webhook_configuration_deleted_by_the_tenant_comes_back() {
    let Some(world) = World::start().await else {
        return;
    };
    let first = world.webhook_configuration().await;
    let api = Api::<MutatingWebhookConfiguration>::all(world.tenant_admin.clone());
    api.delete(WEBHOOK_CONFIGURATION, &DeleteParams::default())
        .await
        .unwrap();
    let back = world
        .within("the webhook configuration back", || async {
            api.get_opt(WEBHOOK_CONFIGURATION)
                .await
                .ok()
                .flatten()
                .filter(|again| again.uid() != first.uid())
        })
        .await;
    assert_eq!(back.webhooks, first.webhooks);
    // And it serves: a Service created now gets the host's address.
    let created = world
        .create_tenant_service("after", json!({"ports": [{"port": 80}]}))
        .await;
    let host = world.host_twin("after").await;
    assert_eq!(spec(&created).cluster_ip, spec(&host).cluster_ip);
    world.finish("real_the_webhook_configuration_deleted_by_the_tenant_comes_back");
}

/// A Service created with `generateName` has no name when the tenant apiserver calls its
/// mutating webhooks: the clustertree names it, so its host twin is made (and its
/// addresses checked) before the tenant stores it, as for any named Service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_generate_name_service_gets_the_host_cluster_ip() {
    let Some(world) = World::start().await else {
        return;
    };
    let generated: Service = serde_json::from_value(json!({
        "metadata": {"generateName": "web-", "namespace": SHOP},
        "spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80}]},
    }))
    .unwrap();
    let created = world
        .within("a generateName Service created", || async {
            match world
                .tenant_services()
                .create(&PostParams::default(), &generated)
                .await
            {
                Ok(created) => Some(created),
                Err(error) => {
                    eprintln!("creating a generateName Service: {error}");
                    None
                }
            }
        })
        .await;
    let name = created.name_any();
    assert!(
        name.starts_with("web-") && name.len() == "web-".len() + 5,
        "{name}"
    );
    // The twin exists the moment the create returns: the webhook made it.
    let host = world
        .host_services()
        .get_opt(&host_service_name(SHOP, &name))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no host twin of {name} when its create returned"));
    assert_eq!(spec(&created).cluster_ip, spec(&host).cluster_ip);
    let node_port = |service: &Service| spec(service).ports.as_ref().unwrap()[0].node_port;
    assert!(node_port(&host).is_some());
    assert_eq!(node_port(&created), node_port(&host));

    // The host's refusal reaches a generateName Service too: an address the host holds
    // is never stored in the tenant.
    let taken = "10.0.0.78";
    world.hold_cluster_ip(taken).await;
    let asked: Service = serde_json::from_value(json!({
        "metadata": {"generateName": "fixed-", "namespace": SHOP},
        "spec": {"clusterIP": taken, "ports": [{"port": 80}]},
    }))
    .unwrap();
    match world
        .tenant_services()
        .create(&PostParams::default(), &asked)
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert!(
                status.message.contains("spec.clusterIP"),
                "{}",
                status.message
            );
            assert!(status.message.contains(taken), "{}", status.message);
        }
        other => panic!("the tenant stored {taken}, which the host holds: {other:?}"),
    }
    world.finish("real_generate_name_service_gets_the_host_cluster_ip");
}

/// The real clustertree keeps the tenant's `kube-dns` Service and marks its endpoint
/// ready once its DNS answers; the controller's rule then finds the DNS answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tenant_dns_endpoint_is_ready_once_the_dns_answers() {
    let Some(world) = World::start().await else {
        return;
    };
    let services = Api::<Service>::namespaced(world.tenant_admin.clone(), "kube-system");
    let slices = Api::<EndpointSlice>::namespaced(world.tenant_admin.clone(), "kube-system");
    let (service, slice) = world
        .within("kube-dns with a ready endpoint", || async {
            let service = services.get_opt("kube-dns").await.ok()??;
            let slice = slices
                .get_opt(vc_clustertree::cluster_dns::ENDPOINT_SLICE)
                .await
                .ok()??;
            let ready = slice.endpoints.first()?.conditions.as_ref()?.ready;
            (ready == Some(true)).then_some((service, slice))
        })
        .await;
    assert_eq!(slice.endpoints[0].addresses, ["192.0.2.53"]);
    assert_eq!(
        vc_api::tenant_dns::readiness(Some(&service), std::slice::from_ref(&slice)),
        Ok(())
    );
    world.finish("real_tenant_dns_endpoint_is_ready_once_the_dns_answers");
}
