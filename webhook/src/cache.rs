//! Watch-fed caches of host Nodes and VirtualClusters, kept as the few facts the rules need.
//!
//! A reflector store would keep every Node whole: images, managed fields, annotations,
//! conditions with their messages. At 50,000 nodes that is hundreds of megabytes. Instead,
//! Nodes are deserialized into [`SlimNode`] (everything else is skipped by the parser and
//! never allocated), turned into [`NodeFacts`] and only those are kept, in the shared
//! [`Inventory`] whose indexes (node owner, pool totals) are maintained incrementally.
//!
//! The inventory lock is taken per event and never held across an await.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use prometheus_client::metrics::gauge::Gauge;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use vc_api::VirtualCluster;
use vc_api::admission::{ClusterFacts, ClusterKey, Inventory, NodeFacts};

use crate::SharedInventory;
use crate::server::Readiness;

/// A Node holding only what [`NodeFacts::from_node`] reads: name, labels,
/// `spec.unschedulable`, `status.allocatable` and the Ready condition.
#[derive(Clone, Debug, Default)]
pub struct SlimNode(pub Node);

resource_of_part!(SlimNode, Node);

/// The wire shape of the fields [`SlimNode`] keeps; serde skips every other field.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireNode {
    metadata: WireMeta,
    #[serde(default)]
    spec: Option<WireSpec>,
    #[serde(default)]
    status: Option<WireStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    resource_version: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSpec {
    unschedulable: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStatus {
    allocatable: Option<BTreeMap<String, Quantity>>,
    conditions: Option<Vec<WireCondition>>,
}

#[derive(Deserialize)]
struct WireCondition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

impl<'de> Deserialize<'de> for SlimNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireNode::deserialize(deserializer)?;
        let conditions = wire.status.as_ref().and_then(|status| {
            status.conditions.as_ref().map(|conditions| {
                conditions
                    .iter()
                    .filter(|condition| condition.type_ == "Ready")
                    .map(|condition| NodeCondition {
                        type_: condition.type_.clone(),
                        status: condition.status.clone(),
                        ..NodeCondition::default()
                    })
                    .collect()
            })
        });
        Ok(Self(Node {
            metadata: ObjectMeta {
                name: wire.metadata.name,
                resource_version: wire.metadata.resource_version,
                labels: wire.metadata.labels,
                ..ObjectMeta::default()
            },
            spec: wire.spec.map(|spec| NodeSpec {
                unschedulable: spec.unschedulable,
                ..NodeSpec::default()
            }),
            status: wire.status.map(|status| NodeStatus {
                allocatable: status.allocatable,
                conditions,
                ..NodeStatus::default()
            }),
        }))
    }
}

/// An object kind the caches mirror into the inventory.
pub trait Mirrored: Resource + Clone + DeserializeOwned + Debug + Send + 'static {
    /// How the inventory identifies one object.
    type Key: Eq + Hash + Clone + Debug;
    /// The key, or `None` for an object without a name (never sent by an apiserver).
    fn key(&self) -> Option<Self::Key>;
    /// Records the object in the inventory.
    fn apply(&self, key: &Self::Key, inventory: &mut Inventory);
    /// Forgets the object.
    fn remove(key: &Self::Key, inventory: &mut Inventory);
}

impl Mirrored for SlimNode {
    type Key = String;

    fn key(&self) -> Option<String> {
        self.0.metadata.name.clone()
    }

    fn apply(&self, _key: &String, inventory: &mut Inventory) {
        inventory.upsert_node(NodeFacts::from_node(&self.0));
    }

    fn remove(key: &String, inventory: &mut Inventory) {
        inventory.remove_node(key);
    }
}

impl Mirrored for VirtualCluster {
    type Key = ClusterKey;

    fn key(&self) -> Option<ClusterKey> {
        Some(ClusterKey {
            namespace: self.metadata.namespace.clone()?,
            name: self.metadata.name.clone()?,
        })
    }

    fn apply(&self, key: &ClusterKey, inventory: &mut Inventory) {
        match ClusterFacts::from_virtual_cluster(self) {
            Some(facts) => inventory.upsert_cluster(facts),
            None => inventory.remove_cluster(key),
        }
    }

    fn remove(key: &ClusterKey, inventory: &mut Inventory) {
        inventory.remove_cluster(key);
    }
}

/// Applies watch events to the inventory, including re-lists after a watch restart: objects
/// that vanished while the watch was down are removed when the re-list completes.
#[derive(Debug)]
pub struct Mirror<K: Mirrored> {
    known: HashSet<K::Key>,
    relisted: Option<HashSet<K::Key>>,
}

impl<K: Mirrored> Default for Mirror<K> {
    fn default() -> Self {
        Self {
            known: HashSet::new(),
            relisted: None,
        }
    }
}

impl<K: Mirrored> Mirror<K> {
    /// Applies one event; returns true when a complete list has just been applied.
    pub fn handle(&mut self, event: Event<K>, inventory: &parking_lot::RwLock<Inventory>) -> bool {
        match event {
            Event::Init => {
                self.relisted = Some(HashSet::new());
                false
            }
            Event::InitApply(object) => {
                if let Some(key) = self.apply(&object, inventory) {
                    self.relisted.get_or_insert_with(HashSet::new).insert(key);
                }
                false
            }
            Event::InitDone => {
                let relisted = self.relisted.take().unwrap_or_default();
                let vanished: Vec<K::Key> = self.known.difference(&relisted).cloned().collect();
                if !vanished.is_empty() {
                    let mut inventory = inventory.write();
                    for key in &vanished {
                        K::remove(key, &mut inventory);
                    }
                }
                self.known = relisted;
                true
            }
            Event::Apply(object) => {
                self.apply(&object, inventory);
                false
            }
            Event::Delete(object) => {
                if let Some(key) = object.key() {
                    K::remove(&key, &mut inventory.write());
                    self.known.remove(&key);
                }
                false
            }
        }
    }

    fn apply(&mut self, object: &K, inventory: &parking_lot::RwLock<Inventory>) -> Option<K::Key> {
        let key = object.key()?;
        object.apply(&key, &mut inventory.write());
        self.known.insert(key.clone());
        Some(key)
    }

    /// How many objects are mirrored.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether nothing is mirrored.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

/// Mirrors every host Node into `inventory` until the task is dropped.
pub async fn run_node_cache(
    client: Client,
    inventory: SharedInventory,
    readiness: Arc<Readiness>,
    objects: Gauge,
) {
    let api: Api<SlimNode> = Api::all(client);
    mirror(api, inventory, "Node", objects, move || {
        readiness.mark_nodes_synced();
    })
    .await;
}

/// Mirrors every VirtualCluster of every namespace into `inventory` until the task is dropped.
pub async fn run_cluster_cache(
    client: Client,
    inventory: SharedInventory,
    readiness: Arc<Readiness>,
    objects: Gauge,
) {
    let api: Api<VirtualCluster> = Api::all(client);
    mirror(api, inventory, "VirtualCluster", objects, move || {
        readiness.mark_clusters_synced();
    })
    .await;
}

async fn mirror<K: Mirrored>(
    api: Api<K>,
    inventory: SharedInventory,
    kind: &'static str,
    objects: Gauge,
    on_synced: impl Fn(),
) where
    K::DynamicType: Default + Eq + Hash + Clone,
{
    // Paginated lists (500 per page) keep the transient memory of a full list small.
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut mirror = Mirror::<K>::default();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                let listed = mirror.handle(event, &inventory);
                objects.set(i64::try_from(mirror.len()).unwrap_or(i64::MAX));
                if listed {
                    tracing::info!(kind, objects = mirror.len(), "cache synced");
                    on_synced();
                }
            }
            Err(error) => tracing::warn!(kind, %error, "watch failed; retrying with backoff"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use serde_json::json;
    use vc_api::testing::virtual_cluster;

    fn node_json(name: &str, ready: &str) -> serde_json::Value {
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "resourceVersion": "42",
                "uid": "0b7c1a8e-1111-4c3e-9c62-3f6b0f6c6d01",
                "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
                "annotations": {"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"},
                "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}]
            },
            "spec": {"podCIDR": "10.244.1.0/24", "providerID": "kind://docker/kind/worker"},
            "status": {
                "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                "allocatable": {"cpu": "7800m", "memory": "31Gi", "pods": "110"},
                "conditions": [
                    {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available"},
                    {"type": "Ready", "status": ready, "reason": "KubeletReady", "message": "kubelet is posting ready status"}
                ],
                "images": [{"names": ["registry.k8s.io/etcd@sha256:abc", "registry.k8s.io/etcd:3.5.21-0"], "sizeBytes": 57680541}],
                "nodeInfo": {"kubeletVersion": "v1.33.4", "osImage": "Debian GNU/Linux 12"}
            }
        })
    }

    fn slim(name: &str, ready: &str) -> SlimNode {
        serde_json::from_value(node_json(name, ready)).unwrap()
    }

    fn cluster(namespace: &str, name: &str, nodes: &[&str]) -> VirtualCluster {
        virtual_cluster(namespace, name, nodes, &[("cpu", "2".into())])
    }

    #[test]
    fn slim_nodes_keep_exactly_the_facts_of_the_whole_node() {
        for ready in ["True", "False"] {
            let whole: Node = serde_json::from_value(node_json("node7", ready)).unwrap();
            let slim = slim("node7", ready);
            assert_eq!(NodeFacts::from_node(&slim.0), NodeFacts::from_node(&whole));
            assert!(slim.0.status.as_ref().unwrap().images.is_none());
            assert!(slim.0.metadata.managed_fields.is_none());
            assert!(slim.0.metadata.annotations.is_none());
            assert_eq!(
                slim.0
                    .status
                    .as_ref()
                    .unwrap()
                    .conditions
                    .as_ref()
                    .unwrap()
                    .len(),
                1
            );
        }
    }

    #[test]
    fn node_events_keep_the_inventory_current() {
        let inventory = parking_lot::RwLock::new(Inventory::new());
        let mut mirror = Mirror::<SlimNode>::default();
        assert!(!mirror.handle(Event::Init, &inventory));
        assert!(!mirror.handle(Event::InitApply(slim("a", "True")), &inventory));
        assert!(!mirror.handle(Event::InitApply(slim("b", "True")), &inventory));
        assert!(
            mirror.handle(Event::InitDone, &inventory),
            "InitDone marks the cache synced"
        );
        assert_eq!(inventory.read().node_count(), 2);
        assert_eq!(inventory.read().pool_capacity().get("cpu"), 15_600);

        mirror.handle(Event::Apply(slim("b", "False")), &inventory);
        assert_eq!(
            inventory.read().pool_capacity().get("cpu"),
            7_800,
            "a NotReady node leaves the pool"
        );
        mirror.handle(Event::Delete(slim("a", "True")), &inventory);
        assert!(inventory.read().node("a").is_none());
        assert_eq!(mirror.len(), 1);
    }

    #[test]
    fn a_relist_after_a_watch_restart_drops_what_vanished_meanwhile() {
        let inventory = parking_lot::RwLock::new(Inventory::new());
        let mut mirror = Mirror::<SlimNode>::default();
        for event in [
            Event::Init,
            Event::InitApply(slim("a", "True")),
            Event::InitApply(slim("b", "True")),
            Event::InitDone,
        ] {
            mirror.handle(event, &inventory);
        }
        // The watch broke; "a" was deleted and "c" created while it was down.
        mirror.handle(Event::Init, &inventory);
        mirror.handle(Event::InitApply(slim("b", "True")), &inventory);
        assert!(
            inventory.read().node("a").is_some(),
            "nothing is dropped before the re-list completes"
        );
        mirror.handle(Event::InitApply(slim("c", "True")), &inventory);
        assert!(mirror.handle(Event::InitDone, &inventory));
        let inventory = inventory.read();
        assert!(inventory.node("a").is_none());
        assert!(inventory.node("b").is_some() && inventory.node("c").is_some());
        assert_eq!(inventory.node_count(), 2);
    }

    #[test]
    fn cluster_events_maintain_node_owners_and_reservations() {
        let inventory = parking_lot::RwLock::new(Inventory::new());
        let mut mirror = Mirror::<VirtualCluster>::default();
        mirror.handle(Event::Init, &inventory);
        mirror.handle(
            Event::InitApply(cluster("team-a", "prod", &["node7"])),
            &inventory,
        );
        mirror.handle(Event::InitApply(cluster("team-b", "dev", &[])), &inventory);
        assert!(mirror.handle(Event::InitDone, &inventory));
        {
            let inventory = inventory.read();
            assert_eq!(
                inventory.owner_of("node7"),
                Some(&ClusterKey::new("team-a", "prod"))
            );
            assert_eq!(inventory.reserved().get("cpu"), 4_000);
        }
        mirror.handle(
            Event::Apply(cluster("team-a", "prod", &["node8"])),
            &inventory,
        );
        assert_eq!(inventory.read().owner_of("node7"), None);
        assert_eq!(
            inventory.read().owner_of("node8"),
            Some(&ClusterKey::new("team-a", "prod"))
        );
        mirror.handle(
            Event::Delete(cluster("team-a", "prod", &["node8"])),
            &inventory,
        );
        mirror.handle(Event::Init, &inventory);
        assert!(mirror.handle(Event::InitDone, &inventory));
        let inventory = inventory.read();
        assert_eq!(
            inventory.cluster_count(),
            0,
            "an empty re-list empties the cache"
        );
        assert_eq!(inventory.reserved().get("cpu"), 0);
    }
}
