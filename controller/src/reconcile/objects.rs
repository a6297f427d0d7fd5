//! Reading host objects from the watch caches and applying them only when they differ
//! and are ours.

use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};

pub(super) use crate::apply::cached;
use crate::apply::{Applied, ApplyError, apply_if_changed, judge};
use crate::context::Context;
use crate::ownership::Owner;
use crate::slim::CacheForm;

/// A host object the controller applies: what [`apply_if_changed`] needs of it.
pub(super) trait HostObject:
    CacheForm + std::fmt::Debug + serde::de::DeserializeOwned
{
}

impl<K> HostObject for K where K: CacheForm + std::fmt::Debug + serde::de::DeserializeOwned {}

/// Why a host object the tenant needs was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The apiserver refused the read or the apply.
    #[error("failed to apply {kind} {name:?}")]
    Apply {
        /// Kind of the object.
        kind: &'static str,
        /// `NAMESPACE/NAME` of a namespaced object, the name of a cluster-scoped one.
        name: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },

    /// An object the tenant needs exists under its name but is not this VirtualCluster's;
    /// it is neither adopted nor applied over, and the tenant waits until it is gone.
    #[error(
        "{kind} {name:?} already exists and belongs to {holder}, not to this VirtualCluster; kosmos-vc never takes over an object it did not create, so the tenant waits: remove or rename that {kind}, or recreate this VirtualCluster under another name"
    )]
    NotOurs {
        /// Kind of the object.
        kind: &'static str,
        /// `NAMESPACE/NAME` of a namespaced object, the name of a cluster-scoped one.
        name: String,
        /// Who holds it.
        holder: String,
    },
}

impl ObjectError {
    /// Whether the object is someone else's.
    pub fn is_not_ours(&self) -> bool {
        matches!(self, ObjectError::NotOurs { .. })
    }

    fn from_apply(error: ApplyError, kind: &'static str, name: String) -> Self {
        match error {
            ApplyError::NotOurs { holder } => ObjectError::NotOurs { kind, name, holder },
            ApplyError::Api(source) => ObjectError::Apply { kind, name, source },
        }
    }

    /// The refusal of `object`, held by `holder`.
    pub(super) fn not_ours<K: Resource>(object: &K, kind: &'static str, holder: String) -> Self {
        let name = match object.meta().namespace.as_deref() {
            Some(namespace) => format!("{namespace}/{}", object.name_any()),
            None => object.name_any(),
        };
        ObjectError::NotOurs { kind, name, holder }
    }
}

/// Where a host object is applied, by its scope.
pub(super) trait ObjectScope: Sized {
    /// The Api `object` is applied through, and its name as errors print it.
    fn api<K: HostObject<Scope = Self>>(client: kube::Client, object: &K) -> (Api<K>, String);
}

impl ObjectScope for k8s_openapi::NamespaceResourceScope {
    fn api<K: HostObject<Scope = Self>>(client: kube::Client, object: &K) -> (Api<K>, String) {
        let namespace = object.namespace().unwrap_or_default();
        let name = format!("{namespace}/{}", object.name_any());
        (Api::namespaced(client, &namespace), name)
    }
}

impl ObjectScope for k8s_openapi::ClusterResourceScope {
    fn api<K: HostObject<Scope = Self>>(client: kube::Client, object: &K) -> (Api<K>, String) {
        (Api::all(client), object.name_any())
    }
}

/// Applies a host object owned by the tenant, comparing with the cache first.
pub(super) async fn apply_object<K>(
    ctx: &Context,
    owner: &Owner<'_>,
    store: &Store<K>,
    desired: &K,
    kind: &'static str,
) -> Result<Applied<K>, ObjectError>
where
    K: HostObject,
    K::Scope: ObjectScope,
{
    let (api, name) = <K::Scope as ObjectScope>::api(ctx.client.clone(), desired);
    apply_if_changed(&api, store, &ctx.applied_digests, desired, owner)
        .await
        .map_err(|error| ObjectError::from_apply(error, kind, name))
}

/// Whether `existing`, the cached copy of a host object owned by the tenant, already
/// holds `desired`; an object the cache cannot vouch for is read in full.
pub(super) async fn in_place<K>(
    ctx: &Context,
    owner: &Owner<'_>,
    desired: &K,
    existing: Option<&K>,
    kind: &'static str,
) -> Result<bool, ObjectError>
where
    K: HostObject,
    K::Scope: ObjectScope,
{
    let (api, name) = <K::Scope as ObjectScope>::api(ctx.client.clone(), desired);
    let current = existing.cloned();
    judge(&api, &ctx.applied_digests, desired, owner, current)
        .await
        .map(|(in_place, _)| in_place)
        .map_err(|error| ObjectError::from_apply(error, kind, name))
}

/// Runs `requests` at once and returns their results in order, or the first error once
/// every request is answered: ending at the first error would cut the others' writes off
/// in flight, and one a later request waits for would fail the same way on every retry.
pub(super) async fn all_answered<T, E>(
    requests: impl IntoIterator<Item = impl std::future::Future<Output = Result<T, E>>>,
) -> Result<Vec<T>, E> {
    futures::future::join_all(requests)
        .await
        .into_iter()
        .collect()
}
