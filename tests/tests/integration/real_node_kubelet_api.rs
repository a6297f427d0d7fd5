//! `kubectl logs` and `kubectl exec` in a tenant, for a real container on the real host
//! node `node1`: the tenant apiserver dials the kubelet API vc-clustertree serves for
//! its Nodes (the address and port those Nodes advertise) with its kubelet-client
//! certificate, and vc-clustertree proxies to the host apiserver's `pods/log` and
//! `pods/exec` of the host pod. Same machinery as `real_node_tenant`: a real host with
//! `node1`, a real tenant control plane, the real `vc-clustertree` binary under the
//! controller's own host objects. Runs in the nextest group `real-node` (its module
//! name), alone.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;
use vc_api::constants::tenant_workload_namespace;
use vc_test_apiserver::pki::TestCa;

use crate::clustertree_nodes::{NAMESPACE, TENANT};
use crate::real_node::ECHO_IMAGE;
use crate::real_node_tenant::RealTenantWorld;
use crate::support::eventually::eventually;

const WAIT: Duration = Duration::from_secs(60);
/// The tenant namespace of the pod.
const SHOP: &str = "shop";
const POD: &str = "echo";

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap()
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    vc_test_apiserver::ports::free_port().unwrap()
}

/// A client certificate and key written under `dir`, as curl arguments.
fn client_certificate(dir: &Path, name: &str, ca: &TestCa, common_name: &str) -> Vec<String> {
    let issued = ca.issue_client(common_name, &[]).unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    vec![
        "--cert".to_owned(),
        cert.display().to_string(),
        "--key".to_owned(),
        key.display().to_string(),
    ]
}

/// `curl` against the kubelet API: the HTTP status (`000` when TLS refused) and body.
fn curl(url: &str, extra: &[String]) -> (String, String) {
    let output = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tenant_logs_and_exec() {
    let Some(world) = RealTenantWorld::start().await else {
        return;
    };
    let (tenant, work) = (&world.tenant, world.work.path());
    // The envtest tenant apiserver runs with --kubelet-certificate-authority (its CA):
    // the kubelet API serves a certificate of that CA for 127.0.0.1.
    let serving = tenant.ca().issue_server(&[]).unwrap();
    let serving_cert = work.join("kubelet-api.crt");
    let serving_key = work.join("kubelet-api.key");
    std::fs::write(&serving_cert, &serving.cert_pem).unwrap();
    std::fs::write(&serving_key, &serving.key_pem).unwrap();
    let port = free_port();
    let clustertree = world.clustertree(&[
        "--kubelet-listen".into(),
        format!("127.0.0.1:{port}").into(),
        "--kubelet-address".into(),
        "127.0.0.1".into(),
        "--kubelet-tls-cert-file".into(),
        serving_cert.into(),
        "--kubelet-tls-key-file".into(),
        serving_key.into(),
    ]);
    let said = || world.clustertree_said();

    let node1 = world.node1_ready().await;
    let status = node1.status.unwrap();
    let addresses: Vec<(String, String)> = status
        .addresses
        .unwrap()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert_eq!(
        addresses[0],
        ("InternalIP".to_owned(), "127.0.0.1".to_owned()),
        "the tenant apiserver is sent to vc-clustertree, not to the host kubelet: {addresses:?}"
    );
    assert_eq!(
        status
            .daemon_endpoints
            .and_then(|endpoints| endpoints.kubelet_endpoint)
            .map(|endpoint| endpoint.port),
        Some(i32::from(port))
    );

    world.tenant_namespace(SHOP).await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": POD, "namespace": SHOP},
        "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
            "name": "echo", "image": ECHO_IMAGE, "imagePullPolicy": "Never",
            "ports": [{"containerPort": 8080}],
        }]},
    }))
    .unwrap();
    let tenant_pods: Api<Pod> = Api::namespaced(world.tenant_admin.clone(), SHOP);
    tenant_pods
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    eventually(WAIT, "the tenant pod Running", || async {
        let pod = tenant_pods.get_opt(POD).await.ok()??;
        (pod.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;

    let kubeconfig = tenant.kubeconfig_path();
    let asked = Instant::now();
    let logs = eventually(WAIT, "kubectl logs in the tenant", || async {
        let output = kubectl(kubeconfig, &["logs", "-n", SHOP, POD]);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            eprintln!(
                "kubectl logs: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        text.contains("serving on 8080").then_some(text)
    })
    .await;
    eprintln!(
        "kubectl logs answered in {:.2} s: {}",
        asked.elapsed().as_secs_f64(),
        logs.trim()
    );
    let tail = kubectl(
        kubeconfig,
        &["logs", "-n", SHOP, POD, "--tail=1", "--timestamps"],
    );
    assert!(tail.status.success(), "{tail:?}");
    assert_eq!(
        String::from_utf8_lossy(&tail.stdout).lines().count(),
        1,
        "tailLines reaches the host"
    );

    let asked = Instant::now();
    let exec = kubectl(kubeconfig, &["exec", "-n", SHOP, POD, "--", "hostname"]);
    assert!(
        exec.status.success(),
        "kubectl exec: {}\nvc-clustertree said:\n{}",
        String::from_utf8_lossy(&exec.stderr),
        said()
    );
    assert_eq!(String::from_utf8_lossy(&exec.stdout).trim(), POD);
    eprintln!(
        "kubectl exec answered in {:.2} s",
        asked.elapsed().as_secs_f64()
    );
    let stdin = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["exec", "-i", "-n", SHOP, POD, "--", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut input = stdin.stdin.as_ref().unwrap();
        input.write_all(b"through both apiservers\n").unwrap();
    }
    let mut stdin = stdin;
    drop(stdin.stdin.take());
    let echoed = stdin.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&echoed.stdout),
        "through both apiservers\n",
        "stdin reaches the container: {}",
        String::from_utf8_lossy(&echoed.stderr)
    );
    let failing = kubectl(
        kubeconfig,
        &["exec", "-n", SHOP, POD, "--", "sh", "-c", "exit 3"],
    );
    assert_eq!(failing.status.code(), Some(3), "the exit code comes back");

    // Only the tenant apiserver's kubelet client gets in, and only for our pods.
    let url = |path: &str| format!("https://127.0.0.1:{port}{path}");
    let logs_path = format!("/containerLogs/{SHOP}/{POD}/echo");
    let (code, body) = curl(&url(&logs_path), &[]);
    assert_eq!(code, "401", "no client certificate: {body}");
    let other_ca = TestCa::generate("another-ca").unwrap();
    let (code, _) = curl(
        &url(&logs_path),
        &client_certificate(work, "stranger", &other_ca, "kube-apiserver-kubelet-client"),
    );
    assert_eq!(
        code, "000",
        "a certificate of another CA fails the handshake"
    );
    let (code, body) = curl(
        &url(&logs_path),
        &client_certificate(work, "node", tenant.ca(), "system:node:node1"),
    );
    assert_eq!(code, "403", "another identity of the tenant CA: {body}");
    let apiserver = client_certificate(
        work,
        "apiserver",
        tenant.ca(),
        "kube-apiserver-kubelet-client",
    );
    let (code, body) = curl(&url(&logs_path), &apiserver);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("serving on 8080"), "{body}");
    let (code, body) = curl(&url(&format!("/portForward/{SHOP}/{POD}")), &apiserver);
    assert_eq!(code, "501", "{body}");
    let (code, _) = curl(&url("/configz/../stats"), &apiserver);
    assert!(code == "404" || code == "501", "{code}");
    let (code, body) = curl(
        &url(&format!("/containerLogs/{SHOP}/missing/echo")),
        &apiserver,
    );
    assert_eq!(code, "404", "{body}");
    let (code, body) = curl(
        &url(&format!(
            "/containerLogs/{SHOP}/{POD}/echo?container=other&tailLines=1"
        )),
        &apiserver,
    );
    assert_eq!(
        code, "200",
        "the path's container, never the query's: {body}"
    );
    // A tenant pod of the same name in another namespace has no host pod: nothing by name.
    let (code, body) = curl(
        &url(&format!("/containerLogs/default/{POD}/echo")),
        &apiserver,
    );
    assert_eq!(code, "404", "{body}");

    let workload_namespace = tenant_workload_namespace(NAMESPACE, TENANT);
    let host_pods: Api<Pod> = Api::namespaced(world.admin.clone(), &workload_namespace);
    tenant_pods
        .delete(POD, &DeleteParams::default())
        .await
        .unwrap();
    eventually(WAIT, "no tenant pod and no host pod left", || async {
        let tenant_left = tenant_pods.list(&ListParams::default()).await.ok()?.items;
        let host_left = host_pods.list(&ListParams::default()).await.ok()?.items;
        (tenant_left.is_empty() && host_left.is_empty()).then_some(())
    })
    .await;

    world.finish(clustertree, "real_tenant_logs_and_exec");
}
