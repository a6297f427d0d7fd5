//! `vc-clustertree`: one instance per tenant, configured from the host only: which
//! VirtualCluster it serves (flags), the host credential (its ServiceAccount, or
//! `--kubeconfig`) and the tenant admin kubeconfig the controller mounts. It runs the node
//! loop and the pod loop side by side until SIGTERM stops both.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use vc_api::constants::tenant_workload_namespace;
use vc_clustertree::pod_sync;
use vc_clustertree::pods::Tenancy;
use vc_clustertree::sync::{self, Target};

/// Why the process could not start.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("reading the host kubeconfig {path}: {source}")]
    ReadHostKubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("reading the in-cluster ServiceAccount (pass --kubeconfig outside a pod): {0}")]
    ReadInClusterConfig(kube::config::InClusterError),
    #[error("connecting to the host: {0}")]
    ConnectHost(kube::Error),
    #[error("reading the tenant kubeconfig {path}: {source}")]
    ReadTenantKubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("connecting to the tenant: {0}")]
    ConnectTenant(kube::Error),
    #[error("listening for SIGTERM: {0}")]
    Signal(std::io::Error),
}

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Mirrors a tenant's promoted host nodes and pooled resources into its control plane"
)]
struct Flags {
    /// Host kubeconfig; the in-cluster ServiceAccount when absent.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The tenant's admin kubeconfig (mounted from the tenant's Secret).
    #[arg(long)]
    tenant_kubeconfig: PathBuf,
    /// Namespace of the VirtualCluster served.
    #[arg(long)]
    namespace: String,
    /// Name of the VirtualCluster served.
    #[arg(long)]
    name: String,
    /// How often the tenant's Nodes, and the host pods of its pods, are brought in line.
    #[arg(long, default_value = "2s", value_parser = parse_seconds)]
    period: Duration,
    /// Log filter, as RUST_LOG.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.strip_suffix('s')
        .and_then(|number| number.parse::<f64>().ok())
        .filter(|seconds| *seconds > 0.0 && seconds.is_finite())
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{text:?} is not a duration in seconds such as \"2s\""))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let flags = Flags::parse();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&flags.log_level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match start(flags).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "vc-clustertree stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn start(flags: Flags) -> Result<(), StartError> {
    let host_config = match &flags.kubeconfig {
        Some(path) => {
            let error = |source| StartError::ReadHostKubeconfig {
                path: path.display().to_string(),
                source,
            };
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(error)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(error)?
        }
        None => kube::Config::incluster().map_err(StartError::ReadInClusterConfig)?,
    };
    let host = kube::Client::try_from(host_config).map_err(StartError::ConnectHost)?;
    let path = flags.tenant_kubeconfig.display().to_string();
    let kubeconfig =
        kube::config::Kubeconfig::read_from(&flags.tenant_kubeconfig).map_err(|source| {
            StartError::ReadTenantKubeconfig {
                path: path.clone(),
                source,
            }
        })?;
    let tenant_config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|source| StartError::ReadTenantKubeconfig { path, source })?;
    let tenant = kube::Client::try_from(tenant_config).map_err(StartError::ConnectTenant)?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(StartError::Signal)?;
    let target = Target {
        namespace: flags.namespace,
        name: flags.name,
    };
    tracing::info!(namespace = %target.namespace, name = %target.name, "serving VirtualCluster");
    let tenancy = Tenancy {
        workload_namespace: tenant_workload_namespace(&target.namespace, &target.name),
        virtual_cluster: target.name.clone(),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _stopped_or_gone = stopped.wait_for(|stop| *stop).await;
    };
    let nodes = sync::run(
        host.clone(),
        tenant.clone(),
        target,
        flags.period,
        until_stopped(stopped.clone()),
    );
    let pods = pod_sync::run(host, tenant, tenancy, flags.period, until_stopped(stopped));
    let signal = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        let _no_loop_left = stop.send(true);
    };
    tokio::join!(nodes, pods, signal);
    Ok(())
}
