//! The proposal's test plan, end to end: the chart's own manifests, the real `vc-webhook`
//! and `vc-controller` processes under their chart identities, the real `kubectl` and the
//! built `kubectl vc` plugin, against the test API server with simulated nodes (or, with
//! `KOSMOS_VC_E2E_KUBECONFIG`, an existing cluster). Every scenario also has a `real_` twin
//! on a real kube-apiserver from `KUBEBUILDER_ASSETS`, where the tenants' control planes
//! run as local processes from the flags the controller rendered; without the assets the
//! twin prints `skipped: ...`. See `tests/README.md` ("End-to-end scenarios").
//!
//! Each scenario starts its own harness, prints its wall time, and on failure prints the
//! VirtualClusters, the nodes' claim labels, the tenants' Deployments and the webhook and
//! controller logs.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt as _;
use kube::runtime::watcher;
use serde_json::Value;
use vc_api::VirtualCluster;
use vc_tests::harness::{self, Harness, HostKind, NotStarted, Options, TENANT_NAMESPACE, WallTime};
use vc_tests::node::image::{ECHO_IMAGE, ECHO_PATH, ECHO_PORT};

/// Longest any single wait of a scenario lasts on the simulated hosts.
const WAIT: Duration = Duration::from_secs(60);

/// `--timeout` of the plugin's waits: real images on an existing cluster take longer to
/// pull and start than simulated workloads, and each tenant on a real apiserver starts
/// four real processes.
#[cfg(test)]
fn plugin_timeout(harness: &Harness) -> &'static str {
    match harness.kind {
        HostKind::External => "300s",
        HostKind::RealApiServer => "180s",
        HostKind::TestApiServer => "90s",
    }
}

/// Starts the scenario's wall-time line and its harness, or prints why the scenario is
/// skipped.
#[cfg(test)]
async fn start(title: &str, options: Options) -> Option<(WallTime, Harness)> {
    let mut wall = wall_time(title, &options);
    match Harness::start(options).await {
        Ok(harness) => Some((wall, harness)),
        Err(NotStarted::Skip(why)) => {
            eprintln!("skipped: {why}");
            wall.skipped();
            None
        }
        Err(NotStarted::Failed(error)) => panic!("the e2e harness did not start: {error:#}"),
    }
}

/// Two tests of one scenario: on the simulated host (or, with `KOSMOS_VC_E2E_KUBECONFIG`,
/// the existing cluster), and on a real kube-apiserver from `KUBEBUILDER_ASSETS` (which
/// prints `skipped: ...` without them).
macro_rules! on_both_hosts {
    ($scenario:ident: $simulated:ident, $real:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $simulated() {
            $scenario(Options::new(stringify!($simulated))).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $real() {
            $scenario(real_apiserver(stringify!($real))).await;
        }
    };
}

/// Options of a real-apiserver twin: the real host, with the real node `node1` running
/// the tenants' control planes and clustertrees as pods.
#[cfg(test)]
fn real_apiserver(scenario: &str) -> Options {
    let mut options = Options::new(scenario);
    options.host = HostKind::RealApiServer;
    options.real_node = true;
    options
}

/// Prints the scenario's wall time when it ends, naming the host it ran on.
#[cfg(test)]
fn wall_time(title: &str, options: &Options) -> WallTime {
    WallTime::start(match options.host {
        HostKind::TestApiServer => title.to_owned(),
        HostKind::RealApiServer => format!("{title} (real apiserver)"),
        HostKind::External => format!("{title} (existing cluster)"),
    })
}

/// Every distinct phase `name` goes through, in order, as a watch sees it. Returns once
/// the watch has listed, so an object created afterwards is seen from its first phase
/// (a spawned watch that lists late, on a loaded machine, would start at a later one).
#[cfg(test)]
async fn record_phases(
    harness: &Harness,
    name: &str,
) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let api: kube::Api<VirtualCluster> =
        kube::Api::namespaced(harness.admin.clone(), TENANT_NAMESPACE);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let sink = seen.clone();
    let (listed, initial_list) = tokio::sync::oneshot::channel::<()>();
    let mut listed = Some(listed);
    let task = tokio::spawn(async move {
        let mut stream = watcher::watcher(api, config).boxed();
        while let Some(event) = stream.next().await {
            if matches!(event, Ok(watcher::Event::InitDone))
                && let Some(listed) = listed.take()
            {
                let _ = listed.send(());
            }
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
    initial_list
        .await
        .expect("the phase watch ended before its first list");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_control_plane_creation() {
    scenario_creation(Options::new("virtual_control_plane_creation")).await;
}

/// On the real host with the real node: the tenant's control plane runs as real pods on
/// `node1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_virtual_control_plane_creation() {
    scenario_creation(real_apiserver("real_virtual_control_plane_creation")).await;
}

/// (1) Virtual Control Plane Creation.
#[cfg(test)]
async fn scenario_creation(options: Options) {
    let Some((_wall, mut harness)) = start("Virtual Control Plane Creation", options).await else {
        return;
    };
    let (node1, node2) = (harness.nodes[0].clone(), harness.nodes[1].clone());
    let (phases, watch) = record_phases(&harness, "tenant1").await;
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
    if harness.kind != HostKind::External {
        // The chart's default, filled in by vc-webhook through the apiserver's admission.
        assert_eq!(
            vc["spec"]["kubernetesVersion"], "v1.33.4",
            "defaulted by vc-webhook: {vc}"
        );
    }
    // vc-controller, with only the chart's RBAC, claimed both nodes.
    for node in [&node1, &node2] {
        assert_eq!(
            claim_of(&harness, node).await.as_deref(),
            Some("default/tenant1"),
            "the claim of {node}"
        );
    }
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

    match harness.real_node().map(str::to_owned) {
        Some(node) => {
            control_plane_runs_on(&harness, "tenant1", &node).await;
            // Through the tenant kubeconfig: the only apiserver is the container's.
            let ready = harness
                .operator
                .succeed(&["get", "--raw", "/readyz"])
                .await
                .unwrap();
            assert_eq!(ready.trim(), "ok");
        }
        None => etcd::tenant_etcd_is_real(&harness, "tenant1").await,
    }
    if harness.real_worker().is_some() {
        let kubeconfig = harness.operator.kubeconfig.clone();
        tenant_pod_on_real_worker(&harness, &kubeconfig, "tenant1", "hello").await;
    }

    assert!(
        in_order(&seen, &["Preparing", "Initialized", "Completed"]),
        "phases seen: {seen:?}"
    );
    let left = harness.stop_real_node();
    assert!(left.is_empty(), "the real node left: {left:#?}");
}

/// Runs busybox pod `name` in `tenant` (through `kubeconfig`) on the real worker, waits
/// until it runs and `kubectl logs` shows what it printed, and returns its host pod: a
/// real container there, run by the worker's kubelet for vc-clustertree.
#[cfg(test)]
async fn tenant_pod_on_real_worker(
    harness: &Harness,
    kubeconfig: &std::path::Path,
    tenant: &str,
    name: &str,
) -> k8s_openapi::api::core::v1::Pod {
    let worker = harness.real_worker().unwrap().to_owned();
    let overrides = serde_json::json!({"apiVersion": "v1", "spec": {"nodeSelector": {"kubernetes.io/hostname": worker}}}).to_string();
    let greeting = format!("hello from {name}");
    let command = format!("echo {greeting}; exec sleep 3600");
    let run = [
        "run",
        name,
        "--image",
        harness::BUSYBOX_IMAGE,
        "--image-pull-policy=Never",
        "--restart=Never",
        "--overrides",
        &overrides,
        "--command",
        "--",
        "sh",
        "-c",
        &command,
    ];
    // ServiceAccount admission refuses every pod until the tenant's serviceaccount
    // controller has made `default`, moments after the tenant came up.
    let what = format!("kubectl run {name} in {tenant}");
    kubectl_until(harness, kubeconfig, &what, &run, |ran| ran.success).await;
    let what = format!("{tenant}'s pod {name} to run");
    let phase = ["get", "pod", name, "-o", "jsonpath={.status.phase}"];
    kubectl_until(harness, kubeconfig, &what, &phase, |run| {
        run.stdout == "Running"
    })
    .await;
    let what = format!("kubectl logs {name}");
    kubectl_until(harness, kubeconfig, &what, &["logs", name], |logs| {
        logs.stdout.trim() == greeting
    })
    .await;
    let workload_namespace = vc_api::constants::tenant_workload_namespace(TENANT_NAMESPACE, tenant);
    let host_pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(harness.admin.clone(), &workload_namespace);
    let selector = format!("{}={name}", vc_api::constants::TENANT_OBJECT_NAME_LABEL);
    let host_pod = host_pods
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no host pod of {tenant}'s pod {name} in {workload_namespace}"));
    let spec = host_pod.spec.clone().unwrap_or_default();
    assert_eq!(spec.node_name.as_deref(), Some(worker.as_str()));
    let container = host_pod
        .status
        .clone()
        .and_then(|status| status.container_statuses)
        .and_then(|statuses| statuses.into_iter().next())
        .unwrap_or_else(|| panic!("host pod of {name} has no container status: {host_pod:?}"));
    assert!(
        container
            .container_id
            .as_deref()
            .is_some_and(|id| id.starts_with("containerd://")),
        "a real container on {worker}: {container:?}"
    );
    eprintln!("[{tenant}] pod {name} runs as a real container on {worker}");
    host_pod
}

/// Every pod of `tenant`'s control plane and clustertree runs on the real node `node`,
/// every container running and ready: the pods are real, started by the kubelet from the
/// images the controller named, with the flags, mounts and probes it rendered.
#[cfg(test)]
async fn control_plane_runs_on(harness: &Harness, tenant: &str, node: &str) {
    use k8s_openapi::api::core::v1::Pod;
    let pods: kube::Api<Pod> = kube::Api::namespaced(harness.admin.clone(), TENANT_NAMESPACE);
    let selector = format!("{}={tenant}", vc_api::constants::TENANT_NAME_LABEL);
    let running = harness
        .eventually(
            "the control plane's pods running on the real node",
            WAIT,
            || async {
                let listed = pods
                    .list(&kube::api::ListParams::default().labels(&selector))
                    .await
                    .map_err(|e| e.to_string())?
                    .items;
                let mut components = BTreeSet::new();
                for pod in &listed {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let on = pod.spec.as_ref().and_then(|spec| spec.node_name.clone());
                    let status = pod.status.clone().unwrap_or_default();
                    let ready = status.container_statuses.iter().flatten().all(|c| {
                        c.ready
                            && c.state
                                .as_ref()
                                .is_some_and(|state| state.running.is_some())
                    });
                    if on.as_deref() != Some(node)
                        || status.phase.as_deref() != Some("Running")
                        || !ready
                    {
                        return Err(format!(
                            "{name} on {on:?}, phase {:?}, containers {:?}",
                            status.phase, status.container_statuses
                        ));
                    }
                    components.extend(
                        pod.metadata
                            .labels
                            .as_ref()
                            .and_then(|labels| labels.get(vc_api::constants::COMPONENT_LABEL))
                            .cloned(),
                    );
                }
                Ok(components)
            },
        )
        .await
        .unwrap();
    eprintln!("running on {node}: {running:?}");
    for component in [
        "etcd",
        "apiserver",
        "controller-manager",
        "scheduler",
        "clustertree",
    ] {
        assert!(
            running.iter().any(|c| c.contains(component)),
            "no {component} pod among {running:?}"
        );
    }
}

#[cfg(test)]
mod etcd;

on_both_hosts!(
    scenario_service: service_creation_in_the_virtual_control_plane,
    real_service_creation_in_the_virtual_control_plane
);

/// (2) Service Creation in the Virtual Control Plane.
#[cfg(test)]
async fn scenario_service(options: Options) {
    let Some((_wall, harness)) =
        start("Service Creation in the Virtual Control Plane", options).await
    else {
        return;
    };
    let (node1, node2) = (harness.nodes[0].clone(), harness.nodes[1].clone());
    let (cpu, memory) = pooled(&harness, "10", "100Gi");
    create_completed(&harness, "tenant1", &[&node1, &node2], cpu, memory).await;
    let tenant = harness.tenant_kubeconfig("tenant1").await.unwrap();
    let in_tenant = |args: &[&str]| {
        let tenant = tenant.clone();
        let harness = &harness;
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            harness
                .operator
                .kubectl_with(&tenant, &args, None)
                .await
                .unwrap()
        }
    };

    // kubectl's typed `create deployment` sends protobuf, which the test API server does
    // not decode; kubectl renders the same objects client-side and applies them as JSON.
    // The workspace's echo server, answering with its pod's name; on the real worker both
    // replicas are real containers (pinned there: node1's sibling in the tenant is
    // simulated).
    let deployment = in_tenant(&[
        "create",
        "deployment",
        "web",
        &format!("--image={ECHO_IMAGE}"),
        "--replicas=2",
        &format!("--port={ECHO_PORT}"),
        "--dry-run=client",
        "-o",
        "json",
    ])
    .await;
    let mut deployment = json(&deployment.ok().unwrap());
    if let Some(worker) = harness.real_worker() {
        let pod = &mut deployment["spec"]["template"]["spec"];
        pod["nodeSelector"] = serde_json::json!({"kubernetes.io/hostname": worker});
        pod["containers"][0]["imagePullPolicy"] = "Never".into();
    }
    harness
        .operator
        .apply(&tenant, &deployment.to_string())
        .await
        .unwrap();
    // The tenant's own apiserver refuses a privileged container at once, with its reason:
    // the host would never run it (Pod Security baseline on the workload namespace).
    if harness.kind == HostKind::RealApiServer {
        let privileged = privileged_pod("default");
        // ServiceAccount admission refuses every pod until the tenant's serviceaccount
        // controller has made `default`, moments after its namespace appeared.
        let refused = harness
            .eventually(
                "the tenant's ServiceAccount default to exist",
                WAIT,
                || async {
                    let run = harness
                        .operator
                        .kubectl_with(
                            &tenant,
                            &["create", "--dry-run=server", "--validate=false", "-f", "-"],
                            Some(&privileged.to_string()),
                        )
                        .await
                        .map_err(|error| error.to_string())?;
                    if run.stderr.contains("error looking up service account") {
                        Err(run.describe())
                    } else {
                        Ok(run)
                    }
                },
            )
            .await
            .unwrap();
        assert!(
            !refused.success && refused.stderr.contains("disallowed by cluster policy"),
            "{}",
            refused.describe()
        );
    }
    // On the real host, as the proposal's case has it: a NodePort Service, reachable from
    // outside the host.
    let service_type = if harness.real_worker().is_some() {
        "--type=NodePort"
    } else {
        "--type=ClusterIP"
    };
    let service = in_tenant(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        &format!("--target-port={ECHO_PORT}"),
        service_type,
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
    // Two controllers write these on a real cluster (endpoints, endpointslice): the
    // Endpoints may trail the slices by a moment.
    // On the real host the tenant's pods are vc-clustertree's host pods in
    // vc-default-tenant1: the tenant's endpoints are exactly their addresses.
    if harness.kind == HostKind::RealApiServer {
        let workload_namespace =
            vc_api::constants::tenant_workload_namespace(TENANT_NAMESPACE, "tenant1");
        let host_pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(harness.admin.clone(), &workload_namespace);
        let selector = format!(
            "{}={}",
            vc_api::constants::MANAGED_BY_LABEL,
            vc_api::constants::CLUSTERTREE_MANAGED_BY_VALUE
        );
        let host_ips: BTreeSet<String> = host_pods
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|pod| pod.status?.pod_ip)
            .collect();
        let tenant_ips: BTreeSet<String> = addresses.iter().cloned().collect();
        assert_eq!(
            tenant_ips, host_ips,
            "the tenant's endpoints are the host pods vc-clustertree runs"
        );
    }
    let mut sliced: Vec<String> = addresses.clone();
    sliced.sort_unstable();
    harness
        .eventually(
            "Endpoints web to list the slices' addresses",
            WAIT,
            || async {
                let endpoints = in_tenant(&[
                    "get",
                    "endpoints",
                    "web",
                    "-o",
                    "jsonpath={.subsets[*].addresses[*].ip}",
                ])
                .await;
                let mut legacy: Vec<String> = endpoints
                    .stdout
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
                legacy.sort_unstable();
                if legacy == sliced {
                    Ok(())
                } else {
                    Err(format!("Endpoints {legacy:?}, EndpointSlices {sliced:?}"))
                }
            },
        )
        .await
        .unwrap();

    if harness.real_worker().is_some() {
        traffic_from_outside_and_dns(&harness, &tenant, &addresses).await;
    }

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
        // Requests and limits, as a ResourceQuota on cpu and memory requires of every pod
        // on a real apiserver (the test API server does not enforce quotas).
        let object = if kind == "Pod" {
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "carried", "namespace": namespace},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "resources": {
                    "requests": {"cpu": "100m", "memory": "64Mi"},
                    "limits": {"cpu": "100m", "memory": "64Mi"}}}]}})
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
        let allowed = if kind == "Pod"
            && harness.kind == HostKind::RealApiServer
            && harness.computes_quota_usage()
        {
            // Quota admission refuses the pod until the resourcequota controller has
            // written the new quota's usage, moments after the quota appeared.
            harness
                .eventually(
                    &format!("the quota of {workload_namespace} to be counted"),
                    WAIT,
                    || async {
                        let run = create(kind, &workload_namespace).await;
                        if run.stderr.contains("status unknown for quota") {
                            Err(run.describe())
                        } else {
                            Ok(run)
                        }
                    },
                )
                .await
                .unwrap()
        } else {
            create(kind, &workload_namespace).await
        };
        if kind == "Pod" && !allowed.success && quota_not_yet_counted(&harness, &allowed) {
            // RBAC let the request through (the refusal comes from ResourceQuota
            // admission, which runs after authorization), but the pod itself is refused.
            eprintln!(
                "skipped: admitting a pod in {workload_namespace} on a real apiserver needs the quota's usage, which only kube-controller-manager's resourcequota controller computes (absent from KUBEBUILDER_ASSETS); RBAC allowed it: {}",
                allowed.stderr.trim()
            );
        } else {
            assert!(allowed.success, "{}", allowed.describe());
        }
        let refused = create(kind, "default").await;
        assert!(
            !refused.success && refused.stderr.contains("forbidden"),
            "{}",
            refused.describe()
        );
    }
    // The workload namespace enforces Pod Security `baseline`: whatever a tenant's
    // apiserver accepted, the host refuses a privileged pod there, naming the rule. Only a
    // real apiserver runs PodSecurity admission.
    if harness.kind != HostKind::TestApiServer {
        let privileged = privileged_pod(&workload_namespace);
        let args = ["create", "--dry-run=server", "--validate=false", "-f", "-"]
            .map(str::to_owned)
            .to_vec();
        let refused = attempt(args, Some(privileged.to_string())).await;
        assert!(
            !refused.success
                && refused
                    .stderr
                    .contains("violates PodSecurity \"baseline:latest\"")
                && refused.stderr.contains("privileged"),
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

/// Finding 6 of issue 16: vc-controller, with only the chart's RBAC, provisions a tenant
/// whose clustertree gets every right it needs, yet holds none of the clustertree's
/// workload rules itself: it binds the chart's fixed clustertree ClusterRole in the
/// workload namespace and may bind nothing else, so it holds no right to create pods,
/// exec into them, read ConfigMaps or update and delete Secrets. On a real kube-apiserver
/// (RBAC and `kubectl auth can-i` are its own), with the tenants' control planes as local
/// processes: no kubelet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_binds_the_clustertree_role_without_holding_it() {
    let mut options = Options::new("controller_binds_the_clustertree_role_without_holding_it");
    options.host = HostKind::RealApiServer;
    let Some((_wall, harness)) = start("Controller RBAC", options).await else {
        return;
    };
    let node1 = harness.nodes[0].clone();
    create_completed(&harness, "tenant1", &[&node1], "1", "1Gi").await;
    let workload_namespace = vc_api::constants::tenant_workload_namespace("default", "tenant1");
    let identity = |user: &str, namespace: &str| {
        harness
            .kubeconfig_for(
                user,
                &[
                    "system:serviceaccounts",
                    &format!("system:serviceaccounts:{namespace}"),
                    "system:authenticated",
                ],
            )
            .unwrap()
    };
    let controller = identity(
        &format!(
            "system:serviceaccount:{}:{}",
            harness::RELEASE_NAMESPACE,
            harness::CONTROLLER
        ),
        harness::RELEASE_NAMESPACE,
    );
    let clustertree = identity(
        "system:serviceaccount:default:tenant1-clustertree",
        "default",
    );
    // `kubectl auth can-i` asks the apiserver's own authorizer (SelfSubjectAccessReview).
    let can = |kubeconfig: std::path::PathBuf, question: String| {
        let harness = &harness;
        async move {
            let mut args: Vec<&str> = vec!["auth", "can-i"];
            args.extend(question.split_whitespace());
            let run = harness
                .operator
                .kubectl_with(&kubeconfig, &args, None)
                .await
                .unwrap();
            match run.stdout.trim() {
                "yes" => true,
                "no" => false,
                _ => panic!("kubectl auth can-i {question}: {}", run.describe()),
            }
        }
    };
    // The chart's fixed clustertree ClusterRole, named like the controller's.
    let fixed = harness::CONTROLLER.replace("-controller", "-clustertree");
    for (question, allowed) in [
        ("create pods -n default".to_owned(), false),
        ("create pods/exec -n default".to_owned(), false),
        ("get configmaps -n kube-system".to_owned(), false),
        ("delete secrets -n kube-system".to_owned(), false),
        ("update secrets -n kube-system".to_owned(), false),
        ("create persistentvolumeclaims -n default".to_owned(), false),
        ("bind clusterroles/cluster-admin".to_owned(), false),
        ("escalate clusterroles".to_owned(), false),
        (format!("bind clusterroles/{fixed}"), true),
    ] {
        assert_eq!(
            can(controller.clone(), question.clone()).await,
            allowed,
            "vc-controller: kubectl auth can-i {question}"
        );
    }
    // `bind` lets the controller grant the clustertree role, but the chart's admission
    // policy admits no binding of it other than the one it writes.
    let grab = |args: &[&str]| {
        let mut full: Vec<String> = ["create", "--dry-run=server"].map(str::to_owned).to_vec();
        full.extend(args.iter().map(|arg| (*arg).to_owned()));
        let (harness, controller) = (&harness, controller.clone());
        async move {
            let args: Vec<&str> = full.iter().map(String::as_str).collect();
            harness
                .operator
                .kubectl_with(&controller, &args, None)
                .await
                .unwrap()
        }
    };
    let to_itself = format!("{}:{}", harness::RELEASE_NAMESPACE, harness::CONTROLLER);
    let clusterrole = format!("--clusterrole={fixed}");
    let itself = format!("--serviceaccount={to_itself}");
    for attempt in [
        vec![
            "rolebinding",
            "grab",
            "-n",
            "default",
            &clusterrole,
            &itself,
        ],
        vec!["clusterrolebinding", "grab", &clusterrole, &itself],
        vec![
            "rolebinding",
            "grab",
            "-n",
            &workload_namespace,
            &clusterrole,
            &itself,
        ],
    ] {
        let refused = grab(&attempt).await;
        assert!(
            !refused.success
                && refused
                    .stderr
                    .contains(&format!("ClusterRole {fixed} may only be bound")),
            "{}",
            refused.describe()
        );
    }
    let in_workload = |verb: &str| format!("{verb} -n {workload_namespace}");
    for (question, allowed) in [
        (in_workload("create pods"), true),
        (in_workload("create pods/exec"), true),
        (in_workload("delete secrets"), true),
        (in_workload("create endpointslices.discovery.k8s.io"), true),
        (format!("get nodes/{node1}"), true),
        ("create pods -n default".to_owned(), false),
        ("get secrets -n default".to_owned(), false),
        ("list nodes".to_owned(), false),
    ] {
        assert_eq!(
            can(clustertree.clone(), question.clone()).await,
            allowed,
            "the clustertree: kubectl auth can-i {question}"
        );
    }
}

/// The proposal's "external functionality", on the real worker: the tenant's NodePort
/// Service `web` (2 echo replicas, whose tenant endpoints are `addresses`) answers from
/// outside the host at the tenant Node's address and the node port the tenant shows,
/// both replicas with their tenant pod names; so does a LoadBalancer Service at the
/// ingress a load balancer gives its host twin, shown in the tenant; inside a replica
/// `web.default.svc.cluster.local` resolves through the tenant's DNS and answers; deleting
/// a tenant Service removes its host twin.
#[cfg(test)]
async fn traffic_from_outside_and_dns(
    harness: &Harness,
    tenant: &std::path::Path,
    addresses: &[String],
) {
    use vc_tests::node::traffic::{LoopbackAddress, answering};
    let in_tenant = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = harness
            .operator
            .kubectl_with(tenant, &args, None)
            .await
            .unwrap();
        assert!(run.success, "{}", run.describe());
        run.stdout
    };
    let args = |args: &[&str]| args.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>();
    let pods = json(&in_tenant(args(&["get", "pods", "-l", "app=web", "-o", "json"])).await);
    let names: BTreeSet<String> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pod| {
            pod["status"]["podIP"]
                .as_str()
                .is_some_and(|ip| addresses.iter().any(|address| address == ip))
        })
        .filter_map(|pod| pod["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(names.len(), 2, "the two ready replicas: {pods}");
    let worker = harness.real_worker().unwrap().to_owned();
    for pod in pods["items"].as_array().into_iter().flatten() {
        assert_eq!(pod["spec"]["nodeName"], worker.as_str(), "{pod}");
    }

    // The tenant Service shows the host's cluster IP and node port: its host twin's.
    let workload_namespace =
        vc_api::constants::tenant_workload_namespace(TENANT_NAMESPACE, "tenant1");
    let host_services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(harness.admin.clone(), &workload_namespace);
    let twin_of = |name: &'static str| {
        let host_services = host_services.clone();
        async move {
            let selector = format!("{}={name}", vc_api::constants::TENANT_OBJECT_NAME_LABEL);
            harness
                .eventually(
                    &format!("the host twin of tenant Service {name}"),
                    WAIT,
                    || async {
                        host_services
                            .list(&kube::api::ListParams::default().labels(&selector))
                            .await
                            .map_err(|error| error.to_string())?
                            .items
                            .into_iter()
                            .next()
                            .ok_or_else(|| "none yet".to_owned())
                    },
                )
                .await
                .unwrap()
        }
    };
    let service = json(&in_tenant(args(&["get", "service", "web", "-o", "json"])).await);
    let node_port = service["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    let twin = twin_of("web").await;
    let twin_spec = twin.spec.clone().unwrap();
    assert_eq!(
        twin_spec.cluster_ip.as_deref(),
        service["spec"]["clusterIP"].as_str(),
        "the tenant Service's cluster IP is its host twin's"
    );
    assert_eq!(
        twin_spec.ports.unwrap()[0].node_port.map(i64::from),
        Some(node_port),
        "the tenant Service's node port is its host twin's"
    );

    // From outside: the tenant Node's ExternalIP (the host node's address) and the port.
    let node = json(&in_tenant(args(&["get", "node", &worker, "-o", "json"])).await);
    let external = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|address| address["type"] == "ExternalIP")
        .and_then(|address| address["address"].as_str())
        .unwrap_or_else(|| panic!("the tenant Node shows no ExternalIP: {node}"))
        .to_owned();
    let url = format!("http://{external}:{node_port}{ECHO_PATH}");
    let seen = answering(&url, &names, WAIT).await;
    assert_eq!(seen, names, "both replicas answer at {url}");
    eprintln!(
        "[service] NodePort {external}:{node_port}: both replicas answered with their tenant pod names"
    );

    // LoadBalancer: the ingress a load balancer gives the host twin shows in the tenant.
    in_tenant(args(&[
        "expose",
        "deployment",
        "web",
        "--name",
        "web-lb",
        "--type=LoadBalancer",
        "--port=80",
        &format!("--target-port={ECHO_PORT}"),
    ]))
    .await;
    let lb_twin = twin_of("web-lb").await;
    host_services
        .patch_status(
            &lb_twin.metadata.name.clone().unwrap(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": LOAD_BALANCER}]}}})),
        )
        .await
        .unwrap();
    let ingress = [
        "get",
        "service",
        "web-lb",
        "-o",
        "jsonpath={.status.loadBalancer.ingress[0].ip}",
    ];
    let what = "the tenant Service web-lb to show the ingress";
    let shown = kubectl_until(harness, tenant, what, &ingress, |run| {
        !run.stdout.trim().is_empty()
    })
    .await
    .stdout
    .trim()
    .to_owned();
    assert_eq!(shown, LOAD_BALANCER);
    let address = LoopbackAddress::add(LOAD_BALANCER.parse().unwrap()).unwrap();
    let url = format!("http://{shown}{ECHO_PATH}");
    let seen = answering(&url, &names, WAIT).await;
    drop(address);
    assert_eq!(seen, names, "both replicas answer at {url}");

    // Inside a replica: the Service's name resolves through the tenant's DNS.
    let replica = names.iter().next().unwrap().clone();
    let resolv = in_tenant(args(&["exec", &replica, "--", "cat", "/etc/resolv.conf"])).await;
    let dns = in_tenant(args(&[
        "get",
        "service",
        "kube-dns",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]))
    .await;
    assert!(
        resolv.contains(&format!("nameserver {dns}"))
            && resolv.contains("search default.svc.cluster.local"),
        "{resolv}"
    );
    let answered = in_tenant(args(&[
        "exec",
        &replica,
        "--",
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://web.default.svc.cluster.local{ECHO_PATH}"),
    ]))
    .await;
    assert!(
        names.contains(answered.trim()),
        "{answered:?} is not one of {names:?}"
    );

    // Deleting the tenant Service takes its host twin along.
    in_tenant(args(&["delete", "service", "web-lb"])).await;
    let lb_twin_name = lb_twin.metadata.name.clone().unwrap();
    harness
        .eventually("the host twin of web-lb to go", WAIT, || async {
            match host_services.get_opt(&lb_twin_name).await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await
        .unwrap();
}

/// The load-balancer address the service scenario gives a host Service, as a cloud's
/// controller would; on `lo` while the scenario sends to it.
#[cfg(test)]
const LOAD_BALANCER: &str = "10.244.250.8";

/// A pod with one privileged container, with the requests and limits a namespace's
/// ResourceQuota asks of every pod, so only the privilege can be what refuses it.
#[cfg(test)]
fn privileged_pod(namespace: &str) -> Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "privileged", "namespace": namespace},
        "spec": {"containers": [{"name": "root", "image": "busybox", "resources": {
            "requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
            "securityContext": {"privileged": true}}]}})
}

/// Whether `run` was refused only because the workload namespace's ResourceQuota has no
/// computed usage yet: a real apiserver's ResourceQuota admission refuses every pod it
/// covers until kube-controller-manager's resourcequota controller has written the quota's
/// status, so without kube-controller-manager that refusal is expected (and proves that
/// RBAC, which runs first, allowed the request).
#[cfg(test)]
fn quota_not_yet_counted(harness: &Harness, run: &harness::Run) -> bool {
    harness.kind == HostKind::RealApiServer
        && !harness.computes_quota_usage()
        && run.stderr.contains("status unknown for quota")
        && !run.stderr.contains("cannot create resource")
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

on_both_hosts!(scenario_isolation: isolation, real_isolation);

/// (3) Isolation between tenants, and between tenants and the host.
#[cfg(test)]
async fn scenario_isolation(options: Options) {
    let Some((_wall, harness)) = start("Isolation", options).await else {
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
            // or by authentication (a real kube-apiserver answers 401, which kubectl
            // words as "the server has asked for the client to provide credentials"):
            // either way, no request is served.
            auth.stderr.contains("Unauthorized")
                || auth
                    .stderr
                    .contains("the server has asked for the client to provide credentials")
                || auth.stderr.contains("remote error: tls:"),
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

on_both_hosts!(scenario_quota: quota, real_quota);

/// (4) Quota of the shared pool.
#[cfg(test)]
async fn scenario_quota(options: Options) {
    let Some((mut wall, harness)) = start("Quota", options).await else {
        return;
    };
    if harness.kind == HostKind::External {
        eprintln!("skipped: the quota numbers assume the simulated pool of 6 nodes x 8 CPUs");
        wall.skipped();
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

on_both_hosts!(scenario_lifecycle: lifecycle, real_lifecycle);

/// (5) Lifecycle: nodes in and out, then delete.
#[cfg(test)]
async fn scenario_lifecycle(options: Options) {
    let Some((_wall, harness)) = start("Lifecycle", options).await else {
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
    if harness.real_worker().is_some() {
        tenant_pod_on_real_worker(&harness, &tenant, "tenant1", "resident").await;
    }

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
    // Cluster-scoped objects go with the controller's finalizer; owned ones with the
    // garbage collector, and the workload namespace with the namespace controller.
    let workload_namespace =
        vc_api::constants::tenant_workload_namespace(TENANT_NAMESPACE, "tenant1");
    let garbage_collected = harness.collects_garbage();
    harness
        .eventually(
            if garbage_collected {
                "every object of tenant1 to be gone"
            } else {
                "tenant1's ClusterRole and binding to be gone and its namespace to be Terminating"
            },
            WAIT,
            || async {
                let finalized = harness
                    .operator
                    .kubectl(&[
                        "get",
                        "clusterrole/kosmos-vc:default:tenant1:clustertree",
                        "clusterrolebinding/kosmos-vc:default:tenant1:clustertree",
                        "-o",
                        "name",
                        "--ignore-not-found",
                    ])
                    .await
                    .map_err(|e| e.to_string())?;
                let namespace = harness
                    .operator
                    .kubectl(&[
                        "get",
                        &format!("namespace/{workload_namespace}"),
                        "-o",
                        "json",
                        "--ignore-not-found",
                    ])
                    .await
                    .map_err(|e| e.to_string())?;
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
                let namespace_done = if garbage_collected {
                    namespace.stdout.trim().is_empty()
                } else {
                    // Without a namespace controller nothing empties and finalizes it.
                    serde_json::from_str::<Value>(&namespace.stdout)
                        .is_ok_and(|ns| ns["metadata"]["deletionTimestamp"].is_string())
                };
                let owned_done = !garbage_collected || owned.stdout.trim().is_empty();
                if finalized.success
                    && finalized.stdout.trim().is_empty()
                    && namespace.success
                    && namespace_done
                    && owned.success
                    && owned_done
                {
                    Ok(())
                } else {
                    Err(format!(
                        "{}\n{}\n{}",
                        finalized.describe(),
                        namespace.describe(),
                        owned.describe()
                    ))
                }
            },
        )
        .await
        .unwrap();
    if !garbage_collected {
        eprintln!(
            "skipped: \"delete leaves nothing behind\" for tenant1's owned Secrets, Services, Deployments and StatefulSets and its namespace {workload_namespace} (Terminating): a bare kube-apiserver has no garbage collector or namespace controller, and KUBEBUILDER_ASSETS holds no kube-controller-manager"
        );
    }
    for node in &harness.nodes {
        assert_eq!(
            claim_of(&harness, node).await,
            None,
            "{node} is still claimed"
        );
    }
    if harness.real_worker().is_some() {
        // Nothing of the tenant runs on the real worker any more: no container at all.
        harness
            .eventually("the real worker to run no container", WAIT, || async {
                let running = harness.real_worker_tasks().unwrap();
                if running.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{running:?}"))
                }
            })
            .await
            .unwrap();
    }
}

on_both_hosts!(
    scenario_restart: controller_restart_mid_provisioning,
    real_controller_restart_mid_provisioning
);

/// (6) The controller dies mid-provisioning; the tenant converges with the same CA.
#[cfg(test)]
async fn scenario_restart(mut options: Options) {
    // Slow workloads leave a window between the PKI Secrets and Initialized.
    options.workload_delay = Duration::from_secs(3);
    let Some((mut wall, mut harness)) = start("Controller restart mid-provisioning", options).await
    else {
        return;
    };
    if harness.kind == HostKind::External {
        eprintln!(
            "skipped: the controller runs in the cluster; this scenario restarts a local process"
        );
        wall.skipped();
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
    reaches_completed(&harness, "tenant1 to reach Completed after the restart").await;
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
    // A real apiserver pod may still be settling when the status says Completed.
    let listed = harness
        .eventually("the tenant to list its nodes", WAIT, || {
            tenant_nodes(&harness, &tenant)
        })
        .await
        .unwrap();
    assert!(listed.contains(&node1), "{listed:?}");
    let kubeconfig: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&tenant).unwrap()).unwrap();
    assert_eq!(
        kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"].as_str(),
        Some(ca_before.as_str())
    );
    if harness.real_worker().is_none() {
        return;
    }
    // A running tenant pod outlives another controller restart: same host pod, same
    // container, never restarted.
    let before = tenant_pod_on_real_worker(&harness, &tenant, "tenant1", "steady").await;
    harness.kill_controller().unwrap();
    harness.start_controller().await.unwrap();
    let host_pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(
        harness.admin.clone(),
        before.metadata.namespace.as_deref().unwrap(),
    );
    let container_of = |pod: &k8s_openapi::api::core::v1::Pod| {
        pod.status
            .clone()
            .and_then(|status| status.container_statuses)
            .and_then(|statuses| statuses.into_iter().next())
            .map(|status| (status.container_id, status.restart_count))
    };
    let name = before.metadata.name.clone().unwrap();
    reaches_completed(&harness, "tenant1 to be Completed again").await;
    let after = host_pods.get(&name).await.unwrap();
    assert_eq!(after.metadata.uid, before.metadata.uid, "the same host pod");
    assert_eq!(
        container_of(&after),
        container_of(&before),
        "the same container, no restart"
    );
    let phase = harness
        .operator
        .kubectl_with(
            &tenant,
            &["get", "pod", "steady", "-o", "jsonpath={.status.phase}"],
            None,
        )
        .await
        .unwrap();
    assert_eq!(phase.stdout, "Running", "{}", phase.describe());
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

/// Waits (`what`) until VirtualCluster tenant1 is Completed.
#[cfg(test)]
async fn reaches_completed(harness: &Harness, what: &str) {
    harness
        .eventually(what, WAIT, || async {
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
        })
        .await
        .unwrap();
}

/// Runs `kubectl args` against `kubeconfig` until `done` holds of a run (`what` names the
/// wait), and returns that run.
#[cfg(test)]
async fn kubectl_until(
    harness: &Harness,
    kubeconfig: &std::path::Path,
    what: &str,
    args: &[&str],
    done: impl Fn(&harness::Run) -> bool,
) -> harness::Run {
    harness
        .eventually(what, WAIT, || async {
            let run = harness
                .operator
                .kubectl_with(kubeconfig, args, None)
                .await
                .map_err(|error| error.to_string())?;
            if done(&run) {
                Ok(run)
            } else {
                Err(run.describe())
            }
        })
        .await
        .unwrap()
}
