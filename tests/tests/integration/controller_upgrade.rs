//! A kubernetesVersion bump rolls the apiserver before controller-manager and scheduler
//! (etcd's image follows its own flag), shows `Updating` meanwhile, and keeps the CA.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::controller_common::Harness;

const TIMEOUT: Duration = Duration::from_secs(60);

async fn image(deployments: &Api<Deployment>, name: &str) -> String {
    let deployment = deployments.get(name).await.unwrap();
    deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn version_bump_rolls_the_apiserver_first_then_the_rest() {
    let harness = Harness::start(1, true).await;
    harness.create_vc("up", "tenant", &["node-0"]).await;
    harness
        .wait_for_phase("up", "tenant", "Completed", TIMEOUT)
        .await;
    let deployments: Api<Deployment> = Api::namespaced(harness.admin.clone(), "up");
    let secrets: Api<Secret> = Api::namespaced(harness.admin.clone(), "up");
    let ca_before = secrets.get("tenant-ca").await.unwrap().data;
    let old_scheduler = image(&deployments, "tenant-scheduler").await;
    assert!(old_scheduler.ends_with(":v1.33.4"), "{old_scheduler}");

    // The new apiserver will not finish rolling out until released.
    harness
        .held
        .lock()
        .unwrap()
        .insert("up/tenant-apiserver".to_owned());
    let patch = json!({"spec": {"kubernetesVersion": "v1.34.1"}});
    harness
        .vcs("up")
        .patch("tenant", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    harness
        .eventually(TIMEOUT, "the apiserver to get v1.34.1", || async {
            image(&deployments, "tenant-apiserver")
                .await
                .ends_with(":v1.34.1")
                .then_some(())
        })
        .await;
    harness
        .wait_for_phase("up", "tenant", "Updating", TIMEOUT)
        .await;
    // Over several resyncs (400 ms each) while the apiserver is held back: an early
    // rollout is what must not happen, so the window is the assertion.
    vc_tests::wait::throughout(
        "the scheduler and the controller-manager to wait for the apiserver to roll out",
        Duration::from_millis(1500),
        || async {
            let scheduler = image(&deployments, "tenant-scheduler").await;
            let controller_manager = image(&deployments, "tenant-controller-manager").await;
            if scheduler == old_scheduler && controller_manager.ends_with(":v1.33.4") {
                Ok(())
            } else {
                Err(format!(
                    "scheduler {scheduler}, controller-manager {controller_manager}"
                ))
            }
        },
    )
    .await
    .unwrap();

    harness.held.lock().unwrap().clear();
    harness
        .eventually(
            TIMEOUT,
            "controller-manager and scheduler at v1.34.1",
            || async {
                let scheduler = image(&deployments, "tenant-scheduler").await;
                let manager = image(&deployments, "tenant-controller-manager").await;
                (scheduler.ends_with(":v1.34.1") && manager.ends_with(":v1.34.1")).then_some(())
            },
        )
        .await;
    harness
        .wait_for_phase("up", "tenant", "Completed", TIMEOUT)
        .await;
    assert_eq!(
        secrets.get("tenant-ca").await.unwrap().data,
        ca_before,
        "an upgrade never touches the CA"
    );
    harness.shutdown().await;
}
