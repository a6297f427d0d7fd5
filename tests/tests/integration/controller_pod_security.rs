//! A tenant's Pod Security level is the cluster admin's choice, made on the namespace of
//! the VirtualCluster (`vc.kosmos.io/workload-pod-security`), never in its spec: the
//! controller against the test API server.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use vc_api::constants::tenant_workload_namespace;
use vc_api::pod_security::WORKLOAD_POD_SECURITY_LABEL;

use crate::controller_common::Harness;

const TIMEOUT: Duration = Duration::from_secs(90);

/// The enforce label of `workload` and the clustertree's `--pod-security`, once both are
/// `level`.
async fn enforced(harness: &Harness, namespace: &str, name: &str, level: &str) {
    let namespaces: Api<Namespace> = Api::all(harness.admin.clone());
    let deployments: Api<Deployment> = Api::namespaced(harness.admin.clone(), namespace);
    let workload = tenant_workload_namespace(namespace, name);
    let flag = format!("--pod-security={level}");
    harness
        .eventually(
            TIMEOUT,
            &format!("{workload} and the clustertree at {level}"),
            || {
                let (namespaces, deployments, workload, flag) = (
                    namespaces.clone(),
                    deployments.clone(),
                    workload.clone(),
                    flag.clone(),
                );
                async move {
                    let labels = namespaces.get_opt(&workload).await.ok()??.metadata.labels?;
                    let deployment = deployments
                        .get_opt(&format!("{name}-clustertree"))
                        .await
                        .ok()??;
                    let args = deployment
                        .spec?
                        .template
                        .spec?
                        .containers
                        .first()?
                        .args
                        .clone()?;
                    (labels
                        .get("pod-security.kubernetes.io/enforce")
                        .map(String::as_str)
                        == Some(level)
                        && args.contains(&flag))
                    .then_some(())
                }
            },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_namespace_label_sets_the_tenants_pod_security_level() {
    let harness = Harness::start(1, true).await;
    harness.create_vc("team-p", "tight", &[]).await;
    enforced(&harness, "team-p", "tight", "baseline").await;

    // The cluster admin tightens the namespace: the tenant follows.
    let namespaces: Api<Namespace> = Api::all(harness.admin.clone());
    let label = |value: &str| {
        Patch::Merge(json!({"metadata": {"labels": {WORKLOAD_POD_SECURITY_LABEL: value}}}))
    };
    namespaces
        .patch("team-p", &PatchParams::default(), &label("restricted"))
        .await
        .unwrap();
    // A change of the VirtualCluster makes the controller look again.
    harness
        .vcs("team-p")
        .patch(
            "tight",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"touch": "1"}}})),
        )
        .await
        .unwrap();
    enforced(&harness, "team-p", "tight", "restricted").await;

    // A value that is no level keeps baseline.
    namespaces
        .patch("team-p", &PatchParams::default(), &label("lenient"))
        .await
        .unwrap();
    harness
        .vcs("team-p")
        .patch(
            "tight",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"touch": "2"}}})),
        )
        .await
        .unwrap();
    enforced(&harness, "team-p", "tight", "baseline").await;
}
