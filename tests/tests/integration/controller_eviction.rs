//! Finding 8 of issue 16: a node claimed with `NoSchedule` kept the pods already running
//! on it. With `--claimed-node-pods=evict` the controller evicts them through the real
//! kube-apiserver's Eviction API: pods bound to a node without a kubelet get a
//! `deletionTimestamp` (the kubelet would finish them), a pod its PodDisruptionBudget
//! protects is refused (computed by kube-controller-manager's disruption controller) and
//! reported, and pods that tolerate the claim stay.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use vc_api::VirtualCluster;
use vc_api::eviction::ClaimedNodePods;
use vc_controller::eviction::EvictionClient;
use vc_controller::runner::RunConfig;
use vc_test_apiserver::envtest::{EnvtestOptions, TestCluster};

use crate::controller_common::condition;
use crate::controller_volumes::{
    host_with_controller_manager, install_crd, spawn_controller, test_run_config,
};
use crate::support::eventually::eventually;

const NS: &str = "team-a";
const NAME: &str = "prod";
/// Where the host's own workloads run before the claim.
const SHOP: &str = "shop";
const NODE: &str = "node1";
const WAIT: Duration = Duration::from_secs(60);

async fn create<K>(api: Api<K>, object: serde_json::Value)
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.create(
        &PostParams::default(),
        &serde_json::from_value(object).unwrap(),
    )
    .await
    .unwrap();
}

/// Namespaces [`NS`] and [`SHOP`], the latter with the `default` ServiceAccount pods
/// need (kube-controller-manager may create it first).
async fn namespaces(client: &Client) {
    for namespace in [NS, SHOP] {
        create(
            Api::<Namespace>::all(client.clone()),
            json!({"metadata": {"name": namespace}}),
        )
        .await;
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), SHOP);
    let account = serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("creating {SHOP}/default: {error}"),
    }
}

/// A running pod of the host's, already bound to [`NODE`] (no scheduler, no kubelet).
fn bound_pod(name: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut pod = json!({
        "metadata": {"name": name, "namespace": SHOP, "labels": {"app": name}},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "busybox"}]},
    });
    if let (Some(pod), Some(extra)) = (pod.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            if let (Some(target), Some(value)) = (
                pod.get_mut(key).and_then(|v| v.as_object_mut()),
                value.as_object(),
            ) {
                target.extend(value.clone());
            }
        }
    }
    pod
}

/// Marks the pods `Running` (not Ready), as a kubelet would once their containers
/// start: the Eviction API ignores disruption budgets for pods still Pending, and the
/// disruption controller counts these as unhealthy.
async fn running(client: &Client, names: &[&str]) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), SHOP);
    for name in names {
        pods.patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    }
}

/// Starts the controller in-process with `mode`, evicting as the binary does (a client
/// that returns a 429 at once); stopped when the sender is dropped.
async fn start_controller(
    cluster: &TestCluster,
    mode: ClaimedNodePods,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let client = cluster.client().await.unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(cluster.kubeconfig_path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let eviction_client = EvictionClient::from_config(config).unwrap();
    spawn_controller(
        &client,
        RunConfig {
            claimed_node_pods: mode,
            eviction_client: Some(eviction_client),
            ..test_run_config()
        },
    )
}

async fn deleting(pods: &Api<Pod>, name: &str) -> bool {
    pods.get(name)
        .await
        .map(|pod| pod.metadata.deletion_timestamp.is_some())
        .unwrap_or(false)
}

/// The host before the claim: the CRD, the namespaces, [`NODE`] and `pods` Running on it.
async fn host_world(client: &Client, pods: &[(&str, serde_json::Value)]) {
    install_crd(client).await;
    namespaces(client).await;
    create(
        Api::<Node>::all(client.clone()),
        json!({"metadata": {"name": NODE}}),
    )
    .await;
    for (name, extra) in pods {
        create(
            Api::<Pod>::namespaced(client.clone(), SHOP),
            bound_pod(name, extra.clone()),
        )
        .await;
    }
    let names: Vec<&str> = pods.iter().map(|(name, _)| *name).collect();
    running(client, &names).await;
}

/// VirtualCluster `NS/NAME` claiming [`NODE`].
async fn create_virtual_cluster(client: &Client) -> Api<VirtualCluster> {
    let vcs: Api<VirtualCluster> = Api::namespaced(client.clone(), NS);
    vcs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {"promoteResources": {"nodes": [NODE]}}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    vcs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimed_node_pods_are_evicted_unless_a_budget_or_toleration_keeps_them() {
    let Some(cluster) = host_with_controller_manager(false).await else {
        return;
    };
    let client = cluster.client().await.unwrap();
    let tolerating = json!({"spec": {"tolerations": [
        {"key": vc_api::constants::NODE_CLAIM_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
    ]}});
    host_world(
        &client,
        &[
            ("web", json!({})),
            ("guarded", json!({})),
            ("tolerating", tolerating),
        ],
    )
    .await;
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), SHOP);
    create(
        budgets.clone(),
        json!({"metadata": {"name": "guarded"},
               "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}}),
    )
    .await;
    // The disruption controller has judged the budget: evictions of its pod are decided
    // on what it allows, not refused for a budget not yet processed.
    eventually(
        WAIT,
        "the disruption controller to process the budget",
        || {
            let budgets = budgets.clone();
            async move {
                let budget = budgets.get("guarded").await.ok()?;
                let status = budget.status?;
                (status.observed_generation? >= budget.metadata.generation?).then_some(())
            }
        },
    )
    .await;

    let (stop, controller) = start_controller(&cluster, ClaimedNodePods::Evict).await;
    let vcs = create_virtual_cluster(&client).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), SHOP);
    eventually(WAIT, "shop/web to be evicted from the claimed node", || {
        let pods = pods.clone();
        async move { deleting(&pods, "web").await.then_some(()) }
    })
    .await;
    let (status, reason, message) = eventually(
        WAIT,
        "ClaimedNodesDrained=False naming the budget that holds shop/guarded",
        || {
            let vcs = vcs.clone();
            async move {
                let vc = vcs.get(NAME).await.ok()?;
                condition(&vc, vc_api::condition_types::CLAIMED_NODES_DRAINED)
            }
        },
    )
    .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "EvictionBlocked")
    );
    assert!(
        message.contains("pod shop/guarded on node \"node1\"")
            && message.contains("disruption budget guarded"),
        "{message}"
    );
    // Retried with backoff, the budget still holds: neither it nor the toleration's pod
    // is touched. An eviction is what must not happen, so the window (a few backoffs) is
    // the assertion.
    vc_tests::wait::throughout(
        "shop/guarded and shop/tolerating to stay",
        Duration::from_secs(3),
        || async {
            if deleting(&pods, "guarded").await {
                Err("the budget was bypassed")
            } else if deleting(&pods, "tolerating").await {
                Err("a pod tolerating the claim was evicted")
            } else {
                Ok(())
            }
        },
    )
    .await
    .unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|event| event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(NAME))
        .filter_map(|event| event.reason.clone())
        .collect();
    assert!(
        reasons.iter().any(|reason| reason == "PodEvicted")
            && reasons.iter().any(|reason| reason == "EvictionBlocked"),
        "{reasons:?}"
    );

    // Once the budget is gone, a retry evicts the pod and the condition clears.
    budgets
        .delete("guarded", &Default::default())
        .await
        .unwrap();
    eventually(
        WAIT,
        "shop/guarded to be evicted once its budget is gone",
        || {
            let pods = pods.clone();
            async move { deleting(&pods, "guarded").await.then_some(()) }
        },
    )
    .await;
    eventually(WAIT, "ClaimedNodesDrained=True", || {
        let vcs = vcs.clone();
        async move {
            let vc = vcs.get(NAME).await.ok()?;
            let (status, _, _) = condition(&vc, vc_api::condition_types::CLAIMED_NODES_DRAINED)?;
            (status == "True").then_some(())
        }
    })
    .await;
    assert!(!deleting(&pods, "tolerating").await);
    drop(stop);
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
}

/// `keep`, the default: the claim leaves running pods alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimed_node_pods_are_kept_by_default() {
    let Some(cluster) = TestCluster::real_or_skip_with(EnvtestOptions::default())
        .await
        .expect("envtest starts")
    else {
        return;
    };
    let client = cluster.client().await.unwrap();
    host_world(&client, &[("web", json!({}))]).await;
    let (stop, controller) = start_controller(&cluster, ClaimedNodePods::default()).await;
    let vcs = create_virtual_cluster(&client).await;
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(WAIT, "node1 to be claimed", || {
        let nodes = nodes.clone();
        async move {
            let node = nodes.get(NODE).await.ok()?;
            node.labels()
                .contains_key(vc_api::constants::NODE_OWNER_NAME_LABEL)
                .then_some(())
        }
    })
    .await;
    // An eviction is what must not happen, so the window (the claim's follow-up
    // reconciles) is the assertion.
    let pods: Api<Pod> = Api::namespaced(client.clone(), SHOP);
    vc_tests::wait::throughout("shop/web to stay", Duration::from_secs(2), || async {
        (!deleting(&pods, "web").await).then_some(())
    })
    .await
    .unwrap();
    let vc = vcs.get(NAME).await.unwrap();
    assert_eq!(
        condition(&vc, vc_api::condition_types::CLAIMED_NODES_DRAINED),
        None
    );
    drop(stop);
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
}
