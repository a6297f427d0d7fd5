//! Dereferences the VirtualCluster into the tenant it describes and its objects, and
//! refuses what cannot be provisioned as written.

use vc_api::VirtualCluster;

use super::objects::cached;
use crate::context::Context;
use crate::pki::{PkiMaterial, TenantIdentity};
use crate::resources::{BuildError, DesiredState, Observed, Tenant, etcd, names};

/// Why the VirtualCluster cannot be provisioned as written; only an edit can fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field is refused.
    #[error("invalid VirtualCluster: {field}: {reason}")]
    InvalidSpec {
        /// The offending field, as a JSON path such as `spec.controlPlane.etcd.replicas`.
        field: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// The builders refused the tenant for a reason that names no field.
    #[error("failed to build the tenant's objects")]
    Build {
        /// What the builders refused.
        #[source]
        source: BuildError,
    },
}

impl From<BuildError> for Error {
    /// A field the builders refuse is the spec's fault, named as such.
    fn from(error: BuildError) -> Self {
        match error {
            BuildError::InvalidField { field, value, fix } => Error::InvalidSpec {
                field: field.to_owned(),
                reason: format!("{value} is not accepted; {fix}"),
            },
            source => Error::Build { source },
        }
    }
}

/// The tenant `vc` describes, resolved against the controller's defaults.
pub(super) fn tenant(vc: &VirtualCluster, ctx: &Context) -> Result<Tenant, Error> {
    let tenant = Tenant::resolve(vc, &ctx.build)?;
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

/// The names and addresses the tenant's certificates are issued for.
pub(super) fn identity(
    tenant: &Tenant,
    observed: &Observed,
    ctx: &Context,
) -> Result<TenantIdentity, Error> {
    Ok(crate::resources::tenant_identity(
        tenant, &ctx.build, observed,
    )?)
}

/// Every object of the tenant.
pub(super) fn build(
    vc: &VirtualCluster,
    observed: &Observed,
    material: &PkiMaterial,
    ctx: &Context,
) -> Result<DesiredState, Error> {
    Ok(DesiredState::build(vc, &ctx.build, observed, material)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_fields_become_invalid_spec_errors_that_wait() {
        let error = crate::error::Error::from(Error::from(BuildError::InvalidField {
            field: "spec.controlPlane.etcd.replicas",
            value: "2".into(),
            fix: "set 1, 3 or 5",
        }));
        assert!(!error.is_transient());
        assert_eq!(
            error.invalid_reason().as_deref(),
            Some(
                "invalid VirtualCluster: spec.controlPlane.etcd.replicas: 2 is not accepted; set 1, 3 or 5"
            )
        );
    }
}
