//! Name resolution of a host pod: the tenant's cluster DNS, as the tenant's kubelet would
//! have configured it, instead of the host's.
//!
//! The host kubelet writes a pod's `/etc/resolv.conf` from its own `--cluster-dns` for
//! `ClusterFirst` pods, which would resolve the host's Services (and none of the
//! tenant's). So a tenant pod asking for cluster DNS becomes a host pod with
//! `dnsPolicy: None` and the `dnsConfig` the kubelet derives for `ClusterFirst`: the
//! tenant's DNS Service address, the search path of the pod's tenant namespace, `ndots:5`,
//! then the pod's own `dnsConfig` merged in as the kubelet merges it.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption, PodSpec};

/// The tenant's cluster DNS, as seen from host pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDns {
    /// Address of the tenant's DNS Service; it is also a host cluster IP, so host pods
    /// reach it.
    pub nameserver: IpAddr,
    /// The tenant's cluster domain (`cluster.local`).
    pub domain: String,
}

/// The kubelet's `ndots` for `ClusterFirst` pods.
const CLUSTER_FIRST_NDOTS: &str = "5";

/// Whether a pod resolves through the cluster's DNS (`ClusterFirst`, the default).
pub fn uses_cluster_dns(spec: &PodSpec) -> bool {
    matches!(
        spec.dns_policy.as_deref().unwrap_or("ClusterFirst"),
        "ClusterFirst" | "ClusterFirstWithHostNet"
    )
}

/// `dnsPolicy` and `dnsConfig` of the host pod standing for a tenant pod of `namespace`
/// with `spec`. Without a known tenant DNS the pod keeps its own settings.
pub fn host_dns(
    spec: &PodSpec,
    namespace: &str,
    dns: Option<&ClusterDns>,
) -> (Option<String>, Option<PodDNSConfig>) {
    let (true, Some(dns)) = (uses_cluster_dns(spec), dns) else {
        return (spec.dns_policy.clone(), spec.dns_config.clone());
    };
    let own = spec.dns_config.clone().unwrap_or_default();
    let mut nameservers = vec![dns.nameserver.to_string()];
    for server in own.nameservers.iter().flatten() {
        if !nameservers.contains(server) {
            nameservers.push(server.clone());
        }
    }
    let mut searches = vec![
        format!("{namespace}.svc.{}", dns.domain),
        format!("svc.{}", dns.domain),
        dns.domain.clone(),
    ];
    for search in own.searches.iter().flatten() {
        if !searches.contains(search) {
            searches.push(search.clone());
        }
    }
    let mut options = vec![PodDNSConfigOption {
        name: Some("ndots".to_owned()),
        value: Some(CLUSTER_FIRST_NDOTS.to_owned()),
    }];
    for option in own.options.iter().flatten() {
        match options.iter_mut().find(|known| known.name == option.name) {
            Some(known) => known.value = option.value.clone(),
            None => options.push(option.clone()),
        }
    }
    (
        Some("None".to_owned()),
        Some(PodDNSConfig {
            nameservers: Some(nameservers),
            searches: Some(searches),
            options: Some(options),
        }),
    )
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;

    fn dns() -> ClusterDns {
        ClusterDns {
            nameserver: "10.96.0.10".parse().unwrap(),
            domain: "cluster.local".to_owned(),
        }
    }

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).unwrap()
    }

    fn as_json(result: (Option<String>, Option<PodDNSConfig>)) -> serde_json::Value {
        json!({"dnsPolicy": result.0, "dnsConfig": result.1})
    }

    /// A pod that says nothing gets `ClusterFirst`: the tenant's DNS and search path.
    #[test]
    fn cluster_first_pods_resolve_through_the_tenants_dns() {
        let result = host_dns(&spec(json!({"containers": []})), "shop", Some(&dns()));
        assert_eq!(
            as_json(result),
            json!({
                "dnsPolicy": "None",
                "dnsConfig": {
                    "nameservers": ["10.96.0.10"],
                    "searches": ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"],
                    "options": [{"name": "ndots", "value": "5"}],
                },
            })
        );
    }

    /// The pod's own `dnsConfig` is merged in as the kubelet merges it: servers and
    /// searches appended without repeats, options replaced by name.
    #[test]
    fn the_pods_own_dns_config_is_merged() {
        let result = host_dns(
            &spec(
                json!({"containers": [], "dnsPolicy": "ClusterFirst", "dnsConfig": {
                    "nameservers": ["10.96.0.10", "192.0.2.53"],
                    "searches": ["svc.cluster.local", "corp.example"],
                    "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
                }}),
            ),
            "shop",
            Some(&dns()),
        );
        assert_eq!(
            as_json(result),
            json!({
                "dnsPolicy": "None",
                "dnsConfig": {
                    "nameservers": ["10.96.0.10", "192.0.2.53"],
                    "searches": ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"],
                    "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
                },
            })
        );
    }

    /// `Default` (the node's resolver) and `None` (only the pod's own settings) are the
    /// pod's choice and pass through unchanged.
    #[test]
    fn default_and_none_policies_pass_through() {
        for policy in ["Default", "None"] {
            let pod = spec(
                json!({"containers": [], "dnsPolicy": policy, "dnsConfig": {"nameservers": ["192.0.2.53"]}}),
            );
            let (host_policy, config) = host_dns(&pod, "shop", Some(&dns()));
            assert_eq!(host_policy.as_deref(), Some(policy));
            assert_eq!(config, pod.dns_config);
        }
    }

    /// Until the tenant's DNS address is known, nothing is rewritten.
    #[test]
    fn without_a_tenant_dns_the_pod_keeps_its_settings() {
        let pod = spec(json!({"containers": []}));
        assert_eq!(host_dns(&pod, "shop", None), (None, None));
    }
}
