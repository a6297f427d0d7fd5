//! `/validate` at host scale: 50,000 nodes and 10,000 VirtualClusters in the caches,
//! driven over HTTPS by concurrent clients, against a parse-only baseline that does the
//! same TLS and JSON work but applies no rule: it parses each review into the same typed
//! VirtualCluster as the rules path (`metadata.managedFields` skipped alike), logs and
//! encodes the answer the same way, and admits, so the ratio measures the rules alone.
//!
//! Run with `cargo bench -p vc-webhook --bench validate`. Prints numbers; asserts nothing
//! about time. Goals: p50 and p99 ratio rules/baseline <= 1.05 in each of three runs
//! (issue 18), RSS <= 64 MiB.
//! Knobs: `VC_BENCH_RUNS` (measurements, each printed with its ratios and the load
//! average, default 3), `VC_BENCH_REQUESTS` (half the requests per handler and run,
//! default 20000), `VC_BENCH_ROUNDS` (alternating rounds a run is split into, default 10),
//! `VC_BENCH_CLIENTS` (default 16),
//! `VC_BENCH_CONTROL` (set: parse-only on both servers, to see the noise floor).
//!
//! The clients run in the servers' process and both saturate its cores, so a handler's
//! latency is in proportion to the CPU time a request costs, client included: a rule
//! costing a tenth of that shows as a ratio of 1.1 at p50 with no lock involved.

#[allow(
    dead_code,
    reason = "the test harness half of the support module serves the HTTPS tests only"
)]
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::net::TcpListener;
use vc_api::admission::{
    ClusterFacts, ClusterKey, Defaults, Inventory, NodeFacts, Policy, ResourceAmounts,
};
use vc_tests::bench::load_average;
use vc_webhook::metrics::{Endpoint, Metrics};
use vc_webhook::review::{Admission, Enforcement};
use vc_webhook::server::{Readiness, RunningServer, Webhook};
use vc_webhook::tls::{CertificatePaths, ReloadingCertificate, crypto_provider, server_config};

const NODES: usize = 50_000;
const CLUSTERS: usize = 10_000;
const NODES_PER_CLUSTER: usize = 2;
const GIB_MILLI: i128 = 1024 * 1024 * 1024 * 1000;

/// The validating CREATE request the apiserver sent for `vc-adm`, used as the template.
const TEMPLATE: &str = include_str!(
    "../tests/fixtures/admission-requests/002-validate-CREATE-virtualclusters-vc-adm.request.json"
);

fn node_name(index: usize) -> String {
    format!("node-{index:05}")
}

/// The inventory at host scale, with the RSS growth of its node and cluster halves.
fn build_inventory() -> (Inventory, u64, u64) {
    let mut inventory = Inventory::new();
    let before = rss_kib();
    for index in 0..NODES {
        let claimed_by = (index < CLUSTERS * NODES_PER_CLUSTER).then(|| {
            ClusterKey::new(
                format!("team-{}", index / NODES_PER_CLUSTER % 100),
                format!("vc-{}", index / NODES_PER_CLUSTER),
            )
        });
        inventory.upsert_node(NodeFacts {
            name: node_name(index),
            ready: true,
            unschedulable: false,
            control_plane: false,
            allocatable: ResourceAmounts::from_iter([
                ("cpu", 16_000),
                ("memory", 64 * GIB_MILLI),
                ("pods", 110_000),
            ]),
            claimed_by,
        });
    }
    let after_nodes = rss_kib();
    for cluster in 0..CLUSTERS {
        inventory.upsert_cluster(ClusterFacts {
            key: ClusterKey::new(format!("team-{}", cluster % 100), format!("vc-{cluster}")),
            nodes: (0..NODES_PER_CLUSTER)
                .map(|offset| node_name(cluster * NODES_PER_CLUSTER + offset))
                .collect(),
            pooled: ResourceAmounts::from_iter([("cpu", 2_000), ("memory", 4 * GIB_MILLI)]),
        });
    }
    let after_clusters = rss_kib();
    (
        inventory,
        after_nodes.saturating_sub(before),
        after_clusters.saturating_sub(after_nodes),
    )
}

/// Request bodies: new VirtualClusters asking for free nodes and some pooled capacity;
/// every tenth one asks for a node another tenant owns and is denied.
fn request_bodies(count: usize) -> anyhow::Result<Vec<Bytes>> {
    let template: Value = serde_json::from_str(TEMPLATE)?;
    (0..count)
        .map(|index| -> anyhow::Result<Bytes> {
            let mut review = template.clone();
            let name = format!("bench-{index}");
            let first_free = CLUSTERS * NODES_PER_CLUSTER
                + (index * 2) % (NODES - CLUSTERS * NODES_PER_CLUSTER - 1);
            let nodes = if index % 10 == 0 {
                vec![
                    node_name(first_free),
                    node_name(index % (CLUSTERS * NODES_PER_CLUSTER)),
                ]
            } else {
                vec![node_name(first_free), node_name(first_free + 1)]
            };
            review["request"]["uid"] = Value::from(format!("00000000-0000-0000-0000-{index:012}"));
            review["request"]["name"] = Value::from(name.clone());
            review["request"]["namespace"] = Value::from("bench");
            review["request"]["object"]["metadata"]["name"] = Value::from(name);
            review["request"]["object"]["metadata"]["namespace"] = Value::from("bench");
            review["request"]["object"]["spec"] = serde_json::json!({
                "kubernetesVersion": "v1.33.4",
                "promoteResources": { "nodes": nodes, "resources": { "cpu": "1", "memory": "2Gi" } }
            });
            Ok(Bytes::from(serde_json::to_vec(&review)?))
        })
        .collect()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Run {
    latencies: Vec<Duration>,
    elapsed: Duration,
    denied: usize,
}

async fn drive(
    server: &RunningServer,
    client: Arc<rustls::ClientConfig>,
    bodies: Arc<Vec<Bytes>>,
    requests: usize,
    clients: usize,
) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..clients {
        let client = Arc::clone(&client);
        let bodies = Arc::clone(&bodies);
        let addr = server.local_addr;
        tasks.push(tokio::spawn(async move {
            let mut connection = support::connect(addr, client).await?;
            let mut latencies = Vec::with_capacity(requests / clients + 1);
            let mut denied = 0;
            for index in (worker..requests).step_by(clients) {
                let body = bodies[index % bodies.len()].clone();
                let sent = Instant::now();
                let (status, answer) = connection.post("/validate?timeout=5s", body).await?;
                latencies.push(sent.elapsed());
                anyhow::ensure!(
                    status == 200,
                    "{status}: {}",
                    String::from_utf8_lossy(&answer)
                );
                if memchr_allowed_false(&answer) {
                    denied += 1;
                }
            }
            Ok::<_, anyhow::Error>((latencies, denied))
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    let mut denied = 0;
    for task in tasks {
        let (mut part, part_denied) = task.await??;
        latencies.append(&mut part);
        denied += part_denied;
    }
    Ok(Run {
        latencies,
        elapsed: started.elapsed(),
        denied,
    })
}

fn memchr_allowed_false(answer: &[u8]) -> bool {
    answer
        .windows(15)
        .any(|window| window == b"\"allowed\":false")
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

struct Summary {
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

fn summarize(label: &str, runs: &[Run]) -> Summary {
    let mut latencies: Vec<Duration> = runs
        .iter()
        .flat_map(|run| run.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    let elapsed: Duration = runs.iter().map(|run| run.elapsed).sum();
    let denied: usize = runs.iter().map(|run| run.denied).sum();
    let summary = Summary {
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
    };
    println!(
        "{label:<28} requests={:<7} denied={:<6} p50={:>8.1?} p99={:>8.1?} req/s={:>9.0}",
        latencies.len(),
        denied,
        summary.p50,
        summary.p99,
        summary.per_second
    );
    summary
}

/// The handlers without sockets: what the rules add per request in CPU time.
fn handler_only(rules: &Admission, baseline: &Admission, bodies: &[Bytes]) {
    let measure = |admission: &Admission| {
        let started = Instant::now();
        let rounds = 4;
        for _ in 0..rounds {
            for body in bodies {
                let answer = vc_webhook::review::answer(Endpoint::Validate, body, admission);
                std::hint::black_box(answer);
            }
        }
        started.elapsed() / (rounds * bodies.len()) as u32
    };
    // Interleaved, for the same reason as the HTTPS rounds.
    let (mut baseline_each, mut rules_each) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..5 {
        baseline_each += measure(baseline) / 5;
        rules_each += measure(rules) / 5;
    }
    println!(
        "handler only (no TLS/HTTP), mean per request: parse-only {baseline_each:.1?}, rules {rules_each:.1?} (+{:.1?})",
        rules_each.saturating_sub(baseline_each)
    );
}

/// One measurement: `rounds` alternating rounds of each handler, then both summarized.
async fn measure(
    rules_server: &RunningServer,
    baseline_server: &RunningServer,
    client: &Arc<rustls::ClientConfig>,
    bodies: &Arc<Vec<Bytes>>,
    requests: usize,
    rounds: usize,
    clients: usize,
) -> anyhow::Result<(Summary, Summary)> {
    let mut rules_runs = Vec::new();
    let mut baseline_runs = Vec::new();
    // Many short rounds, alternating which handler goes first: on a shared machine the
    // load of other processes changes from second to second, and long rounds let one
    // handler draw a quiet stretch and the other a busy one.
    let per_round = (2 * requests / rounds).max(clients);
    for round in 0..rounds {
        for rules_turn in [round % 2 == 1, round % 2 == 0] {
            let (server, runs) = if rules_turn {
                (rules_server, &mut rules_runs)
            } else {
                (baseline_server, &mut baseline_runs)
            };
            let run = drive(
                server,
                Arc::clone(client),
                Arc::clone(bodies),
                per_round,
                clients,
            );
            runs.push(run.await?);
        }
    }
    Ok((
        summarize("parse-only (TLS + JSON)", &baseline_runs),
        summarize("rules (50k nodes, 10k VCs)", &rules_runs),
    ))
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let requests = env_number("VC_BENCH_REQUESTS", 20_000);
    let clients = env_number("VC_BENCH_CLIENTS", 16).max(1);
    let rounds = env_number("VC_BENCH_ROUNDS", 10).max(1);
    let runs = env_number("VC_BENCH_RUNS", 3).max(1);
    let rss_start = rss_kib();

    let (inventory, nodes_kib, clusters_kib) = build_inventory();
    let rss_inventory = rss_kib();
    println!(
        "inventory: {} nodes, {} VirtualClusters; RSS {rss_start} KiB before, {rss_inventory} KiB after: cache ~{:.1} MiB (nodes {:.1} MiB, VirtualClusters {:.1} MiB)",
        inventory.node_count(),
        inventory.cluster_count(),
        rss_inventory.saturating_sub(rss_start) as f64 / 1024.0,
        nodes_kib as f64 / 1024.0,
        clusters_kib as f64 / 1024.0,
    );

    let pki = support::TestPki::new()?;
    let directory = tempfile::tempdir()?;
    let serving = pki.issue("vc-webhook-bench")?;
    let (cert, key) = serving.write_to(directory.path())?;
    let provider = crypto_provider();
    let certificate = Arc::new(ReloadingCertificate::load(
        CertificatePaths { cert, key },
        Arc::clone(&provider),
    )?);
    let tls = server_config(certificate, provider)?;

    // The A/A control runs the baseline on both servers: the ratios it prints are the
    // benchmark's own noise on this machine, the floor any real comparison stands on.
    let control = std::env::var_os("VC_BENCH_CONTROL").is_some();
    let rules = Arc::new(Webhook {
        admission: if control {
            Admission::ParseOnly
        } else {
            Admission::Enforce(Box::new(Enforcement {
                inventory: Arc::new(parking_lot::RwLock::new(inventory)),
                policy: Policy::default(),
                defaults: Defaults::default(),
            }))
        },
        metrics: Metrics::new(),
        readiness: Arc::new(Readiness::synced()),
        limits: vc_webhook::Limits::default(),
    });
    let baseline = Arc::new(Webhook {
        admission: Admission::ParseOnly,
        metrics: Metrics::new(),
        readiness: Arc::new(Readiness::synced()),
        limits: vc_webhook::Limits::default(),
    });
    let start = |webhook: Arc<Webhook>, tls: Arc<rustls::ServerConfig>| async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        anyhow::Ok(vc_webhook::spawn(listener, tls, webhook)?)
    };
    handler_only(
        &rules.admission,
        &baseline.admission,
        &request_bodies(1_000)?,
    );
    let rules_server = start(rules, Arc::clone(&tls)).await?;
    let baseline_server = start(baseline, tls).await?;

    let client = support::client_config(pki.ca_der())?;
    let probe = support::connect(rules_server.local_addr, Arc::clone(&client)).await?;
    assert_eq!(
        probe.server_cert, serving.cert_der,
        "the server presents the bench certificate"
    );
    drop(probe);
    let bodies = Arc::new(request_bodies(1_000)?);
    println!(
        "{clients} concurrent HTTPS clients, {runs} runs of {} requests per handler in {rounds} alternating rounds, body {} bytes",
        (2 * requests / rounds).max(clients) * rounds,
        bodies[1].len()
    );

    // Warm up both paths (TLS sessions, allocator, caches).
    drive(
        &rules_server,
        Arc::clone(&client),
        Arc::clone(&bodies),
        requests / 10,
        clients,
    )
    .await?;
    drive(
        &baseline_server,
        Arc::clone(&client),
        Arc::clone(&bodies),
        requests / 10,
        clients,
    )
    .await?;
    let mut worst = (0.0_f64, 0.0_f64);
    for run in 1..=runs {
        let load_before = load_average();
        let (baseline, rules) = measure(
            &rules_server,
            &baseline_server,
            &client,
            &bodies,
            requests,
            rounds,
            clients,
        )
        .await?;
        let p50_ratio = rules.p50.as_secs_f64() / baseline.p50.as_secs_f64().max(f64::EPSILON);
        let p99_ratio = rules.p99.as_secs_f64() / baseline.p99.as_secs_f64().max(f64::EPSILON);
        worst = (worst.0.max(p50_ratio), worst.1.max(p99_ratio));
        println!(
            "run {run}/{runs}: p50 ratio rules/parse-only {p50_ratio:.3}, p99 ratio {p99_ratio:.3} (goal: both <= 1.05); load average {load_before} before, {} after",
            load_average()
        );
    }
    println!(
        "worst of {runs} runs: p50 ratio {:.3}, p99 ratio {:.3} (goal: both <= 1.05 in each run)",
        worst.0, worst.1
    );
    let rss_end = rss_kib();
    println!(
        "RSS at the end: {:.1} MiB (goal <= 64 MiB; includes the benchmark's clients and request bodies)",
        rss_end as f64 / 1024.0
    );
    rules_server.stop().await;
    baseline_server.stop().await;
    Ok(())
}
