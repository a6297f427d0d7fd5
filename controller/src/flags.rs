//! Command-line flags of `vc-controller`, exactly as `docs/contracts.md` lists them: the
//! chart maps its values onto these names, so renaming one breaks every install.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Namespace used for the leader-election Lease when neither the flag nor `POD_NAMESPACE`
/// says otherwise; it is where the chart installs the controller by default.
pub const DEFAULT_LEADER_ELECTION_NAMESPACE: &str = "kosmos-system";

pub use vc_process::logging::LogFormat;

/// Provisions each VirtualCluster's tenant control plane and clustertree, claims and
/// releases host nodes, and cleans up on delete.
#[derive(Clone, Debug, Parser)]
#[command(name = "vc-controller", version, about)]
pub struct Flags {
    /// Kubeconfig of the host cluster; the in-cluster service account is used when absent.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Address of the plain-HTTP server for /healthz, /readyz and /metrics.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub probe_listen: SocketAddr,

    /// Elect a leader through a coordination.k8s.io Lease so only one replica writes.
    #[arg(long)]
    pub leader_elect: bool,

    /// Namespace of the leader-election Lease [default: $POD_NAMESPACE, else kosmos-system].
    #[arg(long, value_name = "NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader-election Lease.
    #[arg(long, value_name = "NAME", default_value = "kosmos-vc-controller")]
    pub leader_election_lease_name: String,

    /// Registry of the kube-apiserver, kube-controller-manager and kube-scheduler images.
    #[arg(long, value_name = "REGISTRY", default_value = crate::resources::DEFAULT_IMAGE_REGISTRY)]
    pub image_registry: String,

    /// Image of each tenant's etcd members.
    #[arg(
        long,
        value_name = "IMAGE",
        default_value = crate::resources::DEFAULT_ETCD_IMAGE
    )]
    pub etcd_image: String,

    /// Image of each tenant's clustertree. It runs with host credentials, so it comes from
    /// here alone; a VirtualCluster's spec.clusterTree.image is ignored.
    #[arg(
        long,
        value_name = "IMAGE",
        default_value = vc_api::constants::DEFAULT_CLUSTERTREE_IMAGE
    )]
    pub clustertree_image: String,

    /// The fixed ClusterRole (installed by the chart) that each clustertree is bound to in
    /// its workload namespace. The controller holds only `bind` on it, not its rules.
    #[arg(
        long,
        value_name = "NAME",
        default_value = crate::resources::clustertree::DEFAULT_WORKLOAD_CLUSTER_ROLE
    )]
    pub clustertree_cluster_role: String,

    /// What happens to the pods already running on a node when a VirtualCluster claims
    /// it: `keep` leaves them (the claim's NoSchedule taint only keeps new ones off);
    /// `evict` evicts them through the Eviction API, PodDisruptionBudgets respected,
    /// except DaemonSet and mirror pods, pods tolerating the claim and the tenant's own.
    #[arg(long, value_name = "keep|evict", default_value_t = vc_api::eviction::ClaimedNodePods::Keep)]
    pub claimed_node_pods: vc_api::eviction::ClaimedNodePods,

    /// Host nodes the tenants' control planes and clustertrees run on, as node labels
    /// `KEY=VALUE[,KEY=VALUE...]` (every one must match); any schedulable node when empty.
    #[arg(long, value_name = "LABELS", default_value = "", value_parser = parse_node_selector)]
    pub control_plane_node_selector: NodeSelector,

    /// DNS domain of the host cluster, used in the apiserver certificate's SANs.
    #[arg(long, value_name = "DOMAIN", default_value = crate::resources::DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,

    /// The host's pod networks, `CIDR[,CIDR...]` (every one, both families on a
    /// dual-stack host). Each tenant's workload namespace admits addresses outside them
    /// (NodePort and LoadBalancer traffic) and no other tenant's pod inside them. When
    /// empty, a workload namespace admits only its own pods and its tenant's apiserver,
    /// and the controller warns at start.
    #[arg(long, value_name = "CIDRS", default_value = "", value_parser = parse_host_pod_cidrs)]
    pub host_pod_cidrs: HostPodCidrs,

    /// How many VirtualClusters are reconciled at the same time.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// Format of log lines.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Tracing filter, such as `info` or `vc_controller=debug,kube=info`.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log_level: String,
}

/// The host's pod networks, sorted.
pub type HostPodCidrs = Vec<vc_api::cidr::Cidr>;

/// Reads `--host-pod-cidrs`; clap names the flag in front of the reason.
fn parse_host_pod_cidrs(text: &str) -> Result<HostPodCidrs, String> {
    vc_api::cidr::parse_cidr_list(text).map_err(|error| error.to_string())
}

/// Node labels a pod must be placed on, from `KEY=VALUE[,KEY=VALUE...]`.
pub type NodeSelector = std::collections::BTreeMap<String, String>;

/// Reads `--control-plane-node-selector`, refusing what the apiserver would refuse in a
/// pod's `nodeSelector`, so a typo stops the controller at start instead of leaving every
/// tenant's control plane Pending.
fn parse_node_selector(text: &str) -> Result<NodeSelector, String> {
    let mut selector = NodeSelector::new();
    for pair in text
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!(
                "{pair:?} is not KEY=VALUE; write node labels such as node-role.kubernetes.io/infra=true"
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        if !is_label_key(key) {
            return Err(format!(
                "{key:?} is not a label key: an optional DNS-subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric"
            ));
        }
        if !is_label_value(value) {
            return Err(format!(
                "{value:?} (of {key}) is not a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric, or empty"
            ));
        }
        selector.insert(key.to_owned(), value.to_owned());
    }
    Ok(selector)
}

/// A label value: empty, or at most 63 alphanumerics, '-', '_' and '.', starting and
/// ending alphanumeric.
fn is_label_value(value: &str) -> bool {
    let inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    value.is_empty()
        || (value.len() <= 63
            && value.chars().all(inner)
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// A label key: an optional DNS subdomain prefix and '/', then a non-empty name.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let subdomain = |prefix: &str| {
        prefix.len() <= 253
            && prefix.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    !name.is_empty() && is_label_value(name) && prefix.is_none_or(subdomain)
}

impl Flags {
    /// The Lease namespace: the flag, else the pod's own namespace, else the chart default.
    pub fn leader_election_namespace(&self) -> String {
        resolve_lease_namespace(
            self.leader_election_namespace.as_deref(),
            std::env::var("POD_NAMESPACE").ok().as_deref(),
        )
    }
}

fn resolve_lease_namespace(flag: Option<&str>, pod_namespace: Option<&str>) -> String {
    flag.or(pod_namespace)
        .filter(|namespace| !namespace.is_empty())
        .unwrap_or(DEFAULT_LEADER_ELECTION_NAMESPACE)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_control_plane_node_selector_is_parsed_and_checked() {
        let flags = Flags::try_parse_from([
            "vc-controller",
            "--control-plane-node-selector",
            "node-role.kubernetes.io/infra=, kubernetes.io/hostname=node1",
        ])
        .unwrap();
        assert_eq!(
            flags.control_plane_node_selector,
            NodeSelector::from([
                ("kubernetes.io/hostname".to_owned(), "node1".to_owned()),
                ("node-role.kubernetes.io/infra".to_owned(), String::new()),
            ])
        );
        for (bad, names) in [
            ("infra", "is not KEY=VALUE"),
            ("Bad_Prefix/x=1", "is not a label key"),
            ("zone=-a", "is not a label value"),
        ] {
            let error =
                Flags::try_parse_from(["vc-controller", "--control-plane-node-selector", bad])
                    .unwrap_err()
                    .to_string();
            assert!(
                error.contains("--control-plane-node-selector") && error.contains(names),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let flags = Flags::try_parse_from(["vc-controller"]).unwrap();
        assert_eq!(flags.kubeconfig, None);
        assert_eq!(flags.probe_listen.to_string(), "0.0.0.0:8080");
        assert!(!flags.leader_elect);
        assert_eq!(flags.leader_election_lease_name, "kosmos-vc-controller");
        assert_eq!(flags.image_registry, "registry.k8s.io");
        assert_eq!(flags.etcd_image, "registry.k8s.io/etcd:3.5.21-0");
        assert_eq!(flags.clustertree_image, "ghcr.io/kosmos-io/kosmos-vc:0.1.0");
        assert_eq!(flags.cluster_domain, "cluster.local");
        assert!(flags.control_plane_node_selector.is_empty());
        assert!(flags.host_pod_cidrs.is_empty());
        assert_eq!(flags.concurrency, 16);
        assert_eq!(flags.log_format, LogFormat::Text);
        assert_eq!(flags.log_level, "info");
    }

    #[test]
    fn every_flag_has_help() {
        let command = Flags::command();
        for argument in command.get_arguments() {
            if argument.get_id() == "help" || argument.get_id() == "version" {
                continue;
            }
            assert!(
                argument.get_help().is_some(),
                "flag --{} has no help line",
                argument.get_id()
            );
        }
    }

    #[test]
    fn parses_every_flag() {
        let flags = Flags::try_parse_from([
            "vc-controller",
            "--kubeconfig",
            "/tmp/kc",
            "--probe-listen",
            "127.0.0.1:9090",
            "--leader-elect",
            "--leader-election-namespace",
            "ops",
            "--leader-election-lease-name",
            "lease",
            "--image-registry",
            "mirror.example",
            "--etcd-image",
            "mirror.example/etcd:1",
            "--clustertree-image",
            "mirror.example/clustertree:1",
            "--cluster-domain",
            "corp.local",
            "--concurrency",
            "4",
            "--log-format",
            "json",
            "--log-level",
            "debug",
        ])
        .unwrap();
        assert_eq!(flags.kubeconfig, Some(PathBuf::from("/tmp/kc")));
        assert!(flags.leader_elect);
        assert_eq!(flags.leader_election_namespace(), "ops");
        assert_eq!(flags.concurrency, 4);
        assert_eq!(flags.clustertree_image, "mirror.example/clustertree:1");
        assert_eq!(flags.log_format, LogFormat::Json);
    }

    #[test]
    fn host_pod_cidrs_are_checked_at_start_with_the_flag_named() {
        let flags = Flags::try_parse_from([
            "vc-controller",
            "--host-pod-cidrs",
            "10.244.0.0/16,fd00:10:244::/56",
        ])
        .unwrap();
        let written: Vec<String> = flags
            .host_pod_cidrs
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(written, ["10.244.0.0/16", "fd00:10:244::/56"]);
        let error = Flags::try_parse_from(["vc-controller", "--host-pod-cidrs", "10.244.1.0/16"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--host-pod-cidrs")
                && error.contains("write the network address 10.244.0.0/16"),
            "{error}"
        );
    }

    #[test]
    fn zero_concurrency_is_refused() {
        let error = Flags::try_parse_from(["vc-controller", "--concurrency", "0"]).unwrap_err();
        assert!(error.to_string().contains("--concurrency"), "{error}");
    }

    #[test]
    fn lease_namespace_prefers_flag_then_pod_namespace() {
        assert_eq!(resolve_lease_namespace(Some("a"), Some("b")), "a");
        assert_eq!(resolve_lease_namespace(None, Some("b")), "b");
        assert_eq!(resolve_lease_namespace(None, Some("")), "kosmos-system");
        assert_eq!(resolve_lease_namespace(None, None), "kosmos-system");
    }
}
