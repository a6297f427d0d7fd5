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

/// Labels namespace `team-p` with `level`, then changes VirtualCluster `tight` (`touch`)
/// so the controller looks again: a namespace label is read on each reconcile.
async fn label_namespace(harness: &Harness, level: &str, touch: &str) {
    let patch = |value: serde_json::Value| Patch::Merge(value);
    Api::<Namespace>::all(harness.admin.clone())
        .patch(
            "team-p",
            &PatchParams::default(),
            &patch(json!({"metadata": {"labels": {WORKLOAD_POD_SECURITY_LABEL: level}}})),
        )
        .await
        .unwrap();
    harness
        .vcs("team-p")
        .patch(
            "tight",
            &PatchParams::default(),
            &patch(json!({"metadata": {"annotations": {"touch": touch}}})),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_namespace_label_sets_the_tenants_pod_security_level() {
    let harness = Harness::start(1, true).await;
    harness.create_vc("team-p", "tight", &[]).await;
    enforced(&harness, "team-p", "tight", "baseline").await;

    // The cluster admin tightens the namespace: the tenant follows.
    label_namespace(&harness, "restricted", "1").await;
    enforced(&harness, "team-p", "tight", "restricted").await;

    // A value that is no level keeps baseline.
    label_namespace(&harness, "lenient", "2").await;
    enforced(&harness, "team-p", "tight", "baseline").await;
}
