//! Tests of the clustertree builders.

use std::collections::BTreeMap;

use pretty_assertions::assert_eq;
use vc_api::constants;

use crate::resources::test_support::*;
use crate::resources::*;

#[test]
fn clustertree_runs_the_operator_image_with_tenant_kubeconfig_and_own_account() {
    let state = build(&default_vc());
    let pod = pod_spec(&state.clustertree.deployment);
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("prod-clustertree")
    );
    let tree = container(pod);
    assert_eq!(
        tree.image.as_deref(),
        Some(constants::DEFAULT_CLUSTERTREE_IMAGE)
    );
    assert_eq!(
        tree.command.as_deref(),
        Some(&["/usr/local/bin/vc-clustertree".to_owned()][..])
    );
    assert_eq!(flag(tree, "namespace"), Some("team-a"));
    assert_eq!(flag(tree, "name"), Some("prod"));
    // The tenant's Nodes send the tenant apiserver to the pod IP for logs and exec.
    assert_eq!(flag(tree, "kubelet-address"), Some("$(POD_IP)"));
    assert_eq!(flag(tree, "kubelet-listen"), Some("0.0.0.0:10250"));
    let pod_ip = tree
        .env
        .iter()
        .flatten()
        .find(|env| env.name == "POD_IP")
        .and_then(|env| env.value_from.as_ref()?.field_ref.as_ref())
        .map(|field| field.field_path.as_str());
    assert_eq!(pod_ip, Some("status.podIP"));
    // The tenant's DNS on an unprivileged port, both transports.
    assert_eq!(flag(tree, "dns-listen"), Some("0.0.0.0:1053"));
    let ports: Vec<(Option<&str>, i32, Option<&str>)> = tree
        .ports
        .iter()
        .flatten()
        .map(|port| {
            (
                port.name.as_deref(),
                port.container_port,
                port.protocol.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            (Some("kubelet"), 10250, Some("TCP")),
            (Some("dns"), 1053, Some("UDP")),
            (Some("dns-tcp"), 1053, Some("TCP")),
        ]
    );
    assert_eq!(
        flag(tree, "kubeconfig"),
        None,
        "the host credential is the pod's own ServiceAccount"
    );
    let files = mounted_files(pod, tree);
    let path = flag(tree, "tenant-kubeconfig").unwrap();
    assert_eq!(
        files[path],
        (
            "prod-admin-kubeconfig".to_owned(),
            "kubeconfig-internal".to_owned()
        )
    );
}

/// The clustertree holds host credentials: what it runs is the operator's flag, never
/// what a VirtualCluster author wrote.
#[test]
fn cluster_tree_image_comes_only_from_the_operator() {
    let vc = virtual_cluster("  clusterTree:\n    image: attacker.example/miner:latest\n");
    let ctx = BuildContext {
        clustertree_image: "registry.example/clustertree:v1".to_owned(),
        ..BuildContext::default()
    };
    let state = DesiredState::build(&vc, &ctx, &observed(), pki()).unwrap();
    assert_eq!(
        container(pod_spec(&state.clustertree.deployment))
            .image
            .as_deref(),
        Some("registry.example/clustertree:v1")
    );
}

/// The clustertree reads what it serves from its VirtualCluster: `get` on that one
/// object, bound to its own ServiceAccount, owned by the VirtualCluster.
#[test]
fn clustertree_reads_only_its_own_virtual_cluster() {
    let state = build(&default_vc());
    let role = &state.clustertree.virtual_cluster_reader;
    assert_eq!(role.metadata.namespace.as_deref(), Some("team-a"));
    let rules = role.rules.as_deref().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].api_groups.as_deref(),
        Some(&["kosmos.io".to_owned()][..])
    );
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["virtualclusters".to_owned()][..])
    );
    assert_eq!(
        rules[0].resource_names.as_deref(),
        Some(&["prod".to_owned()][..])
    );
    assert_eq!(rules[0].verbs, ["get"]);
    let binding = &state.clustertree.virtual_cluster_reader_binding;
    assert_eq!(binding.role_ref.name, "prod-clustertree");
    let subject = &binding.subjects.as_deref().unwrap()[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            subject.name.as_str(),
            subject.namespace.as_deref()
        ),
        ("ServiceAccount", "prod-clustertree", Some("team-a"))
    );
    assert!(role.metadata.owner_references.is_some());
    assert!(binding.metadata.owner_references.is_some());
}

#[test]
fn clustertree_rbac_is_scoped_to_its_namespace_and_claimed_nodes() {
    let state = build(&default_vc());
    let role = clustertree::workload_cluster_role(clustertree::DEFAULT_WORKLOAD_CLUSTER_ROLE);
    for rule in role.rules.iter().flatten() {
        assert!(!rule.verbs.iter().any(|verb| verb == "*"), "{rule:?}");
        assert!(
            !rule
                .resources
                .iter()
                .flatten()
                .any(|resource| resource.contains('*'))
        );
        let group = if rule
            .resources
            .iter()
            .flatten()
            .any(|r| r == "endpointslices")
        {
            "discovery.k8s.io"
        } else {
            ""
        };
        assert_eq!(rule.api_groups.as_deref(), Some(&[group.to_owned()][..]));
    }
    let resources: Vec<&str> = role
        .rules
        .iter()
        .flatten()
        .flat_map(|rule| rule.resources.iter().flatten().map(String::as_str))
        .collect();
    for needed in [
        "pods",
        "services",
        "configmaps",
        "secrets",
        "endpoints",
        "events",
        "persistentvolumeclaims",
        "endpointslices",
    ] {
        assert!(resources.contains(&needed), "Role lacks {needed}");
    }
    let exec = role
        .rules
        .iter()
        .flatten()
        .find(|rule| rule.resources.iter().flatten().any(|r| r == "pods/exec"))
        .map(|rule| rule.verbs.clone());
    assert_eq!(
        exec,
        Some(vec!["create".to_owned()]),
        "kubectl exec in the tenant is proxied to the host pod's exec"
    );
    let subjects = state.clustertree.role_binding.subjects.as_ref().unwrap();
    assert_eq!(subjects[0].name, "prod-clustertree");
    assert_eq!(subjects[0].namespace.as_deref(), Some("team-a"));
    // The workload rules reach the clustertree through the chart's fixed ClusterRole,
    // bound in the workload namespace alone: the controller may bind it, not hold it.
    let role_ref = &state.clustertree.role_binding.role_ref;
    assert_eq!(
        (role_ref.kind.as_str(), role_ref.name.as_str()),
        ("ClusterRole", clustertree::DEFAULT_WORKLOAD_CLUSTER_ROLE)
    );
    assert_eq!(
        state.clustertree.role_binding.metadata.name.as_deref(),
        Some("prod-clustertree-workload")
    );

    let cluster_rules = state.clustertree.cluster_role.rules.as_ref().unwrap();
    assert_eq!(cluster_rules.len(), 1);
    assert_eq!(
        cluster_rules[0].resources.as_deref(),
        Some(&["nodes".to_owned()][..])
    );
    assert_eq!(cluster_rules[0].verbs, ["get", "list", "watch"]);
    assert_eq!(
        cluster_rules[0].resource_names.as_deref(),
        Some(&["node1".to_owned(), "node2".to_owned()][..])
    );
    let binding = &state.clustertree.cluster_role_binding;
    assert_eq!(binding.role_ref.name, "kosmos-vc:team-a:prod:clustertree");
    assert_eq!(
        binding.subjects.as_ref().unwrap()[0].name,
        "prod-clustertree"
    );

    // No claimed node: no rule at all (a rule without resourceNames would grant every node).
    let none = clustertree::cluster_role(&tenant(&default_vc()), &[]);
    assert_eq!(none.rules, Some(Vec::new()));
}

/// Pods on the tenant's own promoted nodes are not the pool's: the quota counts only the
/// pool's PriorityClass, so a pod on a promoted node needs no requests.
#[test]
fn pool_quota_counts_only_pool_pods() {
    let state = build(&default_vc());
    let spec = state.clustertree.resource_quota.spec.as_ref().unwrap();
    let expressions = spec
        .scope_selector
        .as_ref()
        .and_then(|selector| selector.match_expressions.as_deref())
        .unwrap();
    assert_eq!(expressions.len(), 1);
    assert_eq!(expressions[0].scope_name, "PriorityClass");
    assert_eq!(expressions[0].operator, "In");
    assert_eq!(
        expressions[0].values.as_deref(),
        Some(&[constants::POOL_PRIORITY_CLASS.to_owned()][..])
    );
    assert_eq!(spec.scopes, None);
}

#[test]
fn pool_quota_equals_the_pooled_resources() {
    let vc = virtual_cluster(
        "  promoteResources:\n    resources: {cpu: 10, memory: 100Gi, pods: 110, nvidia.com/gpu: 2}\n",
    );
    let state = build(&vc);
    let hard = state
        .clustertree
        .resource_quota
        .spec
        .as_ref()
        .unwrap()
        .hard
        .as_ref()
        .unwrap();
    let hard: BTreeMap<&str, &str> = hard
        .iter()
        .map(|(k, v)| (k.as_str(), v.0.as_str()))
        .collect();
    assert_eq!(
        hard,
        BTreeMap::from([
            ("cpu", "10"),
            ("memory", "100Gi"),
            ("pods", "110"),
            ("requests.nvidia.com/gpu", "2"),
        ])
    );
}

#[test]
fn workload_namespace_enforces_pod_security_baseline() {
    let namespace = clustertree::workload_namespace(&tenant(&default_vc()));
    let labels = namespace.metadata.labels.unwrap();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("baseline")
    );
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/warn")
            .map(String::as_str),
        Some("restricted")
    );
    // Still ours: the managed-by and tenant labels stay.
    assert_eq!(
        labels.get(constants::MANAGED_BY_LABEL).map(String::as_str),
        Some(constants::MANAGED_BY_VALUE)
    );
}

/// The level the cluster admin chose for the VirtualCluster's namespace is what the host
/// enforces on the workload namespace and what the clustertree refuses by; `baseline`
/// otherwise, with `restricted` still warned and audited.
#[test]
fn the_workload_namespace_and_the_clustertree_follow_the_chosen_pod_security_level() {
    use vc_api::pod_security::PodSecurityLevel;
    for (level, expected) in [
        (PodSecurityLevel::Baseline, "baseline"),
        (PodSecurityLevel::Restricted, "restricted"),
        (PodSecurityLevel::Privileged, "privileged"),
    ] {
        let observed = Observed {
            workload_pod_security: level,
            ..observed()
        };
        let state =
            DesiredState::build(&default_vc(), &BuildContext::default(), &observed, pki()).unwrap();
        let labels = state.clustertree.namespace.metadata.labels.clone().unwrap();
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], expected);
        assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
        let args = pod_spec(&state.clustertree.deployment).containers[0]
            .args
            .clone()
            .unwrap();
        assert!(
            args.contains(&format!("--pod-security={expected}")),
            "{args:?}"
        );
    }
}
