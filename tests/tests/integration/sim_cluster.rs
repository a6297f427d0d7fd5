//! The node, workload and service simulators against the test API server, through a
//! plain `kube::Client` as they would run against any API server.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt as _};
use serde_json::json;
use vc_simulation::nodes::{FleetOptions, NodeFleet, NodeSpec, default_nodes};
use vc_simulation::services::{self, ServiceOptions};
use vc_simulation::workloads::{
    self, READINESS_ANNOTATION, WorkloadMode, WorkloadOptions, deployment_is_ready,
};
use vc_simulation::{Simulation, SimulationOptions};

use crate::support::eventually::eventually;
use crate::support::server::server;
use vc_tests::wait;

const WAIT: Duration = Duration::from_secs(15);

fn fast_workloads() -> WorkloadOptions {
    WorkloadOptions {
        default_delay: Duration::from_millis(100),
        resync: Duration::from_millis(300),
        ..WorkloadOptions::default()
    }
}

fn deployment(name: &str, replicas: i32, annotation: Option<&str>) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": name, "namespace": "default",
            "annotations": annotation.map(|a| json!({READINESS_ANNOTATION: a})),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"name": "http", "containerPort": 8080}]}]}
            }
        }
    }))
    .unwrap()
}

fn condition(d: &Deployment, type_: &str) -> Option<(String, String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

#[tokio::test]
async fn nodes_register_with_capacity_heartbeat_and_can_fail() {
    let (_server, client) = server().await;
    let mut specs = default_nodes(2);
    specs.push(
        NodeSpec::new("big")
            .with_capacity("64", "256Gi")
            .with_label("zone", "b"),
    );
    specs.push(NodeSpec::control_plane("cp"));
    let fleet = NodeFleet::start(
        client.clone(),
        specs,
        FleetOptions {
            heartbeat: Some(Duration::from_millis(200)),
        },
    )
    .await
    .unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    let mut names: Vec<String> = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    names.sort();
    assert_eq!(names, ["big", "cp", "node1", "node2"]);
    let big = nodes.get("big").await.unwrap();
    let status = big.status.clone().unwrap();
    assert_eq!(status.capacity.unwrap()["cpu"].0, "64");
    assert_eq!(status.allocatable.unwrap()["memory"].0, "256Gi");
    assert_eq!(big.labels()["zone"], "b");
    assert_eq!(big.labels()["kubernetes.io/hostname"], "big");
    let ready = |n: &Node| {
        n.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.clone())
    };
    assert_eq!(ready(&big).as_deref(), Some("True"));
    let cp = nodes.get("cp").await.unwrap();
    assert!(
        cp.labels()
            .contains_key("node-role.kubernetes.io/control-plane")
    );
    assert_eq!(cp.spec.unwrap().taints.unwrap()[0].effect, "NoSchedule");

    // Heartbeats renew the kubelet Lease.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    eventually(WAIT, "the node1 lease", || async {
        leases.get_opt("node1").await.ok().flatten()
    })
    .await;

    fleet.set_ready("node2", false).await.unwrap();
    // Over two heartbeats (200 ms each) the node must stay down: a revival is the event
    // that must not happen, so there is no moment to wait for.
    wait::throughout(
        "node2 to stay Ready=Unknown: heartbeats must not revive a NotReady node",
        Duration::from_millis(500),
        || async {
            let node2 = nodes.get("node2").await.map_err(|e| e.to_string())?;
            match ready(&node2).as_deref() {
                Some("Unknown") => Ok(()),
                other => Err(format!("Ready={other:?}")),
            }
        },
    )
    .await
    .unwrap();
    fleet.set_ready("node2", true).await.unwrap();
    assert_eq!(
        ready(&nodes.get("node2").await.unwrap()).as_deref(),
        Some("True")
    );

    fleet.cordon("node1", true).await.unwrap();
    assert_eq!(
        nodes
            .get("node1")
            .await
            .unwrap()
            .spec
            .unwrap()
            .unschedulable,
        Some(true)
    );
    fleet.cordon("node1", false).await.unwrap();
    assert_eq!(
        nodes
            .get("node1")
            .await
            .unwrap()
            .spec
            .unwrap()
            .unschedulable,
        None
    );

    let error = fleet
        .set_ready("node9", false)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "node node9 is not simulated by this fleet (known: node1, node2, big, cp)"
    );
}

#[tokio::test]
async fn deployment_becomes_ready_with_pods_and_then_settles() {
    let (_server, client) = server().await;
    let _sim = workloads::spawn(client.clone(), fast_workloads());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment("web", 2, None))
        .await
        .unwrap();
    let ready = eventually(WAIT, "web to be ready", || async {
        deployments
            .get("web")
            .await
            .ok()
            .filter(deployment_is_ready)
    })
    .await;
    let status = ready.status.clone().unwrap();
    assert_eq!(
        (
            status.ready_replicas,
            status.available_replicas,
            status.updated_replicas
        ),
        (Some(2), Some(2), Some(2))
    );
    assert_eq!(status.observed_generation, ready.metadata.generation);
    assert_eq!(condition(&ready, "Available").unwrap().0, "True");
    assert_eq!(
        condition(&ready, "Progressing").unwrap().1,
        "NewReplicaSetAvailable"
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let listed = eventually(WAIT, "two ready pods", || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        let ready = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some())
            .count();
        (ready == 2).then_some(list.items)
    })
    .await;
    let mut ips: Vec<String> = listed
        .iter()
        .map(|p| p.status.clone().unwrap().pod_ip.unwrap())
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 2, "pod IPs are unique");
    assert!(ips.iter().all(|ip| ip.starts_with("127.200.")), "{ips:?}");
    assert!(
        listed
            .iter()
            .all(|p| p.owner_references()[0].uid == ready.uid().unwrap())
    );

    // Nothing changes any more: the simulator writes only differences, so the versions
    // settle for several of its resyncs (300 ms each).
    wait::settled(
        "the versions of web and its pods",
        WAIT,
        Duration::from_millis(1200),
        || async {
            let deployment = deployments.get("web").await.unwrap();
            let listed = pods.list(&ListParams::default()).await.unwrap();
            std::iter::once(deployment.resource_version().unwrap())
                .chain(listed.items.iter().map(|p| p.resource_version().unwrap()))
                .collect::<Vec<String>>()
        },
    )
    .await
    .unwrap();

    // Scaling to zero removes the pods and keeps the Deployment available.
    let scale = json!({"spec": {"replicas": 0}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .unwrap();
    eventually(WAIT, "pods to be gone", || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        list.items.is_empty().then_some(())
    })
    .await;
    let scaled = eventually(WAIT, "the scaled status", || async {
        let d = deployments.get("web").await.ok()?;
        (d.status.as_ref()?.observed_generation == d.metadata.generation).then_some(d)
    })
    .await;
    assert_eq!(scaled.status.unwrap().ready_replicas, None);
}

#[tokio::test]
async fn readiness_annotation_delays_blocks_or_fails_the_rollout() {
    let (_server, client) = server().await;
    let _sim = workloads::spawn(
        client.clone(),
        WorkloadOptions {
            create_pods: false,
            ..fast_workloads()
        },
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    for (name, annotation) in [
        ("never", "never"),
        ("broken", "fail"),
        ("later", "delay=3s"),
        ("typo", "delay=soon"),
    ] {
        deployments
            .create(
                &PostParams::default(),
                &deployment(name, 1, Some(annotation)),
            )
            .await
            .unwrap();
    }
    let failed = eventually(WAIT, "broken to fail", || async {
        let d = deployments.get("broken").await.ok()?;
        condition(&d, "Progressing").filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!(failed.1, "ProgressDeadlineExceeded");
    let typo = eventually(WAIT, "typo to fail", || async {
        let d = deployments.get("typo").await.ok()?;
        condition(&d, "Progressing").filter(|c| c.0 == "False")
    })
    .await;
    assert!(
        typo.2.contains("sim.kosmos.io/readiness=\"delay=soon\""),
        "{}",
        typo.2
    );

    let pending = eventually(WAIT, "later to be progressing", || async {
        let d = deployments.get("later").await.ok()?;
        condition(&d, "Available").map(|c| (d, c))
    })
    .await;
    assert_eq!(pending.1.0, "False", "not ready before its delay");
    eventually(WAIT, "later to be ready", || async {
        deployments
            .get("later")
            .await
            .ok()
            .filter(deployment_is_ready)
    })
    .await;

    let never = deployments.get("never").await.unwrap();
    assert!(!deployment_is_ready(&never));
    assert_eq!(
        condition(&never, "Progressing").unwrap().1,
        "ReplicaSetUpdated"
    );
    assert_eq!(condition(&never, "Available").unwrap().0, "False");
}

#[tokio::test]
async fn statefulset_pods_have_ordinal_names_and_follow_scale() {
    let (_server, client) = server().await;
    let _sim = workloads::spawn(client.clone(), fast_workloads());
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let set: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "etcd", "namespace": "default"},
        "spec": {
            "replicas": 3, "serviceName": "etcd-peer",
            "selector": {"matchLabels": {"app": "etcd"}},
            "template": {"metadata": {"labels": {"app": "etcd"}}, "spec": {"containers": [{"name": "etcd", "image": "etcd"}]}}
        }
    }))
    .unwrap();
    sets.create(&PostParams::default(), &set).await.unwrap();
    let ready = eventually(WAIT, "etcd to be ready", || async {
        let s = sets.get("etcd").await.ok()?;
        (s.status.as_ref()?.ready_replicas == Some(3)).then_some(s)
    })
    .await;
    let status = ready.status.unwrap();
    assert_eq!(status.available_replicas, Some(3));
    assert_eq!(status.current_revision, status.update_revision);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let names = |list: Vec<Pod>| {
        let mut names: Vec<String> = list.iter().map(|p| p.name_any()).collect();
        names.sort();
        names
    };
    assert_eq!(
        names(pods.list(&ListParams::default()).await.unwrap().items),
        ["etcd-0", "etcd-1", "etcd-2"]
    );
    sets.patch(
        "etcd",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    eventually(WAIT, "etcd-1 and etcd-2 to go", || async {
        let list = pods.list(&ListParams::default()).await.ok()?.items;
        (names(list) == ["etcd-0"]).then_some(())
    })
    .await;
}

#[tokio::test]
async fn services_get_endpoints_slices_and_load_balancer_addresses() {
    let (_server, client) = server().await;
    let _workloads = workloads::spawn(client.clone(), fast_workloads());
    let _services = services::spawn(
        client.clone(),
        ServiceOptions {
            resync: Duration::from_millis(300),
            ..ServiceOptions::default()
        },
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment("web", 2, None))
        .await
        .unwrap();
    let service_api: Api<Service> = Api::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }))
    .unwrap();
    let created = service_api
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let cluster_ip = created.spec.unwrap().cluster_ip.unwrap();

    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let filled = eventually(WAIT, "two ready endpoint addresses", || async {
        let e = endpoints.get_opt("web").await.ok()??;
        let subset = e.subsets.as_ref()?.first()?.clone();
        (subset.addresses.as_ref()?.len() == 2).then_some(subset)
    })
    .await;
    let port = &filled.ports.unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
    assert!(
        filled
            .addresses
            .unwrap()
            .iter()
            .all(|a| a.ip.starts_with("127.200."))
    );

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice = eventually(WAIT, "the endpoint slice", || async {
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .ok()?;
        list.items.into_iter().find(|s| s.endpoints.len() == 2)
    })
    .await;
    assert!(
        slice
            .endpoints
            .iter()
            .all(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
    );
    assert_eq!(slice.owner_references()[0].name, "web");

    let ingress = eventually(WAIT, "the load-balancer address", || async {
        let s = service_api.get("web").await.ok()?;
        s.status?.load_balancer?.ingress?.first()?.ip.clone()
    })
    .await;
    assert_eq!(
        ingress, cluster_ip,
        "the ingress address is the loopback cluster IP"
    );

    // Settled: endpoints are not rewritten on every resync.
    let versions = || async {
        let e = endpoints
            .get("web")
            .await
            .unwrap()
            .resource_version()
            .unwrap();
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .unwrap();
        let s: Vec<String> = list
            .items
            .iter()
            .map(|s| s.resource_version().unwrap())
            .collect();
        (e, s)
    };
    wait::settled(
        "the versions of web's Endpoints and EndpointSlices",
        WAIT,
        Duration::from_millis(1000),
        versions,
    )
    .await
    .unwrap();

    service_api
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually(WAIT, "the Endpoints to go with the Service", || async {
        endpoints.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn one_call_starts_every_simulator() {
    let (_server, client) = server().await;
    let simulation = Simulation::start(client.clone(), SimulationOptions::with_nodes(2))
        .await
        .unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    assert_eq!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    assert_eq!(
        simulation.fleet.as_ref().unwrap().names(),
        ["node1", "node2"]
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment("app", 1, None))
        .await
        .unwrap();
    eventually(WAIT, "app to be ready", || async {
        deployments
            .get("app")
            .await
            .ok()
            .filter(deployment_is_ready)
    })
    .await;
    simulation.stop();
    deployments
        .create(&PostParams::default(), &deployment("after", 1, None))
        .await
        .unwrap();
    // Over two of the workload simulator's resyncs: a write is what must not happen.
    wait::throughout(
        "after to stay unready: a stopped simulation writes nothing",
        Duration::from_millis(700),
        || async { (!deployment_is_ready(&deployments.get("after").await.unwrap())).then_some(()) },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn excluded_workloads_are_left_alone() {
    let (_server, client) = server().await;
    let exclude = std::collections::BTreeMap::from([(
        "app.kubernetes.io/component".to_owned(),
        "etcd".to_owned(),
    )]);
    let _sim = workloads::spawn(
        client.clone(),
        WorkloadOptions {
            exclude_labels: exclude,
            ..fast_workloads()
        },
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let mut etcd = deployment("etcd", 1, None);
    etcd.metadata.labels =
        Some([("app.kubernetes.io/component".to_owned(), "etcd".to_owned())].into());
    deployments
        .create(&PostParams::default(), &etcd)
        .await
        .unwrap();
    deployments
        .create(&PostParams::default(), &deployment("web", 1, None))
        .await
        .unwrap();
    eventually(WAIT, "web to be ready", || async {
        deployments
            .get("web")
            .await
            .ok()
            .filter(deployment_is_ready)
    })
    .await;
    // Web was handled, so a pass has run; over one more resync the excluded etcd must
    // stay untouched: a write is what must not happen.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    wait::throughout(
        "the excluded etcd to get no status and no pods",
        Duration::from_millis(400),
        || async {
            let status = deployments.get("etcd").await.unwrap().status;
            let listed = pods
                .list(&ListParams::default().labels("app=etcd"))
                .await
                .unwrap();
            match (status, listed.items.len()) {
                (None, 0) => Ok(()),
                (status, pods) => Err(format!("status {status:?}, {pods} pods")),
            }
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn kubelet_only_mode_runs_pods_that_controllers_created() {
    let (_server, client) = server().await;
    let options = WorkloadOptions {
        mode: WorkloadMode::KubeletOnly,
        ..fast_workloads()
    };
    let _sim = workloads::spawn(client.clone(), options);
    // What a real kube-controller-manager would have created: a StatefulSet and its pod,
    // and a bare pod that asks to stay unready.
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let set: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "default", "annotations": {READINESS_ANNOTATION: "delay=300ms"}},
        "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "db"}]}}}
    }))
    .unwrap();
    let set = sets.create(&PostParams::default(), &set).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let owned: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "db-0", "namespace": "default", "labels": {"app": "db"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": set.uid().unwrap(), "controller": true}]},
        "spec": {"nodeName": "node1", "containers": [{"name": "db", "image": "db"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &owned).await.unwrap();
    let stuck: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "stuck", "namespace": "default", "annotations": {READINESS_ANNOTATION: "never"}},
        "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "c"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &stuck).await.unwrap();
    let unscheduled: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "unscheduled", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "c"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &unscheduled)
        .await
        .unwrap();
    let running = eventually(WAIT, "db-0 to run", || async {
        let pod = pods.get("db-0").await.ok()?;
        pod.status.clone()?.pod_ip.map(|ip| (pod, ip))
    })
    .await;
    assert!(running.1.starts_with("127.200."));
    assert_eq!(running.0.status.unwrap().phase.as_deref(), Some("Running"));
    let stuck = pods.get("stuck").await.unwrap().status.unwrap();
    assert_eq!(
        (stuck.phase.as_deref(), stuck.pod_ip),
        (Some("Pending"), None),
        "`never` keeps a pod unready"
    );
    assert!(
        pods.get("unscheduled")
            .await
            .unwrap()
            .status
            .and_then(|s| s.phase)
            != Some("Running".into()),
        "a pod no scheduler bound is no kubelet's"
    );
    assert!(
        sets.get("db").await.unwrap().status.is_none(),
        "workload status is left to the real controllers"
    );
}

#[tokio::test]
async fn pods_get_the_default_service_account_a_real_apiserver_requires() {
    let (_server, client) = server().await;
    let _sim = workloads::spawn(client.clone(), fast_workloads());
    let namespace: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "team-x"}})).unwrap();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let mut web = deployment("web", 1, None);
    web.metadata.namespace = Some("team-x".to_owned());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "team-x");
    deployments
        .create(&PostParams::default(), &web)
        .await
        .unwrap();
    eventually(WAIT, "web to be ready", || async {
        deployments
            .get("web")
            .await
            .ok()
            .filter(deployment_is_ready)
    })
    .await;
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "team-x");
    assert!(accounts.get_opt("default").await.unwrap().is_some());
}
