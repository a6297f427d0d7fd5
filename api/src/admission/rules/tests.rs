//! Every rule with an allowed and a denied case, asserting the exact message.
//!
//! The host in [`host`]: `node1`..`node4` are in the shared pool (4 cpu, 16Gi each, so
//! the pool holds 16 cpu and 64Gi); `node5` is NotReady, `node6` cordoned, `master1` a
//! control-plane node; `node7` is listed by VirtualCluster team-a/prod, which also pools
//! 8 cpu; `node8` carries the claim labels of team-b/dev.

use std::collections::BTreeMap;

use pretty_assertions::assert_eq;

use super::super::{
    ClusterFacts, ClusterKey, Defaults, Inventory, NodeFacts, Policy, Ratio, ResourceAmounts,
    apply_defaults,
};
use super::{Denial, FORBIDDEN, INVALID, Operation, Request, Verdict, validate};
use crate::constants::FINALIZER;
use crate::quantity::ResourceQuantity;
use crate::testing::{node_facts, virtual_cluster};
use crate::{
    ApiServerSpec, ClusterTreeSpec, ControlPlaneSpec, EtcdSpec, Phase, ServiceType, VirtualCluster,
    VirtualClusterSpec, VirtualClusterStatus,
};

const USER: &str = "alice";
const CPU: i128 = 1_000;
const GI: i128 = 1_024 * 1_024 * 1_024 * 1_000;

/// What each node of the shared pool offers.
const POOL_NODE: &[(&str, i128)] = &[("cpu", 4 * CPU), ("memory", 16 * GI)];

fn host() -> Inventory {
    let mut inventory = Inventory::new();
    for name in ["node1", "node2", "node3", "node4", "node7", "node8"] {
        inventory.upsert_node(node_facts(name, POOL_NODE));
    }
    inventory.upsert_node(NodeFacts {
        ready: false,
        ..node_facts("node5", POOL_NODE)
    });
    inventory.upsert_node(NodeFacts {
        unschedulable: true,
        ..node_facts("node6", POOL_NODE)
    });
    inventory.upsert_node(NodeFacts {
        control_plane: true,
        ..node_facts("master1", POOL_NODE)
    });
    inventory.upsert_node(NodeFacts {
        claimed_by: Some(ClusterKey::new("team-b", "dev")),
        ..node_facts("node8", POOL_NODE)
    });
    inventory.upsert_cluster(ClusterFacts {
        key: ClusterKey::new("team-a", "prod"),
        nodes: vec!["node7".into()],
        pooled: ResourceAmounts::from_iter([("cpu", 8 * CPU)]),
    });
    inventory
}

fn tenant(nodes: &[&str], resources: &[(&str, ResourceQuantity)]) -> VirtualCluster {
    virtual_cluster("team-c", "staging", nodes, resources)
}

/// The object as the mutating webhook would have left it.
fn defaulted(mut cluster: VirtualCluster) -> VirtualCluster {
    cluster.spec = apply_defaults(&cluster.spec, &Defaults::default()).unwrap();
    cluster
}

fn create_with(cluster: &VirtualCluster, inventory: &Inventory, policy: &Policy) -> Verdict {
    let request = Request {
        operation: Operation::Create,
        username: USER,
        object: Some(cluster),
        old_object: None,
    };
    validate(&request, inventory, policy)
}

fn create(cluster: &VirtualCluster) -> Verdict {
    create_with(cluster, &host(), &Policy::default())
}

fn update_by(
    username: &str,
    old: &VirtualCluster,
    new: &VirtualCluster,
    inventory: &Inventory,
    policy: &Policy,
) -> Verdict {
    let request = Request {
        operation: Operation::Update,
        username,
        object: Some(new),
        old_object: Some(old),
    };
    validate(&request, inventory, policy)
}

fn update(old: &VirtualCluster, new: &VirtualCluster) -> Verdict {
    update_by(USER, old, new, &host(), &Policy::default())
}

#[track_caller]
fn assert_allowed(verdict: &Verdict) {
    assert_eq!(verdict.denial, None);
}

#[track_caller]
fn assert_denied(verdict: &Verdict, code: u16, message: &str) {
    assert_eq!(
        verdict.denial,
        Some(Denial {
            code,
            message: message.to_owned()
        })
    );
}

// --- operations -------------------------------------------------------------------------

#[test]
fn delete_is_always_allowed_even_of_a_node_thief() {
    let thief = tenant(&["node7"], &[]);
    let request = Request {
        operation: Operation::Delete,
        username: USER,
        object: None,
        old_object: Some(&thief),
    };
    assert_eq!(
        validate(&request, &host(), &Policy::default()),
        Verdict::default()
    );
}

#[test]
fn a_request_without_an_object_is_invalid() {
    let request = Request {
        operation: Operation::Create,
        username: USER,
        object: None,
        old_object: None,
    };
    assert_denied(
        &validate(&request, &host(), &Policy::default()),
        INVALID,
        "the admission request carries no VirtualCluster object",
    );
}

#[test]
fn a_plain_valid_cluster_is_allowed_without_warnings() {
    let cluster = defaulted(tenant(
        &["node1"],
        &[("cpu", 2.into()), ("memory", "8Gi".into())],
    ));
    assert_eq!(create(&cluster), Verdict::default());
}

// --- names ------------------------------------------------------------------------------

#[test]
fn names_must_be_dns_1035_labels() {
    for name in ["Prod", "1st"] {
        assert_denied(
            &create(&virtual_cluster("team-c", name, &[], &[])),
            INVALID,
            &format!(
                "metadata.name \"{name}\" must be a DNS-1035 label: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit, because it names Services such as \"{name}-apiserver\""
            ),
        );
    }
    assert_allowed(&create(&virtual_cluster("t", "a-1", &[], &[])));
}

#[test]
fn names_leave_room_for_every_derived_name() {
    let longest = "a".repeat(47);
    assert_allowed(&create(&virtual_cluster("t", &longest, &[], &[])));

    let name = "a".repeat(48);
    assert_denied(
        &create(&virtual_cluster("t", &name, &[], &[])),
        INVALID,
        &format!(
            "metadata.name \"{name}\" is 48 characters, too long for the names derived from it: the etcd StatefulSet's controller-revision-hash label value \"{name}-etcd-<hash>\" would be 64 characters (limit 63); use a name of at most 47 characters"
        ),
    );

    let name = "a".repeat(60);
    assert_denied(
        &create(&virtual_cluster("t", &name, &[], &[])),
        INVALID,
        &format!(
            "metadata.name \"{name}\" is 60 characters, too long for the names derived from it: the apiserver Service name \"{name}-apiserver\" would be 70 characters (limit 63); the etcd StatefulSet's controller-revision-hash label value \"{name}-etcd-<hash>\" would be 76 characters (limit 63); use a name of at most 47 characters"
        ),
    );
}

#[test]
fn namespace_and_name_together_must_fit_the_workload_namespace() {
    let namespace = "n".repeat(30);
    let fits = "a".repeat(29);
    assert_allowed(&create(&virtual_cluster(&namespace, &fits, &[], &[])));

    let name = "a".repeat(30);
    assert_denied(
        &create(&virtual_cluster(&namespace, &name, &[], &[])),
        INVALID,
        &format!(
            "the host namespace \"vc-{namespace}-{name}\" derived from namespace and name would be 64 characters, above the limit of 63 for a namespace name; namespace and name together may have at most 59 characters (now 60)"
        ),
    );
}

#[test]
fn two_clusters_never_share_a_host_namespace() {
    // team-a/prod owns "vc-team-a-prod"; team/a-prod would derive the same namespace.
    assert_denied(
        &create(&virtual_cluster("team", "a-prod", &[], &[])),
        FORBIDDEN,
        "the host namespace \"vc-team-a-prod\" derived from namespace and name is already used by VirtualCluster team-a/prod; choose another name",
    );
    assert_allowed(&create(&virtual_cluster("team", "a-dev", &[], &[])));
    // Recreating team-a/prod while the cache still holds it does not collide with itself.
    assert_allowed(&create(&virtual_cluster("team-a", "prod", &[], &[])));
}

#[test]
fn sibling_named_x_etcd_cannot_share_x_ca() {
    // team-a/prod's etcd CA is Secret "prod-etcd-ca", the cluster CA prod-etcd would have.
    assert_denied(
        &create(&virtual_cluster("team-a", "prod-etcd", &[], &[])),
        FORBIDDEN,
        "VirtualCluster team-a/prod-etcd would own Secret \"prod-etcd-ca\" for its cluster CA, which VirtualCluster team-a/prod already uses for its etcd CA; choose a name that does not start with \"prod-\"",
    );
    assert_denied(
        &create(&virtual_cluster("team-a", "prod-front-proxy", &[], &[])),
        FORBIDDEN,
        "VirtualCluster team-a/prod-front-proxy would own Secret \"prod-front-proxy-ca\" for its cluster CA, which VirtualCluster team-a/prod already uses for its front-proxy CA; choose a name that does not start with \"prod-\"",
    );
    // Another namespace has its own Secrets, and prod-dev derives nothing prod has.
    assert_allowed(&create(&virtual_cluster("team-b", "prod-etcd", &[], &[])));
    assert_allowed(&create(&virtual_cluster("team-a", "prod-dev", &[], &[])));
}

#[test]
fn a_name_whose_derived_names_a_sibling_already_holds_is_refused() {
    let mut inventory = host();
    inventory.upsert_cluster(ClusterFacts {
        key: ClusterKey::new("team-c", "x-etcd"),
        nodes: vec![],
        pooled: ResourceAmounts::new(),
    });
    assert_denied(
        &create_with(
            &virtual_cluster("team-c", "x", &[], &[]),
            &inventory,
            &Policy::default(),
        ),
        FORBIDDEN,
        "VirtualCluster team-c/x would own Secret \"x-etcd-ca\" for its etcd CA, which VirtualCluster team-c/x-etcd already uses for its cluster CA; choose a name that \"x-etcd\" does not start with, followed by '-'",
    );
}

#[test]
fn names_are_not_rechecked_on_update() {
    let old = virtual_cluster("team-c", "Legacy", &[], &[]);
    assert_allowed(&update(&old, &old.clone()));
}

// --- reserved fields --------------------------------------------------------------------

fn with_kubeconfig(mut cluster: VirtualCluster, kubeconfig: &str) -> VirtualCluster {
    cluster.spec.kubeconfig = Some(kubeconfig.to_owned());
    cluster
}

#[test]
fn only_the_controller_sets_the_kubeconfig() {
    let cluster = with_kubeconfig(tenant(&[], &[]), "a3ViZWNvbmZpZw==");
    assert_denied(
        &create(&cluster),
        FORBIDDEN,
        "spec.kubeconfig is written only by the controller (system:serviceaccount:kosmos-system:kosmos-vc-controller); user \"alice\" may not set it: remove the field, and read the tenant kubeconfig from Secret \"staging-admin-kubeconfig\"",
    );
    let policy = Policy::default();
    let request = Request {
        operation: Operation::Create,
        username: &policy.controller_username,
        object: Some(&cluster),
        old_object: None,
    };
    assert_allowed(&validate(&request, &host(), &policy));
}

#[test]
fn only_the_controller_changes_the_kubeconfig() {
    let old = tenant(&[], &[]);
    let written = with_kubeconfig(old.clone(), "bmV3");
    let policy = Policy {
        controller_username: "system:serviceaccount:vc:ctrl".into(),
        ..Policy::default()
    };
    assert_allowed(&update_by(
        "system:serviceaccount:vc:ctrl",
        &old,
        &written,
        &host(),
        &policy,
    ));
    assert_denied(
        &update_by(USER, &written, &old, &host(), &policy),
        FORBIDDEN,
        "spec.kubeconfig is written only by the controller (system:serviceaccount:vc:ctrl); user \"alice\" may not change it: leave the field as it is, and read the tenant kubeconfig from Secret \"staging-admin-kubeconfig\"",
    );
    let mut relabelled = written.clone();
    relabelled
        .metadata
        .labels
        .get_or_insert_default()
        .insert("team".into(), "c".into());
    assert_allowed(&update_by(USER, &written, &relabelled, &host(), &policy));
}

fn with_cluster_tree_image(mut cluster: VirtualCluster, image: &str) -> VirtualCluster {
    cluster.spec.cluster_tree = Some(ClusterTreeSpec {
        image: Some(image.to_owned()),
    });
    cluster
}

#[test]
fn cluster_tree_image_comes_only_from_the_operator() {
    let policy = Policy {
        clustertree_image: "registry.example/clustertree:v1".into(),
        ..Policy::default()
    };
    let own = with_cluster_tree_image(tenant(&[], &[]), "attacker.example/miner:latest");
    let message = "spec.clusterTree.image is chosen by the operator, not by the VirtualCluster: the clustertree runs with host credentials, and this host runs \"registry.example/clustertree:v1\"; \"attacker.example/miner:latest\" is refused: remove spec.clusterTree.image (or set it to \"registry.example/clustertree:v1\"), or ask the operator to change the chart value controller.clustertreeImage";
    assert_denied(&create_with(&own, &host(), &policy), FORBIDDEN, message);
    let plain = tenant(&[], &[]);
    assert_denied(
        &update_by(USER, &plain, &own, &host(), &policy),
        FORBIDDEN,
        message,
    );
    // The controller is no exception: nobody may choose what runs with host credentials.
    assert_denied(
        &update_by(&policy.controller_username, &plain, &own, &host(), &policy),
        FORBIDDEN,
        message,
    );
    for allowed in [
        plain.clone(),
        with_cluster_tree_image(tenant(&[], &[]), ""),
        with_cluster_tree_image(tenant(&[], &[]), "registry.example/clustertree:v1"),
    ] {
        assert_allowed(&create_with(&allowed, &host(), &policy));
    }
    // An image stored before the operator took over is ignored, with a warning, so the
    // object can still be edited and deleted.
    let mut relabelled = own.clone();
    relabelled
        .metadata
        .labels
        .get_or_insert_default()
        .insert("team".into(), "c".into());
    let verdict = update_by(USER, &own, &relabelled, &host(), &policy);
    assert_allowed(&verdict);
    assert_eq!(
        verdict.warnings,
        [
            "spec.clusterTree.image \"attacker.example/miner:latest\" is ignored: the clustertree runs the operator's image \"registry.example/clustertree:v1\"; remove the field"
        ]
    );
}

fn with_finalizers(mut cluster: VirtualCluster, finalizers: &[&str]) -> VirtualCluster {
    cluster.metadata.finalizers = Some(finalizers.iter().map(|name| (*name).to_owned()).collect());
    cluster
}

#[test]
fn only_the_controller_removes_the_finalizer() {
    let guarded = with_finalizers(tenant(&[], &[]), &[FINALIZER, "example.com/backup"]);
    let stripped = with_finalizers(tenant(&[], &[]), &["example.com/backup"]);
    let message = "finalizer \"kosmos.io/finalizer\" is removed only by the controller (system:serviceaccount:kosmos-system:kosmos-vc-controller), once it has released the nodes, volumes and cluster-scoped objects of VirtualCluster team-c/staging; user \"alice\" may not remove it: delete the VirtualCluster (kubectl vc delete staging -n team-c --wait) and let the controller finish";
    assert_denied(&update(&guarded, &stripped), FORBIDDEN, message);
    let mut deleting = guarded.clone();
    deleting.metadata.deletion_timestamp =
        Some(serde_json::from_value(serde_json::json!("2026-01-01T00:00:00Z")).unwrap());
    let mut deleting_stripped = stripped.clone();
    deleting_stripped.metadata.deletion_timestamp = deleting.metadata.deletion_timestamp.clone();
    assert_denied(&update(&deleting, &deleting_stripped), FORBIDDEN, message);

    let policy = Policy::default();
    let controller = policy.controller_username.as_str();
    assert_allowed(&update_by(
        controller,
        &deleting,
        &deleting_stripped,
        &host(),
        &policy,
    ));
    // Other finalizers are the business of whoever set them.
    let unguarded = with_finalizers(tenant(&[], &[]), &[FINALIZER]);
    assert_allowed(&update(&guarded, &unguarded));
    assert_allowed(&update(&stripped, &guarded));
}

#[test]
fn status_is_not_changed_through_the_main_resource() {
    let mut old = tenant(&[], &[]);
    old.status = Some(VirtualClusterStatus {
        phase: Some(Phase::Initialized),
        ..VirtualClusterStatus::default()
    });
    let mut completed = old.clone();
    completed.status = Some(VirtualClusterStatus {
        phase: Some(Phase::Completed),
        ..VirtualClusterStatus::default()
    });
    assert_denied(
        &update(&old, &completed),
        FORBIDDEN,
        "status may not be changed through the VirtualCluster itself: only the controller writes it, through the status subresource",
    );
    let mut unchanged = old.clone();
    unchanged.spec.kubernetes_version = Some("v1.33.5".into());
    assert_allowed(&update(&old, &unchanged));

    let mut no_status = tenant(&[], &[]);
    no_status.status = None;
    let mut empty_status = no_status.clone();
    empty_status.status = Some(VirtualClusterStatus::default());
    assert_allowed(&update(&no_status, &empty_status));
}

// --- quantities and resource names ------------------------------------------------------

#[test]
fn quantities_must_parse() {
    assert_denied(
        &create(&tenant(&[], &[("cpu", "ten".into())])),
        INVALID,
        "spec.promoteResources.resources.cpu: \"ten\" is not a quantity: it must start with a number such as \"10\", \"0.5\" or \".5\"; write e.g. \"10\", \"500m\" or \"100Gi\"",
    );
    assert_denied(
        &create(&tenant(&[], &[("memory", "10GB".into())])),
        INVALID,
        "spec.promoteResources.resources.memory: \"10GB\" is not a quantity: unknown suffix \"GB\"; use one of Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E or an exponent such as e3",
    );
    assert_allowed(&create(&tenant(&[], &[("cpu", "1500m".into())])));
}

#[test]
fn quantities_must_be_positive() {
    assert_denied(
        &create(&tenant(&[], &[("cpu", 0.into())])),
        INVALID,
        "spec.promoteResources.resources.cpu must be positive, got \"0\"; remove the entry to ask for none",
    );
    assert_denied(
        &create(&tenant(&[], &[("memory", "-1Gi".into())])),
        INVALID,
        "spec.promoteResources.resources.memory must be positive, got \"-1Gi\"; remove the entry to ask for none",
    );
    let mut etcd_volume = tenant(&[], &[]);
    etcd_volume.spec.control_plane = Some(ControlPlaneSpec {
        etcd: Some(EtcdSpec {
            storage_size: Some("0Gi".into()),
            ..EtcdSpec::default()
        }),
        ..ControlPlaneSpec::default()
    });
    assert_denied(
        &create(&etcd_volume),
        INVALID,
        "spec.controlPlane.etcd.storageSize must be positive, got \"0Gi\"; remove the entry to ask for none",
    );
}

#[test]
fn resource_names_must_be_standard_or_offered_with_a_suggestion() {
    assert_denied(
        &create(&tenant(&[], &[("cpus", 2.into())])),
        INVALID,
        "spec.promoteResources.resources: \"cpus\" is not a resource the host offers; did you mean \"cpu\"? use cpu, memory, ephemeral-storage, pods, or an extended resource that a host node advertises in status.allocatable",
    );
    assert_denied(
        &create(&tenant(&[], &[("nvidia.com/gpu", 1.into())])),
        INVALID,
        "spec.promoteResources.resources: \"nvidia.com/gpu\" is not a resource the host offers; use cpu, memory, ephemeral-storage, pods, or an extended resource that a host node advertises in status.allocatable",
    );
    for standard in ["cpu", "memory", "ephemeral-storage", "pods"] {
        let mut inventory = host();
        let mut big = node_facts("big", POOL_NODE);
        big.allocatable = ResourceAmounts::from_iter([(standard, 1_000 * GI)]);
        inventory.upsert_node(big);
        let cluster = tenant(&[], &[(standard, 1.into())]);
        assert_allowed(&create_with(&cluster, &inventory, &Policy::default()));
    }
}

#[test]
fn extended_resources_are_allowed_when_a_node_offers_them() {
    let mut inventory = host();
    let mut gpu_node = node_facts("gpu1", POOL_NODE);
    gpu_node.allocatable.add_amount("nvidia.com/gpu", 4 * CPU);
    inventory.upsert_node(gpu_node);
    let cluster = tenant(&[], &[("nvidia.com/gpu", 2.into())]);
    assert_allowed(&create_with(&cluster, &inventory, &Policy::default()));
    let typo = tenant(&[], &[("nvidia.com/gpus", 2.into())]);
    assert_denied(
        &create_with(&typo, &inventory, &Policy::default()),
        INVALID,
        "spec.promoteResources.resources: \"nvidia.com/gpus\" is not a resource the host offers; did you mean \"nvidia.com/gpu\"? use cpu, memory, ephemeral-storage, pods, or an extended resource that a host node advertises in status.allocatable",
    );
}

#[test]
fn a_pooled_extended_resource_no_node_offers_any_more_does_not_block_updates() {
    let old = tenant(&[], &[("example.com/fpga", 1.into())]);
    let mut edited = old.clone();
    edited.spec.kubernetes_version = Some("v1.33.4".into());
    assert_allowed(&update(&old, &edited));
    let mut added = edited.clone();
    added
        .spec
        .promote_resources
        .resources
        .insert("example.com/tpu".into(), 1.into());
    assert_denied(
        &update(&old, &added),
        INVALID,
        "spec.promoteResources.resources: \"example.com/tpu\" is not a resource the host offers; use cpu, memory, ephemeral-storage, pods, or an extended resource that a host node advertises in status.allocatable",
    );
}

// --- control plane syntax ---------------------------------------------------------------

fn with_etcd(mut cluster: VirtualCluster, etcd: EtcdSpec) -> VirtualCluster {
    cluster
        .spec
        .control_plane
        .get_or_insert_default()
        .etcd
        .replace(etcd);
    cluster
}

fn with_api_server(mut cluster: VirtualCluster, api_server: ApiServerSpec) -> VirtualCluster {
    cluster
        .spec
        .control_plane
        .get_or_insert_default()
        .api_server
        .replace(api_server);
    cluster
}

#[test]
fn versions_are_written_as_kubernetes_releases() {
    let mut cluster = tenant(&[], &[]);
    cluster.spec.kubernetes_version = Some("1.34".into());
    assert_denied(
        &create(&cluster),
        INVALID,
        "spec.kubernetesVersion \"1.34\" is not a Kubernetes version; write it as vMAJOR.MINOR.PATCH, such as \"v1.33.4\"",
    );
    cluster.spec.kubernetes_version = Some("v1.34.0".into());
    assert_allowed(&create(&cluster));
}

#[test]
fn replica_counts_stay_in_range() {
    let etcd = |replicas| EtcdSpec {
        replicas: Some(replicas),
        ..EtcdSpec::default()
    };
    let api_server = |replicas| ApiServerSpec {
        replicas: Some(replicas),
        ..ApiServerSpec::default()
    };
    let cases = [
        (
            with_etcd(tenant(&[], &[]), etcd(2)),
            "spec.controlPlane.etcd.replicas must be 1, 3 or 5 so that etcd keeps a clear majority, got 2",
            with_etcd(tenant(&[], &[]), etcd(3)),
        ),
        (
            with_api_server(tenant(&[], &[]), api_server(0)),
            "spec.controlPlane.apiServer.replicas must be between 1 and 10, got 0",
            with_api_server(tenant(&[], &[]), api_server(10)),
        ),
    ];
    for (out_of_range, denial, at_the_bound) in cases {
        assert_denied(&create(&out_of_range), INVALID, denial);
        assert_allowed(&create(&at_the_bound));
    }
}

#[test]
fn external_hosts_are_ip_addresses_or_dns_names() {
    let hosts = |hosts: &[&str]| {
        with_api_server(
            tenant(&[], &[]),
            ApiServerSpec {
                external_hosts: hosts.iter().map(|host| (*host).to_owned()).collect(),
                ..ApiServerSpec::default()
            },
        )
    };
    assert_allowed(&create(&hosts(&[
        "vc.example.com",
        "203.0.113.10",
        "2001:db8::1",
    ])));
    assert_denied(
        &create(&hosts(&["vc.example.com", "https://vc.example.com"])),
        INVALID,
        "spec.controlPlane.apiServer.externalHosts[1] \"https://vc.example.com\" is neither an IP address nor a DNS name; it goes into the apiserver certificate, so write e.g. \"vc.example.com\" or \"203.0.113.10\"",
    );
}

// --- updates ----------------------------------------------------------------------------

fn at_version(version: &str) -> VirtualCluster {
    let mut cluster = defaulted(tenant(&[], &[]));
    cluster.spec.kubernetes_version = Some(version.to_owned());
    cluster
}

#[test]
fn versions_move_forward_one_minor_at_a_time() {
    let old = at_version("v1.33.4");
    assert_allowed(&update(&old, &at_version("v1.33.9")));
    assert_allowed(&update(&old, &at_version("v1.34.0")));
    assert_allowed(&update(&old, &old.clone()));
    assert_denied(
        &update(&old, &at_version("v1.35.1")),
        INVALID,
        "spec.kubernetesVersion may not skip a minor version: v1.33.4 → v1.35.1; upgrade to v1.34 first",
    );
    assert_denied(
        &update(&old, &at_version("v1.32.9")),
        INVALID,
        "spec.kubernetesVersion may not go down: v1.33.4 → v1.32.9; a control plane cannot be downgraded, keep v1.33.4 or newer",
    );
    assert_denied(
        &update(&old, &at_version("v1.33.3")),
        INVALID,
        "spec.kubernetesVersion may not go down: v1.33.4 → v1.33.3; a control plane cannot be downgraded, keep v1.33.4 or newer",
    );
    assert_denied(
        &update(&old, &at_version("v2.0.0")),
        INVALID,
        "spec.kubernetesVersion may not change the major version: v1.33.4 → v2.0.0",
    );
}

fn etcd_of(replicas: i32, size: &str, class: Option<&str>) -> VirtualCluster {
    defaulted(with_etcd(
        tenant(&[], &[]),
        EtcdSpec {
            replicas: Some(replicas),
            storage_size: Some(size.into()),
            storage_class_name: class.map(str::to_owned),
        },
    ))
}

#[test]
fn etcd_replicas_cannot_change_after_creation() {
    let single = etcd_of(1, "1Gi", None);
    assert_allowed(&update(&single, &etcd_of(1, "1Gi", None)));
    assert_denied(
        &update(&single, &etcd_of(3, "1Gi", None)),
        INVALID,
        "spec.controlPlane.etcd.replicas may not change after creation (1 → 3): kosmos-vc does not manage etcd membership yet, and a changed member count would split the tenant's data; keep 1, or create a new VirtualCluster with the member count you need and move the workloads to it",
    );
    let three = etcd_of(3, "1Gi", None);
    assert_denied(
        &update(&three, &etcd_of(5, "1Gi", None)),
        INVALID,
        "spec.controlPlane.etcd.replicas may not change after creation (3 → 5): kosmos-vc does not manage etcd membership yet, and a changed member count would split the tenant's data; keep 3, or create a new VirtualCluster with the member count you need and move the workloads to it",
    );
    assert!(update(&three, &etcd_of(1, "1Gi", None)).denial.is_some());
    assert_allowed(&create(&etcd_of(3, "1Gi", None)));
}

#[test]
fn etcd_storage_is_immutable_after_provisioning() {
    let old = etcd_of(1, "1Gi", None);
    let mut respelt = old.clone();
    respelt
        .spec
        .control_plane
        .as_mut()
        .and_then(|plane| plane.etcd.as_mut())
        .unwrap()
        .storage_size = Some("1024Mi".into());
    assert_allowed(&update(&old, &respelt));
    assert_denied(
        &update(&old, &etcd_of(1, "2Gi", None)),
        INVALID,
        "spec.controlPlane.etcd.storageSize is immutable after provisioning: it was \"1Gi\" and may not become \"2Gi\"; create a new VirtualCluster to change it",
    );
    assert_denied(
        &update(&old, &etcd_of(1, "1Gi", Some("fast"))),
        INVALID,
        "spec.controlPlane.etcd.storageClassName is immutable after provisioning: it was \"(host default)\" and may not become \"fast\"; create a new VirtualCluster to change it",
    );
    let fast = etcd_of(1, "1Gi", Some("fast"));
    assert_denied(
        &update(&fast, &etcd_of(1, "1Gi", Some("slow"))),
        INVALID,
        "spec.controlPlane.etcd.storageClassName is immutable after provisioning: it was \"fast\" and may not become \"slow\"; create a new VirtualCluster to change it",
    );
}

#[test]
fn fields_never_set_may_be_filled_later() {
    let before_webhook = tenant(&[], &[]);
    assert_allowed(&update(&before_webhook, &defaulted(before_webhook.clone())));
}

#[test]
fn apiserver_service_type_is_immutable_after_provisioning() {
    let service = |service_type| {
        defaulted(with_api_server(
            tenant(&[], &[]),
            ApiServerSpec {
                service_type: Some(service_type),
                ..ApiServerSpec::default()
            },
        ))
    };
    let old = service(ServiceType::ClusterIP);
    assert_allowed(&update(&old, &service(ServiceType::ClusterIP)));
    assert_denied(
        &update(&old, &service(ServiceType::LoadBalancer)),
        INVALID,
        "spec.controlPlane.apiServer.serviceType is immutable after provisioning: it was \"ClusterIP\" and may not become \"LoadBalancer\"; create a new VirtualCluster to change it",
    );
}

// --- nodes ------------------------------------------------------------------------------

#[test]
fn a_node_belongs_to_one_virtual_cluster() {
    assert_denied(
        &create(&tenant(&["node1", "node7"], &[])),
        FORBIDDEN,
        "node \"node7\" already belongs to VirtualCluster team-a/prod",
    );
    assert_allowed(&create(&tenant(&["node1", "node2"], &[])));
}

#[test]
fn a_node_claimed_by_label_counts_too() {
    assert_denied(
        &create(&tenant(&["node8"], &[])),
        FORBIDDEN,
        "node \"node8\" already belongs to VirtualCluster team-b/dev",
    );
    let owner = virtual_cluster("team-b", "dev", &[], &[]);
    let listing = virtual_cluster("team-b", "dev", &["node8"], &[]);
    assert_allowed(&update(&owner, &listing));
}

#[test]
fn a_cluster_does_not_conflict_with_itself_on_update() {
    let old = virtual_cluster("team-a", "prod", &["node7"], &[("cpu", 8.into())]);
    let grown = virtual_cluster("team-a", "prod", &["node7", "node1"], &[("cpu", 8.into())]);
    assert_allowed(&update(&old, &grown));

    // The cache already lists node7 for team-a/prod while the stored object does not yet.
    let stale_old = virtual_cluster("team-a", "prod", &[], &[("cpu", 8.into())]);
    assert_allowed(&update(&stale_old, &old));
}

#[test]
fn nodes_must_exist_in_the_host() {
    assert_denied(
        &create(&tenant(&["node9"], &[])),
        INVALID,
        "node \"node9\" does not exist in the host cluster; check the name with `kubectl get nodes`",
    );
}

#[test]
fn control_plane_nodes_are_never_promoted() {
    assert_denied(
        &create(&tenant(&["master1"], &[])),
        FORBIDDEN,
        "node \"master1\" is a control-plane node of the host and cannot be promoted into a VirtualCluster",
    );
}

#[test]
fn a_node_is_listed_once() {
    assert_denied(
        &create(&tenant(&["node1", "node2", "node1"], &[])),
        INVALID,
        "spec.promoteResources.nodes lists node \"node1\" twice; list each node once",
    );
}

#[test]
fn the_first_node_listed_again_is_named_in_a_long_list_too() {
    let mut nodes: Vec<String> = (0..18).map(|index| format!("extra{index}")).collect();
    nodes.extend(["extra5".to_owned(), "extra2".to_owned()]);
    let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
    assert_denied(
        &create(&tenant(&nodes, &[])),
        INVALID,
        "spec.promoteResources.nodes lists node \"extra5\" twice; list each node once",
    );
    assert_denied(
        &create(&tenant(&["node2", "node1", "node1", "node2"], &[])),
        INVALID,
        "spec.promoteResources.nodes lists node \"node1\" twice; list each node once",
    );
}

#[test]
fn not_ready_and_cordoned_nodes_are_allowed_with_a_warning() {
    let verdict = create(&tenant(&["node5", "node6"], &[]));
    assert_allowed(&verdict);
    assert_eq!(
        verdict.warnings,
        [
            "node \"node5\" is NotReady; it is promoted, but tenant workloads will not run on it until it is Ready and uncordoned",
            "node \"node6\" is cordoned; it is promoted, but tenant workloads will not run on it until it is Ready and uncordoned",
        ]
    );
    let mut inventory = host();
    inventory.upsert_node(NodeFacts {
        ready: false,
        unschedulable: true,
        ..node_facts("node9", POOL_NODE)
    });
    let verdict = create_with(&tenant(&["node9"], &[]), &inventory, &Policy::default());
    assert_eq!(
        verdict,
        Verdict {
            denial: None,
            warnings: vec![
                "node \"node9\" is NotReady and cordoned; it is promoted, but tenant workloads will not run on it until it is Ready and uncordoned".into()
            ],
        }
    );
}

#[test]
fn nodes_kept_by_an_update_are_not_rechecked() {
    let old = tenant(&["node1"], &[]);
    let mut inventory = host();
    inventory.upsert_node(NodeFacts {
        ready: false,
        ..node_facts("node1", POOL_NODE)
    });
    let mut relabelled = old.clone();
    relabelled.spec.kubernetes_version = Some("v1.33.4".into());
    assert_eq!(
        update_by(USER, &old, &relabelled, &inventory, &Policy::default()),
        Verdict::default()
    );
}

// --- shared pool ------------------------------------------------------------------------

#[test]
fn pooled_requests_fit_the_shared_pool() {
    assert_denied(
        &create(&tenant(&[], &[("cpu", 12.into())])),
        FORBIDDEN,
        "pooled cpu request 12 exceeds what the shared pool can give: capacity 16 × overcommit 1.0 = 16, already reserved by other VirtualClusters 8, available 8",
    );
    assert_allowed(&create(&tenant(&[], &[("cpu", 8.into())])));
    assert_denied(
        &create(&tenant(&[], &[("memory", "100Gi".into())])),
        FORBIDDEN,
        "pooled memory request 100Gi exceeds what the shared pool can give: capacity 64Gi × overcommit 1.0 = 64Gi, already reserved by other VirtualClusters 0, available 64Gi",
    );
    assert_allowed(&create(&tenant(&[], &[("memory", "64Gi".into())])));
}

#[test]
fn overcommit_stretches_the_pool() {
    let policy = Policy {
        overcommit: BTreeMap::from([("cpu".to_owned(), Ratio::parse("1.5").unwrap())]),
        ..Policy::default()
    };
    assert_allowed(&create_with(
        &tenant(&[], &[("cpu", 16.into())]),
        &host(),
        &policy,
    ));
    assert_denied(
        &create_with(&tenant(&[], &[("cpu", "16500m".into())]), &host(), &policy),
        FORBIDDEN,
        "pooled cpu request 16500m exceeds what the shared pool can give: capacity 16 × overcommit 1.5 = 24, already reserved by other VirtualClusters 8, available 16",
    );
}

#[test]
fn an_update_is_judged_against_the_other_clusters_only() {
    let old = virtual_cluster("team-a", "prod", &["node7"], &[("cpu", 8.into())]);
    let within = virtual_cluster("team-a", "prod", &["node7"], &[("cpu", 16.into())]);
    assert_allowed(&update(&old, &within));
    let beyond = virtual_cluster("team-a", "prod", &["node7"], &[("cpu", 20.into())]);
    assert_denied(
        &update(&old, &beyond),
        FORBIDDEN,
        "pooled cpu request 20 exceeds what the shared pool can give: capacity 16 × overcommit 1.0 = 16, already reserved by other VirtualClusters 0, available 16",
    );
}

#[test]
fn an_update_that_does_not_grow_is_allowed_in_an_overfull_pool() {
    let mut inventory = host();
    for name in ["node1", "node2", "node3"] {
        inventory.upsert_node(NodeFacts {
            ready: false,
            ..node_facts(name, POOL_NODE)
        });
    }
    let old = virtual_cluster("team-a", "prod", &["node7"], &[("cpu", 8.into())]);
    let smaller = virtual_cluster("team-a", "prod", &["node7"], &[("cpu", 6.into())]);
    assert_allowed(&update_by(
        USER,
        &old,
        &smaller,
        &inventory,
        &Policy::default(),
    ));
}

fn nearly_full_host() -> Inventory {
    let mut inventory = host();
    inventory.upsert_cluster(ClusterFacts {
        key: ClusterKey::new("team-d", "big"),
        nodes: vec![],
        pooled: ResourceAmounts::from_iter([("cpu", 6 * CPU)]),
    });
    inventory
}

#[test]
fn promoting_a_pool_node_may_not_shrink_the_pool_below_reservations() {
    let inventory = nearly_full_host();
    assert_denied(
        &create_with(&tenant(&["node1"], &[]), &inventory, &Policy::default()),
        FORBIDDEN,
        "promoting node \"node1\" would shrink the shared pool's cpu from 16 to 12 (× overcommit 1.0 = 12), below the 14 already reserved by VirtualClusters; promote a node outside the pool or lower pooled requests first",
    );
    // node5 is NotReady, hence not in the pool: promoting it takes nothing away.
    assert_allowed(&create_with(
        &tenant(&["node5"], &[]),
        &inventory,
        &Policy::default(),
    ));
    assert_denied(
        &create_with(
            &tenant(&["node1", "node2"], &[]),
            &inventory,
            &Policy::default(),
        ),
        FORBIDDEN,
        "promoting nodes \"node1\", \"node2\" would shrink the shared pool's cpu from 16 to 8 (× overcommit 1.0 = 8), below the 14 already reserved by VirtualClusters; promote a node outside the pool or lower pooled requests first",
    );
    assert_allowed(&create(&tenant(&["node1"], &[])));
}

#[test]
fn pooled_requests_count_the_nodes_promoted_with_them() {
    assert_denied(
        &create(&tenant(&["node1"], &[("cpu", 6.into())])),
        FORBIDDEN,
        "pooled cpu request 6 exceeds what the shared pool can give: capacity 12 (after promoting node \"node1\") × overcommit 1.0 = 12, already reserved by other VirtualClusters 8, available 4",
    );
    assert_allowed(&create(&tenant(&["node1"], &[("cpu", 4.into())])));
}

// --- ceilings ---------------------------------------------------------------------------

#[test]
fn nodes_per_cluster_are_capped() {
    let policy = Policy {
        max_nodes_per_cluster: Some(2),
        ..Policy::default()
    };
    assert_allowed(&create_with(
        &tenant(&["node1", "node2"], &[]),
        &host(),
        &policy,
    ));
    assert_denied(
        &create_with(&tenant(&["node1", "node2", "node3"], &[]), &host(), &policy),
        FORBIDDEN,
        "VirtualCluster team-c/staging lists 3 nodes, above the limit of 2 per VirtualCluster (--max-nodes-per-cluster)",
    );
}

#[test]
fn cpu_and_memory_per_cluster_count_pooled_and_promoted_capacity() {
    let policy = Policy {
        max_cpu_per_cluster: Some(10 * CPU),
        max_memory_per_cluster: Some(32 * GI),
        ..Policy::default()
    };
    assert_allowed(&create_with(
        &tenant(&["node5", "node6"], &[("cpu", 2.into())]),
        &host(),
        &policy,
    ));
    assert_denied(
        &create_with(
            &tenant(&["node5", "node6"], &[("cpu", 3.into())]),
            &host(),
            &policy,
        ),
        FORBIDDEN,
        "VirtualCluster team-c/staging would get cpu 11 (pooled 3 + promoted nodes 8), above the limit of 10 per VirtualCluster (--max-cpu-per-cluster)",
    );
    assert_denied(
        &create_with(
            &tenant(&["node5"], &[("memory", "20Gi".into())]),
            &host(),
            &policy,
        ),
        FORBIDDEN,
        "VirtualCluster team-c/staging would get memory 36Gi (pooled 20Gi + promoted nodes 16Gi), above the limit of 32Gi per VirtualCluster (--max-memory-per-cluster)",
    );
}

#[test]
fn a_cluster_over_a_lowered_ceiling_may_still_shrink() {
    let policy = Policy {
        max_cpu_per_cluster: Some(4 * CPU),
        ..Policy::default()
    };
    let old = tenant(&["node1"], &[("cpu", 4.into())]);
    let smaller = tenant(&["node1"], &[("cpu", 2.into())]);
    assert_allowed(&update_by(USER, &old, &smaller, &host(), &policy));
}

#[test]
fn clusters_per_namespace_are_capped() {
    let policy = Policy {
        max_clusters_per_namespace: Some(1),
        ..Policy::default()
    };
    let second = virtual_cluster("team-a", "dev", &[], &[]);
    assert_denied(
        &create_with(&second, &host(), &policy),
        FORBIDDEN,
        "namespace \"team-a\" already has 1 VirtualClusters, the limit per namespace (--max-clusters-per-namespace); delete one or use another namespace",
    );
    assert_allowed(&create_with(&tenant(&[], &[]), &host(), &policy));
    let prod = virtual_cluster("team-a", "prod", &["node7"], &[("cpu", 8.into())]);
    assert_allowed(&update_by(USER, &prod, &prod.clone(), &host(), &policy));
}

// --- requests exactly as kube-apiserver v1.36 sent them ------------------------------------

/// `request.object` and `request.oldObject` of a recorded AdmissionReview.
fn recorded(review: &str) -> (String, VirtualCluster, Option<VirtualCluster>) {
    let review: serde_json::Value = serde_json::from_str(review).unwrap();
    let request = &review["request"];
    let object = serde_json::from_value(request["object"].clone()).unwrap();
    let old_object = serde_json::from_value(request["oldObject"].clone()).unwrap();
    let username = request["userInfo"]["username"].as_str().unwrap().to_owned();
    (username, object, old_object)
}

/// Two 8-cpu, 64Gi pool nodes besides `node-a`, which the recorded requests promote.
fn recorded_host() -> Inventory {
    let mut inventory = Inventory::new();
    for name in ["node-a", "node-b", "node-c"] {
        inventory.upsert_node(NodeFacts {
            allocatable: ResourceAmounts::from_iter([("cpu", 8 * CPU), ("memory", 64 * GI)]),
            ..node_facts(name, POOL_NODE)
        });
    }
    inventory
}

#[test]
fn recorded_create_is_judged_as_sent() {
    let (username, object, old_object) = recorded(include_str!(
        "fixtures/002-validate-CREATE-virtualclusters-vc-adm.request.json"
    ));
    assert!(old_object.is_none());
    let request = Request {
        operation: Operation::Create,
        username: &username,
        object: Some(&object),
        old_object: None,
    };
    // The pool holds node-b and node-c once node-a is promoted: 16 cpu and 128Gi.
    assert_allowed(&validate(&request, &recorded_host(), &Policy::default()));

    let mut crowded = recorded_host();
    crowded.upsert_cluster(ClusterFacts {
        key: ClusterKey::new("default", "vc-other"),
        nodes: vec![],
        pooled: ResourceAmounts::from_iter([("cpu", 10 * CPU)]),
    });
    assert_denied(
        &validate(&request, &crowded, &Policy::default()),
        FORBIDDEN,
        "pooled cpu request 10 exceeds what the shared pool can give: capacity 16 (after promoting node \"node-a\") × overcommit 1.0 = 16, already reserved by other VirtualClusters 10, available 6",
    );
}

#[test]
fn recorded_create_is_refused_beside_a_sibling_holding_its_ca() {
    let (username, object, _) = recorded(include_str!(
        "fixtures/002-validate-CREATE-virtualclusters-vc-adm.request.json"
    ));
    let request = Request {
        operation: Operation::Create,
        username: &username,
        object: Some(&object),
        old_object: None,
    };
    let mut inventory = recorded_host();
    inventory.upsert_cluster(ClusterFacts {
        key: ClusterKey::new("default", "vc-adm-etcd"),
        nodes: vec![],
        pooled: ResourceAmounts::new(),
    });
    assert_denied(
        &validate(&request, &inventory, &Policy::default()),
        FORBIDDEN,
        "VirtualCluster default/vc-adm would own Secret \"vc-adm-etcd-ca\" for its etcd CA, which VirtualCluster default/vc-adm-etcd already uses for its cluster CA; choose a name that \"vc-adm-etcd\" does not start with, followed by '-'",
    );
}

#[test]
fn recorded_update_is_judged_against_the_other_clusters() {
    let (username, object, old_object) = recorded(include_str!(
        "fixtures/006-validate-UPDATE-virtualclusters-vc-adm.request.json"
    ));
    let old_object = old_object.unwrap();
    let mut inventory = recorded_host();
    inventory.upsert_cluster(ClusterFacts::from_virtual_cluster(&old_object).unwrap());
    let request = Request {
        operation: Operation::Update,
        username: &username,
        object: Some(&object),
        old_object: Some(&old_object),
    };
    // cpu 10 -> 12 of a 16-cpu pool that only this cluster uses.
    assert_allowed(&validate(&request, &inventory, &Policy::default()));

    inventory.upsert_cluster(ClusterFacts {
        key: ClusterKey::new("team-b", "dev"),
        nodes: vec![],
        pooled: ResourceAmounts::from_iter([("cpu", 5 * CPU)]),
    });
    assert_denied(
        &validate(&request, &inventory, &Policy::default()),
        FORBIDDEN,
        "pooled cpu request 12 exceeds what the shared pool can give: capacity 16 × overcommit 1.0 = 16, already reserved by other VirtualClusters 5, available 11",
    );
}

// --- properties -------------------------------------------------------------------------

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn any_quantity() -> impl Strategy<Value = ResourceQuantity> {
        prop_oneof![
            any::<i64>().prop_map(ResourceQuantity::Int),
            "[-+]?[0-9]{0,6}(\\.[0-9]{0,4})?([KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]{1,3})?"
                .prop_map(ResourceQuantity::String),
            ".{0,12}".prop_map(ResourceQuantity::String),
        ]
    }

    fn any_cluster() -> impl Strategy<Value = VirtualCluster> {
        (
            "[a-z0-9-]{0,70}|.{0,10}",
            prop::collection::vec("node[0-9]{1,2}|master1|.{0,6}", 0..6),
            prop::collection::btree_map(
                "cpu|memory|pods|ephemeral-storage|cpus|example.com/gpu|.{0,8}",
                any_quantity(),
                0..4,
            ),
            prop::option::of("v1\\.[0-9]{1,2}\\.[0-9]|.{0,8}"),
            prop::option::of(any::<i32>()),
            prop::option::of("[a-z.*_:0-9-]{0,20}"),
        )
            .prop_map(|(name, nodes, resources, version, replicas, host)| {
                let mut cluster = VirtualCluster::new(&name, VirtualClusterSpec::default());
                cluster.metadata.namespace = Some("team-p".into());
                cluster.spec.promote_resources.nodes = nodes;
                cluster.spec.promote_resources.resources = resources.into_iter().collect();
                cluster.spec.kubernetes_version = version;
                cluster.spec.control_plane = Some(ControlPlaneSpec {
                    api_server: Some(ApiServerSpec {
                        external_hosts: host.into_iter().collect(),
                        ..ApiServerSpec::default()
                    }),
                    etcd: Some(EtcdSpec {
                        replicas,
                        ..EtcdSpec::default()
                    }),
                });
                cluster
            })
    }

    fn pool_request() -> impl Strategy<Value = (Vec<String>, i64, i64)> {
        (
            prop::collection::vec((1_usize..=8).prop_map(|index| format!("node{index}")), 0..3),
            1_i64..10,
            1_i64..40,
        )
            .prop_map(|(nodes, cpu, memory_gi)| (nodes, cpu, memory_gi))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever a client sends, the rules answer (and defaulting either succeeds or
        /// names the field); nothing panics.
        #[test]
        fn validate_answers_every_input(new in any_cluster(), old in any_cluster(), update in any::<bool>()) {
            let inventory = host();
            let policy = Policy {
                max_nodes_per_cluster: Some(3),
                max_cpu_per_cluster: Some(20 * CPU),
                max_clusters_per_namespace: Some(2),
                ..Policy::default()
            };
            let request = Request {
                operation: if update { Operation::Update } else { Operation::Create },
                username: USER,
                object: Some(&new),
                old_object: update.then_some(&old),
            };
            let verdict = validate(&request, &inventory, &policy);
            if let Some(denial) = verdict.denial {
                prop_assert!(denial.code == FORBIDDEN || denial.code == INVALID);
                prop_assert!(!denial.message.is_empty());
            }
            if let Err(error) = apply_defaults(&new.spec, &Defaults::default()) {
                prop_assert!(error.to_string().starts_with("spec."), "{}", error);
            }
        }

        /// Admitting creations one after another (each admitted one entering the cache)
        /// never lists a node twice and never reserves more than the pool can give.
        #[test]
        fn admitted_creations_keep_nodes_exclusive_and_the_pool_covered(
            requests in prop::collection::vec(pool_request(), 1..12),
        ) {
            let mut inventory = host();
            let policy = Policy {
                overcommit: BTreeMap::from([("cpu".to_owned(), Ratio::parse("1.5").unwrap())]),
                ..Policy::default()
            };
            for (index, (nodes, cpu, memory_gi)) in requests.into_iter().enumerate() {
                let node_refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
                let cluster = virtual_cluster(
                    "team-p",
                    &format!("c{index}"),
                    &node_refs,
                    &[("cpu", cpu.into()), ("memory", format!("{memory_gi}Gi").as_str().into())],
                );
                if create_with(&cluster, &inventory, &policy).is_allowed() {
                    inventory.upsert_cluster(ClusterFacts::from_virtual_cluster(&cluster).unwrap());
                }
                for name in ["node1", "node2", "node3", "node4", "node5", "node6", "node7", "node8"] {
                    let stranger = ClusterKey::new("nobody", "nobody");
                    let first = inventory.other_owner_of(name, &stranger).cloned();
                    if let Some(first) = first {
                        prop_assert_eq!(inventory.other_owner_of(name, &first), None, "{} listed twice", name);
                    }
                }
                let cpu_limit = policy.overcommit_of("cpu").apply(inventory.pool_capacity().get("cpu"));
                prop_assert!(inventory.reserved().get("cpu") <= cpu_limit);
                prop_assert!(inventory.reserved().get("memory") <= inventory.pool_capacity().get("memory"));
            }
        }
    }
}
