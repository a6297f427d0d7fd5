//! A tenant's pods as real containers on a real host node: a real host control plane with
//! the real node `node1` (containerd, runc, bridge CNI, kubelet, kube-proxy), a real
//! tenant control plane (apiserver, controller-manager, scheduler), and the real
//! `vc-clustertree` binary under exactly the host objects the controller builds for a
//! tenant (`vc_controller::resources::clustertree`: workload namespace with Pod Security
//! `baseline`, Role, ClusterRole on the claimed node, the VirtualCluster reader, all bound
//! to the clustertree's ServiceAccount). Nothing is simulated. Runs in the nextest group
//! `real-node` (its module name), alone.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt as _};
use serde_json::json;
use vc_api::VirtualCluster;
use vc_api::constants::{
    CLUSTERTREE_MANAGED_BY_VALUE, MANAGED_BY_LABEL, TENANT_OBJECT_UID_ANNOTATION,
    tenant_workload_namespace,
};
use vc_controller::resources::{BuildContext, Tenant, clustertree};
use vc_test_apiserver::envtest::{self, Envtest, EnvtestOptions, SKIP_MESSAGE};
use vc_tests::clustertree::Launch;
use vc_tests::node::{MachineState, NodeOptions, RealNode, missing_programs};

use crate::clustertree_nodes::{NAMESPACE, Process, TENANT, claim, clustertree_binary};
use crate::real_node::{ECHO_IMAGE, echo_image, http_get};
use crate::support::eventually::eventually;

const WAIT: Duration = Duration::from_secs(60);
/// The tenant namespace of the workload.
pub(crate) const SHOP: &str = "shop";
const REPLICAS: usize = 2;

fn apply_all(kubeconfig: &std::path::Path, objects: Vec<serde_json::Value>) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    crate::clustertree_nodes::kubectl_apply(kubeconfig, &list.to_string());
}

fn typed<T: serde::Serialize>(kind: &str, api_version: &str, object: &T) -> serde_json::Value {
    let mut value = serde_json::to_value(object).unwrap();
    value["kind"] = json!(kind);
    value["apiVersion"] = json!(api_version);
    value
}

/// The host objects the controller applies for the clustertree of `virtual_cluster`,
/// built by the controller's own functions.
fn clustertree_host_objects(virtual_cluster: &VirtualCluster) -> Vec<serde_json::Value> {
    let tenant = Tenant::resolve(virtual_cluster, &BuildContext::default()).unwrap();
    const RBAC: &str = "rbac.authorization.k8s.io/v1";
    vec![
        typed("Namespace", "v1", &clustertree::workload_namespace(&tenant)),
        typed(
            "ServiceAccount",
            "v1",
            &clustertree::service_account(&tenant),
        ),
        typed(
            "ClusterRole",
            RBAC,
            &clustertree::workload_cluster_role(&tenant.clustertree_cluster_role),
        ),
        typed("RoleBinding", RBAC, &clustertree::role_binding(&tenant)),
        typed(
            "Role",
            RBAC,
            &clustertree::virtual_cluster_reader_role(&tenant),
        ),
        typed(
            "RoleBinding",
            RBAC,
            &clustertree::virtual_cluster_reader_binding(&tenant),
        ),
        typed(
            "ClusterRole",
            RBAC,
            &clustertree::cluster_role(&tenant, &["node1".to_owned()]),
        ),
        typed(
            "ClusterRoleBinding",
            RBAC,
            &clustertree::cluster_role_binding(&tenant),
        ),
    ]
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// A real host with the real node `node1` (the echo image loaded), a real tenant control
/// plane, VirtualCluster `team-a/tenant1` promoting `node1`, the claim, and the
/// clustertree's host objects as the controller builds them; vc-clustertree itself is
/// started by each test, with the flags it needs.
pub(crate) struct RealTenantWorld {
    pub(crate) host: Envtest,
    pub(crate) tenant: Envtest,
    node: RealNode,
    pub(crate) work: tempfile::TempDir,
    pub(crate) admin: kube::Client,
    pub(crate) tenant_admin: kube::Client,
    /// The host kubeconfig of the clustertree's ServiceAccount.
    identity: std::path::PathBuf,
    before: MachineState,
    started: Instant,
}

impl RealTenantWorld {
    /// The world, or `None` when the Kubernetes binaries or the node's programs are
    /// missing outside CI (in CI that fails).
    pub(crate) async fn start() -> Option<Self> {
        let Some(assets) = envtest::assets() else {
            assert!(!envtest::must_run_real(), "CI is set: {SKIP_MESSAGE}");
            eprintln!("{SKIP_MESSAGE}");
            return None;
        };
        let missing = missing_programs();
        if !missing.is_empty() {
            assert!(
                !envtest::must_run_real(),
                "CI is set, but the real node needs {missing:?} (.ci/run installs them)"
            );
            eprintln!("skipped: the real node needs {missing:?}");
            return None;
        }
        let before = MachineState::read();
        let started = Instant::now();
        let full = EnvtestOptions {
            controller_manager: true,
            scheduler: true,
            ..EnvtestOptions::default()
        };
        let host = Envtest::start_with(&assets, full.clone()).await.unwrap();
        let work = tempfile::tempdir().unwrap();
        let node = RealNode::start(&host, &assets, work.path(), NodeOptions::default())
            .await
            .unwrap();
        node.load_image(&echo_image(work.path())).unwrap();
        // As the controller renders a tenant apiserver: it authenticates to webhooks (the
        // clustertree's Service webhook) with its kubelet-client certificate.
        let tenant_options = EnvtestOptions {
            admission: Some((
                vc_controller::resources::apiserver::ADMISSION_CONFIG_FILE,
                vc_controller::resources::apiserver::admission_files,
            )),
            ..full
        };
        let tenant = Envtest::start_with(&assets, tenant_options).await.unwrap();
        eprintln!(
            "host with node1, and tenant control plane, up in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let admin = vc_test_apiserver::client_from_kubeconfig(host.kubeconfig_path())
            .await
            .unwrap();
        let tenant_admin = vc_test_apiserver::client_from_kubeconfig(tenant.kubeconfig_path())
            .await
            .unwrap();
        vc_tests::clustertree::install_crd(host.kubeconfig_path()).unwrap();
        let created = vc_tests::clustertree::create_virtual_cluster(
            &admin,
            json!({"kubernetesVersion": "v1.33.4", "promoteResources": {"nodes": ["node1"]}}),
        )
        .await
        .unwrap();
        claim(&admin, "node1", &created.uid().unwrap(), true).await;
        apply_all(host.kubeconfig_path(), clustertree_host_objects(&created));
        let identity = host
            .kubeconfig_for(
                &format!("system:serviceaccount:{NAMESPACE}:{TENANT}-clustertree"),
                &[
                    "system:serviceaccounts",
                    &format!("system:serviceaccounts:{NAMESPACE}"),
                ],
            )
            .unwrap();
        Some(RealTenantWorld {
            host,
            tenant,
            node,
            work,
            admin,
            tenant_admin,
            identity,
            before,
            started,
        })
    }

    /// The real vc-clustertree under the clustertree's identity, with `extra` flags; its
    /// log goes to `vc-clustertree.log` in the work directory.
    pub(crate) fn clustertree(&self, extra: &[std::ffi::OsString]) -> Process {
        let out = std::fs::File::create(self.clustertree_log()).unwrap();
        let launch = Launch::new(
            clustertree_binary(),
            &self.identity,
            self.tenant.kubeconfig_path(),
        )
        .period("0.5s");
        // Tests run side by side: DNS on a port of its own unless asked.
        let launch = if extra.iter().any(|arg| arg == "--dns-listen") {
            launch.dns_listen(None)
        } else {
            launch
        };
        launch.args(extra).spawn(out).unwrap()
    }

    pub(crate) fn clustertree_log(&self) -> std::path::PathBuf {
        self.work.path().join("vc-clustertree.log")
    }

    /// What vc-clustertree has logged so far.
    pub(crate) fn clustertree_said(&self) -> String {
        std::fs::read_to_string(self.clustertree_log()).unwrap_or_default()
    }

    /// The tenant's `node1` once Ready.
    pub(crate) async fn node1_ready(&self) -> Node {
        let tenant_nodes: Api<Node> = Api::all(self.tenant_admin.clone());
        eventually(WAIT, "node1 Ready in the tenant", || async {
            let node = tenant_nodes.get_opt("node1").await.ok()??;
            let ready = node
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(node)
        })
        .await
    }

    /// Tenant namespace `name`, once its `default` ServiceAccount exists (pods are
    /// refused before).
    pub(crate) async fn tenant_namespace(&self, name: &str) {
        crate::clustertree_nodes::kubectl_apply(
            self.tenant.kubeconfig_path(),
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"),
        );
        let accounts: Api<ServiceAccount> = Api::namespaced(self.tenant_admin.clone(), name);
        eventually(WAIT, "the tenant's ServiceAccount default", || async {
            accounts.get_opt("default").await.ok()?.map(drop)
        })
        .await;
    }

    /// Stops the clustertree, the node and both control planes, and checks the machine
    /// is as before.
    pub(crate) fn finish(self, clustertree: Process, test: &str) {
        let RealTenantWorld {
            host,
            tenant,
            mut node,
            before,
            started,
            ..
        } = self;
        drop(clustertree);
        let problems = node.stop();
        assert!(problems.is_empty(), "stopping the node: {problems:#?}");
        drop(node);
        drop(tenant);
        drop(host);
        assert_eq!(
            before,
            MachineState::read(),
            "the node left something behind"
        );
        eprintln!("{test} done in {:.1} s", started.elapsed().as_secs_f64());
    }
}

/// A tenant Deployment `shop/echo` of the echo server with `replicas` pods, scheduled by
/// the tenant's scheduler; its pods once all are Ready.
pub(crate) async fn echo_deployment(world: &RealTenantWorld, replicas: usize) -> Vec<Pod> {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "echo", "namespace": SHOP},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "echo"}},
            "template": {
                "metadata": {"labels": {"app": "echo"}},
                // httpd as PID 1 ignores SIGTERM: the kubelet kills it after the grace.
                "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
                    "name": "echo", "image": ECHO_IMAGE, "imagePullPolicy": "Never",
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/cgi-bin/index.cgi", "port": 8080}, "periodSeconds": 1},
                }]},
            },
        },
    }))
    .unwrap();
    let deployed = Instant::now();
    Api::<Deployment>::namespaced(world.tenant_admin.clone(), SHOP)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let tenant_pods: Api<Pod> = Api::namespaced(world.tenant_admin.clone(), SHOP);
    let ready = eventually(WAIT, "every echo pod Ready with a pod IP", || async {
        let pods = tenant_pods
            .list(&ListParams::default().labels("app=echo"))
            .await
            .ok()?
            .items;
        let ready: Vec<Pod> = pods.into_iter().filter(is_ready).collect();
        (ready.len() == replicas).then_some(ready)
    })
    .await;
    eprintln!(
        "{replicas} tenant pods Ready {:.2} s after the Deployment was created",
        deployed.elapsed().as_secs_f64()
    );
    ready
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tenant_pods_run_on_promoted_nodes() {
    let Some(world) = RealTenantWorld::start().await else {
        return;
    };
    let clustertree = world.clustertree(&[]);
    world.node1_ready().await;
    let (admin, tenant_admin) = (world.admin.clone(), world.tenant_admin.clone());

    world.tenant_namespace(SHOP).await;
    let ready = echo_deployment(&world, REPLICAS).await;
    let tenant_pods: Api<Pod> = Api::namespaced(tenant_admin.clone(), SHOP);

    let workload_namespace = tenant_workload_namespace(NAMESPACE, TENANT);
    let host_pods: Api<Pod> = Api::namespaced(admin.clone(), &workload_namespace);
    for tenant_pod in &ready {
        let name = tenant_pod.name_any();
        let status = tenant_pod.status.clone().unwrap();
        assert_eq!(
            tenant_pod.spec.as_ref().unwrap().node_name.as_deref(),
            Some("node1")
        );
        let host_pod = host_pods
            .list(&ListParams::default().labels(&format!(
                "{MANAGED_BY_LABEL}={CLUSTERTREE_MANAGED_BY_VALUE}"
            )))
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|pod| {
                pod.annotations().get(TENANT_OBJECT_UID_ANNOTATION) == tenant_pod.uid().as_ref()
            })
            .unwrap_or_else(|| {
                panic!(
                    "no host pod for {name}; vc-clustertree said:\n{}",
                    world.clustertree_said()
                )
            });
        let host_status = host_pod.status.clone().unwrap();
        assert_eq!(
            host_pod.spec.as_ref().unwrap().node_name.as_deref(),
            Some("node1"),
            "the host scheduler put it on the promoted node"
        );
        assert_eq!(
            status.pod_ip, host_status.pod_ip,
            "the tenant sees the host pod IP"
        );
        let ip = status.pod_ip.clone().unwrap();
        assert!(ip.starts_with("10.244.1."), "a CNI address of node1: {ip}");
        assert_eq!(status.host_ip.as_deref(), Some("10.244.255.1"));
        // The container is the tenant pod: it answers with its own (tenant) name.
        assert_eq!(
            http_get(&format!("http://{ip}:8080/cgi-bin/index.cgi"))
                .await
                .as_deref(),
            Some(name.as_str()),
            "the container of {name} answers on its pod IP"
        );
    }

    // Deleting the Deployment stops the containers and empties both sides.
    let deleting = Instant::now();
    Api::<Deployment>::namespaced(tenant_admin.clone(), SHOP)
        .delete("echo", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually(WAIT, "no tenant pod and no host pod left", || async {
        let tenant_left = tenant_pods.list(&ListParams::default()).await.ok()?.items;
        let host_left = host_pods.list(&ListParams::default()).await.ok()?.items;
        (tenant_left.is_empty() && host_left.is_empty()).then_some(())
    })
    .await;
    eprintln!(
        "tenant and host pods gone {:.2} s after the Deployment was deleted (grace 2 s)",
        deleting.elapsed().as_secs_f64()
    );

    world.finish(clustertree, "real_tenant_pods_run_on_promoted_nodes");
}
