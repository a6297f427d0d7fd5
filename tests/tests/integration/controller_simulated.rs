//! The controller against vc-tests' independent simulators (kubelets with heartbeats,
//! workload readiness, a tenant API server serving the certificates the apiserver
//! Deployment mounts) and the real clustertree's node pass: what the controller renders
//! must work for simulators that only read the objects, not the controller's conventions.

use std::time::Duration;

use vc_api::condition_types::{CLUSTER_TREE_READY, CONTROL_PLANE_READY, NODES_PROMOTED, READY};

use crate::controller_common::{Harness, condition};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simulated_cluster_provisions_to_completed_and_stays_quiet() {
    let harness = Harness::start_simulated(3).await;
    harness
        .create_vc("team-s", "sim", &["node1", "node2"])
        .await;
    let vc = harness
        .wait_for_phase("team-s", "sim", "Completed", Duration::from_secs(90))
        .await;
    for type_ in [
        CONTROL_PLANE_READY,
        NODES_PROMOTED,
        CLUSTER_TREE_READY,
        READY,
    ] {
        let (status, reason, message) = condition(&vc, type_).unwrap();
        assert_eq!(status, "True", "{type_}: {reason}: {message}");
    }
    assert_eq!(vc.status.unwrap().promoted_nodes, ["node1", "node2"]);

    // Node heartbeats keep arriving; a settled tenant still costs no writes.
    harness.wait_until_settled(Duration::from_secs(10)).await;
    harness
        .assert_no_writes_over(8, Duration::from_secs(10))
        .await;
    harness.shutdown().await;
}
