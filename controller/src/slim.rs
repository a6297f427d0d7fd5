//! Workloads, Secrets, NetworkPolicies and roles are cached without their bulk.
//!
//! A pod template is most of a Deployment's or a StatefulSet's size, certificates, keys
//! and kubeconfigs are a Secret's, rules are a NetworkPolicy's or a role's; the watch
//! caches hold five workloads, sixteen Secrets, six NetworkPolicies and two roles per
//! tenant: at 1,000 tenants, ~140 MiB of the controller's memory. The cache
//! keeps a digest of that bulk instead, in an annotation only the cached copy carries,
//! and [`AppliedDigests`] remembers, for each object the controller applied or found in
//! place, the digest of the bulk it wanted and of the bulk the apiserver held then (the
//! wanted one plus defaults).
//!
//! A cached object whose digest is the remembered one holds the remembered wanted bulk.
//! Any other (someone edited it, or the controller restarted and remembers nothing) is
//! judged [`Verdict::Unknown`] and read in full once, then compared field by field as
//! every other kind is.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    Namespace, Node, PodTemplateSpec, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::apply::up_to_date;

/// The annotation of a cached object naming its bulk's digest. It exists only in the
/// controller's memory: no cached object is ever sent back to the apiserver.
pub const CACHED_DIGEST_ANNOTATION: &str = "vc.kosmos.io/cached-sha256";

/// A kind the controller watches, as its cache holds it.
pub trait CacheForm: Resource<DynamicType = ()> + Serialize + Clone {
    /// The digest of the part the cache keeps only a digest of; `None` for the kinds
    /// cached whole.
    fn bulk_digest(&self) -> Option<String> {
        None
    }

    /// Takes that part out.
    fn drop_bulk(&mut self) {}
}

macro_rules! cached_whole {
    ($($kind:ty),* $(,)?) => {
        $(impl CacheForm for $kind {})*
    };
}

cached_whole!(
    Node,
    Namespace,
    Service,
    ServiceAccount,
    ResourceQuota,
    RoleBinding,
    ClusterRoleBinding,
);

/// Workloads keep their spec but for the pod template.
macro_rules! cached_without_pod_template {
    ($($kind:ty),* $(,)?) => {
        $(impl CacheForm for $kind {
            fn bulk_digest(&self) -> Option<String> {
                self.spec.as_ref().map(|spec| digest(&spec.template))
            }

            fn drop_bulk(&mut self) {
                if let Some(spec) = self.spec.as_mut() {
                    spec.template = PodTemplateSpec::default();
                }
            }
        })*
    };
}

cached_without_pod_template!(Deployment, StatefulSet);

impl CacheForm for NetworkPolicy {
    fn bulk_digest(&self) -> Option<String> {
        Some(digest(&self.spec))
    }

    fn drop_bulk(&mut self) {
        self.spec = None;
    }
}

impl CacheForm for Role {
    fn bulk_digest(&self) -> Option<String> {
        Some(digest(&self.rules))
    }

    fn drop_bulk(&mut self) {
        self.rules = None;
    }
}

impl CacheForm for ClusterRole {
    /// The rules and, for an aggregated role, the selectors that fill them.
    fn bulk_digest(&self) -> Option<String> {
        Some(digest(&(&self.rules, &self.aggregation_rule)))
    }

    fn drop_bulk(&mut self) {
        self.rules = None;
        self.aggregation_rule = None;
    }
}

impl CacheForm for Secret {
    /// No data and empty data are one: the apiserver drops an empty map.
    fn bulk_digest(&self) -> Option<String> {
        let empty = BTreeMap::<String, ByteString>::new();
        Some(digest(self.data.as_ref().unwrap_or(&empty)))
    }

    fn drop_bulk(&mut self) {
        self.data = None;
    }
}

/// Replaces the bulk of a watched object with its digest, before it is cached.
pub fn slim<K: CacheForm>(object: &mut K) {
    let Some(digest) = object.bulk_digest() else {
        return;
    };
    object.drop_bulk();
    object
        .annotations_mut()
        .insert(CACHED_DIGEST_ANNOTATION.to_owned(), digest);
}

/// The SHA-256 of `part`'s JSON. What the apiserver returned serializes the same from a
/// watch event, a read and a write's answer: struct fields are in a fixed order and maps
/// are sorted.
fn digest(part: &impl Serialize) -> String {
    match serde_json::to_vec(part) {
        Ok(json) => hex::encode(Sha256::digest(json)),
        // Unreachable for structs of strings, numbers and maps; an empty digest matches
        // no cached copy, so the object is read in full.
        Err(_) => String::new(),
    }
}

/// Whether a cached object holds what the controller wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every field the controller sets holds the wanted value.
    UpToDate,
    /// Some field differs: the object is applied.
    Differs,
    /// The cache lacks the template and nothing remembered vouches for it: the object
    /// must be read in full to tell.
    Unknown,
}

/// The bulk digests of one applied object.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Remembered {
    /// The bulk the controller wanted.
    wanted: String,
    /// The bulk the apiserver held when it matched (the wanted one plus defaults).
    held: String,
}

/// What the controller last applied or found in place of each object cached without
/// its bulk, by the VirtualCluster owning it, so a deleted tenant's entries go with it.
#[derive(Debug, Default)]
pub struct AppliedDigests(Mutex<HashMap<String, HashMap<String, Remembered>>>);

impl AppliedDigests {
    /// Judges `existing` (a cached copy, or one read in full) against `desired`.
    /// A full copy that matches is remembered, so its cached copies are judged without a
    /// read until its template changes.
    pub fn judge<K: CacheForm>(&self, owner_uid: &str, desired: &K, existing: &K) -> Verdict {
        let Some(held) = existing.annotations().get(CACHED_DIGEST_ANNOTATION) else {
            if !up_to_date(desired, Some(existing)) {
                return Verdict::Differs;
            }
            self.remember(owner_uid, desired, existing);
            return Verdict::UpToDate;
        };
        let mut rest = desired.clone();
        let wanted = rest.bulk_digest();
        rest.drop_bulk();
        if !up_to_date(&rest, Some(existing)) {
            return Verdict::Differs;
        }
        let Some(wanted) = wanted else {
            return Verdict::UpToDate;
        };
        match self.remembered(owner_uid, desired) {
            Some(remembered) if remembered.held == *held && remembered.wanted == wanted => {
                Verdict::UpToDate
            }
            // The cached copy holds what the controller last applied, and it wants
            // something else now.
            Some(remembered) if remembered.held == *held => Verdict::Differs,
            _ => Verdict::Unknown,
        }
    }

    /// Remembers that the apiserver held `held` when the controller wanted `desired`.
    pub fn remember<K: CacheForm>(&self, owner_uid: &str, desired: &K, held: &K) {
        let (Some(wanted), Some(held)) = (desired.bulk_digest(), held.bulk_digest()) else {
            return;
        };
        if let Ok(mut owners) = self.0.lock() {
            owners
                .entry(owner_uid.to_owned())
                .or_default()
                .insert(key(desired), Remembered { wanted, held });
        }
    }

    /// Forgets the objects of a deleted VirtualCluster.
    pub fn forget_owner(&self, owner_uid: &str) {
        if let Ok(mut owners) = self.0.lock() {
            owners.remove(owner_uid);
        }
    }

    fn remembered<K: CacheForm>(&self, owner_uid: &str, desired: &K) -> Option<Remembered> {
        let owners = self.0.lock().ok()?;
        owners.get(owner_uid)?.get(&key(desired)).cloned()
    }
}

/// `KIND/NAMESPACE/NAME` of an object.
fn key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        object.meta().namespace.as_deref().unwrap_or_default(),
        object.meta().name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use kube::api::ObjectMeta;

    const OWNER: &str = "owner-uid";

    fn deployment(image: &str, replicas: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("tenant-apiserver".to_owned()),
                namespace: Some("team-a".to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "kube-apiserver".to_owned(),
                            image: Some(image.to_owned()),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                    ..PodTemplateSpec::default()
                },
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }
    }

    /// `desired` as the apiserver holds it: with a default the builder never sets.
    fn held(desired: &Deployment) -> Deployment {
        let mut held = desired.clone();
        if let Some(spec) = held
            .spec
            .as_mut()
            .and_then(|spec| spec.template.spec.as_mut())
        {
            spec.dns_policy = Some("ClusterFirst".to_owned());
        }
        held
    }

    /// Digests remembering that `desired` was applied and held with the server's defaults.
    fn remembering(desired: &Deployment) -> AppliedDigests {
        let applied = AppliedDigests::default();
        applied.remember(OWNER, desired, &held(desired));
        applied
    }

    fn cached(object: &Deployment) -> Deployment {
        let mut cached = object.clone();
        slim(&mut cached);
        cached
    }

    #[test]
    fn the_cache_keeps_a_digest_instead_of_the_template() {
        let cached = cached(&held(&deployment("kube-apiserver:v1", 1)));
        assert_eq!(
            cached.spec.as_ref().map(|spec| &spec.template),
            Some(&PodTemplateSpec::default())
        );
        assert_eq!(
            cached.annotations()[CACHED_DIGEST_ANNOTATION].len(),
            64,
            "{cached:?}"
        );
    }

    #[test]
    fn a_workload_nothing_vouches_for_is_read_in_full_and_then_remembered() {
        let applied = AppliedDigests::default();
        let desired = deployment("kube-apiserver:v1", 1);
        let held = held(&desired);
        assert_eq!(
            applied.judge(OWNER, &desired, &cached(&held)),
            Verdict::Unknown
        );
        assert_eq!(applied.judge(OWNER, &desired, &held), Verdict::UpToDate);
        assert_eq!(
            applied.judge(OWNER, &desired, &cached(&held)),
            Verdict::UpToDate
        );
    }

    #[test]
    fn a_new_wanted_template_differs_from_the_remembered_one() {
        let first = deployment("kube-apiserver:v1", 1);
        let applied = remembering(&first);
        let bumped = deployment("kube-apiserver:v2", 1);
        assert_eq!(
            applied.judge(OWNER, &bumped, &cached(&held(&first))),
            Verdict::Differs
        );
    }

    #[test]
    fn a_template_edited_by_someone_else_is_read_in_full() {
        let desired = deployment("kube-apiserver:v1", 1);
        let applied = remembering(&desired);
        let edited = held(&deployment("evil:latest", 1));
        assert_eq!(
            applied.judge(OWNER, &desired, &cached(&edited)),
            Verdict::Unknown
        );
        assert_eq!(applied.judge(OWNER, &desired, &edited), Verdict::Differs);
    }

    #[test]
    fn fields_outside_the_template_are_compared_in_the_cache() {
        let desired = deployment("kube-apiserver:v1", 1);
        let applied = remembering(&desired);
        let scaled = held(&deployment("kube-apiserver:v1", 3));
        assert_eq!(
            applied.judge(OWNER, &desired, &cached(&scaled)),
            Verdict::Differs
        );
    }

    #[test]
    fn a_deleted_owner_is_forgotten() {
        let desired = deployment("kube-apiserver:v1", 1);
        let applied = remembering(&desired);
        applied.forget_owner(OWNER);
        assert_eq!(
            applied.judge(OWNER, &desired, &cached(&held(&desired))),
            Verdict::Unknown
        );
    }

    #[test]
    fn kinds_cached_whole_are_compared_whole() {
        let applied = AppliedDigests::default();
        let mut service = Service::default();
        service.metadata.name = Some("apiserver".to_owned());
        let mut cached = service.clone();
        slim(&mut cached);
        assert_eq!(cached, service);
        assert_eq!(applied.judge(OWNER, &service, &cached), Verdict::UpToDate);
    }

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("tenant-ca".to_owned()),
                namespace: Some("team-a".to_owned()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(key, value)| ((*key).to_owned(), ByteString(value.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn secrets_are_cached_without_their_data_and_judged_by_its_digest() {
        let applied = AppliedDigests::default();
        let stored = secret(&[("tls.crt", "certificate"), ("tls.key", "key")]);
        let mut cached = stored.clone();
        slim(&mut cached);
        assert_eq!(cached.data, None);
        assert_eq!(applied.judge(OWNER, &stored, &cached), Verdict::Unknown);
        applied.remember(OWNER, &stored, &stored);
        assert_eq!(applied.judge(OWNER, &stored, &cached), Verdict::UpToDate);
        let renewed = secret(&[("tls.crt", "renewed"), ("tls.key", "key")]);
        assert_eq!(applied.judge(OWNER, &renewed, &cached), Verdict::Differs);
    }

    #[test]
    fn a_secret_with_a_key_someone_added_is_in_place_once_read_in_full() {
        let applied = AppliedDigests::default();
        let desired = secret(&[("tls.crt", "certificate")]);
        let stored = secret(&[("tls.crt", "certificate"), ("extra", "added")]);
        let mut cached = stored.clone();
        slim(&mut cached);
        assert_eq!(applied.judge(OWNER, &desired, &cached), Verdict::Unknown);
        assert_eq!(applied.judge(OWNER, &desired, &stored), Verdict::UpToDate);
        assert_eq!(applied.judge(OWNER, &desired, &cached), Verdict::UpToDate);
    }

    /// Judged by the cache alone once remembered, and read in full before.
    fn judged_by_digest<K: CacheForm + std::fmt::Debug + PartialEq>(desired: K) {
        let applied = AppliedDigests::default();
        let mut cached = desired.clone();
        slim(&mut cached);
        assert_ne!(cached, desired, "the bulk stays in the cache");
        assert_eq!(applied.judge(OWNER, &desired, &cached), Verdict::Unknown);
        assert_eq!(applied.judge(OWNER, &desired, &desired), Verdict::UpToDate);
        assert_eq!(applied.judge(OWNER, &desired, &cached), Verdict::UpToDate);
    }

    #[test]
    fn policies_and_roles_are_cached_without_their_rules() {
        use k8s_openapi::api::networking::v1::NetworkPolicySpec;
        use k8s_openapi::api::rbac::v1::PolicyRule;
        let meta = ObjectMeta {
            name: Some("tenant".to_owned()),
            namespace: Some("team-a".to_owned()),
            ..ObjectMeta::default()
        };
        let rules = Some(vec![PolicyRule {
            verbs: vec!["get".to_owned()],
            resources: Some(vec!["pods".to_owned()]),
            ..PolicyRule::default()
        }]);
        judged_by_digest(NetworkPolicy {
            metadata: meta.clone(),
            spec: Some(NetworkPolicySpec {
                policy_types: Some(vec!["Ingress".to_owned()]),
                ..NetworkPolicySpec::default()
            }),
        });
        judged_by_digest(Role {
            metadata: meta.clone(),
            rules: rules.clone(),
        });
        judged_by_digest(ClusterRole {
            metadata: meta,
            rules,
            aggregation_rule: None,
        });
    }

    #[test]
    fn no_data_and_empty_data_are_one() {
        let mut empty = secret(&[]);
        let digest = empty.bulk_digest();
        empty.data = None;
        assert_eq!(empty.bulk_digest(), digest);
    }
}
