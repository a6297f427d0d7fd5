//! The real `vc-clustertree` process at scale (issue 14): N tenant pods (default 1,000)
//! created at once in a real tenant apiserver, already bound to the promoted node, run
//! as host pods by vc-clustertree and reported back Running with the host pods' IPs;
//! then all deleted. Prints the time down (until every host pod exists), the time up
//! (until every tenant pod is Running with its host pod's IP), the time until both sides
//! are empty after the deletion, and the peak RSS (`VmHWM`) and CPU time
//! (`utime + stime`) of the vc-clustertree process, with the requests each apiserver
//! served meanwhile. Prints numbers; asserts nothing.
//!
//! The goal for 1,000 pods: up in under 30 s, with a peak RSS under 64 MiB. On the
//! 2-core development machine (shared with other builds, so times vary by seconds) the
//! watch-fed pod loop measured down 9.8–10.9 s, up 19.5–21.9 s, delete 16.0–16.6 s and a
//! peak RSS of 61–62 MiB, where the list-every-period loop it replaced measured down
//! 9.4–15.6 s, up 29.8–33.9 s, delete 17–25.5 s and 101–112 MiB.
//!
//! ```text
//! export KUBEBUILDER_ASSETS=$(/work/shared/k8s/install.sh ~/.cache/kosmos-vc/k8s-v1.36.2)
//! cargo build --release -p vc-clustertree
//! cargo bench -p vc-tests --bench clustertree
//! ```
//!
//! `cargo bench` builds only libraries of other packages, not their binaries, so the
//! release `vc-clustertree` must be built first (same `CARGO_TARGET_DIR`); the bench
//! refuses a binary older than the clustertree sources rather than measure stale code.
//! `VC_BENCH_PODS` sets the number of pods, `VC_BENCH_PERIOD` the `--period` passed to
//! vc-clustertree (default `2s`, what the controller runs it with).
//!
//! Both control planes are envtest's real etcd and kube-apiserver, with the real
//! kube-controller-manager (the tenant's creates the default ServiceAccount and the CA
//! ConfigMap pods need; the host's is there as in production); the tenant has no
//! scheduler since its pods are created bound. The host's kubelets are simulated
//! ([`NodeFleet`], and the workload simulator in kubelet-only mode, which makes every
//! bound host pod Running and finishes the deletion of deleted ones). The request counts
//! come from each apiserver's `apiserver_request_total`, so they include every client
//! (the simulated kubelets, the controller-managers, this bench), not vc-clustertree's
//! alone.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use vc_api::constants::{
    CLUSTERTREE_MANAGED_BY_VALUE, MANAGED_BY_LABEL, TENANT_OBJECT_NAME_LABEL,
    tenant_workload_namespace,
};
use vc_simulation::nodes::{FleetOptions, NodeFleet, NodeSpec};
use vc_simulation::workloads::{self, WorkloadMode, WorkloadOptions};
use vc_test_apiserver::envtest::{self, EnvtestOptions, SKIP_MESSAGE};
use vc_tests::clustertree::{self, ControlPlanes, Launch, NAMESPACE, TENANT};
use vc_tests::wait;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const NODE: &str = "node1";
/// The tenant namespace of the pods.
const APP: &str = "bench";
/// Tenant creates and deletes in flight at once.
const CONCURRENCY: usize = 32;
/// Longest any phase may take before the bench gives up on it and says so.
const PHASE_LIMIT: Duration = Duration::from_secs(600);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The release `vc-clustertree` of this target directory, refused when older than the
/// sources it is built from.
fn clustertree_binary() -> BenchResult<PathBuf> {
    Ok(vc_tests::bench::release_binary(
        "vc-clustertree",
        "vc-clustertree",
        &["clustertree/src", "clustertree/Cargo.toml", "api/src"],
    )?)
}

/// Polls `check` until it returns a value, failing after [`PHASE_LIMIT`]. Not
/// [`vc_tests::wait::until`]: this one times the phases, so it polls a cheap cache every
/// 20 ms where the shared wait backs off to 200 ms.
async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> BenchResult<T> {
    let deadline = Instant::now() + PHASE_LIMIT;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(format!("gave up after {PHASE_LIMIT:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A watch-fed cache of the pods of one namespace, so that waiting costs the apiservers
/// one watch rather than a list of every pod per poll.
fn pod_cache(client: Client, namespace: &str) -> (Store<Pod>, tokio::task::JoinHandle<()>) {
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(
            Api::<Pod>::namespaced(client, namespace),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .for_each(|_| async {});
    (reader, tokio::spawn(stream))
}

fn pod_ip(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.pod_ip.as_deref()
}

fn is_ours(pod: &Pod) -> bool {
    pod.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(CLUSTERTREE_MANAGED_BY_VALUE)
}

/// Host pod IPs by the name of the tenant pod they stand for.
fn host_ips(host: &Store<Pod>) -> BTreeMap<String, String> {
    host.state()
        .iter()
        .filter(|pod| is_ours(pod))
        .filter_map(|pod| {
            Some((
                pod.labels().get(TENANT_OBJECT_NAME_LABEL)?.clone(),
                pod_ip(pod)?.to_owned(),
            ))
        })
        .collect()
}

/// Tenant pods Running with their host pod's IP.
fn reported(tenant: &Store<Pod>, host: &Store<Pod>) -> usize {
    let ips = host_ips(host);
    tenant
        .state()
        .iter()
        .filter(|pod| {
            let status = pod.status.as_ref();
            status.and_then(|s| s.phase.as_deref()) == Some("Running")
                && pod_ip(pod)
                    .is_some_and(|ip| ips.get(&pod.name_any()).map(String::as_str) == Some(ip))
        })
        .count()
}

/// From `/proc/PID`: (peak RSS in MiB, current RSS in MiB, CPU seconds).
fn process_figures(pid: u32) -> (f64, f64, f64) {
    let figures = vc_tests::bench::ProcessFigures::of(pid);
    (figures.peak_mib, figures.rss_mib, figures.cpu_seconds)
}

/// `apiserver_request_total` summed by verb and resource (with subresource).
async fn request_totals(client: &Client) -> BTreeMap<String, f64> {
    let Ok(request) = http::Request::get("/metrics").body(Vec::new()) else {
        return BTreeMap::new();
    };
    let Ok(text) = client.request_text(request).await else {
        return BTreeMap::new();
    };
    let label = |labels: &str, key: &str| {
        labels
            .split(',')
            .find_map(|pair| pair.strip_prefix(&format!("{key}=\"")))
            .and_then(|value| value.strip_suffix('"'))
            .unwrap_or_default()
            .to_owned()
    };
    let mut totals = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let resource = match label(labels, "subresource").as_str() {
            "" => label(labels, "resource"),
            sub => format!("{}/{sub}", label(labels, "resource")),
        };
        let key = format!("{} {}", label(labels, "verb"), resource);
        *totals.entry(key).or_insert(0.0) += value;
    }
    totals
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<(String, u64)> {
    let mut rows: Vec<(String, u64)> = after
        .iter()
        .map(|(key, value)| {
            let grew = value - before.get(key).copied().unwrap_or(0.0);
            (key.clone(), grew.max(0.0) as u64)
        })
        .filter(|(_, grew)| *grew > 0)
        .collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows
}

fn tenant_pod(index: usize) -> BenchResult<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{index:05}"), "namespace": APP, "labels": {"app": "bench"}},
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "app", "image": "nginx:1.27"}],
        },
    }))?)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> BenchResult<()> {
    let pods = env_usize("VC_BENCH_PODS", 1000);
    let period = std::env::var("VC_BENCH_PERIOD").unwrap_or_else(|_| "2s".to_owned());
    let Some(assets) = envtest::assets() else {
        eprintln!("{SKIP_MESSAGE}");
        return Ok(());
    };
    let binary = clustertree_binary()?;
    let began = Instant::now();
    let host_options = EnvtestOptions {
        controller_manager: true,
        scheduler: true,
        ..EnvtestOptions::default()
    };
    let tenant_options = EnvtestOptions {
        controller_manager: true,
        ..EnvtestOptions::default()
    };
    let ControlPlanes {
        host,
        tenant,
        admin,
        tenant_admin,
    } = ControlPlanes::start(&assets, host_options, tenant_options).await?;
    let workload_namespace = tenant_workload_namespace(NAMESPACE, TENANT);
    clustertree::install_crd(host.kubeconfig_path())?;
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": workload_namespace,
                           "labels": {"pod-security.kubernetes.io/enforce": "baseline"}}});
    clustertree::kubectl_apply(host.kubeconfig_path(), &namespace.to_string())?;
    let capacity = (pods + 100).to_string();
    let node = NodeSpec {
        pods: capacity,
        ..NodeSpec::new(NODE)
    };
    let fleet = NodeFleet::start(
        admin.clone(),
        vec![node, NodeSpec::new("node2")],
        FleetOptions::default(),
    )
    .await?;
    let kubelets = workloads::spawn(
        admin.clone(),
        WorkloadOptions {
            mode: WorkloadMode::KubeletOnly,
            namespace: Some(workload_namespace.clone()),
            ..WorkloadOptions::default()
        },
    );
    let created = clustertree::create_virtual_cluster(
        &admin,
        json!({"kubernetesVersion": "v1.33.4", "promoteResources": {"nodes": [NODE]}}),
    )
    .await?;
    clustertree::claim(&admin, NODE, &created.uid().unwrap_or_default(), true).await?;
    for object in clustertree::host_rbac(&[NODE])
        .into_iter()
        .chain(clustertree::workload_rbac(&workload_namespace))
    {
        clustertree::kubectl_apply(host.kubeconfig_path(), &object.to_string())?;
    }

    // The tenant namespace, with what admits its pods.
    let app: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": APP}}))?;
    Api::all(tenant_admin.clone())
        .create(&PostParams::default(), &app)
        .await?;
    let service_accounts: Api<ServiceAccount> = Api::namespaced(tenant_admin.clone(), APP);
    let config_maps: Api<ConfigMap> = Api::namespaced(tenant_admin.clone(), APP);
    wait::until(
        "the default ServiceAccount and CA in the tenant",
        PHASE_LIMIT,
        || async {
            let account = service_accounts.get_opt("default").await.ok()??;
            let ca = config_maps.get_opt("kube-root-ca.crt").await.ok()??;
            Some((account, ca))
        },
    )
    .await?;

    let identity = host.kubeconfig_for(clustertree::USER, &[])?;
    let log_path =
        std::env::temp_dir().join(format!("vc-bench-clustertree-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path)?;
    let mut clustertree = Launch::new(binary, &identity, tenant.kubeconfig_path())
        .period(&period)
        .spawn(log)?;
    let pid = clustertree.0.id();
    let tenant_nodes: Api<Node> = Api::all(tenant_admin.clone());
    wait::until(
        "the promoted node mirrored in the tenant",
        PHASE_LIMIT,
        || async { tenant_nodes.get_opt(NODE).await.ok()? },
    )
    .await?;
    let (host_cache, host_watch) = pod_cache(admin.clone(), &workload_namespace);
    let (tenant_cache, tenant_watch) = pod_cache(tenant_admin.clone(), APP);
    host_cache.wait_until_ready().await?;
    tenant_cache.wait_until_ready().await?;
    // A few idle passes, so the baseline is the process at rest with its node in sync. A
    // fixed span: the figures measured are of the process over time, and being at rest
    // has no moment of its own to wait for.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, idle_rss, idle_cpu) = process_figures(pid);
    let setup = began.elapsed();

    // Up: create every tenant pod at once; watch both sides.
    let host_requests_before = request_totals(&admin).await;
    let tenant_requests_before = request_totals(&tenant_admin).await;
    let tenant_pods: Api<Pod> = Api::namespaced(tenant_admin.clone(), APP);
    let start = Instant::now();
    let creator = {
        let api = tenant_pods.clone();
        tokio::spawn(async move {
            let failures = futures::stream::iter(0..pods)
                .map(|index| {
                    let api = api.clone();
                    async move {
                        let pod = tenant_pod(index).ok()?;
                        api.create(&PostParams::default(), &pod).await.err()
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .filter_map(|failure| async move { failure })
                .collect::<Vec<_>>()
                .await;
            (Instant::now(), failures)
        })
    };
    let down = until("every host pod created", || {
        let count = host_cache.state().iter().filter(|p| is_ours(p)).count();
        (count >= pods).then(|| start.elapsed())
    })
    .await?;
    let up = until("every tenant pod Running with its host pod's IP", || {
        (reported(&tenant_cache, &host_cache) >= pods).then(|| start.elapsed())
    })
    .await?;
    let (created_at, failures) = creator.await?;
    let created_in = created_at.duration_since(start);
    if let Some(failure) = failures.first() {
        eprintln!("{} tenant creates failed, e.g. {failure}", failures.len());
    }
    let (_, up_rss, up_cpu) = process_figures(pid);
    let host_requests_up = request_totals(&admin).await;
    let tenant_requests_up = request_totals(&tenant_admin).await;

    // Steady state: a few periods with nothing to do. A fixed span: it is the window the
    // CPU and request figures are measured over, not a wait for something to happen.
    let quiet = Duration::from_secs(10);
    tokio::time::sleep(quiet).await;
    let (_, _, quiet_cpu) = process_figures(pid);
    let host_requests_quiet = request_totals(&admin).await;
    let tenant_requests_quiet = request_totals(&tenant_admin).await;

    // Down: delete every tenant pod; wait for both sides to be empty.
    let start = Instant::now();
    futures::stream::iter(0..pods)
        .map(|index| {
            let api = tenant_pods.clone();
            async move {
                let _deleted = api
                    .delete(&format!("pod-{index:05}"), &DeleteParams::default())
                    .await;
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    let delete_requests = start.elapsed();
    let host_empty = until("every host pod gone", || {
        (!host_cache.state().iter().any(|p| is_ours(p))).then(|| start.elapsed())
    })
    .await?;
    let both_empty = until("every tenant pod gone", || {
        (tenant_cache.state().is_empty() && !host_cache.state().iter().any(|p| is_ours(p)))
            .then(|| start.elapsed())
    })
    .await?;
    let (peak, end_rss, end_cpu) = process_figures(pid);
    let host_requests_end = request_totals(&admin).await;
    let tenant_requests_end = request_totals(&tenant_admin).await;
    let exited = clustertree.0.try_wait()?;

    let secs = |d: Duration| d.as_secs_f64();
    println!();
    println!(
        "vc-clustertree, {pods} tenant pods, --period {period} (setup {:.1}s)",
        secs(setup)
    );
    println!("{:<58} {:>10}", "figure", "value");
    println!(
        "{:<58} {:>9.2}s",
        "tenant creates done (32 concurrent)",
        secs(created_in)
    );
    println!("{:<58} {:>9.2}s", "down: every host pod exists", secs(down));
    println!(
        "{:<58} {:>9.2}s",
        "up: every tenant pod Running with its host pod's IP",
        secs(up)
    );
    println!(
        "{:<58} {:>9.2}s",
        "tenant deletes done (32 concurrent)",
        secs(delete_requests)
    );
    println!(
        "{:<58} {:>9.2}s",
        "delete: every host pod gone",
        secs(host_empty)
    );
    println!(
        "{:<58} {:>9.2}s",
        "delete: both sides empty",
        secs(both_empty)
    );
    println!(
        "{:<58} {:>8.1} MiB",
        "RSS idle (node mirrored, no pods)", idle_rss
    );
    println!("{:<58} {:>8.1} MiB", "RSS with every pod up", up_rss);
    println!("{:<58} {:>8.1} MiB", "RSS at end", end_rss);
    println!("{:<58} {:>8.1} MiB", "peak RSS (VmHWM)", peak);
    println!("{:<58} {:>9.2}s", "CPU until up", up_cpu - idle_cpu);
    println!(
        "{:<58} {:>9.2}s",
        format!("CPU idle with every pod up ({}s)", quiet.as_secs()),
        quiet_cpu - up_cpu
    );
    println!("{:<58} {:>9.2}s", "CPU deleting", end_cpu - quiet_cpu);
    println!("{:<58} {:>9.2}s", "CPU total (process lifetime)", end_cpu);
    let met = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "goal (1,000 pods): up < 30 s: {}; peak RSS < 64 MiB: {}",
        met(up < Duration::from_secs(30)),
        met(peak < 64.0)
    );
    for (side, phases) in [
        (
            "host",
            [
                ("up", &host_requests_before, &host_requests_up),
                ("idle", &host_requests_up, &host_requests_quiet),
                ("delete", &host_requests_quiet, &host_requests_end),
            ],
        ),
        (
            "tenant",
            [
                ("up", &tenant_requests_before, &tenant_requests_up),
                ("idle", &tenant_requests_up, &tenant_requests_quiet),
                ("delete", &tenant_requests_quiet, &tenant_requests_end),
            ],
        ),
    ] {
        for (phase, before, after) in phases {
            let rows = delta(before, after);
            let total: u64 = rows.iter().map(|(_, n)| n).sum();
            let top: Vec<String> = rows
                .iter()
                .take(6)
                .map(|(key, n)| format!("{key} {n}"))
                .collect();
            println!(
                "{side} requests, {phase:<6} (all clients) {total:>7}: {}",
                top.join(", ")
            );
        }
    }
    if let Some(status) = exited {
        eprintln!("vc-clustertree exited early ({status})");
    }
    println!("vc-clustertree log: {}", log_path.display());
    host_watch.abort();
    tenant_watch.abort();
    drop(clustertree);
    drop(kubelets);
    drop(fleet);
    Ok(())
}
