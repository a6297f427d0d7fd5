//! Reading host objects from the watch caches and applying them only when they differ
//! and are ours.

use std::sync::Arc;

use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};

use super::events::Changes;
use crate::apply::{Applied, ApplyError, Existing, apply_if_changed};
use crate::context::Context;
use crate::error::{Error, Result, Step};
use crate::ownership::Owner;

/// A host object the controller applies: what [`apply_if_changed`] needs of it.
pub(super) trait HostObject:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
{
}

impl<K> HostObject for K where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned
{
}

/// The cached copy of `name` (in `namespace`, for a namespaced kind).
pub(super) fn cached<K>(store: &Store<K>, namespace: Option<&str>, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let mut reference = ObjectRef::<K>::new(name);
    if let Some(namespace) = namespace {
        reference = reference.within(namespace);
    }
    store.get(&reference)
}

/// Which object of which step is applied: what an error about it names.
#[derive(Clone, Copy, Debug)]
pub(super) struct Target {
    pub(super) step: Step,
    pub(super) kind: &'static str,
}

/// Applies a namespaced host object owned by the tenant, comparing with the cache first.
pub(super) async fn apply_namespaced<K>(
    ctx: &Context,
    owner: &Owner<'_>,
    store: &Store<K>,
    desired: &K,
    target: Target,
) -> Result<Applied<K>>
where
    K: HostObject<Scope = k8s_openapi::NamespaceResourceScope>,
{
    let namespace = desired.namespace().unwrap_or_default();
    let api = Api::namespaced(ctx.client.clone(), &namespace);
    let name = format!("{namespace}/{}", desired.name_any());
    apply(&api, owner, store, desired, target, name).await
}

/// Applies a cluster-scoped host object, comparing with the cache first.
pub(super) async fn apply_cluster_scoped<K>(
    ctx: &Context,
    owner: &Owner<'_>,
    store: &Store<K>,
    desired: &K,
    target: Target,
) -> Result<Applied<K>>
where
    K: HostObject<Scope = k8s_openapi::ClusterResourceScope>,
{
    let api = Api::all(ctx.client.clone());
    apply(&api, owner, store, desired, target, desired.name_any()).await
}

async fn apply<K: HostObject>(
    api: &Api<K>,
    owner: &Owner<'_>,
    store: &Store<K>,
    desired: &K,
    Target { step, kind }: Target,
    name: String,
) -> Result<Applied<K>> {
    apply_if_changed(api, Existing::Cached(store), desired, owner)
        .await
        .map_err(|error| match error {
            ApplyError::NotOurs { holder } => Error::ForeignObject {
                step,
                kind,
                name,
                holder,
            },
            ApplyError::Api(source) => Error::ApplyObject {
                step,
                kind,
                name,
                source,
            },
        })
}

/// Records `what` as applied when `applied` sent a write.
pub(super) fn note_written<K>(
    applied: &Applied<K>,
    changes: &mut Changes,
    reason: &'static str,
    step: Step,
    what: String,
) {
    if applied.written {
        changes.record(reason, step, format!("applied {what}"));
    }
}
