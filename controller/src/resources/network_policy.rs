//! NetworkPolicies fencing a tenant on the host: its workload namespace admits only its
//! own pods, its own apiserver and traffic from outside the host's pod network; each
//! control-plane component admits only the pods of this tenant that must reach it.
//!
//! Policies select pods by the labels the builders put on them, so a user's other pods
//! in the VirtualCluster's namespace are never isolated by them. Traffic from a pod's own
//! node (kubelet probes) is always allowed by NetworkPolicy semantics, which is what the
//! probes of etcd's plain-HTTP metrics port and of the controller-manager and scheduler
//! rely on. The host's CNI must enforce NetworkPolicy for any of this to hold.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use vc_api::cidr::Cidr;

use super::meta::{Component, owned_meta, selector, unowned_meta};
use super::{BuildContext, Tenant, apiserver, clustertree, etcd, names};

/// The label the apiserver sets on every Namespace to its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Every NetworkPolicy of a tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkPolicies {
    /// In the workload namespace `vc-NS-NAME` (apply once the namespace exists).
    pub workloads: NetworkPolicy,
    /// Beside the VirtualCluster, one per control-plane component.
    pub control_plane: Vec<NetworkPolicy>,
}

/// Builds every NetworkPolicy of `tenant`.
pub fn network_policies(tenant: &Tenant, ctx: &BuildContext) -> NetworkPolicies {
    NetworkPolicies {
        workloads: workloads(tenant, &ctx.host_pod_cidrs),
        control_plane: vec![
            etcd_policy(tenant),
            apiserver_policy(tenant),
            controller_manager_policy(tenant),
            scheduler_policy(tenant),
            clustertree_policy(tenant),
        ],
    }
}

fn ingress_only(
    pod_selector: LabelSelector,
    ingress: Vec<NetworkPolicyIngressRule>,
) -> NetworkPolicySpec {
    NetworkPolicySpec {
        pod_selector: Some(pod_selector),
        policy_types: Some(vec!["Ingress".to_owned()]),
        ingress: (!ingress.is_empty()).then_some(ingress),
        egress: None,
    }
}

fn port(protocol: &str, number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.to_owned()),
        port: Some(IntOrString::Int(number)),
        end_port: None,
    }
}

/// Pods of `component` of this tenant, in the VirtualCluster's namespace.
fn tenant_pods(tenant: &Tenant, component: Component) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(selector(tenant, component)),
        ..NetworkPolicyPeer::default()
    }
}

fn namespace_selector(namespace: String) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            NAMESPACE_NAME_LABEL.to_owned(),
            namespace,
        )])),
        match_expressions: None,
    }
}

/// Everything outside the host's pod network, one block per address family that has
/// pod CIDRs: NodePort and LoadBalancer traffic arrives from node or external addresses,
/// while another tenant's pod is always inside a pod CIDR. A family without pod CIDRs
/// gets no block, so an incomplete list refuses that family's outside traffic rather
/// than admitting its pods.
fn outside_pod_network(host_pod_cidrs: &[Cidr]) -> Vec<NetworkPolicyPeer> {
    [(false, "0.0.0.0/0"), (true, "::/0")]
        .into_iter()
        .filter_map(|(ipv6, everything)| {
            let except: Vec<String> = host_pod_cidrs
                .iter()
                .filter(|cidr| cidr.is_ipv6() == ipv6)
                .map(ToString::to_string)
                .collect();
            (!except.is_empty()).then(|| NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: everything.to_owned(),
                    except: Some(except),
                }),
                ..NetworkPolicyPeer::default()
            })
        })
        .collect()
}

/// NetworkPolicy `NAME-workloads` in `vc-NS-NAME`: every pod there admits its own
/// namespace's pods, this tenant's apiserver (the tenant's webhooks, `pods/proxy`,
/// Service proxy), and addresses outside `host_pod_cidrs`; without pod CIDRs, only the
/// first two.
pub fn workloads(tenant: &Tenant, host_pod_cidrs: &[Cidr]) -> NetworkPolicy {
    let mut ingress = vec![
        NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                pod_selector: Some(LabelSelector::default()),
                ..NetworkPolicyPeer::default()
            }]),
            ports: None,
        },
        NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(namespace_selector(tenant.namespace.clone())),
                pod_selector: Some(selector(tenant, Component::ApiServer)),
                ip_block: None,
            }]),
            ports: None,
        },
    ];
    let outside = outside_pod_network(host_pod_cidrs);
    if !outside.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(outside),
            ports: None,
        });
    }
    NetworkPolicy {
        metadata: unowned_meta(
            tenant,
            names::workload_network_policy(&tenant.name),
            Some(tenant.workload_namespace()),
            Component::ClusterTree,
        ),
        spec: Some(ingress_only(LabelSelector::default(), ingress)),
    }
}

/// NetworkPolicy `NAME-etcd`: the client port from this tenant's apiserver pods, the peer
/// port from its etcd members, and the plain-HTTP metrics port from no pod at all.
pub fn etcd_policy(tenant: &Tenant) -> NetworkPolicy {
    component_policy(
        tenant,
        Component::Etcd,
        names::ETCD_NETWORK_POLICY,
        vec![
            NetworkPolicyIngressRule {
                from: Some(vec![tenant_pods(tenant, Component::ApiServer)]),
                ports: Some(vec![port("TCP", etcd::CLIENT_PORT)]),
            },
            NetworkPolicyIngressRule {
                from: Some(vec![tenant_pods(tenant, Component::Etcd)]),
                ports: Some(vec![port("TCP", etcd::PEER_PORT)]),
            },
        ],
    )
}

/// NetworkPolicy `NAME-apiserver`: the secure port from anywhere (operators, the
/// controller, the tenant's pods and the clustertree all reach it), nothing else.
pub fn apiserver_policy(tenant: &Tenant) -> NetworkPolicy {
    component_policy(
        tenant,
        Component::ApiServer,
        names::APISERVER_NETWORK_POLICY,
        vec![NetworkPolicyIngressRule {
            from: None,
            ports: Some(vec![port("TCP", apiserver::SECURE_PORT)]),
        }],
    )
}

/// The policy `object` around this tenant's `component` pods, admitting only `ingress`
/// (nothing but the node's probes when empty).
fn component_policy(
    tenant: &Tenant,
    component: Component,
    object: names::DerivedObject,
    ingress: Vec<NetworkPolicyIngressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: owned_meta(tenant, object.name(&tenant.name), component),
        spec: Some(ingress_only(selector(tenant, component), ingress)),
    }
}

/// A component nothing in the pod network talks to: ingress from no pod; only its
/// node's probes reach it.
fn closed(tenant: &Tenant, component: Component, object: names::DerivedObject) -> NetworkPolicy {
    component_policy(tenant, component, object, Vec::new())
}

/// NetworkPolicy `NAME-controller-manager`, closed: it only dials out.
pub fn controller_manager_policy(tenant: &Tenant) -> NetworkPolicy {
    closed(
        tenant,
        Component::ControllerManager,
        names::CONTROLLER_MANAGER_NETWORK_POLICY,
    )
}

/// NetworkPolicy `NAME-scheduler`, closed: it only dials out.
pub fn scheduler_policy(tenant: &Tenant) -> NetworkPolicy {
    closed(
        tenant,
        Component::Scheduler,
        names::SCHEDULER_NETWORK_POLICY,
    )
}

/// NetworkPolicy `NAME-clustertree`: its kubelet API and Service webhook port from this
/// tenant's apiserver pods, its DNS port from the tenant's workload namespace.
pub fn clustertree_policy(tenant: &Tenant) -> NetworkPolicy {
    component_policy(
        tenant,
        Component::ClusterTree,
        names::CLUSTERTREE_NETWORK_POLICY,
        vec![
            NetworkPolicyIngressRule {
                from: Some(vec![tenant_pods(tenant, Component::ApiServer)]),
                ports: Some(vec![port("TCP", clustertree::KUBELET_PORT)]),
            },
            NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(namespace_selector(tenant.workload_namespace())),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(vec![
                    port("UDP", clustertree::DNS_PORT),
                    port("TCP", clustertree::DNS_PORT),
                ]),
            },
        ],
    )
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use serde_json::{Value, json};

    use super::super::test_support::{default_vc, tenant};
    use super::*;

    fn spec(policy: &NetworkPolicy) -> Value {
        serde_json::to_value(policy.spec.as_ref().unwrap()).unwrap()
    }

    fn pods(component: &str) -> Value {
        json!({"matchLabels": {
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/managed-by": "kosmos-vc",
            "vc.kosmos.io/virtualcluster": "prod",
        }})
    }

    fn cidrs(list: &str) -> Vec<Cidr> {
        vc_api::cidr::parse_cidr_list(list).unwrap()
    }

    #[test]
    fn workload_namespace_denies_other_tenants_ingress() {
        let tenant = tenant(&default_vc());
        let policy = workloads(
            &tenant,
            &cidrs("10.244.0.0/16,10.245.0.0/16,fd00:10:244::/56"),
        );
        assert_eq!(policy.metadata.name.as_deref(), Some("prod-workloads"));
        assert_eq!(policy.metadata.namespace.as_deref(), Some("vc-team-a-prod"));
        assert_eq!(
            spec(&policy),
            json!({
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"from": [{"podSelector": {}}]},
                    {"from": [{
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "team-a"}},
                        "podSelector": pods("apiserver"),
                    }]},
                    {"from": [
                        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.0.0/16", "10.245.0.0/16"]}},
                        {"ipBlock": {"cidr": "::/0", "except": ["fd00:10:244::/56"]}},
                    ]},
                ],
            })
        );
    }

    #[test]
    fn without_pod_cidrs_the_workload_namespace_admits_no_outside_address() {
        let tenant = tenant(&default_vc());
        let ingress = spec(&workloads(&tenant, &[]))["ingress"].clone();
        assert_eq!(ingress.as_array().unwrap().len(), 2, "{ingress}");
        assert!(!ingress.to_string().contains("ipBlock"), "{ingress}");
        // One family listed: the other family's outside is not admitted either.
        let ingress = spec(&workloads(&tenant, &cidrs("10.244.0.0/16")))["ingress"].clone();
        assert_eq!(
            ingress[2],
            json!({"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.0.0/16"]}}]})
        );
    }

    #[test]
    fn control_plane_pods_admit_only_this_tenants_peers() {
        let tenant = tenant(&default_vc());
        let by_name: BTreeMap<String, Value> = network_policies(&tenant, &BuildContext::default())
            .control_plane
            .iter()
            .map(|policy| {
                assert_eq!(policy.metadata.namespace.as_deref(), Some("team-a"));
                (policy.metadata.name.clone().unwrap(), spec(policy))
            })
            .collect();
        assert_eq!(
            by_name["prod-etcd"],
            json!({
                "podSelector": pods("etcd"),
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"from": [{"podSelector": pods("apiserver")}], "ports": [{"protocol": "TCP", "port": 2379}]},
                    {"from": [{"podSelector": pods("etcd")}], "ports": [{"protocol": "TCP", "port": 2380}]},
                ],
            })
        );
        assert_eq!(
            by_name["prod-apiserver"],
            json!({
                "podSelector": pods("apiserver"),
                "policyTypes": ["Ingress"],
                "ingress": [{"ports": [{"protocol": "TCP", "port": 6443}]}],
            })
        );
        for closed in ["controller-manager", "scheduler"] {
            assert_eq!(
                by_name[&format!("prod-{closed}")],
                json!({"podSelector": pods(closed), "policyTypes": ["Ingress"]})
            );
        }
        assert_eq!(
            by_name["prod-clustertree"],
            json!({
                "podSelector": pods("clustertree"),
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"from": [{"podSelector": pods("apiserver")}], "ports": [{"protocol": "TCP", "port": 10250}]},
                    {
                        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "vc-team-a-prod"}}}],
                        "ports": [{"protocol": "UDP", "port": 1053}, {"protocol": "TCP", "port": 1053}],
                    },
                ],
            })
        );
        assert_eq!(by_name.len(), 5);
    }

    #[test]
    fn etcd_metrics_port_is_open_to_no_pod() {
        let tenant = tenant(&default_vc());
        let etcd = spec(&etcd_policy(&tenant)).to_string();
        assert!(!etcd.contains(&etcd::METRICS_PORT.to_string()), "{etcd}");
    }
}
