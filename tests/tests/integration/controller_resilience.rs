//! The controller survives crashes and a misbehaving apiserver: killed after each step of
//! the chain and restarted, or fed 500s, 429s and cut watches, the tenant still
//! converges, with one copy of each object and the CA it got first.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use vc_api::constants::{NODE_OWNER_NAME_LABEL, TENANT_NAME_LABEL, admin_kubeconfig_secret_name};
use vc_test_apiserver::FaultMatch;

use crate::controller_common::{CONTROLLER_USER, Harness};

const TIMEOUT: Duration = Duration::from_secs(90);

/// Names of the tenant's Secrets, Services, StatefulSets and Deployments.
async fn tenant_objects(harness: &Harness, namespace: &str, name: &str) -> Vec<String> {
    let params = ListParams::default().labels(&format!("{TENANT_NAME_LABEL}={name}"));
    let client = harness.admin.clone();
    let mut names = Vec::new();
    for secret in Api::<Secret>::namespaced(client.clone(), namespace)
        .list(&params)
        .await
        .unwrap()
    {
        names.push(format!("Secret/{}", secret.name_any()));
    }
    for service in Api::<Service>::namespaced(client.clone(), namespace)
        .list(&params)
        .await
        .unwrap()
    {
        names.push(format!("Service/{}", service.name_any()));
    }
    for set in Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .list(&params)
        .await
        .unwrap()
    {
        names.push(format!("StatefulSet/{}", set.name_any()));
    }
    for deployment in Api::<Deployment>::namespaced(client, namespace)
        .list(&params)
        .await
        .unwrap()
    {
        names.push(format!("Deployment/{}", deployment.name_any()));
    }
    names.sort();
    names
}

async fn ca_certificates(
    harness: &Harness,
    namespace: &str,
    name: &str,
) -> BTreeMap<String, Vec<u8>> {
    let secrets: Api<Secret> = Api::namespaced(harness.admin.clone(), namespace);
    let mut cas = BTreeMap::new();
    for suffix in ["ca", "etcd-ca", "front-proxy-ca"] {
        let secret_name = format!("{name}-{suffix}");
        if let Some(secret) = secrets.get_opt(&secret_name).await.unwrap()
            && let Some(cert) = secret.data.as_ref().and_then(|data| data.get("tls.crt"))
        {
            cas.insert(secret_name, cert.0.clone());
        }
    }
    cas
}

/// One step of the chain, observed from outside.
async fn step_done(harness: &Harness, step: usize) -> bool {
    let client = harness.admin.clone();
    let vc = harness.vcs("crash").get("tenant").await.unwrap();
    match step {
        0 => !vc.finalizers().is_empty(),
        1 => Api::<Node>::all(client)
            .get("node-0")
            .await
            .unwrap()
            .labels()
            .contains_key(NODE_OWNER_NAME_LABEL),
        2 => Api::<Secret>::namespaced(client, "crash")
            .get_opt("tenant-ca")
            .await
            .unwrap()
            .is_some(),
        3 => Api::<StatefulSet>::namespaced(client, "crash")
            .get_opt("tenant-etcd")
            .await
            .unwrap()
            .is_some(),
        4 => Api::<Deployment>::namespaced(client, "crash")
            .get_opt("tenant-apiserver")
            .await
            .unwrap()
            .is_some(),
        5 => Api::<Deployment>::namespaced(client, "crash")
            .get_opt("tenant-scheduler")
            .await
            .unwrap()
            .is_some(),
        6 => vc.spec.kubeconfig.is_some(),
        7 => Api::<Deployment>::namespaced(client, "crash")
            .get_opt("tenant-clustertree")
            .await
            .unwrap()
            .is_some(),
        _ => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_each_step_the_tenant_converges_without_duplicates_or_a_new_ca() {
    let mut harness = Harness::start(2, true).await;
    harness.create_vc("crash", "tenant", &["node-0"]).await;
    let mut first_cas = BTreeMap::new();
    for step in 0..8 {
        harness
            .eventually(TIMEOUT, &format!("step {step} of the chain"), || async {
                step_done(&harness, step).await.then_some(())
            })
            .await;
        // A hard kill: in-flight reconciles are dropped wherever they are.
        harness.kill_controller();
        let cas = ca_certificates(&harness, "crash", "tenant").await;
        for (secret, cert) in &cas {
            let first = first_cas
                .entry(secret.clone())
                .or_insert_with(|| cert.clone());
            assert_eq!(
                first, cert,
                "{secret} changed after a restart (step {step})"
            );
        }
        harness.start_controller().await;
    }
    harness
        .wait_for_phase("crash", "tenant", "Completed", TIMEOUT)
        .await;
    let cas = ca_certificates(&harness, "crash", "tenant").await;
    assert_eq!(cas.len(), 3);
    assert_eq!(cas, first_cas, "no CA may be regenerated across restarts");

    let objects = tenant_objects(&harness, "crash", "tenant").await;
    let unique: std::collections::BTreeSet<&String> = objects.iter().collect();
    assert_eq!(
        unique.len(),
        objects.len(),
        "duplicate objects: {objects:?}"
    );
    for expected in [
        "Deployment/tenant-apiserver",
        "Deployment/tenant-clustertree",
        "Deployment/tenant-controller-manager",
        "Deployment/tenant-scheduler",
        "StatefulSet/tenant-etcd",
        "Service/tenant-apiserver",
        "Service/tenant-etcd",
        "Service/tenant-etcd-peer",
    ] {
        assert!(
            objects.iter().any(|o| o == expected),
            "{expected} missing from {objects:?}"
        );
    }
    let admin_secret = format!("Secret/{}", admin_kubeconfig_secret_name("tenant"));
    assert!(objects.contains(&admin_secret), "{admin_secret} missing");
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_throttling_and_cut_watches_still_converge() {
    let harness = Harness::start(2, true).await;
    let faults = harness.server.faults().clone();
    let controller = |verb: &str| FaultMatch {
        verb: Some(verb.to_owned()),
        resource: None,
        user: Some(CONTROLLER_USER.to_owned()),
    };
    faults.fail_next(8, controller("patch"));
    faults.fail_next(4, controller("create"));
    faults.throttle_next(6, 1, controller("patch"));
    faults.fail_next(3, controller("get"));
    harness
        .create_vc("faulty", "tenant", &["node-0", "node-1"])
        .await;

    let cutter = {
        let faults = faults.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                faults.cut_watches();
            }
        })
    };
    let vc = harness
        .wait_for_phase("faulty", "tenant", "Completed", TIMEOUT)
        .await;
    cutter.await.unwrap();
    assert_eq!(vc.status.unwrap().promoted_nodes, ["node-0", "node-1"]);
    let errors = harness.metrics.encode().unwrap();
    assert!(
        errors.contains("vc_controller_reconcile_errors_total{step="),
        "the injected failures must show in the error metric:\n{errors}"
    );

    // And once settled, cut watches (re-lists) cause no writes either.
    harness.wait_until_settled(Duration::from_secs(10)).await;
    faults.cut_watches();
    harness
        .assert_no_writes_over(5, Duration::from_secs(10))
        .await;
    harness.shutdown().await;
}
