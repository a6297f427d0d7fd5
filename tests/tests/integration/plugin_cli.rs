//! kubectl-vc against the test API server, through real kubectl plugin discovery: the
//! built `kubectl-vc` is the only plugin on PATH and every command runs as `kubectl vc ...`.
//!
//! The controller and webhook are not running here. Where a test needs them, the test plays
//! their part through the API (status patches, an admission hook that denies, the admin
//! kubeconfig Secret pointing at a second test API server acting as the tenant), so what is
//! checked is the plugin's side of each contract.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use vc_api::VirtualCluster;
use vc_test_apiserver::{
    AdmissionAttributes, AdmissionHook, AdmissionPhase, AdmissionResult, ApiError, ServiceResolver,
    TestApiServer, TestApiServerOptions, WebhookConfigs,
};
use vc_tests::find_on_path;

const CRD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/kosmos-vc/crds/virtualclusters.kosmos.io.yaml"
);

const COMPLETION_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../plugin/completion/kubectl_complete-vc"
);

/// A host API server with the CRD and three Ready nodes, a private kubeconfig copy, and a
/// PATH where `kubectl vc` finds the built plugin.
struct Host {
    server: TestApiServer,
    runtime: tokio::runtime::Runtime,
    home: tempfile::TempDir,
    kubeconfig: PathBuf,
    path: OsString,
    kubectl: PathBuf,
}

impl Host {
    /// `None` (after printing why) when kubectl or the built plugin is missing.
    fn start() -> Option<Self> {
        let Some(kubectl) = find_on_path("kubectl") else {
            eprintln!("skipped: kubectl is not on PATH");
            return None;
        };
        let Some(plugin) = built_plugin() else {
            eprintln!("skipped: kubectl-vc is not built; run `cargo build -p kubectl-vc` first");
            return None;
        };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let server = TestApiServer::start(TestApiServerOptions::default()).unwrap();
        runtime.block_on(server.install_yaml(CRD)).unwrap();
        let nodes: Vec<String> = (1..=3).map(node_manifest).collect();
        runtime
            .block_on(server.install_yaml(&nodes.join("---\n")))
            .unwrap();

        let home = tempfile::tempdir().unwrap();
        let bin = home.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(&plugin, bin.join("kubectl-vc")).unwrap();
        std::fs::copy(COMPLETION_SCRIPT, bin.join("kubectl_complete-vc")).unwrap();
        let kubeconfig = home.path().join("config");
        std::fs::copy(server.kubeconfig_path(), &kubeconfig).unwrap();
        let mut path = OsString::from(&bin);
        if let Some(rest) = std::env::var_os("PATH") {
            path.push(":");
            path.push(rest);
        }
        Some(Self {
            server,
            runtime,
            home,
            kubeconfig,
            path,
            kubectl,
        })
    }

    /// Runs `kubectl ARGS` with this host's kubeconfig, HOME and PATH.
    fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(args, self.kubeconfig.as_os_str())
    }

    /// Runs `kubectl ARGS` with `KUBECONFIG` set to `kubeconfig_variable`.
    fn kubectl_with(&self, args: &[&str], kubeconfig_variable: &std::ffi::OsStr) -> Output {
        Command::new(&self.kubectl)
            .args(args)
            .env("KUBECONFIG", kubeconfig_variable)
            .env("HOME", self.home.path())
            .env("PATH", &self.path)
            .output()
            .unwrap()
    }

    /// Runs `kubectl vc ARGS` and asserts it succeeded; returns stdout.
    fn vc_ok(&self, args: &[&str]) -> String {
        let output = self.vc(args);
        assert!(
            output.status.success(),
            "kubectl vc {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn vc(&self, args: &[&str]) -> Output {
        let mut full = vec!["vc"];
        full.extend_from_slice(args);
        self.kubectl(&full)
    }

    fn clusters(&self) -> Api<VirtualCluster> {
        let client = self.runtime.block_on(self.server.client()).unwrap();
        Api::namespaced(client, "default")
    }
}

fn node_manifest(index: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node{index}\nstatus:\n  conditions:\n  - {{type: Ready, status: \"True\", reason: KubeletReady, message: ready}}\n"
    )
}

/// `KUBECTL_VC` when set, else `kubectl-vc` in the target directory of this test binary
/// (`target/<profile>/deps/plugin_cli-*` -> `target/<profile>/kubectl-vc`).
fn built_plugin() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("KUBECTL_VC") {
        return Some(PathBuf::from(explicit));
    }
    let executable = std::env::current_exe().ok()?;
    let profile_directory = executable.parent()?.parent()?;
    Some(profile_directory.join("kubectl-vc")).filter(|candidate| candidate.is_file())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn create_list_get_describe_delete_through_kubectl() {
    let Some(host) = Host::start() else { return };

    let created = host.vc_ok(&[
        "create",
        "prod",
        "--nodes",
        "node1,node2",
        "--cpu",
        "2",
        "--memory",
        "4Gi",
    ]);
    assert_eq!(created, "virtualcluster.kosmos.io/prod created\n");
    host.vc_ok(&[
        "create",
        "staging",
        "--cpu",
        "1",
        "--kubernetes-version",
        "v1.33.4",
    ]);

    let table = host.vc_ok(&["list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME   "), "{table}");
    let prod: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &prod[..6],
        ["prod", "<none>", "node1,node2", "2", "4Gi", "<none>"],
        "{table}"
    );
    let staging: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        &staging[..6],
        ["staging", "<none>", "<none>", "1", "<none>", "v1.33.4"],
        "{table}"
    );

    let wide = host.vc_ok(&["get", "-A", "-o", "wide"]);
    assert!(wide.starts_with("NAMESPACE   NAME "), "{wide}");
    assert!(
        wide.lines()
            .next()
            .unwrap()
            .ends_with("CONDITIONS   ENDPOINT"),
        "{wide}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&host.vc_ok(&["get", "prod", "-o", "json"])).unwrap();
    assert_eq!(
        json["spec"]["promoteResources"]["nodes"],
        json!(["node1", "node2"])
    );
    assert_eq!(json["metadata"].get("managedFields"), None);
    assert_eq!(
        host.vc_ok(&["get", "-o", "name"]),
        "virtualcluster.kosmos.io/prod\nvirtualcluster.kosmos.io/staging\n"
    );

    let uid = json["metadata"]["uid"].as_str().unwrap().to_owned();
    let now = jiff::Timestamp::now();
    let events = format!(
        "apiVersion: v1\nkind: Event\nmetadata: {{name: prod.1, namespace: default}}\ninvolvedObject: {{apiVersion: kosmos.io/v1alpha1, kind: VirtualCluster, name: prod, namespace: default, uid: {uid}}}\nreason: Provisioned\nmessage: control plane ready\ntype: Normal\ncount: 2\nsource: {{component: kosmos-vc-controller}}\nfirstTimestamp: \"{now}\"\nlastTimestamp: \"{now}\"\n---\napiVersion: v1\nkind: Event\nmetadata: {{name: other.1, namespace: default}}\ninvolvedObject: {{apiVersion: kosmos.io/v1alpha1, kind: VirtualCluster, name: staging, namespace: default, uid: other-uid}}\nreason: SomethingElse\nmessage: not about prod\ntype: Warning\nsource: {{component: kosmos-vc-controller}}\nlastTimestamp: \"{now}\"\n"
    );
    host.runtime
        .block_on(host.server.install_yaml(&events))
        .unwrap();
    let page = host.vc_ok(&["describe", "prod"]);
    let event_line = page
        .lines()
        .find(|line| line.contains("Provisioned"))
        .unwrap_or_default();
    assert!(
        event_line.starts_with("  Normal   Provisioned   "),
        "{page}"
    );
    assert!(
        event_line.ends_with("(x2)   kosmos-vc-controller   control plane ready"),
        "{page}"
    );
    assert!(!page.contains("not about prod"), "{page}");
    for expected in [
        "Name:                   prod\n",
        "Namespace:              default\n",
        "    Nodes:              node1, node2\n",
        "  node1   True\n",
        "Events:",
    ] {
        assert!(page.contains(expected), "missing {expected:?} in\n{page}");
    }

    assert_eq!(
        host.vc_ok(&["delete", "prod", "staging"]),
        "virtualcluster.kosmos.io \"prod\" deleted\nvirtualcluster.kosmos.io \"staging\" deleted\n"
    );
    let missing = host.vc(&["get", "prod"]);
    assert_eq!(missing.status.code(), Some(1));
    let message = stderr(&missing);
    assert!(message.starts_with("Error from server (NotFound): VirtualCluster \"prod\" not found in namespace \"default\"\n"), "{message}");
    assert!(message.contains("kubectl vc list -A"), "{message}");
    assert_eq!(host.vc(&["delete", "prod"]).status.code(), Some(1));
    assert_eq!(host.vc_ok(&["delete", "prod", "--ignore-not-found"]), "");
}

#[test]
fn label_selector_and_namespaces_narrow_the_list() {
    let Some(host) = Host::start() else { return };
    host.runtime
        .block_on(host.server.install_yaml(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n---\napiVersion: kosmos.io/v1alpha1\nkind: VirtualCluster\nmetadata: {name: a, namespace: team-a, labels: {tier: gold}}\nspec: {}\n---\napiVersion: kosmos.io/v1alpha1\nkind: VirtualCluster\nmetadata: {name: b, namespace: default}\nspec: {}\n",
        ))
        .unwrap();
    assert_eq!(
        host.vc_ok(&["list", "-o", "name"]),
        "virtualcluster.kosmos.io/b\n"
    );
    assert_eq!(
        host.vc_ok(&["list", "-n", "team-a", "-o", "name"]),
        "virtualcluster.kosmos.io/a\n"
    );
    assert_eq!(
        host.vc_ok(&["list", "-A", "-l", "tier=gold", "-o", "name"]),
        "virtualcluster.kosmos.io/a\n"
    );
    let empty = host.vc(&["list", "-l", "tier=silver"]);
    assert!(empty.status.success());
    assert_eq!(stderr(&empty), "No resources found in default namespace.\n");
}

/// Denies every VirtualCluster named `denied` the way the apiserver relays a webhook denial.
#[derive(Debug)]
struct DenyingWebhook;

const DENIAL: &str = "admission webhook \"validate.vc.kosmos.io\" denied the request: node \"node7\" already belongs to VirtualCluster team-a/prod";

impl AdmissionHook for DenyingWebhook {
    fn admit<'a>(
        &'a self,
        phase: AdmissionPhase,
        attrs: &'a AdmissionAttributes,
        _configs: &'a WebhookConfigs,
        _resolver: ServiceResolver,
    ) -> BoxFuture<'a, Result<AdmissionResult, ApiError>> {
        Box::pin(async move {
            if matches!(phase, AdmissionPhase::Validating)
                && attrs.resource == "virtualclusters"
                && attrs.name == "denied"
            {
                let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": DENIAL, "reason": "Forbidden", "code": 403});
                return Err(ApiError::raw(403, "Forbidden", DENIAL, body.to_string()));
            }
            Ok(AdmissionResult::default())
        })
    }
}

const WEBHOOK_CONFIGURATION: &str = "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: kosmos-vc}
webhooks:
- name: validate.vc.kosmos.io
  clientConfig: {url: \"https://127.0.0.1:9/validate\"}
  rules: [{apiGroups: [kosmos.io], apiVersions: [v1alpha1], operations: [CREATE, UPDATE], resources: [virtualclusters]}]
  sideEffects: None
  admissionReviewVersions: [v1]
";

#[test]
fn denied_create_prints_the_webhook_message_and_exits_1() {
    let Some(host) = Host::start() else { return };
    host.server.set_admission(Some(Arc::new(DenyingWebhook)));
    // The server consults admission only while a webhook configuration exists; the hook
    // above answers in place of the URL.
    host.runtime
        .block_on(host.server.install_yaml(WEBHOOK_CONFIGURATION))
        .unwrap();

    let denied = host.vc(&["create", "denied", "--nodes", "node7"]);
    assert_eq!(denied.status.code(), Some(1));
    assert_eq!(
        stderr(&denied),
        format!("Error from server (Forbidden): {DENIAL}\n")
    );
    assert!(denied.stdout.is_empty());

    let dry_run = host.vc(&["create", "denied", "--dry-run=server"]);
    assert_eq!(
        dry_run.status.code(),
        Some(1),
        "server dry run must go through admission"
    );

    assert_eq!(
        host.vc_ok(&["create", "allowed", "--cpu", "1", "--dry-run=server"]),
        "virtualcluster.kosmos.io/allowed created (server dry run)\n"
    );
    assert_eq!(
        host.vc(&["get", "allowed"]).status.code(),
        Some(1),
        "server dry run must store nothing"
    );
}

#[test]
fn create_wait_returns_once_the_status_says_initialized() {
    let Some(host) = Host::start() else { return };
    let clusters = host.clusters();
    // Plays the controller: moves the phase along once the object exists.
    let controller = host.runtime.spawn(async move {
        vc_tests::wait::eventually("prod to be created", Duration::from_secs(30), || async {
            clusters.get_opt("prod").await.unwrap()
        })
        .await;
        for (phase, message) in [
            ("Pending", ""),
            ("Preparing", "waiting for etcd"),
            ("Initialized", ""),
        ] {
            // The stand-in controller's pace: the plugin's watch must see each phase as a
            // change of its own, and its output only shows once it exits.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let status = json!({"status": {"phase": phase, "message": message}});
            clusters
                .patch_status("prod", &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
        }
    });

    let output = host.vc(&["create", "prod", "--cpu", "1", "--wait", "--timeout", "60s"]);
    let progress = stderr(&output);
    assert!(output.status.success(), "{progress}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "virtualcluster.kosmos.io/prod created\n"
    );
    let lines: Vec<&str> = progress
        .lines()
        .filter(|line| line.starts_with("prod: "))
        .collect();
    assert_eq!(lines.last(), Some(&"prod: Initialized"), "{progress}");
    assert!(
        lines.contains(&"prod: Preparing (waiting for etcd)"),
        "{progress}"
    );
    host.runtime.block_on(controller).unwrap();

    let timed_out = host.vc(&["create", "stuck", "--cpu", "1", "--wait", "--timeout", "1s"]);
    assert_eq!(timed_out.status.code(), Some(1));
    assert!(
        stderr(&timed_out).contains(
            "timed out after 1s waiting for VirtualCluster \"stuck\" to become Initialized"
        ),
        "{}",
        stderr(&timed_out)
    );
}

#[test]
fn rotate_kubeconfig_sets_a_new_request_and_waits_until_it_is_served() {
    let Some(host) = Host::start() else { return };
    host.vc_ok(&["create", "prod", "--cpu", "1"]);
    let output = host.vc_ok(&["rotate-kubeconfig", "prod"]);
    let annotation = vc_api::constants::ROTATE_ADMIN_KUBECONFIG_ANNOTATION;
    let clusters = host.clusters();
    let request = |clusters: &Api<VirtualCluster>| {
        let cluster = host.runtime.block_on(clusters.get("prod")).unwrap();
        cluster.metadata.annotations.unwrap()[annotation].clone()
    };
    let first = request(&clusters);
    assert_eq!(
        output,
        format!(
            "virtualcluster.kosmos.io/prod admin kubeconfig rotation requested ({annotation}={first})\n"
        )
    );

    // Plays the controller: records the request it acted on once a new one appears.
    let watched = clusters.clone();
    let controller = host.runtime.spawn(async move {
        let current =
            vc_tests::wait::eventually("a second request", Duration::from_secs(30), || async {
                let cluster = watched.get("prod").await.unwrap();
                let current = cluster.metadata.annotations.unwrap()[annotation].clone();
                (current != first).then_some(current)
            })
            .await;
        // The stand-in controller's pace: the plugin must be waiting when the status
        // comes, and a blocking command shows nothing to wait on until it exits.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let status = json!({"status": {"adminKubeconfigRotation": current}});
        watched
            .patch_status("prod", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
        current
    });
    let waited = host.vc(&["rotate-kubeconfig", "prod", "--wait", "--timeout", "60s"]);
    assert!(waited.status.success(), "{}", stderr(&waited));
    let second = host.runtime.block_on(controller).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&waited.stdout),
        format!(
            "virtualcluster.kosmos.io/prod admin kubeconfig rotation requested ({annotation}={second})\nvirtualcluster.kosmos.io/prod admin kubeconfig rotated: the old one is refused; take the new one with \"kubectl vc use-context prod\"\n"
        )
    );

    // Nobody answers: --wait gives up and says so.
    let timed_out = host.vc(&["rotate-kubeconfig", "prod", "--wait", "--timeout", "1s"]);
    assert_eq!(timed_out.status.code(), Some(1));
    assert!(
        stderr(&timed_out).contains(
            "timed out after 1s waiting for VirtualCluster \"prod\" to serve the new admin kubeconfig"
        ),
        "{}",
        stderr(&timed_out)
    );
    let missing = host.vc(&["rotate-kubeconfig", "absent"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("absent"), "{}", stderr(&missing));
}

#[test]
fn nodes_add_and_remove_patch_the_node_list() {
    let Some(host) = Host::start() else { return };
    host.vc_ok(&["create", "prod", "--nodes", "node1"]);
    assert_eq!(
        host.vc_ok(&["nodes", "add", "prod", "node2", "node3"]),
        "virtualcluster.kosmos.io/prod patched\n"
    );
    assert_eq!(
        host.vc_ok(&["nodes", "remove", "prod", "node1"]),
        "virtualcluster.kosmos.io/prod patched\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&host.vc_ok(&["get", "prod", "-o", "json"])).unwrap();
    assert_eq!(
        json["spec"]["promoteResources"]["nodes"],
        json!(["node2", "node3"])
    );
    let again = host.vc(&["nodes", "add", "prod", "node2"]);
    assert!(again.status.success());
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        "virtualcluster.kosmos.io/prod unchanged\n"
    );
    assert_eq!(
        stderr(&again),
        "warning: node \"node2\" is already in VirtualCluster \"prod\"\n"
    );
}

/// Writes the tenant's admin kubeconfig where the controller would: Secret
/// `NAME-admin-kubeconfig`, key `kubeconfig`.
fn publish_tenant_kubeconfig(host: &Host, name: &str, tenant: &TestApiServer) {
    let text = std::fs::read(tenant.kubeconfig_path()).unwrap();
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {}, namespace: default}}\ndata:\n  {}: {encoded}\n",
        vc_api::constants::admin_kubeconfig_secret_name(name),
        vc_api::constants::KUBECONFIG_SECRET_KEY
    );
    host.runtime
        .block_on(host.server.install_yaml(&secret))
        .unwrap();
}

fn parse(path: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn use_context_reaches_the_tenant_and_delete_removes_the_entries() {
    let Some(host) = Host::start() else { return };
    // A second API server stands in for the tenant control plane.
    let tenant = TestApiServer::start(TestApiServerOptions::default()).unwrap();
    host.runtime
        .block_on(tenant.install_yaml(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: only-in-the-tenant}\n",
        ))
        .unwrap();
    host.vc_ok(&["create", "prod", "--cpu", "1"]);
    publish_tenant_kubeconfig(&host, "prod", &tenant);
    let before = parse(&host.kubeconfig);
    let host_context = before["current-context"].as_str().unwrap().to_owned();

    assert_eq!(
        host.vc_ok(&["use-context", "prod"]),
        "Switched to context \"vc-prod\".\n"
    );
    let current = host.kubectl(&["config", "current-context"]);
    assert_eq!(String::from_utf8_lossy(&current.stdout), "vc-prod\n");
    let ready = host.kubectl(&["get", "--raw", "/readyz"]);
    assert!(ready.status.success(), "{}", stderr(&ready));
    assert_eq!(String::from_utf8_lossy(&ready.stdout), "ok");
    let tenant_only = host.kubectl(&["get", "namespace", "only-in-the-tenant", "-o", "name"]);
    assert_eq!(
        String::from_utf8_lossy(&tenant_only.stdout),
        "namespace/only-in-the-tenant\n",
        "{}",
        stderr(&tenant_only)
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&host.kubeconfig).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // --print names the entries as asked and leaves the file alone.
    let switched_back = host.kubectl(&["config", "use-context", &host_context]);
    assert!(switched_back.status.success());
    let file_before_print = std::fs::read(&host.kubeconfig).unwrap();
    let printed: serde_yaml::Value = serde_yaml::from_str(&host.vc_ok(&[
        "use-context",
        "prod",
        "--print",
        "--context-name",
        "mine",
    ]))
    .unwrap();
    assert_eq!(printed["current-context"], "mine");
    assert_eq!(printed["contexts"][0]["context"]["cluster"], "mine");
    assert_eq!(std::fs::read(&host.kubeconfig).unwrap(), file_before_print);

    // A second use-context replaces its entries: still one of each.
    assert_eq!(
        host.vc_ok(&["use-context", "prod", "--no-switch"]),
        format!(
            "Context \"vc-prod\" merged into {}.\n",
            host.kubeconfig.display()
        )
    );
    let merged = parse(&host.kubeconfig);
    assert_eq!(merged["contexts"].as_sequence().unwrap().len(), 2);
    assert_eq!(
        merged["current-context"].as_str(),
        Some(host_context.as_str())
    );

    let deleted = host.vc_ok(&["delete", "prod"]);
    assert!(
        deleted.contains(&format!(
            "Removed context \"vc-prod\" from {}.",
            host.kubeconfig.display()
        )),
        "{deleted}"
    );
    assert_eq!(parse(&host.kubeconfig), before);
}

#[test]
fn kubeconfig_falls_back_to_the_spec_field() {
    let Some(host) = Host::start() else { return };
    use base64::Engine as _;
    let tenant_kubeconfig = "apiVersion: v1\nkind: Config\nclusters: [{name: t, cluster: {server: \"https://127.100.0.9:6443\"}}]\nusers: [{name: t, user: {token: abc}}]\ncontexts: [{name: t, context: {cluster: t, user: t}}]\ncurrent-context: t\n";
    let encoded = base64::engine::general_purpose::STANDARD.encode(tenant_kubeconfig);
    host.runtime
        .block_on(host.server.install_yaml(&format!(
            "apiVersion: kosmos.io/v1alpha1\nkind: VirtualCluster\nmetadata: {{name: prod, namespace: default}}\nspec: {{kubeconfig: {encoded}}}\n"
        )))
        .unwrap();
    assert_eq!(host.vc_ok(&["kubeconfig", "prod"]), tenant_kubeconfig);
    // Listing and describing never print the credential.
    assert!(
        !host
            .vc_ok(&["get", "prod", "-o", "yaml"])
            .contains(&encoded)
    );
    assert!(!host.vc_ok(&["describe", "prod"]).contains(&encoded));

    host.vc_ok(&["create", "fresh"]);
    let none_yet = host.vc(&["use-context", "fresh"]);
    assert_eq!(none_yet.status.code(), Some(1));
    assert!(
        stderr(&none_yet).contains("has no kubeconfig yet"),
        "{}",
        stderr(&none_yet)
    );
}

#[test]
fn kubectl_completes_names_through_the_plugin() {
    let Some(host) = Host::start() else { return };
    host.vc_ok(&["create", "prod"]);
    host.vc_ok(&["create", "preview"]);
    host.vc_ok(&["create", "other"]);
    let names = host.kubectl(&["__complete", "vc", "describe", "p"]);
    assert_eq!(
        String::from_utf8_lossy(&names.stdout),
        "preview\nprod\n:4\n",
        "{}",
        stderr(&names)
    );
    let more = host.kubectl(&["__complete", "vc", "delete", "prod", ""]);
    assert_eq!(
        String::from_utf8_lossy(&more.stdout),
        "other\npreview\n:4\n",
        "{}",
        stderr(&more)
    );
    let commands = host.kubectl(&["__complete", "vc", "use"]);
    assert!(
        String::from_utf8_lossy(&commands.stdout).starts_with("use-context\t"),
        "{}",
        stderr(&commands)
    );
}

#[test]
fn a_missing_namespace_is_named_by_the_server() {
    let Some(host) = Host::start() else { return };
    let no_namespace = host.vc(&["create", "prod", "-n", "nowhere"]);
    assert_eq!(no_namespace.status.code(), Some(1));
    assert_eq!(
        stderr(&no_namespace),
        "Error from server (NotFound): namespaces \"nowhere\" not found\n"
    );
}

#[test]
fn use_context_with_two_kubeconfig_files_writes_the_first_existing_one() {
    let Some(host) = Host::start() else { return };
    let tenant = TestApiServer::start(TestApiServerOptions::default()).unwrap();
    host.vc_ok(&["create", "prod"]);
    publish_tenant_kubeconfig(&host, "prod", &tenant);
    // KUBECONFIG=missing:personal:config, where `personal` exists but is empty.
    let missing = host.home.path().join("missing");
    let personal = host.home.path().join("personal");
    std::fs::write(&personal, "").unwrap();
    let variable = std::env::join_paths([&missing, &personal, &host.kubeconfig]).unwrap();
    let shared_before = std::fs::read(&host.kubeconfig).unwrap();

    let switched = host.kubectl_with(&["vc", "use-context", "prod"], &variable);
    assert!(switched.status.success(), "{}", stderr(&switched));
    assert_eq!(
        String::from_utf8_lossy(&switched.stdout),
        "Switched to context \"vc-prod\".\n"
    );
    assert!(!missing.exists());
    assert_eq!(
        std::fs::read(&host.kubeconfig).unwrap(),
        shared_before,
        "the shared file must not change"
    );
    let personal_file = parse(&personal);
    assert_eq!(personal_file["current-context"], "vc-prod");

    // kubectl merges both files and lands on the tenant.
    let ready = host.kubectl_with(&["get", "--raw", "/readyz"], &variable);
    assert_eq!(
        String::from_utf8_lossy(&ready.stdout),
        "ok",
        "{}",
        stderr(&ready)
    );
    let contexts = host.kubectl_with(&["config", "get-contexts", "-o", "name"], &variable);
    let host_context = parse(&host.kubeconfig)["current-context"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut expected = vec!["vc-prod".to_owned(), host_context];
    expected.sort();
    let listed: Vec<String> = String::from_utf8_lossy(&contexts.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, expected);
}

/// Runs `kubectl ARGS`, asserts success and returns stdout.
fn kubectl_ok(host: &Host, args: &[&str]) -> String {
    let output = host.kubectl(args);
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}",
        stderr(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The words a YAML 1.1 reader (kubectl's) does not take as strings when written plain.
const YAML_11_SPECIALS: &[&str] = &[
    "y",
    "n",
    "yes",
    "off",
    "~",
    "0x1F",
    "1e3",
    "010",
    "2001-12-14",
];

#[test]
fn use_context_keeps_a_context_kubectl_wrote_for_every_yaml_11_scalar() {
    let Some(host) = Host::start() else { return };
    let tenant = TestApiServer::start(TestApiServerOptions::default()).unwrap();
    host.vc_ok(&["create", "demo"]);
    publish_tenant_kubeconfig(&host, "demo", &tenant);
    let host_context = kubectl_ok(&host, &["config", "current-context"])
        .trim()
        .to_owned();
    for special in YAML_11_SPECIALS {
        kubectl_ok(
            &host,
            &[
                "config",
                "set-context",
                "other",
                "--cluster=x",
                &format!("--user={special}"),
            ],
        );
        assert_eq!(
            host.vc_ok(&["use-context", "demo"]),
            "Switched to context \"vc-demo\".\n"
        );
        let listed = kubectl_ok(&host, &["config", "get-contexts"]);
        let other: Vec<&str> = listed
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|words| words.first() == Some(&"other"))
            .unwrap_or_default();
        assert_eq!(other, ["other", "x", special], "{listed}");
        kubectl_ok(&host, &["config", "use-context", &host_context]);
    }
}

#[test]
fn in_a_tenant_context_vc_commands_reach_the_host_and_disconnect_goes_back() {
    let Some(host) = Host::start() else { return };
    let tenant = TestApiServer::start(TestApiServerOptions::default()).unwrap();
    host.runtime
        .block_on(tenant.install_yaml(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: only-in-the-tenant}\n",
        ))
        .unwrap();
    host.vc_ok(&["create", "demo"]);
    host.vc_ok(&["create", "staging"]);
    publish_tenant_kubeconfig(&host, "demo", &tenant);
    let host_context = kubectl_ok(&host, &["config", "current-context"])
        .trim()
        .to_owned();

    host.vc_ok(&["use-context", "demo"]);
    // kubectl itself now talks to the tenant...
    assert_eq!(
        kubectl_ok(
            &host,
            &["get", "namespace", "only-in-the-tenant", "-o", "name"]
        ),
        "namespace/only-in-the-tenant\n"
    );
    // ...and kubectl vc to the host it came from, saying so once.
    let listed = host.vc(&["list", "-o", "name"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "virtualcluster.kosmos.io/demo\nvirtualcluster.kosmos.io/staging\n"
    );
    assert_eq!(
        stderr(&listed),
        format!(
            "Current context \"vc-demo\" is VirtualCluster default/demo; using its host context \"{host_context}\" (pass --context to choose another, `kubectl vc disconnect` to go back).\n"
        )
    );
    // A second use-context from inside the tenant reads through the host too.
    host.vc_ok(&["use-context", "demo"]);

    assert_eq!(
        host.vc_ok(&["disconnect"]),
        format!("Switched to context \"{host_context}\".\n")
    );
    assert_eq!(
        kubectl_ok(&host, &["config", "current-context"]),
        format!("{host_context}\n")
    );
    let back_on_host = host.vc(&["list", "-o", "name"]);
    assert!(
        stderr(&back_on_host).is_empty(),
        "{}",
        stderr(&back_on_host)
    );

    host.vc_ok(&["use-context", "demo"]);
    assert_eq!(
        host.vc_ok(&["use-context", "--host"]),
        format!("Switched to context \"{host_context}\".\n")
    );
    let not_in_a_tenant = host.vc(&["disconnect"]);
    assert_eq!(not_in_a_tenant.status.code(), Some(1));
    assert_eq!(
        stderr(&not_in_a_tenant),
        format!(
            "error: current context \"{host_context}\" was not written by `kubectl vc use-context`, so kubectl-vc does not know where it came from; switch with `kubectl config use-context NAME`\n"
        )
    );
}

#[test]
fn tenant_kubeconfig_cannot_carry_exec_or_skip_tls() {
    let Some(host) = Host::start() else { return };
    let tenant = TestApiServer::start(TestApiServerOptions::default()).unwrap();
    host.vc_ok(&["create", "demo"]);
    let honest = std::fs::read_to_string(tenant.kubeconfig_path()).unwrap();
    let mut document: serde_yaml::Value = serde_yaml::from_str(&honest).unwrap();
    let user = &mut document["users"][0]["user"];
    user["exec"] = serde_yaml::from_str(
        "{apiVersion: client.authentication.k8s.io/v1, command: sh, args: [-c, 'touch /tmp/pwned'], interactiveMode: Never}",
    )
    .unwrap();
    let with_exec = serde_yaml::to_string(&document).unwrap();
    let mut document: serde_yaml::Value = serde_yaml::from_str(&honest).unwrap();
    document["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = true.into();
    let skipping_tls = serde_yaml::to_string(&document).unwrap();

    let before = std::fs::read(&host.kubeconfig).unwrap();
    for (text, list, field) in [
        (with_exec, "user", "exec"),
        (skipping_tls, "cluster", "insecure-skip-tls-verify"),
    ] {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        let secret = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: demo-admin-kubeconfig, namespace: default}}\ndata:\n  kubeconfig: {encoded}\n"
        );
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(
            host.runtime.block_on(host.server.client()).unwrap(),
            "default",
        );
        let _ = host
            .runtime
            .block_on(secrets.delete("demo-admin-kubeconfig", &Default::default()));
        host.runtime
            .block_on(host.server.install_yaml(&secret))
            .unwrap();

        let refused = host.vc(&["use-context", "demo"]);
        assert_eq!(refused.status.code(), Some(1));
        let message = stderr(&refused);
        assert!(
            message.starts_with(
                "error: refusing the admin kubeconfig of VirtualCluster \"demo\" in namespace \"default\" (Secret demo-admin-kubeconfig or spec.kubeconfig): "
            ),
            "{message}"
        );
        assert!(
            message.contains(&format!(
                "the tenant kubeconfig's {list} sets `{field}`, which kubectl-vc never copies into your kubeconfig"
            )),
            "{message}"
        );
        assert_eq!(
            std::fs::read(&host.kubeconfig).unwrap(),
            before,
            "a refused kubeconfig must not touch the operator's"
        );
    }
}

/// Plays the webhook with its own rules (`vc_api::admission::validate`) over the host's
/// nodes and VirtualClusters, so the warning text is the webhook's.
struct RulesWebhook {
    client: kube::Client,
}

impl std::fmt::Debug for RulesWebhook {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RulesWebhook")
            .finish_non_exhaustive()
    }
}

impl AdmissionHook for RulesWebhook {
    fn admit<'a>(
        &'a self,
        phase: AdmissionPhase,
        attrs: &'a AdmissionAttributes,
        _configs: &'a WebhookConfigs,
        _resolver: ServiceResolver,
    ) -> BoxFuture<'a, Result<AdmissionResult, ApiError>> {
        use vc_api::admission::{
            ClusterFacts, Inventory, NodeFacts, Operation, Policy, Request, validate,
        };
        Box::pin(async move {
            if !matches!(phase, AdmissionPhase::Validating)
                || attrs.resource != "virtualclusters"
                || !attrs.subresource.is_empty()
            {
                return Ok(AdmissionResult::default());
            }
            let mut inventory = Inventory::new();
            let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
            for node in nodes.list(&Default::default()).await.unwrap() {
                inventory.upsert_node(NodeFacts::from_node(&node));
            }
            let clusters: Api<VirtualCluster> = Api::all(self.client.clone());
            for cluster in clusters.list(&Default::default()).await.unwrap() {
                if let Some(facts) = ClusterFacts::from_virtual_cluster(&cluster) {
                    inventory.upsert_cluster(facts);
                }
            }
            let parse = |value: &Option<serde_json::Value>| -> Option<VirtualCluster> {
                value
                    .clone()
                    .map(|value| serde_json::from_value(value).unwrap())
            };
            let (object, old_object) = (parse(&attrs.object), parse(&attrs.old_object));
            let operation = match attrs.operation.as_str() {
                "CREATE" => Operation::Create,
                "UPDATE" => Operation::Update,
                _ => Operation::Delete,
            };
            let verdict = validate(
                &Request {
                    operation,
                    username: &attrs.user.username,
                    object: object.as_ref(),
                    old_object: old_object.as_ref(),
                },
                &inventory,
                &Policy::default(),
            );
            assert!(verdict.is_allowed(), "{:?}", verdict.denial);
            Ok(AdmissionResult {
                object: None,
                warnings: verdict.warnings,
            })
        })
    }
}

#[test]
fn create_on_a_not_ready_node_prints_the_webhooks_warning() {
    let Some(host) = Host::start() else { return };
    let client = host.runtime.block_on(host.server.client()).unwrap();
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "PLEG is not healthy"}]}});
    host.runtime
        .block_on(nodes.patch_status("node2", &PatchParams::default(), &Patch::Merge(&not_ready)))
        .unwrap();
    host.server
        .set_admission(Some(Arc::new(RulesWebhook { client })));
    host.runtime
        .block_on(host.server.install_yaml(WEBHOOK_CONFIGURATION))
        .unwrap();

    let created = host.vc(&["create", "demo", "--nodes", "node1,node2"]);
    assert!(created.status.success(), "{}", stderr(&created));
    assert_eq!(
        String::from_utf8_lossy(&created.stdout),
        "virtualcluster.kosmos.io/demo created\n"
    );
    assert_eq!(
        stderr(&created),
        "Warning: node \"node2\" is NotReady; it is promoted, but tenant workloads will not run on it until it is Ready and uncordoned\n"
    );

    let added = host.vc(&["nodes", "add", "demo", "node3"]);
    assert!(added.status.success(), "{}", stderr(&added));
    assert_eq!(stderr(&added), "", "a Ready node draws no warning");
}

/// Finding 8 of issue 16: text others control (a status message or condition quoting a
/// tenant apiserver, an Event's note, anything whoever may update the status wrote)
/// reaches the operator's terminal through `kubectl vc list` and `describe`. Terminal
/// escapes, newlines and bidirectional overrides show as escapes there, never act.
#[test]
fn hostile_status_text_is_printed_escaped() {
    let Some(host) = Host::start() else { return };
    host.vc_ok(&["create", "prod", "--cpu", "1"]);
    let clusters = host.clusters();
    let retitle = "\u{1b}]0;owned\u{7}\u{1b}[2Jready\nprod   Completed";
    let status = json!({"status": {
        "phase": "Failed",
        "message": retitle,
        "conditions": [{
            "type": "Ready\u{1b}[8m", "status": "False", "reason": "Tenant\u{202e}",
            "message": "webhook said:\r\n\u{1b}[31mall good", "lastTransitionTime": "2026-01-01T00:00:00Z",
        }],
    }});
    let uid = host.runtime.block_on(async {
        clusters
            .patch_status("prod", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap()
            .metadata
            .uid
            .unwrap()
    });
    let client = host.runtime.block_on(host.server.client()).unwrap();
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, "default");
    let event = json!({
        "metadata": {"name": "prod.hostile"},
        "involvedObject": {"apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
            "name": "prod", "namespace": "default", "uid": uid},
        "type": "Warning", "reason": "ReconcileFailed", "count": 1,
        "message": "tenant said \u{1b}[1K\u{1b}[0Gnothing\u{9b}happened",
        "lastTimestamp": "2026-01-01T00:00:00Z",
        "source": {"component": "kosmos-vc-controller"},
    });
    host.runtime
        .block_on(events.create(&Default::default(), &serde_json::from_value(event).unwrap()))
        .unwrap();

    let wide = host.vc_ok(&["list", "-o", "wide"]);
    let describe = host.vc_ok(&["describe", "prod"]);
    for output in [&wide, &describe] {
        assert!(
            !output
                .chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "a control character reached the terminal: {output:?}"
        );
    }
    assert_eq!(wide.lines().count(), 2, "{wide}");
    assert!(wide.contains("Ready\\x1b[8m=False"), "{wide}");
    assert!(
        describe.contains("\\x1b]0;owned\\x07\\x1b[2Jready\\nprod   Completed"),
        "{describe}"
    );
    assert!(
        describe.contains("webhook said:\\r\\n\\x1b[31mall good"),
        "{describe}"
    );
    assert!(describe.contains("Tenant\\u{202e}"), "{describe}");
    assert!(
        describe.contains("tenant said \\x1b[1K\\x1b[0Gnothing\\x9bhappened"),
        "{describe}"
    );
    // One line per message: the forged "prod   Completed" stays inside the Message field.
    assert!(
        !describe
            .lines()
            .any(|line| line.trim_start().starts_with("prod   Completed")),
        "{describe}"
    );
}
