//! Which PersistentVolumeClaims are a tenant's etcd data, so cleanup deletes them and
//! nothing else.
//!
//! A claim left behind would be bound again by a VirtualCluster created later under the
//! same namespace and name, handing the new owner the old tenant's whole state. The
//! StatefulSet's retention policy makes its claims dependents of the StatefulSet, but
//! claims made before that policy, or whose StatefulSet went away out of band, have no
//! owner; cleanup deletes those too. It never deletes by name alone: a claim is ours only
//! when its name, its labels and its owners all say so.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use vc_api::constants::{COMPONENT_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, TENANT_NAME_LABEL};

use crate::resources::meta::Component;
use crate::resources::{etcd, names};

/// The label selector of a tenant's etcd claims, as the StatefulSet's claim template sets them.
pub fn etcd_claim_selector(tenant_name: &str) -> String {
    format!(
        "{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{TENANT_NAME_LABEL}={tenant_name},{COMPONENT_LABEL}={}",
        Component::Etcd.as_str()
    )
}

/// The UID of the tenant's etcd StatefulSet, when the one cached is controlled by the
/// VirtualCluster with `owner_uid`.
pub fn owned_stateful_set_uid(set: &StatefulSet, owner_uid: &str) -> Option<String> {
    let controlled = set
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.controller == Some(true) && owner.uid == owner_uid);
    controlled.then(|| set.metadata.uid.clone()).flatten()
}

/// Whether `claim` is the volume of one of the tenant's etcd members: named
/// `data-NAME-etcd-ORDINAL`, labelled as this tenant's etcd, and owned by nothing but the
/// tenant's own etcd StatefulSet (`stateful_set_uid`) if owned at all.
pub fn is_tenant_etcd_claim(
    claim: &PersistentVolumeClaim,
    tenant_name: &str,
    stateful_set_uid: Option<&str>,
) -> bool {
    let prefix = format!("{}-{}-", etcd::DATA_VOLUME, names::etcd(tenant_name));
    let named = claim
        .metadata
        .name
        .as_deref()
        .and_then(|name| name.strip_prefix(&prefix))
        .is_some_and(|ordinal| {
            !ordinal.is_empty() && ordinal.bytes().all(|byte| byte.is_ascii_digit())
        });
    let labels = claim.metadata.labels.as_ref();
    let label = |key: &str| {
        labels
            .and_then(|labels| labels.get(key))
            .map(String::as_str)
    };
    let labelled = label(MANAGED_BY_LABEL) == Some(MANAGED_BY_VALUE)
        && label(TENANT_NAME_LABEL) == Some(tenant_name)
        && label(COMPONENT_LABEL) == Some(Component::Etcd.as_str());
    let set_name = names::etcd(tenant_name);
    let owned_by_us_alone = claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .all(|owner| {
            owner.kind == "StatefulSet"
                && owner.name == set_name
                && stateful_set_uid.is_some_and(|uid| owner.uid == uid)
        });
    named && labelled && owned_by_us_alone
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use std::collections::BTreeMap;

    fn claim(name: &str, tenant: &str, owners: &[(&str, &str, &str)]) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
                    (TENANT_NAME_LABEL.to_owned(), tenant.to_owned()),
                    (COMPONENT_LABEL.to_owned(), "etcd".to_owned()),
                ])),
                owner_references: Some(
                    owners
                        .iter()
                        .map(|(kind, name, uid)| OwnerReference {
                            kind: (*kind).to_owned(),
                            name: (*name).to_owned(),
                            uid: (*uid).to_owned(),
                            ..OwnerReference::default()
                        })
                        .collect(),
                )
                .filter(|owners: &Vec<OwnerReference>| !owners.is_empty()),
                ..ObjectMeta::default()
            },
            ..PersistentVolumeClaim::default()
        }
    }

    #[test]
    fn a_claim_is_ours_by_name_labels_and_owner() {
        let set = Some("set-uid");
        let owned = [("StatefulSet", "prod-etcd", "set-uid")];
        assert!(is_tenant_etcd_claim(
            &claim("data-prod-etcd-0", "prod", &owned),
            "prod",
            set
        ));
        assert!(is_tenant_etcd_claim(
            &claim("data-prod-etcd-12", "prod", &[]),
            "prod",
            set
        ));
        assert!(is_tenant_etcd_claim(
            &claim("data-prod-etcd-1", "prod", &[]),
            "prod",
            None
        ));
    }

    #[test]
    fn claims_of_others_are_never_ours() {
        let set = Some("set-uid");
        let owned = [("StatefulSet", "prod-etcd", "set-uid")];
        for (name, tenant) in [
            ("data-prod-etcd-x", "prod"),
            ("data-prod-etcd-", "prod"),
            ("data-prod-etcd-0-copy", "prod"),
            ("backup-prod-etcd-0", "prod"),
            ("data-prod-etcd-0", "staging"),
        ] {
            assert!(
                !is_tenant_etcd_claim(&claim(name, tenant, &owned), "prod", set),
                "{name}"
            );
        }
        let mut unlabelled = claim("data-prod-etcd-0", "prod", &owned);
        unlabelled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(MANAGED_BY_LABEL);
        assert!(!is_tenant_etcd_claim(&unlabelled, "prod", set));
        for owners in [
            [("StatefulSet", "prod-etcd", "an-older-set")],
            [("StatefulSet", "backup", "set-uid")],
            [("Deployment", "prod-etcd", "set-uid")],
        ] {
            assert!(!is_tenant_etcd_claim(
                &claim("data-prod-etcd-0", "prod", &owners),
                "prod",
                set
            ));
        }
        let shared = [
            ("StatefulSet", "prod-etcd", "set-uid"),
            ("Backup", "nightly", "backup-uid"),
        ];
        assert!(!is_tenant_etcd_claim(
            &claim("data-prod-etcd-0", "prod", &shared),
            "prod",
            set
        ));
        assert!(!is_tenant_etcd_claim(
            &claim("data-prod-etcd-0", "prod", &owned),
            "prod",
            None
        ));
    }

    #[test]
    fn the_stateful_set_counts_only_when_the_virtual_cluster_controls_it() {
        let mut set = StatefulSet::default();
        set.metadata.uid = Some("set-uid".into());
        set.metadata.owner_references = Some(vec![OwnerReference {
            controller: Some(true),
            uid: "vc-uid".into(),
            ..OwnerReference::default()
        }]);
        assert_eq!(
            owned_stateful_set_uid(&set, "vc-uid").as_deref(),
            Some("set-uid")
        );
        assert_eq!(owned_stateful_set_uid(&set, "other-uid"), None);
        assert_eq!(
            etcd_claim_selector("prod"),
            "app.kubernetes.io/managed-by=kosmos-vc,vc.kosmos.io/virtualcluster=prod,app.kubernetes.io/component=etcd"
        );
    }
}
