//! Shared harness of the controller's cluster-level tests: a test API server with the
//! VirtualCluster CRD and host nodes, the controller running in-process under its own
//! identity, and a small kubelet stand-in that marks workloads ready and serves each
//! tenant's apiserver on its Service's cluster IP with the tenant's own certificates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use vc_api::VirtualCluster;
use vc_api::constants::{
    COMPONENT_LABEL, NODE_CLAIM_TAINT_KEY, NODE_OWNER_NAME_LABEL, NODE_OWNER_NAMESPACE_LABEL,
    NODE_OWNER_UID_ANNOTATION, TENANT_NAME_LABEL,
};
use vc_api::testing::virtual_cluster;
use vc_controller::context::Timing;
use vc_controller::runner::{RunConfig, run};
use vc_controller::telemetry::{Health, Metrics};
use vc_test_apiserver::{ServingCerts, TestApiServer, TestApiServerOptions};

/// The identity the controller runs as; its writes are counted separately.
pub const CONTROLLER_USER: &str = "system:serviceaccount:kosmos-system:kosmos-vc-controller";

/// Path of the chart's generated CRD.
pub fn crd_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/kosmos-vc/crds/virtualclusters.kosmos.io.yaml")
}

/// A host cluster with the controller running against it.
pub struct Harness {
    pub server: TestApiServer,
    /// Admin client (the tests' own requests).
    pub admin: Client,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    controller: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
    kubelet: Option<tokio::task::JoinHandle<()>>,
    /// The shared simulators of vc-tests, when the test asked for them.
    pub simulation: Option<vc_simulation::Simulation>,
    pub tenants: Arc<Mutex<BTreeMap<String, TestApiServer>>>,
    /// `NS/NAME` of workloads the kubelet stand-in leaves un-rolled-out for now.
    pub held: Arc<Mutex<BTreeSet<String>>>,
}

/// Test timing: short waits and a short resync so tests see several resyncs quickly.
pub fn test_timing() -> Timing {
    Timing {
        wait: Duration::from_millis(200),
        resync: Duration::from_millis(400),
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_secs(2),
        tenant_timeout: Duration::from_secs(3),
    }
}

impl Harness {
    /// Starts the server with `nodes` worker nodes; `serve_tenants` starts a tenant
    /// apiserver for every ready apiserver Deployment.
    pub async fn start(nodes: usize, serve_tenants: bool) -> Self {
        let mut harness = Self::bare().await;
        let node_api: Api<Node> = Api::all(harness.admin.clone());
        for index in 0..nodes {
            let node: Node = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": format!("node-{index}"), "labels": {"kubernetes.io/hostname": format!("node-{index}")}},
                "spec": {"taints": [{"key": "example.com/gpu", "effect": "NoExecute"}]}
            }))
            .unwrap();
            node_api
                .create(&PostParams::default(), &node)
                .await
                .unwrap();
        }
        harness.kubelet = Some(tokio::spawn(kubelet_loop(
            harness.admin.clone(),
            serve_tenants,
            harness.tenants.clone(),
            harness.held.clone(),
        )));
        harness.start_controller().await;
        harness
    }

    /// Starts the server with vc-tests' own simulators (kubelets with heartbeats,
    /// workload readiness, tenant API servers), the real clustertree's node pass, and
    /// `nodes` nodes `node1..nodeN`.
    pub async fn start_simulated(nodes: usize) -> Self {
        let mut harness = Self::bare().await;
        let simulation = vc_simulation::Simulation::start(
            harness.admin.clone(),
            vc_simulation::SimulationOptions::with_nodes(nodes),
        )
        .await
        .expect("simulation starts");
        harness.simulation = Some(simulation);
        let admin = harness.admin.clone();
        harness.kubelet = Some(tokio::spawn(async move {
            let held = Mutex::default();
            loop {
                let _ = mirror_nodes(&admin, &held).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }));
        harness.start_controller().await;
        harness
    }

    /// The server with the CRD installed; nothing else runs yet.
    async fn bare() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let server =
            TestApiServer::start(TestApiServerOptions::default()).expect("test API server starts");
        server
            .install_yaml(crd_path().to_str().unwrap())
            .await
            .expect("CRD installs");
        let admin = server.client().await.unwrap();
        Self {
            server,
            admin,
            metrics: Arc::new(Metrics::default()),
            health: Arc::new(Health::default()),
            controller: None,
            kubelet: None,
            simulation: None,
            tenants: Arc::default(),
            held: Arc::default(),
        }
    }

    /// Starts (or restarts) the controller in-process.
    pub async fn start_controller(&mut self) {
        let kubeconfig = self
            .server
            .kubeconfig_for(CONTROLLER_USER, &["system:masters"])
            .unwrap();
        let client = vc_test_apiserver::client_from_kubeconfig(&kubeconfig)
            .await
            .unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let config = RunConfig {
            timing: test_timing(),
            ..RunConfig::from_flags(&<vc_controller::flags::Flags as clap::Parser>::parse_from(
                ["vc-controller"],
            ))
        };
        let handle = tokio::spawn(run(
            client,
            config,
            self.metrics.clone(),
            self.health.clone(),
            async move {
                let _ = stop_rx.await;
            },
        ));
        self.controller = Some((stop_tx, handle));
    }

    /// Kills the controller like a crash: in-flight reconciles stop wherever they are.
    pub fn kill_controller(&mut self) {
        if let Some((_, handle)) = self.controller.take() {
            handle.abort();
        }
    }

    /// Stops the controller, letting in-flight reconciles finish.
    pub async fn stop_controller(&mut self) {
        if let Some((stop, handle)) = self.controller.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
    }

    pub fn vcs(&self, namespace: &str) -> Api<VirtualCluster> {
        Api::namespaced(self.admin.clone(), namespace)
    }

    /// Creates a VirtualCluster (bypassing any webhook).
    pub async fn create_vc(&self, namespace: &str, name: &str, nodes: &[&str]) -> VirtualCluster {
        self.ensure_namespace(namespace).await;
        let vc = virtual_cluster(
            namespace,
            name,
            nodes,
            &[("cpu", 2.into()), ("memory", "4Gi".into())],
        );
        self.vcs(namespace)
            .create(&PostParams::default(), &vc)
            .await
            .unwrap()
    }

    pub async fn ensure_namespace(&self, namespace: &str) {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.admin.clone());
        let object = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        )
        .unwrap();
        let _ = api.create(&PostParams::default(), &object).await;
    }

    /// The controller's reconciles so far, over every object, from its metrics.
    pub fn reconcile_count(&self) -> u64 {
        let text = self.metrics.encode().unwrap();
        text.lines()
            .filter(|line| line.starts_with("vc_controller_reconciles_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Waits until the controller has run two reconciles in a row without a write request:
    /// the follow-ups of the last change (status writes, requeues) are then done. Counting
    /// reconciles rather than seconds ties the wait to the passes that would write.
    pub async fn wait_until_settled(&self, limit: Duration) {
        self.server.reset_write_counts();
        let mut since = self.reconcile_count();
        self.eventually(limit, "two reconciles in a row without a write", || {
            let reconciles = self.reconcile_count();
            let writes = self.server.write_counts().requests_by(CONTROLLER_USER);
            let settled = reconciles >= since + 2 && writes == 0;
            if reconciles >= since + 2 && writes > 0 {
                self.server.reset_write_counts();
                since = reconciles;
            }
            async move { settled.then_some(()) }
        })
        .await;
    }

    /// Asserts the controller sends no write request over its next `reconciles` reconciles
    /// (at most `limit`), and returns how many it ran. The window is counted in reconciles,
    /// the passes that would write, so it ends as soon as they have run.
    pub async fn assert_no_writes_over(&self, reconciles: u64, limit: Duration) -> u64 {
        self.server.reset_write_counts();
        let before = self.reconcile_count();
        let ran = self
            .eventually(limit, &format!("{reconciles} more reconciles"), || {
                let counts = self.server.write_counts();
                assert_eq!(
                    counts.requests_by(CONTROLLER_USER),
                    0,
                    "a settled tenant must cost no write requests; requests by resource: {:?}",
                    counts.requests_by_resource
                );
                let ran = self.reconcile_count() - before;
                async move { (ran >= reconciles).then_some(ran) }
            })
            .await;
        let counts = self.server.write_counts();
        assert_eq!(
            counts.requests_by(CONTROLLER_USER),
            0,
            "a settled tenant must cost no write requests over {ran} reconciles; requests by resource: {:?}",
            counts.requests_by_resource
        );
        ran
    }

    /// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
    pub async fn eventually<T, F, Fut>(&self, timeout: Duration, what: &str, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        vc_tests::wait::eventually(what, timeout, check).await
    }

    /// Waits until `namespace/name` reports `phase`.
    pub async fn wait_for_phase(
        &self,
        namespace: &str,
        name: &str,
        phase: &str,
        timeout: Duration,
    ) -> VirtualCluster {
        let api = self.vcs(namespace);
        self.eventually(
            timeout,
            &format!("{namespace}/{name} to reach {phase}"),
            || {
                let api = api.clone();
                async move {
                    let vc = api.get_opt(name).await.ok().flatten()?;
                    let current = vc
                        .status
                        .as_ref()
                        .and_then(|s| s.phase)
                        .map(|p| p.as_str().to_owned());
                    (current.as_deref() == Some(phase)).then_some(vc)
                }
            },
        )
        .await
    }

    pub async fn shutdown(mut self) {
        self.stop_controller().await;
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.abort();
        }
        if let Some(simulation) = self.simulation.take() {
            simulation.stop();
        }
    }
}

/// Condition `type_` of `vc`, as (status, reason, message).
pub fn condition(vc: &VirtualCluster, type_: &str) -> Option<(String, String, String)> {
    vc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Stands in for kubelets and the workload controllers: marks StatefulSets and
/// Deployments rolled out, serves each ready tenant apiserver on its cluster IP with the
/// certificate its Secret holds, and runs the clustertree's node pass for each tenant.
pub async fn kubelet_loop(
    admin: Client,
    serve_tenants: bool,
    tenants: Arc<Mutex<BTreeMap<String, TestApiServer>>>,
    held: Arc<Mutex<BTreeSet<String>>>,
) {
    loop {
        let _ = mark_rolled_out(&admin, &held).await;
        if serve_tenants {
            let _ = serve_tenant_apiservers(&admin, &tenants).await;
            let _ = mirror_nodes(&admin, &held).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn mark_rolled_out(
    admin: &Client,
    held: &Mutex<BTreeSet<String>>,
) -> Result<(), kube::Error> {
    let is_held = |namespace: Option<String>, name: String| {
        held.lock()
            .unwrap()
            .contains(&format!("{}/{name}", namespace.unwrap_or_default()))
    };
    let sets: Api<StatefulSet> = Api::all(admin.clone());
    for set in sets.list(&ListParams::default()).await? {
        if is_held(set.namespace(), set.name_any()) {
            continue;
        }
        let generation = set.metadata.generation.unwrap_or(1);
        let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = set.status.clone().unwrap_or_default();
        if status.observed_generation == Some(generation) && status.ready_replicas == Some(replicas)
        {
            continue;
        }
        let revision = format!("rev-{generation}");
        let api: Api<StatefulSet> =
            Api::namespaced(admin.clone(), &set.namespace().unwrap_or_default());
        let patch = json!({"status": {"observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
            "updatedReplicas": replicas, "currentReplicas": replicas, "availableReplicas": replicas,
            "currentRevision": revision, "updateRevision": revision}});
        api.patch_status(
            &set.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    let deployments: Api<Deployment> = Api::all(admin.clone());
    for deployment in deployments.list(&ListParams::default()).await? {
        if is_held(deployment.namespace(), deployment.name_any()) {
            continue;
        }
        let generation = deployment.metadata.generation.unwrap_or(1);
        let replicas = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        let status = deployment.status.clone().unwrap_or_default();
        if status.observed_generation == Some(generation) && status.ready_replicas == Some(replicas)
        {
            continue;
        }
        let api: Api<Deployment> =
            Api::namespaced(admin.clone(), &deployment.namespace().unwrap_or_default());
        let patch = json!({"status": {"observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
            "updatedReplicas": replicas, "availableReplicas": replicas}});
        api.patch_status(
            &deployment.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    Ok(())
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
}

async fn serve_tenant_apiservers(
    admin: &Client,
    tenants: &Mutex<BTreeMap<String, TestApiServer>>,
) -> Result<(), kube::Error> {
    let deployments: Api<Deployment> = Api::all(admin.clone());
    let selector = format!("{COMPONENT_LABEL}=apiserver");
    for deployment in deployments
        .list(&ListParams::default().labels(&selector))
        .await?
    {
        let ready = deployment
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
            >= 1;
        let namespace = deployment.namespace().unwrap_or_default();
        let Some(tenant) = deployment.labels().get(TENANT_NAME_LABEL).cloned() else {
            continue;
        };
        let key = format!("{namespace}/{tenant}");
        if !ready || tenants.lock().unwrap().contains_key(&key) {
            continue;
        }
        let services: Api<Service> = Api::namespaced(admin.clone(), &namespace);
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), &namespace);
        let Some(service) = services.get_opt(&format!("{tenant}-apiserver")).await? else {
            continue;
        };
        let Some(ip) = service.spec.as_ref().and_then(|s| s.cluster_ip.clone()) else {
            continue;
        };
        let Some(tls) = secrets.get_opt(&format!("{tenant}-apiserver-tls")).await? else {
            continue;
        };
        let Some(ca) = secrets.get_opt(&format!("{tenant}-ca")).await? else {
            continue;
        };
        // The clients it accepts are those of the Deployment's `--client-ca-file`.
        let Ok(files) = vc_simulation::tenant_apiserver::ServingFiles::of(&deployment) else {
            continue;
        };
        let Some(client_cas) = secrets.get_opt(&files.client_ca.secret).await? else {
            continue;
        };
        let (Some(cert_pem), Some(key_pem), Some(ca_pem), Some(client_ca_pem)) = (
            secret_text(&tls, "tls.crt"),
            secret_text(&tls, "tls.key"),
            secret_text(&ca, "tls.crt"),
            secret_text(&client_cas, &files.client_ca.key),
        ) else {
            continue;
        };
        let options = TestApiServerOptions {
            bind: format!("{ip}:6443").parse().unwrap(),
            serving: Some(ServingCerts {
                cert_pem,
                key_pem,
                client_ca_pem,
                server_ca_pem: ca_pem,
            }),
            ..TestApiServerOptions::default()
        };
        match TestApiServer::start(options) {
            Ok(server) => {
                tenants.lock().unwrap().insert(key, server);
            }
            Err(error) => eprintln!("tenant apiserver {key} on {ip}:6443 did not start: {error}"),
        }
    }
    Ok(())
}

/// The clustertree's job inside each tenant: the real `vc-clustertree` node pass
/// ([`vc_clustertree::sync::pass`]) and DNS Service pass ([`vc_clustertree::cluster_dns::pass`],
/// its endpoint ready, naming a DNS server nobody asks here) run in-process for each
/// tenant whose clustertree Deployment is ready, with the host admin's client for the
/// host side and the tenant's admin kubeconfig (its cluster IP endpoint, where the tenant
/// API servers listen here). `dns:NS/NAME` in `held` keeps that tenant's DNS endpoint
/// not ready.
pub async fn mirror_nodes(
    admin: &Client,
    held: &Mutex<BTreeSet<String>>,
) -> Result<(), kube::Error> {
    let deployments: Api<Deployment> = Api::all(admin.clone());
    let ready_trees: Vec<(String, String)> = deployments
        .list(&ListParams::default().labels(&format!("{COMPONENT_LABEL}=clustertree")))
        .await?
        .into_iter()
        .filter(|d| {
            d.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
                >= 1
        })
        .filter_map(|d| Some((d.namespace()?, d.labels().get(TENANT_NAME_LABEL)?.clone())))
        .collect();
    for (namespace, name) in ready_trees {
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), &namespace);
        let Some(secret) = secrets
            .get_opt(&vc_api::constants::admin_kubeconfig_secret_name(&name))
            .await?
        else {
            continue;
        };
        let Some(text) = secret_text(&secret, vc_api::constants::KUBECONFIG_SECRET_KEY) else {
            continue;
        };
        let Ok(kubeconfig) = kube::config::Kubeconfig::from_yaml(&text) else {
            continue;
        };
        let Ok(config) =
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await
        else {
            continue;
        };
        let Ok(tenant) = Client::try_from(config) else {
            continue;
        };
        let target = vc_clustertree::sync::Target {
            namespace,
            name,
            kubelet: None,
        };
        if let Err(error) = vc_clustertree::sync::pass(admin, &tenant, &target, true).await {
            eprintln!(
                "clustertree pass of {}/{}: {error}",
                target.namespace, target.name
            );
        }
        let answering = !held
            .lock()
            .unwrap()
            .contains(&format!("dns:{}/{}", target.namespace, target.name));
        let endpoint = (std::net::IpAddr::from([127, 0, 0, 1]), 1053);
        if let Err(error) =
            vc_clustertree::cluster_dns::pass(&tenant, endpoint, "cluster.local", answering).await
        {
            eprintln!(
                "clustertree DNS pass of {}/{}: {error}",
                target.namespace, target.name
            );
        }
    }
    Ok(())
}

/// Whether `node` carries any part of a claim (labels, annotation or taint).
pub fn carries_any_claim(node: &Node) -> bool {
    let labels = node.labels();
    labels.contains_key(NODE_OWNER_NAMESPACE_LABEL)
        || labels.contains_key(NODE_OWNER_NAME_LABEL)
        || node.annotations().contains_key(NODE_OWNER_UID_ANNOTATION)
        || node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|taints| taints.iter().any(|t| t.key == NODE_CLAIM_TAINT_KEY))
}

/// `NS/NAME` of the VirtualCluster whose labels `node` carries.
pub fn owner_of(node: &Node) -> Option<String> {
    let labels = node.labels();
    Some(format!(
        "{}/{}",
        labels.get(NODE_OWNER_NAMESPACE_LABEL)?,
        labels.get(NODE_OWNER_NAME_LABEL)?
    ))
}
