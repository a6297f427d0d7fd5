//! The mutating rule: fill every optional field and write quantities canonically, so the
//! controller never guesses and later comparisons and diffs are stable. The clustertree
//! image is not a default: it is the operator's, and the controller takes it from its
//! own flag.

use super::quantity::{QuantityError, canonical_form};
use crate::quantity::ResourceQuantity;
use crate::{ServiceType, VirtualClusterSpec};

/// Field path of pooled resources, for error messages.
pub(crate) const RESOURCES_FIELD: &str = "spec.promoteResources.resources";
/// Field path of the etcd volume size.
pub(crate) const ETCD_STORAGE_SIZE_FIELD: &str = "spec.controlPlane.etcd.storageSize";

/// Defaults for every optional field, from the webhook's `--default-*` flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defaults {
    /// `--default-kubernetes-version`.
    pub kubernetes_version: String,
    /// `--default-apiserver-replicas`.
    pub apiserver_replicas: i32,
    /// `--default-apiserver-service-type`.
    pub apiserver_service_type: ServiceType,
    /// `--default-etcd-replicas`.
    pub etcd_replicas: i32,
    /// `--default-etcd-storage-size`.
    pub etcd_storage_size: String,
    /// `--default-etcd-storage-class`; `None` keeps the host's default StorageClass.
    pub etcd_storage_class: Option<String>,
}

/// Default of `--default-kubernetes-version`.
pub const DEFAULT_KUBERNETES_VERSION: &str = "v1.33.4";
/// Default of `--default-apiserver-replicas`.
pub const DEFAULT_APISERVER_REPLICAS: i32 = 1;
/// Default of `--default-apiserver-service-type`.
pub const DEFAULT_APISERVER_SERVICE_TYPE: ServiceType = ServiceType::ClusterIP;
/// Default of `--default-etcd-replicas`.
pub const DEFAULT_ETCD_REPLICAS: i32 = 1;
/// Default of `--default-etcd-storage-size`.
pub const DEFAULT_ETCD_STORAGE_SIZE: &str = "1Gi";

/// The flag defaults documented in `docs/contracts.md`; the webhook's flags default to the
/// same constants.
impl Default for Defaults {
    fn default() -> Self {
        Self {
            kubernetes_version: DEFAULT_KUBERNETES_VERSION.to_owned(),
            apiserver_replicas: DEFAULT_APISERVER_REPLICAS,
            apiserver_service_type: DEFAULT_APISERVER_SERVICE_TYPE,
            etcd_replicas: DEFAULT_ETCD_REPLICAS,
            etcd_storage_size: DEFAULT_ETCD_STORAGE_SIZE.to_owned(),
            etcd_storage_class: None,
        }
    }
}

/// `spec` with every optional field filled from `defaults` and every quantity in canonical
/// form. Applying it twice gives the same result as applying it once. Fails, naming the
/// field, when a quantity does not parse.
pub fn apply_defaults(
    spec: &VirtualClusterSpec,
    defaults: &Defaults,
) -> Result<VirtualClusterSpec, QuantityError> {
    let mut spec = spec.clone();
    fill_if_blank(&mut spec.kubernetes_version, &defaults.kubernetes_version);

    let control_plane = spec.control_plane.get_or_insert_with(Default::default);
    let api_server = control_plane
        .api_server
        .get_or_insert_with(Default::default);
    api_server
        .replicas
        .get_or_insert(defaults.apiserver_replicas);
    api_server
        .service_type
        .get_or_insert(defaults.apiserver_service_type);

    let etcd = control_plane.etcd.get_or_insert_with(Default::default);
    etcd.replicas.get_or_insert(defaults.etcd_replicas);
    let storage_size = etcd
        .storage_size
        .get_or_insert_with(|| ResourceQuantity::String(defaults.etcd_storage_size.clone()));
    *storage_size = canonical(storage_size, ETCD_STORAGE_SIZE_FIELD.to_owned())?;
    if let Some(class) = defaults
        .etcd_storage_class
        .as_deref()
        .filter(|class| !class.is_empty())
    {
        fill_if_blank(&mut etcd.storage_class_name, class);
    }

    for (resource, quantity) in &mut spec.promote_resources.resources {
        *quantity = canonical(quantity, format!("{RESOURCES_FIELD}.{resource}"))?;
    }
    Ok(spec)
}

fn fill_if_blank(field: &mut Option<String>, default: &str) {
    if field.as_deref().is_none_or(str::is_empty) {
        *field = Some(default.to_owned());
    }
}

fn canonical(
    quantity: &ResourceQuantity,
    field: String,
) -> Result<ResourceQuantity, QuantityError> {
    canonical_form(quantity)
        .map(ResourceQuantity::String)
        .map_err(|error| error.in_field(field))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ApiServerSpec, ControlPlaneSpec, EtcdSpec, PromoteResources};
    use pretty_assertions::assert_eq;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn proposal_spec() -> VirtualClusterSpec {
        VirtualClusterSpec {
            promote_resources: PromoteResources {
                nodes: vec!["node1".into()],
                resources: BTreeMap::from([
                    ("cpu".to_owned(), ResourceQuantity::Int(10)),
                    ("memory".to_owned(), "102400Mi".into()),
                ]),
            },
            ..VirtualClusterSpec::default()
        }
    }

    #[test]
    fn fills_every_optional_field_and_canonicalises_quantities() {
        let defaults = Defaults {
            etcd_storage_class: Some("fast".into()),
            ..Defaults::default()
        };
        let filled = apply_defaults(&proposal_spec(), &defaults).unwrap();
        let expected = VirtualClusterSpec {
            kubeconfig: None,
            promote_resources: PromoteResources {
                nodes: vec!["node1".into()],
                resources: BTreeMap::from([
                    ("cpu".to_owned(), "10".into()),
                    ("memory".to_owned(), "100Gi".into()),
                ]),
            },
            kubernetes_version: Some("v1.33.4".into()),
            control_plane: Some(ControlPlaneSpec {
                api_server: Some(ApiServerSpec {
                    replicas: Some(1),
                    service_type: Some(ServiceType::ClusterIP),
                    external_hosts: vec![],
                }),
                etcd: Some(EtcdSpec {
                    replicas: Some(1),
                    storage_size: Some("1Gi".into()),
                    storage_class_name: Some("fast".into()),
                }),
            }),
            cluster_tree: None,
        };
        assert_eq!(filled, expected);
        assert_eq!(apply_defaults(&filled, &defaults).unwrap(), filled);
    }

    #[test]
    fn keeps_what_the_user_set() {
        let mut spec = proposal_spec();
        spec.kubernetes_version = Some("v1.34.1".into());
        spec.control_plane = Some(ControlPlaneSpec {
            api_server: Some(ApiServerSpec {
                replicas: Some(3),
                service_type: Some(ServiceType::LoadBalancer),
                external_hosts: vec!["vc.example.com".into()],
            }),
            etcd: Some(EtcdSpec {
                replicas: Some(3),
                storage_size: Some("2048Mi".into()),
                storage_class_name: None,
            }),
        });
        let filled = apply_defaults(&spec, &Defaults::default()).unwrap();
        assert_eq!(filled.kubernetes_version.as_deref(), Some("v1.34.1"));
        let control_plane = filled.control_plane.unwrap();
        let api_server = control_plane.api_server.unwrap();
        assert_eq!(api_server.replicas, Some(3));
        assert_eq!(api_server.service_type, Some(ServiceType::LoadBalancer));
        assert_eq!(api_server.external_hosts, ["vc.example.com"]);
        let etcd = control_plane.etcd.unwrap();
        assert_eq!(etcd.replicas, Some(3));
        assert_eq!(etcd.storage_size, Some("2Gi".into()));
        assert_eq!(etcd.storage_class_name, None);
    }

    fn quantity() -> impl Strategy<Value = ResourceQuantity> {
        let text = (
            0_u32..100_000,
            0_usize..3,
            prop::sample::select(vec!["", "m", "k", "M", "Ki", "Mi", "Gi", "e2", "e-1"]),
        )
            .prop_map(|(digits, decimals, suffix)| {
                let text = digits.to_string();
                let split = text.len().saturating_sub(decimals);
                let (integer, fraction) = text.split_at(split);
                if fraction.is_empty() {
                    format!("{integer}{suffix}")
                } else {
                    format!("{integer}.{fraction}{suffix}")
                }
            });
        prop_oneof![
            (0_i64..1_000_000).prop_map(ResourceQuantity::Int),
            text.prop_map(ResourceQuantity::String),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn defaulting_is_idempotent(cpu in quantity(), memory in quantity(), storage in quantity()) {
            let mut spec = proposal_spec();
            spec.promote_resources.resources.insert("cpu".into(), cpu);
            spec.promote_resources.resources.insert("memory".into(), memory);
            spec.control_plane = Some(ControlPlaneSpec {
                etcd: Some(EtcdSpec { storage_size: Some(storage), ..EtcdSpec::default() }),
                ..ControlPlaneSpec::default()
            });
            let once = apply_defaults(&spec, &Defaults::default()).unwrap();
            let twice = apply_defaults(&once, &Defaults::default()).unwrap();
            prop_assert_eq!(twice, once);
        }
    }

    #[test]
    fn names_the_field_of_a_quantity_that_does_not_parse() {
        let mut spec = proposal_spec();
        spec.promote_resources
            .resources
            .insert("cpu".into(), "ten".into());
        let error = apply_defaults(&spec, &Defaults::default()).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("spec.promoteResources.resources.cpu: \"ten\" is not a quantity"),
            "{error}"
        );
    }
}
