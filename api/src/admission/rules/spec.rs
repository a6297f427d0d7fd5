//! Syntax of the spec: resource names, quantities, the version and replica counts.

use super::super::defaults::{ETCD_STORAGE_SIZE_FIELD, RESOURCES_FIELD};
use super::super::inventory::Inventory;
use super::super::quantity::quantity_milli;
use super::updates::parse_version;
use super::{Denial, Pooled};
use crate::VirtualCluster;
use crate::quantity::ResourceQuantity;

/// Resources every host offers; anything else must be an extended resource a node has.
pub(crate) const STANDARD_RESOURCES: [&str; 4] = ["cpu", "memory", "ephemeral-storage", "pods"];

/// etcd member counts with a well-defined quorum.
const ETCD_REPLICAS: [i32; 3] = [1, 3, 5];
/// Bounds of `spec.controlPlane.apiServer.replicas`, as in the CRD schema.
const APISERVER_REPLICAS: std::ops::RangeInclusive<i32> = 1..=10;

/// Checks the spec's syntax and returns the pooled resources, parsed. `old` is the
/// stored object on UPDATE.
pub(super) fn check<'a>(
    object: &'a VirtualCluster,
    old: Option<&VirtualCluster>,
    inventory: &Inventory,
) -> Result<Pooled<'a>, Denial> {
    let pooled = check_resources(object, old, inventory)?;
    check_version(object)?;
    check_control_plane(object)?;
    Ok(pooled)
}

/// The pooled resources of an already stored object; entries that do not parse are left
/// out, as they could not have been admitted.
pub(super) fn parsed_pooled(object: &VirtualCluster) -> Pooled<'_> {
    let resources = &object.spec.promote_resources.resources;
    let mut pooled = Pooled::with_capacity(resources.len());
    for (resource, quantity) in resources {
        if let Ok(amount) = quantity_milli(quantity) {
            pooled.push(resource, amount);
        }
    }
    pooled
}

/// Resource names are checked only when new: an extended resource whose last node left
/// the host must not block every later edit of a cluster that pooled it.
fn check_resources<'a>(
    object: &'a VirtualCluster,
    old: Option<&VirtualCluster>,
    inventory: &Inventory,
) -> Result<Pooled<'a>, Denial> {
    let previously_pooled = |resource: &str| {
        old.is_some_and(|old| old.spec.promote_resources.resources.contains_key(resource))
    };
    let resources = &object.spec.promote_resources.resources;
    let mut pooled = Pooled::with_capacity(resources.len());
    for (resource, quantity) in resources {
        if !previously_pooled(resource) {
            check_resource_name(resource, inventory)?;
        }
        let field = || format!("{RESOURCES_FIELD}.{resource}");
        pooled.push(resource, positive_quantity(field, quantity)?);
    }
    Ok(pooled)
}

fn check_resource_name(resource: &str, inventory: &Inventory) -> Result<(), Denial> {
    if STANDARD_RESOURCES.contains(&resource) || inventory.offers_extended_resource(resource) {
        return Ok(());
    }
    let suggestion = closest_resource(resource, inventory)
        .map(|closest| format!("did you mean {closest:?}? "))
        .unwrap_or_default();
    Err(Denial::invalid(format!(
        "{RESOURCES_FIELD}: {resource:?} is not a resource the host offers; {suggestion}use cpu, memory, ephemeral-storage, pods, or an extended resource that a host node advertises in status.allocatable"
    )))
}

/// The standard or offered resource name closest to a misspelt one, if any is close.
fn closest_resource<'a>(resource: &str, inventory: &'a Inventory) -> Option<&'a str> {
    let lowercase = resource.to_ascii_lowercase();
    STANDARD_RESOURCES
        .into_iter()
        .chain(inventory.offered_resources())
        .map(|candidate| (edit_distance(&lowercase, candidate), candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance; names are short, so the quadratic cost is negligible.
fn edit_distance(left: &str, right: &str) -> usize {
    let right: Vec<char> = right.chars().collect();
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    for (row, left_char) in left.chars().enumerate() {
        let mut current = vec![row + 1];
        for (column, right_char) in right.iter().enumerate() {
            let substitution = previous[column] + usize::from(left_char != *right_char);
            let best = substitution
                .min(previous[column + 1] + 1)
                .min(current[column] + 1);
            current.push(best);
        }
        previous = current;
    }
    previous[right.len()]
}

/// The quantity in milli-units, refused unless it parses and is positive. `field` names
/// it in the refusal and is built only for one.
pub(super) fn positive_quantity(
    field: impl FnOnce() -> String,
    quantity: &ResourceQuantity,
) -> Result<i128, Denial> {
    match quantity_milli(quantity) {
        Ok(amount) if amount > 0 => Ok(amount),
        Ok(_) => Err(Denial::invalid(format!(
            "{} must be positive, got \"{quantity}\"; remove the entry to ask for none",
            field()
        ))),
        Err(error) => Err(Denial::invalid(error.in_field(field()).to_string())),
    }
}

fn check_version(object: &VirtualCluster) -> Result<(), Denial> {
    match object.spec.kubernetes_version.as_deref() {
        Some(version) if parse_version(version).is_none() => Err(Denial::invalid(format!(
            "spec.kubernetesVersion {version:?} is not a Kubernetes version; write it as vMAJOR.MINOR.PATCH, such as \"v1.33.4\""
        ))),
        _ => Ok(()),
    }
}

fn check_control_plane(object: &VirtualCluster) -> Result<(), Denial> {
    let Some(control_plane) = object.spec.control_plane.as_ref() else {
        return Ok(());
    };
    if let Some(api_server) = control_plane.api_server.as_ref() {
        check_external_hosts(&api_server.external_hosts)?;
    }
    let api_server_replicas = control_plane
        .api_server
        .as_ref()
        .and_then(|api_server| api_server.replicas);
    if let Some(replicas) =
        api_server_replicas.filter(|replicas| !APISERVER_REPLICAS.contains(replicas))
    {
        return Err(Denial::invalid(format!(
            "spec.controlPlane.apiServer.replicas must be between {} and {}, got {replicas}",
            APISERVER_REPLICAS.start(),
            APISERVER_REPLICAS.end()
        )));
    }
    let Some(etcd) = control_plane.etcd.as_ref() else {
        return Ok(());
    };
    if let Some(replicas) = etcd
        .replicas
        .filter(|replicas| !ETCD_REPLICAS.contains(replicas))
    {
        return Err(Denial::invalid(format!(
            "spec.controlPlane.etcd.replicas must be 1, 3 or 5 so that etcd keeps a clear majority, got {replicas}"
        )));
    }
    if let Some(size) = etcd.storage_size.as_ref() {
        positive_quantity(|| ETCD_STORAGE_SIZE_FIELD.to_owned(), size)?;
    }
    Ok(())
}

/// Every external host goes into the apiserver's serving certificate, so it must be an
/// IP address or a DNS name (a leading `*.` wildcard allowed).
fn check_external_hosts(hosts: &[String]) -> Result<(), Denial> {
    for (index, host) in hosts.iter().enumerate() {
        if host.parse::<std::net::IpAddr>().is_err() && !is_dns_name(host) {
            return Err(Denial::invalid(format!(
                "spec.controlPlane.apiServer.externalHosts[{index}] {host:?} is neither an IP address nor a DNS name; it goes into the apiserver certificate, so write e.g. \"vc.example.com\" or \"203.0.113.10\""
            )));
        }
    }
    Ok(())
}

/// A DNS-1123 subdomain, optionally with a leading `*.` wildcard label.
fn is_dns_name(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    !name.is_empty() && name.len() <= 253 && name.split('.').all(is_dns1123_label)
}

/// Whether `name` is a DNS-1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63
/// characters): the rule for namespace and Service names, which tenants' names become.
pub fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::{edit_distance, is_dns_name};

    #[test]
    fn dns_names_follow_rfc_1123_with_an_optional_wildcard() {
        for good in ["vc.example.com", "localhost", "*.example.com", "a-1.b2"] {
            assert!(is_dns_name(good), "{good}");
        }
        for bad in [
            "",
            "Example.com",
            "a..b",
            "-a.com",
            "a-.com",
            "*",
            "a_b.com",
            "*.*.com",
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("cpu", "cpu"), 0);
        assert_eq!(edit_distance("cpus", "cpu"), 1);
        assert_eq!(edit_distance("memroy", "memory"), 2);
        assert_eq!(edit_distance("", "pods"), 4);
    }
}
