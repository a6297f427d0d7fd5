//! `vc-clustertree`: one instance per tenant, configured from the host only: which
//! VirtualCluster it serves (flags), the host credential (its ServiceAccount, or
//! `--kubeconfig`) and the tenant admin kubeconfig the controller mounts. It runs the node
//! loop, the pod loop, the Service loop, the kubelet API and the tenant's DNS side by
//! side until SIGTERM stops them all.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use vc_api::constants::tenant_workload_namespace;
use vc_clustertree::cluster_dns::{self, DnsState};
use vc_clustertree::dns;
use vc_clustertree::kubelet_api::{self, KubeletApi, tls};
use vc_clustertree::nodes::KubeletEndpoint;
use vc_clustertree::pod_sync;
use vc_clustertree::pods::Tenancy;
use vc_clustertree::service_sync;
use vc_clustertree::sync::{self, Target};

/// Why the process could not start.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("connecting to the host")]
    ConnectHost(#[source] vc_process::host::HostError),
    #[error("reading the tenant kubeconfig {path}: {source}")]
    ReadTenantKubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("connecting to the tenant: {0}")]
    ConnectTenant(kube::Error),
    #[error("setting up the kubelet API's TLS: {0}")]
    KubeletTls(tls::TlsError),
    #[error("serving the kubelet API: {0}")]
    KubeletListen(kubelet_api::ServeError),
    #[error("--kubelet-tls-cert-file and --kubelet-tls-key-file go together")]
    KubeletTlsPair,
    #[error(transparent)]
    Signal(vc_process::shutdown::SignalError),
    #[error(transparent)]
    DnsZone(dns::resolve::ZoneError),
    #[error("serving DNS: {0}")]
    DnsListen(dns::serve::ServeError),
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
    /// Where the kubelet API of the tenant's Nodes listens (logs and exec).
    #[arg(long, default_value = "0.0.0.0:10250")]
    kubelet_listen: SocketAddr,
    /// The address the tenant's Nodes advertise as InternalIP, where the tenant apiserver
    /// reaches the kubelet API: the pod's IP. Without it the kubelet API is not served
    /// and the Nodes advertise no address to reach.
    #[arg(long, env = "POD_IP")]
    kubelet_address: Option<IpAddr>,
    /// Serving certificate (PEM) of the kubelet API; generated at start when absent.
    #[arg(long)]
    kubelet_tls_cert_file: Option<PathBuf>,
    /// Key of --kubelet-tls-cert-file (PEM).
    #[arg(long)]
    kubelet_tls_key_file: Option<PathBuf>,
    /// The address the tenant's `kube-system/kube-dns` EndpointSlice names, where host
    /// pods reach this DNS server: `--kubelet-address` (the pod IP) when absent. Without
    /// either, the tenant gets no DNS Service and its pods keep the host's resolver.
    #[arg(long)]
    dns_address: Option<IpAddr>,
    /// The host cluster IP of the tenant apiserver's Service (port 443 there reaches
    /// it), which `kubernetes.default.svc` resolves to: the tenant's own `kubernetes`
    /// Service IP is, on the host, the host's apiserver. Without it, the tenant's.
    #[arg(long)]
    apiserver_cluster_ip: Option<IpAddr>,
    /// Where the tenant's cluster DNS listens, UDP and TCP; the tenant's `kube-dns`
    /// Service maps port 53 here, so the container needs no privileged port.
    #[arg(long, default_value = "0.0.0.0:1053")]
    dns_listen: SocketAddr,
    /// The tenant's cluster domain: the zone its DNS is authoritative for.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Nameservers for names outside the cluster domain (IP or IP:PORT, comma separated);
    /// those of /etc/resolv.conf when absent.
    #[arg(long, value_delimiter = ',', value_parser = dns::upstream::parse_server)]
    dns_upstream: Vec<SocketAddr>,
    /// TTL of the tenant's DNS records.
    #[arg(long, default_value = "5s", value_parser = parse_seconds)]
    dns_ttl: Duration,
    /// The Pod Security level tenant pods are held to before they reach the host
    /// (`privileged`, `baseline` or `restricted`), as the controller renders it from the
    /// VirtualCluster namespace's `vc.kosmos.io/workload-pod-security` label.
    #[arg(long, default_value = "baseline")]
    pod_security: vc_api::pod_security::PodSecurityLevel,
    /// Log filter, as RUST_LOG; lines are JSON.
    #[arg(long, default_value = "info")]
    log_level: String,
}

/// Where in-cluster clients of tenant pods reach the tenant apiserver: the kubeconfig's
/// server, resolved to an address now, through the host's DNS. Tenant pods resolve names
/// through the tenant's DNS, where the host's Service names do not exist; the tenant
/// apiserver's serving certificate names its host cluster IP, so TLS still verifies.
async fn in_cluster_apiserver(url: &http::Uri) -> Option<(String, u16)> {
    let (host, port) = vc_clustertree::pods::apiserver_address(url)?;
    if host.parse::<IpAddr>().is_ok() {
        return Some((host, port));
    }
    let resolved = tokio::net::lookup_host((host.clone(), port))
        .await
        .map(|mut addresses| addresses.next());
    match resolved {
        Ok(Some(address)) => Some((address.ip().to_string(), port)),
        Ok(None) => Some((host, port)),
        Err(error) => {
            tracing::warn!(%host, %error, "the tenant apiserver's name does not resolve; tenant pods get the name");
            Some((host, port))
        }
    }
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
    if let Err(error) =
        vc_process::logging::init(vc_process::logging::LogFormat::Json, &flags.log_level)
    {
        eprintln!("vc-clustertree: {error}");
        return std::process::ExitCode::FAILURE;
    }
    match start(flags).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %vc_process::logging::chain(&error), "vc-clustertree stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn start(flags: Flags) -> Result<(), StartError> {
    let shutdown = vc_process::shutdown::on_signal().map_err(StartError::Signal)?;
    let host = vc_process::host::client(flags.kubeconfig.as_deref(), vc_process::user_agent!())
        .await
        .map_err(StartError::ConnectHost)?;
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
    let tenant_ca = tenant_config.root_cert.clone().unwrap_or_default();
    let tenant_url = tenant_config.cluster_url.clone();
    let tenant = kube::Client::try_from(tenant_config).map_err(StartError::ConnectTenant)?;
    let serving = match (flags.kubelet_tls_cert_file, flags.kubelet_tls_key_file) {
        (Some(cert), Some(key)) => Some(tls::ServingCertificate::Files { cert, key }),
        (None, None) => None,
        _ => return Err(StartError::KubeletTlsPair),
    };
    let kubelet = match &flags.kubelet_address {
        Some(address) => {
            let serving = serving.unwrap_or_else(|| tls::ServingCertificate::Generated {
                address: address.to_string(),
            });
            let (config, chain) = tls::server_config_and_chain(&tenant_ca, &serving)
                .map_err(StartError::KubeletTls)?;
            let listener = kubelet_api::listen(flags.kubelet_listen)
                .await
                .map_err(StartError::KubeletListen)?;
            tracing::info!(listen = %flags.kubelet_listen, %address, "serving the kubelet API");
            Some((listener, config, chain))
        }
        None => {
            tracing::warn!(
                "no --kubelet-address: kubectl logs and exec will not work in the tenant"
            );
            None
        }
    };
    let zone = dns::Zone::new(
        &flags.cluster_domain,
        u32::try_from(flags.dns_ttl.as_secs()).unwrap_or(u32::MAX),
    )
    .map_err(StartError::DnsZone)?;
    let dns_listeners = dns::serve::Listeners::bind(flags.dns_listen)
        .await
        .map_err(StartError::DnsListen)?;
    // The port bound, which `--dns-listen` may leave to the system (port 0).
    let dns_port = dns_listeners
        .local_addr()
        .map_or(flags.dns_listen.port(), |address| address.port());
    let servers = if flags.dns_upstream.is_empty() {
        dns::upstream::system_servers()
    } else {
        flags.dns_upstream.clone()
    };
    if servers.is_empty() {
        tracing::warn!("no upstream nameserver: names outside the cluster domain get SERVFAIL");
    }
    tracing::info!(
        listen = ?dns_listeners.local_addr(),
        zone = %zone.domain,
        upstream = ?servers,
        "serving the tenant's DNS"
    );
    let target = Target {
        namespace: flags.namespace,
        name: flags.name,
        kubelet: flags.kubelet_address.map(|address| KubeletEndpoint {
            address: address.to_string(),
            port: i32::from(flags.kubelet_listen.port()),
        }),
    };
    tracing::info!(namespace = %target.namespace, name = %target.name, "serving VirtualCluster");
    let tenancy = Tenancy {
        workload_namespace: tenant_workload_namespace(&target.namespace, &target.name),
        virtual_cluster: target.name.clone(),
        apiserver: in_cluster_apiserver(&tenant_url).await,
        dns: None,
        dns_pending: false,
        pod_security: flags.pod_security,
    };
    let webhook = match (&kubelet, &flags.kubelet_address) {
        (Some((_, _, chain)), Some(address)) => Some(service_sync::WebhookTarget {
            address: address.to_string(),
            port: i32::from(flags.kubelet_listen.port()),
            ca_bundle: chain.clone(),
        }),
        _ => None,
    };
    let until_stopped = || shutdown.clone().cancelled_owned();
    let nodes = sync::run(
        host.clone(),
        tenant.clone(),
        target,
        flags.period,
        until_stopped(),
    );
    let api = KubeletApi {
        host: host.clone(),
        tenant: tenant.clone(),
        workload_namespace: tenancy.workload_namespace.clone(),
    };
    let api_stopped = until_stopped();
    let kubelet_api = async move {
        if let Some((listener, config, _)) = kubelet {
            kubelet_api::serve(listener, config, api, api_stopped).await;
        }
    };
    // Whether the DNS answers from listed caches: its endpoint in the tenant is ready
    // only then, which is what the controller waits for before `Completed`.
    let (answering, answering_now) = tokio::sync::watch::channel(false);
    let tenant_dns_server = dns::run(
        tenant.clone(),
        dns_listeners,
        zone,
        flags.apiserver_cluster_ip,
        servers,
        answering,
        shutdown.clone(),
    );
    let services = service_sync::run(
        host.clone(),
        tenant.clone(),
        tenancy.workload_namespace.clone(),
        webhook,
        flags.period,
        until_stopped(),
    );
    let (publish_dns, dns_state) = tokio::sync::watch::channel(DnsState::Pending);
    let tenant_dns = cluster_dns::run(
        tenant.clone(),
        flags
            .dns_address
            .or(flags.kubelet_address)
            .map(|address| (address, dns_port)),
        flags.cluster_domain.clone(),
        flags.period,
        answering_now,
        publish_dns,
        until_stopped(),
    );
    let pods = pod_sync::run(
        host,
        tenant,
        tenancy,
        dns_state,
        flags.period,
        until_stopped(),
    );
    tokio::join!(
        nodes,
        pods,
        services,
        kubelet_api,
        tenant_dns_server,
        tenant_dns
    );
    Ok(())
}
