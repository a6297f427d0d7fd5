//! A tenant's Services carry traffic on the real node (issue 15): a real host with the
//! real node `node1` promoted to a real tenant control plane, and the real
//! `vc-clustertree` serving the node's kubelet API, the tenant's Service webhook and its
//! DNS on node1's address, as a clustertree pod serves them on its pod IP.
//!
//! The tenant's echo Deployment (2 replicas) runs as real containers on node1. `kubectl
//! expose` in the tenant makes a NodePort and a LoadBalancer Service; their host twins
//! take the same cluster IPs and node ports, and node1's kube-proxy carries the traffic:
//! requests from this machine to the address the tenant shows reach both replicas, which
//! answer with their tenant pod names. From inside a tenant pod,
//! `echo.shop.svc.cluster.local` resolves through the tenant's DNS to the Service.
//! Runs in the nextest group `real-node` (its module name), alone.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt as _};
use serde_json::json;
use vc_api::constants::{TENANT_OBJECT_NAME_LABEL, tenant_workload_namespace};

use crate::clustertree_nodes::{NAMESPACE, TENANT};
use crate::real_node_tenant::{RealTenantWorld, SHOP, echo_deployment};
use crate::support::eventually::eventually;
use vc_tests::node::traffic::LoopbackAddress;

const WAIT: Duration = Duration::from_secs(60);
/// node1's address (on `lo`): where this clustertree serves, as a pod serves on its IP.
const NODE_ADDRESS: &str = "10.244.255.1";
/// The load-balancer address the test gives the host Service, as a cloud's controller
/// would; added to `lo` while the test runs.
const LOAD_BALANCER: Ipv4Addr = Ipv4Addr::new(10, 244, 250, 7);

/// `kubectl` against the tenant; its stdout, or a panic with its output.
fn tenant_kubectl(world: &RealTenantWorld, args: &[&str]) -> String {
    let output = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(world.tenant.kubeconfig_path())
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "kubectl {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `kubectl expose` of the echo Deployment in the tenant as Service `name` of `type_`.
fn expose(world: &RealTenantWorld, name: &str, type_: &str) {
    tenant_kubectl(
        world,
        &[
            "expose",
            "deployment",
            "echo",
            "-n",
            SHOP,
            "--name",
            name,
            &format!("--type={type_}"),
            "--port=80",
            "--target-port=8080",
        ],
    );
}

/// The tenant pod names answering `url`.
async fn answering(url: &str, expected: &BTreeSet<String>) -> BTreeSet<String> {
    vc_tests::node::traffic::answering(url, expected, WAIT).await
}

/// The host twin of tenant Service `shop/name`.
async fn host_twin(world: &RealTenantWorld, name: &str) -> Service {
    let host_services: Api<Service> = Api::namespaced(
        world.admin.clone(),
        &tenant_workload_namespace(NAMESPACE, TENANT),
    );
    let selector = format!("{TENANT_OBJECT_NAME_LABEL}={name}");
    eventually(WAIT, "the host twin of the tenant Service", || async {
        host_services
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tenant_services_carry_traffic_and_resolve() {
    let Some(world) = RealTenantWorld::start().await else {
        return;
    };
    // The kubelet API (and with it the Service webhook) with a serving certificate of the
    // tenant CA, which the tenant apiserver verifies; DNS beside it.
    let serving = world
        .tenant
        .ca()
        .issue_server(&[NODE_ADDRESS.to_owned()])
        .unwrap();
    let (cert, key) = (
        world.work.path().join("kubelet-api.crt"),
        world.work.path().join("kubelet-api.key"),
    );
    std::fs::write(&cert, &serving.cert_pem).unwrap();
    std::fs::write(&key, &serving.key_pem).unwrap();
    let (kubelet_port, dns_port) = (
        vc_test_apiserver::ports::free_port().unwrap(),
        vc_test_apiserver::ports::free_port().unwrap(),
    );
    let clustertree = world.clustertree(&[
        "--kubelet-address".into(),
        NODE_ADDRESS.into(),
        format!("--kubelet-listen={NODE_ADDRESS}:{kubelet_port}").into(),
        "--kubelet-tls-cert-file".into(),
        cert.into(),
        "--kubelet-tls-key-file".into(),
        key.into(),
        "--dns-listen".into(),
        format!("{NODE_ADDRESS}:{dns_port}").into(),
    ]);
    world.node1_ready().await;
    world.tenant_namespace(SHOP).await;

    // The tenant's DNS Service, with a cluster IP its host twin shares.
    let dns = host_twin(&world, "kube-dns").await;
    let dns_ip = dns.spec.as_ref().unwrap().cluster_ip.clone().unwrap();
    let tenant_dns = tenant_kubectl(
        &world,
        &[
            "get",
            "service",
            "kube-dns",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    assert_eq!(
        tenant_dns, dns_ip,
        "the tenant's DNS address works on the host"
    );

    let pods = echo_deployment(&world, 2).await;
    let names: BTreeSet<String> = pods.iter().map(|pod| pod.name_any()).collect();
    for pod in &pods {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node1"));
    }

    // NodePort: the tenant's Service shows the host's cluster IP and node port.
    let exposed = Instant::now();
    expose(&world, "echo", "NodePort");
    let tenant_services: Api<Service> = Api::namespaced(world.tenant_admin.clone(), SHOP);
    let service = tenant_services.get("echo").await.unwrap();
    let spec = service.spec.clone().unwrap();
    let node_port = spec.ports.as_ref().unwrap()[0].node_port.unwrap();
    let twin = host_twin(&world, "echo").await;
    let twin_spec = twin.spec.clone().unwrap();
    assert_eq!(twin_spec.cluster_ip, spec.cluster_ip, "same cluster IP");
    assert_eq!(
        twin_spec.ports.unwrap()[0].node_port,
        Some(node_port),
        "same node port"
    );
    assert_eq!(twin_spec.selector, None, "the host twin selects nothing");

    // From outside, at the tenant Node's ExternalIP and the node port, both replicas.
    let node: Node = Api::all(world.tenant_admin.clone())
        .get("node1")
        .await
        .unwrap();
    let external = node
        .status
        .unwrap()
        .addresses
        .unwrap()
        .into_iter()
        .find(|address| address.type_ == "ExternalIP")
        .map(|address| address.address)
        .expect("the tenant Node shows the host node's address");
    let url = format!("http://{external}:{node_port}/cgi-bin/index.cgi");
    let seen = answering(&url, &names).await;
    assert_eq!(
        seen,
        names,
        "both replicas answer at {url}; clustertree:\n{}",
        world.clustertree_said()
    );
    eprintln!(
        "NodePort {external}:{node_port}: both replicas answered {:.2} s after kubectl expose",
        exposed.elapsed().as_secs_f64()
    );

    // LoadBalancer: the ingress a load balancer gives the host twin shows in the tenant.
    expose(&world, "echo-lb", "LoadBalancer");
    let lb_twin = host_twin(&world, "echo-lb").await;
    let host_services: Api<Service> = Api::namespaced(
        world.admin.clone(),
        &tenant_workload_namespace(NAMESPACE, TENANT),
    );
    host_services
        .patch_status(
            &lb_twin.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": LOAD_BALANCER.to_string()}]}}})),
        )
        .await
        .unwrap();
    let shown = eventually(WAIT, "the tenant Service to show the ingress", || async {
        let service = tenant_services.get("echo-lb").await.ok()?;
        let ingress = service.status?.load_balancer?.ingress?;
        ingress.into_iter().next()?.ip
    })
    .await;
    assert_eq!(shown, LOAD_BALANCER.to_string());
    let lo = LoopbackAddress::add(LOAD_BALANCER).unwrap();
    let url = format!("http://{shown}/cgi-bin/index.cgi");
    let seen = answering(&url, &names).await;
    assert_eq!(seen, names, "both replicas answer at {url}");
    drop(lo);

    // Inside a tenant pod: the Service's name resolves through the tenant's DNS.
    let pod = pods[0].name_any();
    let resolv = tenant_kubectl(
        &world,
        &["exec", "-n", SHOP, &pod, "--", "cat", "/etc/resolv.conf"],
    );
    assert!(
        resolv.contains(&format!("nameserver {dns_ip}"))
            && resolv.contains("search shop.svc.cluster.local"),
        "{resolv}"
    );
    let answered = tenant_kubectl(
        &world,
        &[
            "exec",
            "-n",
            SHOP,
            &pod,
            "--",
            "wget",
            "-q",
            "-O",
            "-",
            "http://echo.shop.svc.cluster.local/cgi-bin/index.cgi",
        ],
    );
    assert!(
        names.contains(answered.trim()),
        "{answered:?} is not one of {names:?}"
    );

    // Deleting the tenant Service takes its host twin along.
    tenant_kubectl(&world, &["delete", "service", "echo", "-n", SHOP]);
    let twin_name = twin.name_any();
    eventually(
        WAIT,
        "the host twin to go with the tenant Service",
        || async {
            host_services
                .get_opt(&twin_name)
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;

    world.finish(
        clustertree,
        "real_tenant_services_carry_traffic_and_resolve",
    );
}
