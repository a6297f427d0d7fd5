//! The NetworkPolicies fencing a tenant, on a real kube-apiserver: vc-controller runs
//! in-process against it with the harness's stand-in for kubelets and tenant apiservers
//! (so the chain reaches the workload namespace), and the test reads the policies back
//! and asks the apiserver which pods and namespaces their selectors pick. Enforcement is
//! the host CNI's; this machine has none, so what is proved is that every policy is
//! accepted as written and selects exactly what it means to.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use vc_api::VirtualCluster;
use vc_api::constants::{TENANT_NAME_LABEL, tenant_workload_namespace};
use vc_controller::runner::{RunConfig, run};
use vc_controller::telemetry::{Health, Metrics};
use vc_test_apiserver::envtest::{EnvtestOptions, TestCluster, private_service_cidr};

use crate::controller_common::{kubelet_loop, test_timing};
use crate::controller_volumes::{create_namespace, install_crd};
use crate::support::eventually::eventually;

const NS: &str = "team-a";
const WAIT: Duration = Duration::from_secs(90);

/// `selector` as a list request's label selector (our policies use matchLabels only).
fn label_query(selector: &LabelSelector) -> String {
    assert!(
        selector.match_expressions.is_none(),
        "only matchLabels is expected: {selector:?}"
    );
    selector
        .match_labels
        .iter()
        .flatten()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Names of the pods of `namespace` the apiserver selects with `selector`.
async fn selected_pods(
    client: &Client,
    namespace: &str,
    selector: &LabelSelector,
) -> BTreeSet<String> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&label_query(selector)))
        .await
        .unwrap()
        .into_iter()
        .map(|pod| pod.name_any())
        .collect()
}

/// One real pod per control-plane workload of `namespace`, named after it and labelled
/// as its template says: what the policies must select among.
async fn create_template_pods(client: &Client) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    // No kube-controller-manager makes the namespace's ServiceAccount, which pods need.
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let mut templates: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for deployment in Api::<Deployment>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        let labels = deployment
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .labels
            .unwrap();
        templates.push((deployment.metadata.name.unwrap(), labels));
    }
    for set in Api::<StatefulSet>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        let labels = set.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        templates.push((set.metadata.name.unwrap(), labels));
    }
    // A user's own pod beside the tenants: no policy of ours may select it.
    templates.push((
        "user-app".to_owned(),
        BTreeMap::from([("app".to_owned(), "web".to_owned())]),
    ));
    for (name, labels) in templates {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-pod"), "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "example.invalid/c:1"}]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_namespace_denies_other_tenants_ingress() {
    let Some(cluster) = TestCluster::real_or_skip_with(EnvtestOptions {
        service_cidr: private_service_cidr(),
        ..EnvtestOptions::default()
    })
    .await
    .expect("envtest starts") else {
        return;
    };
    let client = cluster.client().await.unwrap();
    install_crd(&client).await;
    create_namespace(&client, NS).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let flags = <vc_controller::flags::Flags as clap::Parser>::parse_from([
        "vc-controller",
        "--host-pod-cidrs=10.244.0.0/16,fd00:10:244::/56",
    ]);
    let controller = tokio::spawn(run(
        client.clone(),
        RunConfig {
            timing: test_timing(),
            ..RunConfig::from_flags(&flags)
        },
        Arc::new(Metrics::default()),
        Arc::new(Health::default()),
        async move {
            let _ = stopped.await;
        },
    ));
    let tenants = Arc::new(Mutex::new(BTreeMap::new()));
    let stand_in = tokio::spawn(kubelet_loop(
        client.clone(),
        true,
        tenants.clone(),
        Arc::default(),
    ));

    let vcs: Api<VirtualCluster> = Api::namespaced(client.clone(), NS);
    for name in ["prod", "dev"] {
        let vc: VirtualCluster = serde_json::from_value(json!({
            "apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"promoteResources": {"resources": {"cpu": 1, "memory": "1Gi"}}},
        }))
        .unwrap();
        vcs.create(&PostParams::default(), &vc).await.unwrap();
    }

    // Both tenants complete: every workload exists, and the chain has reached the
    // workload namespaces, which the real apiserver labels with their own names.
    for name in ["prod", "dev"] {
        eventually(WAIT, &format!("{name} Completed"), || {
            let vcs = vcs.clone();
            async move {
                let vc = vcs.get(name).await.ok()?;
                (vc.status?.phase? == vc_api::Phase::Completed).then_some(())
            }
        })
        .await;
    }
    let policies: Api<NetworkPolicy> = Api::all(client.clone());
    let all = eventually(WAIT, "every NetworkPolicy of prod and dev", || {
        let policies = policies.clone();
        async move {
            let all = policies.list(&ListParams::default()).await.ok()?.items;
            (all.len() == 12).then_some(all)
        }
    })
    .await;
    let by_key: BTreeMap<String, NetworkPolicy> = all
        .into_iter()
        .map(|policy| {
            (
                format!("{}/{}", policy.namespace().unwrap(), policy.name_any()),
                policy,
            )
        })
        .collect();
    let prod_workloads = tenant_workload_namespace(NS, "prod");
    let expected: BTreeSet<String> = ["prod", "dev"]
        .into_iter()
        .flat_map(|name| {
            let workload = tenant_workload_namespace(NS, name);
            [
                "etcd",
                "apiserver",
                "controller-manager",
                "scheduler",
                "clustertree",
            ]
            .into_iter()
            .map(move |component| format!("{NS}/{name}-{component}"))
            .chain([format!("{workload}/{name}-workloads")])
        })
        .collect();
    assert_eq!(by_key.keys().cloned().collect::<BTreeSet<_>>(), expected);
    for policy in by_key.values() {
        assert_eq!(
            policy.labels().get(TENANT_NAME_LABEL).map(String::as_str),
            policy.name_any().split('-').next(),
            "{} is labelled as its tenant's",
            policy.name_any()
        );
    }

    create_template_pods(&client).await;
    let spec = |key: &str| by_key[key].spec.clone().unwrap();
    let pods = |names: &[&str]| -> BTreeSet<String> {
        names.iter().map(|name| format!("{name}-pod")).collect()
    };

    // Each control-plane policy isolates exactly its own component's pod of prod.
    for (component, workload) in [
        ("etcd", "prod-etcd"),
        ("apiserver", "prod-apiserver"),
        ("controller-manager", "prod-controller-manager"),
        ("scheduler", "prod-scheduler"),
        ("clustertree", "prod-clustertree"),
    ] {
        let spec = spec(&format!("{NS}/prod-{component}"));
        assert_eq!(
            selected_pods(&client, NS, spec.pod_selector.as_ref().unwrap()).await,
            pods(&[workload]),
            "prod-{component} selects"
        );
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]));
    }

    // etcd: the client port from prod's apiserver, the peer port from prod's etcd, and
    // nothing for the metrics port.
    let etcd = spec(&format!("{NS}/prod-etcd")).ingress.unwrap();
    let mut admitted = Vec::new();
    for rule in &etcd {
        let ports: Vec<String> = rule
            .ports
            .iter()
            .flatten()
            .map(|port| format!("{:?}/{}", port.port, port.protocol.clone().unwrap()))
            .collect();
        let peer = &rule.from.as_ref().unwrap()[0];
        assert!(peer.namespace_selector.is_none() && peer.ip_block.is_none());
        admitted.push((
            ports,
            selected_pods(&client, NS, peer.pod_selector.as_ref().unwrap()).await,
        ));
    }
    assert_eq!(
        admitted,
        [
            (
                vec!["Some(Int(2379))/TCP".to_owned()],
                pods(&["prod-apiserver"])
            ),
            (vec!["Some(Int(2380))/TCP".to_owned()], pods(&["prod-etcd"])),
        ]
    );

    // Controller-manager and scheduler admit no pod at all.
    for component in ["controller-manager", "scheduler"] {
        assert!(spec(&format!("{NS}/prod-{component}")).ingress.is_none());
    }

    // The clustertree: kubelet API from prod's apiserver, DNS from prod's workloads.
    let tree = spec(&format!("{NS}/prod-clustertree")).ingress.unwrap();
    assert_eq!(
        selected_pods(
            &client,
            NS,
            tree[0].from.as_ref().unwrap()[0]
                .pod_selector
                .as_ref()
                .unwrap()
        )
        .await,
        pods(&["prod-apiserver"])
    );
    let dns_from = tree[1].from.as_ref().unwrap()[0]
        .namespace_selector
        .clone()
        .unwrap();
    let selected_namespaces: BTreeSet<String> = namespaces
        .list(&ListParams::default().labels(&label_query(&dns_from)))
        .await
        .unwrap()
        .into_iter()
        .map(|namespace| namespace.name_any())
        .collect();
    assert_eq!(
        selected_namespaces,
        BTreeSet::from([prod_workloads.clone()])
    );

    // The workload namespace: every pod there, its own pods and prod's apiserver
    // admitted, and the outside of the host's pod network.
    let workloads = spec(&format!("{prod_workloads}/prod-workloads"));
    assert_eq!(workloads.pod_selector, Some(LabelSelector::default()));
    let ingress = workloads.ingress.unwrap();
    assert_eq!(ingress.len(), 3);
    let same_namespace = &ingress[0].from.as_ref().unwrap()[0];
    assert_eq!(same_namespace.pod_selector, Some(LabelSelector::default()));
    assert!(same_namespace.namespace_selector.is_none());
    let apiserver = &ingress[1].from.as_ref().unwrap()[0];
    let apiserver_namespaces: BTreeSet<String> = namespaces
        .list(
            &ListParams::default()
                .labels(&label_query(apiserver.namespace_selector.as_ref().unwrap())),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|namespace| namespace.name_any())
        .collect();
    assert_eq!(apiserver_namespaces, BTreeSet::from([NS.to_owned()]));
    assert_eq!(
        selected_pods(&client, NS, apiserver.pod_selector.as_ref().unwrap()).await,
        pods(&["prod-apiserver"])
    );
    let blocks: Vec<(String, Vec<String>)> = ingress[2]
        .from
        .iter()
        .flatten()
        .map(|peer| {
            let block = peer.ip_block.clone().unwrap();
            (block.cidr, block.except.unwrap_or_default())
        })
        .collect();
    assert_eq!(
        blocks,
        [
            ("0.0.0.0/0".to_owned(), vec!["10.244.0.0/16".to_owned()]),
            ("::/0".to_owned(), vec!["fd00:10:244::/56".to_owned()]),
        ]
    );

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
    stand_in.abort();
    drop(tenants);
}
