//! Command-line flags of `vc-webhook` (see `docs/contracts.md`; the chart maps its values
//! onto exactly these) and the process that runs them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use tokio::net::TcpListener;
use vc_api::ServiceType;
use vc_api::admission::{self, Defaults, Inventory, Policy, Ratio, parse_quantity};

use crate::limits::{Limits, parse_duration};
use crate::metrics::{CacheKind, Metrics};
use crate::review::{Admission, Enforcement};
use crate::server::{Readiness, Webhook};
use crate::tls::{self, CertificatePaths, ReloadingCertificate};
use crate::{SharedInventory, cache, server};

/// Admission webhook for kosmos.io VirtualClusters: fills defaults, keeps every host node
/// in at most one tenant and keeps pooled resources within what the host can give.
#[derive(Debug, Parser)]
#[command(name = "vc-webhook", version, about)]
pub struct Cli {
    /// Address to serve /mutate, /validate, /healthz, /readyz and /metrics on (HTTPS only).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// PEM certificate chain to serve; reloaded when the file changes.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: PathBuf,

    /// PEM private key of the certificate; reloaded when the file changes.
    #[arg(long, value_name = "FILE")]
    pub tls_key: PathBuf,

    /// Kubeconfig of the host cluster; the in-cluster service account when absent.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// The only identity allowed to write spec.kubeconfig (the controller's service account).
    #[arg(long, value_name = "USER", default_value = admission::DEFAULT_CONTROLLER_USERNAME)]
    pub controller_username: String,

    /// Kubernetes version given to VirtualClusters that name none.
    #[arg(long, value_name = "VERSION", default_value = admission::DEFAULT_KUBERNETES_VERSION)]
    pub default_kubernetes_version: String,

    /// kube-apiserver replicas given to VirtualClusters that name none.
    #[arg(long, value_name = "N", default_value_t = admission::DEFAULT_APISERVER_REPLICAS)]
    pub default_apiserver_replicas: i32,

    /// Service type of the tenant apiserver when the VirtualCluster names none.
    #[arg(long, value_name = "TYPE", value_enum, default_value_t = ServiceTypeArg::from(admission::DEFAULT_APISERVER_SERVICE_TYPE))]
    pub default_apiserver_service_type: ServiceTypeArg,

    /// etcd members given to VirtualClusters that name none (1, 3 or 5).
    #[arg(long, value_name = "N", default_value_t = admission::DEFAULT_ETCD_REPLICAS)]
    pub default_etcd_replicas: i32,

    /// Size of each etcd member's volume when the VirtualCluster names none.
    #[arg(long, value_name = "QTY", default_value = admission::DEFAULT_ETCD_STORAGE_SIZE)]
    pub default_etcd_storage_size: String,

    /// StorageClass of etcd volumes when the VirtualCluster names none; empty = the host's default class.
    #[arg(long, value_name = "CLASS", default_value = "")]
    pub default_etcd_storage_class: String,

    /// The clustertree image the controller runs (its --clustertree-image); VirtualClusters naming another are refused.
    #[arg(
        long,
        value_name = "IMAGE",
        alias = "default-clustertree-image",
        default_value = vc_api::constants::DEFAULT_CLUSTERTREE_IMAGE
    )]
    pub clustertree_image: String,

    /// Overcommit of a pooled resource, as RESOURCE=RATIO with RATIO >= 1 (repeatable; default 1.0).
    #[arg(long, value_name = "RESOURCE=RATIO")]
    pub overcommit: Vec<String>,

    /// Most nodes one VirtualCluster may promote (unlimited when absent).
    #[arg(long, value_name = "N")]
    pub max_nodes_per_cluster: Option<usize>,

    /// Most pooled CPU one VirtualCluster may take, such as 32 or 500m (unlimited when absent).
    #[arg(long, value_name = "QTY")]
    pub max_cpu_per_cluster: Option<String>,

    /// Most pooled memory one VirtualCluster may take, such as 256Gi (unlimited when absent).
    #[arg(long, value_name = "QTY")]
    pub max_memory_per_cluster: Option<String>,

    /// Most VirtualClusters one namespace may hold (unlimited when absent).
    #[arg(long, value_name = "N")]
    pub max_clusters_per_namespace: Option<usize>,

    /// Connections served at once; beyond it new ones wait and idle ones are closed.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections: u32,

    /// Time a client has to complete its TLS handshake, such as 5s or 500ms.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,

    /// Time a client has after the handshake to send complete request headers; also how
    /// long an idle HTTP/1.1 keep-alive connection waits for its next request.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Time to receive a request body and answer it (the apiserver waits at most 30s).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// How long a connection without requests is kept open.
    #[arg(long, value_name = "DURATION", default_value = "90s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// HTTP/2 requests one connection may have open at once.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,

    /// Largest request header block, such as 64Ki (at least 8Ki).
    #[arg(long, value_name = "QTY", default_value = "64Ki")]
    pub max_header_bytes: String,

    /// Largest request body, such as 3Mi; larger bodies get 413.
    #[arg(long, value_name = "QTY", default_value = "3Mi")]
    pub max_body_bytes: String,

    /// Request body bytes held at once over all connections, at least --max-body-bytes;
    /// requests beyond it wait, then get 503.
    #[arg(long, value_name = "QTY", default_value = "64Mi")]
    pub max_body_bytes_in_flight: String,

    /// Log format.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in tracing's EnvFilter syntax, such as "info" or "vc_webhook=debug".
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log_level: String,
}

/// Service types, spelled as in the Service API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServiceTypeArg {
    /// Reachable inside the host cluster only.
    #[value(name = "ClusterIP")]
    ClusterIP,
    /// Reachable on every host node's address.
    #[value(name = "NodePort")]
    NodePort,
    /// Reachable through the host's load balancer.
    #[value(name = "LoadBalancer")]
    LoadBalancer,
}

impl From<ServiceType> for ServiceTypeArg {
    fn from(value: ServiceType) -> Self {
        match value {
            ServiceType::ClusterIP => Self::ClusterIP,
            ServiceType::NodePort => Self::NodePort,
            ServiceType::LoadBalancer => Self::LoadBalancer,
        }
    }
}

impl From<ServiceTypeArg> for ServiceType {
    fn from(value: ServiceTypeArg) -> Self {
        match value {
            ServiceTypeArg::ClusterIP => Self::ClusterIP,
            ServiceTypeArg::NodePort => Self::NodePort,
            ServiceTypeArg::LoadBalancer => Self::LoadBalancer,
        }
    }
}

pub use vc_process::logging::LogFormat;

/// A flag value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// `--overcommit` is not `RESOURCE=RATIO`.
    #[error("--overcommit {value:?}: expected RESOURCE=RATIO, such as cpu=1.5")]
    SplitOvercommit {
        /// The flag value.
        value: String,
    },
    /// The ratio of `--overcommit` is not a number of at least 1.
    #[error("--overcommit {value:?}: {reason}")]
    ParseRatio {
        /// The flag value.
        value: String,
        /// What is wrong with the ratio.
        reason: String,
    },
    /// A quantity flag does not parse.
    #[error("--{flag} {value:?}: {reason}")]
    ParseQuantity {
        /// The flag name without dashes.
        flag: &'static str,
        /// The flag value.
        value: String,
        /// What is wrong with it.
        reason: vc_api::admission::QuantityError,
    },
    /// The in-flight budget cannot hold even one body of the largest size.
    #[error(
        "--max-body-bytes-in-flight {in_flight:?} is below --max-body-bytes {body:?}; a body of the largest size could never be read"
    )]
    CompareLimits {
        /// The in-flight budget as given.
        in_flight: String,
        /// The body limit as given.
        body: String,
    },
    /// A byte-size flag is out of its range.
    #[error("--{flag} {value:?}: must be a whole number of bytes from {min} to {max}")]
    CheckByteSize {
        /// The flag name without dashes.
        flag: &'static str,
        /// The flag value.
        value: String,
        /// The smallest value accepted.
        min: u64,
        /// The largest value accepted.
        max: u64,
    },
}

impl Cli {
    /// The admission policy the flags describe.
    pub fn policy(&self) -> Result<Policy, FlagError> {
        let mut overcommit = BTreeMap::new();
        for value in &self.overcommit {
            let (resource, ratio) =
                value
                    .split_once('=')
                    .ok_or_else(|| FlagError::SplitOvercommit {
                        value: value.clone(),
                    })?;
            let ratio = parse_ratio(ratio).map_err(|reason| FlagError::ParseRatio {
                value: value.clone(),
                reason,
            })?;
            overcommit.insert(resource.trim().to_owned(), ratio);
        }
        Ok(Policy {
            controller_username: self.controller_username.clone(),
            clustertree_image: self.clustertree_image.clone(),
            overcommit,
            max_nodes_per_cluster: self.max_nodes_per_cluster,
            max_cpu_per_cluster: parse_limit("max-cpu-per-cluster", &self.max_cpu_per_cluster)?,
            max_memory_per_cluster: parse_limit(
                "max-memory-per-cluster",
                &self.max_memory_per_cluster,
            )?,
            max_clusters_per_namespace: self.max_clusters_per_namespace,
        })
    }

    /// The server limits the flags describe.
    pub fn limits(&self) -> Result<Limits, FlagError> {
        let header_bytes = parse_bytes(
            "max-header-bytes",
            &self.max_header_bytes,
            8 * 1024,
            16 * 1024 * 1024,
        )?;
        let in_flight = parse_bytes(
            "max-body-bytes-in-flight",
            &self.max_body_bytes_in_flight,
            1024,
            4 * 1024 * 1024 * 1024,
        )?;
        let body_bytes = parse_bytes(
            "max-body-bytes",
            &self.max_body_bytes,
            1024,
            64 * 1024 * 1024,
        )?;
        if in_flight < body_bytes {
            return Err(FlagError::CompareLimits {
                in_flight: self.max_body_bytes_in_flight.clone(),
                body: self.max_body_bytes.clone(),
            });
        }
        Ok(Limits {
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            tls_handshake_timeout: self.tls_handshake_timeout,
            header_read_timeout: self.header_read_timeout,
            request_timeout: self.request_timeout,
            idle_timeout: self.idle_timeout,
            max_concurrent_streams: self.max_concurrent_streams,
            max_header_bytes: u32::try_from(header_bytes).unwrap_or(u32::MAX),
            max_body_bytes: usize::try_from(body_bytes).unwrap_or(usize::MAX),
            max_body_bytes_in_flight: usize::try_from(in_flight).unwrap_or(usize::MAX),
        })
    }

    /// The defaults the flags describe.
    pub fn defaults(&self) -> Defaults {
        Defaults {
            kubernetes_version: self.default_kubernetes_version.clone(),
            apiserver_replicas: self.default_apiserver_replicas,
            apiserver_service_type: self.default_apiserver_service_type.into(),
            etcd_replicas: self.default_etcd_replicas,
            etcd_storage_size: self.default_etcd_storage_size.clone(),
            etcd_storage_class: Some(self.default_etcd_storage_class.clone())
                .filter(|class| !class.is_empty()),
        }
    }
}

fn parse_ratio(text: &str) -> Result<Ratio, String> {
    text.trim()
        .parse::<Ratio>()
        .map_err(|error| error.to_string())
}

fn parse_limit(flag: &'static str, value: &Option<String>) -> Result<Option<i128>, FlagError> {
    value
        .as_deref()
        .map(|text| {
            parse_quantity(text).map_err(|reason| FlagError::ParseQuantity {
                flag,
                value: text.to_owned(),
                reason,
            })
        })
        .transpose()
}

fn parse_bytes(flag: &'static str, value: &str, min: u64, max: u64) -> Result<u64, FlagError> {
    let milli = parse_quantity(value).map_err(|reason| FlagError::ParseQuantity {
        flag,
        value: value.to_owned(),
        reason,
    })?;
    let out_of_range = || FlagError::CheckByteSize {
        flag,
        value: value.to_owned(),
        min,
        max,
    };
    if milli % 1000 != 0 {
        return Err(out_of_range());
    }
    u64::try_from(milli / 1000)
        .ok()
        .filter(|bytes| (min..=max).contains(bytes))
        .ok_or_else(out_of_range)
}

/// Runs the webhook until SIGTERM or Ctrl-C.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let policy = cli.policy()?;
    let limits = cli.limits()?;
    let defaults = cli.defaults();
    let provider = tls::crypto_provider();
    // kube's client uses the process-wide provider; another install is harmless.
    let _already_installed = rustls::crypto::CryptoProvider::install_default((*provider).clone());
    let certificate = Arc::new(ReloadingCertificate::load(
        CertificatePaths {
            cert: cli.tls_cert.clone(),
            key: cli.tls_key.clone(),
        },
        Arc::clone(&provider),
    )?);
    let tls_config = tls::server_config(Arc::clone(&certificate), provider)?;
    let client =
        vc_process::host::client(cli.kubeconfig.as_deref(), vc_process::user_agent!()).await?;

    let inventory: SharedInventory = Arc::new(parking_lot::RwLock::new(Inventory::new()));
    let readiness = Arc::new(Readiness::default());
    let metrics = Metrics::new();
    let node_cache = tokio::spawn(cache::run_node_cache(
        client.clone(),
        Arc::clone(&inventory),
        Arc::clone(&readiness),
        metrics.cache_objects(CacheKind::Node),
    ));
    let cluster_cache = tokio::spawn(cache::run_cluster_cache(
        client,
        Arc::clone(&inventory),
        Arc::clone(&readiness),
        metrics.cache_objects(CacheKind::VirtualCluster),
    ));
    let webhook = Arc::new(Webhook {
        admission: Admission::Enforce(Box::new(Enforcement {
            inventory,
            policy,
            defaults,
        })),
        metrics,
        readiness,
        limits,
    });

    let shutdown = vc_process::shutdown::on_signal()?;
    tokio::spawn(certificate.watch(tls::DEFAULT_RELOAD_INTERVAL, shutdown.clone()));

    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on --listen {}", cli.listen))?;
    tracing::info!(listen = %cli.listen, "serving admission webhooks over HTTPS");
    server::serve(listener, tls_config, webhook, shutdown).await;
    node_cache.abort();
    cluster_cache.abort();
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use pretty_assertions::assert_eq;

    const REQUIRED: [&str; 5] = [
        "vc-webhook",
        "--tls-cert",
        "/tls/tls.crt",
        "--tls-key",
        "/tls/tls.key",
    ];

    fn parse(extra: &[&str]) -> Cli {
        Cli::try_parse_from(REQUIRED.iter().chain(extra)).unwrap()
    }

    #[test]
    fn every_contract_flag_exists_with_a_help_line() {
        Cli::command().debug_assert();
        let help = Cli::command().render_long_help().to_string();
        for flag in [
            "--listen",
            "--tls-cert",
            "--tls-key",
            "--kubeconfig",
            "--controller-username",
            "--default-kubernetes-version",
            "--default-apiserver-replicas",
            "--default-apiserver-service-type",
            "--default-etcd-replicas",
            "--default-etcd-storage-size",
            "--default-etcd-storage-class",
            "--clustertree-image",
            "--overcommit",
            "--max-nodes-per-cluster",
            "--max-cpu-per-cluster",
            "--max-memory-per-cluster",
            "--max-clusters-per-namespace",
            "--max-connections",
            "--tls-handshake-timeout",
            "--header-read-timeout",
            "--request-timeout",
            "--idle-timeout",
            "--max-concurrent-streams",
            "--max-header-bytes",
            "--max-body-bytes",
            "--max-body-bytes-in-flight",
            "--log-format",
            "--log-level",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
        }
        for argument in Cli::command().get_arguments() {
            if argument.get_id() != "help" && argument.get_id() != "version" {
                assert!(
                    argument.get_help().is_some(),
                    "{} has no help line",
                    argument.get_id()
                );
            }
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let cli = parse(&[]);
        assert_eq!(cli.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(cli.kubeconfig, None);
        assert_eq!(cli.log_format, LogFormat::Text);
        assert_eq!(cli.defaults(), Defaults::default());
        assert_eq!(cli.policy().unwrap(), Policy::default());
        assert_eq!(cli.limits().unwrap(), Limits::default());
    }

    #[test]
    fn limits_follow_the_flags_and_refuse_nonsense() {
        let cli = parse(&[
            "--max-connections",
            "32",
            "--tls-handshake-timeout",
            "2s",
            "--header-read-timeout",
            "1500ms",
            "--request-timeout",
            "30s",
            "--idle-timeout",
            "1m",
            "--max-concurrent-streams",
            "8",
            "--max-header-bytes",
            "16Ki",
            "--max-body-bytes",
            "1Mi",
            "--max-body-bytes-in-flight",
            "16Mi",
        ]);
        let limits = cli.limits().unwrap();
        assert_eq!(
            limits,
            Limits {
                max_connections: 32,
                tls_handshake_timeout: Duration::from_secs(2),
                header_read_timeout: Duration::from_millis(1500),
                request_timeout: Duration::from_secs(30),
                idle_timeout: Duration::from_secs(60),
                max_concurrent_streams: 8,
                max_header_bytes: 16 * 1024,
                max_body_bytes: 1024 * 1024,
                max_body_bytes_in_flight: 16 * 1024 * 1024,
            }
        );
        let error = parse(&["--max-header-bytes", "1Ki"]).limits().unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"--max-header-bytes "1Ki": must be a whole number of bytes from 8192 to 16777216"#
        );
        assert!(parse(&["--max-body-bytes", "lots"]).limits().is_err());
        let error = parse(&["--max-body-bytes-in-flight", "1Mi"])
            .limits()
            .unwrap_err();
        assert!(
            error.to_string().contains("below --max-body-bytes"),
            "{error}"
        );
        for bad in [
            ["--max-connections", "0"],
            ["--request-timeout", "10"],
            ["--idle-timeout", "0s"],
        ] {
            assert!(
                Cli::try_parse_from(REQUIRED.iter().chain(&bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn policy_and_defaults_follow_the_flags() {
        let cli = parse(&[
            "--overcommit",
            "cpu=1.5",
            "--overcommit",
            "memory=1",
            "--max-nodes-per-cluster",
            "4",
            "--max-cpu-per-cluster",
            "32",
            "--max-memory-per-cluster",
            "256Gi",
            "--max-clusters-per-namespace",
            "3",
            "--default-apiserver-service-type",
            "LoadBalancer",
            "--default-etcd-storage-class",
            "fast",
            "--controller-username",
            "system:serviceaccount:ops:vc",
            "--clustertree-image",
            "mirror.example/clustertree:v1",
            "--log-format",
            "json",
        ]);
        let policy = cli.policy().unwrap();
        assert_eq!(policy.overcommit_of("cpu").to_string(), "1.5");
        assert_eq!(policy.overcommit_of("memory").to_string(), "1.0");
        assert_eq!(policy.max_nodes_per_cluster, Some(4));
        assert_eq!(policy.max_cpu_per_cluster, Some(32_000));
        assert_eq!(
            policy.max_memory_per_cluster,
            Some(256 * 1024 * 1024 * 1024 * 1000)
        );
        assert_eq!(policy.max_clusters_per_namespace, Some(3));
        assert_eq!(policy.controller_username, "system:serviceaccount:ops:vc");
        assert_eq!(policy.clustertree_image, "mirror.example/clustertree:v1");
        let renamed = parse(&["--default-clustertree-image", "old.example/tree:v0"]);
        assert_eq!(
            renamed.policy().unwrap().clustertree_image,
            "old.example/tree:v0"
        );
        let defaults = cli.defaults();
        assert_eq!(defaults.apiserver_service_type, ServiceType::LoadBalancer);
        assert_eq!(defaults.etcd_storage_class.as_deref(), Some("fast"));
        assert_eq!(cli.log_format, LogFormat::Json);
    }

    #[test]
    fn bad_flag_values_are_named_with_the_fix() {
        let error = parse(&["--overcommit", "cpu"]).policy().unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"--overcommit "cpu": expected RESOURCE=RATIO, such as cpu=1.5"#
        );
        let error = parse(&["--overcommit", "cpu=0.5"]).policy().unwrap_err();
        assert!(
            error.to_string().starts_with(r#"--overcommit "cpu=0.5": "#),
            "{error}"
        );
        let error = parse(&["--max-memory-per-cluster", "lots"])
            .policy()
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with(r#"--max-memory-per-cluster "lots": "#),
            "{error}"
        );
        assert!(
            Cli::try_parse_from(["vc-webhook"]).is_err(),
            "--tls-cert and --tls-key are required"
        );
    }
}
