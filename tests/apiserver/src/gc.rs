//! What kube-controller-manager would do for the objects in this server: the garbage
//! collector (ownerReferences: background, foreground, orphan) and the namespace
//! controller (empty a terminating namespace, then let it go).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::registry::StorageKey;
use super::state::{DeleteOptions, State, WriteCtx, finalizers_of, meta_str};
use super::store::{Expect, resource_version_of};

/// A dependency-relevant view of one stored object.
#[derive(Debug, Clone)]
struct Node {
    key: StorageKey,
    namespace: String,
    name: String,
    uid: String,
    owners: Vec<String>,
    finalizers: Vec<String>,
    terminating: bool,
}

fn snapshot(state: &State) -> Vec<Node> {
    let inner = state.store.lock();
    let mut nodes = Vec::new();
    for (key, bucket) in inner.buckets() {
        for ((ns, name), obj) in bucket {
            let owners: Vec<String> = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .map(|refs| {
                    refs.iter()
                        .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let finalizers = finalizers_of(obj);
            let terminating = obj.pointer("/metadata/deletionTimestamp").is_some();
            let is_namespace = key.group.is_empty() && key.plural == "namespaces";
            if owners.is_empty() && !terminating && !is_namespace {
                continue;
            }
            nodes.push(Node {
                key: key.clone(),
                namespace: ns.clone(),
                name: name.clone(),
                uid: meta_str(obj, "uid").unwrap_or_default().to_string(),
                owners,
                finalizers,
                terminating,
            });
        }
    }
    nodes
}

/// Runs until `shutdown` fires, acting whenever a deletion or a dependent of an absent
/// owner happened (and every 5 s as a safety net).
///
/// A pass reads the whole store under its lock, which every request also takes; after
/// each round the collector rests nine times as long as the round took, so it never
/// holds the store more than a tenth of the time, however many objects it holds (a
/// small store rests microseconds; wakes during the rest are kept, not lost).
pub async fn run(state: Arc<State>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = state.gc_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => return,
        }
        let started = std::time::Instant::now();
        for _round in 0..100 {
            if !pass(&state).await {
                break;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(started.elapsed() * 9) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One pass; true if it changed something (another pass may find more to do).
async fn pass(state: &Arc<State>) -> bool {
    let nodes = snapshot(state);
    if nodes.is_empty() {
        return false;
    }
    let ctx = WriteCtx::internal("generic-garbage-collector");
    let mut progressed = false;
    let live = |uid: &str| state.store.lock().contains_uid(uid);
    let dependents_of = |uid: &str| -> Vec<&Node> {
        nodes
            .iter()
            .filter(|n| n.owners.iter().any(|o| o == uid))
            .collect()
    };

    for node in nodes.iter().filter(|n| n.terminating) {
        if node.finalizers.iter().any(|f| f == "orphan") {
            for dep in dependents_of(&node.uid) {
                progressed |= drop_owner_ref(state, &ctx, dep, &node.uid).await;
            }
            progressed |= remove_finalizer(state, &ctx, node, "orphan").await;
        } else if node.finalizers.iter().any(|f| f == "foregroundDeletion") {
            let deps = dependents_of(&node.uid);
            if deps.is_empty() {
                progressed |= remove_finalizer(state, &ctx, node, "foregroundDeletion").await;
            }
            for dep in deps.into_iter().filter(|d| !d.terminating) {
                progressed |= delete(state, &ctx, dep, "Foreground").await;
            }
        }
    }
    if progressed {
        // Owners changed: look again with a fresh snapshot before judging dependents.
        return true;
    }
    // Dependents whose owners are all gone.
    let mut handled: HashSet<&str> = HashSet::new();
    for node in nodes
        .iter()
        .filter(|n| !n.owners.is_empty() && !n.terminating)
    {
        if node.owners.iter().all(|o| !live(o)) && handled.insert(node.uid.as_str()) {
            progressed |= delete(state, &ctx, node, "Background").await;
        }
    }
    for ns in nodes
        .iter()
        .filter(|n| n.key.group.is_empty() && n.key.plural == "namespaces" && n.terminating)
    {
        progressed |= finalize_namespace(state, ns).await;
    }
    progressed
}

async fn delete(state: &Arc<State>, ctx: &WriteCtx, node: &Node, policy: &str) -> bool {
    let Some(rt) = state.registry().by_storage(&node.key) else {
        return false;
    };
    let opts = DeleteOptions::from_value(&json!({"propagationPolicy": policy}));
    state
        .delete(ctx, &rt, &node.namespace, &node.name, &opts)
        .await
        .is_ok()
}

async fn remove_finalizer(
    state: &Arc<State>,
    ctx: &WriteCtx,
    node: &Node,
    finalizer: &str,
) -> bool {
    let Some(rt) = state.registry().by_storage(&node.key) else {
        return false;
    };
    let result = state
        .update(
            ctx,
            &rt,
            &node.namespace,
            &node.name,
            "",
            |cur| {
                let mut next = cur.clone();
                if let Some(list) = next
                    .pointer_mut("/metadata/finalizers")
                    .and_then(Value::as_array_mut)
                {
                    list.retain(|f| f.as_str() != Some(finalizer));
                }
                if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("resourceVersion");
                }
                Ok(next)
            },
            true,
        )
        .await;
    result.is_ok()
}

async fn drop_owner_ref(state: &Arc<State>, ctx: &WriteCtx, node: &Node, owner_uid: &str) -> bool {
    let Some(rt) = state.registry().by_storage(&node.key) else {
        return false;
    };
    state
        .update(
            ctx,
            &rt,
            &node.namespace,
            &node.name,
            "",
            |cur| {
                let mut next = cur.clone();
                if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("resourceVersion");
                    if let Some(Value::Array(refs)) = meta.get_mut("ownerReferences") {
                        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
                        if refs.is_empty() {
                            meta.remove("ownerReferences");
                        }
                    }
                }
                Ok(next)
            },
            true,
        )
        .await
        .is_ok()
}

/// Deletes everything in a terminating namespace; once empty, drops the `kubernetes`
/// finalizer and, with no other finalizers, the namespace itself.
async fn finalize_namespace(state: &Arc<State>, ns: &Node) -> bool {
    let ctx = WriteCtx::internal("namespace-controller");
    let contents: Vec<Node> = {
        let inner = state.store.lock();
        inner
            .buckets()
            .flat_map(|(key, bucket)| {
                bucket
                    .range((ns.name.clone(), String::new())..)
                    .take_while(|((n, _), _)| *n == ns.name)
                    .map(|((n, name), obj)| Node {
                        key: key.clone(),
                        namespace: n.clone(),
                        name: name.clone(),
                        uid: meta_str(obj, "uid").unwrap_or_default().to_string(),
                        owners: Vec::new(),
                        finalizers: finalizers_of(obj),
                        terminating: obj.pointer("/metadata/deletionTimestamp").is_some(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    if !contents.is_empty() {
        let mut progressed = false;
        for item in contents.iter().filter(|c| !c.terminating) {
            progressed |= delete(state, &ctx, item, "Background").await;
        }
        return progressed;
    }
    let ns_key = StorageKey {
        group: String::new(),
        plural: "namespaces".into(),
    };
    let object_key = (String::new(), ns.name.clone());
    let Some(current) = state.store.lock().get(&ns_key, &object_key) else {
        return false;
    };
    let mut next = (*current).clone();
    if let Some(spec) = next.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("finalizers");
    }
    let expect = Expect::Version(resource_version_of(&current));
    let result = if finalizers_of(&next).is_empty() {
        state.store.commit(&ns_key, &object_key, expect, None)
    } else if next != *current {
        state.store.commit(&ns_key, &object_key, expect, Some(next))
    } else {
        return false;
    };
    result.is_ok()
}
