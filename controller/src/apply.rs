//! Server-side apply that writes only what differs.
//!
//! Before applying, the desired object is compared with the stored one: if every field
//! the controller sets already holds the desired value, nothing is sent. Server-side
//! apply of an unchanged object would be a no-op for the apiserver too, but it still is a
//! write request; skipping it is what makes a settled tenant's reconcile write nothing.

use std::fmt::Debug;
use std::sync::Arc;

use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use vc_api::constants::CONTROLLER_FIELD_MANAGER;

use crate::error::is_not_found;
use crate::ownership::{self, Holder, Owner};
use crate::slim::{AppliedDigests, CacheForm, Verdict};

/// Whether `actual` already holds every value of `desired`.
///
/// Objects compare field by field, so fields the apiserver adds (defaults, status,
/// metadata it owns) do not count as differences; lists compare element by element and
/// must have the same length. An empty list, empty map or null in `desired` matches a
/// missing field, since the apiserver drops those.
pub fn json_subset(desired: &Value, actual: &Value) -> bool {
    match (desired, actual) {
        (Value::Object(want), Value::Object(have)) => {
            want.iter().all(|(key, value)| match have.get(key) {
                Some(existing) => json_subset(value, existing),
                None => is_empty(value),
            })
        }
        (Value::Object(_) | Value::Array(_), Value::Null) => is_empty(desired),
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len()
                && want
                    .iter()
                    .zip(have)
                    .all(|(value, existing)| json_subset(value, existing))
        }
        (Value::Number(want), Value::Number(have)) => {
            want == have
                || want
                    .as_f64()
                    .is_some_and(|want| Some(want) == have.as_f64())
        }
        _ => desired == actual,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.values().all(is_empty),
        _ => false,
    }
}

/// Whether `existing` already carries everything in `desired`.
pub fn up_to_date<K: Serialize>(desired: &K, existing: Option<&K>) -> bool {
    let Some(existing) = existing else {
        return false;
    };
    match (
        serde_json::to_value(desired),
        serde_json::to_value(existing),
    ) {
        (Ok(desired), Ok(existing)) => json_subset(&strip_volatile(desired), &existing),
        _ => false,
    }
}

/// Drops what the builders never set but serde may emit (none today), keeping the
/// comparison about content only.
fn strip_volatile(mut value: Value) -> Value {
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resourceVersion");
        metadata.remove("managedFields");
    }
    value
}

/// Server-side apply parameters: our one field manager, forcing ownership of our fields.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(CONTROLLER_FIELD_MANAGER).force()
}

/// The result of [`apply_if_changed`].
#[derive(Debug)]
pub struct Applied<K> {
    /// Whether a write request was sent.
    pub written: bool,
    /// The object as the apiserver now holds it (the apply response, or the copy it was
    /// judged by: for a kind cached without its bulk, possibly that cached copy).
    pub object: Option<K>,
}

/// Why [`apply_if_changed`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The object exists and belongs to someone else; a forced apply would take it over.
    #[error("it already exists and belongs to {holder}")]
    NotOurs {
        /// Who holds it, for a human.
        holder: String,
    },
    /// The apiserver refused the read or the apply.
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// The cached copy of `name` (in `namespace`, for a namespaced kind) in `store`, a
/// watch-fed cache of the objects labelled as kosmos-vc's.
pub fn cached<K>(store: &Store<K>, namespace: Option<&str>, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let mut reference = ObjectRef::<K>::new(name);
    if let Some(namespace) = namespace {
        reference = reference.within(namespace);
    }
    store.get(&reference)
}

/// Whether `current` (`desired`'s object as the cache holds it, if it does) already
/// holds what the controller wants, and the copy that told. An object the cache cannot
/// vouch for is read in full; an object that is not `owner`'s is refused.
pub async fn judge<K>(
    api: &Api<K>,
    applied: &AppliedDigests,
    desired: &K,
    owner: &Owner<'_>,
    current: Option<K>,
) -> Result<(bool, Option<K>), ApplyError>
where
    K: CacheForm + Debug + DeserializeOwned,
{
    let Some(current) = current else {
        return Ok((false, None));
    };
    refuse_foreign(&current, owner)?;
    match applied.judge(owner.uid, desired, &current) {
        Verdict::UpToDate => Ok((true, Some(current))),
        Verdict::Differs => Ok((false, Some(current))),
        Verdict::Unknown => {
            let Some(full) = read(api, &desired.name_any()).await? else {
                return Ok((false, None));
            };
            refuse_foreign(&full, owner)?;
            let in_place = applied.judge(owner.uid, desired, &full) == Verdict::UpToDate;
            Ok((in_place, Some(full)))
        }
    }
}

fn refuse_foreign<K: Resource>(object: &K, owner: &Owner<'_>) -> Result<(), ApplyError> {
    match ownership::holder(object.meta(), owner) {
        Holder::Other(holder) => Err(ApplyError::NotOurs { holder }),
        _ => Ok(()),
    }
}

/// The object named `name`, or `None` when there is none.
async fn read<K>(api: &Api<K>, name: &str) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    match api.get(name).await {
        Ok(object) => Ok(Some(object)),
        Err(error) if is_not_found(&error) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Applies `desired` through `api` unless the copy in `store` already matches, and only
/// when there is no existing copy or it is `owner`'s. A miss in `store` is read from the
/// apiserver, since an object someone else created without our labels is never cached.
///
/// Between reading "absent" and applying, a foreign object created in that instant would
/// still be taken over; the webhook's name rule keeps siblings from racing for a name, and
/// the next reconcile finds our labels on it, so this window is accepted.
pub async fn apply_if_changed<K>(
    api: &Api<K>,
    store: &Store<K>,
    applied: &AppliedDigests,
    desired: &K,
    owner: &Owner<'_>,
) -> Result<Applied<K>, ApplyError>
where
    K: CacheForm + Debug + DeserializeOwned,
{
    let name = desired.name_any();
    let current = match cached(store, desired.namespace().as_deref(), &name) {
        Some(object) => Some((*object).clone()),
        None => read(api, &name).await?,
    };
    let (in_place, current) = judge(api, applied, desired, owner, current).await?;
    if in_place {
        return Ok(Applied {
            written: false,
            object: current,
        });
    }
    let object = api
        .patch(&name, &apply_params(), &Patch::Apply(desired))
        .await?;
    applied.remember(owner.uid, desired, &object);
    Ok(Applied {
        written: true,
        object: Some(object),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_added_by_the_server_are_not_differences() {
        let desired = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "etcd", "image": "etcd:1"}]}}}});
        let actual = json!({"spec": {"replicas": 1, "revisionHistoryLimit": 10, "template": {"spec": {"containers": [{"name": "etcd", "image": "etcd:1", "imagePullPolicy": "IfNotPresent"}], "dnsPolicy": "ClusterFirst"}}}, "status": {"readyReplicas": 1}});
        assert!(json_subset(&desired, &actual));
    }

    #[test]
    fn a_changed_value_or_list_length_is_a_difference() {
        let actual = json!({"spec": {"args": ["--a", "--b"], "image": "v1"}});
        assert!(!json_subset(&json!({"spec": {"image": "v2"}}), &actual));
        assert!(!json_subset(&json!({"spec": {"args": ["--a"]}}), &actual));
        assert!(!json_subset(
            &json!({"spec": {"args": ["--a", "--c"]}}),
            &actual
        ));
        assert!(!json_subset(&json!({"spec": {"missing": "x"}}), &actual));
    }

    #[test]
    fn empty_desired_values_match_missing_fields() {
        let actual = json!({"metadata": {"name": "a"}});
        assert!(json_subset(
            &json!({"metadata": {"name": "a", "labels": {}, "finalizers": [], "x": null}}),
            &actual
        ));
        assert!(!json_subset(
            &json!({"metadata": {"labels": {"a": "b"}}}),
            &actual
        ));
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(json_subset(&json!({"a": 1}), &json!({"a": 1.0})));
        assert!(!json_subset(&json!({"a": 1}), &json!({"a": "1"})));
    }

    #[test]
    fn up_to_date_needs_an_existing_object() {
        let secret = k8s_openapi::api::core::v1::Secret::default();
        assert!(!up_to_date(&secret, None));
        assert!(up_to_date(&secret, Some(&secret)));
    }
}
