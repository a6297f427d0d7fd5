//! Wires the Controller: watches, caches, triggers, readiness and shutdown.
//!
//! `run` is what the binary calls and what in-process tests call, with any `kube::Client`.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, ResourceQuota, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use vc_api::VirtualCluster;
use vc_api::constants::{
    MANAGED_BY_LABEL, MANAGED_BY_VALUE, NODE_CLAIM_TAINT_KEY, NODE_OWNER_NAME_LABEL,
    NODE_OWNER_NAMESPACE_LABEL, NODE_OWNER_UID_ANNOTATION,
};
use vc_api::pod_security::WORKLOAD_POD_SECURITY_LABEL;

use crate::context::{Context, Stores, Timing};
use crate::flags::Flags;
use crate::reconcile::{error_policy, reconcile};
use crate::resources::BuildContext;
use crate::slim::{CacheForm, slim};
use crate::telemetry::{Health, Metrics};

/// Everything `run` needs besides the client.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Builders' settings.
    pub build: BuildContext,
    /// Concurrent reconciles.
    pub concurrency: u16,
    /// Timing knobs.
    pub timing: Timing,
    /// What happens to the pods already running on a claimed node.
    pub claimed_node_pods: vc_api::eviction::ClaimedNodePods,
    /// The client evictions go through, when the host client retries 429s itself (see
    /// [`crate::eviction::EvictionClient`]); `None` evicts through the host client.
    pub eviction_client: Option<crate::eviction::EvictionClient>,
}

impl RunConfig {
    /// The configuration the flags describe.
    pub fn from_flags(flags: &Flags) -> Self {
        Self {
            build: BuildContext {
                image_registry: flags.image_registry.clone(),
                etcd_image: flags.etcd_image.clone(),
                clustertree_image: flags.clustertree_image.clone(),
                clustertree_cluster_role: flags.clustertree_cluster_role.clone(),
                cluster_domain: flags.cluster_domain.clone(),
                control_plane_node_selector: flags.control_plane_node_selector.clone(),
                host_pod_cidrs: flags.host_pod_cidrs.clone(),
                ..BuildContext::default()
            },
            concurrency: flags.concurrency,
            timing: Timing::default(),
            claimed_node_pods: flags.claimed_node_pods,
            eviction_client: None,
        }
    }
}

type WatchStream<K> = std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

/// A watch of `api` feeding a cache; the returned stream must be polled for the cache
/// to fill.
fn reflect<K>(api: Api<K>, config: watcher::Config) -> (Store<K>, WatchStream<K>)
where
    K: CacheForm + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config).modify(|object| {
        forget_managed_fields(object);
        slim(object);
    });
    let stream = reflector::reflector(writer, stream)
        .default_backoff()
        .touched_objects()
        .boxed();
    (reader, stream)
}

/// Drops an object's managedFields before it is cached: nothing compared or decided
/// reads them, and on workloads they are often the larger half of what the cache would
/// hold for every tenant.
fn forget_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// Changes of a Node that matter to claims: owner labels, UID annotation, claim taint,
/// deletion. Kubelet heartbeats do not wake any VirtualCluster.
fn claim_fingerprint(node: &Node) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    let labels = node.labels();
    labels.get(NODE_OWNER_NAMESPACE_LABEL).hash(&mut hasher);
    labels.get(NODE_OWNER_NAME_LABEL).hash(&mut hasher);
    node.annotations()
        .get(NODE_OWNER_UID_ANNOTATION)
        .hash(&mut hasher);
    node.meta().deletion_timestamp.is_some().hash(&mut hasher);
    for taint in node
        .spec
        .as_ref()
        .and_then(|spec| spec.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|taint| taint.key == NODE_CLAIM_TAINT_KEY)
    {
        (&taint.value, &taint.effect).hash(&mut hasher);
    }
    Some(hasher.finish())
}

/// VirtualClusters a Node change concerns: its owner by label, and every VirtualCluster
/// listing it (a loser waiting for a released node converges at once).
pub fn node_interest(
    node: &Node,
    virtual_clusters: &Store<VirtualCluster>,
) -> Vec<ObjectRef<VirtualCluster>> {
    let labels = node.labels();
    let mut interested: Vec<ObjectRef<VirtualCluster>> = Vec::new();
    if let (Some(namespace), Some(name)) = (
        labels.get(NODE_OWNER_NAMESPACE_LABEL),
        labels.get(NODE_OWNER_NAME_LABEL),
    ) {
        interested.push(ObjectRef::new(name).within(namespace));
    }
    let node_name = node.name_any();
    for vc in virtual_clusters.state() {
        if vc.spec.promote_resources.nodes.contains(&node_name) {
            let reference = ObjectRef::from(vc.as_ref());
            if !interested.contains(&reference) {
                interested.push(reference);
            }
        }
    }
    interested
}

/// Changes of a Namespace that matter to the VirtualClusters in it: its Pod Security
/// label. The workload namespaces the controller made hold no VirtualCluster.
fn pod_security_fingerprint(namespace: &Namespace) -> Option<u64> {
    if is_ours(namespace) {
        return Some(0);
    }
    let mut hasher = DefaultHasher::new();
    namespace
        .labels()
        .get(WORKLOAD_POD_SECURITY_LABEL)
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// The VirtualClusters of a namespace whose Pod Security label changed: their tenants'
/// level follows at once. Label changes are rare, so walking every VirtualCluster for
/// one costs little; the controller's own namespaces never get here.
pub fn namespace_interest(
    namespace: &Namespace,
    virtual_clusters: &Store<VirtualCluster>,
) -> Vec<ObjectRef<VirtualCluster>> {
    if is_ours(namespace) {
        return Vec::new();
    }
    let name = namespace.name_any();
    virtual_clusters
        .state()
        .iter()
        .filter(|vc| vc.namespace().as_deref() == Some(name.as_str()))
        .map(|vc| ObjectRef::from(vc.as_ref()))
        .collect()
}

fn is_ours(namespace: &Namespace) -> bool {
    namespace.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
}

/// How long a VirtualCluster's triggers are gathered before it is reconciled. A pass
/// that creates a tenant's objects is answered by a burst of their watch events; gathered,
/// they are one reconcile that finds them all cached instead of several that find some.
/// Short against the watch-visible waits it delays (rollouts of seconds).
const RECONCILE_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(200);

/// Runs the controller until `shutdown` resolves, then lets in-flight reconciles finish.
/// `health` turns ready once every watch has listed its objects.
pub async fn run(
    client: Client,
    config: RunConfig,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let managed =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let (nodes, node_stream) =
        reflect::<Node>(Api::all(client.clone()), watcher::Config::default());
    let (secrets, secret_stream) = reflect::<Secret>(Api::all(client.clone()), managed.clone());
    let (services, service_stream) = reflect::<Service>(Api::all(client.clone()), managed.clone());
    let (stateful_sets, stateful_set_stream) =
        reflect::<StatefulSet>(Api::all(client.clone()), managed.clone());
    let (deployments, deployment_stream) =
        reflect::<Deployment>(Api::all(client.clone()), managed.clone());
    let (service_accounts, service_account_stream) =
        reflect::<ServiceAccount>(Api::all(client.clone()), managed.clone());
    let (resource_quotas, resource_quota_stream) =
        reflect::<ResourceQuota>(Api::all(client.clone()), managed.clone());
    let (roles, role_stream) = reflect::<Role>(Api::all(client.clone()), managed.clone());
    let (role_bindings, role_binding_stream) =
        reflect::<RoleBinding>(Api::all(client.clone()), managed.clone());
    // Every namespace, not only ours: a VirtualCluster's own namespace carries the Pod
    // Security level its tenant gets, read on every reconcile.
    let (namespaces, namespace_stream) =
        reflect::<Namespace>(Api::all(client.clone()), watcher::Config::default());
    let (cluster_roles, cluster_role_stream) =
        reflect::<ClusterRole>(Api::all(client.clone()), managed.clone());
    let (network_policies, network_policy_stream) =
        reflect::<NetworkPolicy>(Api::all(client.clone()), managed.clone());
    let (cluster_role_bindings, cluster_role_binding_stream) =
        reflect::<ClusterRoleBinding>(Api::all(client.clone()), managed);
    let stores = Stores {
        nodes,
        secrets,
        services,
        stateful_sets,
        deployments,
        service_accounts,
        resource_quotas,
        roles,
        role_bindings,
        namespaces,
        cluster_roles,
        cluster_role_bindings,
        network_policies,
    };

    // The VirtualCluster cache is ours, not the Controller's: kube-runtime's applier
    // already waits on the Controller's store, and a store wakes only one waiter. Its
    // first complete listing is seen on the event stream instead.
    let (virtual_clusters, vc_writer) = reflector::store::<VirtualCluster>();
    let (vc_listed_tx, vc_listed_rx) = tokio::sync::watch::channel(false);
    let vc_stream = reflector::reflector(
        vc_writer,
        watcher(
            Api::<VirtualCluster>::all(client.clone()),
            watcher::Config::default(),
        )
        .modify(forget_managed_fields)
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                vc_listed_tx.send_replace(true);
            }
        }),
    )
    .default_backoff()
    .applied_objects();
    let controller = Controller::for_stream(vc_stream, virtual_clusters.clone());
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(mark_ready_when_synced(
        stores.clone(),
        vc_listed_rx,
        health,
        ready_tx,
    ));
    let eviction_client = config
        .eviction_client
        .unwrap_or_else(|| crate::eviction::EvictionClient(client.clone()));
    let context = Arc::new(
        Context::new(
            client,
            config.build,
            stores,
            metrics,
            config.timing,
            ready_rx,
        )
        .with_claimed_node_pods(config.claimed_node_pods, eviction_client),
    );
    let interest_store = virtual_clusters.clone();
    let namespace_interest_store = virtual_clusters.clone();
    controller
        .with_config(
            kube::runtime::controller::Config::default()
                .concurrency(config.concurrency)
                .debounce(RECONCILE_DEBOUNCE),
        )
        .owns_stream(secret_stream)
        .owns_stream(service_stream)
        .owns_stream(stateful_set_stream)
        .owns_stream(deployment_stream)
        .owns_stream(service_account_stream)
        .owns_stream(network_policy_stream)
        .watches_stream(
            node_stream.predicate_filter(claim_fingerprint, Default::default()),
            move |node| node_interest(&node, &interest_store),
        )
        .watches_stream(resource_quota_stream, no_trigger::<_>)
        .watches_stream(role_stream, no_trigger::<_>)
        .watches_stream(role_binding_stream, no_trigger::<_>)
        .watches_stream(
            namespace_stream.predicate_filter(pod_security_fingerprint, Default::default()),
            move |namespace| namespace_interest(&namespace, &namespace_interest_store),
        )
        .watches_stream(cluster_role_stream, no_trigger::<_>)
        .watches_stream(cluster_role_binding_stream, no_trigger::<_>)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(virtualcluster = %object, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile did not complete"),
            }
        })
        .await;
    tracing::info!("controller stopped");
}

/// Objects outside the tenant's namespace (cluster-scoped, or in its workload namespace)
/// carry no ownerReference to map back; they are cached for comparison only and
/// repaired on the next resync.
fn no_trigger<K>(_: K) -> Option<ObjectRef<VirtualCluster>> {
    None
}

async fn mark_ready_when_synced(
    stores: Stores,
    mut virtual_clusters_listed: tokio::sync::watch::Receiver<bool>,
    health: Arc<Health>,
    ready: tokio::sync::watch::Sender<bool>,
) {
    let named = [
        ("nodes", stores.nodes.wait_until_ready().boxed()),
        ("secrets", stores.secrets.wait_until_ready().boxed()),
        ("services", stores.services.wait_until_ready().boxed()),
        (
            "statefulsets",
            stores.stateful_sets.wait_until_ready().boxed(),
        ),
        ("deployments", stores.deployments.wait_until_ready().boxed()),
        (
            "serviceaccounts",
            stores.service_accounts.wait_until_ready().boxed(),
        ),
        (
            "resourcequotas",
            stores.resource_quotas.wait_until_ready().boxed(),
        ),
        ("roles", stores.roles.wait_until_ready().boxed()),
        (
            "rolebindings",
            stores.role_bindings.wait_until_ready().boxed(),
        ),
        ("namespaces", stores.namespaces.wait_until_ready().boxed()),
        (
            "clusterroles",
            stores.cluster_roles.wait_until_ready().boxed(),
        ),
        (
            "clusterrolebindings",
            stores.cluster_role_bindings.wait_until_ready().boxed(),
        ),
        (
            "networkpolicies",
            stores.network_policies.wait_until_ready().boxed(),
        ),
    ];
    let synced = futures::future::join_all(named.into_iter().map(|(name, ready)| async move {
        let result = ready.await;
        tracing::debug!(watch = name, "cache synced");
        result
    }))
    .await;
    let listed = virtual_clusters_listed
        .wait_for(|listed| *listed)
        .await
        .is_ok();
    if listed && synced.iter().all(Result::is_ok) {
        tracing::info!("watches synced; reconciling");
        health.set_ready();
        let _ = ready.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;
    use vc_api::testing::node;

    #[test]
    fn node_changes_reach_the_owner_and_every_vc_listing_the_node() {
        let (reader, mut writer) = reflector::store::<VirtualCluster>();
        let listing: VirtualCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
            "metadata": {"name": "loser", "namespace": "team-b"},
            "spec": {"promoteResources": {"nodes": ["node1"]}}
        }))
        .unwrap();
        let unrelated: VirtualCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
            "metadata": {"name": "other", "namespace": "team-c"},
            "spec": {"promoteResources": {"nodes": ["node2"]}}
        }))
        .unwrap();
        writer.apply_watcher_event(&Event::Apply(listing));
        writer.apply_watcher_event(&Event::Apply(unrelated));
        let owned = node(
            "node1",
            &[
                (NODE_OWNER_NAMESPACE_LABEL, "team-a"),
                (NODE_OWNER_NAME_LABEL, "winner"),
            ],
        );
        let interested = node_interest(&owned, &reader);
        assert_eq!(
            interested,
            [
                ObjectRef::new("winner").within("team-a"),
                ObjectRef::new("loser").within("team-b")
            ]
        );
        assert_eq!(
            node_interest(&node("node1", &[]), &reader),
            [ObjectRef::new("loser").within("team-b")]
        );
    }

    #[test]
    fn a_pod_security_label_change_reaches_the_virtual_clusters_of_its_namespace() {
        let (reader, mut writer) = reflector::store::<VirtualCluster>();
        for (namespace, name) in [("team-a", "one"), ("team-a", "two"), ("team-b", "other")] {
            let vc: VirtualCluster = serde_json::from_value(serde_json::json!({
                "apiVersion": "kosmos.io/v1alpha1", "kind": "VirtualCluster",
                "metadata": {"name": name, "namespace": namespace}, "spec": {}
            }))
            .unwrap();
            writer.apply_watcher_event(&Event::Apply(vc));
        }
        let namespace = |labels: serde_json::Value| -> Namespace {
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": "team-a", "labels": labels}}),
            )
            .unwrap()
        };
        let mut interested = namespace_interest(&namespace(serde_json::json!({})), &reader);
        interested.sort_by_key(|reference| reference.name.clone());
        assert_eq!(
            interested,
            [
                ObjectRef::new("one").within("team-a"),
                ObjectRef::new("two").within("team-a")
            ]
        );
        let plain = pod_security_fingerprint(&namespace(serde_json::json!({"team": "a"})));
        assert_eq!(
            plain,
            pod_security_fingerprint(&namespace(serde_json::json!({"team": "b"}))),
            "other labels change nothing"
        );
        assert_ne!(
            plain,
            pod_security_fingerprint(&namespace(
                serde_json::json!({WORKLOAD_POD_SECURITY_LABEL: "restricted"})
            ))
        );
        let ours = namespace(serde_json::json!({MANAGED_BY_LABEL: MANAGED_BY_VALUE}));
        assert!(
            namespace_interest(&ours, &reader).is_empty(),
            "a workload namespace wakes nobody"
        );
    }

    #[test]
    fn heartbeats_do_not_change_the_claim_fingerprint() {
        let mut first = node("node1", &[(NODE_OWNER_NAME_LABEL, "a")]);
        let before = claim_fingerprint(&first);
        first.metadata.resource_version = Some("99".into());
        first.status = Some(Default::default());
        assert_eq!(claim_fingerprint(&first), before);
        let claimed_elsewhere = node("node1", &[(NODE_OWNER_NAME_LABEL, "b")]);
        assert_ne!(claim_fingerprint(&claimed_elsewhere), before);
    }
}
