//! Watch-fed copies of what the loop reads, so a pass reads memory instead of listing
//! every object again. Each cache is a kube-runtime reflector whose stream runs in its
//! own task until the [`Reflector`] is dropped; managed fields are stripped before they
//! are stored, as nothing here reads them.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::{Stream, StreamExt as _};
use kube::Resource;
use kube::runtime::reflector::{self, Lookup, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::Notify;

/// A reflector's store and the task feeding it; dropping it stops the watch.
pub(super) struct Reflector<K: Lookup + Clone + 'static>
where
    <K as Lookup>::DynamicType: Eq + Hash + Clone,
{
    pub store: Store<K>,
    task: tokio::task::JoinHandle<()>,
}

impl<K: Lookup + Clone + 'static> Drop for Reflector<K>
where
    <K as Lookup>::DynamicType: Eq + Hash + Clone,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a reflector over `stream` (a watcher of `what`), waking `wake` on every change
/// it stores. A failed watch is retried with backoff and logged; the store keeps its
/// last contents meanwhile.
pub(super) fn spawn<K, S>(what: &'static str, stream: S, wake: Option<Arc<Notify>>) -> Reflector<K>
where
    K: Resource + Lookup + Clone + Debug + Send + Sync + 'static,
    <K as Resource>::DynamicType: Eq + Hash + Clone + Default + Send + Sync,
    <K as Lookup>::DynamicType: Eq + Hash + Clone + Default + Send + Sync,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let (store, writer) = reflector::store();
    let task = tokio::spawn(async move {
        let events = stream
            .default_backoff()
            .modify(|object: &mut K| object.meta_mut().managed_fields = None)
            .reflect(writer);
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => {
                    if let Some(wake) = &wake {
                        wake.notify_one();
                    }
                }
                Err(error) => tracing::warn!(%error, what, "watch failed; retrying"),
            }
        }
    });
    Reflector { store, task }
}
