//! A deleted tenant's etcd data goes with it, proved on a real host: kube-apiserver,
//! kube-controller-manager (its StatefulSet controller, garbage collector, claim
//! protection and hostpath provisioner for the default StorageClass `standard`) and
//! kube-scheduler, with vc-controller running in-process against them. A claim left
//! behind would be bound again by the next VirtualCluster of the same namespace and name,
//! which would start on the old tenant's whole state.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use vc_api::VirtualCluster;
use vc_controller::runner::{RunConfig, run};
use vc_controller::telemetry::{Health, Metrics};
use vc_test_apiserver::envtest::{EnvtestOptions, TestCluster};

use crate::controller_common::{crd_path, test_timing};
use crate::support::eventually::eventually;

const NS: &str = "team-a";
const NAME: &str = "prod";
const CLAIM: &str = "data-prod-etcd-0";
/// Real controllers work on resyncs and queues; a claim is provisioned and released
/// within seconds on this machine, so a minute only fails when something is wrong.
const WAIT: Duration = Duration::from_secs(90);

pub(crate) async fn install_crd(client: &Client) {
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&std::fs::read_to_string(crd_path()).unwrap()).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    eventually(WAIT, "the VirtualCluster CRD to be established", || {
        let crds = crds.clone();
        async move {
            let crd = crds.get(vc_api::constants::CRD_NAME).await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|condition| condition.type_ == "Established" && condition.status == "True")
                .then_some(())
        }
    })
    .await;
}

/// A real host with kube-controller-manager (and kube-scheduler when `scheduler`), or
/// `None` after printing `skipped:` without `KUBEBUILDER_ASSETS`.
/// Creates namespace `name` on the host.
pub(crate) async fn create_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
}

pub(crate) async fn host_with_controller_manager(scheduler: bool) -> Option<TestCluster> {
    let cluster = TestCluster::real_or_skip_with(EnvtestOptions {
        controller_manager: true,
        scheduler,
        ..EnvtestOptions::default()
    })
    .await
    .expect("envtest starts")?;
    let TestCluster::Real(env) = &cluster else {
        unreachable!("real_or_skip gives a real cluster")
    };
    assert!(
        env.has_controller_manager(),
        "KUBEBUILDER_ASSETS holds no kube-controller-manager: {:?}",
        env.logs()
    );
    Some(cluster)
}

/// The flags' defaults with the tests' short timings.
pub(crate) fn test_run_config() -> RunConfig {
    RunConfig {
        timing: test_timing(),
        ..RunConfig::from_flags(&<vc_controller::flags::Flags as clap::Parser>::parse_from(
            ["vc-controller"],
        ))
    }
}

/// vc-controller in-process on `client`; it stops when the sender is used or dropped.
pub(crate) fn spawn_controller(
    client: &Client,
    config: RunConfig,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(run(
        client.clone(),
        config,
        std::sync::Arc::new(Metrics::default()),
        std::sync::Arc::new(Health::default()),
        async move {
            let _ = stopped.await;
        },
    ));
    (stop, controller)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_tenant_leaves_no_volume() {
    let Some(cluster) = host_with_controller_manager(true).await else {
        return;
    };
    let client = cluster.client().await.unwrap();
    install_crd(&client).await;
    create_namespace(&client, NS).await;

    let (stop, controller) = spawn_controller(&client, test_run_config());

    let vcs: Api<VirtualCluster> = Api::namespaced(client.clone(), NS);
    let vc: VirtualCluster = serde_json::from_value(json!({
        "apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {"controlPlane": {"etcd": {"replicas": 1, "storageSize": "1Gi"}}}
    }))
    .unwrap();
    vcs.create(&PostParams::default(), &vc).await.unwrap();

    // The StatefulSet controller creates the member's claim and the hostpath provisioner
    // binds it to a volume: the tenant now has data on the host.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    // With the retention policy `whenDeleted: Delete` the StatefulSet controller also
    // makes the claim a dependent of the StatefulSet.
    let (claim_uid, volume) = eventually(
        WAIT,
        "the etcd claim to be bound and owned by the StatefulSet",
        || {
            let claims = claims.clone();
            async move {
                let claim = claims.get_opt(CLAIM).await.ok()??;
                let bound = claim.status.as_ref()?.phase.as_deref() == Some("Bound");
                let owned = claim
                    .owner_references()
                    .iter()
                    .any(|owner| owner.kind == "StatefulSet" && owner.name == "prod-etcd");
                let volume = claim.spec.as_ref()?.volume_name.clone()?;
                (bound && owned).then(|| (claim.uid().unwrap_or_default(), volume))
            }
        },
    )
    .await;
    assert!(volumes.get_opt(&volume).await.unwrap().is_some());

    vcs.delete(NAME, &DeleteParams::default()).await.unwrap();
    eventually(WAIT, "the VirtualCluster to be gone", || {
        let vcs = vcs.clone();
        async move { vcs.get_opt(NAME).await.ok()?.is_none().then_some(()) }
    })
    .await;
    eventually(
        WAIT,
        &format!("claim {NS}/{CLAIM} (uid {claim_uid}) and volume {volume} to be gone"),
        || {
            let (claims, volumes, volume) = (claims.clone(), volumes.clone(), volume.clone());
            async move {
                let claim_gone = claims.get_opt(CLAIM).await.ok()?.is_none();
                let volume_gone = volumes.get_opt(&volume).await.ok()?.is_none();
                (claim_gone && volume_gone).then_some(())
            }
        },
    )
    .await;

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
}
