//! Provisioning at scale (issue 18): N VirtualClusters created at once, then the release
//! `vc-controller` started as its own process under its own identity. Prints the time
//! until every tenant is Initialized and until every one is Completed, the controller's
//! API requests per tenant by verb and its writes per tenant (counted by the server, for
//! the controller's user alone), its peak RSS (`VmHWM`) and CPU time, its reconcile
//! metrics, and whether the goals are met: on 2 cores, 1,000 tenants Initialized in under
//! 60 s, a peak RSS under 100 MiB, under 30 requests per tenant.
//!
//! ```text
//! cargo build --release -p vc-controller
//! cargo bench -p vc-tests --bench provision [-- TENANTS]                # test API server, default 1,000
//! export KUBEBUILDER_ASSETS=$(/work/shared/k8s/install.sh ~/.cache/kosmos-vc/k8s-v1.36.2)
//! cargo bench -p vc-tests --bench provision -- 100 --real-host          # real host, default 100
//! ```
//!
//! `cargo bench` builds only the libraries of other packages, so the release
//! `vc-controller` must be built first with the same `CARGO_TARGET_DIR`; the bench
//! refuses a binary older than the controller's sources.
//!
//! What runs, on either host, besides the controller: the workloads' readiness (on the
//! test API server the workload simulator plays the deployment and statefulset
//! controllers and kubelets with zero delay; on the real host kube-controller-manager and
//! kube-scheduler are real and only the kubelets of simulated nodes are played), a tenant
//! API server on each tenant apiserver Service's cluster IP serving the tenant's own
//! certificates once its Deployment is ready (`vc_simulation::tenant_apiserver`),
//! and the real clustertree passes (`vc_clustertree::sync::pass` and
//! `vc_clustertree::cluster_dns::pass`, in this process) for each tenant whose clustertree
//! Deployment is ready: they publish the tenant's `kube-dns` Service and its ready
//! endpoint, which Completed waits for.
//!
//! The request counts are the server's: the test API server's per-user counters, or the
//! real kube-apiserver's audit log (level Metadata, the controller's user only).
//! `VC_BENCH_HOST_QPS=N` starts the real host's kube-controller-manager and
//! kube-scheduler with `--kube-api-qps=N` (burst 2N) instead of upstream's defaults, which
//! bound how fast they create and schedule 100 tenants' pods.
//! `VC_BENCH_LOG` sets the controller's `--log-level` (default `info`); its log is kept
//! and its path printed. `VC_BENCH_CONTROLLER=PATH` measures that `vc-controller` binary
//! instead (say, one built from another commit), unchecked.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::PostParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use vc_api::constants::{COMPONENT_LABEL, KUBECONFIG_SECRET_KEY, TENANT_NAME_LABEL};
use vc_api::{Phase, VirtualCluster};
use vc_simulation::nodes::{FleetOptions, NodeFleet, NodeSpec};
use vc_simulation::tenant_apiserver::{self, TenantOptions};
use vc_simulation::workloads::{self, WorkloadMode, WorkloadOptions};
use vc_simulation::{SimHandle, report_error};
use vc_test_apiserver::envtest::{self, Envtest, EnvtestOptions, SKIP_MESSAGE};
use vc_test_apiserver::{TestApiServer, TestApiServerOptions};
use vc_tests::bench::{ProcessFigures, load_average, release_binary};
use vc_tests::clustertree::Process;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const CONTROLLER_USER: &str = "system:serviceaccount:kosmos-system:kosmos-vc-controller";
const NAMESPACE: &str = "bench";
/// Longest the bench waits for every tenant to complete before it reports what it has.
const LIMIT: Duration = Duration::from_secs(900);
/// Where the clustertree passes say the tenant's DNS answers (TEST-NET-1, as the e2e
/// harness's clustertrees): nothing here resolves through it.
const DNS_ADDRESS: (IpAddr, u16) = (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53)), 53);
/// Clustertree passes in flight at once.
const CLUSTERTREE_CONCURRENCY: usize = 8;

/// The goals of issue 18 on 2 cores.
const GOAL_INITIALIZED: Duration = Duration::from_secs(60);
const GOAL_PEAK_MIB: f64 = 100.0;
const GOAL_REQUESTS_PER_TENANT: f64 = 30.0;

/// `[TENANTS] [--real-host]`; cargo adds `--bench`.
struct Args {
    tenants: usize,
    real_host: bool,
}

impl Args {
    fn parse() -> Self {
        let words: Vec<String> = std::env::args().skip(1).collect();
        let real_host = words.iter().any(|word| word == "--real-host");
        let tenants = words
            .iter()
            .find_map(|word| word.parse().ok())
            .unwrap_or(if real_host { 100 } else { 1000 });
        Args { tenants, real_host }
    }
}

/// `VC_BENCH_HOST_QPS`: the real host's kube-controller-manager and kube-scheduler client
/// rate limit, as a large host raises it; unset keeps upstream's (20 and 50 a second).
fn host_api_qps() -> Option<u32> {
    std::env::var("VC_BENCH_HOST_QPS").ok()?.parse().ok()
}

/// The host the controller provisions on.
enum Host {
    Test(Box<TestApiServer>),
    Real(Box<Envtest>),
}

/// The controller's requests as the server counted them.
#[derive(Debug, Default)]
struct ServerCounts {
    /// Every request, by verb.
    requests_by_verb: BTreeMap<String, u64>,
    /// Every request, by verb and resource (`/status` appended for the subresource).
    requests_by_verb_resource: BTreeMap<String, u64>,
    /// Writes by resource: on the test API server the requests that changed stored
    /// state; on the real host the mutating requests answered 2xx.
    writes_by_resource: BTreeMap<String, u64>,
}

impl Host {
    async fn start(real: bool) -> BenchResult<Option<Self>> {
        if !real {
            let server = TestApiServer::start(TestApiServerOptions {
                watch_history: 2_000_000,
                ..TestApiServerOptions::default()
            })?;
            let crd = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../charts/kosmos-vc/crds/virtualclusters.kosmos.io.yaml");
            server.install_yaml(&crd.display().to_string()).await?;
            return Ok(Some(Host::Test(Box::new(server))));
        }
        let Some(assets) = envtest::assets() else {
            eprintln!("{SKIP_MESSAGE}");
            return Ok(None);
        };
        let envtest = Envtest::start_with(
            &assets,
            EnvtestOptions {
                service_cidr: envtest::private_service_cidr(),
                controller_manager: true,
                scheduler: true,
                audit_users: vec![CONTROLLER_USER.to_owned()],
                component_api_qps: host_api_qps(),
                ..EnvtestOptions::default()
            },
        )
        .await?;
        vc_tests::clustertree::install_crd(envtest.kubeconfig_path())?;
        Ok(Some(Host::Real(Box::new(envtest))))
    }

    fn kubeconfig_path(&self) -> &Path {
        match self {
            Host::Test(server) => server.kubeconfig_path(),
            Host::Real(envtest) => envtest.kubeconfig_path(),
        }
    }

    fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> BenchResult<PathBuf> {
        Ok(match self {
            Host::Test(server) => server.kubeconfig_for(user, groups)?,
            Host::Real(envtest) => envtest.kubeconfig_for(user, groups)?,
        })
    }

    fn name(&self) -> String {
        match self {
            Host::Test(_) => "test API server".to_owned(),
            Host::Real(_) => {
                let limit = match host_api_qps() {
                    Some(qps) => format!("--kube-api-qps={qps}"),
                    None => "upstream client rate limits".to_owned(),
                };
                format!(
                    "real host (kube-apiserver, kube-controller-manager, kube-scheduler; {limit})"
                )
            }
        }
    }

    fn counts(&self, user: &str) -> ServerCounts {
        match self {
            Host::Test(server) => {
                let counts = server.write_counts();
                ServerCounts {
                    requests_by_verb: counts
                        .requests_by_user_verb
                        .iter()
                        .filter(|((who, _), _)| who == user)
                        .map(|((_, verb), count)| (verb.clone(), *count))
                        .collect(),
                    requests_by_verb_resource: counts
                        .requests_by_user_verb_resource
                        .iter()
                        .filter(|((who, _, _), _)| who == user)
                        .map(|((_, verb, resource), count)| (format!("{verb} {resource}"), *count))
                        .collect(),
                    writes_by_resource: counts
                        .writes_by_user_resource
                        .iter()
                        .filter(|((who, _), _)| who == user)
                        .map(|((_, resource), count)| (resource.clone(), *count))
                        .collect(),
                }
            }
            Host::Real(envtest) => std::fs::read_to_string(envtest.audit_log_path())
                .map(|log| audit_counts(&log, user))
                .unwrap_or_default(),
        }
    }
}

/// The requests of `user` in a kube-apiserver audit log of JSON lines: each request once
/// when received, each successful write once when answered.
fn audit_counts(log: &str, user: &str) -> ServerCounts {
    let mut counts = ServerCounts::default();
    for line in log.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event["user"]["username"] != user {
            continue;
        }
        let verb = event["verb"].as_str().unwrap_or_default();
        let object = &event["objectRef"];
        let resource = match object["subresource"].as_str() {
            Some(sub) => format!("{}/{sub}", object["resource"].as_str().unwrap_or("")),
            None => object["resource"].as_str().unwrap_or("").to_owned(),
        };
        match event["stage"].as_str() {
            Some("RequestReceived") => {
                *counts.requests_by_verb.entry(verb.to_owned()).or_default() += 1;
                *counts
                    .requests_by_verb_resource
                    .entry(format!("{verb} {resource}"))
                    .or_default() += 1;
            }
            Some("ResponseComplete")
                if matches!(
                    verb,
                    "create" | "update" | "patch" | "delete" | "deletecollection"
                ) && event["responseStatus"]["code"]
                    .as_u64()
                    .is_some_and(|code| (200..300).contains(&code)) =>
            {
                *counts.writes_by_resource.entry(resource).or_default() += 1;
            }
            _ => {}
        }
    }
    counts
}

/// The `vc-controller` process, killed when dropped.
struct Controller {
    process: Process,
    probe: SocketAddr,
    log: PathBuf,
}

impl Controller {
    fn start(binary: &Path, kubeconfig: &Path) -> BenchResult<Self> {
        let probe = SocketAddr::from((Ipv4Addr::LOCALHOST, vc_test_apiserver::ports::free_port()?));
        let log = std::env::temp_dir().join(format!(
            "vc-bench-provision-controller-{}.log",
            std::process::id()
        ));
        let level = std::env::var("VC_BENCH_LOG").unwrap_or_else(|_| "info".to_owned());
        let args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--probe-listen={probe}"),
            format!("--log-level={level}"),
        ];
        let child = vc_test_apiserver::work_dir::spawn_logged(binary, &args, &log)?;
        Ok(Controller {
            process: Process(child),
            probe,
            log,
        })
    }

    fn figures(&self) -> ProcessFigures {
        ProcessFigures::of(self.process.0.id())
    }

    /// The controller's own `/metrics` text, empty when it does not answer.
    async fn metrics(&self) -> String {
        let Ok(mut stream) = tokio::net::TcpStream::connect(self.probe).await else {
            return String::new();
        };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.probe
        );
        if stream.write_all(request.as_bytes()).await.is_err() {
            return String::new();
        }
        let mut response = String::new();
        let _read = stream.read_to_string(&mut response).await;
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }
}

/// The lines of the controller's metrics worth printing: every `vc_controller_` sample
/// but the histogram's buckets.
fn reconcile_metrics(metrics: &str) -> Vec<&str> {
    metrics
        .lines()
        .filter(|line| line.starts_with("vc_controller_") && !line.contains("_bucket{"))
        .collect()
}

fn namespace(name: &str) -> BenchResult<Namespace> {
    Ok(serde_json::from_value(
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )?)
}

fn virtual_cluster(index: usize) -> BenchResult<VirtualCluster> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
        "metadata": {"name": format!("t{index:04}")},
        "spec": {"promoteResources": {"resources": {"cpu": 1, "memory": "1Gi"}}}
    }))?)
}

/// A watch-fed cache of `api` under `config`, and the task that feeds it.
fn cache<K>(api: Api<K>, config: watcher::Config) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let feed = reflector::reflector(writer, watcher(api, config))
        .default_backoff()
        .for_each(|_| async {});
    (reader, tokio::spawn(feed))
}

/// The clustertree's work inside each tenant whose clustertree Deployment is ready: the
/// real node pass and DNS pass of `vc-clustertree`, with the host admin's client for the
/// host side and the tenant's admin kubeconfig for the tenant. A tenant is done once both
/// passed; a failed pass is tried again on the next round.
async fn clustertrees(admin: Client) {
    let selector = format!("{COMPONENT_LABEL}=clustertree");
    let (deployments, _feed) = cache(
        Api::<Deployment>::namespaced(admin.clone(), NAMESPACE),
        watcher::Config::default().labels(&selector),
    );
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NAMESPACE);
    let mut done = BTreeSet::new();
    loop {
        let ready: Vec<String> = deployments
            .state()
            .iter()
            .filter(|deployment| workloads::deployment_is_ready(deployment))
            .filter_map(|deployment| deployment.labels().get(TENANT_NAME_LABEL).cloned())
            .filter(|tenant| !done.contains(tenant))
            .collect();
        let passed: Vec<String> = futures::stream::iter(ready)
            .map(|tenant| {
                let (admin, secrets) = (admin.clone(), secrets.clone());
                async move {
                    clustertree_pass(&admin, &secrets, &tenant)
                        .await
                        .then_some(tenant)
                }
            })
            .buffer_unordered(CLUSTERTREE_CONCURRENCY)
            .filter_map(|passed| async move { passed })
            .collect()
            .await;
        done.extend(passed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One tenant's clustertree passes; whether both succeeded.
async fn clustertree_pass(admin: &Client, secrets: &Api<Secret>, tenant: &str) -> bool {
    let name = vc_api::constants::admin_kubeconfig_secret_name(tenant);
    let Ok(Some(secret)) = secrets.get_opt(&name).await else {
        return false;
    };
    let Some(text) = secret
        .data
        .as_ref()
        .and_then(|data| data.get(KUBECONFIG_SECRET_KEY))
        .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok())
    else {
        return false;
    };
    let Ok(client) = tenant_client(&text).await else {
        return false;
    };
    let target = vc_clustertree::sync::Target {
        namespace: NAMESPACE.to_owned(),
        name: tenant.to_owned(),
        kubelet: None,
    };
    if let Err(error) = vc_clustertree::sync::pass(admin, &client, &target, true).await {
        report_error("clustertree node pass", &error);
        return false;
    }
    match vc_clustertree::cluster_dns::pass(&client, DNS_ADDRESS, "cluster.local", true).await {
        Ok(_) => true,
        Err(error) => {
            report_error("clustertree DNS pass", &error);
            false
        }
    }
}

async fn tenant_client(kubeconfig: &str) -> BenchResult<Client> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(Client::try_from(config)?)
}

/// How many tenants have reached Initialized (or Completed after it), and Completed.
fn progress(virtual_clusters: &Store<VirtualCluster>) -> (usize, usize) {
    let phases: Vec<Option<Phase>> = virtual_clusters
        .state()
        .iter()
        .map(|vc| vc.status.as_ref().and_then(|status| status.phase))
        .collect();
    let completed = phases
        .iter()
        .filter(|phase| **phase == Some(Phase::Completed))
        .count();
    let initialized = phases
        .iter()
        .filter(|phase| matches!(phase, Some(Phase::Initialized | Phase::Completed)))
        .count();
    (initialized, completed)
}

fn pki_time_per_tenant(samples: usize) -> BenchResult<Duration> {
    use vc_controller::pki::{ExistingPki, ensure_pki};
    use vc_controller::resources::{BuildContext, Observed, Tenant, tenant_identity};
    let context = BuildContext::default();
    let mut total = Duration::ZERO;
    for index in 0..samples {
        let vc: VirtualCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
            "metadata": {"name": format!("pki{index}"), "namespace": NAMESPACE, "uid": format!("uid-{index}")},
            "spec": {}
        }))?;
        let tenant = Tenant::resolve(&vc, &context)?;
        let observed = Observed {
            apiserver_cluster_ip: Some("127.100.0.9".parse()?),
            ..Observed::default()
        };
        let identity = tenant_identity(&tenant, &context, &observed)?;
        let started = Instant::now();
        let _material = ensure_pki(
            &identity,
            &ExistingPki::default(),
            k8s_openapi::jiff::Timestamp::now(),
        )?;
        total += started.elapsed();
    }
    Ok(total / u32::try_from(samples.max(1)).unwrap_or(1))
}

fn per_tenant(counts: &BTreeMap<String, u64>, tenants: usize) -> String {
    counts
        .iter()
        .map(|(key, count)| format!("{key} {:.2}", *count as f64 / tenants as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> BenchResult<()> {
    let Args { tenants, real_host } = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let binary = match std::env::var_os("VC_BENCH_CONTROLLER") {
        Some(path) => PathBuf::from(path),
        None => release_binary(
            "vc-controller",
            "vc-controller",
            &["controller/src", "controller/Cargo.toml", "api/src"],
        )?,
    };
    let Some(host) = Host::start(real_host).await? else {
        return Ok(());
    };
    println!(
        "provision bench: {tenants} VirtualClusters on the {}, load average {}",
        host.name(),
        load_average()
    );
    println!(
        "pki: {:.1} ms per tenant (fresh issue of 3 CAs, SA key, 9 leaves)",
        pki_time_per_tenant(20)?.as_secs_f64() * 1000.0
    );
    let admin = vc_test_apiserver::client_from_kubeconfig(host.kubeconfig_path()).await?;
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace(NAMESPACE)?)
        .await?;

    // What the tenants' workloads need to turn ready, on either host.
    let mut simulators = SimHandle::default();
    let _fleet = if real_host {
        // Room for every control-plane pod (five per tenant, 0.8 CPU and 0.7 GiB).
        let nodes = tenants * 5 / 100 + 2;
        let specs = (1..=nodes)
            .map(|index| NodeSpec {
                cpu: "32".to_owned(),
                memory: "128Gi".to_owned(),
                ..NodeSpec::new(&format!("node{index}"))
            })
            .collect();
        simulators = simulators.merge(workloads::spawn(
            admin.clone(),
            WorkloadOptions {
                default_delay: Duration::ZERO,
                mode: WorkloadMode::KubeletOnly,
                namespace: Some(NAMESPACE.to_owned()),
                ..WorkloadOptions::default()
            },
        ));
        Some(NodeFleet::start(admin.clone(), specs, FleetOptions::default()).await?)
    } else {
        simulators = simulators.merge(workloads::spawn(
            admin.clone(),
            WorkloadOptions {
                default_delay: Duration::ZERO,
                create_pods: false,
                namespace: Some(NAMESPACE.to_owned()),
                ..WorkloadOptions::default()
            },
        ));
        None
    };
    let tenant_apiservers = tenant_apiserver::spawn(
        admin.clone(),
        TenantOptions {
            namespace: Some(NAMESPACE.to_owned()),
            tenant_workloads: None,
            tenant_services: None,
            ..TenantOptions::default()
        },
    );
    let clustertree_task = tokio::spawn(clustertrees(admin.clone()));

    let vcs: Api<VirtualCluster> = Api::namespaced(admin.clone(), NAMESPACE);
    futures::stream::iter(0..tenants)
        .map(|index| {
            let vcs = vcs.clone();
            async move {
                vcs.create(&PostParams::default(), &virtual_cluster(index)?)
                    .await?;
                BenchResult::Ok(())
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<BenchResult<Vec<()>>>()?;
    let (virtual_clusters, _vc_feed) = cache(vcs, watcher::Config::default());
    virtual_clusters.wait_until_ready().await?;

    let kubeconfig = host.kubeconfig_for(CONTROLLER_USER, &["system:masters"])?;
    let load_at_start = load_average();
    let started = Instant::now();
    let mut controller = Controller::start(&binary, &kubeconfig)?;
    let mut all_initialized = None;
    let mut all_completed = None;
    let mut last_report = Instant::now();
    while all_completed.is_none() && started.elapsed() < LIMIT {
        let (initialized, completed) = progress(&virtual_clusters);
        if all_initialized.is_none() && initialized == tenants {
            all_initialized = Some((started.elapsed(), load_average()));
        }
        if completed == tenants {
            all_completed = Some((started.elapsed(), load_average()));
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            println!(
                "  {:>5.1} s: {initialized}/{tenants} Initialized, {completed} Completed (load {})",
                started.elapsed().as_secs_f64(),
                load_average()
            );
            last_report = Instant::now();
        }
        if let Some(status) = controller.process.0.try_wait()? {
            return Err(format!(
                "vc-controller exited ({status}); its log: {}",
                controller.log.display()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let figures = controller.figures();
    let metrics = controller.metrics().await;
    let counts = host.counts(CONTROLLER_USER);
    let _ = controller.process.0.kill();

    let (initialized, completed) = progress(&virtual_clusters);
    let time = |reached: &Option<(Duration, String)>, count: usize| match reached {
        Some((elapsed, load)) => format!("{:.1} s (load average {load})", elapsed.as_secs_f64()),
        None => format!("not reached in {} s ({count}/{tenants})", LIMIT.as_secs()),
    };
    let requests: u64 = counts.requests_by_verb.values().sum();
    let writes: u64 = counts.writes_by_resource.values().sum();
    let requests_per_tenant = requests as f64 / tenants as f64;
    println!();
    println!(
        "vc-controller, {tenants} tenants on the {} (load average at start {load_at_start})",
        host.name()
    );
    println!(
        "time until all {tenants} Initialized: {}",
        time(&all_initialized, initialized)
    );
    println!(
        "time until all {tenants} Completed:   {}",
        time(&all_completed, completed)
    );
    println!(
        "requests per tenant (server-side, {CONTROLLER_USER}): {requests_per_tenant:.2}; by verb: {}",
        per_tenant(&counts.requests_by_verb, tenants)
    );
    println!(
        "  by verb and resource: {}",
        per_tenant(&counts.requests_by_verb_resource, tenants)
    );
    println!(
        "writes per tenant: {:.2}; by resource: {}",
        writes as f64 / tenants as f64,
        per_tenant(&counts.writes_by_resource, tenants)
    );
    println!(
        "controller peak RSS (VmHWM): {:.1} MiB; RSS at end {:.1} MiB; CPU {:.1} s",
        figures.peak_mib, figures.rss_mib, figures.cpu_seconds
    );
    for line in reconcile_metrics(&metrics) {
        println!("  {line}");
    }
    let met = |ok: bool| if ok { "met" } else { "MISSED" };
    let initialized_in_time =
        matches!(&all_initialized, Some((elapsed, _)) if *elapsed < GOAL_INITIALIZED);
    println!(
        "goal: all Initialized in < {} s: {}",
        GOAL_INITIALIZED.as_secs(),
        met(initialized_in_time)
    );
    println!(
        "goal: controller peak RSS < {GOAL_PEAK_MIB} MiB: {}",
        met(figures.peak_mib < GOAL_PEAK_MIB)
    );
    println!(
        "goal: < {GOAL_REQUESTS_PER_TENANT} requests per tenant: {}",
        met(requests_per_tenant < GOAL_REQUESTS_PER_TENANT)
    );
    println!("controller log: {}", controller.log.display());

    clustertree_task.abort();
    drop(controller);
    drop(tenant_apiservers);
    drop(simulators);
    // On the real host this also removes the hostpath volumes of the etcd claims.
    drop(host);
    Ok(())
}
