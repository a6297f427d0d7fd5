//! `vc-real-node DIR`: a real host control plane (etcd and kube-apiserver from
//! `KUBEBUILDER_ASSETS`) with the real nodes of the end-to-end scenarios, `node1` and the
//! worker `node2`, each running one busybox pod, until SIGTERM or Ctrl-C, when everything
//! is undone. Prints `ready` once both pods run. Needs root and the real node's Debian
//! packages (`.ci/run` installs them).
//!
//! The suite kills it outright (SIGKILL) to show that the next run sweeps what a killed
//! run leaves (`real_node_left_by_a_killed_run_is_swept`); by hand it is a real node to
//! look at in a few seconds.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use vc_test_apiserver::client_from_kubeconfig;
use vc_test_apiserver::envtest::{self, Envtest, EnvtestOptions};
use vc_tests::node::host::NodeHost;
use vc_tests::node::image::ImageSpec;

const USAGE: &str = "usage: vc-real-node DIR";
/// What the pods run.
const BUSYBOX_IMAGE: &str = "kosmos-vc.local/busybox:1";
/// Bound of the wait for the pods.
const WAIT: Duration = Duration::from_secs(90);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        bail!("{USAGE}");
    };
    let dir = PathBuf::from(dir);
    let assets = envtest::assets().ok_or_else(|| anyhow!(envtest::SKIP_MESSAGE))?;
    let mut node_host = NodeHost::prepare().await.context("preparing the machine")?;
    let host = Envtest::start_with(
        &assets,
        node_host.envtest_options(EnvtestOptions::default()),
    )
    .await
    .context("starting etcd and kube-apiserver")?;
    let admin = client_from_kubeconfig(host.kubeconfig_path()).await?;
    let busybox = ImageSpec::busybox(BUSYBOX_IMAGE, &["/bin/sh"]);
    node_host
        .start_node(
            &host,
            &admin,
            &assets,
            &dir.join("node1"),
            &["default"],
            false,
        )
        .await
        .context("starting node1")?
        .load_image(&busybox)?;
    node_host
        .start_worker(&host, &assets, &dir.join("node2"), 2)
        .await
        .context("starting node2")?
        .load_image(&busybox)?;

    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    let account = serde_json::from_value(json!({"metadata": {"name": "default"}}))?;
    if let Err(error) = accounts.create(&PostParams::default(), &account).await
        && !matches!(&error, kube::Error::Api(status) if status.code == 409)
    {
        return Err(error).context("creating ServiceAccount default");
    }
    let pods: Api<Pod> = Api::namespaced(admin, "default");
    for node in ["node1", "node2"] {
        let pod = serde_json::from_value(json!({
            "metadata": {"name": format!("sleeper-{node}")},
            "spec": {
                "nodeName": node,
                "automountServiceAccountToken": false,
                "containers": [{
                    "name": "sleeper", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", "exec sleep 3600"],
                }],
            },
        }))?;
        pods.create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("creating the pod on {node}"))?;
    }
    let started = Instant::now();
    loop {
        let mut running = 0;
        for node in ["node1", "node2"] {
            let pod = pods.get(&format!("sleeper-{node}")).await?;
            if pod.status.and_then(|status| status.phase).as_deref() == Some("Running") {
                running += 1;
            }
        }
        if running == 2 {
            break;
        }
        if started.elapsed() > WAIT {
            bail!("the pods did not run within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("ready");

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    let problems = node_host.stop();
    drop(host);
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("the machine kept: {problems:#?}")
    }
}
