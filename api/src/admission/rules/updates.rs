//! What an update may change: the version moves forward one minor at a time, and what
//! provisioning fixed (etcd's members and volumes, the Service type) stays fixed.

use super::super::quantity::quantity_milli;
use super::Denial;
use crate::quantity::ResourceQuantity;
use crate::{ApiServerSpec, EtcdSpec, VirtualCluster};

/// `(major, minor, patch)` of `vMAJOR.MINOR.PATCH`, optionally followed by a pre-release
/// or build suffix (`v1.34.0-rc.1`), which does not take part in comparisons.
pub(super) fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let numbers = text.strip_prefix('v')?;
    let numbers = numbers.split(['-', '+']).next()?;
    let mut parts = numbers.split('.').map(|part| {
        let digits_only = !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
        digits_only.then(|| part.parse::<u64>().ok()).flatten()
    });
    let version = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(version)
}

/// Refuses transitions the control plane cannot make.
pub(super) fn check(old: &VirtualCluster, object: &VirtualCluster) -> Result<(), Denial> {
    check_version_step(old, object)?;
    let (old_etcd, old_api_server) = control_plane(old);
    let (etcd, api_server) = control_plane(object);
    if let (Some(old_etcd), Some(etcd)) = (old_etcd, etcd) {
        check_etcd(old_etcd, etcd)?;
    }
    check_api_server(old_api_server, api_server)
}

/// The etcd and apiserver specs `cluster` names.
fn control_plane(cluster: &VirtualCluster) -> (Option<&EtcdSpec>, Option<&ApiServerSpec>) {
    let plane = cluster.spec.control_plane.as_ref();
    (
        plane.and_then(|plane| plane.etcd.as_ref()),
        plane.and_then(|plane| plane.api_server.as_ref()),
    )
}

fn check_version_step(old: &VirtualCluster, object: &VirtualCluster) -> Result<(), Denial> {
    let (Some(before_text), Some(after_text)) = (
        old.spec.kubernetes_version.as_deref(),
        object.spec.kubernetes_version.as_deref(),
    ) else {
        return Ok(());
    };
    let (Some(before), Some(after)) = (parse_version(before_text), parse_version(after_text))
    else {
        return Ok(());
    };
    if after < before {
        return Err(Denial::invalid(format!(
            "spec.kubernetesVersion may not go down: {before_text} → {after_text}; a control plane cannot be downgraded, keep {before_text} or newer"
        )));
    }
    if after.0 != before.0 {
        return Err(Denial::invalid(format!(
            "spec.kubernetesVersion may not change the major version: {before_text} → {after_text}"
        )));
    }
    if after.1 > before.1 + 1 {
        return Err(Denial::invalid(format!(
            "spec.kubernetesVersion may not skip a minor version: {before_text} → {after_text}; upgrade to v{}.{} first",
            before.0,
            before.1 + 1
        )));
    }
    Ok(())
}

fn check_etcd(old: &EtcdSpec, etcd: &EtcdSpec) -> Result<(), Denial> {
    // Every member starts with `--initial-cluster-state=new` and nothing adds or removes
    // members through etcd's API, so a new member would found a second, empty cluster
    // behind the same Service and a removed one would take quorum with it.
    if let Some(before) = old.replicas
        && etcd.replicas != Some(before)
    {
        let after = etcd
            .replicas
            .map_or_else(|| "(unset)".to_owned(), |after| after.to_string());
        return Err(Denial::invalid(format!(
            "spec.controlPlane.etcd.replicas may not change after creation ({before} → {after}): kosmos-vc does not manage etcd membership yet, and a changed member count would split the tenant's data; keep {before}, or create a new VirtualCluster with the member count you need and move the workloads to it"
        )));
    }
    if let Some(before) = old.storage_size.as_ref()
        && !same_quantity(before, etcd.storage_size.as_ref())
    {
        return Err(immutable(
            "spec.controlPlane.etcd.storageSize",
            &before.to_string(),
            etcd.storage_size.as_ref().map(ToString::to_string),
        ));
    }
    // An object that went through defaulting has a storage size; its absent class is the
    // host's default class, which the volumes already use.
    let class_fixed = old.storage_class_name.is_some() || old.storage_size.is_some();
    if class_fixed && old.storage_class_name != etcd.storage_class_name {
        return Err(immutable(
            "spec.controlPlane.etcd.storageClassName",
            old.storage_class_name
                .as_deref()
                .unwrap_or("(host default)"),
            Some(
                etcd.storage_class_name
                    .clone()
                    .unwrap_or_else(|| "(host default)".to_owned()),
            ),
        ));
    }
    Ok(())
}

fn check_api_server(
    old: Option<&ApiServerSpec>,
    api_server: Option<&ApiServerSpec>,
) -> Result<(), Denial> {
    let Some(before) = old.and_then(|old| old.service_type) else {
        return Ok(());
    };
    let after = api_server.and_then(|api_server| api_server.service_type);
    if after == Some(before) {
        return Ok(());
    }
    Err(immutable(
        "spec.controlPlane.apiServer.serviceType",
        &format!("{before:?}"),
        after.map(|after| format!("{after:?}")),
    ))
}

/// Equal values however written (`1Gi` and `1024Mi`); unparsable text compares as text.
fn same_quantity(before: &ResourceQuantity, after: Option<&ResourceQuantity>) -> bool {
    let Some(after) = after else {
        return false;
    };
    match (quantity_milli(before), quantity_milli(after)) {
        (Ok(before), Ok(after)) => before == after,
        _ => before.as_quantity_string() == after.as_quantity_string(),
    }
}

fn immutable(field: &str, before: &str, after: Option<String>) -> Denial {
    let after = after.unwrap_or_else(|| "(unset)".to_owned());
    Denial::invalid(format!(
        "{field} is immutable after provisioning: it was {before:?} and may not become {after:?}; create a new VirtualCluster to change it"
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions_need_v_and_three_numbers() {
        assert_eq!(parse_version("v1.33.4"), Some((1, 33, 4)));
        assert_eq!(parse_version("v1.34.0-rc.1"), Some((1, 34, 0)));
        assert_eq!(parse_version("v1.34.0+build"), Some((1, 34, 0)));
        for text in ["1.33.4", "v1.33", "v1.33.4.5", "v1..4", "v1.x.4", "", "v"] {
            assert_eq!(parse_version(text), None, "{text}");
        }
    }
}
