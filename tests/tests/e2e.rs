//! The proposal's test plan, end to end: the chart's own manifests, the real `vc-webhook`
//! and `vc-controller` processes under their chart identities, the real `kubectl` and the
//! built `kubectl vc` plugin, against the test API server with simulated nodes (or, with
//! `KUBEBUILDER_ASSETS`, a real kube-apiserver; or, with `KOSMOS_VC_E2E_KUBECONFIG`, an
//! existing cluster). See `tests/README.md` ("End-to-end scenarios").
//!
//! Each scenario starts its own harness, prints its wall time, and on failure prints the
//! VirtualClusters, the nodes' claim labels, the tenants' Deployments and the webhook and
//! controller logs.

// Shared with chart.rs; the scenarios use only the render part.
#[allow(dead_code)]
#[path = "../chart/helm.rs"]
mod helm;

// Shared with the vc-sandbox binary; each uses a different part.
#[allow(dead_code)]
#[path = "e2e/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt as _;
use harness::{Harness, HostKind, NotStarted, Options, TENANT_NAMESPACE, WallTime};
use kube::runtime::watcher;
use serde_json::Value;
use vc_api::VirtualCluster;

/// Longest any single wait of a scenario lasts on the simulated hosts.
const WAIT: Duration = Duration::from_secs(60);

/// `--timeout` of the plugin's waits: real images on an existing cluster take longer to
/// pull and start than simulated workloads.
#[cfg(test)]
fn plugin_timeout(harness: &Harness) -> &'static str {
    if harness.kind == HostKind::External {
        "300s"
    } else {
        "90s"
    }
}

/// Starts a harness, or prints why the scenario is skipped.
#[cfg(test)]
async fn start(options: Options) -> Option<Harness> {
    match Harness::start(options).await {
        Ok(harness) => Some(harness),
        Err(NotStarted::Skip(why)) => {
            eprintln!("skipped: {why}");
            None
        }
        Err(NotStarted::Failed(error)) => panic!("the e2e harness did not start: {error:#}"),
    }
}

/// Every distinct phase `name` goes through, in order, as a watch sees it.
#[cfg(test)]
fn record_phases(
    harness: &Harness,
    name: &str,
) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let api: kube::Api<VirtualCluster> =
        kube::Api::namespaced(harness.admin.clone(), TENANT_NAMESPACE);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let sink = seen.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher::watcher(api, config).boxed();
        while let Some(event) = stream.next().await {
            let objects = match event {
                Ok(watcher::Event::Apply(vc) | watcher::Event::InitApply(vc)) => vec![vc],
                _ => continue,
            };
            for vc in objects {
                let phase = vc
                    .status
                    .and_then(|status| status.phase)
                    .map(|phase| phase.as_str().to_owned());
                if let Some(phase) = phase {
                    let mut seen = sink.lock().unwrap();
                    if seen.last() != Some(&phase) {
                        seen.push(phase);
                    }
                }
            }
        }
    });
    (seen, task)
}

/// Whether `wanted` appears in `seen` in this order (other phases may sit between).
#[cfg(test)]
fn in_order(seen: &[String], wanted: &[&str]) -> bool {
    let mut rest = seen.iter();
    wanted.iter().all(|phase| rest.any(|s| s == phase))
}

/// Pooled quantities the scenarios ask for: the proposal's numbers on simulated nodes,
/// small ones on an existing (kind) cluster whose nodes are small.
#[cfg(test)]
fn pooled(
    harness: &Harness,
    cpu: &'static str,
    memory: &'static str,
) -> (&'static str, &'static str) {
    if harness.kind == HostKind::External {
        ("100m", "128Mi")
    } else {
        (cpu, memory)
    }
}

/// `kubectl vc create NAME --nodes ... --cpu ... --memory ... --wait=completed`.
#[cfg(test)]
async fn create_completed(
    harness: &Harness,
    name: &str,
    nodes: &[&str],
    cpu: &str,
    memory: &str,
) -> String {
    let mut args = vec!["vc", "create", name];
    let joined = nodes.join(",");
    if !nodes.is_empty() {
        args.extend(["--nodes", &joined]);
    }
    args.extend([
        "--cpu",
        cpu,
        "--memory",
        memory,
        "--wait=completed",
        "--timeout",
        plugin_timeout(harness),
    ]);
    harness.operator.succeed(&args).await.unwrap()
}

/// Node names the tenant's apiserver lists, through `kubeconfig`.
#[cfg(test)]
async fn tenant_nodes(
    harness: &Harness,
    kubeconfig: &std::path::Path,
) -> Result<BTreeSet<String>, String> {
    let run = harness
        .operator
        .kubectl_with(
            kubeconfig,
            &["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"],
            None,
        )
        .await
        .map_err(|e| e.to_string())?;
    if !run.success {
        return Err(run.describe());
    }
    Ok(run.stdout.split_whitespace().map(str::to_owned).collect())
}

/// The claim labels of host node `node`: `NS/NAME` of its owner, if any.
#[cfg(test)]
async fn claim_of(harness: &Harness, node: &str) -> Option<String> {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(harness.admin.clone());
    let node = nodes.get(node).await.unwrap();
    let labels = node.metadata.labels.unwrap_or_default();
    let namespace = labels.get(vc_api::constants::NODE_OWNER_NAMESPACE_LABEL)?;
    let name = labels.get(vc_api::constants::NODE_OWNER_NAME_LABEL)?;
    Some(format!("{namespace}/{name}"))
}

#[cfg(test)]
fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// (1) Virtual Control Plane Creation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_control_plane_creation() {
    let _wall = WallTime::start("Virtual Control Plane Creation");
    let Some(harness) = start(Options::new("creation")).await else {
        return;
    };
    let (node1, node2) = (harness.nodes[0].clone(), harness.nodes[1].clone());
    let (phases, watch) = record_phases(&harness, "tenant1");
    let (cpu, memory) = pooled(&harness, "10", "100Gi");
    let created = create_completed(&harness, "tenant1", &[&node1, &node2], cpu, memory).await;
    assert!(
        created.contains("virtualcluster.kosmos.io/tenant1 created"),
        "{created}"
    );

    // The watch may lag the plugin's own wait by an event.
    let seen = harness
        .eventually("the watch to see Completed", WAIT, || async {
            let seen = phases.lock().unwrap().clone();
            if seen.last().map(String::as_str) == Some("Completed") {
                Ok(seen)
            } else {
                Err(format!("{seen:?}"))
            }
        })
        .await
        .unwrap();
    watch.abort();

    let vc = json(
        &harness
            .operator
            .succeed(&["get", "virtualcluster", "tenant1", "-o", "json"])
            .await
            .unwrap(),
    );
    let encoded = vc["spec"]["kubeconfig"].as_str().unwrap_or_default();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let kubeconfig = String::from_utf8(decoded).unwrap();
    assert!(
        kubeconfig.contains("clusters:") && kubeconfig.contains("server: https://"),
        "{kubeconfig}"
    );

    let server = harness.tenant_server("tenant1").await.unwrap();
    let mut use_context = vec!["vc", "use-context", "tenant1"];
    if let Some(server) = &server {
        use_context.extend(["--server", server]);
    }
    let switched = harness.operator.succeed(&use_context).await.unwrap();
    assert_eq!(switched.trim(), "Switched to context \"vc-tenant1\".");
    let listed = tenant_nodes(&harness, &harness.operator.kubeconfig)
        .await
        .unwrap();
    assert!(
        listed.contains(&node1) && listed.contains(&node2),
        "tenant nodes: {listed:?}"
    );
    for other in &harness.nodes[2..] {
        assert!(
            !listed.contains(other),
            "host node {other} leaked into the tenant: {listed:?}"
        );
    }

    etcd::tenant_etcd_is_real(&harness, "tenant1").await;

    assert!(
        in_order(&seen, &["Preparing", "Initialized", "Completed"]),
        "phases seen: {seen:?}"
    );
}

#[cfg(test)]
#[path = "e2e/etcd.rs"]
mod etcd;

/// (2) Service Creation in the Virtual Control Plane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_creation_in_the_virtual_control_plane() {
    let _wall = WallTime::start("Service Creation in the Virtual Control Plane");
    let Some(harness) = start(Options::new("service")).await else {
        return;
    };
    let (node1, node2) = (harness.nodes[0].clone(), harness.nodes[1].clone());
    let (cpu, memory) = pooled(&harness, "10", "100Gi");
    create_completed(&harness, "tenant1", &[&node1, &node2], cpu, memory).await;
    let tenant = harness.tenant_kubeconfig("tenant1").await.unwrap();
    let in_tenant = |args: &'static [&'static str]| {
        let tenant = tenant.clone();
        let harness = &harness;
        async move {
            harness
                .operator
                .kubectl_with(&tenant, args, None)
                .await
                .unwrap()
        }
    };

    // kubectl's typed `create deployment` sends protobuf, which the test API server does
    // not decode; kubectl renders the same objects client-side and applies them as JSON.
    let deployment = in_tenant(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=2",
        "--port=80",
        "--dry-run=client",
        "-o",
        "json",
    ])
    .await;
    let deployment = deployment.ok().unwrap();
    harness.operator.apply(&tenant, &deployment).await.unwrap();
    let service = in_tenant(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=80",
        "--dry-run=client",
        "-o",
        "json",
    ])
    .await;
    let service = service.ok().unwrap();
    harness.operator.apply(&tenant, &service).await.unwrap();

    // The tenant's own API server allocates the cluster IP, from the tenant's range.
    let service = json(
        &in_tenant(&["get", "service", "web", "-o", "json"])
            .await
            .ok()
            .unwrap(),
    );
    let cluster_ip = service["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let host_ip = harness
        .operator
        .succeed(&[
            "get",
            "service",
            "tenant1-apiserver",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .await
        .unwrap();
    assert!(!cluster_ip.is_empty() && cluster_ip != "None", "{service}");
    assert_ne!(
        cluster_ip, host_ip,
        "tenant and host allocate from their own ranges"
    );

    // The Deployment's pods become ready in the tenant and back the Service.
    let addresses = harness
        .eventually(
            "2 ready endpoints of Service web in the tenant",
            WAIT,
            || async {
                let run = harness
                    .operator
                    .kubectl_with(
                        &tenant,
                        &[
                            "get",
                            "endpointslices",
                            "-l",
                            "kubernetes.io/service-name=web",
                            "-o",
                            "json",
                        ],
                        None,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let list: Value = serde_json::from_str(&run.stdout)
                    .map_err(|e| format!("{e}: {}", run.describe()))?;
                let ready: Vec<String> = list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|slice| slice["endpoints"].as_array().cloned().unwrap_or_default())
                    .filter(|endpoint| endpoint["conditions"]["ready"] == true)
                    .flat_map(|endpoint| {
                        endpoint["addresses"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                    })
                    .filter_map(|address| address.as_str().map(str::to_owned))
                    .collect();
                if ready.len() == 2 {
                    Ok(ready)
                } else {
                    Err(run.stdout)
                }
            },
        )
        .await
        .unwrap();
    let endpoints = in_tenant(&[
        "get",
        "endpoints",
        "web",
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}",
    ])
    .await;
    let mut legacy: Vec<&str> = endpoints.stdout.split_whitespace().collect();
    legacy.sort_unstable();
    let mut sliced: Vec<&str> = addresses.iter().map(String::as_str).collect();
    sliced.sort_unstable();
    assert_eq!(legacy, sliced, "Endpoints and EndpointSlices agree");

    // What the clustertree would carry to the host, as far as the host's API shows it:
    // the tenant's workloads land in the host namespace vc-default-tenant1, capped by a
    // ResourceQuota equal to the pooled share, and the clustertree's identity may create
    // pods and services there and nowhere else, and read exactly the promoted nodes.
    let workload_namespace =
        vc_api::constants::tenant_workload_namespace(TENANT_NAMESPACE, "tenant1");
    let quota = json(
        &harness
            .operator
            .succeed(&[
                "get",
                "resourcequota",
                "tenant1-pool",
                "-n",
                &workload_namespace,
                "-o",
                "json",
            ])
            .await
            .unwrap(),
    );
    let hard = &quota["spec"]["hard"];
    let cpu_hard = hard["cpu"]
        .as_str()
        .or(hard["requests.cpu"].as_str())
        .unwrap_or_default();
    let memory_hard = hard["memory"]
        .as_str()
        .or(hard["requests.memory"].as_str())
        .unwrap_or_default();
    assert_eq!((cpu_hard, memory_hard), (cpu, memory), "{quota}");
    if harness.kind == HostKind::External {
        return;
    }
    let clustertree = harness
        .kubeconfig_for(
            "system:serviceaccount:default:tenant1-clustertree",
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:default",
                "system:authenticated",
            ],
        )
        .unwrap();
    // Server-side dry runs as the clustertree's identity: RBAC decides, nothing is stored.
    let attempt = |args: Vec<String>, manifest: Option<String>| {
        let clustertree = clustertree.clone();
        let harness = &harness;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            harness
                .operator
                .kubectl_with(&clustertree, &args, manifest.as_deref())
                .await
                .unwrap()
        }
    };
    let create = |kind: &str, namespace: &str| {
        let object = if kind == "Pod" {
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "carried", "namespace": namespace},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}})
        } else {
            serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "carried", "namespace": namespace},
                "spec": {"ports": [{"port": 80}]}})
        };
        let args = ["create", "--dry-run=server", "--validate=false", "-f", "-"]
            .map(str::to_owned)
            .to_vec();
        attempt(args, Some(object.to_string()))
    };
    for kind in ["Pod", "Service"] {
        let allowed = create(kind, &workload_namespace).await;
        assert!(allowed.success, "{}", allowed.describe());
        let refused = create(kind, "default").await;
        assert!(
            !refused.success && refused.stderr.contains("forbidden"),
            "{}",
            refused.describe()
        );
    }
    let read_node = |node: String| attempt(vec!["get".to_owned(), "node".to_owned(), node], None);
    let promoted = read_node(node1.clone()).await;
    assert!(promoted.success, "{}", promoted.describe());
    let unpromoted = read_node(harness.nodes[2].clone()).await;
    assert!(
        !unpromoted.success && unpromoted.stderr.contains("forbidden"),
        "{}",
        unpromoted.describe()
    );
}

/// A kubeconfig with `server`'s cluster entry and `user`'s credentials (both admin
/// kubeconfigs the controller wrote), to try one tenant's credentials on another.
#[cfg(test)]
fn crossed_kubeconfig(
    server: &std::path::Path,
    user: &std::path::Path,
    out: &std::path::Path,
) -> std::path::PathBuf {
    let read = |path: &std::path::Path| -> serde_yaml::Value {
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let mut crossed = read(server);
    crossed["users"] = read(user)["users"].clone();
    let user_name = crossed["users"][0]["name"].clone();
    crossed["contexts"][0]["context"]["user"] = user_name;
    std::fs::write(out, serde_yaml::to_string(&crossed).unwrap()).unwrap();
    out.to_owned()
}

/// (3) Isolation between tenants, and between tenants and the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation() {
    let _wall = WallTime::start("Isolation");
    let Some(harness) = start(Options::new("isolation")).await else {
        return;
    };
    let [node1, node2, node3] = [0, 1, 2].map(|i| harness.nodes[i].clone());
    let (cpu, memory) = pooled(&harness, "2", "4Gi");
    create_completed(&harness, "tenant1", &[&node1, &node2], cpu, memory).await;

    // The webhook refuses a node another tenant holds, naming the holder.
    let refused = harness
        .operator
        .kubectl(&[
            "vc", "create", "tenant2", "--nodes", &node2, "--cpu", cpu, "--memory", memory,
        ])
        .await
        .unwrap();
    assert!(!refused.success, "{}", refused.describe());
    assert!(
        refused.stderr.contains(&format!(
            "node \"{node2}\" already belongs to VirtualCluster default/tenant1"
        )),
        "{}",
        refused.describe()
    );
    create_completed(&harness, "tenant2", &[&node3], cpu, memory).await;

    let dir = harness.work_dir().to_owned();
    let tenant1 = harness.tenant_kubeconfig("tenant1").await.unwrap();
    let tenant2 = harness.tenant_kubeconfig("tenant2").await.unwrap();
    for (own, other, label) in [
        (&tenant1, &tenant2, "tenant1->tenant2"),
        (&tenant2, &tenant1, "tenant2->tenant1"),
    ] {
        // Trusting its own CA, a tenant's kubeconfig does not accept the other's server.
        let other_server = read_server(other);
        let tls = harness
            .operator
            .kubectl_with(own, &["--server", &other_server, "get", "namespaces"], None)
            .await
            .unwrap();
        assert!(!tls.success, "{label}: {}", tls.describe());
        assert!(
            tls.stderr.contains("x509") || tls.stderr.contains("certificate"),
            "{label}: {}",
            tls.describe()
        );
        // Trusting the other's CA, its client certificate is not accepted there.
        let crossed = crossed_kubeconfig(other, own, &dir.join(format!("{label}.kubeconfig")));
        let auth = harness
            .operator
            .kubectl_with(&crossed, &["get", "namespaces"], None)
            .await
            .unwrap();
        assert!(!auth.success, "{label}: {}", auth.describe());
        assert!(
            // Refused in the TLS handshake (client certificate from an untrusted CA)
            // or by authentication: either way, no request is served.
            auth.stderr.contains("Unauthorized") || auth.stderr.contains("remote error: tls:"),
            "{label}: {}",
            auth.describe()
        );
    }

    // Neither tenant sees the host: not its namespaces, nodes, nor VirtualClusters.
    for (kubeconfig, own_nodes) in [(&tenant1, vec![&node1, &node2]), (&tenant2, vec![&node3])] {
        let namespace = harness
            .operator
            .kubectl_with(
                kubeconfig,
                &["get", "namespace", harness::RELEASE_NAMESPACE],
                None,
            )
            .await
            .unwrap();
        assert!(
            !namespace.success && namespace.stderr.contains("NotFound"),
            "{}",
            namespace.describe()
        );
        let listed = tenant_nodes(&harness, kubeconfig).await.unwrap();
        for node in &harness.nodes {
            assert_eq!(
                listed.contains(node),
                own_nodes.contains(&node),
                "{node} in {listed:?}"
            );
        }
        let virtual_clusters = harness
            .operator
            .kubectl_with(
                kubeconfig,
                &["get", "virtualclusters.kosmos.io", "-A"],
                None,
            )
            .await
            .unwrap();
        assert!(!virtual_clusters.success, "{}", virtual_clusters.describe());
        let secrets = harness
            .operator
            .kubectl_with(
                kubeconfig,
                &["get", "secrets", "-n", TENANT_NAMESPACE, "-o", "name"],
                None,
            )
            .await
            .unwrap();
        assert!(
            !secrets.stdout.contains("tenant1-ca"),
            "{}",
            secrets.describe()
        );
    }
}

#[cfg(test)]
fn read_server(kubeconfig: &std::path::Path) -> String {
    let value: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(kubeconfig).unwrap()).unwrap();
    value["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// (4) Quota of the shared pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota() {
    let _wall = WallTime::start("Quota");
    let Some(harness) = start(Options::new("quota")).await else {
        return;
    };
    if harness.kind == HostKind::External {
        eprintln!("skipped: the quota numbers assume the simulated pool of 6 nodes x 8 CPUs");
        return;
    }
    let node1 = harness.nodes[0].clone();
    // Pool: node2..node6 once node1 is promoted = 5 x 8 CPUs.
    let refused = harness
        .operator
        .kubectl(&[
            "vc", "create", "big", "--nodes", &node1, "--cpu", "100", "--memory", "1Gi",
        ])
        .await
        .unwrap();
    assert!(!refused.success, "{}", refused.describe());
    assert!(
        refused
            .stderr
            .contains("pooled cpu request 100 exceeds what the shared pool can give: capacity 40")
            && refused.stderr.contains("available 40"),
        "{}",
        refused.describe()
    );
    let absent = harness
        .operator
        .kubectl(&["get", "virtualcluster", "big"])
        .await
        .unwrap();
    assert!(
        !absent.success,
        "a refused VirtualCluster is not stored: {}",
        absent.describe()
    );

    let fits = harness
        .operator
        .kubectl(&[
            "vc", "create", "fits", "--nodes", &node1, "--cpu", "30", "--memory", "64Gi",
        ])
        .await
        .unwrap();
    assert!(fits.success, "{}", fits.describe());
    // What is left is what the second request is measured against.
    let second = harness
        .eventually(
            "the webhook to count the 30 CPUs of `fits`",
            WAIT,
            || async {
                let run = harness
                    .operator
                    .kubectl(&["vc", "create", "second", "--cpu", "20", "--memory", "1Gi"])
                    .await
                    .map_err(|e| e.to_string())?;
                if !run.success
                    && run
                        .stderr
                        .contains("already reserved by other VirtualClusters 30")
                {
                    Ok(run)
                } else {
                    Err(run.describe())
                }
            },
        )
        .await
        .unwrap();
    assert!(
        second.stderr.contains("pooled cpu request 20 exceeds")
            && second.stderr.contains("available 10"),
        "{}",
        second.describe()
    );
    let rest = harness
        .operator
        .kubectl(&["vc", "create", "second", "--cpu", "10", "--memory", "1Gi"])
        .await
        .unwrap();
    assert!(rest.success, "{}", rest.describe());
}

/// (5) Lifecycle: nodes in and out, then delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle() {
    let _wall = WallTime::start("Lifecycle");
    let Some(harness) = start(Options::new("lifecycle")).await else {
        return;
    };
    let [node1, node2, node3] = [0, 1, 2].map(|i| harness.nodes[i].clone());
    let (cpu, memory) = pooled(&harness, "2", "4Gi");
    create_completed(&harness, "tenant1", &[&node1, &node2], cpu, memory).await;
    let switched = harness
        .operator
        .succeed(&["vc", "use-context", "tenant1", "--no-switch"])
        .await
        .unwrap();
    assert!(switched.contains("vc-tenant1"), "{switched}");
    let tenant = harness.tenant_kubeconfig("tenant1").await.unwrap();

    harness
        .operator
        .succeed(&["vc", "nodes", "add", "tenant1", &node3])
        .await
        .unwrap();
    harness
        .eventually(&format!("{node3} to appear in tenant1"), WAIT, || async {
            let listed = tenant_nodes(&harness, &tenant).await?;
            if listed.contains(&node3) {
                Ok(())
            } else {
                Err(format!("{listed:?}"))
            }
        })
        .await
        .unwrap();
    assert_eq!(
        claim_of(&harness, &node3).await.as_deref(),
        Some("default/tenant1")
    );

    harness
        .operator
        .succeed(&["vc", "nodes", "remove", "tenant1", &node3])
        .await
        .unwrap();
    harness
        .eventually(
            &format!("{node3} to return to the pool (claim labels gone)"),
            WAIT,
            || async {
                match claim_of(&harness, &node3).await {
                    None => Ok(()),
                    Some(owner) => Err(format!("still claimed by {owner}")),
                }
            },
        )
        .await
        .unwrap();
    harness
        .eventually(&format!("{node3} to leave tenant1"), WAIT, || async {
            let listed = tenant_nodes(&harness, &tenant).await?;
            if listed.contains(&node3) {
                Err(format!("{listed:?}"))
            } else {
                Ok(())
            }
        })
        .await
        .unwrap();

    let deleted = harness
        .operator
        .succeed(&[
            "vc",
            "delete",
            "tenant1",
            "--wait",
            "--timeout",
            plugin_timeout(&harness),
        ])
        .await
        .unwrap();
    assert!(
        deleted.contains("virtualcluster.kosmos.io \"tenant1\" deleted"),
        "{deleted}"
    );
    assert!(
        deleted.contains("Removed context \"vc-tenant1\""),
        "{deleted}"
    );
    let contexts = harness
        .operator
        .succeed(&["config", "get-contexts", "-o", "name"])
        .await
        .unwrap();
    assert!(!contexts.lines().any(|c| c == "vc-tenant1"), "{contexts}");

    let gone = harness
        .operator
        .kubectl(&["get", "virtualcluster", "tenant1"])
        .await
        .unwrap();
    assert!(
        !gone.success && gone.stderr.contains("NotFound"),
        "{}",
        gone.describe()
    );
    // Owned objects go with the garbage collector; cluster-scoped ones with the finalizer.
    let workload_namespace =
        vc_api::constants::tenant_workload_namespace(TENANT_NAMESPACE, "tenant1");
    harness
        .eventually("every object of tenant1 to be gone", WAIT, || async {
            let owned = harness
                .operator
                .kubectl(&[
                    "get",
                    "secrets,deployments,statefulsets,services,serviceaccounts",
                    "-n",
                    TENANT_NAMESPACE,
                    "-l",
                    "vc.kosmos.io/virtualcluster=tenant1",
                    "-o",
                    "name",
                ])
                .await
                .map_err(|e| e.to_string())?;
            let cluster_scoped = harness
                .operator
                .kubectl(&[
                    "get",
                    &format!("namespace/{workload_namespace}"),
                    "clusterrole/kosmos-vc:default:tenant1:clustertree",
                    "clusterrolebinding/kosmos-vc:default:tenant1:clustertree",
                    "-o",
                    "name",
                    "--ignore-not-found",
                ])
                .await
                .map_err(|e| e.to_string())?;
            let left = format!("{}{}", owned.stdout, cluster_scoped.stdout);
            if owned.success && cluster_scoped.success && left.trim().is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{}\n{}",
                    owned.describe(),
                    cluster_scoped.describe()
                ))
            }
        })
        .await
        .unwrap();
    for node in &harness.nodes {
        assert_eq!(
            claim_of(&harness, node).await,
            None,
            "{node} is still claimed"
        );
    }
}

/// (6) The controller dies mid-provisioning; the tenant converges with the same CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_restart_mid_provisioning() {
    let _wall = WallTime::start("Controller restart mid-provisioning");
    let mut options = Options::new("restart");
    // Slow workloads leave a window between the PKI Secrets and Initialized.
    options.workload_delay = Duration::from_secs(3);
    let Some(mut harness) = start(options).await else {
        return;
    };
    if harness.kind == HostKind::External {
        eprintln!(
            "skipped: the controller runs in the cluster; this scenario restarts a local process"
        );
        return;
    }
    let node1 = harness.nodes[0].clone();
    harness
        .operator
        .succeed(&[
            "vc", "create", "tenant1", "--nodes", &node1, "--cpu", "2", "--memory", "4Gi",
        ])
        .await
        .unwrap();
    let ca_before = harness
        .eventually("Secret tenant1-ca", WAIT, || read_ca(&harness))
        .await
        .unwrap();
    harness.kill_controller().unwrap();
    let phase = harness
        .operator
        .succeed(&[
            "get",
            "virtualcluster",
            "tenant1",
            "-o",
            "jsonpath={.status.phase}",
        ])
        .await
        .unwrap();
    assert!(
        !matches!(phase.as_str(), "Initialized" | "Completed"),
        "the controller was killed too late to test a restart mid-provisioning (phase {phase})"
    );

    harness.start_controller().await.unwrap();
    harness
        .eventually(
            "tenant1 to reach Completed after the restart",
            WAIT,
            || async {
                let phase = harness
                    .operator
                    .kubectl(&[
                        "get",
                        "virtualcluster",
                        "tenant1",
                        "-o",
                        "jsonpath={.status.phase}",
                    ])
                    .await
                    .map_err(|e| e.to_string())?;
                if phase.stdout == "Completed" {
                    Ok(())
                } else {
                    Err(phase.describe())
                }
            },
        )
        .await
        .unwrap();
    let ca_after = harness
        .eventually("Secret tenant1-ca", WAIT, || read_ca(&harness))
        .await
        .unwrap();
    assert_eq!(
        ca_before, ca_after,
        "the tenant CA was replaced by the restarted controller"
    );
    // The kubeconfig written after the restart trusts that same CA, and works.
    let tenant = harness.tenant_kubeconfig("tenant1").await.unwrap();
    let listed = tenant_nodes(&harness, &tenant).await.unwrap();
    assert!(listed.contains(&node1), "{listed:?}");
    let kubeconfig: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&tenant).unwrap()).unwrap();
    assert_eq!(
        kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"].as_str(),
        Some(ca_before.as_str())
    );
}

/// The CA certificate of Secret tenant1-ca (`tls.crt`; a CA Secret has no `ca.crt`), base64 as stored.
#[cfg(test)]
async fn read_ca(harness: &Harness) -> Result<String, String> {
    let run = harness
        .operator
        .kubectl(&[
            "get",
            "secret",
            "tenant1-ca",
            "-o",
            "jsonpath={.data.tls\\.crt}",
        ])
        .await
        .map_err(|e| e.to_string())?;
    if run.success && !run.stdout.trim().is_empty() {
        Ok(run.stdout.trim().to_owned())
    } else {
        Err(run.describe())
    }
}

/// Real apiserver mode: the same installation on kube-apiserver + etcd from
/// `KUBEBUILDER_ASSETS` (webhook configurations by `url`, since a real apiserver refuses
/// loopback endpoints), with the simulators outside it as clients. What a real apiserver
/// adds over the test API server: its RBAC (escalation checks on the controller's
/// ClusterRoles), its admission chain calling vc-webhook, its CRD validation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_apiserver_admission_and_provisioning() {
    let _wall = WallTime::start("Real apiserver: admission and provisioning");
    let mut options = Options::new("real-apiserver");
    options.host = HostKind::RealApiServer;
    let Some(harness) = start(options).await else {
        return;
    };
    let [node1, node2] = [0, 1].map(|i| harness.nodes[i].clone());
    harness
        .operator
        .succeed(&[
            "vc",
            "create",
            "tenant1",
            "--nodes",
            &format!("{node1},{node2}"),
            "--cpu",
            "10",
            "--memory",
            "100Gi",
        ])
        .await
        .unwrap();
    let stored = json(
        &harness
            .operator
            .succeed(&["get", "virtualcluster", "tenant1", "-o", "json"])
            .await
            .unwrap(),
    );
    assert_eq!(
        stored["spec"]["kubernetesVersion"], "v1.33.4",
        "defaulted by vc-webhook: {stored}"
    );

    let refused = harness
        .eventually("the webhook to refuse node2 for tenant2", WAIT, || async {
            let run = harness
                .operator
                .kubectl(&["vc", "create", "tenant2", "--nodes", &node2])
                .await
                .map_err(|e| e.to_string())?;
            if !run.success
                && run
                    .stderr
                    .contains("already belongs to VirtualCluster default/tenant1")
            {
                Ok(run)
            } else {
                Err(run.describe())
            }
        })
        .await
        .unwrap();
    assert!(
        refused.stderr.contains(&format!("node \"{node2}\"")),
        "{}",
        refused.describe()
    );
    let quota = harness
        .operator
        .kubectl(&["vc", "create", "big", "--cpu", "1000", "--memory", "1Gi"])
        .await
        .unwrap();
    assert!(
        !quota.success && quota.stderr.contains("pooled cpu request 1000 exceeds"),
        "{}",
        quota.describe()
    );

    // vc-controller, with only the chart's RBAC, claims the nodes and lays out the
    // control plane (the tenant apiserver itself cannot start here: its Service's cluster
    // IP is not a local address).
    harness
        .eventually(
            "tenant1's node claims, CA Secret and etcd StatefulSet",
            WAIT,
            || async {
                let claims = [
                    claim_of(&harness, &node1).await,
                    claim_of(&harness, &node2).await,
                ];
                let objects = harness
                    .operator
                    .kubectl(&[
                        "get",
                        "secret/tenant1-ca",
                        "statefulset/tenant1-etcd",
                        "deployment/tenant1-apiserver",
                        "-o",
                        "name",
                    ])
                    .await
                    .map_err(|e| e.to_string())?;
                let tenant = Some("default/tenant1".to_owned());
                if claims.iter().all(|c| *c == tenant) && objects.success {
                    Ok(())
                } else {
                    Err(format!("claims {claims:?}; {}", objects.describe()))
                }
            },
        )
        .await
        .unwrap();
}
