//! A real node (`vc_tests::node::RealNode`: containerd, runc, bridge CNI, kubelet and
//! kube-proxy) joined to a real host control plane runs a real container from an image
//! built here, serves it through a ClusterIP, answers `kubectl logs` and `exec`, and
//! leaves the machine as it found it. Runs in the nextest group `real-node`, alone.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use vc_test_apiserver::envtest::{self, Envtest, EnvtestOptions, SKIP_MESSAGE};
use vc_tests::node::image::{ImageSpec, control_plane_image};
use vc_tests::node::{MachineState, NodeOptions, RealNode, missing_programs};

use crate::support::eventually::eventually;

pub(crate) use vc_tests::node::image::ECHO_IMAGE;
const WAIT: Duration = Duration::from_secs(60);

pub(crate) fn echo_image(dir: &std::path::Path) -> ImageSpec {
    vc_tests::node::image::echo_image(dir).unwrap()
}

pub(crate) use vc_tests::node::traffic::http_get;

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap()
}

/// The assets, when a real node can run here; otherwise why not is printed (`skipped:`),
/// which fails the test when CI is set.
fn real_node_assets() -> Option<std::path::PathBuf> {
    let Some(assets) = envtest::assets() else {
        assert!(!envtest::must_run_real(), "CI is set: {SKIP_MESSAGE}");
        eprintln!("{SKIP_MESSAGE}");
        return None;
    };
    let missing = missing_programs();
    if !missing.is_empty() {
        assert!(
            !envtest::must_run_real(),
            "CI is set, but the real node needs {missing:?} (.ci/run installs them)"
        );
        eprintln!("skipped: the real node needs {missing:?}");
        return None;
    }
    Some(assets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_node_runs_a_container_and_leaves_nothing_behind() {
    let Some(assets) = real_node_assets() else {
        return;
    };
    let before = MachineState::read();
    let started = Instant::now();
    let host = Envtest::start_with(
        &assets,
        EnvtestOptions {
            controller_manager: true,
            scheduler: true,
            ..EnvtestOptions::default()
        },
    )
    .await
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut node = RealNode::start(&host, &assets, work.path(), NodeOptions::default())
        .await
        .unwrap();
    eprintln!(
        "node1 Ready {:.1} s after start",
        started.elapsed().as_secs_f64()
    );
    node.load_image(&echo_image(work.path())).unwrap();

    let client = host_client(&host).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "echo", "labels": {"app": "echo"}},
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "echo", "image": ECHO_IMAGE, "imagePullPolicy": "Never",
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/cgi-bin/index.cgi", "port": 8080}, "periodSeconds": 1},
            }],
        },
    }))
    .unwrap();
    let created = Instant::now();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let ip = eventually(WAIT, "pod echo Ready with an IP", || async {
        let pod = pods.get("echo").await.ok()?;
        let status = pod.status?;
        let ready = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(status.pod_ip).flatten()
    })
    .await;
    eprintln!(
        "pod Ready at {ip} {:.2} s after create",
        created.elapsed().as_secs_f64()
    );
    assert!(ip.starts_with("10.244.1."), "{ip}");
    assert_eq!(
        http_get(&format!("http://{ip}:8080/cgi-bin/index.cgi"))
            .await
            .as_deref(),
        Some("echo"),
        "the container answers on its pod IP"
    );

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "echo"},
        "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    let cluster_ip = services
        .create(&PostParams::default(), &service)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap();
    let url = format!("http://{cluster_ip}/cgi-bin/index.cgi");
    let answer = eventually(WAIT, "the ClusterIP to route (kube-proxy)", || {
        let url = url.clone();
        async move { http_get(&url).await }
    })
    .await;
    assert_eq!(answer, "echo");

    let logs = kubectl(host.kubeconfig_path(), &["logs", "echo"]);
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("serving on 8080"),
        "kubectl logs: {logs:?}"
    );
    let exec = kubectl(host.kubeconfig_path(), &["exec", "echo", "--", "hostname"]);
    assert_eq!(
        String::from_utf8_lossy(&exec.stdout).trim(),
        "echo",
        "{exec:?}"
    );

    run_control_plane_images(&node, &assets, &pods, host.kubeconfig_path()).await;

    pods.delete("echo", &DeleteParams::default().grace_period(1))
        .await
        .unwrap();
    eventually(WAIT, "pod echo deleted by the kubelet", || async {
        pods.get_opt("echo").await.ok()?.is_none().then_some(())
    })
    .await;

    let problems = node.stop();
    assert!(problems.is_empty(), "stopping the node: {problems:#?}");
    drop(node);
    drop(host);
    let after = MachineState::read();
    assert_eq!(before, after, "the node left something behind");
    let leftover = std::process::Command::new("pgrep")
        .args(["-f", &work.path().display().to_string()])
        .output()
        .unwrap();
    assert!(
        leftover.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&leftover.stdout)
    );
    eprintln!(
        "real node test done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The images the controller renders for a tenant's control plane by default, built
/// from `KUBEBUILDER_ASSETS` under those exact names, each run once on the node: the
/// program the image's name promises starts and prints its version.
async fn run_control_plane_images(
    node: &RealNode,
    assets: &std::path::Path,
    pods: &Api<Pod>,
    kubeconfig: &std::path::Path,
) {
    let flags = <vc_controller::flags::Flags as clap::Parser>::parse_from(["vc-controller"]);
    let version = vc_api::admission::Defaults::default().kubernetes_version;
    let mut references = vec![flags.etcd_image.clone()];
    for program in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        references.push(format!(
            "{}/{program}:{version}",
            flags.image_registry.trim_end_matches('/')
        ));
    }
    let started = Instant::now();
    for reference in &references {
        let spec = control_plane_image(reference, assets).unwrap().unwrap();
        node.load_image(&spec).unwrap();
    }
    eprintln!(
        "control-plane images {references:?} built and loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for (index, reference) in references.iter().enumerate() {
        let program = vc_tests::node::image::program_of(reference);
        let name = format!("version-{index}");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "automountServiceAccountToken": false,
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": reference, "imagePullPolicy": "Never",
                                "command": [program, "--version"]}],
            },
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        eventually(
            WAIT,
            &format!("{reference} to run {program} --version"),
            || async {
                let phase = pods.get(&name).await.ok()?.status?.phase?;
                (phase == "Succeeded").then_some(())
            },
        )
        .await;
        let logs = kubectl(kubeconfig, &["logs", &name]);
        let text = String::from_utf8_lossy(&logs.stdout);
        let expected = if program == "etcd" {
            "etcd Version: 3.6.13"
        } else {
            "Kubernetes v1.36.2"
        };
        assert!(text.contains(expected), "{reference}: {text}");
        pods.delete(&name, &DeleteParams::default()).await.unwrap();
    }
}

async fn host_client(host: &Envtest) -> kube::Client {
    vc_test_apiserver::client_from_kubeconfig(host.kubeconfig_path())
        .await
        .unwrap()
}

/// A run killed outright (SIGKILL: no drop, no stop) leaves its nodes running: kubelets,
/// containerd and their containers, kube-proxy's chains, bridges, `lo` addresses,
/// cgroups, mounts, the host control plane. The next run that takes the machine sweeps
/// all of it from the record the killed run kept (`vc_tests::node::guard`), and the
/// machine is as it was before the killed run started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_node_left_by_a_killed_run_is_swept() {
    use std::io::BufRead as _;
    use vc_tests::node::guard::MachineGuard;
    if real_node_assets().is_none() {
        return;
    }
    let before = MachineState::read();
    let work = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vc-real-node"))
        .arg(work.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(work.path().join("vc-real-node.log")).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line == "ready")
    });
    let ready = tokio::time::timeout(Duration::from_secs(180), ready).await;
    let log = || std::fs::read_to_string(work.path().join("vc-real-node.log")).unwrap_or_default();
    assert!(
        matches!(ready, Ok(Ok(true))),
        "vc-real-node did not run its pods: {}",
        log()
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // What the killed run left: its programs still run, the machine is changed.
    let dir = work.path().display().to_string();
    let left_running = processes_naming(&dir);
    assert!(
        left_running
            .iter()
            .any(|cmdline| cmdline.contains("kubelet")),
        "the killed run's kubelets outlive it: {left_running:#?}"
    );
    assert_ne!(
        MachineState::read(),
        before,
        "the killed run changed the machine"
    );

    let swept = Instant::now();
    let guard = MachineGuard::acquire().await.unwrap();
    eprintln!(
        "swept what the killed run left in {:.1} s",
        swept.elapsed().as_secs_f64()
    );
    let still_running = processes_naming(&dir);
    assert!(still_running.is_empty(), "{still_running:#?}");
    pretty_assertions::assert_eq!(MachineState::read(), before);
    drop(guard);
    assert!(
        !std::path::Path::new(vc_tests::node::guard::RECORD).exists(),
        "the record goes with the lock"
    );
}

/// The command lines of the processes that name `text`.
fn processes_naming(text: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(text))
        .collect()
}
