//! The real `vc-clustertree` process as the kubelet of a tenant's mirrored Nodes, between
//! two real control planes (apiserver, controller-manager, scheduler): a host and a
//! tenant. Under nothing but the host RBAC the controller grants a clustertree, it runs
//! the tenant's pods as host pods in `vc-team-a-tenant1` (a Pod Security `baseline`
//! namespace), pinned to the promoted node or placed by the host scheduler for the pool,
//! brings their status back, refuses a privileged pod before the host sees it, follows a
//! tenant deletion, and survives a restart without a duplicate or an orphan. The host's
//! kubelets are simulated; everything else is real.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod, Secret, ServiceAccount};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt as _};
use serde_json::json;
use vc_api::VirtualCluster;
use vc_api::constants::{
    CLUSTERTREE_MANAGED_BY_VALUE, MANAGED_BY_LABEL, NODE_CLAIM_TAINT_KEY, POOL_NODE_NAME,
    TENANT_OBJECT_NAME_LABEL, TENANT_OBJECT_NAMESPACE_LABEL, TENANT_OBJECT_UID_ANNOTATION,
    tenant_workload_namespace,
};
use vc_tests::apiserver::envtest::{self, Envtest, EnvtestOptions, SKIP_MESSAGE};
use vc_tests::simulation::nodes::{FleetOptions, NodeFleet, NodeSpec};
use vc_tests::simulation::workloads::{self, WorkloadMode, WorkloadOptions};

use crate::clustertree_nodes::{
    NAMESPACE, Process, TENANT, claim, clustertree_binary, clustertree_rbac, kubectl_apply,
};
use crate::controller_common::crd_path;
use crate::support::eventually::eventually;

const WAIT: Duration = Duration::from_secs(30);
/// The tenant namespace the test's workloads live in.
const SHOP: &str = "shop";

/// What `controller::resources::clustertree::role` grants in the workload namespace.
fn workload_role(namespace: &str) -> Vec<serde_json::Value> {
    let rw = [
        "create", "delete", "get", "list", "patch", "update", "watch",
    ];
    vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "tenant1-clustertree", "namespace": namespace},
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps", "endpoints", "persistentvolumeclaims", "pods", "secrets", "services"], "verbs": rw},
                {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get", "patch", "update"]},
                {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "get", "list", "patch", "update", "watch"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "tenant1-clustertree", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant1-clustertree"},
            "subjects": [{"kind": "User", "name": "clustertree"}],
        }),
    ]
}

fn start_clustertree(
    identity: &std::path::Path,
    tenant: &std::path::Path,
    log: &tempfile::NamedTempFile,
) -> Process {
    Process(
        Command::new(clustertree_binary())
            .arg("--kubeconfig")
            .arg(identity)
            .arg("--tenant-kubeconfig")
            .arg(tenant)
            .args([
                "--namespace",
                NAMESPACE,
                "--name",
                TENANT,
                "--period",
                "0.3s",
            ])
            .stdout(Stdio::from(log.reopen().unwrap()))
            .stderr(Stdio::from(log.reopen().unwrap()))
            .spawn()
            .unwrap(),
    )
}

fn pod(name: &str, node_selector: &str, extra: serde_json::Value) -> Pod {
    let mut value = json!({
        "metadata": {"name": name, "namespace": SHOP},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node_selector},
            "containers": [{"name": "app", "image": "nginx:1.27"}],
        },
    });
    if let Some(extra) = extra.as_object() {
        for (key, field) in extra {
            value["spec"][key] = field.clone();
        }
    }
    serde_json::from_value(value).unwrap()
}

/// The host objects standing for tenant object `shop/NAME`, found by the labels the
/// contract promises rather than by recomputing their names.
async fn standing_for<K>(api: &Api<K>, name: &str) -> Vec<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let selector = format!(
        "{MANAGED_BY_LABEL}={CLUSTERTREE_MANAGED_BY_VALUE},{TENANT_OBJECT_NAMESPACE_LABEL}={SHOP},{TENANT_OBJECT_NAME_LABEL}={name}"
    );
    api.list(&ListParams::default().labels(&selector))
        .await
        .map(|list| list.items)
        .unwrap_or_default()
}

fn is_ours(pod: &Pod) -> bool {
    pod.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(CLUSTERTREE_MANAGED_BY_VALUE)
}

/// [`eventually`], with the clustertree's log in the failure: what it saw and refused is
/// the only account of why a state never came.
async fn within<T, F, Fut>(log: &std::path::Path, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}; vc-clustertree said:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clustertree_runs_tenant_pods_on_the_host_and_reports_them_back() {
    let Some(assets) = envtest::assets() else {
        assert!(!envtest::must_run_real(), "CI is set: {SKIP_MESSAGE}");
        eprintln!("{SKIP_MESSAGE}");
        return;
    };
    let began = Instant::now();
    let options = EnvtestOptions {
        controller_manager: true,
        scheduler: true,
        ..EnvtestOptions::default()
    };
    let (host, tenant) = tokio::join!(
        Envtest::start_with(&assets, options.clone()),
        Envtest::start_with(&assets, options)
    );
    let (host, tenant) = (host.unwrap(), tenant.unwrap());
    assert!(
        host.has_scheduler() && host.has_controller_manager(),
        "the assets lack kube-scheduler or kube-controller-manager"
    );
    let admin = vc_tests::apiserver::client_from_kubeconfig(host.kubeconfig_path())
        .await
        .unwrap();
    let tenant_admin = vc_tests::apiserver::client_from_kubeconfig(tenant.kubeconfig_path())
        .await
        .unwrap();
    let workload_namespace = tenant_workload_namespace(NAMESPACE, TENANT);
    kubectl_apply(
        host.kubeconfig_path(),
        &std::fs::read_to_string(crd_path()).unwrap(),
    );
    for namespace in [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": workload_namespace,
               "labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}),
    ] {
        kubectl_apply(host.kubeconfig_path(), &namespace.to_string());
    }
    let fleet = NodeFleet::start(
        admin.clone(),
        vec![
            NodeSpec::new("node1"),
            NodeSpec::new("node2"),
            NodeSpec::control_plane("cp1"),
        ],
        FleetOptions::default(),
    )
    .await
    .unwrap();
    let kubelets = workloads::spawn(
        admin.clone(),
        WorkloadOptions {
            mode: WorkloadMode::KubeletOnly,
            namespace: Some(workload_namespace.clone()),
            ..WorkloadOptions::default()
        },
    );
    let virtual_clusters: Api<VirtualCluster> = Api::namespaced(admin.clone(), NAMESPACE);
    let created = eventually(WAIT, "the CRD to serve VirtualClusters", || async {
        let vc: VirtualCluster = serde_json::from_value(json!({
            "apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
            "metadata": {"name": TENANT, "namespace": NAMESPACE},
            "spec": {"kubernetesVersion": "v1.33.4",
                     "promoteResources": {"nodes": ["node1"], "resources": {"cpu": 2, "memory": "4Gi"}}},
        }))
        .unwrap();
        virtual_clusters.create(&PostParams::default(), &vc).await.ok()
    })
    .await;
    claim(&admin, "node1", &created.uid().unwrap(), true).await;
    for object in clustertree_rbac(&["node1"])
        .into_iter()
        .chain(workload_role(&workload_namespace))
    {
        kubectl_apply(host.kubeconfig_path(), &object.to_string());
    }
    let identity = host.kubeconfig_for("clustertree", &[]).unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let clustertree = start_clustertree(&identity, tenant.kubeconfig_path(), &log);
    let log_text = || std::fs::read_to_string(log.path()).unwrap_or_default();

    // The tenant: a namespace whose default ServiceAccount and CA exist, and workloads.
    let namespaces: Api<Namespace> = Api::all(tenant_admin.clone());
    let shop: Namespace = serde_json::from_value(json!({"metadata": {"name": SHOP}})).unwrap();
    namespaces
        .create(&PostParams::default(), &shop)
        .await
        .unwrap();
    let tenant_config_maps: Api<ConfigMap> = Api::namespaced(tenant_admin.clone(), SHOP);
    eventually(WAIT, "the tenant CA in namespace shop", || async {
        tenant_config_maps.get_opt("kube-root-ca.crt").await.ok()?
    })
    .await;
    let service_accounts: Api<ServiceAccount> = Api::namespaced(tenant_admin.clone(), SHOP);
    eventually(
        WAIT,
        "the default ServiceAccount, which admits pods",
        || async { service_accounts.get_opt("default").await.ok()? },
    )
    .await;
    let site: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "site", "namespace": SHOP}, "data": {"index.html": "hello"}
    }))
    .unwrap();
    tenant_config_maps
        .create(&PostParams::default(), &site)
        .await
        .unwrap();
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": SHOP},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"nodeSelector": {"kubernetes.io/hostname": "node1"},
                         "containers": [{"name": "app", "image": "nginx:1.27"}]},
            },
        },
    }))
    .unwrap();
    let tenant_pods: Api<Pod> = Api::namespaced(tenant_admin.clone(), SHOP);
    let host_pods: Api<Pod> = Api::namespaced(admin.clone(), &workload_namespace);
    Api::<Deployment>::namespaced(tenant_admin.clone(), SHOP)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    for extra in [
        pod("pooled", POOL_NODE_NAME, json!({})),
        pod(
            "with-config",
            "node1",
            json!({
                "volumes": [{"name": "site", "configMap": {"name": "site"}}],
                "containers": [{"name": "app", "image": "nginx:1.27",
                                "volumeMounts": [{"name": "site", "mountPath": "/usr/share/nginx/html"}]}],
            }),
        ),
        pod(
            "root",
            "node1",
            json!({"containers": [{"name": "app", "image": "nginx:1.27", "securityContext": {"privileged": true}}]}),
        ),
    ] {
        tenant_pods
            .create(&PostParams::default(), &extra)
            .await
            .unwrap();
    }

    // The Deployment's pods run on the promoted node, Running in the tenant with the
    // host pods' IPs.
    let running = within(
        log.path(),
        "both web pods Running with host IPs",
        || async {
            let list = tenant_pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            let running: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| {
                    let status = p.status.as_ref();
                    status.and_then(|s| s.phase.as_deref()) == Some("Running")
                        && status.and_then(|s| s.pod_ip.as_ref()).is_some()
                })
                .collect();
            (running.len() == 2).then_some(running)
        },
    )
    .await;
    for tenant_pod in &running {
        let found = standing_for(&host_pods, &tenant_pod.name_any()).await;
        assert_eq!(found.len(), 1, "{found:?}");
        let host_pod = &found[0];
        let spec = host_pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node1"), "{}", log_text());
        assert_eq!(
            host_pod.annotations()[TENANT_OBJECT_UID_ANNOTATION],
            tenant_pod.uid().unwrap()
        );
        let tolerates_claim = spec.tolerations.iter().flatten().any(|t| {
            t.key.as_deref() == Some(NODE_CLAIM_TAINT_KEY)
                && t.value.as_deref() == Some(TENANT)
                && t.effect.as_deref() == Some("NoSchedule")
        });
        assert!(tolerates_claim, "{:?}", spec.tolerations);
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(
            tenant_pod.status.as_ref().unwrap().pod_ip,
            host_pod.status.as_ref().unwrap().pod_ip
        );
    }
    // The tenant's own token, CA and namespace, in place of its projected volume.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &workload_namespace);
    let token = standing_for(&secrets, &running[0].name_any()).await;
    assert_eq!(token.len(), 1, "one token Secret per pod");
    let data = token[0].data.clone().unwrap_or_default();
    assert_eq!(data["namespace"].0, SHOP.as_bytes());
    assert!(!data["token"].0.is_empty() && !data["ca.crt"].0.is_empty());

    // The pool pod goes where the host scheduler puts it: an unclaimed worker.
    let pooled = within(log.path(), "the pool pod's host pod bound", || async {
        let host_pod = standing_for(&host_pods, "pooled").await.pop()?;
        host_pod.spec?.node_name
    })
    .await;
    assert_eq!(
        pooled, "node2",
        "neither the claimed node nor the control plane"
    );

    // A mounted ConfigMap gets its host copy.
    let host_config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &workload_namespace);
    let copy = within(log.path(), "the host copy of ConfigMap site", || async {
        standing_for(&host_config_maps, "site").await.pop()
    })
    .await;
    assert_eq!(copy.data.unwrap()["index.html"], "hello");

    // A privileged pod is refused before the host sees it.
    let refused = within(log.path(), "the privileged pod Failed", || async {
        let pod = tenant_pods.get("root").await.ok()?;
        let status = pod.status?;
        (status.phase.as_deref() == Some("Failed")).then_some(status)
    })
    .await;
    assert_eq!(refused.reason.as_deref(), Some("HostPolicyRefused"));
    let events = Api::<Event>::namespaced(tenant_admin.clone(), SHOP)
        .list(&ListParams::default().fields("involvedObject.name=root"))
        .await
        .unwrap();
    let event = events
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("HostPolicyRefused"))
        .expect("an Event on the refused pod");
    assert!(
        event
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("containers[0].securityContext.privileged"),
        "{event:?}"
    );
    assert!(standing_for(&host_pods, "root").await.is_empty());

    // Deleting a tenant pod removes its host pod, then the tenant pod, then the copy.
    tenant_pods
        .delete("with-config", &DeleteParams::default())
        .await
        .unwrap();
    within(log.path(), "the deleted pod gone on both sides", || async {
        let host_gone = standing_for(&host_pods, "with-config").await.is_empty();
        let tenant_gone = tenant_pods.get_opt("with-config").await.ok()?.is_none();
        (host_gone && tenant_gone).then_some(())
    })
    .await;
    within(log.path(), "the unused ConfigMap copy removed", || async {
        standing_for(&host_config_maps, "site")
            .await
            .is_empty()
            .then_some(())
    })
    .await;

    // A restart finds its host pods again: no duplicate, no orphan.
    drop(clustertree);
    let restarted = start_clustertree(&identity, tenant.kubeconfig_path(), &log);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tenant_uids: BTreeSet<String> = tenant_pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.name_any() != "root")
        .filter_map(|p| p.uid())
        .collect();
    let host_uids: BTreeSet<String> = host_pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| is_ours(p))
        .map(|p| p.annotations()[TENANT_OBJECT_UID_ANNOTATION].clone())
        .collect();
    assert_eq!(host_uids, tenant_uids, "{}", log_text());
    assert_eq!(tenant_uids.len(), 3, "two web pods and the pool pod");
    drop(restarted);
    drop(kubelets);
    drop(fleet);
    eprintln!("clustertree_pods took {:?}", began.elapsed());
}
