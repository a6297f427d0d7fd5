//! Workloads are cached without their pod templates.
//!
//! A pod template is most of a Deployment's or a StatefulSet's size, and the watch
//! caches hold five workloads per tenant: at 1,000 tenants their templates were ~80 MiB
//! of the controller's memory. The cache keeps a digest of each template instead, in an
//! annotation only the cached copy carries, and [`AppliedTemplates`] remembers, for each
//! workload the controller applied or found in place, the digest of the template it
//! wanted and of the template the apiserver held then (the wanted one plus defaults).
//!
//! A cached workload whose template digest is the remembered one holds the remembered
//! wanted template. Any other (someone edited it, or the controller restarted and
//! remembers nothing) is judged [`Verdict::Unknown`] and read in full once, then compared
//! field by field as every other kind is.

use std::collections::HashMap;
use std::sync::Mutex;

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

/// The annotation of a cached workload naming its template's digest. It exists only in
/// the controller's memory: no cached object is ever sent back to the apiserver.
pub const TEMPLATE_DIGEST_ANNOTATION: &str = "vc.kosmos.io/cached-template-sha256";

/// A kind the controller watches, as its cache holds it.
pub trait CacheForm: Resource<DynamicType = ()> + Serialize + Clone {
    /// The pod template, for the kinds cached without it.
    fn template(&self) -> Option<&PodTemplateSpec> {
        None
    }

    /// The pod template to take out of the cached copy.
    fn template_mut(&mut self) -> Option<&mut PodTemplateSpec> {
        None
    }
}

macro_rules! cached_whole {
    ($($kind:ty),* $(,)?) => {
        $(impl CacheForm for $kind {})*
    };
}

cached_whole!(
    Node,
    Namespace,
    Secret,
    Service,
    ServiceAccount,
    ResourceQuota,
    Role,
    RoleBinding,
    ClusterRole,
    ClusterRoleBinding,
    NetworkPolicy,
);

impl CacheForm for Deployment {
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|spec| &spec.template)
    }

    fn template_mut(&mut self) -> Option<&mut PodTemplateSpec> {
        self.spec.as_mut().map(|spec| &mut spec.template)
    }
}

impl CacheForm for StatefulSet {
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|spec| &spec.template)
    }

    fn template_mut(&mut self) -> Option<&mut PodTemplateSpec> {
        self.spec.as_mut().map(|spec| &mut spec.template)
    }
}

/// Replaces the template of a watched object with its digest, before it is cached.
pub fn slim<K: CacheForm>(object: &mut K) {
    let Some(template) = object.template_mut().map(std::mem::take) else {
        return;
    };
    let digest = template_digest(&template);
    object
        .annotations_mut()
        .insert(TEMPLATE_DIGEST_ANNOTATION.to_owned(), digest);
}

/// The SHA-256 of the template's JSON. A template the apiserver returned serializes the
/// same from a watch event, a read and an apply's answer: the struct's field order is
/// fixed and its maps are sorted.
fn template_digest(template: &PodTemplateSpec) -> String {
    match serde_json::to_vec(template) {
        Ok(json) => hex::encode(Sha256::digest(json)),
        // Unreachable for a struct of strings, numbers and maps; an empty digest matches
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

/// The template digests of one applied workload.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Remembered {
    /// The template the controller wanted.
    wanted: String,
    /// The template the apiserver held when it matched (the wanted one plus defaults).
    held: String,
}

/// What the controller last applied or found in place of each workload, by the
/// VirtualCluster owning it, so a deleted tenant's entries go with it.
#[derive(Debug, Default)]
pub struct AppliedTemplates(Mutex<HashMap<String, HashMap<String, Remembered>>>);

impl AppliedTemplates {
    /// Judges `existing` (a cached copy, or one read in full) against `desired`.
    /// A full copy that matches is remembered, so its cached copies are judged without a
    /// read until its template changes.
    pub fn judge<K: CacheForm>(&self, owner_uid: &str, desired: &K, existing: &K) -> Verdict {
        let Some(held) = existing.annotations().get(TEMPLATE_DIGEST_ANNOTATION) else {
            if !up_to_date(desired, Some(existing)) {
                return Verdict::Differs;
            }
            self.remember(owner_uid, desired, existing);
            return Verdict::UpToDate;
        };
        let mut rest = desired.clone();
        let wanted = rest.template_mut().map(|template| {
            let digest = template_digest(template);
            *template = PodTemplateSpec::default();
            digest
        });
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
            // The cached copy holds the template the controller last applied, and it
            // wants another now.
            Some(remembered) if remembered.held == *held => Verdict::Differs,
            _ => Verdict::Unknown,
        }
    }

    /// Remembers that the apiserver held `held` when the controller wanted `desired`.
    pub fn remember<K: CacheForm>(&self, owner_uid: &str, desired: &K, held: &K) {
        let (Some(wanted), Some(held)) = (desired.template(), held.template()) else {
            return;
        };
        let remembered = Remembered {
            wanted: template_digest(wanted),
            held: template_digest(held),
        };
        if let Ok(mut owners) = self.0.lock() {
            owners
                .entry(owner_uid.to_owned())
                .or_default()
                .insert(key(desired), remembered);
        }
    }

    /// Forgets the workloads of a deleted VirtualCluster.
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
            .template_mut()
            .and_then(|template| template.spec.as_mut())
        {
            spec.dns_policy = Some("ClusterFirst".to_owned());
        }
        held
    }

    fn cached(object: &Deployment) -> Deployment {
        let mut cached = object.clone();
        slim(&mut cached);
        cached
    }

    #[test]
    fn the_cache_keeps_a_digest_instead_of_the_template() {
        let cached = cached(&held(&deployment("kube-apiserver:v1", 1)));
        assert_eq!(cached.template(), Some(&PodTemplateSpec::default()));
        assert_eq!(
            cached.annotations()[TEMPLATE_DIGEST_ANNOTATION].len(),
            64,
            "{cached:?}"
        );
    }

    #[test]
    fn a_workload_nothing_vouches_for_is_read_in_full_and_then_remembered() {
        let applied = AppliedTemplates::default();
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
        let applied = AppliedTemplates::default();
        let first = deployment("kube-apiserver:v1", 1);
        applied.remember(OWNER, &first, &held(&first));
        let bumped = deployment("kube-apiserver:v2", 1);
        assert_eq!(
            applied.judge(OWNER, &bumped, &cached(&held(&first))),
            Verdict::Differs
        );
    }

    #[test]
    fn a_template_edited_by_someone_else_is_read_in_full() {
        let applied = AppliedTemplates::default();
        let desired = deployment("kube-apiserver:v1", 1);
        applied.remember(OWNER, &desired, &held(&desired));
        let edited = held(&deployment("evil:latest", 1));
        assert_eq!(
            applied.judge(OWNER, &desired, &cached(&edited)),
            Verdict::Unknown
        );
        assert_eq!(applied.judge(OWNER, &desired, &edited), Verdict::Differs);
    }

    #[test]
    fn fields_outside_the_template_are_compared_in_the_cache() {
        let applied = AppliedTemplates::default();
        let desired = deployment("kube-apiserver:v1", 1);
        applied.remember(OWNER, &desired, &held(&desired));
        let scaled = held(&deployment("kube-apiserver:v1", 3));
        assert_eq!(
            applied.judge(OWNER, &desired, &cached(&scaled)),
            Verdict::Differs
        );
    }

    #[test]
    fn a_deleted_owner_is_forgotten() {
        let applied = AppliedTemplates::default();
        let desired = deployment("kube-apiserver:v1", 1);
        applied.remember(OWNER, &desired, &held(&desired));
        applied.forget_owner(OWNER);
        assert_eq!(
            applied.judge(OWNER, &desired, &cached(&held(&desired))),
            Verdict::Unknown
        );
    }

    #[test]
    fn kinds_cached_whole_are_compared_whole() {
        let applied = AppliedTemplates::default();
        let mut service = Service::default();
        service.metadata.name = Some("apiserver".to_owned());
        let mut cached = service.clone();
        slim(&mut cached);
        assert_eq!(cached, service);
        assert_eq!(applied.judge(OWNER, &service, &cached), Verdict::UpToDate);
    }
}
