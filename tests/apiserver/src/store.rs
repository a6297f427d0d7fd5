//! The object store: one ordered map per resource, a global resourceVersion counter and a
//! bounded ring of watch events that both live watches and `?watch&resourceVersion=N`
//! replays read from, so a replay and a live stream can never disagree on order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use super::registry::StorageKey;

/// `ADDED`, `MODIFIED` or `DELETED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change, as stored in the history ring.
#[derive(Debug)]
pub struct StoredEvent {
    pub rv: u64,
    pub event_type: EventType,
    pub key: StorageKey,
    pub namespace: String,
    /// The object after the change (for DELETED: the last state, at the deletion's rv).
    pub object: Arc<Value>,
    /// The object before the change, for selector watches (DELETED when it stops matching).
    pub previous: Option<Arc<Value>>,
}

/// Where an object lives: namespace ("" when cluster-scoped) and name.
pub type ObjectKey = (String, String);

/// What a commit expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Absent,
    /// Present with exactly this resourceVersion.
    Version(u64),
}

/// A commit that found something else than expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitError {
    /// The object exists although Absent was expected.
    Exists,
    /// The object is gone.
    Missing,
    /// The object has another resourceVersion.
    Stale,
}

#[derive(Debug, Default)]
pub struct StoreInner {
    rv: u64,
    buckets: HashMap<StorageKey, BTreeMap<ObjectKey, Arc<Value>>>,
    by_uid: HashMap<String, (StorageKey, ObjectKey)>,
    history: VecDeque<Arc<StoredEvent>>,
    history_capacity: usize,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
}

/// Shared store handle.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<StoreInner>,
    latest: tokio::sync::watch::Sender<u64>,
}

pub fn resource_version_of(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub fn uid_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/uid").and_then(Value::as_str)
}

fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".to_string(), Value::String(rv.to_string()));
    }
}

impl Store {
    pub fn new(history_capacity: usize) -> Self {
        let (latest, _) = tokio::sync::watch::channel(1);
        let inner = StoreInner {
            rv: 1,
            history_capacity: history_capacity.max(16),
            ..StoreInner::default()
        };
        Self {
            inner: Mutex::new(inner),
            latest,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, StoreInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes up when a new event was committed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Applies a commit and wakes watchers.
    pub fn commit(
        &self,
        key: &StorageKey,
        object_key: &ObjectKey,
        expect: Expect,
        new: Option<Value>,
    ) -> Result<Option<Arc<Value>>, CommitError> {
        let (result, rv) = {
            let mut inner = self.lock();
            let result = inner.commit(key, object_key, expect, new);
            (result, inner.rv)
        };
        self.latest.send_replace(rv);
        result
    }

    /// Forgets history up to now: older watches get 410 Gone (tests of re-listing).
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.compacted = inner.rv;
        inner.history.clear();
    }
}

impl StoreInner {
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    pub fn compacted_rv(&self) -> u64 {
        self.compacted
    }

    pub fn get(&self, key: &StorageKey, object_key: &ObjectKey) -> Option<Arc<Value>> {
        self.buckets.get(key)?.get(object_key).cloned()
    }

    pub fn contains_uid(&self, uid: &str) -> bool {
        self.by_uid.contains_key(uid)
    }

    /// Objects of a resource in key order, optionally in one namespace, starting after
    /// `after` (exclusive), for paging.
    pub fn range<'a>(
        &'a self,
        key: &StorageKey,
        namespace: Option<&'a str>,
        after: Option<&'a ObjectKey>,
    ) -> Box<dyn Iterator<Item = (&'a ObjectKey, &'a Arc<Value>)> + 'a> {
        let Some(bucket) = self.buckets.get(key) else {
            return Box::new(std::iter::empty());
        };
        let start = match (after, namespace) {
            (Some(after), _) => std::ops::Bound::Excluded(after.clone()),
            (None, Some(ns)) => std::ops::Bound::Included((ns.to_string(), String::new())),
            (None, None) => std::ops::Bound::Unbounded,
        };
        let iter = bucket.range((start, std::ops::Bound::Unbounded));
        match namespace {
            Some(ns) => Box::new(iter.take_while(move |((n, _), _)| n == ns)),
            None => Box::new(iter),
        }
    }

    /// Every bucket, for the garbage collector and the namespace controller.
    pub fn buckets(&self) -> impl Iterator<Item = (&StorageKey, &BTreeMap<ObjectKey, Arc<Value>>)> {
        self.buckets.iter()
    }

    /// Events newer than `rv`, or None if `rv` is older than the retained history.
    pub fn events_since(&self, rv: u64) -> Option<Vec<Arc<StoredEvent>>> {
        if rv < self.compacted {
            return None;
        }
        let start = self.history.partition_point(|e| e.rv <= rv);
        Some(self.history.range(start..).cloned().collect())
    }

    fn commit(
        &mut self,
        key: &StorageKey,
        object_key: &ObjectKey,
        expect: Expect,
        new: Option<Value>,
    ) -> Result<Option<Arc<Value>>, CommitError> {
        let current = self.get(key, object_key);
        match (expect, &current) {
            (Expect::Absent, Some(_)) => return Err(CommitError::Exists),
            (Expect::Version(_), None) => return Err(CommitError::Missing),
            (Expect::Version(v), Some(cur)) if resource_version_of(cur) != v => {
                return Err(CommitError::Stale);
            }
            _ => {}
        }
        self.rv += 1;
        let rv = self.rv;
        let (event_type, object) = match new {
            Some(mut obj) => {
                set_rv(&mut obj, rv);
                let obj = Arc::new(obj);
                if let Some(uid) = uid_of(&obj) {
                    self.by_uid
                        .insert(uid.to_string(), (key.clone(), object_key.clone()));
                }
                self.buckets
                    .entry(key.clone())
                    .or_default()
                    .insert(object_key.clone(), obj.clone());
                (
                    if current.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    },
                    obj,
                )
            }
            None => {
                let Some(cur) = current.clone() else {
                    return Err(CommitError::Missing);
                };
                if let Some(bucket) = self.buckets.get_mut(key) {
                    bucket.remove(object_key);
                }
                if let Some(uid) = uid_of(&cur) {
                    self.by_uid.remove(uid);
                }
                let mut last = (*cur).clone();
                set_rv(&mut last, rv);
                (EventType::Deleted, Arc::new(last))
            }
        };
        let event = StoredEvent {
            rv,
            event_type,
            key: key.clone(),
            namespace: object_key.0.clone(),
            object: object.clone(),
            previous: current,
        };
        if self.history.len() >= self.history_capacity
            && let Some(evicted) = self.history.pop_front()
        {
            self.compacted = evicted.rv;
        }
        self.history.push_back(Arc::new(event));
        Ok((event_type != EventType::Deleted).then_some(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> StorageKey {
        StorageKey {
            group: String::new(),
            plural: "configmaps".into(),
        }
    }

    fn ok(ns: &str, name: &str) -> ObjectKey {
        (ns.to_string(), name.to_string())
    }

    #[test]
    fn commits_bump_a_global_resource_version_and_check_expectations() {
        let store = Store::new(100);
        let a = json!({"metadata": {"name": "a", "uid": "u1"}});
        let stored = store
            .commit(&key(), &ok("ns", "a"), Expect::Absent, Some(a.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(resource_version_of(&stored), 2);
        assert_eq!(
            store.commit(&key(), &ok("ns", "a"), Expect::Absent, Some(a.clone())),
            Err(CommitError::Exists)
        );
        assert_eq!(
            store.commit(&key(), &ok("ns", "a"), Expect::Version(1), Some(a.clone())),
            Err(CommitError::Stale)
        );
        let updated = store
            .commit(&key(), &ok("ns", "a"), Expect::Version(2), Some(a))
            .unwrap()
            .unwrap();
        assert_eq!(resource_version_of(&updated), 3);
        assert!(
            store
                .commit(&key(), &ok("ns", "a"), Expect::Version(3), None)
                .unwrap()
                .is_none()
        );
        let inner = store.lock();
        let events = inner.events_since(0).unwrap();
        let kinds: Vec<_> = events.iter().map(|e| (e.event_type, e.rv)).collect();
        assert_eq!(
            kinds,
            vec![
                (EventType::Added, 2),
                (EventType::Modified, 3),
                (EventType::Deleted, 4)
            ]
        );
        assert_eq!(resource_version_of(&events[2].object), 4);
        assert!(!inner.contains_uid("u1"));
    }

    #[test]
    fn history_ring_is_bounded_and_reports_compaction() {
        let store = Store::new(16);
        for i in 0..40 {
            store
                .commit(
                    &key(),
                    &ok("ns", &format!("o{i}")),
                    Expect::Absent,
                    Some(json!({"metadata": {}})),
                )
                .unwrap();
        }
        let inner = store.lock();
        assert!(inner.events_since(1).is_none());
        let recent = inner.events_since(inner.current_rv() - 3).unwrap();
        assert_eq!(recent.len(), 3);
    }

    #[test]
    fn range_pages_within_a_namespace() {
        let store = Store::new(100);
        for (ns, n) in [("a", "x"), ("b", "y"), ("b", "z"), ("c", "w")] {
            store
                .commit(
                    &key(),
                    &ok(ns, n),
                    Expect::Absent,
                    Some(json!({"metadata": {}})),
                )
                .unwrap();
        }
        let inner = store.lock();
        let names: Vec<_> = inner
            .range(&key(), Some("b"), None)
            .map(|(k, _)| k.1.clone())
            .collect();
        assert_eq!(names, vec!["y", "z"]);
        let after = ok("b", "y");
        let names: Vec<_> = inner
            .range(&key(), Some("b"), Some(&after))
            .map(|(k, _)| k.1.clone())
            .collect();
        assert_eq!(names, vec!["z"]);
        assert_eq!(inner.range(&key(), None, None).count(), 4);
    }
}
