//! `vc-sandbox`: try kosmos-vc without a cluster.
//!
//! Starts what the end-to-end scenarios start (a host, the chart's CRD, RBAC and webhook
//! configurations, and the built `vc-webhook` and `vc-controller` as separate processes),
//! then stays up and prints the `KUBECONFIG` to use with `kubectl vc create ...`. Ctrl-C
//! stops everything it started.
//!
//! With `KUBEBUILDER_ASSETS` holding the Kubernetes binaries, the host is real (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler), and, run as root on a
//! machine with the real node's Debian packages (`.ci/run` installs them), it has one
//! real node, `node1`, which runs every tenant's control plane and clustertree and the
//! tenants' pods as real containers (`--simulated-nodes` asks for six simulated kubelets
//! instead). Without the assets, or with `--test-apiserver`, the host is the in-process
//! test API server with six simulated kubelets. `--real-apiserver` insists on the real
//! host.
//!
//! Build first: `cargo build --workspace --bins`, then `cargo run -p vc-tests --bin vc-sandbox`.

use anyhow::bail;
use vc_tests::harness::{BUSYBOX_IMAGE, Harness, HostKind, NotStarted, Options, SIMULATED_NODES};

const USAGE: &str = "usage: vc-sandbox [--real-apiserver | --test-apiserver] [--simulated-nodes]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut options = Options::new("sandbox");
    options.host = if vc_test_apiserver::envtest::assets().is_some() {
        HostKind::RealApiServer
    } else {
        eprintln!(
            "KUBEBUILDER_ASSETS does not name the Kubernetes binaries, so the host is the in-process \
             test API server. For the real one: export KUBEBUILDER_ASSETS=$(../shared/k8s/install.sh \
             ~/.cache/kosmos-vc/k8s-v1.36.2)"
        );
        HostKind::TestApiServer
    };
    // A real node when this machine can run one (as `.ci/run` sets it up, as root).
    options.real_node = vc_tests::node::missing_programs().is_empty() && running_as_root();
    options.real_node_only = true;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--real-apiserver" => options.host = HostKind::RealApiServer,
            "--test-apiserver" => options.host = HostKind::TestApiServer,
            "--simulated-nodes" => options.real_node = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    let host = options.host;
    options.real_node &= host == HostKind::RealApiServer;
    let real_node = options.real_node;
    let harness = match Harness::start(options).await {
        Ok(harness) => harness,
        Err(NotStarted::Skip(why)) => bail!("the sandbox cannot start: {why}"),
        Err(NotStarted::Failed(error)) => return Err(error.context("starting the sandbox")),
    };
    let work = harness.work_dir().display().to_string();
    let (host_text, tenants_text) = match host {
        HostKind::RealApiServer => (
            "The host is REAL: etcd, kube-apiserver, kube-controller-manager (its workload, endpoint,\n\
             volume, garbage-collector and namespace controllers) and kube-scheduler from KUBEBUILDER_ASSETS.",
            "Tenant control planes are real processes: etcd, kube-apiserver (and kube-controller-manager,\n\
             kube-scheduler, when KUBEBUILDER_ASSETS holds them) started with the flags the controller rendered,\n\
             the kube-apiserver on the Service's cluster IP (a 127.x.y.z address; Linux routes all of 127/8 to\n\
             loopback). Their kubelets are simulated: pods turn Running without a container.",
        ),
        HostKind::TestApiServer | HostKind::External => (
            "The host is an in-process test API server, whose deployment, statefulset and endpoint\n\
             controllers are simulated (set KUBEBUILDER_ASSETS for the real ones).",
            "Tenant control planes are stand-ins too: each tenant's kube-apiserver is a test API server\n\
             serving the certificates the controller issued, on the Service's cluster IP (a 127.x.y.z\n\
             address; Linux routes all of 127/8 to loopback).",
        ),
    };
    if real_node {
        println!(
            "kosmos-vc sandbox is running, on a REAL node.\n\
             \n\
             The host is REAL: etcd, kube-apiserver, kube-controller-manager and kube-scheduler from\n\
             KUBEBUILDER_ASSETS, and one real node, node1 (kubelet and kube-proxy from KUBEBUILDER_ASSETS,\n\
             containerd, runc and the bridge CNI from Debian). Every tenant's control plane (etcd,\n\
             kube-apiserver, kube-controller-manager, kube-scheduler) and vc-clustertree run there as real\n\
             pods, and so do the tenant's own pods (from the shared pool). Images are built here; try\n\
             {BUSYBOX_IMAGE}.\n\
             vc-webhook and vc-controller are the real binaries, with the chart's flags and RBAC.\n\
             \n\
             In another shell:\n\
             \n\
             \x20 export KUBECONFIG={kubeconfig}\n\
             \x20 export PATH={plugins}:$PATH\n\
             \x20 kubectl vc create demo --cpu 1 --memory 2Gi --wait=completed\n\
             \x20 kubectl vc use-context demo\n\
             \x20 kubectl run hello --image={BUSYBOX_IMAGE} --image-pull-policy=Never --command -- sh -c 'echo hello from a tenant pod; sleep 3600'\n\
             \x20 kubectl get pod hello -o wide && kubectl logs hello\n\
             \n\
             Logs: {work}/vc-webhook.log, {work}/vc-controller.log and {work}/node1\n\
             Press Ctrl-C to stop everything (the machine is left as it was).",
            kubeconfig = harness.operator.kubeconfig.display(),
            plugins = harness.plugin_dir().display(),
        );
        wait_for_stop().await?;
        drop(harness);
        println!("stopped; removed {work}");
        return Ok(());
    }
    println!(
        "kosmos-vc sandbox is running.\n\
         \n\
         {host_text}\n\
         Its {SIMULATED_NODES} nodes (node1..node{SIMULATED_NODES}, 8 CPUs / 32Gi each) are SIMULATED: no kubelet, no container runtime.\n\
         {tenants_text}\n\
         vc-webhook and vc-controller are the real binaries, with the chart's flags and RBAC.\n\
         \n\
         In another shell:\n\
         \n\
         \x20 export KUBECONFIG={kubeconfig}\n\
         \x20 export PATH={plugins}:$PATH\n\
         \x20 kubectl vc create demo --nodes node1 --cpu 2 --memory 4Gi --wait\n\
         \x20 kubectl vc use-context demo && kubectl get nodes\n\
         \n\
         Logs: {work}/vc-webhook.log and {work}/vc-controller.log\n\
         Press Ctrl-C to stop everything.",
        kubeconfig = harness.operator.kubeconfig.display(),
        plugins = harness.plugin_dir().display(),
    );
    wait_for_stop().await?;
    drop(harness);
    println!("stopped; removed {work}");
    Ok(())
}

/// Whether the effective user is root (`/proc/self/status`), which a real node needs.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Ctrl-C or SIGTERM.
async fn wait_for_stop() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
