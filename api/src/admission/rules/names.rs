//! The VirtualCluster's name and namespace must leave room for every name derived from
//! them; otherwise the controller would fail half-way through provisioning.

use super::super::inventory::Inventory;
use super::{ClusterName, Denial};
use crate::VirtualCluster;
use crate::constants::{TENANT_WORKLOAD_NAMESPACE_PREFIX, tenant_workload_namespace};
use crate::names::clashes_with;

/// Longest DNS label (namespace names, Service names, label values).
const DNS_LABEL_MAX: usize = 63;
/// Longest DNS subdomain (Secret, Deployment names).
const DNS_SUBDOMAIN_MAX: usize = 253;
/// Length of the hash a StatefulSet appends to its `controller-revision-hash` label.
const REVISION_HASH_LEN: usize = 10;

/// Namespace and name of the object; both are required.
pub(super) fn cluster_name(object: &VirtualCluster) -> Result<ClusterName<'_>, Denial> {
    let namespace = object
        .metadata
        .namespace
        .as_deref()
        .filter(|namespace| !namespace.is_empty())
        .ok_or_else(|| {
            Denial::invalid(
                "metadata.namespace is required: VirtualCluster is a namespaced resource",
            )
        })?;
    let name = object
        .metadata
        .name
        .as_deref()
        .filter(|name| !name.is_empty())
        .ok_or_else(|| Denial::invalid("metadata.name is required"))?;
    Ok(ClusterName { namespace, name })
}

/// A name the controller derives from the VirtualCluster's name, and its length limit.
struct DerivedName {
    what: &'static str,
    suffix: &'static str,
    extra: usize,
    limit: usize,
}

/// Every derived name with a length limit the VirtualCluster's name could break.
const DERIVED_NAMES: [DerivedName; 3] = [
    DerivedName {
        what: "the apiserver Service name",
        suffix: "-apiserver",
        extra: 0,
        limit: DNS_LABEL_MAX,
    },
    DerivedName {
        what: "the etcd StatefulSet's controller-revision-hash label value",
        suffix: "-etcd-<hash>",
        extra: REVISION_HASH_LEN,
        limit: DNS_LABEL_MAX,
    },
    DerivedName {
        what: "the Secret name",
        suffix: "-controller-manager-kubeconfig",
        extra: 0,
        limit: DNS_SUBDOMAIN_MAX,
    },
];

/// The name is a DNS-1035 label and every derived name fits its limit.
pub(super) fn check_derived_names(
    key: ClusterName<'_>,
    inventory: &Inventory,
) -> Result<(), Denial> {
    let name = key.name;
    check_name_length(name)?;
    if !is_dns1035_label(name) {
        return Err(Denial::invalid(format!(
            "metadata.name {name:?} must be a DNS-1035 label: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit, because it names Services such as \"{name}-apiserver\""
        )));
    }
    let workload_namespace = tenant_workload_namespace(key.namespace, name);
    check_workload_namespace(key, &workload_namespace)?;
    check_workload_namespace_is_free(key, &workload_namespace, inventory)?;
    check_derived_objects_are_free(key, inventory)
}

/// Names every derived name that would be too long, and the longest name that fits all.
fn check_name_length(name: &str) -> Result<(), Denial> {
    let longest_fitting = DERIVED_NAMES
        .iter()
        .map(|derived| derived.limit - derived.length_beyond_name())
        .min()
        .unwrap_or(DNS_LABEL_MAX);
    if name.len() <= longest_fitting {
        return Ok(());
    }
    let too_long: Vec<String> = DERIVED_NAMES
        .iter()
        .filter(|derived| name.len() + derived.length_beyond_name() > derived.limit)
        .map(|derived| {
            format!(
                "{} \"{name}{}\" would be {} characters (limit {})",
                derived.what,
                derived.suffix,
                name.len() + derived.length_beyond_name(),
                derived.limit
            )
        })
        .collect();
    Err(Denial::invalid(format!(
        "metadata.name {name:?} is {} characters, too long for the names derived from it: {}; use a name of at most {longest_fitting} characters",
        name.len(),
        too_long.join("; "),
    )))
}

impl DerivedName {
    /// Characters the derived name adds to the VirtualCluster's name.
    fn length_beyond_name(&self) -> usize {
        let placeholder = if self.extra > 0 { "<hash>".len() } else { 0 };
        self.suffix.len() - placeholder + self.extra
    }
}

/// `vc-NS-NAME` must be a valid namespace name.
fn check_workload_namespace(key: ClusterName<'_>, workload_namespace: &str) -> Result<(), Denial> {
    if workload_namespace.len() > DNS_LABEL_MAX {
        let overhead = workload_namespace.len() - key.namespace.len() - key.name.len();
        return Err(Denial::invalid(format!(
            "the host namespace \"{workload_namespace}\" derived from namespace and name would be {} characters, above the limit of {DNS_LABEL_MAX} for a namespace name; namespace and name together may have at most {} characters (now {})",
            workload_namespace.len(),
            DNS_LABEL_MAX - overhead,
            key.namespace.len() + key.name.len(),
        )));
    }
    Ok(())
}

/// `vc-NS-NAME` is ambiguous: `a-b/c` and `a/b-c` both give `vc-a-b-c`, and two tenants
/// sharing a host namespace would share its ResourceQuota and RBAC. Every split of the
/// derived name at a `-` is looked up, O(dashes), so no extra index is needed.
fn check_workload_namespace_is_free(
    key: ClusterName<'_>,
    workload_namespace: &str,
    inventory: &Inventory,
) -> Result<(), Denial> {
    let joined = workload_namespace
        .strip_prefix(TENANT_WORKLOAD_NAMESPACE_PREFIX)
        .unwrap_or(workload_namespace);
    let dashes = joined.bytes().enumerate().filter(|(_, byte)| *byte == b'-');
    for (position, _) in dashes {
        let (namespace, name) = (&joined[..position], &joined[position + 1..]);
        if (namespace, name) != (key.namespace, key.name)
            && inventory.contains_cluster_named(namespace, name)
        {
            return Err(Denial::forbidden(format!(
                "the host namespace \"{workload_namespace}\" derived from namespace and name is already used by VirtualCluster {namespace}/{name}; choose another name"
            )));
        }
    }
    Ok(())
}

/// `x-etcd`'s cluster CA Secret is `x-etcd-ca`, which is also `x`'s etcd CA: the two
/// tenants would sign with each other's CA. Every VirtualCluster name that derives one of
/// this one's object names is looked up, O(derived names squared), so no index of
/// derived names is needed. The controller refuses such an object too (it is not ours),
/// but only after the VirtualCluster exists; here the user learns before.
fn check_derived_objects_are_free(
    key: ClusterName<'_>,
    inventory: &Inventory,
) -> Result<(), Denial> {
    let mut clashes = clashes_with(key.name, |other| {
        inventory.contains_cluster_named(key.namespace, other)
    });
    let Some(clash) = clashes.next() else {
        return Ok(());
    };
    let fix = if key.name.starts_with(&format!("{}-", clash.other)) {
        format!(
            "choose a name that does not start with \"{}-\"",
            clash.other
        )
    } else {
        format!(
            "choose a name that \"{}\" does not start with, followed by '-'",
            clash.other
        )
    };
    Err(Denial::forbidden(format!(
        "VirtualCluster {key} would own {} {:?} for its {}, which VirtualCluster {}/{} already uses for its {}; {fix}",
        clash.kind, clash.object, clash.purpose, key.namespace, clash.other, clash.other_purpose,
    )))
}

/// `[a-z]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
fn is_dns1035_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let inner_ok = bytes
        .iter()
        .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'-');
    let first_ok = bytes.first().is_some_and(u8::is_ascii_lowercase);
    let last_ok = bytes
        .last()
        .is_some_and(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit());
    name.len() <= DNS_LABEL_MAX && inner_ok && first_ok && last_ok
}
