//! Fields only the controller writes: `spec.kubeconfig`, its finalizer, and `status`
//! (through its subresource only); and the one only the operator chooses: the clustertree
//! image.

use super::super::policy::Policy;
use super::Denial;
use crate::constants::{FINALIZER, admin_kubeconfig_secret_name};
use crate::{VirtualCluster, VirtualClusterStatus};

/// Refuses writes to reserved fields by anyone but the controller, and clustertree images
/// the operator did not configure.
pub(super) fn check(
    username: &str,
    object: &VirtualCluster,
    old: Option<&VirtualCluster>,
    policy: &Policy,
    warnings: &mut Vec<String>,
) -> Result<(), Denial> {
    check_kubeconfig(username, object, old, policy)?;
    check_cluster_tree_image(object, old, policy, warnings)?;
    check_finalizer(username, object, old, policy)?;
    check_status(object, old)
}

/// The clustertree runs in the host with the tenant's host credentials, so the image it
/// runs is the operator's alone; the controller ignores the field. A value stored before
/// this rule existed is left alone (refusing it would block every later edit, the
/// controller's finalizer removal included) and only earns a warning.
fn check_cluster_tree_image(
    object: &VirtualCluster,
    old: Option<&VirtualCluster>,
    policy: &Policy,
    warnings: &mut Vec<String>,
) -> Result<(), Denial> {
    let image_of = |cluster: &VirtualCluster| {
        cluster
            .spec
            .cluster_tree
            .as_ref()
            .and_then(|tree| tree.image.clone())
            .filter(|image| !image.is_empty())
    };
    let Some(image) = image_of(object) else {
        return Ok(());
    };
    if image == policy.clustertree_image {
        return Ok(());
    }
    let operator = &policy.clustertree_image;
    if old.and_then(image_of).as_deref() == Some(image.as_str()) {
        warnings.push(format!(
            "spec.clusterTree.image {image:?} is ignored: the clustertree runs the operator's image {operator:?}; remove the field"
        ));
        return Ok(());
    }
    Err(Denial::forbidden(format!(
        "spec.clusterTree.image is chosen by the operator, not by the VirtualCluster: the clustertree runs with host credentials, and this host runs {operator:?}; {image:?} is refused: remove spec.clusterTree.image (or set it to {operator:?}), or ask the operator to change the chart value controller.clustertreeImage"
    )))
}

/// The finalizer is what releases the tenant's nodes, cluster-scoped objects and volumes;
/// removed by anyone else, the VirtualCluster vanishes and leaves node claims and etcd
/// data behind. Only the controller drops it, and only once its cleanup has finished.
fn check_finalizer(
    username: &str,
    object: &VirtualCluster,
    old: Option<&VirtualCluster>,
    policy: &Policy,
) -> Result<(), Denial> {
    let has_finalizer = |cluster: &VirtualCluster| {
        cluster
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|finalizers| finalizers.iter().any(|name| name == FINALIZER))
    };
    let Some(old) = old else {
        return Ok(());
    };
    if !has_finalizer(old) || has_finalizer(object) || username == policy.controller_username {
        return Ok(());
    }
    let namespace = object.metadata.namespace.as_deref().unwrap_or_default();
    let name = object.metadata.name.as_deref().unwrap_or_default();
    Err(Denial::forbidden(format!(
        "finalizer {FINALIZER:?} is removed only by the controller ({}), once it has released the nodes, volumes and cluster-scoped objects of VirtualCluster {namespace}/{name}; user {username:?} may not remove it: delete the VirtualCluster (kubectl vc delete {name} -n {namespace} --wait) and let the controller finish",
        policy.controller_username
    )))
}

fn check_kubeconfig(
    username: &str,
    object: &VirtualCluster,
    old: Option<&VirtualCluster>,
    policy: &Policy,
) -> Result<(), Denial> {
    let before = old.and_then(|old| old.spec.kubeconfig.as_deref());
    let after = object.spec.kubeconfig.as_deref();
    if before == after || username == policy.controller_username {
        return Ok(());
    }
    let name = object.metadata.name.as_deref().unwrap_or_default();
    let secret = admin_kubeconfig_secret_name(name);
    let (verb, fix) = match old {
        None => ("set", "remove the field"),
        Some(_) => ("change", "leave the field as it is"),
    };
    Err(Denial::forbidden(format!(
        "spec.kubeconfig is written only by the controller ({}); user {username:?} may not {verb} it: {fix}, and read the tenant kubeconfig from Secret {secret:?}",
        policy.controller_username
    )))
}

/// A status change through the main resource. With the status subresource enabled the
/// apiserver already drops such changes; this guards servers that do not.
fn check_status(object: &VirtualCluster, old: Option<&VirtualCluster>) -> Result<(), Denial> {
    let Some(old) = old else {
        return Ok(());
    };
    let empty = VirtualClusterStatus::default();
    let before = old.status.as_ref().unwrap_or(&empty);
    let after = object.status.as_ref().unwrap_or(&empty);
    if before == after {
        return Ok(());
    }
    Err(Denial::forbidden(
        "status may not be changed through the VirtualCluster itself: only the controller writes it, through the status subresource",
    ))
}
