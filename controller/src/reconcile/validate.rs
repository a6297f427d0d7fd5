//! Dereferences the VirtualCluster into the tenant it describes and refuses what cannot
//! be provisioned as written.

use vc_api::VirtualCluster;

use super::objects::cached;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::resources::{BuildError, Tenant, etcd, names};

/// The tenant `vc` describes, resolved against the controller's defaults.
pub(super) fn tenant(vc: &VirtualCluster, ctx: &Context) -> Result<Tenant> {
    let tenant = Tenant::resolve(vc, &ctx.build).map_err(build_error)?;
    if let Some(running) = cached(
        &ctx.stores.stateful_sets,
        Some(&tenant.namespace),
        &names::etcd(&tenant.name),
    )
    .and_then(|set| etcd::member_count_change(&tenant, &set))
    {
        return Err(Error::InvalidSpec {
            field: "spec.controlPlane.etcd.replicas".to_owned(),
            reason: format!(
                "etcd was created with a member count of {running} and kosmos-vc does not change etcd membership yet, so {} is not applied; set it back to {running}",
                tenant.etcd_replicas
            ),
        });
    }
    Ok(tenant)
}

/// A field the builders refuse is the spec's fault; anything else is ours.
pub(super) fn build_error(error: BuildError) -> Error {
    match error {
        BuildError::InvalidField { field, value, fix } => Error::InvalidSpec {
            field: field.to_owned(),
            reason: format!("{value} is not accepted; {fix}"),
        },
        other => Error::BuildObject {
            what: "tenant objects",
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_fields_become_invalid_spec_errors_that_wait() {
        let error = build_error(BuildError::InvalidField {
            field: "spec.controlPlane.etcd.replicas",
            value: "2".into(),
            fix: "set 1, 3 or 5",
        });
        assert!(!error.is_transient());
        assert!(
            error
                .to_string()
                .contains("spec.controlPlane.etcd.replicas"),
            "{error}"
        );
    }
}
