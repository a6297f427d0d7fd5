//! Whether an existing host object is this VirtualCluster's, decided before the
//! controller adopts, applies over, reads secrets from or deletes it.
//!
//! Names can be taken by anyone: a sibling VirtualCluster whose derived names overlap
//! (`x-etcd`'s cluster CA is `x`'s etcd CA), a user who created `vc-NS-NAME` first, an
//! operator's own ClusterRole. Server-side apply with force would silently take such an
//! object over, and a delete by name would remove it, so nothing is touched by name alone.
//!
//! An object is ours when
//! - an ownerReference carries this VirtualCluster's UID (everything in its namespace), or
//! - [`OWNER_UID_ANNOTATION`] carries it (the workload namespace and what is in it, and the
//!   cluster-scoped objects, which no ownerReference can tie to a namespaced owner), or
//! - it predates the annotation: managed by kosmos-vc, labelled with this VirtualCluster's
//!   name, with no UID annotation and no ownerReference, and outside the VirtualCluster's
//!   namespace. Those names (`vc-NS-NAME`, `kosmos-vc:NS:NAME:clustertree` and what lies in
//!   `vc-NS-NAME`) spell out the namespace, so the name label completes the identity; the
//!   next apply stamps the UID. Inside the VirtualCluster's namespace every object we ever
//!   made carries our ownerReference, so a missing one means it is not ours.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use vc_api::constants::{
    KIND, MANAGED_BY_LABEL, MANAGED_BY_VALUE, OWNER_ANNOTATION, OWNER_UID_ANNOTATION,
    TENANT_NAME_LABEL,
};

/// The VirtualCluster an object is judged against.
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    /// Namespace of the VirtualCluster.
    pub namespace: &'a str,
    /// Name of the VirtualCluster.
    pub name: &'a str,
    /// UID of the VirtualCluster.
    pub uid: &'a str,
}

/// Who holds an existing object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// This VirtualCluster.
    Ours,
    /// Someone else, described for a human ("VirtualCluster team-a/x (UID ...)").
    Other(String),
}

impl Holder {
    /// Whether the object is this VirtualCluster's.
    pub fn is_ours(&self) -> bool {
        matches!(self, Holder::Ours)
    }
}

/// Who holds the object with metadata `meta`, judged for `owner`.
pub fn holder(meta: &ObjectMeta, owner: &Owner<'_>) -> Holder {
    let references = meta.owner_references.as_deref().unwrap_or_default();
    if !owner.uid.is_empty()
        && references
            .iter()
            .any(|reference| reference.uid == owner.uid)
    {
        return Holder::Ours;
    }
    let annotations = meta.annotations.as_ref();
    let annotated_uid = annotations.and_then(|annotations| annotations.get(OWNER_UID_ANNOTATION));
    if let Some(uid) = annotated_uid {
        if !owner.uid.is_empty() && uid == owner.uid {
            return Holder::Ours;
        }
        let who = annotations
            .and_then(|annotations| annotations.get(OWNER_ANNOTATION))
            .map(|key| format!("VirtualCluster {key}"))
            .unwrap_or_else(|| "a VirtualCluster".to_owned());
        return Holder::Other(format!("{who} (UID {uid})"));
    }
    if let Some(reference) = references
        .iter()
        .find(|reference| reference.controller == Some(true))
        .or_else(|| references.first())
    {
        let name = if reference.kind == KIND {
            format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or_default(),
                reference.name
            )
        } else {
            reference.name.clone()
        };
        return Holder::Other(format!("{} {name} (UID {})", reference.kind, reference.uid));
    }
    let labels = meta.labels.as_ref();
    let managed = labels
        .and_then(|labels| labels.get(MANAGED_BY_LABEL))
        .is_some_and(|value| value == MANAGED_BY_VALUE);
    let tenant = labels.and_then(|labels| labels.get(TENANT_NAME_LABEL));
    let outside_own_namespace = meta.namespace.as_deref() != Some(owner.namespace);
    if managed && outside_own_namespace && tenant.is_some_and(|tenant| tenant == owner.name) {
        return Holder::Ours;
    }
    if managed && let Some(tenant) = tenant {
        return Holder::Other(format!(
            "kosmos-vc's VirtualCluster {tenant:?} (by its labels, with no owner UID)"
        ));
    }
    let managers: Vec<&str> = meta
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|entry| entry.manager.as_deref())
        .collect();
    if managers.is_empty() {
        Holder::Other("someone outside kosmos-vc".to_owned())
    } else {
        Holder::Other(format!(
            "someone outside kosmos-vc (field managers {})",
            managers.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference};

    use super::*;

    const OWNER: Owner<'static> = Owner {
        namespace: "team-a",
        name: "x",
        uid: "uid-x",
    };

    fn reference(kind: &str, name: &str, uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "kosmos.io/v1alpha1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn labels(tenant: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
            (TENANT_NAME_LABEL.to_owned(), tenant.to_owned()),
        ])
    }

    #[test]
    fn our_owner_reference_or_uid_annotation_makes_it_ours() {
        let owned = ObjectMeta {
            namespace: Some("team-a".into()),
            owner_references: Some(vec![reference(KIND, "x", "uid-x")]),
            ..ObjectMeta::default()
        };
        assert_eq!(holder(&owned, &OWNER), Holder::Ours);
        let annotated = ObjectMeta {
            annotations: Some(BTreeMap::from([(
                OWNER_UID_ANNOTATION.to_owned(),
                "uid-x".to_owned(),
            )])),
            ..ObjectMeta::default()
        };
        assert_eq!(holder(&annotated, &OWNER), Holder::Ours);
    }

    #[test]
    fn a_siblings_secret_is_not_ours_and_names_the_sibling() {
        // x-etcd's cluster CA "x-etcd-ca" as x stored it (x's etcd CA).
        let sibling = ObjectMeta {
            namespace: Some("team-a".into()),
            labels: Some(labels("x")),
            owner_references: Some(vec![reference(KIND, "x", "uid-x")]),
            ..ObjectMeta::default()
        };
        let x_etcd = Owner {
            name: "x-etcd",
            uid: "uid-x-etcd",
            ..OWNER
        };
        assert_eq!(
            holder(&sibling, &x_etcd),
            Holder::Other("VirtualCluster team-a/x (UID uid-x)".into())
        );
    }

    #[test]
    fn another_uid_is_not_ours_even_with_our_labels() {
        // A VirtualCluster deleted and recreated under the same name does not inherit.
        let stale = ObjectMeta {
            labels: Some(labels("x")),
            annotations: Some(BTreeMap::from([
                (OWNER_UID_ANNOTATION.to_owned(), "uid-old".to_owned()),
                (OWNER_ANNOTATION.to_owned(), "team-a/x".to_owned()),
            ])),
            ..ObjectMeta::default()
        };
        assert_eq!(
            holder(&stale, &OWNER),
            Holder::Other("VirtualCluster team-a/x (UID uid-old)".into())
        );
    }

    #[test]
    fn an_older_controllers_cluster_scoped_object_is_ours_by_its_labels() {
        let legacy = ObjectMeta {
            name: Some("kosmos-vc:team-a:x:clustertree".into()),
            labels: Some(labels("x")),
            ..ObjectMeta::default()
        };
        assert_eq!(holder(&legacy, &OWNER), Holder::Ours);
        let in_workload_namespace = ObjectMeta {
            namespace: Some("vc-team-a-x".into()),
            ..legacy.clone()
        };
        assert_eq!(holder(&in_workload_namespace, &OWNER), Holder::Ours);
        // In the VirtualCluster's namespace our objects always had the ownerReference.
        let beside = ObjectMeta {
            namespace: Some("team-a".into()),
            ..legacy
        };
        assert!(!holder(&beside, &OWNER).is_ours());
    }

    #[test]
    fn a_foreign_object_names_who_wrote_it() {
        let foreign = ObjectMeta {
            name: Some("vc-team-a-x".into()),
            managed_fields: Some(vec![ManagedFieldsEntry {
                manager: Some("kubectl-create".into()),
                ..ManagedFieldsEntry::default()
            }]),
            ..ObjectMeta::default()
        };
        assert_eq!(
            holder(&foreign, &OWNER),
            Holder::Other("someone outside kosmos-vc (field managers kubectl-create)".into())
        );
        assert_eq!(
            holder(&ObjectMeta::default(), &OWNER),
            Holder::Other("someone outside kosmos-vc".into())
        );
        let other_tenant = ObjectMeta {
            labels: Some(labels("y")),
            ..ObjectMeta::default()
        };
        assert!(!holder(&other_tenant, &OWNER).is_ours());
        let empty_uid = Owner { uid: "", ..OWNER };
        let annotated_empty = ObjectMeta {
            annotations: Some(BTreeMap::from([(
                OWNER_UID_ANNOTATION.to_owned(),
                String::new(),
            )])),
            ..ObjectMeta::default()
        };
        assert!(!holder(&annotated_empty, &empty_uid).is_ours());
    }
}
