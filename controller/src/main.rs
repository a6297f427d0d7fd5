//! `vc-controller`: provisions each VirtualCluster's tenant control plane and clustertree.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use kube::Client;
use tokio_util::sync::CancellationToken;
use vc_controller::flags::Flags;
use vc_controller::leader::{LeaderElector, Leadership, default_identity};
use vc_controller::runner::{RunConfig, run};
use vc_controller::telemetry::{Health, Metrics, probe_router};

/// How long a stopping controller waits for in-flight reconciles.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(25);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    vc_process::logging::init(flags.log_format, &flags.log_level)?;
    if flags.host_pod_cidrs.is_empty() {
        tracing::warn!(
            "--host-pod-cidrs is not set: tenant workload namespaces admit ingress only from their own pods and their tenant's apiserver, so NodePort and LoadBalancer traffic from outside a node is refused where the host enforces NetworkPolicy; set it to the host's pod CIDRs (every one, both families) to admit it"
        );
    }
    let shutdown = vc_process::shutdown::on_signal()?;
    let config =
        vc_process::host::config(flags.kubeconfig.as_deref(), vc_process::user_agent!()).await?;
    let client = Client::try_from(config.clone()).context("failed to build the host client")?;
    let eviction_client = vc_controller::eviction::EvictionClient::from_config(config)
        .context("failed to build the host client for evictions")?;
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let probes = vc_process::probes::spawn(
        flags.probe_listen,
        probe_router(metrics.clone(), health.clone()),
        shutdown.clone(),
    )
    .await
    .context("--probe-listen")?;

    let mut held = None;
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
            () = shutdown.cancelled() => return Ok(()),
        }
        held = Some(elector.keep(shutdown.clone()));
    }

    let controller = run(
        client,
        RunConfig {
            eviction_client: Some(eviction_client),
            ..RunConfig::from_flags(&flags)
        },
        metrics,
        health.clone(),
        shutdown.clone().cancelled_owned(),
    );
    tokio::select! {
        () = controller => {}
        () = stop_deadline(&shutdown, &health) => {}
    }

    shutdown.cancel();
    let lost = match held {
        Some(held) => held.release().await == Leadership::Lost,
        None => false,
    };
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

/// Resolves once a stop was asked for and in-flight reconciles had their grace period.
/// kube-runtime holds its runner until the watches have synced, and then cannot see a
/// shutdown either; with nothing synced, no reconcile can be in flight, so stopping does
/// not wait. Otherwise in-flight reconciles get a grace period below the kubelet's
/// default 30 s.
async fn stop_deadline(shutdown: &CancellationToken, health: &Health) {
    shutdown.cancelled().await;
    if health.is_ready() {
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        tracing::warn!("in-flight reconciles did not finish within {SHUTDOWN_GRACE:?}");
    }
}
