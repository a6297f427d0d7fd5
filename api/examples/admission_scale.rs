//! Cost of the admission rules at the scale: 50,000 nodes and 10,000
//! VirtualClusters. Prints build time, memory, incremental update cost and the latency of
//! `validate` — the part of the webhook's answer that does not depend on HTTP or TLS.
//!
//! Run with `cargo run --release -p vc-api --example admission_scale`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use vc_api::VirtualCluster;
use vc_api::admission::{
    ClusterFacts, ClusterKey, Inventory, NodeFacts, Operation, Policy, Request, ResourceAmounts,
    validate,
};

const NODES: usize = 50_000;
const CLUSTERS: usize = 10_000;
const NODES_PER_CLUSTER: usize = 2;
const SAMPLES: usize = 20_000;
const GI: i128 = 1_024 * 1_024 * 1_024 * 1_000;

fn node_name(index: usize) -> String {
    format!("node-{index:05}")
}

fn node(index: usize) -> NodeFacts {
    NodeFacts {
        name: node_name(index),
        ready: !index.is_multiple_of(97),
        unschedulable: index.is_multiple_of(101),
        control_plane: index < 3,
        allocatable: ResourceAmounts::from_iter([
            ("cpu", 64_000),
            ("memory", 256 * GI),
            ("ephemeral-storage", 500 * GI),
            ("pods", 110_000),
            ("hugepages-2Mi", 0),
        ]),
        claimed_by: claim_of(index),
    }
}

/// The claim labels the controller wrote on the nodes each VirtualCluster lists.
fn claim_of(index: usize) -> Option<ClusterKey> {
    let cluster = index.checked_sub(3)? / NODES_PER_CLUSTER;
    (cluster < CLUSTERS).then(|| cluster_key(cluster))
}

fn cluster_key(index: usize) -> ClusterKey {
    ClusterKey::new(format!("team-{}", index % 500), format!("vc-{index}"))
}

fn cluster(index: usize) -> ClusterFacts {
    let first = 3 + index * NODES_PER_CLUSTER;
    ClusterFacts {
        key: cluster_key(index),
        nodes: (first..first + NODES_PER_CLUSTER).map(node_name).collect(),
        pooled: ResourceAmounts::from_iter([("cpu", 4_000), ("memory", 16 * GI)]),
    }
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    println!(
        "{label:<44} p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default(),
    );
}

fn timed(mut operation: impl FnMut(usize)) -> Vec<Duration> {
    (0..SAMPLES)
        .map(|sample| {
            let start = Instant::now();
            operation(sample);
            start.elapsed()
        })
        .collect()
}

fn request_object(nodes: &[String]) -> VirtualCluster {
    let mut object = VirtualCluster::new("candidate", Default::default());
    object.metadata.namespace = Some("team-new".into());
    object.spec.promote_resources.nodes = nodes.to_vec();
    object.spec.promote_resources.resources =
        BTreeMap::from([("cpu".into(), 2.into()), ("memory".into(), "8Gi".into())]);
    object
}

fn main() {
    let rss_before = rss_kib();
    let start = Instant::now();
    let mut inventory = Inventory::new();
    for index in 0..NODES {
        inventory.upsert_node(node(index));
    }
    for index in 0..CLUSTERS {
        inventory.upsert_cluster(cluster(index));
    }
    let build = start.elapsed();
    let rss_after = rss_kib();
    println!(
        "inventory: {} nodes, {} VirtualClusters built in {build:.2?}",
        inventory.node_count(),
        inventory.cluster_count()
    );
    match (rss_before, rss_after) {
        (Some(before), Some(after)) => println!(
            "RSS: {before} KiB before, {after} KiB after, inventory ≈ {} KiB ({:.0} B per node)",
            after.saturating_sub(before),
            after.saturating_sub(before) as f64 * 1024.0 / NODES as f64
        ),
        _ => println!("RSS: /proc/self/status unavailable"),
    }
    println!(
        "pool cpu {} milli, reserved cpu {} milli",
        inventory.pool_capacity().get("cpu"),
        inventory.reserved().get("cpu")
    );

    let policy = Policy::default();
    let free_nodes: Vec<String> = (NODES - 10..NODES).map(node_name).collect();
    let taken_nodes: Vec<String> = vec![node_name(3), node_name(NODES - 1)];
    let allowed = request_object(&free_nodes[..2]);
    let conflicting = request_object(&taken_nodes);
    let create = |object| Request {
        operation: Operation::Create,
        username: "alice",
        object: Some(object),
        old_object: None,
    };
    let allowed_request = create(&allowed);
    let conflicting_request = create(&conflicting);
    report(
        "validate CREATE, 2 nodes + pool (allowed)",
        timed(|_| {
            black_box(validate(black_box(&allowed_request), &inventory, &policy));
        }),
    );
    report(
        "validate CREATE, node conflict (denied)",
        timed(|_| {
            black_box(validate(
                black_box(&conflicting_request),
                &inventory,
                &policy,
            ));
        }),
    );
    let wide = request_object(&free_nodes);
    let wide_request = create(&wide);
    report(
        "validate CREATE, 10 nodes + pool",
        timed(|_| {
            black_box(validate(black_box(&wide_request), &inventory, &policy));
        }),
    );
    report(
        "Inventory::upsert_node (facts change)",
        timed(|sample| {
            let mut facts = node(3 + sample % (NODES - 3));
            facts.ready = sample % 2 == 0;
            inventory.upsert_node(facts);
        }),
    );
    report(
        "Inventory::upsert_cluster (moves one node)",
        timed(|sample| {
            let index = sample % CLUSTERS;
            let mut facts = cluster(index);
            if sample % 2 == 0 {
                facts.nodes[0] = node_name(NODES - 1 - index % 10);
            }
            inventory.upsert_cluster(facts);
        }),
    );
}
