//! Keeps the DNS [`Snapshot`] current: watch caches of the tenant's Services and
//! EndpointSlices, and a new snapshot after every burst of changes. Queries read the
//! latest snapshot and never reach the apiserver.

use std::future::Future;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Resource};
use tokio::sync::watch;

use super::snapshot::Snapshot;

/// The latest snapshot; `None` until both kinds are listed once.
pub type Published = watch::Receiver<Option<Arc<Snapshot>>>;

/// What one watch event means for the snapshot.
enum Signal {
    /// A (re)listing of this kind is complete in its cache.
    Listed(Kind),
    /// An object was added, changed or deleted.
    Changed,
    /// An object of a listing in progress: it counts at the listing's end.
    Quiet,
    Failed(Kind, watcher::Error),
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Services,
    EndpointSlices,
}

impl Signal {
    fn of<K>(kind: Kind, event: Result<watcher::Event<K>, watcher::Error>) -> Self {
        match event {
            Ok(watcher::Event::InitDone) => Signal::Listed(kind),
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => Signal::Changed,
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => Signal::Quiet,
            Err(error) => Signal::Failed(kind, error),
        }
    }
}

/// Watches the tenant until `stop` completes, publishing each new snapshot on `publish`.
/// With `kubernetes`, `kubernetes.default.svc` answers it ([`Snapshot::pin_kubernetes`]).
pub async fn run(
    tenant: kube::Client,
    kubernetes: Option<std::net::IpAddr>,
    publish: watch::Sender<Option<Arc<Snapshot>>>,
    stop: impl Future<Output = ()>,
) {
    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    // Only what records are made of is kept: no managed fields or annotations (a
    // kubectl-applied object carries a copy of itself in one).
    let services_events = reflector::reflector(
        services_writer,
        watcher(
            Api::<Service>::all(tenant.clone()),
            watcher::Config::default(),
        )
        .modify(strip::<Service>),
    )
    .default_backoff()
    .map(|event| Signal::of(Kind::Services, event));
    let slices_events = reflector::reflector(
        slices_writer,
        watcher(
            Api::<EndpointSlice>::all(tenant),
            watcher::Config::default(),
        )
        .modify(strip::<EndpointSlice>),
    )
    .default_backoff()
    .map(|event| Signal::of(Kind::EndpointSlices, event));
    let mut changes = std::pin::pin!(futures::stream::select(services_events, slices_events));
    let (mut services_listed, mut slices_listed) = (false, false);
    let mut serial: u32 = 0;
    let mut stop = std::pin::pin!(stop);
    loop {
        let first = tokio::select! {
            () = &mut stop => return,
            change = changes.next() => change,
        };
        let Some(first) = first else { return };
        let mut changed = false;
        // A burst of events (a relist, a rollout) makes one snapshot.
        let mut next = Some(first);
        while let Some(change) = next {
            match change {
                Signal::Listed(Kind::Services) => {
                    services_listed = true;
                    changed = true;
                }
                Signal::Listed(Kind::EndpointSlices) => {
                    slices_listed = true;
                    changed = true;
                }
                Signal::Changed => changed = true,
                Signal::Quiet => {}
                Signal::Failed(kind, error) => {
                    tracing::warn!(%error, ?kind, "watching the tenant for DNS");
                }
            }
            next = changes.next().now_or_never().flatten();
        }
        if changed && services_listed && slices_listed {
            serial = serial.wrapping_add(1);
            let services = services.state();
            let slices = slices.state();
            let mut snapshot = Snapshot::build(
                services.iter().map(AsRef::as_ref),
                slices.iter().map(AsRef::as_ref),
                serial,
            );
            if let Some(apiserver) = kubernetes {
                snapshot.pin_kubernetes(apiserver);
            }
            tracing::debug!(
                services = snapshot.services.len(),
                serial,
                "DNS records rebuilt"
            );
            publish.send_replace(Some(Arc::new(snapshot)));
        }
    }
}

fn strip<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    meta.annotations = None;
}
