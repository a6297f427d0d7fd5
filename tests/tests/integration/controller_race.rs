//! 50 VirtualClusters created at once (no webhook) compete for 20 nodes: every node ends
//! with exactly one owner, every loser says who owns its node, and deleting a winner
//! lets a loser converge.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};
use vc_api::condition_types::NODES_PROMOTED;

use crate::controller_common::{Harness, condition, owner_of};

const CLUSTERS: usize = 50;
const NODES: usize = 20;
const NAMESPACE: &str = "race";

fn cluster_name(index: usize) -> String {
    format!("vc-{index:02}")
}

fn node_of(index: usize) -> String {
    format!("node-{}", index % NODES)
}

/// Node → owner (`NS/NAME`) as the Nodes' labels say.
async fn owners(harness: &Harness) -> BTreeMap<String, Option<String>> {
    let nodes: Api<Node> = Api::all(harness.admin.clone());
    nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .into_iter()
        .map(|node| (node.name_any(), owner_of(&node)))
        .collect()
}

/// Checks every listed node has one owner among the clusters listing it, and that every
/// other cluster listing it reports NodeConflict naming that owner.
async fn settled(harness: &Harness, alive: &[usize]) -> Option<BTreeMap<String, String>> {
    let owners = owners(harness).await;
    let mut winners = BTreeMap::new();
    for index in alive {
        let node = node_of(*index);
        let owner = owners.get(&node)?.clone()?;
        let listers: Vec<String> = alive
            .iter()
            .filter(|other| node_of(**other) == node)
            .map(|other| format!("{NAMESPACE}/{}", cluster_name(*other)))
            .collect();
        if !listers.contains(&owner) {
            return None;
        }
        winners.insert(node.clone(), owner.clone());
        let vc = harness
            .vcs(NAMESPACE)
            .get(&cluster_name(*index))
            .await
            .ok()?;
        let (status, reason, message) = condition(&vc, NODES_PROMOTED)?;
        let me = format!("{NAMESPACE}/{}", cluster_name(*index));
        if me == owner {
            if reason == "NodeConflict" {
                return None;
            }
        } else {
            let expected = format!("node {node:?} already belongs to VirtualCluster {owner}");
            if status != "False" || reason != "NodeConflict" || message != expected {
                return None;
            }
        }
    }
    Some(winners)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_clusters_race_for_twenty_nodes_and_each_node_gets_one_owner() {
    let started = std::time::Instant::now();
    let harness = Harness::start(NODES, false).await;
    harness.ensure_namespace(NAMESPACE).await;
    let creates = (0..CLUSTERS).map(|index| {
        let harness = &harness;
        async move {
            let node = node_of(index);
            harness
                .create_vc(NAMESPACE, &cluster_name(index), &[node.as_str()])
                .await
        }
    });
    futures::future::join_all(creates).await;

    let alive: Vec<usize> = (0..CLUSTERS).collect();
    let winners = harness
        .eventually(
            Duration::from_secs(120),
            "every node to have one owner and every loser to report NodeConflict",
            || settled(&harness, &alive),
        )
        .await;
    assert_eq!(winners.len(), NODES, "every contested node is claimed");
    eprintln!("settled after {:?}", started.elapsed());

    // Exactly one owner per node also means: no node carries a claim taint naming a
    // cluster other than its labelled owner.
    let nodes: Api<Node> = Api::all(harness.admin.clone());
    for node in nodes.list(&ListParams::default()).await.unwrap() {
        let owner = owner_of(&node).unwrap();
        let owner_name = owner.split('/').nth(1).unwrap().to_owned();
        let claim_taints: Vec<_> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.key == vc_api::constants::NODE_CLAIM_TAINT_KEY)
            .collect();
        assert_eq!(claim_taints.len(), 1, "node {}", node.name_any());
        assert_eq!(claim_taints[0].value.as_deref(), Some(owner_name.as_str()));
    }

    // Deleting the winner of node-0 hands node-0 to one of its losers.
    let winner = winners["node-0"].split('/').nth(1).unwrap().to_owned();
    let winner_index: usize = winner.trim_start_matches("vc-").parse().unwrap();
    harness
        .vcs(NAMESPACE)
        .delete(&winner, &DeleteParams::default())
        .await
        .unwrap();
    let alive: Vec<usize> = (0..CLUSTERS).filter(|i| *i != winner_index).collect();
    let winners_after = harness
        .eventually(
            Duration::from_secs(60),
            "a loser to take over node-0 after its winner was deleted",
            || settled(&harness, &alive),
        )
        .await;
    eprintln!("converged after the delete at {:?}", started.elapsed());
    let new_owner = &winners_after["node-0"];
    assert_ne!(new_owner, &winners["node-0"]);
    let new_owner_name = new_owner.split('/').nth(1).unwrap();
    let vc = harness.vcs(NAMESPACE).get(new_owner_name).await.unwrap();
    let (_, reason, message) = condition(&vc, NODES_PROMOTED).unwrap();
    assert_ne!(reason, "NodeConflict", "{message}");
    harness.shutdown().await;
}
