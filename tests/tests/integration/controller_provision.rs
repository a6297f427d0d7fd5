//! The controller against the test API server: a fresh VirtualCluster reaches
//! Initialized and Completed, its kubeconfig works, a settled tenant costs no writes,
//! and a delete leaves nothing behind.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use vc_api::condition_types::{
    CLUSTER_TREE_READY, CONTROL_PLANE_READY, DNS_READY, NODES_PROMOTED, READY,
};
use vc_api::constants::{
    FINALIZER, NODE_CLAIM_TAINT_KEY, NODE_OWNER_NAME_LABEL, NODE_OWNER_NAMESPACE_LABEL,
    NODE_OWNER_UID_ANNOTATION, TENANT_NAME_LABEL, admin_kubeconfig_secret_name,
    tenant_workload_namespace,
};

use crate::controller_common::{Harness, carries_any_claim, condition};

const PROVISION_TIMEOUT: Duration = Duration::from_secs(60);

fn kubectl_available() -> bool {
    std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|output| output.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fresh_virtual_cluster_reaches_completed_and_its_kubeconfig_works() {
    let harness = Harness::start(3, true).await;
    let created = harness
        .create_vc("team-a", "prod", &["node-0", "node-1"])
        .await;
    let uid = created.uid().unwrap();

    // Initialized (or already Completed) always comes with spec.kubeconfig in place.
    let initialized_or_later = harness
        .eventually(
            PROVISION_TIMEOUT,
            "team-a/prod to reach Initialized",
            || {
                let api = harness.vcs("team-a");
                async move {
                    let vc = api.get("prod").await.ok()?;
                    let phase = vc.status.as_ref().and_then(|s| s.phase)?;
                    matches!(phase, vc_api::Phase::Initialized | vc_api::Phase::Completed)
                        .then_some(vc)
                }
            },
        )
        .await;
    assert!(
        initialized_or_later.spec.kubeconfig.is_some(),
        "phase Initialized without spec.kubeconfig"
    );
    assert_eq!(initialized_or_later.finalizers(), [FINALIZER]);

    let vc = harness
        .wait_for_phase("team-a", "prod", "Completed", PROVISION_TIMEOUT)
        .await;
    for type_ in [
        CONTROL_PLANE_READY,
        NODES_PROMOTED,
        CLUSTER_TREE_READY,
        READY,
    ] {
        let (status, reason, message) =
            condition(&vc, type_).unwrap_or_else(|| panic!("{type_} missing"));
        assert_eq!(status, "True", "{type_}: {reason}: {message}");
    }
    let status = vc.status.clone().unwrap();
    assert_eq!(status.observed_generation, vc.metadata.generation);
    assert_eq!(status.promoted_nodes, ["node-0", "node-1"]);
    let endpoint = status.api_server_endpoint.clone().unwrap();
    assert!(endpoint.starts_with("https://127.100."), "{endpoint}");

    // Both nodes carry our claim: labels, UID annotation and NoSchedule taint; the
    // node's own taint stays.
    let nodes: Api<Node> = Api::all(harness.admin.clone());
    for name in ["node-0", "node-1"] {
        let node = nodes.get(name).await.unwrap();
        assert_eq!(
            node.labels()
                .get(NODE_OWNER_NAMESPACE_LABEL)
                .map(String::as_str),
            Some("team-a")
        );
        assert_eq!(
            node.labels().get(NODE_OWNER_NAME_LABEL).map(String::as_str),
            Some("prod")
        );
        assert_eq!(
            node.annotations().get(NODE_OWNER_UID_ANNOTATION),
            Some(&uid)
        );
        let taints = node.spec.unwrap().taints.unwrap();
        assert!(taints.iter().any(|t| t.key == NODE_CLAIM_TAINT_KEY
            && t.effect == "NoSchedule"
            && t.value.as_deref() == Some("prod")));
        assert!(taints.iter().any(|t| t.key == "example.com/gpu"));
    }
    assert!(!carries_any_claim(&nodes.get("node-2").await.unwrap()));

    // spec.kubeconfig is the external admin kubeconfig, identical to the Secret's.
    let kubeconfig = base64::engine::general_purpose::STANDARD
        .decode(vc.spec.kubeconfig.clone().unwrap())
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(harness.admin.clone(), "team-a");
    let admin_secret = secrets
        .get(&admin_kubeconfig_secret_name("prod"))
        .await
        .unwrap();
    let data = admin_secret.data.clone().unwrap();
    assert_eq!(data["kubeconfig"].0, kubeconfig);
    let internal = String::from_utf8(data["kubeconfig-internal"].0.clone()).unwrap();
    assert!(
        internal.contains("https://prod-apiserver.team-a.svc:6443"),
        "{internal}"
    );

    if kubectl_available() {
        // kubectl verifies the tenant's serving certificate against the tenant CA in the
        // kubeconfig, and authenticates with the admin client certificate.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenant.kubeconfig");
        std::fs::write(&path, &kubeconfig).unwrap();
        let output = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&path)
            .args(["get", "--raw", "/readyz"])
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "kubectl failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
    } else {
        eprintln!(
            "skipped: kubectl is not installed; the kubeconfig check via kubectl did not run"
        );
    }

    // Every namespaced object of the tenant is owned by the VirtualCluster; the
    // cluster-scoped ones are named after it and removed by the finalizer.
    let selector = format!("{TENANT_NAME_LABEL}=prod");
    let params = ListParams::default().labels(&selector);
    let mut owned = Vec::new();
    for secret in secrets.list(&params).await.unwrap() {
        owned.push((
            "Secret",
            secret.name_any(),
            secret.owner_references().to_vec(),
        ));
    }
    for service in Api::<Service>::namespaced(harness.admin.clone(), "team-a")
        .list(&params)
        .await
        .unwrap()
    {
        owned.push((
            "Service",
            service.name_any(),
            service.owner_references().to_vec(),
        ));
    }
    for set in Api::<StatefulSet>::namespaced(harness.admin.clone(), "team-a")
        .list(&params)
        .await
        .unwrap()
    {
        owned.push((
            "StatefulSet",
            set.name_any(),
            set.owner_references().to_vec(),
        ));
    }
    for deployment in Api::<Deployment>::namespaced(harness.admin.clone(), "team-a")
        .list(&params)
        .await
        .unwrap()
    {
        owned.push((
            "Deployment",
            deployment.name_any(),
            deployment.owner_references().to_vec(),
        ));
    }
    for account in Api::<ServiceAccount>::namespaced(harness.admin.clone(), "team-a")
        .list(&params)
        .await
        .unwrap()
    {
        owned.push((
            "ServiceAccount",
            account.name_any(),
            account.owner_references().to_vec(),
        ));
    }
    let kinds: BTreeSet<&str> = owned.iter().map(|(kind, _, _)| *kind).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "Secret",
            "Service",
            "StatefulSet",
            "Deployment",
            "ServiceAccount"
        ])
    );
    for (kind, name, references) in &owned {
        let reference = references
            .iter()
            .find(|r| r.uid == uid)
            .unwrap_or_else(|| panic!("{kind} {name} is not owned by the VirtualCluster"));
        assert_eq!(reference.controller, Some(true), "{kind} {name}");
        assert_eq!(reference.block_owner_deletion, Some(true), "{kind} {name}");
    }

    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settled_tenant_reconciles_write_nothing() {
    let harness = Harness::start(2, true).await;
    harness.create_vc("team-a", "quiet", &["node-0"]).await;
    harness
        .wait_for_phase("team-a", "quiet", "Completed", PROVISION_TIMEOUT)
        .await;

    // Several resyncs (400 ms each) of a settled tenant, none of them writing.
    harness.wait_until_settled(Duration::from_secs(10)).await;
    harness
        .assert_no_writes_over(5, Duration::from_secs(10))
        .await;
    harness.shutdown().await;
}

/// The controller's caches hold workloads without their pod templates (a digest
/// instead): a template edited by someone else must still be seen and put back, and a
/// restarted controller, which remembers no template, must still write nothing to a
/// settled tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edited_pod_template_is_put_back_and_a_restart_writes_nothing() {
    let mut harness = Harness::start(2, true).await;
    harness.create_vc("team-a", "edited", &["node-0"]).await;
    harness
        .wait_for_phase("team-a", "edited", "Completed", PROVISION_TIMEOUT)
        .await;
    let deployments: Api<Deployment> = Api::namespaced(harness.admin.clone(), "team-a");
    let image = |deployment: Deployment| {
        deployment
            .spec
            .and_then(|spec| spec.template.spec)
            .unwrap()
            .containers[0]
            .image
            .clone()
            .unwrap()
    };
    let mut edited = deployments.get("edited-scheduler").await.unwrap();
    let wanted = image(edited.clone());
    if let Some(pod) = edited
        .spec
        .as_mut()
        .and_then(|spec| spec.template.spec.as_mut())
    {
        pod.containers[0].image = Some("registry.example/not-the-scheduler:1".to_owned());
    }
    deployments
        .replace("edited-scheduler", &PostParams::default(), &edited)
        .await
        .unwrap();
    harness
        .eventually(
            PROVISION_TIMEOUT,
            "the scheduler's image to be put back",
            || {
                let deployments = deployments.clone();
                let wanted = wanted.clone();
                async move {
                    let deployment = deployments.get("edited-scheduler").await.ok()?;
                    (image(deployment) == wanted).then_some(())
                }
            },
        )
        .await;

    harness.wait_until_settled(Duration::from_secs(10)).await;
    harness.stop_controller().await;
    harness.start_controller().await;
    harness
        .assert_no_writes_over(5, Duration::from_secs(20))
        .await;
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_releases_nodes_and_leaves_nothing() {
    let harness = Harness::start(3, true).await;
    harness
        .create_vc("team-b", "gone", &["node-0", "node-1"])
        .await;
    harness
        .wait_for_phase("team-b", "gone", "Completed", PROVISION_TIMEOUT)
        .await;
    let workload_namespace = tenant_workload_namespace("team-b", "gone");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(harness.admin.clone());
    assert!(
        namespaces
            .get_opt(&workload_namespace)
            .await
            .unwrap()
            .is_some()
    );

    harness
        .vcs("team-b")
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    harness
        .eventually(PROVISION_TIMEOUT, "team-b/gone to disappear", || {
            let api = harness.vcs("team-b");
            async move {
                api.get_opt("gone")
                    .await
                    .ok()
                    .flatten()
                    .is_none()
                    .then_some(())
            }
        })
        .await;

    let nodes: Api<Node> = Api::all(harness.admin.clone());
    for node in nodes.list(&ListParams::default()).await.unwrap() {
        assert!(
            !carries_any_claim(&node),
            "node {} still carries a claim: {:?}",
            node.name_any(),
            node.metadata.labels
        );
        let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
        assert!(
            taints.iter().any(|t| t.key == "example.com/gpu"),
            "the node's own taint was lost"
        );
    }
    let role = "kosmos-vc:team-b:gone:clustertree";
    assert!(
        Api::<ClusterRole>::all(harness.admin.clone())
            .get_opt(role)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<ClusterRoleBinding>::all(harness.admin.clone())
            .get_opt(role)
            .await
            .unwrap()
            .is_none()
    );
    let namespace_gone_or_terminating = namespaces
        .get_opt(&workload_namespace)
        .await
        .unwrap()
        .is_none_or(|namespace| namespace.meta().deletion_timestamp.is_some());
    assert!(
        namespace_gone_or_terminating,
        "workload namespace {workload_namespace} was not deleted"
    );
    let selector = format!("{TENANT_NAME_LABEL}=gone");
    harness
        .eventually(
            Duration::from_secs(20),
            "garbage collection of the tenant's namespaced objects",
            || {
                let client = harness.admin.clone();
                let selector = selector.clone();
                async move {
                    let params = ListParams::default().labels(&selector);
                    let secrets = Api::<Secret>::namespaced(client.clone(), "team-b")
                        .list(&params)
                        .await
                        .ok()?;
                    let deployments = Api::<Deployment>::namespaced(client.clone(), "team-b")
                        .list(&params)
                        .await
                        .ok()?;
                    let services = Api::<Service>::namespaced(client.clone(), "team-b")
                        .list(&params)
                        .await
                        .ok()?;
                    let sets = Api::<StatefulSet>::namespaced(client, "team-b")
                        .list(&params)
                        .await
                        .ok()?;
                    (secrets.items.is_empty()
                        && deployments.items.is_empty()
                        && services.items.is_empty()
                        && sets.items.is_empty())
                    .then_some(())
                }
            },
        )
        .await;
    harness.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_a_node_from_the_spec_releases_it_without_reprovisioning() {
    let harness = Harness::start(3, true).await;
    harness
        .create_vc("team-c", "shrink", &["node-0", "node-1"])
        .await;
    harness
        .wait_for_phase("team-c", "shrink", "Completed", PROVISION_TIMEOUT)
        .await;
    let secrets: Api<Secret> = Api::namespaced(harness.admin.clone(), "team-c");
    let ca_before = secrets.get("shrink-ca").await.unwrap().data;

    let patch = json!({"spec": {"promoteResources": {"nodes": ["node-0", "node-2"]}}});
    harness
        .vcs("team-c")
        .patch("shrink", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let nodes: Api<Node> = Api::all(harness.admin.clone());
    harness
        .eventually(
            PROVISION_TIMEOUT,
            "node-1 released and node-2 promoted",
            || {
                let nodes = nodes.clone();
                let api = harness.vcs("team-c");
                async move {
                    let released = !carries_any_claim(&nodes.get("node-1").await.ok()?);
                    let vc = api.get("shrink").await.ok()?;
                    let status = vc.status?;
                    (released
                        && status.promoted_nodes == ["node-0", "node-2"]
                        && status.phase == Some(vc_api::Phase::Completed))
                    .then_some(())
                }
            },
        )
        .await;
    assert_eq!(
        secrets.get("shrink-ca").await.unwrap().data,
        ca_before,
        "the CA must never be regenerated"
    );
    harness.shutdown().await;
}

/// A member count that reached the spec past the webhook is not applied: the StatefulSet
/// keeps its members, and the VirtualCluster says why until the spec is set back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_replicas_cannot_change_after_creation() {
    let harness = Harness::start(1, true).await;
    harness.create_vc("team-d", "steady", &[]).await;
    harness
        .wait_for_phase("team-d", "steady", "Completed", PROVISION_TIMEOUT)
        .await;
    let scale = |replicas: i32| json!({"spec": {"controlPlane": {"etcd": {"replicas": replicas}}}});
    harness
        .vcs("team-d")
        .patch("steady", &PatchParams::default(), &Patch::Merge(&scale(3)))
        .await
        .unwrap();
    let failed = harness
        .wait_for_phase("team-d", "steady", "Failed", PROVISION_TIMEOUT)
        .await;
    assert_eq!(
        failed.status.and_then(|status| status.message).as_deref(),
        Some(
            "invalid VirtualCluster: spec.controlPlane.etcd.replicas: etcd was created with a member count of 1 and kosmos-vc does not change etcd membership yet, so 3 is not applied; set it back to 1"
        )
    );
    let sets: Api<StatefulSet> = Api::namespaced(harness.admin.clone(), "team-d");
    let replicas = |set: StatefulSet| set.spec.and_then(|spec| spec.replicas);
    assert_eq!(replicas(sets.get("steady-etcd").await.unwrap()), Some(1));

    harness
        .vcs("team-d")
        .patch("steady", &PatchParams::default(), &Patch::Merge(&scale(1)))
        .await
        .unwrap();
    harness
        .wait_for_phase("team-d", "steady", "Completed", PROVISION_TIMEOUT)
        .await;
    assert_eq!(replicas(sets.get("steady-etcd").await.unwrap()), Some(1));
    harness.shutdown().await;
}

/// The encryption key is never minted again over a stored configuration: one that no
/// longer parses stops the tenant with a status naming the Secret, key and field, and the
/// Secret keeps what the operator wrote until the configuration is restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_encryption_key_stops_the_tenant_and_is_never_replaced() {
    let harness = Harness::start(1, true).await;
    harness.create_vc("team-k", "sealed", &[]).await;
    harness
        .wait_for_phase("team-k", "sealed", "Completed", PROVISION_TIMEOUT)
        .await;
    let secrets: Api<Secret> = Api::namespaced(harness.admin.clone(), "team-k");
    let name = "sealed-apiserver-encryption";
    let stored = secrets.get(name).await.unwrap().data.unwrap();
    let config = String::from_utf8(stored["encryption-config.yaml"].0.clone()).unwrap();
    assert!(config.contains("secretbox"), "secretbox is not configured");

    // A key cut short, as a bad hand edit would leave it.
    let document: serde_yaml::Value = serde_yaml::from_str(&config).unwrap();
    let key = document["resources"][0]["providers"][0]["secretbox"]["keys"][0]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let broken = config.replace(&key, &key[..20]);
    let patch = |text: &str| json!({"data": {"encryption-config.yaml": base64::engine::general_purpose::STANDARD.encode(text)}});
    secrets
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&patch(&broken)),
        )
        .await
        .unwrap();
    let vcs = harness.vcs("team-k");
    let message = harness
        .eventually(
            PROVISION_TIMEOUT,
            "the status to name the broken configuration",
            || {
                let vcs = vcs.clone();
                async move {
                    let status = vcs.get("sealed").await.ok()?.status?;
                    let message = status.message?;
                    message.contains(name).then_some(message)
                }
            },
        )
        .await;
    assert!(
        message.contains(
            "Secret sealed-apiserver-encryption key encryption-config.yaml: resources[0].providers[0].secretbox.keys[0].secret is not 32 bytes in base64"
        ),
        "{message}"
    );
    assert!(message.contains("restore the configuration"), "{message}");
    assert!(!message.contains(&key[..20]), "the key is in the status");
    // A stopped tenant waits for a change: touching the Secret (it is owned) brings one
    // more reconcile, the one that could replace the configuration; after it, it is kept.
    let before = harness.reconcile_count();
    secrets
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    harness
        .eventually(PROVISION_TIMEOUT, "a reconcile after the touch", || {
            let ran = harness.reconcile_count() > before;
            async move { ran.then_some(()) }
        })
        .await;
    let kept = secrets.get(name).await.unwrap().data.unwrap();
    assert_eq!(
        String::from_utf8(kept["encryption-config.yaml"].0.clone()).unwrap(),
        broken,
        "the controller replaced the stored configuration"
    );

    // Restored, the tenant goes on with its own key.
    secrets
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&patch(&config)),
        )
        .await
        .unwrap();
    harness
        .wait_for_phase("team-k", "sealed", "Completed", PROVISION_TIMEOUT)
        .await;
    assert_eq!(secrets.get(name).await.unwrap().data.unwrap(), stored);
    harness.shutdown().await;
}

/// Everything else in place, a tenant whose `kube-dns` has no ready endpoint is not
/// `Completed`: the DNSReady condition says what is missing, and the tenant completes
/// once the clustertree's DNS answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completed_waits_for_the_tenants_dns() {
    let harness = Harness::start(1, true).await;
    harness
        .held
        .lock()
        .unwrap()
        .insert("dns:team-e/quiet-dns".to_owned());
    harness.create_vc("team-e", "quiet-dns", &["node-0"]).await;
    let api = harness.vcs("team-e");
    // Nodes promoted and the clustertree ready: only the DNS is missing.
    let waiting = harness
        .eventually(PROVISION_TIMEOUT, "everything but the DNS ready", || {
            let api = api.clone();
            async move {
                let vc = api.get("quiet-dns").await.ok()?;
                let ready = |type_: &str| {
                    condition(&vc, type_).is_some_and(|(status, _, _)| status == "True")
                };
                let dns = condition(&vc, DNS_READY)?;
                (ready(CONTROL_PLANE_READY)
                    && ready(CLUSTER_TREE_READY)
                    && ready(NODES_PROMOTED)
                    && dns.0 == "False"
                    && dns.1 == "DNSNotReady")
                    .then_some(vc)
            }
        })
        .await;
    // Several reconciles later it still waits, saying for what.
    let before = harness.reconcile_count();
    harness
        .eventually(PROVISION_TIMEOUT, "three more reconciles", || {
            let ran = harness.reconcile_count() - before;
            let api = api.clone();
            async move {
                let vc = api.get("quiet-dns").await.unwrap();
                let phase = vc.status.as_ref().and_then(|status| status.phase);
                assert_ne!(
                    phase.map(|phase| phase.as_str()),
                    Some("Completed"),
                    "{:?}",
                    vc.status
                );
                (ran >= 3).then_some(())
            }
        })
        .await;
    let still = api.get("quiet-dns").await.unwrap();
    let status = still.status.as_ref().unwrap();
    assert_ne!(
        status.phase.map(|phase| phase.as_str()),
        Some("Completed"),
        "{status:?}"
    );
    let (_, _, message) = condition(&still, DNS_READY).unwrap();
    assert!(message.contains("no ready endpoint"), "{message}");
    assert!(
        status
            .message
            .as_deref()
            .is_some_and(|message| message.contains("waiting for the tenant's DNS")),
        "{status:?}"
    );
    drop(waiting);
    harness.held.lock().unwrap().clear();
    let done = harness
        .wait_for_phase("team-e", "quiet-dns", "Completed", PROVISION_TIMEOUT)
        .await;
    let (dns_status, reason, _) = condition(&done, DNS_READY).unwrap();
    assert_eq!(
        (dns_status.as_str(), reason.as_str()),
        ("True", "DNSAnswering")
    );
    harness.shutdown().await;
}
