//! `vc-controller`: provisions each VirtualCluster's tenant control plane and clustertree.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use futures::FutureExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::{oneshot, watch};
use vc_controller::flags::Flags;
use vc_controller::leader::{LeaderElector, Leadership, default_identity};
use vc_controller::runner::{RunConfig, run};
use vc_controller::telemetry::{Health, Metrics, init_logging, serve_probes};

/// How long a stopping controller waits for in-flight reconciles.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(25);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    init_logging(&flags)?;
    if flags.host_pod_cidrs.is_empty() {
        tracing::warn!(
            "--host-pod-cidrs is not set: tenant workload namespaces admit ingress only from their own pods and their tenant's apiserver, so NodePort and LoadBalancer traffic from outside a node is refused where the host enforces NetworkPolicy; set it to the host's pod CIDRs (every one, both families) to admit it"
        );
    }
    let config = host_config(&flags).await?;
    let client = Client::try_from(config.clone()).context("failed to build the host client")?;
    let eviction_client = vc_controller::eviction::EvictionClient::from_config(config)
        .context("failed to build the host client for evictions")?;
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(stop_on_signal(stop_tx.clone()));
    let probes = tokio::spawn(serve_probes(
        flags.probe_listen,
        metrics.clone(),
        health.clone(),
        stopped(stop_rx.clone()),
    ));

    let mut holding = None;
    if flags.leader_elect {
        let elector = LeaderElector::new(
            client.clone(),
            &flags.leader_election_namespace(),
            &flags.leader_election_lease_name,
            default_identity(),
        );
        // A standby is ready: readiness says "this replica works", not "it leads".
        let standby_health = health.clone();
        tokio::select! {
            () = elector.acquire(move || standby_health.set_ready()) => {}
            () = stopped(stop_rx.clone()) => return Ok(()),
        }
        let (release_tx, release_rx) = watch::channel(false);
        let lost_stop = stop_tx.clone();
        let handle = tokio::spawn(async move {
            let outcome = elector.hold(release_rx).await;
            if outcome == Leadership::Lost {
                tracing::error!("lost the leader lease; stopping");
                let _ = lost_stop.send(true);
            }
            outcome
        });
        holding = Some((release_tx, handle));
    }

    let (controller_stop_tx, controller_stop_rx) = oneshot::channel::<()>();
    let mut controller_stop = stop_rx.clone();
    tokio::spawn(async move {
        let _ = controller_stop.wait_for(|stop| *stop).await;
        let _ = controller_stop_tx.send(());
    });
    let controller = run(
        client,
        RunConfig {
            eviction_client: Some(eviction_client),
            ..RunConfig::from_flags(&flags)
        },
        metrics,
        health.clone(),
        controller_stop_rx.map(|_| ()),
    );
    // kube-runtime holds its runner until the watches have synced, and then cannot see a
    // shutdown either; with nothing synced, no reconcile can be in flight, so stopping
    // does not wait. Otherwise in-flight reconciles get a grace period below the
    // kubelet's default 30 s.
    let stop_deadline = {
        let stop_rx = stop_rx.clone();
        let health = health.clone();
        async move {
            stopped(stop_rx).await;
            if health.is_ready() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
                tracing::warn!("in-flight reconciles did not finish within {SHUTDOWN_GRACE:?}");
            }
        }
    };
    tokio::select! {
        () = controller => {}
        () = stop_deadline => {}
    }

    let _ = stop_tx.send(true);
    let mut lost = false;
    if let Some((release_tx, handle)) = holding {
        let _ = release_tx.send(true);
        lost = matches!(handle.await, Ok(Leadership::Lost));
    }
    match probes.await {
        Ok(Err(error)) => tracing::warn!(%error, "probe server ended with an error"),
        Err(error) => tracing::warn!(%error, "probe server task failed"),
        Ok(Ok(())) => {}
    }
    if lost {
        // Exit non-zero so the pod restarts as a fresh candidate, like controller-runtime.
        anyhow::bail!(
            "lost leadership of the lease {}",
            flags.leader_election_lease_name
        );
    }
    Ok(())
}

/// The host client: `--kubeconfig FILE` when given, else the in-cluster service account.
async fn host_config(flags: &Flags) -> anyhow::Result<Config> {
    let config = match &flags.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).with_context(|| {
                format!(
                    "--kubeconfig {}: cannot read the kubeconfig",
                    path.display()
                )
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("--kubeconfig {}: invalid kubeconfig", path.display()))?
        }
        None => Config::incluster()
            .context("no --kubeconfig given and not running in a pod; pass --kubeconfig FILE")?,
    };
    Ok(config)
}

/// Resolves once a stop was requested.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Requests a graceful stop on SIGTERM or SIGINT; in-flight reconciles finish first.
async fn stop_on_signal(stop: watch::Sender<bool>) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
    let _ = stop.send(true);
}
