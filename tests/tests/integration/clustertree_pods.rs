//! The real `vc-clustertree` process as the kubelet of a tenant's mirrored Nodes, between
//! two real control planes (apiserver, controller-manager, scheduler): a host and a
//! tenant. Under nothing but the host RBAC the controller grants a clustertree, it runs
//! the tenant's pods as host pods in `vc-team-a-tenant1` (the workload namespace as the
//! controller renders it, Pod Security `baseline`), pinned to the promoted node or placed
//! by the host scheduler for the pool. Each test here asserts one behaviour on a world of
//! its own: status coming back and deletion both ways, refusal before the host sees a
//! pod, the pool quota, and a SIGKILL in the middle of creating host pods. The host's
//! kubelets are simulated; everything else is real.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Namespace, Pod, ResourceQuota, Secret, ServiceAccount,
};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;
use vc_api::constants::{
    CLUSTERTREE_MANAGED_BY_VALUE, MANAGED_BY_LABEL, NODE_CLAIM_TAINT_KEY, POOL_NODE_NAME,
    POOL_PRIORITY_CLASS, TENANT_OBJECT_NAME_LABEL, TENANT_OBJECT_NAMESPACE_LABEL,
    TENANT_OBJECT_UID_ANNOTATION,
};
use vc_controller::resources::{BuildContext, Tenant, clustertree as rendered};
use vc_simulation::SimHandle;
use vc_simulation::nodes::{FleetOptions, NodeFleet, NodeSpec};
use vc_simulation::workloads::{self, WorkloadMode, WorkloadOptions};
use vc_test_apiserver::envtest::{self, Envtest, EnvtestOptions, SKIP_MESSAGE};
use vc_tests::clustertree::{ControlPlanes, Launch};

use crate::clustertree_nodes::{
    Process, TENANT, claim, clustertree_binary, clustertree_rbac, kubectl_apply,
};
use crate::support::eventually::eventually;

const WAIT: Duration = Duration::from_secs(30);
/// The tenant namespace the test's workloads live in.
const SHOP: &str = "shop";

/// How a test's VirtualCluster pools resources, and whether the host enforces that with
/// the controller's pool quota (which makes every host pod declare its requests).
pub(crate) struct Pool {
    resources: serde_json::Value,
    quota: bool,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            resources: json!({"cpu": 2, "memory": "4Gi"}),
            quota: false,
        }
    }
}

/// One host, one tenant and the clustertree between them. Fields drop in order: the
/// clustertree and the simulators stop before the control planes they talk to.
pub(crate) struct World {
    clustertree: Option<Process>,
    _kubelets: SimHandle,
    _fleet: NodeFleet,
    pub(crate) admin: Client,
    pub(crate) tenant_admin: Client,
    workload_namespace: String,
    identity: PathBuf,
    log: tempfile::NamedTempFile,
    began: Instant,
    tenant: Envtest,
    _host: Envtest,
}

impl World {
    /// The world, or `None` when the Kubernetes binaries are missing outside CI.
    pub(crate) async fn start(pool: Pool) -> Option<World> {
        let Some(assets) = envtest::assets() else {
            assert!(!envtest::must_run_real(), "CI is set: {SKIP_MESSAGE}");
            eprintln!("{SKIP_MESSAGE}");
            return None;
        };
        let began = Instant::now();
        let options = EnvtestOptions {
            controller_manager: true,
            scheduler: true,
            ..EnvtestOptions::default()
        };
        let ControlPlanes {
            host,
            tenant,
            admin,
            tenant_admin,
        } = ControlPlanes::start(&assets, options.clone(), options)
            .await
            .unwrap();
        assert!(
            host.has_scheduler() && host.has_controller_manager(),
            "the assets lack kube-scheduler or kube-controller-manager"
        );
        vc_tests::clustertree::install_crd(host.kubeconfig_path()).unwrap();
        let created = vc_tests::clustertree::create_virtual_cluster(
            &admin,
            json!({"kubernetesVersion": "v1.33.4",
                   "promoteResources": {"nodes": ["node1"], "resources": pool.resources}}),
        )
        .await
        .unwrap();
        let rendered_for = Tenant::resolve(&created, &BuildContext::default()).unwrap();
        let workload_namespace = rendered_for.workload_namespace();
        Api::<Namespace>::all(admin.clone())
            .create(
                &PostParams::default(),
                &rendered::workload_namespace(&rendered_for),
            )
            .await
            .unwrap();
        // The chart installs the pool's PriorityClass; the host refuses a pool pod naming
        // a class that does not exist.
        kubectl_apply(
            host.kubeconfig_path(),
            &json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                    "metadata": {"name": POOL_PRIORITY_CLASS}, "value": 0,
                    "preemptionPolicy": "Never"})
            .to_string(),
        );
        if pool.quota {
            Api::<ResourceQuota>::namespaced(admin.clone(), &workload_namespace)
                .create(&PostParams::default(), &rendered::pool_quota(&rendered_for))
                .await
                .unwrap();
        }
        let fleet = NodeFleet::start(
            admin.clone(),
            vec![
                NodeSpec::new("node1"),
                NodeSpec::new("node2"),
                NodeSpec::control_plane("cp1"),
            ],
            FleetOptions::default(),
        )
        .await
        .unwrap();
        let kubelets = workloads::spawn(
            admin.clone(),
            WorkloadOptions {
                mode: WorkloadMode::KubeletOnly,
                namespace: Some(workload_namespace.clone()),
                ..WorkloadOptions::default()
            },
        );
        claim(&admin, "node1", &created.uid().unwrap(), true).await;
        for object in clustertree_rbac(&["node1"])
            .into_iter()
            .chain(vc_tests::clustertree::workload_rbac(&workload_namespace))
        {
            kubectl_apply(host.kubeconfig_path(), &object.to_string());
        }
        let identity = host
            .kubeconfig_for(vc_tests::clustertree::USER, &[])
            .unwrap();
        let log = tempfile::NamedTempFile::new().unwrap();

        // The tenant: a namespace whose default ServiceAccount and CA exist.
        let shop: Namespace = serde_json::from_value(json!({"metadata": {"name": SHOP}})).unwrap();
        Api::<Namespace>::all(tenant_admin.clone())
            .create(&PostParams::default(), &shop)
            .await
            .unwrap();
        let tenant_config_maps: Api<ConfigMap> = Api::namespaced(tenant_admin.clone(), SHOP);
        eventually(WAIT, "the tenant CA in namespace shop", || async {
            tenant_config_maps.get_opt("kube-root-ca.crt").await.ok()?
        })
        .await;
        let service_accounts: Api<ServiceAccount> = Api::namespaced(tenant_admin.clone(), SHOP);
        eventually(
            WAIT,
            "the default ServiceAccount, which admits pods",
            || async { service_accounts.get_opt("default").await.ok()? },
        )
        .await;
        let mut world = World {
            clustertree: None,
            _kubelets: kubelets,
            _fleet: fleet,
            admin,
            tenant_admin,
            workload_namespace,
            identity,
            log,
            began,
            tenant,
            _host: host,
        };
        world.start_clustertree();
        Some(world)
    }

    fn start_clustertree(&mut self) {
        let launch = Launch::new(
            clustertree_binary(),
            &self.identity,
            self.tenant.kubeconfig_path(),
        )
        .period("0.3s");
        self.clustertree = Some(launch.spawn(self.log.reopen().unwrap()).unwrap());
    }

    /// SIGKILL: no shutdown path runs, as when a node dies under the clustertree.
    fn kill_clustertree(&mut self) {
        drop(self.clustertree.take());
    }

    pub(crate) fn tenant_pods(&self) -> Api<Pod> {
        Api::namespaced(self.tenant_admin.clone(), SHOP)
    }

    pub(crate) fn host<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.admin.clone(), &self.workload_namespace)
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// [`eventually`], with the clustertree's log in the failure: what it saw and refused
    /// is the only account of why a state never came.
    pub(crate) async fn within<T, F, Fut>(&self, what: &str, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        within(self.log.path(), what, check).await
    }

    pub(crate) async fn create_tenant_pods(&self, pods: impl IntoIterator<Item = Pod>) {
        for pod in pods {
            self.tenant_pods()
                .create(&PostParams::default(), &pod)
                .await
                .unwrap();
        }
    }

    /// The Warning Events recorded on tenant pod `name`.
    async fn events_on(&self, name: &str) -> Vec<Event> {
        Api::<Event>::namespaced(self.tenant_admin.clone(), SHOP)
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await
            .map(|list| list.items)
            .unwrap_or_default()
    }

    pub(crate) fn finish(self, test: &str) {
        eprintln!("{test} took {:?}", self.began.elapsed());
    }
}

async fn within<T, F, Fut>(log: &Path, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match vc_tests::wait::until(what, WAIT, check).await {
        Ok(value) => value,
        Err(timed_out) => panic!(
            "{timed_out}; vc-clustertree said:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        ),
    }
}

impl World {
    /// Asserts `check` holds for `window` (see [`vc_tests::wait::throughout`]), failing with
    /// the clustertree's log.
    async fn throughout<O, F, Fut>(&self, what: &str, window: Duration, check: F)
    where
        O: vc_tests::wait::Outcome,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = O>,
    {
        if let Err(broken) = vc_tests::wait::throughout(what, window, check).await {
            panic!("{broken}; vc-clustertree said:\n{}", self.log_text());
        }
    }
}

pub(crate) fn pod(name: &str, node_selector: &str, extra: serde_json::Value) -> Pod {
    let mut value = json!({
        "metadata": {"name": name, "namespace": SHOP},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node_selector},
            "containers": [{"name": "app", "image": "nginx:1.27"}],
        },
    });
    if let Some(extra) = extra.as_object() {
        for (key, field) in extra {
            value["spec"][key] = field.clone();
        }
    }
    serde_json::from_value(value).unwrap()
}

/// A pod asking for `cpu` and `memory`, as every pod must under a cpu and memory quota.
fn requesting(name: &str, node_selector: &str, cpu: &str, memory: &str) -> Pod {
    pod(
        name,
        node_selector,
        json!({"containers": [{"name": "app", "image": "nginx:1.27",
                               "resources": {"requests": {"cpu": cpu, "memory": memory},
                                             "limits": {"cpu": cpu, "memory": memory}}}]}),
    )
}

fn deployment(name: &str, replicas: i32, node_selector: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": SHOP},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"nodeSelector": {"kubernetes.io/hostname": node_selector},
                         "containers": [{"name": "app", "image": "nginx:1.27"}]},
            },
        },
    }))
    .unwrap()
}

/// The host objects standing for tenant object `shop/NAME`, found by the labels the
/// contract promises rather than by recomputing their names.
pub(crate) async fn standing_for<K>(api: &Api<K>, name: &str) -> Vec<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let selector = format!(
        "{MANAGED_BY_LABEL}={CLUSTERTREE_MANAGED_BY_VALUE},{TENANT_OBJECT_NAMESPACE_LABEL}={SHOP},{TENANT_OBJECT_NAME_LABEL}={name}"
    );
    api.list(&ListParams::default().labels(&selector))
        .await
        .map(|list| list.items)
        .unwrap_or_default()
}

fn is_ours(pod: &Pod) -> bool {
    pod.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(CLUSTERTREE_MANAGED_BY_VALUE)
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

fn tolerates_claim(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .any(|t| {
            t.key.as_deref() == Some(NODE_CLAIM_TAINT_KEY)
                && t.value.as_deref() == Some(TENANT)
                && t.effect.as_deref() == Some("NoSchedule")
        })
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

fn priority_class_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.priority_class_name.as_deref()
}

/// The Running tenant pod `name`, once its host pod is bound and reporting.
pub(crate) async fn running(world: &World, name: &str) -> Pod {
    let tenant_pods = world.tenant_pods();
    world
        .within(&format!("tenant pod {name} Running"), || async {
            let pod = tenant_pods.get(name).await.ok()?;
            (phase(&pod) == Some("Running")).then_some(pod)
        })
        .await
}

/// The one host pod standing for tenant pod `name`.
async fn host_pod_of(world: &World, name: &str) -> Pod {
    let mut found = standing_for(&world.host::<Pod>(), name).await;
    assert_eq!(found.len(), 1, "one host pod for {name}: {found:?}");
    found.remove(0)
}

/// The recorded tenant UID of every host pod of ours, with repeats.
async fn host_pod_uids(world: &World) -> Vec<String> {
    world
        .host::<Pod>()
        .list(&ListParams::default())
        .await
        .map(|list| list.items)
        .unwrap_or_default()
        .iter()
        .filter(|p| is_ours(p))
        .filter_map(|p| p.annotations().get(TENANT_OBJECT_UID_ANNOTATION).cloned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clustertree_runs_tenant_pods_on_the_host_and_reports_them_back() {
    let Some(world) = World::start(Pool::default()).await else {
        return;
    };
    let tenant_pods = world.tenant_pods();
    let host_pods = world.host::<Pod>();
    let site: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "site", "namespace": SHOP}, "data": {"index.html": "hello"}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(world.tenant_admin.clone(), SHOP)
        .create(&PostParams::default(), &site)
        .await
        .unwrap();
    Api::<Deployment>::namespaced(world.tenant_admin.clone(), SHOP)
        .create(&PostParams::default(), &deployment("web", 2, "node1"))
        .await
        .unwrap();
    world
        .create_tenant_pods([
            pod("pooled", POOL_NODE_NAME, json!({})),
            pod(
                "with-config",
                "node1",
                json!({
                    "volumes": [{"name": "site", "configMap": {"name": "site"}}],
                    "containers": [{"name": "app", "image": "nginx:1.27",
                                    "volumeMounts": [{"name": "site", "mountPath": "/usr/share/nginx/html"}]}],
                }),
            ),
        ])
        .await;

    // The Deployment's pods run on the promoted node, Running in the tenant with the
    // host pods' IPs.
    let web = world
        .within("both web pods Running with pod IPs", || async {
            let list = tenant_pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            let running: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| {
                    phase(p) == Some("Running")
                        && p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some()
                })
                .collect();
            (running.len() == 2).then_some(running)
        })
        .await;
    for tenant_pod in &web {
        let host_pod = host_pod_of(&world, &tenant_pod.name_any()).await;
        assert_eq!(node_of(&host_pod), Some("node1"), "{}", world.log_text());
        assert_eq!(
            host_pod.annotations()[TENANT_OBJECT_UID_ANNOTATION],
            tenant_pod.uid().unwrap()
        );
        assert!(tolerates_claim(&host_pod), "{:?}", host_pod.spec);
        let spec = host_pod.spec.as_ref().unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(
            tenant_pod.status.as_ref().unwrap().pod_ip,
            host_pod.status.as_ref().unwrap().pod_ip
        );
        assert_eq!(
            tenant_pod.status.as_ref().unwrap().host_ip,
            host_pod.status.as_ref().unwrap().host_ip
        );
    }
    // The tenant's own token, CA and namespace, in place of its projected volume.
    let token = standing_for(&world.host::<Secret>(), &web[0].name_any()).await;
    assert_eq!(token.len(), 1, "one token Secret per pod");
    let data = token[0].data.clone().unwrap_or_default();
    assert_eq!(data["namespace"].0, SHOP.as_bytes());
    assert!(!data["token"].0.is_empty() && !data["ca.crt"].0.is_empty());

    // The pool pod goes where the host scheduler puts it: an unclaimed worker.
    let pooled = world
        .within("the pool pod's host pod bound", || async {
            let host_pod = standing_for(&host_pods, "pooled").await.pop()?;
            host_pod.spec?.node_name
        })
        .await;
    assert_eq!(
        pooled, "node2",
        "neither the claimed node nor the control plane"
    );

    // A mounted ConfigMap gets its host copy.
    let host_config_maps = world.host::<ConfigMap>();
    let copy = world
        .within("the host copy of ConfigMap site", || async {
            standing_for(&host_config_maps, "site").await.pop()
        })
        .await;
    assert_eq!(copy.data.unwrap()["index.html"], "hello");

    // Deleting a tenant pod removes its host pod, then the tenant pod, then the copy.
    running(&world, "with-config").await;
    tenant_pods
        .delete("with-config", &DeleteParams::default())
        .await
        .unwrap();
    world
        .within("the deleted pod gone on both sides", || async {
            let host_gone = standing_for(&host_pods, "with-config").await.is_empty();
            let tenant_gone = tenant_pods.get_opt("with-config").await.ok()?.is_none();
            (host_gone && tenant_gone).then_some(())
        })
        .await;
    world
        .within("the unused ConfigMap copy removed", || async {
            standing_for(&host_config_maps, "site")
                .await
                .is_empty()
                .then_some(())
        })
        .await;

    // A host pod deleted behind the tenant's back fails its started tenant pod: the
    // tenant's controllers, not the clustertree, decide on a replacement.
    running(&world, "pooled").await;
    let lost = host_pod_of(&world, "pooled").await;
    host_pods
        .delete(&lost.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    let failed = world
        .within(
            "the pool pod Failed after its host pod vanished",
            || async {
                let pod = tenant_pods.get("pooled").await.ok()?;
                (phase(&pod) == Some("Failed")).then_some(pod)
            },
        )
        .await;
    assert_eq!(
        failed.status.and_then(|s| s.reason).as_deref(),
        Some("HostPodLost")
    );
    assert!(standing_for(&host_pods, "pooled").await.is_empty());
    world.finish("real_clustertree_runs_tenant_pods_on_the_host_and_reports_them_back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_privileged_pod_is_refused_with_a_reason() {
    let Some(world) = World::start(Pool::default()).await else {
        return;
    };
    let tenant_pods = world.tenant_pods();
    world
        .create_tenant_pods([
            pod(
                "root",
                "node1",
                json!({"containers": [{"name": "app", "image": "nginx:1.27", "securityContext": {"privileged": true}}]}),
            ),
            pod(
                "hostpath",
                "node1",
                json!({"volumes": [{"name": "scratch", "emptyDir": {}},
                                   {"name": "root", "hostPath": {"path": "/"}}]}),
            ),
            pod("plain", "node1", json!({})),
        ])
        .await;

    for (name, field) in [
        ("root", "containers[0].securityContext.privileged"),
        ("hostpath", "volumes[1].hostPath"),
    ] {
        let status = world
            .within(&format!("the refused pod {name} Failed"), || async {
                let status = tenant_pods.get(name).await.ok()?.status?;
                (status.phase.as_deref() == Some("Failed")).then_some(status)
            })
            .await;
        assert_eq!(status.reason.as_deref(), Some("HostPolicyRefused"));
        assert!(
            status
                .message
                .as_deref()
                .unwrap_or_default()
                .contains(field),
            "{status:?}"
        );
        let events = world.events_on(name).await;
        let event = events
            .iter()
            .find(|e| e.reason.as_deref() == Some("HostPolicyRefused"))
            .unwrap_or_else(|| panic!("an Event on the refused pod {name}: {events:?}"));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        let message = event.message.as_deref().unwrap_or_default();
        assert!(
            message.contains(field) && message.contains("baseline"),
            "{event:?}"
        );
    }
    // The host never saw them, though it runs the acceptable pod beside them.
    running(&world, "plain").await;
    let host_pods = world.host::<Pod>();
    for name in ["root", "hostpath"] {
        assert!(
            standing_for(&host_pods, name).await.is_empty(),
            "{}",
            world.log_text()
        );
    }
    world.finish("real_privileged_pod_is_refused_with_a_reason");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tenant_pool_pods_respect_the_pool_quota() {
    let Some(world) = World::start(Pool {
        resources: json!({"cpu": "250m", "memory": "1Gi", "pods": 10}),
        quota: true,
    })
    .await
    else {
        return;
    };
    let quota_name = format!("{TENANT}-pool");
    let namespace = Api::<Namespace>::all(world.admin.clone())
        .get(&world.workload_namespace)
        .await
        .unwrap();
    assert_eq!(
        namespace.labels().get("pod-security.kubernetes.io/enforce"),
        Some(&"baseline".to_owned())
    );
    let quotas = world.host::<ResourceQuota>();
    // Until the host's quota controller has counted, the host refuses every pod.
    let hard = world
        .within("the pool quota counted by the host", || async {
            quotas.get(&quota_name).await.ok()?.status?.hard
        })
        .await;
    let hard: BTreeMap<String, String> = hard.into_iter().map(|(k, v)| (k, v.0)).collect();
    assert_eq!(
        hard,
        BTreeMap::from([
            ("cpu".to_owned(), "250m".to_owned()),
            ("memory".to_owned(), "1Gi".to_owned()),
            ("pods".to_owned(), "10".to_owned()),
        ])
    );

    // A promoted node's pods are not the pool's: a pinned pod asking for more than the
    // whole pool, and one asking for nothing, both run.
    world
        .create_tenant_pods([
            requesting("pinned", "node1", "300m", "64Mi"),
            pod("pinned-bare", "node1", json!({})),
        ])
        .await;
    running(&world, "pinned").await;
    running(&world, "pinned-bare").await;
    let pinned = host_pod_of(&world, "pinned").await;
    assert_eq!(node_of(&pinned), Some("node1"));
    assert!(tolerates_claim(&pinned), "{:?}", pinned.spec);
    assert_eq!(priority_class_of(&pinned), None);

    // Pool pods asking for nothing are BestEffort to the tenant's scheduler, which
    // places them freely; on the host they request the pool default (100m each) and run
    // on the unclaimed worker under the pool's PriorityClass, counted by the quota.
    world
        .create_tenant_pods([
            pod("pool-a", POOL_NODE_NAME, json!({})),
            pod("pool-b", POOL_NODE_NAME, json!({})),
        ])
        .await;
    running(&world, "pool-a").await;
    running(&world, "pool-b").await;
    let pooled = host_pod_of(&world, "pool-a").await;
    assert_eq!(node_of(&pooled), Some("node2"), "the one unclaimed worker");
    assert!(!tolerates_claim(&pooled), "{:?}", pooled.spec);
    assert_eq!(priority_class_of(&pooled), Some(POOL_PRIORITY_CLASS));
    let used = world
        .within("the quota to count both pool pods", || async {
            let used = quotas.get(&quota_name).await.ok()?.status?.used?;
            (used.get("pods").map(|q| q.0.as_str()) == Some("2")).then_some(used)
        })
        .await;
    assert_eq!(used["cpu"].0, "200m", "the pinned pods are not counted");

    // Over the quota (a third 100m in a 250m pool): the host refuses it and the tenant
    // is told why, but the pod waits rather than fails, as it would for a full node.
    world
        .create_tenant_pods([pod("pool-c", POOL_NODE_NAME, json!({}))])
        .await;
    let event = world
        .within("a HostRefused Event on pool-c", || async {
            world
                .events_on("pool-c")
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("HostRefused"))
        })
        .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let message = event.message.unwrap_or_default();
    assert!(
        message.contains("exceeded quota") && message.contains(&quota_name),
        "{message}"
    );
    // A few passes (0.3 s each) later it is still waiting: a host pod is what must not
    // appear, so the window is the assertion.
    let host_pods = world.host::<Pod>();
    world
        .throughout(
            "pool-c to stay Pending without a host pod",
            Duration::from_secs(1),
            || async {
                let waiting = world.tenant_pods().get("pool-c").await.unwrap();
                let standing = standing_for(&host_pods, "pool-c").await;
                match (phase(&waiting), standing.len()) {
                    (Some("Pending"), 0) => Ok(()),
                    (phase, pods) => Err(format!(
                        "phase {phase:?}, {pods} host pods: {:?}",
                        waiting.status
                    )),
                }
            },
        )
        .await;

    // Room made in the pool: the waiting pod runs without anyone touching it.
    world
        .tenant_pods()
        .delete("pool-a", &DeleteParams::default())
        .await
        .unwrap();
    running(&world, "pool-c").await;
    let admitted = host_pod_of(&world, "pool-c").await;
    assert_eq!(node_of(&admitted), Some("node2"));
    assert!(standing_for(&host_pods, "pool-a").await.is_empty());
    world.finish("real_tenant_pool_pods_respect_the_pool_quota");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clustertree_restart_loses_nothing() {
    let Some(mut world) = World::start(Pool::default()).await else {
        return;
    };
    let tenant_pods = world.tenant_pods();
    let deployments: Api<Deployment> = Api::namespaced(world.tenant_admin.clone(), SHOP);
    deployments
        .create(&PostParams::default(), &deployment("web", 1, "node1"))
        .await
        .unwrap();
    world
        .within("the first web host pod", || async {
            (host_pod_uids(&world).await.len() == 1).then_some(())
        })
        .await;

    // Killed while it works through a burst: some host pods written, others not.
    let scale = |replicas: i32| {
        let deployments = deployments.clone();
        async move {
            deployments
                .patch(
                    "web",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"replicas": replicas}})),
                )
                .await
                .unwrap();
        }
    };
    scale(20).await;
    let at_kill = world
        .within("the burst under way", || async {
            let created = host_pod_uids(&world).await.len();
            (created > 1).then_some(created)
        })
        .await;
    world.kill_clustertree();
    eprintln!("killed with {at_kill} of 20 host pods written");

    // While it is down the tenant scales down: its bound pods wait for their kubelet.
    scale(15).await;
    world
        .within("the scale-down waiting on the dead kubelet", || async {
            let list = tenant_pods.list(&ListParams::default()).await.ok()?;
            let staying = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .count();
            (staying == 15).then_some(())
        })
        .await;
    world.start_clustertree();

    let settled = world
        .within("one host pod per tenant pod, all Running", || async {
            let list = tenant_pods.list(&ListParams::default()).await.ok()?;
            let all_running = list.items.len() == 15
                && list.items.iter().all(|p| {
                    phase(p) == Some("Running") && p.metadata.deletion_timestamp.is_none()
                });
            let tenant_uids: BTreeSet<String> = list.items.iter().filter_map(|p| p.uid()).collect();
            let host_uids = host_pod_uids(&world).await;
            let one_to_one = host_uids.len() == tenant_uids.len()
                && host_uids.iter().cloned().collect::<BTreeSet<_>>() == tenant_uids;
            (all_running && one_to_one).then_some(tenant_uids)
        })
        .await;
    // And it stays so over a few passes: nothing created twice. A duplicate is what must
    // not appear, so the window is the assertion.
    let settled: Vec<String> = settled.into_iter().collect();
    world
        .throughout(
            "one host pod per tenant pod",
            Duration::from_secs(1),
            || async {
                let mut host_uids = host_pod_uids(&world).await;
                host_uids.sort();
                if host_uids == settled {
                    Ok(())
                } else {
                    Err(format!("host pods of {host_uids:?}"))
                }
            },
        )
        .await;
    world.finish("real_clustertree_restart_loses_nothing");
}

/// The tenant Events copied from the host Events of tenant pod `name`'s host pod.
async fn copied_events(world: &World, name: &str, reason: &str) -> Vec<Event> {
    world
        .events_on(name)
        .await
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.reporting_component.as_deref() == Some(CLUSTERTREE_MANAGED_BY_VALUE)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_host_pod_events_appear_on_the_tenant_pod() {
    let Some(mut world) = World::start(Pool::default()).await else {
        return;
    };
    world
        .create_tenant_pods([pod("greeted", "node1", json!({}))])
        .await;
    let tenant_pod = running(&world, "greeted").await;
    let host_pod = host_pod_of(&world, "greeted").await;

    // The host scheduler's Scheduled Event on the host pod, told on the tenant pod.
    let copied = world
        .within("the Scheduled Event on the tenant pod", || async {
            let found = copied_events(&world, "greeted", "Scheduled").await;
            (!found.is_empty()).then_some(found)
        })
        .await;
    assert_eq!(copied.len(), 1, "{copied:?}");
    let event = &copied[0];
    assert_eq!(event.involved_object.kind.as_deref(), Some("Pod"));
    assert_eq!(event.involved_object.namespace.as_deref(), Some(SHOP));
    assert_eq!(event.involved_object.uid, tenant_pod.uid());
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    assert_eq!(event.count, Some(1));
    assert!(event.first_timestamp.is_some() && event.last_timestamp.is_some());
    let message = event.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("shop/greeted") && message.contains("node1"),
        "{message}"
    );
    assert!(!message.contains(&world.workload_namespace), "{message}");
    let host_events = Api::<Event>::namespaced(world.admin.clone(), &world.workload_namespace)
        .list(
            &ListParams::default().fields(&format!("involvedObject.name={}", host_pod.name_any())),
        )
        .await
        .unwrap();
    assert!(
        host_events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Scheduled")),
        "the host scheduler wrote the original: {host_events:?}"
    );

    // Once: not again on later passes, nor after a restart. A second copy is what must
    // not appear, so each window is the assertion: three passes, then long enough for the
    // restarted process to start, fill its caches and run a few passes.
    async fn unchanged(world: &World, copied: &[Event]) -> Result<(), String> {
        let now = copied_events(world, "greeted", "Scheduled").await;
        if now == copied {
            Ok(())
        } else {
            Err(format!("copied Events {now:?}"))
        }
    }
    world
        .throughout(
            "one copied Scheduled Event",
            Duration::from_millis(900),
            || unchanged(&world, &copied),
        )
        .await;
    world.kill_clustertree();
    world.start_clustertree();
    world
        .throughout(
            "one copied Scheduled Event after a restart",
            Duration::from_secs(3),
            || unchanged(&world, &copied),
        )
        .await;
    world.finish("real_host_pod_events_appear_on_the_tenant_pod");
}
