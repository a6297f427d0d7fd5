//! Test API server benchmark: start-up time, then create/list/watch throughput with
//! 50,000 Nodes and 10,000 VirtualClusters loaded. Prints numbers; asserts nothing.
//!
//! `cargo bench -p vc-test-apiserver --bench apiserver` (set `VC_BENCH_NODES` / `VC_BENCH_VCS`
//! to change the sizes).

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use vc_test_apiserver::{TestApiServer, TestApiServerOptions};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn node(i: usize) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": format!("node{i}"), "labels": {"kubernetes.io/hostname": format!("node{i}"), "pool": (i % 10).to_string()}},
        "status": {"capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"}, "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }))
    .unwrap_or_default()
}

fn report(what: &str, n: usize, elapsed: Duration) {
    println!(
        "{what:<48} {n:>7} in {:>8.3}s  {:>9.0}/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64().max(1e-9)
    );
}

async fn create_all<F, Fut>(n: usize, concurrency: usize, make: F) -> Duration
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(make)
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    start.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let nodes = env_usize("VC_BENCH_NODES", 50_000);
    let vcs = env_usize("VC_BENCH_VCS", 10_000);

    let mut startups = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let s = TestApiServer::start(TestApiServerOptions::default())?;
        startups.push(start.elapsed());
        drop(s);
    }
    startups.sort();
    println!(
        "start-up (median of 5)                           {:>8.1}ms",
        startups[2].as_secs_f64() * 1000.0
    );

    let server = TestApiServer::start(TestApiServerOptions::default())?;
    let crd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../charts/kosmos-vc/crds/virtualclusters.kosmos.io.yaml"
    );
    server.install_yaml(crd).await?;
    let client = server.client().await?;
    let node_api: Api<Node> = Api::all(client.clone());
    let gvk = GroupVersionKind::gvk("kosmos.io", "v1alpha1", "VirtualCluster");
    let vc_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk(&gvk));
    let rss_before = rss_mib();

    let elapsed = create_all(nodes, 64, |i| {
        let api = node_api.clone();
        async move {
            let _created = api.create(&PostParams::default(), &node(i)).await;
        }
    })
    .await;
    report("create Node (64 concurrent)", nodes, elapsed);

    let vc_resource = ApiResource::from_gvk(&gvk);
    let elapsed = create_all(vcs, 64, |i| {
        let api = vc_api.clone();
        let resource = vc_resource.clone();
        async move {
            let obj: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
                "metadata": {"name": format!("vc{i}"), "namespace": "default"},
                "spec": {"promoteResources": {"resources": {"cpu": 4, "memory": "8Gi"}}},
            }))
            .unwrap_or_else(|_| DynamicObject::new("invalid", &resource));
            let _created = api.create(&PostParams::default(), &obj).await;
        }
    })
    .await;
    report("create VirtualCluster (64 concurrent)", vcs, elapsed);
    println!(
        "RSS after loading                                {:>8.0} MiB (+{:.0} MiB)",
        rss_mib(),
        rss_mib() - rss_before
    );

    let start = Instant::now();
    let all = node_api.list(&ListParams::default()).await?;
    report("list all Nodes, one page", all.items.len(), start.elapsed());

    let start = Instant::now();
    let mut params = ListParams::default().limit(500);
    let mut listed = 0;
    loop {
        let page = node_api.list(&params).await?;
        listed += page.items.len();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    report("list all Nodes, pages of 500", listed, start.elapsed());

    let start = Instant::now();
    let selected = node_api
        .list(&ListParams::default().labels("pool=3"))
        .await?;
    report(
        "list Nodes by label (10%)",
        selected.items.len(),
        start.elapsed(),
    );

    let start = Instant::now();
    let listed_vcs = vc_api.list(&ListParams::default()).await?;
    report(
        "list all VirtualClusters",
        listed_vcs.items.len(),
        start.elapsed(),
    );

    // Watch throughput: one watcher receives label patches of every tenth Node.
    let patches = nodes / 10;
    let mut watch = node_api
        .watch(
            &kube::api::WatchParams::default().labels("pool=7"),
            &all.metadata.resource_version.clone().unwrap_or_default(),
        )
        .await?
        .boxed();
    let start = Instant::now();
    let patcher = {
        let api = node_api.clone();
        tokio::spawn(async move {
            create_all(patches, 32, |k| {
                let api = api.clone();
                async move {
                    let patch = json!({"metadata": {"labels": {"touched": "yes"}}});
                    let _patched = api
                        .patch(
                            &format!("node{}", k * 10 + 7),
                            &PatchParams::default(),
                            &Patch::Merge(&patch),
                        )
                        .await;
                }
            })
            .await
        })
    };
    let mut received = 0;
    while received < patches {
        match tokio::time::timeout(Duration::from_secs(30), watch.try_next()).await {
            Ok(Ok(Some(_))) => received += 1,
            _ => break,
        }
    }
    let watch_elapsed = start.elapsed();
    let patch_elapsed = patcher.await?;
    report("patch Node labels (32 concurrent)", patches, patch_elapsed);
    report(
        "watch events delivered (label-selected)",
        received,
        watch_elapsed,
    );
    println!(
        "RSS at end                                       {:>8.0} MiB",
        rss_mib()
    );
    Ok(())
}
