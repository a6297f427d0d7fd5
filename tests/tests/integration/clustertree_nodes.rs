//! The real `vc-clustertree` process between two real kube-apiservers (a host and a
//! tenant): under nothing but the host RBAC of a clustertree (its VirtualCluster, and
//! `get` on the nodes it claimed), it mirrors exactly the claimed nodes and the pool
//! into the tenant, keeps their Leases, follows a host node to NotReady, and removes a
//! node once it is returned, after the tenant pods bound to it. The host's kubelets are
//! simulated; everything else is real.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt as _};
use serde_json::json;
use vc_api::VirtualCluster;
use vc_api::constants::{NODE_CLAIM_TAINT_KEY, POOL_NODE_NAME};
use vc_simulation::nodes::{FleetOptions, NodeFleet, default_nodes};
use vc_test_apiserver::envtest::{self, EnvtestOptions, SKIP_MESSAGE};
use vc_tests::clustertree::{ControlPlanes, Launch};

use crate::clustertree_pods::{Pool, World, pod, running, standing_for};
use crate::support::eventually::eventually;

const WAIT: Duration = Duration::from_secs(30);
pub(crate) use vc_tests::clustertree::{NAMESPACE, Process, TENANT};

/// `vc-clustertree` built beside this test executable (target/debug).
pub(crate) fn clustertree_binary() -> PathBuf {
    vc_tests::clustertree::binary().unwrap()
}

pub(crate) async fn claim(host: &kube::Client, node: &str, uid: &str, claimed: bool) {
    vc_tests::clustertree::claim(host, node, uid, claimed)
        .await
        .unwrap();
}

/// What the controller grants a tenant's clustertree on the host: its VirtualCluster,
/// and read access to exactly the nodes it claimed.
pub(crate) fn clustertree_rbac(nodes: &[&str]) -> Vec<serde_json::Value> {
    vc_tests::clustertree::host_rbac(nodes)
}

pub(crate) fn kubectl_apply(kubeconfig: &std::path::Path, manifest: &str) {
    vc_tests::clustertree::kubectl_apply(kubeconfig, manifest).unwrap();
}

fn ready(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clustertree_mirrors_exactly_the_claimed_nodes_and_the_pool() {
    let Some(assets) = envtest::assets() else {
        assert!(!envtest::must_run_real(), "CI is set: {SKIP_MESSAGE}");
        eprintln!("{SKIP_MESSAGE}");
        return;
    };
    let ControlPlanes {
        host,
        tenant,
        admin,
        tenant_admin,
    } = ControlPlanes::start(
        &assets,
        EnvtestOptions::default(),
        EnvtestOptions::default(),
    )
    .await
    .unwrap();
    vc_tests::clustertree::install_crd(host.kubeconfig_path()).unwrap();
    let fleet = NodeFleet::start(admin.clone(), default_nodes(3), FleetOptions::default())
        .await
        .unwrap();
    let virtual_clusters: Api<VirtualCluster> = Api::namespaced(admin.clone(), NAMESPACE);
    let created = vc_tests::clustertree::create_virtual_cluster(
        &admin,
        json!({"kubernetesVersion": "v1.33.4",
               "promoteResources": {"nodes": ["node1", "node2"], "resources": {"cpu": 2, "memory": "4Gi"}}}),
    )
    .await
    .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    claim(&admin, "node1", &uid, true).await;
    claim(&admin, "node2", &uid, true).await;
    for object in clustertree_rbac(&["node1", "node2"]) {
        kubectl_apply(host.kubeconfig_path(), &object.to_string());
    }
    let identity = host
        .kubeconfig_for(vc_tests::clustertree::USER, &[])
        .unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let _clustertree = Launch::new(clustertree_binary(), &identity, tenant.kubeconfig_path())
        .period("0.3s")
        .spawn(log.reopen().unwrap())
        .unwrap();
    let log_text = || std::fs::read_to_string(log.path()).unwrap_or_default();
    let tenant_nodes: Api<Node> = Api::all(tenant_admin.clone());
    let names = |list: Vec<Node>| -> Vec<String> {
        let mut names: Vec<String> = list.into_iter().filter_map(|n| n.metadata.name).collect();
        names.sort();
        names
    };
    let expected = ["node1", "node2", POOL_NODE_NAME];
    let seen = eventually(WAIT, "node1, node2 and the pool in the tenant", || async {
        let list = tenant_nodes.list(&Default::default()).await.ok()?;
        let seen = names(list.items);
        (seen == expected).then_some(seen)
    })
    .await;
    assert_eq!(seen, expected, "{}", log_text());

    let host_node1 = Api::<Node>::all(admin.clone()).get("node1").await.unwrap();
    let node1 = tenant_nodes.get("node1").await.unwrap();
    assert_eq!(
        node1.status.as_ref().unwrap().allocatable,
        host_node1.status.as_ref().unwrap().allocatable
    );
    let taints = node1
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    assert!(
        taints.iter().all(|t| t.key != NODE_CLAIM_TAINT_KEY),
        "the claim taint is the host's business: {taints:?}"
    );
    assert_eq!(ready(&node1).as_deref(), Some("True"));
    let pool = tenant_nodes.get(POOL_NODE_NAME).await.unwrap();
    assert_eq!(
        pool.status.unwrap().capacity.unwrap()["cpu"].0,
        "2",
        "the pool is the pooled share"
    );
    let leases: Api<Lease> = Api::namespaced(tenant_admin.clone(), "kube-node-lease");
    let first = leases.get("node1").await.unwrap().spec.unwrap().renew_time;
    eventually(WAIT, "node1's Lease to be renewed", || async {
        let now = leases.get("node1").await.ok()?.spec?.renew_time;
        (now != first).then_some(())
    })
    .await;

    fleet.set_ready("node2", false).await.unwrap();
    eventually(
        WAIT,
        "tenant node2 to follow the host to NotReady",
        || async {
            let node = tenant_nodes.get("node2").await.ok()?;
            (ready(&node).as_deref() != Some("True")).then_some(())
        },
    )
    .await;

    virtual_clusters
        .patch(
            TENANT,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"promoteResources": {"nodes": ["node1"]}}})),
        )
        .await
        .unwrap();
    claim(&admin, "node2", &uid, false).await;
    eventually(WAIT, "returned node2 to leave the tenant", || async {
        let list = tenant_nodes.list(&Default::default()).await.ok()?;
        (names(list.items) == ["node1", POOL_NODE_NAME]).then_some(())
    })
    .await;
    // A node the tenant's own admin made is none of vc-clustertree's business.
    let own: Node = serde_json::from_value(json!({"metadata": {"name": "tenant-made"}})).unwrap();
    tenant_nodes
        .create(&PostParams::default(), &own)
        .await
        .unwrap();
    // Over three periods a deletion would have happened; a deletion is what must not
    // happen, so the window is the assertion.
    vc_tests::wait::throughout("tenant-made to stay", Duration::from_secs(1), || async {
        tenant_nodes.get_opt("tenant-made").await.unwrap()
    })
    .await
    .unwrap();
    drop(fleet);
}

/// A returned node's tenant pods go first, gracefully, their host pods with them; the
/// Node goes only once none remain, so no tenant pod is left bound to a vanished node
/// for the tenant's pod GC to delete without grace much later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_returned_node_loses_its_pods_first() {
    let Some(world) = World::start(Pool::default()).await else {
        return;
    };
    world
        .create_tenant_pods([pod("web", "node1", json!({}))])
        .await;
    let web = running(&world, "web").await;
    assert_eq!(standing_for(&world.host::<Pod>(), "web").await.len(), 1);
    let tenant_nodes: Api<Node> = Api::all(world.tenant_admin.clone());
    let node1 = tenant_nodes.get("node1").await.unwrap();

    let virtual_clusters: Api<VirtualCluster> = Api::namespaced(world.admin.clone(), NAMESPACE);
    let uid = virtual_clusters.get(TENANT).await.unwrap().uid().unwrap();
    virtual_clusters
        .patch(
            TENANT,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"promoteResources": {"nodes": []}}})),
        )
        .await
        .unwrap();
    claim(&world.admin, "node1", &uid, false).await;

    let tenant_pods = world.tenant_pods();
    let terminating = world
        .within("tenant pod web deleted gracefully", || async {
            let pod = tenant_pods.get_opt("web").await.ok()?;
            match pod {
                Some(pod) if pod.uid() == web.uid() => {
                    pod.metadata.deletion_timestamp.map(|_| true)
                }
                _ => Some(false),
            }
        })
        .await;
    if terminating {
        // Caught while terminating: its node must still stand.
        let node = tenant_nodes.get_opt("node1").await.unwrap();
        assert_eq!(
            node.and_then(|n| n.uid()),
            node1.uid(),
            "node1 went while its pod was terminating; {}",
            world.log_text()
        );
    }
    world
        .within("returned node1 to leave the tenant", || async {
            tenant_nodes
                .get_opt("node1")
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await;
    // The node went only after the pod: once it is gone, the pod is already.
    assert!(
        tenant_pods
            .get_opt("web")
            .await
            .unwrap()
            .is_none_or(|pod| pod.uid() != web.uid()),
        "tenant pod web outlived its node; {}",
        world.log_text()
    );
    assert!(standing_for(&world.host::<Pod>(), "web").await.is_empty());
    world.finish("real_returned_node_loses_its_pods_first");
}
