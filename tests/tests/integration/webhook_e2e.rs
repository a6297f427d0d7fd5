//! vc-webhook end to end: the built `vc-webhook` binary runs as its own process against
//! the test API server, is registered through a MutatingWebhookConfiguration and a
//! ValidatingWebhookConfiguration (url + caBundle), and real `kubectl` talks to the
//! API server, which calls the webhook for every VirtualCluster write.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use serde_json::Value;
use vc_test_apiserver::{TestApiServer, TestApiServerOptions};
use vc_tests::find_on_path;
use vc_tests::probe::https_get;
use vc_tests::wait;

const CRD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/kosmos-vc/crds/virtualclusters.kosmos.io.yaml"
);

/// Two Ready worker nodes: `node-a` is promoted, `node-b` is the shared pool.
const NODES: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels: {kubernetes.io/hostname: node-a}
status:
  allocatable: {cpu: "16", memory: 64Gi, pods: "110"}
  conditions:
  - {type: Ready, status: "True", reason: KubeletReady, message: kubelet is posting ready status}
---
apiVersion: v1
kind: Node
metadata:
  name: node-b
  labels: {kubernetes.io/hostname: node-b}
status:
  allocatable: {cpu: "16", memory: 64Gi, pods: "110"}
  conditions:
  - {type: Ready, status: "True", reason: KubeletReady, message: kubelet is posting ready status}
"#;

const PROD: &str = r#"apiVersion: kosmos.io/v1alpha1
kind: VirtualCluster
metadata:
  name: prod
  namespace: default
spec:
  promoteResources:
    nodes: [node-a]
    resources:
      cpu: 4
      memory: 8192Mi
"#;

const DEV_TAKING_NODE_A: &str = r#"apiVersion: kosmos.io/v1alpha1
kind: VirtualCluster
metadata:
  name: dev
  namespace: default
spec:
  promoteResources:
    nodes: [node-a]
"#;

const REFUSAL: &str = r#"node "node-a" already belongs to VirtualCluster default/prod"#;

/// The webhook process; killed when dropped so no test leaves it behind.
struct WebhookProcess {
    child: Child,
    log: PathBuf,
}

impl WebhookProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WebhookProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a serving certificate for `127.0.0.1`, PEM-encoded.
struct WebhookPki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn webhook_pki() -> WebhookPki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "vc-webhook e2e CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![
        SanType::IpAddress(Ipv4Addr::LOCALHOST.into()),
        SanType::DnsName("localhost".try_into().unwrap()),
    ];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "vc-webhook");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    WebhookPki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// `VC_WEBHOOK_BIN` when set, else `vc-webhook` in the target directory of this test
/// binary (`target/<profile>/deps/integration-*` -> `target/<profile>/vc-webhook`).
fn built_webhook() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("VC_WEBHOOK_BIN") {
        return Some(PathBuf::from(explicit));
    }
    let executable = std::env::current_exe().ok()?;
    let profile_directory = executable.parent()?.parent()?;
    Some(profile_directory.join("vc-webhook")).filter(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    vc_test_apiserver::ports::free_port().unwrap()
}

fn start_webhook(binary: &Path, directory: &Path, port: u16, kubeconfig: &Path) -> WebhookProcess {
    let log = directory.join("vc-webhook.log");
    let output = std::fs::File::create(&log).unwrap();
    let child = Command::new(binary)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--tls-cert")
        .arg(directory.join("tls.crt"))
        .arg("--tls-key")
        .arg(directory.join("tls.key"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--log-format", "json", "--log-level", "info"])
        .stdout(Stdio::from(output.try_clone().unwrap()))
        .stderr(Stdio::from(output))
        .spawn()
        .unwrap();
    WebhookProcess { child, log }
}

fn webhook_configurations(port: u16, ca_pem: &str) -> String {
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let webhook = |kind: &str, name: &str, path: &str| {
        format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: {kind}
metadata:
  name: kosmos-vc-e2e
webhooks:
- name: {name}
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 5
  clientConfig:
    url: https://127.0.0.1:{port}{path}
    caBundle: {ca_bundle}
  rules:
  - apiGroups: [kosmos.io]
    apiVersions: [v1alpha1]
    operations: [CREATE, UPDATE]
    resources: [virtualclusters]
    scope: Namespaced
"#
        )
    };
    [
        webhook(
            "MutatingWebhookConfiguration",
            "mutate.vc.kosmos.io",
            "/mutate",
        ),
        webhook(
            "ValidatingWebhookConfiguration",
            "validate.vc.kosmos.io",
            "/validate",
        ),
    ]
    .join("---\n")
}

fn kubectl(
    kubectl: &Path,
    kubeconfig: &Path,
    args: &[&str],
    stdin_manifest: Option<&str>,
) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(kubectl)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(manifest) = stdin_manifest {
        stdin.write_all(manifest.as_bytes()).unwrap();
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The test API server with the CRD and two nodes, `vc-webhook` running and ready, and
/// both webhook configurations registered.
struct Host {
    server: TestApiServer,
    webhook: WebhookProcess,
    kubectl: PathBuf,
    admin: PathBuf,
    addr: SocketAddr,
    ca_pem: String,
    _directory: tempfile::TempDir,
}

impl Host {
    /// `None` (after printing why) when kubectl or the built webhook is missing.
    async fn start() -> Option<Self> {
        let Some(kubectl_path) = find_on_path("kubectl") else {
            eprintln!("skipped: kubectl is not on PATH");
            return None;
        };
        let Some(binary) = built_webhook() else {
            eprintln!(
                "skipped: vc-webhook is not built; run `cargo build -p vc-webhook` first (or set VC_WEBHOOK_BIN)"
            );
            return None;
        };
        let server = TestApiServer::start(TestApiServerOptions::default()).unwrap();
        let admin = server.kubeconfig_path().to_owned();
        server.install_yaml(CRD).await.unwrap();
        server.install_yaml(NODES).await.unwrap();

        let directory = tempfile::tempdir().unwrap();
        let pki = webhook_pki();
        std::fs::write(directory.path().join("tls.crt"), &pki.cert_pem).unwrap();
        std::fs::write(directory.path().join("tls.key"), &pki.key_pem).unwrap();
        let port = free_port();
        let mut webhook = start_webhook(&binary, directory.path(), port, &admin);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

        // Ready means both caches listed once, so node-a is known before anything is judged.
        let ready = wait::until(
            "vc-webhook to answer 200 on /readyz",
            Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = webhook.child.try_wait() {
                    panic!("vc-webhook exited with {status}:\n{}", webhook.log());
                }
                let ca_pem = &pki.ca_pem;
                async move {
                    match https_get(addr, ca_pem, "/readyz").await {
                        Some((200, _)) => Ok(()),
                        answer => Err(format!("answer {answer:?}")),
                    }
                }
            },
        )
        .await;
        if let Err(timed_out) = ready {
            panic!("{timed_out}:\n{}", webhook.log());
        }
        let host = Self {
            server,
            webhook,
            kubectl: kubectl_path,
            admin,
            addr,
            ca_pem: pki.ca_pem,
            _directory: directory,
        };
        let registered = host.run(
            &["apply", "-f", "-"],
            Some(&webhook_configurations(port, &host.ca_pem)),
        );
        assert!(registered.status.success(), "{}", text(&registered));
        Some(host)
    }

    fn run(&self, args: &[&str], manifest: Option<&str>) -> Output {
        kubectl(&self.kubectl, &self.admin, args, manifest)
    }

    /// Creates `prod` (holding node-a) and waits until the webhook's cache knows it.
    async fn create_prod(&self) {
        let created = self.run(&["apply", "-f", "-"], Some(PROD));
        assert!(
            created.status.success(),
            "{}\nwebhook log:\n{}",
            text(&created),
            self.webhook.log()
        );
        // The webhook learns about prod through its watch; until then a competitor could
        // pass (the controller's claim is the final arbiter). Server-side dry runs probe
        // the cache.
        self.wait_for_dev(false).await;
    }

    /// Waits up to 30 s until a server-side dry run of `dev` is admitted (`true`) or
    /// refused with the owner named (`false`).
    async fn wait_for_dev(&self, admitted: bool) {
        let what = if admitted {
            "dev to be admitted"
        } else {
            "dev to be refused"
        };
        let decided = wait::until(what, Duration::from_secs(30), || {
            let probe = self.run(
                &["apply", "--dry-run=server", "-f", "-"],
                Some(DEV_TAKING_NODE_A),
            );
            let refused =
                !probe.status.success() && String::from_utf8_lossy(&probe.stderr).contains(REFUSAL);
            let outcome = if probe.status.success() == admitted && (admitted || refused) {
                Ok(())
            } else {
                Err(text(&probe))
            };
            async move { outcome }
        })
        .await;
        if let Err(timed_out) = decided {
            panic!("{timed_out}\n{}", self.webhook.log());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_sees_defaults_filled_and_a_taken_node_refused() {
    let Some(mut host) = Host::start().await else {
        return;
    };
    let run = |args: &[&str], manifest: Option<&str>| host.run(args, manifest);
    let created = run(&["apply", "-f", "-"], Some(PROD));
    assert!(
        created.status.success(),
        "{}\nwebhook log:\n{}",
        text(&created),
        host.webhook.log()
    );
    let stored = run(
        &[
            "get",
            "virtualcluster",
            "prod",
            "-n",
            "default",
            "-o",
            "json",
        ],
        None,
    );
    assert!(stored.status.success(), "{}", text(&stored));
    let stored: Value = serde_json::from_slice(&stored.stdout).unwrap();
    let spec = &stored["spec"];
    assert_eq!(spec["kubernetesVersion"], "v1.33.4", "{spec}");
    assert_eq!(spec["controlPlane"]["apiServer"]["replicas"], 1, "{spec}");
    assert_eq!(
        spec["controlPlane"]["apiServer"]["serviceType"], "ClusterIP",
        "{spec}"
    );
    assert_eq!(spec["controlPlane"]["etcd"]["replicas"], 1, "{spec}");
    assert_eq!(spec["controlPlane"]["etcd"]["storageSize"], "1Gi", "{spec}");
    // The clustertree image is the operator's: never written into the VirtualCluster.
    assert_eq!(spec.get("clusterTree"), None, "{spec}");
    // Quantities in canonical form: the number 4 became "4", 8192Mi became "8Gi".
    assert_eq!(spec["promoteResources"]["resources"]["cpu"], "4", "{spec}");
    assert_eq!(
        spec["promoteResources"]["resources"]["memory"], "8Gi",
        "{spec}"
    );
    assert_eq!(
        spec["promoteResources"]["nodes"],
        serde_json::json!(["node-a"]),
        "{spec}"
    );

    // The webhook learns about prod through its watch; until then a competitor could pass
    // (the controller's claim is the final arbiter).
    host.wait_for_dev(false).await;

    // The conflicting VirtualCluster is refused with the owner named, and not stored.
    let refused = run(&["apply", "-f", "-"], Some(DEV_TAKING_NODE_A));
    assert!(!refused.status.success(), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!(
            r#"admission webhook "validate.vc.kosmos.io" denied the request: {REFUSAL}"#
        )),
        "{stderr}"
    );
    assert!(stderr.contains("Forbidden"), "{stderr}");
    let missing = run(&["get", "virtualcluster", "dev", "-n", "default"], None);
    assert!(!missing.status.success(), "{}", text(&missing));

    // An update through kubectl apply passes the webhooks too, and stays defaulted.
    let updated = run(
        &["apply", "-f", "-"],
        Some(&PROD.replace("cpu: 4", "cpu: 6")),
    );
    assert!(
        updated.status.success(),
        "{}\n{}",
        text(&updated),
        host.webhook.log()
    );
    let stored = run(
        &[
            "get",
            "virtualcluster",
            "prod",
            "-n",
            "default",
            "-o",
            "json",
        ],
        None,
    );
    let stored: Value = serde_json::from_slice(&stored.stdout).unwrap();
    assert_eq!(stored["spec"]["promoteResources"]["resources"]["cpu"], "6");
    assert_eq!(stored["spec"]["kubernetesVersion"], "v1.33.4");

    let (status, metrics) = https_get(host.addr, &host.ca_pem, "/metrics")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"vc_webhook_admission_requests_total{endpoint="validate",operation="CREATE",result="denied"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"vc_webhook_cache_objects{kind="node"} 2"#)
            && metrics.contains(r#"vc_webhook_cache_objects{kind="virtualcluster"} 1"#),
        "{metrics}"
    );

    // SIGTERM: the webhook stops accepting, finishes in-flight requests and exits cleanly.
    let terminated = Command::new("kill")
        .args(["-TERM", &host.webhook.child.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let exited = wait::until(
        "vc-webhook to exit on SIGTERM",
        Duration::from_secs(15),
        || {
            let status = host.webhook.child.try_wait().unwrap();
            async move { status }
        },
    )
    .await;
    let status = exited.unwrap_or_else(|timed_out| panic!("{timed_out}:\n{}", host.webhook.log()));
    assert!(status.success(), "exit {status}:\n{}", host.webhook.log());
    assert!(
        host.webhook.log().contains("\"message\":\"stopped\""),
        "{}",
        host.webhook.log()
    );
}

/// A VirtualCluster deleted while the webhook's watch is down and the history compacted
/// can only be noticed by a re-list; its node must then be free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_after_a_broken_watch_frees_the_node_of_a_deleted_cluster() {
    use vc_test_apiserver::hooks::FaultMatch;

    let Some(host) = Host::start().await else {
        return;
    };
    host.create_prod().await;

    // Break the webhook's VirtualCluster watch and keep it broken while prod goes away.
    let watches = FaultMatch {
        verb: Some("watch".to_owned()),
        resource: Some("virtualclusters".to_owned()),
        user: None,
    };
    host.server.faults().fail_next(10_000, watches);
    host.server.faults().cut_watches();
    vc_tests::wait::eventually(
        "the webhook's next VirtualCluster watch to be refused",
        Duration::from_secs(10),
        || async { (host.server.faults().remaining() < 10_000).then_some(()) },
    )
    .await;
    let deleted = host.run(
        &[
            "delete",
            "virtualcluster",
            "prod",
            "-n",
            "default",
            "--wait=false",
        ],
        None,
    );
    assert!(deleted.status.success(), "{}", text(&deleted));
    // Without history the watch cannot resume: only a re-list shows that prod is gone.
    host.server.compact();
    host.server.faults().clear();

    host.wait_for_dev(true).await;
    let log = host.webhook.log();
    let relists = log
        .lines()
        .filter(|line| line.contains("cache synced") && line.contains("VirtualCluster"))
        .count();
    assert!(
        relists >= 2,
        "expected a second VirtualCluster list:\n{log}"
    );
}

/// Runs `kubectl` as the admin and returns what it printed on stderr, asserting it failed.
fn refused(host: &Host, args: &[&str], manifest: Option<&str>) -> String {
    let output = host.run(args, manifest);
    assert!(!output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn admitted(host: &Host, args: &[&str], manifest: Option<&str>) {
    let output = host.run(args, manifest);
    assert!(
        output.status.success(),
        "{}\n{}",
        text(&output),
        host.webhook.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_tree_image_comes_only_from_the_operator() {
    let Some(host) = Host::start().await else {
        return;
    };
    let own_image = format!("{PROD}  clusterTree:\n    image: attacker.example/miner:latest\n");
    let stderr = refused(&host, &["apply", "-f", "-"], Some(&own_image));
    assert!(
        stderr.contains(r#"denied the request: spec.clusterTree.image is chosen by the operator, not by the VirtualCluster: the clustertree runs with host credentials, and this host runs "ghcr.io/kosmos-io/kosmos-vc:0.1.0"; "attacker.example/miner:latest" is refused"#),
        "{stderr}"
    );
    admitted(&host, &["apply", "-f", "-"], Some(PROD));
    let patch = r#"{"spec":{"clusterTree":{"image":"attacker.example/miner:latest"}}}"#;
    let stderr = refused(
        &host,
        &[
            "patch",
            "virtualcluster",
            "prod",
            "-n",
            "default",
            "--type=merge",
            "-p",
            patch,
        ],
        None,
    );
    assert!(
        stderr.contains("spec.clusterTree.image is chosen by the operator"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_replicas_cannot_change_after_creation() {
    let Some(host) = Host::start().await else {
        return;
    };
    admitted(&host, &["apply", "-f", "-"], Some(PROD));
    let patch = r#"{"spec":{"controlPlane":{"etcd":{"replicas":3}}}}"#;
    let stderr = refused(
        &host,
        &[
            "patch",
            "virtualcluster",
            "prod",
            "-n",
            "default",
            "--type=merge",
            "-p",
            patch,
        ],
        None,
    );
    assert!(
        stderr.contains("denied the request: spec.controlPlane.etcd.replicas may not change after creation (1 → 3): kosmos-vc does not manage etcd membership yet"),
        "{stderr}"
    );
    let stored = host.run(
        &[
            "get",
            "virtualcluster",
            "prod",
            "-n",
            "default",
            "-o",
            "jsonpath={.spec.controlPlane.etcd.replicas}",
        ],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&stored.stdout),
        "1",
        "{}",
        text(&stored)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_controller_removes_the_finalizer() {
    let Some(host) = Host::start().await else {
        return;
    };
    admitted(&host, &["apply", "-f", "-"], Some(PROD));
    let vc = ["virtualcluster", "prod", "-n", "default"];
    let add = r#"[{"op":"add","path":"/metadata/finalizers","value":["kosmos.io/finalizer"]}]"#;
    admitted(
        &host,
        &[&["patch"][..], &vc, &["--type=json", "-p", add]].concat(),
        None,
    );
    let remove = r#"[{"op":"remove","path":"/metadata/finalizers"}]"#;
    let stderr = refused(
        &host,
        &[&["patch"][..], &vc, &["--type=json", "-p", remove]].concat(),
        None,
    );
    assert!(
        stderr.contains(r#"denied the request: finalizer "kosmos.io/finalizer" is removed only by the controller (system:serviceaccount:kosmos-system:kosmos-vc-controller)"#),
        "{stderr}"
    );
    // Deleting leaves the object terminating; even then only the controller lets it go.
    admitted(
        &host,
        &[&["delete"][..], &vc, &["--wait=false"]].concat(),
        None,
    );
    let stderr = refused(
        &host,
        &[&["patch"][..], &vc, &["--type=json", "-p", remove]].concat(),
        None,
    );
    assert!(
        stderr.contains("is removed only by the controller"),
        "{stderr}"
    );
    admitted(
        &host,
        &[
            &["patch"][..],
            &vc,
            &[
                "--type=json",
                "-p",
                remove,
                "--as=system:serviceaccount:kosmos-system:kosmos-vc-controller",
            ],
        ]
        .concat(),
        None,
    );
    let gone = host.run(&[&["get"][..], &vc].concat(), None);
    assert!(!gone.status.success(), "{}", text(&gone));
}
