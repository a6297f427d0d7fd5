//! Starts the test API server for trying things by hand:
//! `cargo run -p vc-simulation --bin vc-test-apiserver -- --kubeconfig-out PATH --nodes N`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use vc_test_apiserver::{TestApiServer, TestApiServerOptions};

#[derive(Debug, Parser)]
#[command(about = "In-process Kubernetes API server for kosmos-vc tests")]
struct Args {
    /// Where to write the admin kubeconfig.
    #[arg(long, default_value = "vc-test-apiserver.kubeconfig")]
    kubeconfig_out: PathBuf,
    /// Number of Ready Nodes (node1..nodeN, cpu 8, memory 32Gi, pods 110), kept alive by
    /// the node simulator, with the workload, Service, tenant-apiserver and clustertree
    /// simulators running too.
    #[arg(long, default_value_t = 0)]
    nodes: usize,
    /// Only create the Nodes (static, no heartbeats) and run no simulator.
    #[arg(long)]
    no_simulators: bool,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Enforce RBAC from the stored Roles/ClusterRoles and bindings.
    #[arg(long)]
    enforce_rbac: bool,
    /// Service cluster IP range.
    #[arg(long, default_value = "127.100.0.0/16")]
    service_cidr: String,
}

fn node_manifest(i: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node{i}\n  labels:\n    kubernetes.io/hostname: node{i}\n    kubernetes.io/os: linux\nstatus:\n  capacity: {{cpu: \"8\", memory: 32Gi, pods: \"110\"}}\n  allocatable: {{cpu: \"8\", memory: 32Gi, pods: \"110\"}}\n  conditions:\n  - {{type: Ready, status: \"True\", reason: KubeletReady, message: kubelet is posting ready status}}\n  nodeInfo: {{kubeletVersion: v1.33.4, architecture: amd64, operatingSystem: linux}}\n"
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = TestApiServerOptions {
        bind: args.listen,
        enforce_rbac: args.enforce_rbac,
        service_cidr: args.service_cidr.clone(),
        ..TestApiServerOptions::default()
    };
    let server = TestApiServer::start(options).context("starting the test API server")?;
    let mut simulation = None;
    if args.no_simulators {
        if args.nodes > 0 {
            let docs: Vec<String> = (1..=args.nodes).map(node_manifest).collect();
            server
                .install_yaml(&docs.join("---\n"))
                .await
                .context("creating nodes")?;
        }
    } else if args.nodes > 0 {
        let client = server.client().await.context("building the admin client")?;
        let options = vc_simulation::SimulationOptions::with_nodes(args.nodes);
        let started = vc_simulation::Simulation::start(client, options)
            .await
            .context("starting the simulators")?;
        simulation = Some(started);
    }
    let kubeconfig = std::fs::read_to_string(server.kubeconfig_path())
        .context("reading the admin kubeconfig")?;
    std::fs::write(&args.kubeconfig_out, kubeconfig)
        .with_context(|| format!("writing {}", args.kubeconfig_out.display()))?;
    println!(
        "vc-test-apiserver listening on {} (kubeconfig: {})",
        server.url(),
        args.kubeconfig_out.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    if let Some(sim) = simulation {
        sim.stop();
    }
    server.shutdown();
    Ok(())
}
